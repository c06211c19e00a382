//! Presets: a provider's name standing for the fields an operator would
//! otherwise write (scheme, signature header and shape, dedup key), plus the
//! handshake the provider expects before it sends events.
//!
//! A preset only fills what the hook leaves out: every field written in the
//! hook wins. A `scheme` written in the hook that differs from the preset's
//! drops the preset's signature fields (they describe the other scheme) but
//! keeps its dedup key and handshake. `hookd check-config --explain` prints
//! what each hook ends up with.

use std::time::Duration;

use crate::config::{Algorithm, DedupKey, Encoding, HookConfig, Preset, Scheme};

/// What a preset fills in.
pub(crate) struct Defaults {
    pub scheme: Scheme,
    pub header: Option<&'static str>,
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    pub prefix: Option<&'static str>,
    pub signed: Option<&'static str>,
    pub timestamp_header: Option<&'static str>,
    pub tolerance: Option<Duration>,
    pub dedup: Option<DedupKey>,
}

/// The handshake a provider does before (or besides) sending events, answered
/// by ingress without spooling anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// Slack Events API: a signed POST `{"type":"url_verification","challenge":…}`.
    SlackUrlVerification,
    /// Meta (WhatsApp, Messenger, Instagram): `GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`.
    MetaSubscribe,
    /// Twitch EventSub: `Twitch-Eventsub-Message-Type: webhook_callback_verification`.
    TwitchCallbackVerification,
    /// Zoom: a signed POST with `"event":"endpoint.url_validation"`.
    ZoomUrlValidation,
}

impl Handshake {
    /// The `kind` label of `hookd_handshakes_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Handshake::SlackUrlVerification => "slack_url_verification",
            Handshake::MetaSubscribe => "meta_subscribe",
            Handshake::TwitchCallbackVerification => "twitch_callback_verification",
            Handshake::ZoomUrlValidation => "zoom_url_validation",
        }
    }
}

fn header(name: &str) -> Option<DedupKey> {
    Some(DedupKey::Header(vec![name.to_string()]))
}

fn payload(path: &str) -> Option<DedupKey> {
    Some(DedupKey::Payload(
        path.split('.').map(str::to_string).collect(),
    ))
}

pub(crate) fn defaults(p: Preset) -> Defaults {
    let plain = |scheme| Defaults {
        scheme,
        header: None,
        algorithm: Algorithm::Sha256,
        encoding: Encoding::Hex,
        prefix: None,
        signed: None,
        timestamp_header: None,
        tolerance: None,
        dedup: None,
    };
    match p {
        Preset::Github => Defaults {
            dedup: header("X-GitHub-Delivery"),
            ..plain(Scheme::Github)
        },
        // Stripe retries an event with the same id.
        Preset::Stripe => Defaults {
            dedup: payload("id"),
            ..plain(Scheme::Stripe)
        },
        // Slash commands and interactivity are form-encoded and carry no id.
        Preset::Slack => plain(Scheme::Slack),
        Preset::SlackEvents => Defaults {
            dedup: payload("event_id"),
            ..plain(Scheme::Slack)
        },
        Preset::Gitlab => Defaults {
            header: Some("X-Gitlab-Token"),
            dedup: header("X-Gitlab-Event-UUID"),
            ..plain(Scheme::Token)
        },
        Preset::Shopify => Defaults {
            header: Some("X-Shopify-Hmac-Sha256"),
            encoding: Encoding::Base64,
            dedup: header("X-Shopify-Webhook-Id"),
            ..plain(Scheme::Hmac)
        },
        Preset::StandardWebhooks => Defaults {
            dedup: Some(DedupKey::Header(vec![
                "webhook-id".to_string(),
                "svix-id".to_string(),
            ])),
            ..plain(Scheme::StandardWebhooks)
        },
        Preset::Meta => Defaults {
            header: Some("X-Hub-Signature-256"),
            prefix: Some("sha256="),
            ..plain(Scheme::Hmac)
        },
        // Twitch: HMAC-SHA256 over message id, timestamp (RFC 3339) and body,
        // and "reject any message older than 10 minutes".
        Preset::Twitch => Defaults {
            header: Some("Twitch-Eventsub-Message-Signature"),
            prefix: Some("sha256="),
            signed: Some("{header.Twitch-Eventsub-Message-Id}{timestamp}{body}"),
            timestamp_header: Some("Twitch-Eventsub-Message-Timestamp"),
            tolerance: Some(Duration::from_secs(600)),
            dedup: header("Twitch-Eventsub-Message-Id"),
            ..plain(Scheme::Hmac)
        },
        Preset::Zoom => Defaults {
            header: Some("x-zm-signature"),
            prefix: Some("v0="),
            signed: Some("v0:{timestamp}:{body}"),
            timestamp_header: Some("x-zm-request-timestamp"),
            ..plain(Scheme::Hmac)
        },
    }
}

