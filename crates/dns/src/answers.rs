//! Encoded answers of in-zone queries, reused for byte-identical queries: two queries that
//! differ only in their id get answers that differ only in their id, so the key is the query
//! without its id (name case, flags and EDNS0 included) and the zone it was answered from.

use std::collections::HashMap;
use std::sync::Mutex;

/// Most entries; when full, the store starts over.
pub const CAPACITY: usize = 50_000;

/// What is kept per query.
#[derive(Clone)]
pub struct Entry {
    /// The encoded answer (its id is replaced on reuse).
    pub reply: Vec<u8>,
    /// Query type, for metrics.
    pub qtype: String,
    /// Response code, for metrics.
    pub rcode: hickory_proto::op::ResponseCode,
}

/// Answers by (zone id, query bytes without the id).
#[derive(Default)]
pub struct Answers {
    entries: Mutex<HashMap<Vec<u8>, (u64, Entry)>>,
}

impl Answers {
    /// The answer to `packet` (a query of at least 12 bytes) from zone `zone`, with the
    /// query's id.
    pub fn get(&self, zone: u64, packet: &[u8]) -> Option<Entry> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (z, e) = entries.get(&packet[2..])?;
        if *z != zone {
            return None;
        }
        let mut e = e.clone();
        e.reply[..2].copy_from_slice(&packet[..2]);
        Some(e)
    }

    /// Keeps the answer to `packet` from zone `zone`.
    pub fn put(&self, zone: u64, packet: &[u8], entry: Entry) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(packet[2..].to_vec(), (zone, entry));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::ResponseCode;

    fn entry(reply: &[u8]) -> Entry {
        Entry {
            reply: reply.to_vec(),
            qtype: "A".into(),
            rcode: ResponseCode::NoError,
        }
    }

    #[test]
    fn reused_answers_carry_the_new_id_and_never_cross_zones() {
        let a = Answers::default();
        let query_1 = [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 9];
        let query_2 = [0, 2, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 9];
        a.put(5, &query_1, entry(&[0, 1, 0x81, 0x80, 42]));
        let hit = a.get(5, &query_2).unwrap();
        assert_eq!(hit.reply, [0, 2, 0x81, 0x80, 42], "id of the new query");
        assert!(a.get(6, &query_2).is_none(), "another zone");
        let other = [0, 2, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 8];
        assert!(a.get(5, &other).is_none(), "another question");
    }
}
