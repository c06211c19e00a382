//! Listening sockets: from systemd or bound from `server.listen`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use crate::config::ListenAddr;

/// A listening socket, before it joins the runtime.
#[derive(Debug)]
pub(crate) enum StdListener {
    Tcp(std::net::TcpListener),
    Unix(UnixListener),
}

impl StdListener {
    pub(crate) fn describe(&self) -> String {
        match self {
            StdListener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "tcp:?".into(), |a| a.to_string()),
            StdListener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix:?".into()),
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        match self {
            StdListener::Tcp(l) => l.as_fd(),
            StdListener::Unix(l) => l.as_fd(),
        }
    }
}

/// Binds one address from the config.
pub(crate) fn bind(addr: &ListenAddr) -> io::Result<StdListener> {
    match addr {
        ListenAddr::Tcp(a) => Ok(StdListener::Tcp(std::net::TcpListener::bind(a)?)),
        ListenAddr::Unix(p) => bind_unix(p, false).map(StdListener::Unix),
    }
}

/// Binds a unix socket, replacing a stale socket file no one listens on.
///
/// With `take_over` a live socket is replaced too: a hand-off successor taking
/// the control socket's path from its predecessor (whose open connections
/// still get their answers).
pub(crate) fn bind_unix(path: &Path, take_over: bool) -> io::Result<UnixListener> {
    if take_over {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    match UnixListener::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running process", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        other => other,
    }
}
