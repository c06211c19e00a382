//! hookd: a systemd-native webhook inbox.
//!
//! Data flows one way: [`ingress`] → [`spool`] → [`delivery`], with
//! [`lifecycle`] above all three telling them when to stop. [`systemd`] speaks
//! the service manager's protocol and knows nothing of webhooks.
//! See ARCHITECTURE.md for the map.

pub mod cli;
pub mod config;
pub mod delivery;
pub mod ingress;
pub mod lifecycle;
pub mod metrics;
pub mod spool;
pub mod systemd;
