//! `hookd import-webhook FILE`: an adnanh/webhook hooks file (JSON or YAML) in,
//! an equivalent hookd configuration out (stdout), and a warning on stderr,
//! naming the hook, for every construct whose meaning changes on the way.
//!
//! Why a translator and not a compatibility mode: webhook answers after (or
//! while) it runs the command and keeps nothing; hookd spools first and runs
//! the command from the spool, with retries. The two agree on *what* runs with
//! *which* arguments, and the side-by-side test (`tests/import_webhook.rs`)
//! checks exactly that, but the answer a sender sees and the retry behaviour
//! differ by design, so the output is a config an operator reads and owns.
//!
//! The mapping, construct by construct (webhook's semantics read from its
//! `internal/hook/hook.go`):
//! - `trigger-rule`: `and` → the `when` list (or `{ all = [..] }` nested),
//!   `or` → `{ any = [..] }`, `not` → `{ not = {..} }`, `match value` → `eq`,
//!   `match regex` → `matches` (webhook's regexes are unanchored, hookd's are
//!   anchored: an unanchored one is wrapped in `(?s:.*)(?:…)(?s:.*)`),
//!   `ip-whitelist` → `cidr` on `request.remote_ip`.
//! - A `payload-hmac-*` match among the top-level conjuncts becomes the hook's
//!   `verify`: GitHub's `X-Hub-Signature-256` the `github` scheme, anything
//!   else the generic `hmac` scheme. A signature check anywhere else (under `or`
//!   or `not`), or `scalr-signature`, has no hookd equivalent: the hook is
//!   written with `enabled = false` rather than silently unverified.
//! - Secrets never go to stdout (hookd refuses inline secrets): with
//!   `--secrets-dir DIR` each is written to `DIR/<hook>.secret` (mode 0600),
//!   otherwise the warning says which file to create. A `{{ getenv "X" }}` or
//!   `{{ credential "X" }}` template secret becomes `secret_env` / `secret_credential`.
//! - `pass-arguments-to-command` / `pass-environment-to-command` become
//!   placeholders in `exec` and `env` (default env name `HOOK_<name>`, as
//!   webhook), with `missing = "empty"`: webhook passes an empty argument for
//!   a value it cannot find and runs the command anyway.
//! - `response-message` / `success-http-response-code` → `respond`,
//!   `include-command-output-in-response` → `respond.wait` (hookd's cap, 25 s),
//!   `trigger-rule-mismatch-http-response-code` → `filtered_status`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Deserialize;

/// What the command line gave.
pub(crate) struct Options {
    pub file: PathBuf,
    pub secrets_dir: Option<PathBuf>,
}

/// Where the warnings tell the operator to put secrets when `--secrets-dir` is absent.
const DEFAULT_SECRETS_DIR: &str = "/etc/hookd/secrets";

/// webhook's own default port, so senders keep their URL.
const WEBHOOK_LISTEN: &str = "0.0.0.0:9000";

pub(crate) fn run(opts: &Options) -> ExitCode {
    let text = match std::fs::read_to_string(&opts.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("hookd: {}: {e}", opts.file.display());
            return ExitCode::from(2);
        }
    };
    let secrets_dir = opts
        .secrets_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SECRETS_DIR));
    let out = match convert(&text, &opts.file, &secrets_dir) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("hookd: {e}");
            return ExitCode::from(2);
        }
    };
    for (path, secret) in &out.secrets {
        if opts.secrets_dir.is_some() {
            if let Err(e) = write_secret(path, secret) {
                eprintln!("hookd: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    for w in &out.warnings {
        eprintln!("hookd: warning: {w}");
    }
    print!("{}", out.toml);
    ExitCode::SUCCESS
}

/// Writes a secret readable by its owner only (hookd refuses anything looser).
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(secret.as_bytes())
}

/// The translation of one hooks file.
#[derive(Debug)]
pub(crate) struct Imported {
    pub toml: String,
    pub warnings: Vec<String>,
    /// (file, secret) pairs the config's `secret_file`s point at.
    pub secrets: Vec<(PathBuf, String)>,
}

// --- webhook's hooks file, as its Go structs read it ----------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct WHook {
    id: String,
    execute_command: String,
    command_working_directory: Option<String>,
    response_message: Option<String>,
    #[serde(default)]
    response_headers: Vec<serde_json::Value>,
    success_http_response_code: Option<u16>,
    incoming_payload_content_type: Option<String>,
    #[serde(default)]
    http_methods: Vec<String>,
    #[serde(default)]
    include_command_output_in_response: bool,
    #[serde(default)]
    include_command_output_in_response_on_error: bool,
    #[serde(default)]
    parse_parameters_as_json: Vec<serde_json::Value>,
    #[serde(default)]
    pass_arguments_to_command: Vec<WArg>,
    #[serde(default)]
    pass_environment_to_command: Vec<WArg>,
    #[serde(default)]
    pass_file_to_command: Vec<WArg>,
    trigger_rule: Option<WRule>,
    trigger_rule_mismatch_http_response_code: Option<u16>,
    #[serde(default)]
    trigger_signature_soft_failures: bool,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize, Clone)]
