//! One budget of body bytes for all connections (`server.max_buffered`).
//!
//! Each hook's `max_body` bounds one request; without a shared bound, N slow
//! senders that each stop one byte short of their body hold N × `max_body`
//! in memory. A request reserves what it declares before reading (or grows its
//! reservation chunk by chunk when chunked) and gives it back when its answer
//! is built; a request that cannot reserve is answered 503 and retried later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The shared count of bytes reserved against `limit`.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: u64,
    used: AtomicU64,
}

impl Budget {
    pub(crate) fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Bytes reserved now, by every request together.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Takes `n` more bytes, or nothing if that would pass the limit.
    fn take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }
}

/// One request's share of the budget; given back on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<Budget>,
    held: u64,
}

impl Reservation {
    /// An empty reservation, to grow.
    pub(crate) fn empty(budget: &Arc<Budget>) -> Reservation {
        Reservation {
            budget: budget.clone(),
            held: 0,
        }
    }

    /// Holds at least `total` bytes; false (and unchanged) when the budget
    /// has no room for the difference.
    pub(crate) fn grow_to(&mut self, total: u64) -> bool {
        if total <= self.held {
            return true;
        }
        let more = total - self.held;
        if !self.budget.take(more) {
            return false;
        }
        self.held = total;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.held, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_limit_and_give_back() {
        let b = Budget::new(100);
        let mut a = Reservation::empty(&b);
        assert!(a.grow_to(60));
        let mut c = Reservation::empty(&b);
        assert!(!c.grow_to(41), "60 + 41 is past 100");
        assert!(c.grow_to(40));
        assert!(a.grow_to(60), "already held");
        assert!(!a.grow_to(61));
        assert_eq!(b.used(), 100);
        drop(a);
        assert_eq!(b.used(), 40);
        assert!(c.grow_to(100));
        drop(c);
        assert_eq!(b.used(), 0);
        assert!(!Reservation::empty(&b).grow_to(u64::MAX));
        assert_eq!(b.used(), 0);
    }
}
