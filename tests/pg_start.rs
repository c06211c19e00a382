//! Starting a node on PostgreSQL: a database that does not answer yet is
//! waited for (bounded), one that refuses the login is an error at once.

mod common;

#[path = "common/pg.rs"]
mod pg;

use std::time::{Duration, Instant};

use common::{forward_hook, wait_for, Hookd, Upstream};
use pg::Pg;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn a_node_started_before_its_database_waits_for_it_and_then_serves() {
    let mut pg = Pg::start_new();
    let url = pg.url();
    pg.stop_immediate();
    let tmp = tempfile::tempdir().expect("tempdir");
    let up = Upstream::ok();
    let hooks = forward_hook(tmp.path(), "gh", &up.url(), "");
    let mut a = Hookd::configure_pg(tmp.path(), &url, "a", "connect_timeout = \"1s\"", &hooks);
    let child = a.command().spawn().expect("spawn hookd");
    a.child = Some(child);
    // It says what it waits for, and is not ready.
    wait_for(WAIT, "the wait to be reported", || {
        let st = a.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        assert!(st.is_none(), "hookd exited: {st:?}\n{}", a.log_text());
        a.notify
            .lines_with("STATUS=waiting for the spool's database")
            .first()
            .cloned()
    });
    assert!(a.notify.lines_with("READY=1").is_empty());
    let up_at = Instant::now();
    pg.start();
    let (ready_at, _) = a.notify.wait_line("READY=1", WAIT);
    eprintln!(
        "ready {:?} after the database came up",
        ready_at.saturating_duration_since(up_at)
    );
    let r = a.post_signed("gh", b"{\"after\":\"wait\"}", &[]);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    wait_for(WAIT, "the delivery", || {
        (!up.received().is_empty()).then_some(())
    });
    assert!(
        a.log_text().contains("spool_unreachable"),
        "{}",
        a.log_text()
    );
    a.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(a.wait_exit(WAIT).success());
}

#[test]
fn a_refused_login_fails_the_start_at_once_with_the_servers_reason() {
    let pg = Pg::start_new();
    let wrong = pg.url().replace(pg.password(), "not-the-password");
    let tmp = tempfile::tempdir().expect("tempdir");
    let hooks = forward_hook(tmp.path(), "gh", "http://127.0.0.1:9/", "");
    let a = Hookd::configure_pg(tmp.path(), &wrong, "a", "", &hooks);
    let t = Instant::now();
    let out = a.command().output().expect("run hookd");
    assert_eq!(out.status.code(), Some(3), "exit 3: spool");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "no waiting for a server that answered"
    );
    let log = a.log_text();
    assert!(log.contains("password authentication failed"), "{log}");
    assert!(
        !log.contains(pg.password()),
        "the log never shows the password"
    );
}
