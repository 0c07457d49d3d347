//! TLS (SNI, versions, ALPN), HTTP/2 over TLS, h2c with prior knowledge and trailers, and the
//! HTTP-to-HTTPS redirect.

mod common;

use common::*;
use http_body_util::BodyExt;
use hyper::{Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::ProtocolVersion;
use tokio_rustls::client::TlsStream;

fn presented(s: &TlsStream<tokio::net::TcpStream>) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

#[tokio::test]
async fn sni_picks_certificates_over_tls_1_2_and_1_3_with_alpn() {
    let web = backend("web").await;
    let (a_cert, a_key) = certificate(&["a.test"]);
    let (w_cert, w_key) = certificate(&["*.w.test"]);
    let mut a = Ing::new("a", "a.test", &[&web]).annotate("ssl-redirect", "true");
    a.tls = Some((vec!["a.test".into()], a_cert.clone(), a_key));
    let mut w = Ing::new("w", "*.w.test", &[&web]);
    w.tls = Some((vec!["*.w.test".into()], w_cert.clone(), w_key));
    let p = proxy(&[a, w]).await;

    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let s = connect(p.https, "a.test", version, &[b"http/1.1"]).await;
        assert_eq!(presented(&s), der(&a_cert));
        let negotiated = s.get_ref().1.protocol_version().unwrap();
        let want = if version.version == ProtocolVersion::TLSv1_2 {
            ProtocolVersion::TLSv1_2
        } else {
            ProtocolVersion::TLSv1_3
        };
        assert_eq!(negotiated, want);
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let answer = raw_on(
            s,
            b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("web"));
    }
    let seen = web.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.headers["x-forwarded-proto"], "https");

    let s = connect(p.https, "x.w.test", &rustls::version::TLS13, &[]).await;
    assert_eq!(presented(&s), der(&w_cert));
    let default = connect(p.https, "unknown.test", &rustls::version::TLS13, &[]).await;
    let default = presented(&default);
    assert_ne!(default, der(&a_cert));
    assert_ne!(default, der(&w_cert));

    // a new certificate for a.test takes over without restarting the listener
    let (new_cert, new_key) = certificate(&["a.test"]);
    let mut a = Ing::new("a", "a.test", &[&web]);
    a.tls = Some((vec!["a.test".into()], new_cert.clone(), new_key));
    p.set(&[a]);
    let mut rotated = false;
    for _ in 0..100 {
        let s = connect(p.https, "a.test", &rustls::version::TLS13, &[]).await;
        if presented(&s) == der(&new_cert) {
            rotated = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(rotated, "the certificate rotated with the table");
}

#[tokio::test]
async fn http2_over_tls_and_plain_http_redirects() {
    let web = backend("web").await;
    let (cert, key) = certificate(&["a.test"]);
    let mut a = Ing::new("a", "a.test", &[&web]).annotate("ssl-redirect", "true");
    a.tls = Some((vec!["a.test".into()], cert, key));
    let p = proxy(&[a]).await;

    let s = connect(
        p.https,
        "a.test",
        &rustls::version::TLS13,
        &[b"h2", b"http/1.1"],
    )
    .await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = Request::get("https://a.test/h2?x=1")
            .body(full(""))
            .unwrap();
        let resp = h2.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), Version::HTTP_2);
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "web");
    }
    let seen = web.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.uri, "/h2?x=1");
    assert_eq!(seen.version, "HTTP/1.1", "HTTP/1.1 upstream");
    assert_eq!(seen.headers["x-forwarded-host"], "a.test");

    let c = client();
    let (status, headers, _) = send(&c, p.http, "a.test", "/p/../q?z=2", &[]).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers["location"], "https://a.test/q?z=2");
}

#[tokio::test]
async fn h2c_prior_knowledge_both_hops_with_trailers() {
    let grpc = backend("grpc").await;
    let mut ing = Ing::new("grpc", "g.test", &[&grpc]);
    ing.h2c = true;
    let p = proxy(&[ing]).await;
    // prior knowledge: HTTP/2 from the first byte on a plain connection; :authority routes
    let tcp = tokio::net::TcpStream::connect(p.http).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::post("http://g.test/trailers")
        .header("te", "trailers")
        .body(full("ping"))
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), Version::HTTP_2);
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(collected.to_bytes(), "data");
    let seen = grpc.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.version, "HTTP/2.0", "h2c upstream");
    assert_eq!(seen.headers["te"], "trailers");
}
