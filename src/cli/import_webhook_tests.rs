use std::path::Path;

use super::*;

fn conv(text: &str, name: &str) -> Imported {
    match convert(text, Path::new(name), Path::new("/s")) {
        Ok(i) => i,
        Err(e) => panic!("{name} did not convert: {e}"),
    }
}

fn hook_table(toml_text: &str) -> toml::Table {
    let v: toml::Table = match toml_text.parse() {
        Ok(v) => v,
        Err(e) => panic!("output is not TOML: {e}\n{toml_text}"),
    };
    match v
        .get("hook")
        .and_then(|h| h.as_array())
        .and_then(|a| a.first())
    {
        Some(toml::Value::Table(t)) => t.clone(),
        _ => panic!("no [[hook]] in\n{toml_text}"),
    }
}

/// webhook's documented GitHub example: signature + branch rule + two arguments.
const GITHUB_JSON: &str = r#"[
  {
    "id": "redeploy",
    "execute-command": "/var/scripts/redeploy.sh",
    "command-working-directory": "/var/webhook",
    "pass-arguments-to-command": [
      { "source": "payload", "name": "head_commit.id" },
      { "source": "payload", "name": "pusher.name" },
      { "source": "string", "name": "--fast" },
      { "source": "string", "name": "{literal}" }
    ],
    "pass-environment-to-command": [
      { "source": "header", "name": "X-GitHub-Event" },
      { "source": "payload", "name": "repository.full_name", "envname": "REPO" }
    ],
    "response-message": "Executing redeploy script",
    "trigger-rule": {
      "and": [
        { "match": { "type": "payload-hmac-sha256", "secret": "mysecret",
                     "parameter": { "source": "header", "name": "X-Hub-Signature-256" } } },
        { "match": { "type": "value", "value": "refs/heads/master",
                     "parameter": { "source": "payload", "name": "ref" } } }
      ]
    }
  }
]"#;

#[test]
fn a_github_hook_becomes_the_github_scheme_a_when_rule_and_placeholders() {
    let out = conv(GITHUB_JSON, "hooks.json");
    let h = hook_table(&out.toml);
    assert_eq!(h["name"].as_str(), Some("redeploy"));
    let verify = h["verify"].as_table().unwrap();
    assert_eq!(verify["scheme"].as_str(), Some("github"));
    assert_eq!(verify["secret_file"].as_str(), Some("/s/redeploy.secret"));
    assert!(
        !out.toml.contains("mysecret"),
        "the secret must not be printed"
    );
    assert_eq!(
        out.secrets,
        vec![(PathBuf::from("/s/redeploy.secret"), "mysecret".to_string())]
    );
    let when = h["when"].as_array().unwrap();
    assert_eq!(when.len(), 1);
    assert_eq!(when[0]["field"].as_str(), Some("payload.ref"));
    assert_eq!(when[0]["eq"].as_str(), Some("refs/heads/master"));
    let action = h["action"].as_table().unwrap();
    let argv: Vec<&str> = action["exec"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        argv,
        [
            "/var/scripts/redeploy.sh",
            "{payload.head_commit.id}",
            "{payload.pusher.name}",
            "--fast",
            "{{literal}}"
        ]
    );
    assert_eq!(action["cwd"].as_str(), Some("/var/webhook"));
    let env = action["env"].as_table().unwrap();
    assert_eq!(
        env["HOOK_X-GitHub-Event"].as_str(),
        Some("{header.X-GitHub-Event}")
    );
    assert_eq!(env["REPO"].as_str(), Some("{payload.repository.full_name}"));
    assert_eq!(action["missing"].as_str(), Some("empty"));
    let respond = h["respond"].as_table().unwrap();
    assert_eq!(respond["status"].as_integer(), Some(200));
    assert_eq!(respond["body"].as_str(), Some("Executing redeploy script"));
    assert!(h.get("enabled").is_none());
}

