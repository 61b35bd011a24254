//! [`ProgressTimer`]: when an idle `WatchRoutes` stream's next progress message is due.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// How near its deadline the timer is always polled rather than trusted to wake the task:
/// more than the timer wheel's one-millisecond ticks, so a wake-up a little before the
/// deadline is never taken for one that is not due yet.
const SLACK: Duration = Duration::from_millis(5);

/// A stream's progress timer: due every `interval` after the last time it was due (a late
/// tick delays the next, as tokio's `MissedTickBehavior::Delay` does), and cheap to ask
/// while it is not due.
///
/// A route change wakes every stream at once, and each then goes back to waiting on the
/// table's changes and on this timer. Polling a tokio `Sleep` each time touches its entry in the
/// timer wheel, a cold cache line per stream: about 4% of the server's samples during the
/// fan-out (bench/FINDINGS.md, round 28). Once the sleep has been polled with a task's
/// waker it wakes that task when due, so until its deadline draws near, asking again from
/// the same task only reads the clock and what this struct holds.
pub(crate) struct ProgressTimer {
    /// Boxed apart from the stream's state: read only when the deadline draws near.
    sleep: Pin<Box<Sleep>>,
    /// The sleep's deadline, kept where the stream's state is (reading the sleep's own
    /// is the cache miss this type exists to avoid).
    deadline: Instant,
    interval: Duration,
    /// The waker the sleep was last polled with, while it is pending.
    armed: Option<Waker>,
}

impl ProgressTimer {
    /// A timer first due `interval` from now.
    pub(crate) fn new(interval: Duration) -> Self {
        let deadline = Instant::now() + interval;
        Self {
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            deadline,
            interval,
            armed: None,
        }
    }

    /// Completes when a progress message is due.
    pub(crate) async fn due(&mut self) {
        std::future::poll_fn(|cx| self.poll_due(cx)).await
    }

    fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(waker) = &self.armed {
            if waker.will_wake(cx.waker()) && Instant::now() + SLACK < self.deadline {
                return Poll::Pending;
            }
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.armed = None;
                self.deadline = Instant::now() + self.interval;
                self.sleep.as_mut().reset(self.deadline);
                Poll::Ready(())
            }
            Poll::Pending => {
                if !self.armed.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    self.armed = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    /// Due once an interval has passed, not before, and again an interval after that;
    /// asked many times in between (as a stream is, at every route change), it stays
    /// pending and still completes on time.
    #[tokio::test(start_paused = true)]
    async fn due_every_interval_however_often_it_is_asked() {
        let interval = Duration::from_secs(5);
        let mut timer = ProgressTimer::new(interval);
        let started = Instant::now();
        for _ in 0..3 {
            for _ in 0..100 {
                assert!(timer.due().now_or_never().is_none());
                tokio::time::advance(Duration::from_millis(10)).await;
            }
            tokio::time::timeout(interval, timer.due())
                .await
                .expect("due within its interval");
            let elapsed = started.elapsed();
            assert!(
                elapsed.as_millis() % interval.as_millis() < 20,
                "{elapsed:?}"
            );
        }
        assert!(started.elapsed() >= 3 * interval);
    }

    /// Awaited while nothing else happens, it wakes its task at the deadline (the sleep
    /// was armed with that task's waker, then left to wake it).
    #[tokio::test(start_paused = true)]
    async fn an_armed_timer_wakes_its_task() {
        let mut timer = ProgressTimer::new(Duration::from_secs(5));
        assert!(timer.due().now_or_never().is_none());
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(6), timer.due())
            .await
            .expect("due within its interval");
        assert!(started.elapsed() >= Duration::from_millis(4_900));
    }
}
