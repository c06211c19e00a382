//! Operator access for `hookd spool ls|show|retry|purge|stats` and
//! `hookd explain`.
//!
//! [`Admin`] is one front over both backends: the SQLite file (below) and
//! the PostgreSQL spool (`pg/admin.rs`); the CLI does not learn which one
//! it has. Each uses its own connection, so it works whether or not a
//! daemon runs; on SQLite the daemon's writer and this one take turns on
//! the write lock (busy timeout), on PostgreSQL they lock rows.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OpenFlags, OptionalExtension};
use serde::Serialize;

use super::codec::{from_ms, item_from_row, ms_ago, now_ms, ITEM_COLUMNS};
use super::counts;
use super::instances::is_alive;
use super::pg::admin::PgAdmin;
use super::tx;
use super::writer::{depth, purge_chunk, purge_deliveries_chunk, PURGE_CHUNK};
use super::{schema, DepthRow, Item, ItemState, SpoolError, DEFAULT_ROUTE};

/// Which items [`Admin::ls`] lists. All `None` = every item.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ListFilter<'a> {
    pub state: Option<ItemState>,
    pub hook: Option<&'a str>,
    /// Only deliveries to this route (`default`: a plain hook's).
    pub route: Option<&'a str>,
    /// Only deliveries whose (hook, route) is not in this list (the
    /// configured ones): left behind by a hook or route that was removed or
    /// renamed, or by a hook's plain action once it has routes and none
    /// named `default`. A filtered request is orphaned only with its hook.
    pub orphaned: Option<&'a [(String, String)]>,
    /// Most rows returned; `None` = no limit.
    pub limit: Option<usize>,
}

/// An item without headers and body, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ItemSummary {
    pub id: i64,
    pub hook: String,
    /// `None` for a filtered request (no route matched).
    pub route: Option<String>,
    pub dedup_id: Option<String>,
    pub state: ItemState,
    pub attempts: u32,
    #[serde(serialize_with = "rfc3339::one")]
    pub received_at: SystemTime,
    #[serde(serialize_with = "rfc3339::one")]
    pub next_attempt: SystemTime,
    pub last_error: Option<String>,
    pub lease_owner: Option<String>,
    #[serde(serialize_with = "rfc3339::maybe")]
    pub lease_expiry: Option<SystemTime>,
    pub body_bytes: u64,
}

/// A hookd process registered in the spool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct InstanceInfo {
    pub id: String,
    /// The node it runs on (PostgreSQL; an SQLite spool has one host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub pid: i64,
    #[serde(serialize_with = "rfc3339::one")]
    pub started_at: SystemTime,
    /// Since its last heartbeat, by the database's clock (PostgreSQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_age_ms: Option<u64>,
    /// SQLite: its process still runs (same pid and start time).
    /// PostgreSQL: its heartbeat is at most 30 s old (a node elsewhere
    /// cannot be asked); `false` is a stale row, whose leases expire.
    pub alive: bool,
}

/// Overview for `hookd spool stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Stats {
    pub schema_version: u32,
    /// Size of the main file, in bytes (PostgreSQL: of the spool's tables
    /// with their indexes and TOAST).
    pub file_bytes: u64,
    /// Size of the write-ahead log (SQLite only: PostgreSQL's is the
    /// server's, shared by every database on it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_bytes: Option<u64>,
    /// Item counts by hook and state.
    pub depth: Vec<DepthRow>,
    /// Age of the oldest item not yet done or dead (pending or leased).
    pub oldest_pending_age_ms: Option<u64>,
    pub instances: Vec<InstanceInfo>,
}

/// A connection to an existing spool for operator commands, on either
/// backend. Never creates a spool and never migrates one.
pub(crate) struct Admin {
    backend: Backend,
    /// What the CLI calls the spool in messages.
    name: String,
}

enum Backend {
    Sqlite(SqliteAdmin),
    Postgres(PgAdmin),
}

