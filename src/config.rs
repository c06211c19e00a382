//! The TOML configuration: types, defaults, and validation.
//!
//! Every check that can point at a place in the file runs inside deserialization
//! (through `try_from`/`deserialize_with`), so `toml` reports it with its line and
//! column. Checks that need the whole file (duplicate hook names, secrets) carry
//! the span of the hook they concern. Unknown keys are errors everywhere.

use std::collections::HashSet;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

pub(crate) use crate::delivery::args::{Check, Missing, Template};
pub(crate) use crate::ingress::access::Cidr;

/// Where `serve` and every other subcommand look when `--config` is not given.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "/etc/hookd/hookd.toml";

/// A configuration error, already rendered as `file:line:col: message`.
#[derive(Debug)]
pub(crate) struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default, rename = "hook")]
    pub hooks: Vec<Spanned<HookConfig>>,
    /// Set after loading: the file this came from.
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServerConfig {
    /// `host:port`, `[v6]:port` or `unix:/path`; used only when systemd passes none.
    pub listen: Vec<String>,
    #[serde(deserialize_with = "de_size")]
    pub max_body: u64,
    #[serde(deserialize_with = "de_duration")]
    pub read_timeout: Duration,
    /// Unix socket for `hookd status` and `hookd reload`.
    pub control_socket: Option<PathBuf>,
    /// Bytes of request bodies held at once across all connections; past it, 503.
    #[serde(deserialize_with = "de_size")]
    pub max_buffered: u64,
    /// Peers whose `X-Forwarded-For`/`Forwarded` headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Listeners that serve only `/metrics`, `/healthz` and `/readyz`.
    pub metrics_listen: Vec<String>,
    /// Also answer `/metrics` on the webhook listeners (off: they face the internet).
    pub metrics_on_webhook_listener: bool,
    /// `host:port` addresses served with TLS (needs `tls`); like `listen`, used
    /// only when systemd passes no sockets.
    pub listen_tls: Vec<String>,
    /// The certificate and key for `listen_tls` and for sockets named `https`.
    pub tls: Option<TlsConfig>,
    /// An answer the client has not taken in this time closes the connection,
    /// so a client that stops reading cannot hold a connection (or a stop).
    #[serde(deserialize_with = "de_nonzero_duration")]
    pub write_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    #[serde(deserialize_with = "de_nonzero_duration")]
    pub idle_timeout: Duration,
    /// Request line plus headers; larger requests get 431.
    #[serde(deserialize_with = "de_header_bytes")]
    pub max_header_bytes: u64,
    /// Open client connections at most; `None`: derived from `RLIMIT_NOFILE` at start.
    #[serde(deserialize_with = "de_opt_nonzero")]
    pub max_connections: Option<usize>,
    /// Open connections from one client address at most (peers in `trusted_proxies` are exempt).
    #[serde(deserialize_with = "de_nonzero")]
    pub max_connections_per_ip: usize,
}

/// Where a PEM file comes from: a path, or a systemd credential, so the
/// service user never needs read access to the certificate store itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PemSource {
    File(PathBuf),
    /// `$CREDENTIALS_DIRECTORY/NAME`, from `LoadCredential=NAME:/path`.
    Credential(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawTls")]
pub(crate) struct TlsConfig {
    /// The certificate chain, leaf first (certbot's fullchain.pem).
    pub cert: PemSource,
    /// The leaf's private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PemSource,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<PathBuf>,
    cert_credential: Option<String>,
    key_file: Option<PathBuf>,
    key_credential: Option<String>,
}

fn pem_source(
    what: &str,
    file: Option<PathBuf>,
    credential: Option<String>,
) -> Result<PemSource, String> {
    match (file, credential) {
        (Some(p), None) => Ok(PemSource::File(p)),
        (None, Some(name)) => {
            // A credential name is a file name inside $CREDENTIALS_DIRECTORY.
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(format!(
                    "tls.{what}_credential: {name:?} is not a credential name (the NAME of LoadCredential=NAME:/path)"
                ));
            }
            Ok(PemSource::Credential(name))
        }
        (Some(_), Some(_)) => Err(format!(
            "tls: give {what}_file or {what}_credential, not both"
        )),
        (None, None) => Err(format!("tls: needs {what}_file or {what}_credential")),
    }
}

impl TryFrom<RawTls> for TlsConfig {
    type Error = String;

    fn try_from(raw: RawTls) -> Result<Self, String> {
        Ok(TlsConfig {
            cert: pem_source("cert", raw.cert_file, raw.cert_credential)?,
            key: pem_source("key", raw.key_file, raw.key_credential)?,
        })
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec!["127.0.0.1:8080".to_string()],
            max_body: 1024 * 1024,
            read_timeout: Duration::from_secs(10),
            control_socket: None,
            listen_tls: Vec::new(),
            tls: None,
            max_buffered: 256 << 20,
            trusted_proxies: Vec::new(),
            metrics_listen: Vec::new(),
            metrics_on_webhook_listener: false,
            write_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_connections: None,
            max_connections_per_ip: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SpoolConfig {
    /// The SQLite file (the default backend).
    pub path: Option<PathBuf>,
    /// A PostgreSQL spool shared by several nodes: the URL itself, or a file
    /// or systemd credential holding it (so the password stays out of this
    /// file). At most one of `path`, `url`, `url_file`, `url_credential`.
    pub url: Option<InlineUrl>,
    pub url_file: Option<PathBuf>,
    pub url_credential: Option<String>,
    /// This node's name in the PostgreSQL spool (default: the host name).
    pub node: Option<String>,
    /// Longest a connect to PostgreSQL may take (TCP, TLS and login).
    #[serde(deserialize_with = "de_nonzero_duration")]
    pub connect_timeout: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub retain_done: Duration,
    /// Most items one group commit takes.
    pub max_batch: usize,
    /// How long a request waits for its commit before it is answered 503: a
    /// hung disk must not hang every sender's connection with it.
    #[serde(deserialize_with = "de_duration")]
    pub commit_timeout: Duration,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            path: None,
            url: None,
            url_file: None,
            url_credential: None,
            node: None,
            connect_timeout: Duration::from_secs(5),
            retain_done: Duration::from_secs(7 * 24 * 3600),
            max_batch: 1024,
            commit_timeout: Duration::from_secs(5),
        }
    }
}

/// `[spool] url` as written; its Debug never shows it (it may hold a password).
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub(crate) struct InlineUrl(pub String);

impl std::fmt::Debug for InlineUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InlineUrl(..)")
    }
}

/// Which spool the config asks for, with what it needs to open it.
#[derive(Debug, Clone)]
pub(crate) enum SpoolBackend {
    Sqlite(PathBuf),
    // Boxed: a parsed URL is ~340 bytes, made once per start.
    Postgres(Box<PgSettings>),
}

/// A PostgreSQL spool: the parsed URL (read from its file or credential;
/// its Debug shows no password), this node's name, the connect deadline.
#[derive(Clone, Debug)]
pub(crate) struct PgSettings {
    pub target: crate::spool::PgTarget,
    pub node: String,
    pub connect_timeout: Duration,
}

/// A node name: what `hookd status` shows and the leases of a dead process
/// are found by, so plain and short.
fn valid_node(n: &str) -> Result<(), String> {
    let ok = !n.is_empty()
        && n.len() <= 63
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok && n != "admin" && n != "import" {
        Ok(())
    } else {
        Err(format!(
            "spool.node {n:?}: give 1-63 letters, digits, '-', '_' or '.' (not \"admin\" or \"import\", which hookd's own commands use)"
        ))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ShutdownConfig {
    #[serde(deserialize_with = "de_duration")]
    pub grace: Duration,
    #[serde(rename = "hook")]
    pub hooks: Vec<ShutdownHookConfig>,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace: Duration::from_secs(300),
            hooks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShutdownHookConfig {
    pub name: String,
    #[serde(deserialize_with = "de_argv")]
    pub exec: Vec<String>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default = "default_hook_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
}

fn default_hook_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// journald under systemd, plain lines on a terminal.
    #[default]
    Auto,
    Plain,
    Json,
    Journald,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogConfig {
    pub format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive; `HOOKD_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Auto,
            level: "info".to_string(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HookConfig {
    #[serde(deserialize_with = "de_hook_name")]
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A provider's usual scheme, dedup key and handshake; explicit fields win.
    #[serde(default)]
    pub preset: Option<Preset>,
    /// As written; `Config::parse` merges the preset into [`HookConfig::verify`].
    #[serde(rename = "verify")]
    verify_given: Spanned<RawVerify>,
    /// The checks to run, with the preset applied.
    #[serde(skip)]
    pub verify: VerifyConfig,
    /// Shorthand for `dedup = { key = "header.<name>" }`.
    #[serde(rename = "dedup_header", default)]
    dedup_header_given: Option<String>,
    #[serde(rename = "dedup", default)]
    dedup_given: Option<Spanned<RawDedup>>,
    /// What identifies a delivery (a repeat answers 200 with the first id), with
    /// `dedup_header` and the preset's default folded in.
    #[serde(skip)]
    pub dedup: Option<DedupConfig>,
    /// For a scheme without a signed timestamp: the same signed content
    /// (body, and what else the signature covers) again within this long is
    /// a replay, answered as a duplicate even under a new delivery id.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub replay_window: Option<Duration>,
    /// What a newly spooled webhook is answered with; default 202 and the JSON id.
    #[serde(default)]
    pub respond: Option<RespondConfig>,
    /// A plain hook's action, `concurrency`, `ordered` and `retry`, as
    /// written; `Config::parse` makes them route `default` in [`HookConfig::routes`].
    #[serde(rename = "action", default)]
    action_given: Option<Action>,
    #[serde(rename = "concurrency", default)]
    concurrency_given: Option<usize>,
    #[serde(rename = "ordered", default)]
    ordered_given: Option<bool>,
    #[serde(rename = "retry", default)]
    retry_given: Option<RetryConfig>,
    /// `[[hook.route]]` as written.
    #[serde(rename = "route", default)]
    routes_given: Vec<Spanned<RawRoute>>,
    /// Where each request goes: the routes of `[[hook.route]]` in the order
    /// written, or, for a plain hook, one route `default` with its action.
    #[serde(skip)]
    pub routes: Vec<RouteConfig>,
    /// The hook has `[[hook.route]]`: its requests are stored once with one
    /// delivery per matched route (`false`: the v4 layout, one row).
    #[serde(skip)]
    pub routed: bool,
    #[serde(default, deserialize_with = "de_opt_size")]
    pub max_body: Option<u64>,
    /// Answer 415 unless the body is `application/json`, 400 unless it parses.
    #[serde(default)]
    pub require_json: bool,
    /// Client addresses allowed to call this hook; others get 403.
    pub allow_ips: Option<Vec<Cidr>>,
    /// Like `allow_ips`, one block per line (`#` comments), read at start.
    pub allow_ips_file: Option<PathBuf>,
    /// As written; `Config::parse` checks it into [`HookConfig::when`], each
    /// error at its own condition's line.
    #[serde(rename = "when", default)]
    when_given: Option<Spanned<Vec<Spanned<RawRule>>>>,
    /// Conditions that must all hold for the request to be delivered; `None`
    /// delivers every request. Checked after verification and dedup.
    #[serde(skip)]
    pub when: Option<Vec<Rule>>,
    /// The answer's status when `when` does not match (2xx: the sender must
    /// not retry a request that was received).
    #[serde(default = "default_filtered_status", deserialize_with = "de_2xx")]
    pub filtered_status: u16,
    /// How long a request `when` did not match is kept (state `filtered`,
    /// for `spool retry --filtered`); zero keeps none.
    #[serde(default = "default_keep_filtered", deserialize_with = "de_duration")]
    pub keep_filtered: Duration,
}

/// One delivery target of a hook: its own action, retries and order.
#[derive(Debug, Clone)]
pub(crate) struct RouteConfig {
    /// `[a-z0-9_-]{1,64}`, unique in its hook; `default` for a plain hook.
    pub name: String,
    /// Checked after the hook's own `when`; `None`: every request.
    pub when: Option<Vec<Rule>>,
    pub action: Action,
    pub concurrency: usize,
    pub ordered: bool,
    pub retry: RetryConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    #[serde(default)]
    when: Option<Spanned<Vec<Spanned<RawRule>>>>,
    action: Action,
    #[serde(default = "one")]
    concurrency: usize,
    #[serde(default)]
    ordered: bool,
    #[serde(default)]
    retry: RetryConfig,
    /// Shorthand for `action.timeout`.
    #[serde(default, deserialize_with = "de_opt_duration")]
    timeout: Option<Duration>,
}

/// Whether `name` is a route name: `[a-z0-9_-]{1,64}` (it is a metrics
/// label and a header value).
fn valid_route_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `route "x": ` in an error about a route of a hook with routes; nothing
/// for a plain hook (whose fields are the hook's own).
fn route_prefix(h: &HookConfig, r: &RouteConfig) -> String {
    if h.routed {
        format!("route {:?}: ", r.name)
    } else {
        String::new()
    }
}

fn default_filtered_status() -> u16 {
    200
}

fn default_keep_filtered() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn de_2xx<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let v = u16::deserialize(d)?;
    if !(200..300).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "filtered_status {v} must be 2xx: the request was received, and anything else makes the sender retry it"
        )));
    }
    Ok(v)
}

