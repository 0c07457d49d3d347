//! Behaviour of `Zone::answer` on an in-memory snapshot. Every query and response goes
//! through hickory's binary encoder and decoder.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flatnet_dns::{
    Answer, Config, EndpointView, PodView, PodsMode, PortView, ServiceView, Snapshot, Zone,
};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};

fn port(name: &str, protocol: &str, port: u16) -> PortView {
    PortView {
        name: name.into(),
        protocol: protocol.into(),
        port,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn svc(name: &str, ips: &[&str], ports: Vec<PortView>) -> ServiceView {
    ServiceView {
        namespace: "x".into(),
        name: name.into(),
        cluster_ips: ips.iter().map(|s| ip(s)).collect(),
        headless: ips.is_empty(),
        external_name: None,
        ports,
        publish_not_ready: false,
    }
}

fn external(name: &str, target: &str) -> ServiceView {
    ServiceView {
        external_name: Some(target.into()),
        headless: false,
        ..svc(name, &[], vec![])
    }
}

fn ep(
    service: &str,
    addr: &str,
    ready: bool,
    hostname: Option<&str>,
    ports: Vec<PortView>,
) -> EndpointView {
    EndpointView {
        namespace: "x".into(),
        service: service.into(),
        ip: ip(addr),
        ready,
        hostname: hostname.map(Into::into),
        ports,
    }
}

fn snapshot() -> Snapshot {
    let mut endpoints = vec![
        ep(
            "db",
            "10.42.0.5",
            true,
            Some("db-0"),
            vec![port("pg", "TCP", 15432)],
        ),
        ep(
            "db",
            "fd00:10:42::5",
            true,
            Some("db-0"),
            vec![port("pg", "TCP", 15432)],
        ),
        ep(
            "db",
            "10.42.1.6",
            true,
            None,
            vec![port("pg", "TCP", 15432)],
        ),
        ep(
            "db",
            "10.42.2.7",
            false,
            Some("db-2"),
            vec![port("pg", "TCP", 15432)],
        ),
        ep("empty", "10.42.3.3", false, None, vec![]),
        ep("pnr", "10.42.3.4", false, Some("pnr-0"), vec![]),
        ep("pnr", "10.42.3.5", true, None, vec![]),
    ];
    for i in 0..200u32 {
        let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 43, 0, 1)) + i);
        endpoints.push(ep("many", &addr.to_string(), true, None, vec![]));
    }
    for i in 0..8u8 {
        let addr = Ipv4Addr::new(10, 44, 0, i + 1);
        endpoints.push(ep(
            "eight",
            &addr.to_string(),
            true,
            None,
            vec![port("p", "TCP", 7000)],
        ));
    }
    let mut pnr = svc("pnr", &[], vec![]);
    pnr.publish_not_ready = true;
    Snapshot {
        services: vec![
            svc(
                "web",
                &["10.96.0.10"],
                vec![port("http", "TCP", 80), port("", "TCP", 8080)],
            ),
            svc("v6", &["fd00:96::10"], vec![port("dns", "UDP", 53)]),
            svc("dual", &["10.96.0.11", "fd00:96::11"], vec![]),
            svc("db", &[], vec![port("pg", "TCP", 5432)]),
            svc("empty", &[], vec![]),
            pnr,
            svc("many", &[], vec![]),
            svc("eight", &[], vec![port("p", "TCP", 7000)]),
            external("ext", "example.com"),
            external("alias", "web.x.svc.cluster.local"),
            external("dangling", "nothing.x.svc.cluster.local."),
            external("loop1", "loop2.x.svc.cluster.local"),
            external("loop2", "loop1.x.svc.cluster.local"),
        ],
        endpoints,
        pods: vec![
            PodView {
                namespace: "x".into(),
                ip: ip("10.42.0.5"),
            },
            PodView {
                namespace: "x".into(),
                ip: ip("fd00:10:42::5"),
            },
        ],
        namespaces: vec!["default".into(), "quiet".into()],
    }
}

fn zone_with(pods: PodsMode, ttl: u32) -> Zone {
    let cfg = Config {
        pods,
        ttl,
        ..Config::default()
    };
    Zone::new(cfg, snapshot())
}

