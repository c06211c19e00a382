//! Request values as `exec` arguments and `respond.wait`, against the real
//! binary and real child processes: what a command receives is what it
//! records in files the test reads back.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// A `/bin/sh` script at `dir/name` (0755); returns its path.
fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{text}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// An exec hook `name` with GitHub signatures and the given action fields.
fn exec_hook(dir: &Path, name: &str, action: &str, extra: &str) -> String {
    format!(
        r#"[[hook]]
name = "{name}"
verify = {{ scheme = "github", secret_file = "{}/github.secret" }}
action = {{ {action}, timeout = "20s" }}
{extra}
"#,
        dir.display()
    )
}

/// A GitHub-signed POST to `path` (which may carry a query).
fn post_to(h: &Hookd, path: &str, body: &[u8], extra: &[(&str, &str)]) -> Response {
    let sig = github_sig(SECRET, body);
    let mut headers = vec![
        ("X-Hub-Signature-256", sig.as_str()),
        ("Content-Type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    request(h.addr(), "POST", path, &headers, body).unwrap()
}

/// Every argument as a NUL-terminated word, so an empty one shows too.
fn argv_words(path: &Path) -> Vec<String> {
    let raw = wait_for(Duration::from_secs(20), "the command's argv", || {
        std::fs::read(path).ok()
    });
    let mut out: Vec<String> = raw
        .split(|&b| b == 0)
        .map(|w| String::from_utf8(w.to_vec()).unwrap())
        .collect();
    // The last NUL ends the last word.
    assert_eq!(out.pop().as_deref(), Some(""), "record not NUL-terminated");
    out
}

const EVIL: &str = "$(touch pwned); `touch pwned2` | cat > pwned3 && echo \"q\" 'x' \\ *";

#[test]
fn arguments_env_and_cwd_carry_request_values_verbatim_one_element_each() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let rec = script(
        dir.path(),
        "rec.sh",
        &format!(
            r#"o={o}/$HOOKD_DELIVERY_ID
printf '%s\0' "$@" > $o.argv.tmp
printf '%s\0' "$SHA" "$EVENT" "$WHOLE" > $o.env.tmp
pwd > $o.cwd
ls -A > $o.ls
mv $o.env.tmp $o.env
mv $o.argv.tmp $o.argv
"#,
            o = out.display()
        ),
    );
    let action = format!(
        r##"exec = ["{}", "{{payload.after}}", "--by={{header.X-GitHub-Event}}", "{{payload.evil}}", "{{query.env}}", "{{request.remote_ip}}", "#{{hookd.delivery_id}}", "{{payload.commits}}", "{{{{literal}}}}"], cwd = "{}", env = {{ SHA = "{{payload.after}}", EVENT = "{{header.x-github-event}}", WHOLE = "{{payload}}" }}"##,
        rec.display(),
        work.display()
    );
    let mut h = Hookd::configure(dir.path(), &exec_hook(dir.path(), "run", &action, ""));
    h.start();
    let body = serde_json::json!({
        "after": "0123abcd",
        "evil": EVIL,
        "commits": [{"id": "a b"}, {"id": "c\nd"}],
    })
    .to_string();
    let r = post_to(
        &h,
        "/hooks/run?env=prod%20eu&other=1",
        body.as_bytes(),
        &[("X-GitHub-Event", "push")],
    );
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_i64().unwrap();
    let argv = argv_words(&out.join(format!("{id}.argv")));
    assert_eq!(
        argv,
        [
            "0123abcd".to_string(),
            "--by=push".into(),
            EVIL.into(),
            "prod eu".into(),
            "127.0.0.1".into(),
            format!("#{id}"),
            r#"[{"id":"a b"},{"id":"c\nd"}]"#.into(),
            "{literal}".into(),
        ]
    );
    let env = argv_words(&out.join(format!("{id}.env")));
    assert_eq!(env, ["0123abcd".to_string(), "push".into(), body.clone()]);
    let cwd = std::fs::read_to_string(out.join(format!("{id}.cwd"))).unwrap();
    assert_eq!(cwd.trim_end(), work.to_str().unwrap());
    // Nothing was run by a shell: no file the metacharacters would have made.
    assert_eq!(
        std::fs::read_to_string(out.join(format!("{id}.ls"))).unwrap(),
        ""
    );
    assert!(!dir.path().join("pwned").exists() && !work.join("pwned").exists());
}

#[test]
fn body_file_holds_the_body_privately_and_is_removed_after_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let runtime = dir.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    let rec = script(
        dir.path(),
        "rec.sh",
        &format!(
            r#"o={o}/$HOOKD_DELIVERY_ID
cp "$HOOKD_BODY_FILE" $o.copy
stat -c %a "$HOOKD_BODY_FILE" > $o.mode
printf '%s' "$HOOKD_BODY_FILE" > $o.path.tmp
mv $o.path.tmp $o.path
"#,
            o = out.display()
        ),
    );
    let action = format!(r#"exec = ["{}"], body_file = true"#, rec.display());
    let mut h = Hookd::configure(dir.path(), &exec_hook(dir.path(), "run", &action, ""));
    h.env.push((
        "RUNTIME_DIRECTORY".into(),
        runtime.to_string_lossy().into_owned(),
    ));
    h.start();
    let body = b"{\"big\":\"x y z\"}";
    let r = h.post_signed("run", body, &[]);
    assert_eq!(r.status, 202);
    let id = r.json()["id"].as_i64().unwrap();
    let path = wait_for(Duration::from_secs(20), "the body file's path", || {
        std::fs::read_to_string(out.join(format!("{id}.path"))).ok()
    });
    assert!(path.starts_with(runtime.to_str().unwrap()), "{path}");
    assert_eq!(std::fs::read(out.join(format!("{id}.copy"))).unwrap(), body);
    assert_eq!(
        std::fs::read_to_string(out.join(format!("{id}.mode")))
            .unwrap()
            .trim(),
        "600"
    );
    wait_for(Duration::from_secs(20), "the item to be done", || {
        h.items("done")
            .iter()
            .any(|i| i["id"].as_i64() == Some(id))
            .then_some(())
    });
    // Done is written after the command was reaped and the file removed.
    assert!(
        !Path::new(&path).exists(),
        "body file {path} left behind after the run"
    );
}

#[test]
fn a_missing_invalid_or_too_long_value_is_dead_at_once_unrun_unless_missing_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let rec = script(
        dir.path(),
        "rec.sh",
        &format!(
            r#"o={o}/$HOOKD_HOOK
printf '%s\0' "$@" > $o.tmp
mv $o.tmp $o.argv
"#,
            o = out.display()
        ),
    );
    let hook = |name: &str, missing: &str| {
        exec_hook(
            dir.path(),
            name,
            &format!(
                r#"exec = ["{}", "a", "--ref={{payload.ref}}", "{{payload.branch:-main}}", "z"], missing = "{missing}""#,
                rec.display()
            ),
            r#"retry = { max_attempts = 5, backoff = "100ms", max_backoff = "100ms" }"#,
        )
    };
    let checked = exec_hook(
        dir.path(),
        "checked",
        &format!(
            r#"exec = ["{}", "{{payload.ref}}"], validate = {{ "payload.ref" = "refs/heads/[A-Za-z0-9._/-]+" }}"#,
            rec.display()
        ),
        "",
    );
    let big = exec_hook(
        dir.path(),
        "big",
        &format!(r#"exec = ["{}", "{{payload.big}}"]"#, rec.display()),
        "",
    );
    let hooks = [
        hook("fail", "fail"),
        hook("empty", "empty"),
        hook("skip", "skip"),
        checked,
        big,
    ]
    .join("\n");
    let mut h = Hookd::configure(dir.path(), &hooks);
    h.start();
    let mut ids = Vec::new();
    for name in ["fail", "empty", "skip"] {
        let r = h.post_signed(name, b"{\"other\":1}", &[]);
        assert_eq!(r.status, 202);
        ids.push(r.json()["id"].as_i64().unwrap());
    }
    assert_eq!(
        argv_words(&out.join("empty.argv")),
        ["a", "--ref=", "main", "z"]
    );
    assert_eq!(argv_words(&out.join("skip.argv")), ["a", "main", "z"]);
    let dead = wait_for(Duration::from_secs(20), "the fail item to be dead", || {
        h.items("dead")
            .into_iter()
            .find(|i| i["id"].as_i64() == Some(ids[0]))
    });
    // Dead after one attempt, not five: the spooled request never changes.
    assert_eq!(dead["attempts"].as_u64(), Some(1), "{dead}");
    let err = dead["last_error"].as_str().unwrap_or("");
    assert!(err.contains("{payload.ref}"), "{dead}");
    assert!(
        !out.join("fail.argv").exists(),
        "the command ran without its value"
    );

    // validate: a value that does not match is dead at once too, unrun.
    let r = h.post_signed("checked", b"{\"ref\":\"refs/heads/x;reboot\"}", &[]);
    assert_eq!(r.status, 202);
    let id = r.json()["id"].as_i64().unwrap();
    let dead = wait_for(
        Duration::from_secs(20),
        "the unvalidated item to be dead",
        || {
            h.items("dead")
                .into_iter()
                .find(|i| i["id"].as_i64() == Some(id))
        },
    );
    assert_eq!(dead["attempts"].as_u64(), Some(1), "{dead}");
    let err = dead["last_error"].as_str().unwrap_or("");
    assert!(err.contains("does not match validate"), "{dead}");
    assert!(
        !out.join("checked.argv").exists(),
        "ran with an invalid value"
    );
    let r = h.post_signed("checked", b"{\"ref\":\"refs/heads/main\"}", &[]);
    assert_eq!(r.status, 202);
    assert_eq!(argv_words(&out.join("checked.argv")), ["refs/heads/main"]);

    // A value the kernel would refuse as one argument (128 KiB) is dead at once.
    let body = serde_json::json!({ "big": "x".repeat(128 * 1024) }).to_string();
    let r = h.post_signed("big", body.as_bytes(), &[]);
    assert_eq!(r.status, 202);
    let id = r.json()["id"].as_i64().unwrap();
    let dead = wait_for(
        Duration::from_secs(20),
        "the oversize item to be dead",
        || {
            h.items("dead")
                .into_iter()
                .find(|i| i["id"].as_i64() == Some(id))
        },
    );
    assert_eq!(dead["attempts"].as_u64(), Some(1), "{dead}");
    let err = dead["last_error"].as_str().unwrap_or("");
    assert!(
        err.contains("{payload.big} makes a value of 131072 bytes"),
        "{dead}"
    );
    assert!(!out.join("big.argv").exists(), "ran with an oversize value");
}

#[test]
fn respond_wait_answers_with_the_commands_stdout_or_500_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ok = script(
        dir.path(),
        "ok.sh",
        "echo \"deployed $1\"\necho 'second line'\n",
    );
    let bad = script(dir.path(), "bad.sh", "echo 'no such branch' >&2\nexit 3\n");
    let hooks = [
        exec_hook(
            dir.path(),
            "ok",
            &format!(r#"exec = ["{}", "{{payload.after}}"]"#, ok.display()),
            r#"respond = { wait = "20s" }"#,
        ),
        exec_hook(
            dir.path(),
            "bad",
            &format!(r#"exec = ["{}"]"#, bad.display()),
            "respond = { wait = \"20s\" }\nretry = { max_attempts = 1 }",
        ),
    ]
    .join("\n");
    let mut h = Hookd::configure(dir.path(), &hooks);
    h.start();
    let r = h.post_signed("ok", b"{\"after\":\"abc\"}", &[]);
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.body, b"deployed abc\nsecond line\n");
    let id: i64 = r.header("hookd-delivery-id").unwrap().parse().unwrap();
    wait_for(Duration::from_secs(20), "the item to be done", || {
        h.items("done")
            .iter()
            .any(|i| i["id"].as_i64() == Some(id))
            .then_some(())
    });

    let r = h.post_signed("bad", b"{}", &[]);
    assert_eq!(r.status, 500, "{:?}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!(j["error"], "first_attempt_failed");
    let msg = j["message"].as_str().unwrap();
    assert!(
        msg.contains("exit status 3") && msg.contains("no such branch"),
        "{j}"
    );
    // Durable all the same: the item is in the spool with its outcome.
    let id = j["id"].as_i64().unwrap();
    wait_for(
        Duration::from_secs(20),
        "the failed item to be dead",
        || {
            h.items("dead")
                .iter()
                .any(|i| i["id"].as_i64() == Some(id))
                .then_some(())
        },
    );
}

#[test]
fn respond_wait_answers_202_when_the_first_attempt_is_slow_and_the_command_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let runs = dir.path().join("runs");
    // Blocks until the test writes to the fifo: the wait is over by then.
    let slow = script(
        dir.path(),
        "slow.sh",
        &format!(
            "echo run >> {runs}\nread line < {gate}\necho finished\n",
            runs = runs.display(),
            gate = gate.display()
        ),
    );
    let mut h = Hookd::configure(
        dir.path(),
        &exec_hook(
            dir.path(),
            "slow",
            &format!(r#"exec = ["{}"]"#, slow.display()),
            r#"respond = { wait = "1s" }"#,
        ),
    );
    h.start();
    let addr = h.addr();
    let started = Instant::now();
    let answer = std::thread::spawn(move || post_gh_to(addr, "/hooks/slow", b"{\"n\":1}"));
    // The command starts while the sender waits: the item was committed first.
    wait_for(Duration::from_secs(20), "the command to start", || {
        std::fs::read_to_string(&runs)
            .ok()
            .filter(|s| !s.is_empty())
    });
    let leased = h.items("leased");
    assert_eq!(leased.len(), 1, "not durable while the sender waits");
    let r = answer.join().unwrap();
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(started.elapsed() >= Duration::from_secs(1));
    let id = r.json()["id"].as_i64().unwrap();
    assert_eq!(leased[0]["id"].as_i64(), Some(id));
    // Let the command finish: that one run is the delivery.
    std::fs::write(&gate, "go\n").unwrap();
    wait_for(Duration::from_secs(20), "the item to be done", || {
        h.items("done")
            .iter()
            .any(|i| i["id"].as_i64() == Some(id))
            .then_some(())
    });
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n");
}

/// A GitHub-signed POST to `path` on `addr`, for a thread of its own.
fn post_gh_to(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> Response {
    let sig = github_sig(SECRET, body);
    request(
        addr,
        "POST",
        path,
        &[
            ("X-Hub-Signature-256", sig.as_str()),
            ("Content-Type", "application/json"),
        ],
        body,
    )
    .unwrap()
}

#[test]
fn respond_wait_on_a_forward_relays_the_apps_status_and_body() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(Arc::new(|n, _| {
        (if n == 0 { 201 } else { 500 }, Duration::ZERO)
    }));
    let mut h = Hookd::configure(
        dir.path(),
        &forward_hook(
            dir.path(),
            "fw",
            &up.url(),
            "respond = { wait = \"20s\" }\nretry = { max_attempts = 1 }",
        ),
    );
    h.start();
    let r = h.post_signed("fw", b"{\"n\":1}", &[]);
    assert_eq!(r.status, 201);
    assert_eq!(r.body, b"ok");
    let r = h.post_signed("fw", b"{\"n\":2}", &[]);
    assert_eq!(r.status, 500, "the app's own status is relayed");
    assert_eq!(r.body, b"ok");
    assert_eq!(up.received().len(), 2, "one attempt each, no second run");
}

#[test]
fn respond_wait_answers_202_at_once_while_draining_since_no_first_attempt_will_start() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let runs = dir.path().join("runs");
    let slow = script(
        dir.path(),
        "slow.sh",
        &format!(
            "echo run >> {runs}\nread line < {gate}\n",
            runs = runs.display(),
            gate = gate.display()
        ),
    );
    let mut h = Hookd::configure(
        dir.path(),
        &exec_hook(
            dir.path(),
            "slow",
            &format!(r#"exec = ["{}"]"#, slow.display()),
            r#"respond = { wait = "25s" }"#,
        ),
    );
    h.start();
    let addr = h.addr();
    // One delivery holds the drain open.
    let first = std::thread::spawn(move || post_gh_to(addr, "/hooks/slow", b"{\"n\":1}"));
    wait_for(Duration::from_secs(20), "the command to start", || {
        std::fs::read_to_string(&runs)
            .ok()
            .filter(|s| !s.is_empty())
    });
    let stopped = Instant::now();
    h.signal(nix::sys::signal::Signal::SIGTERM);
    h.notify.wait_line("STOPPING=1", Duration::from_secs(20));
    // The waiting sender and a new one are answered 202 without their 25 s
    // (a wait that ran out would take 25 s each; 15 s is loaded-machine slack).
    let r = first.join().unwrap();
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    let r = post_gh_to(addr, "/hooks/slow", b"{\"n\":2}");
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "answers took {took:?}: the wait was not cut"
    );
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n");
    std::fs::write(&gate, "go\n").unwrap();
    let st = h.wait_exit(Duration::from_secs(30));
    assert!(st.success(), "{st}");
}
