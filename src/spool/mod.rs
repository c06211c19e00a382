//! The durable queue. The only module that speaks SQL.
//!
//! One writer thread owns the read-write connection and group-commits every
//! command waiting at that moment: one transaction, one fsync, then every waiter
//! is answered. Reads for operators go through their own connections.
//!
//! Files: `handle.rs` ([`Spool`]), `writer.rs` (the group-commit thread and
//! the hot SQL), `schema.rs` (settings, migrations), `instances.rs` (who holds
//! leases), `admin.rs` ([`Admin`] for the CLI), `codec.rs` (column encodings),
//! `counts.rs` (items by hook and state), `checkpoint.rs` (WAL checkpoints).

mod admin;
mod checkpoint;
mod codec;
mod counts;
mod handle;
mod instances;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

pub use admin::{Admin, InstanceInfo, ItemSummary, ListFilter, Stats};
pub use handle::Spool;
pub use schema::SCHEMA_VERSION;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

/// Called after each group commit with its latency (begin → fsync done) and
/// how many commands it carried. Lets metrics watch the spool without the
/// spool knowing about metrics.
pub type CommitObserver = Arc<dyn Fn(Duration, usize) + Send + Sync>;

/// How to open a [`Spool`].
#[derive(Clone)]
pub struct SpoolOptions {
    /// The spool file (created 0600 when missing; its directory must exist).
    pub path: PathBuf,
    /// This process's id in lease_owner; unique per process start.
    pub instance_id: String,
    /// Most commands one group commit takes.
    pub max_batch: usize,
    pub on_commit: Option<CommitObserver>,
}

/// Anything a spool operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("spool: {0}")]
    Io(#[from] std::io::Error),
    #[error("spool is closed")]
    Closed,
    #[error("spool: no item {0}")]
    NotFound(i64),
    #[error("spool: {0}")]
    Other(String),
}

/// Where an item is in its life: pending → leased → done | dead (or back to
/// pending on retry or release).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemState {
    Pending,
    Leased,
    Done,
    Dead,
}

impl ItemState {
    /// The name stored in the spool and shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Pending => "pending",
            ItemState::Leased => "leased",
            ItemState::Done => "done",
            ItemState::Dead => "dead",
        }
    }
}

impl std::str::FromStr for ItemState {
    type Err = String;

    /// Parses the names [`ItemState::as_str`] gives (for CLI filters).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(ItemState::Pending),
            "leased" => Ok(ItemState::Leased),
            "done" => Ok(ItemState::Done),
            "dead" => Ok(ItemState::Dead),
            _ => Err(format!(
                "unknown item state {s:?} (pending, leased, done, dead)"
            )),
        }
    }
}

/// A webhook accepted by ingress, not yet durable.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub hook: String,
    /// The dedup header's value, if the hook has one and the request carried it.
    pub dedup_id: Option<String>,
    pub received_at: SystemTime,
    /// Request headers as received (name lower-case), hop-by-hop ones removed.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
}

/// Outcome of [`Spool::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Durable now, with this id.
    New(i64),
    /// Same hook and dedup id seen before: the first item's id; nothing written.
    Duplicate(i64),
}

/// A stored item as read back from the spool.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: i64,
    pub hook: String,
    pub dedup_id: Option<String>,
    pub received_at: SystemTime,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
    pub state: ItemState,
    /// Attempts made before this claim (a claim does not count one).
    pub attempts: u32,
    pub next_attempt: SystemTime,
    pub last_error: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expiry: Option<SystemTime>,
}

/// What [`Spool::claim`] should lease.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub hook: String,
    /// Most items to claim.
    pub max: usize,
    /// Arrival order: claim only the hook's oldest unfinished item, and only
    /// when no item of the hook is under a live lease.
    pub ordered: bool,
    /// Lease length; an expired lease makes the item claimable again.
    pub lease: Duration,
}

/// Count of items in one (hook, state).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DepthRow {
    pub hook: String,
    pub state: ItemState,
    pub count: u64,
}
