//! Streaming bodies: frames pass one by one (never buffered whole), counted, with an optional
//! time limit between frames, and an optional guard dropped when the body ends.

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Bytes, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// An error of a body stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type on both sides of the proxy.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body with all of `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// A body with nothing.
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// The error of a body that waited too long for its next frame.
#[derive(Debug, thiserror::Error)]
#[error("no body data for {0:?}")]
pub struct IdleTimeout(pub Duration);

/// Shared counters of one body: bytes passed, and whether it timed out.
#[derive(Debug, Default)]
pub struct Meter {
    /// Data bytes passed.
    pub bytes: AtomicU64,
    /// The idle limit between frames was hit.
    pub timed_out: AtomicBool,
}

pin_project! {
    /// A body passed through frame by frame; see the module documentation.
    pub struct Watched<B, G> {
        #[pin]
        inner: B,
        meter: Arc<Meter>,
        idle: Option<Duration>,
        #[pin]
        sleep: Option<Sleep>,
        guard: Option<G>,
    }
}

impl<B, G> Watched<B, G> {
    /// Wraps `inner`: counts into `meter`, fails after `idle` without a frame, drops `guard`
    /// when the body ends (or is dropped).
    pub fn new(inner: B, meter: Arc<Meter>, idle: Option<Duration>, guard: Option<G>) -> Self {
        Watched {
            inner,
            meter,
            idle,
            sleep: idle.map(tokio::time::sleep),
            guard,
        }
    }
}

impl<B, G> Body for Watched<B, G>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.meter
                        .bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                if let (Some(idle), Some(sleep)) = (*this.idle, this.sleep.as_pin_mut()) {
                    sleep.reset(Instant::now() + idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.guard.take();
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.guard.take();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let expired = this
                    .sleep
                    .as_pin_mut()
                    .is_some_and(|s| s.poll(cx).is_ready());
                match (expired, *this.idle) {
                    (true, Some(idle)) => {
                        this.meter.timed_out.store(true, Ordering::Relaxed);
                        this.guard.take();
                        Poll::Ready(Some(Err(Box::new(IdleTimeout(idle)))))
                    }
                    _ => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn counts_and_drops_the_guard_at_the_end() {
        let meter = Arc::new(Meter::default());
        let done = Arc::new(AtomicBool::new(false));
        let inner = full("hello");
        let body = Watched::new(inner, meter.clone(), None, Some(Flag(done.clone())));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "hello");
        assert_eq!(meter.bytes.load(Ordering::SeqCst), 5);
        assert!(done.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_times_out() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let meter = Arc::new(Meter::default());
        let body = Watched::new(
            StreamBody::new(stream),
            meter.clone(),
            Some(Duration::from_secs(1)),
            None::<()>,
        );
        tx.send(Ok(Frame::data(Bytes::from("ab")))).await.unwrap();
        let Err(err) = body.collect().await else {
            panic!("a stalled body must time out")
        };
        assert!(err.is::<IdleTimeout>());
        assert!(meter.timed_out.load(Ordering::SeqCst));
        assert_eq!(meter.bytes.load(Ordering::SeqCst), 2);
        drop(tx);
    }
}
