//! The test harness shared by the lab tests: a lab cluster driven through the command line,
//! with its own name and state folder, removed on drop.
#![allow(dead_code)]

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

pub const FLATNET: &str = env!("CARGO_BIN_EXE_flatnet");

pub struct Cluster {
    pub name: String,
    pub state: tempfile::TempDir,
}

impl Cluster {
    pub fn named(tag: &str) -> Self {
        Cluster {
            name: format!("t{}{tag}", std::process::id()),
            state: tempfile::tempdir().unwrap(),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(FLATNET);
        c.args(args)
            .env("FLATNET_STATE_DIR", self.state.path())
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let mut full: Vec<&str> = vec![args[0], "--cluster", &self.name];
        full.extend(&args[1..]);
        self.cmd(&full).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "flatnet {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub fn manifest(&self, file: &str, text: &str) -> PathBuf {
        let p = self.state.path().join(file);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn up(&self, text: &str) {
        let f = self.manifest("up.yaml", text);
        self.ok(&["up", "-f", f.to_str().unwrap()]);
    }

    pub fn pods(&self) -> Vec<Value> {
        let v: Value =
            serde_json::from_str(&self.ok(&["get", "pods", "-A", "-o", "json"])).unwrap();
        v["items"].as_array().unwrap().clone()
    }

    pub fn check(&self) -> Value {
        let out = self.run(&["check", "-o", "json"]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let failed: Vec<&Value> = report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["ok"] != true)
            .collect();
        assert!(
            out.status.success() && failed.is_empty(),
            "check failed: {failed:#?}"
        );
        report
    }

    pub fn namespaces(&self) -> Vec<String> {
        let prefix = format!("{}.", self.name);
        std::fs::read_dir("/run/netns")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}

pub fn cluster_doc(name: &str, spec: &str) -> String {
    format!("apiVersion: flatnet.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\nspec: {spec}\n---\n")
}

/// One `flatnet probe ... -o json` from `from` to `to`:`port` with `extra` flags.
pub fn probe(c: &Cluster, from: &str, to: &str, port: u16, extra: &[&str]) -> Value {
    let port = port.to_string();
    let mut args = vec![
        "probe", "--from", from, "--to", to, "--port", &port, "-o", "json",
    ];
    args.extend(extra);
    let out = c.run(&args);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("probe printed {}", String::from_utf8_lossy(&out.stderr)))
}

/// The pod that answered a probe (which must have connected).
pub fn served(v: &Value) -> String {
    assert_eq!(v["result"], "connected", "{v}");
    v["server"]["pod"].as_str().unwrap().to_string()
}
