//! The fuzzing corpus (`fuzz/corpus/query`, grown with `cargo +nightly fuzz run query`) as a
//! regression test on stable: every input is answered without a panic, and answers encode.

use flatnet_dns::{Answer, Config, Snapshot, Zone};
use hickory_proto::op::Message;

#[test]
fn every_corpus_input_is_answered_safely() {
    let zone = Zone::new(Config::default(), Snapshot::default());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/query");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        n += 1;
        let Ok(query) = Message::from_vec(&bytes) else {
            continue;
        };
        for limit in [Some(512), None] {
            if let Answer::Local(m) = zone.answer(&query, limit) {
                m.to_vec().expect("an answer always encodes");
            }
        }
    }
    assert!(n >= 10, "the corpus is there ({n} inputs)");
}