struct WArg {
    source: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    envname: Option<String>,
    #[serde(default)]
    base64decode: bool,
}

#[derive(Deserialize, Clone, Default)]
struct WRule {
    and: Option<Vec<WRule>>,
    or: Option<Vec<WRule>>,
    not: Option<Box<WRule>>,
    #[serde(rename = "match")]
    matches: Option<WMatch>,
}

#[derive(Deserialize, Clone)]
struct WMatch {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    regex: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    value: String,
    parameter: Option<WArg>,
    #[serde(rename = "ip-range", default)]
    ip_range: String,
}

fn parse(text: &str, file: &Path) -> Result<Vec<WHook>, String> {
    let json = file.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('[');
    if json {
        serde_json::from_str(text).map_err(|e| format!("{}: {e}", file.display()))
    } else {
        serde_saphyr::from_str(text).map_err(|e| format!("{}: {e}", file.display()))
    }
}

/// Translates a whole hooks file; `Err` only when the file cannot be read as one.
pub(crate) fn convert(text: &str, file: &Path, secrets_dir: &Path) -> Result<Imported, String> {
    let hooks = parse(text, file)?;
    let mut out = Imported {
        toml: String::new(),
        warnings: Vec::new(),
        secrets: Vec::new(),
    };
    let _ = writeln!(
        out.toml,
        "# Converted by `hookd import-webhook` from {}.\n\
         # Read the warnings it printed; `hookd check-config --config THIS_FILE` checks it.\n\
         # hookd answers once the request is spooled and runs the command from the spool,\n\
         # with retries; see README \"Moving from adnanh/webhook\".\n\n\
         [server]\nlisten = [{}]      # webhook's default port\n",
        file.display(),
        quote(WEBHOOK_LISTEN)
    );
    if text.contains("{{") {
        out.warnings.push(format!(
            "{}: template syntax ({{{{ … }}}}) found: only a secret that is exactly \
             {{{{ getenv \"X\" }}}} or {{{{ credential \"X\" }}}} is translated; hookd has no templates",
            file.display()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for h in &hooks {
        if !seen.insert(h.id.clone()) {
            out.warnings.push(format!(
                "hook {:?}: defined twice; webhook serves the first, so the second is left out",
                h.id
            ));
            continue;
        }
        let mut ctx = HookCtx {
            id: &h.id,
            warnings: Vec::new(),
            disabled: None,
        };
        let body = convert_hook(h, &mut ctx, secrets_dir, &mut out.secrets);
        out.toml.push('\n');
        out.toml.push_str(&body);
        if let Some(why) = &ctx.disabled {
            ctx.warnings.push(format!(
                "written with enabled = false: {why}; fix it by hand before enabling"
            ));
        }
        out.warnings.extend(
            ctx.warnings
                .into_iter()
                .map(|w| format!("hook {:?}: {w}", h.id)),
        );
    }
    out.warnings.push(
        "webhook's -hotreload has no equivalent: hookd reads its config on `systemctl reload \
         hookd` (a hand-off with no gap), not by watching the file"
            .into(),
    );
    Ok(out)
}

struct HookCtx<'a> {
    id: &'a str,
    warnings: Vec<String>,
    /// Set when the hook cannot be translated safely; it is then written disabled.
    disabled: Option<String>,
}

impl HookCtx<'_> {
    fn warn(&mut self, w: impl Into<String>) {
        self.warnings.push(w.into());
    }
    fn disable(&mut self, why: impl Into<String>) {
        if self.disabled.is_none() {
            self.disabled = Some(why.into());
        }
    }
}

fn convert_hook(
    h: &WHook,
    ctx: &mut HookCtx,
    secrets_dir: &Path,
    secrets: &mut Vec<(PathBuf, String)>,
) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "[[hook]]\nname = {}", quote(&h.id));
    if !valid_name(&h.id) {
        ctx.disable("its id is not a valid hookd hook name (1-64 of a-z A-Z 0-9 - _ .)");
    }

    // The signature check, if any, among the top-level conjuncts.
    let mut conjuncts: Vec<WRule> = match &h.trigger_rule {
        None => Vec::new(),
        Some(r) => match &r.and {
            Some(list) if r.or.is_none() && r.not.is_none() && r.matches.is_none() => list.clone(),
            _ => vec![r.clone()],
        },
    };
    let mut verify = None;
    conjuncts.retain(|r| match &r.matches {
        Some(m) if hmac_algorithm(&m.kind).is_some() => {
            if verify.is_some() {
                ctx.warn("a second payload signature check is left out (hookd checks one)");
            } else {
                verify = Some(signature(m, ctx, secrets_dir, secrets));
            }
            false
        }
        _ => true,
    });
    match verify {
        Some(v) => {
            let _ = writeln!(t, "verify = {v}");
        }
        None => {
            let _ = writeln!(t, "verify = {{ scheme = \"none\" }}");
            ctx.warn(
                "no payload-hmac rule: the hook is unauthenticated (verify = none); \
                 consider a scheme from README \"Providers\"",
            );
        }
    }

    let when: Vec<String> = conjuncts
        .iter()
        .filter_map(|r| condition(r, ctx, false))
        .collect();
    if !when.is_empty() {
        t.push_str("when = [\n");
        for c in &when {
            let _ = writeln!(t, "  {c},");
        }
        t.push_str("]\n");
    }
    if let Some(code) = h.trigger_rule_mismatch_http_response_code {
        let _ = writeln!(t, "filtered_status = {code}");
    }

    // The answer.
    let mut respond = Vec::new();
    if h.success_http_response_code.is_some() || h.response_message.is_some() {
        let status = h.success_http_response_code.unwrap_or(200);
        if (200..300).contains(&status) {
            respond.push(format!("status = {status}"));
        } else {
            ctx.warn(format!(
                "success-http-response-code {status} is not 2xx: hookd answers a spooled webhook with 2xx only; left at 200"
            ));
            respond.push("status = 200".into());
        }
        if let Some(m) = &h.response_message {
            respond.push(format!("body = {}", quote(m)));
            respond.push("content_type = \"text/plain\"".into());
        }
    }
    if h.include_command_output_in_response {
        respond.push("wait = \"25s\"".into());
        ctx.warn(
            "include-command-output-in-response → respond.wait = \"25s\": a command still running \
             after 25 s is answered 202 and goes on (webhook waited for it)",
        );
    }
    if h.include_command_output_in_response_on_error {
        ctx.warn("include-command-output-in-response-on-error: hookd answers a failed first attempt with a JSON error, not the command's output");
    }
    if !respond.is_empty() {
        let _ = writeln!(t, "respond = {{ {} }}", respond.join(", "));
    }

    // The command.
    let mut argv = vec![literal(&program(h, ctx))];
    for a in &h.pass_arguments_to_command {
        argv.push(placeholder(a, ctx).unwrap_or_default());
    }
    let mut env = Vec::new();
    for a in &h.pass_environment_to_command {
        let name = match &a.envname {
            Some(n) if !n.is_empty() => n.clone(),
            _ => format!("HOOK_{}", a.name),
        };
        if let Some(v) = placeholder(a, ctx) {
            env.push(format!("{} = {}", key(&name), quote(&v)));
        }
    }
    let mut body_file = false;
    for a in &h.pass_file_to_command {
        let whole = matches!(a.source.as_str(), "entire-payload" | "raw-request-body");
        if whole && !a.base64decode {
            body_file = true;
            let name = a
                .envname
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| format!("HOOK_{}", a.name.to_uppercase()));
            if name != "HOOKD_BODY_FILE" {
                ctx.warn(format!(
                    "pass-file-to-command: the body file's path is in HOOKD_BODY_FILE, not {name}"
                ));
            }
        } else {
            ctx.warn(format!(
                "pass-file-to-command from {} {:?}{}: not translated (hookd writes only the whole body to a file)",
                a.source,
                a.name,
                if a.base64decode { " with base64decode" } else { "" }
            ));
        }
    }
    let mut action = vec![format!(
        "exec = [{}]",
        argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(", ")
    )];
    if let Some(dir) = &h.command_working_directory {
        action.push(format!("cwd = {}", quote(dir)));
    }
    if !env.is_empty() {
        action.push(format!("env = {{ {} }}", env.join(", ")));
    }
    if body_file {
        action.push("body_file = true".into());
    }
    if !h.pass_arguments_to_command.is_empty() || !h.pass_environment_to_command.is_empty() {
        action.push("missing = \"empty\"".into());
    }
    let _ = writeln!(t, "action = {{ {} }}", action.join(", "));

    // What has no translation.
    let methods: Vec<String> = h.http_methods.iter().map(|m| m.to_uppercase()).collect();
    if !methods.is_empty() && methods.iter().any(|m| m != "POST") {
        ctx.warn(format!(
            "http-methods {methods:?}: hookd accepts webhooks by POST only"
        ));
    }
    if let Some(ct) = &h.incoming_payload_content_type {
        ctx.warn(format!("incoming-payload-content-type {ct:?}: hookd reads the body as JSON or form by its content; the setting is dropped"));
    }
    if !h.response_headers.is_empty() {
        ctx.warn("response-headers: hookd does not add custom headers to its answer; dropped");
    }
    if !h.parse_parameters_as_json.is_empty() {
        ctx.warn("parse-parameters-as-json: not translated; placeholders into a JSON string inside a field are not supported");
    }
    if h.trigger_signature_soft_failures {
        ctx.warn("trigger-signature-soft-failures: hookd refuses every request whose signature fails (401)");
    }
    for k in h.other.keys() {
        ctx.warn(format!("unknown key {k:?} ignored"));
    }
    if ctx.disabled.is_some() {
        t.push_str("enabled = false\n");
    }
    t
}

