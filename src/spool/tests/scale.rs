//! Startup with a large spool: prints timings (the machine decides speed);
//! the plan test in open.rs is what guarantees no query scans the table.

use std::time::Instant;

use super::*;
use crate::spool::Admin;

const ROWS: i64 = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_with_a_million_pending_items() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    {
        // Generated before the spool first opens: schema by the migrations,
        // no journal, one transaction, rows made in SQL.
        let conn = rusqlite::Connection::open(spool_path(dir.path())).unwrap();
        conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF")
            .unwrap();
        crate::spool::schema::migrate(&conn).unwrap();
        // 1M pending rows over 4 hooks, 100-byte bodies, a dedup id on
        // every 1000th.
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
             INSERT INTO items (hook, dedup_id, received_at, headers, body, state, \
                                next_attempt, updated_at) \
             SELECT 'hook' || (i % 4), CASE WHEN i % 1000 = 5 THEN 'd' || i END, i, x'', \
                    zeroblob(100), 'pending', i, i FROM n",
            [ROWS],
        )
        .unwrap();
        crate::spool::counts::recount(&conn).unwrap();
    }
    let generated = started.elapsed();

    let started = Instant::now();
    let spool = open(dir.path(), "daemon");
    let opened = started.elapsed();
    let started = Instant::now();
    let depth = spool.depth().await.unwrap();
    let depth_time = started.elapsed();
    let started = Instant::now();
    let claimed = spool
        .claim(claim_req(
            "hook1",
            16,
            false,
            std::time::Duration::from_secs(60),
        ))
        .await
        .unwrap();
    let ordered = spool
        .claim(claim_req(
            "hook2",
            16,
            true,
            std::time::Duration::from_secs(60),
        ))
        .await
        .unwrap();
    let next = spool.next_due("hook3", None).await.unwrap();
    let claim_time = started.elapsed();
    let started = Instant::now();
    let dup = spool
        .enqueue(item("hook1", Some("d5"), b"again"))
        .await
        .unwrap();
    let enqueue_time = started.elapsed();
    spool.close().await;
    // The first open above also switched the generated file to WAL; this is
    // a plain restart.
    let started = Instant::now();
    let spool = open(dir.path(), "restarted");
    let reopened = started.elapsed();
    spool.close().await;
    let started = Instant::now();
    let stats = Admin::open(spool_path(dir.path()))
        .unwrap()
        .stats()
        .unwrap();
    let stats_time = started.elapsed();

    assert_eq!(depth.iter().map(|d| d.count).sum::<u64>(), ROWS as u64);
    assert_eq!(claimed.len(), 16);
    assert_eq!(ordered.len(), 1);
    assert_eq!(next, None);
    assert_eq!(dup, crate::spool::Enqueued::Duplicate(5));
    assert!(stats.oldest_pending_age_ms.is_some());
    println!(
        "1M pending rows: generated in {generated:.2?}; first open {opened:.2?}, \
         restart {reopened:.2?}, depth {depth_time:.2?}, \
         2 claims + next_due {claim_time:.2?}, dedup enqueue {enqueue_time:.2?}, \
         admin open+stats {stats_time:.2?}, file {} MiB",
        stats.file_bytes / (1 << 20)
    );
}
