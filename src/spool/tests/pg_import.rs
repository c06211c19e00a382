//! `hookd spool migrate --to postgres://…` (pg/import.rs) on real parts:
//! an SQLite spool filled through the `Spool` API (leases left by a hookd
//! process that really crashed: a child process that aborts holding them),
//! a real PostgreSQL server (a fresh database per test in one shared
//! cluster), a real connection fault between them (tests/faults/tcp_proxy.rs),
//! and a PostgreSQL `Spool` that serves the copy afterwards.
//!
//! Plain `#[test]`s: the copy blocks on its own runtime, as the CLI does.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls};

use super::pg_cluster::{Pg, ROLE};
use super::tcp_proxy::{Mode, TcpProxy};
use super::{claim_req, item, open, spool_path};
use crate::spool::codec::encode_headers;
use crate::spool::pg::admin::runtime;
use crate::spool::pg::import::{copy_sqlite_to_postgres, CopyOptions, CopyReport, ImportError};
use crate::spool::pg::PgOptions;
use crate::spool::{
    ClaimRequest, Enqueued, NewItem, ReplayKey, Spool, SpoolError, SpoolOptions, Store,
};

const LONG: Duration = Duration::from_secs(300);
const HOUR: Duration = Duration::from_secs(3600);

/// The cluster of the tests running now; the last one to finish stops it.
fn cluster() -> Arc<Pg> {
    static SHARED: Mutex<Weak<Pg>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(pg) = shared.upgrade() {
        return pg;
    }
    let pg = Arc::new(Pg::start_new());
    *shared = Arc::downgrade(&pg);
    pg
}

fn connect(rt: &Runtime, url: &str) -> Client {
    let (client, conn) = rt.block_on(tokio_postgres::connect(url, NoTls)).unwrap();
    rt.spawn(conn);
    client
}

/// A fresh, empty database (no hookd schema: the copy makes it) and a
/// client of the test's own for checking rows.
struct Target {
    db: String,
    rt: Runtime,
    client: Client,
    // Last: the clients above go before the cluster may stop.
    pg: Arc<Pg>,
}

