//! Where log lines go: the journal with structured fields under systemd,
//! readable lines (or JSON) on a terminal.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use crate::systemd::journal::stderr_is_journal;

/// Installs the global subscriber. `HOOKD_LOG` overrides `log.level`.
pub(crate) fn init(cfg: &LogConfig) {
    let filter = std::env::var("HOOKD_LOG")
        .ok()
        .and_then(|s| EnvFilter::try_new(s).ok())
        .or_else(|| EnvFilter::try_new(&cfg.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let format = match cfg.format {
        LogFormat::Auto if stderr_is_journal() => LogFormat::Journald,
        LogFormat::Auto => LogFormat::Plain,
        f => f,
    };
    // Colours only for a person at a terminal, never in files or pipes.
    let ansi = std::io::stderr().is_terminal();
    let plain = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Journald => match tracing_journald::layer() {
            // No prefix: fields arrive as HOOKD_EVENT=…, DELIVERY_ID=….
            Ok(layer) => {
                let _ = registry
                    .with(
                        layer
                            .with_field_prefix(None)
                            .with_syslog_identifier("hookd".into()),
                    )
                    .try_init();
            }
            Err(e) => {
                let _ = registry.with(plain).try_init();
                tracing::warn!(error = %e, "journald unavailable; logging to stderr");
            }
        },
        LogFormat::Json => {
            let _ = registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_writer(std::io::stderr),
                )
                .try_init();
        }
        LogFormat::Plain | LogFormat::Auto => {
            let _ = registry.with(plain).try_init();
        }
    }
}
