//! Faults around the hand-off on reload: a reload storm, crashes of either
//! side of a hand-off, an instance paused past its leases while its successor
//! runs, and SIGKILLs aimed at checkpoints, drains and hand-offs. Each
//! scenario ends with the campaign's checker (`faults/checker.rs`).
//! `HOOKD_TEST_SEED` replays a run. See RELIABILITY.md, "Hand-off faults".
//!
//! The test process is a child subreaper, as systemd is for a unit: a
//! successor whose parent exits becomes our child and is reaped here.

mod common;

// Not every helper of the checker is used by these scenarios.
#[allow(dead_code)]
#[path = "faults/checker.rs"]
mod checker;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use checker::{env_count, seed, Run, Sent};
use common::{wait_for, Hookd, BIN};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use rand::Rng;

/// Every `MAINPID=` a successor sent, in order.
fn main_pids(h: &Hookd) -> Vec<i32> {
    h.notify
        .lines_with("MAINPID=")
        .iter()
        .filter_map(|(_, l)| l["MAINPID=".len()..].parse().ok())
        .collect()
}

fn signal(pid: i32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid), sig);
}

/// The state letter of /proc/<pid>/stat (`R`, `S`, `T`, `Z`, ...).
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// The children of `pid`, whichever of its threads started them.
fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// Waits for a process that is not a `Child` of ours to be gone. If it is
/// our child (reparented: we are a subreaper) we reap it and return its
/// status; its own parent may have reaped it first.
fn wait_gone(pid: i32, limit: Duration) -> Option<WaitStatus> {
    wait_for(limit, &format!("pid {pid} to exit"), || {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => None,
            Ok(st) => Some(Some(st)),
            Err(nix::errno::Errno::ECHILD) => {
                matches!(proc_state(pid), None | Some('Z' | 'X')).then_some(None)
            }
            Err(e) => panic!("waitpid {pid}: {e}"),
        }
    })
}

/// `hookd reload` for `config`, as ExecReload runs it: (code, stdout, stderr).
fn reload(config: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("reload")
        .arg("--config")
        .arg(config)
        .env_remove("STATE_DIRECTORY")
        .env_remove("RUNTIME_DIRECTORY")
        .output()
        .expect("run hookd reload");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Every `hookd serve` process of this config (any generation of hand-off).
fn serving(config: &Path) -> Vec<i32> {
    let ours = config.to_string_lossy().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
            args.contains(&&b"serve"[..])
                && args.contains(&ours.as_bytes())
                && !matches!(proc_state(*pid), None | Some('Z' | 'X'))
        })
        .collect()
}

/// A read connection to the live spool, for looking only.
fn look(spool: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(spool).expect("open the spool to look");
    c.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    c
}