impl Target {
    fn new() -> Target {
        static N: AtomicU32 = AtomicU32::new(0);
        let pg = cluster();
        let db = format!(
            "import_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        pg.psql(&format!("CREATE DATABASE {db} TEMPLATE template0"));
        let rt = runtime().unwrap();
        let client = connect(&rt, &url_at(&pg, pg.addr(), &db));
        Target { db, rt, client, pg }
    }

    fn url(&self) -> String {
        url_at(&self.pg, self.pg.addr(), &self.db)
    }

    /// The copy as the CLI runs it: its own runtime and connection to `url`.
    fn copy_via(
        &self,
        url: &str,
        dir: &Path,
        opts: &CopyOptions,
    ) -> Result<CopyReport, SpoolError> {
        let rt = runtime().unwrap();
        let mut client = connect(&rt, url);
        copy_sqlite_to_postgres(&spool_path(dir), &rt, &mut client, opts)
    }

    fn copy(&self, dir: &Path, opts: &CopyOptions) -> Result<CopyReport, SpoolError> {
        self.copy_via(&self.url(), dir, opts)
    }

    fn i64(&self, sql: &str) -> i64 {
        let row = self.rt.block_on(self.client.query_one(sql, &[])).unwrap();
        row.get(0)
    }

    fn text(&self, sql: &str) -> Option<String> {
        let row = self.rt.block_on(self.client.query_one(sql, &[])).unwrap();
        row.get(0)
    }

    fn ids(&self, sql: &str) -> Vec<i64> {
        self.rt
            .block_on(self.client.query(sql, &[]))
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    fn rows4(&self, sql: &str) -> Vec<(String, String, String, i64)> {
        self.rt
            .block_on(self.client.query(sql, &[]))
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    /// The depth counters summed over nodes agree with the rows.
    fn assert_counts_match_rows(&self) {
        let (counted, rows) = self.rt.block_on(super::pg_depth_vs_rows(&self.client));
        assert_eq!(
            counted, rows,
            "depth_counts (left) against the rows (right)"
        );
    }

    /// The delivery of `request` to `route`: (state, attempts, last_error,
    /// lease cleared, seq).
    fn delivery(
        &self,
        request: i64,
        route: &str,
    ) -> (String, i32, Option<String>, bool, Option<i64>) {
        let row = self
            .rt
            .block_on(self.client.query_one(
                "SELECT state, attempts, last_error, lease_owner IS NULL AND lease_expiry IS NULL, \
                 seq FROM deliveries WHERE request_id = $1 AND route = $2",
                &[&request, &route],
            ))
            .unwrap();
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))
    }

    /// A hookd node's spool on this database.
    fn node(&self, node: &str, instance: &str) -> Spool {
        Spool::open(SpoolOptions {
            store: Store::Postgres(PgOptions {
                connect: super::pg_connector(&self.url()),
                name: "test database".into(),
                node: node.into(),
                connect_timeout: Duration::from_secs(2),
                commit_limit: Duration::from_secs(3),
            }),
            instance_id: instance.into(),
            max_batch: 1024,
            on_commit: None,
        })
        .unwrap()
    }
}

fn url_at(pg: &Pg, addr: std::net::SocketAddr, db: &str) -> String {
    format!("postgres://{ROLE}:{}@{addr}/{db}", pg.password())
}

fn opts(target: &Target, retain_done: Duration) -> CopyOptions {
    CopyOptions {
        ordered: vec![
            ("gh".into(), "notify".into()),
            ("ord".into(), "default".into()),
        ],
        ..CopyOptions::new(format!("test database {}", target.db), retain_done)
    }
}

/// A runtime to drive `Spool` futures from a plain test.
fn async_rt() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn new_id(spool: &Spool, new: NewItem) -> i64 {
    match spool.enqueue(new).await.unwrap() {
        Enqueued::New(id) => id,
        other => panic!("expected a new item, got {other:?}"),
    }
}

fn routed(hook: &str, dedup: Option<&str>, body: &[u8], routes: &[&str]) -> NewItem {
    let mut new = item(hook, dedup, body);
    new.routes = Some(routes.iter().map(|r| r.to_string()).collect());
    new.ordered = routes
        .iter()
        .filter(|r| **r == "notify")
        .map(|r| r.to_string())
        .collect();
    new
}

fn route_req(hook: &str, route: &str, max: usize, ordered: bool) -> ClaimRequest {
    ClaimRequest {
        route: Some(route.to_string()),
        ..claim_req(hook, max, ordered, LONG)
    }
}

/// The environment variable that makes [`crash_holding_leases`] run: the
/// directory of the spool it opens.
const CRASH_DIR: &str = "HOOKD_TEST_IMPORT_CRASH_DIR";

/// Not a test of its own: run by [`crash_child`] in a child process, it
/// claims one due item of hook `plain` and one delivery of `gh`'s route
/// `deploy`, then aborts — a hookd killed holding two leases. Its instance
/// row stays in the file, naming a process that is gone.
#[test]
#[ignore = "run by crash_child in a child process"]
fn crash_holding_leases() {
    let Some(dir) = std::env::var_os(CRASH_DIR) else {
        return;
    };
    let rt = async_rt();
    let spool = open(Path::new(&dir), "crashed");
    rt.block_on(async {
        let a = spool
            .claim(claim_req("plain", 1, false, LONG))
            .await
            .unwrap();
        let b = spool
            .claim(route_req("gh", "deploy", 1, false))
            .await
            .unwrap();
        println!("LEASED {} {}", a[0].id, b[0].id);
    });
    std::process::abort();
}

/// Runs [`crash_holding_leases`] on `dir` in a child process; the two ids
/// whose leases it left (plain item, routed request).
fn crash_child(dir: &Path) -> (i64, i64) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "spool::tests::pg_import::crash_holding_leases",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR, dir)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the child aborts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("LEASED ").map(|(_, ids)| ids))
        .unwrap_or_else(|| {
            panic!(
                "child output: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let mut ids = line.split(' ').map(|s| s.parse::<i64>().unwrap());
    (ids.next().unwrap(), ids.next().unwrap())
}

/// The ids of the filled spool, by what was done to them.
struct Filled {
    p_retry: i64,
    p_dead: i64,
    p_old_done: i64,
    p_done: i64,
    p_leased: i64,
    p_due: i64,
    p_filtered: i64,
    filtered_until: SystemTime,
    p_replay: i64,
    r1: i64,
    r2: i64,
    r3: i64,
    r_old: i64,
    ords: Vec<i64>,
    /// Between the old done rows and the recent ones (spool clock).
    mid: SystemTime,
}

/// Fills `dir`'s spool through the API (then a crash leaves two leases):
/// hook `plain` with one item in each state (two done: one long ago, by
/// the retention given below), a filtered one and one with a replay key;
/// routed hook `gh` (routes deploy, notify; notify ordered); plain ordered
/// hook `ord`.
fn fill(dir: &Path) -> Filled {
    let rt = async_rt();
    let spool = open(dir, "a");
    let f = rt.block_on(async {
        let claim_one = |hook: &'static str| {
            let spool = &spool;
            async move {
                let mut got = spool.claim(claim_req(hook, 1, false, LONG)).await.unwrap();
                assert_eq!(got.len(), 1);
                got.remove(0)
            }
        };
        let p_retry = new_id(&spool, item("plain", Some("d-retry"), b"retry")).await;
        let it = claim_one("plain").await;
        assert_eq!(it.id, p_retry);
        spool
            .retry_later(it.lease(), crate::spool::now() + HOUR, "HTTP 502")
            .await
            .unwrap();
        let p_dead = new_id(&spool, item("plain", None, b"dead")).await;
        let it = claim_one("plain").await;
        assert_eq!(it.id, p_dead);
        spool.mark_dead(it.lease(), "gave up").await.unwrap();

        let p_old_done = new_id(&spool, item("plain", None, b"old done")).await;
        let it = claim_one("plain").await;
        assert_eq!(it.id, p_old_done);
        spool.complete(it.lease()).await.unwrap();
        let r_old = new_id(&spool, routed("gh", None, b"old routed", &["deploy"])).await;
        let d = spool
            .claim(route_req("gh", "deploy", 1, false))
            .await
            .unwrap();
        assert_eq!(d[0].id, r_old);
        spool.complete(d[0].lease()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mid = crate::spool::now();
        // Wide: the copy draws its line a little after the test computes it.
        tokio::time::sleep(Duration::from_millis(1500)).await;

        let p_done = new_id(&spool, item("plain", None, b"done")).await;
        let it = claim_one("plain").await;
        assert_eq!(it.id, p_done);
        spool.complete(it.lease()).await.unwrap();

        let r1 = new_id(&spool, routed("gh", None, b"r1", &["deploy", "notify"])).await;
        let d = spool
            .claim(route_req("gh", "deploy", 1, false))
            .await
            .unwrap();
        assert_eq!(d[0].id, r1);
        spool.complete(d[0].lease()).await.unwrap();
        let r2 = new_id(&spool, routed("gh", None, b"r2", &["deploy", "notify"])).await;
        let d = spool
            .claim(route_req("gh", "deploy", 1, false))
            .await
            .unwrap();
        assert_eq!(d[0].id, r2);
        spool
            .mark_dead(d[0].lease(), "deploy failed")
            .await
            .unwrap();
        let r3 = new_id(
            &spool,
            routed("gh", Some("gh-3"), b"r3", &["deploy", "notify"]),
        )
        .await;

        // Due again at once after one attempt: the crash leases it.
        let p_leased = new_id(&spool, item("plain", None, b"leased")).await;
        let it = claim_one("plain").await;
        assert_eq!(it.id, p_leased);
        spool
            .retry_later(it.lease(), crate::spool::now(), "timed out")
            .await
            .unwrap();
        let p_due = new_id(&spool, item("plain", Some("d-1"), b"due")).await;
        let filtered_until = crate::spool::now() + Duration::from_secs(86_400);
        let mut filtered = item("plain", None, b"filtered");
        filtered.filtered_until = Some(filtered_until);
        let p_filtered = new_id(&spool, filtered).await;
        let mut replay = item("plain", None, b"replay");
        replay.repeats.replay = Some(ReplayKey {
            digest: [7; 32],
            window: HOUR,
        });
        let p_replay = new_id(&spool, replay).await;
        let mut ords = Vec::new();
        for body in [b"o1", b"o2", b"o3"] {
            let mut new = item("ord", None, body);
            new.ordered = vec!["default".into()];
            ords.push(new_id(&spool, new).await);
        }
        Filled {
            p_retry,
            p_dead,
            p_old_done,
            p_done,
            p_leased,
            p_due,
            p_filtered,
            filtered_until,
            p_replay,
            r1,
            r2,
            r3,
            r_old,
            ords,
            mid,
        }
    });
    rt.block_on(spool.close());
    let (plain, route) = crash_child(dir);
    assert_eq!(
        (plain, route),
        (f.p_leased, f.r3),
        "the crash left these leases"
    );
    f
}

/// Retention that puts the line at `mid`.
fn retention_to(mid: SystemTime) -> Duration {
    crate::spool::now().duration_since(mid).unwrap()
}

/// Every SQLite item's request columns as they should be in PostgreSQL:
/// id → (hook, dedup_id, received_at ms, headers, body, replay_key).
type Requests = BTreeMap<
    i64,
    (
        String,
        Option<String>,
        i64,
        Vec<u8>,
        Vec<u8>,
        Option<Vec<u8>>,
    ),
>;

fn sqlite_requests(dir: &Path) -> Requests {
    let conn = rusqlite::Connection::open(spool_path(dir)).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, hook, dedup_id, received_at, headers, body, replay_key FROM items")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                (
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ),
            ))
        })
        .unwrap();
    rows.collect::<Result<_, _>>().unwrap()
}

