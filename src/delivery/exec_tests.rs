use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use super::*;
use crate::config::{self, ActionKind};
use crate::delivery::Action;
use crate::spool::{Item, ItemState};

const LONG: Duration = Duration::from_secs(30);

fn item(body: impl Into<Bytes>) -> Item {
    Item {
        id: 7,
        hook: "deploy".into(),
        dedup_id: None,
        received_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        headers: vec![
            ("x-github-event".into(), b"push".to_vec()),
            ("x-binary".into(), vec![0xff, 0xfe]),
            ("x-multi".into(), b"a".to_vec()),
            ("x-multi".into(), b"b".to_vec()),
        ],
        body: body.into(),
        state: ItemState::Leased,
        attempts: 2,
        next_attempt: SystemTime::now(),
        last_error: None,
        lease_owner: None,
        lease_expiry: None,
        lease_gen: None,
        delivery: None,
    }
}

/// `/bin/sh <dir>/script <dir>`: the script finds its directory in `$1`.
fn script(dir: &Path, text: &str) -> Vec<String> {
    let path = dir.join("script");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    vec![
        "/bin/sh".into(),
        path.to_string_lossy().into_owned(),
        dir.to_string_lossy().into_owned(),
    ]
}

/// A hook's exec action as its delivery loop builds it, hiding nothing.
fn exec(argv: &[String], timeout: Duration) -> Action {
    let cfg = config::Action {
        kind: ActionKind::Exec(config::ExecSettings::new(argv).unwrap()),
        timeout,
    };
    Action::new(
        &cfg,
        &crate::delivery::ForwardClient::new(),
        &Arc::default(),
    )
}

fn never() -> std::future::Pending<()> {
    std::future::pending()
}

