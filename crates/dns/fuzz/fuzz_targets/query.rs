//! Fuzzes the query path: any bytes a client may send, decoded as a DNS message and answered
//! by a zone with every record kind. The answer must never panic and must encode.
#![no_main]

use flatnet_dns::{Answer, Config, EndpointView, PortView, ServiceView, Snapshot, Zone};
use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn zone() -> &'static Zone {
    static ZONE: OnceLock<Zone> = OnceLock::new();
    ZONE.get_or_init(|| {
        let port = PortView { name: "http".into(), protocol: "TCP".into(), port: 80 };
        let snap = Snapshot {
            services: vec![
                ServiceView {
                    namespace: "x".into(),
                    name: "web".into(),
                    cluster_ips: vec!["10.43.0.16".parse().unwrap(), "fd00:10:43::10".parse().unwrap()],
                    ports: vec![port.clone()],
                    ..Default::default()
                },
                ServiceView { namespace: "x".into(), name: "hl".into(), headless: true, ports: vec![port.clone()], ..Default::default() },
                ServiceView { namespace: "x".into(), name: "ext".into(), external_name: Some("web.x.svc.cluster.local".into()), ..Default::default() },
            ],
            endpoints: (0..5)
                .map(|i| EndpointView {
                    namespace: "x".into(),
                    service: "hl".into(),
                    ip: format!("10.42.0.{}", i + 2).parse().unwrap(),
                    ready: i % 2 == 0,
                    hostname: (i == 0).then(|| "first".into()),
                    ports: vec![port.clone()],
                })
                .collect(),
            pods: vec![],
            namespaces: vec!["x".into()],
        };
        Zone::new(Config::default(), snap)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(query) = Message::from_vec(data) else { return };
    for limit in [Some(512), Some(4096), None] {
        if let Answer::Local(m) = zone().answer(&query, limit) {
            let bytes = m.to_vec().expect("an answer always encodes");
            if let Some(l) = limit {
                assert!(bytes.len() <= l.max(512), "UDP answer over the limit");
            }
        }
    }
});