fn pg_requests(t: &Target) -> Requests {
    t.rt.block_on(t.client.query(
        "SELECT id, hook, dedup_id, (extract(epoch FROM received_at) * 1000)::bigint, \
         headers, body, replay_key FROM requests",
        &[],
    ))
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get(0),
            (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)),
        )
    })
    .collect()
}

#[test]
fn a_filled_spool_is_copied_with_ids_attempts_keys_and_states_and_a_node_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = fill(dir.path());
    let t = Target::new();
    let report = t.copy(dir.path(), &opts(&t, retention_to(f.mid))).unwrap();

    assert_eq!(
        (report.requests, report.deliveries, report.skipped_done),
        (13, 15, 2),
        "{report:?}"
    );
    assert_eq!(
        (
            report.already_present,
            report.resumed_from,
            report.already_complete
        ),
        (0, None, false)
    );

    // Every request but the two done long ago, with its columns as they were.
    let mut want = sqlite_requests(dir.path());
    assert!(want.remove(&f.p_old_done).is_some() && want.remove(&f.r_old).is_some());
    assert_eq!(pg_requests(&t), want);

    let s = |v: &str| Some(v.to_string());
    // Leased by the crashed process: pending, lease cleared, attempts kept.
    assert_eq!(
        t.delivery(f.p_leased, "default"),
        ("pending".into(), 1, s("timed out"), true, None)
    );
    assert_eq!(
        t.delivery(f.p_retry, "default"),
        ("pending".into(), 1, s("HTTP 502"), true, None)
    );
    assert_eq!(
        t.i64(&format!(
            "SELECT (next_attempt > now() + interval '50 minutes')::int::bigint FROM deliveries \
             WHERE request_id = {}",
            f.p_retry
        )),
        1,
        "a retry keeps its due time"
    );
    assert_eq!(
        t.delivery(f.p_dead, "default"),
        ("dead".into(), 1, s("gave up"), true, None)
    );
    assert_eq!(t.delivery(f.p_done, "default").0, "done");
    assert_eq!(
        t.delivery(f.p_due, "default"),
        ("pending".into(), 0, None, true, None)
    );
    // Filtered: no delivery, its purge time kept.
    assert_eq!(
        t.text(&format!(
            "SELECT state FROM requests WHERE id = {}",
            f.p_filtered
        )),
        s("filtered")
    );
    assert_eq!(
        t.i64(&format!(
            "SELECT count(*) FROM deliveries WHERE request_id = {}",
            f.p_filtered
        )),
        0
    );
    let purge_ms = t.i64(&format!(
        "SELECT (extract(epoch FROM purge_after) * 1000)::bigint FROM requests WHERE id = {}",
        f.p_filtered
    ));
    assert_eq!(purge_ms, crate::spool::codec::to_ms(f.filtered_until));
    // Routed: one delivery per route; the ordered route numbered in id order.
    assert_eq!(
        t.delivery(f.r1, "deploy"),
        ("done".into(), 1, None, true, None)
    );
    assert_eq!(
        t.delivery(f.r2, "deploy"),
        ("dead".into(), 1, s("deploy failed"), true, None)
    );
    assert_eq!(
        t.delivery(f.r3, "deploy"),
        ("pending".into(), 0, None, true, None),
        "leased by the crashed process"
    );
    for r in [f.r1, f.r2, f.r3] {
        assert_eq!(
            t.delivery(r, "notify"),
            ("pending".into(), 0, None, true, Some(r))
        );
    }
    for &o in &f.ords {
        assert_eq!(t.delivery(o, "default").4, Some(o));
    }
    assert_eq!(
        t.rows4("SELECT hook, route, '', next_seq FROM route_heads ORDER BY 1, 2"),
        vec![
            ("gh".into(), "notify".into(), String::new(), f.r3 + 1),
            ("ord".into(), "default".into(), String::new(), f.ords[2] + 1),
        ]
    );
    // Delivery ids are unique and apart from request ids.
    assert_eq!(
        t.i64("SELECT count(*) FROM deliveries d JOIN requests r ON r.id = d.id"),
        0
    );
    assert_eq!(t.i64("SELECT max(id) FROM deliveries"), report.max_id);
    t.assert_counts_match_rows();
    assert_eq!(
        t.text("SELECT string_agg(DISTINCT node, ',') FROM depth_counts"),
        s("import")
    );
    assert_eq!(
        t.i64("SELECT (completed_at IS NOT NULL)::int::bigint FROM hookd_import"),
        1
    );

    // A node serves the copy: claims what is due, in order where ordered,
    // knows the dedup ids and takes new ids above every copied one.
    let rt = async_rt();
    let node = t.node("n1", "n1-a");
    let r4 = rt.block_on(async {
        let mut got: Vec<i64> = node
            .claim(claim_req("plain", 10, false, LONG))
            .await
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec![f.p_leased, f.p_due, f.p_replay], "the due ones");
        let head = node
            .claim(route_req("gh", "notify", 10, true))
            .await
            .unwrap();
        assert_eq!(head.iter().map(|i| i.id).collect::<Vec<_>>(), vec![f.r1]);
        assert_eq!(head[0].attempts, 0);
        node.complete(head[0].lease()).await.unwrap();
        let head = node
            .claim(route_req("gh", "notify", 10, true))
            .await
            .unwrap();
        assert_eq!(head.iter().map(|i| i.id).collect::<Vec<_>>(), vec![f.r2]);
        let ord = node.claim(claim_req("ord", 10, true, LONG)).await.unwrap();
        assert_eq!(
            ord.iter().map(|i| i.id).collect::<Vec<_>>(),
            vec![f.ords[0]]
        );
        let deploy = node
            .claim(route_req("gh", "deploy", 10, false))
            .await
            .unwrap();
        assert_eq!(deploy.iter().map(|i| i.id).collect::<Vec<_>>(), vec![f.r3]);
        assert_eq!(deploy[0].body.as_ref(), b"r3");

        assert_eq!(
            node.enqueue(item("plain", Some("d-1"), b"again"))
                .await
                .unwrap(),
            Enqueued::Duplicate(f.p_due)
        );
        let fresh = new_id(&node, item("plain", None, b"new")).await;
        assert!(fresh > report.max_id, "{fresh} > {}", report.max_id);
        new_id(&node, routed("gh", None, b"r4", &["notify"])).await
    });
    rt.block_on(node.close());
    let seq = t.delivery(r4, "notify").4.unwrap();
    assert!(seq > f.r3, "a node numbers on after the copied seqs: {seq}");
    t.assert_counts_match_rows();

    // The same command again: a no-op that says so.
    let again = t.copy(dir.path(), &opts(&t, retention_to(f.mid))).unwrap();
    assert!(again.already_complete, "{again:?}");
    assert_eq!((again.requests, again.deliveries), (0, 0));
}

