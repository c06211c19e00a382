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
/// What a listener serves. The role is part of the socket's name, and a
/// hand-off passes sockets by name only, so the name is what tells a
/// successor that a socket is TLS or metrics-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Webhooks and the probes, plain HTTP (`server.listen`).
    Webhook,
    /// Webhooks and the probes over TLS (`server.listen_tls`, or a socket
    /// unit's socket named `https`).
    WebhookTls,
    /// Only `/metrics` and the probes (`server.metrics_listen`, or a socket
    /// unit's socket named `metrics`).
    Metrics,
}

impl Role {
    /// After [`STORED_PREFIX`] in a stored name. A name from `server.listen`
    /// goes on with `unix_`, a digit or `[`, so the marks never meet it.
    fn mark(self) -> &'static str {
        match self {
            Role::Webhook => "",
            Role::WebhookTls => "tls-",
            Role::Metrics => "metrics-",
        }
    }

    /// The role of a socket passed under `name`, by systemd (its
    /// `FileDescriptorName=`) or by a predecessor (a stored name).
    fn of_name(name: &str) -> Role {
        match name.strip_prefix(STORED_PREFIX) {
            Some(rest) if rest.starts_with(Role::WebhookTls.mark()) => Role::WebhookTls,
            Some(rest) if rest.starts_with(Role::Metrics.mark()) => Role::Metrics,
            Some(_) => Role::Webhook,
            None if name == TLS_UNIT_NAME => Role::WebhookTls,
            None if name == METRICS_UNIT_NAME => Role::Metrics,
            None => Role::Webhook,
        }
    }
}

/// The `FileDescriptorName=` that marks a socket unit's TLS sockets.
const TLS_UNIT_NAME: &str = "https";
/// The `FileDescriptorName=` of a socket unit's metrics-only socket.
const METRICS_UNIT_NAME: &str = "metrics";

/// The fd-store name of a listener hookd binds itself (`:` is not allowed).
fn stored_name(addr: &ListenAddr, role: Role) -> String {
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
    format!("{STORED_PREFIX}{}{safe}", role.mark())
}

fn to_std(s: Inherited) -> StdListener {
    match s {
        Inherited::Tcp(l) => StdListener::Tcp(l),
        Inherited::Unix(l) => StdListener::Unix(l),
    }
}

/// A listener, the name it is passed on under, and what it serves.
pub(crate) struct Chosen {
    pub name: String,
    pub listener: StdListener,
    pub role: Role,
}

impl Chosen {
    /// A dup of the socket for a successor (the same socket, not a new bind).
    pub(crate) fn to_pass(&self) -> std::io::Result<PassedSocket> {
        let fd: OwnedFd = self.listener.fd().try_clone_to_owned()?;
        Ok(PassedSocket {
            name: self.name.clone(),
            fd,
        })
    }
}

/// Chooses the listeners from what systemd (or a predecessor) passed and the config.
pub(crate) fn choose(cfg: &Config, inherited: Vec<Named>) -> Result<Vec<Chosen>, StartError> {
    let (stored, from_unit): (Vec<Named>, Vec<Named>) = inherited
        .into_iter()
        .partition(|n| n.name.starts_with(STORED_PREFIX));
    if !from_unit.is_empty() {
        for n in &stored {
            let _ = notify::remove_stored_fd(&n.name);
        }
        for n in &from_unit {
            let role = Role::of_name(&n.name);
            if role == Role::WebhookTls && cfg.server.tls.is_none() {
                return Err(StartError::new(
                    exit::BAD_CONFIG,
                    format!("{}: systemd passed a socket named {TLS_UNIT_NAME:?} (TLS), but server.tls is not set", cfg.source.display()),
                ));
            }
            tracing::info!(name = %n.name, ?role, "using socket from systemd");
        }
        return Ok(from_unit
            .into_iter()
            .map(|n| Chosen {
                role: Role::of_name(&n.name),
                name: n.name,
                listener: to_std(n.socket),
            })
            .collect());
    }
    let mut stored: HashMap<String, Inherited> =
        stored.into_iter().map(|n| (n.name, n.socket)).collect();
    let mut out = Vec::new();
    let webhook = cfg.server.listen.iter().map(|a| (a, Role::Webhook));
    let tls = cfg.server.listen_tls.iter().map(|a| (a, Role::WebhookTls));
    let metrics = cfg.server.metrics_listen.iter().map(|a| (a, Role::Metrics));
    for (text, role) in webhook.chain(tls).chain(metrics) {
        let addr = ListenAddr::parse(text).map_err(|e| StartError::new(exit::BAD_CONFIG, e))?;
        let name = stored_name(&addr, role);
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
            role,
        });
    }
    for name in stored.keys() {
        tracing::info!(
            name,
            "dropping a stored listener no longer in server.listen, listen_tls or metrics_listen"
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
        let n = stored_name(&ListenAddr::parse("[::1]:8080").unwrap(), Role::Webhook);
        assert_eq!(n, "hookd-listen-[__1]_8080");
        let n = stored_name(
            &ListenAddr::parse("unix:/run/h ook.sock").unwrap(),
            Role::Webhook,
        );
        assert_eq!(n, "hookd-listen-unix_/run/h_ook.sock");
    }

    #[test]
    fn the_role_survives_a_hand_off_by_name() {
        let addr = ListenAddr::parse("127.0.0.1:8443").unwrap();
        for (role, name) in [
            (Role::Webhook, "hookd-listen-127.0.0.1_8443"),
            (Role::WebhookTls, "hookd-listen-tls-127.0.0.1_8443"),
            (Role::Metrics, "hookd-listen-metrics-127.0.0.1_8443"),
        ] {
            let n = stored_name(&addr, role);
            assert_eq!(n, name);
            assert!(
                n.starts_with(STORED_PREFIX),
                "still one of ours in the fd store"
            );
            assert_eq!(Role::of_name(&n), role, "{n}");
        }
        let unix = stored_name(&ListenAddr::parse("unix:/run/x").unwrap(), Role::Webhook);
        assert_eq!(Role::of_name(&unix), Role::Webhook);
        assert_eq!(Role::of_name("https"), Role::WebhookTls);
        assert_eq!(Role::of_name("metrics"), Role::Metrics);
        assert_eq!(Role::of_name("http"), Role::Webhook);
    }
}
