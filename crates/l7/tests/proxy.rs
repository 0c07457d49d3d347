//! The proxy end to end on 127.0.0.1: routing answers, forwarded headers, balancing, health,
//! retries, table swaps under load, streaming, WebSocket, metrics and the access log.

mod common;

use common::*;
use futures::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper::{Request, StatusCode};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn routing_answers_and_forwarded_headers() {
    let web = backend("web").await;
    let mut empty = Ing::new("empty", "empty.test", &[]);
    empty.path = "/".into();
    let p = proxy(&[Ing::new("web", "a.test", &[&web]), empty]).await;
    let c = client();

    let (status, headers, body) = send(
        &c,
        p.http,
        "A.test:8080",
        "/x/../api?q=1",
        &[
            ("x-request-id", "req-42"),
            ("x-forwarded-for", "192.0.2.9"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "web");
    assert_eq!(headers["x-request-id"], "req-42");
    assert_eq!(headers["x-flatnet-route"], "default/web:a.test/(Prefix)");
    let seen = web.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.uri, "/api?q=1", "the normalised path and the query");
    assert_eq!(seen.headers["x-forwarded-for"], "192.0.2.9, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "A.test:8080");
    assert_eq!(seen.headers["x-request-id"], "req-42");
    assert_eq!(seen.headers["host"], "A.test:8080");
    assert!(!seen.headers.contains_key("x-secret"));

    let (_, headers, _) = send(&c, p.http, "a.test", "/", &[("x-request-id", "bad id!")]).await;
    let id = headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(
        web.seen.lock().unwrap().last().unwrap().headers["x-request-id"],
        id.as_str()
    );

    assert_eq!(
        send(&c, p.http, "nothing.test", "/", &[]).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&c, p.http, "empty.test", "/", &[]).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        send(&c, p.http, "a.test", "/%zz", &[]).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send(&c, p.http, "bad host", "/", &[]).await.0,
        StatusCode::BAD_REQUEST
    );

    let log = p.log.lock().unwrap().clone();
    let first: serde_json::Value = serde_json::from_str(&log[0]).unwrap();
    assert_eq!(first["route"], "default/web:a.test/(Prefix)");
    assert_eq!(first["status"], 200);
    assert_eq!(first["upstream"], web.addr.to_string());
    assert_eq!(first["request_id"], "req-42");
    assert_eq!(first["bytes_out"], 3);
    assert_eq!(first["path"], "/x/../api");
    assert!(first["upstream_ms"].as_f64().is_some() && first["duration_ms"].as_f64().is_some());
    assert_eq!(log.len(), 6);

    let metrics = raw(
        p.admin,
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(
        metrics.contains(
            r#"flatnet_l7_requests_total{route="default/web:a.test/(Prefix)",class="2xx"} 2"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"flatnet_l7_requests_total{route="-",class="4xx"} 3"#));
}

/// The backend sees the host a request was routed by, whatever else the client sent: a
/// second `Host` over HTTP/1.1, a `host` field besides `:authority` over HTTP/2 (with a body
/// too, which goes through hyper's client).
#[tokio::test]
async fn the_backend_sees_the_host_the_request_was_routed_by() {
    let web = backend("web").await;
    let p = proxy(&[Ing::new("web", "a.test", &[&web])]).await;
    let seen_hosts = || {
        let seen = web.seen.lock().unwrap().last().cloned().unwrap();
        let hosts = seen.headers.get_all("host").iter();
        hosts
            .map(|v| v.to_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let two = b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: evil.test\r\nConnection: close\r\n\r\n";
    let answer = raw(p.http, two).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(seen_hosts(), ["a.test"]);

    let mut h2 = h2_prior_knowledge(p.http).await;
    for body in ["", "a body"] {
        let req = Request::post("http://a.test/")
            .header("host", "evil.test")
            .body(full(body))
            .unwrap();
        let resp = tokio::time::timeout(WAIT, h2.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "body {body:?}");
        assert_eq!(seen_hosts(), ["a.test"], "body {body:?}");
    }
}
#[tokio::test]
async fn retries_go_around_a_refused_endpoint() {
    let live = backend("live").await;
    let dead = closed_port().await;
    let mut ing = Ing::new("web", "a.test", &[&live]);
    ing.endpoints.push(dead);
    let p = proxy(&[ing]).await;
    let c = client();
    // a POST with a body is not retried: one of two round-robin picks is the dead endpoint
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let req = Request::post(format!("http://{}/upload", p.http))
            .header("host", "a.test")
            .body(full("payload"))
            .unwrap();
        statuses.push(c.request(req).await.unwrap().status());
    }
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::BAD_GATEWAY]);
    // GETs are retried on the other endpoint (1 retry by default)
    for _ in 0..10 {
        let (status, headers, _) = send(&c, p.http, "a.test", "/", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(upstream(&headers), live.addr.to_string());
    }
}

#[tokio::test]
async fn a_failing_endpoint_is_ejected_and_comes_back() {
    let good = backend("good").await;
    let bad = backend("bad").await;
    bad.status.store(500, Ordering::SeqCst);
    let mut config = test_config();
    config.health.eject_for = Duration::from_millis(1500);
    let p = proxy_with(
        config,
        table(&manifests(&[Ing::new("web", "a.test", &[&good, &bad])])),
    )
    .await;
    let c = client();
    let mut fives = 0;
    for _ in 0..20 {
        if send(&c, p.http, "a.test", "/", &[]).await.0 == StatusCode::INTERNAL_SERVER_ERROR {
            fives += 1;
        }
    }
    assert_eq!(fives, 3, "ejected after 3 consecutive 5xx");
    assert_eq!(bad.hits.load(Ordering::SeqCst), 3);

    bad.status.store(200, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    for _ in 0..10 {
        assert_eq!(send(&c, p.http, "a.test", "/", &[]).await.0, StatusCode::OK);
    }
    assert!(bad.hits.load(Ordering::SeqCst) >= 6, "back in rotation");
    let metrics = raw(
        p.admin,
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(
        metrics.contains(&format!(
            "flatnet_l7_upstream_ejections_total{{backend=\"default/web:80\",endpoint=\"{}\"}} 1",
            bad.addr
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn hash_balancing_sticks_to_an_endpoint() {
    let backends = [
        backend("b0").await,
        backend("b1").await,
        backend("b2").await,
    ];
    let refs: Vec<&Backend> = backends.iter().collect();
    let ing = Ing::new("web", "a.test", &refs).annotate("load-balance", "hash-header:X-User");
    let p = proxy(&[ing]).await;
    let c = client();
    let mut used = HashSet::new();
    for user in 0..12 {
        let user = format!("user-{user}");
        let mut answers = HashSet::new();
        for _ in 0..4 {
            let (status, headers, _) = send(&c, p.http, "a.test", "/", &[("x-user", &user)]).await;
            assert_eq!(status, StatusCode::OK);
            answers.insert(upstream(&headers));
        }
        assert_eq!(answers.len(), 1, "{user} always lands on one endpoint");
        used.extend(answers);
    }
    assert!(used.len() >= 2, "users spread over endpoints: {used:?}");
    // without the header: round robin over all three
    let mut rr = HashSet::new();
    for _ in 0..3 {
        rr.insert(upstream(&send(&c, p.http, "a.test", "/", &[]).await.1));
    }
    assert_eq!(rr.len(), 3);
}

#[tokio::test]
async fn table_swaps_under_load_lose_no_request() {
    let a = backend("a").await;
    let b = backend("b").await;
    let p = proxy(&[Ing::new("web", "a.test", &[&a])]).await;

    // a long download that starts on the old table and ends after several swaps
    let c = client();
    let req = Request::get(format!("http://{}/download/20000000", p.http))
        .header("host", "a.test")
        .body(full(""))
        .unwrap();
    let download = c.request(req).await.unwrap();
    let mut download_body = download.into_body();
    let first = download_body.frame().await.unwrap().unwrap();
    let mut downloaded = first.data_ref().map_or(0, |d| d.len());

    let mut loops = Vec::new();
    for _ in 0..2 {
        let http = p.http;
        loops.push(tokio::spawn(async move {
            let c = client();
            let mut by = HashMap::<String, usize>::new();
            for _ in 0..150 {
                let (status, _, body) = send(&c, http, "a.test", "/", &[]).await;
                assert_eq!(status, StatusCode::OK, "{body:?}");
                *by.entry(String::from_utf8_lossy(&body).into_owned())
                    .or_default() += 1;
            }
            by
        }));
    }
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(15)).await;
        let to: &[&Backend] = if i % 2 == 0 { &[&b] } else { &[&a, &b] };
        let mut ing = Ing::new("web", "a.test", to);
        if i == 19 {
            ing = Ing::new("web2", "a.test", &[&b]);
        }
        p.set(&[ing]);
    }
    let mut total = HashMap::<String, usize>::new();
    for l in loops {
        for (k, v) in l.await.unwrap() {
            *total.entry(k).or_default() += v;
        }
    }
    assert_eq!(total.values().sum::<usize>(), 300);
    assert!(total.get("b").copied().unwrap_or(0) > 0, "{total:?}");
    while let Some(frame) = download_body.frame().await {
        downloaded += frame.unwrap().data_ref().map_or(0, |d| d.len());
    }
    assert_eq!(downloaded, 20_000_000, "the download outlived the swaps");
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn hundred_megabytes_stream_both_ways_in_flat_memory() {
    const SIZE: u64 = 100 * 1024 * 1024;
    let web = backend("web").await;
    let p = proxy(&[Ing::new("web", "a.test", &[&web])]).await;
    let c = client();
    let before = rss_kib();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let req = Request::post(format!("http://{}/upload", p.http))
        .header("host", "a.test")
        .body(generated(SIZE))
        .unwrap();
    let resp = tokio::time::timeout(WAIT * 3, c.request(req))
        .await
        .unwrap()
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, SIZE.to_string());

    let req = Request::get(format!("http://{}/download/{SIZE}", p.http))
        .header("host", "a.test")
        .body(full(""))
        .unwrap();
    let mut body = c.request(req).await.unwrap().into_body();
    let mut n = 0u64;
    let read = async {
        while let Some(frame) = body.frame().await {
            n += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
        }
    };
    tokio::time::timeout(WAIT * 3, read).await.unwrap();
    assert_eq!(n, SIZE);
    sampler.abort();
    let grown = peak.load(Ordering::SeqCst).saturating_sub(before);
    assert!(
        grown < 40 * 1024,
        "memory grew by {grown} KiB for 100 MiB each way"
    );
    let log = p.log.lock().unwrap().clone();
    let up: serde_json::Value = serde_json::from_str(&log[0]).unwrap();
    assert_eq!(up["bytes_in"], SIZE);
    let down: serde_json::Value = serde_json::from_str(&log[1]).unwrap();
    assert_eq!(down["bytes_out"], SIZE);
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let web = backend("web").await;
    let p = proxy(&[Ing::new("web", "a.test", &[&web])]).await;
    let stream = tokio::net::TcpStream::connect(p.http).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://a.test/ws", stream)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let echo = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echo, Message::text(format!("hello {i}")));
    }
    // the table changes; the open WebSocket goes on
    p.set(&[Ing::new("other", "b.test", &[&web])]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    let echo = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo, Message::binary(vec![1, 2, 3]));
    ws.close(None).await.unwrap();
    let seen = web.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.headers["upgrade"], "websocket");
}
