//! `hookd spool …`: works on the spool (its SQLite file, or the PostgreSQL
//! database) directly, daemon or not.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Subcommand, ValueEnum};

use crate::config::{Config, SpoolBackend};
use crate::lifecycle::exit;
use crate::spool::{copy_to_postgres, Admin, CopyOptions, ItemState, ListFilter, PgTarget};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum StateArg {
    Pending,
    Leased,
    Done,
    Dead,
    Filtered,
}

impl From<StateArg> for ItemState {
    fn from(s: StateArg) -> ItemState {
        match s {
            StateArg::Pending => ItemState::Pending,
            StateArg::Leased => ItemState::Leased,
            StateArg::Done => ItemState::Done,
            StateArg::Dead => ItemState::Dead,
            StateArg::Filtered => ItemState::Filtered,
        }
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum SpoolCommand {
    /// List items (oldest first), without bodies.
    Ls {
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        #[arg(long)]
        hook: Option<String>,
        /// Only deliveries to this route (`default`: a plain hook's).
        #[arg(long)]
        route: Option<String>,
        /// Only deliveries whose hook or route is no longer in the config.
        #[arg(long)]
        orphaned: bool,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One item with its headers and body.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Make items due now with a fresh attempt count: by id, every dead
    /// one, or every filtered one of a hook (after fixing its rules).
    Retry {
        ids: Vec<i64>,
        /// Every dead item (of --hook, if given).
        #[arg(long, conflicts_with_all = ["ids", "filtered"])]
        dead: bool,
        /// Every filtered item of --hook (no rule matched when it arrived).
        /// For a hook with routes, each route's `when` is checked with the
        /// current config and the matching routes get a delivery.
        #[arg(long, conflicts_with = "ids", requires = "hook")]
        filtered: bool,
        #[arg(long)]
        hook: Option<String>,
        /// Only the deliveries to this route (with ids or --dead).
        #[arg(long, conflicts_with = "filtered")]
        route: Option<String>,
        /// The same as the ids given as arguments.
        #[arg(long = "id", conflicts_with_all = ["dead", "filtered"])]
        id_flags: Vec<i64>,
    },
    /// Delete done or dead items.
    Purge {
        #[arg(long, value_enum)]
        state: StateArg,
        /// Only items older than this (e.g. 7d).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
    },
    /// Counts by hook and state, oldest pending age, file size, instances.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Copy this config's SQLite spool into an empty PostgreSQL spool (the
    /// daemon stopped): pending, leased (as pending), dead, filtered, and
    /// done within retain_done, with ids, attempts and dedup keys. Run it
    /// again after an interruption: it resumes, nothing is copied twice.
    Migrate {
        /// The PostgreSQL URL (postgres://user:password@host/db?sslmode=…).
        #[arg(long, required_unless_present = "to_file", conflicts_with = "to_file")]
        to: Option<String>,
        /// A file holding the URL (keeps the password off the command line).
        #[arg(long)]
        to_file: Option<std::path::PathBuf>,
        /// Requests per transaction (default 5000).
        #[arg(long)]
        chunk: Option<usize>,
    },
}

pub(crate) fn run(config: &Path, cmd: SpoolCommand) -> ExitCode {
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hookd: {e}");
            return ExitCode::from(exit::BAD_CONFIG);
        }
    };
    if let SpoolCommand::Migrate { to, to_file, chunk } = cmd {
        return match migrate(&cfg, to, to_file, chunk) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hookd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let admin = match open_admin(&cfg) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hookd: {e}");
            return ExitCode::from(exit::SPOOL);
        }
    };
    match execute(&cfg, &admin, cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hookd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `spool migrate`: the config's SQLite file into the PostgreSQL spool at
/// the URL given (or in the file given).
fn migrate(
    cfg: &Config,
    to: Option<String>,
    to_file: Option<std::path::PathBuf>,
    chunk: Option<usize>,
) -> Result<(), String> {
    let SpoolBackend::Sqlite(path) = cfg.spool_backend().map_err(|e| e.0)? else {
        return Err(format!(
            "{}: the spool here is PostgreSQL already; run migrate with the config that names the SQLite file",
            cfg.source.display()
        ));
    };
    let url = match (to, to_file) {
        (Some(u), _) => u,
        (None, Some(f)) => {
            let bytes = crate::config::read_secret(&crate::config::SecretSource::File(f.clone()))
                .map_err(|e| format!("--to-file: {e}"))?;
            String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8", f.display()))?
        }
        (None, None) => return Err("give --to URL or --to-file FILE".into()),
    };
    let target = PgTarget::parse(&url).map_err(|e| format!("--to: {e}"))?;
    let mut opts = CopyOptions::new(target.name(), cfg.spool.retain_done);
    if let Some(n) = chunk {
        opts.chunk = n.max(1);
    }
    opts.ordered = cfg
        .hooks
        .iter()
        .flat_map(|h| {
            let h = h.get_ref();
            (h.routes.iter())
                .filter(|r| r.ordered)
                .map(|r| (h.name.clone(), r.name.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let report = copy_to_postgres(&path, &target, cfg.spool.connect_timeout, &opts)
        .map_err(|e| format!("spool {}: {e}", path.display()))?;
    if report.already_complete {
        println!(
            "{} already holds a complete copy of {}; nothing to do",
            target.name(),
            path.display()
        );
        return Ok(());
    }
    let resumed = match report.resumed_from {
        Some(id) => format!(" (resumed after request {id})"),
        None => String::new(),
    };
    println!(
        "copied {} requests and {} deliveries from {} into {}{resumed}; {} done deliveries older than retain_done left out",
        report.requests,
        report.deliveries,
        path.display(),
        target.name(),
        report.skipped_done
    );
    println!("now set [spool] url (or url_file / url_credential) in the config and start hookd");
    Ok(())
}

/// The spool the config names, SQLite file or PostgreSQL database; the
/// error names it (never with a password).
pub(crate) fn open_admin(cfg: &Config) -> Result<Admin, String> {
    match cfg.spool_backend().map_err(|e| e.0)? {
        SpoolBackend::Sqlite(path) => {
            Admin::open(&path).map_err(|e| format!("cannot open spool {}: {e}", path.display()))
        }
        SpoolBackend::Postgres(pg) => Admin::connect_postgres(&pg.target, pg.connect_timeout)
            .map_err(|e| format!("cannot open spool {}: {e}", pg.target.name())),
    }
}

fn execute(cfg: &Config, admin: &Admin, cmd: SpoolCommand) -> Result<(), String> {
    let s = |e: crate::spool::SpoolError| e.to_string();
    match cmd {
        // Handled in `run`: it opens no Admin.
        SpoolCommand::Migrate { .. } => return Err("spool migrate runs on its own".into()),
        SpoolCommand::Ls {
            state,
            hook,
            route,
            orphaned,
            limit,
            json,
        } => {
            let configured: Vec<(String, String)> = cfg
                .hooks
                .iter()
                .map(|h| h.get_ref())
                .flat_map(|h| h.routes.iter().map(|r| (h.name.clone(), r.name.clone())))
                .collect();
            let filter = ListFilter {
                state: state.map(Into::into),
                hook: hook.as_deref(),
                route: route.as_deref(),
                orphaned: orphaned.then_some(configured.as_slice()),
                limit: Some(limit),
            };
            let items = admin.ls(&filter).map_err(s)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&items).map_err(|e| e.to_string())?
                );
                return Ok(());
            }
            println!(
                "{:>10}  {:<16} {:<16} {:<8} {:>8}  {:<20} LAST ERROR",
                "ID", "HOOK", "ROUTE", "STATE", "ATTEMPTS", "RECEIVED"
            );
            for i in items {
                println!(
                    "{:>10}  {:<16} {:<16} {:<8} {:>8}  {:<20} {}",
                    i.id,
                    line(&i.hook),
                    line(i.route.as_deref().unwrap_or("-")),
                    i.state.as_str(),
                    i.attempts,
                    time(i.received_at),
                    line(&i.last_error.unwrap_or_default())
                );
            }
        }
        SpoolCommand::Show { id, json } => {
            let item = admin.show(id).map_err(s)?;
            let routes = admin.deliveries(id).map_err(s)?;
            let headers: Vec<(String, String)> = item
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).to_string()))
                .collect();
            let body = String::from_utf8_lossy(&item.body).to_string();
            if json {
                let v = serde_json::json!({
                    "id": item.id, "hook": item.hook, "dedup_id": item.dedup_id,
                    "state": item.state.as_str(), "attempts": item.attempts,
                    "received_at": time(item.received_at), "next_attempt": time(item.next_attempt),
                    "last_error": item.last_error, "lease_owner": item.lease_owner,
                    "headers": headers, "body": body,
                    "routes": routes.iter().map(|d| serde_json::json!({
                        "route": d.route, "state": d.state.as_str(), "attempts": d.attempts,
                        "next_attempt": time(d.next_attempt), "last_error": d.last_error,
                        "lease_owner": d.lease_owner,
                    })).collect::<Vec<_>>(),
                });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
                );
                return Ok(());
            }
            println!(
                "id:           {}\nhook:         {}\nstate:        {}\nattempts:     {}",
                item.id,
                line(&item.hook),
                item.state.as_str(),
                item.attempts
            );
            println!(
                "received:     {}\nnext attempt: {}",
                time(item.received_at),
                time(item.next_attempt)
            );
            println!(
                "dedup id:     {}\nlast error:   {}",
                line(&item.dedup_id.unwrap_or_default()),
                line(&item.last_error.unwrap_or_default())
            );
            println!(
                "lease owner:  {}",
                line(&item.lease_owner.unwrap_or_default())
            );
            for d in &routes {
                println!(
                    "route {}: {}, {} attempts, next {}, last error: {}",
                    line(d.route.as_deref().unwrap_or("-")),
                    d.state.as_str(),
                    d.attempts,
                    time(d.next_attempt),
                    line(d.last_error.as_deref().unwrap_or("-"))
                );
            }
            println!();
            for (n, v) in headers {
                println!("{}: {}", line(&n), line(&v));
            }
            println!("\n{}", text(&body));
        }
        SpoolCommand::Retry {
            mut ids,
            dead,
            filtered,
            hook,
            route,
            id_flags,
        } => {
            ids.extend(id_flags);
            if let (true, Some(hook)) = (filtered, hook.as_deref()) {
                retry_filtered(cfg, admin, hook)?;
            } else if dead {
                let n = admin
                    .retry_dead(hook.as_deref(), route.as_deref())
                    .map_err(s)?;
                println!("{n} dead deliveries are pending again");
            } else if ids.is_empty() {
                return Err("give item ids (or --id N), --dead, or --filtered --hook NAME".into());
            } else {
                for id in ids {
                    admin.retry(id, route.as_deref()).map_err(s)?;
                    match &route {
                        Some(r) => println!("{id} route {} is pending again", line(r)),
                        None => println!("{id} is pending again"),
                    }
                }
            }
        }
        SpoolCommand::Purge { state, older_than } => {
            let state: ItemState = state.into();
            if !matches!(state, ItemState::Done | ItemState::Dead) {
                return Err("purge takes --state done or --state dead".into());
            }
            let n = admin.purge(state, older_than).map_err(s)?;
            println!("purged {n} {} items", state.as_str());
        }
        SpoolCommand::Stats { json } => {
            let st = admin.stats().map_err(s)?;
            let total: u64 = st.depth.iter().map(|r| r.count).sum();
            if json {
                let mut v = serde_json::to_value(&st).map_err(|e| e.to_string())?;
                v["total"] = total.into();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
                );
                return Ok(());
            }
            println!(
                "spool:    {}\nschema:   v{}\nsize:     {} bytes{}",
                admin.describe(),
                st.schema_version,
                st.file_bytes,
                st.wal_bytes
                    .map(|w| format!(" (+ {w} WAL)"))
                    .unwrap_or_default()
            );
            println!("items:    {total}");
            if let Some(ms) = st.oldest_pending_age_ms {
                println!(
                    "oldest pending: {}",
                    humantime::format_duration(Duration::from_secs(ms / 1000))
                );
            }
            for r in &st.depth {
                println!(
                    "  {:<20} {:<16} {:<8} {}",
                    r.hook,
                    r.route.as_deref().unwrap_or("default"),
                    r.state.as_str(),
                    r.count
                );
            }
            for i in &st.instances {
                let node = i
                    .node
                    .as_deref()
                    .map(|n| format!(" node {}", line(n)))
                    .unwrap_or_default();
                let heartbeat = i
                    .heartbeat_age_ms
                    .map(|ms| format!(", heartbeat {} ago", ago(ms)))
                    .unwrap_or_default();
                let state = match (i.alive, i.heartbeat_age_ms) {
                    (true, _) => "running",
                    (false, None) => "gone",
                    (false, Some(_)) => "stale",
                };
                println!(
                    "instance {}{node} pid {} {state}{heartbeat}",
                    line(&i.id),
                    i.pid
                );
            }
        }
    }
    Ok(())
}

