//! HTTP/1.1 relaying of responses as upstreams really frame them (the fast path reads and
//! writes raw bytes): chunked with trailers, to the upstream's close, HEAD, 1xx before the
//! answer, pipelined requests, upstream connections reused and, when the upstream closed
//! one meanwhile, a fresh one taken; and the answers made when the upstream fails.

mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted upstream answers to a request for `path` (and whether it closes the
/// connection after it).
fn script(method: &str, path: &str) -> (String, bool) {
    match path {
        "/chunked" => (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-App: c\r\n\r\n\
             5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
                .into(),
            false,
        ),
        "/until-close" => ("HTTP/1.1 200 OK\r\nX-App: u\r\n\r\nall of it".into(), true),
        "/early" => (
            "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter"
                .into(),
            false,
        ),
        // Answers, then closes without saying so: the pooled connection is dead.
        "/then-close" => (
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbye!".into(),
            true,
        ),
        "/bad" => (
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".into(),
            true,
        ),
        _ => {
            let body = if method == "HEAD" { "" } else { path };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\n",
                path.len()
            );
            (head + body, false)
        }
    }
}

/// A raw HTTP/1.1 upstream answering [`script`]; counts the connections it accepted.
async fn scripted() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream));
        }
    });
    (addr, accepted)
}