/// The program: webhook resolves a relative path against the working directory.
fn program(h: &WHook, ctx: &mut HookCtx) -> String {
    let cmd = h.execute_command.trim();
    if cmd.is_empty() {
        ctx.disable("execute-command is empty");
        return String::new();
    }
    if cmd.contains(char::is_whitespace) && !Path::new(cmd).exists() {
        ctx.warn(format!(
            "execute-command {cmd:?} has a space: webhook runs it as one program name (no shell), and so does hookd"
        ));
    }
    match &h.command_working_directory {
        Some(dir) if !cmd.starts_with('/') && cmd.contains('/') => {
            Path::new(dir).join(cmd).display().to_string()
        }
        _ => cmd.to_string(),
    }
}

fn hmac_algorithm(kind: &str) -> Option<&'static str> {
    match kind {
        "payload-hmac-sha1" | "payload-hash-sha1" => Some("sha1"),
        "payload-hmac-sha256" | "payload-hash-sha256" => Some("sha256"),
        "payload-hmac-sha512" | "payload-hash-sha512" => Some("sha512"),
        _ => None,
    }
}

/// The `verify` table for a top-level signature match.
fn signature(
    m: &WMatch,
    ctx: &mut HookCtx,
    secrets_dir: &Path,
    secrets: &mut Vec<(PathBuf, String)>,
) -> String {
    let algorithm = hmac_algorithm(&m.kind).unwrap_or("sha256");
    let header = match &m.parameter {
        Some(p) if p.source == "header" => p.name.clone(),
        Some(p) => {
            ctx.disable(format!(
                "the signature is read from {} {:?}; hookd reads signatures from a header",
                p.source, p.name
            ));
            p.name.clone()
        }
        None => {
            ctx.disable("the signature rule names no parameter");
            String::new()
        }
    };
    let secret = secret_field(m.secret.trim(), ctx, secrets_dir, secrets);
    let github = algorithm == "sha256" && header.eq_ignore_ascii_case("X-Hub-Signature-256");
    if github {
        return format!("{{ scheme = \"github\", {secret} }}");
    }
    let mut fields = vec![
        "scheme = \"hmac\"".to_string(),
        format!("algorithm = \"{algorithm}\""),
        format!("header = {}", quote(&header)),
    ];
    if algorithm == "sha1" && header.eq_ignore_ascii_case("X-Hub-Signature") {
        fields.push("prefix = \"sha1=\"".into());
    } else {
        ctx.warn(format!(
            "signature in {header}: webhook also accepted a \"{algorithm}=\" prefix and several comma-separated signatures; \
             this config takes the bare hex digest (add prefix = \"{algorithm}=\" if the sender sends one)"
        ));
    }
    fields.push(secret);
    format!("{{ {} }}", fields.join(", "))
}

