//! Spool tests on real files (real fsync) in temporary directories.

mod admin;
mod group_commit;
mod open;
mod pg;
mod pg_admin;
mod pg_import;
mod pg_tls;
mod queue;
mod routes;
mod scale;

/// A throw-away PostgreSQL cluster and a TCP fault proxy, shared with the
/// integration tests: the PostgreSQL backend's tests run on a real server.
#[allow(unreachable_pub)]
#[path = "../../../tests/common/pg.rs"]
pub(crate) mod pg_cluster;
#[allow(dead_code, unreachable_pub)]
#[path = "../../../tests/faults/tcp_proxy.rs"]
pub(crate) mod tcp_proxy;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::{ClaimRequest, CommitObserver, NewItem, Spool, SpoolOptions, Store};

fn spool_path(dir: &Path) -> PathBuf {
    dir.join("spool.db")
}

fn options(dir: &Path, instance: &str) -> SpoolOptions {
    SpoolOptions {
        store: Store::File(spool_path(dir)),
        instance_id: instance.to_string(),
        max_batch: 1024,
        on_commit: None,
    }
}

fn open(dir: &Path, instance: &str) -> Spool {
    Spool::open(options(dir, instance)).unwrap()
}

fn item(hook: &str, dedup: Option<&str>, body: &[u8]) -> NewItem {
    NewItem {
        hook: hook.to_string(),
        dedup_id: dedup.map(str::to_string),
        received_at: SystemTime::now(),
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: Bytes::copy_from_slice(body),
        repeats: Default::default(),
        filtered_until: None,
        routes: None,
        ordered: Vec::new(),
    }
}

fn claim_req(hook: &str, max: usize, ordered: bool, lease: Duration) -> ClaimRequest {
    ClaimRequest {
        hook: hook.to_string(),
        route: None,
        max,
        ordered,
        lease,
    }
}

/// Records every group commit's latency and command count.
#[derive(Clone, Default)]
struct Commits(Arc<Mutex<Vec<(Duration, usize)>>>);

impl Commits {
    fn observer(&self) -> CommitObserver {
        let seen = self.0.clone();
        Arc::new(move |latency, count| seen.lock().unwrap().push((latency, count)))
    }

    fn counts(&self) -> Vec<usize> {
        self.0.lock().unwrap().iter().map(|c| c.1).collect()
    }

    fn latencies(&self) -> Vec<Duration> {
        self.0.lock().unwrap().iter().map(|c| c.0).collect()
    }
}

/// Raw connection for setting up states the API cannot reach directly.
fn raw(dir: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(spool_path(dir)).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

/// The counters agree with the rows themselves.
fn assert_counts_match_rows(dir: &Path) {
    let conn = raw(dir);
    let query = |sql: &str| -> Vec<(String, String, i64)> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let counters =
        query("SELECT hook, state, n FROM item_counts WHERE n <> 0 ORDER BY hook, state");
    let rows =
        query("SELECT hook, state, count(*) FROM items GROUP BY hook, state ORDER BY hook, state");
    assert_eq!(counters, rows);
}

/// A connector to `url` through the production connect path
/// (`PgTarget`), with no TLS unless the URL asks for it.
pub(crate) fn pg_connector(url: &str) -> crate::spool::pg::Connector {
    let target = crate::spool::PgTarget::parse(url).expect("a test URL parses");
    std::sync::Arc::new(target).connector("hookd test".into())
}

/// Depth rows of a PostgreSQL spool, summed over nodes, and the same counted
/// from the rows themselves (deliveries by hook, route, state; filtered
/// requests under route ''), both sorted: a test asserts they are equal.
pub(crate) type DepthRows = Vec<(String, String, String, i64)>;
pub(crate) async fn pg_depth_vs_rows(client: &tokio_postgres::Client) -> (DepthRows, DepthRows) {
    let rows = |sql: &'static str| async move {
        client
            .query(sql, &[])
            .await
            .expect("depth query")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect::<DepthRows>()
    };
    let counted = rows(
        "SELECT hook, route, state, sum(n)::bigint FROM depth_counts \
         GROUP BY hook, route, state HAVING sum(n) <> 0 ORDER BY 1, 2, 3",
    )
    .await;
    let actual = rows(
        "SELECT hook, route, state, count(*) FROM deliveries GROUP BY 1, 2, 3 \
         UNION ALL SELECT hook, '', 'filtered', count(*) FROM requests \
         WHERE state = 'filtered' GROUP BY 1 ORDER BY 1, 2, 3",
    )
    .await;
    (counted, actual)
}
