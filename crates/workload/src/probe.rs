//! The probe client: one connection attempt to a workload, from inside a network namespace.

use crate::Protocol;
use anyhow::{bail, Context};
use nix::sched::CloneFlags;
use socket2::{Domain, Socket, Type};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The largest HTTP response read.
const MAX_RESPONSE: usize = 1 << 20;
/// How often an unanswered UDP question is sent again.
const UDP_RESEND: Duration = Duration::from_millis(250);

/// How a probe ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeResult {
    /// The target answered (see `error` for a connection without a valid answer).
    Connected,
    /// Connection refused: a TCP RST or an ICMP port unreachable.
    Refused,
    /// No answer within the timeout.
    Timeout,
    /// No route, host unreachable, or the probe could not be made at all.
    Unreachable,
}

/// Which workload answered.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ServerInfo {
    /// The pod's name.
    pub pod: String,
    /// The pod's namespace (empty when the protocol does not tell it).
    #[serde(default)]
    pub namespace: String,
    /// The pod's node (empty when the protocol does not tell it).
    #[serde(default)]
    pub node: String,
}

/// The outcome of one probe.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeReport {
    /// How it ended.
    pub result: ProbeResult,
    /// Who answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerInfo>,
    /// The client IP the server saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_address: Option<String>,
    /// Milliseconds (3 decimals) to the first answer: TCP and SCTP the
    /// connect, UDP the first reply; on failure the time until it was known.
    pub latency_ms: f64,
    /// What went wrong, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One connection attempt to make.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The network namespace file to probe from (e.g. `/run/netns/NAME`); `None` = the current one.
    pub netns: Option<PathBuf>,
    /// Where to connect.
    pub target: SocketAddr,
    /// How: TCP (HTTP), UDP or SCTP (text protocol).
    pub protocol: Protocol,
    /// The limit on the whole probe.
    pub timeout: Duration,
    /// Bind this local port (a client that keeps its port, as a DNS resolver may).
    pub source_port: Option<u16>,
    /// For TCP: the HTTP request's Host header and path (default: the target, `/`).
    pub http: Option<HttpRequest>,
}

/// The HTTP request a TCP probe sends.
#[derive(Clone, Debug, Default)]
pub struct HttpRequest {
    /// The Host header.
    pub host: Option<String>,
    /// The path (and query); `/` when empty.
    pub path: String,
}

/// One connection attempt from inside `netns` (a path like /run/netns/NAME;
/// None = current namespace). Blocking; takes at most about `timeout`.
pub fn probe(p: &Probe) -> ProbeReport {
    let begun = Instant::now();
    let deadline = begun + p.timeout;
    let (ty, proto) = match p.protocol {
        Protocol::Tcp => (Type::STREAM, socket2::Protocol::TCP),
        Protocol::Udp => (Type::DGRAM, socket2::Protocol::UDP),
        Protocol::Sctp => (Type::STREAM, socket2::Protocol::SCTP),
    };
    let sock = match socket_in_netns(
        p.netns.as_deref(),
        Domain::for_address(p.target),
        ty,
        Some(proto),
    ) {
        Ok(s) => s,
        Err(e) => {
            return failed(
                ProbeResult::Unreachable,
                format!("cannot open a {} socket: {e}", p.protocol),
                begun,
            )
        }
    };
    if let Some(port) = p.source_port {
        let local = SocketAddr::new(
            match p.target {
                SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
            },
            port,
        );
        let bound = sock
            .set_reuse_address(true)
            .and_then(|_| sock.bind(&local.into()));
        if let Err(e) = bound {
            return failed(
                ProbeResult::Unreachable,
                format!("cannot bind port {port}: {e}"),
                begun,
            );
        }
    }
    // Latency counts from here: opening a socket in a namespace is not the network's time.
    let started = Instant::now();
    let connected = match p.protocol {
        Protocol::Udp => sock.connect(&p.target.into()),
        Protocol::Tcp | Protocol::Sctp => {
            sock.connect_timeout(&p.target.into(), remaining(deadline))
        }
    };
    if let Err(e) = connected {
        return failed(classify(&e), e.to_string(), started);
    }
    let connect_latency = started.elapsed();
    match p.protocol {
        Protocol::Tcp => match http_get(&sock, p.target, p.http.as_ref(), deadline) {
            Ok((server, client)) => connected_report(server, client, connect_latency, None),
            Err(e) => no_answer(connect_latency, format!("{e:#}")),
        },
        Protocol::Udp | Protocol::Sctp => {
            let resend = p.protocol == Protocol::Udp;
            let pod = match ask(&sock, b"hostname", deadline, resend, |r| !r.is_empty()) {
                Ok(pod) => pod,
                Err(e) if resend => return failed(classify(&e), e.to_string(), started),
                Err(e) => return no_answer(connect_latency, format!("asking hostname: {e}")),
            };
            // SCTP latency is the connect time, like TCP.
            let latency = if resend {
                started.elapsed()
            } else {
                connect_latency
            };
            let server = ServerInfo {
                pod,
                namespace: String::new(),
                node: String::new(),
            };
            match ask(&sock, b"clientip", deadline, resend, |r| {
                r.parse::<IpAddr>().is_ok()
            }) {
                Ok(ip) => connected_report(server, Some(ip), latency, None),
                Err(e) => {
                    connected_report(server, None, latency, Some(format!("asking clientip: {e}")))
                }
            }
        }
    }
}

