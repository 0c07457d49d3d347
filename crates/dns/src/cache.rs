//! A cache of forwarded answers, positive and negative, as CoreDNS's `cache` plugin keeps
//! them: keyed by name (case-insensitive), type and class; kept for the answer's smallest TTL
//! (positive, at most 300 s) or the SOA's negative TTL (at most 60 s). TTLs are not counted
//! down in cached copies.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RData;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest time a positive answer is kept.
pub const MAX_POSITIVE: Duration = Duration::from_secs(300);
/// Longest time a negative answer (NXDOMAIN, NODATA) is kept.
pub const MAX_NEGATIVE: Duration = Duration::from_secs(60);
/// Most entries; when full, the cache starts over.
pub const CAPACITY: usize = 10_000;

type Key = (String, u16, u16);

/// Forwarded answers by question.
#[derive(Default)]
pub struct Cache {
    entries: Mutex<HashMap<Key, (Vec<u8>, Instant)>>,
}

fn key(query: &Message) -> Option<Key> {
    let q = query.queries.first()?;
    Some((
        q.name().to_ascii().to_ascii_lowercase(),
        u16::from(q.query_type()),
        u16::from(q.query_class()),
    ))
}

/// How long `reply` may be kept, if at all.
fn lifetime(reply: &Message) -> Option<Duration> {
    if reply.metadata.truncation {
        return None;
    }
    match reply.metadata.response_code {
        ResponseCode::NoError if !reply.answers.is_empty() => {
            let ttl = reply.answers.iter().map(|r| r.ttl).min()?;
            Some(Duration::from_secs(ttl.into()).min(MAX_POSITIVE))
        }
        ResponseCode::NoError | ResponseCode::NXDomain => {
            let soa = reply.authorities.iter().find_map(|r| match &r.data {
                RData::SOA(s) => Some((r.ttl, s.minimum)),
                _ => None,
            })?;
            Some(Duration::from_secs(soa.0.min(soa.1).into()).min(MAX_NEGATIVE))
        }
        _ => None,
    }
}

impl Cache {
    /// The cached reply to `query`, with the query's id, if fresh.
    pub fn get(&self, query: &Message) -> Option<Vec<u8>> {
        let k = key(query)?;
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (bytes, until) = entries.get(&k)?;
        if Instant::now() >= *until {
            return None;
        }
        let mut reply = bytes.clone();
        reply[..2].copy_from_slice(&query.metadata.id.to_be_bytes());
        Some(reply)
    }

    /// Keeps `reply` (the bytes an upstream sent for `query`) for as long as it may be kept.
    pub fn put(&self, query: &Message, reply: &[u8]) {
        let (Some(k), Ok(msg)) = (key(query), Message::from_vec(reply)) else {
            return;
        };
        let Some(life) = lifetime(&msg).filter(|l| !l.is_zero()) else {
            return;
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(k, (reply.to_vec(), Instant::now() + life));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::OpCode;
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, Record};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn positive_answers_live_their_smallest_ttl_capped() {
        let mut m = Message::response(1, OpCode::Query);
        m.add_answer(Record::from_rdata(
            name("a.example."),
            30,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        m.add_answer(Record::from_rdata(
            name("a.example."),
            20,
            RData::A(A::new(192, 0, 2, 2)),
        ));
        assert_eq!(lifetime(&m), Some(Duration::from_secs(20)));
        m.answers[1].ttl = 86400;
        m.answers[0].ttl = 86400;
        assert_eq!(lifetime(&m), Some(MAX_POSITIVE));
    }

    #[test]
    fn negative_answers_live_the_soa_minimum_and_failures_not_at_all() {
        let mut m = Message::response(1, OpCode::Query);
        m.metadata.response_code = ResponseCode::NXDomain;
        let soa = SOA::new(name("ns.example."), name("host.example."), 1, 2, 3, 4, 7);
        m.add_authority(Record::from_rdata(name("example."), 100, RData::SOA(soa)));
        assert_eq!(lifetime(&m), Some(Duration::from_secs(7)));
        m.metadata.response_code = ResponseCode::ServFail;
        assert_eq!(lifetime(&m), None);
        m.metadata.response_code = ResponseCode::NoError;
        m.metadata.truncation = true;
        assert_eq!(lifetime(&m), None);
    }
}
