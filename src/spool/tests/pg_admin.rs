//! The admin CLI over the PostgreSQL spool, on a real server: every test
//! gets a fresh database (schema by `pg::schema::migrate`), seeds rows as
//! the nodes write them (a request, its deliveries, the writing node's
//! `depth_counts` rows) and checks what each operation does to rows and
//! depth. The tests running at one time share one cluster.
//!
//! Plain `#[test]`s: the PostgreSQL `Admin` blocks on its own runtime, so
//! it must not run inside another.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls};

use super::pg_cluster::{Pg, ROLE};
use crate::spool::codec::encode_headers;
use crate::spool::pg::{admin::runtime, schema};
use crate::spool::{Admin, DepthRow, ItemState, ListFilter, NotASpool, RouteDelivery, SpoolError};

/// The cluster of the tests running now; the last one to finish stops it
/// (a static would never be dropped, leaving the server running).
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

/// A fresh database with the hookd schema, and a client of its own for
/// seeding and checking rows.
struct Db {
    url: String,
    rt: Runtime,
    client: Client,
    // Last: the clients above go before the cluster may stop.
    _pg: Arc<Pg>,
}

fn connect(rt: &Runtime, url: &str) -> Client {
    let (client, conn) = rt.block_on(tokio_postgres::connect(url, NoTls)).unwrap();
    rt.spawn(conn);
    client
}

