//! Test helpers: backends that report what they received, manifests for them, a running
//! proxy, and raw and hyper clients. Everything binds 127.0.0.1 ephemeral ports.
#![allow(dead_code)]

use flatnet_l7::manifests::Objects;
use flatnet_l7::{ProxyConfig, X_FLATNET_UPSTREAM};
use flatnet_l7_routes::Table;
use futures::{SinkExt, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::HeaderMap;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Generous bound on any one network wait in tests.
pub const WAIT: Duration = Duration::from_secs(20);

pub type TestBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

static CHUNK: [u8; 65536] = [b'x'; 65536];

/// A body of `n` bytes made chunk by chunk as it is read.
pub fn generated(n: u64) -> TestBody {
    let stream = futures::stream::unfold(n, |left| async move {
        if left == 0 {
            return None;
        }
        let take = left.min(CHUNK.len() as u64);
        let frame = Frame::data(Bytes::from_static(&CHUNK[..take as usize]));
        Some((Ok(frame), left - take))
    });
    StreamBody::new(stream).boxed_unsync()
}

/// What a backend saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: String,
    pub headers: HeaderMap,
}

/// A test upstream (HTTP/1.1 and h2c). Paths: `/download/N` streams N bytes, `/upload`
/// answers the body's length, `/ws` is a WebSocket echo, `/trailers` answers with a trailer
/// `grpc-status: 0`; anything else answers its name with `status`.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    /// Request heads received.
    pub hits: Arc<AtomicUsize>,
    /// Request bodies received completely on `/upload`.
    pub completed: Arc<AtomicUsize>,
    /// Status of ordinary answers.
    pub status: Arc<AtomicU16>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct BackendState {
    name: String,
    hits: Arc<AtomicUsize>,
    completed: Arc<AtomicUsize>,
    status: Arc<AtomicU16>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

pub async fn backend(name: &str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = BackendState {
        name: name.to_string(),
        hits: Arc::default(),
        completed: Arc::default(),
        status: Arc::new(AtomicU16::new(200)),
        seen: Arc::default(),
    };
    let s = state.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| answer(s.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Backend {
        addr,
        name: name.to_string(),
        hits: state.hits,
        completed: state.completed,
        status: state.status,
        seen: state.seen,
        task,
    }
}

async fn answer(
    s: BackendState,
    mut req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    s.hits.fetch_add(1, Ordering::SeqCst);
    s.seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        version: format!("{:?}", req.version()),
        headers: req.headers().clone(),
    });
    let path = req.uri().path().to_string();
    if path == "/ws" {
        let key = req.headers()["sec-websocket-key"].as_bytes().to_vec();
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let io = TokioIo::new(upgrade.await.unwrap());
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                io,
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() || msg.is_binary() {
                    ws.send(msg).await.unwrap();
                }
            }
        });
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
        return Ok(Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-accept", accept)
            .body(full(""))
            .unwrap());
    }
    if let Some(n) = path.strip_prefix("/download/") {
        return Ok(Response::new(generated(n.parse().unwrap())));
    }
    if path == "/upload" {
        let mut body = req.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => return Ok(Response::new(full("aborted"))),
            }
        }
        s.completed.fetch_add(1, Ordering::SeqCst);
        return Ok(Response::new(full(format!("{n}"))));
    }
    if path == "/trailers" {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let frames = vec![
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::from("data"))),
            Ok(Frame::trailers(trailers)),
        ];
        return Ok(Response::new(
            StreamBody::new(futures::stream::iter(frames)).boxed_unsync(),
        ));
    }
    let status = s.status.load(Ordering::SeqCst);
    Ok(Response::builder()
        .status(status)
        .header("x-backend", s.name.as_str())
        .body(full(s.name.clone()))
        .unwrap())
}

/// An Ingress rule for test manifests: `name` is also the Service's name.
#[derive(Clone, Default)]
pub struct Ing {
    pub name: String,
    pub host: Option<String>,
    pub path: String,
    pub endpoints: Vec<SocketAddr>,
    pub annotations: Vec<(String, String)>,
    pub h2c: bool,
    /// Hosts and PEM certificate and key of a TLS Secret.
    pub tls: Option<(Vec<String>, String, String)>,
}

impl Ing {
    pub fn new(name: &str, host: &str, endpoints: &[&Backend]) -> Ing {
        Ing {
            name: name.into(),
            host: Some(host.into()),
            path: "/".into(),
            endpoints: endpoints.iter().map(|b| b.addr).collect(),
            ..Ing::default()
        }
    }

    pub fn annotate(mut self, key: &str, value: &str) -> Ing {
        self.annotations
            .push((format!("flatnet.dev/{key}"), value.into()));
        self
    }
}

fn indent(text: &str, n: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(n)))
        .collect()
}

