//! Routed requests (schema v5): one request row, one delivery row per
//! matched route, each route claimed, retried and ordered on its own.

use std::time::{Duration, SystemTime};

use super::*;
use crate::spool::{
    schema, Admin, DepthRow, Enqueued, Item, ItemState, LeaseTable, ListFilter, SpoolError,
};

const LONG: Duration = Duration::from_secs(300);

fn routed(hook: &str, dedup: Option<&str>, body: &[u8], routes: &[&str]) -> NewItem {
    let mut new = item(hook, dedup, body);
    new.routes = Some(routes.iter().map(|r| r.to_string()).collect());
    new
}

fn route_req(hook: &str, route: &str, max: usize, ordered: bool) -> ClaimRequest {
    ClaimRequest {
        route: Some(route.to_string()),
        ..claim_req(hook, max, ordered, LONG)
    }
}

async fn new_id(spool: &Spool, new: NewItem) -> i64 {
    match spool.enqueue(new).await.unwrap() {
        Enqueued::New(id) => id,
        other => panic!("{other:?}"),
    }
}

fn count(rows: &[DepthRow], hook: &str, route: Option<&str>, state: ItemState) -> u64 {
    rows.iter()
        .find(|r| r.hook == hook && r.route.as_deref() == route && r.state == state)
        .map_or(0, |r| r.count)
}

fn raw(dir: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(spool_path(dir)).unwrap();
    conn.busy_timeout(schema::BUSY_TIMEOUT).unwrap();
    conn
}