/// A small spool (hook `plain`, `n` pending items, the `fault`-th, if any,
/// with a body the fault proxy recognises; every fifth routed to two
/// routes), closed; ids in order.
fn small_spool(dir: &Path, n: usize, fault: Option<usize>) -> Vec<i64> {
    let rt = async_rt();
    let spool = open(dir, "a");
    let ids = rt.block_on(async {
        let mut ids = Vec::new();
        for i in 0..n {
            let body = if Some(i) == fault {
                FAULT.to_vec()
            } else {
                format!("body {i}").into_bytes()
            };
            let new = if i % 5 == 4 {
                routed("gh", Some(&format!("g-{i}")), &body, &["deploy", "notify"])
            } else {
                item("plain", Some(&format!("p-{i}")), &body)
            };
            ids.push(new_id(&spool, new).await);
        }
        ids
    });
    rt.block_on(spool.close());
    ids
}

/// The body whose bytes make the fault proxy swallow every answer.
const FAULT: &[u8] = b"FAULT-c0ffee-7d1";

#[test]
fn a_non_empty_target_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    small_spool(dir.path(), 3, None);
    let t = Target::new();
    let rt = async_rt();
    let node = t.node("n1", "n1-a");
    let theirs = rt.block_on(new_id(&node, item("plain", None, b"theirs")));
    rt.block_on(node.close());
    let before = (
        t.i64("SELECT last_value FROM id_blocks"),
        t.rows4("SELECT node, hook, state, n FROM depth_counts ORDER BY 1, 2, 3"),
    );

    let err = t.copy(dir.path(), &opts(&t, HOUR)).unwrap_err();
    assert!(
        matches!(
            err,
            SpoolError::Import(ImportError::TargetNotEmpty { requests: 1, .. })
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&t.db) && msg.contains("1 requests"), "{msg}");
    assert_eq!(t.ids("SELECT id FROM requests"), vec![theirs]);
    assert_eq!(
        t.text("SELECT to_regclass('hookd_import')::text"),
        None,
        "no marker left"
    );
    assert_eq!(
        (
            t.i64("SELECT last_value FROM id_blocks"),
            t.rows4("SELECT node, hook, state, n FROM depth_counts ORDER BY 1, 2, 3"),
        ),
        before
    );
}

