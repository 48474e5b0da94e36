//! Admission control for new orders. Past a bound on open sagas (orders placed and not yet
//! completed or cancelled, across every replica), `POST /orders` is refused at once with 503
//! and `Retry-After` instead of taking more work than the saga's services can finish in time.
//! Without a bound, offered load above capacity grows the backlog until sagas run past their
//! deadline: each one then costs a cancellation and its compensations on top of the work
//! already done, and fewer sagas complete the harder the system is pushed.
//!
//! The open sagas are counted in `order_view` by the deadline scan (every `DEADLINE_SCAN_MS`,
//! 1 s: the count it takes for the open-order gauges anyway; a count of its own five times a
//! second measured 10 ms of PostgreSQL time each under load). Between counts, a replica adds
//! what it has admitted and not finished placing and what it placed since the count began, so
//! its estimate is never below the truth for its own orders (it may be above: an order placed
//! while the count ran may be counted twice until the next count, and sagas that ended since
//! are subtracted only by the next count). Replicas each add only their own, so together they
//! may overshoot by what they place in one scan interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The bound on open sagas and what is known of them. Cheap to clone (one shared state).
#[derive(Debug, Clone)]
pub struct Admission(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// 0: no bound.
    max_open: u64,
    /// Open sagas at the last count.
    counted: AtomicU64,
    /// Admitted, and neither placed nor given back yet.
    in_flight: AtomicU64,
    /// Placed by this replica, by epoch: the current epoch's since the running count began,
    /// the other's before (until that count ends and includes them).
    placed: [AtomicU64; 2],
    epoch: AtomicUsize,
}

impl Admission {
    /// At most `max_open` open sagas; 0 admits everything.
    pub fn new(max_open: u64) -> Self {
        Self(Arc::new(Inner {
            max_open,
            counted: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            placed: [AtomicU64::new(0), AtomicU64::new(0)],
            epoch: AtomicUsize::new(0),
        }))
    }

    /// No bound (tools that place nothing).
    pub fn unbounded() -> Self {
        Self::new(0)
    }

    /// Take a place for one new order: false when the bound is reached. Every place taken is
    /// then either [`Self::placed`] or [`Self::give_back`].
    pub fn try_admit(&self) -> bool {
        let inner = &self.0;
        if inner.max_open == 0 {
            return true;
        }
        let in_flight = inner.in_flight.fetch_add(1, Ordering::AcqRel);
        let estimate = inner.counted.load(Ordering::Acquire)
            + in_flight
            + inner.placed[0].load(Ordering::Acquire)
            + inner.placed[1].load(Ordering::Acquire);
        if estimate < inner.max_open {
            true
        } else {
            inner.in_flight.fetch_sub(1, Ordering::AcqRel);
            false
        }
    }

    /// The admitted order was placed (its transaction committed).
    pub fn placed(&self) {
        let inner = &self.0;
        if inner.max_open == 0 {
            return;
        }
        inner.placed[inner.epoch.load(Ordering::Acquire)].fetch_add(1, Ordering::AcqRel);
        inner.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// The admitted order was not placed: its transaction failed, or an `Idempotency-Key`
    /// replayed an earlier one.
    pub fn give_back(&self) {
        if self.0.max_open > 0 {
            self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// A count is about to run: orders placed from now on may be missing from it. Returns the
    /// epoch of the orders it will include.
    pub fn begin_count(&self) -> usize {
        let inner = &self.0;
        let old = inner.epoch.load(Ordering::Acquire);
        inner.placed[1 - old].store(0, Ordering::Release);
        inner.epoch.store(1 - old, Ordering::Release);
        old
    }

    /// The count that began with [`Self::begin_count`] (`included`) saw `open` sagas.
    pub fn observe(&self, included: usize, open: u64) {
        let inner = &self.0;
        inner.counted.store(open, Ordering::Release);
        inner.placed[included].store(0, Ordering::Release);
    }

    /// The count that began with [`Self::begin_count`] failed: what it would have included is
    /// carried into the current epoch, for the next count to include.
    pub fn count_failed(&self, included: usize) {
        let inner = &self.0;
        let carried = inner.placed[included].swap(0, Ordering::AcqRel);
        inner.placed[1 - included].fetch_add(carried, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit_and_place(admission: &Admission) -> bool {
        let admitted = admission.try_admit();
        if admitted {
            admission.placed();
        }
        admitted
    }

    #[test]
    fn admits_up_to_the_bound_counting_its_own_orders_between_counts() {
        let admission = Admission::new(3);
        let included = admission.begin_count();
        admission.observe(included, 1);
        assert!(admit_and_place(&admission));
        assert!(admission.try_admit(), "one in flight");
        assert!(!admission.try_admit(), "1 counted + 1 placed + 1 in flight reach the bound of 3");
        admission.give_back();
        assert!(admit_and_place(&admission), "a place given back is free again");
        assert!(!admission.try_admit());
    }

    #[test]
    fn orders_placed_while_a_count_runs_are_kept_until_the_next_count() {
        let admission = Admission::new(3);
        assert!(admit_and_place(&admission));
        let included = admission.begin_count();
        // Placed while the count runs: the count may have missed it.
        assert!(admit_and_place(&admission));
        admission.observe(included, 1); // it saw the first order only
        assert!(admit_and_place(&admission), "1 counted + 1 placed during the count");
        assert!(!admission.try_admit(), "the order placed during the count still counts");
        let included = admission.begin_count();
        admission.observe(included, 0); // every saga ended
        assert!(admit_and_place(&admission), "a new count replaces what it includes");
    }

    #[test]
    fn a_failed_count_forgets_nothing() {
        let admission = Admission::new(2);
        assert!(admit_and_place(&admission));
        let included = admission.begin_count();
        admission.count_failed(included);
        let included = admission.begin_count();
        assert!(admit_and_place(&admission));
        assert!(!admission.try_admit(), "the order placed before the failed count still counts");
        admission.observe(included, 2);
        assert!(!admission.try_admit());
    }

    #[test]
    fn no_bound_admits_everything() {
        let admission = Admission::unbounded();
        let included = admission.begin_count();
        admission.observe(included, 1_000_000);
        assert!((0..10).all(|_| admit_and_place(&admission)));
    }
}