#[test]
fn nested_or_not_regex_and_ip_whitelist_translate_with_warnings() {
    let yaml = r#"
- id: mixed
  execute-command: /bin/echo
  trigger-rule-mismatch-http-response-code: 204
  trigger-rule:
    and:
      - or:
          - match: { type: regex, regex: "^refs/heads/(main|dev)$", parameter: { source: payload, name: ref } }
          - and:
              - match: { type: value, value: "tag", parameter: { source: query, name: kind } }
              - match: { type: regex, regex: "v[0-9]+", parameter: { source: header, name: X-Tag } }
      - not:
          match: { type: value, value: "bot", parameter: { source: payload, name: sender.type } }
      - match: { type: ip-whitelist, ip-range: "10.0.0.0/8 192.168.1.1" }
"#;
    let out = conv(yaml, "hooks.yaml");
    let h = hook_table(&out.toml);
    let when = h["when"].as_array().unwrap();
    assert_eq!(when.len(), 3, "{}", out.toml);
    let any = when[0]["any"].as_array().unwrap();
    assert_eq!(any[0]["matches"].as_str(), Some("^refs/heads/(main|dev)$"));
    let all = any[1]["all"].as_array().unwrap();
    assert_eq!(all[0]["field"].as_str(), Some("query.kind"));
    assert_eq!(
        all[1]["matches"].as_str(),
        Some("(?s:.*)(?:v[0-9]+)(?s:.*)")
    );
    assert_eq!(
        when[1]["not"]["field"].as_str(),
        Some("payload.sender.type")
    );
    assert_eq!(when[2]["field"].as_str(), Some("request.remote_ip"));
    assert_eq!(
        when[2]["cidr"].as_array().unwrap().len(),
        2,
        "ip-range is split on spaces"
    );
    assert_eq!(h["filtered_status"].as_integer(), Some(204));
    assert_eq!(h["verify"]["scheme"].as_str(), Some("none"));
    let warned = |s: &str| out.warnings.iter().any(|w| w.contains(s));
    assert!(warned("unanchored"), "{:?}", out.warnings);
    assert!(warned("`not` over a field"), "{:?}", out.warnings);
    assert!(warned("unauthenticated"), "{:?}", out.warnings);
    assert!(warned("-hotreload"), "{:?}", out.warnings);
    assert!(out
        .warnings
        .iter()
        .all(|w| w.contains("\"mixed\"") || w.contains("hotreload")));
}

#[test]
fn a_signature_under_or_or_scalr_disables_the_hook_rather_than_dropping_the_check() {
    let json = r#"[
      { "id": "soft", "execute-command": "/bin/true",
        "trigger-rule": { "or": [
          { "match": { "type": "payload-hmac-sha1", "secret": "k",
                       "parameter": { "source": "header", "name": "X-Hub-Signature" } } },
          { "match": { "type": "value", "value": "x", "parameter": { "source": "query", "name": "t" } } } ] } },
      { "id": "scalr", "execute-command": "/bin/true",
        "trigger-rule": { "match": { "type": "scalr-signature", "secret": "k" } } }
    ]"#;
    let out = conv(json, "hooks.json");
    let v: toml::Table = out.toml.parse().unwrap();
    let hooks = v["hook"].as_array().unwrap();
    for h in hooks {
        assert_eq!(h["enabled"].as_bool(), Some(false), "{}", out.toml);
    }
    assert!(out
        .warnings
        .iter()
        .any(|w| w.contains("\"soft\"") && w.contains("enabled = false")));
    assert!(out
        .warnings
        .iter()
        .any(|w| w.contains("\"scalr\"") && w.contains("scalr-signature")));
}

#[test]
fn other_signatures_map_to_the_generic_hmac_scheme_and_templates_to_env_or_credentials() {
    let json = r#"[
      { "id": "legacy", "execute-command": "/bin/true",
        "trigger-rule": { "match": { "type": "payload-hmac-sha1", "secret": "{{ getenv \"LEGACY_SECRET\" }}",
                     "parameter": { "source": "header", "name": "X-Hub-Signature" } } } },
      { "id": "sha512", "execute-command": "/bin/true", "include-command-output-in-response": true,
        "trigger-rule": { "match": { "type": "payload-hmac-sha512", "secret": "{{ credential `sig` }}",
                     "parameter": { "source": "header", "name": "X-Signature" } } } }
    ]"#;
    let out = conv(json, "hooks.json");
    let v: toml::Table = out.toml.parse().unwrap();
    let hooks = v["hook"].as_array().unwrap();
    let legacy = hooks[0]["verify"].as_table().unwrap();
    assert_eq!(legacy["scheme"].as_str(), Some("hmac"));
    assert_eq!(legacy["algorithm"].as_str(), Some("sha1"));
    assert_eq!(legacy["prefix"].as_str(), Some("sha1="));
    assert_eq!(legacy["secret_env"].as_str(), Some("LEGACY_SECRET"));
    let s512 = hooks[1]["verify"].as_table().unwrap();
    assert_eq!(s512["algorithm"].as_str(), Some("sha512"));
    assert_eq!(s512["header"].as_str(), Some("X-Signature"));
    assert_eq!(s512["secret_credential"].as_str(), Some("sig"));
    assert_eq!(hooks[1]["respond"]["wait"].as_str(), Some("25s"));
    assert!(out.secrets.is_empty());
}

#[test]
fn a_file_that_is_not_a_hooks_file_is_an_error_naming_it() {
    let e = convert("[{\"id\": 3}]", Path::new("h.json"), Path::new("/s")).unwrap_err();
    assert!(e.starts_with("h.json:"), "{e}");
    let e = convert(
        "- id: a\n  execute-command: [1, 2\n",
        Path::new("h.yaml"),
        Path::new("/s"),
    )
    .unwrap_err();
    assert!(e.starts_with("h.yaml:"), "{e}");
}
