//! The `exec` action: run a command (no shell) with the body on stdin.

use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::time::{sleep_until, Instant};

use super::args::{RenderError, Values};
use super::{human, Outcome};
use crate::config::ExecSettings;
use crate::ingress::access::{CLIENT_ADDR_HEADER, QUERY_HEADER};
use crate::replies::{Reply, REPLY_LIMIT};
use crate::request::{as_text, RequestView};
use crate::spool::Item;

/// Between SIGTERM and SIGKILL when a command overruns or is cancelled.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long output is still read after the command exits: a background
/// grandchild may hold the pipes open forever.
const OUTPUT_LINGER: Duration = Duration::from_secs(1);
/// Longer output lines are logged in pieces of this size.
const MAX_LINE: usize = 8 * 1024;
/// How much of the last stderr line goes into the error message.
const STDERR_IN_ERROR: usize = 200;
/// systemd protocol variables meant for hookd alone, never for its children.
const PRIVATE_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// The `exec` action of one hook: what to run and how to stop it.
pub(crate) struct Exec {
    /// Program, argument templates, environment, working directory; no shell.
    pub(crate) settings: ExecSettings,
    pub(crate) timeout: Duration,
    /// Variables removed from the child's environment: the ones hookd reads
    /// its hooks' secrets from.
    pub(crate) hide_env: Arc<Vec<String>>,
    /// Between SIGTERM and SIGKILL on timeout or cancel ([`KILL_GRACE`]).
    pub(crate) kill_grace: Duration,
}

/// Why a command was stopped before it exited by itself.
#[derive(Clone, Copy)]
enum Stop {
    TimedOut,
    Cancelled,
}

impl Exec {
    /// Runs the command for `item`'s `attempt` (1-based): body on stdin,
    /// metadata in `HOOKD_*` variables, stdout/stderr logged line by line.
    /// Exit 0 is [`Outcome::Delivered`]; another status, or overrunning the
    /// timeout, is [`Outcome::Failed`]. When `cancel` completes first the
    /// command is stopped and the result is [`Outcome::Cancelled`].
    ///
    /// The command runs in its own process group; on timeout or cancel the
    /// whole group gets SIGTERM, then SIGKILL after `kill_grace`, and the
    /// command is reaped before this returns. Dropping the future SIGKILLs
    /// the group at once (the runtime reaps the child).
    #[cfg(test)]
    pub(crate) async fn attempt(
        &self,
        item: &Item,
        attempt: u32,
        cancel: impl Future<Output = ()>,
    ) -> Outcome {
        self.attempt_with_reply(item, attempt, cancel).await.0
    }

    /// As [`Exec::attempt`], with the command's answer for `respond.wait`:
    /// 200 and its stdout (the first [`REPLY_LIMIT`] bytes) on exit 0, else
    /// `None` (the caller answers the failure).
    pub(crate) async fn attempt_with_reply(
        &self,
        item: &Item,
        attempt: u32,
        cancel: impl Future<Output = ()>,
    ) -> (Outcome, Option<Reply>) {
        let program = &self.settings.program;
        let (args, env) = match self.render(item, attempt) {
            Ok(r) => r,
            Err(e) => return (Outcome::Rejected(e.to_string()), None),
        };
        // Removed when this attempt ends, however it ends.
        let body_file = if self.settings.body_file {
            match BodyFile::write(item, attempt) {
                Ok(f) => Some(f),
                Err(e) => {
                    return (
                        Outcome::Failed(format!("cannot write the body file: {e}")),
                        None,
                    )
                }
            }
        } else {
            None
        };
        let mut cmd = self.command(program, item, attempt);
        cmd.args(args).envs(env);
        if let Some(f) = &body_file {
            cmd.env("HOOKD_BODY_FILE", &f.path);
        }
        if let Some(dir) = &self.settings.cwd {
            cmd.current_dir(dir);
        }
        let mut child = match cmd.spawn() {
            // Arguments too long for the kernel stay too long at every retry.
            Err(e) if e.raw_os_error() == Some(libc::E2BIG) => {
                return (
                    Outcome::Rejected(format!("cannot start {program}: {e}")),
                    None,
                )
            }
            Err(e) => {
                let why = match &self.settings.cwd {
                    Some(dir) => format!("cannot start {program} in {}: {e}", dir.display()),
                    None => format!("cannot start {program}: {e}"),
                };
                return (Outcome::Failed(why), None);
            }
            Ok(c) => c,
        };
        let mut group = GroupGuard(child.id().map(|id| Pid::from_raw(id as i32)));
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            // Unreachable with piped stdio; the guard kills the group.
            return (Outcome::Failed("exec: child pipes missing".into()), None);
        };
        let mut output = Output {
            out: LineReader::new(stdout),
            err: LineReader::new(stderr),
            last_stderr: None,
            stdout: Vec::new(),
            id: item.id,
            hook: &item.hook,
        };
        let feed = feed_stdin(stdin, item.body.clone());
        tokio::pin!(feed, cancel);
        let mut fed = false;
        let deadline = Instant::now() + self.timeout;
        let mut stopping: Option<Stop> = None;
        let mut kill_at: Option<Instant> = None;

