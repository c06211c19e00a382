//! The durable queue. The only module that speaks SQL.
//!
//! One writer thread owns the read-write connection and group-commits every
//! command waiting at that moment: one transaction, one fsync, then every waiter
//! is answered. Reads for operators go through their own connections.
//!
//! Files: `handle.rs` ([`Spool`]), `writer.rs` (the group-commit thread and
//! the hot SQL), `schema.rs` (settings, migrations), `instances.rs` (who holds
//! leases), `admin.rs` ([`Admin`] for the CLI), `codec.rs` (column encodings),
//! `counts.rs` (items by hook and state), `checkpoint.rs` (WAL checkpoints),
//! `tx.rs` (the immediate transaction every write outside the writer uses).

mod admin;
mod checkpoint;
mod codec;
mod counts;
mod handle;
mod instances;
mod pg;
mod schema;
#[cfg(test)]
mod tests;
mod tx;
mod writer;

pub(crate) use admin::{Admin, ListFilter};
/// The clock lease expiries and retry times are measured with; see
/// [`codec::now`]. Delivery computes its retry times with it.
pub(crate) use codec::now;
pub(crate) use handle::Spool;
pub(crate) use pg::connect::Target as PgTarget;
pub(crate) use pg::import::{copy_file_to as copy_to_postgres, CopyOptions};
pub(crate) use schema::SCHEMA_VERSION;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

/// Called after each group commit with its latency (begin → fsync done) and
/// how many commands it carried. Lets metrics watch the spool without the
/// spool knowing about metrics.
pub(crate) type CommitObserver = Arc<dyn Fn(Duration, usize) + Send + Sync>;

/// Where a spool keeps its items.
#[derive(Clone)]
pub(crate) enum Store {
    /// An SQLite file (created 0600 when missing; its directory must exist).
    File(PathBuf),
    /// A PostgreSQL database shared with other nodes.
    Postgres(pg::PgOptions),
}

impl Store {
    /// The PostgreSQL spool at `target`, as node `node`. A connect takes at
    /// most `connect_timeout`; a group commit at most `commit_limit` before
    /// its outcome is looked up on a new connection.
    pub(crate) fn postgres(
        target: PgTarget,
        node: String,
        connect_timeout: Duration,
        commit_limit: Duration,
    ) -> Store {
        let name = target.name().to_string();
        let app = format!("hookd {node}");
        Store::Postgres(pg::PgOptions {
            connect: Arc::new(target).connector(app),
            name,
            node,
            connect_timeout,
            commit_limit,
        })
    }

    /// What messages call it: the file's path, or the redacted URL.
    pub(crate) fn describe(&self) -> String {
        match self {
            Store::File(path) => path.display().to_string(),
            Store::Postgres(pg) => pg.name.clone(),
        }
    }
}

/// How to open a [`Spool`].
#[derive(Clone)]
pub(crate) struct SpoolOptions {
    pub store: Store,
    /// This process's id in lease_owner; unique per process start.
    pub instance_id: String,
    /// Most commands one group commit takes.
    pub max_batch: usize,
    pub on_commit: Option<CommitObserver>,
}

/// Anything a spool operation can fail with. The texts never name the spool
/// file: the caller that knows the path adds it once, in front.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpoolError {
    /// Written by a newer hookd; migrating down is not possible.
    #[error(
        "schema version {found} is newer than this hookd supports ({SCHEMA_VERSION}); upgrade hookd"
    )]
    SchemaTooNew { found: u32 },
    /// The admin CLI never migrates, so it refuses an older schema.
    #[error(
        "schema version {found} is older than this hookd's ({SCHEMA_VERSION}); \
         start `hookd serve` once to migrate it"
    )]
    SchemaTooOld { found: u32 },
    #[error("not a hookd spool: {0}")]
    NotASpool(NotASpool),
    /// No spool file where the config says (the admin CLI never creates one).
    #[error("no such file (wrong --config, or hookd never ran?)")]
    Missing,
    /// The spool file could not be created (missing directory, permissions).
    #[error("cannot create the file: {0}")]
    Create(std::io::Error),
    /// Durable group commits need WAL mode, which some file systems refuse.
    #[error("cannot switch to WAL mode (journal mode stays {mode})")]
    NoWal { mode: String },
    #[error("no item {0}")]
    NotFound(i64),
    /// Only dead, pending or filtered items can be retried by hand.
    #[error("item {id} is {}: only dead, pending or filtered items can be retried", .state.as_str())]
    WrongState { id: i64, state: ItemState },
    /// A routed request has no dead or pending delivery (to that route).
    #[error("request {id} has no dead or pending delivery{} to retry", .route.as_ref().map(|r| format!(" to route {r:?}")).unwrap_or_default())]
    NoRouteToRetry { id: i64, route: Option<String> },
    /// A filtered request given no route to deliver it to would stay kept
    /// and never be delivered.
    #[error("request {0}: no route given to deliver it to")]
    NoRoutes(i64),
    /// Pending and leased items are undelivered webhooks.
    #[error("refusing to purge {} items: only done or dead", .0.as_str())]
    NotPurgeable(ItemState),
    /// After an error ext4 may remount read-only, and its fsync then reports
    /// success without writing.
    #[error("the file system holding {0} turned read-only; the last commit may not be on disk")]
    ReadOnly(String),
    #[error("spool is closed")]
    Closed,
    /// The group commit carrying this command failed, so nothing of it is
    /// durable; every waiter of the batch shares the one cause.
    #[error("commit failed: {0}")]
    CommitFailed(Arc<SpoolError>),
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// From the PostgreSQL spool: the server's message, or the connection's.
    // tokio-postgres's own text is "db error"; the server's message is
    // in its source.
    #[error("postgres: {}", pg::with_causes(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The PostgreSQL spool could not be reached within its deadline.
    #[error("postgres: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// `hookd spool migrate`: the copy to PostgreSQL refused or stopped.
    #[error("{0}")]
    Import(#[from] pg::import::ImportError),
}