/// Copy options of the fault tests: chunks of 5, a short time limit.
fn fault_opts(t: &Target) -> CopyOptions {
    CopyOptions {
        chunk: 5,
        chunk_limit: Duration::from_secs(2),
        ..opts(t, HOUR)
    }
}

/// Runs the copy of `dir` through `proxy`, armed to swallow every answer
/// from the first client message holding `pattern` on: the copy must stop
/// at its chunk time limit. Then the network drops the connection for
/// good, and this waits until the server has ended that session.
fn copy_cut_off(t: &Target, dir: &Path, pattern: &[u8]) {
    let proxy = TcpProxy::start(t.pg.addr());
    proxy.drop_replies_after(pattern);
    let err = t
        .copy_via(&url_at(&t.pg, proxy.addr, &t.db), dir, &fault_opts(t))
        .unwrap_err();
    assert!(
        matches!(err, SpoolError::Import(ImportError::ChunkTimedOut(_))),
        "{err}"
    );
    assert_eq!(proxy.mode(), Mode::DropReplies, "the fault fired");
    proxy.set_mode(Mode::Reset);
    let deadline = Instant::now() + Duration::from_secs(20);
    while t.i64(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
        t.db
    )) > 0
    {
        assert!(Instant::now() < deadline, "the cut session lingers");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The rerun after a cut-off copy whose marker is past request
/// `ids[committed - 1]`: it resumes there and leaves every request of
/// [`small_spool`]`(45)` in the target exactly once, each with its
/// deliveries once, counted once.
fn rerun_completes(t: &Target, dir: &Path, ids: &[i64], committed: usize) {
    // Whole chunks only, the marker at the last one.
    assert_eq!(
        t.ids("SELECT id FROM requests ORDER BY id"),
        ids[..committed].to_vec()
    );
    assert_eq!(
        t.i64("SELECT last_id FROM hookd_import"),
        ids[committed - 1]
    );
    t.assert_counts_match_rows();

    let report = t.copy(dir, &fault_opts(t)).unwrap();
    assert_eq!(report.resumed_from, Some(ids[committed - 1]), "{report:?}");
    assert_eq!(
        (report.requests, report.already_present),
        ((ids.len() - committed) as u64, 0),
        "{report:?}"
    );
    assert_eq!(t.ids("SELECT id FROM requests ORDER BY id"), ids);
    let per_request = t.ids(
        "SELECT count(d.id) FROM requests r LEFT JOIN deliveries d ON d.request_id = r.id \
         GROUP BY r.id ORDER BY r.id",
    );
    let want: Vec<i64> = (0..45).map(|i| if i % 5 == 4 { 2 } else { 1 }).collect();
    assert_eq!(per_request, want);
    t.assert_counts_match_rows();
    assert_eq!(
        t.i64("SELECT sum(n)::bigint FROM depth_counts WHERE state = 'pending'"),
        54,
        "36 plain deliveries and 9 routed requests' two"
    );
    assert_eq!(
        t.i64("SELECT (completed_at IS NOT NULL)::int::bigint FROM hookd_import"),
        1
    );
}

#[test]
fn a_copy_cut_off_midway_completes_on_the_rerun_with_every_request_once() {
    let dir = tempfile::tempdir().unwrap();
    // 45 items in chunks of 5: the fault hits the fifth chunk (ids 21..25)
    // as its rows go out; the server never gets its COMMIT.
    let ids = small_spool(dir.path(), 45, Some(22));
    let t = Target::new();
    copy_cut_off(&t, dir.path(), FAULT);
    rerun_completes(&t, dir.path(), &ids, 20);
    let body: Vec<u8> =
        t.rt.block_on(
            t.client
                .query_one("SELECT body FROM requests WHERE id = $1", &[&ids[22]]),
        )
        .unwrap()
        .get(0);
    assert_eq!(body, FAULT);
    // The headers went across as the spool encodes them.
    let headers: Vec<u8> =
        t.rt.block_on(
            t.client
                .query_one("SELECT headers FROM requests WHERE id = $1", &[&ids[0]]),
        )
        .unwrap()
        .get(0);
    assert_eq!(
        headers,
        encode_headers(&[("content-type".into(), b"application/json".to_vec())])
    );
}

#[test]
fn a_copy_whose_commit_answer_is_lost_resumes_after_the_chunk_that_committed() {
    let dir = tempfile::tempdir().unwrap();
    let ids = small_spool(dir.path(), 45, None);
    let t = Target::new();
    // The fifth chunk's marker UPDATE, by its first two parameters as the
    // Bind message carries them (length, then big-endian int8): last id,
    // requests written. Its COMMIT goes out with it, so the server commits
    // the chunk and the copy never hears.
    let mut pattern = Vec::new();
    for v in [ids[24], 5] {
        pattern.extend(8i32.to_be_bytes());
        pattern.extend(v.to_be_bytes());
    }
    copy_cut_off(&t, dir.path(), &pattern);
    rerun_completes(&t, dir.path(), &ids, 25);
}

#[test]
fn a_spool_a_running_hookd_has_open_is_refused_before_the_target_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    small_spool(dir.path(), 3, None);
    let t = Target::new();
    let running = open(dir.path(), "live");
    let err = t.copy(dir.path(), &opts(&t, HOUR)).unwrap_err();
    assert!(
        matches!(&err, SpoolError::Import(ImportError::SourceInUse { pids }) if pids == &std::process::id().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("stop the daemon"), "{err}");
    assert_eq!(
        t.text("SELECT to_regclass('hookd_schema')::text"),
        None,
        "the target is untouched"
    );
    drop(running);
    let report = t.copy(dir.path(), &opts(&t, HOUR)).unwrap();
    assert_eq!(report.requests, 3);
}

#[test]
fn a_rerun_after_the_source_changed_is_refused_and_a_target_with_a_live_node_too() {
    let dir = tempfile::tempdir().unwrap();
    let ids = small_spool(dir.path(), 45, Some(22));
    let t = Target::new();

    // A node running on the (still empty) target: refused, nothing copied.
    let rt = async_rt();
    let node = t.node("n1", "n1-a");
    let err = t.copy(dir.path(), &fault_opts(&t)).unwrap_err();
    assert!(
        matches!(&err, SpoolError::Import(ImportError::TargetInUse { nodes, .. }) if nodes.contains("n1")),
        "{err}"
    );
    assert_eq!(t.i64("SELECT count(*) FROM requests"), 0);
    rt.block_on(node.close());

    copy_cut_off(&t, dir.path(), FAULT);
    // The daemon ran on the file again before the rerun.
    let spool = open(dir.path(), "b");
    rt.block_on(new_id(&spool, item("plain", None, b"late")));
    rt.block_on(spool.close());
    let err = t.copy(dir.path(), &fault_opts(&t)).unwrap_err();
    assert!(
        matches!(
            &err,
            SpoolError::Import(ImportError::OtherSource {
                what: "a partial",
                ..
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("new database"), "{err}");
    assert_eq!(
        t.ids("SELECT id FROM requests ORDER BY id"),
        ids[..20].to_vec(),
        "the partial copy stays as it was"
    );
}
