//! The spool on PostgreSQL, shared by several hookd nodes: the backend
//! [`Spool`](super::Spool) and [`Admin`](super::Admin) use when the config
//! gives `[spool] url`. Same promises as the SQLite spool (durable before
//! 202, at-least-once, `ordered` in order), across nodes: claims lock due
//! rows `FOR UPDATE SKIP LOCKED`, every lease carries a generation that
//! fences its finish, lease expiry is the database's clock, depth is
//! counted per node. bench/pg/DESIGN.md has the reasoning and the figures.
//!
//! Files: `schema.sql` + `schema.rs` (layout, migrations under an advisory
//! lock), `writer.rs` (the node's group-commit writer: one connection, one
//! pipelined transaction per batch), `sql.rs` (its statements), `admin.rs`
//! (the admin CLI's side), `import.rs` (`hookd spool migrate`: an SQLite
//! spool copied into an empty PostgreSQL one).

pub(crate) mod admin;
pub(crate) mod connect;
pub(crate) mod import;
pub(crate) mod schema;
mod sql;

/// The `depth_counts` route of filtered requests (they have no delivery).
pub(crate) const FILTERED_ROUTE: &str = "";
pub(crate) mod writer;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::SpoolError;

/// Opens one new connection to the database within the given time (the
/// whole connect: TCP, TLS, login). The writer calls it again after a
/// connection is lost.
pub(crate) type Connector = Arc<
    dyn Fn(Duration) -> BoxFuture<'static, Result<tokio_postgres::Client, SpoolError>>
        + Send
        + Sync,
>;

/// How to reach the PostgreSQL spool.
#[derive(Clone)]
pub(crate) struct PgOptions {
    pub connect: Connector,
    /// What messages call the database: its URL without the password.
    pub name: String,
    /// This node's name: its depth rows and `hookd status` carry it, and a
    /// process starting on it frees the leases of its dead predecessors
    /// there (their pids mean something only on this host).
    pub node: String,
    /// How long a connect may take before the batch waiting on it fails.
    pub connect_timeout: Duration,
    /// Longest a group commit may take end to end (a blackholed server must
    /// not hold every waiter): then the connection is dropped and the
    /// outcome found out on a new one.
    pub commit_limit: Duration,
}

/// An error and what caused it: tokio-postgres says "error performing TLS
/// handshake" and keeps the why (rustls's "invalid peer certificate:
/// UnknownIssuer") in its source.
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}
