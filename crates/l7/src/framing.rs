//! Request framing checks against request smuggling (RFC 9112 section 6).
//!
//! hyper already refuses (400) an invalid `Content-Length`, two differing ones and a
//! `Transfer-Encoding` whose last coding is not `chunked`. It accepts `Content-Length` together
//! with `Transfer-Encoding` (it drops the length, reads chunked and closes afterwards) and
//! `Transfer-Encoding: gzip, chunked`; the service sees neither the dropped length nor the
//! closing. So every HTTP/1 connection's request bytes also pass through a [`Scanner`] that
//! reads each request head with `httparse` and follows the body framing to the next head; a
//! head flagged [`Verdict::Refuse`] makes the connection answer 400 and close before anything
//! is forwarded. [`check_headers`] applies the same rules to the parsed headers (for HTTP/2,
//! where there is no raw head).

use hyper::header::{HeaderMap, CONTENT_LENGTH, TRANSFER_ENCODING};

/// Why a request's framing is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Both `Content-Length` and `Transfer-Encoding`.
    #[error("Content-Length together with Transfer-Encoding")]
    LengthAndChunked,
    /// A `Content-Length` that is not one decimal number, or several differing ones.
    #[error("invalid or conflicting Content-Length")]
    BadLength,
    /// A `Transfer-Encoding` other than exactly `chunked`.
    #[error("Transfer-Encoding other than chunked")]
    BadTransferEncoding,
}

/// How a request's body is delimited, once its framing is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Empty,
    Length(u64),
    Chunked,
}

/// Checks the framing headers of one request, given as (name, value) pairs.
pub fn framing<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> Result<Body, Refusal> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(CONTENT_LENGTH.as_str()) {
            for part in value.split(|b| *b == b',') {
                let part = part.trim_ascii();
                if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                    return Err(Refusal::BadLength);
                }
                let n: u64 = std::str::from_utf8(part)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(Refusal::BadLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(Refusal::BadLength);
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(TRANSFER_ENCODING.as_str()) {
            if chunked || !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(Refusal::BadTransferEncoding);
            }
            chunked = true;
        }
    }
    match (length, chunked) {
        (Some(_), true) => Err(Refusal::LengthAndChunked),
        (Some(n), false) => Ok(Body::Length(n)),
        (None, true) => Ok(Body::Chunked),
        (None, false) => Ok(Body::Empty),
    }
}

/// Checks the framing headers hyper left in a parsed request.
pub fn check_headers(headers: &HeaderMap) -> Result<(), Refusal> {
    framing(
        headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes())),
    )
    .map(|_| ())
}

/// What the scanner concluded so far about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing wrong seen.
    Fine,
    /// A request head with refused framing: answer 400 and close.
    Refuse(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a request head.
    Head,
    /// Inside a body of known length: bytes left.
    Length(u64),
    /// Before a chunk-size line.
    ChunkSize,
    /// Inside chunk data: bytes left, then CRLF.
    ChunkData(u64),
    /// The CRLF after chunk data: bytes left.
    ChunkEnd(u8),
    /// The trailer section after the last chunk.
    Trailers,
    /// After a head asking for an upgrade: the next bytes are a tunnel if it was granted.
    AfterUpgrade,
    /// Not HTTP/1 framing any more (HTTP/2 preface, an upgrade, a parse error hyper refuses
    /// itself, or a refusal already made): bytes are no longer looked at.
    Off,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Incremental reader of one connection's request bytes; see the module documentation.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    pending: Vec<u8>,
    limit: usize,
    verdict: Verdict,
}

impl Scanner {
    /// A scanner for a new connection; `limit` bounds a head (as hyper's buffer does).
    pub fn new(limit: usize) -> Scanner {
        Scanner {
            state: State::Head,
            pending: Vec::new(),
            limit,
            verdict: Verdict::Fine,
        }
    }

    /// The verdict so far.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Feeds the next bytes read from the client. `upgraded` tells whether the last upgrade
    /// request was granted (answered 101).
    pub fn feed(&mut self, mut bytes: &[u8], upgraded: bool) -> Verdict {
        let max_steps = bytes.len() * 2 + 16;
        for _ in 0..max_steps {
            if bytes.is_empty() || self.state == State::Off {
                break;
            }
            bytes = self.step(bytes, upgraded);
        }
        self.verdict
    }

