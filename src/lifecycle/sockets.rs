//! Which listening sockets the daemon serves on, and under what names.
//!
//! A socket unit's sockets win. Without one, the addresses of
//! `server.listen` are taken back from systemd's fd store where it kept them
//! (so `systemctl restart` never closes the port) and bound otherwise, then
//! stored. Stored fds are matched by name: the store's order changes.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use super::exit;
use super::handoff::PassedSocket;
use super::serve::StartError;
use crate::config::{Config, ListenAddr};
use crate::ingress::listeners::{self, StdListener};
use crate::systemd::listen::{Inherited, Named};
use crate::systemd::notify;

/// Prefix of the fd-store names of listeners hookd bound itself.
const STORED_PREFIX: &str = "hookd-listen-";
/// Prefix of those bound from `server.listen_tls`: a hand-off passes sockets
/// by name only, so the name is what tells the successor a socket is TLS.
const STORED_TLS_PREFIX: &str = "hookd-listen-tls-";
/// The `FileDescriptorName=` that marks a socket unit's TLS sockets.
const TLS_UNIT_NAME: &str = "https";

/// Whether a socket passed under `name` (by systemd or a predecessor) is TLS.
fn is_tls_name(name: &str) -> bool {
    name == TLS_UNIT_NAME || name.starts_with(STORED_TLS_PREFIX)
}

/// The fd-store name of a listener bound from `server.listen` (`:` is not allowed).
fn stored_name(addr: &ListenAddr, tls: bool) -> String {
    let safe: String = addr
        .to_string()
        .chars()
        .map(|c| {
            if c == ':' || !c.is_ascii_graphic() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if tls {
        format!("{STORED_TLS_PREFIX}{safe}")
    } else {
        format!("{STORED_PREFIX}{safe}")
    }
}

fn to_std(s: Inherited) -> StdListener {
    match s {
        Inherited::Tcp(l) => StdListener::Tcp(l),
        Inherited::Unix(l) => StdListener::Unix(l),
    }
}

/// A listener and the name it is passed on under.
pub struct Chosen {
    pub name: String,
    pub listener: StdListener,
    /// Served with TLS (`server.tls`).
    pub tls: bool,
}

impl Chosen {
    /// A dup of the socket for a successor (the same socket, not a new bind).
    pub fn to_pass(&self) -> std::io::Result<PassedSocket> {
        let fd: OwnedFd = self.listener.fd().try_clone_to_owned()?;
        Ok(PassedSocket {
            name: self.name.clone(),
            fd,
        })
    }
}

/// Chooses the listeners from what systemd (or a predecessor) passed and the config.
pub fn choose(cfg: &Config, inherited: Vec<Named>) -> Result<Vec<Chosen>, StartError> {
    let (stored, from_unit): (Vec<Named>, Vec<Named>) = inherited
        .into_iter()
        .partition(|n| n.name.starts_with(STORED_PREFIX));
    if !from_unit.is_empty() {
        for n in &stored {
            let _ = notify::remove_stored_fd(&n.name);
        }
        for n in &from_unit {
            if is_tls_name(&n.name) && cfg.server.tls.is_none() {
                return Err(StartError::new(
                    exit::BAD_CONFIG,
                    format!("{}: systemd passed a socket named {TLS_UNIT_NAME:?} (TLS), but server.tls is not set", cfg.source.display()),
                ));
            }
            tracing::info!(name = %n.name, tls = is_tls_name(&n.name), "using socket from systemd");
        }
        return Ok(from_unit
            .into_iter()
            .map(|n| Chosen {
                tls: is_tls_name(&n.name),
                name: n.name,
                listener: to_std(n.socket),
            })
            .collect());
    }
    let mut stored: HashMap<String, Inherited> =
        stored.into_iter().map(|n| (n.name, n.socket)).collect();
    let mut out = Vec::new();
    let plain = cfg.server.listen.iter().map(|t| (t, false));
    let tls = cfg.server.listen_tls.iter().map(|t| (t, true));
    for (text, tls) in plain.chain(tls) {
        let addr = ListenAddr::parse(text).map_err(|e| StartError::new(exit::BAD_CONFIG, e))?;
        let name = stored_name(&addr, tls);
        let listener = match stored.remove(&name) {
            Some(s) => {
                tracing::info!(listen = %addr, "listener taken back from the fd store");
                to_std(s)
            }
            None => {
                let l = listeners::bind(&addr).map_err(|e| {
                    StartError::new(exit::NO_LISTENER, format!("cannot listen on {addr}: {e}"))
                })?;
                // systemd keeps it across restarts, so the port never closes.
                if let Err(e) = notify::store_fd(&name, l.fd()) {
                    tracing::debug!(error = %e, "fd store unavailable");
                }
                l
            }
        };
        out.push(Chosen {
            name,
            listener,
            tls,
        });
    }
    for name in stored.keys() {
        tracing::info!(
            name,
            "dropping a stored listener no longer in server.listen or listen_tls"
        );
        let _ = notify::remove_stored_fd(name);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_have_no_colon() {
        let n = stored_name(&ListenAddr::parse("[::1]:8080").unwrap(), false);
        assert_eq!(n, "hookd-listen-[__1]_8080");
        let n = stored_name(&ListenAddr::parse("unix:/run/h ook.sock").unwrap(), false);
        assert_eq!(n, "hookd-listen-unix_/run/h_ook.sock");
    }

    #[test]
    fn tls_survives_a_hand_off_by_name() {
        let addr = ListenAddr::parse("127.0.0.1:8443").unwrap();
        let n = stored_name(&addr, true);
        assert_eq!(n, "hookd-listen-tls-127.0.0.1_8443");
        assert!(is_tls_name(&n));
        assert!(
            n.starts_with(STORED_PREFIX),
            "still one of ours in the fd store"
        );
        assert!(!is_tls_name(&stored_name(&addr, false)));
        assert!(is_tls_name("https"));
        assert!(!is_tls_name("http"));
    }
}
