//! CNI specification 1.1 types: errors, the plugin configuration, results.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::IpAddr;

/// The version this plugin speaks natively.
pub const CNI_VERSION: &str = "1.1.0";
/// Versions whose configurations and results this plugin understands.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.4.0", "1.0.0", "1.1.0", "1.1"];

/// Well-known error codes of the specification.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN: u32 = 11;
    /// The plugin is not available (STATUS).
    pub const NOT_AVAILABLE: u32 = 50;
    /// Plugin-specific: the container's network is not as expected (CHECK).
    pub const CHECK_FAILED: u32 = 100;
    /// Plugin-specific: no address left in a range.
    pub const IPAM_EXHAUSTED: u32 = 101;
}

/// An error as the specification shapes it on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("CNI error {code}: {msg}")]
pub struct CniError {
    /// The CNI version of the output.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Error code.
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// Longer details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with `code` and a message.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            cni_version: CNI_VERSION.to_string(),
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Adds details.
    pub fn details(mut self, d: impl std::fmt::Display) -> Self {
        self.details = d.to_string();
        self
    }
}

/// One range of a range set, as host-local reads it.
pub use flatnet_ipam::Range;

/// The `ipam` section: host-local's shape, handled inside the plugin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpamConfig {
    /// Must be `host-local` or absent; the allocator is built in.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Range sets, one per family, each with one range.
    pub ranges: Vec<Vec<Range>>,
    /// Folder of the reservations.
    pub data_dir: String,
    /// Extra routes, added in the pod.
    #[serde(default)]
    pub routes: Vec<RouteEntry>,
}

/// The plugin's configuration as the runtime passes it on stdin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// CNI version of this invocation.
    pub cni_version: String,
    /// Network name.
    pub name: String,
    /// Plugin type (`flatnet-cni`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Bridge on the node.
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// MTU of the pod interface and the bridge.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// Hairpin mode on the bridge port (a pod reaching itself through a Service).
    #[serde(default = "default_true")]
    pub hairpin_mode: bool,
    /// The node agent writes this file once the node's network is up (STATUS).
    #[serde(default)]
    pub readiness_file: Option<String>,
    /// Address management.
    pub ipam: IpamConfig,
    /// Result of the previous plugin in the chain (CHECK, DEL).
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// Runtime configuration (ignored).
    #[serde(default)]
    pub runtime_config: Option<Value>,
    /// Arguments (ignored).
    #[serde(default)]
    pub args: Option<Value>,
    /// GC: the attachments still in use.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// Whether the runtime may call GC (conflist-level; ignored here).
    #[serde(default)]
    pub disable_gc: Option<bool>,
    /// Whether CHECK is disabled (conflist-level; ignored here).
    #[serde(default)]
    pub disable_check: Option<bool>,
    /// Any other field: refused with error 2 (unsupported field).
    #[serde(flatten)]
    pub unknown: serde_json::Map<String, Value>,
}

fn default_bridge() -> String {
    "cni0".to_string()
}
fn default_mtu() -> u32 {
    1500
}
fn default_true() -> bool {
    true
}

/// An attachment listed for GC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// Container id.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

/// An interface of the result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// Name.
    pub name: String,
    /// MAC address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// MTU (1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Namespace path for interfaces inside the container.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

/// An IP of the result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpConfig {
    /// `4` or `6` (only in 0.x results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Address with prefix length.
    pub address: ipnet::IpNet,
    /// Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route of the result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// Destination.
    pub dst: ipnet::IpNet,
    /// Next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// The result of ADD.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// CNI version of the result.
    pub cni_version: String,
    /// Interfaces created.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// Routes installed in the container.
    #[serde(default)]
    pub routes: Vec<RouteEntry>,
    /// DNS (empty: the runtime writes resolv.conf).
    #[serde(default)]
    pub dns: Value,
}

