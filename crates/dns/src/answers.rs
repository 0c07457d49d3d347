//! Encoded answers of in-zone queries, reused for byte-identical queries: two queries that
//! differ only in their id get answers that differ only in their id, so the key is the query
//! without its id (name case, flags and EDNS0 included) and the zone it was answered from.

use hickory_proto::rr::RecordType;
use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

/// Most bytes of queries and answers kept; when full, the store starts over. Enough for
/// every name of a 10,000-Service zone and as many negative answers (~200 bytes each).
pub const CAPACITY_BYTES: usize = 8 << 20;

/// Bookkeeping per entry counted against [`CAPACITY_BYTES`] besides its bytes (the table
/// slot and the allocation's header).
const ENTRY_OVERHEAD: usize = 48;

/// What is kept per query.
#[derive(Clone)]
pub struct Entry {
    /// The encoded answer (its id is replaced on reuse).
    pub reply: Box<[u8]>,
    /// Query type, for metrics.
    pub qtype: Option<RecordType>,
    /// Response code, for metrics.
    pub rcode: hickory_proto::op::ResponseCode,
}

/// One kept answer: the query without its id, then the answer, in one allocation. It is
/// found by the query bytes (hashed and compared as a `[u8]` is).
struct Kept {
    zone: u64,
    qtype: Option<RecordType>,
    rcode: hickory_proto::op::ResponseCode,
    query_len: u16,
    bytes: Box<[u8]>,
}

impl Kept {
    fn query(&self) -> &[u8] {
        &self.bytes[..usize::from(self.query_len)]
    }
}

impl Borrow<[u8]> for Kept {
    fn borrow(&self) -> &[u8] {
        self.query()
    }
}

impl Hash for Kept {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.query().hash(h);
    }
}

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        self.query() == other.query()
    }
}

impl Eq for Kept {}

/// Answers by (zone id, query bytes without the id).
#[derive(Default)]
pub struct Answers {
    store: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    kept: HashSet<Kept>,
    bytes: usize,
}

impl Answers {
    /// The answer to `packet` (a query of at least 12 bytes) from zone `zone`, with the
    /// query's id.
    pub fn get(&self, zone: u64, packet: &[u8]) -> Option<Entry> {
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let k = store.kept.get(&packet[2..])?;
        if k.zone != zone {
            return None;
        }
        let mut reply: Box<[u8]> = k.bytes[usize::from(k.query_len)..].into();
        reply[..2].copy_from_slice(&packet[..2]);
        Some(Entry {
            reply,
            qtype: k.qtype,
            rcode: k.rcode,
        })
    }

    /// Keeps the answer to `packet` from zone `zone`.
    pub fn put(&self, zone: u64, packet: &[u8], entry: Entry) {
        let query = &packet[2..];
        let Ok(query_len) = u16::try_from(query.len()) else {
            return;
        };
        let size = query.len() + entry.reply.len() + ENTRY_OVERHEAD;
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if store.bytes + size > CAPACITY_BYTES {
            store.kept = HashSet::new();
            store.bytes = 0;
        }
        let kept = Kept {
            zone,
            qtype: entry.qtype,
            rcode: entry.rcode,
            query_len,
            bytes: [query, &entry.reply].concat().into(),
        };
        if let Some(old) = store.kept.replace(kept) {
            store.bytes -= old.bytes.len() + ENTRY_OVERHEAD;
        }
        store.bytes += size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::ResponseCode;

    fn entry(reply: &[u8]) -> Entry {
        Entry {
            reply: reply.into(),
            qtype: Some(RecordType::A),
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
        assert_eq!(&*hit.reply, [0, 2, 0x81, 0x80, 42], "id of the new query");
        assert!(a.get(6, &query_2).is_none(), "another zone");
        let other = [0, 2, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 8];
        assert!(a.get(5, &other).is_none(), "another question");
    }
}