/// Checks a `when` list as written; `Err` carries the offset of the
/// condition (or list) at fault.
fn resolve_when(given: &Spanned<Vec<Spanned<RawRule>>>) -> Result<Vec<Rule>, (usize, String)> {
    if given.get_ref().is_empty() {
        return Err((
            given.span().start,
            "when = [] matches nothing and holds every request back; give at least one condition, or leave `when` out to deliver every request".into(),
        ));
    }
    given.get_ref().iter().map(resolve_rule).collect()
}

fn resolve_rule(raw: &Spanned<RawRule>) -> Result<Rule, (usize, String)> {
    raw.get_ref().resolve().map_err(|e| (raw.span().start, e))?
}

/// One node of a `when` list: a condition on a field, or `any`/`all`/`not`
/// over other nodes.
#[derive(Debug, Clone)]
pub(crate) enum Rule {
    Test {
        field: Field,
        test: Test,
    },
    /// At least one holds.
    Any(Vec<Rule>),
    /// Every one holds (the `when` list itself is one; this nests it, e.g.
    /// under `any`).
    All(Vec<Rule>),
    /// The inner node does not hold (a missing field's `eq` is false, so its
    /// `not` is true).
    Not(Box<Rule>),
}

/// A request value a rule reads, as `request.rs` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field(pub String);

impl Field {
    /// `payload.<dot.path>`, `header.<Name>`, `query.<name>`, `request.method`
    /// or `request.remote_ip`.
    pub(crate) fn parse(text: &str) -> Result<Field, String> {
        let bad = |why: &str| Err(format!("field {text:?}: {why}"));
        let Some((scope, rest)) = text.split_once('.') else {
            return bad("write payload.<path>, header.<Name>, query.<name>, request.method or request.remote_ip");
        };
        match scope {
            "payload" if rest.split('.').any(str::is_empty) => {
                bad("empty step in the path (write payload.a.b.0.c)")
            }
            "header" if http::HeaderName::from_bytes(rest.as_bytes()).is_err() => {
                bad("not a header name")
            }
            "query" if rest.is_empty() => bad("needs a parameter name"),
            "payload" | "header" | "query" => Ok(Field(text.to_string())),
            "request" if rest == "method" || rest == "remote_ip" => Ok(Field(text.to_string())),
            "request" => bad("request.method and request.remote_ip are the request fields"),
            _ => bad("write payload.<path>, header.<Name>, query.<name>, request.method or request.remote_ip"),
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a condition checks of its field's value, compared as text (see
/// `request::as_text`): `eq = 42` holds for `42` and for `"42"`.
#[derive(Debug, Clone)]
pub(crate) enum Test {
    Eq(String),
    Ne(String),
    In(Vec<String>),
    /// Anchored: the whole value must match.
    Matches(regex::Regex),
    /// A substring of a string, or an element of an array.
    Contains(String),
    /// `true`: the field is present; `false`: it is absent.
    Exists(bool),
    /// The value is an IP address inside one of the blocks.
    Cidr(Vec<Cidr>),
}

impl Test {
    /// The operator's name as written in the config.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Test::Eq(_) => "eq",
            Test::Ne(_) => "ne",
            Test::In(_) => "in",
            Test::Matches(_) => "matches",
            Test::Contains(_) => "contains",
            Test::Exists(_) => "exists",
            Test::Cidr(_) => "cidr",
        }
    }
}

const OPERATORS: &str =
    "eq, ne, in, matches, contains, exists, cidr (or any = [..], all = [..], not = {..})";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    field: Option<String>,
    eq: Option<Scalar>,
    ne: Option<Scalar>,
    #[serde(rename = "in")]
    in_: Option<Vec<Scalar>>,
    matches: Option<String>,
    contains: Option<Scalar>,
    exists: Option<bool>,
    cidr: Option<Vec<Cidr>>,
    any: Option<Vec<Spanned<RawRule>>>,
    all: Option<Vec<Spanned<RawRule>>>,
    not: Option<Box<Spanned<RawRule>>>,
}

/// A value to compare with: a string, number or boolean, kept as text.
#[derive(Debug, Clone)]
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(Scalar(s)),
            toml::Value::Integer(i) => Ok(Scalar(i.to_string())),
            toml::Value::Float(f) => Ok(Scalar(f.to_string())),
            toml::Value::Boolean(b) => Ok(Scalar(b.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "compare with a string, number or boolean, not a {}",
                other.type_str()
            ))),
        }
    }
}

impl RawRule {
    /// The outer `Err` is this node's own fault; the inner one a nested
    /// node's, with its offset.
    #[allow(clippy::type_complexity)]
    fn resolve(&self) -> Result<Result<Rule, (usize, String)>, String> {
        let raw = self.clone();
        let mut tests = Vec::new();
        if let Some(v) = raw.eq {
            tests.push(Test::Eq(v.0));
        }
        if let Some(v) = raw.ne {
            tests.push(Test::Ne(v.0));
        }
        if let Some(v) = raw.in_ {
            if v.is_empty() {
                return Err("in = [] can never hold; list the values".into());
            }
            tests.push(Test::In(v.into_iter().map(|s| s.0).collect()));
        }
        if let Some(re) = raw.matches {
            let anchored = regex::Regex::new(&format!("^(?:{re})$"))
                .map_err(|e| format!("matches = {re:?} is not a regular expression: {e}"))?;
            tests.push(Test::Matches(anchored));
        }
        if let Some(v) = raw.contains {
            tests.push(Test::Contains(v.0));
        }
        if let Some(v) = raw.exists {
            tests.push(Test::Exists(v));
        }
        if let Some(v) = raw.cidr {
            if v.is_empty() {
                return Err("cidr = [] can never hold; list the address blocks".into());
            }
            tests.push(Test::Cidr(v));
        }
        let nested = usize::from(raw.any.is_some())
            + usize::from(raw.all.is_some())
            + usize::from(raw.not.is_some());
        match (tests.len(), nested) {
            (0, 0) => Err(format!("a condition needs one operator: {OPERATORS}")),
            (1, 0) => {
                let test = tests.remove(0);
                let field = match (raw.field, &test) {
                    (Some(f), _) => Field::parse(&f)?,
                    (None, Test::Cidr(_)) => Field("request.remote_ip".into()),
                    (None, t) => {
                        return Err(format!(
                            "{} needs field = \"…\" (payload.<path>, header.<Name>, query.<name>, request.method, request.remote_ip)",
                            t.name()
                        ))
                    }
                };
                Ok(Ok(Rule::Test { field, test }))
            }
            (0, 1) if raw.field.is_some() => {
                Err("any, all and not take no field: put it in the conditions inside".into())
            }
            (0, 1) => match (raw.any, raw.all, raw.not) {
                (Some(any), None, None) if any.is_empty() => {
                    Err("any = [] can never hold; give at least one condition".into())
                }
                (None, Some(all), None) if all.is_empty() => {
                    Err("all = [] checks nothing; give at least one condition".into())
                }
                (Some(list), None, None) => Ok(list
                    .iter()
                    .map(resolve_rule)
                    .collect::<Result<Vec<_>, _>>()
                    .map(Rule::Any)),
                (None, Some(list), None) => Ok(list
                    .iter()
                    .map(resolve_rule)
                    .collect::<Result<Vec<_>, _>>()
                    .map(Rule::All)),
                (None, None, Some(not)) => {
                    Ok(resolve_rule(&not).map(|r| Rule::Not(Box::new(r))))
                }
                _ => Err("give one of any, all or not in one table".into()),
            },
            _ => Err(format!(
                "one operator per condition ({OPERATORS}); put several in the when list, which must all hold"
            )),
        }
    }
}

impl HookConfig {
    /// The client blocks allowed to call this hook (`allow_ips`, or
    /// `allow_ips_file` read now); `None` allows everyone.
    pub(crate) fn allow_list(&self) -> Result<Option<Vec<Cidr>>, String> {
        if let Some(list) = &self.allow_ips {
            return Ok(Some(list.clone()));
        }
        let Some(p) = &self.allow_ips_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(p)
            .map_err(|e| format!("allow_ips_file {}: {e}", p.display()))?;
        crate::ingress::access::parse_cidr_file(p, &text).map(Some)
    }
}

