//! keygate's limits: every rate limit and budget is a counter with a limit, checked and
//! reserved atomically (one decision for all the limits a request meets, one round trip on
//! Redis), settled to the real amount afterwards.
//!
//! Rate limits use a sliding window of `SUB_BUCKETS` sub-buckets counted conservatively: the
//! oldest sub-bucket, partly outside the window, counts whole. So in *any* window of the
//! limit's length no more than the limit is admitted (strict), and under sustained overload at
//! least `SUB_BUCKETS / (SUB_BUCKETS + 1)` (97%) of the limit is. Budgets are counters per
//! period (UTC boundaries, chosen by the caller through the counter's key).
//!
//! What must stay true: both backends give the same decisions for the same calls (one shared
//! suite); time comes from a [`Clock`], so tests never sleep to cross a window.
#![forbid(unsafe_code)]

pub mod memory;
pub mod redis;

use async_trait::async_trait;

/// Sub-buckets per rate window.
pub const SUB_BUCKETS: i64 = 32;

/// A source of time in Unix milliseconds.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn new(start_ms: i64) -> Self {
        ManualClock(std::sync::atomic::AtomicI64::new(start_ms))
    }
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn set(&self, ms: i64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// What kind of counter a check meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A sliding window of this length.
    Rate { window_ms: i64 },
    /// A budget; the counter forgets itself after `expires_at_ms` (the end of its period plus
    /// slack), never for a lifetime budget.
    Budget { expires_at_ms: Option<i64> },
}

/// One limit a request meets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// The counter, e.g. `vk:vk_abc:rpm` or `vk:vk_abc:usd:1764547200000`.
    pub key: String,
    pub kind: Kind,
    /// Most the counter may hold.
    pub limit: i64,
    /// What this request adds (a request, a token estimate, a cost bound).
    pub amount: i64,
}

/// The state of one counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowState {
    pub limit: i64,
    pub used: i64,
    pub remaining: i64,
    /// Milliseconds until the count next falls (a rate window's oldest sub-bucket leaves, or a
    /// budget's period ends; 0 when nothing is counted or the budget never resets).
    pub reset_ms: i64,
}

/// The answer to [`Counters::acquire`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acquired {
    /// Whether every check admitted the request (then every amount was added).
    pub admitted: bool,
    /// The first check that refused.
    pub refused: Option<usize>,
    /// When the refused check could admit this request (ms), if ever within its window.
    pub retry_after_ms: i64,
    /// Each counter's state after the decision.
    pub states: Vec<WindowState>,
    /// For rate checks, the sub-bucket the amount went into (to settle later); 0 for budgets.
    pub buckets: Vec<i64>,
}

/// A change of what a counter holds (settlement: the real amount minus the reserved one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adjustment {
    pub key: String,
    pub kind: Kind,
    /// The sub-bucket of the reservation (rate checks).
    pub bucket: i64,
    pub delta: i64,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LimitError {
    #[error("the counter backend is unavailable: {0}")]
    Unavailable(String),
    #[error("invalid check: {0}")]
    Invalid(String),
}

/// Where counters live: in this process or on Redis, with the same semantics.
#[async_trait]
pub trait Counters: Send + Sync + 'static {
    /// Admits the request when every check has room for its amount, and then adds every
    /// amount; otherwise adds nothing. One atomic decision.
    async fn acquire(&self, checks: &[Check], now_ms: i64) -> Result<Acquired, LimitError>;
    /// Applies settlements (deltas may be negative; counters never go below zero).
    async fn adjust(&self, items: &[Adjustment], now_ms: i64) -> Result<(), LimitError>;
    /// Reads counters without changing them.
    async fn peek(&self, checks: &[Check], now_ms: i64) -> Result<Vec<WindowState>, LimitError>;
    /// A name for logs and metrics.
    fn backend(&self) -> &'static str;
}

/// The length of one sub-bucket of a window.
pub fn bucket_len(window_ms: i64) -> i64 {
    let w = window_ms.max(1);
    (w + SUB_BUCKETS - 1) / SUB_BUCKETS
}

/// Given the counts of the `SUB_BUCKETS + 1` sub-buckets counted at `idx` (oldest first), the
/// milliseconds from `now` until `amount` more would fit under `limit`; `None` if never.
pub fn retry_after(counts: &[i64], limit: i64, amount: i64, idx: i64, blen: i64, now: i64) -> Option<i64> {
    if amount > limit {
        return None;
    }
    let total: i64 = counts.iter().sum();
    let mut freed = 0;
    for (j, c) in counts.iter().enumerate() {
        freed += c;
        if total - freed + amount <= limit {
            // Bucket `idx - SUB_BUCKETS + j` leaves the count when bucket `idx + j + 1` starts.
            let at = (idx + j as i64 + 1) * blen;
            return Some((at - now).max(1));
        }
    }
    None
}

/// Milliseconds until the oldest non-empty sub-bucket leaves the count.
pub fn reset_after(counts: &[i64], idx: i64, blen: i64, now: i64) -> i64 {
    match counts.iter().position(|c| *c > 0) {
        Some(j) => ((idx + j as i64 + 1) * blen - now).max(1),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_waits_for_enough_old_buckets() {
        // 33 buckets counted, limit 10, all used in the oldest: room when it leaves.
        let mut counts = vec![0i64; 33];
        counts[0] = 10;
        assert_eq!(retry_after(&counts, 10, 1, 100, 1000, 100_500), Some(500));
        counts[0] = 5;
        counts[2] = 5;
        assert_eq!(retry_after(&counts, 10, 6, 100, 1000, 100_000), Some(3000));
        assert_eq!(retry_after(&counts, 10, 11, 100, 1000, 100_000), None);
        assert_eq!(reset_after(&counts, 100, 1000, 100_250), 750);
        assert_eq!(reset_after(&[0; 33], 100, 1000, 100_250), 0);
    }
}