impl Admin {
    /// Opens an existing spool file; an older or newer schema is an error
    /// saying so.
    pub(crate) fn open(path: impl AsRef<Path>) -> Result<Admin, SpoolError> {
        let admin = SqliteAdmin::open(path)?;
        Ok(Admin {
            name: admin.path.display().to_string(),
            backend: Backend::Sqlite(admin),
        })
    }

    /// The PostgreSQL spool behind `client`, whose connection task runs on
    /// `runtime` (make it with [`pg::admin::runtime`](super::pg::admin::runtime),
    /// connect with `runtime.block_on`, `runtime.spawn` the connection).
    /// `name` is what messages call the spool: a URL without its password.
    /// The schema must be there and one this hookd can use. The `Admin`
    /// then blocks on `runtime` for each call, so it must not be used from
    /// inside another tokio runtime.
    pub(crate) fn open_postgres(
        runtime: tokio::runtime::Runtime,
        client: tokio_postgres::Client,
        name: impl Into<String>,
    ) -> Result<Admin, SpoolError> {
        Ok(Admin {
            backend: Backend::Postgres(PgAdmin::open(runtime, client)?),
            name: name.into(),
        })
    }

    /// Connects to the PostgreSQL spool at `target` (within `limit`) and
    /// opens it as [`Admin::open_postgres`] does.
    pub(crate) fn connect_postgres(
        target: &super::PgTarget,
        limit: std::time::Duration,
    ) -> Result<Admin, SpoolError> {
        let rt = super::pg::admin::runtime()?;
        let client = rt.block_on(target.connect(limit, "hookd admin"))?;
        Admin::open_postgres(rt, client, target.name())
    }

    /// Deliveries matching `filter`, oldest request first: a plain hook's
    /// (route `default`), filtered requests (no route) and each route's
    /// delivery of a routed request (the request's id, the delivery's state).
    pub(crate) fn ls(&self, filter: &ListFilter<'_>) -> Result<Vec<ItemSummary>, SpoolError> {
        match &self.backend {
            Backend::Sqlite(a) => a.ls(filter),
            Backend::Postgres(a) => a.ls(filter),
        }
    }

    /// One item (request) with headers and body: a plain hook's with its
    /// delivery's state, a routed request as `routed`.
    pub(crate) fn show(&self, id: i64) -> Result<Item, SpoolError> {
        match &self.backend {
            Backend::Sqlite(a) => a.show(id),
            Backend::Postgres(a) => a.show(id),
        }
    }

    /// The deliveries of request `id`, as [`Admin::ls`] lists them.
    pub(crate) fn deliveries(&self, id: i64) -> Result<Vec<ItemSummary>, SpoolError> {
        match &self.backend {
            Backend::Sqlite(a) => a.deliveries(id),
            Backend::Postgres(a) => a.deliveries(id),
        }
    }

    /// Makes a dead, pending or filtered item pending and due now, attempts
    /// reset to 0; leased and done are refused. For a routed request: its
    /// dead or pending deliveries (to `route` only, if given); none such is
    /// refused.
    pub(crate) fn retry(&self, id: i64, route: Option<&str>) -> Result<(), SpoolError> {
        match &self.backend {
            Backend::Sqlite(a) => a.retry(id, route),
            Backend::Postgres(a) => a.retry(id, route),
        }
    }

    /// [`Admin::retry`] for every dead delivery (of `hook` and `route`, if
    /// given); returns how many.
    pub(crate) fn retry_dead(
        &self,
        hook: Option<&str>,
        route: Option<&str>,
    ) -> Result<u64, SpoolError> {
        match &self.backend {
            Backend::Sqlite(a) => a.retry_dead(hook, route),
            Backend::Postgres(a) => a.retry_dead(hook, route),
        }
    }

    /// The filtered requests of `hook`, oldest first, for
    /// [`Admin::route_filtered`].
    pub(crate) fn filtered(&self, hook: &str) -> Result<Vec<Item>, SpoolError> {
        match &self.backend {
            Backend::Sqlite(a) => a.filtered(hook),
            Backend::Postgres(a) => a.filtered(hook),
        }
    }

