//! The control socket: one JSON request line in, one JSON answer out.
//!
//! `{"cmd":"status"}` answers the daemon's state; `{"cmd":"reload"}` asks for
//! a reload and answers when it has an outcome. Unix permissions on the
//! socket (the runtime directory's) decide who may ask.
//!
//! The messages are typed here once, for the daemon and `hookd status` /
//! `hookd reload` alike. Every answer carries `"ok"`: `true` with the
//! request's fields beside it, or `false` with `"error"` saying why.

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::RwLock;

/// What a client asks: `{"cmd":"status"}` or `{"cmd":"reload"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub(crate) enum Request {
    Status,
    Reload,
}

/// A successful answer; which one depends on the request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub(crate) enum Answer {
    Status(Box<StatusReport>),
    Reloaded(Reloaded),
}

/// The answer to `status`: what `hookd status` shows. Operators and tests
/// read these field names in `hookd status --json`; they are an interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StatusReport {
    pub pid: u32,
    /// The lifecycle phase, as `Phase::as_str` words it.
    pub state: String,
    /// The instance id this process leases items under.
    pub instance: String,
    pub spool: String,
    /// This node's name on a PostgreSQL spool (`[spool] node`); absent
    /// for a file spool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub in_flight: Vec<HookCount>,
    /// HTTP requests being received or answered.
    pub requests_in_flight: u64,
    pub depth: Depth,
    /// Pending items of hooks the config no longer has.
    pub orphaned_pending: u64,
    /// The most recent failed attempts, oldest first.
    pub last_errors: Vec<DeliveryError>,
    /// notAfter of the TLS certificate served (unix seconds); absent without TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_expiry: Option<i64>,
}

/// Deliveries running for one hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HookCount {
    pub hook: String,
    pub count: u64,
}

/// Spool depth by hook and state, or why it could not be read: a status
/// answer is still worth having when the spool is in trouble.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Depth {
    Rows(Vec<DepthCount>),
    Unreadable { error: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DepthCount {
    pub hook: String,
    pub state: String,
    pub count: u64,
    /// `default` for a plain hook's items (and filtered requests); absent
    /// from an older hookd's answer.
    #[serde(default = "default_route")]
    pub route: String,
}

fn default_route() -> String {
    crate::spool::DEFAULT_ROUTE.to_string()
}

/// One failed delivery attempt. The plain `hookd status` prints each as its
/// JSON, so the fields stay in the order that line has always had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeliveryError {
    /// RFC 3339, seconds.
    pub at: String,
    pub delivery_id: i64,
    pub error: String,
    pub hook: String,
    #[serde(default = "default_route")]
    pub route: String,
}

/// The answer to a `reload` whose successor took over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Reloaded {
    pub message: String,
}

/// An answer as it goes on the wire: `ok` first, then the answer's own
/// fields or the error.
#[derive(Serialize)]
struct Envelope<'a, T> {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(flatten)]
    body: Option<&'a T>,
}

/// Renders an answer (or a refusal) as its JSON object.
pub(crate) fn encode<T: Serialize>(answer: &Result<T, String>) -> serde_json::Result<String> {
    let envelope = match answer {
        Ok(body) => Envelope {
            ok: true,
            error: None,
            body: Some(body),
        },
        Err(e) => Envelope {
            ok: false,
            error: Some(e.as_str()),
            body: None,
        },
    };
    serde_json::to_string(&envelope)
}

/// Like [`encode`], indented for people.
pub(crate) fn encode_pretty<T: Serialize>(answer: &T) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&Envelope {
        ok: true,
        error: None,
        body: Some(answer),
    })
}

/// Reads an answer line: the answer when `ok`, the daemon's reason when not.
/// The outer error is a line that is not an answer at all.
pub(crate) fn decode<T: DeserializeOwned>(line: &str) -> serde_json::Result<Result<T, String>> {
    #[derive(Deserialize)]
    struct Outcome {
        ok: bool,
        #[serde(default)]
        error: Option<String>,
    }
    let outcome: Outcome = serde_json::from_str(line)?;
    if outcome.ok {
        // The answer's type ignores `ok`, so the same line parses as it.
        Ok(Ok(serde_json::from_str(line)?))
    } else {
        Ok(Err(outcome
            .error
            .unwrap_or_else(|| "unknown error".to_string())))
    }
}

type Answering = Pin<Box<dyn Future<Output = Result<Answer, String>> + Send>>;

/// Answers one request, or says why it will not.
pub(crate) type Handler = Arc<dyn Fn(Request) -> Answering + Send + Sync>;

/// The control socket's path and the file we bound there.
pub(crate) struct Bound {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Bound {
    /// Removes the socket file unless a successor has bound its own there since.
    pub(crate) fn remove_if_ours(&self) -> Result<(), String> {
        match std::fs::metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => std::fs::remove_file(&self.path)
                .map_err(|e| format!("{}: {e}", self.path.display())),
            _ => Ok(()),
        }
    }
}

/// Binds the socket (see `ingress::listeners::bind_unix` for what replaces
/// an existing file) and notes which file it is, for `remove_if_ours`.
pub(crate) fn bind(path: &Path, take_over: bool) -> std::io::Result<(Bound, UnixListener)> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let listener = crate::ingress::listeners::bind_unix(path, take_over)?;
    listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(listener)?;
    let m = std::fs::metadata(path)?;
    Ok((
        Bound {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
        },
        listener,
    ))
}