fn secret_field(
    secret: &str,
    ctx: &mut HookCtx,
    secrets_dir: &Path,
    secrets: &mut Vec<(PathBuf, String)>,
) -> String {
    if let Some(name) = template_call(secret, "getenv") {
        return format!("secret_env = {}", quote(&name));
    }
    if let Some(name) = template_call(secret, "credential") {
        return format!("secret_credential = {}", quote(&name));
    }
    if secret.is_empty() {
        ctx.disable("the signature rule has an empty secret (webhook refuses every request)");
    } else if secret.contains("{{") {
        ctx.disable("the secret is a template hookd cannot evaluate");
    }
    let path = secrets_dir.join(format!("{}.secret", ctx.id));
    if !secret.is_empty() && !secret.contains("{{") {
        secrets.push((path.clone(), secret.to_string()));
    }
    if secrets_dir == Path::new(DEFAULT_SECRETS_DIR) {
        ctx.warn(format!(
            "the secret is not printed: write it to {} (mode 0600, owner hookd), or rerun with --secrets-dir",
            path.display()
        ));
    }
    format!("secret_file = {}", quote(&path.display().to_string()))
}

/// `{{ getenv "NAME" }}` → `NAME` (whitespace and either quote style allowed).
fn template_call(s: &str, func: &str) -> Option<String> {
    let inner = s.strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let arg = inner.strip_prefix(func)?.trim();
    let name = arg
        .strip_prefix('"')
        .and_then(|a| a.strip_suffix('"'))
        .or_else(|| arg.strip_prefix('`').and_then(|a| a.strip_suffix('`')))?;
    (!name.is_empty() && !name.contains(['"', '`', ' '])).then(|| name.to_string())
}