/// Items under a lease of the instance running as `pid`: (id, cid).
fn leases_of(spool: &Path, pid: i32) -> Vec<(i64, String)> {
    let c = look(spool);
    let mut st = c
        .prepare(
            "SELECT i.id, i.dedup_id FROM items i JOIN instances n ON i.lease_owner = n.id \
             WHERE n.pid = ?1 AND i.state = 'leased' ORDER BY i.id",
        )
        .expect("prepare");
    st.query_map([pid], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query leases")
        .collect::<Result<_, _>>()
        .expect("read leases")
}

/// The instance id registered for `pid`.
fn instance_of(spool: &Path, pid: i32) -> Option<String> {
    look(spool)
        .query_row("SELECT id FROM instances WHERE pid = ?1", [pid], |r| {
            r.get(0)
        })
        .ok()
}

/// (state, lease owner) of item `id`.
fn item_state(spool: &Path, id: i64) -> (String, Option<String>) {
    look(spool)
        .query_row(
            "SELECT state, lease_owner FROM items WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("read an item")
}

/// Client answers with no HTTP status (refused, reset or timed out).
fn unanswered(sent: &[Sent]) -> Vec<&Sent> {
    sent.iter().filter(|s| s.status == 0).collect()
}

/// Stops the last instance of a hand-off chain (not a `Child` of ours).
fn stop_instance(pid: i32) {
    signal(pid, Signal::SIGTERM);
    if let Some(st) = wait_gone(pid, Duration::from_secs(60)) {
        assert_eq!(
            st,
            WaitStatus::Exited(Pid::from_raw(pid), 0),
            "clean stop of {pid}"
        );
    }
}

/// Scenario 1: `hookd reload` every 250 ms, 100 times, under load: every connection
/// is answered, no item is delivered by two instances at once, nothing is lost.
#[test]
fn reload_storm_refuses_no_connection_and_never_delivers_one_item_twice_at_once() {
    common::subreaper();
    let reloads = env_count("HOOKD_FAULT_RELOADS", 100);
    let every = Duration::from_millis(250);
    let mut run = Run::new("reload storm", seed());
    run.h.start();
    let load = run.load(3);
    run.wait_acks(20, Duration::from_secs(20));
    let t0 = Instant::now();
    let mut pids = vec![run.h.pid()];
    let mut late = 0;
    for i in 0..reloads {
        // Paced, not waited on: the next tick of the 250 ms clock.
        let tick = t0 + every * i as u32;
        match tick.checked_duration_since(Instant::now()) {
            Some(wait) => std::thread::sleep(wait),
            None if i > 0 => late += 1,
            None => {}
        }
        let before = main_pids(&run.h).len();
        let (code, out, err) = reload(&run.h.config);
        assert_eq!(
            code,
            0,
            "reload {i} failed: {out}{err}\nlog:\n{}",
            run.h.log_text()
        );
        let pid = wait_for(Duration::from_secs(20), "MAINPID of the successor", || {
            main_pids(&run.h).get(before).copied()
        });
        pids.push(pid);
    }
    let storm = t0.elapsed();
    run.wait_acks(20, Duration::from_secs(20));
    load.stop();
    let first = run.h.wait_exit(Duration::from_secs(60));
    assert_eq!(first.code(), Some(0), "the first instance's drain");
    let last = *pids.last().expect("pids");
    for &pid in &pids[1..pids.len() - 1] {
        if let Some(st) = wait_gone(pid, Duration::from_secs(60)) {
            assert_eq!(
                st,
                WaitStatus::Exited(Pid::from_raw(pid), 0),
                "drain of {pid}"
            );
        }
    }
    stop_instance(last);
    let drains = run.h.log_text().matches("drain complete").count();
    assert_eq!(drains, reloads + 1, "every instance drained to the end");
    let sent = run.sent();
    let refused: Vec<Sent> = unanswered(&sent).into_iter().cloned().collect();
    println!(
        "[reload storm] {reloads} reloads in {} ms ({late} started late: the previous took over 250 ms); {} requests, {} unanswered",
        storm.as_millis(),
        sent.len(),
        refused.len()
    );
    let r = run.finish(&format!("{reloads} reloads, 250 ms apart"), "3 clients");
    assert!(
        refused.is_empty(),
        "{} connections refused, reset or unanswered during the storm, e.g. {:?}",
        refused.len(),
        refused.first()
    );
    r.assert_clean();
}

/// A wrapper the first start runs hookd through under the wrapper's own name
/// (so a reload starts the wrapper again). A successor stops itself
/// (SIGSTOP) before it execs hookd, so the test can kill it at a chosen
/// point of its start-up, before READY.
fn stopping_successor_wrapper(dir: &Path) -> PathBuf {
    let script = dir.join("hookd-stopping-successor");
    let text = format!(
        "#!/bin/bash\nif [ -n \"$HOOKD_HANDOFF_FD\" ]; then\n  kill -STOP $$\nfi\nexec -a \"$0\" '{BIN}' \"$@\"\n"
    );
    std::fs::write(&script, text).expect("write the wrapper");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the wrapper");
    script
}

/// Scenario 2a: The successor is SIGKILLed during its start-up, before READY: the
/// reload fails with a reason, the old instance never stops serving.
#[test]
fn a_successor_killed_before_ready_fails_the_reload_and_the_old_instance_serves_on() {
    common::subreaper();
    let rounds = env_count("HOOKD_FAULT_SUCCESSOR_KILLS", 6);
    let mut run = Run::new("successor killed before READY", seed());
    run.h.bin = stopping_successor_wrapper(run.dir.path());
    run.h.start();
    let old = run.h.pid();
    let spool = run.spool.canonicalize().expect("spool path");
    let load = run.load(3);
    run.wait_acks(20, Duration::from_secs(20));
    let mut moments = Vec::new();
    let mut killed = Vec::new();
    for i in 0..rounds {
        let config = run.h.config.clone();
        let asked = std::thread::spawn(move || reload(&config));
        // A killed round's successor may still be a zombie child of the old.
        let succ = wait_for(
            Duration::from_secs(20),
            "the successor to stop itself",
            || {
                children(old)
                    .into_iter()
                    .find(|p| !killed.contains(p) && proc_state(*p) == Some('T'))
            },
        );
        killed.push(succ);
        // Even rounds: while it is stopped, before hookd runs at all. Odd
        // rounds: while it registers on the spool. The test holds the
        // spool's write lock (the old instance's commits wait meanwhile, up
        // to the busy timeout), lets the successor go, and kills it once it
        // has the spool open: its first write is blocked, so it cannot be
        // ready yet.
        let started = Instant::now();
        let mut lock = None;
        let moment = if i % 2 == 0 {
            "before exec"
        } else {
            let c = look(&run.spool);
            c.execute_batch("BEGIN IMMEDIATE")
                .expect("take the spool's write lock");
            lock = Some(c);
            signal(succ, Signal::SIGCONT);
            wait_for(
                Duration::from_secs(20),
                "the successor to open the spool",
                || has_open(succ, &spool).then_some(()),
            );
            "spool open, write lock held"
        };
        let at = started.elapsed();
        let fault_at = Instant::now();
        signal(succ, Signal::SIGKILL);
        if let Some(c) = lock.take() {
            c.execute_batch("ROLLBACK")
                .expect("let go of the write lock");
        }
        let (code, out, err) = asked.join().expect("reload thread");
        assert!(
            !main_pids(&run.h).contains(&succ),
            "round {i}: the successor reached READY within {at:?}: the kill came too late"
        );
        assert_ne!(code, 0, "round {i}: reload succeeded: {out}");
        assert!(
            err.contains("reload failed") && err.contains("before it was ready"),
            "round {i}: the reload's reason: {err}"
        );
        wait_gone(succ, Duration::from_secs(20));
        run.fault_ends.push(fault_at);
        run.wait_acks(10, Duration::from_secs(20));
        moments.push(format!("{} us ({moment})", at.as_micros()));
    }
    assert_eq!(run.h.pid(), old);
    assert!(
        run.h
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none()),
        "the old instance died"
    );
    assert!(
        main_pids(&run.h).is_empty(),
        "MAINPID moved to a dead successor"
    );
    load.stop();
    let sent = run.sent();
    let refused: Vec<Sent> = unanswered(&sent).into_iter().cloned().collect();
    run.h.signal(Signal::SIGTERM);
    let st = run.h.wait_exit(Duration::from_secs(60));
    assert!(st.success(), "the old instance's stop: {st}");
    println!("[successor killed before READY] kills at {moments:?} into start-up");
    let r = run.finish(
        &format!("{rounds} successors SIGKILLed before READY"),
        "3 clients",
    );
    assert!(
        refused.is_empty(),
        "{} connections unanswered although the old instance kept serving, e.g. {:?}",
        refused.len(),
        refused.first()
    );
    r.assert_clean();
}

/// Scenario 2b: The old instance is SIGKILLed after the hand-over (the successor sent
/// MAINPID + READY past its BARRIER), while it drains: only connections it
/// had accepted may fail; its leases expire and the successor delivers them.
#[test]
fn the_old_instance_killed_after_the_hand_over_loses_nothing_and_fails_only_its_own_connections() {
    common::subreaper();
    let rounds = env_count("HOOKD_FAULT_OLD_KILLS", 5);
    // 100 ms per delivery: the old instance still holds leases while it drains.
    let mut run = Run::with_upstream_delay(
        "old killed after hand-over",
        seed(),
        Duration::from_millis(100),
    );
    // ~30 requests/s against 40 deliveries/s: no backlog outgrows the drain.
    run.pace = Duration::from_millis(100);
    run.h.start();
    let load = run.load(3);
    run.wait_acks(20, Duration::from_secs(20));
    let mut current = run.h.pid();
    let mut kills: Vec<Instant> = Vec::new();
    let mut stranded: Vec<(i64, String, Instant)> = Vec::new();
    for i in 0..rounds {
        let before = main_pids(&run.h).len();
        let (code, out, err) = reload(&run.h.config);
        assert_eq!(code, 0, "reload {i}: {out}{err}");
        let next = wait_for(Duration::from_secs(20), "MAINPID of the successor", || {
            main_pids(&run.h).get(before).copied()
        });
        let at = Duration::from_millis(run.rng.gen_range(0..150));
        std::thread::sleep(at);
        let leased = leases_of(&run.spool, current);
        let t = Instant::now();
        signal(current, Signal::SIGKILL);
        if i == 0 {
            run.h.wait_exit(Duration::from_secs(20));
        } else {
            wait_gone(current, Duration::from_secs(20));
        }
        kills.push(t);
        stranded.extend(leased.into_iter().map(|(id, cid)| (id, cid, t)));
        run.fault_ends.push(t);
        current = next;
        run.wait_acks(10, Duration::from_secs(20));
    }
    load.stop();
    // The dead instances' leases: nobody frees them, they expire (action
    // timeout + 60 s) and the running successor claims them again.
    let t0 = Instant::now();
    let mut recovery = Duration::ZERO;
    for (id, cid, killed) in &stranded {
        wait_for(
            Duration::from_secs(150),
            &format!("item {id} ({cid}) of a killed instance done"),
            || (item_state(&run.spool, *id).0 == "done").then_some(()),
        );
        recovery = recovery.max(killed.elapsed());
    }
    println!(
        "[old killed after hand-over] {} leases held by killed instances; all done {} ms after their kill (waited {} ms)",
        stranded.len(),
        recovery.as_millis(),
        t0.elapsed().as_millis()
    );
    stop_instance(current);
    let sent = run.sent();
    let in_flight_at_a_kill = |s: &Sent| kills.iter().any(|&k| s.sent <= k && s.answered >= k);
    let refused: Vec<Sent> = unanswered(&sent)
        .into_iter()
        .filter(|s| !in_flight_at_a_kill(s))
        .cloned()
        .collect();
    let cut = unanswered(&sent).len() - refused.len();
    println!(
        "[old killed after hand-over] {cut} requests in flight at a kill went unanswered (allowed)"
    );
    let r = run.finish(
        &format!("{rounds} old instances SIGKILLed 0-150 ms after the hand-over"),
        "3 clients, upstream 100 ms",
    );
    assert!(
        refused.is_empty(),
        "{} connections failed that no killed instance had accepted, e.g. {:?}",
        refused.len(),
        refused.first()
    );
    r.assert_clean();
}

/// Scenario 3: An old instance is SIGSTOPped while it holds leases, past their expiry,
/// while its successor runs and claims them again; then SIGCONT. Its
/// attempts end (200 from the upstream) and it tries to complete them, but
/// the items are the successor's now: they must stay leased to it.
#[test]
fn a_paused_instance_never_completes_or_releases_a_lease_it_lost() {
    common::subreaper();
    let mut run = Run::new("pause past the lease", seed());
    run.h.start();
    let old = run.h.pid();
    // Paced: the load runs through the whole pause.
    run.pace = Duration::from_millis(20);
    let load = run.load(2);
    run.wait_acks(20, Duration::from_secs(20));
    // Every slot of the old instance (concurrency 4) holds an attempt.
    run.up
        .gate
        .hold_all
        .store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for(Duration::from_secs(30), "4 held deliveries", || {
        (run.up.gate.held().len() >= 4).then_some(())
    });
    let (code, out, err) = reload(&run.h.config);
    assert_eq!(code, 0, "reload: {out}{err}");
    let new = run.h.successor_pid();
    let mine = leases_of(&run.spool, old);
    assert!(!mine.is_empty(), "the old instance holds no lease to lose");
    let old_id = instance_of(&run.spool, old).expect("the old instance is registered");
    signal(old, Signal::SIGSTOP);
    wait_for(Duration::from_secs(10), "the old instance stopped", || {
        (proc_state(old) == Some('T')).then_some(())
    });
    let paused = Instant::now();
    // Its attempts are answered 200 into its sockets; the successor's
    // repeats of them are held, so it still holds them when the old resumes.
    *run.up.gate.hold_repeats_of.lock().unwrap() = mine.iter().map(|(_, c)| c.clone()).collect();
    run.up
        .gate
        .hold_all
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let cids: HashSet<String> = mine.iter().map(|(_, c)| c.clone()).collect();
    wait_for(
        Duration::from_secs(150),
        "the successor to attempt every expired lease",
        || {
            let held: HashSet<String> = run.up.gate.held_repeats().into_iter().collect();
            cids.is_subset(&held).then_some(())
        },
    );
    let taken_over = paused.elapsed();
    let new_id = instance_of(&run.spool, new).expect("the successor is registered");
    for (id, cid) in &mine {
        assert_eq!(
            item_state(&run.spool, *id),
            ("leased".to_string(), Some(new_id.clone())),
            "item {id} ({cid}) not leased to the successor"
        );
    }
    let log_before = run.h.log_text().matches("no lease of ours").count();
    signal(old, Signal::SIGCONT);
    let st = run.h.wait_exit(Duration::from_secs(60));
    assert!(st.success(), "the resumed old instance's drain: {st}");
    // The old instance is gone, all its writes applied: the successor still
    // holds every lease the old one lost.
    for (id, cid) in &mine {
        let (state, owner) = item_state(&run.spool, *id);
        assert!(
            state == "leased" && owner.as_deref() == Some(new_id.as_str()),
            "item {id} ({cid}) is {state} (owner {owner:?}) after the paused instance {old_id} resumed; \
             the successor {new_id} still runs its attempt"
        );
    }
    let fenced = run.h.log_text().matches("no lease of ours").count() - log_before;
    run.up.gate.hold_repeats_of.lock().unwrap().clear();
    run.wait_acks(10, Duration::from_secs(20));
    load.stop();
    stop_instance(new);
    println!(
        "[pause past the lease] {} leases lost by the paused instance, all attempted by the successor {} ms into the pause; {fenced} stale writes refused after SIGCONT",
        mine.len(),
        taken_over.as_millis()
    );
    let r = run.finish(
        "SIGSTOP past the lease (70 s) during a hand-off",
        "2 clients",
    );
    println!(
        "  [pause past the lease] overlapping attempts (allowed here): {}",
        r.overlaps
    );
    r.assert_clean_allowing_overlaps();
}

/// Scenario 3b: The same pause without a successor: a lone instance is SIGSTOPped
/// past the leases of two held attempts while its other slots are free.
/// On SIGCONT the old attempts time out at once, and its own dispatcher may
/// claim those expired leases again first: the old attempt's "retry later"
/// must then not end the newer lease of the same item.
#[test]
fn a_paused_lone_instance_never_ends_its_own_newer_lease_with_a_stale_write() {
    let mut run = Run::new("lone pause past the lease", seed());
    run.pace = Duration::from_millis(20);
    run.h.start();
    let pid = run.h.pid();
    let load = run.load(2);
    run.wait_acks(20, Duration::from_secs(20));
    let base = run.started() + 20;
    let cids: HashSet<String> = (base..base + 2).map(|n| run.cid(n)).collect();
    *run.up.gate.hold_first_of.lock().unwrap() = cids.clone();
    *run.up.gate.hold_repeats_of.lock().unwrap() = cids.clone();
    wait_for(Duration::from_secs(30), "2 held first attempts", || {
        let held = run.up.gate.held();
        (held.iter().filter(|c| cids.contains(*c)).count() == 2).then_some(())
    });
    let items: Vec<(i64, String)> = leases_of(&run.spool, pid)
        .into_iter()
        .filter(|(_, c)| cids.contains(c))
        .collect();
    assert_eq!(items.len(), 2, "the held attempts' leases: {items:?}");
    let expiry: i64 = items
        .iter()
        .map(|(id, _)| {
            look(&run.spool)
                .query_row("SELECT lease_expiry FROM items WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .expect("lease expiry")
        })
        .max()
        .expect("two leases");
    signal(pid, Signal::SIGSTOP);
    wait_for(Duration::from_secs(10), "the instance stopped", || {
        (proc_state(pid) == Some('T')).then_some(())
    });
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    };
    wait_for(Duration::from_secs(150), "the leases to expire", || {
        (now_ms() > expiry + 1000).then_some(())
    });
    signal(pid, Signal::SIGCONT);
    let mut raced = 0;
    for (id, cid) in &items {
        let failed = format!("delivery_id={id} hook=gh route=default attempt=1");
        wait_for(
            Duration::from_secs(30),
            &format!("item {id}: the old attempt's end recorded and a new attempt held"),
            || {
                let log = run.h.log_text();
                let recorded = log
                    .lines()
                    .any(|l| l.contains("delivery_failed") && l.contains(&failed));
                let again = run.up.gate.held_repeats().contains(cid);
                (recorded && again).then_some(())
            },
        );
        // The claim won the race if the old attempt's write was refused.
        let refused = format!("nothing changed id={id}");
        if run.h.log_text().lines().any(|l| l.ends_with(&refused)) {
            raced += 1;
        }
        let (state, _) = item_state(&run.spool, *id);
        let running = run
            .up
            .gate
            .held_repeats()
            .iter()
            .filter(|c| *c == cid)
            .count();
        assert!(
            state == "leased" && running == 1,
            "item {id} ({cid}) is {state} with {running} attempts running after the paused instance's stale write"
        );
    }
    run.up.gate.hold_first_of.lock().unwrap().clear();
    run.up.gate.hold_repeats_of.lock().unwrap().clear();
    run.wait_acks(10, Duration::from_secs(20));
    load.stop();
    run.h.signal(Signal::SIGTERM);
    let st = run.h.wait_exit(Duration::from_secs(60));
    assert!(st.success(), "clean stop: {st}");
    println!("[lone pause past the lease] {raced} of 2 expired leases claimed again before the old attempt ended (its write refused)");
    let r = run.finish("SIGSTOP past the lease (70 s), no successor", "2 clients");
    r.assert_clean_allowing_overlaps();
}

/// Linux x86_64 syscall numbers that write or sync a file.
const WRITE_SYSCALLS: &[i64] = &[1, 18, 74, 75];

/// Whether a thread of `pid` is in one of `syscalls` right now, on a file
/// descriptor whose path `file` accepts (from /proc/<pid>/task/*/syscall).
fn in_syscall(pid: i32, syscalls: &[i64], file: impl Fn(&Path) -> bool) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(|e| e.ok()).any(|t| {
        let sc = std::fs::read_to_string(t.path().join("syscall")).unwrap_or_default();
        let mut f = sc.split_whitespace();
        let nr: Option<i64> = f.next().and_then(|n| n.parse().ok());
        let fd = f
            .next()
            .and_then(|a| i64::from_str_radix(a.trim_start_matches("0x"), 16).ok());
        match (nr, fd) {
            (Some(nr), Some(fd)) if syscalls.contains(&nr) => {
                std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).is_ok_and(|p| file(&p))
            }
            _ => false,
        }
    })
}

