//! The PostgreSQL test support does what the multi-node tests will rely
//! on: a private cluster (`common/pg.rs`) that starts, takes a password
//! login over TCP with durable settings, survives an immediate restart
//! with its committed rows while refusing connections in between, and runs
//! beside another; and a TCP fault proxy (`faults/tcp_proxy.rs`) whose
//! modes do to a real PostgreSQL session what they claim.

mod common;

#[path = "common/pg.rs"]
mod pg;
#[path = "faults/tcp_proxy.rs"]
mod tcp_proxy;

use std::time::{Duration, Instant};

use pg::Pg;
use tcp_proxy::{Mode, TcpProxy, Trap};
use tokio::time::timeout;

/// Longer than any step here should take: a step that runs into it hung.
const HANG: Duration = Duration::from_secs(10);

/// A tokio-postgres client (no TLS: loopback only) whose connection task
/// runs in the background.
async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// `connect`, failing the test on an error or a hang.
async fn connected(url: &str) -> tokio_postgres::Client {
    timeout(HANG, connect(url))
        .await
        .expect("connect hung")
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

async fn show(c: &tokio_postgres::Client, setting: &str) -> String {
    let row = c
        .query_one(&format!("SHOW {setting}"), &[])
        .await
        .unwrap_or_else(|e| panic!("SHOW {setting}: {e}"));
    row.get(0)
}

// ---- the cluster -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cluster_takes_a_password_login_over_tcp_with_durable_settings() {
    let pg = Pg::start_new();
    eprintln!("cluster ready in {:?} (initdb to accepting)", pg.started_in);
    let c = connected(&pg.url()).await;
    assert_eq!(show(&c, "fsync").await, "on");
    assert_eq!(show(&c, "synchronous_commit").await, "on");
    assert_eq!(show(&c, "listen_addresses").await, "127.0.0.1");
    assert!(show(&c, "shared_preload_libraries")
        .await
        .contains("pg_stat_statements"));
    // pg_stat_statements counts what was run: the later "statements per
    // webhook" figure comes from here.
    c.batch_execute("SELECT pg_stat_statements_reset()")
        .await
        .unwrap();
    for _ in 0..3 {
        c.query_one("SELECT 41 + 1", &[]).await.unwrap();
    }
    let calls: i64 = c
        .query_one(
            "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements \
             WHERE query LIKE 'SELECT $1 + $2%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(calls, 3, "pg_stat_statements saw each SELECT");
    // The login is really checked: a wrong password is refused.
    let wrong = pg.url().replace(pg.password(), "not-the-password");
    let err = timeout(HANG, connect(&wrong))
        .await
        .expect("connect hung")
        .expect_err("a wrong password must be refused");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD),
        "refused for the password: {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_immediate_keeps_committed_rows_and_refuses_connections_while_down() {
    let mut pg = Pg::start_new();
    pg.psql("CREATE TABLE kept (id int PRIMARY KEY)");
    let c = connected(&pg.url()).await;
    c.execute("INSERT INTO kept VALUES (1)", &[]).await.unwrap();
    // Open, never committed: a crash must lose it.
    c.batch_execute("BEGIN; INSERT INTO kept VALUES (2)")
        .await
        .unwrap();

    let t0 = Instant::now();
    pg.stop_immediate();
    let stopped = t0.elapsed();
    let open = timeout(HANG, c.simple_query("SELECT 1"))
        .await
        .expect("a query on a connection to a stopped server hung");
    assert!(open.is_err(), "the open connection was cut");
    let refused = std::net::TcpStream::connect(pg.addr()).expect_err("nothing listens");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    let err = timeout(HANG, connect(&pg.url()))
        .await
        .expect("connect hung")
        .expect_err("no login while down");
    eprintln!("while down: {err}");

    let t1 = Instant::now();
    pg.start();
    eprintln!(
        "immediate stop {stopped:?}, start with crash recovery {:?}",
        t1.elapsed()
    );
    assert_eq!(pg.psql("SELECT array_agg(id ORDER BY id) FROM kept"), "{1}");
    let again = connected(&pg.url()).await;
    again
        .execute("INSERT INTO kept VALUES (3)", &[])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_run_at_once_with_their_own_data() {
    let a = Pg::start_new();
    let b = Pg::start_new();
    assert_ne!(a.port, b.port);
    let (ca, cb) = (connected(&a.url()).await, connected(&b.url()).await);
    ca.batch_execute("CREATE TABLE only_in_a (x int)")
        .await
        .unwrap();
    let in_b: i64 = cb
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_b, 0, "b does not see a's table");
    assert_eq!(
        a.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'"),
        "1"
    );
}