/// Why a file is not a spool this hookd can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NotASpool {
    #[error("not an SQLite database")]
    NotSqlite,
    /// An SQLite database of some other program: migrating it would write
    /// our tables into it.
    #[error("an SQLite database with other tables and no hookd schema")]
    Foreign,
    /// The admin CLI found an empty database (hookd serve would set it up).
    #[error("no hookd schema (start `hookd serve` once to create it)")]
    NoSchema,
    #[error("schema version {0} is not one hookd ever wrote")]
    BadVersion(i64),
    /// The v5 migration found an items table whose SQL is not the one v4 wrote.
    #[error("its items table is not the one hookd's schema v4 made; cannot add state 'routed'")]
    UnexpectedItemsTable,
    /// A PostgreSQL server older than the spool needs.
    #[error("PostgreSQL {0} is too old: the spool needs 15 or later")]
    ServerTooOld(String),
}

impl SpoolError {
    /// A SQLite error met while opening: "file is not a database" becomes
    /// [`NotASpool::NotSqlite`], which says what is wrong with the file.
    pub(crate) fn at_open(e: rusqlite::Error) -> SpoolError {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) => SpoolError::NotASpool(NotASpool::NotSqlite),
            _ => SpoolError::Sqlite(e),
        }
    }
}

/// Where an item is in its life: pending → leased → done | dead (or back to
/// pending on retry or release). `filtered`: no rule matched at the door; it
/// is never delivered, and only `spool retry --filtered` makes it pending.
/// `routed` (schema v5): the request of a hook with `[[hook.route]]`; the
/// row is never claimed, its deliveries (one per matched route, in the
/// `deliveries` table) go through the other states. A delivery row is never
/// `filtered` or `routed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ItemState {
    Pending,
    Leased,
    Done,
    Dead,
    Filtered,
    Routed,
}

impl ItemState {
    /// The name stored in the spool and shown to operators.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ItemState::Pending => "pending",
            ItemState::Leased => "leased",
            ItemState::Done => "done",
            ItemState::Dead => "dead",
            ItemState::Filtered => "filtered",
            ItemState::Routed => "routed",
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
            "filtered" => Ok(ItemState::Filtered),
            "routed" => Ok(ItemState::Routed),
            _ => Err(format!(
                "unknown item state {s:?} (pending, leased, done, dead, filtered, routed)"
            )),
        }
    }
}

/// A webhook accepted by ingress, not yet durable.
#[derive(Debug, Clone)]
pub(crate) struct NewItem {
    pub hook: String,
    /// The dedup key's value, if the hook has one and the request carried it.
    pub dedup_id: Option<String>,
    pub received_at: SystemTime,
    /// Request headers as received (name lower-case), hop-by-hop ones removed.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
    /// How long a repeat of this item is recognised as one.
    pub repeats: Repeats,
    /// `Some(until)`: no rule matched; stored as `filtered`, never delivered,
    /// purged by retention after `until`. `None`: pending, due now.
    pub filtered_until: Option<SystemTime>,
    /// `Some(routes)` (a hook with `[[hook.route]]`, at least one matched):
    /// the request is stored as `routed` and each route gets a delivery row,
    /// all in the one transaction. `None`: the row is the delivery (a plain
    /// hook's route `default`, the v4 layout).
    pub routes: Option<Vec<String>>,
    /// The routes of this request delivered in arrival order (`default` for
    /// a plain `ordered` hook). The PostgreSQL spool numbers their
    /// deliveries in commit order, which its ids are not; SQLite's are.
    pub ordered: Vec<String>,
}

/// How [`Spool::enqueue`] recognises a repeat, in the same transaction as
/// the insert. Both keys live in the item's own row (`dedup_id`,
/// `replay_key`) and leave with it at the retention purge: a window costs
/// one index entry per item and no table of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Repeats {
    /// A repeat of `dedup_id` arriving this long after the hook's latest
    /// item with that id is spooled anew; `None`: as long as that item is kept.
    pub dedup_window: Option<Duration>,
    /// What the request's signature covers, hashed: the same digest again
    /// within its window is a replay.
    pub replay: Option<ReplayKey>,
}