/// A hookd field name for a webhook parameter, or `None` (with a warning or
/// the hook disabled) when hookd has no such field.
fn field(p: &WArg, ctx: &mut HookCtx) -> Option<String> {
    match p.source.as_str() {
        "payload" => Some(format!("payload.{}", p.name)),
        "header" => Some(format!("header.{}", p.name)),
        "query" | "url" => Some(format!("query.{}", p.name)),
        "request" => match p.name.to_lowercase().as_str() {
            "method" => Some("request.method".into()),
            "remote-addr" => {
                ctx.warn("request remote-addr: webhook's value is address:port, hookd's request.remote_ip is the address alone");
                Some("request.remote_ip".into())
            }
            other => {
                ctx.disable(format!("request value {other:?} is unknown to webhook too"));
                None
            }
        },
        other => {
            ctx.disable(format!("a rule on source {other:?} has no hookd field"));
            None
        }
    }
}

/// A placeholder (or literal) for an argument or environment value.
fn placeholder(a: &WArg, ctx: &mut HookCtx) -> Option<String> {
    match a.source.as_str() {
        "string" => Some(literal(&a.name)),
        "entire-payload" | "raw-request-body" => {
            if a.source == "entire-payload" {
                ctx.warn("entire-payload → {payload}: hookd passes the body as received, webhook re-encoded it as compact JSON with sorted keys");
            }
            Some("{payload}".into())
        }
        "entire-headers" => {
            ctx.warn("entire-headers → {header}: a JSON object of the stored headers (webhook: canonical names)");
            Some("{header}".into())
        }
        "entire-query" => Some("{query}".into()),
        _ => {
            let f = field(a, ctx)?;
            Some(format!("{{{f}}}"))
        }
    }
}