    /// Filtered request `id` gets a pending delivery to each of `routes`,
    /// due now, in one transaction; refused unless it is still filtered,
    /// and without routes (it would be kept and never delivered).
    pub(crate) fn route_filtered(&self, id: i64, routes: &[String]) -> Result<(), SpoolError> {
        if routes.is_empty() {
            return Err(SpoolError::NoRoutes(id));
        }
        match &self.backend {
            Backend::Sqlite(a) => a.route_filtered(id, routes),
            Backend::Postgres(a) => a.route_filtered(id, routes),
        }
    }

    /// Makes every filtered item of `hook` pending and due now; returns how
    /// many.
    pub(crate) fn retry_filtered(&self, hook: &str) -> Result<u64, SpoolError> {
        match &self.backend {
            Backend::Sqlite(a) => a.retry_filtered(hook),
            Backend::Postgres(a) => a.retry_filtered(hook),
        }
    }

    /// Deletes done or dead deliveries (last changed more than `older_than`
    /// ago, if given); returns how many. Other states are refused.
    pub(crate) fn purge(
        &self,
        state: ItemState,
        older_than: Option<Duration>,
    ) -> Result<u64, SpoolError> {
        match &self.backend {
            Backend::Sqlite(a) => a.purge(state, older_than),
            Backend::Postgres(a) => a.purge(state, older_than),
        }
    }

    /// Depth, oldest unfinished item, size, registered instances.
    pub(crate) fn stats(&self) -> Result<Stats, SpoolError> {
        match &self.backend {
            Backend::Sqlite(a) => a.stats(),
            Backend::Postgres(a) => a.stats(),
        }
    }

    /// The spool as messages name it: the file's path, or the URL the
    /// caller gave (without its password).
    pub(crate) fn describe(&self) -> &str {
        &self.name
    }
}

/// The SQLite side: a connection to an existing spool file.
struct SqliteAdmin {
    conn: Connection,
    path: PathBuf,
}

