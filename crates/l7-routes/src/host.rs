//! Host normalisation: what a request's `Host` / `:authority` is matched as.
//!
//! Rules of [`normalise`]:
//! - the port is removed (`foo.com:8080` is `foo.com`; the port must be digits, at most
//!   65535, or empty as RFC 3986 allows);
//! - an IPv6 literal keeps its bare address, lower case, without brackets (`[::1]:80` is
//!   `::1`); it must parse as an IPv6 address;
//! - a name is lower-cased and loses ONE trailing dot (`Foo.COM.` is `foo.com`);
//! - a name is refused when empty, when a label is empty (`a..b`), or when it holds anything
//!   but ASCII letters, digits, `-`, `_` and `.` (whitespace, `@`, `%`, ...). IPv4 literals
//!   are names of digits and dots and pass as they are.

use crate::HostMatch;
use std::borrow::Cow;
use std::net::Ipv6Addr;

/// Lower case, without the port, without a trailing dot; `None` when it is not a valid host.
pub fn normalise(authority: &str) -> Option<Cow<'_, str>> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (literal, port) = rest.split_once(']')?;
        let port = match port {
            "" => None,
            _ => Some(port.strip_prefix(':')?),
        };
        literal.parse::<Ipv6Addr>().ok()?;
        return port.is_none_or(valid_port).then(|| lower(literal));
    }
    let name = match authority.rsplit_once(':') {
        Some((name, port)) if valid_port(port) => name,
        Some(_) => return None,
        None => authority,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    valid_name(name).then(|| lower(name))
}

/// `text` in lower case, copied only when it has an upper-case letter.
fn lower(text: &str) -> Cow<'_, str> {
    match text.bytes().any(|b| b.is_ascii_uppercase()) {
        true => Cow::Owned(text.to_ascii_lowercase()),
        false => Cow::Borrowed(text),
    }
}

/// Parses the `host` of an Ingress rule or TLS entry: a name (lower-cased, see
/// [`normalise`] for the characters allowed, no port) or `*.` followed by one.
pub fn parse_rule(host: &str) -> Option<HostMatch> {
    let host = host.to_ascii_lowercase();
    match host.strip_prefix("*.") {
        Some(suffix) => valid_name(suffix).then(|| HostMatch::Wildcard(suffix.to_owned())),
        None => valid_name(&host).then_some(HostMatch::Exact(host)),
    }
}

/// The suffix a normalised request host matches wildcard rules with: the host without its
/// first label (`bar.foo.com` matches `*.foo.com` through `foo.com`).
pub fn wildcard_suffix(host: &str) -> Option<&str> {
    host.split_once('.').map(|(_, suffix)| suffix)
}

impl HostMatch {
    /// Whether a normalised request host matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(exact) => exact == host,
            HostMatch::Wildcard(suffix) => wildcard_suffix(host) == Some(suffix.as_str()),
        }
    }
}

impl std::fmt::Display for HostMatch {
    /// `*` for any host, the host, or `*.suffix`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostMatch::Any => f.write_str("*"),
            HostMatch::Exact(host) => f.write_str(host),
            HostMatch::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

fn valid_port(port: &str) -> bool {
    port.is_empty() || (port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}
