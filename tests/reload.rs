//! The hand-off on reload against the real binary: the running
//! instance starts the binary on disk with its sockets, the successor reports
//! `MAINPID=` + `READY=1`, and only then does the old one stop accepting.
//!
//! The test process makes itself a child subreaper, as systemd is for a unit,
//! so a successor whose parent exits becomes our child and can be reaped.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

fn main_pids(h: &Hookd) -> Vec<i32> {
    h.notify
        .lines_with("MAINPID=")
        .iter()
        .map(|(_, l)| l["MAINPID=".len()..].parse().unwrap())
        .collect()
}

/// `hookd reload`, as ExecReload runs it.
fn reload(h: &Hookd) -> (i32, String, String) {
    h.cli(&["reload"])
}

/// Waits for a process that is not a `Child` of ours to be gone. If it was
/// reparented to us (we are a subreaper) we reap it and return its status;
/// its parent may also have reaped it first (a predecessor still draining).
fn wait_pid_gone(pid: i32, limit: Duration) -> Option<WaitStatus> {
    wait_for(limit, &format!("pid {pid} to exit"), || {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => None,
            Ok(st) => Some(Some(st)),
            Err(nix::errno::Errno::ECHILD) => {
                let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    !s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                });
                (!alive).then_some(None)
            }
            Err(e) => panic!("waitpid {pid}: {e}"),
        }
    })
}

