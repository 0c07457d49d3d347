//! One HTTP/1.1 exchange with an endpoint as bytes, on the worker's plain pooled
//! connections ([`Pool::take_stream`]): the request head is written, the response head read
//! and parsed with `httparse`. The HTTP/1.1 fast path ([`crate::h1`]) relays the body as it
//! is framed; hyper's path ([`crate::forward`]) sends its bodiless requests to HTTP/1.1
//! endpoints this way too and gets the body as a [`Streamed`] body: counted by
//! `Content-Length` or decoded from chunked framing (trailers kept), the connection pooled
//! again when the body has ended.

use crate::body::BoxError;
use crate::headers;
use crate::pool::{self, Pool};
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Header fields parsed in one response head (or trailer section).
const MAX_FIELDS: usize = 128;
/// Largest upstream response head (and chunk-size line, and trailer section); a larger
/// one is answered 502.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Size of a relay buffer (response head and body pieces).
pub const RELAY_BUF: usize = 64 * 1024;

/// How an upstream response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// No body (HEAD, 204, 304).
    None,
    /// `Content-Length`.
    Exactly(u64),
    /// Chunked.
    Chunked,
    /// To the upstream's close (then the client connection closes too).
    UntilClose,
}

/// What an upstream sent first.
#[derive(Debug, PartialEq, Eq)]
pub enum Head<T> {
    /// Not complete yet.
    Partial,
    /// An informational (1xx) head of this length, to skip.
    Informational(usize),
    /// The response head.
    Final(T),
}

/// An upstream answer the proxy cannot relay: 502.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid upstream response head")]
pub struct BadReply;

/// Why no upstream response head came.
pub enum Fail {
    /// No connection: the request was not sent (another endpoint may take it).
    Connect(io::Error),
    /// The request was sent (maybe), no valid response head came.
    Exchange(io::Error),
}

