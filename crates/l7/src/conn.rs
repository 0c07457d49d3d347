//! One client connection's shared facts: who it is, whether it is TLS, and what the framing
//! [`Scanner`] saw in its raw bytes (read through [`Scanned`], which also puts back the
//! bytes the HTTP/1.1 fast path read before it handed the connection to hyper).

use crate::framing::{Refusal, Scanner, Verdict};
use pin_project_lite::pin_project;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Facts about one client connection, shared by its reader and its requests.
#[derive(Debug)]
pub struct Conn {
    /// The client's address.
    pub client: SocketAddr,
    /// The client's IP as text, as `X-Forwarded-For` gets it.
    pub ip: String,
    /// Whether the connection is TLS.
    pub tls: bool,
    refused: Mutex<Option<Refusal>>,
    upgraded: AtomicBool,
}

impl Conn {
    /// A new connection's facts.
    pub fn new(client: SocketAddr, tls: bool) -> Arc<Conn> {
        Arc::new(Conn {
            client,
            ip: client.ip().to_string(),
            tls,
            refused: Mutex::new(None),
            upgraded: AtomicBool::new(false),
        })
    }

    /// The refusal of a request head seen on this connection, if any: every request from it
    /// on is answered 400 and the connection closed.
    pub fn refused(&self) -> Option<Refusal> {
        *self.refused.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that the connection was upgraded (a 101 answer): its bytes are a tunnel now.
    pub fn set_upgraded(&self) {
        self.upgraded.store(true, Ordering::SeqCst);
    }
}

pin_project! {
    /// A client stream whose read bytes are also fed to a [`Scanner`]; bytes already read
    /// from it (by the HTTP/1.1 fast path) are put back in front.
    pub struct Scanned<IO> {
        #[pin]
        io: IO,
        read: Vec<u8>,
        at: usize,
        scanner: Scanner,
        conn: Arc<Conn>,
    }
}

impl<IO> Scanned<IO> {
    /// Wraps `io`, whose bytes `read` were read already; `limit` bounds a request head.
    pub fn new(io: IO, read: Vec<u8>, conn: Arc<Conn>, limit: usize) -> Scanned<IO> {
        Scanned {
            io,
            read,
            at: 0,
            scanner: Scanner::new(limit),
            conn,
        }
    }
}

impl<IO: AsyncRead> AsyncRead for Scanned<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let poll = if *this.at < this.read.len() {
            let rest = &this.read[*this.at..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            *this.at += n;
            if *this.at == this.read.len() {
                *this.read = Vec::new();
                *this.at = 0;
            }
            Poll::Ready(Ok(()))
        } else {
            this.io.poll_read(cx, buf)
        };
        if let Poll::Ready(Ok(())) = poll {
            let fresh = &buf.filled()[before..];
            if !fresh.is_empty() {
                let upgraded = this.conn.upgraded.load(Ordering::SeqCst);
                if let Verdict::Refuse(r) = this.scanner.feed(fresh, upgraded) {
                    let mut refused = this.conn.refused.lock().unwrap_or_else(|e| e.into_inner());
                    refused.get_or_insert(r);
                }
            }
        }
        poll
    }
}

impl<IO: AsyncWrite> AsyncWrite for Scanned<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_smuggling_head_marks_the_connection() {
        let (mut client, server) = tokio::io::duplex(1024);
        let conn = Conn::new(SocketAddr::from(([127, 0, 0, 1], 1)), false);
        let read = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\n".to_vec();
        let mut scanned = Scanned::new(server, read, conn.clone(), 8192);
        client
            .write_all(b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        drop(client);
        let mut small = [0u8; 5];
        scanned.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"GET /", "bytes read before come first");
        let mut all = Vec::new();
        scanned.read_to_end(&mut all).await.unwrap();
        assert!(all.ends_with(
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert_eq!(conn.refused(), Some(Refusal::LengthAndChunked));
    }
}
