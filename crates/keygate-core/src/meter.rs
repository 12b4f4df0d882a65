//! Metering: usage records leave the hot path through a bounded channel and are written to
//! the store in batches: the first record of a batch wakes the writer, which then gathers for
//! 100 ms (or until `BATCH` records wait, or a flush) and writes what is queued, so the records
//! after the first wake nobody (a wake-up per record cost a context switch per request when the
//! writer's runtime is not the serving thread's). `flush` waits until what was recorded before it
//! is stored; shutdown drains the channel. Records carry their own ids, so a batch written twice
//! (a retry after an ambiguous failure) never counts twice.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keygate_store::{RateLimitEventRow, Store, UsageRow};
use tokio::sync::{mpsc, oneshot, Notify};

/// Records the channel holds before a record is dropped (a store that is down).
const QUEUE: usize = 65_536;
/// Most records written per batch; this many waiting wake the writer before its 100 ms are over.
const BATCH: usize = 512;
/// How long the writer gathers after a batch's first record.
const GATHER: Duration = Duration::from_millis(100);

enum Msg {
    Row(Box<UsageRow>),
    Event(Box<RateLimitEventRow>),
    Flush(oneshot::Sender<()>),
}

/// The sending side, cheap to clone.
#[derive(Clone)]
pub struct Meter {
    tx: mpsc::Sender<Msg>,
    /// Cuts the writer's gathering short: a flush, or a full batch waiting.
    wake: Arc<Notify>,
    /// Flushes queued and not yet taken by the writer: it does not gather while there are any.
    flushes: Arc<AtomicUsize>,
    /// Whether the writer takes each record as it comes (see [`Meter::take_records_as_they_come`]).
    eager: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

/// Records that could not be queued because the writer fell too far behind.
impl Meter {
    /// A meter and the writer task to spawn.
    pub fn new(store: Arc<dyn Store>) -> (Meter, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let wake = Arc::new(Notify::new());
        let flushes = Arc::new(AtomicUsize::new(0));
        let eager = Arc::new(AtomicBool::new(false));
        (
            Meter {
                tx,
                wake: wake.clone(),
                flushes: flushes.clone(),
                eager: eager.clone(),
                dropped: Arc::new(AtomicU64::new(0)),
            },
            run(rx, store, wake, flushes, eager),
        )
    }

    /// With `true`, the writer wakes for every record and takes it at once (until 100 ms or
    /// `BATCH` records): the better choice when it runs on the one thread that serves requests,
    /// where such a wake-up is a task switch on that thread (3% more requests per second on one
    /// core, paired, docs/benchmarks.md). With `false` (the default), records wake nobody until a
    /// batch is due: with several serving threads each wake-up would be a cross-thread one.
    pub fn take_records_as_they_come(&self, eager: bool) {
        self.eager.store(eager, Ordering::Relaxed);
    }

    /// After a message is queued: a full batch waiting ends the writer's gathering early.
    fn queued(&self) {
        if QUEUE - self.tx.capacity() >= BATCH {
            self.wake.notify_one();
        }
    }

    /// Queues a record without waiting. Only a writer more than 65,536 records behind (a store
    /// that is down) makes this drop one; the count is kept and logged.
    pub fn record(&self, row: UsageRow) {
        match self.tx.try_send(Msg::Row(Box::new(row))) {
            Ok(()) => self.queued(),
            Err(e) => self.dropped_one(e),
        }
    }

    fn dropped_one(&self, e: mpsc::error::TrySendError<Msg>) {
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let full = matches!(e, mpsc::error::TrySendError::Full(_));
        tracing::error!(
            dropped_total = n,
            queue_full = full,
            "usage record dropped: the usage writer is behind"
        );
    }