/// How the body of a response with `status` and header `fields` is delimited (`head`: it
/// answers a HEAD request).
pub fn length(
    head: bool,
    status: u16,
    fields: &[httparse::Header<'_>],
) -> Result<Length, BadReply> {
    if head || status == 204 || status == 304 {
        return Ok(Length::None);
    }
    let te = (fields.iter().rev()).find(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    if let Some(te) = te {
        return Ok(match headers::tokens(te.value).last() {
            Some(coding) if coding.eq_ignore_ascii_case(b"chunked") => Length::Chunked,
            _ => Length::UntilClose,
        });
    }
    match crate::framing::framing(fields.iter().map(|h| (h.name, h.value))) {
        Ok(crate::framing::Body::Length(n)) => Ok(Length::Exactly(n)),
        Ok(_) => Ok(Length::UntilClose),
        Err(_) => Err(BadReply),
    }
}

/// Reads from `stream` into the spare room of `buf` (made when there is none).
pub async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.len() == buf.capacity() {
        buf.reserve(RELAY_BUF);
    }
    stream.read_buf(buf).await
}

/// Whether a pooled connection is still open with nothing unread on it.
fn idle_and_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Sends `head` upstream and reads the response into `buf` until `parse` finds its head.
async fn exchange<T>(
    stream: &mut TcpStream,
    head: &[u8],
    buf: &mut Vec<u8>,
    parse: &mut impl FnMut(&[u8]) -> Result<Head<T>, BadReply>,
) -> io::Result<T> {
    stream.write_all(head).await?;
    buf.clear();
    loop {
        if fill(stream, buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        loop {
            match parse(buf).map_err(io::Error::other)? {
                Head::Partial => break,
                Head::Informational(n) => {
                    buf.drain(..n);
                }
                Head::Final(r) => return Ok(r),
            }
        }
    }
}

/// Gets a connection to `addr` (pooled or new, at `now`) that answers the request `head`
/// with a response head, which `parse` reads from the start of `buf`. A pooled connection
/// that closed meanwhile is left for the next one when the request may be sent again
/// (`idempotent`).
pub async fn connect_and_exchange<T>(
    pool: &Pool,
    (addr, now): (SocketAddr, Instant),
    connect_timeout: Duration,
    (head, idempotent): (&[u8], bool),
    buf: &mut Vec<u8>,
    mut parse: impl FnMut(&[u8]) -> Result<Head<T>, BadReply>,
) -> Result<(TcpStream, T), Fail> {
    loop {
        let (mut stream, pooled) = match pool.take_stream(addr, now) {
            Some(stream) => (stream, true),
            None => {
                let stream = pool::dial(addr, connect_timeout).await;
                (stream.map_err(Fail::Connect)?, false)
            }
        };
        if pooled && !idempotent && !idle_and_open(&stream) {
            continue;
        }
        match exchange(&mut stream, head, buf, &mut parse).await {
            Ok(reply) => return Ok((stream, reply)),
            Err(_) if pooled && idempotent && buf.is_empty() => continue,
            Err(e) => return Err(Fail::Exchange(e)),
        }
    }
}

/// A response head read for hyper's path.
pub struct Parsed {
    /// Length of the head in the buffer.
    pub head_len: usize,
    /// Status and header fields, the hop-by-hop ones left out.
    pub response: Response<()>,
    /// How the body is delimited.
    pub length: Length,
    /// The connection may carry another request after this response.
    pub reusable: bool,
}

/// A final response head (not 1xx), as parsed.
pub struct Final<'h, 'b> {
    /// Its length in the buffer.
    pub head_len: usize,
    /// The minor HTTP version (1.0 or 1.1).
    pub version: u8,
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: &'b str,
    /// The header fields.
    pub fields: &'h [httparse::Header<'b>],
}

/// Parses the response head at the start of `buf`: 1xx heads are to be skipped, a final
/// one goes to `then`; a 101 (no upgrade was asked for) or a head past
/// [`MAX_RESPONSE_HEAD`] is a [`BadReply`].
pub fn read_head<T>(
    buf: &[u8],
    then: impl FnOnce(Final<'_, '_>) -> Result<T, BadReply>,
) -> Result<Head<T>, BadReply> {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    );
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => return Ok(Head::Partial),
        _ => return Err(BadReply),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Err(BadReply);
    };
    match status {
        101 => Err(BadReply),
        100..=199 => Ok(Head::Informational(head_len)),
        _ => then(Final {
            head_len,
            version,
            status,
            reason: resp.reason.unwrap_or(""),
            fields: resp.headers,
        })
        .map(Head::Final),
    }
}

/// Parses the response head at the start of `buf` (answering a HEAD request when `head`).
/// Its hop-by-hop fields (RFC 9110 section 7.6.1) are left out: they are not for the client.
pub fn parse(buf: &[u8], head: bool) -> Result<Head<Parsed>, BadReply> {
    read_head(buf, |h| parsed(buf, h, head))
}

fn parsed(buf: &[u8], h: Final<'_, '_>, head: bool) -> Result<Parsed, BadReply> {
    let (fields, code, head_len, version) = (h.fields, h.status, h.head_len, h.version);
    let length = length(head, code, fields)?;
    let seen = headers::Seen::of(fields.iter().map(|f| (f.name, f.value)));
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::from_u16(code).map_err(|_| BadReply)?;
    // The values are slices of one copy of the head: one allocation, not one per field.
    let copy = Bytes::copy_from_slice(&buf[..head_len]);
    let map = response.headers_mut();
    map.reserve(fields.len());
    for f in fields {
        if seen.hop_by_hop(f.name) {
            continue;
        }
        let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| BadReply)?;
        let at = f.value.as_ptr() as usize - buf.as_ptr() as usize;
        let value = copy.slice(at..at + f.value.len());
        let value = HeaderValue::from_maybe_shared(value).map_err(|_| BadReply)?;
        // The body is framed anew for the client: a length only where it holds.
        if name != hyper::header::CONTENT_LENGTH
            || matches!(length, Length::Exactly(_) | Length::None)
        {
            map.append(name, value);
        }
    }
    Ok(Parsed {
        head_len,
        response,
        length,
        reusable: version == 1 && !seen.close && length != Length::UntilClose,
    })
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// In a chunk's data, with this much left.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// At the trailer section.
    Trailers,
}

