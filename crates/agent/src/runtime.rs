//! The container runtime's side of CNI: reads a conflist and invokes plugins by exec with
//! CNI_* variables and the plugin's configuration on stdin, as libcni does.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Versions this runtime speaks, highest last.
const RUNTIME_VERSIONS: [&str; 2] = ["1.0.0", "1.1.0"];

/// A network configuration list and where its plugins live.
#[derive(Clone, Debug)]
pub struct CniNetwork {
    /// The parsed conflist.
    pub conflist: Value,
    /// Folders searched for plugin binaries (CNI_PATH).
    pub bin_dirs: Vec<PathBuf>,
}

/// One attachment: the container, its namespace and interface.
#[derive(Clone, Debug)]
pub struct Attachment<'a> {
    /// CNI_CONTAINERID.
    pub container_id: &'a str,
    /// CNI_NETNS.
    pub netns: &'a Path,
    /// CNI_IFNAME.
    pub ifname: &'a str,
}

impl CniNetwork {
    /// Reads a `.conflist` file.
    pub fn load(path: &Path, bin_dirs: Vec<PathBuf>) -> Result<Self> {
        let conflist: Value = flatnet_model::state::read_json(path)?;
        Ok(Self { conflist, bin_dirs })
    }

    /// The version to use: the highest of `cniVersions` (or `cniVersion`) we speak.
    pub fn version(&self) -> Result<String> {
        let listed: Vec<String> = match self.conflist.get("cniVersions").and_then(Value::as_array) {
            Some(v) => v
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            None => self
                .conflist
                .get("cniVersion")
                .and_then(Value::as_str)
                .map(String::from)
                .into_iter()
                .collect(),
        };
        RUNTIME_VERSIONS
            .iter()
            .rev()
            .find(|v| listed.iter().any(|l| l == *v))
            .map(|v| v.to_string())
            .ok_or_else(|| {
                anyhow!("conflist versions {listed:?} share none with {RUNTIME_VERSIONS:?}")
            })
    }

    fn plugins(&self) -> Result<Vec<Value>> {
        self.conflist
            .get("plugins")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| anyhow!("conflist has no plugins"))
    }

    fn plugin_conf(&self, plugin: &Value, version: &str, prev: Option<&Value>) -> Value {
        let mut conf = plugin.clone();
        conf["cniVersion"] = json!(version);
        conf["name"] = self.conflist["name"].clone();
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        conf
    }

    fn exec(
        &self,
        plugin: &Value,
        command: &str,
        att: Option<&Attachment>,
        stdin: &Value,
    ) -> Result<Value> {
        let kind = plugin
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("plugin without type"))?;
        let bin = self
            .bin_dirs
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.exists())
            .ok_or_else(|| anyhow!("plugin {kind} not found in {:?}", self.bin_dirs))?;
        let path = std::env::join_paths(&self.bin_dirs)?;
        let mut cmd = Command::new(&bin);
        cmd.env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(a) = att {
            cmd.env("CNI_CONTAINERID", a.container_id)
                .env("CNI_NETNS", a.netns)
                .env("CNI_IFNAME", a.ifname);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("running {}", bin.display()))?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(stdin.to_string().as_bytes())?;
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!("{kind} {command} failed: {}", text.trim());
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{kind} {command} printed {text:?}"))
    }

    /// ADD through every plugin in order; returns the last result.
    pub fn add(&self, att: &Attachment) -> Result<Value> {
        let version = self.version()?;
        let mut prev: Option<Value> = None;
        for p in self.plugins()? {
            let conf = self.plugin_conf(&p, &version, prev.as_ref());
            prev = Some(self.exec(&p, "ADD", Some(att), &conf)?);
        }
        prev.ok_or_else(|| anyhow!("no plugin produced a result"))
    }

    /// DEL through every plugin in reverse order, with the cached result.
    pub fn del(&self, att: &Attachment, prev: Option<&Value>) -> Result<()> {
        let version = self.version()?;
        for p in self.plugins()?.iter().rev() {
            let conf = self.plugin_conf(p, &version, prev);
            self.exec(p, "DEL", Some(att), &conf)?;
        }
        Ok(())
    }

    /// CHECK through every plugin, with the cached result.
    pub fn check(&self, att: &Attachment, prev: &Value) -> Result<()> {
        let version = self.version()?;
        for p in self.plugins()? {
            let conf = self.plugin_conf(&p, &version, Some(prev));
            self.exec(&p, "CHECK", Some(att), &conf)?;
        }
        Ok(())
    }

    /// STATUS of every plugin: Ok once all are ready.
    pub fn status(&self) -> Result<()> {
        let version = self.version()?;
        for p in self.plugins()? {
            let conf = self.plugin_conf(&p, &version, None);
            self.exec(&p, "STATUS", None, &conf)?;
        }
        Ok(())
    }

    /// GC with the attachments still in use.
    pub fn gc(&self, valid: &[(String, String)]) -> Result<()> {
        let version = self.version()?;
        let list: Vec<Value> = valid
            .iter()
            .map(|(c, i)| json!({"containerID": c, "ifname": i}))
            .collect();
        for p in self.plugins()? {
            let mut conf = self.plugin_conf(&p, &version, None);
            conf["cni.dev/valid-attachments"] = json!(list);
            self.exec(&p, "GC", None, &conf)?;
        }
        Ok(())
    }
}
