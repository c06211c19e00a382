//! Enqueue, claim and the lease-ending transitions.

use std::time::{Duration, SystemTime};

use super::*;
use crate::spool::codec::{from_ms, to_ms};
use crate::spool::{Admin, DepthRow, Enqueued, ItemState, SpoolError};

const LONG: Duration = Duration::from_secs(300);

fn depth_of(rows: &[DepthRow], hook: &str, state: ItemState) -> u64 {
    rows.iter()
        .find(|r| r.hook == hook && r.state == state)
        .map_or(0, |r| r.count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_body_round_trip_arbitrary_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "a");
    let body: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let headers = vec![
        (
            "x-binary".to_string(),
            vec![0xff, 0x00, 0x80, 0xfe, b'\r', b'\n'],
        ),
        ("x-empty".to_string(), Vec::new()),
        ("x-signature".to_string(), b"sha256=abc".to_vec()),
    ];
    let mut new = item("gh", Some("d-1"), &body);
    new.headers = headers.clone();
    let Enqueued::New(id) = spool.enqueue(new.clone()).await.unwrap() else {
        panic!("first enqueue must be new");
    };
    spool.close().await;

    // Read back through a fresh process-level view: reopen and claim.
    let spool = open(dir.path(), "b");
    let items = spool.claim(claim_req("gh", 10, false, LONG)).await.unwrap();
    assert_eq!(items.len(), 1);
    let got = &items[0];
    assert_eq!(got.id, id);
    assert_eq!(got.headers, headers);
    assert_eq!(&got.body[..], &body[..]);
    assert_eq!(got.dedup_id.as_deref(), Some("d-1"));
    assert_eq!(to_ms(got.received_at), to_ms(new.received_at));
    spool.close().await;

    let shown = Admin::open(spool_path(dir.path()))
        .unwrap()
        .show(id)
        .unwrap();
    assert_eq!(shown.headers, headers);
    assert_eq!(&shown.body[..], &body[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_returns_first_id_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "a");
    let first = spool.enqueue(item("gh", Some("d"), b"1")).await.unwrap();
    let Enqueued::New(id) = first else {
        panic!("expected new, got {first:?}")
    };
    let again = spool.enqueue(item("gh", Some("d"), b"2")).await.unwrap();
    assert_eq!(again, Enqueued::Duplicate(id));
    // Same dedup id on another hook is another webhook.
    assert!(matches!(
        spool.enqueue(item("other", Some("d"), b"3")).await.unwrap(),
        Enqueued::New(_)
    ));
    // No dedup id: never a duplicate.
    let a = spool.enqueue(item("gh", None, b"4")).await.unwrap();
    let b = spool.enqueue(item("gh", None, b"4")).await.unwrap();
    assert!(matches!((a, b), (Enqueued::New(x), Enqueued::New(y)) if x != y));

    let depth = spool.depth().await.unwrap();
    assert_eq!(depth_of(&depth, "gh", ItemState::Pending), 3);
    assert_eq!(depth_of(&depth, "other", ItemState::Pending), 1);
    let items = spool.claim(claim_req("gh", 10, false, LONG)).await.unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(&items.iter().find(|i| i.id == id).unwrap().body[..], b"1");
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_ending_transitions() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "me");
    for n in 0..4u8 {
        spool.enqueue(item("h", None, &[n])).await.unwrap();
    }
    let before = SystemTime::now();
    let items = spool.claim(claim_req("h", 10, false, LONG)).await.unwrap();
    assert_eq!(items.len(), 4);
    for it in &items {
        assert_eq!(it.state, ItemState::Leased);
        assert_eq!(it.lease_owner.as_deref(), Some("me"));
        assert_eq!(it.attempts, 0);
        let expiry = it.lease_expiry.unwrap();
        assert!(expiry >= before + LONG - Duration::from_millis(1));
    }
    // Oldest first.
    let ids: Vec<i64> = items.iter().map(|i| i.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    // Nothing more to claim while leased.
    assert!(spool
        .claim(claim_req("h", 10, false, LONG))
        .await
        .unwrap()
        .is_empty());

    let later = SystemTime::now() + Duration::from_secs(3600);
    spool.complete(ids[0]).await.unwrap();
    spool
        .retry_later(ids[1], later, "upstream 502")
        .await
        .unwrap();
    spool.mark_dead(ids[2], "gave up").await.unwrap();
    spool.release(ids[3]).await.unwrap();

    let admin = Admin::open(spool.describe()).unwrap();
    let done = admin.show(ids[0]).unwrap();
    assert_eq!((done.state, done.attempts), (ItemState::Done, 1));
    assert_eq!((done.lease_owner, done.lease_expiry), (None, None));

    let retried = admin.show(ids[1]).unwrap();
    assert_eq!((retried.state, retried.attempts), (ItemState::Pending, 1));
    assert_eq!(retried.last_error.as_deref(), Some("upstream 502"));
    assert_eq!(to_ms(retried.next_attempt), to_ms(later));
    assert_eq!(retried.lease_owner, None);

    let dead = admin.show(ids[2]).unwrap();
    assert_eq!((dead.state, dead.attempts), (ItemState::Dead, 1));
    assert_eq!(dead.last_error.as_deref(), Some("gave up"));

    let released = admin.show(ids[3]).unwrap();
    assert_eq!((released.state, released.attempts), (ItemState::Pending, 0));
    assert_eq!((released.lease_owner, released.lease_expiry), (None, None));

    // Only the released one is due; the retried one waits for its time.
    let again = spool.claim(claim_req("h", 10, false, LONG)).await.unwrap();
    assert_eq!(again.iter().map(|i| i.id).collect::<Vec<_>>(), [ids[3]]);
    // Claimable later: the retry time, or the fresh lease's expiry.
    let next = spool.next_due("h", None).await.unwrap().unwrap();
    assert_eq!(
        to_ms(next),
        to_ms(later).min(to_ms(again[0].lease_expiry.unwrap()))
    );
    assert_eq!(spool.next_due("nothing-here", None).await.unwrap(), None);

    let depth = spool.depth().await.unwrap();
    assert_eq!(depth_of(&depth, "h", ItemState::Done), 1);
    assert_eq!(depth_of(&depth, "h", ItemState::Dead), 1);
    assert_eq!(depth_of(&depth, "h", ItemState::Pending), 1);
    assert_eq!(depth_of(&depth, "h", ItemState::Leased), 1);

    // Lease-ending calls on items we do not hold change nothing.
    spool.complete(ids[2]).await.unwrap();
    spool.release(ids[0]).await.unwrap();
    spool.complete(999_999).await.unwrap();
    assert_eq!(admin.show(ids[2]).unwrap().state, ItemState::Dead);
    assert_eq!(admin.show(ids[0]).unwrap().state, ItemState::Done);

    // Closing hands the leases this instance still holds back.
    spool.close().await;
    assert_eq!(admin.show(ids[3]).unwrap().state, ItemState::Pending);
    assert_counts_match_rows(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_lease_is_claimable_by_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a");
    let b = open(dir.path(), "b");
    let Enqueued::New(id) = a.enqueue(item("h", None, b"x")).await.unwrap() else {
        panic!()
    };
    // Long enough that the next claim surely comes before it expires.
    let lease = Duration::from_millis(1500);
    let first = a.claim(claim_req("h", 1, false, lease)).await.unwrap();
    assert_eq!(first.len(), 1);
    // A live lease is not claimable by the other instance.
    assert!(b
        .claim(claim_req("h", 1, false, LONG))
        .await
        .unwrap()
        .is_empty());
    let expiry = first[0].lease_expiry.unwrap();
    assert_eq!(b.next_due("h", None).await.unwrap(), Some(expiry));
    // Wait for the expiry itself (plus a millisecond of resolution).
    let wait = expiry.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(2)).await;

    let taken = b.claim(claim_req("h", 1, false, LONG)).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].id, id);
    assert_eq!(taken[0].lease_owner.as_deref(), Some("b"));
    // The first owner lost its lease: its completion changes nothing.
    a.complete(id).await.unwrap();
    let admin = Admin::open(a.describe()).unwrap();
    assert_eq!(admin.show(id).unwrap().state, ItemState::Leased);
    b.complete(id).await.unwrap();
    assert_eq!(admin.show(id).unwrap().state, ItemState::Done);
    a.close().await;
    b.close().await;
}

