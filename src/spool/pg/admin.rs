//! The admin CLI's side of the PostgreSQL spool: what [`Admin`](crate::spool::Admin)
//! does when the config gives `[spool] url`, with the meaning of the SQLite
//! side (`spool/admin.rs`) carried over to the shared layout.
//!
//! The layout differs in one way the operator never sees: every accepted
//! request has `deliveries` rows, a plain hook's one to route `default`, so
//! there is no "items row that is the delivery". Where the SQLite CLI shows
//! a plain item, this side shows the request with its one `default`
//! delivery's state; a request with other routes is `routed`, as there.
//!
//! Several nodes change the same rows while this runs, so each operation
//! locks what it decides on (`FOR UPDATE` on the deliveries it reads) or
//! decides in its `UPDATE … WHERE state = …` itself, and writes its depth
//! changes to node `admin`'s `depth_counts` rows in the same transaction.
//! Times that decide anything (due now, purge cut-off, heartbeat age) are
//! the database's clock, as the nodes' lease expiries are.
//!
//! The CLI is synchronous and runs no runtime of its own, so [`PgAdmin`]
//! owns a current-thread runtime and blocks on it for each call; its
//! methods must not be called from inside another runtime (tokio panics).

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::runtime::Runtime;
use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::{Client, GenericClient, Row, Transaction};

use super::sql::{BLOCK, ID_BLOCKS};
use super::{schema, FILTERED_ROUTE};
use crate::spool::admin::{InstanceInfo, ItemSummary, ListFilter, Stats};
use crate::spool::codec::decode_headers;
use crate::spool::writer::PURGE_CHUNK;
use crate::spool::{DepthRow, Item, ItemState, RouteDelivery, SpoolError, DEFAULT_ROUTE};

/// The node name the admin CLI's depth changes are counted under.
pub(crate) const NODE: &str = "admin";

/// A process whose heartbeat is older than this is gone or cut off.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(30);

/// How long one statement waits for a row a node holds (a claim or
/// complete in flight holds it for milliseconds): the analogue of the SQLite
/// side's busy timeout, so a stuck lock is an error, not a hang.
const LOCK_TIMEOUT: &str = "10s";

/// Tables whose sizes `stats` adds up.
const TABLES: [&str; 6] = [
    "requests",
    "deliveries",
    "depth_counts",
    "route_heads",
    "instances",
    "hookd_schema",
];

/// A connection to an existing PostgreSQL spool for operator commands.
pub(crate) struct PgAdmin {
    // Declared before the runtime, so it drops first: the connection task
    // then ends while its runtime still exists.
    client: Mutex<Client>,
    rt: Runtime,
}

/// A runtime fit for [`PgAdmin::open`]: one thread (the caller's, while it
/// blocks), with I/O and time. Connect the client on it (`rt.block_on`) and
/// spawn its connection task on it (`rt.spawn`); the task runs while a call
/// blocks on the runtime, which is whenever the client is used.
// The CLI's, once `[spool] url` is wired (the lead's); the tests use it now.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn runtime() -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

impl PgAdmin {
    /// Takes a connected `client` whose connection task runs on `rt` (see
    /// [`runtime`]); never creates or migrates the schema, and refuses one
    /// this hookd cannot use.
    pub(crate) fn open(rt: Runtime, client: Client) -> Result<PgAdmin, SpoolError> {
        rt.block_on(async {
            schema::check_current(&client).await?;
            client
                .batch_execute(&format!("SET lock_timeout = '{LOCK_TIMEOUT}'"))
                .await?;
            Ok::<_, SpoolError>(())
        })?;
        Ok(PgAdmin {
            client: Mutex::new(client),
            rt,
        })
    }

