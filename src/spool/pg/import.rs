//! `hookd spool migrate --to postgres://…`: copies an SQLite spool into an
//! empty PostgreSQL spool, for an operator going from one node to several
//! (issue 15, "Moving to it"). The daemon is stopped; the copy keeps every
//! request's id, hook, arrival, headers, body, dedup id and replay key, and
//! every delivery's attempts, due time, last error and state — pending,
//! leased (copied as pending, lease cleared, attempts kept: the process
//! that held it is gone), dead, filtered (with its purge time) and done
//! within retention (older done rows are what the daemon's next purge would
//! have deleted, so they are skipped).
//!
//! ## Layout
//! SQLite's plain item (an `items` row that is its own delivery) becomes a
//! request with one delivery to route `default`, as a node writes one; a
//! routed item becomes its request and one delivery per `deliveries` row.
//! Request ids are the SQLite ids. Delivery ids cannot be: SQLite numbers
//! `items` and `deliveries` separately, so a plain item's id and a routed
//! delivery's id collide. With `M` the largest item id, a plain item `i`'s
//! delivery gets `M + i` and SQLite delivery `j` gets `2M + j`: disjoint
//! from each other and from every request id, as a node's are, and the
//! same on every run over the same file, so a rerun names the same rows
//! (delivery ids are internal: leases name them, operators never see them).
//! The `id_blocks` sequence is moved past the largest id before the first
//! row is copied, so a node started at any point takes ids above them.
//!
//! An ordered (hook, route) — the config knows which, SQLite does not
//! record it — gets `seq` = request id: in id order, which is SQLite's
//! arrival order, and deterministic for reruns; `route_heads.next_seq` goes
//! past the largest, and nodes number on from there. (Without it the rows
//! would still be claimed in id order, `seq NULLS FIRST, id`, but without
//! the one-live-lease index as a backstop.)
//!
//! ## A failed copy and its rerun
//! The copy goes in chunks of requests in id order, one transaction each,
//! and each chunk's transaction also moves the progress marker (the one
//! row of `hookd_import`, a table this module owns) to its last id. So a
//! chunk is either wholly in the target with the marker past it, or not at
//! all — also when the connection is lost during its COMMIT: the rerun reads
//! the marker, never guesses. A rerun whose marker names the same source
//! (by its contents, see [`Identity`]) resumes after the marker's id; a
//! target with requests and no marker is refused, as is a marker of another
//! source. Inserts are `ON CONFLICT DO NOTHING` as a backstop, and depth is
//! counted from what they return, so a row that somehow is there already
//! is neither duplicated nor counted twice (the report says how many).
//!
//! A rerun after a complete copy of the same source is a no-op reporting
//! [`CopyReport::already_complete`]: running the same command twice is a
//! mistake an operator makes while following steps, and by then nodes may
//! be serving from the target, which a refusal would not protect any
//! better. A source that changed since (the daemon ran again) is refused.
//!
//! Depth goes to node `import`'s `depth_counts` rows, in the chunk's
//! transaction; readers sum over nodes, so it is never reset or moved.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::runtime::Runtime;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::admin::STALE_AFTER;
use super::sql::{ADD_DEPTH, BLOCK};
use super::{schema, FILTERED_ROUTE};
use crate::spool::codec::{from_ms, ms_ago};
use crate::spool::instances::is_alive;
use crate::spool::{schema as sqlite_schema, SpoolError, DEFAULT_ROUTE};

/// The node name the copied rows' depth is counted under.
pub(crate) const NODE: &str = "import";

/// Requests per chunk, unless told otherwise: a transaction of a few MB to
/// a few tens of MB, short enough that a failure costs little to redo.
pub(crate) const DEFAULT_CHUNK: usize = 5_000;

/// A chunk also ends once its headers and bodies pass this many bytes
/// (after the item that passes it): 5000 bodies of 1 MiB would otherwise be
/// 5 GB in memory and one bind message, which PostgreSQL caps at 1 GB.
const CHUNK_BYTES: usize = 64 << 20;

