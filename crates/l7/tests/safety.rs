//! Requests the proxy must refuse before anything reaches a backend: smuggling framings,
//! oversize heads, slow clients.

mod common;

use common::*;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn smuggling_framings_are_refused_with_400() {
    let web = backend("web").await;
    let p = proxy(&[Ing::new("web", "a.test", &[&web])]).await;
    let cases: &[&str] = &[
        "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5, 6\r\n\r\nhello!",
        "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: abc\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: +5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        // a good request first, the smuggling one pipelined behind it
        "GET / HTTP/1.1\r\nHost: a.test\r\n\r\nPOST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    for case in cases {
        let answer = raw(p.http, case.as_bytes()).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{case:?} -> {answer:?}");
        assert!(
            !answer.contains("web"),
            "{case:?} reached the backend: {answer:?}"
        );
    }
    assert_eq!(web.hits.load(Ordering::SeqCst), 0);
    // a correct pipeline still works
    let ok = raw(
        p.http,
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 2\r\n\r\nhiGET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(ok.matches("HTTP/1.1 200").count(), 2, "{ok}");
}

#[tokio::test]
async fn oversize_heads_get_431() {
    let web = backend("web").await;
    let p = proxy(&[Ing::new("web", "a.test", &[&web])]).await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    let answer = raw(p.http, big.as_bytes()).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = raw(
        p.http,
        format!("GET / HTTP/1.1\r\nHost: a.test\r\n{many}\r\n").as_bytes(),
    )
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let fine: String = (0..90).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = raw(
        p.http,
        format!("GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n{fine}\r\n").as_bytes(),
    )
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(web.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let web = backend("web").await;
    let mut config = test_config();
    config.limits.header_read_timeout = Duration::from_millis(800);
    config.limits.body_read_timeout = Duration::from_millis(800);
    let p = proxy_with(
        config,
        table(&manifests(&[Ing::new("web", "a.test", &[&web])])),
    )
    .await;

    // slowloris: a head dripped byte by byte never completes
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    let started = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n")
        .await
        .unwrap();
    let mut closed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(text.starts_with("HTTP/1.1 408"), "{text}");
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    let took = started.elapsed();
    assert!(closed, "a dripping head is cut off");
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(8),
        "{took:?}"
    );

    // slow body: the head is complete, the body stalls
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    let started = Instant::now();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert_eq!(
        web.completed.load(Ordering::SeqCst),
        0,
        "no whole request reached the backend"
    );
    assert_eq!(
        web.hits.load(Ordering::SeqCst),
        1,
        "only the streamed head did"
    );
}