/// Opens a socket inside a network namespace: spawns a short-lived std thread,
/// setns(CLONE_NEWNET) into the namespace file, creates the socket with
/// socket2, and returns it (a socket stays in the namespace it was created
/// in, so the caller's thread never changes namespace).
pub fn socket_in_netns(
    netns: Option<&Path>,
    domain: Domain,
    ty: Type,
    protocol: Option<socket2::Protocol>,
) -> io::Result<Socket> {
    let Some(path) = netns else {
        return Socket::new(domain, ty, protocol);
    };
    let file = std::fs::File::open(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("opening network namespace {}: {e}", path.display()),
        )
    })?;
    std::thread::Builder::new()
        .name("netns-socket".into())
        .spawn(move || {
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            Socket::new(domain, ty, protocol)
        })?
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
}

fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

fn classify(e: &io::Error) -> ProbeResult {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => ProbeResult::Refused,
        Some(libc::ETIMEDOUT) => ProbeResult::Timeout,
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => ProbeResult::Unreachable,
        _ => match e.kind() {
            ErrorKind::TimedOut | ErrorKind::WouldBlock => ProbeResult::Timeout,
            _ => ProbeResult::Unreachable,
        },
    }
}

fn failed(result: ProbeResult, error: String, started: Instant) -> ProbeReport {
    ProbeReport {
        result,
        server: None,
        client_address: None,
        latency_ms: millis(started.elapsed()),
        error: Some(error),
    }
}

/// Connected (TCP or SCTP), but no valid answer.
fn no_answer(latency: Duration, error: String) -> ProbeReport {
    ProbeReport {
        result: ProbeResult::Connected,
        server: None,
        client_address: None,
        latency_ms: millis(latency),
        error: Some(error),
    }
}

fn connected_report(
    server: ServerInfo,
    client_address: Option<String>,
    latency: Duration,
    error: Option<String>,
) -> ProbeReport {
    ProbeReport {
        result: ProbeResult::Connected,
        server: Some(server),
        client_address,
        latency_ms: millis(latency),
        error,
    }
}

