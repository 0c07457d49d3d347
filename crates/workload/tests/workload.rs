//! The workload server and the probe client against each other: on the
//! loopback of the current namespace and inside throw-away network namespaces.

use flatnet_workload::{
    probe, socket_in_netns, spawn_servers, spawn_servers_bound, BoundServer, Identity, Probe,
    ProbeReport, ProbeResult, Protocol, ServerConfig,
};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn identity() -> Identity {
    Identity {
        pod: "web-1".into(),
        namespace: "shop".into(),
        node: "node-a".into(),
    }
}

/// Starts TCP and UDP servers on free ports of the current namespace.
async fn start() -> (u16, u16) {
    let bound = spawn_servers_bound(ServerConfig {
        identity: identity(),
        ports: vec![(Protocol::Tcp, 0), (Protocol::Udp, 0)],
    })
    .await
    .unwrap();
    assert_eq!(bound.len(), 2);
    assert_eq!(bound[0].protocol, Protocol::Tcp);
    assert_eq!(bound[1].protocol, Protocol::Udp);
    assert!(bound[0].port != 0 && bound[1].port != 0);
    (bound[0].port, bound[1].port)
}

/// A network namespace for one test, deleted on drop (success or failure).
struct Netns {
    name: String,
}

impl Netns {
    /// A fresh namespace with only `lo`, up.
    fn new(tag: &str) -> Netns {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "fltest-wl{}-{}-{}",
            tag,
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `ip -n NAME ARGS…` inside the namespace.
    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A workload serving inside a namespace, on its own thread and runtime; stopped on drop.
struct NetnsServer {
    ports: Vec<u16>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NetnsServer {
    fn start(ns: &Netns, ports: Vec<(Protocol, u16)>) -> NetnsServer {
        let file = std::fs::File::open(ns.path()).unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let bound = spawn_servers_bound(ServerConfig {
                    identity: identity(),
                    ports,
                })
                .await
                .unwrap();
                ready_tx
                    .send(bound.iter().map(|b| b.port).collect::<Vec<_>>())
                    .unwrap();
                let _ = stopped.await;
            });
        });
        let ports = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server in the namespace started");
        NetnsServer {
            ports,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for NetnsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn probe_async(
    netns: Option<PathBuf>,
    target: SocketAddr,
    protocol: Protocol,
    timeout: Duration,
) -> ProbeReport {
    tokio::task::spawn_blocking(move || {
        probe(&Probe {
            netns,
            target,
            protocol,
            timeout,
            source_port: None,
            http: None,
        })
    })
    .await
    .unwrap()
}

/// A port with nothing listening on `ip` for `protocol` (bound to 0, then released).
fn closed_port(ip: &str, protocol: Protocol) -> u16 {
    match protocol {
        Protocol::Udp => UdpSocket::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
        _ => std::net::TcpListener::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn http_connect(addr: SocketAddr) -> (Sender, SocketAddr) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    (sender, local)
}

async fn get(sender: &mut Sender, host: &str, path: &str) -> (String, String) {
    let req = hyper::Request::get(path)
        .header("host", host)
        .header("x-probe", "one")
        .header("x-multi", "a")
        .header("x-multi", "b")
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (ct, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn http_answers_json_about_pod_and_request() {
    let (tcp, _) = start().await;
    for ip in ["127.0.0.1", "::1"] {
        let addr = SocketAddr::new(ip.parse().unwrap(), tcp);
        let (mut sender, local) = http_connect(addr).await;
        let (ct, body) = get(&mut sender, "web.example:8080", "/some/path?x=1").await;
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["pod"], "web-1");
        assert_eq!(v["namespace"], "shop");
        assert_eq!(v["node"], "node-a");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["host"], "web.example:8080");
        assert_eq!(v["path"], "/some/path");
        assert_eq!(v["headers"]["x-probe"], "one");
        assert_eq!(v["headers"]["x-multi"], "a, b");
        // An IPv4 client is reported as plain IPv4, not ::ffff:127.0.0.1.
        assert_eq!(v["clientAddress"], local.ip().to_string());
        assert_eq!(v["clientAddress"], ip);
    }
}

#[tokio::test]
async fn http_hostname_clientip_and_keep_alive() {
    let (tcp, _) = start().await;
    for ip in ["127.0.0.1", "::1"] {
        let (mut sender, _) = http_connect(SocketAddr::new(ip.parse().unwrap(), tcp)).await;
        // Two requests on one connection: the server keeps it alive.
        let (ct, body) = get(&mut sender, "x", "/hostname").await;
        assert!(ct.starts_with("text/plain"), "{ct}");
        assert_eq!(body, "web-1");
        let (ct, body) = get(&mut sender, "x", "/clientip").await;
        assert!(ct.starts_with("text/plain"), "{ct}");
        assert_eq!(body, ip);
        assert!(!sender.is_closed());
    }
}

#[tokio::test]
async fn udp_text_protocol() {
    let (_, udp) = start().await;
    for ip in ["127.0.0.1", "::1"] {
        let sock = tokio::net::UdpSocket::bind((ip, 0)).await.unwrap();
        sock.connect((ip, udp)).await.unwrap();
        for (ask, want) in [
            (&b"hostname"[..], &b"web-1"[..]),
            (b"hostname\n", b"web-1"),
            (b"clientip", ip.as_bytes()),
            (b"clientip\n", ip.as_bytes()),
            (b"hello there\n", b"hello there\n"),
        ] {
            sock.send(ask).await.unwrap();
            let mut buf = [0u8; 1500];
            let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                &buf[..n],
                want,
                "answer to {:?}",
                String::from_utf8_lossy(ask)
            );
        }
    }
}

#[tokio::test]
async fn spawn_servers_fails_clearly_on_a_busy_port() {
    // A dual-stack listener of someone else holds the port.
    let busy = std::net::TcpListener::bind("[::]:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let err = spawn_servers(ServerConfig {
        identity: identity(),
        ports: vec![(Protocol::Tcp, port)],
    })
    .await
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(&format!("tcp port {port}")), "{msg}");
    assert!(msg.to_lowercase().contains("in use"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_connected_over_ipv4_and_ipv6() {
    let (tcp, udp) = start().await;
    let timeout = Duration::from_secs(5);
    for ip in ["127.0.0.1", "::1"] {
        let r = probe_async(
            None,
            SocketAddr::new(ip.parse().unwrap(), tcp),
            Protocol::Tcp,
            timeout,
        )
        .await;
        assert_eq!(r.result, ProbeResult::Connected, "{r:?}");
        assert_eq!(r.error, None);
        let s = r.server.unwrap();
        assert_eq!(
            (s.pod.as_str(), s.namespace.as_str(), s.node.as_str()),
            ("web-1", "shop", "node-a")
        );
        assert_eq!(r.client_address.as_deref(), Some(ip));
        assert!(
            r.latency_ms >= 0.0 && r.latency_ms < 5000.0,
            "{}",
            r.latency_ms
        );

        let r = probe_async(
            None,
            SocketAddr::new(ip.parse().unwrap(), udp),
            Protocol::Udp,
            timeout,
        )
        .await;
        assert_eq!(r.result, ProbeResult::Connected, "{r:?}");
        assert_eq!(r.error, None);
        let s = r.server.unwrap();
        assert_eq!(
            (s.pod.as_str(), s.namespace.as_str(), s.node.as_str()),
            ("web-1", "", "")
        );
        assert_eq!(r.client_address.as_deref(), Some(ip));
        assert!(
            r.latency_ms > 0.0 && r.latency_ms < 5000.0,
            "{}",
            r.latency_ms
        );
        // Three decimals at most.
        assert_eq!((r.latency_ms * 1000.0).round() / 1000.0, r.latency_ms);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_connected_with_error_when_not_a_workload() {
    // A TCP server that accepts and answers something that is not HTTP.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = listener.accept().await.unwrap();
        // Read the whole request first: closing with unread data would reset the connection.
        let mut req = Vec::new();
        while !req.ends_with(b"\r\n\r\n") {
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "request cut short");
            req.extend_from_slice(&buf[..n]);
        }
        assert!(req.starts_with(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:"));
        assert!(req.ends_with(b"\r\nConnection: close\r\n\r\n"));
        s.write_all(b"SSH-2.0-nope\r\n").await.unwrap();
    });
    let r = probe_async(None, addr, Protocol::Tcp, Duration::from_secs(5)).await;
    assert_eq!(r.result, ProbeResult::Connected, "{r:?}");
    assert!(r.server.is_none());
    let error = r.error.unwrap();
    assert!(error.contains("not HTTP"), "{error}");
}

#[test]
fn probe_refused_on_closed_tcp_and_udp_ports() {
    for ip in ["127.0.0.1", "::1"] {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let target = SocketAddr::new(ip.parse().unwrap(), closed_port(ip, protocol));
            let started = Instant::now();
            let r = probe(&Probe {
                netns: None,
                target,
                protocol,
                timeout: Duration::from_secs(3),
                source_port: None,
                http: None,
            });
            assert_eq!(r.result, ProbeResult::Refused, "{protocol} {target}: {r:?}");
            assert!(r.server.is_none() && r.client_address.is_none());
            assert!(r.error.unwrap().to_lowercase().contains("refused"));
            assert!(started.elapsed() < Duration::from_secs(2));
        }
    }
}

#[test]
fn probe_unreachable_from_a_namespace_without_routes() {
    let ns = Netns::new("u");
    for target in ["10.42.255.1:80", "[fd00:10::1]:80"] {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let started = Instant::now();
            let r = probe(&Probe {
                netns: Some(ns.path()),
                target: target.parse().unwrap(),
                protocol,
                timeout: Duration::from_secs(3),
                source_port: None,
                http: None,
            });
            assert_eq!(
                r.result,
                ProbeResult::Unreachable,
                "{protocol} {target}: {r:?}"
            );
            assert!(r.error.unwrap().contains("unreachable"));
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "ENETUNREACH is immediate"
            );
        }
    }
}

#[test]
fn probe_times_out_where_packets_vanish() {
    // Inside the namespace: 192.0.2.0/24 on one end of a veth pair whose peer
    // has no address, and a permanent neighbour so nothing waits for ARP.
    let ns = Netns::new("t");
    ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"]);
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "va"]);
    ns.ip(&["link", "set", "va", "up"]);
    ns.ip(&["link", "set", "vb", "up"]);
    ns.ip(&[
        "neigh",
        "add",
        "192.0.2.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "va",
        "nud",
        "permanent",
    ]);
    let timeout = Duration::from_millis(700);
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let started = Instant::now();
        let r = probe(&Probe {
            netns: Some(ns.path()),
            target: "192.0.2.2:80".parse().unwrap(),
            protocol,
            timeout,
            source_port: None,
            http: None,
        });
        let took = started.elapsed();
        assert_eq!(r.result, ProbeResult::Timeout, "{protocol}: {r:?}");
        assert!(r.server.is_none());
        assert!(took >= timeout - Duration::from_millis(50), "{took:?}");
        assert!(
            took < timeout + Duration::from_millis(300),
            "the probe overran its timeout: {took:?}"
        );
    }
}