/// `spool retry --filtered --hook X`: a plain hook's filtered items become
/// pending; for a hook with routes, each filtered request gets a delivery
/// to every route whose `when` holds with the current config (the hook's
/// own `when` is not checked again), and one that matches none stays
/// filtered, which is said.
fn retry_filtered(cfg: &Config, admin: &Admin, hook: &str) -> Result<(), String> {
    let s = |e: crate::spool::SpoolError| e.to_string();
    let routed = cfg
        .hooks
        .iter()
        .map(|h| h.get_ref())
        .find(|h| h.name == hook && h.routed);
    let Some(h) = routed else {
        let n = admin.retry_filtered(hook).map_err(s)?;
        println!("{n} filtered items of {} are pending again", line(hook));
        return Ok(());
    };
    let (mut routed_n, mut still) = (0u64, 0u64);
    for item in admin.filtered(hook).map_err(s)? {
        let routes = super::explain::matching_routes(h, &item);
        if routes.is_empty() {
            still += 1;
            println!(
                "{} matches no route of {} with the current config; it stays filtered",
                item.id,
                line(hook)
            );
            continue;
        }
        admin.route_filtered(item.id, &routes).map_err(s)?;
        routed_n += 1;
        println!(
            "{} is pending again for routes {}",
            item.id,
            routes.join(", ")
        );
    }
    println!(
        "{routed_n} filtered items of {} are pending again; {still} match no route",
        line(hook)
    );
    Ok(())
}

/// A one-line field as it is safe to print on a terminal: every control
/// character escaped (`\n`, `\u{1b}`), so a sender's header or body cannot
/// move the cursor, rewrite the screen or fake another line of output.
fn line(s: &str) -> String {
    escape(s, |_| false)
}

/// A body: line breaks and tabs kept (JSON is often pretty-printed), every
/// other control character escaped.
fn text(s: &str) -> String {
    escape(s, |c| c == '\n' || c == '\t')
}

fn escape(s: &str, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && !keep(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// An age in whole seconds (sub-second ones as `0s`).
fn ago(ms: u64) -> String {
    humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
}

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(line("a\x1b[2Jb\r\nc"), "a\\u{1b}[2Jb\\r\\nc");
        assert_eq!(text("{\n\t\"a\": 1\x07}"), "{\n\t\"a\": 1\\u{7}}");
        assert_eq!(line("plain ünïcode"), "plain ünïcode");
        assert_eq!(line("\u{9b}31m"), "\\u{9b}31m");
    }
}