pub(crate) fn handshake(p: Option<Preset>) -> Option<Handshake> {
    match p? {
        Preset::SlackEvents => Some(Handshake::SlackUrlVerification),
        Preset::Meta => Some(Handshake::MetaSubscribe),
        Preset::Twitch => Some(Handshake::TwitchCallbackVerification),
        Preset::Zoom => Some(Handshake::ZoomUrlValidation),
        _ => None,
    }
}

pub(crate) fn preset_name(p: Preset) -> &'static str {
    match p {
        Preset::Github => "github",
        Preset::Stripe => "stripe",
        Preset::Slack => "slack",
        Preset::SlackEvents => "slack-events",
        Preset::Gitlab => "gitlab",
        Preset::Shopify => "shopify",
        Preset::StandardWebhooks => "standard-webhooks",
        Preset::Meta => "meta",
        Preset::Twitch => "twitch",
        Preset::Zoom => "zoom",
    }
}

/// What `check-config --explain` prints for one hook: the checks it runs, after
/// its preset (if any) is applied. Names no secret, only where it comes from.
pub(crate) fn explain(h: &HookConfig) -> String {
    use crate::config::scheme_name;
    let v = &h.verify;
    let mut out = format!("hook {:?}", h.name);
    match h.preset {
        Some(p) => out.push_str(&format!(" (preset \"{}\")\n", preset_name(p))),
        None => out.push_str(" (no preset)\n"),
    }
    out.push_str(&format!("  scheme = \"{}\"\n", scheme_name(v.scheme)));
    if matches!(v.scheme, Scheme::Hmac | Scheme::HmacSha256) {
        let alg = match v.algorithm {
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        };
        let enc = match v.encoding {
            Encoding::Hex => "hex",
            Encoding::Base64 => "base64",
        };
        out.push_str(&format!(
            "  algorithm = \"{alg}\"\n  encoding = \"{enc}\"\n"
        ));
    }
    if let Some(x) = &v.header {
        out.push_str(&format!("  header = {x:?}\n"));
    }
    if let Some(x) = &v.prefix {
        out.push_str(&format!("  prefix = {x:?}\n"));
    }
    if let Some(x) = &v.signed {
        out.push_str(&format!("  signed = {x:?}\n"));
    }
    if let Some(x) = &v.timestamp_header {
        out.push_str(&format!("  timestamp_header = {x:?}\n"));
    }
    if v.timestamped() {
        out.push_str(&format!(
            "  tolerance = \"{}\"\n",
            humantime::format_duration(v.tolerance)
        ));
    }
    for (i, s) in v.secrets.iter().enumerate() {
        out.push_str(&format!("  key {i}: {s}\n"));
    }
    if let Some(s) = &v.verify_token {
        out.push_str(&format!("  verify token: {s}\n"));
    }
    match &h.dedup {
        Some(d) => {
            out.push_str(&format!("  dedup key = \"{}\"", d.key));
            if let Some(w) = d.window {
                out.push_str(&format!(", window = \"{}\"", humantime::format_duration(w)));
            }
            out.push('\n');
        }
        None => out.push_str("  dedup: none\n"),
    }
    if v.timestamped() {
        out.push_str(&format!(
            "  replay: the same signed request within \"{}\" (twice the tolerance) answers duplicate\n",
            humantime::format_duration(v.tolerance.saturating_mul(2))
        ));
    } else if let Some(w) = h.replay_window {
        out.push_str(&format!(
            "  replay_window = \"{}\": the same signed content answers duplicate under any delivery id\n",
            humantime::format_duration(w)
        ));
    } else if v.scheme != Scheme::None {
        out.push_str("  replay: not checked (no signed timestamp; set replay_window)\n");
    }
    if let Some(hs) = handshake(h.preset) {
        let what = match hs {
            Handshake::SlackUrlVerification => {
                "Slack url_verification: answered 200 {\"challenge\":…} after the signature check, not spooled"
            }
            Handshake::MetaSubscribe => {
                "Meta GET hub.mode=subscribe: hub.verify_token checked, hub.challenge answered as text, not spooled"
            }
            Handshake::TwitchCallbackVerification => {
                "Twitch webhook_callback_verification: the challenge answered as text after the signature check, not spooled"
            }
            Handshake::ZoomUrlValidation => {
                "Zoom endpoint.url_validation: answered {plainToken, encryptedToken} after the signature check, not spooled"
            }
        };
        out.push_str(&format!("  handshake: {what}\n"));
    }
    match &h.respond {
        Some(r) if r.fixed => out.push_str(&format!(
            "  respond: {} {:?} ({})\n",
            r.status, r.body, r.content_type
        )),
        _ => out.push_str("  respond: 202 {\"id\":…,\"status\":\"queued\"}\n"),
    }
    if let Some(w) = h.respond.as_ref().and_then(|r| r.wait) {
        out.push_str(&format!(
            "  respond.wait: {}, then the answer above\n",
            humantime::format_duration(w)
        ));
    }
    out
}
