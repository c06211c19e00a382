//! Shared by the integration tests: start the real `hookd` binary, talk HTTP
//! to it over real sockets, watch its notify messages on a real datagram
//! socket, and run a real upstream server. Every wait has a deadline.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const BIN: &str = env!("CARGO_BIN_EXE_hookd");
pub const SECRET: &str = "It's a Secret to Everybody";

/// `sha256=<hex>` as GitHub sends it.
pub fn github_sig(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Polls `f` every 20 ms until it returns Some or `limit` passes.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long a test waits for one read on a socket before it fails: longer
/// than any answer should take here, short enough that a hang is reported.
pub const READ_DEADLINE: Duration = Duration::from_secs(30);

/// A TCP connection whose reads and writes give up after [`READ_DEADLINE`],
/// so a test that waits on hookd fails instead of hanging.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(READ_DEADLINE)).unwrap();
    s.set_write_timeout(Some(READ_DEADLINE)).unwrap();
    s
}

/// A free port on 127.0.0.1, below the kernel's ephemeral range
/// (`ip_local_port_range`, 32768-60999 on Debian): a port from that range
/// that a hookd under test gives up while it restarts can be taken by any
/// client socket's `connect`, and the restart then fails with EADDRINUSE
/// (seen once in a power-cut scenario). Never the same port twice in one
/// test process; the first candidate depends on the pid.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (LOW + n % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

/// Writes a secret file readable by its owner only (hookd refuses looser
/// modes) and returns its path for the config.
pub fn write_secret(dir: &Path, name: &str, value: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, value).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    p.display().to_string()
}

/// A unix datagram socket standing in for systemd's `NOTIFY_SOCKET`:
/// it records every message with the time it arrived.
pub struct NotifySocket {
    pub path: PathBuf,
    msgs: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl NotifySocket {
    pub fn new(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        // Each recv gives up now and then so the recorder can see that its
        // owner is gone and end, instead of blocking for the process's life.
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let m = msgs.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while Arc::strong_count(&m) > 1 {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        let text = String::from_utf8_lossy(&buf[..n]).to_string();
                        m.lock().unwrap().push((Instant::now(), text));
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
        });
        NotifySocket { path, msgs }
    }

    pub fn messages(&self) -> Vec<(Instant, String)> {
        self.msgs.lock().unwrap().clone()
    }

    /// Waits for a message with a line equal to `line` (e.g. `READY=1`).
    pub fn wait_line(&self, line: &str, limit: Duration) -> (Instant, String) {
        wait_for(limit, line, || {
            self.messages()
                .into_iter()
                .find(|(_, m)| m.lines().any(|l| l == line))
        })
    }