/// Sends `question` on a connected socket and waits for a reply that
/// `accept`s, sending it again every [`UDP_RESEND`] when `resend`.
fn ask(
    sock: &Socket,
    question: &[u8],
    deadline: Instant,
    resend: bool,
    accept: impl Fn(&str) -> bool,
) -> io::Result<String> {
    let mut buf = vec![0u8; 65536];
    loop {
        sock.send(question)?;
        let next_send = if resend {
            Instant::now() + UDP_RESEND
        } else {
            deadline
        };
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    "no answer within the timeout",
                ));
            }
            if now >= next_send {
                break;
            }
            sock.set_read_timeout(Some(next_send.min(deadline) - now))?;
            match (&*sock).read(&mut buf) {
                Ok(0) if !resend => {
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "connection closed",
                    ))
                }
                Ok(n) => {
                    let reply = String::from_utf8_lossy(&buf[..n]);
                    if accept(&reply) {
                        return Ok(reply.into_owned());
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The workload's JSON answer, as far as the probe needs it.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpAnswer {
    pod: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    node: String,
    client_address: Option<String>,
}

/// `GET /` on a connected socket; returns who answered and the client IP it saw.
fn http_get(
    sock: &Socket,
    target: SocketAddr,
    http: Option<&HttpRequest>,
    deadline: Instant,
) -> anyhow::Result<(ServerInfo, Option<String>)> {
    let host = http
        .and_then(|h| h.host.clone())
        .unwrap_or_else(|| target.to_string());
    let path = http
        .map(|h| h.path.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    sock.set_write_timeout(Some(remaining(deadline)))?;
    (&*sock)
        .write_all(request.as_bytes())
        .context("sending the request")?;
    let mut resp = Vec::new();
    let mut buf = vec![0u8; 16384];
    while !complete(&resp) {
        if Instant::now() >= deadline {
            bail!(
                "no complete answer within the timeout ({} bytes read)",
                resp.len()
            );
        }
        sock.set_read_timeout(Some(remaining(deadline)))?;
        match (&*sock).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                resp.extend_from_slice(&buf[..n]);
                if resp.len() > MAX_RESPONSE {
                    bail!("answer larger than {MAX_RESPONSE} bytes");
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e).context("reading the answer"),
        }
    }
    let (head, body) = split_response(&resp).context("the answer is not HTTP")?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("HTTP status line {status:?}");
    }
    let body = match content_length(head) {
        Some(n) if body.len() >= n => &body[..n],
        Some(n) => bail!("answer body truncated ({} of {n} bytes)", body.len()),
        None => body,
    };
    let a: HttpAnswer =
        serde_json::from_slice(body).context("the answer is not the workload's JSON")?;
    Ok((
        ServerInfo {
            pod: a.pod,
            namespace: a.namespace,
            node: a.node,
        },
        a.client_address,
    ))
}

/// Splits a response into its head (status line and headers) and body.
fn split_response(resp: &[u8]) -> Option<(&str, &[u8])> {
    let end = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&resp[..end]).ok()?;
    Some((head, &resp[end + 4..]))
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().skip(1).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

/// Whether a response has all of its body (by Content-Length).
fn complete(resp: &[u8]) -> bool {
    match split_response(resp) {
        Some((head, body)) => content_length(head).is_some_and(|n| body.len() >= n),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_parsing() {
        let r =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 5\r\n\r\nhello";
        let (head, body) = split_response(r).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"));
        assert_eq!(body, b"hello");
        assert_eq!(content_length(head), Some(5));
        assert!(complete(r));
        assert!(!complete(&r[..r.len() - 1]));
        assert!(!complete(b"HTTP/1.1 200 OK\r\n"));
        assert_eq!(content_length("HTTP/1.1 200 OK\r\nx: y"), None);
    }

    #[test]
    fn errors_classify() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(classify(&os(libc::ECONNREFUSED)), ProbeResult::Refused);
        assert_eq!(classify(&os(libc::ENETUNREACH)), ProbeResult::Unreachable);
        assert_eq!(classify(&os(libc::EHOSTUNREACH)), ProbeResult::Unreachable);
        assert_eq!(classify(&os(libc::ETIMEDOUT)), ProbeResult::Timeout);
        assert_eq!(
            classify(&io::Error::from(ErrorKind::TimedOut)),
            ProbeResult::Timeout
        );
        assert_eq!(classify(&os(libc::EACCES)), ProbeResult::Unreachable);
    }

    #[test]
    fn report_json_is_camel_case_without_empty_fields() {
        let r = ProbeReport {
            result: ProbeResult::Refused,
            server: None,
            client_address: None,
            latency_ms: 0.25,
            error: Some("connection refused".into()),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"result": "refused", "latencyMs": 0.25, "error": "connection refused"})
        );
        let ok = connected_report(
            ServerInfo {
                pod: "a".into(),
                namespace: String::new(),
                node: String::new(),
            },
            Some("10.42.0.5".into()),
            Duration::from_micros(1234),
            None,
        );
        let v = serde_json::to_value(&ok).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "result": "connected",
                "server": {"pod": "a", "namespace": "", "node": ""},
                "clientAddress": "10.42.0.5",
                "latencyMs": 1.234
            })
        );
        let back: ServerInfo = serde_json::from_str(r#"{"pod":"b"}"#).unwrap();
        assert_eq!(
            back,
            ServerInfo {
                pod: "b".into(),
                namespace: String::new(),
                node: String::new()
            }
        );
    }
}
