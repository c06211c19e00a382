//! The drain on SIGTERM/SIGINT (grace window, one extension, then abandon)
//! against the real binary, real signals and a real datagram socket as
//! NOTIFY_SOCKET that records each message with its time.

mod common;

use std::io::{BufReader, Read};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

fn hook_with_grace(dir: &std::path::Path, url: &str, grace: &str, timeout: &str) -> String {
    format!(
        r#"[shutdown]
grace = "{grace}"

[[hook]]
name = "gh"
verify = {{ scheme = "github", secret_file = "{}/github.secret" }}
action = {{ forward = "{url}", timeout = "{timeout}" }}
"#,
        dir.display()
    )
}

/// A hookd (grace 30 s) whose one delivery is running at an upstream that
/// answers after `delay`.
fn slow_delivery_in_flight(delay: Duration) -> (tempfile::TempDir, Hookd, Upstream) {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(Arc::new(move |_, _| (200, delay)));
    let mut h = Hookd::configure(
        dir.path(),
        &hook_with_grace(dir.path(), &up.url(), "30s", "10s"),
    );
    h.start();
    assert_eq!(h.post_signed("gh", b"{}", &[]).status, 202);
    wait_for(Duration::from_secs(10), "the delivery to start", || {
        (!up.received().is_empty()).then_some(())
    });
    (dir, h, up)
}

#[test]
fn sigterm_waits_for_a_running_delivery_and_keeps_spooling() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(Arc::new(|_, _| (200, Duration::from_secs(2))));
    let mut h = Hookd::configure(
        dir.path(),
        &hook_with_grace(dir.path(), &up.url(), "30s", "10s"),
    );
    h.start();
    let r = h.post_signed("gh", b"{\"slow\":true}", &[]);
    assert_eq!(r.status, 202);
    let slow_id = r.json()["id"].as_i64().unwrap();
    wait_for(
        Duration::from_secs(10),
        "the slow delivery to start",
        || (!up.received().is_empty()).then_some(()),
    );

    h.signal(Signal::SIGTERM);
    let (t_stop, _) = h.notify.wait_line("STOPPING=1", Duration::from_secs(5));
    let extends = wait_for(Duration::from_secs(5), "EXTEND_TIMEOUT_USEC", || {
        Some(h.notify.lines_with("EXTEND_TIMEOUT_USEC=")).filter(|e| !e.is_empty())
    });
    assert!(extends[0].0 >= t_stop, "{extends:?}");
    let usec: u64 = extends[0].1["EXTEND_TIMEOUT_USEC=".len()..]
        .parse()
        .unwrap();
    assert!(
        usec >= 30_000_000,
        "extension shorter than the grace window: {usec}"
    );

    // Ingress still spools during the drain.
    let r = h.post_signed("gh", b"{\"during\":\"drain\"}", &[]);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let during_id = r.json()["id"].as_i64().unwrap();

    let st = h.wait_exit(Duration::from_secs(15));
    assert_eq!(st.code(), Some(0), "log:\n{}", h.log_text());
    let done: Vec<i64> = h
        .items("done")
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(done, vec![slow_id]);
    let pending: Vec<i64> = h
        .items("pending")
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        pending,
        vec![during_id],
        "the item spooled during the drain waits for the next start"
    );
    let log = h.log_text();
    assert!(
        log.contains("drain_start") && log.contains("drain_complete"),
        "{log}"
    );
}

#[test]
fn work_left_after_the_extension_is_released_and_exit_is_1() {
    let dir = tempfile::tempdir().unwrap();
    // The first request hangs (past the whole drain); later ones answer at once.
    let up = Upstream::start(Arc::new(|n, _| {
        (
            200,
            if n == 0 {
                Duration::from_secs(30)
            } else {
                Duration::ZERO
            },
        )
    }));
    let mut h = Hookd::configure(
        dir.path(),
        &hook_with_grace(dir.path(), &up.url(), "1s", "60s"),
    );
    h.start();
    let r = h.post_signed("gh", b"{\"hangs\":true}", &[]);
    let id = r.json()["id"].as_i64().unwrap();
    wait_for(Duration::from_secs(10), "the delivery to start", || {
        (!up.received().is_empty()).then_some(())
    });

    let t0 = Instant::now();
    h.signal(Signal::SIGTERM);
    let st = h.wait_exit(Duration::from_secs(20));
    let took = t0.elapsed();
    assert_eq!(st.code(), Some(1), "log:\n{}", h.log_text());
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "exit after {took:?}"
    );
    let extends = h.notify.lines_with("EXTEND_TIMEOUT_USEC=");
    assert_eq!(
        extends.len(),
        2,
        "one at drain start, one for the extension: {extends:?}"
    );
    let gap = extends[1].0 - extends[0].0;
    assert!(
        gap >= Duration::from_millis(900) && gap < Duration::from_secs(3),
        "extension sent after {gap:?}"
    );

    let log = h.log_text();
    assert!(log.contains("drain_timeout"), "{log}");
    assert!(
        log.contains("delivery_abandoned") && log.contains(&format!("delivery_id={id}")),
        "{log}"
    );
    let pending = h.items("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["id"].as_i64(), Some(id));
    assert!(pending[0]["lease_owner"].is_null(), "{}", pending[0]);
    assert_eq!(
        pending[0]["attempts"].as_u64(),
        Some(0),
        "an abandoned attempt does not count"
    );

    h.start();
    wait_for(
        Duration::from_secs(10),
        "the abandoned item to be delivered",
        || (h.items("done").len() == 1).then_some(()),
    );
}