    /// Every line starting with `prefix`, with its arrival time.
    pub fn lines_with(&self, prefix: &str) -> Vec<(Instant, String)> {
        self.messages()
            .into_iter()
            .flat_map(|(t, m)| {
                m.lines()
                    .filter(|l| l.starts_with(prefix))
                    .map(|l| (t, l.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// A hookd under test, in its own directory with its own spool.
pub struct Hookd {
    /// The binary `start` runs; a test may point it at a copy.
    pub bin: PathBuf,
    /// Extra environment for the daemon.
    pub env: Vec<(String, String)>,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub port: u16,
    /// The port of the listener that serves only `/metrics` and the probes.
    pub metrics_port: u16,
    pub child: Option<Child>,
    pub notify: NotifySocket,
    pub log: PathBuf,
}

impl Hookd {
    /// Writes `hooks_toml` (plus a `[server]` on a free port and the spool in
    /// `dir`) and the GitHub secret file; does not start anything.
    pub fn configure(dir: &Path, extra_toml: &str) -> Hookd {
        Hookd::configure_with(dir, "", extra_toml)
    }

    /// As [`Hookd::configure`], with `server_toml` added to the `[server]` table.
    pub fn configure_with(dir: &Path, server_toml: &str, extra_toml: &str) -> Hookd {
        let spool = format!("path = \"{}/spool.db\"", dir.display());
        Hookd::configure_spool(dir, server_toml, &spool, extra_toml)
    }

    /// As [`Hookd::configure`], on the PostgreSQL spool at `url` as node
    /// `node` (`spool_toml` adds to the `[spool]` table).
    pub fn configure_pg(
        dir: &Path,
        url: &str,
        node: &str,
        spool_toml: &str,
        extra_toml: &str,
    ) -> Hookd {
        let spool = format!("url = \"{url}\"\nnode = \"{node}\"\n{spool_toml}");
        Hookd::configure_spool(dir, "", &spool, extra_toml)
    }

    /// The config with `spool_toml` as the whole `[spool]` table.
    pub fn configure_spool(
        dir: &Path,
        server_toml: &str,
        spool_toml: &str,
        extra_toml: &str,
    ) -> Hookd {
        let port = free_port();
        let metrics_port = loop {
            let p = free_port();
            if p != port {
                break p;
            }
        };
        let secret = dir.join("github.secret");
        std::fs::write(&secret, SECRET).unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let config = dir.join("hookd.toml");
        let text = format!(
            r#"[server]
listen = ["127.0.0.1:{port}"]
metrics_listen = ["127.0.0.1:{metrics_port}"]
read_timeout = "2s"
control_socket = "{dir}/control.sock"
{server_toml}

[spool]
{spool_toml}

{extra_toml}
"#,
            dir = dir.display()
        );
        std::fs::write(&config, text).unwrap();
        Hookd {
            bin: PathBuf::from(BIN),
            env: Vec::new(),
            dir: dir.to_path_buf(),
            config,
            port,
            metrics_port,
            child: None,
            notify: NotifySocket::new(dir),
            log: dir.join("hookd.log"),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Where `/metrics` is served (not on the webhook listener).
    pub fn metrics_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.metrics_port))
    }

    pub fn spool_path(&self) -> PathBuf {
        self.dir.join("spool.db")
    }

    /// The command that `start` runs; tests may add to it.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("NOTIFY_SOCKET", &self.notify.path)
            .env("HOOKD_LOG", "info,hookd=debug")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("JOURNAL_STREAM")
            .env_remove("STATE_DIRECTORY")
            .env_remove("RUNTIME_DIRECTORY")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .unwrap(),
            );
        c
    }

    /// Starts hookd and waits for `READY=1` (a new one after earlier runs).
    pub fn start(&mut self) {
        let before = self.notify.lines_with("READY=1").len();
        let child = self.command().spawn().unwrap();
        self.child = Some(child);
        wait_for(Duration::from_secs(20), "READY=1", || {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "hookd exited with {st} before READY=1; log:\n{}",
                    self.log_text()
                );
            }
            (self.notify.lines_with("READY=1").len() > before).then_some(())
        });
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let st = wait_for(limit, "hookd to exit", || child.try_wait().unwrap());
        self.child = None;
        st
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// POSTs a GitHub-signed body to `/hooks/{hook}`.
    pub fn post_signed(&self, hook: &str, body: &[u8], extra: &[(&str, &str)]) -> Response {
        let sig = github_sig(SECRET, body);
        let mut headers = vec![
            ("X-Hub-Signature-256", sig.as_str()),
            ("Content-Type", "application/json"),
        ];
        headers.extend_from_slice(extra);
        request(
            self.addr(),
            "POST",
            &format!("/hooks/{hook}"),
            &headers,
            body,
        )
        .unwrap()
    }

    /// `hookd <args> --config <ours>`, returning (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env_remove("STATE_DIRECTORY")
            .env_remove("RUNTIME_DIRECTORY")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// `hookd spool ls --state STATE --json`: the items in that state.
    pub fn items(&self, state: &str) -> Vec<serde_json::Value> {
        let (code, out, err) = self.cli(&[
            "spool", "ls", "--state", state, "--json", "--limit", "100000",
        ]);
        assert_eq!(code, 0, "spool ls failed: {err}");
        serde_json::from_str(&out).unwrap()
    }

    /// `hookd spool stats --json` as JSON.
    /// Items in the spool, whatever their state (`spool stats`' total).
    pub fn spool_total(&self) -> u64 {
        self.spool_stats()["total"].as_u64().expect("stats.total")
    }

    pub fn spool_stats(&self) -> serde_json::Value {
        let (code, out, err) = self.cli(&["spool", "stats", "--json"]);
        assert_eq!(code, 0, "spool stats failed: {err}");
        serde_json::from_str(&out).unwrap()
    }
}

impl Hookd {
    /// The pid of the newest successor a hand-off announced (`MAINPID=`).
    pub fn successor_pid(&self) -> i32 {
        self.notify
            .lines_with("MAINPID=")
            .last()
            .map(|(_, l)| l["MAINPID=".len()..].parse().expect("MAINPID= is a pid"))
            .expect("no MAINPID= sent: no successor announced itself")
    }
}

/// Makes the test process a child subreaper (as systemd is for a unit): a
/// hand-off successor whose parent exits is reparented to us, so
/// [`stop_successor`] can reap it.
pub fn subreaper() {
    // Safety: a plain prctl that sets a flag of this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER");
}

/// SIGTERMs a hand-off's successor and waits, up to `limit`, until it has
/// exited and been reaped. It is our child because the test process is a
/// subreaper (`PR_SET_CHILD_SUBREAPER`), so `waitpid` sees it.
pub fn stop_successor(pid: i32, limit: Duration) -> nix::sys::wait::WaitStatus {
    let pid = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_for(
        limit,
        "the successor to exit",
        || match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => None,
            Ok(st) => Some(st),
            Err(e) => panic!("waitpid {pid}: {e}"),
        },
    )
}

impl Drop for Hookd {
    /// Kills what this test started, successors of a hand-off included (they
    /// are known by their `MAINPID=` and still name our config file), so a
    /// failing test leaves no daemon behind.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let ours = self.config.to_string_lossy().to_string();
        for (_, line) in self.notify.lines_with("MAINPID=") {
            let Ok(pid) = line["MAINPID=".len()..].parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&ours) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A GitHub-signed POST of `body` to `/hooks/gh` on a new connection.
pub fn post_gh(addr: SocketAddr, body: &[u8]) -> std::io::Result<Response> {
    let sig = github_sig(SECRET, body);
    request(
        addr,
        "POST",
        "/hooks/gh",
        &[("X-Hub-Signature-256", &sig)],
        body,
    )
}

/// A signed POST to `/hooks/gh` on a reused keep-alive connection, as a
/// pooling client sends it; opens a new one when the server said `close`.
pub fn post_gh_keep_alive(
    conn: &mut Option<BufReader<TcpStream>>,
    addr: SocketAddr,
    body: &[u8],
) -> std::io::Result<Response> {
    if conn.is_none() {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(READ_DEADLINE))?;
        *conn = Some(BufReader::new(s));
    }
    let Some(c) = conn.as_mut() else {
        unreachable!()
    };
    let sig = github_sig(SECRET, body);
    let res = write_request(
        c.get_mut(),
        "POST",
        "/hooks/gh",
        &[("X-Hub-Signature-256", &sig)],
        body,
        false,
    )
    .and_then(|()| read_response(c));
    let reusable = matches!(&res, Ok(r) if !r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")));
    if !reusable {
        *conn = None;
    }
    res
}

/// One request on a new connection (`Connection: close`).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(READ_DEADLINE))?;
    write_request(&mut s, method, path, headers, body, true)?;
    read_response(&mut BufReader::new(s))
}

pub fn write_request(
    s: &mut impl Write,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) -> std::io::Result<()> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    let mut has_len = false;
    for (n, v) in headers {
        has_len |=
            n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding");
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !has_len && (method == "POST" || !body.is_empty()) {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if close {
        req.push_str("Connection: close\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    s.flush()
}

/// An HTTP/1 message: start line, headers, body.
type Message = (String, Vec<(String, String)>, Vec<u8>);

/// Reads one HTTP/1 message whose body has a Content-Length.
/// `None` when the peer closed before a start line.
fn read_message(r: &mut impl BufRead) -> std::io::Result<Option<Message>> {
    let mut start = String::new();
    if r.read_line(&mut start)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    let mut len = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed inside the headers",
            ));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            if n.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
            headers.push((n.to_string(), v.trim().to_string()));
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(Some((start, headers, body)))
}

pub fn read_response(r: &mut impl BufRead) -> std::io::Result<Response> {
    let Some((line, headers, body)) = read_message(r)? else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    };
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A request the upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How the upstream answers the n-th request (0-based): (status, delay).
pub type Behaviour = Arc<dyn Fn(usize, &Received) -> (u16, Duration) + Send + Sync>;

/// A real HTTP server on 127.0.0.1 that records what it receives.
pub struct Upstream {
    pub addr: SocketAddr,
    pub got: Arc<Mutex<Vec<Received>>>,
}

impl Upstream {
    pub fn start(behaviour: Behaviour) -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Received>>> = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { break };
                let (g, b) = (g.clone(), behaviour.clone());
                std::thread::spawn(move || serve_upstream(s, g, b));
            }
        });
        Upstream { addr, got }
    }

    /// Answers 200 at once.
    pub fn ok() -> Upstream {
        Upstream::start(Arc::new(|_, _| (200, Duration::ZERO)))
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The `Hookd-Delivery-Id`s received so far.
    pub fn ids(&self) -> Vec<i64> {
        self.received()
            .iter()
            .filter_map(|r| r.header("hookd-delivery-id").and_then(|v| v.parse().ok()))
            .collect()
    }
}