/// How far a [`Streamed`] body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    /// This many bytes.
    Exactly(u64),
    /// Chunked, at this point.
    Chunked(Chunk),
    /// Up to the connection's close.
    UntilClose,
    /// Nothing: the body has ended.
    Done,
}

/// A response body read from its upstream connection as it comes (a piece at a time, never
/// whole); the connection goes back to the worker's pool when the body has ended cleanly.
pub struct Streamed {
    stream: Option<TcpStream>,
    buf: BytesMut,
    left: Left,
    reusable: bool,
    pool: Arc<Pool>,
    addr: SocketAddr,
}

impl Streamed {
    /// The body of `parsed`, whose first bytes are `rest` (read with the head), the rest
    /// to come from `stream` (to `addr`, pooled in `pool` afterwards).
    pub fn new(
        parsed: &Parsed,
        rest: &[u8],
        stream: TcpStream,
        (pool, addr): (Arc<Pool>, SocketAddr),
    ) -> Streamed {
        let left = match parsed.length {
            Length::None => Left::Exactly(0),
            Length::Exactly(n) => Left::Exactly(n),
            Length::Chunked => Left::Chunked(Chunk::Size),
            Length::UntilClose => Left::UntilClose,
        };
        let mut body = Streamed {
            stream: Some(stream),
            buf: BytesMut::from(rest),
            left,
            reusable: parsed.reusable,
            pool,
            addr,
        };
        if left == Left::Exactly(0) {
            body.end();
        }
        body
    }

    /// The body has ended: the connection is pooled if nothing more came on it.
    fn end(&mut self) {
        self.left = Left::Done;
        if let Some(stream) = self.stream.take() {
            if self.reusable && self.buf.is_empty() {
                self.pool.put_stream(self.addr, stream, Instant::now());
            }
        }
    }

