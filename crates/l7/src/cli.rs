//! The command line of the proxy (`flatnet l7`): manifests in, listeners out.

use crate::{manifests, AccessLog, ProxyConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

/// A listen address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Listen, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Listen(None));
        }
        s.parse()
            .map(|a| Listen(Some(a)))
            .map_err(|_| format!("{s:?} is neither IP:PORT nor off"))
    }
}

/// On or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Toggle {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// `flatnet l7`: serve the Ingresses of the manifests (files or a folder, watched).
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// Kubernetes manifests (a file or a folder of YAML): Ingress, IngressClass, Service,
    /// EndpointSlice, Secret; reloaded when they change. Without it, the command line serves
    /// a lab cluster's Ingresses instead.
    #[arg(long, short = 'f', value_name = "PATH")]
    pub manifests: Option<PathBuf>,
    /// Plain HTTP listener (HTTP/1.1 and h2c), or off; `[::]` takes IPv4 too.
    #[arg(long, value_name = "ADDR|off", default_value = "[::]:80")]
    pub http: Listen,
    /// HTTPS listener, or off.
    #[arg(long, value_name = "ADDR|off", default_value = "[::]:443")]
    pub https: Listen,
    /// Admin listener (/metrics, /healthz), or off.
    #[arg(long, value_name = "ADDR|off", default_value = "127.0.0.1:10254")]
    pub admin: Listen,
    /// One JSON line per request on standard output (standard error, the pod's log, when
    /// serving a lab cluster).
    #[arg(long, value_enum, default_value_t = Toggle::On)]
    pub access_log: Toggle,
    /// Add `x-flatnet-route` and `x-flatnet-upstream` to responses (debugging).
    #[arg(long)]
    pub debug_headers: bool,
    /// Worker threads serving connections; default: one per CPU the process may run on.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
}

impl Args {
    /// The proxy settings these flags ask for.
    pub fn config(&self) -> ProxyConfig {
        let mut config = ProxyConfig {
            http: self.http.0,
            https: self.https.0,
            admin: self.admin.0,
            access_log: match self.access_log {
                Toggle::On => AccessLog::Stdout,
                Toggle::Off => AccessLog::Off,
            },
            debug_headers: self.debug_headers,
            ..ProxyConfig::default()
        };
        if let Some(n) = self.workers {
            config.workers = n.into();
        }
        config
    }
}

/// Loads and watches `manifests` and serves with `args`' settings until the process ends
/// (blocking; builds its own runtime).
pub fn run(manifests: PathBuf, args: &Args) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(async {
        let tables = manifests::watch(manifests)?;
        crate::serve(args.config(), tables).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn flags_and_defaults() {
        let cli = Cli::try_parse_from(["l7", "--manifests", "m/", "--https", "off"]).unwrap();
        let config = cli.args.config();
        assert_eq!(config.http, Some("[::]:80".parse().unwrap()));
        assert_eq!(config.https, None);
        assert_eq!(config.admin, Some("127.0.0.1:10254".parse().unwrap()));
        assert!(matches!(config.access_log, AccessLog::Stdout));
        let cli = Cli::try_parse_from([
            "l7",
            "-f",
            "m.yaml",
            "--http",
            "127.0.0.1:8080",
            "--access-log",
            "off",
        ])
        .unwrap();
        assert_eq!(
            cli.args.config().http,
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert!(matches!(cli.args.config().access_log, AccessLog::Off));
        assert!(Cli::try_parse_from(["l7", "-f", "m", "--http", "nowhere"]).is_err());
        let default = ProxyConfig::default().workers;
        assert_eq!(config.workers, default);
        let cli = Cli::try_parse_from(["l7", "-f", "m", "--workers", "3"]).unwrap();
        assert_eq!(cli.args.config().workers, 3);
        assert!(Cli::try_parse_from(["l7", "-f", "m", "--workers", "0"]).is_err());
    }
}
