//! The leanest HTTP/1.1 keep-alive proxy on tokio, to measure the ceiling of a tokio proxy's
//! request rate on a machine against nginx (`bench/l7/spike.sh`). Not a product: GET-style
//! requests without bodies, upstream responses with `Content-Length` that fit in 64 KiB, one
//! upstream connection per client connection, no routing, no limits, no timeouts.
//!
//! Usage: `flatnet-l7-spike LISTEN UPSTREAM [per-core]`: by default one multi-threaded runtime
//! with 2 workers; `per-core`: one single-threaded runtime per thread (2), each with its own
//! `SO_REUSEPORT` listener, so a connection and its upstream never leave their thread.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Parses one request head from `buf`; returns its length and the head to send upstream.
fn request_head(buf: &[u8], forwarded_for: &[u8], out: &mut Vec<u8>) -> Option<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            out.clear();
            out.extend_from_slice(req.method?.as_bytes());
            out.push(b' ');
            out.extend_from_slice(req.path?.as_bytes());
            out.extend_from_slice(b" HTTP/1.1\r\n");
            for h in req.headers.iter() {
                if h.name.eq_ignore_ascii_case("connection") {
                    continue;
                }
                out.extend_from_slice(h.name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(h.value);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(forwarded_for);
            out.extend_from_slice(b"\r\n");
            Some(Some(n))
        }
        Ok(httparse::Status::Partial) => Some(None),
        Err(_) => None,
    }
}

/// Head length and body length of the response in `buf`, once its head is complete.
fn response_size(buf: &[u8]) -> Option<(usize, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = resp.parse(buf).ok()? else {
        return None;
    };
    let body = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
        .unwrap_or(0);
    Some((head, body))
}

async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    upstream: SocketAddr,
) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let forwarded_for = format!("X-Forwarded-For: {}\r\n", peer.ip()).into_bytes();
    let (mut cbuf, mut clen) = (vec![0u8; 16384], 0usize);
    let mut ubuf = vec![0u8; 65536];
    let mut head = Vec::with_capacity(4096);
    loop {
        let used = loop {
            match request_head(&cbuf[..clen], &forwarded_for, &mut head) {
                Some(Some(n)) => break n,
                Some(None) if clen < cbuf.len() => {
                    let n = client.read(&mut cbuf[clen..]).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    clen += n;
                }
                _ => return Ok(()),
            }
        };
        cbuf.copy_within(used..clen, 0);
        clen -= used;
        up.write_all(&head).await?;
        let mut ulen = 0usize;
        let total = loop {
            let n = up.read(&mut ubuf[ulen..]).await?;
            if n == 0 {
                return Ok(());
            }
            ulen += n;
            if let Some((h, b)) = response_size(&ubuf[..ulen]) {
                break h + b;
            }
        };
        if total > ubuf.len() {
            return Ok(());
        }
        while ulen < total {
            let n = up.read(&mut ubuf[ulen..total]).await?;
            if n == 0 {
                return Ok(());
            }
            ulen += n;
        }
        client.write_all(&ubuf[..total]).await?;
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr) {
    loop {
        if let Ok((client, peer)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = serve(client, peer, upstream).await;
            });
        }
    }
}

fn reuse_port_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: flatnet-l7-spike LISTEN UPSTREAM [per-core]");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN is ADDR:PORT");
    let upstream: SocketAddr = upstream.parse().expect("UPSTREAM is ADDR:PORT");
    if args.get(3).map(String::as_str) != Some("per-core") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        return rt.block_on(async move {
            accept_loop(TcpListener::bind(listen).await?, upstream).await;
            Ok(())
        });
    }
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let listener = reuse_port_listener(listen)?;
            Ok(std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("a tokio listener");
                    accept_loop(listener, upstream).await;
                });
            }))
        })
        .collect::<std::io::Result<_>>()?;
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}