    fn client(&self) -> MutexGuard<'_, Client> {
        // Nothing leaves the client half-changed on a panic elsewhere.
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deliveries matching `filter`, by request id (then route, a filtered
    /// request's row first): filtered requests (no route) and every
    /// delivery, with its request's id and arrival.
    pub(crate) fn ls(&self, filter: &ListFilter<'_>) -> Result<Vec<ItemSummary>, SpoolError> {
        let client = self.client();
        self.rt.block_on(list(&*client, filter, None))
    }

    /// Request `id` with headers and body: a filtered request as such, a
    /// request whose one delivery is route `default` (a plain hook's) with
    /// that delivery's state, any other as `routed`.
    pub(crate) fn show(&self, id: i64) -> Result<Item, SpoolError> {
        let client = self.client();
        self.rt.block_on(async {
            let Some(req) = client
                .query_opt(
                    "SELECT id, hook, dedup_id, received_at, headers, body, state, purge_after \
                     FROM requests WHERE id = $1",
                    &[&id],
                )
                .await?
            else {
                return Err(SpoolError::NotFound(id));
            };
            let dels = deliveries_of(&*client, id, Lock::None).await?;
            item(&req, &dels)
        })
    }

    /// Every delivery of request `id` (for a filtered request, its row).
    pub(crate) fn deliveries(&self, id: i64) -> Result<Vec<ItemSummary>, SpoolError> {
        let client = self.client();
        self.rt
            .block_on(list(&*client, &ListFilter::default(), Some(id)))
    }

    /// As the SQLite side: a plain request's delivery (route `default`, or
    /// `route` = `default`) that is dead or pending becomes pending, due
    /// now, attempts 0; leased and done are refused ([`SpoolError::WrongState`]).
    /// A filtered request gets a pending `default` delivery. A routed
    /// request: its dead or pending deliveries (to `route`, if given); none
    /// such is [`SpoolError::NoRouteToRetry`].
    pub(crate) fn retry(&self, id: i64, route: Option<&str>) -> Result<(), SpoolError> {
        let mut client = self.client();
        self.rt.block_on(async {
            let txn = client.transaction().await?;
            let Some(req) = txn
                .query_opt("SELECT hook, state FROM requests WHERE id = $1", &[&id])
                .await?
            else {
                return Err(SpoolError::NotFound(id));
            };
            let not_that_route = || SpoolError::NoRouteToRetry {
                id,
                route: route.map(str::to_owned),
            };
            let mut depth = Depth::default();
            let filtered = req.try_get::<_, &str>(1)? == "filtered";
            if filtered {
                if route.is_some_and(|r| r != DEFAULT_ROUTE) {
                    return Err(not_that_route());
                }
                let hook: String = req.try_get(0)?;
                route_one(&txn, id, &hook, &[DEFAULT_ROUTE.to_owned()], &mut depth).await?;
            } else {
                // Locked: no node claims or finishes them while we decide.
                let dels = deliveries_of(&txn, id, Lock::ForUpdate).await?;
                let chosen: Vec<&DeliveryRow> = match plain(&dels) {
                    Some(d) => {
                        if route.is_some_and(|r| r != DEFAULT_ROUTE) {
                            return Err(not_that_route());
                        }
                        if !matches!(d.state, ItemState::Dead | ItemState::Pending) {
                            return Err(SpoolError::WrongState { id, state: d.state });
                        }
                        vec![d]
                    }
                    None => dels
                        .iter()
                        .filter(|d| matches!(d.state, ItemState::Dead | ItemState::Pending))
                        .filter(|d| route.is_none_or(|r| r == d.route))
                        .collect(),
                };
                if chosen.is_empty() {
                    return Err(not_that_route());
                }
                let rows: Vec<i64> = chosen.iter().map(|d| d.id).collect();
                txn.execute(
                    "UPDATE deliveries SET state = 'pending', attempts = 0, \
                     next_attempt = now(), updated_at = now() WHERE id = ANY($1)",
                    &[&rows],
                )
                .await?;
                for d in chosen {
                    depth.moved(&d.hook, &d.route, d.state, ItemState::Pending, 1);
                }
            }
            depth.apply(&txn).await?;
            txn.commit().await?;
            Ok(())
        })
    }

    /// Every dead delivery (of `hook` and `route`, if given) pending again,
    /// due now, attempts 0; returns how many.
    pub(crate) fn retry_dead(
        &self,
        hook: Option<&str>,
        route: Option<&str>,
    ) -> Result<u64, SpoolError> {
        let mut client = self.client();
        self.rt.block_on(async {
            let txn = client.transaction().await?;
            let rows = txn
                .query(
                    "UPDATE deliveries SET state = 'pending', attempts = 0, \
                     next_attempt = now(), updated_at = now() WHERE state = 'dead' \
                     AND ($1::text IS NULL OR hook = $1) AND ($2::text IS NULL OR route = $2) \
                     RETURNING hook, route",
                    &[&hook, &route],
                )
                .await?;
            let mut depth = Depth::default();
            for r in &rows {
                depth.moved(
                    r.try_get(0)?,
                    r.try_get(1)?,
                    ItemState::Dead,
                    ItemState::Pending,
                    1,
                );
            }
            depth.apply(&txn).await?;
            txn.commit().await?;
            Ok(rows.len() as u64)
        })
    }

    /// The filtered requests of `hook`, oldest first (arrival, then id:
    /// ids of different nodes are not in arrival order).
    pub(crate) fn filtered(&self, hook: &str) -> Result<Vec<Item>, SpoolError> {
        let client = self.client();
        self.rt.block_on(async {
            let rows = client
                .query(
                    "SELECT id, hook, dedup_id, received_at, headers, body, state, purge_after \
                     FROM requests WHERE hook = $1 AND state = 'filtered' \
                     ORDER BY received_at, id",
                    &[&hook],
                )
                .await?;
            rows.iter().map(|r| item(r, &[])).collect()
        })
    }

    /// Filtered request `id` becomes accepted with a pending delivery to
    /// each of `routes` (non-empty, checked by the caller), due now; one
    /// transaction. Refused unless it is still filtered.
    pub(crate) fn route_filtered(&self, id: i64, routes: &[String]) -> Result<(), SpoolError> {
        let mut client = self.client();
        self.rt.block_on(async {
            let txn = client.transaction().await?;
            let hook: Option<String> = txn
                .query_opt("SELECT hook FROM requests WHERE id = $1", &[&id])
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
            let Some(hook) = hook else {
                return Err(SpoolError::NotFound(id));
            };
            let mut depth = Depth::default();
            route_one(&txn, id, &hook, routes, &mut depth).await?;
            depth.apply(&txn).await?;
            txn.commit().await?;
            Ok(())
        })
    }

    /// Every filtered request of `hook` becomes accepted with a pending
    /// `default` delivery, due now (a plain hook whose rule was wrong has
    /// been fixed); returns how many. One transaction.
    pub(crate) fn retry_filtered(&self, hook: &str) -> Result<u64, SpoolError> {
        let mut client = self.client();
        self.rt.block_on(async {
            let txn = client.transaction().await?;
            let rows = txn
                .query(
                    "UPDATE requests SET state = 'accepted', purge_after = NULL \
                     WHERE hook = $1 AND state = 'filtered' RETURNING id, received_at",
                    &[&hook],
                )
                .await?;
            let mut requests: Vec<(SystemTime, i64)> = rows
                .iter()
                .map(|r| Ok((r.try_get(1)?, r.try_get(0)?)))
                .collect::<Result<_, tokio_postgres::Error>>()?;
            // Arrival order, so an ordered `default` route gets them in it.
            requests.sort_unstable();
            let requests: Vec<i64> = requests.into_iter().map(|(_, id)| id).collect();
            let mut depth = Depth::default();
            insert_deliveries(&txn, hook, DEFAULT_ROUTE, &requests, &mut depth).await?;
            let n = requests.len() as i64;
            depth.add(hook, FILTERED_ROUTE, ItemState::Filtered, -n);
            depth.apply(&txn).await?;
            txn.commit().await?;
            Ok(n as u64)
        })
    }

    /// Deletes done or dead deliveries (last changed more than `older_than`
    /// ago, if given), and each request left with none, in transactions of
    /// at most [`PURGE_CHUNK`] deliveries; returns how many deliveries.
    /// Other states are refused.
    pub(crate) fn purge(
        &self,
        state: ItemState,
        older_than: Option<Duration>,
    ) -> Result<u64, SpoolError> {
        // Literal states in the SQL, so the partial indexes on done and dead apply.
        let sql = match state {
            ItemState::Done => PURGE_DONE,
            ItemState::Dead => PURGE_DEAD,
            other => return Err(SpoolError::NotPurgeable(other)),
        };
        let older_than = older_than.map(|d| d.as_secs_f64());
        let chunk = i64::from(PURGE_CHUNK);
        let mut client = self.client();
        self.rt.block_on(async {
            let mut total = 0u64;
            loop {
                let txn = client.transaction().await?;
                let rows = txn.query(sql, &[&older_than, &chunk]).await?;
                let mut depth = Depth::default();
                let mut requests: Vec<i64> = Vec::with_capacity(rows.len());
                for r in &rows {
                    depth.add(r.try_get(0)?, r.try_get(1)?, state, -1);
                    requests.push(r.try_get(2)?);
                }
                requests.sort_unstable();
                requests.dedup();
                txn.execute(
                    "DELETE FROM requests r WHERE r.id = ANY($1) AND r.state = 'accepted' \
                     AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.request_id = r.id)",
                    &[&requests],
                )
                .await?;
                depth.apply(&txn).await?;
                txn.commit().await?;
                total += rows.len() as u64;
                if rows.len() < PURGE_CHUNK as usize {
                    return Ok(total);
                }
            }
        })
    }

    /// Depth summed over the nodes, the oldest unfinished delivery's age,
    /// the tables' size, the registered instances with their heartbeat age.
    pub(crate) fn stats(&self) -> Result<Stats, SpoolError> {
        let client = self.client();
        self.rt.block_on(async {
            let version: Option<i32> = client
                .query_one("SELECT max(version) FROM hookd_schema", &[])
                .await?
                .try_get(0)?;
            let depth = depth(&*client).await?;
            // The request ids of different nodes are not in arrival order,
            // so this reads every open delivery's request (an index scan of
            // `deliveries_open`); an operator command, not a hot path.
            let oldest: Option<f64> = client
                .query_one(
                    "SELECT extract(epoch FROM now() - min(r.received_at))::float8 * 1000 \
                     FROM deliveries d JOIN requests r ON r.id = d.request_id \
                     WHERE d.state IN ('pending', 'leased')",
                    &[],
                )
                .await?
                .try_get(0)?;
            let tables: Vec<&str> = TABLES.to_vec();
            let bytes: Option<i64> = client
                .query_one(
                    "SELECT sum(pg_total_relation_size(to_regclass(t)))::bigint \
                     FROM unnest($1::text[]) AS t",
                    &[&tables],
                )
                .await?
                .try_get(0)?;
            let instances = client
                .query(
                    "SELECT id, node, pid, started_at, \
                     extract(epoch FROM now() - heartbeat_at)::float8 * 1000 \
                     FROM instances ORDER BY started_at, id",
                    &[],
                )
                .await?
                .iter()
                .map(|r| {
                    let age = ms(r.try_get(4)?);
                    Ok(InstanceInfo {
                        id: r.try_get(0)?,
                        node: Some(r.try_get(1)?),
                        pid: i64::from(r.try_get::<_, i32>(2)?),
                        started_at: r.try_get(3)?,
                        heartbeat_age_ms: Some(age),
                        alive: Duration::from_millis(age) <= STALE_AFTER,
                    })
                })
                .collect::<Result<_, tokio_postgres::Error>>()?;
            Ok(Stats {
                schema_version: version.map_or(0, |v| u32::try_from(v).unwrap_or(0)),
                file_bytes: bytes.map_or(0, |b| u64::try_from(b).unwrap_or(0)),
                wal_bytes: None,
                depth,
                oldest_pending_age_ms: oldest.map(ms),
                instances,
            })
        })
    }
}

/// Milliseconds from the database's float; a clock step that makes an age
/// negative reads as 0.
fn ms(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v as u64
    } else {
        0
    }
}

