//! `serve_udp_tcp` on 127.0.0.1 with a fake upstream resolver on 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use flatnet_dns::{serve_udp_tcp, Config, EndpointView, ServiceView, Snapshot, Zone};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::timeout;

const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn snapshot(web_ip: &str) -> Snapshot {
    let endpoints = (0..200u32)
        .map(|i| EndpointView {
            namespace: "x".into(),
            service: "many".into(),
            ip: IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 43, 0, 1)) + i)),
            ready: true,
            hostname: None,
            ports: vec![],
        })
        .collect();
    Snapshot {
        services: vec![
            ServiceView {
                namespace: "x".into(),
                name: "web".into(),
                cluster_ips: vec![web_ip.parse().unwrap()],
                ..Default::default()
            },
            ServiceView {
                namespace: "x".into(),
                name: "many".into(),
                headless: true,
                ..Default::default()
            },
        ],
        endpoints,
        pods: vec![],
        namespaces: vec![],
    }
}

fn reply_to(packet: &[u8]) -> Vec<u8> {
    let q = Message::from_vec(packet).unwrap();
    let mut r = Message::response(q.metadata.id, OpCode::Query);
    r.add_queries(q.queries.iter().cloned());
    r.add_answer(Record::from_rdata(
        q.queries[0].name().clone(),
        60,
        RData::A(UPSTREAM_ANSWER.into()),
    ));
    r.to_vec().unwrap()
}

/// A resolver answering 192.0.2.1 to everything, on UDP and TCP.
async fn fake_upstream() -> SocketAddr {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        loop {
            let (n, peer) = udp.recv_from(&mut buf).await.unwrap();
            udp.send_to(&reply_to(&buf[..n]), peer).await.unwrap();
        }
    });
    tokio::spawn(async move {
        loop {
            let (mut s, _) = tcp.accept().await.unwrap();
            let packet = read_framed(&mut s).await;
            write_framed(&mut s, &reply_to(&packet)).await;
        }
    });
    addr
}

async fn read_framed(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.unwrap();
    buf
}

async fn write_framed(s: &mut TcpStream, msg: &[u8]) {
    let mut out = (msg.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    s.write_all(&out).await.unwrap();
}

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.to_vec().unwrap()
}

