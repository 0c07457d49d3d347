//! Header rewriting between client and upstream: hop-by-hop removal (RFC 9110 section 7.6.1),
//! `X-Forwarded-*` and `X-Request-ID`.

use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, TE, UPGRADE};

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

/// Sets the forwarding headers: appends the client to `X-Forwarded-For`, sets
/// `X-Forwarded-Proto` to its scheme and `X-Forwarded-Host` to the host it asked for.
pub fn add_forwarded(headers: &mut HeaderMap, forwarding: &Forwarding<'_>) {
    let previous: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let chain = previous
        .into_iter()
        .chain(std::iter::once(forwarding.client_ip))
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(value) = HeaderValue::from_str(&chain) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    let proto = if forwarding.tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Ok(value) = HeaderValue::from_str(forwarding.host) {
        headers.insert(X_FORWARDED_HOST, value);
    }
}

/// Sets `Host` to `host`, the host the request was routed by, replacing the client's.
pub fn set_host(headers: &mut HeaderMap, host: &str) {
    if let Ok(value) = HeaderValue::from_str(host) {
        headers.insert(HOST, value);
    }
}

/// What one pass over the fields of a head finds (`'b`: the head's bytes).
#[derive(Default)]
pub struct Seen<'b> {
    /// The first `Host`.
    pub host: Option<&'b [u8]>,
    /// The first `X-Request-ID`.
    pub request_id: Option<&'b [u8]>,
    /// An `Upgrade` field is there.
    pub upgrade: bool,
    /// An `Expect` field is there.
    pub expect: bool,
    /// The values of `X-Forwarded-For`, in order.
    pub forwarded_for: Vec<&'b [u8]>,
    /// `TE` lists `trailers`.
    pub trailers: bool,
    /// `Connection` lists `close`.
    pub close: bool,
    /// The field names `Connection` lists besides the fixed hop-by-hop ones (hop-by-hop
    /// too).
    listed: Vec<&'b [u8]>,
}

impl<'b> Seen<'b> {
    /// Looks at each field (name, value) once.
    pub fn of(fields: impl IntoIterator<Item = (&'b str, &'b [u8])>) -> Seen<'b> {
        let mut seen = Seen::default();
        for (name, value) in fields {
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            if is("host") {
                seen.host.get_or_insert(value);
            } else if is("x-request-id") {
                seen.request_id.get_or_insert(value);
            } else if is("connection") {
                for token in tokens(value) {
                    seen.close |= token.eq_ignore_ascii_case(b"close");
                    // The fixed names are hop-by-hop anyway: a common
                    // `Connection: keep-alive` lists nothing more.
                    let fixed = HOP_BY_HOP
                        .iter()
                        .any(|h| token.eq_ignore_ascii_case(h.as_bytes()));
                    if !fixed {
                        seen.listed.push(token);
                    }
                }
            } else if is("te") {
                seen.trailers |= tokens(value).any(|t| t.eq_ignore_ascii_case(b"trailers"));
            } else if is("x-forwarded-for") {
                seen.forwarded_for.push(value);
            } else {
                seen.upgrade |= is("upgrade");
                seen.expect |= is("expect");
            }
        }
        seen
    }

    /// Whether field `name` is hop-by-hop: a fixed one or one that `Connection` names.
    pub fn hop_by_hop(&self, name: &str) -> bool {
        HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
            || self
                .listed
                .iter()
                .any(|l| name.as_bytes().eq_ignore_ascii_case(l))
    }
}

/// Whom a request is forwarded for: the client's address and scheme, and the host it asked
/// for (as sent).
pub struct Forwarding<'a> {
    /// The client's IP, as `X-Forwarded-For` gets it.
    pub client_ip: &'a str,
    /// The client came over TLS.
    pub tls: bool,
    /// The host the client asked for.
    pub host: &'a str,
}

