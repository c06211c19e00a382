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

/// Where `serve` and every other subcommand look when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/hookd/hookd.toml";

/// A configuration error, already rendered as `file:line:col: message`.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
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
pub struct ServerConfig {
    /// `host:port`, `[v6]:port` or `unix:/path`; used only when systemd passes none.
    pub listen: Vec<String>,
    #[serde(deserialize_with = "de_size")]
    pub max_body: u64,
    #[serde(deserialize_with = "de_duration")]
    pub read_timeout: Duration,
    /// Unix socket for `hookd status` and `hookd reload`.
    pub control_socket: Option<PathBuf>,
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
    /// Proxies (addresses or CIDR blocks) that connect on behalf of many clients.
    pub trusted_proxies: Vec<IpNet>,
}

/// An address block such as `10.0.0.0/8` or `::1/128`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let bad = || format!("{s:?} is not an IP address or CIDR block (e.g. 10.0.0.0/8, ::1)");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(format!("{s:?}: the prefix length is at most {max}"));
        }
        Ok(IpNet {
            addr: addr.to_canonical(),
            prefix,
        })
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        match (self.addr, ip.to_canonical()) {
            (V4(net), V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix),
            (V6(net), V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let (full, rest) = ((prefix / 8) as usize, prefix % 8);
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[full] & mask == b[full] & mask
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IpNet::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Where a PEM file comes from: a path, or a systemd credential, so the
/// service user never needs read access to the certificate store itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemSource {
    File(PathBuf),
    /// `$CREDENTIALS_DIRECTORY/NAME`, from `LoadCredential=NAME:/path`.
    Credential(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawTls")]
pub struct TlsConfig {
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
            write_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_connections: None,
            max_connections_per_ip: 256,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    pub path: Option<PathBuf>,
    #[serde(deserialize_with = "de_duration")]
    pub retain_done: Duration,
    /// Most items one group commit takes.
    pub max_batch: usize,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            path: None,
            retain_done: Duration::from_secs(7 * 24 * 3600),
            max_batch: 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
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
pub struct ShutdownHookConfig {
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
pub enum LogFormat {
    /// journald under systemd, plain lines on a terminal.
    #[default]
    Auto,
    Plain,
    Json,
    Journald,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
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
pub struct HookConfig {
    #[serde(deserialize_with = "de_hook_name")]
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub verify: VerifyConfig,
    /// Header whose value identifies a delivery; a repeat answers 200 with the first id.
    pub dedup_header: Option<String>,
    pub action: Action,
    #[serde(default = "one")]
    pub concurrency: usize,
    #[serde(default)]
    pub ordered: bool,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default, deserialize_with = "de_opt_size")]
    pub max_body: Option<u64>,
    /// Answer 415 unless the body is `application/json`, 400 unless it parses.
    #[serde(default)]
    pub require_json: bool,
}

fn yes() -> bool {
    true
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    Github,
    Slack,
    Stripe,
    HmacSha256,
    Bearer,
    None,
}

/// How a hook checks its callers. Secrets come from a file (not world-readable)
/// or an environment variable, never from this file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawVerify")]
pub struct VerifyConfig {
    pub scheme: Scheme,
    pub secret: SecretSource,
    /// The signature header for `hmac-sha256`.
    pub header: Option<String>,
    /// Slack's replay window and Stripe's timestamp tolerance.
    pub tolerance: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    None,
    File(PathBuf),
    Env(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    scheme: Scheme,
    secret_file: Option<PathBuf>,
    secret_env: Option<String>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    header: Option<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    tolerance: Option<Duration>,
}

impl TryFrom<RawVerify> for VerifyConfig {
    type Error = String;

    fn try_from(raw: RawVerify) -> Result<Self, String> {
        let sources: Vec<SecretSource> = [
            raw.secret_file.clone().map(SecretSource::File),
            raw.token_file.clone().map(SecretSource::File),
            raw.secret_env.clone().map(SecretSource::Env),
            raw.token_env.clone().map(SecretSource::Env),
        ]
        .into_iter()
        .flatten()
        .collect();
        if sources.len() > 1 {
            return Err(
                "verify: give exactly one of secret_file, secret_env, token_file, token_env".into(),
            );
        }
        let secret = sources.into_iter().next().unwrap_or(SecretSource::None);
        let uses_token = raw.token_file.is_some() || raw.token_env.is_some();
        match raw.scheme {
            Scheme::None => {
                if secret != SecretSource::None {
                    return Err("verify: scheme \"none\" takes no secret".into());
                }
            }
            Scheme::Bearer => {
                if secret == SecretSource::None {
                    return Err("verify: scheme \"bearer\" needs token_file or token_env".into());
                }
            }
            _ => {
                if secret == SecretSource::None {
                    return Err(format!(
                        "verify: scheme \"{}\" needs secret_file or secret_env",
                        scheme_name(raw.scheme)
                    ));
                }
                if uses_token {
                    return Err("verify: token_file/token_env are for scheme \"bearer\"; use secret_file or secret_env".into());
                }
            }
        }
        match (raw.scheme, &raw.header) {
            (Scheme::HmacSha256, None) => {
                return Err(
                    "verify: scheme \"hmac-sha256\" needs header = \"<signature header>\"".into(),
                )
            }
            (Scheme::HmacSha256, Some(h))
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() =>
            {
                return Err(format!("verify: header {h:?} is not a valid header name"));
            }
            (Scheme::HmacSha256, Some(_)) => {}
            (_, Some(_)) => return Err("verify: header is only for scheme \"hmac-sha256\"".into()),
            (_, None) => {}
        }
        if raw.tolerance.is_some() && !matches!(raw.scheme, Scheme::Slack | Scheme::Stripe) {
            return Err("verify: tolerance is only for schemes \"slack\" and \"stripe\"".into());
        }
        Ok(VerifyConfig {
            scheme: raw.scheme,
            secret,
            header: raw.header,
            tolerance: raw.tolerance.unwrap_or(Duration::from_secs(300)),
        })
    }
}

pub fn scheme_name(s: Scheme) -> &'static str {
    match s {
        Scheme::Github => "github",
        Scheme::Slack => "slack",
        Scheme::Stripe => "stripe",
        Scheme::HmacSha256 => "hmac-sha256",
        Scheme::Bearer => "bearer",
        Scheme::None => "none",
    }
}

/// What a hook does with each item.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawAction")]
pub struct Action {
    pub kind: ActionKind,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum ActionKind {
    /// POST to a local upstream. `headers`: which stored request headers to pass on
    /// (case-insensitive); empty means all of them but `Authorization`.
    Forward { url: String, headers: Vec<String> },
    /// Run a command (no shell), body on stdin.
    Exec { argv: Vec<String> },
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
}

impl TryFrom<RawAction> for Action {
    type Error = String;

    fn try_from(raw: RawAction) -> Result<Self, String> {
        let kind = match (raw.forward, raw.exec) {
            (Some(url), None) => {
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
                    headers: raw.headers,
                }
            }
            (None, Some(argv)) => {
                if argv.is_empty() || argv[0].is_empty() {
                    return Err(
                        "action.exec: needs a program, e.g. [\"/usr/local/bin/deploy\"]".into(),
                    );
                }
                if !raw.headers.is_empty() {
                    return Err("action.headers is only for forward".into());
                }
                ActionKind::Exec { argv }
            }
            (Some(_), Some(_)) => return Err("action: give forward or exec, not both".into()),
            (None, None) => {
                return Err("action: needs forward = \"http://…\" or exec = [\"…\"]".into())
            }
        };
        let timeout = raw.timeout.unwrap_or(match kind {
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
pub struct RetryConfig {
    pub max_attempts: u32,
    #[serde(deserialize_with = "de_duration")]
    pub backoff: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 10,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(600),
        }
    }
}

impl Config {
    /// Reads, parses and validates `path`, loading no secrets.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        Config::parse(&text, path)
    }

    /// Parses `text` as if read from `path` (which only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim_end().to_string();
            match e.span() {
                Some(span) => at(path, text, span.start, &msg),
                None => ConfigError(format!("{}: {msg}", path.display())),
            }
        })?;
        cfg.source = path.to_path_buf();
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
            if h.concurrency == 0 {
                return Err(at(
                    path,
                    text,
                    hook.span().start,
                    &format!("hook {:?}: concurrency must be at least 1", h.name),
                ));
            }
            if h.retry.max_attempts == 0 {
                return Err(at(
                    path,
                    text,
                    hook.span().start,
                    &format!("hook {:?}: retry.max_attempts must be at least 1", h.name),
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
        if !cfg.server.listen_tls.is_empty() && cfg.server.tls.is_none() {
            return Err(ConfigError(format!(
                "{}: server.listen_tls needs server.tls = {{ cert_file = \"…\", key_file = \"…\" }}",
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

    /// Reads every hook's secret, so a bad secret fails at start, not at the first request.
    pub fn load_secrets(&self) -> Result<Vec<Option<Vec<u8>>>, ConfigError> {
        self.hooks
            .iter()
            .map(|h| {
                let h = h.get_ref();
                read_secret(&h.verify.secret).map_err(|e| {
                    ConfigError(format!("{}: hook {:?}: {e}", self.source.display(), h.name))
                })
            })
            .collect()
    }

    /// The environment variables secrets are read from; `exec` children never see them.
    pub fn secret_env_vars(&self) -> Vec<String> {
        self.hooks
            .iter()
            .filter_map(|h| match &h.get_ref().verify.secret {
                SecretSource::Env(v) => Some(v.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn hook(&self, name: &str) -> Option<&HookConfig> {
        self.hooks
            .iter()
            .map(|h| h.get_ref())
            .find(|h| h.name == name)
    }

    /// The spool file: `spool.path` (relative to `$STATE_DIRECTORY` when systemd
    /// gives one), else `$STATE_DIRECTORY/spool.db`, else `./hookd.db`.
    pub fn spool_path(&self) -> PathBuf {
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
    /// else `hookd.sock` beside the spool file.
    pub fn control_socket_path(&self) -> PathBuf {
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

/// Reads a secret; a file must not be readable by others.
pub fn read_secret(src: &SecretSource) -> Result<Option<Vec<u8>>, String> {
    match src {
        SecretSource::None => Ok(None),
        SecretSource::Env(var) => match std::env::var_os(var) {
            Some(v) if !v.is_empty() => Ok(Some(v.to_string_lossy().trim().as_bytes().to_vec())),
            _ => Err(format!("environment variable {var} is not set or empty")),
        },
        SecretSource::File(p) => {
            let meta =
                std::fs::metadata(p).map_err(|e| format!("secret file {}: {e}", p.display()))?;
            if meta.permissions().mode() & 0o004 != 0 {
                return Err(format!(
                    "secret file {} is world-readable; chmod o-r it",
                    p.display()
                ));
            }
            let text = std::fs::read(p).map_err(|e| format!("secret file {}: {e}", p.display()))?;
            let trimmed = text.trim_ascii().to_vec();
            if trimmed.is_empty() {
                return Err(format!("secret file {} is empty", p.display()));
            }
            Ok(Some(trimmed))
        }
    }
}

/// A listening address from `server.listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl ListenAddr {
    pub fn parse(s: &str) -> Result<ListenAddr, String> {
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
pub fn parse_size(s: &str) -> Result<u64, String> {
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

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!("{s:?} is not a duration (e.g. 30s, 5m, 7d): {e}"))
    })
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

    #[test]
    fn shipped_examples_parse() {
        for f in ["examples/hookd.toml", "examples/quickstart.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
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
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_secret(&SecretSource::File(p)).unwrap(),
            Some(b"x".to_vec())
        );
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

    #[test]
    fn connection_limits_have_defaults_and_refuse_zero() {
        let c = parse("").unwrap();
        assert_eq!(c.server.write_timeout, Duration::from_secs(10));
        assert_eq!(c.server.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.server.max_header_bytes, 64 * 1024);
        assert_eq!(c.server.max_connections, None);
        assert_eq!(c.server.max_connections_per_ip, 256);
        let c = parse("[server]\nwrite_timeout = \"2s\"\nmax_connections = 100\nmax_header_bytes = \"8KiB\"\n").unwrap();
        assert_eq!(c.server.write_timeout, Duration::from_secs(2));
        assert_eq!(c.server.max_connections, Some(100));
        assert_eq!(c.server.max_header_bytes, 8192);
        let e = parse("[server]\nmax_connections_per_ip = 0\n").unwrap_err();
        assert!(
            e.starts_with("t.toml:2:") && e.contains("at least 1"),
            "{e}"
        );
        let e = parse("[server]\n\nwrite_timeout = \"0s\"\n").unwrap_err();
        assert!(
            e.starts_with("t.toml:3:") && e.contains("more than zero"),
            "{e}"
        );
        let e = parse("[server]\nmax_header_bytes = 10\n").unwrap_err();
        assert!(e.contains("between"), "{e}");
    }

    #[test]
    fn trusted_proxies_are_addresses_or_blocks() {
        let c = parse("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\", \"192.168.1.7\"]\n")
            .unwrap();
        let t = &c.server.trusted_proxies;
        assert!(t[0].contains("10.200.3.4".parse().unwrap()));
        assert!(!t[0].contains("11.0.0.1".parse().unwrap()));
        assert!(t[1].contains("::1".parse().unwrap()));
        assert!(t[2].contains("::ffff:192.168.1.7".parse().unwrap()));
        assert!(!t[2].contains("192.168.1.8".parse().unwrap()));
        let n = IpNet::parse("172.16.0.0/12").unwrap();
        assert!(n.contains("172.31.255.1".parse().unwrap()));
        assert!(!n.contains("172.32.0.1".parse().unwrap()));
        let e = parse("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(
            e.starts_with("t.toml:2:") && e.contains("at most 32"),
            "{e}"
        );
        assert!(IpNet::parse("example.com").is_err());
    }
}