fn zone() -> Zone {
    zone_with(PodsMode::Disabled, 5)
}

/// Encode and decode: the message must be a valid wire message.
fn wire(msg: &Message) -> Message {
    let bytes = msg.to_vec().expect("encodes");
    let back = Message::from_vec(&bytes).expect("decodes");
    assert_eq!(back.to_vec().unwrap().len(), bytes.len());
    back
}

fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

fn ask_msg(zone: &Zone, q: &Message, max_udp: Option<usize>) -> Message {
    match zone.answer(&wire(q), max_udp) {
        Answer::Local(m) => {
            let back = wire(&m);
            assert_eq!(back.metadata.id, 4242);
            assert_eq!(back.metadata.message_type, MessageType::Response);
            if let Some(bytes) = max_udp {
                assert!(m.to_vec().unwrap().len() <= bytes.max(512));
            }
            back
        }
        Answer::Forward => panic!("unexpected Forward"),
    }
}

/// A UDP query without EDNS0.
fn ask(zone: &Zone, name: &str, qtype: RecordType) -> Message {
    ask_msg(zone, &query(name, qtype, None), Some(4096))
}

fn ips(m: &Message) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn srvs(m: &Message) -> Vec<(u16, u16, u16, String)> {
    let mut v: Vec<_> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.priority, s.weight, s.port, s.target.to_ascii())),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn assert_positive(m: &Message) {
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert!(!m.answers.is_empty());
    assert!(m.authorities.is_empty());
}

/// The zone SOA in the authority section, as every negative answer carries.
fn assert_soa(m: &Message, owner: &str, ttl: u32) {
    assert!(m.answers.is_empty(), "{:?}", m.answers);
    assert_eq!(m.authorities.len(), 1);
    let r = &m.authorities[0];
    assert_eq!(r.name.to_ascii(), owner);
    assert_eq!(r.ttl, ttl);
    let RData::SOA(soa) = &r.data else {
        panic!("not a SOA: {r:?}")
    };
    assert_eq!(soa.mname.to_ascii(), "ns.dns.cluster.local.");
    assert_eq!(soa.rname.to_ascii(), "hostmaster.cluster.local.");
    assert_eq!(soa.minimum, ttl);
}

fn assert_nxdomain(zone: &Zone, name: &str, qtype: RecordType) {
    let m = ask(zone, name, qtype);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "{name} {qtype}"
    );
    assert!(m.metadata.authoritative);
    assert_soa(&m, "cluster.local.", 5);
}

fn assert_nodata(zone: &Zone, name: &str, qtype: RecordType) {
    let m = ask(zone, name, qtype);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "{name} {qtype}"
    );
    assert!(m.metadata.authoritative);
    assert_soa(&m, "cluster.local.", 5);
}

#[test]
fn a_record_of_a_cluster_ip_service() {
    let m = ask(&zone(), "web.x.svc.cluster.local.", RecordType::A);
    assert_positive(&m);
    assert_eq!(ips(&m), vec![ip("10.96.0.10")]);
    assert_eq!(m.answers[0].name.to_ascii(), "web.x.svc.cluster.local.");
    assert!(m.metadata.recursion_desired);
    assert_eq!(m.queries.len(), 1);
}

#[test]
fn aaaa_record_of_an_ipv6_service() {
    let z = zone();
    let m = ask(&z, "v6.x.svc.cluster.local.", RecordType::AAAA);
    assert_positive(&m);
    assert_eq!(ips(&m), vec![ip("fd00:96::10")]);
    // no A record for an IPv6-only Service, and no AAAA for an IPv4-only one
    assert_nodata(&z, "v6.x.svc.cluster.local.", RecordType::A);
    assert_nodata(&z, "web.x.svc.cluster.local.", RecordType::AAAA);
}

