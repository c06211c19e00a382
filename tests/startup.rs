//! A spool that cannot be used, against the real binary: `hookd serve` and
//! `hookd spool ls` each say what is wrong in one line that names the file
//! once, and exit 3 (the spool's start-up failure code).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Exit code of a start-up failure caused by the spool.
const SPOOL_EXIT: i32 = 3;

/// Runs `cmd` with stderr captured, at most 20 s; returns (exit code, stderr).
fn run(mut cmd: Command) -> (i32, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for(Duration::from_secs(20), "hookd to exit", || {
        child.try_wait().unwrap()
    });
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code().unwrap_or(-1), err)
}

/// `hookd serve` on `h`'s config, its logging off so stderr holds only the
/// message for the operator.
fn serve(h: &Hookd) -> (i32, String) {
    let mut c = h.command();
    c.env("HOOKD_LOG", "off");
    run(c)
}

/// `hookd spool ls` on `h`'s config.
fn spool_ls(h: &Hookd) -> (i32, String) {
    let mut c = Command::new(BIN);
    c.args(["spool", "ls", "--config"])
        .arg(&h.config)
        .env("HOOKD_LOG", "off")
        .env_remove("STATE_DIRECTORY")
        .env_remove("RUNTIME_DIRECTORY");
    run(c)
}

/// A config like `Hookd::configure`'s with the spool at `spool`.
fn with_spool(dir: &Path, spool: &Path) -> Hookd {
    let h = Hookd::configure(dir, "");
    let text = std::fs::read_to_string(&h.config).unwrap();
    let default = format!("path = \"{}\"", h.spool_path().display());
    assert!(text.contains(&default), "{text}");
    let text = text.replace(&default, &format!("path = \"{}\"", spool.display()));
    std::fs::write(&h.config, text).unwrap();
    h
}

fn assert_both(h: &Hookd, serve_err: &str, ls_err: &str) {
    let (code, err) = serve(h);
    assert_eq!((code, err.as_str()), (SPOOL_EXIT, serve_err), "hookd serve");
    let (code, err) = spool_ls(h);
    assert_eq!((code, err.as_str()), (SPOOL_EXIT, ls_err), "hookd spool ls");
}

#[test]
fn a_spool_from_a_newer_hookd_is_refused_saying_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Hookd::configure(dir.path(), "");
    let path = h.spool_path();
    // A real spool first (hookd started and stopped once), then a schema
    // version this build does not know.
    h.start();
    h.signal(nix::sys::signal::Signal::SIGTERM);
    let st = h.wait_exit(Duration::from_secs(20));
    assert_eq!(st.code(), Some(0), "{}", h.log_text());
    assert_eq!(spool_ls(&h), (0, String::new()));
    let conn = rusqlite::Connection::open(&path).unwrap();
    let current: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    let newer = current + 1;
    conn.pragma_update(None, "user_version", newer).unwrap();
    drop(conn);
    let want = format!(
        "hookd: cannot open spool {}: schema version {newer} is newer than this hookd \
         supports ({}); upgrade hookd\n",
        path.display(),
        current
    );
    assert_both(&h, &want, &want);
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_as_not_a_spool() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hookd::configure(dir.path(), "");
    let path = h.spool_path();
    // Bytes that no SQLite header starts with (a fixed pseudo-random pattern).
    let junk: Vec<u8> = (0u32..8192)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &junk).unwrap();
    let want = format!(
        "hookd: cannot open spool {}: not a hookd spool: not an SQLite database\n",
        path.display()
    );
    assert_both(&h, &want, &want);
    // Refused, not repaired: the file is as it was.
    assert_eq!(std::fs::read(&path).unwrap(), junk);
}

#[test]
fn a_spool_in_a_missing_directory_is_refused_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("missing").join("hookd.db");
    let h = with_spool(dir.path(), &path);
    let serve_err = format!(
        "hookd: cannot open spool {}: cannot create the file: No such file or directory \
         (os error 2)\n",
        path.display()
    );
    let ls_err = format!(
        "hookd: cannot open spool {}: no such file (wrong --config, or hookd never ran?)\n",
        path.display()
    );
    assert_both(&h, &serve_err, &ls_err);
    assert!(!dir.path().join("missing").exists());
}