fn yes() -> bool {
    true
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Scheme {
    Github,
    Slack,
    Stripe,
    /// Generic HMAC: algorithm, encoding, header, prefix, optional timestamp.
    Hmac,
    /// The older spelling of `hmac` with SHA-256, hex and an optional `sha256=`.
    HmacSha256,
    StandardWebhooks,
    /// A shared token in a named header, e.g. GitLab's `X-Gitlab-Token`.
    Token,
    Basic,
    Bearer,
    #[default]
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Algorithm {
    Sha1,
    #[default]
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Encoding {
    #[default]
    Hex,
    Base64,
}

/// Providers hookd knows by name; see `ingress::presets` for what each expands to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Preset {
    Github,
    Stripe,
    Slack,
    SlackEvents,
    Gitlab,
    Shopify,
    StandardWebhooks,
    Meta,
    Twitch,
    Zoom,
}

/// How a hook checks its callers, after the preset is applied. Secrets come from
/// files (not writable or readable by others), environment variables or systemd
/// credentials, never from this file.
#[derive(Debug, Clone, Default)]
pub(crate) struct VerifyConfig {
    pub scheme: Scheme,
    /// Newest first by convention: the log's `key_index` counts in this order.
    pub secrets: Vec<SecretSource>,
    /// The signature header (`hmac`, `hmac-sha256`) or the token header (`token`).
    pub header: Option<String>,
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    /// Text before the signature in its header, e.g. `sha256=`.
    pub prefix: Option<String>,
    /// What is signed, e.g. `{timestamp}.{body}`; default the body alone.
    pub signed: Option<String>,
    pub timestamp_header: Option<String>,
    /// How far a signed timestamp may be from the server's clock.
    pub tolerance: Duration,
    /// Meta's subscription handshake token.
    pub verify_token: Option<SecretSource>,
}

impl VerifyConfig {
    /// Whether the signature covers a timestamp judged against `tolerance`.
    pub(crate) fn timestamped(&self) -> bool {
        match self.scheme {
            Scheme::Slack | Scheme::Stripe | Scheme::StandardWebhooks => true,
            Scheme::Hmac | Scheme::HmacSha256 => self.timestamp_header.is_some(),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecretSource {
    File(PathBuf),
    Env(String),
    /// A file in `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).
    Credential(String),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(p) => write!(f, "file {}", p.display()),
            SecretSource::Env(v) => write!(f, "environment variable {v}"),
            SecretSource::Credential(n) => write!(f, "credential {n}"),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    scheme: Option<Scheme>,
    secret_file: Option<PathBuf>,
    #[serde(default)]
    secret_files: Vec<PathBuf>,
    secret_env: Option<String>,
    #[serde(default)]
    secret_envs: Vec<String>,
    secret_credential: Option<String>,
    #[serde(default)]
    secret_credentials: Vec<String>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    header: Option<String>,
    algorithm: Option<Algorithm>,
    encoding: Option<Encoding>,
    prefix: Option<String>,
    signed: Option<String>,
    timestamp_header: Option<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    tolerance: Option<Duration>,
    verify_token_file: Option<PathBuf>,
    verify_token_credential: Option<String>,
}

const SECRET_FIELDS: &str = "secret_file or secret_env (or secret_files, secret_envs, secret_credential, secret_credentials)";

impl RawVerify {
    /// Every secret in key order: files, then environment variables, then credentials.
    fn secrets(&self) -> Vec<SecretSource> {
        let files = self.secret_file.iter().chain(&self.secret_files);
        let files = files
            .chain(&self.token_file)
            .cloned()
            .map(SecretSource::File);
        let envs = self.secret_env.iter().chain(&self.secret_envs);
        let envs = envs.chain(&self.token_env).cloned().map(SecretSource::Env);
        let creds = self
            .secret_credential
            .iter()
            .chain(&self.secret_credentials);
        files
            .chain(envs)
            .chain(creds.cloned().map(SecretSource::Credential))
            .collect()
    }

    /// Applies `preset` under what was written, then checks that the fields fit the scheme.
    fn resolve(&self, preset: Option<Preset>) -> Result<VerifyConfig, String> {
        let d = preset.map(crate::ingress::presets::defaults);
        // A scheme written over the preset's drops the preset's signature fields:
        // they describe the other scheme.
        let d = d.filter(|d| self.scheme.is_none_or(|s| s == d.scheme));
        let scheme = match (self.scheme, &d) {
            (Some(s), _) => s,
            (None, Some(d)) => d.scheme,
            (None, None) => {
                return Err("verify: needs scheme = \"…\" (or a preset = \"…\" on the hook)".into())
            }
        };
        let or = |given: &Option<String>, dflt: Option<&str>| {
            given.clone().or_else(|| dflt.map(str::to_string))
        };
        let header = or(&self.header, d.as_ref().and_then(|d| d.header));
        let prefix = or(&self.prefix, d.as_ref().and_then(|d| d.prefix));
        let signed = or(&self.signed, d.as_ref().and_then(|d| d.signed));
        let timestamp_header = or(
            &self.timestamp_header,
            d.as_ref().and_then(|d| d.timestamp_header),
        );
        let algorithm = self.algorithm.or(d.as_ref().map(|d| d.algorithm));
        let encoding = self.encoding.or(d.as_ref().map(|d| d.encoding));
        let tolerance = self.tolerance.or(d.as_ref().and_then(|d| d.tolerance));
        let secrets = self.secrets();
        let name = scheme_name(scheme);
        let uses_token = self.token_file.is_some() || self.token_env.is_some();
        match scheme {
            Scheme::None if !secrets.is_empty() => {
                return Err("verify: scheme \"none\" takes no secret".into())
            }
            Scheme::None => {}
            Scheme::Bearer | Scheme::Token if secrets.is_empty() => {
                return Err(format!(
                    "verify: scheme \"{name}\" needs token_file or token_env (or any of {SECRET_FIELDS})"
                ))
            }
            Scheme::Bearer | Scheme::Token => {}
            _ if secrets.is_empty() => {
                return Err(format!("verify: scheme \"{name}\" needs {SECRET_FIELDS}"))
            }
            _ if uses_token => {
                return Err(format!("verify: token_file/token_env are for schemes \"bearer\" and \"token\"; use {SECRET_FIELDS}"))
            }
            _ => {}
        }
        let generic = matches!(scheme, Scheme::Hmac | Scheme::HmacSha256);
        let takes_header = generic || scheme == Scheme::Token;
        match (&header, takes_header) {
            (None, true) => {
                return Err(format!(
                    "verify: scheme \"{name}\" needs header = \"<header name>\""
                ))
            }
            (Some(h), true) => valid_header(h)?,
            (Some(_), false) => {
                return Err(
                    "verify: header is only for schemes \"hmac\", \"hmac-sha256\" and \"token\""
                        .into(),
                )
            }
            (None, false) => {}
        }
        if !generic {
            for (given, field) in [
                (self.algorithm.is_some(), "algorithm"),
                (self.encoding.is_some(), "encoding"),
                (self.prefix.is_some(), "prefix"),
                (self.signed.is_some(), "signed"),
                (self.timestamp_header.is_some(), "timestamp_header"),
            ] {
                if given {
                    return Err(format!(
                        "verify: {field} is only for scheme \"hmac\" (this one is \"{name}\")"
                    ));
                }
            }
        }
        if scheme == Scheme::HmacSha256 && algorithm.is_some_and(|a| a != Algorithm::Sha256) {
            return Err(
                "verify: scheme \"hmac-sha256\" is SHA-256; use scheme \"hmac\" for another algorithm"
                    .into(),
            );
        }
        if let Some(h) = &timestamp_header {
            valid_header(h)?;
        }
        if let Some(t) = &signed {
            crate::ingress::verify::parse_template(t, timestamp_header.is_some())
                .map_err(|e| format!("verify: signed = {t:?}: {e}"))?;
        }
        if timestamp_header.is_some()
            && !signed.as_deref().is_some_and(|t| t.contains("{timestamp}"))
        {
            return Err("verify: timestamp_header needs signed = \"…{timestamp}…\": an unsigned timestamp proves nothing".into());
        }
        let timed = matches!(
            scheme,
            Scheme::Slack | Scheme::Stripe | Scheme::StandardWebhooks
        ) || timestamp_header.is_some();
        if self.tolerance.is_some() && !timed {
            return Err("verify: tolerance is only for schemes \"slack\", \"stripe\", \"standard-webhooks\" and \"hmac\" with timestamp_header".into());
        }
        let verify_token = match (&self.verify_token_file, &self.verify_token_credential) {
            (Some(_), Some(_)) => {
                return Err(
                    "verify: give verify_token_file or verify_token_credential, not both".into(),
                )
            }
            (Some(p), None) => Some(SecretSource::File(p.clone())),
            (None, Some(n)) => Some(SecretSource::Credential(n.clone())),
            (None, None) => None,
        };
        if verify_token.is_some() != (preset == Some(Preset::Meta)) {
            return Err(if verify_token.is_some() {
                "verify: verify_token_file/verify_token_credential are for preset \"meta\"".into()
            } else {
                "verify: preset \"meta\" needs verify_token_file or verify_token_credential (the token you typed into Meta's dashboard)".into()
            });
        }
        for s in &secrets {
            if let SecretSource::Credential(n) = s {
                valid_credential(n)?;
            }
        }
        if let Some(SecretSource::Credential(n)) = &verify_token {
            valid_credential(n)?;
        }
        Ok(VerifyConfig {
            scheme,
            secrets,
            header,
            algorithm: algorithm.unwrap_or_default(),
            encoding: encoding.unwrap_or_default(),
            prefix,
            signed,
            timestamp_header,
            tolerance: tolerance.unwrap_or(Duration::from_secs(300)),
            verify_token,
        })
    }
}

fn valid_header(h: &str) -> Result<(), String> {
    http::HeaderName::from_bytes(h.as_bytes())
        .map(drop)
        .map_err(|_| format!("verify: header {h:?} is not a valid header name"))
}

/// A credential is a file name in one directory: no path, nothing hidden.
fn valid_credential(n: &str) -> Result<(), String> {
    if n.is_empty() || n.contains('/') || n.starts_with('.') {
        return Err(format!(
            "verify: credential {n:?} must be a plain name as in LoadCredential=NAME:…"
        ));
    }
    Ok(())
}

pub(crate) fn scheme_name(s: Scheme) -> &'static str {
    match s {
        Scheme::Github => "github",
        Scheme::Slack => "slack",
        Scheme::Stripe => "stripe",
        Scheme::Hmac => "hmac",
        Scheme::HmacSha256 => "hmac-sha256",
        Scheme::StandardWebhooks => "standard-webhooks",
        Scheme::Token => "token",
        Scheme::Basic => "basic",
        Scheme::Bearer => "bearer",
        Scheme::None => "none",
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDedup {
    key: String,
    #[serde(default, deserialize_with = "de_opt_duration")]
    window: Option<Duration>,
}

/// What makes two requests the same delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DedupConfig {
    pub key: DedupKey,
    /// How long a key is remembered; `None` is as long as the spool keeps the item.
    pub window: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DedupKey {
    /// The first of these headers that is present (Standard Webhooks has two spellings).
    Header(Vec<String>),
    /// A field of the JSON body, by path; a number indexes an array.
    Payload(Vec<String>),
}

impl DedupKey {
    /// `header.<Name>` or `payload.<dot.path>`.
    pub(crate) fn parse(text: &str) -> Result<DedupKey, String> {
        if let Some(h) = text.strip_prefix("header.") {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(format!("dedup key {text:?}: {h:?} is not a header name"));
            }
            return Ok(DedupKey::Header(vec![h.to_string()]));
        }
        if let Some(p) = text.strip_prefix("payload.") {
            let path: Vec<String> = p.split('.').map(str::to_string).collect();
            if path.iter().any(String::is_empty) {
                return Err(format!(
                    "dedup key {text:?}: empty step in the path (write payload.a.b.0.c)"
                ));
            }
            return Ok(DedupKey::Payload(path));
        }
        Err(format!(
            "dedup key {text:?}: write header.<Name> or payload.<dot.path>"
        ))
    }
}

impl fmt::Display for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DedupKey::Header(names) => {
                let mut names = names.iter();
                write!(f, "header.{}", names.next().map_or("", |n| n.as_str()))?;
                names.try_for_each(|n| write!(f, " (or header.{n})"))
            }
            DedupKey::Payload(path) => write!(f, "payload.{}", path.join(".")),
        }
    }
}

/// The answer to a newly spooled webhook, for providers that want a set status or body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawRespond")]
pub(crate) struct RespondConfig {
    pub status: u16,
    pub body: String,
    pub content_type: String,
    /// `status`, `body` or `content_type` was given: answer with them instead
    /// of the default 202 and JSON id.
    pub fixed: bool,
    /// `wait`: how long the answer waits for the first attempt's result.
    pub wait: Option<Duration>,
}

/// The longest `respond.wait`: providers give up on an answer after about
/// 10 s (GitHub) to 30 s, and the connection is held meanwhile.
pub(crate) const MAX_RESPOND_WAIT: Duration = Duration::from_secs(25);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRespond {
    status: Option<u16>,
    body: Option<String>,
    content_type: Option<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    wait: Option<Duration>,
}

fn default_respond_status() -> u16 {
    202
}

fn default_respond_type() -> String {
    "text/plain".into()
}

impl TryFrom<RawRespond> for RespondConfig {
    type Error = String;

    fn try_from(raw: RawRespond) -> Result<Self, String> {
        let fixed = raw.status.is_some() || raw.body.is_some() || raw.content_type.is_some();
        let status = raw.status.unwrap_or_else(default_respond_status);
        let content_type = raw.content_type.unwrap_or_else(default_respond_type);
        // Only a 2xx says "received": anything else would make the provider retry
        // a webhook that is already durable.
        if !(200..300).contains(&status) {
            return Err(format!("respond.status {status} must be 2xx"));
        }
        if http::HeaderValue::from_str(&content_type).is_err() {
            return Err(format!(
                "respond.content_type {content_type:?} is not a header value"
            ));
        }
        if let Some(w) = raw.wait {
            if w.is_zero() || w > MAX_RESPOND_WAIT {
                return Err(format!(
                    "respond.wait {} must be more than zero and at most {}",
                    humantime::format_duration(w),
                    humantime::format_duration(MAX_RESPOND_WAIT)
                ));
            }
        }
        Ok(RespondConfig {
            status,
            body: raw.body.unwrap_or_default(),
            content_type,
            fixed,
            wait: raw.wait,
        })
    }
}

impl HookConfig {
    /// Applies the preset and the dedup shorthand. `Err` carries the span to point at.
    fn resolve(&mut self) -> Result<(), (usize, String)> {
        let vspan = self.verify_given.span().start;
        self.verify = self
            .verify_given
            .get_ref()
            .resolve(self.preset)
            .map_err(|e| (vspan, e))?;
        let preset_key = self
            .preset
            .and_then(|p| crate::ingress::presets::defaults(p).dedup);
        self.dedup = match (&self.dedup_header_given, &self.dedup_given) {
            (Some(_), Some(d)) => {
                return Err((
                    d.span().start,
                    "give dedup_header or dedup, not both (dedup_header = \"X\" is dedup = { key = \"header.X\" })".into(),
                ))
            }
            (Some(h), None) => {
                let key = DedupKey::parse(&format!("header.{h}"))
                    .map_err(|e| (vspan, format!("dedup_header: {e}")))?;
                Some(DedupConfig { key, window: None })
            }
            (None, Some(d)) => {
                let key = DedupKey::parse(&d.get_ref().key)
                    .map_err(|e| (d.span().start, format!("dedup: {e}")))?;
                Some(DedupConfig {
                    key,
                    window: d.get_ref().window,
                })
            }
            (None, None) => preset_key.map(|key| DedupConfig { key, window: None }),
        };
        if self
            .dedup
            .as_ref()
            .and_then(|d| d.window)
            .is_some_and(|w| w.is_zero())
        {
            return Err((vspan, "dedup.window must be more than zero".into()));
        }
        if let Some(w) = self.replay_window {
            if w.is_zero() {
                return Err((vspan, "replay_window must be more than zero".into()));
            }
            if self.verify.timestamped() {
                return Err((
                    vspan,
                    format!(
                        "replay_window: scheme \"{}\" signs a timestamp and already refuses a replay within its tolerance (verify.tolerance); remove replay_window",
                        scheme_name(self.verify.scheme)
                    ),
                ));
            }
            if self.verify.scheme == Scheme::None {
                return Err((
                    vspan,
                    "replay_window needs a verify scheme: with scheme \"none\" anyone can send a new body".into(),
                ));
            }
        }
        self.when = self.when_given.as_ref().map(resolve_when).transpose()?;
        self.resolve_routes(vspan)
    }

    /// A plain `action` becomes route `default`; `[[hook.route]]` entries are
    /// checked (names, `when`, timeout). Giving both is an error.
    fn resolve_routes(&mut self, vspan: usize) -> Result<(), (usize, String)> {
        let Some(first) = self.routes_given.first() else {
            let Some(action) = self.action_given.clone() else {
                return Err((
                    vspan,
                    "needs an action (action = { forward = \"http://…\" } or exec) or [[hook.route]] entries".into(),
                ));
            };
            self.routed = false;
            self.routes = vec![RouteConfig {
                name: crate::spool::DEFAULT_ROUTE.to_string(),
                when: None,
                action,
                concurrency: self.concurrency_given.unwrap_or(1),
                ordered: self.ordered_given.unwrap_or(false),
                retry: self.retry_given.clone().unwrap_or_default(),
            }];
            return Ok(());
        };
        let plain = [
            (self.action_given.is_some(), "action"),
            (self.concurrency_given.is_some(), "concurrency"),
            (self.ordered_given.is_some(), "ordered"),
            (self.retry_given.is_some(), "retry"),
        ];
        if let Some((_, field)) = plain.iter().find(|(given, _)| *given) {
            return Err((
                first.span().start,
                format!(
                    "hook {:?}: give {field} in each [[hook.route]], or a plain action and no routes, not both",
                    self.name
                ),
            ));
        }
        let mut routes: Vec<RouteConfig> = Vec::with_capacity(self.routes_given.len());
        for given in &self.routes_given {
            let at = given.span().start;
            let raw = given.get_ref();
            if !valid_route_name(&raw.name) {
                return Err((
                    at,
                    format!(
                        "route name {:?}: use 1 to 64 of a-z, 0-9, _ and -",
                        raw.name
                    ),
                ));
            }
            if routes.iter().any(|r| r.name == raw.name) {
                return Err((
                    at,
                    format!(
                        "route {:?} is defined twice in hook {:?}",
                        raw.name, self.name
                    ),
                ));
            }
            let mut action = raw.action.clone();
            if let Some(t) = raw.timeout {
                if t.is_zero() {
                    return Err((at, "route timeout must be more than zero".into()));
                }
                action.timeout = t;
            }
            let prefix =
                |(offset, msg): (usize, String)| (offset, format!("route {:?}: {msg}", raw.name));
            routes.push(RouteConfig {
                name: raw.name.clone(),
                when: raw
                    .when
                    .as_ref()
                    .map(resolve_when)
                    .transpose()
                    .map_err(prefix)?,
                action,
                concurrency: raw.concurrency,
                ordered: raw.ordered,
                retry: raw.retry.clone(),
            });
        }
        self.routed = true;
        self.routes = routes;
        Ok(())
    }

    /// The route named `name`, if the hook has one.
    pub(crate) fn route(&self, name: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|r| r.name == name)
    }
}

/// What a hook does with each item.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawAction")]
pub(crate) struct Action {
    pub kind: ActionKind,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub(crate) enum ActionKind {
    /// POST to a local upstream. `headers`: which stored request headers to pass on
    /// (case-insensitive); empty means all of them but `Authorization`.
    Forward { url: String, headers: Vec<String> },
    /// Run a command (no shell), body on stdin.
    Exec(ExecSettings),
}

/// An `exec` action's command and what it gets from the request.
#[derive(Debug, Clone)]
pub(crate) struct ExecSettings {
    /// The program, as written (never a placeholder).
    pub program: String,
    /// The arguments after the program, each one argv element.
    pub args: Vec<Template>,
    /// `env = { NAME = "…" }`, set after hookd's own `HOOKD_*` variables.
    pub env: Vec<(String, Template)>,
    /// The command's working directory; default hookd's.
    pub cwd: Option<PathBuf>,
    /// Also write the body to a private file named in `HOOKD_BODY_FILE`.
    pub body_file: bool,
    /// What a placeholder whose field the request lacks does.
    pub missing: Missing,
    /// `validate = { field = "regex" }`: checked before the command runs.
    pub validate: Vec<Check>,
}

impl ExecSettings {
    /// `argv` with no environment, working directory or body file.
    pub(crate) fn new(argv: &[String]) -> Result<ExecSettings, String> {
        let Some((program, rest)) = argv.split_first().filter(|(p, _)| !p.is_empty()) else {
            return Err("action.exec: needs a program, e.g. [\"/usr/local/bin/deploy\"]".into());
        };
        if program.contains('{') {
            return Err(format!(
                "action.exec: the program {program:?} must be a fixed path; placeholders go in the arguments"
            ));
        }
        let args = rest
            .iter()
            .map(|a| Template::parse(a).map_err(|e| format!("action.exec: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(ExecSettings {
            program: program.clone(),
            args,
            env: Vec::new(),
            cwd: None,
            body_file: false,
            missing: Missing::default(),
            validate: Vec::new(),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    forward: Option<String>,
    exec: Option<Vec<String>>,
    #[serde(default)]
    headers: Vec<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    timeout: Option<Duration>,
    cwd: Option<PathBuf>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    body_file: bool,
    missing: Option<Missing>,
    #[serde(default)]
    validate: std::collections::BTreeMap<String, String>,
}

impl RawAction {
    /// The fields that only an `exec` action has, given to a forward.
    fn exec_only_given(&self) -> Option<&'static str> {
        if self.cwd.is_some() {
            Some("cwd")
        } else if !self.env.is_empty() {
            Some("env")
        } else if self.body_file {
            Some("body_file")
        } else if self.missing.is_some() {
            Some("missing")
        } else if !self.validate.is_empty() {
            Some("validate")
        } else {
            None
        }
    }

    fn exec_settings(self, argv: &[String]) -> Result<ExecSettings, String> {
        let mut s = ExecSettings::new(argv)?;
        if let Some(cwd) = self.cwd {
            if !cwd.is_absolute() {
                return Err(format!(
                    "action.cwd: {} must be an absolute path",
                    cwd.display()
                ));
            }
            s.cwd = Some(cwd);
        }
        for (name, value) in self.env {
            let bad = name.is_empty()
                || name.contains(['=', '\0'])
                || name.starts_with(|c: char| c.is_ascii_digit());
            if bad {
                return Err(format!("action.env: {name:?} is not a variable name"));
            }
            if name.starts_with("HOOKD_") {
                return Err(format!(
                    "action.env: {name}: HOOKD_* variables are hookd's own; choose another name"
                ));
            }
            let t = Template::parse(&value).map_err(|e| format!("action.env.{name}: {e}"))?;
            s.env.push((name, t));
        }
        s.body_file = self.body_file;
        s.missing = self.missing.unwrap_or_default();
        for (field, pattern) in &self.validate {
            s.validate.push(Check::new(field, pattern)?);
        }
        Ok(s)
    }
}

impl TryFrom<RawAction> for Action {
    type Error = String;

    fn try_from(raw: RawAction) -> Result<Self, String> {
        let timeout = raw.timeout;
        let kind = match (raw.forward.clone(), raw.exec.clone()) {
            (Some(url), None) => {
                if let Some(field) = raw.exec_only_given() {
                    return Err(format!("action.{field} is only for exec"));
                }
                let uri: http::Uri = url
                    .parse()
                    .map_err(|e| format!("action.forward: {url:?} is not a URL: {e}"))?;
                if uri.scheme_str() != Some("http") || uri.host().is_none() {
                    return Err(format!(
                        "action.forward: {url:?} must be an http:// URL with a host"
                    ));
                }
                ActionKind::Forward {
                    url,
                    headers: raw.headers.clone(),
                }
            }
            (None, Some(argv)) => {
                if !raw.headers.is_empty() {
                    return Err("action.headers is only for forward".into());
                }
                ActionKind::Exec(raw.exec_settings(&argv)?)
            }
            (Some(_), Some(_)) => return Err("action: give forward or exec, not both".into()),
            (None, None) => {
                return Err("action: needs forward = \"http://…\" or exec = [\"…\"]".into())
            }
        };
        let timeout = timeout.unwrap_or(match kind {
            ActionKind::Forward { .. } => Duration::from_secs(30),
            ActionKind::Exec { .. } => Duration::from_secs(600),
        });
        if timeout.is_zero() {
            return Err("action.timeout must be more than zero".into());
        }
        Ok(Action { kind, timeout })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RetryConfig {
    pub max_attempts: u32,
    #[serde(deserialize_with = "de_duration")]
    pub backoff: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub max_backoff: Duration,
}

/// The default schedule rides out a day of the app being down: waits double
/// from 1 s to a 1 h cap (12 steps, 68 min in all), then 47 waits of 1 h.
/// Jitter draws each wait between half its step and the step, so the 60th
/// attempt comes between 24 h 4 min and 48 h 8 min after the first (about
/// 36 h on average); only then is the item dead. `delivery::retry` tests it.
impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 60,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3600),
        }
    }
}

impl Config {
    /// Reads, parses and validates `path`, loading no secrets.
    pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        Config::parse(&text, path)
    }

    /// Parses `text` as if read from `path` (which only names it in errors).
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim_end().to_string();
            match e.span() {
                Some(span) => at(path, text, span.start, &msg),
                None => ConfigError(format!("{}: {msg}", path.display())),
            }
        })?;
        cfg.source = path.to_path_buf();
        for hook in &mut cfg.hooks {
            let h = hook.get_mut();
            h.resolve()
                .map_err(|(offset, msg)| at(path, text, offset, &msg))?;
        }
        let mut seen = HashSet::new();
        for hook in &cfg.hooks {
            let h = hook.get_ref();
            if !seen.insert(h.name.clone()) {
                return Err(at(
                    path,
                    text,
                    hook.span().start,
                    &format!("hook {:?} is defined twice", h.name),
                ));
            }
            if let Some(r) = h.routes.iter().find(|r| r.concurrency == 0) {
                return Err(at(
                    path,
                    text,
                    hook.span().start,
                    &format!(
                        "hook {:?}: {}concurrency must be at least 1",
                        h.name,
                        route_prefix(h, r)
                    ),
                ));
            }
            if h.allow_ips.is_some() && h.allow_ips_file.is_some() {
                return Err(at(
                    path,
                    text,
                    hook.span().start,
                    &format!(
                        "hook {:?}: give allow_ips or allow_ips_file, not both",
                        h.name
                    ),
                ));
            }
            let max_body = h.max_body.unwrap_or(cfg.server.max_body);
            if max_body > cfg.server.max_buffered {
                return Err(at(
                    path,
                    text,
                    hook.span().start,
                    &format!(
                        "hook {:?}: max_body {max_body} is larger than server.max_buffered {}; no such body could ever be read",
                        h.name, cfg.server.max_buffered
                    ),
                ));
            }
            if let Some(r) = h.routes.iter().find(|r| r.retry.max_attempts == 0) {
                return Err(at(
                    path,
                    text,
                    hook.span().start,
                    &format!(
                        "hook {:?}: {}retry.max_attempts must be at least 1",
                        h.name,
                        route_prefix(h, r)
                    ),
                ));
            }
        }
        if cfg.server.listen.is_empty() && cfg.server.listen_tls.is_empty() {
            return Err(ConfigError(format!(
                "{}: server.listen: give at least one address in listen or listen_tls (used when systemd passes no socket)",
                path.display()
            )));
        }
        for addr in &cfg.server.listen {
            ListenAddr::parse(addr)
                .map_err(|e| ConfigError(format!("{}: server.listen: {e}", path.display())))?;
        }
        for addr in &cfg.server.listen_tls {
            match ListenAddr::parse(addr) {
                Ok(ListenAddr::Tcp(_)) => {}
                Ok(ListenAddr::Unix(_)) => {
                    return Err(ConfigError(format!(
                        "{}: server.listen_tls: {addr:?}: TLS is for TCP addresses; put unix sockets in listen",
                        path.display()
                    )))
                }
                Err(e) => {
                    return Err(ConfigError(format!(
                        "{}: server.listen_tls: {e}",
                        path.display()
                    )))
                }
            }
            if cfg.server.listen.contains(addr) {
                return Err(ConfigError(format!(
                    "{}: server.listen_tls: {addr:?} is also in server.listen",
                    path.display()
                )));
            }
        }
        for addr in &cfg.server.metrics_listen {
            ListenAddr::parse(addr).map_err(|e| {
                ConfigError(format!("{}: server.metrics_listen: {e}", path.display()))
            })?;
            if cfg.server.listen.contains(addr) {
                return Err(ConfigError(format!(
                    "{}: server.metrics_listen: {addr:?} is also in server.listen; give the metrics listener its own address",
                    path.display()
                )));
            }
        }
        if !cfg.server.listen_tls.is_empty() && cfg.server.tls.is_none() {
            return Err(ConfigError(format!(
                "{}: server.listen_tls needs server.tls = {{ cert_file = \"…\", key_file = \"…\" }}",
                path.display()
            )));
        }
        if cfg.server.max_body > cfg.server.max_buffered {
            return Err(ConfigError(format!(
                "{}: server.max_body {} is larger than server.max_buffered {}; no such body could ever be read",
                path.display(),
                cfg.server.max_body,
                cfg.server.max_buffered
            )));
        }
        let sources = [
            cfg.spool.path.is_some(),
            cfg.spool.url.is_some(),
            cfg.spool.url_file.is_some(),
            cfg.spool.url_credential.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err(ConfigError(format!(
                "{}: spool: give one of path (SQLite), url, url_file or url_credential (PostgreSQL)",
                path.display()
            )));
        }
        if let Some(url) = &cfg.spool.url {
            crate::spool::PgTarget::parse(&url.0)
                .map_err(|e| ConfigError(format!("{}: spool.url: {e}", path.display())))?;
        }
        if let Some(name) = &cfg.spool.url_credential {
            valid_credential(name).map_err(|e| {
                ConfigError(format!("{}: spool.url_credential: {e}", path.display()))
            })?;
        }
        if let Some(node) = &cfg.spool.node {
            valid_node(node).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        }
        if cfg.spool.commit_timeout.is_zero() {
            return Err(ConfigError(format!(
                "{}: spool.commit_timeout must be more than zero",
                path.display()
            )));
        }
        if cfg.shutdown.grace.is_zero() {
            return Err(ConfigError(format!(
                "{}: shutdown.grace must be more than zero",
                path.display()
            )));
        }
        Ok(cfg)
    }

    /// Reads every hook's secrets, so a bad secret fails at start, not at the first request.
    pub(crate) fn load_secrets(&self) -> Result<Vec<HookSecrets>, ConfigError> {
        self.hooks
            .iter()
            .map(|h| {
                let h = h.get_ref();
                let err = |e: String| {
                    ConfigError(format!("{}: hook {:?}: {e}", self.source.display(), h.name))
                };
                let keys = h
                    .verify
                    .secrets
                    .iter()
                    .map(read_secret)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(err)?;
                let verify_token = h
                    .verify
                    .verify_token
                    .as_ref()
                    .map(read_secret)
                    .transpose()
                    .map_err(err)?;
                Ok(HookSecrets { keys, verify_token })
            })
            .collect()
    }

    /// The environment variables secrets are read from; `exec` children never see them.
    pub(crate) fn secret_env_vars(&self) -> Vec<String> {
        self.hooks
            .iter()
            .flat_map(|h| &h.get_ref().verify.secrets)
            .filter_map(|s| match s {
                SecretSource::Env(v) => Some(v.clone()),
                _ => None,
            })
            .collect()
    }

    /// Things that are allowed but probably wrong, for `check-config` to say.
    pub(crate) fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let loopback = self.server.listen.iter().find(
            |a| matches!(ListenAddr::parse(a), Ok(ListenAddr::Tcp(sa)) if sa.ip().is_loopback()),
        );
        if let (Some(addr), true) = (loopback, self.server.trusted_proxies.is_empty()) {
            for h in self.hooks.iter().map(|h| h.get_ref()) {
                if h.allow_ips.is_some() || h.allow_ips_file.is_some() {
                    out.push(format!(
                        "{}: hook {:?} has allow_ips, but {addr} is a loopback listener and server.trusted_proxies is empty: behind a reverse proxy every request comes from the proxy's address; add the proxy to server.trusted_proxies",
                        self.source.display(),
                        h.name
                    ));
                }
            }
        }
        // ingress/server.rs raises it: a keep-alive connection must outlive
        // one slow request's read, or hyper would close it mid-request.
        let floor = self.server.read_timeout + Duration::from_secs(1);
        if self.server.idle_timeout < floor {
            out.push(format!(
                "{}: server.idle_timeout = {} is below server.read_timeout + 1s; hookd uses {} (raise idle_timeout, or lower read_timeout)",
                self.source.display(),
                humantime::format_duration(self.server.idle_timeout),
                humantime::format_duration(floor)
            ));
        }
        // A repeat is recognised by finding its item, and retention purges a
        // done item after retain_done: a longer window cannot be kept.
        for h in self.hooks.iter().map(|h| h.get_ref()) {
            let Some(window) = h.dedup.as_ref().and_then(|d| d.window) else {
                continue;
            };
            if window > self.spool.retain_done {
                out.push(format!(
                    "{}: hook {:?}: dedup.window = {} is longer than spool.retain_done = {}; the window ends when the delivered item is purged (raise retain_done to keep it)",
                    self.source.display(),
                    h.name,
                    humantime::format_duration(window),
                    humantime::format_duration(self.spool.retain_done)
                ));
            }
        }
        out
    }

    /// Whether the spool is PostgreSQL (`spool.url`, `url_file` or
    /// `url_credential`) rather than the SQLite file.
    pub(crate) fn spool_is_postgres(&self) -> bool {
        let s = &self.spool;
        s.url.is_some() || s.url_file.is_some() || s.url_credential.is_some()
    }

    /// The spool to open: PostgreSQL with its URL read from where the config
    /// says (a file or credential must not be world-readable), or the SQLite
    /// file of [`Config::spool_path`].
    pub(crate) fn spool_backend(&self) -> Result<SpoolBackend, ConfigError> {
        let s = &self.spool;
        let err = |e: String| ConfigError(format!("{}: {e}", self.source.display()));
        let (field, url) = if let Some(u) = &s.url {
            ("spool.url", u.0.clone())
        } else {
            let (field, src) = match (&s.url_file, &s.url_credential) {
                (Some(p), _) => ("spool.url_file", SecretSource::File(p.clone())),
                (None, Some(n)) => ("spool.url_credential", SecretSource::Credential(n.clone())),
                (None, None) => return Ok(SpoolBackend::Sqlite(self.spool_path())),
            };
            let bytes = read_secret(&src).map_err(|e| err(format!("{field}: {e}")))?;
            let url = String::from_utf8(bytes).map_err(|_| err(format!("{field}: not UTF-8")))?;
            (field, url)
        };
        let target =
            crate::spool::PgTarget::parse(&url).map_err(|e| err(format!("{field}: {e}")))?;
        let node = match &s.node {
            Some(n) => n.clone(),
            None => {
                let host = nix::unistd::gethostname().map_err(|e| {
                    err(format!(
                        "spool.node is not set and the host name is unreadable: {e}"
                    ))
                })?;
                let host = host.to_string_lossy();
                // The first label: what an operator calls the machine.
                let short = host.split('.').next().unwrap_or_default().to_string();
                valid_node(&short).map_err(|e| {
                    err(format!(
                        "{e}; the host name {host:?} does not make one, set spool.node"
                    ))
                })?;
                short
            }
        };
        Ok(SpoolBackend::Postgres(Box::new(PgSettings {
            target,
            node,
            connect_timeout: s.connect_timeout,
        })))
    }

    /// What `check-config` calls the spool without reading any secret.
    pub(crate) fn spool_summary(&self) -> String {
        let s = &self.spool;
        if let Some(u) = &s.url {
            crate::spool::PgTarget::parse(&u.0)
                .map(|t| t.name().to_string())
                .unwrap_or_else(|_| "postgres".into())
        } else if let Some(p) = &s.url_file {
            format!("postgres (URL in {})", p.display())
        } else if let Some(n) = &s.url_credential {
            format!("postgres (URL in credential {n})")
        } else {
            self.spool_path().display().to_string()
        }
    }

    /// The spool file: `spool.path` (relative to `$STATE_DIRECTORY` when systemd
    /// gives one), else `$STATE_DIRECTORY/spool.db`, else `./hookd.db`.
    pub(crate) fn spool_path(&self) -> PathBuf {
        let state_dir = std::env::var_os("STATE_DIRECTORY")
            .map(|s| PathBuf::from(s.to_string_lossy().split(':').next().unwrap_or_default()));
        match (&self.spool.path, state_dir) {
            (Some(p), Some(dir)) if p.is_relative() => dir.join(p),
            (Some(p), _) => p.clone(),
            (None, Some(dir)) => dir.join("spool.db"),
            (None, None) => PathBuf::from("hookd.db"),
        }
    }

    /// The control socket: `server.control_socket`, else `$RUNTIME_DIRECTORY/control.sock`,
    /// else `hookd.sock` beside the spool file (in the working directory for
    /// a PostgreSQL spool).
    pub(crate) fn control_socket_path(&self) -> PathBuf {
        if let Some(p) = &self.server.control_socket {
            return p.clone();
        }
        if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY") {
            let dir = dir
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or_default()
                .to_string();
            return PathBuf::from(dir).join("control.sock");
        }
        if self.spool_is_postgres() {
            return PathBuf::from("hookd.sock");
        }
        let spool = self.spool_path();
        spool.with_file_name("hookd.sock")
    }
}

