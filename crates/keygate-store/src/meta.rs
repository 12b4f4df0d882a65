//! What a store is, apart from its records: which database it runs on, its revision, closing.
//!
//! What must stay true: the revision only grows, and every change of a record bumps it in the
//! change's own transaction (so a cache that saw revision `r` misses nothing by reading what
//! changed after `r`).

use async_trait::async_trait;

use crate::Result;

/// Which database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The store itself: its backend, its revision, closing it.
#[async_trait]
pub trait StoreMeta: Send + Sync {
    fn backend(&self) -> Backend;

    /// The store revision: bumped by every change.
    async fn revision(&self) -> Result<i64>;

    async fn close(&self);
}
