//! Counters in this process: the embedded default. One lock guards all counters, held for
//! the few microseconds a decision takes, so a decision over several counters is atomic.

use std::collections::{HashMap, VecDeque};

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::{
    bucket_len, reset_after, retry_after, Acquired, Adjustment, Check, Counters, Kind, LimitError, WindowState,
    SUB_BUCKETS,
};

enum Counter {
    /// Sub-buckets (index, count), oldest first.
    Rate {
        blen: i64,
        buckets: VecDeque<(i64, i64)>,
    },
    Budget {
        value: i64,
        expires_at: Option<i64>,
    },
}

#[derive(Default)]
struct Inner {
    counters: HashMap<String, Counter, foldhash::fast::RandomState>,
    ops: u64,
}

/// In-process counters.
#[derive(Default)]
pub struct MemoryCounters {
    inner: Mutex<Inner>,
}

impl MemoryCounters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.inner.lock().counters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn validate(c: &Check) -> Result<(), LimitError> {
    if c.limit < 0 || c.amount < 0 {
        return Err(LimitError::Invalid(format!("{}: negative limit or amount", c.key)));
    }
    if let Kind::Rate { window_ms } = c.kind {
        if window_ms <= 0 {
            return Err(LimitError::Invalid(format!("{}: empty window", c.key)));
        }
    }
    Ok(())
}

/// Counts of the sub-buckets `idx - SUB_BUCKETS ..= idx`, oldest first; drops older ones.
fn window_counts(buckets: &mut VecDeque<(i64, i64)>, idx: i64) -> Vec<i64> {
    let oldest = idx - SUB_BUCKETS;
    while buckets.front().is_some_and(|(i, _)| *i < oldest) {
        buckets.pop_front();
    }
    let mut counts = vec![0i64; (SUB_BUCKETS + 1) as usize];
    for (i, c) in buckets.iter() {
        if *i >= oldest && *i <= idx {
            counts[(i - oldest) as usize] += c;
        }
    }
    counts
}

fn state_of(counter: &mut Counter, check: &Check, now: i64) -> (WindowState, Vec<i64>, i64) {
    match (counter, check.kind) {
        (Counter::Rate { blen, buckets }, Kind::Rate { .. }) => {
            let idx = now / *blen;
            let counts = window_counts(buckets, idx);
            let used: i64 = counts.iter().sum();
            let state = WindowState {
                limit: check.limit,
                used,
                remaining: (check.limit - used).max(0),
                reset_ms: reset_after(&counts, idx, *blen, now),
            };
            (state, counts, idx)
        }
        (Counter::Budget { value, expires_at }, _) => {
            let state = WindowState {
                limit: check.limit,
                used: *value,
                remaining: (check.limit - *value).max(0),
                reset_ms: expires_at.map(|e| (e - now).max(0)).unwrap_or(0),
            };
            (state, Vec::new(), 0)
        }
        (c, _) => {
            // A key reused with another kind: start it again as the new kind.
            *c = new_counter(check);
            state_of(c, check, now)
        }
    }
}

fn new_counter(check: &Check) -> Counter {
    match check.kind {
        Kind::Rate { window_ms } => Counter::Rate {
            blen: bucket_len(window_ms),
            buckets: VecDeque::new(),
        },
        Kind::Budget { expires_at_ms } => Counter::Budget {
            value: 0,
            expires_at: expires_at_ms,
        },
    }
}

fn expired(c: &Counter, now: i64) -> bool {
    match c {
        Counter::Rate { blen, buckets } => buckets.back().is_none_or(|(i, _)| (i + SUB_BUCKETS + 1) * blen < now),
        Counter::Budget { expires_at, .. } => expires_at.is_some_and(|e| e < now),
    }
}