fn at(path: &Path, text: &str, offset: usize, msg: &str) -> ConfigError {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    ConfigError(format!("{}:{line}:{col}: {msg}", path.display()))
}

/// One hook's secret bytes: its keys in `VerifyConfig::secrets` order, and Meta's
/// handshake token.
#[derive(Clone, Default)]
pub(crate) struct HookSecrets {
    pub keys: Vec<Vec<u8>>,
    pub verify_token: Option<Vec<u8>>,
}

impl fmt::Debug for HookSecrets {
    // Hand-written so that secret bytes never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookSecrets")
            .field("keys", &self.keys.len())
            .field("verify_token", &self.verify_token.is_some())
            .finish()
    }
}

/// Reads a secret, trimmed of surrounding whitespace. A file (a credential too)
/// must be neither readable by others nor writable by group or others: the first
/// leaks the key, the second lets someone else choose it.
pub(crate) fn read_secret(src: &SecretSource) -> Result<Vec<u8>, String> {
    let path = match src {
        SecretSource::Env(var) => {
            return match std::env::var_os(var) {
                Some(v) if !v.is_empty() => Ok(v.to_string_lossy().trim().as_bytes().to_vec()),
                _ => Err(format!("environment variable {var} is not set or empty")),
            }
        }
        SecretSource::File(p) => p.clone(),
        SecretSource::Credential(name) => match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir).join(name),
            _ => {
                return Err(format!(
                    "credential {name}: CREDENTIALS_DIRECTORY is not set (add LoadCredential={name}:/path to the unit)"
                ))
            }
        },
    };
    let what = match src {
        SecretSource::Credential(n) => format!("credential {n} ({})", path.display()),
        _ => format!("secret file {}", path.display()),
    };
    let meta = std::fs::metadata(&path).map_err(|e| format!("{what}: {e}"))?;
    let mode = meta.permissions().mode();
    if mode & 0o004 != 0 {
        return Err(format!("{what} is world-readable; chmod o-r it"));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "{what} is writable by group or others; chmod go-w it"
        ));
    }
    let text = std::fs::read(&path).map_err(|e| format!("{what}: {e}"))?;
    let trimmed = text.trim_ascii().to_vec();
    if trimmed.is_empty() {
        return Err(format!("{what} is empty"));
    }
    Ok(trimmed)
}