/// Manifests for `ings`: an IngressClass, and per Ing an Ingress, a Service, one
/// EndpointSlice per endpoint and maybe a TLS Secret.
pub fn manifests(ings: &[Ing]) -> String {
    let mut out = String::from(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: flatnet\n  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}\nspec: {controller: flatnet.dev/ingress-controller}\n",
    );
    for (i, ing) in ings.iter().enumerate() {
        let annotations: BTreeMap<_, _> = ing.annotations.iter().cloned().collect();
        let tls = match &ing.tls {
            Some((hosts, _, _)) => format!(
                "  tls: [{{secretName: {}-tls, hosts: {}}}]\n",
                ing.name,
                serde_json::to_string(hosts).unwrap()
            ),
            None => String::new(),
        };
        let host = match &ing.host {
            Some(h) => format!("host: \"{h}\", "),
            None => String::new(),
        };
        out += &format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {n}\n  namespace: default\n  creationTimestamp: \"2024-01-01T00:00:{i:02}Z\"\n  annotations: {a}\nspec:\n{tls}  rules:\n  - {{{host}http: {{paths: [{{path: \"{p}\", pathType: Prefix, backend: {{service: {{name: {n}, port: {{number: 80}}}}}}}}]}}}}\n",
            n = ing.name,
            a = serde_json::to_string(&annotations).unwrap(),
            p = ing.path,
        );
        let app = if ing.h2c {
            ", appProtocol: kubernetes.io/h2c"
        } else {
            ""
        };
        out += &format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {n}, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80{app}}}]\n",
            n = ing.name
        );
        for (j, e) in ing.endpoints.iter().enumerate() {
            out += &format!(
                "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {n}-{j}\n  namespace: default\n  labels: {{kubernetes.io/service-name: {n}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints: [{{addresses: [\"{ip}\"], conditions: {{ready: true}}}}]\n",
                n = ing.name,
                port = e.port(),
                ip = e.ip()
            );
        }
        if let Some((_, cert, key)) = &ing.tls {
            out += &format!(
                "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {n}-tls, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{c}  tls.key: |\n{k}",
                n = ing.name,
                c = indent(cert, 4),
                k = indent(key, 4)
            );
        }
    }
    out
}

/// The table of manifests text; panics on warnings.
pub fn table(text: &str) -> Arc<Table> {
    let mut objects = Objects::default();
    objects.parse(text, "test manifests").unwrap();
    let table = objects.table();
    assert!(table.warnings().is_empty(), "{:?}", table.warnings());
    Arc::new(table)
}

/// A proxy serving on 127.0.0.1 ephemeral ports.
pub struct Running {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub tables: watch::Sender<Arc<Table>>,
    pub log: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Running {
    pub fn set(&self, ings: &[Ing]) {
        self.tables.send_replace(table(&manifests(ings)));
    }
}

pub fn test_config() -> ProxyConfig {
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    ProxyConfig {
        http: Some(local),
        https: Some(local),
        admin: Some(local),
        debug_headers: true,
        ..ProxyConfig::default()
    }
}

pub async fn proxy_with(mut config: ProxyConfig, table: Arc<Table>) -> Running {
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = log.clone();
    config.access_log = flatnet_l7::AccessLog::Sink(Arc::new(move |line: &str| {
        sink.lock().unwrap().push(line.to_string())
    }));
    let proxy = flatnet_l7::Proxy::bind(config).await.unwrap();
    let (tx, rx) = watch::channel(table);
    let running = Running {
        http: proxy.http_addr().unwrap(),
        https: proxy.https_addr().unwrap(),
        admin: proxy.admin_addr().unwrap(),
        tables: tx,
        log,
        task: tokio::spawn(proxy.run(rx)),
    };
    wait_healthy(running.admin).await;
    running
}

pub async fn proxy(ings: &[Ing]) -> Running {
    proxy_with(test_config(), table(&manifests(ings))).await
}

async fn wait_healthy(admin: SocketAddr) {
    for _ in 0..200 {
        if let Ok(r) = raw(
            admin,
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await
        {
            if r.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("proxy not healthy");
}

/// An HTTP/2 (prior knowledge) connection to the proxy's plain listener.
pub async fn h2_prior_knowledge(
    proxy: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<TestBody> {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// Sends `bytes` on a new connection and reads until the peer closes (bounded by [`WAIT`]).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<String> {
    let stream = TcpStream::connect(addr).await?;
    raw_on(stream, bytes).await
}

/// As [`raw`], on any stream.
pub async fn raw_on<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    bytes: &[u8],
) -> std::io::Result<String> {
    stream.write_all(bytes).await?;
    let mut out = Vec::new();
    match tokio::time::timeout(WAIT, stream.read_to_end(&mut out)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if !out.is_empty() => eprintln!("read ended with {e}"),
        Ok(Err(e)) => return Err(e),
        Err(_) => panic!(
            "no end of answer within {WAIT:?}: {}",
            String::from_utf8_lossy(&out)
        ),
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, TestBody>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request to the proxy's HTTP listener with `Host: host`.
pub async fn send(
    c: &HttpClient,
    proxy: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::get(format!("http://{proxy}{path}"))
        .header("host", host)
        .body(full(""))
        .unwrap();
    for (n, v) in headers {
        req.headers_mut().append(
            hyper::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let resp = tokio::time::timeout(WAIT, c.request(req))
        .await
        .unwrap()
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(WAIT, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    (parts.status, parts.headers, body)
}

/// The upstream that answered (debug header).
pub fn upstream(headers: &HeaderMap) -> String {
    headers
        .get(X_FLATNET_UPSTREAM)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// A port nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A self-signed certificate and key (PEM) for `names`.
pub fn certificate(names: &[&str]) -> (String, String) {
    let made =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem())
}

/// Accepts any certificate: the tests compare the presented one themselves.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub async fn connect(
    addr: SocketAddr,
    sni: &str,
    version: &'static rustls::SupportedProtocolVersion,
    alpn: &[&[u8]],
) -> TlsStream<tokio::net::TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[version])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}
