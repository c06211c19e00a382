//! Target (b): `Config::parse` on arbitrary text.

use std::path::Path;

use crate::config::Config;
use crate::ingress::verify::Verifier;

/// One fuzz input; panics when an invariant breaks.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, Path::new("fuzz.toml")) {
        // An operator must be told which file is wrong.
        Err(e) => assert!(e.0.starts_with("fuzz.toml"), "error without the file: {e}"),
        Ok(cfg) => {
            let _ = cfg.warnings();
            let _ = cfg.secret_env_vars();
            for hook in &cfg.hooks {
                let h = hook.get_ref();
                // Not `allow_list()`: it reads a file the input names.
                // What `serve` builds from a valid config: any template or
                // header name the parser let through must build or be refused,
                // never panic.
                let keys = match h.verify.scheme {
                    crate::config::Scheme::None => Vec::new(),
                    _ => vec![b"whsec_ZnV6ei1rZXk=".to_vec()],
                };
                let _ = Verifier::new(&h.verify, keys);
            }
        }
    }
}