async fn serve(mut stream: TcpStream) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let mut words = head.split(' ');
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let (answer, close) = script(method, path);
        if stream.write_all(answer.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

fn routes(addr: SocketAddr) -> Ing {
    Ing {
        name: "raw".into(),
        host: Some("r.test".into()),
        path: "/".into(),
        endpoints: vec![addr],
        ..Ing::default()
    }
}

#[tokio::test]
async fn upstream_framings_reach_the_client_intact() {
    let (up, _) = scripted().await;
    let p = proxy(&[routes(up)]).await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: r.test\r\n\r\n");

    // chunked, with a trailer, then more requests on the same connection (pipelined)
    let pipelined = get("/chunked")
        + &get("/early")
        + "HEAD /h HTTP/1.1\r\nHost: r.test\r\n\r\n"
        + &get("/plain")
        + "GET /until-close HTTP/1.1\r\nHost: r.test\r\n\r\n";
    let answer = raw(p.http, pipelined.as_bytes()).await.unwrap();
    let parts: Vec<&str> = answer.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(parts.len(), 5, "{answer}");
    assert!(parts[0].starts_with("200 OK\r\n"), "{answer}");
    assert!(parts[0].contains("Transfer-Encoding: chunked\r\n"));
    assert!(parts[0].contains("x-request-id: "));
    assert!(
        parts[0].ends_with("\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    );
    // 1xx answers are not relayed; the final answer is
    assert!(parts[1].starts_with("200 OK\r\n") && parts[1].ends_with("\r\n\r\nafter"));
    assert!(!answer.contains("HTTP/1.1 103") && !answer.contains("Link: </s.css>"));
    // HEAD: the length of what GET would send, and no body
    assert!(parts[2].contains("Content-Length: 2\r\n"), "{}", parts[2]);
    assert!(parts[2].ends_with("\r\n\r\n"), "{}", parts[2]);
    // hop-by-hop fields of the upstream's answer are gone
    assert!(parts[3].ends_with("\r\n\r\n/plain"), "{}", parts[3]);
    assert!(!parts[3].contains("X-Hop") && !parts[3].contains("keep-alive"));
    // a body delimited by the upstream's close: relayed, then the client connection closes
    assert!(parts[4].contains("connection: close\r\n"), "{}", parts[4]);
    assert!(parts[4].ends_with("\r\n\r\nall of it"), "{}", parts[4]);
}

/// Sends a GET for `path` on `client` and reads the answer (with `Content-Length`).
async fn ask(client: &mut TcpStream, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: r.test\r\n\r\n");
    client.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|n| n.parse::<usize>().ok())
                .expect("a Content-Length");
            if body.len() >= length {
                return text;
            }
        }
        let n = tokio::time::timeout(WAIT, client.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after {text}");
        got.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn upstream_connections_are_reused_and_dead_ones_replaced() {
    let (up, accepted) = scripted().await;
    let p = proxy(&[routes(up)]).await;
    let mut client = TcpStream::connect(p.http).await.unwrap();
    for _ in 0..5 {
        assert!(ask(&mut client, "/one").await.ends_with("\r\n\r\n/one"));
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one upstream connection, kept"
    );
    // the upstream closes after this answer; the next GET finds the pooled connection
    // dead and goes on a new one instead of failing
    assert!(ask(&mut client, "/then-close")
        .await
        .ends_with("\r\n\r\nbye!"));
    assert!(ask(&mut client, "/two").await.ends_with("\r\n\r\n/two"));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn upstream_failures_are_answered_502_and_the_client_stays() {
    let (up, _) = scripted().await;
    let dead = closed_port().await;
    let mut bad = routes(up);
    bad.name = "bad".into();
    bad.host = Some("bad.test".into());
    let mut gone = routes(dead);
    gone.name = "gone".into();
    gone.host = Some("gone.test".into());
    let p = proxy(&[routes(up), bad, gone]).await;
    let answer = raw(
        p.http,
        b"GET /bad HTTP/1.1\r\nHost: bad.test\r\n\r\nGET / HTTP/1.1\r\nHost: gone.test\r\n\r\n\
          GET /ok HTTP/1.1\r\nHost: r.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let statuses: Vec<&str> = answer
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|part| &part[..3])
        .collect();
    assert_eq!(statuses, ["502", "502", "200"], "{answer}");
    assert!(answer.contains("502 Bad Gateway\n"));
    assert!(answer.ends_with("\r\n\r\n/ok"), "{answer}");
}

/// Status, header fields, body and trailers of `method` `path` sent over `h2`.
async fn over_h2(
    h2: &mut hyper::client::conn::http2::SendRequest<TestBody>,
    method: &str,
    path: &str,
) -> (u16, hyper::HeaderMap, String, Option<hyper::HeaderMap>) {
    use http_body_util::BodyExt;
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://r.test{path}"))
        .body(full(""))
        .unwrap();
    let resp = tokio::time::timeout(WAIT, h2.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let (parts, body) = resp.into_parts();
    let collected = tokio::time::timeout(WAIT, body.collect())
        .await
        .unwrap()
        .unwrap();
    let trailers = collected.trailers().cloned();
    let body = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
    (parts.status.as_u16(), parts.headers, body, trailers)
}

/// HTTP/2 clients' bodiless requests to HTTP/1.1 upstreams go as bytes on the worker's plain
/// connections too: chunked bodies are decoded (trailers kept), bodies to the upstream's
/// close end cleanly, 1xx heads are skipped, hop-by-hop fields dropped, connections reused
/// and a dead pooled one replaced, a bad answer is a 502.
#[tokio::test]
async fn http2_requests_to_http1_upstreams_go_as_bytes() {
    let (up, accepted) = scripted().await;
    let p = proxy(&[routes(up)]).await;
    let mut h2 = h2_prior_knowledge(p.http).await;

    let (status, headers, body, trailers) = over_h2(&mut h2, "GET", "/chunked").await;
    assert_eq!(status, 200);
    assert_eq!(body, "hello world");
    assert_eq!(trailers.expect("trailers")["x-trailer"], "t");
    assert_eq!(headers["x-app"], "c");
    assert!(!headers.contains_key("transfer-encoding"));
    assert!(headers.contains_key("x-request-id"));

    let (status, headers, body, _) = over_h2(&mut h2, "GET", "/plain").await;
    assert_eq!((status, body.as_str()), (200, "/plain"));
    assert!(!headers.contains_key("x-hop") && !headers.contains_key("connection"));
    let (status, _, body, _) = over_h2(&mut h2, "GET", "/early").await;
    assert_eq!((status, body.as_str()), (200, "after"));
    let (status, headers, body, _) = over_h2(&mut h2, "HEAD", "/h").await;
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(headers["content-length"], "2");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one upstream connection so far, reused"
    );

    let (status, _, body, _) = over_h2(&mut h2, "GET", "/until-close").await;
    assert_eq!((status, body.as_str()), (200, "all of it"));
    // the upstream closes after this answer without saying so: the next request finds the
    // pooled connection dead and takes a new one
    let (status, _, body, _) = over_h2(&mut h2, "GET", "/then-close").await;
    assert_eq!((status, body.as_str()), (200, "bye!"));
    let (status, _, body, _) = over_h2(&mut h2, "GET", "/again").await;
    assert_eq!((status, body.as_str()), (200, "/again"));
    assert_eq!(accepted.load(Ordering::SeqCst), 3);

    let (status, _, _, _) = over_h2(&mut h2, "GET", "/bad").await;
    assert_eq!(status, 502);
}