/// A listening address from `server.listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListenAddr {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl ListenAddr {
    pub(crate) fn parse(s: &str) -> Result<ListenAddr, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(format!("{s:?}: unix: needs a path"));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(p)));
        }
        s.parse()
            .map(ListenAddr::Tcp)
            .map_err(|_| format!("{s:?} is neither host:port (an IP address) nor unix:/path"))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Parses `512`, `64KiB`, `1MiB`, `2MB`, `1GiB`.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 1MiB, 64KiB, 1000000)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "{s:?}: unknown size unit {other:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum SizeRepr {
        Int(u64),
        Text(String),
    }
    match SizeRepr::deserialize(d)? {
        SizeRepr::Int(n) => Ok(n),
        SizeRepr::Text(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

fn de_opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_size(d).map(Some)
}

/// The longest duration any field takes. Durations are added to clocks
/// (`Instant`, `SystemTime`), doubled for the drain's extension and sent to
/// systemd as `u64` microseconds; a bound far below all of those keeps every
/// such sum from overflowing (a panic at run time) while no real setting
/// comes near it.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    let v = humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!("{s:?} is not a duration (e.g. 30s, 5m, 7d): {e}"))
    })?;
    if v > MAX_DURATION {
        return Err(serde::de::Error::custom(format!(
            "{s:?} is longer than the most hookd takes, 100 years"
        )));
    }
    Ok(v)
}