async fn udp_ask(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&query(name, qtype), server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .expect("a reply")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

async fn tcp_ask(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut s = TcpStream::connect(server).await.unwrap();
    write_framed(&mut s, &query(name, qtype)).await;
    let reply = timeout(Duration::from_secs(5), read_framed(&mut s))
        .await
        .expect("a reply");
    Message::from_vec(&reply).unwrap()
}

fn first_a(m: &Message) -> Ipv4Addr {
    match m.answers.first().map(|r| &r.data) {
        Some(RData::A(a)) => a.0,
        other => panic!("no A record: {other:?}"),
    }
}

#[tokio::test]
async fn serves_the_zone_and_forwards_the_rest() {
    let upstream = fake_upstream().await;
    let zone = Arc::new(RwLock::new(Zone::new(
        Config::default(),
        snapshot("10.96.0.10"),
    )));
    let server = serve_udp_tcp(
        zone.clone(),
        "127.0.0.1:0".parse().unwrap(),
        vec![upstream],
        Default::default(),
    )
    .await
    .unwrap();
    let addr = server.local_addr;

    let m = udp_ask(addr, "web.x.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.id, 7);
    assert!(m.metadata.authoritative);
    assert_eq!(first_a(&m), Ipv4Addr::new(10, 96, 0, 10));

    let m = udp_ask(addr, "example.com.", RecordType::A).await;
    assert_eq!(first_a(&m), UPSTREAM_ANSWER);
    let m = tcp_ask(addr, "example.com.", RecordType::A).await;
    assert_eq!(first_a(&m), UPSTREAM_ANSWER);

    // truncated over UDP, whole over TCP
    let m = udp_ask(addr, "many.x.svc.cluster.local.", RecordType::A).await;
    assert!(m.metadata.truncation);
    let m = tcp_ask(addr, "many.x.svc.cluster.local.", RecordType::A).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 200);

    // a new snapshot is published by replacing the zone
    *zone.write().unwrap() = Zone::new(Config::default(), snapshot("10.96.0.99"));
    let m = udp_ask(addr, "web.x.svc.cluster.local.", RecordType::A).await;
    assert_eq!(first_a(&m), Ipv4Addr::new(10, 96, 0, 99));
    server.shutdown();
}

#[tokio::test]
async fn servfail_without_upstream() {
    let zone = Arc::new(RwLock::new(Zone::new(
        Config::default(),
        snapshot("10.96.0.10"),
    )));
    let server = serve_udp_tcp(
        zone,
        "127.0.0.1:0".parse().unwrap(),
        vec![],
        Default::default(),
    )
    .await
    .unwrap();
    let m = udp_ask(server.local_addr, "example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(m.queries.len(), 1);
    let m = udp_ask(server.local_addr, "nope.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn garbage_gets_formerr_or_silence() {
    let zone = Arc::new(RwLock::new(Zone::new(
        Config::default(),
        snapshot("10.96.0.10"),
    )));
    let server = serve_udp_tcp(
        zone,
        "127.0.0.1:0".parse().unwrap(),
        vec![],
        Default::default(),
    )
    .await
    .unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // a header claiming one question, then nothing
    let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    packet.extend_from_slice(&[3, b'a', b'b']);
    sock.send_to(&packet, server.local_addr).await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .expect("a reply")
        .unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.id, 0x1234);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // too short for a header: no reply, and the server still answers afterwards
    sock.send_to(&[1, 2, 3], server.local_addr).await.unwrap();
    let m = udp_ask(server.local_addr, "web.x.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
}

#[tokio::test]
async fn forwarded_answers_are_cached() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // An upstream that counts what reaches it.
    let asked = Arc::new(AtomicUsize::new(0));
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let upstream = udp.local_addr().unwrap();
    let counter = asked.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        loop {
            let (n, peer) = udp.recv_from(&mut buf).await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            udp.send_to(&reply_to(&buf[..n]), peer).await.unwrap();
        }
    });
    let zone = Arc::new(RwLock::new(Zone::new(
        Config::default(),
        snapshot("10.96.0.10"),
    )));
    let metrics: Arc<flatnet_dns::metrics::Metrics> = Default::default();
    let server = serve_udp_tcp(
        zone,
        "127.0.0.1:0".parse().unwrap(),
        vec![upstream],
        metrics.clone(),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        let m = udp_ask(server.local_addr, "Cached.Example.", RecordType::A).await;
        assert_eq!(first_a(&m), UPSTREAM_ANSWER);
        assert_eq!(
            m.metadata.id, 7,
            "the cached copy carries the new query's id"
        );
    }
    assert_eq!(
        asked.load(Ordering::SeqCst),
        1,
        "asked upstream once, then answered from the cache"
    );
    let text = metrics.text();
    assert!(text.contains("flatnet_dns_cache_hits_total 2"), "{text}");
    assert!(
        text.contains("flatnet_dns_forward_requests_total 1"),
        "{text}"
    );
    server.shutdown();
}

#[tokio::test]
async fn repeated_queries_get_their_own_ids() {
    let zone = Arc::new(RwLock::new(Zone::new(
        Config::default(),
        snapshot("10.96.0.10"),
    )));
    let server = serve_udp_tcp(
        zone,
        "127.0.0.1:0".parse().unwrap(),
        vec![],
        Default::default(),
    )
    .await
    .unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for id in [11u16, 12, 13] {
        let mut q = Message::new(id, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(
            Name::from_ascii("web.x.svc.cluster.local.").unwrap(),
            RecordType::A,
        ));
        sock.send_to(&q.to_vec().unwrap(), server.local_addr)
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, _) = sock.recv_from(&mut buf).await.unwrap();
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(m.metadata.id, id);
        assert_eq!(first_a(&m), Ipv4Addr::new(10, 96, 0, 10));
    }
    server.shutdown();
}
