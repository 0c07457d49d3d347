//! The workload server: HTTP/1.1 over TCP, a text protocol over UDP and SCTP.

use crate::{Identity, Protocol};
use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use socket2::{Domain, Socket, Type};
use std::convert::Infallible;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// The largest request body read (and discarded) to keep a connection alive.
const MAX_BODY: usize = 1 << 20;

/// What to serve: who we are and on which ports.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Reported in every answer.
    pub identity: Identity,
    /// Ports to listen on; port 0 picks a free port (see [`spawn_servers_bound`]).
    pub ports: Vec<(Protocol, u16)>,
}

/// One listener that is bound and being served.
#[derive(Debug)]
pub struct BoundServer {
    /// Its protocol.
    pub protocol: Protocol,
    /// The port actually bound (differs from the configured one only for port 0).
    pub port: u16,
    /// The task serving it; it runs until aborted or its runtime shuts down.
    pub task: JoinHandle<()>,
}

/// Serves until the process is killed (blocking; builds its own tokio runtime).
///
/// Prints the line `ready` on stdout once every port is bound (the node agent
/// waits for it). Fails with a clear error if a port cannot be bound.
pub fn serve(cfg: ServerConfig) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    rt.block_on(async {
        let servers = spawn_servers_bound(cfg).await?;
        let mut out = io::stdout().lock();
        writeln!(out, "ready")
            .and_then(|()| out.flush())
            .context("writing ready to stdout")?;
        drop(out);
        for s in servers {
            s.task.await.with_context(|| {
                format!("the {} listener on port {} stopped", s.protocol, s.port)
            })?;
        }
        // No port at all (or only unsupported SCTP ones): stay up like a pod.
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// Like [`serve`] but returns once all listeners are bound, for tests: runs in
/// the background on the current tokio runtime.
pub async fn spawn_servers(cfg: ServerConfig) -> Result<Vec<JoinHandle<()>>> {
    Ok(spawn_servers_bound(cfg)
        .await?
        .into_iter()
        .map(|s| s.task)
        .collect())
}

/// Like [`spawn_servers`], also telling the ports bound. SCTP ports are left
/// out (with a warning) when the kernel does not support SCTP.
pub async fn spawn_servers_bound(cfg: ServerConfig) -> Result<Vec<BoundServer>> {
    let identity = Arc::new(cfg.identity);
    let mut bound = Vec::new();
    for (protocol, port) in cfg.ports {
        let ty = match protocol {
            Protocol::Udp => Type::DGRAM,
            Protocol::Tcp | Protocol::Sctp => Type::STREAM,
        };
        let sock = match dual_stack_socket(protocol, ty, port) {
            Ok(s) => s,
            Err(e) if protocol == Protocol::Sctp && unsupported(&e) => {
                tracing::warn!(port, error = %e, "the kernel does not support SCTP; not serving this port");
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot listen on {protocol} port {port}"))
            }
        };
        let actual = sock.local_addr()?.as_socket().map_or(port, |a| a.port());
        let id = identity.clone();
        let task = match protocol {
            Protocol::Tcp => tokio::spawn(serve_tcp(TcpListener::from_std(sock.into())?, id)),
            Protocol::Udp => tokio::spawn(serve_udp(UdpSocket::from_std(sock.into())?, id)),
            // One-to-one SCTP sockets accept, read and write like TCP ones.
            Protocol::Sctp => tokio::spawn(serve_sctp(TcpListener::from_std(sock.into())?, id)),
        };
        tracing::info!(%protocol, port = actual, "listening");
        bound.push(BoundServer {
            protocol,
            port: actual,
            task,
        });
    }
    Ok(bound)
}

/// Whether socket creation failed because the protocol is missing from the kernel.
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPROTONOSUPPORT | libc::ESOCKTNOSUPPORT)
    )
}

/// A non-blocking socket bound to `[::]:port` that also accepts IPv4, or to
/// `0.0.0.0:port` where IPv6 is not available at all.
fn dual_stack_socket(protocol: Protocol, ty: Type, port: u16) -> io::Result<Socket> {
    let proto = match protocol {
        Protocol::Tcp => socket2::Protocol::TCP,
        Protocol::Udp => socket2::Protocol::UDP,
        Protocol::Sctp => socket2::Protocol::SCTP,
    };
    let (sock, addr) = match Socket::new(Domain::IPV6, ty, Some(proto)) {
        Ok(s) => {
            s.set_only_v6(false)?;
            (s, SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
        }
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
            let s = Socket::new(Domain::IPV4, ty, Some(proto))?;
            (s, SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
        }
        Err(e) => return Err(e),
    };
    if ty == Type::STREAM {
        // Restarts must not wait for TIME_WAIT; datagram sockets must not share ports.
        sock.set_reuse_address(true)?;
    }
    sock.bind(&addr.into())?;
    if ty == Type::STREAM {
        sock.listen(1024)?;
    }
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// The client's IP as reported: IPv4-mapped IPv6 addresses become plain IPv4.
fn client_ip(peer: SocketAddr) -> IpAddr {
    peer.ip().to_canonical()
}

/// Accepts forever, logging (and pausing briefly after) accept errors.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(c) => return c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, id: Arc<Identity>) {
    loop {
        let (stream, peer) = accept(&listener).await;
        let id = id.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| answer_http(req, id.clone(), peer));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "HTTP connection failed");
            }
        });
    }
}

