//! `hookd import-webhook`, side by side with adnanh/webhook (Debian's
//! `webhook`, which `.ci/run` installs): one hooks file, the same signed
//! requests to each, and a recording command; both must run the same
//! commands with the same arguments and environment, and refuse the same ones.
//!
//! The two servers run one after the other (each has the recorder's log to
//! itself). webhook runs a hook's command while or after it answers; hookd
//! after the spool commit: both are awaited by counting recorded runs, with a
//! deadline, and hookd's refusals are checked in its spool (filtered, nothing
//! spooled for a bad signature) rather than by waiting for nothing to happen.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{github_sig, request, wait_for, Hookd, Response};

const WEBHOOK: &str = "/usr/bin/webhook";
const SECRET: &str = "side-by-side secret";

/// A command that appends one JSON line per run: its argv and its HOOK_*/REPO env.
fn write_recorder(dir: &Path) -> PathBuf {
    let path = dir.join("record.py");
    let log = dir.join("runs.jsonl");
    let script = format!(
        r#"#!/usr/bin/python3
import fcntl, json, os, sys
env = {{k: v for k, v in os.environ.items() if k.startswith("HOOK_") or k == "REPO"}}
line = json.dumps({{"argv": sys.argv[1:], "env": env, "cwd": os.getcwd()}}, sort_keys=True)
with open({log:?}, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    f.write(line + "\n")
"#,
        log = log.display().to_string()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

fn runs(dir: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(dir.join("runs.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

fn hooks_file(dir: &Path, recorder: &Path) -> PathBuf {
    let text = format!(
        r#"[
  {{
    "id": "deploy",
    "execute-command": "{rec}",
    "command-working-directory": "{dir}",
    "pass-arguments-to-command": [
      {{ "source": "payload", "name": "head_commit.id" }},
      {{ "source": "payload", "name": "pusher.name" }},
      {{ "source": "string", "name": "--from-webhook" }},
      {{ "source": "payload", "name": "missing.field" }}
    ],
    "pass-environment-to-command": [
      {{ "source": "header", "name": "X-GitHub-Event" }},
      {{ "source": "payload", "name": "repository.full_name", "envname": "REPO" }}
    ],
    "trigger-rule": {{
      "and": [
        {{ "match": {{ "type": "payload-hmac-sha256", "secret": "{secret}",
                     "parameter": {{ "source": "header", "name": "X-Hub-Signature-256" }} }} }},
        {{ "or": [
          {{ "match": {{ "type": "value", "value": "refs/heads/main",
                       "parameter": {{ "source": "payload", "name": "ref" }} }} }},
          {{ "match": {{ "type": "regex", "regex": "^refs/tags/v[0-9]+$",
                       "parameter": {{ "source": "payload", "name": "ref" }} }} }}
        ] }}
      ]
    }}
  }}
]"#,
        rec = recorder.display(),
        dir = dir.display(),
        secret = SECRET
    );
    let path = dir.join("hooks.json");
    std::fs::write(&path, text).unwrap();
    path
}

/// The requests both servers get, and whether each should run the command.
fn requests() -> Vec<(Vec<u8>, bool, bool)> {
    let push = |r#ref: &str, sha: &str, who: &str| {
        serde_json::json!({
            "ref": r#ref,
            "head_commit": { "id": sha },
            "pusher": { "name": who },
            "repository": { "full_name": "octo/app" }
        })
        .to_string()
        .into_bytes()
    };
    vec![
        // (body, signed correctly, should run)
        (push("refs/heads/main", "aaa111", "alice"), true, true),
        (
            push("refs/tags/v12", "bbb222", "bob; rm -rf / $(id)"),
            true,
            true,
        ),
        (push("refs/heads/feature", "ccc333", "carol"), true, false),
        (push("refs/tags/v1.2", "ddd444", "dave"), true, false),
        (push("refs/heads/main", "eee555", "eve"), false, false),
    ]
}

fn send_all(addr: SocketAddr) -> Vec<Response> {
    requests()
        .into_iter()
        .enumerate()
        .map(|(i, (body, good, _))| {
            let sig = if good {
                github_sig(SECRET, &body)
            } else {
                github_sig("not the secret", &body)
            };
            let delivery = format!("delivery-{i}");
            request(
                addr,
                "POST",
                "/hooks/deploy",
                &[
                    ("Content-Type", "application/json"),
                    ("X-GitHub-Event", "push"),
                    ("X-GitHub-Delivery", &delivery),
                    ("X-Hub-Signature-256", &sig),
                ],
                &body,
            )
            .unwrap()
        })
        .collect()
}

struct Webhook(Child);

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_webhook(hooks: &Path, port: u16) -> Webhook {
    let child = Command::new(WEBHOOK)
        .args(["-hooks", &hooks.display().to_string(), "-ip", "127.0.0.1"])
        .args(["-port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("adnanh/webhook (Debian package webhook) must be installed: .ci/run installs it");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for(Duration::from_secs(10), "webhook listening", || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
    });
    Webhook(child)
}

#[test]
fn imported_hooks_run_the_same_commands_with_the_same_arguments_as_webhook() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let recorder = write_recorder(dir);
    let hooks = hooks_file(dir, &recorder);
    let expected_runs = requests().iter().filter(|r| r.2).count();

    // adnanh/webhook on the hooks file.
    let port = common::free_port();
    let webhook_answers = {
        let _w = start_webhook(&hooks, port);
        let answers = send_all(SocketAddr::from(([127, 0, 0, 1], port)));
        wait_for(Duration::from_secs(20), "webhook's runs", || {
            (runs(dir).len() >= expected_runs).then_some(())
        });
        answers
    };
    let webhook_runs = runs(dir);
    std::fs::remove_file(dir.join("runs.jsonl")).unwrap();

    // hookd on what import-webhook made of it.
    let secrets = dir.join("secrets");
    let out = Command::new(common::BIN)
        .args(["import-webhook", &hooks.display().to_string()])
        .args(["--secrets-dir", &secrets.display().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let converted = String::from_utf8(out.stdout).unwrap();
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(warnings.contains("-hotreload"), "{warnings}");
    // The [server] table is the test's own (free port, spool in the temp dir).
    let hooks_toml: String = converted
        .split("\n[[hook]]")
        .skip(1)
        .map(|h| format!("\n[[hook]]{h}"))
        .collect();
    let mut h = Hookd::configure(dir, &hooks_toml);
    let (code, _, err) = h.cli(&["check-config"]);
    assert_eq!(
        code, 0,
        "the converted config must pass check-config: {err}\n{converted}"
    );
    h.start();
    let hookd_answers = send_all(h.addr());
    wait_for(Duration::from_secs(30), "hookd's runs", || {
        (runs(dir).len() >= expected_runs).then_some(())
    });
    let hookd_runs = runs(dir);

    assert_eq!(
        hookd_runs, webhook_runs,
        "the same commands with the same argv, env and cwd"
    );
    assert_eq!(webhook_runs.len(), expected_runs, "{webhook_runs:?}");
    assert!(
        webhook_runs[1].contains("bob; rm -rf / $(id)") || webhook_runs[0].contains("bob; rm"),
        "shell metacharacters arrive verbatim: {webhook_runs:?}"
    );
    // Refusals line up: what webhook did not run, hookd did not deliver.
    for (i, ((_, good, should_run), (w, k))) in requests()
        .iter()
        .zip(webhook_answers.iter().zip(&hookd_answers))
        .enumerate()
    {
        match (good, should_run) {
            (true, true) => {
                assert_eq!(w.status, 200, "request {i}: webhook ran it");
                assert_eq!(k.status, 202, "request {i}: hookd spooled it");
            }
            (true, false) => {
                assert_eq!(k.status, 200, "request {i}: filtered");
                assert_eq!(k.json()["status"], "filtered", "request {i}");
            }
            (false, _) => {
                assert_ne!(
                    w.status / 100,
                    2,
                    "request {i}: webhook refused the bad signature"
                );
                assert_eq!(
                    k.status, 403,
                    "request {i}: hookd refused the bad signature"
                );
            }
        }
    }
    assert_eq!(h.items("filtered").len(), 2, "kept as filtered");
}
