//! The operator API, alone and next to a running spool.

use std::time::{Duration, SystemTime};

use super::*;
use crate::spool::{Admin, Enqueued, ItemState, ListFilter, NotASpool, SpoolError};

const LONG: Duration = Duration::from_secs(300);

async fn new_id(spool: &Spool, hook: &str, body: &[u8]) -> i64 {
    match spool.enqueue(item(hook, None, body)).await.unwrap() {
        Enqueued::New(id) => id,
        other => panic!("{other:?}"),
    }
}

#[test]
fn open_refuses_a_missing_file_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = spool_path(dir.path());
    let err = Admin::open(&path).err().unwrap();
    assert!(matches!(err, SpoolError::Missing), "{err}");
    assert!(!path.exists());
    // Another program's database is refused, by the CLI and the daemon.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE t (x)").unwrap();
    let err = Admin::open(&path).err().unwrap();
    assert!(
        matches!(err, SpoolError::NotASpool(NotASpool::Foreign)),
        "{err}"
    );
    let err = Spool::open(options(dir.path(), "x")).err().unwrap();
    assert!(
        matches!(err, SpoolError::NotASpool(NotASpool::Foreign)),
        "{err}"
    );
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1, "nothing of hookd's was written into it");
    // An empty database is not a spool for the CLI either (it never creates one).
    conn.execute_batch("DROP TABLE t").unwrap();
    let err = Admin::open(&path).err().unwrap();
    assert!(
        matches!(err, SpoolError::NotASpool(NotASpool::NoSchema)),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_show_retry_purge_stats() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "daemon");
    let a1 = new_id(&spool, "a", b"a1").await;
    let a2 = new_id(&spool, "a", b"a2").await;
    let b1 = new_id(&spool, "b", b"b1-body").await;
    let c1 = new_id(&spool, "c", b"c1").await;
    // a1 done, a2 dead, b1 leased, c1 pending.
    let claimed = spool.claim(claim_req("a", 2, false, LONG)).await.unwrap();
    assert_eq!(claimed.len(), 2);
    spool.complete(a1).await.unwrap();
    spool.mark_dead(a2, "upstream said 410").await.unwrap();
    spool.claim(claim_req("b", 1, false, LONG)).await.unwrap();

    // The admin works next to the running spool (its own connection).
    let admin = Admin::open(spool.describe()).unwrap();
    let ids =
        |f: &ListFilter<'_>| -> Vec<i64> { admin.ls(f).unwrap().iter().map(|s| s.id).collect() };
    assert_eq!(ids(&ListFilter::default()), [a1, a2, b1, c1]);
    let dead = ListFilter {
        state: Some(ItemState::Dead),
        ..Default::default()
    };
    assert_eq!(ids(&dead), [a2]);
    let hook_a = ListFilter {
        hook: Some("a"),
        ..Default::default()
    };
    assert_eq!(ids(&hook_a), [a1, a2]);
    let limited = ListFilter {
        limit: Some(1),
        ..Default::default()
    };
    assert_eq!(ids(&limited), [a1]);
    let configured = vec![("a".to_string(), "default".to_string())];
    let orphaned = ListFilter {
        orphaned: Some(&configured),
        ..Default::default()
    };
    assert_eq!(ids(&orphaned), [b1, c1]);
    let orphaned_pending = ListFilter {
        orphaned: Some(&configured),
        state: Some(ItemState::Pending),
        ..Default::default()
    };
    assert_eq!(ids(&orphaned_pending), [c1]);
    let none_configured: Vec<(String, String)> = Vec::new();
    let all_orphaned = ListFilter {
        orphaned: Some(&none_configured),
        ..Default::default()
    };
    assert_eq!(ids(&all_orphaned).len(), 4);

    let summary = admin.ls(&ListFilter::default()).unwrap();
    let b1_summary = summary.iter().find(|s| s.id == b1).unwrap();
    assert_eq!(b1_summary.body_bytes, 7);
    assert_eq!(b1_summary.state, ItemState::Leased);
    assert_eq!(b1_summary.lease_owner.as_deref(), Some("daemon"));
    let json = serde_json::to_value(b1_summary).unwrap();
    assert_eq!(json["state"], "leased");
    assert!(json["received_at"].as_str().unwrap().ends_with('Z'));

    // show
    assert_eq!(&admin.show(c1).unwrap().body[..], b"c1");
    assert!(matches!(admin.show(9999), Err(SpoolError::NotFound(9999))));

    // retry: dead → pending, due now, attempts 0; leased and done refused.
    admin.retry(a2, None).unwrap();
    let retried = admin.show(a2).unwrap();
    assert_eq!((retried.state, retried.attempts), (ItemState::Pending, 0));
    assert!(retried.next_attempt <= SystemTime::now());
    assert!(admin
        .retry(b1, None)
        .unwrap_err()
        .to_string()
        .contains("leased"));
    assert!(admin
        .retry(a1, None)
        .unwrap_err()
        .to_string()
        .contains("done"));
    assert!(matches!(
        admin.retry(9999, None),
        Err(SpoolError::NotFound(9999))
    ));
    // The running spool sees the retried item on its next claim.
    let again = spool.claim(claim_req("a", 5, false, LONG)).await.unwrap();
    assert_eq!(again.iter().map(|i| i.id).collect::<Vec<_>>(), [a2]);
    spool.mark_dead(a2, "again").await.unwrap();
    spool.claim(claim_req("c", 1, false, LONG)).await.unwrap();
    spool.mark_dead(c1, "c gone").await.unwrap();
    assert_eq!(admin.retry_dead(Some("c"), None).unwrap(), 1);
    assert_eq!(admin.show(c1).unwrap().state, ItemState::Pending);
    assert_eq!(admin.retry_dead(None, None).unwrap(), 1);
    assert_eq!(admin.show(a2).unwrap().state, ItemState::Pending);

    // purge: only done or dead; age filter on last change.
    assert!(admin.purge(ItemState::Pending, None).is_err());
    assert_eq!(
        admin
            .purge(ItemState::Done, Some(Duration::from_secs(3600)))
            .unwrap(),
        0
    );
    assert_eq!(admin.purge(ItemState::Done, None).unwrap(), 1);
    assert!(matches!(admin.show(a1), Err(SpoolError::NotFound(_))));
    assert_eq!(admin.purge(ItemState::Dead, None).unwrap(), 0);

    // stats
    let stats = admin.stats().unwrap();
    assert_eq!(stats.schema_version, crate::spool::SCHEMA_VERSION);
    assert!(stats.file_bytes > 0);
    let count = |hook: &str, state| {
        stats
            .depth
            .iter()
            .find(|d| d.hook == hook && d.state == state)
            .map_or(0, |d| d.count)
    };
    assert_eq!(count("a", ItemState::Pending), 1);
    assert_eq!(count("a", ItemState::Done), 0);
    assert_eq!(count("b", ItemState::Leased), 1);
    assert_eq!(count("c", ItemState::Pending), 1);
    assert!(stats.oldest_pending_age_ms.is_some());
    assert_eq!(stats.instances.len(), 1);
    assert_eq!(stats.instances[0].id, "daemon");
    assert!(stats.instances[0].alive);
    let json = serde_json::to_string(&stats).unwrap();
    assert!(json.contains("\"oldest_pending_age_ms\""), "{json}");
    spool.close().await;

    // After close: no instances, the lease went back to pending.
    let stats = admin.stats().unwrap();
    assert!(stats.instances.is_empty());
    assert_eq!(admin.show(b1).unwrap().state, ItemState::Pending);
    assert_counts_match_rows(dir.path());
}
