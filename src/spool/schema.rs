//! Connection settings and versioned migrations (`PRAGMA user_version`).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::tx;
use super::{NotASpool, SpoolError};

/// How long a connection waits for another one's write lock (hand-off: two
/// hookd processes, or the CLI, share the file).
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Migration `i` takes the schema from version `i` to `i + 1`. Append only.
pub(crate) const MIGRATIONS: &[&str] = &[
    // v1
    r#"
    CREATE TABLE items (
        id           INTEGER PRIMARY KEY,
        hook         TEXT    NOT NULL,
        dedup_id     TEXT,
        received_at  INTEGER NOT NULL,
        headers      BLOB    NOT NULL,
        body         BLOB    NOT NULL,
        state        TEXT    NOT NULL
                     CHECK (state IN ('pending', 'leased', 'done', 'dead')),
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_attempt INTEGER NOT NULL,
        last_error   TEXT,
        lease_owner  TEXT,
        lease_expiry INTEGER,
        updated_at   INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX items_dedup ON items (hook, dedup_id) WHERE dedup_id IS NOT NULL;
    -- claim of pending items and next_due: a range scan in due order.
    CREATE INDEX items_due ON items (hook, state, next_attempt);
    -- ordered claim: the hook's oldest unfinished item.
    CREATE INDEX items_open ON items (hook, id) WHERE state IN ('pending', 'leased');
    -- lease release by owner; leased rows are few (bounded by concurrency).
    CREATE INDEX items_leased ON items (lease_owner) WHERE state = 'leased';
    -- retention purge.
    CREATE INDEX items_done ON items (updated_at) WHERE state = 'done';
    CREATE INDEX items_dead ON items (updated_at) WHERE state = 'dead';

    -- Counts by (hook, state) kept by triggers, so depth never counts rows.
    CREATE TABLE item_counts (
        hook  TEXT    NOT NULL,
        state TEXT    NOT NULL,
        n     INTEGER NOT NULL,
        PRIMARY KEY (hook, state)
    ) WITHOUT ROWID;
    CREATE TRIGGER items_count_insert AFTER INSERT ON items BEGIN
        INSERT INTO item_counts (hook, state, n) VALUES (new.hook, new.state, 1)
            ON CONFLICT (hook, state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER items_count_delete AFTER DELETE ON items BEGIN
        UPDATE item_counts SET n = n - 1 WHERE hook = old.hook AND state = old.state;
    END;
    CREATE TRIGGER items_count_update AFTER UPDATE OF hook, state ON items
        WHEN old.hook IS NOT new.hook OR old.state IS NOT new.state
    BEGIN
        UPDATE item_counts SET n = n - 1 WHERE hook = old.hook AND state = old.state;
        INSERT INTO item_counts (hook, state, n) VALUES (new.hook, new.state, 1)
            ON CONFLICT (hook, state) DO UPDATE SET n = n + 1;
    END;

    CREATE TABLE instances (
        id         TEXT    PRIMARY KEY,
        pid        INTEGER NOT NULL,
        -- /proc/<pid>/stat field 22 (clock ticks since boot); tells pid reuse apart.
        start_time INTEGER,
        started_at INTEGER NOT NULL
    );
    "#,
    // v2: the code keeps item_counts (counts.rs); triggers cost every write.
    r#"
    DROP TRIGGER items_count_insert;
    DROP TRIGGER items_count_delete;
    DROP TRIGGER items_count_update;
    -- Index only what a query seeks, so a state change moves few entries:
    -- due order of pending items (a claim deletes one entry, a result
    -- writes none; v1 moved an entry for both), and leases by hook and
    -- expiry (expired-lease claims, ordered hooks, next due time).
    DROP INDEX items_due;
    CREATE INDEX items_due ON items (hook, next_attempt) WHERE state = 'pending';
    DROP INDEX items_leased;
    CREATE INDEX items_leased ON items (hook, lease_expiry, lease_owner) WHERE state = 'leased';
    DELETE FROM item_counts;
    INSERT INTO item_counts (hook, state, n)
        SELECT hook, state, count(*) FROM items GROUP BY hook, state;
    "#,
    // v3: dedup windows and replay protection. A dedup id may recur once its
    // window is over, so its index is no longer unique (the writer looks up
    // the latest item per id). replay_key: SHA-256 of the signed content of
    // hooks with replay protection; both leave with their item at the purge.
    r#"
    DROP INDEX items_dedup;
    CREATE INDEX items_dedup ON items (hook, dedup_id) WHERE dedup_id IS NOT NULL;
    ALTER TABLE items ADD COLUMN replay_key BLOB;
    CREATE INDEX items_replay ON items (hook, replay_key) WHERE replay_key IS NOT NULL;
    "#,
    // v4: state 'filtered' (no rule of the hook matched; kept for `spool
    // retry --filtered`, never delivered). A CHECK cannot be altered in
    // SQLite, so the table is rebuilt with the same columns and indexes; a
    // filtered item's next_attempt is when retention may purge it.
    r#"
    CREATE TABLE items_v4 (
        id           INTEGER PRIMARY KEY,
        hook         TEXT    NOT NULL,
        dedup_id     TEXT,
        received_at  INTEGER NOT NULL,
        headers      BLOB    NOT NULL,
        body         BLOB    NOT NULL,
        state        TEXT    NOT NULL
                     CHECK (state IN ('pending', 'leased', 'done', 'dead', 'filtered')),
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_attempt INTEGER NOT NULL,
        last_error   TEXT,
        lease_owner  TEXT,
        lease_expiry INTEGER,
        updated_at   INTEGER NOT NULL,
        replay_key   BLOB
    );
    INSERT INTO items_v4 SELECT id, hook, dedup_id, received_at, headers, body, state,
        attempts, next_attempt, last_error, lease_owner, lease_expiry, updated_at, replay_key
        FROM items;
    DROP TABLE items;
    ALTER TABLE items_v4 RENAME TO items;
    CREATE INDEX items_dedup ON items (hook, dedup_id) WHERE dedup_id IS NOT NULL;
    CREATE INDEX items_replay ON items (hook, replay_key) WHERE replay_key IS NOT NULL;
    CREATE INDEX items_due ON items (hook, next_attempt) WHERE state = 'pending';
    CREATE INDEX items_open ON items (hook, id) WHERE state IN ('pending', 'leased');
    CREATE INDEX items_leased ON items (hook, lease_expiry, lease_owner) WHERE state = 'leased';
    CREATE INDEX items_done ON items (updated_at) WHERE state = 'done';
    CREATE INDEX items_dead ON items (updated_at) WHERE state = 'dead';
    CREATE INDEX items_filtered ON items (next_attempt) WHERE state = 'filtered';
    "#,
    // v5: routes. A hook with `[[hook.route]]` stores its request as an items
    // row in state 'routed' (never claimed: every claim selects 'pending' or
    // 'leased') and one `deliveries` row per matched route; a plain hook's
    // items row stays its own delivery, as before. A v4 hookd sharing the
    // file during a hand-off keeps running its statements (it never reads
    // `deliveries`, and its dedup look-up takes a 'routed' item for a kept
    // one, which it is). 'routed' never enters `item_counts` (a v4 hookd
    // parses every state there); deliveries are counted by (hook, route,
    // state) in `delivery_counts`.
    //
    // 'routed' joins the items CHECK by an edit of the table's stored SQL,
    // not by a rebuild like v4's: a rebuild copies every row while it holds
    // the write lock (seconds per 100k items, BENCHMARKS.md), longer than
    // the old process's busy timeout and the hand-off's wait for the
    // successor. SQLite documents the edit as safe for loosening a
    // constraint: every row meets the new one and the file format does not
    // change (lang_altertable.html, "making other kinds of table schema
    // changes"). `migrate` checks that it took and bumps `schema_version`,
    // so every connection, the old process's too, reads the new schema.
    r#"
    PRAGMA writable_schema = ON;
    UPDATE sqlite_master
        SET sql = replace(sql, '''dead'', ''filtered'')', '''dead'', ''filtered'', ''routed'')')
        WHERE type = 'table' AND name = 'items';
    PRAGMA writable_schema = OFF;

    CREATE TABLE deliveries (
        id           INTEGER PRIMARY KEY,
        item         INTEGER NOT NULL,
        hook         TEXT    NOT NULL,
        route        TEXT    NOT NULL,
        state        TEXT    NOT NULL
                     CHECK (state IN ('pending', 'leased', 'done', 'dead')),
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_attempt INTEGER NOT NULL,
        last_error   TEXT,
        lease_owner  TEXT,
        lease_expiry INTEGER,
        updated_at   INTEGER NOT NULL,
        UNIQUE (item, route)
    );
    CREATE INDEX deliveries_due ON deliveries (hook, route, next_attempt)
        WHERE state = 'pending';
    CREATE INDEX deliveries_open ON deliveries (hook, route, id)
        WHERE state IN ('pending', 'leased');
    CREATE INDEX deliveries_leased ON deliveries (hook, route, lease_expiry, lease_owner)
        WHERE state = 'leased';
    CREATE INDEX deliveries_owner ON deliveries (lease_owner) WHERE state = 'leased';
    CREATE INDEX deliveries_done ON deliveries (updated_at) WHERE state = 'done';
    CREATE INDEX deliveries_dead ON deliveries (updated_at) WHERE state = 'dead';

    CREATE TABLE delivery_counts (
        hook  TEXT    NOT NULL,
        route TEXT    NOT NULL,
        state TEXT    NOT NULL,
        n     INTEGER NOT NULL,
        PRIMARY KEY (hook, route, state)
    ) WITHOUT ROWID;
    "#,
];

/// Schema version this build writes and understands.
pub(crate) const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Settings every connection gets: durable WAL commits, waiting on locks.
pub(crate) fn configure(conn: &Connection) -> Result<(), SpoolError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // The first statement reads the file: a file that is not SQLite fails here.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(SpoolError::at_open)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SpoolError::NoWal { mode });
    }
    // FULL in WAL mode: every commit fsyncs the WAL before it returns.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

pub(crate) fn user_version(conn: &Connection) -> Result<u32, SpoolError> {
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(SpoolError::at_open)?;
    u32::try_from(v).map_err(|_| SpoolError::NotASpool(NotASpool::BadVersion(v)))
}

/// A version-0 file that already has tables belongs to another program.
fn refuse_foreign(conn: &Connection) -> Result<(), SpoolError> {
    let tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
        [],
        |r| r.get(0),
    )?;
    if tables > 0 {
        return Err(SpoolError::NotASpool(NotASpool::Foreign));
    }
    Ok(())
}