    /// Consumes a prefix of `bytes` and returns the rest.
    fn step<'b>(&mut self, bytes: &'b [u8], upgraded: bool) -> &'b [u8] {
        match self.state {
            State::Head => self.buffered(bytes, Self::head),
            State::Length(left) => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                self.state = match left - n as u64 {
                    0 => State::Head,
                    rest => State::Length(rest),
                };
                &bytes[n..]
            }
            State::ChunkSize => self.buffered(bytes, Self::chunk_size),
            State::ChunkData(left) => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                self.state = match left - n as u64 {
                    0 => State::ChunkEnd(2),
                    rest => State::ChunkData(rest),
                };
                &bytes[n..]
            }
            State::ChunkEnd(left) => {
                let n = usize::from(left).min(bytes.len());
                self.state = match left - n as u8 {
                    0 => State::ChunkSize,
                    rest => State::ChunkEnd(rest),
                };
                &bytes[n..]
            }
            State::Trailers => self.buffered(bytes, Self::trailers),
            State::AfterUpgrade => {
                self.state = if upgraded { State::Off } else { State::Head };
                bytes
            }
            State::Off => &[],
        }
    }

    /// Lets `parse` try the pending bytes followed by `bytes`; `parse` returns how many it
    /// used (`None`: needs more). Returns the unused rest of `bytes`. Bytes are copied only
    /// when a head, chunk-size line or trailer section is split across reads.
    fn buffered<'b>(
        &mut self,
        bytes: &'b [u8],
        parse: fn(&mut Self, &[u8]) -> Option<usize>,
    ) -> &'b [u8] {
        if self.pending.is_empty() {
            return match parse(self, bytes) {
                Some(used) => &bytes[used.min(bytes.len())..],
                None => {
                    self.keep(bytes.to_vec());
                    &[]
                }
            };
        }
        let before = self.pending.len();
        self.pending.extend_from_slice(bytes);
        let pending = std::mem::take(&mut self.pending);
        match parse(self, &pending) {
            Some(used) => {
                let from_bytes = used.saturating_sub(before);
                &bytes[from_bytes.min(bytes.len())..]
            }
            None => {
                self.keep(pending);
                &[]
            }
        }
    }

    /// Keeps an incomplete `part` for the next read, or stops scanning when it is over the
    /// limit (hyper refuses such a head itself).
    fn keep(&mut self, part: Vec<u8>) {
        if part.len() > self.limit {
            self.state = State::Off;
        } else {
            self.pending = part;
        }
    }

    fn head(&mut self, buf: &[u8]) -> Option<usize> {
        // Empty lines before a request line are allowed (RFC 9112 section 2.2).
        let skip = buf
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        let rest = &buf[skip..];
        if rest.is_empty() {
            return Some(buf.len());
        }
        if rest.starts_with(H2_PREFACE) || H2_PREFACE.starts_with(rest) {
            if rest.len() >= H2_PREFACE.len() {
                self.state = State::Off;
                return Some(buf.len());
            }
            return None;
        }
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; 128];
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(rest, &mut headers) {
            Ok(httparse::Status::Partial) => None,
            Err(_) => {
                self.state = State::Off;
                Some(buf.len())
            }
            Ok(httparse::Status::Complete(n)) => {
                let upgrade = req
                    .headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case("upgrade"));
                let body = framing(req.headers.iter().map(|h| (h.name, h.value)));
                self.state = match body {
                    Err(refusal) => {
                        self.verdict = Verdict::Refuse(refusal);
                        State::Off
                    }
                    Ok(Body::Empty) if upgrade => State::AfterUpgrade,
                    Ok(Body::Empty) | Ok(Body::Length(0)) => State::Head,
                    Ok(Body::Length(n)) => State::Length(n),
                    Ok(Body::Chunked) => State::ChunkSize,
                };
                Some(skip + n)
            }
        }
    }

    fn chunk_size(&mut self, buf: &[u8]) -> Option<usize> {
        match httparse::parse_chunk_size(buf) {
            Ok(httparse::Status::Partial) => None,
            Err(_) => {
                self.state = State::Off;
                Some(buf.len())
            }
            Ok(httparse::Status::Complete((n, 0))) => {
                self.state = State::Trailers;
                Some(n)
            }
            Ok(httparse::Status::Complete((n, size))) => {
                self.state = State::ChunkData(size);
                Some(n)
            }
        }
    }

    fn trailers(&mut self, buf: &[u8]) -> Option<usize> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        match httparse::parse_headers(buf, &mut headers) {
            Ok(httparse::Status::Partial) => None,
            Err(_) => {
                self.state = State::Off;
                Some(buf.len())
            }
            Ok(httparse::Status::Complete((n, _))) => {
                self.state = State::Head;
                Some(n)
            }
        }
    }
}

/// Follows a chunked message body (chunks, the last chunk, trailers) through its bytes, to
/// find where it ends; for relaying a chunked response as it is.
#[derive(Debug)]
pub struct ChunkedEnd(Scanner);

/// A chunked body that is not valid chunked framing (or whose size line or trailers are
/// longer than the limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunked framing")]
pub struct BadChunks;

impl ChunkedEnd {
    /// At the start of a body; `limit` bounds a chunk-size line and the trailers.
    pub fn new(limit: usize) -> ChunkedEnd {
        ChunkedEnd(Scanner {
            state: State::ChunkSize,
            ..Scanner::new(limit)
        })
    }

