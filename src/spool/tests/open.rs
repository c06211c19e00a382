//! Opening: migrations, instance registration, lease release.

use std::os::unix::fs::PermissionsExt;

use rusqlite::params;

use super::*;
use crate::spool::instances::proc_start_time;
use crate::spool::writer::sql;
use crate::spool::{schema, Admin, SpoolError, SCHEMA_VERSION};

/// A spool with `n` pending items of hook "h", created and closed.
fn spool_with_items(dir: &Path, n: u8) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let spool = open(dir, "setup");
        for i in 0..n {
            spool.enqueue(item("h", None, &[i])).await.unwrap();
        }
        spool.close().await;
    });
}

fn add_instance(conn: &rusqlite::Connection, id: &str, pid: i64, start_time: Option<i64>) {
    conn.execute(
        "INSERT INTO instances (id, pid, start_time, started_at) VALUES (?1, ?2, ?3, 0)",
        params![id, pid, start_time],
    )
    .unwrap();
}

/// Leases item `id` to `owner` for an hour, as if after 3 attempts.
fn lease_to(conn: &rusqlite::Connection, id: i64, owner: &str) {
    let expiry = crate::spool::codec::now_ms() + 3_600_000;
    conn.execute(
        "UPDATE items SET state = 'leased', lease_owner = ?2, lease_expiry = ?3, \
         attempts = 3 WHERE id = ?1",
        params![id, owner, expiry],
    )
    .unwrap();
    // Raw SQL keeps no counts.
    crate::spool::counts::recount(conn).unwrap();
}

fn state_and_owner(conn: &rusqlite::Connection, id: i64) -> (String, Option<String>, i64) {
    conn.query_row(
        "SELECT state, lease_owner, attempts FROM items WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap()
}

fn instance_ids(conn: &rusqlite::Connection) -> Vec<String> {
    conn.prepare("SELECT id FROM instances ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn reaped_pid() -> i64 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    i64::from(pid)
}

#[test]
fn leases_of_dead_instances_are_released_at_open() {
    let dir = tempfile::tempdir().unwrap();
    spool_with_items(dir.path(), 4);
    let conn = raw(dir.path());
    let me = i64::from(std::process::id());
    let my_start = proc_start_time(me as i32).unwrap() as i64;
    // Gone process; our pid with another start time (pid reused); no row.
    add_instance(&conn, "ghost", reaped_pid(), Some(12_345));
    add_instance(&conn, "reused", me, Some(my_start + 1));
    lease_to(&conn, 1, "ghost");
    lease_to(&conn, 2, "reused");
    lease_to(&conn, 3, "never-registered");

    let spool = open(dir.path(), "new");
    for id in 1..=3 {
        // Back to pending at once; attempts unchanged.
        assert_eq!(state_and_owner(&conn, id), ("pending".into(), None, 3));
    }
    assert_eq!(instance_ids(&conn), ["new"]);
    drop(spool);
    // Dropping the last handle unregisters too.
    assert!(instance_ids(&conn).is_empty());
    assert_counts_match_rows(dir.path());
}

#[test]
fn leases_of_live_instances_are_kept_at_open() {
    let dir = tempfile::tempdir().unwrap();
    spool_with_items(dir.path(), 2);
    let conn = raw(dir.path());
    let me = i64::from(std::process::id());
    let my_start = proc_start_time(me as i32).unwrap() as i64;
    // A hand-off partner: a running process (ours, with its real start time).
    add_instance(&conn, "partner", me, Some(my_start));
    lease_to(&conn, 1, "partner");

    let spool = open(dir.path(), "new");
    assert_eq!(
        state_and_owner(&conn, 1),
        ("leased".into(), Some("partner".into()), 3)
    );
    assert_eq!(instance_ids(&conn), ["new", "partner"]);
    drop(spool);
    assert_eq!(instance_ids(&conn), ["partner"]);
}

#[test]
fn migrations_are_idempotent_and_newer_schemas_refused() {
    let dir = tempfile::tempdir().unwrap();
    spool_with_items(dir.path(), 3);
    spool_with_items(dir.path(), 0);
    let conn = raw(dir.path());
    schema::migrate(&conn).unwrap();
    schema::migrate(&conn).unwrap();
    assert_eq!(schema::user_version(&conn).unwrap(), SCHEMA_VERSION);
    let items: i64 = conn
        .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
        .unwrap();
    assert_eq!(items, 3);

    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let found = SCHEMA_VERSION + 1;
    let err = Spool::open(options(dir.path(), "x")).err().unwrap();
    assert!(
        matches!(err, SpoolError::SchemaTooNew { found: f } if f == found),
        "{err}"
    );
    let err = Admin::open(spool_path(dir.path())).err().unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "schema version {found} is newer than this hookd supports ({SCHEMA_VERSION}); upgrade hookd"
        )
    );
}