/// Answers one HTTP request: `GET /hostname` and `GET /clientip` in plain
/// text, anything else with JSON describing the pod and the request.
async fn answer_http(
    req: Request<Incoming>,
    id: Arc<Identity>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    // Read the body so the connection can be kept alive; its content is not used.
    let _ = Limited::new(body, MAX_BODY).collect().await;
    let ip = client_ip(peer);
    let (content_type, text) = match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/hostname") => ("text/plain; charset=utf-8", id.pod.clone()),
        (&Method::GET, "/clientip") => ("text/plain; charset=utf-8", ip.to_string()),
        _ => {
            let mut headers = serde_json::Map::new();
            for name in parts.headers.keys() {
                let values: Vec<String> = parts
                    .headers
                    .get_all(name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                headers.insert(name.as_str().to_string(), values.join(", ").into());
            }
            let host = parts
                .headers
                .get(HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
                .or_else(|| parts.uri.authority().map(|a| a.to_string()))
                .unwrap_or_default();
            let body = serde_json::json!({
                "pod": id.pod,
                "namespace": id.namespace,
                "node": id.node,
                "clientAddress": ip.to_string(),
                "method": parts.method.as_str(),
                "host": host,
                "path": parts.uri.path(),
                "headers": headers,
            });
            ("application/json", body.to_string())
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(resp)
}

/// The text protocol: `hostname` → the pod name, `clientip` → the client's
/// IP, anything else echoed unchanged. A trailing newline is ignored when matching.
fn text_reply(msg: &[u8], id: &Identity, peer: SocketAddr) -> Vec<u8> {
    let cmd = msg
        .strip_suffix(b"\n")
        .map_or(msg, |m| m.strip_suffix(b"\r").unwrap_or(m));
    match cmd {
        b"hostname" => id.pod.clone().into_bytes(),
        b"clientip" => client_ip(peer).to_string().into_bytes(),
        _ => msg.to_vec(),
    }
}

async fn serve_udp(sock: UdpSocket, id: Arc<Identity>) {
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, peer)) => {
                let reply = text_reply(&buf[..n], &id, peer);
                if let Err(e) = sock.send_to(&reply, peer).await {
                    tracing::debug!(%peer, error = %e, "UDP reply failed");
                }
            }
            Err(e) => tracing::debug!(error = %e, "UDP receive failed"),
        }
    }
}

async fn serve_sctp(listener: TcpListener, id: Arc<Identity>) {
    loop {
        let (mut stream, peer) = accept(&listener).await;
        let id = id.clone();
        tokio::spawn(async move {
            // Each read of a one-to-one SCTP socket returns (at most) one message.
            let mut buf = vec![0u8; 65536];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        let reply = text_reply(&buf[..n], &id, peer);
                        if let Err(e) = stream.write_all(&reply).await {
                            tracing::debug!(%peer, error = %e, "SCTP reply failed");
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "SCTP receive failed");
                        break;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity {
            pod: "web-1".into(),
            namespace: "default".into(),
            node: "n1".into(),
        }
    }

    #[test]
    fn text_protocol() {
        let v4: SocketAddr = "[::ffff:10.42.1.5]:4000".parse().unwrap();
        let v6: SocketAddr = "[fd00:10::5]:4000".parse().unwrap();
        assert_eq!(text_reply(b"hostname", &id(), v4), b"web-1");
        assert_eq!(text_reply(b"hostname\n", &id(), v4), b"web-1");
        assert_eq!(text_reply(b"hostname\r\n", &id(), v4), b"web-1");
        assert_eq!(text_reply(b"clientip\n", &id(), v4), b"10.42.1.5");
        assert_eq!(text_reply(b"clientip", &id(), v6), b"fd00:10::5");
        assert_eq!(text_reply(b"hello\n", &id(), v4), b"hello\n");
        assert_eq!(text_reply(b"hostname\n\n", &id(), v4), b"hostname\n\n");
        assert_eq!(text_reply(b"", &id(), v4), b"");
    }
}
