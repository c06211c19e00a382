//! Target (c): the whole ingress over an in-memory connection into a real spool.
//!
//! The input is what a client sends on one connection (several pipelined
//! requests, chunked bodies, garbage). It goes through hyper's HTTP/1 server
//! into hookd's request handler with a real config, real verifiers and a real
//! spool file, and the client's side is read to the end. hookd's own
//! connection loop (limits, drain, the write deadline) needs a socket fd, so
//! the harness serves the connection with hyper's builder set as that loop
//! sets it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;
use crate::ingress::access::Peer;
use crate::ingress::budget::Budget;
use crate::ingress::routes::{handle, GaugeSource, Ingress, Role};
use crate::metrics::Metrics;
use crate::spool::{Spool, SpoolOptions, Store};

/// Hook names the seed corpus and the dictionary use.
const CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:1"]
max_body = "4KiB"
max_buffered = "64KiB"
read_timeout = "2s"
metrics_on_webhook_listener = true

[[hook]]
name = "open"
verify = { scheme = "none" }
dedup_header = "X-Id"
action = { forward = "http://127.0.0.1:9/" }

[[hook]]
name = "json"
verify = { scheme = "none" }
require_json = true
max_body = "256"
action = { forward = "http://127.0.0.1:9/" }

[[hook]]
name = "gh"
preset = "github"
verify = { secret_file = "@DIR@/gh.secret" }
action = { forward = "http://127.0.0.1:9/" }

[[hook]]
name = "tok"
verify = { scheme = "bearer", token_file = "@DIR@/tok.secret" }
action = { exec = ["/bin/true"] }

[[hook]]
name = "slack"
preset = "slack-events"
verify = { secret_file = "@DIR@/gh.secret" }
action = { forward = "http://127.0.0.1:9/" }

[[hook]]
name = "meta"
preset = "meta"
verify = { secret_file = "@DIR@/gh.secret", verify_token_file = "@DIR@/tok.secret" }
action = { forward = "http://127.0.0.1:9/" }

[[hook]]
name = "off"
enabled = false
verify = { scheme = "none" }
action = { forward = "http://127.0.0.1:9/" }

[[hook]]
name = "lan"
verify = { scheme = "none" }
allow_ips = ["10.0.0.0/8"]
action = { forward = "http://127.0.0.1:9/" }
"#;

/// The secret of `gh`, `slack` and `meta`, and the token of `tok` (also
/// Meta's verify token), for seeds that pass the checks.
pub const HOOK_SECRET: &str = "fuzz-hook-secret";
pub const HOOK_TOKEN: &str = "fuzz-hook-token";

/// What every input shares: one runtime, one spool, one set of routes.
pub struct IngressHarness {
    rt: tokio::runtime::Runtime,
    ing: Arc<Ingress>,
    budget: Arc<Budget>,
}