/// Purges of one chunk: the rows are locked (`SKIP LOCKED`: a node's
/// retention purge may be deleting some) and checked again in the DELETE,
/// so a delivery retried meanwhile is kept. `$1`: seconds since the last
/// change, or NULL for any age.
const PURGE_DONE: &str = "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
     WHERE state = 'done' AND ($1::float8 IS NULL OR updated_at < now() - make_interval(secs => $1)) \
     LIMIT $2 FOR UPDATE SKIP LOCKED) AND state = 'done' RETURNING hook, route, request_id";
const PURGE_DEAD: &str = "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
     WHERE state = 'dead' AND ($1::float8 IS NULL OR updated_at < now() - make_interval(secs => $1)) \
     LIMIT $2 FOR UPDATE SKIP LOCKED) AND state = 'dead' RETURNING hook, route, request_id";

/// Depth by (hook, route, state), the sum of every node's rows; sums ≤ 0
/// (a node's rows go negative when another claims what it enqueued) are
/// left out. Same order as the SQLite side's: hook, route (filtered first),
/// state name.
async fn depth(client: &impl GenericClient) -> Result<Vec<DepthRow>, SpoolError> {
    let rows = client
        .query(
            "SELECT hook, route, state, sum(n)::bigint FROM depth_counts \
             GROUP BY hook, route, state HAVING sum(n) > 0",
            &[],
        )
        .await?;
    let mut out: Vec<DepthRow> = rows
        .iter()
        .map(|r| {
            let route: String = r.try_get(1)?;
            Ok(DepthRow {
                hook: r.try_get(0)?,
                route: (route != FILTERED_ROUTE).then_some(route),
                state: r.try_get::<_, State>(2)?.0,
                count: u64::try_from(r.try_get::<_, i64>(3)?).unwrap_or(0),
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()?;
    out.sort_by(|a, b| {
        (&a.hook, &a.route, a.state.as_str()).cmp(&(&b.hook, &b.route, b.state.as_str()))
    });
    Ok(out)
}

/// The listing behind `ls` and `deliveries` (`request`: only that one).
async fn list(
    client: &impl GenericClient,
    filter: &ListFilter<'_>,
    request: Option<i64>,
) -> Result<Vec<ItemSummary>, SpoolError> {
    let mut sql = String::from(
        "SELECT id, hook, route, dedup_id, state, attempts, received_at, next_attempt, \
         last_error, lease_owner, lease_expiry, bytes FROM (\
         SELECT r.id, r.hook, NULL::text AS route, r.dedup_id, r.state, 0 AS attempts, \
         r.received_at, coalesce(r.purge_after, r.received_at) AS next_attempt, \
         NULL::text AS last_error, NULL::text AS lease_owner, \
         NULL::timestamptz AS lease_expiry, octet_length(r.body) AS bytes \
         FROM requests r WHERE r.state = 'filtered' \
         UNION ALL SELECT r.id, d.hook, d.route, r.dedup_id, d.state, d.attempts, \
         r.received_at, d.next_attempt, d.last_error, d.lease_owner, d.lease_expiry, \
         octet_length(r.body) FROM deliveries d JOIN requests r ON r.id = d.request_id\
         ) x WHERE true",
    );
    let mut args: Vec<Box<dyn ToSql + Sync>> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, v: Box<dyn ToSql + Sync>| {
        args.push(v);
        sql.push_str(&clause.replace("$?", &format!("${}", args.len())));
    };
    if let Some(id) = request {
        arg(&mut sql, " AND id = $?", Box::new(id));
    }
    if let Some(state) = filter.state {
        arg(&mut sql, " AND state = $?", Box::new(state.as_str()));
    }
    if let Some(hook) = filter.hook {
        arg(&mut sql, " AND hook = $?", Box::new(hook.to_owned()));
    }
    if let Some(route) = filter.route {
        arg(&mut sql, " AND route = $?", Box::new(route.to_owned()));
    }
    if let Some(known) = filter.orphaned.filter(|k| !k.is_empty()) {
        let hooks: Vec<String> = known.iter().map(|(h, _)| h.clone()).collect();
        let routes: Vec<String> = known.iter().map(|(_, r)| r.clone()).collect();
        // A filtered request (no route) is orphaned only with its hook.
        arg(
            &mut sql,
            " AND (NOT (hook = ANY($?::text[]))",
            Box::new(hooks.clone()),
        );
        arg(
            &mut sql,
            " OR (route IS NOT NULL AND NOT EXISTS (SELECT 1 FROM unnest($?::text[]",
            Box::new(hooks),
        );
        arg(
            &mut sql,
            ", $?::text[]) AS k (hook, route) WHERE k.hook = x.hook AND k.route = x.route)))",
            Box::new(routes),
        );
    }
    let limit: Option<i64> = filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
    arg(
        &mut sql,
        " ORDER BY id, route NULLS FIRST LIMIT $?::bigint",
        Box::new(limit),
    );
    let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref()).collect();
    let rows = client.query(&sql, &refs).await?;
    rows.iter()
        .map(|r| {
            Ok(ItemSummary {
                id: r.try_get(0)?,
                hook: r.try_get(1)?,
                route: r.try_get(2)?,
                dedup_id: r.try_get(3)?,
                state: r.try_get::<_, State>(4)?.0,
                attempts: count(r.try_get(5)?),
                received_at: r.try_get(6)?,
                next_attempt: r.try_get(7)?,
                last_error: r.try_get(8)?,
                lease_owner: r.try_get(9)?,
                lease_expiry: r.try_get(10)?,
                body_bytes: u64::try_from(r.try_get::<_, i32>(11)?).unwrap_or(0),
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(SpoolError::from)
}

fn count(attempts: i32) -> u32 {
    u32::try_from(attempts).unwrap_or(0)
}

/// One `deliveries` row as the admin reads it.
#[derive(Debug)]
struct DeliveryRow {
    id: i64,
    hook: String,
    route: String,
    state: ItemState,
    attempts: u32,
    next_attempt: SystemTime,
    last_error: Option<String>,
    lease_owner: Option<String>,
    lease_expiry: Option<SystemTime>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lock {
    None,
    /// The rows stay as read until the transaction ends.
    ForUpdate,
}

async fn deliveries_of(
    client: &impl GenericClient,
    request: i64,
    lock: Lock,
) -> Result<Vec<DeliveryRow>, SpoolError> {
    let sql = format!(
        "SELECT id, hook, route, state, attempts, next_attempt, last_error, lease_owner, \
         lease_expiry FROM deliveries WHERE request_id = $1 ORDER BY route{}",
        if lock == Lock::ForUpdate {
            " FOR UPDATE"
        } else {
            ""
        }
    );
    let rows = client.query(&sql, &[&request]).await?;
    rows.iter()
        .map(|r| {
            Ok(DeliveryRow {
                id: r.try_get(0)?,
                hook: r.try_get(1)?,
                route: r.try_get(2)?,
                state: r.try_get::<_, State>(3)?.0,
                attempts: count(r.try_get(4)?),
                next_attempt: r.try_get(5)?,
                last_error: r.try_get(6)?,
                lease_owner: r.try_get(7)?,
                lease_expiry: r.try_get(8)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(SpoolError::from)
}

/// The one delivery of a plain hook's request (route `default` alone).
fn plain(dels: &[DeliveryRow]) -> Option<&DeliveryRow> {
    match dels {
        [d] if d.route == DEFAULT_ROUTE => Some(d),
        _ => None,
    }
}

/// An [`Item`] from a `requests` row (id, hook, dedup_id, received_at,
/// headers, body, state, purge_after) and its deliveries.
fn item(req: &Row, dels: &[DeliveryRow]) -> Result<Item, SpoolError> {
    let id: i64 = req.try_get(0)?;
    let received_at: SystemTime = req.try_get(3)?;
    let mut item = Item {
        id,
        hook: req.try_get(1)?,
        dedup_id: req.try_get(2)?,
        received_at,
        headers: req.try_get::<_, Headers>(4)?.0,
        body: Bytes::from(req.try_get::<_, Vec<u8>>(5)?),
        state: ItemState::Routed,
        attempts: 0,
        next_attempt: received_at,
        last_error: None,
        lease_owner: None,
        lease_expiry: None,
        lease_gen: None,
        delivery: None,
    };
    if req.try_get::<_, &str>(6)? == "filtered" {
        item.state = ItemState::Filtered;
        item.next_attempt = req
            .try_get::<_, Option<SystemTime>>(7)?
            .unwrap_or(received_at);
    } else if let Some(d) = plain(dels) {
        item.state = d.state;
        item.attempts = d.attempts;
        item.next_attempt = d.next_attempt;
        item.last_error = d.last_error.clone();
        item.lease_owner = d.lease_owner.clone();
        item.lease_expiry = d.lease_expiry;
        item.delivery = Some(RouteDelivery {
            row: d.id,
            route: d.route.clone(),
        });
    }
    Ok(item)
}

/// The state an operator sees for request `id` (as [`item`] gives it), for
/// a refusal; `NotFound` when it is gone.
async fn state_of(txn: &Transaction<'_>, id: i64) -> Result<ItemState, SpoolError> {
    let Some(req) = txn
        .query_opt("SELECT state FROM requests WHERE id = $1", &[&id])
        .await?
    else {
        return Err(SpoolError::NotFound(id));
    };
    if req.try_get::<_, &str>(0)? == "filtered" {
        return Ok(ItemState::Filtered);
    }
    let dels = deliveries_of(txn, id, Lock::None).await?;
    Ok(plain(&dels).map_or(ItemState::Routed, |d| d.state))
}

/// Filtered request `id` of `hook` becomes accepted with a pending
/// delivery to each of `routes`; refused ([`SpoolError::WrongState`]) when
/// it is not filtered (any more: the UPDATE decides, under its row lock).
async fn route_one(
    txn: &Transaction<'_>,
    id: i64,
    hook: &str,
    routes: &[String],
    depth: &mut Depth,
) -> Result<(), SpoolError> {
    let n = txn
        .execute(
            "UPDATE requests SET state = 'accepted', purge_after = NULL \
             WHERE id = $1 AND state = 'filtered'",
            &[&id],
        )
        .await?;
    if n == 0 {
        let state = state_of(txn, id).await?;
        return Err(SpoolError::WrongState { id, state });
    }
    depth.add(hook, FILTERED_ROUTE, ItemState::Filtered, -1);
    for route in routes {
        insert_deliveries(txn, hook, route, &[id], depth).await?;
    }
    Ok(())
}

/// A pending delivery of (`hook`, `route`), due now, for each of
/// `requests` (in the order given, which is their order on an ordered
/// route); ids from blocks of `id_blocks`, as the nodes take theirs.
///
/// An ordered route (one with a `route_heads` row) gives them the next
/// sequence numbers under that row's lock, so they queue behind what was
/// committed before and ahead of what commits after, as an ingest's would.
/// `next_seq` is the number the next delivery gets.
async fn insert_deliveries(
    txn: &Transaction<'_>,
    hook: &str,
    route: &str,
    requests: &[i64],
    depth: &mut Depth,
) -> Result<(), SpoolError> {
    if requests.is_empty() {
        return Ok(());
    }
    let n = i64::try_from(requests.len()).unwrap_or(i64::MAX);
    let wanted = i32::try_from((n + BLOCK - 1) / BLOCK).unwrap_or(i32::MAX);
    let blocks: Vec<i64> = txn
        .query(ID_BLOCKS, &[&wanted])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let ids: Vec<i64> = blocks
        .iter()
        .flat_map(|b| (0..BLOCK).map(move |i| b * BLOCK + i))
        .take(requests.len())
        .collect();
    let first_seq: Option<i64> = txn
        .query_opt(
            "UPDATE route_heads SET next_seq = next_seq + $3 \
             WHERE hook = $1 AND route = $2 RETURNING next_seq - $3",
            &[&hook, &route, &n],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    let seqs: Vec<Option<i64>> = (0..n).map(|i| first_seq.map(|s| s + i)).collect();
    txn.execute(
        "INSERT INTO deliveries (id, request_id, hook, route, seq, state, attempts, \
         next_attempt, updated_at) \
         SELECT d.id, d.request_id, $4, $5, d.seq, 'pending', 0, now(), now() \
         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS d (id, request_id, seq)",
        &[&ids, &requests, &seqs, &hook, &route],
    )
    .await?;
    depth.add(hook, route, ItemState::Pending, n);
    Ok(())
}

/// Depth changes one admin transaction owes node [`NODE`]'s
/// `depth_counts` rows; written just before its COMMIT, in key order (two
/// admin commands at once then never wait on each other's rows in a cycle).
#[derive(Debug, Default)]
struct Depth(BTreeMap<(String, String, &'static str), i64>);

impl Depth {
    fn add(&mut self, hook: &str, route: &str, state: ItemState, n: i64) {
        *self
            .0
            .entry((hook.to_owned(), route.to_owned(), state.as_str()))
            .or_insert(0) += n;
    }

    fn moved(&mut self, hook: &str, route: &str, from: ItemState, to: ItemState, n: i64) {
        if from != to {
            self.add(hook, route, from, -n);
            self.add(hook, route, to, n);
        }
    }

    async fn apply(self, txn: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        let (mut hooks, mut routes, mut states, mut ns) = (vec![], vec![], vec![], vec![]);
        for ((hook, route, state), n) in self.0 {
            if n != 0 {
                hooks.push(hook);
                routes.push(route);
                states.push(state);
                ns.push(n);
            }
        }
        if ns.is_empty() {
            return Ok(());
        }
        txn.execute(
            "INSERT INTO depth_counts (node, hook, route, state, n) \
             SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[]) \
             ON CONFLICT (node, hook, route, state) DO UPDATE SET n = depth_counts.n + excluded.n",
            &[&NODE, &hooks, &routes, &states, &ns],
        )
        .await?;
        Ok(())
    }
}

/// A state column read back (the table's CHECK allows only known names;
/// anything else is an error, not a guess).
struct State(ItemState);

impl<'a> FromSql<'a> for State {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let s = <&str as FromSql>::from_sql(ty, raw)?;
        Ok(State(s.parse::<ItemState>()?))
    }

    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

/// `requests.headers`: [`encode_headers`](crate::spool::codec::encode_headers) bytes.
struct Headers(Vec<(String, Vec<u8>)>);

impl<'a> FromSql<'a> for Headers {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let blob = <&[u8] as FromSql>::from_sql(ty, raw)?;
        decode_headers(blob)
            .map(Headers)
            .ok_or_else(|| "malformed headers".into())
    }

    fn accepts(ty: &Type) -> bool {
        <&[u8] as FromSql>::accepts(ty)
    }
}
