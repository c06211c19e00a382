//! The spool's contract on the PostgreSQL backend, against a real server
//! (a throw-away cluster per test, tests/common/pg.rs): what the SQLite
//! tests beside this file promise, and what several nodes on one database
//! add — no two live leases of one delivery, finishes fenced by the lease
//! generation, `ordered` in order across nodes, depth summed over nodes,
//! and a COMMIT whose answer is lost resolved, never guessed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::pg_cluster::Pg;
use super::tcp_proxy::{Mode, TcpProxy};
use super::{claim_req, item};
use crate::spool::pg::PgOptions;
use crate::spool::{
    DepthRow, Enqueued, ItemState, NewItem, Spool, SpoolError, SpoolOptions, Store,
};

const LONG: Duration = Duration::from_secs(300);
/// Every wait in these tests ends by this deadline.
const WAIT: Duration = Duration::from_secs(20);

fn pg_options(url: String, node: &str) -> PgOptions {
    PgOptions {
        connect: super::pg_connector(&url),
        name: "test database".into(),
        node: node.into(),
        connect_timeout: Duration::from_secs(2),
        commit_limit: Duration::from_secs(3),
    }
}

fn open_via(url: String, node: &str, instance: &str) -> Result<Spool, SpoolError> {
    Spool::open(SpoolOptions {
        store: Store::Postgres(pg_options(url, node)),
        instance_id: instance.into(),
        max_batch: 1024,
        on_commit: None,
    })
}

/// `Spool::open` blocks on its writer thread: off the async threads.
async fn open(pg: &Pg, node: &str, instance: &str) -> Spool {
    let url = pg.url();
    let (node, instance) = (node.to_owned(), instance.to_owned());
    tokio::task::spawn_blocking(move || open_via(url, &node, &instance))
        .await
        .unwrap()
        .unwrap()
}

async fn new_id(spool: &Spool, new: NewItem) -> i64 {
    match spool.enqueue(new).await.unwrap() {
        Enqueued::New(id) => id,
        other => panic!("expected a new item, got {other:?}"),
    }
}

fn depth_of(rows: &[DepthRow], hook: &str, state: ItemState) -> u64 {
    rows.iter()
        .filter(|r| r.hook == hook && r.state == state)
        .map(|r| r.count)
        .sum()
}

