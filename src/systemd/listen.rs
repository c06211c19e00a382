//! Sockets passed by systemd (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`).
//!
//! `sd-notify` reads the names too (`listenfd` ignores them); the fd store
//! hands fds back in an order that changes, so callers match by name.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;

use nix::sys::socket::{
    getsockname, getsockopt, sockopt, AddressFamily, SockType, SockaddrLike, SockaddrStorage,
};

/// A listening socket received from systemd.
#[derive(Debug)]
pub(crate) enum Inherited {
    Tcp(std::net::TcpListener),
    Unix(UnixListener),
}

/// One inherited fd with its `LISTEN_FDNAMES` entry ("unknown" when unnamed).
#[derive(Debug)]
pub(crate) struct Named {
    pub name: String,
    pub socket: Inherited,
}

/// Takes the fds systemd passed and clears `LISTEN_*` so children do not see
/// them. Fds that are not listening stream sockets are closed and reported.
///
/// # Safety
/// Changes the environment: call before any other thread runs.
pub(crate) unsafe fn take() -> std::io::Result<(Vec<Named>, Vec<String>)> {
    let fds: Vec<(RawFd, String)> =
        unsafe { sd_notify::listen_fds_with_names_and_unset_env()? }.collect();
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for (fd, name) in fds {
        // Safety: systemd passed us this fd and nothing else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        match classify(owned) {
            Ok(socket) => out.push(Named { name, socket }),
            Err(why) => skipped.push(format!("fd {fd} ({name}): {why}")),
        }
    }
    Ok((out, skipped))
}

fn classify(fd: OwnedFd) -> Result<Inherited, String> {
    use std::os::fd::AsRawFd;
    let ty = getsockopt(&fd, sockopt::SockType).map_err(|e| format!("not a socket: {e}"))?;
    if ty != SockType::Stream {
        return Err(format!("socket type {ty:?}, need a stream socket"));
    }
    if !getsockopt(&fd, sockopt::AcceptConn).map_err(|e| e.to_string())? {
        return Err("socket is not listening".into());
    }
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd()).map_err(|e| e.to_string())?;
    match addr.family() {
        Some(AddressFamily::Inet | AddressFamily::Inet6) => {
            Ok(Inherited::Tcp(std::net::TcpListener::from(fd)))
        }
        Some(AddressFamily::Unix) => Ok(Inherited::Unix(UnixListener::from(fd))),
        other => Err(format!(
            "address family {other:?}, need inet, inet6 or unix"
        )),
    }
}
