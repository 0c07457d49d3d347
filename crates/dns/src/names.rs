//! Building and parsing the names of the schema.

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

/// `labels...` (lowercased, taken as raw bytes) followed by `base`.
pub(crate) fn under(labels: &[&str], base: &Name) -> Option<Name> {
    let lower: Vec<Vec<u8>> = labels
        .iter()
        .map(|l| l.to_ascii_lowercase().into_bytes())
        .collect();
    if lower.iter().any(|l| l.is_empty()) {
        return None;
    }
    Name::from_labels(lower).ok()?.append_name(base).ok()
}

/// The address with `.` or `:` replaced by `-`, as CoreDNS names endpoints and pods
/// (`10-42-0-2`, `fd00-10-42--2`).
pub(crate) fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The address of a dashed label, IPv4 first.
pub(crate) fn parse_dashed(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// `d.c.b.a.in-addr.arpa.` or the 32-nibble `ip6.arpa.` name.
pub(crate) fn reverse(ip: IpAddr) -> Name {
    let mut s = String::with_capacity(73);
    match ip {
        IpAddr::V4(v4) => {
            for o in v4.octets().iter().rev() {
                let _ = write!(s, "{o}.");
            }
            s.push_str("in-addr.arpa.");
        }
        IpAddr::V6(v6) => {
            for b in v6.octets().iter().rev() {
                let _ = write!(s, "{:x}.{:x}.", b & 0xf, b >> 4);
            }
            s.push_str("ip6.arpa.");
        }
    }
    Name::from_ascii(s).expect("reverse names are valid")
}

/// The reverse zone (`in-addr.arpa.` or `ip6.arpa.`) a name is in, if any.
pub(crate) fn reverse_zone(name: &Name) -> Option<Name> {
    ["in-addr.arpa.", "ip6.arpa."]
        .into_iter()
        .map(|z| Name::from_ascii(z).expect("valid constant name"))
        .find(|z| z.zone_of(name))
}

/// The labels of a name as strings (lossy for non-UTF-8 bytes).
pub(crate) fn labels(name: &Name) -> Vec<String> {
    name.iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse("10.96.0.10".parse().unwrap()).to_ascii(),
            "10.0.96.10.in-addr.arpa."
        );
        assert_eq!(
            reverse("fd00::1".parse().unwrap()).to_ascii(),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa."
        );
    }

    #[test]
    fn dashed_round_trip() {
        for ip in ["10.42.0.2", "fd00:10:42::2", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(parse_dashed(&dashed(ip)), Some(ip));
        }
        assert_eq!(dashed("fd00:10:42::2".parse().unwrap()), "fd00-10-42--2");
        assert_eq!(parse_dashed("10-42-0"), None);
        assert_eq!(parse_dashed("web"), None);
        assert_eq!(
            parse_dashed("fd00-0-0-0-0-0-0-2"),
            Some("fd00::2".parse().unwrap())
        );
    }
}
