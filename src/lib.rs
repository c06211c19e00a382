//! hookd: a systemd-native webhook inbox.
//!
//! Data flows one way: [`ingress`] → [`spool`] → [`delivery`], with
//! [`lifecycle`] above all three telling them when to stop. [`systemd`] speaks
//! the service manager's protocol and knows nothing of webhooks.
//! See ARCHITECTURE.md for the map.

#![warn(unreachable_pub)]

// Only `main` leaves the crate: everything else is `pub(crate)` at most, so
// the compiler reports what nothing uses.
mod cli;
mod config;
mod delivery;
mod ingress;
mod lifecycle;
mod metrics;
mod spool;
mod systemd;

pub use cli::main;
