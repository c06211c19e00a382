//! The control socket: one JSON request line in, one JSON answer out.
//!
//! `{"cmd":"status"}` answers the daemon's state; `{"cmd":"reload"}` asks for
//! a reload and answers when it has an outcome. Unix permissions on the
//! socket (the runtime directory's) decide who may ask.

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::RwLock;

type Answer = Pin<Box<dyn Future<Output = serde_json::Value> + Send>>;

/// Answers one command (`"status"`, `"reload"`, …) with a JSON value.
pub type Handler = Arc<dyn Fn(String) -> Answer + Send + Sync>;

/// The control socket's path and the file we bound there.
pub struct Bound {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Bound {
    /// Removes the socket file unless a successor has bound its own there since.
    pub fn remove_if_ours(&self) -> Result<(), String> {
        match std::fs::metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => std::fs::remove_file(&self.path)
                .map_err(|e| format!("{}: {e}", self.path.display())),
            _ => Ok(()),
        }
    }
}

/// Binds the socket (see `ingress::listeners::bind_unix` for what replaces
/// an existing file) and notes which file it is, for `remove_if_ours`.
pub fn bind(path: &Path, take_over: bool) -> std::io::Result<(Bound, UnixListener)> {
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
pub async fn serve(listener: UnixListener, handler: Handler, answering: Arc<RwLock<()>>) {
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
                Ok(Ok(n)) if n > 0 => match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(v) => match v.get("cmd").and_then(|c| c.as_str()) {
                        Some(cmd) => handler(cmd.to_string()).await,
                        None => serde_json::json!({"ok": false, "error": "request needs \"cmd\""}),
                    },
                    Err(e) => {
                        serde_json::json!({"ok": false, "error": format!("bad request: {e}")})
                    }
                },
                _ => return,
            };
            let mut out = serde_json::to_vec(&answer).unwrap_or_default();
            out.push(b'\n');
            let _ = write.write_all(&out).await;
        });
    }
}

/// Sends `cmd` to the daemon at `path` and waits up to `timeout` for the answer.
pub fn request(path: &Path, cmd: &str, timeout: Duration) -> Result<serde_json::Value, String> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot reach hookd at {}: {e} (is it running?)",
            path.display()
        )
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut req =
        serde_json::to_vec(&serde_json::json!({ "cmd": cmd })).map_err(|e| e.to_string())?;
    req.push(b'\n');
    stream
        .write_all(&req)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("no answer from hookd at {}: {e}", path.display()))?;
    serde_json::from_str(&line).map_err(|e| format!("bad answer from hookd: {e}"))
}
