//! Signals, turned into requests to the lifecycle.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    /// SIGTERM or SIGINT: drain and exit.
    Stop(&'static str),
    /// SIGHUP: the same as `hookd reload`.
    Reload,
}

/// Installs the handlers now (so a signal arriving during start-up is not
/// lost to the default action) and forwards each signal as a [`Request`].
pub(crate) fn listen() -> std::io::Result<mpsc::UnboundedReceiver<Request>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let req = tokio::select! {
                Some(()) = term.recv() => Request::Stop("SIGTERM"),
                Some(()) = int.recv() => Request::Stop("SIGINT"),
                Some(()) = hup.recv() => Request::Reload,
                else => break,
            };
            if tx.send(req).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}