#[test]
fn twenty_reloads_under_load_lose_and_refuse_nothing() {
    common::subreaper();
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::ok();
    let mut h = Hookd::configure(
        dir.path(),
        &forward_hook(dir.path(), "gh", &up.url(), "concurrency = 4"),
    );
    h.start();
    let first_pid = h.pid();

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<i64>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let sent = Arc::new(AtomicUsize::new(0));
    let addr = h.addr();
    let load: Vec<_> = (0..4)
        .map(|t| {
            let (stop, acked, failures, sent) =
                (stop.clone(), acked.clone(), failures.clone(), sent.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(120);
                // Half the clients reuse keep-alive connections, as a proxy's pool does.
                let mut pooled = None;
                for i in 0..20_000 {
                    if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                        break;
                    }
                    let body = format!("{{\"t\":{t},\"i\":{i}}}");
                    sent.fetch_add(1, Ordering::Relaxed);
                    let res = if t % 2 == 1 {
                        post_gh_keep_alive(&mut pooled, addr, body.as_bytes())
                    } else {
                        post_gh(addr, body.as_bytes())
                    };
                    match res {
                        Ok(r) if r.status == 202 => {
                            acked.lock().unwrap().push(r.json()["id"].as_i64().unwrap())
                        }
                        Ok(r) => failures
                            .lock()
                            .unwrap()
                            .push(format!("status {}", r.status)),
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                    // A steady rate, not a flood: ~200 req/s per thread.
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();

    let mut pids = vec![first_pid];
    for n in 0..20 {
        // Load across every reload: some answers before each one.
        let acks = acked.lock().unwrap().len();
        wait_for(Duration::from_secs(20), "load between reloads", || {
            (acked.lock().unwrap().len() >= acks + 10).then_some(())
        });
        let before = main_pids(&h).len();
        let (code, out, err) = reload(&h);
        assert_eq!(
            code,
            0,
            "reload {n} failed: {out}{err}\nlog:\n{}",
            h.log_text()
        );
        let pid = wait_for(Duration::from_secs(10), "MAINPID of the successor", || {
            main_pids(&h).get(before).copied()
        });
        assert!(out.contains(&pid.to_string()), "{out}");
        pids.push(pid);
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    // Every old instance drained and exited 0.
    assert_eq!(h.wait_exit(Duration::from_secs(20)).code(), Some(0));
    for &pid in &pids[1..pids.len() - 1] {
        if let Some(st) = wait_pid_gone(pid, Duration::from_secs(20)) {
            assert_eq!(st, WaitStatus::Exited(Pid::from_raw(pid), 0));
        }
    }
    // Each of the 20 old instances drained to the end (they share the log).
    let log = h.log_text();
    assert_eq!(log.matches("drain complete").count(), 20, "{log}");
    let last = *pids.last().unwrap();
    let acked: HashSet<i64> = acked.lock().unwrap().iter().copied().collect();
    wait_for(Duration::from_secs(30), "every acked id delivered", || {
        let got: HashSet<i64> = up.ids().into_iter().collect();
        acked.is_subset(&got).then_some(())
    });
    let all = up.ids();
    let distinct: HashSet<i64> = all.iter().copied().collect();
    let failures = failures.lock().unwrap().clone();
    println!(
        "20 reloads: {} sent, {} acked, {} failed, {} delivered ({} duplicate deliveries)",
        sent.load(Ordering::Relaxed),
        acked.len(),
        failures.len(),
        distinct.len(),
        all.len() - distinct.len()
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert!(acked.len() > 100, "too little load: {}", acked.len());

    kill(Pid::from_raw(last), Signal::SIGTERM).unwrap();
    assert_eq!(
        wait_pid_gone(last, Duration::from_secs(20)),
        Some(WaitStatus::Exited(Pid::from_raw(last), 0))
    );
}

#[test]
fn a_long_delivery_finishes_in_the_old_instance_while_the_new_one_serves() {
    common::subreaper();
    let dir = tempfile::tempdir().unwrap();
    // The first request takes 5 s (the hook times out at 10 s); the rest are answered at once.
    let up = Upstream::start(Arc::new(|n, _| {
        (
            200,
            if n == 0 {
                Duration::from_secs(5)
            } else {
                Duration::ZERO
            },
        )
    }));
    let mut h = Hookd::configure(
        dir.path(),
        &forward_hook(dir.path(), "gh", &up.url(), "concurrency = 2"),
    );
    h.start();
    let old = h.pid();
    let slow = h.post_signed("gh", b"{\"slow\":1}", &[]).json()["id"]
        .as_i64()
        .unwrap();
    wait_for(
        Duration::from_secs(10),
        "the slow delivery to start",
        || (!up.received().is_empty()).then_some(()),
    );

    let (code, out, err) = reload(&h);
    assert_eq!(code, 0, "{out}{err}");
    let new = *main_pids(&h).last().unwrap();
    assert_ne!(new, old);
    // The new instance serves and delivers while the old one still holds the slow delivery.
    let fresh = h.post_signed("gh", b"{\"fresh\":1}", &[]).json()["id"]
        .as_i64()
        .unwrap();
    wait_for(Duration::from_secs(10), "the new webhook delivered", || {
        up.ids().contains(&fresh).then_some(())
    });
    assert!(
        h.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "old instance left before its delivery ended"
    );

    assert_eq!(h.wait_exit(Duration::from_secs(20)).code(), Some(0));
    let done: HashSet<i64> = h
        .items("done")
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert!(
        done.contains(&slow) && done.contains(&fresh),
        "{done:?}\n{}",
        h.log_text()
    );
    assert_eq!(
        up.ids().iter().filter(|&&i| i == slow).count(),
        1,
        "the slow delivery ran twice"
    );
    kill(Pid::from_raw(new), Signal::SIGTERM).unwrap();
    assert_eq!(
        wait_pid_gone(new, Duration::from_secs(20)),
        Some(WaitStatus::Exited(Pid::from_raw(new), 0))
    );
}

#[test]
fn a_failed_reload_keeps_the_old_instance_serving_and_says_why() {
    common::subreaper();
    let dir = tempfile::tempdir().unwrap();
    // Run a copy of the binary, so the test can replace "the binary on disk".
    let bin = dir.path().join("hookd");
    std::fs::copy(BIN, &bin).unwrap();
    let up = Upstream::ok();
    let mut h = Hookd::configure(dir.path(), &forward_hook(dir.path(), "gh", &up.url(), ""));
    let good_config = std::fs::read_to_string(&h.config).unwrap();
    h.bin = bin.clone();
    h.start();
    let pid = h.pid();

    // 1. A config on disk that does not parse: `hookd reload` refuses it,
    // naming file and line, and the daemon is not disturbed.
    let unparsable = format!(
        r#"{good_config}
[server]
listen = 3
"#
    );
    std::fs::write(&h.config, unparsable).unwrap();
    let (code, _, err) = reload(&h);
    assert_eq!(code, 2);
    assert!(err.contains("hookd.toml:"), "{err}");

    // 2. One that parses but cannot run (a secret file is missing): the
    // daemon's own check refuses it and says why.
    let missing = good_config.replace("github.secret", "missing.secret");
    std::fs::write(&h.config, missing).unwrap();
    let (code, _, err) = reload(&h);
    assert_ne!(code, 0);
    assert!(
        err.contains("reload failed") && err.contains("missing.secret"),
        "{err}"
    );
    std::fs::write(&h.config, &good_config).unwrap();
    assert_eq!(h.post_signed("gh", b"{}", &[]).status, 202);

    // 3. A binary that exits at start.
    let real = dir.path().join("hookd.real");
    std::fs::rename(&bin, &real).unwrap();
    std::fs::write(&bin, "#!/bin/sh\necho broken build >&2\nexit 7\n").unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (code, _, err) = reload(&h);
    assert_ne!(code, 0);
    assert!(err.contains("exit status: 7"), "{err}");

    assert!(
        main_pids(&h).is_empty(),
        "MAINPID moved although no successor was ready"
    );
    assert_eq!(h.pid(), pid);
    assert!(
        h.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "old instance died"
    );
    assert_eq!(h.post_signed("gh", b"{\"still\":1}", &[]).status, 202);
    let log = h.log_text();
    assert!(log.contains("reload_failed"), "{log}");
    // READY=1 again after each RELOADING=1, so systemd leaves the reloading state.
    assert_eq!(h.notify.lines_with("RELOADING=1").len(), 2);
    assert_eq!(h.notify.lines_with("READY=1").len(), 3);
}

#[test]
fn sighup_reloads_and_a_removed_hooks_pending_items_are_listed_as_orphaned() {
    common::subreaper();
    let dir = tempfile::tempdir().unwrap();
    // "old" points at an upstream that always fails, so its item stays pending.
    let failing = Upstream::start(Arc::new(|_, _| (500, Duration::ZERO)));
    let up = Upstream::ok();
    let retry = r#"retry = { max_attempts = 50, backoff = "1h", max_backoff = "1h" }"#;
    let old_hook = forward_hook(dir.path(), "old", &failing.url(), retry);
    let keep_hook = forward_hook(dir.path(), "keep", &up.url(), "");
    let mut h = Hookd::configure(dir.path(), &format!("{old_hook}{keep_hook}"));
    h.start();
    let orphan = h.post_signed("old", b"{}", &[]).json()["id"]
        .as_i64()
        .unwrap();
    wait_for(Duration::from_secs(10), "the first failed attempt", || {
        (!failing.received().is_empty()).then_some(())
    });

    // The new config drops "old" and adds "new"; SIGHUP does what `hookd reload` does.
    let text = std::fs::read_to_string(&h.config).unwrap();
    let new_hook = forward_hook(dir.path(), "new", &up.url(), "");
    std::fs::write(&h.config, text.replace(&old_hook, &new_hook)).unwrap();
    h.signal(Signal::SIGHUP);
    let new = wait_for(Duration::from_secs(10), "MAINPID after SIGHUP", || {
        main_pids(&h).first().copied()
    });
    assert_eq!(h.wait_exit(Duration::from_secs(20)).code(), Some(0));

    let r = h.post_signed("new", b"{\"added\":1}", &[]);
    assert_eq!(r.status, 202, "the added hook is live");
    assert_eq!(
        h.post_signed("old", b"{}", &[]).status,
        404,
        "the removed hook is gone"
    );
    let (code, out, err) = h.cli(&["spool", "ls", "--orphaned", "--json"]);
    assert_eq!(code, 0, "{err}");
    let orphans: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(orphans.len(), 1, "{out}");
    assert_eq!(orphans[0]["id"].as_i64(), Some(orphan));
    let (_, out, _) = h.cli(&["status", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["orphaned_pending"].as_u64(), Some(1), "{st}");
    assert_eq!(st["pid"].as_i64(), Some(new as i64));

    kill(Pid::from_raw(new), Signal::SIGTERM).unwrap();
    wait_pid_gone(new, Duration::from_secs(20));
}