#[test]
fn dual_stack_service_has_one_record_per_family() {
    let z = zone();
    let a = ask(&z, "dual.x.svc.cluster.local.", RecordType::A);
    assert_eq!(ips(&a), vec![ip("10.96.0.11")]);
    let aaaa = ask(&z, "dual.x.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(ips(&aaaa), vec![ip("fd00:96::11")]);
    let any = ask(&z, "dual.x.svc.cluster.local.", RecordType::ANY);
    assert_eq!(ips(&any), vec![ip("10.96.0.11"), ip("fd00:96::11")]);
}

#[test]
fn srv_of_a_cluster_ip_service() {
    let z = zone();
    let m = ask(&z, "_http._tcp.web.x.svc.cluster.local.", RecordType::SRV);
    assert_positive(&m);
    assert_eq!(
        srvs(&m),
        vec![(0, 100, 80, "web.x.svc.cluster.local.".into())]
    );
    assert_eq!(m.additionals.len(), 1);
    assert_eq!(m.additionals[0].name.to_ascii(), "web.x.svc.cluster.local.");
    assert_eq!(
        m.additionals[0].data,
        RData::A(Ipv4Addr::new(10, 96, 0, 10).into())
    );
    // UDP port
    let m = ask(&z, "_dns._udp.v6.x.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        srvs(&m),
        vec![(0, 100, 53, "v6.x.svc.cluster.local.".into())]
    );
    assert!(matches!(m.additionals[0].data, RData::AAAA(_)));
    // the Service name itself lists every port, the unnamed one too (CoreDNS)
    let m = ask(&z, "web.x.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        srvs(&m),
        vec![
            (0, 100, 80, "web.x.svc.cluster.local.".into()),
            (0, 100, 8080, "web.x.svc.cluster.local.".into())
        ]
    );
    // wrong protocol
    assert_nxdomain(&z, "_http._udp.web.x.svc.cluster.local.", RecordType::SRV);
}

#[test]
fn srv_of_a_headless_service_per_ready_endpoint() {
    let m = ask(&zone(), "_pg._tcp.db.x.svc.cluster.local.", RecordType::SRV);
    assert_positive(&m);
    assert_eq!(
        srvs(&m),
        vec![
            (0, 100, 15432, "10-42-1-6.db.x.svc.cluster.local.".into()),
            (0, 100, 15432, "db-0.db.x.svc.cluster.local.".into()),
        ]
    );
    let mut extra: Vec<(String, RData)> = m
        .additionals
        .iter()
        .map(|r| (r.name.to_ascii(), r.data.clone()))
        .collect();
    extra.sort_by_key(|(n, d)| (n.clone(), format!("{d}")));
    assert_eq!(
        extra,
        vec![
            (
                "10-42-1-6.db.x.svc.cluster.local.".into(),
                RData::A(Ipv4Addr::new(10, 42, 1, 6).into())
            ),
            (
                "db-0.db.x.svc.cluster.local.".into(),
                RData::A(Ipv4Addr::new(10, 42, 0, 5).into())
            ),
            (
                "db-0.db.x.svc.cluster.local.".into(),
                RData::AAAA("fd00:10:42::5".parse::<Ipv6Addr>().unwrap().into())
            ),
        ]
    );
}

#[test]
fn ptr_v4_of_a_cluster_ip() {
    let m = ask(&zone(), "10.0.96.10.in-addr.arpa.", RecordType::PTR);
    assert_positive(&m);
    assert_eq!(m.answers.len(), 1);
    let RData::PTR(p) = &m.answers[0].data else {
        panic!()
    };
    assert_eq!(p.0.to_ascii(), "web.x.svc.cluster.local.");
}

#[test]
fn ptr_v6_of_a_cluster_ip() {
    let name = "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa.";
    let m = ask(&zone(), name, RecordType::PTR);
    assert_positive(&m);
    let RData::PTR(p) = &m.answers[0].data else {
        panic!()
    };
    assert_eq!(p.0.to_ascii(), "v6.x.svc.cluster.local.");
    // NODATA for another type at an owned reverse name, SOA of the reverse zone
    let m = ask(&zone(), name, RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_soa(&m, "ip6.arpa.", 5);
}

#[test]
fn ptr_of_headless_endpoints_with_hostname_only() {
    let z = zone();
    let m = ask(&z, "5.0.42.10.in-addr.arpa.", RecordType::PTR);
    let RData::PTR(p) = &m.answers[0].data else {
        panic!()
    };
    assert_eq!(p.0.to_ascii(), "db-0.db.x.svc.cluster.local.");
    let v6 = Name::from_ascii(
        "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.4.0.0.0.1.0.0.0.0.d.f.ip6.arpa.",
    )
    .unwrap();
    assert!(z.in_zone(&v6));
    // no hostname, or an unknown address: not ours, forwarded (CoreDNS fallthrough)
    for name in ["6.1.42.10.in-addr.arpa.", "1.1.1.1.in-addr.arpa."] {
        let q = query(name, RecordType::PTR, None);
        assert_eq!(z.answer(&wire(&q), Some(512)), Answer::Forward);
    }
}

#[test]
fn headless_a_records_are_the_ready_endpoints() {
    let z = zone();
    let m = ask(&z, "db.x.svc.cluster.local.", RecordType::A);
    assert_positive(&m);
    assert_eq!(ips(&m), vec![ip("10.42.0.5"), ip("10.42.1.6")]);
    let m = ask(&z, "db.x.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(ips(&m), vec![ip("fd00:10:42::5")]);
}

#[test]
fn headless_without_ready_endpoints_is_nxdomain() {
    let z = zone();
    assert_nxdomain(&z, "empty.x.svc.cluster.local.", RecordType::A);
    assert_nxdomain(&z, "10-42-3-3.empty.x.svc.cluster.local.", RecordType::A);
}

#[test]
fn publish_not_ready_publishes_every_endpoint() {
    let z = zone();
    let m = ask(&z, "pnr.x.svc.cluster.local.", RecordType::A);
    assert_eq!(ips(&m), vec![ip("10.42.3.4"), ip("10.42.3.5")]);
    let m = ask(&z, "pnr-0.pnr.x.svc.cluster.local.", RecordType::A);
    assert_eq!(ips(&m), vec![ip("10.42.3.4")]);
}

#[test]
fn endpoint_hostname_and_dashed_address_records() {
    let z = zone();
    let m = ask(&z, "db-0.db.x.svc.cluster.local.", RecordType::A);
    assert_positive(&m);
    assert_eq!(ips(&m), vec![ip("10.42.0.5")]);
    let m = ask(&z, "db-0.db.x.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(ips(&m), vec![ip("fd00:10:42::5")]);
    let m = ask(&z, "10-42-1-6.db.x.svc.cluster.local.", RecordType::A);
    assert_eq!(ips(&m), vec![ip("10.42.1.6")]);
    // not ready: no name; ClusterIP Services have no endpoint names
    assert_nxdomain(&z, "db-2.db.x.svc.cluster.local.", RecordType::A);
    assert_nxdomain(&z, "10-96-0-10.web.x.svc.cluster.local.", RecordType::A);
}

#[test]
fn external_name_is_a_cname_without_chasing_outside() {
    let z = zone();
    for qtype in [
        RecordType::A,
        RecordType::AAAA,
        RecordType::CNAME,
        RecordType::ANY,
    ] {
        let m = ask(&z, "ext.x.svc.cluster.local.", qtype);
        assert_positive(&m);
        assert_eq!(m.answers.len(), 1, "{qtype}");
        assert_eq!(m.answers[0].name.to_ascii(), "ext.x.svc.cluster.local.");
        let RData::CNAME(c) = &m.answers[0].data else {
            panic!()
        };
        assert_eq!(c.0.to_ascii(), "example.com.");
    }
}

#[test]
fn external_name_inside_the_zone_is_chased() {
    let z = zone();
    let m = ask(&z, "alias.x.svc.cluster.local.", RecordType::A);
    assert_positive(&m);
    assert_eq!(m.answers.len(), 2);
    assert_eq!(m.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(m.answers[1].name.to_ascii(), "web.x.svc.cluster.local.");
    assert_eq!(ips(&m), vec![ip("10.96.0.10")]);
    // a dangling target: the CNAME, then NXDOMAIN for the target (RFC 6604)
    let m = ask(&z, "dangling.x.svc.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.authorities.len(), 1);
    // a loop gives up
    let m = ask(&z, "loop1.x.svc.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

#[test]
fn txt_dns_version() {
    let m = ask(&zone(), "dns-version.cluster.local.", RecordType::TXT);
    assert_positive(&m);
    assert_eq!(m.answers.len(), 1);
    let RData::TXT(t) = &m.answers[0].data else {
        panic!()
    };
    assert_eq!(t.txt_data.len(), 1);
    assert_eq!(&*t.txt_data[0], b"1.1.0");
}

#[test]
fn nxdomain_for_names_that_do_not_exist() {
    let z = zone();
    for name in [
        "nope.x.svc.cluster.local.",
        "nons.svc.cluster.local.",
        "web.nons.svc.cluster.local.",
        "_udp.web.x.svc.cluster.local.",
        "_nope._tcp.web.x.svc.cluster.local.",
        "a.b.web.x.svc.cluster.local.",
        "foo.cluster.local.",
        "ns.dns.cluster.local.",
    ] {
        assert_nxdomain(&z, name, RecordType::A);
    }
}

#[test]
fn nodata_for_existing_names_without_the_type() {
    let z = zone();
    for (name, qtype) in [
        ("web.x.svc.cluster.local.", RecordType::TXT),
        ("web.x.svc.cluster.local.", RecordType::PTR),
        ("dns-version.cluster.local.", RecordType::A),
        ("x.svc.cluster.local.", RecordType::A),
        ("quiet.svc.cluster.local.", RecordType::A),
        ("default.svc.cluster.local.", RecordType::SRV),
        ("svc.cluster.local.", RecordType::A),
        ("cluster.local.", RecordType::A),
        ("_tcp.web.x.svc.cluster.local.", RecordType::SRV),
        ("_http._tcp.web.x.svc.cluster.local.", RecordType::A),
    ] {
        assert_nodata(&z, name, qtype);
    }
}

#[test]
fn apex_answers_soa_and_ns() {
    let z = zone();
    let m = ask(&z, "cluster.local.", RecordType::SOA);
    assert_positive(&m);
    let RData::SOA(soa) = &m.answers[0].data else {
        panic!()
    };
    assert_eq!(soa.mname.to_ascii(), "ns.dns.cluster.local.");
    let m = ask(&z, "cluster.local.", RecordType::NS);
    assert_positive(&m);
    let RData::NS(ns) = &m.answers[0].data else {
        panic!()
    };
    assert_eq!(ns.0.to_ascii(), "ns.dns.cluster.local.");
}

#[test]
fn matching_is_case_insensitive_and_keeps_the_query_case() {
    let m = ask(&zone(), "WeB.X.Svc.Cluster.LOCAL.", RecordType::A);
    assert_positive(&m);
    let asked = Name::from_ascii("WeB.X.Svc.Cluster.LOCAL.").unwrap();
    assert!(m.queries[0].name().eq_case(&asked));
    assert!(m.answers[0].name.eq_case(&asked));
    let m = ask(
        &zone(),
        "_HTTP._Tcp.web.x.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(srvs(&m).len(), 1);
}

#[test]
fn every_record_has_the_configured_ttl() {
    let z = zone_with(PodsMode::Insecure, 30);
    let mut records: Vec<Record> = Vec::new();
    for (name, qtype) in [
        ("web.x.svc.cluster.local.", RecordType::A),
        ("_pg._tcp.db.x.svc.cluster.local.", RecordType::SRV),
        ("10.0.96.10.in-addr.arpa.", RecordType::PTR),
        ("alias.x.svc.cluster.local.", RecordType::A),
        ("dns-version.cluster.local.", RecordType::TXT),
        ("10-1-2-3.x.pod.cluster.local.", RecordType::A),
        ("cluster.local.", RecordType::ANY),
        ("nope.cluster.local.", RecordType::A),
    ] {
        let m = ask(&z, name, qtype);
        records.extend(
            m.answers
                .iter()
                .chain(&m.authorities)
                .chain(&m.additionals)
                .cloned(),
        );
    }
    assert!(records.len() > 10);
    for r in records {
        assert_eq!(r.ttl, 30, "{r}");
        if let RData::SOA(soa) = &r.data {
            assert_eq!(soa.minimum, 30);
        }
    }
}

#[test]
fn udp_truncates_200_headless_endpoints_and_tcp_does_not() {
    let z = zone();
    let q = query("many.x.svc.cluster.local.", RecordType::A, None);
    let udp = ask_msg(&z, &q, Some(4096));
    assert!(udp.metadata.truncation);
    assert!(
        !udp.answers.is_empty() && udp.answers.len() < 200,
        "{}",
        udp.answers.len()
    );
    assert!(udp.to_vec().unwrap().len() <= 512);
    assert_eq!(udp.queries.len(), 1);
    let tcp = ask_msg(&z, &q, None);
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 200);
    assert_eq!(ips(&tcp).len(), 200);
}

#[test]
fn edns0_payload_size_allows_larger_udp_answers() {
    let z = zone();
    let small = ask_msg(
        &z,
        &query("many.x.svc.cluster.local.", RecordType::A, None),
        Some(4096),
    );
    let mid = ask_msg(
        &z,
        &query("many.x.svc.cluster.local.", RecordType::A, Some(1232)),
        Some(4096),
    );
    assert!(mid.metadata.truncation);
    assert!(mid.answers.len() > small.answers.len());
    assert!(mid.to_vec().unwrap().len() <= 1232);
    let big = ask_msg(
        &z,
        &query("many.x.svc.cluster.local.", RecordType::A, Some(4096)),
        Some(4096),
    );
    assert!(big.answers.len() > mid.answers.len());
    assert!(big.to_vec().unwrap().len() <= 4096);
    // hickory compresses at most 120 names per message (the CVE-2024-8508 limit of Unbound):
    // 120 compressed + 80 full A records are 5 kB, so 4096 bytes still truncate
    assert!(big.metadata.truncation);
    assert!(big.answers.len() > 150, "{}", big.answers.len());
    let opt = big.edns.as_ref().expect("OPT echoed");
    assert_eq!(opt.max_payload(), 4096);
    assert!(small.edns.is_none());
    // the server's own limit wins over the client's
    let capped = ask_msg(
        &z,
        &query("many.x.svc.cluster.local.", RecordType::A, Some(4096)),
        Some(1232),
    );
    assert!(capped.metadata.truncation);
    assert_eq!(capped.answers.len(), mid.answers.len());
}

#[test]
fn additional_records_are_dropped_before_truncating() {
    let z = zone();
    // SRV targets are never compressed (RFC 2782): 8 SRV records fit in 512 bytes, their
    // 8 address records do not.
    let q = query("_p._tcp.eight.x.svc.cluster.local.", RecordType::SRV, None);
    let tcp = ask_msg(&z, &q, None);
    assert_eq!(tcp.answers.len(), 8);
    assert_eq!(tcp.additionals.len(), 8);
    assert!(tcp.to_vec().unwrap().len() > 512);
    let udp = ask_msg(&z, &q, Some(4096));
    assert!(!udp.metadata.truncation);
    assert_eq!(udp.answers.len(), 8);
    assert!(udp.additionals.is_empty());
}

#[test]
fn pods_disabled_is_nxdomain() {
    let z = zone();
    assert_nxdomain(&z, "10-42-0-5.x.pod.cluster.local.", RecordType::A);
    assert_nxdomain(&z, "pod.cluster.local.", RecordType::A);
}

#[test]
fn pods_insecure_answers_the_address_in_the_name() {
    let z = zone_with(PodsMode::Insecure, 5);
    let m = ask(&z, "10-1-2-3.anything.pod.cluster.local.", RecordType::A);
    assert_positive(&m);
    assert_eq!(ips(&m), vec![ip("10.1.2.3")]);
    let m = ask(&z, "fd00-10-42--9.x.pod.cluster.local.", RecordType::AAAA);
    assert_eq!(ips(&m), vec![ip("fd00:10:42::9")]);
    assert_nodata(&z, "10-1-2-3.x.pod.cluster.local.", RecordType::AAAA);
    assert_nodata(&z, "pod.cluster.local.", RecordType::A);
    assert_nodata(&z, "x.pod.cluster.local.", RecordType::A);
    assert_nxdomain(&z, "not-an-ip.x.pod.cluster.local.", RecordType::A);
    assert_nxdomain(&z, "a.10-1-2-3.x.pod.cluster.local.", RecordType::A);
}

#[test]
fn pods_verified_needs_the_pod_in_the_namespace() {
    let z = zone_with(PodsMode::Verified, 5);
    let m = ask(&z, "10-42-0-5.x.pod.cluster.local.", RecordType::A);
    assert_eq!(ips(&m), vec![ip("10.42.0.5")]);
    let m = ask(
        &z,
        "fd00-10-42-0-0-0-0-5.x.pod.cluster.local.",
        RecordType::AAAA,
    );
    assert_eq!(ips(&m), vec![ip("fd00:10:42::5")]);
    assert_nxdomain(&z, "10-42-0-5.default.pod.cluster.local.", RecordType::A);
    assert_nxdomain(&z, "10-42-0-6.x.pod.cluster.local.", RecordType::A);
}

#[test]
fn names_outside_the_zone_are_forwarded() {
    let z = zone();
    for name in ["example.com.", "cluster.local.example.com.", "local."] {
        let q = query(name, RecordType::A, None);
        assert_eq!(z.answer(&wire(&q), Some(512)), Answer::Forward);
        assert!(!z.in_zone(&Name::from_ascii(name).unwrap()));
    }
    assert!(z.in_zone(&Name::from_ascii("anything.cluster.local.").unwrap()));
}

#[test]
fn formerr_without_question_and_notimp_for_other_opcodes() {
    let z = zone();
    let empty = Message::new(4242, MessageType::Query, OpCode::Query);
    let m = ask_msg(&z, &empty, Some(512));
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    for op in [OpCode::Status, OpCode::Notify, OpCode::Update] {
        let mut q = query("web.x.svc.cluster.local.", RecordType::A, None);
        q.metadata.op_code = op;
        let m = ask_msg(&z, &q, Some(512));
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
        assert_eq!(m.metadata.op_code, op);
        assert!(m.answers.is_empty());
    }
    let m = ask(&z, "cluster.local.", RecordType::AXFR);
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
}

#[test]
fn unsupported_edns_version_is_badvers() {
    let mut q = query("web.x.svc.cluster.local.", RecordType::A, Some(1232));
    q.edns.as_mut().unwrap().set_version(1);
    let m = ask_msg(&zone(), &q, Some(512));
    // BADVERS and BADSIG share the code 16; the decoder names it BADSIG
    assert_eq!(u16::from(m.metadata.response_code), 16);
    assert_eq!(m.edns.as_ref().unwrap().version(), 0);
}

#[test]
fn only_the_first_question_is_answered() {
    let mut q = query("web.x.svc.cluster.local.", RecordType::A, None);
    q.add_query(Query::query(
        Name::from_ascii("v6.x.svc.cluster.local.").unwrap(),
        RecordType::AAAA,
    ));
    let m = ask_msg(&zone(), &q, Some(512));
    assert_eq!(m.queries.len(), 1);
    assert_eq!(ips(&m), vec![ip("10.96.0.10")]);
}

#[test]
fn another_cluster_domain() {
    let cfg = Config::new(Name::from_ascii("Corp.Example.").unwrap());
    let z = Zone::new(cfg, snapshot());
    let m = ask(&z, "web.x.svc.corp.example.", RecordType::A);
    assert_eq!(ips(&m), vec![ip("10.96.0.10")]);
    let q = query("web.x.svc.cluster.local.", RecordType::A, None);
    assert_eq!(z.answer(&q, Some(512)), Answer::Forward);
}

#[test]
fn an_unsynced_zone_answers_servfail_not_nxdomain() {
    let z = Zone::unsynced(Config::default());
    assert!(!z.synced());
    let m = ask(&z, "web.x.svc.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(m.answers.is_empty());
    assert!(Zone::new(Config::default(), Snapshot::default()).synced());
}