        let status: io::Result<ExitStatus> = loop {
            tokio::select! {
                status = child.wait() => break status,
                () = output.next(), if !output.done() => {}
                _ = &mut feed, if !fed => fed = true,
                _ = sleep_until(deadline), if stopping.is_none() => {
                    stopping = Some(Stop::TimedOut);
                    group.signal(Signal::SIGTERM);
                    kill_at = Some(Instant::now() + self.kill_grace);
                }
                _ = &mut cancel, if stopping.is_none() => {
                    stopping = Some(Stop::Cancelled);
                    group.signal(Signal::SIGTERM);
                    kill_at = Some(Instant::now() + self.kill_grace);
                }
                _ = sleep_until(kill_at.unwrap_or(deadline)), if kill_at.is_some() => {
                    group.signal(Signal::SIGKILL);
                    kill_at = None;
                }
            }
        };
        if stopping.is_some() {
            // The leader is gone; finish off group members that ignored SIGTERM.
            group.signal(Signal::SIGKILL);
        }
        group.disarm();

        let linger = Instant::now() + OUTPUT_LINGER;
        while !output.done() {
            tokio::select! {
                () = output.next() => {}
                _ = sleep_until(linger) => break,
            }
        }

        drop(body_file);

        let outcome = match (stopping, status) {
            (Some(Stop::Cancelled), _) => Outcome::Cancelled,
            (Some(Stop::TimedOut), _) => {
                Outcome::Failed(format!("timed out after {}", human(self.timeout)))
            }
            (None, Err(e)) => Outcome::Failed(format!("cannot wait for {program}: {e}")),
            (None, Ok(status)) if status.success() => {
                let reply = Reply {
                    status: 200,
                    content_type: "text/plain; charset=utf-8".into(),
                    body: Bytes::from(output.stdout),
                };
                return (Outcome::Delivered, Some(reply));
            }
            (None, Ok(status)) => {
                let mut msg = describe(status);
                if let Some(line) = output.last_stderr.filter(|l| !l.trim().is_empty()) {
                    let cut: String = line.trim().chars().take(STDERR_IN_ERROR).collect();
                    msg.push_str(": ");
                    msg.push_str(&cut);
                }
                Outcome::Failed(msg)
            }
        };
        (outcome, None)
    }

    /// The arguments after the program and the `env = {…}` variables, with
    /// their placeholders filled from the spooled request.
    #[allow(clippy::type_complexity)]
    fn render(
        &self,
        item: &Item,
        attempt: u32,
    ) -> Result<(Vec<OsString>, Vec<(String, OsString)>), RenderError> {
        let s = &self.settings;
        let needs_request = s
            .args
            .iter()
            .chain(s.env.iter().map(|(_, t)| t))
            .any(|t| t.needs_request())
            || !s.validate.is_empty();
        // The body is parsed only when a placeholder looks into the request.
        let headers = if needs_request {
            header_map(&item.headers)
        } else {
            http::HeaderMap::new()
        };
        let query = stored(&item.headers, QUERY_HEADER);
        let remote_ip = stored(&item.headers, CLIENT_ADDR_HEADER).and_then(|s| s.parse().ok());
        let fields = needs_request.then(|| {
            RequestView {
                // Only POST is spooled.
                method: "POST",
                headers: &headers,
                query: query.as_deref(),
                remote_ip,
                body: &item.body,
            }
            .fields()
        });
        let lookup = |f: &str| {
            fields
                .as_ref()
                .and_then(|fields| fields.lookup(f))
                .map(|v| as_text(&v))
        };
        let values = Values {
            body: &item.body,
            lookup: &lookup,
            delivery_id: item.id,
            hook: &item.hook,
            attempt,
        };
        for check in &s.validate {
            check.check(&values)?;
        }
        let mut args = Vec::with_capacity(s.args.len());
        for t in &s.args {
            if let Some(bytes) = t.render(&values, s.missing)? {
                args.push(OsString::from_vec(bytes));
            }
        }
        let mut env = Vec::with_capacity(s.env.len());
        for (name, t) in &s.env {
            if let Some(bytes) = t.render(&values, s.missing)? {
                env.push((name.clone(), OsString::from_vec(bytes)));
            }
        }
        Ok((args, env))
    }

    /// The command for one attempt: no shell, piped stdio, its own process
    /// group, and an environment without hookd's private and secret variables.
    fn command(&self, program: &str, item: &Item, attempt: u32) -> Command {
        let mut cmd = Command::new(program);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for var in PRIVATE_ENV
            .iter()
            .copied()
            .chain(self.hide_env.iter().map(String::as_str))
        {
            cmd.env_remove(var);
        }
        cmd.envs(env_for(item, attempt));
        cmd
    }
}