    /// Queues a refusal event (written with the usage batches).
    pub fn record_event(&self, row: RateLimitEventRow) {
        match self.tx.try_send(Msg::Event(Box::new(row))) {
            Ok(()) => self.queued(),
            Err(_) => tracing::error!("rate-limit event dropped: the usage writer is behind"),
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until everything recorded before this call is stored.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        self.flushes.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            self.wake.notify_one();
            let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        } else {
            self.flushes.fetch_sub(1, Ordering::AcqRel);
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
    let mut last: std::collections::HashMap<&str, usize, foldhash::fast::RandomState> =
        std::collections::HashMap::with_capacity_and_hasher(batch.len(), Default::default());
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

/// What the writer has taken from the channel and not yet written.
#[derive(Default)]
struct Taken {
    batch: Vec<UsageRow>,
    events: Vec<RateLimitEventRow>,
    waiters: Vec<oneshot::Sender<()>>,
}

impl Taken {
    fn take(&mut self, m: Msg, flushes: &AtomicUsize) {
        match m {
            Msg::Row(r) => self.batch.push(*r),
            Msg::Event(e) => self.events.push(*e),
            Msg::Flush(w) => {
                flushes.fetch_sub(1, Ordering::AcqRel);
                self.waiters.push(w);
            }
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<Msg>,
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
    flushes: Arc<AtomicUsize>,
    eager: Arc<AtomicBool>,
) {
    let mut t = Taken {
        batch: Vec::with_capacity(BATCH),
        ..Taken::default()
    };
    loop {
        if t.batch.is_empty() {
            if rx.is_empty() {
                // Idle: the next record (or flush) starts a batch.
                match rx.recv().await {
                    Some(m) => t.take(m, &flushes),
                    None => break,
                }
            }
            let deadline = tokio::time::Instant::now() + GATHER;
            if eager.load(Ordering::Relaxed) {
                // Take each record as it comes until the time is over, a flush comes or the
                // batch is full.
                while t.batch.len() < BATCH && t.waiters.is_empty() {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(m)) => t.take(m, &flushes),
                        Ok(None) | Err(_) => break,
                    }
                }
            } else {
                // Gather: records queue without waking this task until the time is over, a
                // flush comes or a full batch waits (the senders notify then; a notification
                // left over from an earlier batch does not end it, or batches would shrink).
                while rx.len() < BATCH && flushes.load(Ordering::Acquire) == 0 && t.waiters.is_empty() {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => break,
                        _ = wake.notified() => {}
                    }
                }
            }
        }
        while t.batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => t.take(m, &flushes),
                Err(_) => break,
            }
        }
        write(store.as_ref(), &mut t.batch).await;
        write_events(store.as_ref(), &mut t.events).await;
        for w in t.waiters.drain(..) {
            let _ = w.send(());
        }
        if rx.is_closed() && rx.is_empty() {
            break;
        }
    }
    // Shutdown: store what is left.
    while let Ok(m) = rx.try_recv() {
        t.take(m, &flushes);
    }
    write(store.as_ref(), &mut t.batch).await;
    write_events(store.as_ref(), &mut t.events).await;
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

    async fn stored(store: &dyn Store) -> i64 {
        let page = keygate_store::Page { page: 1, limit: 10 };
        store
            .list_usage("default", &keygate_store::UsageFilter::default(), page)
            .await
            .unwrap()
            .1
    }

    fn usage(id: &str) -> UsageRow {
        UsageRow {
            workspace: "default".into(),
            endpoint: "chat".into(),
            status_code: 200,
            ..row(id, 200)
        }
    }

    #[tokio::test]
    async fn records_are_gathered_then_written_and_a_flush_stores_what_came_before_it() {
        records_are_written_and_flushed(false).await;
    }

    #[tokio::test]
    async fn records_taken_as_they_come_are_written_and_flushed_alike() {
        records_are_written_and_flushed(true).await;
    }

    async fn records_are_written_and_flushed(eager: bool) {
        let dir = tempfile::tempdir().unwrap();
        let store = keygate_store::open(&format!("sqlite://{}", dir.path().join("m.db").display()))
            .await
            .unwrap();
        let (meter, writer) = Meter::new(store.clone());
        meter.take_records_as_they_come(eager);
        let writer = tokio::spawn(writer);
        // Without a flush: written once the gathering time is over.
        meter.record(usage("a"));
        meter.record(usage("b"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while stored(store.as_ref()).await < 2 {
            assert!(std::time::Instant::now() < deadline, "records were never written");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A flush in the middle of a gathering: what came before it is stored when it returns.
        meter.record(usage("c"));
        meter.flush().await;
        assert_eq!(stored(store.as_ref()).await, 3);
        // More than a batch at once: all stored by the flush that follows them.
        for i in 0..BATCH + 10 {
            meter.record(usage(&format!("bulk-{i}")));
        }
        meter.flush().await;
        assert_eq!(stored(store.as_ref()).await, 3 + BATCH as i64 + 10);
        assert_eq!(meter.dropped(), 0);
        writer.abort();
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
