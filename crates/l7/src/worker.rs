//! Worker threads, one per core by default: each runs its own single-threaded runtime and
//! upstream [`Pool`], and serves the client connections the acceptors hand it in turn, from
//! the TLS handshake to the close. A request, its upstream connection and its response body
//! stay on one thread, with no cross-thread wake-ups or locks contended per request.

use crate::h1::Buffers;
use crate::listener;
use crate::metrics::Handles;
use crate::pool::Pool;
use crate::state::Shared;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

/// What the requests of one worker share besides [`Shared`].
pub struct Local {
    /// The worker's number, from 0.
    pub index: usize,
    /// The worker's upstream connections.
    pub pool: Arc<Pool>,
    /// The worker's metric handles.
    pub handles: Handles,
    /// The worker's relay buffers for the HTTP/1.1 fast path.
    pub buffers: Buffers,
}

/// A client connection accepted by a listener, for a worker to serve.
pub struct Accepted {
    /// The connection (non-blocking, not registered with any runtime).
    pub stream: std::net::TcpStream,
    /// The client's address.
    pub client: SocketAddr,
    /// Set for a TLS listener's connections.
    pub tls: Option<TlsAcceptor>,
}

/// The running workers; dropping the last handle ends them, with their connections.
pub struct Workers {
    queues: Vec<mpsc::UnboundedSender<Accepted>>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `n` (at least 1) worker threads serving with `shared`.
    pub fn start(n: usize, shared: &Arc<Shared>) -> std::io::Result<Workers> {
        let mut queues = Vec::new();
        for i in 0..n.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("flatnet-l7-{i}"))
                .spawn(move || runtime.block_on(serve(i, rx, shared)))?;
            queues.push(tx);
        }
        Ok(Workers {
            queues,
            next: AtomicUsize::new(0),
        })
    }

    /// Gives a connection to the next worker (round robin).
    pub fn hand(&self, accepted: Accepted) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        if self.queues[i].send(accepted).is_err() {
            tracing::warn!("worker {i} is gone; connection dropped");
        }
    }
}

/// One worker: serves the connections it is handed until the queue closes.
async fn serve(index: usize, mut queue: mpsc::UnboundedReceiver<Accepted>, shared: Arc<Shared>) {
    let pool = Arc::new(Pool::new(shared.config.upstream_idle_timeout));
    let sweeper = tokio::spawn(sweep(pool.clone()));
    let local = Arc::new(Local {
        index,
        pool,
        handles: Handles::new(index),
        buffers: Buffers::default(),
    });
    let builder = Arc::new(listener::builder(&shared.config.limits));
    while let Some(Accepted {
        stream,
        client,
        tls,
    }) = queue.recv().await
    {
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!("connection from {client}: {e}");
                continue;
            }
        };
        let conn = listener::Serving {
            shared: shared.clone(),
            local: local.clone(),
            builder: builder.clone(),
        };
        tokio::spawn(conn.serve(stream, client, tls));
    }
    sweeper.abort();
}

/// Closes the pool's idle connections now and then.
async fn sweep(pool: Arc<Pool>) {
    let mut every = tokio::time::interval(pool.sweep_period());
    loop {
        every.tick().await;
        pool.sweep();
    }
}
