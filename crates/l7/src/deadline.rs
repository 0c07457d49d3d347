//! A time limit that a connection sets again for every request, cheaply: its timer stays
//! armed at an earlier instant and is re-armed only when it fires before the limit, so
//! moving the limit later (the common case: the next request's limit) touches no timer.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::time::Sleep;

/// A time limit reused from request to request; see the module documentation.
pub struct Deadline {
    sleep: Pin<Box<Sleep>>,
    /// When the timer fires.
    armed: Instant,
    /// The limit.
    until: Instant,
}

/// Further than any limit set.
const FAR: Duration = Duration::from_secs(86_400 * 365);

impl Deadline {
    /// A limit not set yet (far away).
    pub fn new() -> Deadline {
        let far = Instant::now() + FAR;
        Deadline {
            sleep: Box::pin(tokio::time::sleep_until(far.into())),
            armed: far,
            until: far,
        }
    }

    /// Sets the limit `limit` after `from`.
    pub fn set(&mut self, from: Instant, limit: Duration) {
        self.until = from + limit;
        if self.until < self.armed {
            self.arm();
        }
    }

    fn arm(&mut self) {
        self.armed = self.until;
        self.sleep.as_mut().reset(self.until.into());
    }

    /// Runs `f` to its end (`Some`) or until the limit (`None`).
    pub async fn within<F: Future>(&mut self, f: F) -> Option<F::Output> {
        let mut f = pin!(f);
        poll_fn(|cx| {
            if let Poll::Ready(out) = f.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            while self.sleep.as_mut().poll(cx).is_ready() {
                if Instant::now() >= self.until {
                    return Poll::Ready(None);
                }
                self.arm();
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limits_hold_when_moved_later_and_earlier() {
        let mut d = Deadline::new();
        d.set(Instant::now(), Duration::from_millis(50));
        assert_eq!(d.within(async { 7 }).await, Some(7));
        // moved later without re-arming: the early timer fires, is re-armed, and the
        // limit still holds at its new instant
        tokio::time::sleep(Duration::from_millis(30)).await;
        d.set(Instant::now(), Duration::from_millis(120));
        let started = Instant::now();
        assert_eq!(d.within(std::future::pending::<()>()).await, None);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(115), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        // moved earlier: re-armed at once
        d.set(Instant::now(), Duration::from_secs(60));
        d.set(Instant::now(), Duration::from_millis(20));
        let started = Instant::now();
        assert_eq!(d.within(std::future::pending::<()>()).await, None);
        assert!(started.elapsed() < Duration::from_secs(2));
        // a future that ends in time wins
        d.set(Instant::now(), Duration::from_millis(500));
        let done = d
            .within(tokio::time::sleep(Duration::from_millis(10)))
            .await;
        assert_eq!(done, Some(()));
    }
}
