//! `hookd explain`: why a request was (or would be) delivered or filtered.
//!
//! Reads a spooled item (`--id`) or a raw HTTP request saved to a file
//! (`--request`), and prints the hook's `when` tree with the value each
//! condition saw and its result, and the verification result.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use crate::config::{Config, HookConfig};
use crate::ingress::access::CLIENT_ADDR_HEADER;
use crate::ingress::rules::{self, Explained};
use crate::lifecycle::exit;
use crate::request::RequestView;
use crate::spool::Item;

#[derive(Args, Debug)]
pub(crate) struct ExplainArgs {
    /// The hook whose rules to apply.
    #[arg(long)]
    hook: String,
    /// A spooled item's id (as `hookd spool ls` shows it).
    #[arg(long, conflicts_with = "request", required_unless_present = "request")]
    id: Option<i64>,
    /// A file holding a raw HTTP request: request line, headers, blank line, body.
    #[arg(long)]
    request: Option<PathBuf>,
    /// The client address to assume for `--request` (request.remote_ip, cidr).
    #[arg(long, requires = "request")]
    remote_ip: Option<IpAddr>,
    #[arg(long)]
    json: bool,
}

/// A request as explain sees it, owned.
struct Loaded {
    source: String,
    method: String,
    headers: HeaderMap,
    query: Option<String>,
    remote_ip: Option<IpAddr>,
    body: Vec<u8>,
    verification: Verification,
}

#[derive(Debug, Serialize)]
struct Verification {
    ok: bool,
    detail: String,
}

#[derive(Serialize)]
struct Report<'a> {
    hook: &'a str,
    source: &'a str,
    verification: &'a Verification,
    /// Whether the request would be delivered (true when the hook has no `when`).
    matched: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    rules: Option<Explained>,
    /// A hook with `[[hook.route]]`: each route's tree and whether it
    /// matched (checked only once the hook's own `when` holds).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<RouteReport>,
}

#[derive(Serialize)]
struct RouteReport {
    name: String,
    matched: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    rules: Option<Explained>,
}