/// Whether `pid` has `file` open.
fn has_open(pid: i32, file: &Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.filter_map(|e| e.ok())
            .any(|e| std::fs::read_link(e.path()).is_ok_and(|p| p == file))
    })
}

/// Whether a thread of `pid` writes or syncs the database file itself
/// right now: in WAL mode only a checkpoint does.
fn in_checkpoint(pid: i32, db: &Path) -> bool {
    in_syscall(pid, WRITE_SYSCALLS, |p| p == db)
}

/// Kills every instance of the run (a hand-off may have left two) and reaps them.
fn kill_all(run: &mut Run) {
    let child = run.h.child.as_ref().map(|c| c.id() as i32);
    for pid in serving(&run.h.config) {
        signal(pid, Signal::SIGKILL);
        if Some(pid) != child {
            wait_gone(pid, Duration::from_secs(20));
        }
    }
    if run.h.child.is_some() {
        run.h.wait_exit(Duration::from_secs(20));
    }
}

/// Scenario 4: The kill storm on main kills at random moments; these kills are aimed:
/// while a thread writes or syncs the database file (a checkpoint), while a
/// SIGTERM drain runs, and while a reload hands off.
#[test]
fn kill_storm_aimed_at_checkpoints_drains_and_hand_offs() {
    common::subreaper();
    let per = env_count("HOOKD_FAULT_AIMED_KILLS", 8);
    // 20 ms per delivery keeps work in flight for a drain to wait on;
    // bodies of 2-8 KiB grow the WAL, so checkpoints have pages to copy.
    let mut run = Run::with_upstream_delay("aimed kill storm", seed(), Duration::from_millis(20));
    run.pad = 4000;
    run.h.start();
    let db = run.spool.canonicalize().expect("spool path");
    let load = run.load(3);
    let (mut in_ckpt, mut ckpt_missed, mut mid_drain, mut drain_done, mut mid_handoff) =
        (0, 0, 0, 0, 0);
    // Of the hand-off kills: the successor had reported ready / was starting.
    let (mut handoff_after_ready, mut handoff_starting) = (0, 0);
    for i in 0..per * 3 {
        run.wait_acks(5, Duration::from_secs(30));
        match i % 3 {
            0 => {
                let pid = run.h.pid();
                let deadline = Instant::now() + Duration::from_secs(5);
                let mut hit = false;
                // Bounded by time; /proc reads are the only pause.
                while Instant::now() < deadline {
                    if in_checkpoint(pid, &db) {
                        hit = true;
                        break;
                    }
                }
                signal(pid, Signal::SIGKILL);
                run.h.wait_exit(Duration::from_secs(20));
                if hit {
                    in_ckpt += 1;
                } else {
                    ckpt_missed += 1;
                }
            }
            1 => {
                run.h.signal(Signal::SIGTERM);
                std::thread::sleep(Duration::from_millis(run.rng.gen_range(0..60)));
                let alive = run
                    .h
                    .child
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_none());
                if alive {
                    mid_drain += 1;
                    run.h.signal(Signal::SIGKILL);
                } else {
                    drain_done += 1;
                }
                run.h.wait_exit(Duration::from_secs(20));
            }
            _ => {
                let config = run.h.config.clone();
                let ready_before = main_pids(&run.h).len();
                let asked = std::thread::spawn(move || reload(&config));
                std::thread::sleep(Duration::from_millis(run.rng.gen_range(0..400)));
                let pid = run.h.pid();
                let starting = !children(pid).is_empty();
                signal(pid, Signal::SIGKILL);
                if main_pids(&run.h).len() > ready_before {
                    handoff_after_ready += 1;
                } else if starting {
                    handoff_starting += 1;
                }
                run.h.wait_exit(Duration::from_secs(20));
                // The successor, if one was started, dies at its own moment.
                std::thread::sleep(Duration::from_millis(run.rng.gen_range(0..100)));
                let _ = asked.join();
                kill_all(&mut run);
                mid_handoff += 1;
            }
        }
        run.restart(&format!("after aimed kill {i}"));
    }
    run.wait_acks(1, Duration::from_secs(20));
    load.stop();
    kill_all(&mut run);
    println!(
        "[aimed kill storm] {in_ckpt} kills inside a checkpoint write/sync ({ckpt_missed} missed it within 5 s), \
         {mid_drain} mid-drain ({drain_done} drains ended first), {mid_handoff} mid-hand-off \
         ({handoff_starting} while the successor started, {handoff_after_ready} after it was ready)"
    );
    let r = run.finish(
        &format!("{} SIGKILLs: checkpoint, drain, hand-off", per * 3),
        "3 clients, 2-8 KiB, upstream 20 ms",
    );
    r.assert_clean();
    assert!(
        in_ckpt > 0,
        "no kill landed inside a checkpoint: the moment was never tested"
    );
}