/// Session advisory lock every import holds for its whole run, so two
/// imports into one database never interleave ("hookdi" in ASCII).
const IMPORT_LOCK: i64 = 0x0000_686f_6f6b_6469;

/// What to copy and how.
#[derive(Debug, Clone)]
pub(crate) struct CopyOptions {
    /// What messages call the target: its URL without the password.
    pub target: String,
    /// Done rows last changed longer ago than this are skipped.
    pub retain_done: Duration,
    /// The (hook, route)s that are `ordered` in the config (a plain
    /// ordered hook: route `default`).
    pub ordered: Vec<(String, String)>,
    /// Most requests per transaction (at least 1).
    pub chunk: usize,
    /// Longest one chunk's transaction may take end to end. A connection
    /// that stalls (a partition, a lost reply) would otherwise hang the
    /// copy; the server ends the session after the same time idle in its
    /// transaction, so the rerun does not wait on its locks.
    pub chunk_limit: Duration,
}

impl CopyOptions {
    /// Defaults for `target`: [`DEFAULT_CHUNK`], a minute per chunk.
    pub(crate) fn new(target: impl Into<String>, retain_done: Duration) -> CopyOptions {
        CopyOptions {
            target: target.into(),
            retain_done,
            ordered: Vec::new(),
            chunk: DEFAULT_CHUNK,
            chunk_limit: Duration::from_secs(60),
        }
    }
}

/// What one run copied, for the CLI to print.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CopyReport {
    /// Requests written by this run.
    pub requests: u64,
    /// Deliveries written by this run.
    pub deliveries: u64,
    /// Done deliveries (a plain item's or a route's) older than retention,
    /// left out by this run, and with them requests left with none.
    pub skipped_done: u64,
    /// Rows this run meant to write that were there already (the
    /// `ON CONFLICT` backstop); 0 unless something else wrote them.
    pub already_present: u64,
    /// `Some(id)`: this run found an unfinished copy of the same source and
    /// went on after request `id` (0: before the first chunk).
    pub resumed_from: Option<i64>,
    /// The target holds a complete copy of this source already; nothing done.
    pub already_complete: bool,
    /// Largest id (request or delivery) of the copy; nodes take ids above.
    pub max_id: i64,
}

/// Why a copy was refused or stopped. Texts name the target (by its
/// redacted URL) but not the source file: the CLI puts its path in front.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImportError {
    #[error(
        "{target} already holds {requests} requests that no import of this spool wrote; \
         the copy goes into an empty PostgreSQL spool only (a new database)"
    )]
    TargetNotEmpty { target: String, requests: i64 },
    #[error(
        "{target} holds {what} copy of another spool ({from}: {theirs}); this one is {ours}. \
         If hookd ran on this file since, start over with a new database"
    )]
    OtherSource {
        target: String,
        what: &'static str,
        from: String,
        theirs: String,
        ours: String,
    },
    #[error("hookd nodes are running on {target} ({nodes}); stop them before copying into it")]
    TargetInUse { target: String, nodes: String },
    #[error("in use by a running hookd (pid {pids}); stop the daemon before copying it")]
    SourceInUse { pids: String },
    #[error(
        "another copy into {target} is running (or one that just failed still holds its \
         session, for up to its chunk time limit: try again then)"
    )]
    Busy { target: String },
    #[error(
        "changed while it was being copied (was {before}, now {after}): a hookd started on it? \
         Stop it; then start over with a new database"
    )]
    SourceChanged { before: String, after: String },
    #[error(
        "a chunk of the copy took longer than {0:?} (connection stalled or lost); \
         run the same command again to resume"
    )]
    ChunkTimedOut(Duration),
    #[error("item {id}: {what}")]
    BadItem { id: i64, what: String },
}

/// [`copy_sqlite_to_postgres`] on a connection of its own to `target`
/// (made within `connect_timeout`), for `hookd spool migrate`.
pub(crate) fn copy_file_to(
    sqlite_path: &Path,
    target: &super::connect::Target,
    connect_timeout: Duration,
    opts: &CopyOptions,
) -> Result<CopyReport, SpoolError> {
    let rt = super::admin::runtime()?;
    let mut client = rt.block_on(target.connect(connect_timeout, "hookd spool migrate"))?;
    copy_sqlite_to_postgres(sqlite_path, &rt, &mut client, opts)
}