pub(crate) fn run(config: &Path, args: ExplainArgs) -> ExitCode {
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hookd: {e}");
            return ExitCode::from(exit::BAD_CONFIG);
        }
    };
    let Some(hook) = cfg
        .hooks
        .iter()
        .map(|h| h.get_ref())
        .find(|h| h.name == args.hook)
    else {
        eprintln!("hookd: {}: no hook named {:?}", config.display(), args.hook);
        return ExitCode::from(exit::BAD_CONFIG);
    };
    let loaded = match (&args.id, &args.request) {
        (Some(id), _) => from_spool(&cfg, hook, *id),
        (None, Some(file)) => from_file(&cfg, hook, file, args.remote_ip),
        (None, None) => Err("give --id N or --request FILE".into()),
    };
    let req = match loaded {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hookd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let view = RequestView {
        method: &req.method,
        headers: &req.headers,
        query: req.query.as_deref(),
        remote_ip: req.remote_ip,
        body: &req.body,
    };
    let fields = view.fields();
    let tree = hook.when.as_ref().map(|w| rules::explain(w, &fields));
    let hook_holds = tree.as_ref().is_none_or(|t| t.result);
    let routes: Vec<RouteReport> = if hook.routed {
        hook.routes
            .iter()
            .map(|r| {
                let rules = r.when.as_ref().map(|w| rules::explain(w, &fields));
                RouteReport {
                    name: r.name.clone(),
                    matched: hook_holds && rules.as_ref().is_none_or(|t| t.result),
                    rules,
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let report = Report {
        hook: &hook.name,
        source: &req.source,
        verification: &req.verification,
        matched: hook_holds && (!hook.routed || routes.iter().any(|r| r.matched)),
        rules: tree,
        routes,
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("hookd: {e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    print!("{}", render(&report, hook));
    ExitCode::SUCCESS
}

fn render(r: &Report<'_>, hook: &HookConfig) -> String {
    let mut out = format!(
        "hook:         {}\nrequest:      {}\nverification: {} ({})\n",
        r.hook,
        r.source,
        if r.verification.ok { "ok" } else { "FAILED" },
        r.verification.detail
    );
    let outcome = match (&r.rules, r.matched) {
        (None, true) => "no `when` rules: every verified request is delivered".to_string(),
        (Some(_), true) => "match: delivered".to_string(),
        (_, false) if hook.keep_filtered.is_zero() => format!(
            "no match: answered {} filtered, not kept (keep_filtered = 0)",
            hook.filtered_status
        ),
        (_, false) => format!(
            "no match: answered {} filtered, kept {} (hookd spool retry --filtered --hook {})",
            hook.filtered_status,
            humantime::format_duration(hook.keep_filtered),
            hook.name
        ),
    };
    out.push_str(&format!("rules:        {outcome}\n"));
    if let Some(tree) = &r.rules {
        rules::render(tree, &mut out);
    }
    for route in &r.routes {
        let verdict = if route.matched { "match" } else { "no match" };
        let why = if route.rules.is_none() {
            " (no `when`: every request the hook takes)"
        } else {
            ""
        };
        out.push_str(&format!("route {}:  {verdict}{why}\n", route.name));
        if let Some(tree) = &route.rules {
            rules::render(tree, &mut out);
        }
    }
    out
}

/// A spooled request's headers as received, and the client address hookd
/// stored among them.
fn stored_headers(item: &Item) -> (HeaderMap, Option<std::net::IpAddr>) {
    let mut headers = HeaderMap::new();
    let mut remote_ip = None;
    for (n, v) in &item.headers {
        if n.eq_ignore_ascii_case(CLIENT_ADDR_HEADER) {
            remote_ip = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_bytes(v),
        ) {
            headers.append(n, v);
        }
    }
    (headers, remote_ip)
}

/// The routes of `hook` whose `when` holds for spooled request `item`, with
/// the current config (the hook's own `when` is not checked: the request
/// was kept because it did not hold). For `spool retry --filtered`.
pub(crate) fn matching_routes(hook: &HookConfig, item: &Item) -> Vec<String> {
    let (headers, remote_ip) = stored_headers(item);
    let view = RequestView {
        method: "POST",
        headers: &headers,
        query: None,
        remote_ip,
        body: &item.body,
    };
    let fields = view.fields();
    hook.routes
        .iter()
        .filter(|r| r.when.as_ref().is_none_or(|w| rules::matches(w, &fields)))
        .map(|r| r.name.clone())
        .collect()
}

fn from_spool(cfg: &Config, hook: &HookConfig, id: i64) -> Result<Loaded, String> {
    let admin = super::spool::open_admin(cfg)?;
    let item = admin.show(id).map_err(|e| e.to_string())?;
    if item.hook != hook.name {
        return Err(format!(
            "item {id} belongs to hook {:?}, not {:?}",
            item.hook, hook.name
        ));
    }
    let (headers, remote_ip) = stored_headers(&item);
    Ok(Loaded {
        source: format!(
            "spool item {id} ({}, received {}; the query string is not stored)",
            item.state.as_str(),
            humantime::format_rfc3339_seconds(item.received_at)
        ),
        method: "POST".into(),
        headers,
        query: None,
        remote_ip,
        body: item.body.to_vec(),
        verification: Verification {
            ok: true,
            detail: "passed on arrival: only verified requests are spooled".into(),
        },
    })
}

fn from_file(
    cfg: &Config,
    hook: &HookConfig,
    file: &Path,
    remote_ip: Option<IpAddr>,
) -> Result<Loaded, String> {
    let raw = std::fs::read(file).map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
    let parsed = parse_raw(&raw).map_err(|e| format!("{}: {e}", file.display()))?;
    let routes = crate::ingress::routes::Ingress::routes(cfg)?;
    let verification = match routes.get(&hook.name) {
        None => Verification {
            ok: false,
            detail: "hook not built".into(),
        },
        Some(route) => {
            let scheme = crate::config::scheme_name(hook.verify.scheme);
            match route
                .verifier
                .verify(&parsed.headers, &parsed.body, SystemTime::now())
            {
                Ok(key) => Verification {
                    ok: true,
                    detail: format!("scheme {scheme}, key {key}"),
                },
                Err(e) => Verification {
                    ok: false,
                    detail: format!("scheme {scheme}: {} {}: {e}", e.status().as_u16(), e.code()),
                },
            }
        }
    };
    let source = format!(
        "file {} ({} {}{})",
        file.display(),
        parsed.method,
        parsed.target,
        remote_ip.map_or(String::new(), |ip| format!(", from {ip}"))
    );
    let query = parsed.target.split_once('?').map(|(_, q)| q.to_string());
    Ok(Loaded {
        source,
        method: parsed.method,
        headers: parsed.headers,
        query,
        remote_ip,
        body: parsed.body,
        verification,
    })
}

#[derive(Debug)]
struct RawRequest {
    method: String,
    target: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// A request as a client sends it (or `curl --trace` and proxies save it):
/// request line, header lines, an empty line, the body. Lines may end in
/// CRLF or LF. A Content-Length shorter than what follows cuts the body.
fn parse_raw(raw: &[u8]) -> Result<RawRequest, String> {
    let mut rest = raw;
    let mut next_line = |n: usize| -> Result<Option<String>, String> {
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let line = &rest[..end];
        rest = &rest[end + 1..];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        String::from_utf8(line.to_vec())
            .map(Some)
            .map_err(|_| format!("line {n}: not UTF-8"))
    };
    let first = next_line(1)?.ok_or("line 1: no request line (METHOD /path HTTP/1.1)")?;
    let mut words = first.split_whitespace();
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return Err(format!(
            "line 1: {first:?} is not a request line (METHOD /path HTTP/1.1)"
        ));
    };
    let (method, target) = (method.to_string(), target.to_string());
    let mut headers = HeaderMap::new();
    let mut n = 1;
    loop {
        n += 1;
        let line = next_line(n)?
            .ok_or_else(|| format!("line {n}: the headers end without an empty line"))?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("line {n}: {line:?} is not a header (Name: value)"));
        };
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("line {n}: {:?} is not a header name", name.trim()))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("line {n}: the value of {name} is not a header value"))?;
        headers.append(name, value);
    }
    let mut body = rest.to_vec();
    if let Some(v) = headers.get(http::header::CONTENT_LENGTH) {
        let len: usize = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or("Content-Length is not a number")?;
        if len > body.len() {
            return Err(format!(
                "Content-Length says {len} bytes, the file has {} after the headers",
                body.len()
            ));
        }
        body.truncate(len);
    }
    Ok(RawRequest {
        method,
        target,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_requests_parse_with_crlf_or_lf() {
        let r = parse_raw(
            b"POST /hooks/x?env=prod HTTP/1.1\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n{}trailing",
        )
        .unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, "/hooks/x?env=prod");
        assert_eq!(r.headers["x-a"], "1");
        assert_eq!(r.body, b"{}");
        let r = parse_raw(b"POST /hooks/x HTTP/1.1\nX-A: 1\n\na=b\n").unwrap();
        assert_eq!(r.body, b"a=b\n");
    }

    #[test]
    fn bad_raw_requests_name_the_line() {
        let err = |raw: &[u8]| parse_raw(raw).unwrap_err();
        assert!(err(b"").starts_with("line 1:"), "{}", err(b""));
        assert!(err(b"POST\n\n").starts_with("line 1:"));
        assert!(err(b"POST / HTTP/1.1\nX-A 1\n\n").starts_with("line 2:"));
        assert!(err(b"POST / HTTP/1.1\nX-A: 1\nBad Name: 2\n\n").starts_with("line 3:"));
        assert!(err(b"POST / HTTP/1.1\nX-A: 1\n").contains("without an empty line"));
        assert!(err(b"POST / HTTP/1.1\nContent-Length: 9\n\n{}").contains("Content-Length"));
    }
}