#[test]
fn new_spool_file_is_private_and_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "a");
    let mode = std::fs::metadata(spool.describe())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(spool);
    let conn = raw(dir.path());
    let journal: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    // Missing directory: the file cannot be created (the caller names the path).
    let err = Spool::open(options(&dir.path().join("missing"), "a"))
        .err()
        .unwrap();
    assert!(
        matches!(&err, SpoolError::Create(e) if e.kind() == std::io::ErrorKind::NotFound),
        "{err}"
    );
}

#[test]
fn hot_queries_search_indexes() {
    let dir = tempfile::tempdir().unwrap();
    spool_with_items(dir.path(), 1);
    let conn = raw(dir.path());
    let mut statements: Vec<(&str, usize)> = sql::HOT.to_vec();
    statements.push((crate::spool::instances::RELEASE_ORPHANS, 1));
    for (stmt, n_params) in statements {
        let explain = format!("EXPLAIN QUERY PLAN {stmt}");
        let args = vec![rusqlite::types::Value::Integer(1); n_params];
        let plan: Vec<String> = conn
            .prepare(&explain)
            .unwrap()
            .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for line in &plan {
            // A scan is fine only over a partial index of few rows (leased).
            let scans_items = (line.contains("SCAN items") || line.contains("SCAN deliveries"))
                && !line.contains("_leased");
            assert!(!scans_items, "full scan in {stmt}: {plan:?}");
            // Sorting is fine only for leased rows (bounded by concurrency).
            let sorts = line.contains("TEMP B-TREE") && !stmt.contains("state = 'leased'");
            assert!(!sorts, "sort in {stmt}: {plan:?}");
        }
    }
}

/// A schema-1 spool (counts kept by triggers) with items in three states,
/// a running schema-1 partner holding one lease, opened by this build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_spool_migrates_and_recounts_once_its_v1_partner_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(spool_path(dir.path())).unwrap();
    conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
    conn.pragma_update(None, "user_version", 1).unwrap();
    conn.execute_batch(
        "INSERT INTO items (hook, received_at, headers, body, state, next_attempt, updated_at) \
         VALUES ('a', 0, x'', x'', 'pending', 0, 0), ('a', 0, x'', x'', 'done', 0, 0), \
                ('b', 0, x'', x'', 'dead', 0, 0), ('b', 0, x'', x'', 'pending', 0, 0)",
    )
    .unwrap();
    let me = i64::from(std::process::id());
    let my_start = proc_start_time(me as i32).unwrap() as i64;
    add_instance(&conn, "v1-partner", me, Some(my_start));
    // The triggers count this lease: rows and counters agree before the upgrade.
    conn.execute(
        "UPDATE items SET state = 'leased', lease_owner = 'v1-partner', lease_expiry = ?1 \
         WHERE id = 4",
        [crate::spool::codec::now_ms() + 3_600_000],
    )
    .unwrap();
    assert_counts_match_rows(dir.path());

    let spool = open(dir.path(), "v2");
    assert_eq!(schema::user_version(&conn).unwrap(), SCHEMA_VERSION);
    let triggers: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(triggers, 0);
    assert_counts_match_rows(dir.path());

    // The partner finishes its delivery as schema-1 code does: no count.
    conn.execute(
        "UPDATE items SET state = 'done', lease_owner = NULL, lease_expiry = NULL \
         WHERE id = 4",
        [],
    )
    .unwrap();
    conn.execute("DELETE FROM instances WHERE id = 'v1-partner'", [])
        .unwrap();
    // The writer looks for its partner between commits, every 2 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let leased_b = spool
            .depth()
            .await
            .unwrap()
            .iter()
            .any(|r| r.hook == "b" && r.state == crate::spool::ItemState::Leased);
        if !leased_b {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "counts not rebuilt in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_counts_match_rows(dir.path());
    spool.close().await;
}

/// A schema-2 spool (unique dedup index, no replay_key) with an item that
/// has a dedup id: after the v3 migration its repeat is still a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_spool_migrates_to_v3_and_keeps_its_dedup_ids() {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(spool_path(dir.path())).unwrap();
    conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
    conn.execute_batch(schema::MIGRATIONS[1]).unwrap();
    conn.pragma_update(None, "user_version", 2).unwrap();
    conn.execute(
        "INSERT INTO items (hook, dedup_id, received_at, headers, body, state, next_attempt, updated_at) \
         VALUES ('gh', 'd-1', ?1, x'', x'', 'done', 0, 0)",
        [crate::spool::codec::now_ms()],
    )
    .unwrap();
    let spool = open(dir.path(), "v3");
    assert_eq!(schema::user_version(&conn).unwrap(), SCHEMA_VERSION);
    let got = spool.enqueue(item("gh", Some("d-1"), b"x")).await.unwrap();
    assert_eq!(got, crate::spool::Enqueued::Duplicate(1));
    spool.close().await;
}
