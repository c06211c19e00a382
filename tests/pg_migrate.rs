//! `hookd spool migrate --to URL`: a real node's SQLite spool, filled by
//! real traffic and stopped, copied into PostgreSQL by the CLI; a node on
//! PostgreSQL then carries on with the same ids, states and dedup keys.

mod common;

#[path = "common/pg.rs"]
mod pg;

use std::sync::Arc;
use std::time::Duration;

use common::{forward_hook, wait_for, Hookd, Upstream};
use pg::Pg;

const WAIT: Duration = Duration::from_secs(30);

fn hooks(dir: &std::path::Path, ok_url: &str, later_url: &str) -> String {
    format!(
        "{}\n{}",
        forward_hook(
            dir,
            "gh",
            ok_url,
            "dedup_header = \"X-GitHub-Delivery\"\nretry = { max_attempts = 1 }"
        ),
        forward_hook(
            dir,
            "later",
            later_url,
            "retry = { max_attempts = 1000, backoff = \"100ms\", max_backoff = \"200ms\" }"
        )
    )
}

fn count(pg: &Pg, sql: &str) -> i64 {
    pg.psql(sql).trim().parse().expect("a count")
}

#[test]
fn a_stopped_nodes_sqlite_spool_moves_to_postgres_and_a_node_there_carries_on() {
    let pg = Pg::start_new();
    let tmp = tempfile::tempdir().expect("tempdir");
    // 200 for bodies with "ok", 500 (dead after one attempt) otherwise.
    let up = Upstream::start(Arc::new(|_, r: &common::Received| {
        let ok = String::from_utf8_lossy(&r.body).contains("ok");
        (if ok { 200 } else { 500 }, Duration::ZERO)
    }));
    // Nothing listens here: "later" items keep failing and stay pending.
    let closed = format!("http://127.0.0.1:{}/", common::free_port());

    let old_dir = tmp.path().join("sqlite");
    std::fs::create_dir_all(&old_dir).expect("dir");
    let mut old = Hookd::configure(&old_dir, &hooks(&old_dir, &up.url(), &closed));
    old.start();
    let mut ids = Vec::new();
    for i in 0..10 {
        let r = old.post_signed(
            "gh",
            format!("{{\"ok\":{i}}}").as_bytes(),
            &[("X-GitHub-Delivery", &format!("d-{i}"))],
        );
        assert_eq!(r.status, 202);
        ids.push(r.json()["id"].as_i64().expect("id"));
    }
    for i in 0..5 {
        let r = old.post_signed(
            "gh",
            format!("{{\"bad\":{i}}}").as_bytes(),
            &[("X-GitHub-Delivery", &format!("x-{i}"))],
        );
        assert_eq!(r.status, 202);
    }
    let mut later = Vec::new();
    for i in 0..10 {
        let r = old.post_signed("later", format!("{{\"later\":{i}}}").as_bytes(), &[]);
        assert_eq!(r.status, 202);
        later.push(r.json()["id"].as_i64().expect("id"));
    }
    wait_for(WAIT, "10 done and 5 dead in SQLite", || {
        (old.items("done").len() == 10 && old.items("dead").len() == 5).then_some(())
    });
    wait_for(WAIT, "every later item attempted", || {
        let p = old.items("pending");
        (p.len() == 10 && p.iter().all(|i| i["attempts"].as_u64() > Some(0))).then_some(())
    });
    old.signal(nix::sys::signal::Signal::SIGTERM);
    old.wait_exit(WAIT);

    // The copy, by the CLI, with the old config.
    let url = pg.url();
    let (code, out, err) = old.cli(&["spool", "migrate", "--to", &url, "--chunk", "7"]);
    assert_eq!(code, 0, "migrate: {err}");
    assert!(out.contains("copied 25 requests"), "{out}");
    assert!(!out.contains(pg.password()) && !err.contains(pg.password()));
    let (code, out, _) = old.cli(&["spool", "migrate", "--to", &url]);
    assert_eq!(code, 0);
    assert!(out.contains("already holds a complete copy"), "{out}");
    assert_eq!(count(&pg, "SELECT count(*) FROM requests"), 25);
    assert_eq!(
        count(&pg, "SELECT count(*) FROM deliveries WHERE state = 'dead'"),
        5
    );

    // A node on PostgreSQL, its "later" upstream working now.
    let new_dir = tmp.path().join("pg");
    std::fs::create_dir_all(&new_dir).expect("dir");
    let good = Upstream::ok();
    let mut node = Hookd::configure_pg(
        &new_dir,
        &url,
        "a",
        "",
        &hooks(&new_dir, &up.url(), &good.url()),
    );
    node.start();
    wait_for(WAIT, "the copied pending items delivered", || {
        (good.received().len() >= 10).then_some(())
    });
    let mut got = good.ids();
    got.sort_unstable();
    assert_eq!(got, later, "the same ids, each once");
    // Dedup keys came along: a repeat of a delivered one is a duplicate.
    let r = node.post_signed("gh", b"{\"ok\":3}", &[("X-GitHub-Delivery", "d-3")]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["id"].as_i64(), Some(ids[3]));
    // New ids are above every copied one.
    let r = node.post_signed("gh", b"{\"ok\":\"new\"}", &[("X-GitHub-Delivery", "n-1")]);
    assert_eq!(r.status, 202);
    let max_old = *ids.iter().chain(&later).max().expect("ids");
    assert!(r.json()["id"].as_i64() > Some(max_old));
    assert_eq!(node.items("dead").len(), 5);
    node.signal(nix::sys::signal::Signal::SIGTERM);
    node.wait_exit(WAIT);
}

#[test]
fn migrate_refuses_a_database_that_already_holds_requests() {
    let pg = Pg::start_new();
    let tmp = tempfile::tempdir().expect("tempdir");
    let up = Upstream::ok();
    // A node on PostgreSQL writes one request, then stops.
    let pg_dir = tmp.path().join("pg");
    std::fs::create_dir_all(&pg_dir).expect("dir");
    let mut node = Hookd::configure_pg(
        &pg_dir,
        &pg.url(),
        "a",
        "",
        &forward_hook(&pg_dir, "gh", &up.url(), ""),
    );
    node.start();
    assert_eq!(node.post_signed("gh", b"{}", &[]).status, 202);
    node.signal(nix::sys::signal::Signal::SIGTERM);
    node.wait_exit(WAIT);

    let dir = tmp.path().join("sqlite");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut old = Hookd::configure(&dir, &forward_hook(&dir, "gh", &up.url(), ""));
    old.start();
    assert_eq!(old.post_signed("gh", b"{}", &[]).status, 202);
    old.signal(nix::sys::signal::Signal::SIGTERM);
    old.wait_exit(WAIT);
    let (code, _, err) = old.cli(&["spool", "migrate", "--to", &pg.url()]);
    assert_ne!(code, 0);
    assert!(err.contains("already holds 1 requests"), "{err}");
    assert_eq!(count(&pg, "SELECT count(*) FROM requests"), 1);
}