/// The first stored value of hookd's own header `name`, as text.
fn stored(headers: &[(String, Vec<u8>)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
}

/// The stored headers as a map for lookups; one that is not valid on the
/// wire any more is left out.
fn header_map(headers: &[(String, Vec<u8>)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            http::header::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(value),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// The body in a private file (0600, a fresh name) for `body_file = true`,
/// removed when dropped.
struct BodyFile {
    path: std::path::PathBuf,
}

impl BodyFile {
    /// In `$RUNTIME_DIRECTORY` under systemd, else the temporary directory.
    fn write(item: &Item, attempt: u32) -> io::Result<BodyFile> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::env::var_os("RUNTIME_DIRECTORY")
            .and_then(|d| {
                d.to_string_lossy()
                    .split(':')
                    .next()
                    .map(std::path::PathBuf::from)
            })
            .filter(|d| d.is_absolute())
            .unwrap_or_else(std::env::temp_dir);
        let salt: u64 = rand::random();
        let path = dir.join(format!("hookd-body-{}-{attempt}-{salt:016x}", item.id));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let file = BodyFile { path };
        f.write_all(&item.body)?;
        Ok(file)
    }
}

impl Drop for BodyFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "exec: cannot remove the body file");
        }
    }
}

/// `HOOKD_*` variables for the command.
fn env_for(item: &Item, attempt: u32) -> Vec<(String, String)> {
    let mut env = vec![
        ("HOOKD_DELIVERY_ID".to_string(), item.id.to_string()),
        ("HOOKD_HOOK".to_string(), item.hook.clone()),
        ("HOOKD_ROUTE".to_string(), item.route().to_string()),
        ("HOOKD_ATTEMPT".to_string(), attempt.to_string()),
        (
            "HOOKD_RECEIVED_AT".to_string(),
            humantime::format_rfc3339_millis(item.received_at).to_string(),
        ),
    ];
    for (name, value) in &item.headers {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        if value.contains('\0') {
            continue;
        }
        let var = format!("HOOKD_HEADER_{}", env_name(name));
        // A repeated header becomes one comma-separated value, as HTTP allows.
        match env.iter_mut().find(|(k, _)| *k == var) {
            Some((_, v)) => {
                v.push_str(", ");
                v.push_str(value);
            }
            None => env.push((var, value.to_string())),
        }
    }
    env
}

