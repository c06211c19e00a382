//! The command line: `serve`, `check-config`, `status`, `reload`, `spool …`,
//! `explain`.

pub(crate) mod explain;
pub(crate) mod import_webhook;
pub(crate) mod logging;
pub(crate) mod spool;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::lifecycle::control::{self, Depth, Reloaded, Request, StatusReport};
use crate::lifecycle::{exit, handoff, serve};

#[derive(Parser, Debug)]
#[command(
    name = "hookd",
    version,
    about = "A systemd-native webhook inbox: spools every webhook durably before answering, then delivers it with retries."
)]
pub(crate) struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, env = "HOOKD_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run the daemon (under systemd: Type=notify).
    Serve,
    /// Validate the configuration (and load its secrets) without starting.
    CheckConfig {
        /// Also print what each hook checks, with its preset expanded.
        #[arg(long)]
        explain: bool,
    },
    /// State, deliveries in flight, spool depth and recent errors of the running daemon.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Ask the running daemon to reload (hand-off to the binary and config on disk).
    Reload,
    /// Inspect and repair the spool file, whether or not the daemon runs.
    #[command(subcommand)]
    Spool(spool::SpoolCommand),
    /// Show why a request was (or would be) delivered or filtered: the hook's
    /// `when` tree with the value each condition saw, and the verification.
    Explain(explain::ExplainArgs),
    /// Print a hookd config equivalent to an adnanh/webhook hooks file (JSON or YAML);
    /// warnings on stderr name each hook whose meaning changes.
    ImportWebhook {
        /// The webhook hooks file (hooks.json or hooks.yaml).
        file: PathBuf,
        /// Write each hook's secret to DIR/<hook>.secret (mode 0600) and point the config at it.
        #[arg(long, value_name = "DIR")]
        secrets_dir: Option<PathBuf>,
    },
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve => run_serve(&cli.config),
        Command::CheckConfig { explain } => check_config(&cli.config, explain),
        Command::Status { json } => status(&cli.config, json),
        Command::Reload => reload(&cli.config),
        Command::Spool(cmd) => spool::run(&cli.config, cmd),
        Command::Explain(args) => explain::run(&cli.config, args),
        Command::ImportWebhook { file, secrets_dir } => {
            import_webhook::run(&import_webhook::Options { file, secrets_dir })
        }
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("hookd: {e}");
        ExitCode::from(exit::BAD_CONFIG)
    })
}

fn run_serve(path: &std::path::Path) -> ExitCode {
    let relaunch = handoff::Relaunch::from_current_process();
    // Safety (both): no other thread runs yet; they change the environment.
    let handoff_pipe = unsafe { handoff::adopt() };
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hookd: {e}");
            if let Some(pipe) = handoff_pipe {
                handoff::report(pipe, Err(&e.to_string()));
            }
            return ExitCode::from(exit::BAD_CONFIG);
        }
    };
    logging::init(&cfg.log);
    let (inherited, skipped) = match unsafe { crate::systemd::listen::take() } {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the sockets systemd passed");
            return ExitCode::from(exit::NO_LISTENER);
        }
    };
    for s in skipped {
        tracing::warn!("ignoring inherited {s}");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::from(exit::RUNTIME);
        }
    };
    let origin = serve::Origin {
        inherited,
        handoff: handoff_pipe,
        relaunch,
    };
    let code = match rt.block_on(serve::serve(cfg, origin)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(
                hookd_event = "start_failed",
                exit_code = e.code,
                "{}",
                e.message
            );
            eprintln!("hookd: {}", e.message);
            e.code
        }
    };
    rt.shutdown_timeout(Duration::from_secs(1));
    ExitCode::from(code)
}

fn check_config(path: &std::path::Path, explain: bool) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = crate::ingress::routes::Ingress::routes(&cfg) {
        eprintln!("hookd: {e}");
        return ExitCode::from(exit::BAD_CONFIG);
    }
    if let Err(e) = crate::ingress::tls::Tls::load(cfg.server.tls.as_ref()) {
        eprintln!("hookd: {}: {e}", path.display());
        return ExitCode::from(exit::BAD_CONFIG);
    }
    for w in cfg.warnings() {
        eprintln!("hookd: warning: {w}");
    }
    println!(
        "{}: ok ({} hooks; spool {}; listen {}{})",
        path.display(),
        cfg.hooks.len(),
        cfg.spool_summary(),
        cfg.server.listen.join(" "),
        if cfg.server.listen_tls.is_empty() {
            String::new()
        } else {
            format!("; listen_tls {}", cfg.server.listen_tls.join(" "))
        }
    );
    if explain {
        for h in &cfg.hooks {
            print!("{}", crate::ingress::presets::explain(h.get_ref()));
        }
    }
    ExitCode::SUCCESS
}

fn status(path: &std::path::Path, json: bool) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let answer = control::ask::<StatusReport>(
        &cfg.control_socket_path(),
        Request::Status,
        Duration::from_secs(10),
    );
    match answer {
        Ok(Ok(report)) if json => match control::encode_pretty(&report) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hookd: cannot render the status: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(Ok(report)) => {
            print_status(&report);
            ExitCode::SUCCESS
        }
        Ok(Err(e)) | Err(e) => {
            eprintln!("hookd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `hookd status` warns when the served certificate has less than this left:
/// Let's Encrypt renews at 30 days, so 14 means renewal has been failing.
const TLS_WARN_SECS: i64 = 14 * 86_400;

fn print_status(r: &StatusReport) {
    println!(
        "state:    {}\npid:      {}\nspool:    {}",
        r.state, r.pid, r.spool
    );
    // Only a PostgreSQL spool has nodes; a file spool's output is unchanged.
    if let Some(node) = &r.node {
        println!("node:     {node}");
    }
    println!("requests in flight: {}", r.requests_in_flight);
    for h in &r.in_flight {
        println!("in flight  {:<20} {}", h.hook, h.count);
    }
    // An unreadable depth shows as no rows here; `--json` has the reason.
    if let Depth::Rows(rows) = &r.depth {
        for d in rows {
            println!(
                "spool      {:<20} {:<16} {:<8} {}",
                d.hook, d.route, d.state, d.count
            );
        }
    }
    println!("orphaned pending: {}", r.orphaned_pending);
    if let Some(not_after) = r.tls_cert_expiry {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let days = (not_after - now).div_euclid(86_400);
        println!("tls cert expires in {days} days (notAfter {not_after})");
        if not_after - now < TLS_WARN_SECS {
            eprintln!(
                "hookd: warning: the TLS certificate expires in {days} days; renew it, then `systemctl reload hookd`"
            );
        }
    }
    for e in &r.last_errors {
        // Each error as its JSON object, as this line has always shown it.
        let line = serde_json::to_string(e).unwrap_or_default();
        println!("error      {line}");
    }
}

fn reload(path: &std::path::Path) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let answer = control::ask::<Reloaded>(
        &cfg.control_socket_path(),
        Request::Reload,
        Duration::from_secs(120),
    );
    match answer {
        Ok(Ok(done)) => {
            println!("{}", done.message);
            ExitCode::SUCCESS
        }
        Ok(Err(reason)) => {
            eprintln!("hookd: reload failed: {reason}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("hookd: {e}");
            ExitCode::FAILURE
        }
    }
}