impl Db {
    fn new() -> Db {
        static N: AtomicU32 = AtomicU32::new(0);
        let pg = cluster();
        let name = format!(
            "admin_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        pg.psql(&format!("CREATE DATABASE {name} TEMPLATE template0"));
        let url = format!("postgres://{ROLE}:{}@{}/{name}", pg.password(), pg.addr());
        let rt = runtime().unwrap();
        let mut client = connect(&rt, &url);
        rt.block_on(schema::migrate(&mut client)).unwrap();
        Db {
            url,
            rt,
            client,
            _pg: pg,
        }
    }

    /// The admin as the CLI opens it: its own runtime and connection.
    fn admin(&self) -> Admin {
        let rt = runtime().unwrap();
        let client = connect(&rt, &self.url);
        Admin::open_postgres(rt, client, "postgres://hookd@127.0.0.1/test").unwrap()
    }

    fn exec(&self, sql: &str) {
        self.rt.block_on(self.client.batch_execute(sql)).unwrap();
    }

    fn one_i64(&self, sql: &str) -> i64 {
        let row = self.rt.block_on(self.client.query_one(sql, &[])).unwrap();
        row.get(0)
    }

    /// Inserts a request of `hook` written by `node`, with a delivery per
    /// `(route, state)` (none: a filtered request), and that node's depth
    /// rows, in one transaction; the request's id. Ids come from a block
    /// of `id_blocks`, the request first, its deliveries after it.
    ///
    /// The states are set up as a node leaves them: pending after one
    /// failed attempt (due in an hour), leased (a live lease of generation
    /// 1), done after one attempt, dead after three.
    fn seed(&self, node: &str, hook: &str, deliveries: &[(&str, &str)]) -> i64 {
        let block = self.one_i64("SELECT nextval('id_blocks')");
        let id = block * 1024;
        let headers = encode_headers(&[
            ("content-type".into(), b"application/json".to_vec()),
            ("x-request".into(), id.to_string().into_bytes()),
        ]);
        let body = format!("{{\"hook\":\"{hook}\",\"id\":{id}}}").into_bytes();
        let filtered = deliveries.is_empty();
        let mut sql = format!(
            "BEGIN; INSERT INTO requests (id, hook, received_at, headers, body, state, purge_after) \
             VALUES ({id}, '{hook}', clock_timestamp(), '\\x{}', '\\x{}', '{}', {});",
            hex::encode(&headers),
            hex::encode(&body),
            if filtered { "filtered" } else { "accepted" },
            if filtered {
                "now() + interval '1 day'"
            } else {
                "NULL"
            },
        );
        let mut depth = |route: &str, state: &str| {
            sql.push_str(&format!(
                "INSERT INTO depth_counts (node, hook, route, state, n) \
                 VALUES ('{node}', '{hook}', '{route}', '{state}', 1) \
                 ON CONFLICT (node, hook, route, state) DO UPDATE SET n = depth_counts.n + 1;"
            ));
        };
        if filtered {
            depth("", "filtered");
        }
        for (route, state) in deliveries {
            depth(route, state);
        }
        for (i, (route, state)) in deliveries.iter().enumerate() {
            let (attempts, next, error, lease) = match *state {
                "pending" => (1, "now() + interval '1 hour'", "'timeout'", None),
                "leased" => (0, "now()", "NULL", Some("now() + interval '5 minutes'")),
                "done" => (1, "now()", "NULL", None),
                "dead" => (3, "now()", "'HTTP 500'", None),
                other => panic!("no delivery state {other}"),
            };
            sql.push_str(&format!(
                "INSERT INTO deliveries (id, request_id, hook, route, state, attempts, \
                 next_attempt, last_error, lease_owner, lease_gen, lease_expiry) \
                 VALUES ({}, {id}, '{hook}', '{route}', '{state}', {attempts}, {next}, {error}, \
                 {}, {}, {});",
                id + 1 + i as i64,
                lease.map_or("NULL".to_string(), |_| format!("'{node}-1'")),
                i32::from(lease.is_some()),
                lease.unwrap_or("NULL"),
            ));
        }
        sql.push_str("COMMIT;");
        self.exec(&sql);
        id
    }

    /// The delivery of `request` to `route`: (state, attempts, due now or
    /// before, last_error).
    fn delivery(&self, request: i64, route: &str) -> (String, i32, bool, Option<String>) {
        let row = self
            .rt
            .block_on(self.client.query_one(
                "SELECT state, attempts, next_attempt <= now(), last_error FROM deliveries \
                 WHERE request_id = $1 AND route = $2",
                &[&request, &route],
            ))
            .unwrap();
        (row.get(0), row.get(1), row.get(2), row.get(3))
    }

    /// `depth_counts` summed over the nodes, non-zero sums only:
    /// `(hook, route, state, n)`.
    fn depth_sums(&self) -> Vec<(String, String, String, i64)> {
        self.rows(
            "SELECT hook, route, state, sum(n)::bigint FROM depth_counts \
             GROUP BY hook, route, state HAVING sum(n) <> 0 ORDER BY 1, 2, 3",
        )
    }

    /// Node `admin`'s own `depth_counts` rows, non-zero.
    fn admin_depth(&self) -> Vec<(String, String, String, i64)> {
        self.rows(
            "SELECT hook, route, state, n FROM depth_counts \
             WHERE node = 'admin' AND n <> 0 ORDER BY 1, 2, 3",
        )
    }

    fn rows(&self, sql: &str) -> Vec<(String, String, String, i64)> {
        self.rt
            .block_on(self.client.query(sql, &[]))
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    /// The counts agree with the rows.
    fn assert_counts_match_rows(&self) {
        let (counted, rows) = self.rt.block_on(super::pg_depth_vs_rows(&self.client));
        assert_eq!(counted, rows, "depth_counts against the rows");
    }
}

fn row(hook: &str, route: &str, state: &str, n: i64) -> (String, String, String, i64) {
    (hook.into(), route.into(), state.into(), n)
}

#[test]
fn open_refuses_a_database_without_the_hookd_schema() {
    let db = Db::new();
    db.exec("DROP TABLE hookd_schema");
    let rt = runtime().unwrap();
    let client = connect(&rt, &db.url);
    let err = Admin::open_postgres(rt, client, "x").err().unwrap();
    assert!(
        matches!(err, SpoolError::NotASpool(NotASpool::NoSchema)),
        "{err}"
    );
}

#[test]
fn ls_lists_filtered_requests_and_every_delivery_by_state_hook_route_and_orphan() {
    let db = Db::new();
    let routed = db.seed("n1", "gh", &[("a", "dead"), ("b", "done")]);
    let p1 = db.seed("n1", "plain", &[("default", "pending")]);
    let p2 = db.seed("n2", "plain", &[("default", "dead")]);
    let f1 = db.seed("n2", "plain", &[]);
    let old = db.seed("n1", "old", &[("default", "pending")]);
    let admin = db.admin();
    let ls = |f: &ListFilter<'_>| -> Vec<(i64, Option<String>, ItemState)> {
        admin
            .ls(f)
            .unwrap()
            .into_iter()
            .map(|s| (s.id, s.route, s.state))
            .collect()
    };
    let r = |s: &str| Some(s.to_string());
    assert_eq!(
        ls(&ListFilter::default()),
        vec![
            (routed, r("a"), ItemState::Dead),
            (routed, r("b"), ItemState::Done),
            (p1, r("default"), ItemState::Pending),
            (p2, r("default"), ItemState::Dead),
            (f1, None, ItemState::Filtered),
            (old, r("default"), ItemState::Pending),
        ],
        "every delivery and the filtered request, by request id then route"
    );
    let dead = ListFilter {
        state: Some(ItemState::Dead),
        ..Default::default()
    };
    assert_eq!(
        ls(&dead),
        vec![
            (routed, r("a"), ItemState::Dead),
            (p2, r("default"), ItemState::Dead)
        ]
    );
    let plain = ListFilter {
        hook: Some("plain"),
        ..Default::default()
    };
    assert_eq!(
        ls(&plain).iter().map(|x| x.0).collect::<Vec<_>>(),
        [p1, p2, f1]
    );
    let default = ListFilter {
        route: Some("default"),
        ..Default::default()
    };
    assert_eq!(
        ls(&default).iter().map(|x| x.0).collect::<Vec<_>>(),
        [p1, p2, old],
        "a filtered request has no route"
    );
    let known = [
        ("gh".to_string(), "a".to_string()),
        ("plain".to_string(), "default".to_string()),
    ];
    let orphaned = ListFilter {
        orphaned: Some(&known),
        ..Default::default()
    };
    assert_eq!(
        ls(&orphaned),
        vec![
            (routed, r("b"), ItemState::Done),
            (old, r("default"), ItemState::Pending)
        ],
        "a removed route and a removed hook; the filtered request's hook is configured"
    );
    let two = ListFilter {
        limit: Some(2),
        ..Default::default()
    };
    assert_eq!(
        ls(&two).iter().map(|x| x.1.clone()).collect::<Vec<_>>(),
        [r("a"), r("b")]
    );
    // The summary's other columns: the delivery's, and the request's body size.
    let all = admin.ls(&ListFilter::default()).unwrap();
    let a = &all[0];
    assert_eq!((a.hook.as_str(), a.attempts), ("gh", 3));
    assert_eq!(a.last_error.as_deref(), Some("HTTP 500"));
    let body = format!("{{\"hook\":\"gh\",\"id\":{routed}}}");
    assert_eq!(a.body_bytes, body.len() as u64);
    assert!(all[4].next_attempt > all[4].received_at, "purge_after");
}

#[test]
fn show_gives_a_routed_request_as_routed_with_each_route_delivery_and_a_plain_one_as_its_delivery()
{
    let db = Db::new();
    let routed = db.seed("n1", "gh", &[("a", "leased"), ("b", "dead")]);
    let plain = db.seed("n1", "plain", &[("default", "dead")]);
    let admin = db.admin();

    let item = admin.show(routed).unwrap();
    assert_eq!(item.state, ItemState::Routed);
    assert_eq!((item.id, item.hook.as_str()), (routed, "gh"));
    assert_eq!(
        item.headers,
        vec![
            ("content-type".to_string(), b"application/json".to_vec()),
            ("x-request".to_string(), routed.to_string().into_bytes()),
        ]
    );
    assert_eq!(
        &item.body[..],
        format!("{{\"hook\":\"gh\",\"id\":{routed}}}").as_bytes()
    );
    let routes: Vec<(Option<String>, ItemState, Option<String>)> = admin
        .deliveries(routed)
        .unwrap()
        .into_iter()
        .map(|d| (d.route, d.state, d.lease_owner))
        .collect();
    assert_eq!(
        routes,
        vec![
            (Some("a".into()), ItemState::Leased, Some("n1-1".into())),
            (Some("b".into()), ItemState::Dead, None),
        ]
    );

    let item = admin.show(plain).unwrap();
    assert_eq!((item.state, item.attempts), (ItemState::Dead, 3));
    assert_eq!(item.last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(
        item.delivery,
        Some(RouteDelivery {
            row: plain + 1,
            route: "default".into()
        })
    );
    assert!(matches!(admin.show(7), Err(SpoolError::NotFound(7))));
}

#[test]
fn retry_of_a_dead_delivery_makes_it_pending_due_now_with_attempts_reset_and_moves_depth() {
    let db = Db::new();
    let id = db.seed("n1", "plain", &[("default", "dead")]);
    let pending = db.seed("n1", "plain", &[("default", "pending")]);
    let admin = db.admin();
    admin.retry(id, None).unwrap();
    let (state, attempts, due, error) = db.delivery(id, "default");
    assert_eq!((state.as_str(), attempts, due), ("pending", 0, true));
    assert_eq!(error.as_deref(), Some("HTTP 500"), "kept, as on SQLite");
    assert_eq!(
        db.admin_depth(),
        vec![
            row("plain", "default", "dead", -1),
            row("plain", "default", "pending", 1)
        ],
        "the move is counted under node admin"
    );
    db.assert_counts_match_rows();
    assert_eq!(admin.show(id).unwrap().state, ItemState::Pending);

    // A pending one is made due now with a fresh count; depth stays.
    admin.retry(pending, Some("default")).unwrap();
    let (state, attempts, due, _) = db.delivery(pending, "default");
    assert_eq!((state.as_str(), attempts, due), ("pending", 0, true));
    db.assert_counts_match_rows();
    assert!(matches!(
        admin.retry(99, None),
        Err(SpoolError::NotFound(99))
    ));
}

#[test]
fn retry_of_a_leased_or_done_delivery_is_refused_with_its_state_and_changes_nothing() {
    let db = Db::new();
    let leased = db.seed("n1", "plain", &[("default", "leased")]);
    let done = db.seed("n1", "plain", &[("default", "done")]);
    let admin = db.admin();
    let err = admin.retry(leased, None).unwrap_err();
    assert!(
        matches!(err, SpoolError::WrongState { id, state: ItemState::Leased } if id == leased),
        "{err}"
    );
    let err = admin.retry(done, None).unwrap_err();
    assert!(
        matches!(err, SpoolError::WrongState { id, state: ItemState::Done } if id == done),
        "{err}"
    );
    assert_eq!(db.delivery(leased, "default").0, "leased");
    let gen = db.one_i64(&format!(
        "SELECT lease_gen FROM deliveries WHERE request_id = {leased}"
    ));
    assert_eq!(gen, 1, "the node's lease is untouched");
    assert_eq!(db.delivery(done, "default").0, "done");
    assert_eq!(db.admin_depth(), vec![]);
}

#[test]
fn retry_with_a_route_retries_only_that_routes_delivery() {
    let db = Db::new();
    let id = db.seed("n1", "gh", &[("a", "dead"), ("b", "dead"), ("c", "leased")]);
    let plain = db.seed("n1", "plain", &[("default", "dead")]);
    let admin = db.admin();
    admin.retry(id, Some("b")).unwrap();
    assert_eq!(db.delivery(id, "a").0, "dead");
    assert_eq!(db.delivery(id, "b").0, "pending");
    assert_eq!(
        db.admin_depth(),
        vec![row("gh", "b", "dead", -1), row("gh", "b", "pending", 1)]
    );
    for route in ["c", "zz"] {
        let err = admin.retry(id, Some(route)).unwrap_err();
        assert!(
            matches!(&err, SpoolError::NoRouteToRetry { route: Some(r), .. } if r == route),
            "{err}"
        );
    }
    let err = admin.retry(plain, Some("b")).unwrap_err();
    assert!(
        matches!(err, SpoolError::NoRouteToRetry { .. }),
        "a plain request has route default only: {err}"
    );
    // No route: every dead or pending delivery of the request.
    admin.retry(id, None).unwrap();
    assert_eq!(db.delivery(id, "a").0, "pending");
    assert_eq!(db.delivery(id, "c").0, "leased");
    db.assert_counts_match_rows();
}

#[test]
fn retry_dead_revives_the_dead_deliveries_of_a_hook_and_route_only() {
    let db = Db::new();
    let gh1 = db.seed("n1", "gh", &[("a", "dead"), ("b", "dead")]);
    let gh2 = db.seed("n2", "gh", &[("a", "dead"), ("b", "done")]);
    let plain = db.seed("n2", "plain", &[("default", "dead")]);
    let admin = db.admin();
    assert_eq!(admin.retry_dead(Some("gh"), Some("a")).unwrap(), 2);
    assert_eq!(db.delivery(gh1, "a").0, "pending");
    assert_eq!(db.delivery(gh2, "a").0, "pending");
    assert_eq!(db.delivery(gh1, "b").0, "dead");
    assert_eq!(db.delivery(plain, "default").0, "dead");
    assert_eq!(
        db.admin_depth(),
        vec![row("gh", "a", "dead", -2), row("gh", "a", "pending", 2)]
    );
    assert_eq!(admin.retry_dead(Some("plain"), None).unwrap(), 1);
    let (state, attempts, due, _) = db.delivery(plain, "default");
    assert_eq!((state.as_str(), attempts, due), ("pending", 0, true));
    assert_eq!(admin.retry_dead(None, None).unwrap(), 1, "gh1's b was left");
    assert_eq!(admin.retry_dead(None, None).unwrap(), 0);
    db.assert_counts_match_rows();
}

#[test]
fn route_filtered_gives_a_filtered_request_a_pending_delivery_per_route_and_moves_depth() {
    let db = Db::new();
    let id = db.seed("n1", "gh", &[]);
    // Route b is ordered: a head row with the next sequence number.
    db.exec("INSERT INTO route_heads (hook, route, next_seq) VALUES ('gh', 'b', 7)");
    let admin = db.admin();
    assert_eq!(admin.filtered("gh").unwrap().len(), 1);
    admin
        .route_filtered(id, &["a".to_string(), "b".to_string()])
        .unwrap();
    for route in ["a", "b"] {
        let (state, attempts, due, _) = db.delivery(id, route);
        assert_eq!((state.as_str(), attempts, due), ("pending", 0, true));
    }
    let state = db.rows(&format!(
        "SELECT state, coalesce(purge_after::text, '-'), '', 0::bigint FROM requests WHERE id = {id}"
    ));
    assert_eq!(state, vec![row("accepted", "-", "", 0)]);
    // Delivery ids from one fresh block, not the request's.
    let ids = db.rows(&format!(
        "SELECT route, (id / 1024 > {id} / 1024)::text, '', coalesce(seq, -1) FROM deliveries \
         WHERE request_id = {id} ORDER BY route"
    ));
    assert_eq!(
        ids,
        vec![row("a", "true", "", -1), row("b", "true", "", 7)],
        "ordered route b took sequence number 7"
    );
    assert_eq!(db.one_i64("SELECT next_seq FROM route_heads"), 8);
    assert_eq!(
        db.admin_depth(),
        vec![
            row("gh", "", "filtered", -1),
            row("gh", "a", "pending", 1),
            row("gh", "b", "pending", 1)
        ]
    );
    db.assert_counts_match_rows();
    assert!(admin.filtered("gh").unwrap().is_empty());

    let err = admin.route_filtered(id, &["a".to_string()]).unwrap_err();
    assert!(
        matches!(
            err,
            SpoolError::WrongState {
                state: ItemState::Routed,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        admin.route_filtered(id, &[]),
        Err(SpoolError::NoRoutes(_))
    ));
    assert!(matches!(
        admin.route_filtered(5, &["a".to_string()]),
        Err(SpoolError::NotFound(5))
    ));
}

#[test]
fn route_filtered_that_fails_part_way_leaves_the_request_filtered_and_depth_untouched() {
    let db = Db::new();
    let id = db.seed("n1", "gh", &[]);
    let before = db.depth_sums();
    let admin = db.admin();
    // The second delivery to route a breaks UNIQUE (request_id, route)
    // after the request and the first delivery were written.
    let err = admin
        .route_filtered(id, &["a".to_string(), "a".to_string()])
        .unwrap_err();
    assert!(matches!(err, SpoolError::Postgres(_)), "{err}");
    let state = db.rows(&format!(
        "SELECT state, '', '', (SELECT count(*) FROM deliveries) FROM requests WHERE id = {id}"
    ));
    assert_eq!(state, vec![row("filtered", "", "", 0)], "all or nothing");
    assert_eq!(db.depth_sums(), before);
    assert_eq!(db.admin_depth(), vec![]);
    // And it can still be routed.
    admin.route_filtered(id, &["a".to_string()]).unwrap();
    db.assert_counts_match_rows();
}

#[test]
fn retry_filtered_gives_each_filtered_request_of_the_hook_a_pending_default_delivery() {
    let db = Db::new();
    let f1 = db.seed("n1", "plain", &[]);
    let f2 = db.seed("n2", "plain", &[]);
    let other = db.seed("n1", "other", &[]);
    let admin = db.admin();
    assert_eq!(admin.retry_filtered("plain").unwrap(), 2);
    for id in [f1, f2] {
        let (state, attempts, due, _) = db.delivery(id, "default");
        assert_eq!((state.as_str(), attempts, due), ("pending", 0, true));
        assert_eq!(admin.show(id).unwrap().state, ItemState::Pending);
    }
    assert_eq!(admin.show(other).unwrap().state, ItemState::Filtered);
    assert_eq!(
        db.admin_depth(),
        vec![
            row("plain", "", "filtered", -2),
            row("plain", "default", "pending", 2)
        ]
    );
    db.assert_counts_match_rows();
    assert_eq!(admin.retry_filtered("plain").unwrap(), 0);
    // A filtered request retried by id is the same thing, for one.
    admin.retry(other, None).unwrap();
    assert_eq!(db.delivery(other, "default").0, "pending");
    db.assert_counts_match_rows();
}

#[test]
fn purge_refuses_undelivered_states_and_deletes_old_done_deliveries_with_their_emptied_requests() {
    let db = Db::new();
    let old_done = db.seed("n1", "plain", &[("default", "done")]);
    let half = db.seed("n1", "gh", &[("a", "done"), ("b", "pending")]);
    let new_done = db.seed("n1", "plain", &[("default", "done")]);
    let dead = db.seed("n1", "plain", &[("default", "dead")]);
    db.exec(&format!(
        "UPDATE deliveries SET updated_at = now() - interval '2 days' \
         WHERE request_id IN ({old_done}, {half}, {dead})"
    ));
    let admin = db.admin();
    for state in [ItemState::Pending, ItemState::Leased, ItemState::Filtered] {
        let err = admin.purge(state, None).unwrap_err();
        assert!(
            matches!(err, SpoolError::NotPurgeable(s) if s == state),
            "{err}"
        );
    }
    let day = Duration::from_secs(86_400);
    assert_eq!(admin.purge(ItemState::Done, Some(day)).unwrap(), 2);
    let left = |id: i64| db.one_i64(&format!("SELECT count(*) FROM requests WHERE id = {id}"));
    assert_eq!(left(old_done), 0, "its last delivery went, so did it");
    assert_eq!(left(half), 1, "route b is still pending");
    assert_eq!(db.delivery(half, "b").0, "pending");
    assert_eq!(left(new_done), 1, "younger than the cut-off");
    assert_eq!(left(dead), 1, "dead is purged only when asked for");
    assert_eq!(
        db.admin_depth(),
        vec![
            row("gh", "a", "done", -1),
            row("plain", "default", "done", -1)
        ]
    );
    db.assert_counts_match_rows();
    assert_eq!(admin.purge(ItemState::Dead, None).unwrap(), 1);
    assert_eq!(admin.purge(ItemState::Done, None).unwrap(), 1);
    assert_eq!(left(dead) + left(new_done), 0);
    db.assert_counts_match_rows();
}

#[test]
fn stats_sums_depth_over_the_nodes_and_flags_instances_whose_heartbeat_is_stale() {
    let db = Db::new();
    db.seed("n1", "plain", &[("default", "pending")]);
    db.seed("n1", "plain", &[("default", "pending")]);
    db.seed("n1", "gh", &[("a", "dead")]);
    db.seed("n1", "gh", &[]);
    // n2 claimed one of n1's: its pending row goes negative. Sums of 0
    // and below (rows of purged or moved work) are left out.
    db.exec(
        "UPDATE deliveries SET state = 'leased', lease_owner = 'n2-1', lease_gen = 1, \
             lease_expiry = now() + interval '1 minute' \
             WHERE id = (SELECT min(id) FROM deliveries WHERE hook = 'plain');
         INSERT INTO depth_counts VALUES ('n2', 'plain', 'default', 'pending', -1), \
             ('n2', 'plain', 'default', 'leased', 1), \
             ('n1', 'gone', 'default', 'done', 3), ('n2', 'gone', 'default', 'done', -3), \
             ('n2', 'odd', 'default', 'dead', -1);
         INSERT INTO instances (id, node, pid, started_at, heartbeat_at) VALUES \
             ('n1-1', 'n1', 100, now() - interval '1 hour', now()), \
             ('n2-1', 'n2', 200, now() - interval '30 minutes', now() - interval '2 minutes');
         UPDATE requests SET received_at = now() - interval '10 minutes' WHERE hook = 'plain';",
    );
    let admin = db.admin();
    let st = admin.stats().unwrap();
    let d = |hook: &str, route: Option<&str>, state, count| DepthRow {
        hook: hook.into(),
        route: route.map(Into::into),
        state,
        count,
    };
    assert_eq!(
        st.depth,
        vec![
            d("gh", None, ItemState::Filtered, 1),
            d("gh", Some("a"), ItemState::Dead, 1),
            d("plain", Some("default"), ItemState::Leased, 1),
            d("plain", Some("default"), ItemState::Pending, 1),
        ]
    );
    assert_eq!(st.schema_version, 1);
    assert!(st.file_bytes > 0);
    assert_eq!(st.wal_bytes, None);
    let oldest = st.oldest_pending_age_ms.unwrap();
    assert!(
        (600_000..3_600_000).contains(&oldest),
        "the plain requests' 10 minutes: {oldest}"
    );
    let seen: Vec<(&str, Option<&str>, i64, bool)> = st
        .instances
        .iter()
        .map(|i| (i.id.as_str(), i.node.as_deref(), i.pid, i.alive))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("n1-1", Some("n1"), 100, true),
            ("n2-1", Some("n2"), 200, false)
        ],
        "by start time; n2's heartbeat is past the 30 s"
    );
    let ages: Vec<u64> = st
        .instances
        .iter()
        .map(|i| i.heartbeat_age_ms.unwrap())
        .collect();
    assert!(ages[0] < 30_000 && ages[1] >= 120_000, "{ages:?}");
}

#[test]
fn retry_waits_for_a_nodes_finish_in_flight_and_decides_on_what_it_committed() {
    let db = Db::new();
    let id = db.seed("n1", "plain", &[("default", "leased")]);
    // A node's last attempt failed: its transaction marks the delivery
    // dead and has not committed yet.
    db.exec(&format!(
        "BEGIN; UPDATE deliveries SET state = 'dead', attempts = attempts + 1, \
         last_error = 'HTTP 500', lease_owner = NULL, lease_expiry = NULL, updated_at = now() \
         WHERE request_id = {id} AND lease_gen = 1; \
         UPDATE depth_counts SET n = n - 1 WHERE node = 'n1' AND state = 'leased'; \
         INSERT INTO depth_counts VALUES ('n1', 'plain', 'default', 'dead', 1);"
    ));
    let admin = db.admin();
    let retry = std::thread::spawn(move || admin.retry(id, None));
    // The admin's statement is waiting on the node's row lock.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting = db.one_i64(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock'",
        );
        if waiting == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the admin never waited on the lock"
        );
        assert!(!retry.is_finished(), "the retry did not wait for the node");
        std::thread::sleep(Duration::from_millis(20));
    }
    db.exec("COMMIT");
    let result = retry.join().unwrap();
    assert!(result.is_ok(), "the committed state is dead: {result:?}");
    let (state, attempts, due, _) = db.delivery(id, "default");
    assert_eq!((state.as_str(), attempts, due), ("pending", 0, true));
    db.assert_counts_match_rows();
}