fn route_of(i: &Item) -> &str {
    i.route()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_stored_once_with_one_delivery_per_matched_route() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "a");
    let id = new_id(&spool, routed("gh", None, b"{}", &["deploy", "notify"])).await;

    let conn = raw(dir.path());
    let state: String = conn
        .query_row("SELECT state FROM items WHERE id = ?1", [id], |r| r.get(0))
        .unwrap();
    assert_eq!(state, "routed");
    let rows: i64 = conn
        .query_row(
            "SELECT count(*) FROM deliveries WHERE item = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 2);

    // A plain claim of the hook (the v4 statements) never sees it.
    assert!(spool
        .claim(claim_req("gh", 10, false, LONG))
        .await
        .unwrap()
        .is_empty());
    let deploy = spool
        .claim(route_req("gh", "deploy", 10, false))
        .await
        .unwrap();
    assert_eq!(deploy.len(), 1);
    assert_eq!(deploy[0].id, id, "a delivery carries the request's id");
    assert_eq!(route_of(&deploy[0]), "deploy");
    assert_eq!(&deploy[0].body[..], b"{}");
    assert_eq!(deploy[0].state, ItemState::Leased);
    assert_eq!(deploy[0].lease().table, LeaseTable::Deliveries);

    let depth = spool.depth().await.unwrap();
    assert_eq!(count(&depth, "gh", Some("deploy"), ItemState::Leased), 1);
    assert_eq!(count(&depth, "gh", Some("notify"), ItemState::Pending), 1);
    // The request itself is in no count (v4 parses every state there).
    assert!(depth.iter().all(|r| r.route.is_some()), "{depth:?}");

    spool.complete(deploy[0].lease()).await.unwrap();
    let notify = spool
        .claim(route_req("gh", "notify", 10, false))
        .await
        .unwrap();
    assert_eq!(notify.len(), 1);
    spool
        .retry_later(notify[0].lease(), SystemTime::now(), "HTTP 502")
        .await
        .unwrap();
    // The failed route is retried alone; the delivered one is not claimed again.
    assert!(spool
        .claim(route_req("gh", "deploy", 10, false))
        .await
        .unwrap()
        .is_empty());
    let again = spool
        .claim(route_req("gh", "notify", 10, false))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    assert_eq!(again[0].last_error.as_deref(), Some("HTTP 502"));
    let depth = spool.depth().await.unwrap();
    assert_eq!(count(&depth, "gh", Some("deploy"), ItemState::Done), 1);
    assert_eq!(count(&depth, "gh", Some("notify"), ItemState::Leased), 1);
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_of_one_table_never_ends_a_row_of_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "a");
    // Row ids collide on purpose: items row 1 (plain) and deliveries row 1.
    let plain = new_id(&spool, item("p", None, b"plain")).await;
    let _req = new_id(&spool, routed("r", None, b"routed", &["a"])).await;
    let items = spool.claim(claim_req("p", 1, false, LONG)).await.unwrap();
    let deliveries = spool.claim(route_req("r", "a", 1, false)).await.unwrap();
    let d_lease = deliveries[0].lease();
    assert_eq!(
        d_lease.id, plain,
        "the test needs the same row id in both tables"
    );
    // Ending the delivery's lease leaves the plain item leased.
    spool.complete(d_lease).await.unwrap();
    let conn = raw(dir.path());
    let state: String = conn
        .query_row("SELECT state FROM items WHERE id = ?1", [plain], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(state, "leased");
    spool.mark_dead(items[0].lease(), "gone").await.unwrap();
    let d_state: String = conn
        .query_row(
            "SELECT state FROM deliveries WHERE id = ?1",
            [d_lease.id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(d_state, "done");
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_request_whose_delivery_insert_fails_leaves_nothing_and_the_batch_commits() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "a");
    // The same route twice violates UNIQUE (item, route) after the request
    // row and the first delivery row were written in the batch.
    let bad = spool.enqueue(routed("gh", None, b"x", &["a", "a"]));
    let good = spool.enqueue(routed("gh", None, b"y", &["a"]));
    let (bad, good) = tokio::join!(bad, good);
    assert!(bad.is_err(), "{bad:?}");
    let Enqueued::New(good) = good.unwrap() else {
        panic!("the other command of the batch commits");
    };
    let conn = raw(dir.path());
    let items: Vec<i64> = conn
        .prepare("SELECT id FROM items")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(items, [good], "nothing of the failed request is kept");
    let deliveries: i64 = conn
        .query_row("SELECT count(*) FROM deliveries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(deliveries, 1);
    let depth = spool.depth().await.unwrap();
    assert_eq!(count(&depth, "gh", Some("a"), ItemState::Pending), 1);
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_revives_only_the_dead_deliveries_of_its_request() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "a");
    let id = new_id(&spool, routed("gh", Some("d1"), b"{}", &["a", "b"])).await;
    let a = spool.claim(route_req("gh", "a", 1, false)).await.unwrap();
    spool.complete(a[0].lease()).await.unwrap();
    // While a delivery is open, a repeat is a duplicate.
    let dup = spool
        .enqueue(routed("gh", Some("d1"), b"{}", &["a", "b"]))
        .await
        .unwrap();
    assert_eq!(dup, Enqueued::Duplicate(id));
    let b = spool.claim(route_req("gh", "b", 1, false)).await.unwrap();
    spool.mark_dead(b[0].lease(), "HTTP 400").await.unwrap();
    let again = spool
        .enqueue(routed("gh", Some("d1"), b"{}", &["a", "b"]))
        .await
        .unwrap();
    assert_eq!(again, Enqueued::Revived(id));
    let depth = spool.depth().await.unwrap();
    assert_eq!(count(&depth, "gh", Some("a"), ItemState::Done), 1);
    assert_eq!(count(&depth, "gh", Some("b"), ItemState::Pending), 1);
    assert_eq!(count(&depth, "gh", Some("b"), ItemState::Dead), 0);
    let b = spool.claim(route_req("gh", "b", 1, false)).await.unwrap();
    assert_eq!((b[0].id, b[0].attempts), (id, 0));
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_route_waits_for_its_own_lease_only() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "a");
    let first = new_id(&spool, routed("gh", None, b"1", &["a", "b"])).await;
    let second = new_id(&spool, routed("gh", None, b"2", &["a", "b"])).await;
    // Route b holds the first request's lease (a slow upstream).
    let b = spool.claim(route_req("gh", "b", 1, true)).await.unwrap();
    assert_eq!(b[0].id, first);
    let a = spool.claim(route_req("gh", "a", 5, true)).await.unwrap();
    assert_eq!(a.iter().map(|i| i.id).collect::<Vec<_>>(), [first]);
    // a's next waits for a's own head, not for b.
    assert!(spool
        .claim(route_req("gh", "a", 5, true))
        .await
        .unwrap()
        .is_empty());
    spool.complete(a[0].lease()).await.unwrap();
    let a = spool.claim(route_req("gh", "a", 5, true)).await.unwrap();
    assert_eq!(a.iter().map(|i| i.id).collect::<Vec<_>>(), [second]);
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_deliveries_purge_and_take_their_request_when_none_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "a");
    let both_done = new_id(&spool, routed("gh", None, b"1", &["a", "b"])).await;
    let one_dead = new_id(&spool, routed("gh", None, b"2", &["a", "b"])).await;
    for _ in 0..2 {
        for i in spool.claim(route_req("gh", "a", 5, false)).await.unwrap() {
            spool.complete(i.lease()).await.unwrap();
        }
    }
    for i in spool.claim(route_req("gh", "b", 5, false)).await.unwrap() {
        if i.id == one_dead {
            spool.mark_dead(i.lease(), "HTTP 400").await.unwrap();
        } else {
            spool.complete(i.lease()).await.unwrap();
        }
    }
    // The purge takes rows changed before the current millisecond.
    std::thread::sleep(Duration::from_millis(2));
    let purged = spool.purge_done(Duration::ZERO).await.unwrap();
    assert_eq!(purged, 3);
    let conn = raw(dir.path());
    let kept: Vec<(i64, String)> = conn
        .prepare("SELECT id, state FROM items ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(kept, [(one_dead, "routed".to_string())]);
    assert!(kept.iter().all(|(id, _)| *id != both_done));
    let depth = spool.depth().await.unwrap();
    assert_eq!(count(&depth, "gh", Some("a"), ItemState::Done), 0);
    assert_eq!(count(&depth, "gh", Some("b"), ItemState::Dead), 1);
    spool.close().await;
    // The CLI's purge of dead deliveries takes the last one and its request.
    let admin = Admin::open(spool_path(dir.path())).unwrap();
    assert_eq!(admin.purge(ItemState::Dead, None).unwrap(), 1);
    let left: i64 = conn
        .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_of_a_gone_instance_on_deliveries_are_released_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "a");
    new_id(&spool, routed("gh", None, b"1", &["a"])).await;
    let got = spool.claim(route_req("gh", "a", 1, false)).await.unwrap();
    assert_eq!(got.len(), 1);
    // The process "a" stops without handing its lease back: its row says
    // it is another, long gone process.
    raw(dir.path())
        .execute("UPDATE instances SET pid = 999999999 WHERE id = 'a'", [])
        .unwrap();
    std::mem::forget(spool);
    let b = open(dir.path(), "b");
    let again = b.claim(route_req("gh", "a", 1, false)).await.unwrap();
    assert_eq!(again.len(), 1, "the released lease is claimable at once");
    let depth = b.depth().await.unwrap();
    assert_eq!(count(&depth, "gh", Some("a"), ItemState::Leased), 1);
    assert_eq!(count(&depth, "gh", Some("a"), ItemState::Pending), 0);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_lists_shows_and_retries_by_route() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "a");
    let id = new_id(&spool, routed("gh", None, b"{}", &["a", "b"])).await;
    let plain = new_id(&spool, item("p", None, b"plain")).await;
    let mut filtered = routed("gh", None, b"f", &[]);
    filtered.routes = None;
    filtered.filtered_until = Some(SystemTime::now() + LONG);
    let kept = new_id(&spool, filtered).await;
    let b = spool.claim(route_req("gh", "b", 1, false)).await.unwrap();
    spool.mark_dead(b[0].lease(), "HTTP 400").await.unwrap();
    spool.close().await;

    let admin = Admin::open(spool_path(dir.path())).unwrap();
    let all = admin.ls(&ListFilter::default()).unwrap();
    let rows: Vec<(i64, Option<&str>, ItemState)> = all
        .iter()
        .map(|s| (s.id, s.route.as_deref(), s.state))
        .collect();
    assert_eq!(
        rows,
        [
            (id, Some("a"), ItemState::Pending),
            (id, Some("b"), ItemState::Dead),
            (plain, Some("default"), ItemState::Pending),
            (kept, None, ItemState::Filtered),
        ]
    );
    let only_b = ListFilter {
        route: Some("b"),
        ..Default::default()
    };
    assert_eq!(admin.ls(&only_b).unwrap().len(), 1);
    // Route b removed from the config: its delivery is orphaned.
    let configured = [
        ("gh".to_string(), "a".to_string()),
        ("p".to_string(), "default".to_string()),
    ];
    let orphaned = ListFilter {
        orphaned: Some(&configured),
        ..Default::default()
    };
    let o: Vec<_> = admin.ls(&orphaned).unwrap();
    assert_eq!(o.len(), 1);
    assert_eq!((o[0].id, o[0].route.as_deref()), (id, Some("b")));

    let shown = admin.deliveries(id).unwrap();
    assert_eq!(shown.len(), 2);
    assert_eq!(shown[1].last_error.as_deref(), Some("HTTP 400"));
    assert_eq!(admin.show(id).unwrap().state, ItemState::Routed);

    // Retrying route a (pending, never failed) is allowed; b is made pending.
    admin.retry(id, Some("b")).unwrap();
    let err = admin.retry(plain, Some("b")).unwrap_err();
    assert!(matches!(err, SpoolError::NoRouteToRetry { .. }), "{err}");
    assert_eq!(admin.retry_dead(Some("gh"), Some("b")).unwrap(), 0);

    // A filtered request routed by hand gets its deliveries, due now.
    admin.route_filtered(kept, &["a".to_string()]).unwrap();
    assert_eq!(admin.show(kept).unwrap().state, ItemState::Routed);
    let again = admin.route_filtered(kept, &["a".to_string()]).unwrap_err();
    assert!(matches!(again, SpoolError::WrongState { .. }), "{again}");
    let st = admin.stats().unwrap();
    assert_eq!(count(&st.depth, "gh", Some("a"), ItemState::Pending), 2);
    assert_eq!(count(&st.depth, "gh", Some("b"), ItemState::Pending), 1);
    assert_eq!(count(&st.depth, "gh", None, ItemState::Filtered), 0);
}