impl NetConf {
    /// Parses and validates stdin. Decode failures are code 6, bad values code 7,
    /// unknown fields code 2, unsupported versions code 1.
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let value: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(code::DECODE, "failed to decode the network configuration").details(e)
        })?;
        let version = value
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        check_version(version)?;
        let conf: NetConf = serde_json::from_value(value).map_err(|e| {
            CniError::new(code::DECODE, "failed to decode the network configuration").details(e)
        })?;
        if let Some(field) = conf.unknown.keys().next() {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                format!("unsupported field {field:?} in network configuration"),
            ));
        }
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> Result<(), CniError> {
        let bad = |m: String| Err(CniError::new(code::INVALID_CONFIG, m));
        if self.name.is_empty() {
            return bad("name: must not be empty".into());
        }
        if self.bridge.is_empty() || self.bridge.len() > 15 {
            return bad(format!(
                "bridge: {:?} is not an interface name (1-15 characters)",
                self.bridge
            ));
        }
        if !(576..=65535).contains(&self.mtu) {
            return bad(format!("mtu: {} is out of range 576-65535", self.mtu));
        }
        if let Some(k) = &self.ipam.kind {
            if k != "host-local" && !k.is_empty() {
                return bad(format!("ipam.type: {k:?} is not supported; flatnet-cni allocates host-local style itself"));
            }
        }
        if self.ipam.ranges.is_empty() {
            return bad("ipam.ranges: at least one range set is needed".into());
        }
        let mut families = Vec::new();
        for (i, set) in self.ipam.ranges.iter().enumerate() {
            if set.len() != 1 {
                return bad(format!(
                    "ipam.ranges[{i}]: flatnet-cni takes exactly one range per range set"
                ));
            }
            set[0].validate().map_err(|e| {
                CniError::new(code::INVALID_CONFIG, format!("ipam.ranges[{i}][0]: {e}"))
            })?;
            let fam = set[0].subnet.addr().is_ipv4();
            if families.contains(&fam) {
                return bad(format!(
                    "ipam.ranges[{i}]: a second range set of the same family"
                ));
            }
            families.push(fam);
        }
        if self.ipam.data_dir.is_empty() {
            return bad("ipam.dataDir: must not be empty".into());
        }
        Ok(())
    }

    /// The ranges to allocate from, one per family.
    pub fn ranges(&self) -> Vec<Range> {
        self.ipam.ranges.iter().map(|s| s[0].clone()).collect()
    }
}

/// Refuses versions this plugin does not speak (code 1).
pub fn check_version(version: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        Ok(())
    } else {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "incompatible CNI version {version:?}; supported: {}",
                SUPPORTED_VERSIONS[..3].join(", ")
            ),
        ))
    }
}

/// The VERSION answer.
pub fn version_info() -> Value {
    serde_json::json!({
        "cniVersion": CNI_VERSION,
        "supportedVersions": SUPPORTED_VERSIONS[..3],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> String {
        format!(
            r#"{{"cniVersion":"1.1.0","name":"n","type":"flatnet-cni","ipam":{{"ranges":[[{{"subnet":"10.42.1.0/24"}}],[{{"subnet":"fd00:10:42:1::/64"}}]],"dataDir":"/tmp/x"}}{extra}}}"#
        )
    }

    #[test]
    fn parses_a_dual_stack_config() {
        let c = NetConf::parse(conf("").as_bytes()).unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(c.hairpin_mode);
        assert_eq!(c.ranges().len(), 2);
    }

    #[test]
    fn codes_follow_the_spec() {
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code, code::DECODE);
        assert_eq!(
            NetConf::parse(conf("").replace("1.1.0", "9.9.9").as_bytes())
                .unwrap_err()
                .code,
            code::INCOMPATIBLE_VERSION
        );
        assert_eq!(
            NetConf::parse(conf(r#","color":"red""#).as_bytes())
                .unwrap_err()
                .code,
            code::UNSUPPORTED_FIELD
        );
        assert_eq!(
            NetConf::parse(conf(r#","mtu":10"#).as_bytes())
                .unwrap_err()
                .code,
            code::INVALID_CONFIG
        );
        let two_v4 = conf("").replace("fd00:10:42:1::/64", "10.42.2.0/24");
        assert_eq!(
            NetConf::parse(two_v4.as_bytes()).unwrap_err().code,
            code::INVALID_CONFIG
        );
        assert_eq!(
            NetConf::parse(conf(r#","mtu":"big""#).as_bytes())
                .unwrap_err()
                .code,
            code::DECODE
        );
    }

    #[test]
    fn error_json_has_the_spec_fields() {
        let e = CniError::new(4, "CNI_NETNS is missing");
        let v: Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["code"], 4);
        assert_eq!(v["msg"], "CNI_NETNS is missing");
        assert_eq!(v["cniVersion"], CNI_VERSION);
        assert!(v.get("details").is_none());
    }

    #[test]
    fn version_lists_supported() {
        let v = version_info();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert!(v["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "1.0.0"));
    }
}