impl IngressHarness {
    /// Writes the secrets and opens the spool in `dir`, which must exist.
    pub fn new(dir: &Path) -> IngressHarness {
        use std::os::unix::fs::PermissionsExt;
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).expect("fuzz harness: write a secret");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                .expect("fuzz harness: chmod a secret");
        };
        write("gh.secret", HOOK_SECRET);
        write("tok.secret", HOOK_TOKEN);
        let dir_text = dir.to_str().expect("fuzz harness: a UTF-8 temp dir");
        let text = CONFIG.replace("@DIR@", dir_text);
        let cfg = Config::parse(&text, Path::new("fuzz.toml")).expect("fuzz harness config");
        let routes = Ingress::routes(&cfg).expect("fuzz harness routes");
        let spool = Spool::open(SpoolOptions {
            store: Store::File(dir.join("spool.db")),
            instance_id: format!("fuzz-{}", std::process::id()),
            max_batch: 1024,
            on_commit: None,
        })
        .expect("fuzz harness: open the spool");
        let budget = Budget::new(cfg.server.max_buffered);
        let gauges: GaugeSource = Arc::new(|_| {});
        let ing = Arc::new(Ingress::new(
            &cfg,
            Role::Webhooks { metrics: true },
            routes,
            spool,
            Arc::new(Metrics::default()),
            Arc::new(AtomicBool::new(true)),
            gauges,
            &budget,
            &Arc::default(),
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("fuzz harness: a tokio runtime");
        IngressHarness { rt, ing, budget }
    }

    fn spooled(&self) -> u64 {
        let depth = self.rt.block_on(self.ing.spool.depth());
        depth
            .expect("fuzz harness: spool depth")
            .iter()
            .map(|r| r.count)
            .sum()
    }

    /// One fuzz input: the bytes a client sends on one connection before it
    /// closes its side; answers how many 202s it got. Panics when an
    /// invariant breaks.
    pub fn run(&self, data: &[u8]) -> u64 {
        let before = self.spooled();
        let out = self.rt.block_on(self.exchange(data));
        let after = self.spooled();
        let acked = count_status(&out, b"202");
        // Never a 202 for a webhook that is not durable. (An item can be
        // durable without its 202 reaching the client: the client closed
        // first, and will send it again.)
        assert!(
            after - before >= acked,
            "{acked} answered 202 but only {} spooled",
            after - before
        );
        assert_eq!(count_status(&out, b"500"), 0, "a 500 answer");
        // Every body reservation is given back when its answer is built or
        // its connection goes.
        assert_eq!(self.budget.used(), 0, "body budget leaked");
        acked
    }

    async fn exchange(&self, data: &[u8]) -> Vec<u8> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let ing = self.ing.clone();
        let conn = tokio::spawn(async move {
            let svc = service_fn(move |mut req| {
                // As the connection loop does: the peer, for allow_ips.
                req.extensions_mut()
                    .insert(Peer(Some(IpAddr::V4(Ipv4Addr::LOCALHOST))));
                let ing = ing.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(ing, req).await) }
            });
            // As ingress::server sets it for the default max_header_bytes,
            // but for half_close: the harness closes its side after its last
            // byte (it cannot know when the answers are complete), and
            // without half_close hyper drops the request in progress at that
            // EOF, so the last request of every input would go unanswered.
            let _ = http1::Builder::new()
                .half_close(true)
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(3))
                .max_header_size(64 * 1024)
                .max_buf_size(72 * 1024)
                .serve_connection(TokioIo::new(server), svc)
                .await;
        });
        let (mut rd, mut wr) = tokio::io::split(client);
        let send = async {
            let _ = wr.write_all(data).await;
            let _ = wr.shutdown().await;
        };
        let receive = async {
            let mut out = Vec::new();
            let _ = rd.read_to_end(&mut out).await;
            out
        };
        let both = async { tokio::join!(send, receive).1 };
        // Bounded: every wait inside has its own timer, so this is a hang.
        let out = tokio::time::timeout(Duration::from_secs(20), both)
            .await
            .expect("the connection neither answered nor closed within 20s");
        let _ = tokio::time::timeout(Duration::from_secs(20), conn)
            .await
            .expect("the connection task did not end within 20s");
        out
    }
}

/// Status lines with `code` in a client's view of a connection.
fn count_status(out: &[u8], code: &[u8]) -> u64 {
    let mut line = b"HTTP/1.1 ".to_vec();
    line.extend_from_slice(code);
    line.push(b' ');
    let mut n = 0;
    let mut i = 0;
    while let Some(at) = find(&out[i..], &line) {
        let pos = i + at;
        if pos == 0 || out[..pos].ends_with(b"\n") {
            n += 1;
        }
        i = pos + line.len();
    }
    n
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Builds the harness once per process and runs one input on it. The
/// directory stays behind: a fuzzer process ends by crashing or being killed.
#[cfg(fuzzing)]
pub fn ingress(data: &[u8]) {
    static HARNESS: std::sync::OnceLock<(IngressHarness, std::path::PathBuf)> =
        std::sync::OnceLock::new();
    let (h, _) = HARNESS.get_or_init(|| {
        // tmpfs when there is one: fsync is then free, and the fuzzer tries
        // inputs instead of waiting on the disk.
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("hookd-fuzz-ingress-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fuzz harness: create its directory");
        (IngressHarness::new(&dir), dir)
    });
    let _ = h.run(data);
}
