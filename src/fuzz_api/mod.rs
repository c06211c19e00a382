//! The fuzz targets' entry points: one function per target in tests/fuzz/.
//!
//! This module exists only for the fuzzer (`--cfg fuzzing`, set by cargo-fuzz)
//! and for the unit tests below, which replay the seed corpora and every crash
//! the fuzzer found, and run the spool model with fixed seeds on every build.
//! Each function takes raw bytes and panics when an invariant breaks; bad
//! input must not panic.

mod config;
mod ingress;
mod spool_model;
mod verify;

pub use config::config;
#[cfg(fuzzing)]
pub use ingress::ingress;
pub use ingress::{IngressHarness, HOOK_SECRET, HOOK_TOKEN};
pub use spool_model::spool_model;
pub use verify::verify;

#[cfg(test)]
mod tests;