fn de_nonzero_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v = de_duration(d)?;
    if v.is_zero() {
        return Err(serde::de::Error::custom("must be more than zero"));
    }
    Ok(v)
}

fn de_nonzero<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(serde::de::Error::custom("must be at least 1")),
        n => Ok(n),
    }
}

fn de_opt_nonzero<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    de_nonzero(d).map(Some)
}

/// hyper needs room for at least a request line and a few headers.
const MIN_HEADER_BYTES: u64 = 1024;
/// Beyond this a header block is an attack, not a webhook.
const MAX_HEADER_BYTES: u64 = 16 << 20;

fn de_header_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = de_size(d)?;
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&n) {
        return Err(serde::de::Error::custom(format!(
            "must be between {MIN_HEADER_BYTES} bytes and 16MiB"
        )));
    }
    Ok(n)
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

fn de_argv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    if v.is_empty() || v[0].is_empty() {
        return Err(serde::de::Error::custom(
            "exec needs a program, e.g. [\"/usr/bin/true\"]",
        ));
    }
    Ok(v)
}

fn de_hook_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !ok {
        return Err(serde::de::Error::custom(format!(
            "hook name {s:?}: use 1-64 of a-z A-Z 0-9 - _ . (it becomes /hooks/<name>)"
        )));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("t.toml")).map_err(|e| e.0)
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.server.listen, vec!["127.0.0.1:8080"]);
        assert_eq!(c.server.max_body, 1 << 20);
        assert_eq!(c.shutdown.grace, Duration::from_secs(300));
        assert!(c.hooks.is_empty());
    }

    #[test]
    fn unknown_key_names_line_and_field() {
        let e = parse("[server]\nlisten = [\"127.0.0.1:1\"]\nlisten_port = 3\n").unwrap_err();
        assert!(e.starts_with("t.toml:3:1:"), "{e}");
        assert!(e.contains("listen_port"), "{e}");
    }

    #[test]
    fn bad_duration_names_line() {
        let e = parse("[shutdown]\ngrace = \"soon\"\n").unwrap_err();
        assert!(e.starts_with("t.toml:2:"), "{e}");
        assert!(e.contains("not a duration"), "{e}");
    }

    #[test]
    fn hook_action_must_be_one_kind() {
        let text = "[[hook]]\nname = \"a\"\nverify = { scheme = \"none\" }\naction = { forward = \"http://127.0.0.1:1/\", exec = [\"/bin/true\"] }\n";
        let e = parse(text).unwrap_err();
        assert!(e.starts_with("t.toml:4:"), "{e}");
        assert!(e.contains("not both"), "{e}");
    }

    #[test]
    fn scheme_needs_secret() {
        let text = "[[hook]]\nname = \"a\"\nverify = { scheme = \"github\" }\naction = { exec = [\"/bin/true\"] }\n";
        let e = parse(text).unwrap_err();
        assert!(e.starts_with("t.toml:3:"), "{e}");
        assert!(e.contains("secret_file or secret_env"), "{e}");
    }

    #[test]
    fn duplicate_hook_is_an_error() {
        let hook = "[[hook]]\nname = \"a\"\nverify = { scheme = \"none\" }\naction = { exec = [\"/bin/true\"] }\n";
        let e = parse(&format!("{hook}{hook}")).unwrap_err();
        assert!(e.starts_with("t.toml:5:"), "{e}");
        assert!(e.contains("defined twice"), "{e}");
    }

    /// A hook whose `when` (and other rule keys) is `extra`, written from line 5 on.
    fn hook_when(extra: &str) -> Result<Config, String> {
        parse(&format!(
            "[[hook]]\nname = \"a\"\nverify = {{ scheme = \"none\" }}\naction = {{ exec = [\"/bin/true\"] }}\n{extra}\n"
        ))
    }

    #[test]
    fn when_rules_parse_with_defaults() {
        let c = hook_when(
            "when = [\n  { field = \"payload.ref\", eq = \"refs/heads/main\" },\n  { any = [{ cidr = [\"10.0.0.0/8\"] }, { not = { field = \"header.X-A\", exists = true } }] },\n]",
        )
        .unwrap();
        let h = c.hooks[0].get_ref();
        let when = h.when.as_ref().unwrap();
        assert_eq!(when.len(), 2);
        assert!(matches!(&when[0], Rule::Test { field, test: Test::Eq(v) }
            if field.0 == "payload.ref" && v == "refs/heads/main"));
        assert!(matches!(&when[1], Rule::Any(a) if matches!(&a[0],
            Rule::Test { field, test: Test::Cidr(_) } if field.0 == "request.remote_ip")));
        assert_eq!(h.filtered_status, 200);
        assert_eq!(h.keep_filtered, Duration::from_secs(86_400));
        let c = hook_when("filtered_status = 202\nkeep_filtered = \"0\"").unwrap();
        let h = c.hooks[0].get_ref();
        assert!(h.when.is_none());
        assert_eq!((h.filtered_status, h.keep_filtered), (202, Duration::ZERO));
    }

    const ROUTED: &str = "[[hook]]\nname = \"gh\"\nverify = { scheme = \"none\" }\n";

    #[test]
    fn a_plain_action_is_one_route_named_default() {
        let c = parse(&format!(
            "{ROUTED}action = {{ forward = \"http://127.0.0.1:9/\" }}\nconcurrency = 3\nordered = true\n"
        ))
        .unwrap();
        let h = c.hooks[0].get_ref();
        assert!(!h.routed);
        assert_eq!(h.routes.len(), 1);
        let r = &h.routes[0];
        assert_eq!(
            (r.name.as_str(), r.concurrency, r.ordered),
            ("default", 3, true)
        );
        assert!(r.when.is_none());
    }

    #[test]
    fn routes_carry_their_own_action_rules_retries_and_order() {
        let c = parse(&format!(
            "{ROUTED}\n[[hook.route]]\nname = \"deploy\"\nwhen = [{{ field = \"payload.ref\", eq = \"main\" }}]\n\
             action = {{ exec = [\"/bin/true\"] }}\nordered = true\ntimeout = \"5s\"\nretry = {{ max_attempts = 3 }}\n\
             \n[[hook.route]]\nname = \"notify\"\naction = {{ forward = \"http://127.0.0.1:9/\" }}\nconcurrency = 4\n"
        ))
        .unwrap();
        let h = c.hooks[0].get_ref();
        assert!(h.routed);
        let names: Vec<&str> = h.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["deploy", "notify"]);
        let deploy = h.route("deploy").unwrap();
        assert!(deploy.ordered && deploy.when.is_some());
        assert_eq!(deploy.action.timeout, Duration::from_secs(5));
        assert_eq!(deploy.retry.max_attempts, 3);
        let notify = h.route("notify").unwrap();
        assert_eq!((notify.concurrency, notify.ordered), (4, false));
        assert_eq!(
            notify.retry.max_attempts,
            RetryConfig::default().max_attempts
        );
    }

    #[test]
    fn bad_routes_are_errors_naming_their_line() {
        let route = |name: &str| {
            format!("[[hook.route]]\nname = \"{name}\"\naction = {{ exec = [\"/bin/true\"] }}\n")
        };
        let table: Vec<(String, &str, &str)> = vec![
            (
                format!(
                    "{ROUTED}action = {{ exec = [\"/bin/true\"] }}\n{}",
                    route("a")
                ),
                "t.toml:5:",
                "not both",
            ),
            (
                format!("{ROUTED}concurrency = 2\n{}", route("a")),
                "t.toml:5:",
                "give concurrency in each [[hook.route]]",
            ),
            (
                format!("{ROUTED}{}", route("Deploy")),
                "t.toml:4:",
                "route name \"Deploy\"",
            ),
            (
                format!("{ROUTED}{}", route(&"x".repeat(65))),
                "t.toml:4:",
                "1 to 64",
            ),
            (
                format!("{ROUTED}{}{}", route("a"), route("a")),
                "t.toml:7:",
                "route \"a\" is defined twice",
            ),
            (
                format!("{ROUTED}{}when = []\n", route("a")),
                "t.toml:7:",
                "route \"a\": when = [] matches nothing",
            ),
            (ROUTED.to_string(), "t.toml:", "needs an action"),
        ];
        for (text, at, what) in table {
            let e = parse(&text).unwrap_err();
            assert!(e.starts_with(at), "{text}\n=> {e}");
            assert!(e.contains(what), "{text}\n=> {e}");
        }
    }

    #[test]
    fn bad_when_rules_are_errors_naming_their_line() {
        let table: &[(&str, &str, &str)] = &[
            ("when = []", "t.toml:5:", "when = [] matches nothing"),
            (
                "when = [\n  { field = \"payload.ref\", equals = \"x\" },\n]",
                "t.toml:6:",
                "unknown field `equals`",
            ),
            (
                "when = [\n  { field = \"payload.ref\" },\n]",
                "t.toml:6:",
                "needs one operator",
            ),
            (
                "when = [\n  { field = \"payload.ref\", eq = \"a\", ne = \"b\" },\n]",
                "t.toml:6:",
                "one operator per condition",
            ),
            ("when = [{ eq = \"a\" }]", "t.toml:5:", "eq needs field"),
            (
                "when = [{ field = \"body.ref\", eq = \"a\" }]",
                "t.toml:5:",
                "field \"body.ref\"",
            ),
            (
                "when = [{ field = \"payload.a..b\", eq = \"a\" }]",
                "t.toml:5:",
                "empty step",
            ),
            (
                "when = [{ field = \"header.X Y\", eq = \"a\" }]",
                "t.toml:5:",
                "not a header name",
            ),
            (
                "when = [{ field = \"request.path\", eq = \"a\" }]",
                "t.toml:5:",
                "request.method and request.remote_ip",
            ),
            (
                "when = [{ field = \"payload.a\", matches = \"(\" }]",
                "t.toml:5:",
                "not a regular expression",
            ),
            ("when = [{ any = [] }]", "t.toml:5:", "any = [] can never hold"),
            ("when = [{ all = [] }]", "t.toml:5:", "all = [] checks nothing"),
            (
                "when = [{ field = \"payload.a\", in = [] }]",
                "t.toml:5:",
                "in = [] can never hold",
            ),
            ("when = [{ cidr = [\"nope\"] }]", "t.toml:5:", "nope"),
            (
                "when = [\n\n  { any = [{ not = { field = \"payload.a\", gt = 1 } }] },\n]",
                "t.toml:7:",
                "unknown field `gt`",
            ),
            (
                "when = [{ field = \"payload.a\", any = [{ cidr = [\"::1\"] }] }]",
                "t.toml:5:",
                "take no field",
            ),
            (
                "when = [{ field = \"payload.a\", eq = [1] }]",
                "t.toml:5:",
                "string, number or boolean",
            ),
            (
                "when = [\n  { field = \"payload.a\", eq = 1 },\n  { any = [\n    { field = \"payload.a\", matches = \"(\" },\n  ] },\n]",
                "t.toml:8:",
                "not a regular expression",
            ),
            ("filtered_status = 404", "t.toml:5:", "must be 2xx"),
            ("keep_filtered = \"a while\"", "t.toml:5:", "not a duration"),
        ];
        let mut wrong = Vec::new();
        for (extra, at, says) in table {
            let e = hook_when(extra).unwrap_err();
            if !e.starts_with(at) || !e.contains(says) {
                wrong.push(format!("{extra}\n  gave {e}\n  want {at} … {says}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn shipped_examples_parse() {
        for f in ["examples/hookd.toml", "examples/quickstart.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Every `toml` block of README's "Providers" section, as one config.
    #[test]
    fn readme_provider_configs_parse() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("\n## Providers\n")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("README has a Providers section");
        let blocks: Vec<&str> = section
            .split("```toml\n")
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .collect();
        assert!(blocks.len() >= 11, "{} toml blocks", blocks.len());
        let c = parse(&blocks.concat()).unwrap_or_else(|e| panic!("README Providers: {e}"));
        assert!(c.hooks.len() >= 15, "{} hooks", c.hooks.len());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("1 parsec").is_err());
    }

    #[test]
    fn world_readable_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "x\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret(&SecretSource::File(p.clone())).unwrap_err();
        assert!(e.contains("world-readable"), "{e}");
        for mode in [0o620, 0o602, 0o660] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_secret(&SecretSource::File(p.clone())).unwrap_err();
            assert!(e.contains("writable by group or others"), "{mode:o}: {e}");
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(read_secret(&SecretSource::File(p)).unwrap(), b"x".to_vec());
    }

    #[test]
    fn tls_needs_cert_and_key_from_one_source_each() {
        let c = parse("[server]\nlisten_tls = [\"127.0.0.1:8443\"]\ntls = { cert_file = \"/c.pem\", key_credential = \"key\" }\n").unwrap();
        let tls = c.server.tls.unwrap();
        assert_eq!(tls.cert, PemSource::File("/c.pem".into()));
        assert_eq!(tls.key, PemSource::Credential("key".into()));
        let e = parse(
            "[server]\ntls = { cert_file = \"/c\", cert_credential = \"c\", key_file = \"/k\" }\n",
        )
        .unwrap_err();
        assert!(e.starts_with("t.toml:2:") && e.contains("not both"), "{e}");
        let e = parse("[server]\ntls = { cert_file = \"/c\" }\n").unwrap_err();
        assert!(e.contains("needs key_file or key_credential"), "{e}");
        let e = parse("[server]\nlisten_tls = [\"127.0.0.1:8443\"]\n").unwrap_err();
        assert!(e.contains("needs server.tls"), "{e}");
        let e = parse("[server]\nlisten_tls = [\"unix:/x\"]\ntls = { cert_file = \"/c\", key_file = \"/k\" }\n").unwrap_err();
        assert!(e.contains("TLS is for TCP"), "{e}");
        let c = parse("[server]\nlisten = []\nlisten_tls = [\"127.0.0.1:8443\"]\ntls = { cert_file = \"/c\", key_file = \"/k\" }\n").unwrap();
        assert!(c.server.listen.is_empty());
    }

    #[test]
    fn durations_that_would_overflow_are_refused() {
        // 2^64 µs is about 584 542 years: EXTEND_TIMEOUT_USEC of twice the
        // grace, or a clock plus the duration, would overflow or panic.
        let e = parse("[shutdown]\ngrace = \"600000years\"\n").unwrap_err();
        assert!(e.starts_with("t.toml:2:"), "{e}");
        assert!(e.contains("100 years"), "{e}");
        let hook = "[[hook]]\nname = \"a\"\nverify = { scheme = \"none\" }\naction = { exec = [\"/bin/true\"], timeout = \"1000years\" }\n";
        let e = parse(hook).unwrap_err();
        assert!(e.starts_with("t.toml:4:"), "{e}");
        assert!(parse("[shutdown]\ngrace = \"99years\"\n").is_ok());
        let e = parse("[spool]\ncommit_timeout = \"0s\"\n").unwrap_err();
        assert!(e.contains("commit_timeout"), "{e}");
    }

    #[test]
    fn metrics_listener_needs_its_own_address() {
        let e = parse("[server]\nlisten = [\"127.0.0.1:1\"]\nmetrics_listen = [\"127.0.0.1:1\"]\n")
            .unwrap_err();
        assert!(e.contains("also in server.listen"), "{e}");
        let c = parse("[server]\nmetrics_listen = [\"unix:/run/hookd/metrics.sock\"]\n").unwrap();
        assert!(!c.server.metrics_on_webhook_listener);
    }

    #[test]
    fn max_body_must_fit_the_buffer_budget() {
        let e = parse("[server]\nmax_body = \"2MiB\"\nmax_buffered = \"1MiB\"\n").unwrap_err();
        assert!(e.contains("max_buffered"), "{e}");
        let hook = "[server]\nmax_buffered = \"1MiB\"\n[[hook]]\nname = \"a\"\nmax_body = \"2MiB\"\nverify = { scheme = \"none\" }\naction = { exec = [\"/bin/true\"] }\n";
        let e = parse(hook).unwrap_err();
        assert!(e.starts_with("t.toml:3:"), "{e}");
    }

    #[test]
    fn allow_ips_parse_and_warn_behind_a_loopback_proxy() {
        let hook = "[[hook]]\nname = \"a\"\nallow_ips = [\"192.30.252.0/22\", \"2a0a:a440::/29\", \"10.1.2.3\"]\nverify = { scheme = \"none\" }\naction = { exec = [\"/bin/true\"] }\n";
        let c = parse(hook).unwrap();
        let list = c.hooks[0].get_ref().allow_list().unwrap().unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(c.warnings().len(), 1, "{:?}", c.warnings());
        assert!(c.warnings()[0].contains("trusted_proxies"));
        let trusted =
            format!("[server]\ntrusted_proxies = [\"127.0.0.1/32\", \"::1/128\"]\n{hook}");
        assert!(parse(&trusted).unwrap().warnings().is_empty());
        let bad = hook.replace("10.1.2.3", "10.1.2.3/8");
        let e = parse(&bad).unwrap_err();
        assert!(e.starts_with("t.toml:3:"), "{e}");
    }

    #[test]
    fn an_idle_timeout_below_read_timeout_plus_a_second_is_a_warning() {
        let warns = |server: &str| parse(&format!("[server]\n{server}\n")).unwrap().warnings();
        let w = warns("read_timeout = \"10s\"\nidle_timeout = \"5s\"");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("server.idle_timeout = 5s"), "{w:?}");
        assert!(w[0].contains("hookd uses 11s"), "{w:?}");
        assert!(warns("read_timeout = \"10s\"\nidle_timeout = \"11s\"").is_empty());
        assert!(parse("").unwrap().warnings().is_empty(), "the defaults");
    }

    #[test]
    fn a_dedup_window_longer_than_retain_done_is_a_warning() {
        let cfg = |retain: &str, window: &str| {
            format!("[spool]\nretain_done = \"{retain}\"\n[[hook]]\nname = \"a\"\nverify = {{ scheme = \"none\" }}\ndedup = {{ key = \"header.X-Id\", window = \"{window}\" }}\naction = {{ exec = [\"/bin/true\"] }}\n")
        };
        let w = parse(&cfg("1d", "3d")).unwrap().warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("hook \"a\": dedup.window = 3days"), "{w:?}");
        assert!(w[0].contains("spool.retain_done = 1day"), "{w:?}");
        assert!(parse(&cfg("3d", "1d")).unwrap().warnings().is_empty());
        assert!(parse(&cfg("1d", "1d")).unwrap().warnings().is_empty());
    }

    #[test]
    fn listen_addresses() {
        assert!(matches!(
            ListenAddr::parse("[::1]:80").unwrap(),
            ListenAddr::Tcp(_)
        ));
        assert_eq!(
            ListenAddr::parse("unix:/run/x.sock").unwrap(),
            ListenAddr::Unix("/run/x.sock".into())
        );
        assert!(ListenAddr::parse("localhost:80").is_err());
    }

    fn hook_with(fields: &str) -> String {
        format!("[[hook]]\nname = \"a\"\n{fields}\naction = {{ exec = [\"/bin/true\"] }}\n")
    }

    #[test]
    fn presets_fill_what_the_hook_leaves_out() {
        let c = parse(&hook_with(
            "preset = \"shopify\"\nverify = { secret_file = \"/k\" }",
        ))
        .unwrap();
        let h = c.hooks[0].get_ref();
        assert_eq!(h.verify.scheme, Scheme::Hmac);
        assert_eq!(h.verify.encoding, Encoding::Base64);
        assert_eq!(h.verify.header.as_deref(), Some("X-Shopify-Hmac-Sha256"));
        assert_eq!(
            h.dedup.as_ref().unwrap().key.to_string(),
            "header.X-Shopify-Webhook-Id"
        );
        // Written fields win: header, and the dedup key.
        let c = parse(&hook_with(
            "preset = \"shopify\"\nverify = { secret_file = \"/k\", header = \"X-Other\" }\ndedup = { key = \"payload.id\", window = \"7d\" }",
        ))
        .unwrap();
        let h = c.hooks[0].get_ref();
        assert_eq!(h.verify.header.as_deref(), Some("X-Other"));
        let d = h.dedup.as_ref().unwrap();
        assert_eq!(d.key, DedupKey::Payload(vec!["id".into()]));
        assert_eq!(d.window, Some(Duration::from_secs(7 * 86400)));
        // Another scheme drops the preset's signature fields, keeps its dedup key.
        let c = parse(&hook_with(
            "preset = \"twitch\"\nverify = { scheme = \"bearer\", token_file = \"/k\" }",
        ))
        .unwrap();
        let h = c.hooks[0].get_ref();
        assert_eq!(h.verify.scheme, Scheme::Bearer);
        assert_eq!(h.verify.header, None);
        assert!(h.dedup.is_some());
        let c = parse(&hook_with(
            "preset = \"standard-webhooks\"\nverify = { secret_env = \"K\" }",
        ))
        .unwrap();
        assert_eq!(
            c.hooks[0].get_ref().dedup.as_ref().unwrap().key.to_string(),
            "header.webhook-id (or header.svix-id)"
        );
    }

    #[test]
    fn several_secrets_in_key_order() {
        let c = parse(&hook_with(
            "verify = { scheme = \"github\", secret_files = [\"/new\", \"/old\"], secret_env = \"E\", secret_credentials = [\"gh\"] }",
        ))
        .unwrap();
        assert_eq!(
            c.hooks[0].get_ref().verify.secrets,
            vec![
                SecretSource::File("/new".into()),
                SecretSource::File("/old".into()),
                SecretSource::Env("E".into()),
                SecretSource::Credential("gh".into()),
            ]
        );
        let e = parse(&hook_with(
            "verify = { scheme = \"github\", secret_credential = \"../x\" }",
        ))
        .unwrap_err();
        assert!(e.contains("plain name"), "{e}");
    }

    #[test]
    fn verify_fields_that_do_not_fit_are_errors() {
        for (fields, why) in [
            ("verify = { scheme = \"github\", secret_file = \"/k\", prefix = \"x\" }", "prefix is only for scheme \"hmac\""),
            ("verify = { scheme = \"hmac\", secret_file = \"/k\" }", "needs header"),
            ("verify = { scheme = \"token\", secret_file = \"/k\" }", "needs header"),
            ("verify = { scheme = \"hmac\", secret_file = \"/k\", header = \"X\", timestamp_header = \"T\" }", "timestamp_header needs signed"),
            ("verify = { scheme = \"hmac\", secret_file = \"/k\", header = \"X\", signed = \"{timestamp}.{body}\" }", "needs timestamp_header"),
            ("verify = { scheme = \"hmac\", secret_file = \"/k\", header = \"X\", tolerance = \"1m\" }", "tolerance is only for"),
            ("verify = { scheme = \"hmac\", secret_file = \"/k\", header = \"X\", algorithm = \"md5\" }", "md5"),
            ("verify = { secret_file = \"/k\" }", "needs scheme"),
            ("preset = \"meta\"\nverify = { secret_file = \"/k\" }", "verify_token_file"),
            ("verify = { scheme = \"github\", secret_file = \"/k\", verify_token_file = \"/t\" }", "for preset \"meta\""),
            ("verify = { scheme = \"none\" }\ndedup_header = \"X\"\ndedup = { key = \"header.Y\" }", "not both"),
            ("verify = { scheme = \"none\" }\ndedup = { key = \"id\" }", "header.<Name> or payload"),
            ("verify = { scheme = \"slack\", secret_file = \"/k\" }\nreplay_window = \"1h\"", "already refuses a replay within its tolerance"),
            ("verify = { scheme = \"github\", secret_file = \"/k\" }\nreplay_window = \"0s\"", "replay_window must be more than zero"),
            ("verify = { scheme = \"none\" }\nreplay_window = \"1h\"", "replay_window needs a verify scheme"),
            ("verify = { scheme = \"none\" }\nrespond = { status = 500 }", "must be 2xx"),
        ] {
            let e = parse(&hook_with(fields)).unwrap_err();
            assert!(e.contains(why), "{fields}: {e}");
            assert!(e.starts_with("t.toml:"), "{e}");
        }
    }

    #[test]
    fn respond_defaults() {
        let c = parse(&hook_with(
            "verify = { scheme = \"none\" }\nrespond = { status = 200, body = \"ok\" }",
        ))
        .unwrap();
        let r = c.hooks[0].get_ref().respond.clone().unwrap();
        assert_eq!(
            (r.status, r.body.as_str(), r.content_type.as_str()),
            (200, "ok", "text/plain")
        );
    }

    fn exec_hook(action: &str) -> String {
        format!("[server]\nlisten = [\"127.0.0.1:1\"]\n[[hook]]\nname = \"a\"\nverify = {{ scheme = \"none\" }}\naction = {action}\n")
    }

    #[test]
    fn exec_takes_placeholders_env_cwd_body_file_and_a_missing_policy() {
        let c = parse(&exec_hook(
            r#"{ exec = ["/deploy", "{payload.after}", "--by={header.X-GitHub-Event}"], cwd = "/srv", env = { SHA = "{payload.after:-none}" }, body_file = true, missing = "skip" }"#,
        ))
        .unwrap();
        let ActionKind::Exec(e) = &c.hooks[0].get_ref().routes[0].action.kind else {
            panic!("not exec")
        };
        assert_eq!(e.program, "/deploy");
        let args: Vec<String> = e.args.iter().map(|t| t.to_string()).collect();
        assert_eq!(args, ["{payload.after}", "--by={header.X-GitHub-Event}"]);
        assert_eq!(e.env.len(), 1);
        assert_eq!(e.env[0].0, "SHA");
        assert_eq!(e.env[0].1.to_string(), "{payload.after:-none}");
        assert_eq!(e.cwd.as_deref(), Some(Path::new("/srv")));
        assert!(e.body_file);
        assert_eq!(e.missing, Missing::Skip);
        // Defaults: fail on a missing value, no body file.
        let c = parse(&exec_hook(r#"{ exec = ["/deploy"] }"#)).unwrap();
        let ActionKind::Exec(e) = &c.hooks[0].get_ref().routes[0].action.kind else {
            panic!("not exec")
        };
        assert_eq!(
            (e.missing, e.body_file, e.cwd.is_none()),
            (Missing::Fail, false, true)
        );
    }

    #[test]
    fn bad_exec_arguments_are_errors_naming_the_line() {
        for (action, says) in [
            (
                r#"{ exec = ["/deploy", "{paylod.after}"] }"#,
                "unknown placeholder {paylod.after}",
            ),
            (
                r#"{ exec = ["/deploy", "--x={payload.a"] }"#,
                "without its '}'",
            ),
            (r#"{ exec = ["{payload.prog}"] }"#, "must be a fixed path"),
            (
                r#"{ exec = ["/deploy"], env = { X = "{nope}" } }"#,
                "action.env.X: \"{nope}\": unknown placeholder",
            ),
            (
                r#"{ exec = ["/deploy"], env = { HOOKD_X = "1" } }"#,
                "HOOKD_* variables are hookd's own",
            ),
            (
                r#"{ exec = ["/deploy"], env = { "A=B" = "1" } }"#,
                "is not a variable name",
            ),
            (
                r#"{ exec = ["/deploy"], cwd = "srv" }"#,
                "must be an absolute path",
            ),
            (
                r#"{ exec = ["/deploy"], missing = "ignore" }"#,
                "unknown variant `ignore`",
            ),
            (
                r#"{ forward = "http://127.0.0.1:1/", body_file = true }"#,
                "action.body_file is only for exec",
            ),
            (
                r#"{ forward = "http://127.0.0.1:1/", env = { A = "1" } }"#,
                "action.env is only for exec",
            ),
            (
                r#"{ exec = ["/deploy"], validate = { "payload.ref" = "(" } }"#,
                "validate.payload.ref: regex parse error",
            ),
            (
                r#"{ exec = ["/deploy"], validate = { "paylod.ref" = "x" } }"#,
                "unknown placeholder {paylod.ref}",
            ),
        ] {
            let e = parse(&exec_hook(action)).unwrap_err();
            assert!(e.starts_with("t.toml:6:"), "{action}: {e}");
            assert!(e.contains(says), "{action}: {e}");
        }
    }

    #[test]
    fn respond_wait_is_capped_and_keeps_the_default_answer() {
        let c = parse(&hook_with(
            "verify = { scheme = \"none\" }\nrespond = { wait = \"25s\" }",
        ))
        .unwrap();
        let r = c.hooks[0].get_ref().respond.clone().unwrap();
        assert_eq!(r.wait, Some(Duration::from_secs(25)));
        assert!(!r.fixed, "wait alone keeps the 202 with the id");
        for bad in ["26s", "0s"] {
            let e = parse(&hook_with(&format!(
                "verify = {{ scheme = \"none\" }}\nrespond = {{ wait = \"{bad}\" }}"
            )))
            .unwrap_err();
            assert!(
                e.contains("respond.wait") && e.contains("at most 25s"),
                "{e}"
            );
        }
    }
}
