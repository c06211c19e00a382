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
/// After [`STORED_PREFIX`], marks a listener of `server.metrics_listen`. A
/// name from `server.listen` goes on with `unix_`, a digit or `[`, so the two
/// never meet.
const METRICS_MARK: &str = "metrics-";
/// The socket-unit name (`FileDescriptorName=`) of a metrics-only socket.
const METRICS_SOCKET: &str = "metrics";

/// The fd-store name of a listener bound from `server.listen` (`:` is not allowed).
fn stored_name(addr: &ListenAddr, metrics: bool) -> String {
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
    let mark = if metrics { METRICS_MARK } else { "" };
    format!("{STORED_PREFIX}{mark}{safe}")
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
}

impl Chosen {
    /// Whether this listener serves only `/metrics` and the probes: a socket
    /// unit's socket named `metrics`, or one of `server.metrics_listen`. The
    /// name travels with the socket through a hand-off, and so does the role.
    pub fn serves_metrics(&self) -> bool {
        self.name == METRICS_SOCKET
            || self
                .name
                .strip_prefix(STORED_PREFIX)
                .is_some_and(|rest| rest.starts_with(METRICS_MARK))
    }

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
            tracing::info!(name = %n.name, "using socket from systemd");
        }
        return Ok(from_unit
            .into_iter()
            .map(|n| Chosen {
                name: n.name,
                listener: to_std(n.socket),
            })
            .collect());
    }
    let mut stored: HashMap<String, Inherited> =
        stored.into_iter().map(|n| (n.name, n.socket)).collect();
    let mut out = Vec::new();
    let webhook = cfg.server.listen.iter().map(|a| (a, false));
    let metrics = cfg.server.metrics_listen.iter().map(|a| (a, true));
    for (text, for_metrics) in webhook.chain(metrics) {
        let addr = ListenAddr::parse(text).map_err(|e| StartError::new(exit::BAD_CONFIG, e))?;
        let name = stored_name(&addr, for_metrics);
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
        out.push(Chosen { name, listener });
    }
    for name in stored.keys() {
        tracing::info!(
            name,
            "dropping a stored listener no longer in server.listen"
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
        let n = stored_name(&ListenAddr::parse("127.0.0.1:9100").unwrap(), true);
        assert_eq!(n, "hookd-listen-metrics-127.0.0.1_9100");
    }
}