fn serve_upstream(s: TcpStream, got: Arc<Mutex<Vec<Received>>>, behaviour: Behaviour) {
    // hookd keeps idle connections to its upstream open; longer than any
    // test runs, so only a connection left behind is cut.
    if s.set_read_timeout(Some(Duration::from_secs(300))).is_err() {
        return;
    }
    let mut w = match s.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(s);
    loop {
        let Ok(Some((_, headers, body))) = read_message(&mut r) else {
            return;
        };
        let rec = Received {
            at: Instant::now(),
            headers,
            body,
        };
        let n = {
            let mut g = got.lock().unwrap();
            g.push(rec.clone());
            g.len() - 1
        };
        let (status, delay) = behaviour(n, &rec);
        std::thread::sleep(delay);
        let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok");
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// A `[[hook]]` named `name` with GitHub signatures forwarding to `url`.
pub fn forward_hook(dir: &Path, name: &str, url: &str, extra: &str) -> String {
    format!(
        r#"[[hook]]
name = "{name}"
verify = {{ scheme = "github", secret_file = "{}/github.secret" }}
action = {{ forward = "{url}", timeout = "10s" }}
{extra}
"#,
        dir.display()
    )
}

/// Makes the child see `fds` as 3, 4, … with LISTEN_* set for its own pid.
/// `LISTEN_PID` must be the pid after exec, so a shell sets it: `exec` keeps the pid.
pub fn activate(h: &Hookd, fds: &[std::os::fd::RawFd], names: &str) -> Command {
    let inner = h.command();
    let mut c = Command::new("/bin/sh");
    let mut line = String::from("LISTEN_PID=$$ exec \"$0\"");
    for (i, _) in inner.get_args().enumerate() {
        line.push_str(&format!(" \"${}\"", i + 1));
    }
    c.arg("-c")
        .arg(line)
        .arg(inner.get_program())
        .args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.env("LISTEN_FDS", fds.len().to_string())
        .env("LISTEN_FDNAMES", names);
    c.stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&h.log).unwrap());
    let fds = fds.to_vec();
    // Safety: only async-signal-safe calls (dup2/fcntl) between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut c, move || {
            // First move every fd above the target range, then into place.
            let mut tmp = Vec::new();
            for &fd in &fds {
                let t = libc::fcntl(fd, libc::F_DUPFD, 100);
                if t < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                tmp.push(t);
            }
            for (i, t) in tmp.into_iter().enumerate() {
                if libc::dup2(t, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    c
}