impl Inner {
    fn counter(&mut self, check: &Check, now: i64) -> &mut Counter {
        let fresh = match self.counters.get(&check.key) {
            Some(c) => expired(c, now),
            None => true,
        };
        if fresh {
            self.counters.insert(check.key.clone(), new_counter(check));
        }
        self.counters
            .entry(check.key.clone())
            .or_insert_with(|| new_counter(check))
    }

    fn sweep(&mut self, now: i64) {
        self.ops += 1;
        if self.ops.is_multiple_of(4096) {
            self.counters.retain(|_, c| !expired(c, now));
        }
    }
}

#[async_trait]
impl Counters for MemoryCounters {
    async fn acquire(&self, checks: &[Check], now: i64) -> Result<Acquired, LimitError> {
        for c in checks {
            validate(c)?;
        }
        let mut inner = self.inner.lock();
        inner.sweep(now);
        let mut states = Vec::with_capacity(checks.len());
        let mut buckets = Vec::with_capacity(checks.len());
        let mut refused = None;
        let mut retry = 0;
        for (i, check) in checks.iter().enumerate() {
            let counter = inner.counter(check, now);
            let (state, counts, idx) = state_of(counter, check, now);
            if refused.is_none() && state.used + check.amount > check.limit {
                refused = Some(i);
                retry = match (check.kind, &*counter) {
                    (Kind::Rate { .. }, Counter::Rate { blen, .. }) => {
                        retry_after(&counts, check.limit, check.amount, idx, *blen, now).unwrap_or(0)
                    }
                    _ => state.reset_ms,
                };
            }
            states.push(state);
            buckets.push(idx);
        }
        if refused.is_some() {
            return Ok(Acquired {
                admitted: false,
                refused,
                retry_after_ms: retry,
                states,
                buckets,
            });
        }
        for (i, check) in checks.iter().enumerate() {
            let idx = buckets[i];
            match inner.counter(check, now) {
                Counter::Rate { buckets: b, .. } => match b.back_mut() {
                    Some((last, c)) if *last == idx => *c += check.amount,
                    _ => b.push_back((idx, check.amount)),
                },
                Counter::Budget { value, .. } => *value = value.saturating_add(check.amount),
            }
            states[i].used += check.amount;
            states[i].remaining = (check.limit - states[i].used).max(0);
        }
        Ok(Acquired {
            admitted: true,
            refused: None,
            retry_after_ms: 0,
            states,
            buckets,
        })
    }

    async fn adjust(&self, items: &[Adjustment], now: i64) -> Result<(), LimitError> {
        let mut inner = self.inner.lock();
        for a in items {
            let Some(counter) = inner.counters.get_mut(&a.key) else {
                continue;
            };
            match counter {
                Counter::Rate { buckets, .. } => {
                    if let Some((_, c)) = buckets.iter_mut().find(|(i, _)| *i == a.bucket) {
                        *c = (*c + a.delta).max(0);
                    } else if a.delta > 0 {
                        // The reservation's bucket has left the window: count the extra now.
                        let blen = match counter {
                            Counter::Rate { blen, .. } => *blen,
                            Counter::Budget { .. } => 1,
                        };
                        if let Counter::Rate { buckets, .. } = counter {
                            let idx = now / blen;
                            match buckets.back_mut() {
                                Some((last, c)) if *last == idx => *c += a.delta,
                                _ => buckets.push_back((idx, a.delta)),
                            }
                        }
                    }
                }
                Counter::Budget { value, .. } => *value = (*value + a.delta).max(0),
            }
        }
        Ok(())
    }

    async fn peek(&self, checks: &[Check], now: i64) -> Result<Vec<WindowState>, LimitError> {
        let mut inner = self.inner.lock();
        let mut out = Vec::with_capacity(checks.len());
        for check in checks {
            match inner.counters.get_mut(&check.key) {
                Some(c) if !expired(c, now) => out.push(state_of(c, check, now).0),
                _ => out.push(WindowState {
                    limit: check.limit,
                    used: 0,
                    remaining: check.limit,
                    reset_ms: 0,
                }),
            }
        }
        Ok(out)
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}