/// Brings the schema to [`SCHEMA_VERSION`] inside one immediate transaction,
/// so two processes opening at once migrate exactly once. Returns the
/// version found (0 for a new file).
pub(crate) fn migrate(conn: &Connection) -> Result<u32, SpoolError> {
    // Cheap check first: an up-to-date spool takes no write lock here.
    let found = user_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(SpoolError::SchemaTooNew { found });
    }
    if found == SCHEMA_VERSION {
        return Ok(found);
    }
    tx::immediate(conn, |_| {
        let found = user_version(conn)?;
        if found > SCHEMA_VERSION {
            return Err(SpoolError::SchemaTooNew { found });
        }
        if found == 0 {
            refuse_foreign(conn)?;
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            conn.execute_batch(sql)?;
            if i + 1 == ROUTED_STATE_VERSION as usize {
                routed_state_took(conn)?;
            }
            conn.pragma_update(None, "user_version", i as i64 + 1)?;
        }
        Ok(found)
    })
}

/// The migration that adds 'routed' to the items CHECK by editing its SQL.
const ROUTED_STATE_VERSION: u32 = 5;

/// After the v5 edit of the items table's SQL: refuses to go on unless the
/// CHECK names 'routed' now (a table whose SQL is not what v4 wrote would be
/// left as it was), then bumps `schema_version`, which makes every
/// connection (this one, and other processes') read the edited schema.
fn routed_state_took(conn: &Connection) -> Result<(), SpoolError> {
    let sql: String = conn.query_row(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'items'",
        [],
        |r| r.get(0),
    )?;
    if !sql.contains("'filtered', 'routed'") {
        return Err(SpoolError::NotASpool(NotASpool::UnexpectedItemsTable));
    }
    let version: i64 = conn.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
    conn.pragma_update(None, "schema_version", version + 1)?;
    Ok(())
}

/// Checks an existing spool's version for the admin CLI, which never migrates.
pub(crate) fn check_current(conn: &Connection) -> Result<(), SpoolError> {
    let found = user_version(conn)?;
    match found.cmp(&SCHEMA_VERSION) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(SpoolError::SchemaTooNew { found }),
        std::cmp::Ordering::Less if found == 0 => {
            refuse_foreign(conn)?;
            Err(SpoolError::NotASpool(NotASpool::NoSchema))
        }
        std::cmp::Ordering::Less => Err(SpoolError::SchemaTooOld { found }),
    }
}

/// Opens (creating when missing) the read-write connection of a daemon.
/// A new file is created 0600 first: it holds webhook bodies, and SQLite
/// gives its -wal and -shm files the main file's mode.
pub(crate) fn open_rw(path: &Path) -> Result<Connection, SpoolError> {
    if !path.exists() {
        create_private(path)?;
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(SpoolError::at_open)?;
    configure(&conn)?;
    Ok(conn)
}

fn create_private(path: &Path) -> Result<(), SpoolError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        // Someone else created it between our check and now: fine.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(SpoolError::Create(e)),
    }
}