impl SqliteAdmin {
    fn open(path: impl AsRef<Path>) -> Result<SqliteAdmin, SpoolError> {
        let path = path.as_ref().to_path_buf();
        if !path.is_file() {
            return Err(SpoolError::Missing);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(SpoolError::at_open)?;
        conn.busy_timeout(schema::BUSY_TIMEOUT)?;
        schema::check_current(&conn)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(SqliteAdmin { conn, path })
    }

    /// Deliveries matching `filter`, oldest request first: a plain hook's
    /// items rows (route `default`), filtered requests (no route) and each
    /// route's delivery of a routed request (the request's id, the
    /// delivery's state).
    fn ls(&self, filter: &ListFilter<'_>) -> Result<Vec<ItemSummary>, SpoolError> {
        let mut sql = String::from(
            "SELECT * FROM (\
             SELECT id, hook, CASE state WHEN 'filtered' THEN NULL ELSE 'default' END AS route, \
             dedup_id, state, attempts, received_at, next_attempt, \
             last_error, lease_owner, lease_expiry, length(body) AS bytes \
             FROM items WHERE state <> 'routed' \
             UNION ALL SELECT i.id, d.hook, d.route, i.dedup_id, d.state, d.attempts, \
             i.received_at, d.next_attempt, d.last_error, d.lease_owner, d.lease_expiry, \
             length(i.body) FROM deliveries d JOIN items i ON i.id = d.item) WHERE 1",
        );
        let mut args: Vec<Value> = Vec::new();
        if let Some(state) = filter.state {
            sql.push_str(" AND state = ?");
            args.push(Value::Text(state.as_str().into()));
        }
        if let Some(hook) = filter.hook {
            sql.push_str(" AND hook = ?");
            args.push(Value::Text(hook.into()));
        }
        if let Some(route) = filter.route {
            sql.push_str(" AND route = ?");
            args.push(Value::Text(route.into()));
        }
        if let Some(known) = filter.orphaned {
            if !known.is_empty() {
                let marks = vec!["?"; known.len()].join(", ");
                let hooks: Vec<&String> = known.iter().map(|(h, _)| h).collect();
                sql.push_str(&format!(
                    " AND (hook NOT IN ({marks}) OR (route IS NOT NULL \
                     AND hook || char(31) || route NOT IN ({marks})))"
                ));
                args.extend(hooks.iter().map(|h| Value::Text((*h).clone())));
                args.extend(
                    known
                        .iter()
                        .map(|(h, r)| Value::Text(format!("{h}\u{1f}{r}"))),
                );
            }
        }
        sql.push_str(" ORDER BY id, route LIMIT ?");
        let limit = filter.limit.map_or(-1, |l| i64::try_from(l).unwrap_or(-1));
        args.push(Value::Integer(limit));
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(args), |r| {
            Ok(ItemSummary {
                id: r.get(0)?,
                hook: r.get(1)?,
                route: r.get(2)?,
                dedup_id: r.get(3)?,
                state: r.get(4)?,
                attempts: u32::try_from(r.get::<_, i64>(5)?).unwrap_or(u32::MAX),
                received_at: from_ms(r.get(6)?),
                next_attempt: from_ms(r.get(7)?),
                last_error: r.get(8)?,
                lease_owner: r.get(9)?,
                lease_expiry: r.get::<_, Option<i64>>(10)?.map(from_ms),
                body_bytes: u64::try_from(r.get::<_, i64>(11)?).unwrap_or(0),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One item with headers and body.
    fn show(&self, id: i64) -> Result<Item, SpoolError> {
        let sql = format!("SELECT {ITEM_COLUMNS} FROM items WHERE id = ?1");
        self.conn
            .query_row(&sql, [id], item_from_row)
            .optional()?
            .ok_or(SpoolError::NotFound(id))
    }

    /// Each route's delivery of a routed request (none for other items).
    fn deliveries(&self, id: i64) -> Result<Vec<ItemSummary>, SpoolError> {
        let filter = ListFilter::default();
        Ok(self
            .ls(&filter)?
            .into_iter()
            .filter(|d| d.id == id && d.state != ItemState::Routed)
            .collect())
    }

    /// Makes a dead, pending or filtered item pending and due now, attempts
    /// reset to 0. Leased and done items are refused (a worker has it, or it is
    /// delivered). A running daemon sees it on its next claim. For a routed
    /// request: its dead or pending deliveries (to `route` only, if given);
    /// none such is refused.
    fn retry(&self, id: i64, route: Option<&str>) -> Result<(), SpoolError> {
        tx::immediate(&self.conn, |counts| {
            let state: Option<ItemState> = self
                .conn
                .query_row("SELECT state FROM items WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            if state == Some(ItemState::Routed) {
                let n = counts::run_counted_routes(
                    &self.conn,
                    "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt = ?2, \
                     updated_at = ?2 WHERE item = ?1 AND state = 'dead' \
                     AND (?3 IS NULL OR route = ?3) RETURNING hook, route",
                    params![id, now_ms(), route],
                    (ItemState::Dead, Some(ItemState::Pending)),
                    counts,
                )?;
                let m = self.conn.execute(
                    "UPDATE deliveries SET attempts = 0, next_attempt = ?2, updated_at = ?2 \
                     WHERE item = ?1 AND state = 'pending' AND (?3 IS NULL OR route = ?3)",
                    params![id, now_ms(), route],
                )?;
                if n + m as u64 == 0 {
                    return Err(SpoolError::NoRouteToRetry {
                        id,
                        route: route.map(str::to_owned),
                    });
                }
                return Ok(());
            }
            if route.is_some_and(|r| r != DEFAULT_ROUTE) {
                return Err(SpoolError::NoRouteToRetry {
                    id,
                    route: route.map(str::to_owned),
                });
            }
            let found: Option<(String, ItemState)> = self
                .conn
                .query_row("SELECT hook, state FROM items WHERE id = ?1", [id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let Some((hook, state)) = found else {
                return Err(SpoolError::NotFound(id));
            };
            if !matches!(
                state,
                ItemState::Dead | ItemState::Pending | ItemState::Filtered
            ) {
                return Err(SpoolError::WrongState { id, state });
            }
            let now = now_ms();
            self.conn.execute(
                "UPDATE items SET state = 'pending', attempts = 0, next_attempt = ?2, \
                 updated_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            counts.moved(&hook, state, ItemState::Pending, 1);
            Ok(())
        })
    }

    /// [`Admin::retry`] for every dead delivery (of `hook` and `route`, if
    /// given; route `default` includes a plain hook's items); returns how many.
    fn retry_dead(&self, hook: Option<&str>, route: Option<&str>) -> Result<u64, SpoolError> {
        tx::immediate(&self.conn, |counts| {
            let moved = (ItemState::Dead, Some(ItemState::Pending));
            let mut n = 0;
            if route.is_none_or(|r| r == DEFAULT_ROUTE) {
                n += counts::run_counted(
                    &self.conn,
                    "UPDATE items SET state = 'pending', attempts = 0, next_attempt = ?1, \
                     updated_at = ?1 WHERE state = 'dead' AND (?2 IS NULL OR hook = ?2) \
                     RETURNING hook",
                    params![now_ms(), hook],
                    moved,
                    counts,
                )?;
            }
            n += counts::run_counted_routes(
                &self.conn,
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt = ?1, \
                 updated_at = ?1 WHERE state = 'dead' AND (?2 IS NULL OR hook = ?2) \
                 AND (?3 IS NULL OR route = ?3) RETURNING hook, route",
                params![now_ms(), hook, route],
                moved,
                counts,
            )?;
            Ok(n)
        })
    }

    /// The filtered requests of `hook`, oldest first, for a hook with
    /// routes: the caller checks each route's `when` against each and calls
    /// [`Admin::route_filtered`].
    fn filtered(&self, hook: &str) -> Result<Vec<Item>, SpoolError> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM items WHERE hook = ?1 AND state = 'filtered' ORDER BY id"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([hook], item_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Turns filtered request `id` into a routed one with a pending
    /// delivery to each of `routes` (non-empty), due now; one transaction.
    /// Refused unless it is still filtered.
    fn route_filtered(&self, id: i64, routes: &[String]) -> Result<(), SpoolError> {
        tx::immediate(&self.conn, |counts| {
            let now = now_ms();
            let hook: Option<String> = self
                .conn
                .query_row(
                    "UPDATE items SET state = 'routed', next_attempt = ?2, updated_at = ?2 \
                     WHERE id = ?1 AND state = 'filtered' RETURNING hook",
                    params![id, now],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(hook) = hook else {
                let state: Option<ItemState> = self
                    .conn
                    .query_row("SELECT state FROM items WHERE id = ?1", [id], |r| r.get(0))
                    .optional()?;
                return Err(match state {
                    None => SpoolError::NotFound(id),
                    Some(state) => SpoolError::WrongState { id, state },
                });
            };
            counts.add(&hook, ItemState::Filtered, -1);
            let mut insert = self.conn.prepare(super::writer::sql::INSERT_DELIVERY)?;
            for route in routes {
                insert.execute(params![id, hook, route, now])?;
                counts.add_route(&hook, route, ItemState::Pending, 1);
            }
            Ok(())
        })
    }

    /// Makes every filtered item of `hook` pending and due now (a rule that
    /// was wrong has been fixed); returns how many.
    fn retry_filtered(&self, hook: &str) -> Result<u64, SpoolError> {
        tx::immediate(&self.conn, |counts| {
            let n = counts::run_counted(
                &self.conn,
                "UPDATE items SET state = 'pending', attempts = 0, next_attempt = ?1, \
                 updated_at = ?1 WHERE state = 'filtered' AND hook = ?2 RETURNING hook",
                params![now_ms(), hook],
                (ItemState::Filtered, Some(ItemState::Pending)),
                counts,
            )?;
            Ok(n)
        })
    }

    /// Deletes done or dead items (last changed more than `older_than` ago,
    /// if given); returns how many. Other states are refused: pending and
    /// leased items are undelivered webhooks.
    fn purge(&self, state: ItemState, older_than: Option<Duration>) -> Result<u64, SpoolError> {
        if !matches!(state, ItemState::Done | ItemState::Dead) {
            return Err(SpoolError::NotPurgeable(state));
        }
        let cutoff = older_than.map_or(i64::MAX, ms_ago);
        let mut total = 0u64;
        loop {
            let n = tx::immediate(&self.conn, |counts| {
                purge_chunk(&self.conn, state, cutoff, counts)
            })?;
            total += n;
            if n < u64::from(PURGE_CHUNK) {
                break;
            }
        }
        loop {
            let n = tx::immediate(&self.conn, |counts| {
                purge_deliveries_chunk(&self.conn, state, cutoff, counts)
            })?;
            total += n;
            if n < u64::from(PURGE_CHUNK) {
                return Ok(total);
            }
        }
    }

    /// Depth, oldest unfinished item, file sizes, registered instances.
    fn stats(&self) -> Result<Stats, SpoolError> {
        let depth = depth(&self.conn)?;
        let now = now_ms();
        let mut oldest: Option<i64> = None;
        // A plain hook's unfinished items, and a routed hook's unfinished
        // deliveries (their request's arrival), each by its `open` index.
        let mut items = self.conn.prepare(
            "SELECT received_at FROM items WHERE hook = ?1 \
             AND state IN ('pending', 'leased') ORDER BY id LIMIT 1",
        )?;
        let mut deliveries = self.conn.prepare(
            "SELECT i.received_at FROM deliveries d JOIN items i ON i.id = d.item \
             WHERE d.hook = ?1 AND d.route = ?2 AND d.state IN ('pending', 'leased') \
             ORDER BY d.id LIMIT 1",
        )?;
        let mut queues: Vec<(&str, Option<&str>)> = depth
            .iter()
            .filter(|d| matches!(d.state, ItemState::Pending | ItemState::Leased))
            .map(|d| (d.hook.as_str(), d.route.as_deref()))
            .collect();
        queues.dedup();
        for (hook, route) in queues {
            let t: Option<i64> = match route {
                None => items.query_row([hook], |r| r.get(0)).optional()?,
                Some(route) => deliveries
                    .query_row([hook, route], |r| r.get(0))
                    .optional()?,
            };
            oldest = match (oldest, t) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let instances = self
            .conn
            .prepare("SELECT id, pid, start_time, started_at FROM instances ORDER BY started_at")?
            .query_map([], |r| {
                let pid: i64 = r.get(1)?;
                let start_time: Option<i64> = r.get(2)?;
                Ok(InstanceInfo {
                    id: r.get(0)?,
                    node: None,
                    heartbeat_age_ms: None,
                    pid,
                    started_at: from_ms(r.get(3)?),
                    alive: is_alive(pid, start_time),
                })
            })?
            .collect::<Result<_, _>>()?;
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        Ok(Stats {
            schema_version: schema::user_version(&self.conn)?,
            file_bytes: size(&self.path),
            wal_bytes: Some(size(Path::new(&wal))),
            depth,
            oldest_pending_age_ms: oldest.map(|t| u64::try_from(now - t).unwrap_or(0)),
            instances,
        })
    }
}

/// Times as RFC 3339 strings in JSON (what an operator reads).
mod rfc3339 {
    use std::time::SystemTime;

    use serde::Serializer;

    pub(super) fn one<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }

    pub(super) fn maybe<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => one(t, s),
            None => s.serialize_none(),
        }
    }
}
