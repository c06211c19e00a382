//! The daemon's states and what moves it between them: start-up, signals,
//! the drain with its grace window and one extension, shutdown hooks, and the
//! control socket. Tells ingress and delivery when to stop; never the reverse.
//!
//! ```text
//! Starting ──READY=1──▶ Ready ──SIGTERM──▶ Draining ──window ends──▶ Extended
//!                                              │                         │
//!                                              ▼ idle                    ▼ idle / window ends
//!                                           Stopped (exit 0)          Stopped (exit 0 / 1)
//! ```

pub(crate) mod control;
pub(crate) mod drain;
pub(crate) mod handoff;
pub(crate) mod serve;
pub(crate) mod shutdown_hooks;
pub(crate) mod signals;
pub(crate) mod sockets;
pub(crate) mod status;

use std::sync::atomic::{AtomicU8, Ordering};

/// Where the daemon is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    Starting = 0,
    Ready = 1,
    Draining = 2,
    /// Draining in the one extension of the grace window.
    Extended = 3,
    HandingOff = 4,
    Stopped = 5,
}

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Draining => "draining",
            Phase::Extended => "draining (extended)",
            Phase::HandingOff => "handing off",
            Phase::Stopped => "stopped",
        }
    }

    /// The `hookd_drain_state` gauge value.
    pub(crate) fn drain_gauge(self) -> u64 {
        match self {
            Phase::Starting | Phase::Ready | Phase::Stopped => 0,
            Phase::Draining => 1,
            Phase::Extended => 2,
            Phase::HandingOff => 3,
        }
    }
}

/// The current phase, readable from any thread.
#[derive(Debug, Default)]
pub(crate) struct PhaseCell(AtomicU8);

impl PhaseCell {
    pub(crate) fn get(&self) -> Phase {
        match self.0.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            2 => Phase::Draining,
            3 => Phase::Extended,
            4 => Phase::HandingOff,
            _ => Phase::Stopped,
        }
    }

    pub(crate) fn set(&self, p: Phase) {
        self.0.store(p as u8, Ordering::Release);
    }
}

/// Exit codes; start-up failures each have their own.
pub(crate) mod exit {
    pub(crate) const CLEAN: u8 = 0;
    /// Work remained after the extended grace window; its leases were released.
    pub(crate) const FORCED: u8 = 1;
    pub(crate) const BAD_CONFIG: u8 = 2;
    pub(crate) const SPOOL: u8 = 3;
    pub(crate) const NO_LISTENER: u8 = 4;
    pub(crate) const RUNTIME: u8 = 5;
}