#[test]
fn a_second_sigterm_changes_nothing_and_sigint_drains_the_same_way() {
    for first in [Signal::SIGTERM, Signal::SIGINT] {
        let (_dir, mut h, _up) = slow_delivery_in_flight(Duration::from_millis(1500));
        h.signal(first);
        h.notify.wait_line("STOPPING=1", Duration::from_secs(5));
        h.signal(Signal::SIGTERM);
        let st = h.wait_exit(Duration::from_secs(15));
        assert_eq!(st.code(), Some(0), "{first:?}: {}", h.log_text());
        assert!(
            h.log_text().contains("already draining"),
            "{}",
            h.log_text()
        );
        assert_eq!(h.notify.lines_with("STOPPING=1").len(), 1);
        assert_eq!(h.items("done").len(), 1);
    }
}

#[test]
fn shutdown_hooks_run_in_priority_order_and_a_hanging_one_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("order");
    let hooks = format!(
        r#"[shutdown]
grace = "5s"

[[shutdown.hook]]
name = "second"
exec = ["/bin/sh", "-c", "echo second >> {o}"]
priority = 10

[[shutdown.hook]]
name = "hangs"
exec = ["/bin/sleep", "60"]
priority = 5
timeout = "300ms"

[[shutdown.hook]]
name = "first"
exec = ["/bin/sh", "-c", "echo first >> {o}"]
priority = -1
"#,
        o = out.display()
    );
    let mut h = Hookd::configure(dir.path(), &hooks);
    h.start();
    let t0 = Instant::now();
    h.signal(Signal::SIGTERM);
    let st = h.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "first\nsecond\n");
    let log = h.log_text();
    assert!(
        log.contains("shutdown_hook_failed") && log.contains("hangs"),
        "{log}"
    );
}

#[test]
fn keep_alive_connections_are_closed_at_drain_start() {
    // A delivery in flight keeps the drain open.
    let (_dir, mut h, _up) = slow_delivery_in_flight(Duration::from_secs(3));

    // Idle keep-alive: one answered request, then nothing.
    let mut idle = connect(h.addr());
    write_request(&mut idle, "GET", "/healthz", &[], b"", false).unwrap();
    let mut idle_r = BufReader::new(idle.try_clone().unwrap());
    assert_eq!(read_response(&mut idle_r).unwrap().status, 200);

    // Busy: a request whose body is still coming when the drain starts.
    let mut busy = connect(h.addr());
    let body = b"{\"busy\":1}";
    let sig = github_sig(SECRET, body);
    use std::io::Write;
    write!(busy, "POST /hooks/gh HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: {sig}\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
    busy.write_all(&body[..3]).unwrap();

    h.signal(Signal::SIGTERM);
    h.notify.wait_line("STOPPING=1", Duration::from_secs(5));

    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1];
    let n = idle_r
        .read(&mut buf)
        .expect("idle connection should be closed, not time out");
    assert_eq!(n, 0, "idle keep-alive connection was not closed");

    busy.write_all(&body[3..]).unwrap();
    let r = read_response(&mut BufReader::new(busy)).unwrap();
    assert_eq!(r.status, 202);
    assert_eq!(
        r.header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("close")
    );
    assert_eq!(h.wait_exit(Duration::from_secs(15)).code(), Some(0));
}

#[test]
fn no_request_fails_during_the_drain() {
    // A delivery in flight keeps the drain open.
    let (_dir, mut h, _up) = slow_delivery_in_flight(Duration::from_secs(3));

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let addr = h.addr();
    let load: Vec<_> = (0..4)
        .map(|t| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                for i in 0..2000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let body = format!("{{\"t\":{t},\"i\":{i}}}");
                    match post_gh(addr, body.as_bytes()) {
                        Ok(r) if r.status == 202 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    wait_for(Duration::from_secs(10), "some load", || {
        (ok.load(Ordering::Relaxed) > 20).then_some(())
    });
    h.signal(Signal::SIGTERM);
    h.notify.wait_line("STOPPING=1", Duration::from_secs(5));
    let at_stop = ok.load(Ordering::Relaxed);
    // Keep loading while the delivery holds the drain open.
    wait_for(Duration::from_secs(10), "load during the drain", || {
        (ok.load(Ordering::Relaxed) > at_stop + 20).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "during the drain: {} answered 202 after STOPPING=1, {ok} in all, {failed} failed",
        ok - at_stop
    );
    assert_eq!(failed, 0);
    assert_eq!(h.wait_exit(Duration::from_secs(15)).code(), Some(0));
}
