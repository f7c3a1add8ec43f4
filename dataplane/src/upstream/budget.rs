//! Retry budget: retries allowed as a ratio of requests over a sliding window, plus a minimum
//! per second, so a failing backend is never hit by a retry storm.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use tokio::time::Instant;

use crate::policy::Budget;

const SLOTS: usize = 64;

#[derive(Default)]
struct Second {
    /// Which second (since `start`) this slot holds, plus one; 0 = never used.
    epoch: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

pub(crate) struct RetryBudget {
    start: Instant,
    /// Allocated by the first request: the window is 1.5 KiB, and of 10,000 backends in a
    /// table most may never see traffic through this replica.
    seconds: OnceLock<Box<[Second; SLOTS]>>,
}

impl RetryBudget {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            seconds: OnceLock::new(),
        }
    }

    fn seconds(&self) -> &[Second; SLOTS] {
        self.seconds
            .get_or_init(|| Box::new(std::array::from_fn(|_| Second::default())))
    }

    fn slot(&self) -> (u64, &Second) {
        let now = self.start.elapsed().as_secs() + 1;
        let slot = &self.seconds()[(now as usize) % SLOTS];
        let seen = slot.epoch.load(Ordering::Acquire);
        if seen != now
            && slot
                .epoch
                .compare_exchange(seen, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.requests.store(0, Ordering::Release);
            slot.retries.store(0, Ordering::Release);
        }
        (now, slot)
    }

    pub(crate) fn deposit(&self) {
        self.slot().1.requests.fetch_add(1, Ordering::AcqRel);
    }

    /// Takes one retry from the budget if there is one.
    pub(crate) fn try_withdraw(&self, budget: &Budget) -> bool {
        let (now, current) = self.slot();
        let window = budget.window.as_secs().clamp(1, SLOTS as u64 - 1);
        let (mut requests, mut retries) = (0u64, 0u64);
        for slot in self.seconds() {
            let epoch = slot.epoch.load(Ordering::Acquire);
            if epoch != 0 && epoch + window > now {
                requests += slot.requests.load(Ordering::Acquire);
                retries += slot.retries.load(Ordering::Acquire);
            }
        }
        let allowed = budget.min_per_second as f64 * window as f64 + budget.ratio * requests as f64;
        if (retries as f64) < allowed {
            current.retries.fetch_add(1, Ordering::AcqRel);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// 10% of requests, at least 1 retry a second, over a 10 s window.
    fn ten_percent_over_ten_seconds() -> Budget {
        Budget {
            ratio: 0.1,
            window: Duration::from_secs(10),
            min_per_second: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_and_minimum() {
        let budget = ten_percent_over_ten_seconds();
        let b = RetryBudget::new();
        for _ in 0..100 {
            b.deposit();
        }
        // 1/s over 10 s, plus 10% of 100 requests.
        let granted = (0..100).filter(|_| b.try_withdraw(&budget)).count();
        assert_eq!(granted, 20);
        // Once the window has passed, the budget refills to the minimum.
        tokio::time::advance(Duration::from_secs(11)).await;
        let granted = (0..100).filter(|_| b.try_withdraw(&budget)).count();
        assert_eq!(granted, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unused_budget_allocates_no_window() {
        let budget = ten_percent_over_ten_seconds();
        let b = RetryBudget::new();
        assert!(b.seconds.get().is_none());
        // A retry before any request still gets the per-second minimum, and is counted.
        let granted = (0..100).filter(|_| b.try_withdraw(&budget)).count();
        assert_eq!(granted, 10);
        assert!(b.seconds.get().is_some());
    }
}