/// `X-GitHub-Event` → `X_GITHUB_EVENT`; anything not alphanumeric becomes `_`.
fn env_name(header: &str) -> String {
    header
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(sig) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by signal {}", s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        },
        None => status.to_string(),
    }
}

/// Writes the body, then closes stdin. A command that exits without reading
/// its input is fine: the broken pipe is ignored.
async fn feed_stdin(mut stdin: ChildStdin, body: Bytes) {
    if let Err(e) = stdin.write_all(&body).await {
        if e.kind() != io::ErrorKind::BrokenPipe {
            tracing::debug!(error = %e, "exec: writing stdin failed");
        }
    }
}

/// The command's process group; SIGKILLed when dropped while still armed, so a
/// cancelled delivery leaves no grandchildren behind.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    /// Signals the group. Sent only while the leader is unreaped, or right
    /// after: pids are handed out in sequence, so the id is not reused so soon.
    fn signal(&self, sig: Signal) {
        if let Some(pgid) = self.0 {
            // ESRCH: everyone already left.
            let _ = killpg(pgid, sig);
        }
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// The command's stdout and stderr, logged line by line and tagged with the
/// delivery; the last stderr line is kept for the error message.
struct Output<'a> {
    out: LineReader<ChildStdout>,
    err: LineReader<ChildStderr>,
    last_stderr: Option<String>,
    /// The first [`REPLY_LIMIT`] bytes of stdout, for `respond.wait`.
    stdout: Vec<u8>,
    id: i64,
    hook: &'a str,
}

impl Output<'_> {
    /// Both pipes are closed and read to the end.
    fn done(&self) -> bool {
        self.out.eof && self.err.eof
    }

    /// Logs the next line from either pipe. Cancel-safe, as
    /// [`LineReader::next_line`] is; returns at once when [`Output::done`].
    async fn next(&mut self) {
        let (stream, line) = tokio::select! {
            line = self.out.next_line(), if !self.out.eof => ("stdout", line),
            line = self.err.next_line(), if !self.err.eof => ("stderr", line),
            else => return,
        };
        let Some(line) = line else { return };
        tracing::info!(delivery_id = self.id, hook = %self.hook, stream, "{line}");
        if stream == "stderr" {
            self.last_stderr = Some(line);
        } else if self.stdout.len() < REPLY_LIMIT {
            let room = REPLY_LIMIT - self.stdout.len();
            let take = line.len().min(room);
            self.stdout.extend_from_slice(&line.as_bytes()[..take]);
            if self.stdout.len() < REPLY_LIMIT {
                self.stdout.push(b'\n');
            }
        }
    }
}

/// Splits a pipe into lines (lossy UTF-8, at most [`MAX_LINE`] bytes each).
/// `next_line` is cancel-safe: its only await is a single `read`.
struct LineReader<R> {
    reader: R,
    buf: Vec<u8>,
    eof: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(reader: R) -> Self {
        LineReader {
            reader,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// The next line; `None` once the pipe is closed and empty (then `eof` is set).
    async fn next_line(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.iter().take(MAX_LINE + 1).position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            if self.buf.len() >= MAX_LINE {
                let piece: Vec<u8> = self.buf.drain(..MAX_LINE).collect();
                return Some(String::from_utf8_lossy(&piece).into_owned());
            }
            let mut chunk = [0u8; 4096];
            match self.reader.read(&mut chunk).await {
                Ok(n) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                // Closed, or a read error: either way nothing more comes.
                _ => {
                    self.eof = true;
                    if self.buf.is_empty() {
                        return None;
                    }
                    let rest = std::mem::take(&mut self.buf);
                    return Some(String::from_utf8_lossy(&rest).into_owned());
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "exec_tests.rs"]
mod tests;
