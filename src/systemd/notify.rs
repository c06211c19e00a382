//! `sd_notify(3)` messages over `$NOTIFY_SOCKET`.
//!
//! Every function is a no-op without `NOTIFY_SOCKET`, so the daemon runs the
//! same way outside systemd. Send errors are logged, never fatal: a daemon that
//! cannot tell systemd its status should still serve.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// Listeners and spool are up.
pub(crate) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A hand-off successor takes over as the unit's main process.
pub(crate) fn ready_as_main_pid(status: &str) {
    send(&[
        NotifyState::MainPid(std::process::id()),
        NotifyState::Ready,
        NotifyState::Status(status),
    ]);
}

/// One line for `systemctl status`.
pub(crate) fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

/// `STOPPING=1` with the first stop-timer extension in the same datagram,
/// so systemd never sees one without the other.
pub(crate) fn stopping(extend: Duration, status: &str) {
    let usec = u32::try_from(extend.as_micros()).unwrap_or(u32::MAX);
    send(&[
        NotifyState::Stopping,
        NotifyState::ExtendTimeoutUsec(usec),
        NotifyState::Status(status),
    ]);
}

/// `RELOADING=1` needs `MONOTONIC_USEC` on newer systemd (notify-reload); 252 ignores it.
pub(crate) fn reloading(status: &str) {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now, NotifyState::Status(status)]),
        Err(_) => send(&[NotifyState::Reloading, NotifyState::Status(status)]),
    }
}

/// Tells systemd the next message comes within `within`; it is not additive.
pub(crate) fn extend_timeout(within: Duration, status: &str) {
    let usec = u32::try_from(within.as_micros()).unwrap_or(u32::MAX);
    send(&[
        NotifyState::ExtendTimeoutUsec(usec),
        NotifyState::Status(status),
    ]);
}

pub(crate) fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// The watchdog interval when systemd asked for one (`WATCHDOG_USEC`).
pub(crate) fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Hands `fd` to systemd's fd store under `name`, replacing nothing: the
/// caller removes an old entry of the same name first if it wants one copy.
pub(crate) fn store_fd(name: &str, fd: BorrowedFd<'_>) -> std::io::Result<()> {
    sd_notify::notify_with_fds(&[NotifyState::FdStore, NotifyState::FdName(name)], &[fd])
}

/// Removes every fd stored under `name`.
pub(crate) fn remove_stored_fd(name: &str) -> std::io::Result<()> {
    sd_notify::notify(&[NotifyState::FdStoreRemove, NotifyState::FdName(name)])
}

/// `BARRIER=1`: returns once systemd has processed every message sent before,
/// which it signals by closing its copy of our pipe.
pub(crate) fn barrier(timeout: Duration) -> std::io::Result<()> {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return Ok(());
    }
    let (read, write) = nix::unistd::pipe().map_err(std::io::Error::from)?;
    sd_notify::notify_with_fds(&[NotifyState::Custom("BARRIER=1")], &[write.as_fd()])?;
    drop(write);
    let mut fds = [nix::poll::PollFd::new(
        read.as_fd(),
        nix::poll::PollFlags::empty(),
    )];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
        Ok(0) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "systemd did not answer BARRIER=1",
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