/// Gone = no such process, or a zombie nobody in this test owns (reparented).
fn pid_gone(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Waits (bounded) until `pid` has exited; true if it did.
async fn wait_gone(pid: i32) -> bool {
    for _ in 0..500 {
        if pid_gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Waits (bounded) for a pid file the script writes; its number.
/// The `TREE` script's leader (ours, so reaped before exec returned) and
/// its grandchild (killed with the process group) are both gone.
async fn assert_tree_gone(dir: &Path) {
    let leader = wait_pid_file(dir.join("leader")).await;
    let grandchild = wait_pid_file(dir.join("grandchild")).await;
    assert_eq!(kill(Pid::from_raw(leader), None), Err(Errno::ESRCH));
    assert!(
        wait_gone(grandchild).await,
        "grandchild {grandchild} survived"
    );
}

async fn wait_pid_file(path: PathBuf) -> i32 {
    for _ in 0..1000 {
        if let Ok(text) = std::fs::read_to_string(&path) {
            if text.ends_with('\n') {
                return text.trim().parse().unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never appeared", path.display());
}

/// Writes the leader's and a background grandchild's pids, then waits forever.
const TREE: &str = "sleep 1000 &\necho $! > \"$1/grandchild.tmp\"; mv \"$1/grandchild.tmp\" \"$1/grandchild\"\necho $$ > \"$1/leader.tmp\"; mv \"$1/leader.tmp\" \"$1/leader\"\nwait\n";

#[tokio::test]
async fn stdin_and_env_reach_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let argv = script(dir.path(), "cat > \"$1/stdin\"\nenv > \"$1/env\"\n");
    let out = exec(&argv, LONG)
        .attempt(&item(&b"{\"ref\":\"main\"}"[..]), 3, never())
        .await;
    assert_eq!(out, Outcome::Delivered);
    let stdin = std::fs::read(dir.path().join("stdin")).unwrap();
    assert_eq!(stdin, b"{\"ref\":\"main\"}");
    let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
    let lines: Vec<&str> = env.lines().collect();
    for want in [
        "HOOKD_DELIVERY_ID=7",
        "HOOKD_HOOK=deploy",
        "HOOKD_ATTEMPT=3",
        "HOOKD_RECEIVED_AT=2023-11-14T22:13:20.123Z",
        "HOOKD_HEADER_X_GITHUB_EVENT=push",
        "HOOKD_HEADER_X_MULTI=a, b",
    ] {
        assert!(lines.contains(&want), "{want} missing from:\n{env}");
    }
    assert!(!env.contains("HOOKD_HEADER_X_BINARY"), "{env}");
}

#[tokio::test]
async fn hidden_variables_do_not_reach_the_command() {
    // PATH is the one variable every test run has; the script needs none of it.
    assert!(std::env::var_os("PATH").is_some(), "test needs PATH set");
    let text = "/usr/bin/env > \"$1/env\"\n";
    let dir = tempfile::tempdir().unwrap();
    let shown = script(dir.path(), text);
    let out = exec(&shown, LONG).attempt(&item(""), 1, never()).await;
    assert_eq!(out, Outcome::Delivered);
    let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");

    let dir = tempfile::tempdir().unwrap();
    let cfg = config::Action {
        kind: ActionKind::Exec(config::ExecSettings::new(&script(dir.path(), text)).unwrap()),
        timeout: LONG,
    };
    let hide = Arc::new(vec!["PATH".to_string()]);
    let action = Action::new(&cfg, &crate::delivery::ForwardClient::new(), &hide);
    let out = action.attempt(&item(""), 1, never()).await;
    assert_eq!(out, Outcome::Delivered);
    let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
    assert!(!env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    assert!(env.lines().any(|l| l == "HOOKD_DELIVERY_ID=7"), "{env}");
}

#[tokio::test]
async fn exit_status_decides() {
    let dir = tempfile::tempdir().unwrap();
    let ok = script(dir.path(), "exit 0\n");
    assert_eq!(
        exec(&ok, LONG).attempt(&item(""), 1, never()).await,
        Outcome::Delivered
    );

    let dir = tempfile::tempdir().unwrap();
    let fail = script(
        dir.path(),
        "echo first >&2\necho 'no such branch' >&2\nexit 3\n",
    );
    assert_eq!(
        exec(&fail, LONG).attempt(&item(""), 1, never()).await,
        Outcome::Failed("exit status 3: no such branch".into())
    );

    let dir = tempfile::tempdir().unwrap();
    let killed = script(dir.path(), "kill -9 $$\n");
    assert_eq!(
        exec(&killed, LONG).attempt(&item(""), 1, never()).await,
        Outcome::Failed("killed by signal SIGKILL".into())
    );
}

#[tokio::test]
async fn command_that_ignores_stdin_is_delivered() {
    // Far more than a pipe buffer, so the write hits EPIPE once the command exits.
    let big = vec![b'x'; 4 << 20];
    let dir = tempfile::tempdir().unwrap();
    let argv = script(dir.path(), "echo done\nexit 0\n");
    assert_eq!(
        exec(&argv, LONG).attempt(&item(big), 1, never()).await,
        Outcome::Delivered
    );
}

#[tokio::test]
async fn big_body_and_chatty_command_do_not_deadlock() {
    // The command writes a lot before it reads: stdin and stdout must flow at once.
    let big = vec![b'y'; 2 << 20];
    let dir = tempfile::tempdir().unwrap();
    let argv = script(
        dir.path(),
        "i=0; while [ $i -lt 2000 ]; do echo line $i; echo err $i >&2; i=$((i+1)); done\nwc -c > \"$1/count\"\n",
    );
    assert_eq!(
        exec(&argv, LONG).attempt(&item(big), 1, never()).await,
        Outcome::Delivered
    );
    let count = std::fs::read_to_string(dir.path().join("count")).unwrap();
    assert_eq!(count.trim(), (2 << 20).to_string());
}

#[tokio::test]
async fn missing_program_fails_clearly() {
    let argv = vec!["/nonexistent/hookd-test-program".to_string()];
    let out = exec(&argv, LONG).attempt(&item(""), 1, never()).await;
    let Outcome::Failed(msg) = out else {
        panic!("expected Failed, got {out:?}")
    };
    assert!(
        msg.starts_with("cannot start /nonexistent/hookd-test-program: "),
        "{msg}"
    );
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let argv = script(dir.path(), TREE);
    let out = exec(&argv, Duration::from_secs(2))
        .attempt(&item(""), 1, never())
        .await;
    assert_eq!(out, Outcome::Failed("timed out after 2s".into()));
    assert_tree_gone(dir.path()).await;
}

#[tokio::test]
async fn sigterm_ignored_gets_sigkill_after_grace() {
    let dir = tempfile::tempdir().unwrap();
    let argv = script(dir.path(), &format!("trap '' TERM\n{TREE}"));
    let started = std::time::Instant::now();
    let grace = Duration::from_millis(300);
    let action = Exec {
        settings: config::ExecSettings::new(&argv).unwrap(),
        timeout: Duration::from_secs(2),
        hide_env: Arc::default(),
        kill_grace: grace,
    };
    let out = action.attempt(&item(""), 1, never()).await;
    assert_eq!(out, Outcome::Failed("timed out after 2s".into()));
    assert!(started.elapsed() >= Duration::from_secs(2) + grace);
    assert_tree_gone(dir.path()).await;
}

#[tokio::test]
async fn cancel_stops_the_command_and_reports_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let argv = script(dir.path(), TREE);
    let cancel = async {
        wait_pid_file(dir.path().join("leader")).await;
    };
    let out = exec(&argv, LONG).attempt(&item(""), 1, cancel).await;
    assert_eq!(out, Outcome::Cancelled);
    assert_tree_gone(dir.path()).await;
}

#[tokio::test]
async fn dropping_the_future_kills_and_reaps_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let argv = script(dir.path(), TREE);
    let it = item("");
    let action = exec(&argv, LONG);
    let running = action.attempt(&it, 1, never());
    let leader = tokio::select! {
        out = running => panic!("exec ended by itself: {out:?}"),
        pid = wait_pid_file(dir.path().join("leader")) => pid,
    };
    // The exec future is dropped here.
    let grandchild = wait_pid_file(dir.path().join("grandchild")).await;
    // ESRCH only once reaped: a killed but unreaped child is still a zombie of ours.
    let mut reaped = false;
    for _ in 0..500 {
        if kill(Pid::from_raw(leader), None) == Err(Errno::ESRCH) {
            reaped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(reaped, "leader {leader} not killed and reaped");
    assert!(
        wait_gone(grandchild).await,
        "grandchild {grandchild} survived"
    );
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn output_lines_are_logged_with_delivery_fields() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let argv = script(
        dir.path(),
        "echo hello out\necho hello err >&2\nprintf 'no newline'\n",
    );
    assert_eq!(
        exec(&argv, LONG).attempt(&item(""), 1, never()).await,
        Outcome::Delivered
    );

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let fields: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["fields"].clone())
        .collect();
    let find = |msg: &str| {
        fields
            .iter()
            .find(|f| f["message"] == msg)
            .unwrap_or_else(|| panic!("{msg:?} not logged:\n{text}"))
            .clone()
    };
    let out = find("hello out");
    assert_eq!(out["delivery_id"], 7);
    assert_eq!(out["hook"], "deploy");
    assert_eq!(out["stream"], "stdout");
    assert_eq!(find("hello err")["stream"], "stderr");
    assert_eq!(find("no newline")["stream"], "stdout");
}

#[tokio::test]
async fn line_reader_splits_lines() {
    let mut input = b"one\r\ntwo\n".to_vec();
    input.extend_from_slice(&[b'z'; MAX_LINE + 10]);
    input.extend_from_slice(b"\n\xffbad\nlast");
    let mut r = LineReader::new(&input[..]);
    assert_eq!(r.next_line().await.as_deref(), Some("one"));
    assert_eq!(r.next_line().await.as_deref(), Some("two"));
    assert_eq!(r.next_line().await.map(|l| l.len()), Some(MAX_LINE));
    assert_eq!(r.next_line().await.map(|l| l.len()), Some(10));
    assert_eq!(r.next_line().await.as_deref(), Some("\u{fffd}bad"));
    assert_eq!(r.next_line().await.as_deref(), Some("last"));
    assert_eq!(r.next_line().await, None);
    assert!(r.eof);
}

#[test]
fn header_env_names() {
    assert_eq!(env_name("x-github-event"), "X_GITHUB_EVENT");
    assert_eq!(env_name("x.weird!name"), "X_WEIRD_NAME");
}

#[tokio::test]
async fn the_body_file_is_removed_when_the_command_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let argv = script(
        dir.path(),
        "printf '%s' \"$HOOKD_BODY_FILE\" > \"$1/path.tmp\"; mv \"$1/path.tmp\" \"$1/path\"\nexec sleep 1000\n",
    );
    let mut settings = config::ExecSettings::new(&argv).unwrap();
    settings.body_file = true;
    let action = Exec {
        settings,
        timeout: Duration::from_secs(1),
        hide_env: Arc::default(),
        kill_grace: Duration::from_millis(200),
    };
    let out = action.attempt(&item("secret body"), 1, never()).await;
    assert_eq!(out, Outcome::Failed("timed out after 1s".into()));
    let path = std::fs::read_to_string(dir.path().join("path")).unwrap();
    assert!(path.contains("hookd-body-7-1-"), "{path}");
    assert!(!Path::new(&path).exists(), "{path} left behind");
}

#[tokio::test]
async fn a_missing_value_is_rejected_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut argv = script(dir.path(), "touch \"$1/ran\"\n");
    argv.push("{payload.nope}".into());
    let out = exec(&argv, LONG).attempt(&item("{}"), 1, never()).await;
    assert_eq!(
        out,
        Outcome::Rejected("{payload.nope} is not in the request (missing = \"fail\")".into())
    );
    assert!(!dir.path().join("ran").exists());
}