/// A replay-protection key: the SHA-256 of the signed content, and how long
/// after an accepted copy's arrival another copy counts as a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplayKey {
    pub digest: [u8; 32],
    pub window: Duration,
}

/// Outcome of [`Spool::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// Durable now, with this id.
    New(i64),
    /// Same hook and dedup id seen within the window: the first item's id;
    /// nothing written.
    Duplicate(i64),
    /// Same hook and dedup id as a dead item (a provider's redelivery): that
    /// item is pending again with a fresh attempt count, durable now. For a
    /// routed request: its dead deliveries are (the done ones stay done).
    Revived(i64),
    /// The same signed content as an item accepted within the replay
    /// window, under another (or no) dedup id: that item's id; nothing written.
    Replay(i64),
}

/// A stored item as read back from the spool.
#[derive(Debug, Clone)]
pub(crate) struct Item {
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
    /// Set by the claim; names the lease (see [`Lease`]).
    pub lease_expiry: Option<SystemTime>,
    /// PostgreSQL: the claim's lease generation, which fences its finish
    /// (see [`Lease`]). `None` on SQLite, where the expiry does that.
    pub lease_gen: Option<i64>,
    /// The route this delivery is for, with its delivery row's id; `None`:
    /// the items row is the delivery (route `default` of a plain hook). The
    /// state, attempts, next attempt, error and lease above are then the
    /// delivery row's, the rest the request's.
    pub delivery: Option<RouteDelivery>,
}

/// A routed request's delivery to one route (a `deliveries` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteDelivery {
    pub row: i64,
    pub route: String,
}

/// The route name of a delivery that has no route of its own: a plain
/// hook's action, and items of a hook from before it had routes.
pub(crate) const DEFAULT_ROUTE: &str = "default";

impl Item {
    /// The route this delivery is for.
    pub(crate) fn route(&self) -> &str {
        self.delivery
            .as_ref()
            .map_or(DEFAULT_ROUTE, |d| d.route.as_str())
    }
}

/// Which table a lease is in: an items row (plain layout) or a deliveries
/// row; a lease of one never ends a row of the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseTable {
    Items,
    Deliveries,
}

/// One lease of one item: the item and the expiry its claim set. Every
/// claim of an item sets a later expiry than the lease before it had (it
/// may only take a lease that ran out), so this tells two leases of one item
/// held by one instance apart: an attempt that outlived its lease (a paused
/// process) and whose item was claimed again cannot end the newer lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    /// The row's id in `table` (for a deliveries row, not the request's id).
    pub id: i64,
    pub table: LeaseTable,
    /// `None`: whichever lease of the item this instance holds.
    expiry_ms: Option<i64>,
    /// PostgreSQL: the generation the claim gave the row; a finish changes
    /// the row only while it still has it. Expiries come from the
    /// database's clock there and would serve too, but a generation cannot
    /// repeat even when two claims fall in one millisecond.
    gen: Option<i64>,
}

impl Lease {
    pub(crate) fn expiry_ms(&self) -> Option<i64> {
        self.expiry_ms
    }

    pub(crate) fn gen(&self) -> Option<i64> {
        self.gen
    }
}

impl Item {
    /// The lease this claimed item is under.
    pub(crate) fn lease(&self) -> Lease {
        let (id, table) = match &self.delivery {
            None => (self.id, LeaseTable::Items),
            Some(d) => (d.row, LeaseTable::Deliveries),
        };
        Lease {
            id,
            table,
            expiry_ms: self.lease_expiry.map(codec::to_ms),
            gen: self.lease_gen,
        }
    }
}

/// By id alone, for tests and the spool model: whichever lease this
/// instance holds on the item. Deliveries always name their own lease.
#[cfg(any(test, fuzzing))]
impl From<i64> for Lease {
    fn from(id: i64) -> Lease {
        Lease {
            id,
            table: LeaseTable::Items,
            expiry_ms: None,
            gen: None,
        }
    }
}

/// What [`Spool::claim`] should lease.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRequest {
    pub hook: String,
    /// `None`: the hook's items rows (a plain hook). `Some(route)`: that
    /// route's delivery rows.
    pub route: Option<String>,
    /// Most items to claim.
    pub max: usize,
    /// Arrival order: claim only the hook's oldest unfinished item, and only
    /// when no item of the hook is under a live lease.
    pub ordered: bool,
    /// Lease length; an expired lease makes the item claimable again.
    pub lease: Duration,
}

/// Count of items in one (hook, route, state).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct DepthRow {
    pub hook: String,
    /// `None`: items rows (a plain hook's deliveries, and filtered
    /// requests of any hook), shown as route `default`.
    pub route: Option<String>,
    pub state: ItemState,
    pub count: u64,
}