/// Serves requests until the task is dropped.
///
/// Each answer in progress holds a read guard of `answering`, so shutdown can
/// take the write side to wait for them: a `hookd reload` must get its answer
/// even when this instance has nothing to drain and exits at once.
pub(crate) async fn serve(listener: UnixListener, handler: Handler, answering: Arc<RwLock<()>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let handler = handler.clone();
        let guard = answering.clone().read_owned().await;
        tokio::spawn(async move {
            let _answering = guard;
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(read);
            let read =
                tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
            let answer = match read {
                Ok(Ok(n)) if n > 0 => match serde_json::from_str::<Request>(&line) {
                    Ok(request) => handler(request).await,
                    Err(e) => Err(format!("bad request: {e}")),
                },
                _ => return,
            };
            let Ok(mut out) = encode(&answer) else {
                return;
            };
            out.push('\n');
            let _ = write.write_all(out.as_bytes()).await;
        });
    }
}

/// Sends `request` to the daemon at `path` and waits up to `timeout` for the
/// answer. The outer error is not reaching the daemon or not understanding
/// it; the inner one is the daemon's refusal, in its words.
pub(crate) fn ask<T: DeserializeOwned>(
    path: &Path,
    request: Request,
    timeout: Duration,
) -> Result<Result<T, String>, String> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot reach hookd at {}: {e} (is it running?)",
            path.display()
        )
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut line = serde_json::to_string(&request).map_err(|e| e.to_string())?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("no answer from hookd at {}: {e}", path.display()))?;
    decode(&line).map_err(|e| format!("bad answer from hookd: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> StatusReport {
        StatusReport {
            pid: 42,
            state: "ready".into(),
            instance: "42-00000000000000ff".into(),
            spool: "/var/lib/hookd/spool.db".into(),
            node: None,
            in_flight: vec![HookCount {
                hook: "deploy".into(),
                count: 1,
            }],
            requests_in_flight: 3,
            depth: Depth::Rows(vec![DepthCount {
                hook: "deploy".into(),
                state: "pending".into(),
                count: 7,
                route: "default".into(),
            }]),
            orphaned_pending: 2,
            last_errors: vec![DeliveryError {
                at: "2026-01-01T00:00:00Z".into(),
                delivery_id: 9,
                error: "HTTP 500".into(),
                route: "default".into(),
                hook: "deploy".into(),
            }],
            tls_cert_expiry: None,
        }
    }

    #[test]
    fn requests_are_a_cmd_field() {
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"cmd":"status"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"reload"}"#).unwrap(),
            Request::Reload
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"restart"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{}"#).is_err());
    }

    #[test]
    fn a_status_answer_keeps_the_field_names_operators_read() {
        let line = encode(&Ok(report())).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "depth",
                "in_flight",
                "instance",
                "last_errors",
                "ok",
                "orphaned_pending",
                "pid",
                "requests_in_flight",
                "spool",
                "state"
            ]
        );
        assert_eq!(v["ok"], true);
        assert_eq!(v["depth"][0]["state"], "pending");
        assert_eq!(v["in_flight"][0]["count"], 1);
        assert_eq!(
            serde_json::to_string(&v["last_errors"][0]).unwrap(),
            r#"{"at":"2026-01-01T00:00:00Z","delivery_id":9,"error":"HTTP 500","hook":"deploy","route":"default"}"#
        );
        assert_eq!(decode::<StatusReport>(&line).unwrap(), Ok(report()));
    }

    #[test]
    fn an_unreadable_depth_says_why() {
        let mut r = report();
        r.depth = Depth::Unreadable {
            error: "disk I/O error".into(),
        };
        let line = encode(&Ok(r.clone())).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["depth"], serde_json::json!({"error": "disk I/O error"}));
        assert_eq!(decode::<StatusReport>(&line).unwrap(), Ok(r));
    }

    #[test]
    fn refusals_carry_the_daemons_reason() {
        let line = encode::<Reloaded>(&Err("cannot reload while draining".into())).unwrap();
        assert_eq!(
            line,
            r#"{"ok":false,"error":"cannot reload while draining"}"#
        );
        assert_eq!(
            decode::<Reloaded>(&line).unwrap(),
            Err("cannot reload while draining".to_string())
        );
        assert_eq!(
            decode::<Reloaded>(r#"{"ok":false}"#).unwrap(),
            Err("unknown error".to_string())
        );
        assert!(decode::<Reloaded>("not json").is_err());
        // `ok` without the answer's fields is not an answer.
        assert!(decode::<Reloaded>(r#"{"ok":true}"#).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_socket_answers_typed_requests_and_refuses_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let (bound, listener) = bind(&path, false).unwrap();
        let handler: Handler = Arc::new(|request| {
            Box::pin(async move {
                match request {
                    Request::Status => Ok(Answer::Status(Box::new(report()))),
                    Request::Reload => Err("not now".to_string()),
                }
            })
        });
        let task = tokio::spawn(serve(listener, handler, Arc::new(RwLock::new(()))));

        let client_path = path.clone();
        let (status, reload, raw) = tokio::task::spawn_blocking(move || {
            let limit = Duration::from_secs(5);
            let status = ask::<StatusReport>(&client_path, Request::Status, limit);
            let reload = ask::<Reloaded>(&client_path, Request::Reload, limit);
            let mut s = std::os::unix::net::UnixStream::connect(&client_path).unwrap();
            s.set_read_timeout(Some(limit)).unwrap();
            s.write_all(b"{\"cmd\":\"restart\"}\n").unwrap();
            let mut raw = String::new();
            BufReader::new(s).read_line(&mut raw).unwrap();
            (status, reload, raw)
        })
        .await
        .unwrap();
        assert_eq!(status, Ok(Ok(report())));
        assert_eq!(reload, Ok(Err("not now".to_string())));
        let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(v["ok"], false, "{raw}");
        let error = v["error"].as_str().unwrap();
        assert!(
            error.starts_with("bad request: unknown variant `restart`"),
            "{error}"
        );

        task.abort();
        bound.remove_if_ours().unwrap();
        assert!(!path.exists());
    }
}
