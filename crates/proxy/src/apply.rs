//! Applies programs with `nft -f` in the caller's namespace, one transaction each.

use crate::render::{Program, TABLE};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::process::{Command, Stdio};

fn nft(args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (install the nftables package)")?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Full sync: replaces flatnet's table with `program`. The old table is deleted and the new
/// one defined in the same transaction, so no packet sees a half-made table. Conntrack
/// entries are untouched: established connections keep their translation.
pub fn replace(program: &Program) -> Result<()> {
    let text = format!(
        "table inet {TABLE}\ndelete table inet {TABLE}\n{}",
        program.text()
    );
    nft(&["-f", "-"], Some(&text)).map(|_| ())
}

/// Partial sync: changes the kernel's table from `old` to `new` with only the commands the
/// difference needs, in one transaction. Returns whether anything was sent.
pub fn update(old: &Program, new: &Program) -> Result<bool> {
    let batch = old.diff(new);
    if batch.is_empty() {
        return Ok(false);
    }
    nft(&["-f", "-"], Some(&batch))?;
    Ok(true)
}

/// Whether flatnet's table exists (drift detection: someone may have deleted it).
pub fn exists() -> bool {
    nft(&["list", "table", "inet", TABLE], None).is_ok()
}
