//! A small DNS server around a [`Zone`]: UDP and TCP on one address, other names forwarded.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, OpCode, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tracing::{debug, warn};

use crate::answers::{Answers, Entry};
use crate::cache::Cache;
use crate::metrics::Metrics;
use crate::{Answer, Zone};

/// The largest UDP response this server sends, whatever the client's EDNS0 size.
pub const UDP_SERVER_LIMIT: usize = 4096;

/// How long an upstream gets to answer before the next one is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an idle TCP connection is kept.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// A running server; dropping it stops it.
#[derive(Debug)]
pub struct ServerHandle {
    /// The address served, on UDP and TCP (the real port when 0 was asked for).
    pub local_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl ServerHandle {
    /// Stop serving.
    pub fn shutdown(self) {}
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What every request handler shares besides the zone: the metrics and the forward cache.
struct Shared {
    counters: Arc<Metrics>,
    cache: Cache,
    answers_udp: Answers,
    answers_tcp: Answers,
}

impl Shared {
    /// Encoded answers for the transport of `max_udp` (UDP answers may be truncated).
    fn answers(&self, max_udp: Option<usize>) -> &Answers {
        if max_udp.is_some() {
            &self.answers_udp
        } else {
            &self.answers_tcp
        }
    }
}

/// Serve `zone` on `addr` over UDP and TCP (same port; port 0 picks one). Names outside the
/// zone ([`Answer::Forward`]) are relayed unchanged to the `upstream` resolvers, tried in
/// order, over the transport the query came on; SERVFAIL when none answers or there is none.
/// Replace the zone behind the lock to publish a new snapshot. Must be called inside a Tokio
/// runtime.
pub async fn serve_udp_tcp(
    zone: Arc<RwLock<Zone>>,
    addr: SocketAddr,
    upstream: Vec<SocketAddr>,
    metrics: Arc<Metrics>,
) -> io::Result<ServerHandle> {
    let metrics = Arc::new(Shared {
        counters: metrics,
        cache: Cache::default(),
        answers_udp: Answers::default(),
        answers_tcp: Answers::default(),
    });
    let udp = Arc::new(UdpSocket::bind(addr).await?);
    let local_addr = udp.local_addr()?;
    let tcp = TcpListener::bind(local_addr).await?;
    let upstream = Arc::new(upstream);

    let udp_task = {
        let (zone, upstream, metrics) = (zone.clone(), upstream.clone(), metrics.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            loop {
                let (n, peer) = match udp.recv_from(&mut buf).await {
                    Ok(x) => x,
                    Err(e) => {
                        debug!(error = %e, "udp receive");
                        continue;
                    }
                };
                let packet = buf[..n].to_vec();
                let (zone, upstream, udp, metrics) =
                    (zone.clone(), upstream.clone(), udp.clone(), metrics.clone());
                tokio::spawn(async move {
                    if let Some(reply) =
                        handle(&zone, &upstream, &metrics, &packet, Some(UDP_SERVER_LIMIT)).await
                    {
                        if let Err(e) = udp.send_to(&reply, peer).await {
                            debug!(error = %e, %peer, "udp send");
                        }
                    }
                });
            }
        })
    };
    let tcp_task = tokio::spawn(async move {
        loop {
            let (stream, peer) = match tcp.accept().await {
                Ok(x) => x,
                Err(e) => {
                    debug!(error = %e, "tcp accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (zone, upstream, metrics) = (zone.clone(), upstream.clone(), metrics.clone());
            tokio::spawn(async move {
                if let Err(e) = serve_tcp_conn(stream, &zone, &upstream, &metrics).await {
                    debug!(error = %e, %peer, "tcp connection");
                }
            });
        }
    });
    Ok(ServerHandle {
        local_addr,
        tasks: vec![udp_task, tcp_task],
    })
}

async fn serve_tcp_conn(
    mut stream: TcpStream,
    zone: &RwLock<Zone>,
    upstream: &[SocketAddr],
    metrics: &Shared,
) -> io::Result<()> {
    loop {
        let mut len = [0u8; 2];
        match timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        }
        let mut packet = vec![0u8; usize::from(u16::from_be_bytes(len))];
        timeout(TCP_IDLE, stream.read_exact(&mut packet))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        let Some(reply) = handle(zone, upstream, metrics, &packet, None).await else {
            return Ok(());
        };
        write_framed(&mut stream, &reply).await?;
    }
}

async fn write_framed(stream: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    stream.write_all(&out).await
}

/// The reply bytes for one query packet; `None` to stay silent (garbage, or a response).
async fn handle(
    zone: &RwLock<Zone>,
    upstream: &[SocketAddr],
    metrics: &Shared,
    packet: &[u8],
    max_udp: Option<usize>,
) -> Option<Vec<u8>> {
    let started = std::time::Instant::now();
    // A byte-identical query (but for its id) answered from the same zone: reuse the answer.
    let is_query = packet.len() >= 12 && packet[2] & 0x80 == 0;
    if is_query {
        let zone_id = zone.read().unwrap_or_else(|e| e.into_inner()).id();
        if let Some(e) = metrics.answers(max_udp).get(zone_id, packet) {
            metrics
                .counters
                .observe_parts(e.qtype, e.rcode, false, started.elapsed());
            return Some(e.reply.into_vec());
        }
    }
    let query = match Message::from_vec(packet) {
        Ok(q) => q,
        Err(e) => {
            debug!(error = %e, "undecodable query");
            if packet.len() < 12 || packet[2] & 0x80 != 0 {
                return None;
            }
            let id = u16::from_be_bytes([packet[0], packet[1]]);
            return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                .to_vec()
                .ok();
        }
    };
    if query.metadata.message_type == hickory_proto::op::MessageType::Response {
        return None;
    }
    let (answer, zone_id) = {
        let zone = zone.read().unwrap_or_else(|e| e.into_inner());
        (zone.answer(&query, max_udp), zone.id())
    };
    let resp = match answer {
        Answer::Local(mut resp) => {
            // An ExternalName's CNAME to a name outside the zone: chase it upstream for A and
            // AAAA queries, as CoreDNS does. Such answers are not kept (the upstream's TTLs).
            let chased = chase_external(upstream, &query, &mut resp, max_udp).await;
            metrics.counters.observe(
                &query,
                resp.metadata.response_code,
                false,
                started.elapsed(),
            );
            let bytes = resp.to_vec().ok()?;
            if is_query && !chased {
                let entry = Entry {
                    reply: bytes.as_slice().into(),
                    qtype: crate::metrics::query_type(&query),
                    rcode: resp.metadata.response_code,
                };
                metrics.answers(max_udp).put(zone_id, packet, entry);
            }
            return Some(bytes);
        }
        Answer::Forward => {
            if let Some(reply) = metrics.cache.get(&query) {
                metrics.counters.cache_hit();
                let rcode = ResponseCode::from(0, reply.get(3).map_or(0, |b| b & 0x0f));
                metrics
                    .counters
                    .observe(&query, rcode, false, started.elapsed());
                return Some(reply);
            }
            if let Some(reply) = forward(upstream, packet, query.metadata.id, max_udp).await {
                metrics.cache.put(&query, &reply);
                // The upstream's response code is the low nibble of the fourth header byte.
                let rcode = ResponseCode::from(0, reply.get(3).map_or(0, |b| b & 0x0f));
                metrics
                    .counters
                    .observe(&query, rcode, true, started.elapsed());
                return Some(reply);
            }
            let mut resp = Message::error_msg(
                query.metadata.id,
                query.metadata.op_code,
                ResponseCode::ServFail,
            );
            resp.metadata.recursion_desired = query.metadata.recursion_desired;
            resp.add_queries(query.queries.iter().take(1).cloned());
            resp
        }
    };
    metrics.counters.observe(
        &query,
        resp.metadata.response_code,
        false,
        started.elapsed(),
    );
    match resp.to_vec() {
        Ok(b) => Some(b),
        Err(e) => {
            warn!(error = %e, "encoding a response");
            None
        }
    }
}

/// If `resp` ends in a CNAME to a name outside the zone and the query asked for A or AAAA,
/// asks the upstreams for the target and appends their answers. Returns whether it asked.
async fn chase_external(
    upstream: &[SocketAddr],
    query: &Message,
    resp: &mut Message,
    max_udp: Option<usize>,
) -> bool {
    use hickory_proto::rr::{RData, RecordType};
    let Some(q) = query.queries.first() else {
        return false;
    };
    if !matches!(q.query_type(), RecordType::A | RecordType::AAAA) || upstream.is_empty() {
        return false;
    }
    let Some(target) = resp.answers.last().and_then(|r| match &r.data {
        RData::CNAME(c) => Some(c.0.clone()),
        _ => None,
    }) else {
        return false;
    };
    if resp.answers.iter().any(|r| r.name == target) {
        return false;
    }
    let mut ask = Message::new(
        query.metadata.id,
        hickory_proto::op::MessageType::Query,
        OpCode::Query,
    );
    ask.metadata.recursion_desired = true;
    ask.add_query(hickory_proto::op::Query::query(target, q.query_type()));
    let Ok(packet) = ask.to_vec() else {
        return false;
    };
    if let Some(reply) = forward(upstream, &packet, query.metadata.id, max_udp).await {
        if let Ok(m) = Message::from_vec(&reply) {
            resp.add_answers(m.answers);
        }
    }
    true
}

/// Relay `packet` to the upstreams in order; the first reply with the same id wins.
async fn forward(
    upstream: &[SocketAddr],
    packet: &[u8],
    id: u16,
    max_udp: Option<usize>,
) -> Option<Vec<u8>> {
    for up in upstream {
        let result = timeout(UPSTREAM_TIMEOUT, async {
            match max_udp {
                Some(_) => forward_udp(*up, packet, id).await,
                None => forward_tcp(*up, packet).await,
            }
        })
        .await;
        match result {
            Ok(Ok(reply)) => return Some(reply),
            Ok(Err(e)) => debug!(error = %e, upstream = %up, "forwarding"),
            Err(_) => debug!(upstream = %up, "upstream timed out"),
        }
    }
    None
}

async fn forward_udp(up: SocketAddr, packet: &[u8], id: u16) -> io::Result<Vec<u8>> {
    let local: SocketAddr = match up {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(up).await?;
    sock.send(packet).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        if n >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn forward_tcp(up: SocketAddr, packet: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(up).await?;
    write_framed(&mut stream, packet).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}
