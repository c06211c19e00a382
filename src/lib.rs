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
mod replies;
mod request;
mod spool;
mod systemd;

// Entry points for the fuzz targets in tests/fuzz/ (built with `--cfg fuzzing`,
// which cargo-fuzz sets) and for the unit tests that replay their corpora and
// run the spool model with fixed seeds. Not part of hookd's interface.
#[cfg(fuzzing)]
pub mod fuzz_api;
#[cfg(all(test, not(fuzzing)))]
#[allow(unreachable_pub)]
mod fuzz_api;

pub use cli::main;