/// A paused process: its attempt outlived the lease, and the same instance
/// claimed the item again. The old attempt's writes, naming its own lease,
/// must not end the newer one; the newer attempt's must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_attempt_cannot_end_a_newer_lease_of_the_same_instance() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a");
    let Enqueued::New(id) = a.enqueue(item("h", None, b"x")).await.unwrap() else {
        panic!()
    };
    let first = a
        .claim(claim_req("h", 1, false, Duration::from_millis(50)))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let expiry = first[0].lease_expiry.unwrap();
    let wait = expiry.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(2)).await;
    let second = a.claim(claim_req("h", 1, false, LONG)).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, id);
    assert_ne!(first[0].lease(), second[0].lease());

    let admin = Admin::open(a.describe()).unwrap();
    let later = SystemTime::now() + Duration::from_secs(60);
    a.retry_later(first[0].lease(), later, "timed out")
        .await
        .unwrap();
    a.release(first[0].lease()).await.unwrap();
    a.mark_dead(first[0].lease(), "x").await.unwrap();
    a.complete_detached(first[0].lease()).unwrap();
    a.complete(first[0].lease()).await.unwrap();
    let shown = admin.show(id).unwrap();
    assert_eq!(
        shown.state,
        ItemState::Leased,
        "a stale write ended the newer lease"
    );
    assert_eq!(shown.attempts, 0);
    a.complete(second[0].lease()).await.unwrap();
    assert_eq!(admin.show(id).unwrap().state, ItemState::Done);
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_claim_takes_only_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "me");
    let mut ids = Vec::new();
    for n in 0..3u8 {
        match spool.enqueue(item("o", None, &[n])).await.unwrap() {
            Enqueued::New(id) => ids.push(id),
            other => panic!("{other:?}"),
        }
    }
    let ordered = |max| claim_req("o", max, true, LONG);
    let head = spool.claim(ordered(5)).await.unwrap();
    assert_eq!(head.iter().map(|i| i.id).collect::<Vec<_>>(), [ids[0]]);
    // Head under a live lease: nothing, not even the next item.
    assert!(spool.claim(ordered(5)).await.unwrap().is_empty());
    spool.complete(ids[0]).await.unwrap();

    let second = spool.claim(ordered(5)).await.unwrap();
    assert_eq!(second.iter().map(|i| i.id).collect::<Vec<_>>(), [ids[1]]);
    // Head waiting for its retry time: the third item must still wait.
    let later = SystemTime::now() + Duration::from_secs(3600);
    spool.retry_later(ids[1], later, "boom").await.unwrap();
    assert!(spool.claim(ordered(5)).await.unwrap().is_empty());
    assert_eq!(
        spool.next_due("o", None).await.unwrap().map(to_ms),
        Some(to_ms(later))
    );

    // Make the head due again (as an operator retry would): it comes next.
    super::raw(dir.path())
        .execute("UPDATE items SET next_attempt = 0 WHERE id = ?1", [ids[1]])
        .unwrap();
    let again = spool.claim(ordered(5)).await.unwrap();
    assert_eq!(again.iter().map(|i| i.id).collect::<Vec<_>>(), [ids[1]]);
    assert_eq!(again[0].attempts, 1);
    assert_eq!(from_ms(0), again[0].next_attempt);

    // An expired head lease is claimable again, still only the head.
    spool.release(ids[1]).await.unwrap();
    let short = spool
        .claim(claim_req("o", 5, true, Duration::from_millis(50)))
        .await
        .unwrap();
    assert_eq!(short[0].id, ids[1]);
    let wait = short[0]
        .lease_expiry
        .unwrap()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(2)).await;
    let after = spool.claim(ordered(5)).await.unwrap();
    assert_eq!(after.iter().map(|i| i.id).collect::<Vec<_>>(), [ids[1]]);
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_done_removes_only_old_done_items() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "me");
    for n in 0..3u8 {
        spool.enqueue(item("h", None, &[n])).await.unwrap();
    }
    let items = spool.claim(claim_req("h", 3, false, LONG)).await.unwrap();
    spool.complete(items[0].id).await.unwrap();
    spool.complete(items[1].id).await.unwrap();
    spool.mark_dead(items[2].id, "x").await.unwrap();
    assert_eq!(
        spool.purge_done(Duration::from_secs(3600)).await.unwrap(),
        0
    );

    // Back-date: one done item two hours old, the dead one too (kept).
    let conn = super::raw(dir.path());
    let hours_ago = |h: i64| to_ms(SystemTime::now()) - h * 3_600_000;
    for id in [items[0].id, items[2].id] {
        conn.execute(
            "UPDATE items SET updated_at = ?2 WHERE id = ?1",
            rusqlite::params![id, hours_ago(2)],
        )
        .unwrap();
    }
    assert_eq!(
        spool.purge_done(Duration::from_secs(3600)).await.unwrap(),
        1
    );
    let admin = Admin::open(spool.describe()).unwrap();
    assert!(matches!(
        admin.show(items[0].id),
        Err(SpoolError::NotFound(_))
    ));
    assert_eq!(admin.show(items[1].id).unwrap().state, ItemState::Done);
    assert_eq!(admin.show(items[2].id).unwrap().state, ItemState::Dead);

    // More done rows than one purge chunk: all go, in several commits.
    conn.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4500) \
         INSERT INTO items (hook, received_at, headers, body, state, next_attempt, updated_at) \
         SELECT 'bulk', 0, x'', x'', 'done', 0, 0 FROM n",
    )
    .unwrap();
    crate::spool::counts::recount(&conn).unwrap();
    assert_eq!(
        spool.purge_done(Duration::from_secs(60)).await.unwrap(),
        4500
    );
    let depth = spool.depth().await.unwrap();
    assert_eq!(depth_of(&depth, "bulk", ItemState::Done), 0);
    assert_eq!(depth_of(&depth, "h", ItemState::Done), 1);
    spool.close().await;
    assert_counts_match_rows(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrivals_wake_a_waiting_dispatcher() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "me");
    let arrivals = spool.arrivals();
    // Whether the waiter registers before or after the commit, it wakes:
    // notify_waiters covers the first case, the stored permit the second.
    let waiter = tokio::spawn(async move { arrivals.notified().await });
    spool.enqueue(item("h", None, b"x")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken within 5 s")
        .unwrap();
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_spool_answers_closed() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "me");
    let other = spool.clone();
    spool.enqueue(item("h", None, b"x")).await.unwrap();
    spool.close().await;
    assert!(matches!(
        other.enqueue(item("h", None, b"y")).await,
        Err(SpoolError::Closed)
    ));
    assert!(matches!(other.depth().await, Err(SpoolError::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_complete_is_committed_before_what_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "a");
    enqueue_n(&spool, 3).await;
    let items = spool.claim(claim_req("gh", 3, false, LONG)).await.unwrap();
    assert_eq!(items.len(), 3);
    spool.complete_detached(items[0].id).unwrap();
    spool.complete_detached(items[1].id).unwrap();
    // Nothing awaited the two: the Close queued behind them must find them
    // committed, and the close releases the third lease.
    let handle = spool.clone();
    spool.close().await;
    assert!(matches!(
        handle.complete_detached(items[2].id),
        Err(SpoolError::Closed)
    ));

    let admin = Admin::open(spool_path(dir.path())).unwrap();
    let states: Vec<ItemState> = items
        .iter()
        .map(|i| admin.show(i.id).unwrap().state)
        .collect();
    assert_eq!(
        states,
        [ItemState::Done, ItemState::Done, ItemState::Pending]
    );
    let attempts = admin.show(items[0].id).unwrap().attempts;
    assert_eq!(attempts, 1);
    let depth = admin.stats().unwrap().depth;
    assert_eq!(depth_of(&depth, "gh", ItemState::Done), 2);
    assert_eq!(depth_of(&depth, "gh", ItemState::Pending), 1);
    assert_eq!(depth_of(&depth, "gh", ItemState::Leased), 0);
}

/// Makes every UPDATE that moves item `id` to `state` fail with a statement
/// error: RAISE(ABORT) undoes that statement only, the transaction goes on.
fn fail_update_to(dir: &std::path::Path, id: i64, state: &str) {
    raw(dir)
        .execute_batch(&format!(
            "CREATE TRIGGER fail_{id}_{state} BEFORE UPDATE OF state ON items \
             WHEN OLD.id = {id} AND NEW.state = '{state}' \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
        ))
        .unwrap();
}

fn state_of(dir: &std::path::Path, id: i64) -> String {
    raw(dir)
        .query_row("SELECT state FROM items WHERE id = ?1", [id], |r| r.get(0))
        .unwrap()
}

async fn enqueue_n(spool: &crate::spool::Spool, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for k in 0..n {
        let body = format!("{{\"k\":{k}}}");
        match spool.enqueue(item("gh", None, body.as_bytes())).await {
            Ok(Enqueued::New(id)) => ids.push(id),
            other => panic!("enqueue {k}: {other:?}"),
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_fails_half_way_answers_with_the_leases_it_made() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "a");
    let ids = enqueue_n(&spool, 3).await;
    fail_update_to(dir.path(), ids[1], "leased");

    let items = spool.claim(claim_req("gh", 3, false, LONG)).await.unwrap();
    let claimed: Vec<i64> = items.iter().map(|i| i.id).collect();
    assert_eq!(claimed, [ids[0]]);
    // Now the failing item comes first: nothing leased, so the error is the answer.
    let again = spool.claim(claim_req("gh", 3, false, LONG)).await;
    assert!(again.is_err(), "{again:?}");

    let states: Vec<String> = ids.iter().map(|&id| state_of(dir.path(), id)).collect();
    assert_eq!(states, ["leased", "pending", "pending"]);
    let depth = spool.depth().await.unwrap();
    assert_eq!(depth_of(&depth, "gh", ItemState::Leased), 1);
    assert_eq!(depth_of(&depth, "gh", ItemState::Pending), 2);
    assert_counts_match_rows(dir.path());
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_complete_that_fails_leaves_its_item_leased_and_the_batch_committed() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "a");
    let ids = enqueue_n(&spool, 2).await;
    let items = spool.claim(claim_req("gh", 2, false, LONG)).await.unwrap();
    assert_eq!(items.len(), 2);
    fail_update_to(dir.path(), ids[0], "done");

    spool.complete_detached(ids[0]).unwrap();
    // Queued behind it, so answered only once the detached one has run.
    spool.complete(ids[1]).await.unwrap();

    assert_eq!(state_of(dir.path(), ids[0]), "leased");
    assert_eq!(state_of(dir.path(), ids[1]), "done");
    let depth = spool.depth().await.unwrap();
    assert_eq!(depth_of(&depth, "gh", ItemState::Leased), 1);
    assert_eq!(depth_of(&depth, "gh", ItemState::Done), 1);
    assert_counts_match_rows(dir.path());
    spool.close().await;
}

/// Overwrites item `id`'s headers with a blob that does not decode.
fn corrupt_headers(dir: &std::path::Path, id: i64) {
    raw(dir)
        .execute(
            "UPDATE items SET headers = x'ffffffff01' WHERE id = ?1",
            [id],
        )
        .unwrap();
}

fn last_error_of(dir: &std::path::Path, id: i64) -> Option<String> {
    raw(dir)
        .query_row("SELECT last_error FROM items WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_cannot_be_decoded_is_marked_dead_and_claims_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "a");
    let ids = enqueue_n(&spool, 3).await;
    corrupt_headers(dir.path(), ids[0]);

    // The claim skips the broken row and leases the others.
    let items = spool.claim(claim_req("gh", 3, false, LONG)).await.unwrap();
    let claimed: Vec<i64> = items.iter().map(|i| i.id).collect();
    assert_eq!(claimed, [ids[1], ids[2]]);
    assert_eq!(state_of(dir.path(), ids[0]), "dead");
    let reason = last_error_of(dir.path(), ids[0]).unwrap_or_default();
    assert!(
        reason.starts_with("the stored item cannot be read back, so it cannot be delivered: ")
            && reason.contains("malformed headers"),
        "{reason}"
    );
    let depth = spool.depth().await.unwrap();
    assert_eq!(depth_of(&depth, "gh", ItemState::Dead), 1);
    assert_eq!(depth_of(&depth, "gh", ItemState::Leased), 2);
    assert_eq!(depth_of(&depth, "gh", ItemState::Pending), 0);
    assert_counts_match_rows(dir.path());

    // An ordered hook whose head is broken is not blocked behind it, and
    // its expired-lease path marks the row the same way.
    let mut ordered_ids = Vec::new();
    for n in 0..2u8 {
        match spool.enqueue(item("o", None, &[n])).await.unwrap() {
            Enqueued::New(id) => ordered_ids.push(id),
            other => panic!("{other:?}"),
        }
    }
    let short = spool
        .claim(claim_req("o", 1, true, Duration::from_millis(20)))
        .await
        .unwrap();
    assert_eq!(short[0].id, ordered_ids[0]);
    corrupt_headers(dir.path(), ordered_ids[0]);
    tokio::time::sleep(Duration::from_millis(40)).await;
    let ordered = || claim_req("o", 1, true, LONG);
    assert!(spool.claim(ordered()).await.unwrap().is_empty());
    assert_eq!(state_of(dir.path(), ordered_ids[0]), "dead");
    let next = spool.claim(ordered()).await.unwrap();
    assert_eq!(
        next.iter().map(|i| i.id).collect::<Vec<_>>(),
        [ordered_ids[1]]
    );
    assert_counts_match_rows(dir.path());
    spool.close().await;
}

fn with_window(mut new: NewItem, window: Duration, ago: Duration) -> NewItem {
    new.repeats.dedup_window = Some(window);
    new.received_at = SystemTime::now() - ago;
    new
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_within_the_dedup_window_is_a_duplicate_and_after_it_a_new_item() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "a");
    let hour = Duration::from_secs(3600);
    // First copy arrived 90 minutes ago, window one hour: it is over.
    let old = with_window(item("gh", Some("d"), b"1"), hour, Duration::from_secs(5400));
    let Enqueued::New(first) = spool.enqueue(old).await.unwrap() else {
        panic!("first copy must be new")
    };
    let now = with_window(item("gh", Some("d"), b"2"), hour, Duration::ZERO);
    let Enqueued::New(second) = spool.enqueue(now.clone()).await.unwrap() else {
        panic!("a repeat after the window must be spooled anew")
    };
    assert!(second > first);
    // Within the window of the latest copy: a duplicate of that one.
    assert_eq!(
        spool.enqueue(now.clone()).await.unwrap(),
        Enqueued::Duplicate(second)
    );
    // No window: a duplicate as long as the item is kept, however old.
    let mut forever = now;
    forever.repeats.dedup_window = None;
    forever.received_at = SystemTime::now() + Duration::from_secs(365 * 86400);
    assert_eq!(
        spool.enqueue(forever).await.unwrap(),
        Enqueued::Duplicate(second)
    );
    let depth = spool.depth().await.unwrap();
    assert_eq!(depth_of(&depth, "gh", ItemState::Pending), 2);
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_of_a_dead_item_revives_it_and_a_repeat_of_a_done_one_stays_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "a");
    let Enqueued::New(dead) = spool.enqueue(item("gh", Some("x"), b"1")).await.unwrap() else {
        panic!()
    };
    let Enqueued::New(done) = spool.enqueue(item("gh", Some("y"), b"2")).await.unwrap() else {
        panic!()
    };
    let claimed = spool.claim(claim_req("gh", 10, false, LONG)).await.unwrap();
    assert_eq!(claimed.len(), 2);
    spool.mark_dead(dead, "gave up").await.unwrap();
    spool.complete(done).await.unwrap();

    assert_eq!(
        spool
            .enqueue(item("gh", Some("x"), b"again"))
            .await
            .unwrap(),
        Enqueued::Revived(dead)
    );
    assert_eq!(
        spool
            .enqueue(item("gh", Some("y"), b"again"))
            .await
            .unwrap(),
        Enqueued::Duplicate(done)
    );
    // Revived once: a second repeat while it is pending is a duplicate.
    assert_eq!(
        spool
            .enqueue(item("gh", Some("x"), b"again"))
            .await
            .unwrap(),
        Enqueued::Duplicate(dead)
    );
    let depth = spool.depth().await.unwrap();
    assert_eq!(depth_of(&depth, "gh", ItemState::Pending), 1);
    assert_eq!(depth_of(&depth, "gh", ItemState::Dead), 0);
    assert_eq!(depth_of(&depth, "gh", ItemState::Done), 1);
    let again = spool.claim(claim_req("gh", 10, false, LONG)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, dead);
    assert_eq!(again[0].attempts, 0, "a fresh attempt count");
    assert_eq!(again[0].last_error, None);
    assert_eq!(&again[0].body[..], b"1", "the stored copy is kept");
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_replay_key_within_its_window_is_a_replay_under_any_dedup_id() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "a");
    let key = |digest: u8, window: Duration| crate::spool::ReplayKey {
        digest: [digest; 32],
        window,
    };
    let hour = Duration::from_secs(3600);
    let mut a = item("gh", Some("d-1"), b"body");
    a.repeats.replay = Some(key(1, hour));
    a.received_at = SystemTime::now() - Duration::from_secs(600);
    let Enqueued::New(first) = spool.enqueue(a.clone()).await.unwrap() else {
        panic!()
    };
    // A new delivery id, same signed content, ten minutes later.
    let mut b = a.clone();
    b.dedup_id = Some("d-2".into());
    b.received_at = SystemTime::now();
    assert_eq!(
        spool.enqueue(b.clone()).await.unwrap(),
        Enqueued::Replay(first)
    );
    let mut no_id = b.clone();
    no_id.dedup_id = None;
    assert_eq!(spool.enqueue(no_id).await.unwrap(), Enqueued::Replay(first));
    // A window shorter than the gap: accepted.
    let mut late = b.clone();
    late.repeats.replay = Some(key(1, Duration::from_secs(60)));
    assert!(matches!(
        spool.enqueue(late).await.unwrap(),
        Enqueued::New(_)
    ));
    // Another digest, or another hook: accepted.
    let mut other = b.clone();
    other.dedup_id = Some("d-3".into());
    other.repeats.replay = Some(key(2, hour));
    assert!(matches!(
        spool.enqueue(other).await.unwrap(),
        Enqueued::New(_)
    ));
    let mut elsewhere = a.clone();
    elsewhere.hook = "other".into();
    assert!(matches!(
        spool.enqueue(elsewhere).await.unwrap(),
        Enqueued::New(_)
    ));
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_enqueued_at_once_make_one_item_whatever_batches_they_share() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "a");
    let mut tasks = Vec::new();
    for n in 0..64u8 {
        let spool = spool.clone();
        let mut copy = item("gh", Some("same"), &[n]);
        copy.repeats.replay = Some(crate::spool::ReplayKey {
            digest: [7; 32],
            window: LONG,
        });
        // Half share the dedup id, half only the replay key.
        if n % 2 == 1 {
            copy.dedup_id = Some(format!("other-{n}"));
        }
        tasks.push(tokio::spawn(async move { spool.enqueue(copy).await }));
    }
    let mut new = Vec::new();
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Enqueued::New(id) => new.push(id),
            Enqueued::Duplicate(_) | Enqueued::Replay(_) => {}
            Enqueued::Revived(id) => panic!("nothing was dead, yet {id} was revived"),
        }
    }
    assert_eq!(new.len(), 1, "new items: {new:?}");
    let depth = spool.depth().await.unwrap();
    assert_eq!(depth_of(&depth, "gh", ItemState::Pending), 1);
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_items_are_kept_never_claimed_and_pending_again_on_retry() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "me");
    let keep = SystemTime::now() + Duration::from_secs(3600);
    let filtered = |n: u8, hook: &str| NewItem {
        filtered_until: Some(keep),
        routes: None,
        ordered: Vec::new(),
        ..item(hook, Some(&format!("f{n}")), &[n])
    };
    let Enqueued::New(f1) = spool.enqueue(filtered(1, "h")).await.unwrap() else {
        panic!("new item expected");
    };
    spool.enqueue(filtered(2, "h")).await.unwrap();
    spool.enqueue(filtered(3, "other")).await.unwrap();
    let Enqueued::New(p) = spool.enqueue(item("h", None, b"p")).await.unwrap() else {
        panic!("new item expected");
    };
    // A repeat of a filtered delivery id is a duplicate of it.
    assert_eq!(
        spool.enqueue(filtered(1, "h")).await.unwrap(),
        Enqueued::Duplicate(f1)
    );
    let depth = spool.depth().await.unwrap();
    assert_eq!(depth_of(&depth, "h", ItemState::Filtered), 2);
    assert_eq!(depth_of(&depth, "h", ItemState::Pending), 1);
    // Neither an ordinary nor an ordered claim takes a filtered item.
    let mut p = p;
    for ordered in [false, true] {
        let got = spool
            .claim(claim_req("h", 10, ordered, LONG))
            .await
            .unwrap();
        assert_eq!(got.iter().map(|i| i.id).collect::<Vec<_>>(), [p]);
        spool.complete(p).await.unwrap();
        let Enqueued::New(next) = spool.enqueue(item("h", None, b"p2")).await.unwrap() else {
            panic!("new item expected");
        };
        p = next;
    }
    let admin = Admin::open(spool.describe()).unwrap();
    assert_eq!(admin.show(f1).unwrap().state, ItemState::Filtered);
    assert_eq!(admin.retry_filtered("h").unwrap(), 2);
    assert_eq!(admin.retry_filtered("h").unwrap(), 0);
    let got = spool.claim(claim_req("h", 10, false, LONG)).await.unwrap();
    let mut ids: Vec<i64> = got.iter().map(|i| i.id).collect();
    ids.sort_unstable();
    assert_eq!(
        ids.len(),
        3,
        "both filtered items and the second pending one"
    );
    assert!(ids.contains(&f1));
    let depth = spool.depth().await.unwrap();
    assert_eq!(depth_of(&depth, "other", ItemState::Filtered), 1);
    spool.close().await;
    assert_counts_match_rows(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_filtered_items_past_their_keep_time_only() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), "me");
    let at = |secs: i64| {
        let now = SystemTime::now();
        if secs < 0 {
            now - Duration::from_secs(secs.unsigned_abs())
        } else {
            now + Duration::from_secs(secs as u64)
        }
    };
    let mut ids = Vec::new();
    for until in [-60, -1, 3600] {
        let it = NewItem {
            filtered_until: Some(at(until)),
            routes: None,
            ordered: Vec::new(),
            ..item("h", None, b"f")
        };
        let Enqueued::New(id) = spool.enqueue(it).await.unwrap() else {
            panic!("new item expected");
        };
        ids.push(id);
    }
    assert_eq!(
        spool.purge_done(Duration::from_secs(3600)).await.unwrap(),
        2
    );
    let admin = Admin::open(spool.describe()).unwrap();
    assert!(matches!(admin.show(ids[0]), Err(SpoolError::NotFound(_))));
    assert!(matches!(admin.show(ids[1]), Err(SpoolError::NotFound(_))));
    let kept = admin.show(ids[2]).unwrap();
    assert_eq!(kept.state, ItemState::Filtered);
    assert!(from_ms(to_ms(kept.next_attempt)) > SystemTime::now());
    spool.close().await;
    assert_counts_match_rows(dir.path());
}