    /// The next frame from the bytes buffered, if they hold one (or the end).
    fn frame(&mut self) -> Result<Option<Frame<Bytes>>, BoxError> {
        loop {
            let buffered = self.buf.len() as u64;
            match self.left {
                Left::Done => return Ok(None),
                Left::Exactly(0) => self.end(),
                Left::Exactly(_) | Left::UntilClose | Left::Chunked(Chunk::Data(_))
                    if buffered == 0 =>
                {
                    return Ok(None)
                }
                Left::Exactly(n) => {
                    let take = n.min(buffered);
                    self.left = Left::Exactly(n - take);
                    let data = self.buf.split_to(take as usize).freeze();
                    if take == n {
                        // Ended with this frame: an HTTP/2 response sends it with
                        // END_STREAM instead of an empty DATA frame after it.
                        self.end();
                    }
                    return Ok(Some(Frame::data(data)));
                }
                Left::UntilClose => return Ok(Some(Frame::data(self.buf.split().freeze()))),
                Left::Chunked(Chunk::Data(n)) => {
                    let take = n.min(buffered);
                    let next = if take == n {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(n - take)
                    };
                    self.left = Left::Chunked(next);
                    let data = self.buf.split_to(take as usize).freeze();
                    return Ok(Some(Frame::data(data)));
                }
                Left::Chunked(Chunk::Size) => match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((used, 0))) => {
                        self.buf.advance(used);
                        self.left = Left::Chunked(Chunk::Trailers);
                    }
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.buf.advance(used);
                        self.left = Left::Chunked(Chunk::Data(size));
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() < MAX_RESPONSE_HEAD => {
                        return Ok(None)
                    }
                    _ => return Err("invalid chunk size line".into()),
                },
                Left::Chunked(Chunk::DataEnd) => match self.buf.get(..2) {
                    Some(b"\r\n") => {
                        self.buf.advance(2);
                        self.left = Left::Chunked(Chunk::Size);
                    }
                    Some(_) => return Err("chunk data not followed by CRLF".into()),
                    None => return Ok(None),
                },
                Left::Chunked(Chunk::Trailers) => return self.trailers(),
            }
        }
    }

    /// The trailer section (after the last chunk): a trailers frame when it has fields.
    fn trailers(&mut self) -> Result<Option<Frame<Bytes>>, BoxError> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let (used, fields) = match httparse::parse_headers(&self.buf, &mut fields) {
            Ok(httparse::Status::Complete(done)) => done,
            Ok(httparse::Status::Partial) if self.buf.len() < MAX_RESPONSE_HEAD => return Ok(None),
            _ => return Err("invalid trailer section".into()),
        };
        let mut trailers = HeaderMap::with_capacity(fields.len());
        for h in fields {
            let name = HeaderName::from_bytes(h.name.as_bytes())?;
            trailers.append(name, HeaderValue::from_bytes(h.value)?);
        }
        self.buf.advance(used);
        self.end();
        Ok((!trailers.is_empty()).then(|| Frame::trailers(trailers)))
    }
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some(frame) = this.frame().transpose() {
                return Poll::Ready(Some(frame));
            }
            let Some(stream) = &this.stream else {
                return Poll::Ready(None);
            };
            if this.buf.capacity() - this.buf.len() < 1024 {
                this.buf.reserve(RELAY_BUF);
            }
            let read = loop {
                ready!(stream.poll_read_ready(cx))?;
                match stream.try_read_buf(&mut this.buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    read => break read?,
                }
            };
            if read == 0 {
                this.stream = None;
                if this.left == Left::UntilClose {
                    this.left = Left::Done;
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Err("upstream closed within the body".into())));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == Left::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Left::Exactly(n) => SizeHint::with_exact(n),
            Left::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::net::TcpListener;

    /// Reads the response `head` + `body` through [`parse`] and [`Streamed`], the upstream
    /// writing the body a byte at a time; the body, its trailers, and whether the connection
    /// went back to the pool.
    async fn streamed(head: &str, body: &'static str) -> (String, Option<HeaderMap>, bool) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            for b in body.as_bytes() {
                s.write_all(&[*b]).await.unwrap();
                tokio::task::yield_now().await;
            }
            // Keeps the connection open until the test is done with it.
            let _ = s.read(&mut [0u8; 1]).await;
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let Ok(Head::Final(parsed)) = parse(head.as_bytes(), false) else {
            panic!("no head in {head:?}");
        };
        assert_eq!(parsed.head_len, head.len());
        let pool = Arc::new(Pool::new(Duration::from_secs(60)));
        let body = Streamed::new(&parsed, b"", stream, (pool.clone(), addr));
        let collected = body.collect().await.unwrap();
        let pooled = pool.take_stream(addr, Instant::now()).is_some();
        upstream.abort();
        let trailers = collected.trailers().cloned();
        let bytes = collected.to_bytes();
        (
            String::from_utf8_lossy(&bytes).into_owned(),
            trailers,
            pooled,
        )
    }

    #[tokio::test]
    async fn bodies_are_read_piece_by_piece_and_connections_pooled_after() {
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (body, trailers, pooled) = streamed(
            chunked,
            "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n",
        )
        .await;
        assert_eq!(body, "hello world");
        let trailers = trailers.expect("trailers");
        assert_eq!(
            (trailers["x-t"].as_bytes(), trailers["x-u"].as_bytes()),
            (&b"1"[..], &b"2"[..])
        );
        assert!(pooled);
        let (body, trailers, pooled) = streamed(chunked, "3\r\nabc\r\n0\r\n\r\n").await;
        assert_eq!((body.as_str(), trailers, pooled), ("abc", None, true));
        let length = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(streamed(length, "body").await, ("body".into(), None, true));
        let close = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\n";
        assert_eq!(streamed(close, "body").await, ("body".into(), None, false));
    }

    #[tokio::test]
    async fn a_sized_body_ends_with_its_last_data_frame() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
        let Ok(Head::Final(parsed)) = parse(head.as_bytes(), false) else {
            panic!("no head");
        };
        let pool = Arc::new(Pool::new(Duration::from_secs(60)));
        let mut body = Streamed::new(&parsed, b"ok", stream, (pool.clone(), addr));
        assert!(!body.is_end_stream());
        let frame = BodyExt::frame(&mut body).await.expect("a frame").unwrap();
        assert_eq!(frame.into_data().unwrap(), "ok");
        // Known to be the end before anyone polls again (HTTP/2: DATA with END_STREAM), and
        // the connection is back in the pool by then.
        assert!(body.is_end_stream());
        assert!(pool.take_stream(addr, Instant::now()).is_some());
        assert!(BodyExt::frame(&mut body).await.is_none());
    }

    #[tokio::test]
    async fn bad_chunks_are_errors() {
        for bad in ["zz\r\nhello\r\n0\r\n\r\n", "2\r\nhello\r\n0\r\n\r\n"] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let upstream = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                s.write_all(bad.as_bytes()).await.unwrap();
                let _ = s.read(&mut [0u8; 1]).await;
            });
            let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
            let Ok(Head::Final(parsed)) = parse(head.as_bytes(), false) else {
                panic!("no head");
            };
            let stream = TcpStream::connect(addr).await.unwrap();
            let pool = Arc::new(Pool::new(Duration::from_secs(60)));
            let body = Streamed::new(&parsed, b"", stream, (pool, addr));
            assert!(body.collect().await.is_err(), "{bad:?}");
            upstream.abort();
        }
    }

    #[test]
    fn heads_are_parsed_with_their_framing() {
        let parsed = |head: &str, head_request: bool| match parse(head.as_bytes(), head_request) {
            Ok(Head::Final(p)) => Ok((p.length, p.reusable, p.response)),
            Ok(Head::Partial) => Err("partial"),
            Ok(Head::Informational(_)) => Err("1xx"),
            Err(BadReply) => Err("bad"),
        };
        let (length, reusable, response) = parsed(
            "HTTP/1.1 201 Created\r\nContent-Length: 3\r\nX-A: 1\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!((length, reusable), (Length::Exactly(3), true));
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers()["x-a"], "1");
        let (length, _, response) = parsed(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(length, Length::Chunked);
        assert!(response.headers().get("content-length").is_none());
        assert!(response.headers().get("transfer-encoding").is_none());
        let (_, reusable, response) = parsed(
            "HTTP/1.1 200 OK\r\nServer: s\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n\
             Keep-Alive: timeout=5\r\nVary: a\r\nVary: b\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(!reusable, "Connection: close");
        let fields: Vec<_> = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            fields,
            [
                ("server", "s"),
                ("vary", "a"),
                ("vary", "b"),
                ("content-length", "0")
            ],
            "hop-by-hop fields are left out, the others keep their values"
        );
        let (length, reusable, _) = parsed("HTTP/1.0 200 OK\r\n\r\n", false).unwrap();
        assert_eq!((length, reusable), (Length::UntilClose, false));
        let (length, _, response) =
            parsed("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true).unwrap();
        assert_eq!(length, Length::None);
        assert_eq!(response.headers()["content-length"], "9", "HEAD keeps it");
        assert_eq!(
            parsed("HTTP/1.1 200 OK\r\nContent-", false).unwrap_err(),
            "partial"
        );
        assert_eq!(
            parsed("HTTP/1.1 103 Early\r\n\r\n", false).unwrap_err(),
            "1xx"
        );
        assert_eq!(
            parsed("HTTP/1.1 101 Switching\r\n\r\n", false).unwrap_err(),
            "bad"
        );
        let two_lengths = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(parsed(two_lengths, false).unwrap_err(), "bad");
    }
}
