//! The hand-off on reload: start the binary now on disk, give it our
//! listening sockets, and step aside once it is ready.
//!
//! Sockets travel by inheritance with `LISTEN_FDS`/`LISTEN_FDNAMES`, the same
//! way systemd passes them, so the successor has one start-up path for both.
//! SCM_RIGHTS would need a second protocol for no gain: the successor is our
//! child anyway. Every socket is the *same* socket (a dup), not a new bind, so
//! connections waiting in the backlog are served by whoever accepts next.
//!
//! `LISTEN_PID` must name the successor, whose pid is unknown before fork, and
//! setting the environment between fork and exec is not async-signal-safe.
//! So the successor gets `HOOKD_HANDOFF_FD` instead and sets `LISTEN_PID` to
//! its own pid first thing in `main`, while it is still single-threaded.
//! The same fd is a pipe on which it answers `ready` or `error: <reason>`.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// Names the successor's end of the report pipe.
pub(crate) const ENV_HANDOFF_FD: &str = "HOOKD_HANDOFF_FD";

/// A listening socket to pass on, under its `LISTEN_FDNAMES` name.
pub(crate) struct PassedSocket {
    pub name: String,
    pub fd: OwnedFd,
}

/// How to start the successor: the binary path and arguments we were started with.
#[derive(Debug, Clone)]
pub(crate) struct Relaunch {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
}

impl Relaunch {
    /// Captured at start-up: after a package upgrade `/proc/self/exe` names the
    /// old, deleted file, while this path holds the new binary.
    pub(crate) fn from_current_process() -> Relaunch {
        let mut args = std::env::args_os();
        let argv0 = args.next().map(PathBuf::from).unwrap_or_default();
        let exe = if argv0.components().count() > 1 {
            std::fs::canonicalize(&argv0).unwrap_or(argv0)
        } else {
            std::env::current_exe().unwrap_or(argv0)
        };
        Relaunch {
            exe,
            args: args.collect(),
        }
    }
}

/// A successor that reported ready.
pub(crate) struct Successor {
    pub pid: u32,
    /// Kept so the child is reaped if it exits while we still run.
    pub child: tokio::process::Child,
}

/// Starts the successor and waits up to `timeout` for its report. On any
/// failure the successor is killed and reaped, and the reason returned.
pub(crate) async fn start_successor(
    how: &Relaunch,
    sockets: &[PassedSocket],
    timeout: Duration,
) -> Result<Successor, String> {
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let mut sources: Vec<RawFd> = sockets.iter().map(|s| s.fd.as_raw_fd()).collect();
    sources.push(write.as_raw_fd());
    let names: Vec<&str> = sockets.iter().map(|s| s.name.as_str()).collect();
    let report_fd = 3 + sockets.len();

    let mut cmd = tokio::process::Command::new(&how.exe);
    cmd.args(&how.args)
        .env("LISTEN_FDS", sockets.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env(ENV_HANDOFF_FD, report_fd.to_string())
        .env_remove("LISTEN_PID")
        .stdin(std::process::Stdio::null());
    // Safety: only dup/dup2/close between fork and exec, all async-signal-safe.
    unsafe {
        cmd.pre_exec(move || place_fds(&sources));
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", how.exe.display()))?;
    drop(write);
    let pid = child.id().unwrap_or(0);

    let mut report =
        tokio::net::unix::pipe::Receiver::from_owned_fd(read).map_err(|e| format!("pipe: {e}"))?;
    let mut answer = Vec::new();
    // The pipe closes when the successor reports or dies; its exit alone
    // cannot end the wait (a grandchild could hold the pipe open).
    let failure = match tokio::time::timeout(timeout, report.read_to_end(&mut answer)).await {
        Err(_) => format!(
            "new instance (pid {pid}) was not ready within {}",
            humantime::format_duration(timeout)
        ),
        Ok(Err(e)) => format!("reading the new instance's report: {e}"),
        Ok(Ok(_)) => match parse_report(&answer) {
            Report::Ready => return Ok(Successor { pid, child }),
            Report::Failed(reason) => format!("new instance failed: {reason}"),
            Report::Silent => {
                match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
                    Ok(Ok(st)) => {
                        format!("new instance exited with {st} before it was ready; see its log")
                    }
                    _ => "new instance closed its report pipe without a word".to_string(),
                }
            }
        },
    };
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    Err(failure)
}

enum Report {
    Ready,
    Failed(String),
    /// Closed with nothing said: it died (crash, kill) before reporting.
    Silent,
}

fn parse_report(answer: &[u8]) -> Report {
    let text = String::from_utf8_lossy(answer);
    let text = text.trim();
    if text == "ready" {
        Report::Ready
    } else if let Some(reason) = text.strip_prefix("error: ") {
        Report::Failed(reason.to_string())
    } else {
        Report::Silent
    }
}

/// Moves `sources` to fds 3, 4, … without CLOEXEC. Two passes, so a source
/// already sitting in the target range is not overwritten before it is read.
fn place_fds(sources: &[RawFd]) -> std::io::Result<()> {
    let mut high = Vec::with_capacity(sources.len());
    for &fd in sources {
        // Safety: plain fcntl on an fd we own in this (forked) process.
        let h = unsafe { libc::fcntl(fd, libc::F_DUPFD, 64) };
        if h < 0 {
            return Err(std::io::Error::last_os_error());
        }
        high.push(h);
    }
    for (i, h) in high.into_iter().enumerate() {
        // Safety: dup2 and close are async-signal-safe; the targets are ours to use.
        unsafe {
            if libc::dup2(h, 3 + i as RawFd) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(h);
        }
    }
    Ok(())
}

/// The successor's side: if we were started by a hand-off, point `LISTEN_PID`
/// at ourselves and return the report pipe.
///
/// # Safety
/// Changes the environment: call before any other thread runs.
pub(crate) unsafe fn adopt() -> Option<OwnedFd> {
    let fd: RawFd = std::env::var(ENV_HANDOFF_FD).ok()?.parse().ok()?;
    unsafe {
        std::env::remove_var(ENV_HANDOFF_FD);
        std::env::set_var("LISTEN_PID", std::process::id().to_string());
    }
    // Keep the pipe out of our own children (exec deliveries).
    if nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .is_err()
    {
        return None;
    }
    // Safety: the predecessor placed this fd for us and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Tells the predecessor how start-up went; it stops accepting on `ready`.
pub(crate) fn report(pipe: OwnedFd, outcome: Result<(), &str>) {
    let mut f = std::fs::File::from(pipe);
    let msg = match outcome {
        Ok(()) => "ready\n".to_string(),
        Err(reason) => format!("error: {}\n", reason.replace('\n', " ")),
    };
    let _ = f.write_all(msg.as_bytes());
}
