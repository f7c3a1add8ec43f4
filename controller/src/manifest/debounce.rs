//! When to apply file changes: once a burst of change events is over.
//!
//! Writing a file makes several events (create, write, close, rename), usually within a
//! millisecond; tools that write many files make many more. A burst ends after `quiet` without
//! events, or `max_delay` after its first event, so a steady stream of changes cannot hold back
//! an apply forever. Events that arrive while an apply runs wait for the next one.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub(super) struct Debounce {
    pub(super) quiet: Duration,
    pub(super) max_delay: Duration,
}

impl Debounce {
    /// Waits for the next burst of events to end. `false`: the sender is gone.
    pub(super) async fn next(&self, rx: &mut UnboundedReceiver<()>) -> bool {
        if rx.recv().await.is_none() {
            return false;
        }
        let deadline = Instant::now() + self.max_delay;
        loop {
            let wait = self
                .quiet
                .min(deadline.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Some(())) if Instant::now() < deadline => continue,
                Ok(None) => return false,
                _ => break,
            }
        }
        // What is queued now is covered by the read that follows.
        while rx.try_recv().is_ok() {}
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::unbounded_channel;

    const D: Debounce = Debounce {
        quiet: Duration::from_millis(10),
        max_delay: Duration::from_millis(500),
    };

    #[tokio::test(start_paused = true)]
    async fn a_lone_event_waits_only_the_quiet_time() {
        let (tx, mut rx) = unbounded_channel();
        let start = Instant::now();
        tx.send(()).unwrap();
        assert!(D.next(&mut rx).await);
        assert_eq!(start.elapsed(), D.quiet);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_one_apply() {
        let (tx, mut rx) = unbounded_channel();
        let start = Instant::now();
        let writer = tokio::spawn(async move {
            for _ in 0..5 {
                tx.send(()).unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tx
        });
        assert!(D.next(&mut rx).await);
        // The last event came at 8 ms; the burst ended 10 ms later.
        assert_eq!(start.elapsed(), Duration::from_millis(18));
        let tx = writer.await.unwrap();
        drop(tx);
        assert!(
            !D.next(&mut rx).await,
            "nothing left over, and the sender is gone"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_applies_every_max_delay() {
        let (tx, mut rx) = unbounded_channel();
        tokio::spawn(async move {
            loop {
                if tx.send(()).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let start = Instant::now();
        assert!(D.next(&mut rx).await);
        assert_eq!(start.elapsed(), D.max_delay);
        assert!(D.next(&mut rx).await);
        let second = start.elapsed();
        assert!(
            second <= D.max_delay * 2 + Duration::from_millis(5),
            "{second:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn events_queued_during_an_apply_make_one_more() {
        let (tx, mut rx) = unbounded_channel();
        tx.send(()).unwrap();
        assert!(D.next(&mut rx).await);
        // An apply runs; three events arrive meanwhile.
        for _ in 0..3 {
            tx.send(()).unwrap();
        }
        let start = Instant::now();
        assert!(D.next(&mut rx).await);
        assert_eq!(start.elapsed(), D.quiet);
        drop(tx);
        assert!(!D.next(&mut rx).await);
    }
}
