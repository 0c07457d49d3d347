//! Applies a rendered table with one `nft -f` transaction in the caller's namespace.

use crate::render::TABLE;
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

/// Replaces flatnet's table with `ruleset` atomically: the old table is deleted and the new
/// one defined in the same transaction, so no packet sees a half-made table. Conntrack
/// entries are untouched: established connections keep their translation.
pub fn apply(ruleset: &str) -> Result<()> {
    let text = format!("table inet {TABLE}\ndelete table inet {TABLE}\n{ruleset}");
    nft(&["-f", "-"], Some(&text)).map(|_| ())
}

/// Checks `ruleset` without applying it.
pub fn check(ruleset: &str) -> Result<()> {
    nft(&["-c", "-f", "-"], Some(ruleset)).map(|_| ())
}

/// Whether flatnet's table exists (drift detection: someone may have deleted it).
pub fn exists() -> bool {
    nft(&["list", "table", "inet", TABLE], None).is_ok()
}

/// The table as the kernel has it.
pub fn list() -> Result<String> {
    nft(&["list", "table", "inet", TABLE], None)
}