/// A v4 spool with rows in every state migrates with its rows as they were,
/// and v4's own statements (writer.rs at v4: they name `items` columns only)
/// still run on the v5 file and never see a routed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_spool_migrates_keeping_its_rows_and_v4_statements_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let conn = raw(dir.path());
    conn.execute_batch("PRAGMA journal_mode = WAL").unwrap();
    for sql in &schema::MIGRATIONS[..4] {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "user_version", 4).unwrap();
    for (i, state) in ["pending", "done", "dead", "filtered"].iter().enumerate() {
        conn.execute(
            "INSERT INTO items (hook, received_at, headers, body, state, next_attempt, updated_at) \
             VALUES ('h', 1, x'', ?1, ?2, 1, 1)",
            rusqlite::params![format!("b{i}").into_bytes(), state],
        )
        .unwrap();
    }
    conn.execute_batch(
        "INSERT INTO item_counts (hook, state, n) \
         SELECT hook, state, count(*) FROM items GROUP BY hook, state",
    )
    .unwrap();
    let spool = open(dir.path(), "new");
    let id = new_id(&spool, routed("h", None, b"r", &["x"])).await;
    assert_eq!(schema::user_version(&conn).unwrap(), 5);
    let states: Vec<String> = conn
        .prepare("SELECT state FROM items ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(states, ["pending", "done", "dead", "filtered", "routed"]);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    // The CHECK still refuses a state no hookd writes.
    let bad = conn.execute("UPDATE items SET state = 'lost' WHERE id = 1", []);
    assert!(bad.is_err(), "the edited CHECK holds");
    // v4's claim and depth, as a v4 hookd runs them beside this one.
    let due: Vec<i64> = conn
        .prepare(crate::spool::writer::sql::DUE_PENDING)
        .unwrap()
        .query_map(rusqlite::params!["h", i64::MAX, 10], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(due, [1]);
    assert!(!due.contains(&id));
    let v4_depth: Vec<(String, String, i64)> = conn
        .prepare("SELECT hook, state, n FROM item_counts WHERE n > 0 ORDER BY hook, state")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (_, state, _) in &v4_depth {
        assert!(
            ["pending", "leased", "done", "dead", "filtered"].contains(&state.as_str()),
            "{state} would fail a v4 hookd's depth read"
        );
    }
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_oldest_pending_counts_a_routed_request_waiting_on_one_route() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "a");
    let id = new_id(&spool, routed("gh", None, b"{}", &["a"])).await;
    spool.close().await;
    let admin = Admin::open(spool_path(dir.path())).unwrap();
    // Only a delivery row is unfinished: its request's age is the oldest.
    let received = admin.show(id).unwrap().received_at;
    let stats = admin.stats().unwrap();
    let age = stats
        .oldest_pending_age_ms
        .expect("a pending delivery has an age");
    let since = SystemTime::now()
        .duration_since(received)
        .unwrap_or_default()
        .as_millis() as u64;
    assert!(age <= since + 1_000, "age {age} ms, request {since} ms old");
}
