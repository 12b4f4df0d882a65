//! Metering: usage records leave the hot path through a bounded channel and are written to
//! the store in batches (at most every 100 ms or 500 records). `flush` waits until what was
//! recorded before it is stored; shutdown drains the channel. Records carry their own ids, so a
//! batch written twice (a retry after an ambiguous failure) never counts twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keygate_store::{RateLimitEventRow, Store, UsageRow};
use tokio::sync::{mpsc, oneshot};

enum Msg {
    Row(Box<UsageRow>),
    Event(Box<RateLimitEventRow>),
    Flush(oneshot::Sender<()>),
}

/// The sending side, cheap to clone.
#[derive(Clone)]
pub struct Meter {
    tx: mpsc::Sender<Msg>,
    dropped: Arc<AtomicU64>,
}

/// Records that could not be queued because the writer fell too far behind.
impl Meter {
    /// A meter and the writer task to spawn.
    pub fn new(store: Arc<dyn Store>) -> (Meter, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(65_536);
        let dropped = Arc::new(AtomicU64::new(0));
        (
            Meter {
                tx,
                dropped: dropped.clone(),
            },
            run(rx, store),
        )
    }

    /// Queues a record without waiting. Only a writer more than 65,536 records behind (a store
    /// that is down) makes this drop one; the count is kept and logged.
    pub fn record(&self, row: UsageRow) {
        if let Err(e) = self.tx.try_send(Msg::Row(Box::new(row))) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let full = matches!(e, mpsc::error::TrySendError::Full(_));
            tracing::error!(
                dropped_total = n,
                queue_full = full,
                "usage record dropped: the usage writer is behind"
            );
        }
    }

    /// Queues a refusal event (written with the usage batches).
    pub fn record_event(&self, row: RateLimitEventRow) {
        if self.tx.try_send(Msg::Event(Box::new(row))).is_err() {
            tracing::error!("rate-limit event dropped: the usage writer is behind");
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until everything recorded before this call is stored.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        }
    }
}

/// Keeps only the last record of each id: a request's pending record (written before its
/// upstream call, for crash reconciliation) is superseded by its final one when both wait in the
/// same batch, so most requests cost one row write, not two. Order is kept otherwise.
fn coalesce(batch: &mut Vec<UsageRow>) {
    if batch.len() < 2 {
        return;
    }
    let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::with_capacity(batch.len());
    for (i, row) in batch.iter().enumerate() {
        last.insert(row.id.as_str(), i);
    }
    if last.len() == batch.len() {
        return;
    }
    let keep: Vec<bool> = batch
        .iter()
        .enumerate()
        .map(|(i, row)| last.get(row.id.as_str()) == Some(&i))
        .collect();
    let mut i = 0;
    batch.retain(|_| {
        let k = keep[i];
        i += 1;
        k
    });
}

async fn write(store: &dyn Store, batch: &mut Vec<UsageRow>) {
    if batch.is_empty() {
        return;
    }
    coalesce(batch);
    let mut delay = Duration::from_millis(50);
    for attempt in 0..6 {
        match store.insert_usage(batch).await {
            Ok(()) => {
                batch.clear();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, rows = batch.len(), "cannot store usage records; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
    tracing::error!(
        rows = batch.len(),
        "usage records kept in memory after repeated store failures"
    );
    // Keep them for the next round, but bounded.
    if batch.len() > 100_000 {
        let excess = batch.len() - 100_000;
        batch.drain(..excess);
        tracing::error!(
            dropped = excess,
            "usage records dropped: the store has been down too long"
        );
    }
}

async fn write_events(store: &dyn Store, events: &mut Vec<RateLimitEventRow>) {
    if events.is_empty() {
        return;
    }
    if let Err(e) = store.insert_rate_limit_events(events).await {
        tracing::warn!(error = %e, rows = events.len(), "cannot store rate-limit events");
        if events.len() < 10_000 {
            return;
        }
    }
    events.clear();
}

async fn run(mut rx: mpsc::Receiver<Msg>, store: Arc<dyn Store>) {
    let mut batch: Vec<UsageRow> = Vec::with_capacity(512);
    let mut events: Vec<RateLimitEventRow> = Vec::new();
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let first = if batch.is_empty() && waiters.is_empty() && events.is_empty() {
            match rx.recv().await {
                Some(m) => Some(m),
                None => break,
            }
        } else {
            None
        };
        if let Some(m) = first {
            match m {
                Msg::Row(r) => batch.push(*r),
                Msg::Event(e) => events.push(*e),
                Msg::Flush(w) => waiters.push(w),
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        while batch.len() < 500 && waiters.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Msg::Row(r))) => batch.push(*r),
                Ok(Some(Msg::Event(e))) => events.push(*e),
                Ok(Some(Msg::Flush(w))) => waiters.push(w),
                Ok(None) | Err(_) => break,
            }
        }
        write(store.as_ref(), &mut batch).await;
        write_events(store.as_ref(), &mut events).await;
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
        if rx.is_closed() && rx.is_empty() {
            break;
        }
    }
    // Shutdown: store what is left.
    while let Ok(m) = rx.try_recv() {
        match m {
            Msg::Row(r) => batch.push(*r),
            Msg::Event(e) => events.push(*e),
            Msg::Flush(_) => {}
        }
    }
    write(store.as_ref(), &mut batch).await;
    write_events(store.as_ref(), &mut events).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, status: i64) -> UsageRow {
        UsageRow {
            id: id.into(),
            status_code: status,
            ..Default::default()
        }
    }

    #[test]
    fn a_final_record_supersedes_its_pending_one_in_a_batch() {
        let mut batch = vec![row("a", 0), row("b", 0), row("a", 200), row("c", 200), row("b", 502)];
        coalesce(&mut batch);
        let got: Vec<(&str, i64)> = batch.iter().map(|r| (r.id.as_str(), r.status_code)).collect();
        assert_eq!(got, [("a", 200), ("c", 200), ("b", 502)]);
        // A pending record alone (its request still running) is kept.
        let mut batch = vec![row("x", 0), row("y", 200)];
        coalesce(&mut batch);
        assert_eq!(batch.len(), 2);
    }
}