/// Writes the HTTP/1.1 head of a bodiless request to send upstream into `out`: the request
/// line; `Host`, the host the request was routed by (the client's own `Host` fields are
/// replaced, as RFC 9112 section 3.2.2 asks of a proxy: an HTTP/2 request's `:authority` or
/// a second `Host` cannot route one way and reach the backend as another); the client's
/// fields (scanned into `seen`) without the hop-by-hop ones (`TE` kept as `te: trailers`
/// when it asked for trailers) and without those replaced here; `X-Forwarded-For` with the
/// client appended, `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Request-ID`. The same
/// rewriting as [`strip_hop_by_hop`], [`add_forwarded`] and [`set_host`] make on a header
/// map (but for values that are not visible ASCII, copied here as they came).
pub fn request_head<'b>(
    out: &mut Vec<u8>,
    (method, target): (&str, &str),
    fields: impl Iterator<Item = (&'b str, &'b [u8])>,
    seen: &Seen<'b>,
    forwarding: &Forwarding<'_>,
    request_id: &[u8],
) {
    out.clear();
    for part in [method, " ", target, " HTTP/1.1\r\n"] {
        out.extend_from_slice(part.as_bytes());
    }
    line(out, b"Host", forwarding.host.as_bytes());
    let replaced = [
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
    ];
    for (name, value) in fields {
        let ours = replaced.iter().any(|r| name.eq_ignore_ascii_case(r));
        if !ours && !seen.hop_by_hop(name) {
            line(out, name.as_bytes(), value);
        }
    }
    if seen.trailers {
        line(out, b"te", b"trailers");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if !seen.hop_by_hop("x-forwarded-for") {
        for value in &seen.forwarded_for {
            out.extend_from_slice(value);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(forwarding.client_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    let proto = if forwarding.tls { "https" } else { "http" };
    line(out, b"x-forwarded-proto", proto.as_bytes());
    line(out, b"x-forwarded-host", forwarding.host.as_bytes());
    line(out, b"x-request-id", request_id);
    out.extend_from_slice(b"\r\n");
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
        let forwarding = Forwarding {
            client_ip: "::1",
            tls: false,
            host: "Foo.example:8080",
        };
        add_forwarded(&mut h, &forwarding);
        assert_eq!(h["x-forwarded-for"], "192.0.2.1, 192.0.2.2, ::1");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "Foo.example:8080");
    }

    /// The fields of `head` (an HTTP/1.1 request head), lower-cased and sorted.
    fn written_fields(head: &[u8]) -> Vec<(String, String)> {
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut fields);
        assert!(req.parse(head).unwrap().is_complete());
        assert_eq!((req.method, req.path), (Some("GET"), Some("/a?b")));
        let mut out: Vec<_> = req
            .headers
            .iter()
            .map(|h| {
                let value = String::from_utf8(h.value.to_vec()).unwrap();
                (h.name.to_ascii_lowercase(), value)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_head_written_as_bytes_is_rewritten_as_a_header_map_is() {
        let cases: [&[(&str, &str)]; 7] = [
            &[("host", "foo.example"), ("accept", "*/*")],
            // HTTP/2: no Host field.
            &[("accept", "*/*"), ("x-request-id", "theirs")],
            &[
                ("host", "foo.example"),
                ("connection", "keep-alive, x-secret"),
                ("x-secret", "1"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers, deflate"),
                ("x-forwarded-for", "192.0.2.1"),
                ("x-forwarded-for", "192.0.2.2"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "elsewhere"),
            ],
            &[
                ("host", "foo.example"),
                ("proxy-connection", "x"),
                ("upgrade", "h2c"),
            ],
            // Fields that Connection names are hop-by-hop, Host and X-Forwarded-For too;
            // a Host other than the routed one, or a second, does not reach the backend.
            &[
                ("Host", "other.example"),
                ("Connection", "Host, X-Forwarded-For, close"),
            ],
            &[
                ("x-forwarded-for", "192.0.2.1"),
                ("connection", "x-forwarded-for"),
            ],
            &[
                ("host", "foo.example"),
                ("host", "evil.example"),
                ("Vary", "a"),
            ],
        ];
        for (i, case) in cases.into_iter().enumerate() {
            let forwarding = Forwarding {
                client_ip: "10.0.0.9",
                tls: i % 2 == 1,
                host: "Foo.example:8080",
            };
            let mut map = map(case);
            let fields = case.iter().map(|(n, v)| (*n, v.as_bytes()));
            let mut bytes = Vec::new();
            let seen = Seen::of(fields.clone());
            request_head(
                &mut bytes,
                ("GET", "/a?b"),
                fields,
                &seen,
                &forwarding,
                b"id-1",
            );

            strip_hop_by_hop(&mut map, false);
            add_forwarded(&mut map, &forwarding);
            map.insert(X_REQUEST_ID, HeaderValue::from_static("id-1"));
            set_host(&mut map, forwarding.host);
            let mut want: Vec<_> = map
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            want.sort();
            assert_eq!(written_fields(&bytes), want, "case {i}");
        }
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
