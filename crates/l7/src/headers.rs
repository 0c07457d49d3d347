//! Header rewriting between client and upstream: hop-by-hop removal (RFC 9110 section 7.6.1),
//! `X-Forwarded-*` and `X-Request-ID`.

use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, TE, UPGRADE};
use std::net::IpAddr;

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Request-ID`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Writes the HTTP/1.1 header line `name: value` into `out`.
pub fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Longest incoming request id kept.
const MAX_REQUEST_ID: usize = 128;

/// The hop-by-hop headers every hop removes (besides those `Connection` names).
pub const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "upgrade",
];

/// The comma-separated tokens of a header value, trimmed, empty ones left out.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether any value of header `name` holds `token` in its comma-separated list.
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A WebSocket upgrade request: `Upgrade: websocket` and `Connection: upgrade`.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, &UPGRADE, "websocket") && has_token(headers, &CONNECTION, "upgrade")
}

/// Removes hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`,
/// `Proxy-Connection`, `Transfer-Encoding`, `TE` (kept as `TE: trailers` when it asked for
/// trailers) and `Upgrade`. With `upgrade`, `Upgrade` is kept and `Connection: upgrade` set,
/// as a WebSocket handshake needs on both hops.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages have none: one pass over the names instead of a lookup per name.
    if !headers
        .keys()
        .any(|name| HOP_BY_HOP.iter().any(|h| name == h))
    {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let trailers = has_token(headers, &TE, "trailers");
    let upgrade_value = headers.get(UPGRADE).cloned();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if let (true, Some(value)) = (upgrade, upgrade_value) {
        headers.insert(UPGRADE, value);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Sets the forwarding headers: appends `client` to `X-Forwarded-For`, sets
/// `X-Forwarded-Proto` to `proto` and `X-Forwarded-Host` to the host the client asked for.
pub fn add_forwarded(headers: &mut HeaderMap, client: IpAddr, proto: &'static str, host: &str) {
    let previous: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let chain = previous
        .into_iter()
        .chain(std::iter::once(client.to_string().as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(value) = HeaderValue::from_str(&chain) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Ok(value) = HeaderValue::from_str(host) {
        headers.insert(X_FORWARDED_HOST, value);
    }
}

/// A request id to keep: 1 to 128 characters of letters, digits and `-_.:+/=`.
pub fn valid_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(b))
}

/// A new request id: `fresh` in 32 lower-case hex digits.
pub fn new_request_id(fresh: u128) -> [u8; 32] {
    let mut hex = [0u8; 32];
    for (i, digit) in hex.iter_mut().enumerate() {
        let nibble = (fresh >> (4 * (31 - i))) & 0xf;
        *digit = b"0123456789abcdef"[nibble as usize];
    }
    hex
}

/// The request's id: its own `X-Request-ID` when valid (the first one), else `fresh`.
/// Marked sensitive, so that HTTP/2 sends it as a literal never indexed: every id is new,
/// and an entry for it in the peer's HPACK table would only push out the fields that do
/// repeat (and make the encoder search a longer chain of `x-request-id` entries each time).
pub fn request_id(headers: &HeaderMap, fresh: u128) -> HeaderValue {
    let mut id = match headers.get(X_REQUEST_ID) {
        Some(v) if valid_request_id(v.as_bytes()) => v.clone(),
        _ => HeaderValue::from_bytes(&new_request_id(fresh)).expect("hex is a valid value"),
    };
    id.set_sensitive(true);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers, deflate"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept", "te"]);
        assert_eq!(h["te"], "trailers");
        for name in HOP_BY_HOP {
            let mut h = map(&[("x-kept", "yes"), (name, "close")]);
            strip_hop_by_hop(&mut h, false);
            let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
            assert_eq!(names, ["x-kept"], "{name} alone");
        }
    }

    #[test]
    fn upgrade_survives_when_upgrading() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
        ]);
        assert!(is_websocket_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!h.contains_key("te"));
        assert!(!is_websocket_upgrade(&map(&[("upgrade", "websocket")])));
    }

    #[test]
    fn forwarded_headers_append_and_set() {
        let mut h = map(&[
            ("x-forwarded-for", "192.0.2.1"),
            ("x-forwarded-for", "192.0.2.2"),
            ("x-forwarded-proto", "https"),
        ]);
        add_forwarded(&mut h, "::1".parse().unwrap(), "http", "Foo.example:8080");
        assert_eq!(h["x-forwarded-for"], "192.0.2.1, 192.0.2.2, ::1");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "Foo.example:8080");
    }

    #[test]
    fn request_ids_are_kept_when_valid() {
        assert_eq!(request_id(&map(&[("x-request-id", "abc-1")]), 7), "abc-1");
        assert_eq!(
            request_id(&map(&[("x-request-id", "bad id")]), 255),
            "000000000000000000000000000000ff"
        );
        assert_eq!(request_id(&map(&[]), 1).len(), 32);
        assert!(!valid_request_id(&[b'a'; 129]));
    }

    #[test]
    fn request_ids_are_never_indexed_by_hpack() {
        assert!(request_id(&map(&[("x-request-id", "abc-1")]), 7).is_sensitive());
        assert!(request_id(&map(&[]), 1).is_sensitive());
    }
}