/// The per-node counters summed agree with the rows themselves.
fn assert_depth_matches_rows(pg: &Pg) {
    let counted = pg.psql(
        "SELECT string_agg(hook || '/' || route || '/' || state || '=' || n, ',' ORDER BY hook, route, state) \
         FROM (SELECT hook, route, state, sum(n) AS n FROM depth_counts GROUP BY 1, 2, 3 HAVING sum(n) <> 0) c",
    );
    let rows = pg.psql(
        "SELECT string_agg(hook || '/' || route || '/' || state || '=' || n, ',' ORDER BY hook, route, state) \
         FROM (SELECT hook, route, state, count(*) AS n FROM deliveries GROUP BY 1, 2, 3 \
         UNION ALL SELECT hook, '', 'filtered', count(*) FROM requests WHERE state = 'filtered' GROUP BY 1) r",
    );
    assert_eq!(counted, rows, "depth_counts (left) vs rows (right)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueued_item_is_in_the_database_when_enqueue_returns_and_claims_round_trip_it() {
    let pg = Pg::start_new();
    let spool = open(&pg, "n1", "a").await;
    let mut new = item("h", Some("d-1"), b"\x00body\xff");
    new.headers = vec![("x-bin".into(), vec![0, 1, 255])];
    let id = new_id(&spool, new).await;
    // Another connection sees it: committed, not just written.
    assert_eq!(
        pg.psql(&format!("SELECT count(*) FROM requests WHERE id = {id}")),
        "1"
    );
    let got = spool.claim(claim_req("h", 10, false, LONG)).await.unwrap();
    assert_eq!(got.len(), 1);
    let it = &got[0];
    assert_eq!(
        (it.id, it.hook.as_str(), it.dedup_id.as_deref()),
        (id, "h", Some("d-1"))
    );
    assert_eq!(&it.body[..], b"\x00body\xff");
    assert_eq!(it.headers, vec![("x-bin".to_string(), vec![0, 1, 255])]);
    assert_eq!(
        (it.state, it.attempts, it.route()),
        (ItemState::Leased, 0, "default")
    );
    assert!(it.lease_gen.is_some());
    assert!(spool
        .claim(claim_req("h", 10, false, LONG))
        .await
        .unwrap()
        .is_empty());
    spool.complete(it.lease()).await.unwrap();
    let depth = spool.depth().await.unwrap();
    assert_eq!(depth_of(&depth, "h", ItemState::Done), 1);
    assert_eq!(depth_of(&depth, "h", ItemState::Leased), 0);
    assert_depth_matches_rows(&pg);
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_ending_transitions_set_state_attempts_and_error() {
    let pg = Pg::start_new();
    let spool = open(&pg, "n1", "a").await;
    for body in [b"1", b"2", b"3"] {
        new_id(&spool, item("h", None, body)).await;
    }
    let got = spool.claim(claim_req("h", 3, false, LONG)).await.unwrap();
    assert_eq!(got.len(), 3);
    let later = SystemTime::now() + Duration::from_secs(3600);
    spool
        .retry_later(got[0].lease(), later, "boom 1")
        .await
        .unwrap();
    spool.mark_dead(got[1].lease(), "gave up").await.unwrap();
    spool.release(got[2].lease()).await.unwrap();
    let row = |id: i64| {
        pg.psql(&format!(
            "SELECT state || ',' || attempts || ',' || coalesce(last_error, '-') || ',' || (lease_owner IS NULL) \
             FROM deliveries WHERE request_id = {id}"
        ))
    };
    assert_eq!(row(got[0].id), "pending,1,boom 1,true");
    assert_eq!(row(got[1].id), "dead,1,gave up,true");
    assert_eq!(row(got[2].id), "pending,0,-,true");
    // The released one is due at once; the retried one not for an hour.
    let again = spool.claim(claim_req("h", 3, false, LONG)).await.unwrap();
    assert_eq!(
        again.iter().map(|i| i.id).collect::<Vec<_>>(),
        vec![got[2].id]
    );
    spool.complete(again[0].lease()).await.unwrap();
    let due = spool
        .next_due("h", None)
        .await
        .unwrap()
        .expect("a retry waits");
    assert!(
        due > SystemTime::now() + Duration::from_secs(3000),
        "{due:?}"
    );
    assert_depth_matches_rows(&pg);
    spool.close().await;
}

/// Claims on `spool` until one returns an item or the deadline passes.
async fn claim_until_some(spool: &Spool, hook: &str, lease: Duration) -> crate::spool::Item {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = spool.claim(claim_req(hook, 1, false, lease)).await.unwrap();
        if let Some(it) = got.into_iter().next() {
            return it;
        }
        assert!(
            Instant::now() < deadline,
            "nothing claimable within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_finish_of_an_expired_lease_changes_nothing_once_another_node_holds_it() {
    let pg = Pg::start_new();
    let a = open(&pg, "n1", "a").await;
    let b = open(&pg, "n2", "b").await;
    let id = new_id(&a, item("h", None, b"x")).await;
    let first = a
        .claim(claim_req("h", 1, false, Duration::from_millis(300)))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    // Node b takes it once the lease ran out by the database's clock.
    let second = claim_until_some(&b, "h", LONG).await;
    assert_eq!(second.id, id);
    assert!(second.lease_gen > first[0].lease_gen);
    // a's late result: no row changes.
    a.complete(first[0].lease()).await.unwrap();
    a.mark_dead(first[0].lease(), "late").await.unwrap();
    let state =
        format!("SELECT state || ',' || lease_owner FROM deliveries WHERE request_id = {id}");
    assert_eq!(pg.psql(&state), "leased,b");
    b.complete(second.lease()).await.unwrap();
    assert_eq!(
        pg.psql(&format!(
            "SELECT state || ',' || attempts FROM deliveries WHERE request_id = {id}"
        )),
        "done,1"
    );
    assert_depth_matches_rows(&pg);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_attempt_cannot_end_a_newer_lease_of_the_same_instance() {
    let pg = Pg::start_new();
    let a = open(&pg, "n1", "a").await;
    let id = new_id(&a, item("h", None, b"x")).await;
    let old = a
        .claim(claim_req("h", 1, false, Duration::from_millis(200)))
        .await
        .unwrap();
    let new = claim_until_some(&a, "h", LONG).await;
    assert_eq!((old[0].id, new.id), (id, id));
    a.complete(old[0].lease()).await.unwrap();
    assert_eq!(
        pg.psql(&format!(
            "SELECT state FROM deliveries WHERE request_id = {id}"
        )),
        "leased"
    );
    a.complete(new.lease()).await.unwrap();
    assert_eq!(
        pg.psql(&format!(
            "SELECT state FROM deliveries WHERE request_id = {id}"
        )),
        "done"
    );
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_drain_one_backlog_and_no_delivery_is_leased_twice() {
    let pg = Pg::start_new();
    let a = open(&pg, "n1", "a").await;
    let b = open(&pg, "n2", "b").await;
    let mut ids = HashSet::new();
    for i in 0..400u32 {
        let spool = if i % 2 == 0 { &a } else { &b };
        ids.insert(new_id(spool, item("h", None, &i.to_be_bytes())).await);
    }
    let drain = |spool: Spool| async move {
        let mut got = Vec::new();
        let deadline = Instant::now() + WAIT;
        for _ in 0..10_000 {
            let items = spool.claim(claim_req("h", 16, false, LONG)).await.unwrap();
            if items.is_empty() {
                break;
            }
            for it in items {
                got.push(it.id);
                spool.complete(it.lease()).await.unwrap();
            }
            assert!(Instant::now() < deadline, "drain took longer than {WAIT:?}");
        }
        got
    };
    let (got_a, got_b) = tokio::join!(
        tokio::spawn(drain(a.clone())),
        tokio::spawn(drain(b.clone()))
    );
    let (got_a, got_b) = (got_a.unwrap(), got_b.unwrap());
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "both nodes took part"
    );
    let mut all: Vec<i64> = got_a.iter().chain(&got_b).copied().collect();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(n, all.len(), "a delivery was claimed twice");
    assert_eq!(all.into_iter().collect::<HashSet<_>>(), ids);
    assert_eq!(
        pg.psql("SELECT count(*) FROM deliveries WHERE state = 'done' AND attempts = 1"),
        "400"
    );
    assert_depth_matches_rows(&pg);
    a.close().await;
    b.close().await;
}

fn ordered_item(hook: &str, body: &[u8]) -> NewItem {
    let mut new = item(hook, None, body);
    new.ordered = vec![crate::spool::DEFAULT_ROUTE.to_string()];
    new
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_claims_take_only_the_head_and_only_without_a_live_lease() {
    let pg = Pg::start_new();
    let a = open(&pg, "n1", "a").await;
    let first = new_id(&a, ordered_item("o", b"1")).await;
    let second = new_id(&a, ordered_item("o", b"2")).await;
    let got = a.claim(claim_req("o", 10, true, LONG)).await.unwrap();
    assert_eq!(got.iter().map(|i| i.id).collect::<Vec<_>>(), vec![first]);
    assert!(a
        .claim(claim_req("o", 10, true, LONG))
        .await
        .unwrap()
        .is_empty());
    // A retry not yet due holds the route back: order over throughput.
    let later = SystemTime::now() + Duration::from_secs(3600);
    a.retry_later(got[0].lease(), later, "wait").await.unwrap();
    assert!(a
        .claim(claim_req("o", 10, true, LONG))
        .await
        .unwrap()
        .is_empty());
    pg.psql(&format!(
        "UPDATE deliveries SET next_attempt = now() WHERE request_id = {first}"
    ));
    let got = a.claim(claim_req("o", 10, true, LONG)).await.unwrap();
    assert_eq!(got[0].id, first);
    a.complete(got[0].lease()).await.unwrap();
    let got = a.claim(claim_req("o", 10, true, LONG)).await.unwrap();
    assert_eq!(got.iter().map(|i| i.id).collect::<Vec<_>>(), vec![second]);
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_hook_fed_and_drained_by_two_nodes_is_delivered_in_commit_order_one_at_a_time() {
    let pg = Pg::start_new();
    let a = open(&pg, "n1", "a").await;
    let b = open(&pg, "n2", "b").await;
    // Both nodes enqueue at once; the body says which node and its count.
    let feed = |spool: Spool, node: u8| async move {
        for i in 0..60u8 {
            spool.enqueue(ordered_item("o", &[node, i])).await.unwrap();
        }
    };
    let (x, y) = tokio::join!(
        tokio::spawn(feed(a.clone(), 1)),
        tokio::spawn(feed(b.clone(), 2))
    );
    x.unwrap();
    y.unwrap();
    let order: Vec<i64> = pg
        .psql("SELECT string_agg(request_id::text, ',' ORDER BY seq) FROM deliveries")
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(order.len(), 120);
    // Each node's own items keep their order within the sequence.
    let seq_body = pg.psql(
        "SELECT string_agg(encode(r.body, 'hex'), ',' ORDER BY d.seq) FROM deliveries d JOIN requests r ON r.id = d.request_id",
    );
    for node in ["01", "02"] {
        let mine: Vec<&str> = seq_body
            .split(',')
            .filter(|b| b.starts_with(node))
            .collect();
        let mut sorted = mine.clone();
        sorted.sort_unstable();
        assert_eq!(mine, sorted, "node {node}'s items out of order in seq");
    }
    // Two nodes drain it; a log of (start, end) per delivery shows order
    // and no overlap.
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let drain = |spool: Spool, log: Arc<std::sync::Mutex<Vec<(i64, &'static str)>>>| async move {
        let deadline = Instant::now() + WAIT;
        let mut done = 0;
        while Instant::now() < deadline {
            let got = spool.claim(claim_req("o", 4, true, LONG)).await.unwrap();
            let Some(it) = got.into_iter().next() else {
                let left = spool.depth().await.unwrap();
                if depth_of(&left, "o", ItemState::Pending)
                    + depth_of(&left, "o", ItemState::Leased)
                    == 0
                {
                    return done;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            log.lock().unwrap().push((it.id, "start"));
            tokio::time::sleep(Duration::from_millis(2)).await;
            log.lock().unwrap().push((it.id, "end"));
            spool.complete(it.lease()).await.unwrap();
            done += 1;
        }
        panic!("ordered drain did not finish within {WAIT:?}");
    };
    let (x, y) = tokio::join!(
        tokio::spawn(drain(a.clone(), log.clone())),
        tokio::spawn(drain(b.clone(), log.clone()))
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x + y, 120);
    let log = log.lock().unwrap().clone();
    let starts: Vec<i64> = log.iter().filter(|e| e.1 == "start").map(|e| e.0).collect();
    assert_eq!(starts, order, "delivered out of commit order");
    for pair in log.chunks(2) {
        assert_eq!(
            (pair[0].1, pair[1].1, pair[0].0),
            ("start", "end", pair[1].0),
            "two at once: {pair:?}"
        );
    }
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_are_duplicates_revive_dead_deliveries_and_replays_are_recognised() {
    let pg = Pg::start_new();
    let a = open(&pg, "n1", "a").await;
    let b = open(&pg, "n2", "b").await;
    let id = new_id(&a, item("h", Some("x"), b"1")).await;
    // Seen by another node too: the database is shared.
    assert_eq!(
        b.enqueue(item("h", Some("x"), b"1")).await.unwrap(),
        Enqueued::Duplicate(id)
    );
    let got = a.claim(claim_req("h", 1, false, LONG)).await.unwrap();
    a.mark_dead(got[0].lease(), "gave up").await.unwrap();
    assert_eq!(
        b.enqueue(item("h", Some("x"), b"1")).await.unwrap(),
        Enqueued::Revived(id)
    );
    assert_eq!(
        pg.psql(&format!(
            "SELECT state || ',' || attempts FROM deliveries WHERE request_id = {id}"
        )),
        "pending,0"
    );
    // Two copies in one batch: one item.
    let (p, q) = tokio::join!(
        a.enqueue(item("h", Some("y"), b"2")),
        a.enqueue(item("h", Some("y"), b"2"))
    );
    let (p, q) = (p.unwrap(), q.unwrap());
    let first = match (p, q) {
        (Enqueued::New(i), Enqueued::Duplicate(j)) | (Enqueued::Duplicate(j), Enqueued::New(i)) => {
            assert_eq!(i, j);
            i
        }
        other => panic!("{other:?}"),
    };
    assert!(first > 0);
    // The same signed content under another dedup id: a replay.
    let key = crate::spool::ReplayKey {
        digest: [7; 32],
        window: Duration::from_secs(300),
    };
    let mut r1 = item("h", Some("z1"), b"3");
    r1.repeats.replay = Some(key.clone());
    let r1_id = new_id(&a, r1).await;
    let mut r2 = item("h", Some("z2"), b"3");
    r2.repeats.replay = Some(key);
    assert_eq!(b.enqueue(r2).await.unwrap(), Enqueued::Replay(r1_id));
    assert_depth_matches_rows(&pg);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_reaching_two_nodes_at_the_same_moment_is_stored_once() {
    let pg = Pg::start_new();
    let a = open(&pg, "n1", "a").await;
    let b = open(&pg, "n2", "b").await;
    // Each round sends one dedup id to both nodes at once, plus a few other
    // items so both writers' batches are in flight together.
    for round in 0..40 {
        let id = format!("race-{round}");
        let filler = |n: usize| {
            let spool = if n % 2 == 0 { a.clone() } else { b.clone() };
            async move { spool.enqueue(item("h", None, b"filler")).await }
        };
        let (x, y, _, _) = tokio::join!(
            a.enqueue(item("h", Some(&id), b"r")),
            b.enqueue(item("h", Some(&id), b"r")),
            filler(0),
            filler(1),
        );
        match (x.unwrap(), y.unwrap()) {
            (Enqueued::New(i), Enqueued::Duplicate(j))
            | (Enqueued::Duplicate(j), Enqueued::New(i)) => {
                assert_eq!(i, j, "round {round}");
            }
            other => panic!("round {round}: both nodes answered {other:?}"),
        }
    }
    assert_eq!(
        pg.psql("SELECT count(*) FROM requests WHERE dedup_id LIKE 'race-%'"),
        "40"
    );
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_request_gets_one_delivery_per_route_claimed_and_finished_alone() {
    let pg = Pg::start_new();
    let a = open(&pg, "n1", "a").await;
    let mut new = item("r", None, b"x");
    new.routes = Some(vec!["deploy".into(), "notify".into()]);
    let id = new_id(&a, new).await;
    let route = |name: &str| crate::spool::ClaimRequest {
        route: Some(name.into()),
        ..claim_req("r", 10, false, LONG)
    };
    let deploy = a.claim(route("deploy")).await.unwrap();
    let notify = a.claim(route("notify")).await.unwrap();
    assert_eq!((deploy.len(), notify.len()), (1, 1));
    assert_eq!((deploy[0].id, notify[0].id), (id, id));
    assert_eq!((deploy[0].route(), notify[0].route()), ("deploy", "notify"));
    a.complete(deploy[0].lease()).await.unwrap();
    a.retry_later(notify[0].lease(), SystemTime::now(), "down")
        .await
        .unwrap();
    let states = pg.psql(&format!(
        "SELECT string_agg(route || '=' || state, ',' ORDER BY route) FROM deliveries WHERE request_id = {id}"
    ));
    assert_eq!(states, "deploy=done,notify=pending");
    assert_depth_matches_rows(&pg);
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_requests_are_kept_never_claimed_and_purged_after_their_keep_time() {
    let pg = Pg::start_new();
    let a = open(&pg, "n1", "a").await;
    let mut keep = item("f", None, b"kept");
    keep.filtered_until = Some(SystemTime::now() + Duration::from_secs(3600));
    let kept = new_id(&a, keep).await;
    let mut gone = item("f", None, b"gone");
    gone.filtered_until = Some(SystemTime::now() - Duration::from_secs(1));
    new_id(&a, gone).await;
    assert!(a
        .claim(claim_req("f", 10, false, LONG))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        depth_of(&a.depth().await.unwrap(), "f", ItemState::Filtered),
        2
    );
    // Done items: old ones go with their requests, fresh ones stay.
    let done = new_id(&a, item("d", None, b"1")).await;
    let got = a.claim(claim_req("d", 1, false, LONG)).await.unwrap();
    a.complete(got[0].lease()).await.unwrap();
    assert_eq!(
        a.purge_done(Duration::from_secs(3600)).await.unwrap(),
        1,
        "the filtered one past its time"
    );
    assert_eq!(
        pg.psql(&format!(
            "SELECT count(*) FROM requests WHERE id IN ({kept}, {done})"
        )),
        "2"
    );
    assert_eq!(a.purge_done(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(
        pg.psql(&format!("SELECT count(*) FROM requests WHERE id = {done}")),
        "0"
    );
    assert_depth_matches_rows(&pg);
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_hands_back_leases_and_a_restart_frees_a_dead_process_of_its_node() {
    let pg = Pg::start_new();
    let a = open(&pg, "n1", "a").await;
    for i in 0..3u8 {
        new_id(&a, item("h", None, &[i])).await;
    }
    let got = a.claim(claim_req("h", 2, false, LONG)).await.unwrap();
    assert_eq!(got.len(), 2);
    a.close().await;
    assert_eq!(
        pg.psql("SELECT count(*) FROM deliveries WHERE state = 'leased'"),
        "0"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM instances"), "0");
    // A process of node n1 that died holding a lease (pid 0 never runs):
    // the next process on n1 frees it at once; one on n2 would not.
    let b = open(&pg, "n1", "b").await;
    let got = b.claim(claim_req("h", 1, false, LONG)).await.unwrap();
    pg.psql(&format!(
        "INSERT INTO instances (id, node, pid) VALUES ('dead', 'n1', 0); \
         UPDATE deliveries SET lease_owner = 'dead' WHERE id = {}",
        got[0].lease().id
    ));
    let c = open(&pg, "n2", "c").await;
    assert_eq!(
        pg.psql("SELECT count(*) FROM deliveries WHERE state = 'leased'"),
        "1"
    );
    let d = open(&pg, "n1", "d").await;
    assert_eq!(
        pg.psql("SELECT count(*) FROM deliveries WHERE state = 'leased'"),
        "0"
    );
    assert_depth_matches_rows(&pg);
    for s in [b, c, d] {
        s.close().await;
    }
}

/// A cluster behind a fault proxy, and a node connected through it.
async fn behind_proxy(pg: &Pg) -> (TcpProxy, Spool) {
    let proxy = TcpProxy::start(pg.addr());
    let addr: SocketAddr = proxy.addr;
    let url = pg.url_via(addr);
    let spool = tokio::task::spawn_blocking(move || open_via(url, "n1", "a"))
        .await
        .unwrap()
        .unwrap();
    (proxy, spool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_fails_the_commit_within_its_limit_and_the_writer_recovers() {
    let pg = Pg::start_new();
    let (proxy, spool) = behind_proxy(&pg).await;
    new_id(&spool, item("h", None, b"before")).await;
    proxy.set_mode(Mode::Blackhole);
    let t0 = Instant::now();
    let res = spool.enqueue(item("h", None, b"lost")).await;
    let took = t0.elapsed();
    assert!(res.is_err(), "{res:?}");
    // commit_limit (3 s) plus one reconnect attempt (connect_timeout 2 s).
    assert!(took < Duration::from_secs(7), "took {took:?}");
    proxy.set_mode(Mode::Pass);
    let deadline = Instant::now() + WAIT;
    loop {
        match spool.enqueue(item("h", None, b"after")).await {
            Ok(Enqueued::New(_)) => break,
            other => assert!(
                Instant::now() < deadline,
                "not back within {WAIT:?}: {other:?}"
            ),
        }
    }
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_is_looked_up_and_answered_by_what_happened() {
    let pg = Pg::start_new();
    let (proxy, spool) = behind_proxy(&pg).await;
    new_id(&spool, item("h", None, b"warm")).await;
    // Replies stop from the COMMIT on: the server commits, hookd hears
    // nothing until the batch's limit, then asks on a new connection
    // (which the proxy passes again by then).
    // Connections so far (a slow machine may already have replaced one).
    let before = proxy.accepted();
    proxy.drop_replies_after(b"COMMIT\0");
    let enqueue = tokio::spawn({
        let spool = spool.clone();
        async move { spool.enqueue(item("h", None, b"ambiguous")).await }
    });
    let deadline = Instant::now() + WAIT;
    while proxy.mode() != Mode::DropReplies {
        assert!(Instant::now() < deadline, "the COMMIT never went out");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    proxy.set_mode(Mode::Pass);
    let res = enqueue.await.unwrap();
    let committed = pg.psql("SELECT count(*) FROM requests WHERE body = 'ambiguous'");
    assert_eq!(committed, "1", "the COMMIT reached the server");
    match res {
        Ok(Enqueued::New(id)) => {
            assert_eq!(
                pg.psql(&format!("SELECT count(*) FROM requests WHERE id = {id}")),
                "1"
            )
        }
        other => panic!("a committed item must be answered as stored: {other:?}"),
    }
    assert_eq!(
        proxy.accepted(),
        before + 1,
        "a new connection looked up the outcome"
    );
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_takes_its_expiry_from_the_database_clock() {
    let pg = Pg::start_new();
    let a = open(&pg, "n1", "a").await;
    new_id(&a, item("h", None, b"x")).await;
    let got = a
        .claim(claim_req("h", 1, false, Duration::from_secs(60)))
        .await
        .unwrap();
    let db_expiry = pg.psql(
        "SELECT extract(epoch FROM lease_expiry - now())::int FROM deliveries WHERE state = 'leased'",
    );
    let left: i64 = db_expiry.parse().unwrap();
    assert!((55..=60).contains(&left), "{left}");
    assert!(got[0].lease_expiry.is_some());
    a.close().await;
}