    /// Feeds the next bytes of the body: `Some(n)` when the body ends after the first `n` of
    /// them, `None` when it goes on.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, BadChunks> {
        let mut rest = bytes;
        for _ in 0..bytes.len() * 2 + 16 {
            match self.0.state {
                State::Head => return Ok(Some(bytes.len() - rest.len())),
                State::Off => return Err(BadChunks),
                _ if rest.is_empty() => return Ok(None),
                _ => rest = self.0.step(rest, false),
            }
        }
        Err(BadChunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> Verdict {
        let mut s = Scanner::new(16 * 1024);
        for c in chunks {
            s.feed(c, false);
        }
        s.verdict()
    }

    fn scan_bytewise(all: &[u8]) -> Verdict {
        let mut s = Scanner::new(16 * 1024);
        for b in all {
            s.feed(std::slice::from_ref(b), false);
        }
        s.verdict()
    }

    const GOOD: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
        POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
        POST /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nT: 1\r\n\r\n\
        GET /z HTTP/1.1\r\nHost: a\r\n\r\n";

    #[test]
    fn pipelined_good_requests_pass_in_any_split() {
        assert_eq!(scan(&[GOOD]), Verdict::Fine);
        assert_eq!(scan_bytewise(GOOD), Verdict::Fine);
        assert_eq!(
            scan(&[&GOOD[..40], &GOOD[40..90], &GOOD[90..]]),
            Verdict::Fine
        );
    }

    #[test]
    fn a_bad_head_after_good_ones_is_found() {
        let mut all = GOOD.to_vec();
        all.extend_from_slice(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(
            scan_bytewise(&all),
            Verdict::Refuse(Refusal::LengthAndChunked)
        );
        assert_eq!(scan(&[&all]), Verdict::Refuse(Refusal::LengthAndChunked));
    }

    #[test]
    fn body_bytes_that_look_like_heads_are_not_heads() {
        let req = b"POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(scan(&[req]), Verdict::Fine);
    }

    #[test]
    fn framing_rules() {
        let check = |hs: &[(&str, &str)]| framing(hs.iter().map(|(n, v)| (*n, v.as_bytes())));
        assert_eq!(check(&[]), Ok(Body::Empty));
        assert_eq!(check(&[("content-length", "7")]), Ok(Body::Length(7)));
        assert_eq!(
            check(&[("Content-Length", "7"), ("content-length", "7")]),
            Ok(Body::Length(7))
        );
        assert_eq!(
            check(&[("content-length", "7"), ("content-length", "8")]),
            Err(Refusal::BadLength)
        );
        assert_eq!(
            check(&[("content-length", "7, 8")]),
            Err(Refusal::BadLength)
        );
        assert_eq!(check(&[("content-length", "+7")]), Err(Refusal::BadLength));
        assert_eq!(check(&[("content-length", "")]), Err(Refusal::BadLength));
        assert_eq!(
            check(&[("content-length", "99999999999999999999")]),
            Err(Refusal::BadLength)
        );
        assert_eq!(
            check(&[("transfer-encoding", "Chunked")]),
            Ok(Body::Chunked)
        );
        assert_eq!(
            check(&[("transfer-encoding", "gzip, chunked")]),
            Err(Refusal::BadTransferEncoding)
        );
        assert_eq!(
            check(&[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked")
            ]),
            Err(Refusal::BadTransferEncoding)
        );
        assert_eq!(
            check(&[("transfer-encoding", "chunked"), ("content-length", "3")]),
            Err(Refusal::LengthAndChunked)
        );
    }

    #[test]
    fn http2_preface_and_granted_upgrades_stop_scanning() {
        let mut s = Scanner::new(1024);
        s.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false);
        s.feed(
            b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!(s.verdict(), Verdict::Fine);

        let mut s = Scanner::new(1024);
        s.feed(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", false);
        s.feed(b"\x81\x05hello", true);
        assert_eq!(s.verdict(), Verdict::Fine);

        let mut s = Scanner::new(1024);
        s.feed(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", false);
        s.feed(b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", false);
        assert_eq!(s.verdict(), Verdict::Refuse(Refusal::BadTransferEncoding));
    }

    #[test]
    fn chunked_bodies_end_where_their_trailers_do() {
        let body = b"3;x=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n";
        assert_eq!(ChunkedEnd::new(1024).feed(body), Ok(Some(body.len())));
        let mut more = body.to_vec();
        more.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(ChunkedEnd::new(1024).feed(&more), Ok(Some(body.len())));
        let mut bytewise = ChunkedEnd::new(1024);
        let ends: Vec<_> = body
            .iter()
            .map(|b| bytewise.feed(std::slice::from_ref(b)).unwrap())
            .collect();
        assert!(ends[..body.len() - 1].iter().all(Option::is_none));
        assert_eq!(ends[body.len() - 1], Some(1));
        assert_eq!(ChunkedEnd::new(1024).feed(b"0\r\n\r\n"), Ok(Some(5)));
        assert_eq!(ChunkedEnd::new(1024).feed(b"3\r\nab"), Ok(None));
        assert_eq!(ChunkedEnd::new(1024).feed(b"zz\r\n"), Err(BadChunks));
        assert_eq!(ChunkedEnd::new(8).feed(&[b'1'; 64]), Err(BadChunks));
    }
}
