//! Applies programs with `nft -f` in the caller's namespace, one transaction each.

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

/// Full sync: replaces flatnet's table with `table` (its whole text). The old table is
/// deleted and the new one defined in the same transaction, so no packet sees a half-made
/// table. Conntrack entries are untouched: established connections keep their translation.
pub fn replace(table: &str) -> Result<()> {
    let text = format!("table inet {TABLE}\ndelete table inet {TABLE}\n{table}");
    nft(&["-f", "-"], Some(&text)).map(|_| ())
}

/// Partial sync: sends `batch` (from [`crate::table::Table::take_changes`]) as one
/// transaction. Returns whether anything was sent.
pub fn update(batch: &str) -> Result<bool> {
    if batch.is_empty() {
        return Ok(false);
    }
    nft(&["-f", "-"], Some(batch))?;
    Ok(true)
}

/// Whether flatnet's table exists (drift detection: someone may have deleted it).
pub fn exists() -> bool {
    nft(&["list", "table", "inet", TABLE], None).is_ok()
}