/// Copies the SQLite spool at `sqlite_path` into the PostgreSQL database
/// behind `client` (whose connection task runs on `rt`, see
/// [`runtime`](super::admin::runtime)); creates the schema there if absent.
/// Blocks on `rt`: not to be called from inside another runtime.
pub(crate) fn copy_sqlite_to_postgres(
    sqlite_path: &Path,
    rt: &Runtime,
    client: &mut Client,
    opts: &CopyOptions,
) -> Result<CopyReport, SpoolError> {
    let mut source = Source::open(sqlite_path)?;
    rt.block_on(async {
        let lock: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&IMPORT_LOCK])
            .await?
            .try_get(0)?;
        if !lock {
            return Err(ImportError::Busy {
                target: opts.target.clone(),
            }
            .into());
        }
        let result = copy(&mut source, client, opts).await;
        // A chunk cut off by its time limit leaves its transaction open.
        let rollback = if result.is_err() { "ROLLBACK; " } else { "" };
        // Bounded: after a stalled chunk this connection may never answer
        // (the server ends its session on its own, see `copy`).
        let _ = tokio::time::timeout(
            opts.chunk_limit,
            client.batch_execute(&format!(
                "{rollback}SELECT pg_advisory_unlock({IMPORT_LOCK}); \
                 RESET idle_in_transaction_session_timeout; RESET idle_session_timeout"
            )),
        )
        .await;
        result
    })
}

async fn copy(
    source: &mut Source,
    client: &mut Client,
    opts: &CopyOptions,
) -> Result<CopyReport, SpoolError> {
    // The source first: a daemon still running is refused before the
    // target is touched. One read transaction over the whole copy: every
    // chunk comes from one snapshot of the file, the one checked here.
    let snapshot = source.conn.unchecked_transaction()?;
    let identity = Identity::read(&snapshot)?;
    refuse_live_instances(&snapshot)?;

    schema::migrate(client).await?;
    // A copy whose connection is lost leaves its server session behind,
    // holding the import lock (and, inside a chunk, that chunk's row
    // locks) until TCP gives up on it, which can take hours: the server
    // ends it instead once it has been idle for a chunk's time limit. The
    // copy itself never idles that long between statements.
    let limit_ms = opts.chunk_limit.as_millis().clamp(1, i32::MAX as u128);
    client
        .batch_execute(&format!(
            "SET idle_in_transaction_session_timeout = {limit_ms}; \
             SET idle_session_timeout = {limit_ms}"
        ))
        .await?;
    let ordered: HashSet<(String, String)> = opts.ordered.iter().cloned().collect();

    let Start {
        after,
        resumed_from,
        done_cutoff_ms,
    } = match start(client, opts, source, &identity).await? {
        Some(start) => start,
        None => {
            return Ok(CopyReport {
                already_complete: true,
                max_id: identity.max_id(),
                ..CopyReport::default()
            })
        }
    };
    let mut report = CopyReport {
        resumed_from,
        max_id: identity.max_id(),
        ..CopyReport::default()
    };
    let mut after = after;
    loop {
        let chunk = read_chunk(
            &snapshot,
            after,
            opts.chunk.max(1),
            identity.max_item,
            done_cutoff_ms,
            &ordered,
        )?;
        let Some(last) = chunk.last_id else { break };
        let written = tokio::time::timeout(opts.chunk_limit, write_chunk(client, &chunk))
            .await
            .map_err(|_| ImportError::ChunkTimedOut(opts.chunk_limit))??;
        report.requests += written.requests;
        report.deliveries += written.deliveries;
        report.already_present += written.already_present;
        report.skipped_done += chunk.skipped_done;
        after = last;
    }
    drop(snapshot);

    // Nothing may have written the file meanwhile (a daemon started on it
    // would, at once: registering frees leases and stamps rows).
    let now = Identity::read(&source.conn)?;
    if now != identity {
        return Err(ImportError::SourceChanged {
            before: identity.text(),
            after: now.text(),
        }
        .into());
    }
    refuse_live_instances(&source.conn)?;
    client
        .execute(
            "UPDATE hookd_import SET completed_at = now(), updated_at = now()",
            &[],
        )
        .await?;
    Ok(report)
}

