//! Operator access for `hookd spool ls|show|retry|purge|stats`.
//!
//! Uses its own connection, so it works whether or not a daemon runs; the
//! daemon's writer and this one take turns on the write lock (busy timeout).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OpenFlags, OptionalExtension};
use serde::Serialize;

use super::codec::{from_ms, item_from_row, ms_ago, now_ms, ITEM_COLUMNS};
use super::counts;
use super::instances::is_alive;
use super::tx;
use super::writer::{depth, purge_chunk, PURGE_CHUNK};
use super::{schema, DepthRow, Item, ItemState, SpoolError};

/// Which items [`Admin::ls`] lists. All `None` = every item.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ListFilter<'a> {
    pub state: Option<ItemState>,
    pub hook: Option<&'a str>,
    /// Only items whose hook is not in this list (the configured hooks):
    /// left behind by a hook that was removed or renamed.
    pub orphaned: Option<&'a [String]>,
    /// Most rows returned; `None` = no limit.
    pub limit: Option<usize>,
}

/// An item without headers and body, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ItemSummary {
    pub id: i64,
    pub hook: String,
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
    pub pid: i64,
    #[serde(serialize_with = "rfc3339::one")]
    pub started_at: SystemTime,
    /// Its process still runs (same pid and start time).
    pub alive: bool,
}

/// Overview for `hookd spool stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Stats {
    pub schema_version: u32,
    /// Size of the main file and of its write-ahead log, in bytes.
    pub file_bytes: u64,
    pub wal_bytes: u64,
    /// Item counts by hook and state.
    pub depth: Vec<DepthRow>,
    /// Age of the oldest item not yet done or dead (pending or leased).
    pub oldest_pending_age_ms: Option<u64>,
    pub instances: Vec<InstanceInfo>,
}

/// A connection to an existing spool file for operator commands.
pub(crate) struct Admin {
    conn: Connection,
    path: PathBuf,
}

impl Admin {
    /// Opens an existing spool; never creates one and never migrates (an
    /// older or newer schema is an error saying so).
    pub(crate) fn open(path: impl AsRef<Path>) -> Result<Admin, SpoolError> {
        let path = path.as_ref().to_path_buf();
        if !path.is_file() {
            return Err(SpoolError::Missing);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(SpoolError::at_open)?;
        conn.busy_timeout(schema::BUSY_TIMEOUT)?;
        schema::check_current(&conn)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(Admin { conn, path })
    }

    /// Items matching `filter`, oldest first.
    pub(crate) fn ls(&self, filter: &ListFilter<'_>) -> Result<Vec<ItemSummary>, SpoolError> {
        let mut sql = String::from(
            "SELECT id, hook, dedup_id, state, attempts, received_at, next_attempt, \
             last_error, lease_owner, lease_expiry, length(body) FROM items WHERE 1",
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
        if let Some(known) = filter.orphaned {
            if !known.is_empty() {
                let marks = vec!["?"; known.len()].join(", ");
                sql.push_str(&format!(" AND hook NOT IN ({marks})"));
                args.extend(known.iter().map(|h| Value::Text(h.clone())));
            }
        }
        sql.push_str(" ORDER BY id LIMIT ?");
        let limit = filter.limit.map_or(-1, |l| i64::try_from(l).unwrap_or(-1));
        args.push(Value::Integer(limit));
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(args), |r| {
            Ok(ItemSummary {
                id: r.get(0)?,
                hook: r.get(1)?,
                dedup_id: r.get(2)?,
                state: r.get(3)?,
                attempts: u32::try_from(r.get::<_, i64>(4)?).unwrap_or(u32::MAX),
                received_at: from_ms(r.get(5)?),
                next_attempt: from_ms(r.get(6)?),
                last_error: r.get(7)?,
                lease_owner: r.get(8)?,
                lease_expiry: r.get::<_, Option<i64>>(9)?.map(from_ms),
                body_bytes: u64::try_from(r.get::<_, i64>(10)?).unwrap_or(0),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One item with headers and body.
    pub(crate) fn show(&self, id: i64) -> Result<Item, SpoolError> {
        let sql = format!("SELECT {ITEM_COLUMNS} FROM items WHERE id = ?1");
        self.conn
            .query_row(&sql, [id], item_from_row)
            .optional()?
            .ok_or(SpoolError::NotFound(id))
    }

    /// Makes a dead, pending or filtered item pending and due now, attempts
    /// reset to 0. Leased and done items are refused (a worker has it, or it is
    /// delivered). A running daemon sees it on its next claim.
    pub(crate) fn retry(&self, id: i64) -> Result<(), SpoolError> {
        tx::immediate(&self.conn, |counts| {
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

    /// [`Admin::retry`] for every dead item (of `hook`, if given); returns
    /// how many.
    pub(crate) fn retry_dead(&self, hook: Option<&str>) -> Result<u64, SpoolError> {
        tx::immediate(&self.conn, |counts| {
            let n = counts::run_counted(
                &self.conn,
                "UPDATE items SET state = 'pending', attempts = 0, next_attempt = ?1, \
                 updated_at = ?1 WHERE state = 'dead' AND (?2 IS NULL OR hook = ?2) \
                 RETURNING hook",
                params![now_ms(), hook],
                (ItemState::Dead, Some(ItemState::Pending)),
                counts,
            )?;
            Ok(n)
        })
    }

    /// Makes every filtered item of `hook` pending and due now (a rule that
    /// was wrong has been fixed); returns how many.
    pub(crate) fn retry_filtered(&self, hook: &str) -> Result<u64, SpoolError> {
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
    pub(crate) fn purge(
        &self,
        state: ItemState,
        older_than: Option<Duration>,
    ) -> Result<u64, SpoolError> {
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
                return Ok(total);
            }
        }
    }

    /// Depth, oldest unfinished item, file sizes, registered instances.
    pub(crate) fn stats(&self) -> Result<Stats, SpoolError> {
        let depth = depth(&self.conn)?;
        let now = now_ms();
        let mut oldest: Option<i64> = None;
        let mut stmt = self.conn.prepare(
            "SELECT received_at FROM items WHERE hook = ?1 \
             AND state IN ('pending', 'leased') ORDER BY id LIMIT 1",
        )?;
        let mut hooks: Vec<&str> = depth
            .iter()
            .filter(|d| matches!(d.state, ItemState::Pending | ItemState::Leased))
            .map(|d| d.hook.as_str())
            .collect();
        hooks.dedup();
        for hook in hooks {
            let t: Option<i64> = stmt.query_row([hook], |r| r.get(0)).optional()?;
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
            wal_bytes: size(Path::new(&wal)),
            depth,
            oldest_pending_age_ms: oldest.map(|t| u64::try_from(now - t).unwrap_or(0)),
            instances,
        })
    }

    /// The spool file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
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