#[test]
fn socket_in_netns_creates_the_socket_inside_the_namespace() {
    let ns = Netns::new("s");
    // Hold the server's TCP port in this namespace without listening, so nothing here
    // answers on it (connections are refused) while the test runs. The server's port is
    // picked inside its namespace, so it may be taken here (another test, another
    // program): then the server gets another one.
    let hold = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let server = (0..20)
        .map(|_| NetnsServer::start(&ns, vec![(Protocol::Tcp, 0), (Protocol::Udp, 0)]))
        .find(|server| {
            hold.bind(&SocketAddr::from(([127, 0, 0, 1], server.ports[0])).into())
                .is_ok()
        })
        .expect("a server port that is free here too");
    let (tcp, udp) = (server.ports[0], server.ports[1]);

    let timeout = Duration::from_secs(3);
    for (protocol, addr) in [
        (Protocol::Tcp, "127.0.0.1"),
        (Protocol::Udp, "127.0.0.1"),
        (Protocol::Tcp, "::1"),
    ] {
        let port = if protocol == Protocol::Tcp { tcp } else { udp };
        let target = SocketAddr::new(addr.parse().unwrap(), port);
        let inside = probe(&Probe {
            netns: Some(ns.path()),
            target,
            protocol,
            timeout,
            source_port: None,
            http: None,
        });
        assert_eq!(
            inside.result,
            ProbeResult::Connected,
            "{protocol} {target}: {inside:?}"
        );
        assert_eq!(inside.server.unwrap().pod, "web-1");
        assert_eq!(inside.client_address.as_deref(), Some(addr));
        if addr == "127.0.0.1" && protocol == Protocol::Tcp {
            let outside = probe(&Probe {
                netns: None,
                target,
                protocol,
                timeout,
                source_port: None,
                http: None,
            });
            assert_eq!(
                outside.result,
                ProbeResult::Refused,
                "{protocol} {target}: {outside:?}"
            );
        }
    }

    // The socket itself: connectable to the namespace's server, not here.
    let target = SocketAddr::from(([127, 0, 0, 1], tcp));
    let s = socket_in_netns(
        Some(&ns.path()),
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    s.connect(&target.into())
        .expect("connect inside the namespace");
    let s = socket_in_netns(None, socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let err = s.connect(&target.into()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);

    let err = socket_in_netns(
        Some(&ns.path().with_extension("missing")),
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        None,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("opening network namespace"),
        "{err}"
    );
}

#[test]
fn sctp_is_served_when_the_kernel_has_it_and_skipped_otherwise() {
    let supported = socket2::Socket::new(
        socket2::Domain::IPV6,
        socket2::Type::STREAM,
        Some(socket2::Protocol::SCTP),
    )
    .map(|_| true)
    .or_else(|e| {
        if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) {
            Ok(false)
        } else {
            Err(e)
        }
    })
    .unwrap();
    let ns = Netns::new("c");
    let server = NetnsServer::start(&ns, vec![(Protocol::Sctp, 0), (Protocol::Tcp, 0)]);
    if supported {
        assert_eq!(server.ports.len(), 2);
        let target = SocketAddr::from(([127, 0, 0, 1], server.ports[0]));
        let r = probe(&Probe {
            netns: Some(ns.path()),
            target,
            protocol: Protocol::Sctp,
            timeout: Duration::from_secs(3),
            source_port: None,
            http: None,
        });
        assert_eq!(r.result, ProbeResult::Connected, "{r:?}");
        assert_eq!(r.server.unwrap().pod, "web-1");
        assert_eq!(r.client_address.as_deref(), Some("127.0.0.1"));
    } else {
        // The SCTP port is skipped, the TCP one still served.
        assert_eq!(server.ports.len(), 1);
        let target = SocketAddr::from(([127, 0, 0, 1], server.ports[0]));
        let tcp = probe(&Probe {
            netns: Some(ns.path()),
            target,
            protocol: Protocol::Tcp,
            timeout: Duration::from_secs(3),
            source_port: None,
            http: None,
        });
        assert_eq!(tcp.result, ProbeResult::Connected, "{tcp:?}");
        // Probing SCTP cannot even open a socket.
        let r = probe(&Probe {
            netns: Some(ns.path()),
            target,
            protocol: Protocol::Sctp,
            timeout: Duration::from_secs(3),
            source_port: None,
            http: None,
        });
        assert_eq!(r.result, ProbeResult::Unreachable, "{r:?}");
        assert!(r.error.unwrap().contains("cannot open a sctp socket"));
    }
}

/// `BoundServer` tasks run until aborted.
#[tokio::test]
async fn bound_server_tasks_keep_running_until_aborted() {
    let bound: Vec<BoundServer> = spawn_servers_bound(ServerConfig {
        identity: identity(),
        ports: vec![(Protocol::Udp, 0)],
    })
    .await
    .unwrap();
    let port = bound[0].port;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!bound[0].task.is_finished());
    bound[0].task.abort();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(("127.0.0.1", port)).await.unwrap();
    // Once aborted the port is closed: the kernel refuses the datagram.
    let mut refused = false;
    for _ in 0..50 {
        let _ = sock.send(b"hostname").await;
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(100), sock.recv(&mut buf)).await {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => continue,
        }
    }
    assert!(refused, "the aborted UDP server still answers");
}