/// One `when` condition as a TOML inline table, or `None` when the rule adds no condition.
/// `nested`: under `or`/`not`, where a signature check cannot be moved to `verify`.
fn condition(r: &WRule, ctx: &mut HookCtx, nested: bool) -> Option<String> {
    if let Some(list) = &r.and {
        let parts: Vec<String> = list
            .iter()
            .filter_map(|c| condition(c, ctx, true))
            .collect();
        return match parts.len() {
            0 => None,
            1 => parts.into_iter().next(),
            _ => Some(format!("{{ all = [{}] }}", parts.join(", "))),
        };
    }
    if let Some(list) = &r.or {
        let parts: Vec<String> = list
            .iter()
            .filter_map(|c| condition(c, ctx, true))
            .collect();
        if parts.is_empty() {
            ctx.disable("an empty `or` never matches in webhook");
            return None;
        }
        return Some(format!("{{ any = [{}] }}", parts.join(", ")));
    }
    if let Some(inner) = &r.not {
        ctx.warn(
            "`not` over a field the request may lack: webhook's result then depends on where the `not` sits \
             (true at the top, false under `and`); hookd's is always true (a missing field is false)",
        );
        let c = condition(inner, ctx, true)?;
        return Some(format!("{{ not = {c} }}"));
    }
    let Some(m) = &r.matches else {
        ctx.disable("an empty rule");
        return None;
    };
    if hmac_algorithm(&m.kind).is_some() {
        let _ = nested;
        ctx.disable("a signature check under `or` or `not` has no hookd equivalent (hookd verifies every request)");
        return None;
    }
    match m.kind.as_str() {
        "value" => {
            let f = field(m.parameter.as_ref()?, ctx)?;
            Some(format!(
                "{{ field = {}, eq = {} }}",
                quote(&f),
                quote(&m.value)
            ))
        }
        "regex" => {
            let f = field(m.parameter.as_ref()?, ctx)?;
            let re = &m.regex;
            let anchored = re.starts_with('^') && re.ends_with('$') && !re.ends_with("\\$");
            let pattern = if anchored {
                re.clone()
            } else {
                ctx.warn(format!(
                    "regex {re:?} is unanchored in webhook; written as (?s:.*)(?:…)(?s:.*) since hookd's matches is anchored"
                ));
                format!("(?s:.*)(?:{re})(?s:.*)")
            };
            Some(format!(
                "{{ field = {}, matches = {} }}",
                quote(&f),
                quote(&pattern)
            ))
        }
        "ip-whitelist" => {
            let ranges: Vec<String> = m.ip_range.split_whitespace().map(quote).collect();
            if ranges.is_empty() {
                ctx.disable("ip-whitelist with an empty ip-range");
                return None;
            }
            Some(format!(
                "{{ field = \"request.remote_ip\", cidr = [{}] }}",
                ranges.join(", ")
            ))
        }
        "scalr-signature" => {
            ctx.disable("scalr-signature has no hookd scheme");
            None
        }
        other => {
            ctx.disable(format!("unknown match type {other:?}"));
            None
        }
    }
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Text that hookd must not read as placeholders: braces doubled.
fn literal(s: &str) -> String {
    s.replace('{', "{{").replace('}', "}}")
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML key: bare when it can be.
fn key(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        s.to_string()
    } else {
        quote(s)
    }
}

#[cfg(test)]
#[path = "import_webhook_tests.rs"]
mod tests;
