//! An upgrade across a schema change, the way an operator does it: a hookd
//! built from an older commit (an older spool schema) runs under load, the
//! binary on disk is replaced by this build, and `hookd reload` hands off to
//! it. For a while both share the spool: the successor migrates it while the
//! old process still finishes its in-flight deliveries with its own queries.
//! The fault checker then asserts nothing acknowledged was lost, nothing was
//! delivered by both at once, and the spool is intact.
//!
//! Then, while the old process may still drain, a second reload (new build
//! to new build; an old binary checks the config with its own parser, so it
//! cannot take a config with `[[hook.route]]`) adds a hook with routes: its
//! requests are delivered to every route while the plain hook's keep flowing.
//!
//! The old binary is built from the commit named in `tests/upgrade-from` once
//! per target dir: a detached `git worktree` in
//! `$CARGO_TARGET_TMPDIR/old-<12 hex>/src` with its own target dir beside it,
//! reused by later runs and by the e2e upgrade check (tests/e2e/run.sh packs
//! the same release build into the old .deb, so CI builds the old commit once).
//! Bump `tests/upgrade-from` to the last commit before each schema change.

mod common;

// Shared with the fault campaign, which uses more of it.
#[allow(dead_code)]
#[path = "faults/checker.rs"]
mod checker;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use checker::{seed, Run};
use common::{stop_successor, wait_for, Upstream};

/// `tests/upgrade-from`: comment lines start with `#`; the one other line is
/// the full hash of the old commit.
const UPGRADE_FROM: &str = include_str!("upgrade-from");

/// Waits until `pid` (our child as a subreaper) has exited and been reaped.
fn wait_reaped(pid: i32, limit: Duration) -> nix::sys::wait::WaitStatus {
    let pid = nix::unistd::Pid::from_raw(pid);
    wait_for(
        limit,
        "the middle process to exit",
        || match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => None,
            Ok(st) => Some(st),
            Err(e) => panic!("waitpid {pid}: {e}"),
        },
    )
}

/// The old commit's full hash, from `tests/upgrade-from`.
fn old_commit() -> &'static str {
    let mut lines = UPGRADE_FROM
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let commit = lines.next().unwrap_or("");
    assert!(
        commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
        "tests/upgrade-from: want the full 40-hex hash of the old commit on one line, got {commit:?}"
    );
    assert!(
        lines.next().is_none(),
        "tests/upgrade-from: more than one commit line"
    );
    commit
}

/// The old release binary, built once by `tests/build-old.sh` (a build takes
/// minutes; the result is kept) in `$CARGO_TARGET_TMPDIR/old-<12 hex>/`, the
/// place the e2e and bench/migrate.sh look for it.
fn old_binary() -> PathBuf {
    let commit = old_commit();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/build-old.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(env!("CARGO_TARGET_TMPDIR"))
        .arg(commit)
        .env("CARGO", env!("CARGO"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "tests/build-old.sh could not build {commit} (tests/upgrade-from): see its message above"
    );
    let base = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert_eq!(
        base.file_name().and_then(|n| n.to_str()),
        Some(format!("old-{}", &commit[..12]).as_str()),
        "tests/build-old.sh printed an unexpected directory"
    );
    base.join("target/release/hookd")
}

/// Replaces `dst` by a copy of `src` the way a package manager does: a new
/// file renamed over the old name, so the running process keeps its inode.
fn install(src: &Path, dst: &Path) {
    let tmp = dst.with_extension("new");
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dst).unwrap();
}

#[test]
fn a_reload_onto_a_newer_schema_loses_nothing_and_never_delivers_twice_at_once() {
    common::subreaper();
    let old = old_binary();
    // Deliveries take a while, so the old process has some in flight at the hand-off.
    let mut run = Run::with_upstream_delay("upgrade", seed(), Duration::from_millis(150));
    let bin = run.dir.path().join("bin/hookd");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    install(&old, &bin);
    run.h.bin = bin.clone();
    run.h.start();
    let load = run.load(3);
    run.wait_acks(150, Duration::from_secs(60));

    install(Path::new(common::BIN), &bin);
    let t0 = Instant::now();
    let (code, out, err) = run.h.cli(&["reload"]);
    assert_eq!(
        code,
        0,
        "reload onto the new build: {out}{err}\n{}",
        run.h.log_text()
    );
    let new = run.h.successor_pid();
    // At once, a config with a routed hook, to the new build again.
    let (deploy, notify) = (Upstream::ok(), Upstream::ok());
    let routed = format!(
        "\n[[hook]]\nname = \"gr\"\nverify = {{ scheme = \"github\", secret_file = \"{dir}/github.secret\" }}\n\
         [[hook.route]]\nname = \"deploy\"\naction = {{ forward = \"{}\" }}\n\
         [[hook.route]]\nname = \"notify\"\naction = {{ forward = \"{}\" }}\n",
        deploy.url(),
        notify.url(),
        dir = run.dir.path().display()
    );
    let mut text = std::fs::read_to_string(&run.h.config).unwrap();
    text.push_str(&routed);
    std::fs::write(&run.h.config, text).unwrap();
    let (code, out, err) = run.h.cli(&["reload"]);
    assert_eq!(
        code,
        0,
        "reload adding routes: {out}{err}\n{}",
        run.h.log_text()
    );
    let newest = run.h.successor_pid();
    assert_ne!(newest, new);
    // The old process drains its in-flight deliveries against the migrated spool.
    let st = run.h.wait_exit(Duration::from_secs(60));
    assert_eq!(
        st.code(),
        Some(0),
        "the old process's drain: {}",
        run.h.log_text()
    );
    println!(
        "[upgrade] old process done {:?} after the reload",
        t0.elapsed()
    );
    let st = wait_reaped(new, Duration::from_secs(60));
    assert!(
        matches!(st, nix::sys::wait::WaitStatus::Exited(_, 0)),
        "the middle process hands off and exits cleanly: {st:?}"
    );
    let mut ids = Vec::new();
    for n in 0..5 {
        let r = run
            .h
            .post_signed("gr", format!("{{\"n\":{n}}}").as_bytes(), &[]);
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["routes"], serde_json::json!(["deploy", "notify"]));
        ids.push(r.json()["id"].as_i64().unwrap());
    }
    for up in [&deploy, &notify] {
        wait_for(Duration::from_secs(30), "both routes delivered", || {
            let mut got = up.ids();
            got.sort_unstable();
            (got == ids).then_some(())
        });
    }
    run.wait_acks(150, Duration::from_secs(60));
    load.stop();
    let st = stop_successor(newest, Duration::from_secs(60));
    assert!(
        matches!(st, nix::sys::wait::WaitStatus::Exited(_, 0)),
        "the new process stops cleanly: {st:?}"
    );

    let report = run.finish("hand-off onto a newer schema", "3 clients");
    assert!(report.acked >= 300, "{} acks", report.acked);
    report.assert_clean();
}