/// The SQLite spool, opened read-only.
struct Source {
    conn: Connection,
    /// As the target's marker records it.
    name: String,
}

impl Source {
    /// Read-only: the copy never writes the file (a daemon started on it by
    /// mistake is caught by [`Identity`], not locked out). SQLite still
    /// needs the -shm next to it, as any reader of a WAL database does.
    fn open(path: &Path) -> Result<Source, SpoolError> {
        if !path.is_file() {
            return Err(SpoolError::Missing);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(SpoolError::at_open)?;
        conn.busy_timeout(sqlite_schema::BUSY_TIMEOUT)?;
        sqlite_schema::check_current(&conn)?;
        let name = std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string();
        Ok(Source { conn, name })
    }
}

/// What a source spool holds, in a few numbers that any write by a hookd
/// changes: every insert adds an id, every state change stamps
/// `updated_at`. Two runs see the same identity only if no hookd wrote the
/// file between them, and then a rerun may go on from the marker. (A
/// content hash would say more and cost a read of every body per run.)
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    items: i64,
    min_item: i64,
    max_item: i64,
    items_changed: i64,
    deliveries: i64,
    max_delivery: i64,
    deliveries_changed: i64,
}

impl Identity {
    fn read(conn: &Connection) -> Result<Identity, SpoolError> {
        let (items, min_item, max_item, items_changed) = conn.query_row(
            "SELECT count(*), coalesce(min(id), 0), coalesce(max(id), 0), \
             coalesce(max(updated_at), 0) FROM items",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        let (deliveries, max_delivery, deliveries_changed) = conn.query_row(
            "SELECT count(*), coalesce(max(id), 0), coalesce(max(updated_at), 0) FROM deliveries",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        Ok(Identity {
            items,
            min_item,
            max_item,
            items_changed,
            deliveries,
            max_delivery,
            deliveries_changed,
        })
    }

    fn text(&self) -> String {
        format!(
            "{} items, ids {}..{}, last change {}; {} deliveries, ids up to {}, last change {}",
            self.items,
            self.min_item,
            self.max_item,
            self.items_changed,
            self.deliveries,
            self.max_delivery,
            self.deliveries_changed
        )
    }

    /// Largest id the copy writes (see the module doc for the layout).
    fn max_id(&self) -> i64 {
        self.max_item
            .saturating_mul(2)
            .saturating_add(self.max_delivery)
    }
}

/// The daemon must be stopped: its leases would be copied as pending and
/// delivered a second time by the nodes, and what it spools after the
/// snapshot would be missing from the copy.
fn refuse_live_instances(conn: &Connection) -> Result<(), SpoolError> {
    let mut stmt = conn.prepare("SELECT pid, start_time FROM instances ORDER BY pid")?;
    let live: Vec<String> = stmt
        .query_map([], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|(pid, start)| is_alive(*pid, *start))
        .map(|(pid, _)| pid.to_string())
        .collect();
    if live.is_empty() {
        Ok(())
    } else {
        Err(ImportError::SourceInUse {
            pids: live.join(", "),
        }
        .into())
    }
}

/// Where a run begins.
struct Start {
    /// Copy the requests with ids above this.
    after: i64,
    resumed_from: Option<i64>,
    /// Done rows changed before this (SQLite's clock, unix ms) are skipped:
    /// fixed by the first run, so a rerun draws the line where it did.
    done_cutoff_ms: i64,
}

/// Checks the target and reads or creates the progress marker; `None`: a
/// complete copy of this source is there already.
async fn start(
    client: &mut Client,
    opts: &CopyOptions,
    source: &Source,
    identity: &Identity,
) -> Result<Option<Start>, SpoolError> {
    let txn = client.transaction().await?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS hookd_import (\
           source        text        NOT NULL, \
           identity      text        NOT NULL, \
           done_cutoff   bigint      NOT NULL, \
           last_id       bigint, \
           requests      bigint      NOT NULL DEFAULT 0, \
           deliveries    bigint      NOT NULL DEFAULT 0, \
           skipped_done  bigint      NOT NULL DEFAULT 0, \
           started_at    timestamptz NOT NULL DEFAULT now(), \
           updated_at    timestamptz NOT NULL DEFAULT now(), \
           completed_at  timestamptz)",
    )
    .await?;
    let stale = STALE_AFTER.as_secs_f64();
    let nodes: Option<String> = txn
        .query_one(
            "SELECT string_agg(node || ' pid ' || pid, ', ' ORDER BY node, pid) FROM instances \
             WHERE heartbeat_at > now() - make_interval(secs => $1)",
            &[&stale],
        )
        .await?
        .try_get(0)?;
    if let Some(nodes) = nodes {
        return Err(ImportError::TargetInUse {
            target: opts.target.clone(),
            nodes,
        }
        .into());
    }
    let ours = identity.text();
    let marker = txn
        .query_opt(
            "SELECT source, identity, done_cutoff, last_id, completed_at IS NOT NULL \
             FROM hookd_import",
            &[],
        )
        .await?;
    let start = match marker {
        Some(m) => {
            let (their_source, theirs): (String, String) = (m.try_get(0)?, m.try_get(1)?);
            let complete: bool = m.try_get(4)?;
            // Matched by contents, not path: the file may have been moved
            // or copied between the runs, and the same path may hold
            // another spool by now.
            if theirs != ours {
                return Err(ImportError::OtherSource {
                    target: opts.target.clone(),
                    what: if complete { "a complete" } else { "a partial" },
                    from: their_source,
                    theirs,
                    ours,
                }
                .into());
            }
            if complete {
                return Ok(None);
            }
            let last: Option<i64> = m.try_get(3)?;
            Start {
                after: last.unwrap_or(0),
                resumed_from: Some(last.unwrap_or(0)),
                done_cutoff_ms: m.try_get(2)?,
            }
        }
        None => {
            let requests: i64 = txn
                .query_one("SELECT count(*) FROM requests", &[])
                .await?
                .try_get(0)?;
            if requests > 0 {
                // Dropping the transaction rolls back the marker table too:
                // a refused target is left as it was found.
                return Err(ImportError::TargetNotEmpty {
                    target: opts.target.clone(),
                    requests,
                }
                .into());
            }
            let cutoff = ms_ago(opts.retain_done);
            txn.execute(
                "INSERT INTO hookd_import (source, identity, done_cutoff) VALUES ($1, $2, $3)",
                &[&source.name, &ours, &cutoff],
            )
            .await?;
            Start {
                after: 0,
                resumed_from: None,
                done_cutoff_ms: cutoff,
            }
        }
    };
    // Before any row: a node that starts while the copy runs takes ids
    // above every id the copy will write. (Sequences ignore rollbacks, and
    // moving it further than needed only leaves a gap.)
    let block = identity.max_id() / BLOCK + 1;
    txn.execute(
        "SELECT setval('id_blocks', greatest($1, (SELECT last_value FROM id_blocks)))",
        &[&block],
    )
    .await?;
    txn.commit().await?;
    Ok(Some(start))
}

/// One chunk's rows as PostgreSQL columns.
#[derive(Default)]
struct Chunk {
    /// Id of the last item read (copied or skipped); `None`: nothing left.
    last_id: Option<i64>,
    skipped_done: u64,
    r_ids: Vec<i64>,
    r_hooks: Vec<String>,
    r_received: Vec<std::time::SystemTime>,
    r_headers: Vec<Vec<u8>>,
    r_bodies: Vec<Vec<u8>>,
    r_dedup: Vec<Option<String>>,
    r_replay: Vec<Option<Vec<u8>>>,
    r_states: Vec<&'static str>,
    r_purge_after: Vec<Option<std::time::SystemTime>>,
    d_ids: Vec<i64>,
    d_requests: Vec<i64>,
    d_hooks: Vec<String>,
    d_routes: Vec<String>,
    d_seqs: Vec<Option<i64>>,
    d_states: Vec<&'static str>,
    d_attempts: Vec<i32>,
    d_next: Vec<std::time::SystemTime>,
    d_errors: Vec<Option<String>>,
    d_updated: Vec<std::time::SystemTime>,
    /// Next free `seq` of each ordered (hook, route) in the chunk.
    heads: BTreeMap<(String, String), i64>,
}

/// One SQLite delivery: a plain item's own columns, or a `deliveries` row.
struct SrcDelivery {
    id: i64,
    route: String,
    state: String,
    attempts: i64,
    next_attempt: i64,
    last_error: Option<String>,
    updated_at: i64,
}

impl Chunk {
    /// Adds `d` of request `request` unless it is done and older than the
    /// cutoff; whether it was added.
    fn delivery(
        &mut self,
        request: i64,
        hook: &str,
        d: SrcDelivery,
        cutoff_ms: i64,
        ordered: &HashSet<(String, String)>,
    ) -> Result<bool, ImportError> {
        let bad = |what: String| ImportError::BadItem { id: request, what };
        let state = match d.state.as_str() {
            "pending" | "leased" => "pending",
            "dead" => "dead",
            "done" if d.updated_at < cutoff_ms => {
                self.skipped_done += 1;
                return Ok(false);
            }
            "done" => "done",
            other => return Err(bad(format!("delivery in unknown state {other:?}"))),
        };
        let attempts = i32::try_from(d.attempts)
            .map_err(|_| bad(format!("attempts {} out of range", d.attempts)))?;
        let key = (hook.to_owned(), d.route.clone());
        let seq = if ordered.contains(&key) {
            let next = self.heads.entry(key).or_insert(0);
            *next = (*next).max(request + 1);
            Some(request)
        } else {
            None
        };
        self.d_ids.push(d.id);
        self.d_requests.push(request);
        self.d_hooks.push(hook.to_owned());
        self.d_routes.push(d.route);
        self.d_seqs.push(seq);
        self.d_states.push(state);
        self.d_attempts.push(attempts);
        self.d_next.push(from_ms(d.next_attempt));
        self.d_errors.push(d.last_error);
        self.d_updated.push(from_ms(d.updated_at));
        Ok(true)
    }
}

/// The next chunk: up to `max` items with ids above `after` (fewer once
/// [`CHUNK_BYTES`] is passed), with their route deliveries.
fn read_chunk(
    conn: &Connection,
    after: i64,
    max: usize,
    max_item: i64,
    cutoff_ms: i64,
    ordered: &HashSet<(String, String)>,
) -> Result<Chunk, SpoolError> {
    struct SrcItem {
        id: i64,
        hook: String,
        dedup_id: Option<String>,
        received_at: i64,
        headers: Vec<u8>,
        body: Vec<u8>,
        state: String,
        attempts: i64,
        next_attempt: i64,
        last_error: Option<String>,
        updated_at: i64,
        replay_key: Option<Vec<u8>>,
    }
    let mut stmt = conn.prepare_cached(
        "SELECT id, hook, dedup_id, received_at, headers, body, state, attempts, \
         next_attempt, last_error, updated_at, replay_key FROM items \
         WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let mut rows = stmt.query(rusqlite::params![
        after,
        i64::try_from(max).unwrap_or(i64::MAX)
    ])?;
    let mut items = Vec::new();
    let mut bytes = 0usize;
    while let Some(r) = rows.next()? {
        let item = SrcItem {
            id: r.get(0)?,
            hook: r.get(1)?,
            dedup_id: r.get(2)?,
            received_at: r.get(3)?,
            headers: r.get(4)?,
            body: r.get(5)?,
            state: r.get(6)?,
            attempts: r.get(7)?,
            next_attempt: r.get(8)?,
            last_error: r.get(9)?,
            updated_at: r.get(10)?,
            replay_key: r.get(11)?,
        };
        bytes = bytes.saturating_add(item.headers.len() + item.body.len());
        items.push(item);
        if bytes >= CHUNK_BYTES {
            break;
        }
    }
    drop(rows);
    let mut chunk = Chunk {
        last_id: items.last().map(|i| i.id),
        ..Chunk::default()
    };
    let (Some(first), Some(last)) = (items.first().map(|i| i.id), chunk.last_id) else {
        return Ok(chunk);
    };
    let mut routed: BTreeMap<i64, Vec<SrcDelivery>> = BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT id, item, route, state, attempts, next_attempt, last_error, updated_at \
         FROM deliveries WHERE item >= ?1 AND item <= ?2 ORDER BY item, id",
    )?;
    let mut rows = stmt.query([first, last])?;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        routed.entry(r.get(1)?).or_default().push(SrcDelivery {
            id: max_item.saturating_mul(2).saturating_add(id),
            route: r.get(2)?,
            state: r.get(3)?,
            attempts: r.get(4)?,
            next_attempt: r.get(5)?,
            last_error: r.get(6)?,
            updated_at: r.get(7)?,
        });
    }
    for item in items {
        let accepted = match item.state.as_str() {
            "filtered" => false,
            "routed" => {
                let mut any = false;
                for d in routed.remove(&item.id).unwrap_or_default() {
                    any |= chunk.delivery(item.id, &item.hook, d, cutoff_ms, ordered)?;
                }
                if !any {
                    // Every delivery was done long ago: purged, as a
                    // node's purge drops a request left with none.
                    continue;
                }
                true
            }
            _ => {
                let d = SrcDelivery {
                    id: max_item.saturating_add(item.id),
                    route: DEFAULT_ROUTE.to_owned(),
                    state: item.state.clone(),
                    attempts: item.attempts,
                    next_attempt: item.next_attempt,
                    last_error: item.last_error.clone(),
                    updated_at: item.updated_at,
                };
                if !chunk.delivery(item.id, &item.hook, d, cutoff_ms, ordered)? {
                    continue;
                }
                true
            }
        };
        chunk.r_ids.push(item.id);
        chunk.r_hooks.push(item.hook);
        chunk.r_received.push(from_ms(item.received_at));
        chunk.r_headers.push(item.headers);
        chunk.r_bodies.push(item.body);
        chunk.r_dedup.push(item.dedup_id);
        chunk.r_replay.push(item.replay_key);
        if accepted {
            chunk.r_states.push("accepted");
            chunk.r_purge_after.push(None);
        } else {
            chunk.r_states.push("filtered");
            chunk.r_purge_after.push(Some(from_ms(item.next_attempt)));
        }
    }
    Ok(chunk)
}