#[test]
fn dropping_a_cluster_stops_its_server_and_removes_its_files() {
    let pg = Pg::start_new();
    let (addr, dir) = (pg.addr(), pg.dir().to_path_buf());
    std::net::TcpStream::connect(addr).expect("listening while alive");
    drop(pg);
    let refused = std::net::TcpStream::connect(addr).expect_err("stopped");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(!dir.exists(), "{} removed", dir.display());
}

// ---- the TCP fault proxy in front of it --------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_through_drop_replies_is_applied_while_the_client_never_hears_back() {
    let pg = Pg::start_new();
    pg.psql("CREATE TABLE acked (id int PRIMARY KEY)");
    let proxy = TcpProxy::start(pg.addr());
    let c = connected(&pg.url_via(proxy.addr)).await;
    c.batch_execute("BEGIN; INSERT INTO acked VALUES (7)")
        .await
        .unwrap();
    assert_eq!(pg.psql("SELECT count(*) FROM acked"), "0", "not yet");

    proxy.set_mode(Mode::DropReplies);
    let commit = timeout(Duration::from_secs(2), c.batch_execute("COMMIT")).await;
    assert!(
        commit.is_err(),
        "the client must hear nothing back, got {commit:?}"
    );
    // A second connection, not through the proxy, sees the commit.
    common::wait_for(HANG, "the COMMIT to be applied", || {
        (pg.psql("SELECT count(*) FROM acked WHERE id = 7") == "1").then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_replies_after_passes_until_the_pattern_then_swallows_its_answer() {
    let pg = Pg::start_new();
    pg.psql("CREATE TABLE acked (id int PRIMARY KEY)");
    let proxy = TcpProxy::start(pg.addr());
    let c = connected(&pg.url_via(proxy.addr)).await;
    proxy.drop_replies_after(b"COMMIT\0");
    // Everything before the pattern is answered.
    c.batch_execute("BEGIN; INSERT INTO acked VALUES (8)")
        .await
        .unwrap();
    assert_eq!(proxy.mode(), Mode::Pass);
    let commit = timeout(Duration::from_secs(2), c.batch_execute("COMMIT")).await;
    assert!(
        commit.is_err(),
        "the COMMIT's answer must be swallowed, got {commit:?}"
    );
    assert_eq!(proxy.mode(), Mode::DropReplies);
    common::wait_for(HANG, "the COMMIT to be applied", || {
        (pg.psql("SELECT count(*) FROM acked WHERE id = 8") == "1").then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_makes_open_and_new_connections_fail_at_once() {
    let pg = Pg::start_new();
    let proxy = TcpProxy::start(pg.addr());
    let c = connected(&pg.url_via(proxy.addr)).await;
    c.simple_query("SELECT 1").await.unwrap();

    proxy.set_mode(Mode::Reset);
    // An idle pooled connection learns of the reset on its next use.
    let t0 = Instant::now();
    let open = timeout(HANG, async {
        // The reset reaches the client within a tick of the proxy; the
        // first query may race it, the connection is dead by the second.
        for _ in 0..50 {
            c.simple_query("SELECT 1").await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok::<(), tokio_postgres::Error>(())
    })
    .await
    .expect("a query on a reset connection hung");
    let err = open.expect_err("the open connection was reset");
    eprintln!("open connection failed after {:?}: {err}", t0.elapsed());
    assert!(c.is_closed(), "the client knows its connection is gone");
    common::wait_for(HANG, "the proxy to drop the reset relay", || {
        (proxy.open() == 0).then_some(())
    });

    let t1 = Instant::now();
    let new = timeout(HANG, connect(&pg.url_via(proxy.addr)))
        .await
        .expect("a connect through a resetting proxy hung");
    assert!(new.is_err(), "a new connection was reset");
    eprintln!("new connection failed after {:?}", t1.elapsed());

    proxy.set_mode(Mode::Pass);
    let back = connected(&pg.url_via(proxy.addr)).await;
    back.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_makes_a_client_with_a_timeout_time_out_and_pass_resumes_it() {
    let pg = Pg::start_new();
    let proxy = TcpProxy::start(pg.addr());
    let c = connected(&pg.url_via(proxy.addr)).await;
    c.simple_query("SELECT 1").await.unwrap();

    proxy.set_mode(Mode::Blackhole);
    assert_eq!(proxy.mode(), Mode::Blackhole);
    let stalled = timeout(Duration::from_millis(500), c.simple_query("SELECT 2")).await;
    assert!(stalled.is_err(), "an open connection stalls: {stalled:?}");
    // tokio-postgres' connect_timeout covers the TCP connect only, which
    // a blackhole accepts: the startup exchange is what hangs, so a
    // client must bound the whole connect itself.
    let new = timeout(Duration::from_millis(500), connect(&pg.url_via(proxy.addr))).await;
    assert!(new.is_err(), "a new connection's login stalls");
    assert_eq!(proxy.accepted(), 2, "the blackhole accepted the new one");

    // After the heal the held bytes arrive: the open connection works.
    proxy.set_mode(Mode::Pass);
    let rows = timeout(HANG, c.simple_query("SELECT 3"))
        .await
        .expect("the connection stayed stalled after the heal");
    assert!(rows.is_ok(), "the open connection survived: {rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_catches_only_the_connection_that_sent_its_marker_then_its_pattern() {
    let pg = Pg::start_new();
    pg.psql("CREATE TABLE acked (id int PRIMARY KEY)");
    let proxy = TcpProxy::start(pg.addr());
    let bystander = connected(&pg.url_via(proxy.addr)).await;
    let c = connected(&pg.url_via(proxy.addr)).await;

    // Answer lost: a COMMIT of another connection, and one of this
    // connection before its marker, pass; the one after it is applied
    // unheard, while the other connections (and new ones) go on.
    proxy.trap(b"VALUES (9)", b"COMMIT", Trap::AnswerLost);
    bystander
        .batch_execute("BEGIN; INSERT INTO acked VALUES (1); COMMIT")
        .await
        .unwrap();
    c.batch_execute("BEGIN; INSERT INTO acked VALUES (2); COMMIT")
        .await
        .unwrap();
    assert!(!proxy.trapped());
    c.batch_execute("BEGIN; INSERT INTO acked VALUES (9)")
        .await
        .unwrap();
    let commit = timeout(Duration::from_secs(1), c.batch_execute("COMMIT")).await;
    assert!(commit.is_err(), "the answer is swallowed: {commit:?}");
    assert!(proxy.trapped());
    common::wait_for(HANG, "the COMMIT to be applied", || {
        (pg.psql("SELECT count(*) FROM acked WHERE id = 9") == "1").then_some(())
    });
    bystander.simple_query("SELECT 1").await.unwrap();
    connected(&pg.url_via(proxy.addr))
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();
    // The cut resets the caught connection: its client hears of it.
    proxy.cut_trapped();
    let dead = timeout(HANG, async {
        for _ in 0..50 {
            if c.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        dead.is_ok() && c.is_closed(),
        "the caught connection was cut"
    );
    bystander.simple_query("SELECT 2").await.unwrap();

    // Request lost: the COMMIT never reaches the server.
    let c = connected(&pg.url_via(proxy.addr)).await;
    proxy.trap(b"VALUES (10)", b"COMMIT", Trap::RequestLost);
    c.batch_execute("BEGIN; INSERT INTO acked VALUES (10)")
        .await
        .unwrap();
    let commit = timeout(Duration::from_secs(1), c.batch_execute("COMMIT")).await;
    assert!(commit.is_err(), "nothing comes back: {commit:?}");
    assert!(proxy.trapped());
    proxy.cut_trapped();
    common::wait_for(HANG, "the server to end the cut session", || {
        (pg.psql("SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'")
            == "0")
            .then_some(())
    });
    assert_eq!(
        pg.psql("SELECT count(*) FROM acked WHERE id = 10"),
        "0",
        "never committed"
    );
}