/// What one chunk's transaction wrote.
struct Written {
    requests: u64,
    deliveries: u64,
    already_present: u64,
}

/// One transaction: the chunk's rows, their depth, the ordered routes'
/// heads, and the marker moved past the chunk. Explicit BEGIN and COMMIT
/// rather than a `Transaction`, so the marker's UPDATE and the COMMIT go
/// out together, one round trip: once the server has the UPDATE it has the
/// COMMIT too, and whether the chunk is in is only ever the marker's to
/// say (the rerun reads it), never a guess from a reply that got lost.
async fn write_chunk(client: &Client, c: &Chunk) -> Result<Written, SpoolError> {
    client.batch_execute("BEGIN").await?;
    let written = chunk_statements(client, c).await;
    if written.is_err() {
        // Best effort: a connection that failed is dropped by the caller,
        // which ends the transaction too.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    written
}

/// The chunk's statements on `txn`, a client inside the chunk's transaction.
async fn chunk_statements(txn: &Client, c: &Chunk) -> Result<Written, SpoolError> {
    let mut depth: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    let requests = txn
        .query(
            "INSERT INTO requests \
             (id, hook, received_at, headers, body, dedup_id, replay_key, state, purge_after) \
             SELECT * FROM unnest($1::int8[], $2::text[], $3::timestamptz[], $4::bytea[], \
             $5::bytea[], $6::text[], $7::bytea[], $8::text[], $9::timestamptz[]) \
             ON CONFLICT DO NOTHING RETURNING hook, state",
            &[
                &c.r_ids as &(dyn ToSql + Sync),
                &c.r_hooks,
                &c.r_received,
                &c.r_headers,
                &c.r_bodies,
                &c.r_dedup,
                &c.r_replay,
                &c.r_states,
                &c.r_purge_after,
            ],
        )
        .await?;
    for r in &requests {
        if r.try_get::<_, &str>(1)? == "filtered" {
            *depth
                .entry((r.try_get(0)?, FILTERED_ROUTE.into(), "filtered".into()))
                .or_insert(0) += 1;
        }
    }
    let deliveries = txn
        .query(
            "INSERT INTO deliveries (id, request_id, hook, route, seq, state, attempts, \
             next_attempt, last_error, updated_at) \
             SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::int8[], \
             $6::text[], $7::int4[], $8::timestamptz[], $9::text[], $10::timestamptz[]) \
             ON CONFLICT DO NOTHING RETURNING hook, route, state",
            &[
                &c.d_ids as &(dyn ToSql + Sync),
                &c.d_requests,
                &c.d_hooks,
                &c.d_routes,
                &c.d_seqs,
                &c.d_states,
                &c.d_attempts,
                &c.d_next,
                &c.d_errors,
                &c.d_updated,
            ],
        )
        .await?;
    for r in &deliveries {
        *depth
            .entry((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
            .or_insert(0) += 1;
    }
    add_depth(txn, depth).await?;
    if !c.heads.is_empty() {
        let (hooks, routes): (Vec<&str>, Vec<&str>) = c
            .heads
            .keys()
            .map(|(h, r)| (h.as_str(), r.as_str()))
            .unzip();
        let next: Vec<i64> = c.heads.values().copied().collect();
        txn.execute(
            "INSERT INTO route_heads (hook, route, next_seq) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[]) ORDER BY 1, 2 \
             ON CONFLICT (hook, route) DO UPDATE \
             SET next_seq = greatest(route_heads.next_seq, excluded.next_seq)",
            &[&hooks, &routes, &next],
        )
        .await?;
    }
    let (n_req, n_del) = (requests.len() as u64, deliveries.len() as u64);
    let skipped = i64::try_from(c.skipped_done).unwrap_or(i64::MAX);
    let (marked, committed) = futures_util::future::join(
        txn.execute(
            "UPDATE hookd_import SET last_id = $1, requests = requests + $2, \
             deliveries = deliveries + $3, skipped_done = skipped_done + $4, updated_at = now()",
            &[&c.last_id, &(n_req as i64), &(n_del as i64), &skipped],
        ),
        txn.batch_execute("COMMIT"),
    )
    .await;
    // First: after a failed UPDATE the server takes the COMMIT for a
    // ROLLBACK, and answers it without an error.
    marked?;
    committed?;
    let meant = (c.r_ids.len() + c.d_ids.len()) as u64;
    Ok(Written {
        requests: n_req,
        deliveries: n_del,
        already_present: meant.saturating_sub(n_req + n_del),
    })
}

/// Node [`NODE`]'s share of a chunk's depth.
async fn add_depth(
    txn: &Client,
    depth: BTreeMap<(String, String, String), i64>,
) -> Result<(), tokio_postgres::Error> {
    if depth.is_empty() {
        return Ok(());
    }
    let (mut hooks, mut routes, mut states, mut ns) = (vec![], vec![], vec![], vec![]);
    for ((hook, route, state), n) in depth {
        hooks.push(hook);
        routes.push(route);
        states.push(state);
        ns.push(n);
    }
    txn.execute(ADD_DEPTH, &[&NODE, &hooks, &routes, &states, &ns])
        .await?;
    Ok(())
}
