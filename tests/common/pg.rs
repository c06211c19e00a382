//! A throw-away PostgreSQL cluster for tests: `initdb` into a temp dir, a
//! server on 127.0.0.1 at a free port plus a unix socket in that dir, with
//! the durability settings the PostgreSQL spool relies on (`fsync=on`,
//! `synchronous_commit=on`) and `pg_stat_statements` loaded so a test can
//! count statements. Stopped with `pg_ctl stop -m immediate` (a crash, as
//! far as PostgreSQL knows) when dropped; the temp dir goes with it.
//!
//! PostgreSQL refuses to run as root and the tests run as root, so as root
//! the cluster belongs to a system user, [`PG_USER`], created on first use.
//!
//! Use it with `#[path = "common/pg.rs"] mod pg;` from a test binary, or with
//! a `#[path]` from the spool's unit tests: it needs nothing else of tests/common.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The system user that owns the clusters when the tests run as root.
pub const PG_USER: &str = "hookd-test";

/// The role and database the tests use (the role is the superuser).
pub const ROLE: &str = "hookd";
pub const DATABASE: &str = "hookd";

/// How long `pg_ctl` may take to start or stop the server (it waits for
/// crash recovery after an immediate stop too).
const PG_CTL_LIMIT_SECS: u32 = 20;

/// Settings every cluster gets, whatever the test adds.
const BASE_CONF: &str = "\
listen_addresses = '127.0.0.1'
fsync = on
synchronous_commit = on
full_page_writes = on
shared_preload_libraries = 'pg_stat_statements'
max_connections = 100
logging_collector = off
log_min_messages = warning
";

/// A running (or, between [`Pg::stop_immediate`] and [`Pg::start`],
/// stopped) private cluster.
pub struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    pub port: u16,
    password: String,
    running: bool,
    /// From `initdb` to a database that accepts connections, for the report.
    pub started_in: Duration,
}

impl Pg {
    /// A new cluster with the base settings, running and ready.
    pub fn start_new() -> Pg {
        Pg::start_with("")
    }

    /// As [`Pg::start_new`], with `extra_conf` (postgresql.conf lines) added
    /// after the base settings, so they win.
    ///
    /// The data dir is a copy of a template cluster (see [`template`]),
    /// flushed with one `syncfs`: `initdb` costs seconds of CPU here, and
    /// a data dir whose files are still dirty makes crash recovery fsync
    /// each of its ~1000 files (4 s measured), which would hide what an
    /// immediate restart costs hookd.
    pub fn start_with(extra_conf: &str) -> Pg {
        let t0 = Instant::now();
        let bin = pg_bin_dir();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let run_as = if unsafe { libc::geteuid() } == 0 {
            Some(ensure_pg_user())
        } else {
            None
        };
        let template = template(&bin, run_as);
        let dir = tempfile::Builder::new()
            .prefix("hookd-pg")
            .tempdir()
            .expect("create the cluster's temp dir");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown the cluster's temp dir");
        }
        let data = dir.path().join("data");
        let out = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&data)
            .output()
            .expect("run cp");
        assert!(
            out.status.success(),
            "copy the template cluster: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let f = std::fs::File::open(&data).expect("open the data dir");
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)).expect("syncfs the data dir");
        let port = free_port();
        append_conf(
            &data,
            &format!(
                "port = {port}\nunix_socket_directories = '{}'\n{extra_conf}\n",
                dir.path().display()
            ),
        );
        let password: String = {
            use rand::Rng;
            let mut rng = rand::thread_rng();
            (0..24)
                .map(|_| char::from(b'a' + rng.gen_range(0..26)))
                .collect()
        };
        let mut pg = Pg {
            dir,
            bin,
            run_as,
            port,
            password,
            running: false,
            started_in: Duration::ZERO,
        };
        pg.start();
        // The template's password is shared: each cluster gets its own.
        pg.psql(&format!("ALTER ROLE {ROLE} PASSWORD '{}'", pg.password));
        pg.started_in = t0.elapsed();
        pg
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The temp dir: data in `data/`, the unix socket, the server log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A URL for the test role over TCP, password included.
    pub fn url(&self) -> String {
        self.url_via(self.addr())
    }

    /// The same URL with another address in front, e.g. a fault proxy's.
    pub fn url_via(&self, addr: SocketAddr) -> String {
        format!("postgres://{ROLE}:{}@{addr}/{DATABASE}", self.password)
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Runs `sql` with `psql` over the unix socket; its unaligned,
    /// tuples-only output, trimmed. Panics with psql's message on an error.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_db(DATABASE, sql)
    }

    /// As [`Pg::psql`], but the error comes back instead of a panic.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        self.try_psql_db(DATABASE, sql)
    }

    fn psql_db(&self, db: &str, sql: &str) -> String {
        self.try_psql_db(db, sql)
            .unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
    }

    fn try_psql_db(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(self.dir.path())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", ROLE, "-d", db, "-c", sql])
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .map_err(|e| format!("run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Starts the server on the existing data dir and waits (bounded by
    /// `pg_ctl -t`) until it accepts connections, crash recovery included.
    pub fn start(&mut self) {
        assert!(!self.running, "the cluster is already running");
        let log = self.dir.path().join("server.log");
        let out = self.run_pg(
            Command::new(self.bin.join("pg_ctl"))
                .arg("start")
                .arg("--pgdata")
                .arg(self.data_dir())
                .arg("--log")
                .arg(&log)
                .args(["--wait", "--silent", "--timeout"])
                .arg(PG_CTL_LIMIT_SECS.to_string()),
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        self.running = true;
    }

    /// Stops the server as a crash would (`-m immediate`: no checkpoint,
    /// clients cut off); the next [`Pg::start`] runs crash recovery.
    pub fn stop_immediate(&mut self) {
        assert!(self.running, "the cluster is not running");
        let out = self.pg_ctl_stop();
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.running = false;
    }

    /// An immediate stop and a start: what "PostgreSQL restarted" looks
    /// like to its clients.
    pub fn restart_immediate(&mut self) {
        self.stop_immediate();
        self.start();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn pg_ctl_stop(&self) -> Output {
        self.run_pg(
            Command::new(self.bin.join("pg_ctl"))
                .arg("stop")
                .arg("--pgdata")
                .arg(self.data_dir())
                .args(["--mode", "immediate", "--wait", "--silent", "--timeout"])
                .arg(PG_CTL_LIMIT_SECS.to_string()),
        )
    }

    /// Runs a PostgreSQL program as the cluster's owner.
    fn run_pg(&self, c: &mut Command) -> Output {
        c.current_dir(self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::process::CommandExt::uid(c, uid);
            std::os::unix::process::CommandExt::gid(c, gid);
        }
        c.output()
            .unwrap_or_else(|e| panic!("run {:?}: {e}", c.get_program()))
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if self.running {
            let _ = self.pg_ctl_stop();
        }
    }
}

/// Bump when the template's making changes, so a stale one is not reused.
const TEMPLATE_FORMAT: u32 = 1;

/// The data dir of a template cluster, made once per machine (and per
/// PostgreSQL major version and [`TEMPLATE_FORMAT`]) under the temp dir
/// and reused by every test process: `initdb`, [`BASE_CONF`], the test
/// database with `pg_stat_statements`, then a clean shutdown (a
/// checkpoint, so copies need no recovery). Made under an exclusive
/// `flock` in a scratch dir renamed into place, so a concurrent or killed
/// maker never leaves a half-made template to be copied.
fn template(bin: &Path, run_as: Option<(u32, u32)>) -> PathBuf {
    let major = bin
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = run_as.map_or_else(|| unsafe { libc::getuid() }, |(u, _)| u);
    let root = std::env::temp_dir();
    let name = format!("hookd-pg-template-{major}-{TEMPLATE_FORMAT}-u{uid}");
    let done = root.join(&name);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join(format!("{name}.lock")))
        .expect("open the template lock");
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the template");
    if done.join("data/PG_VERSION").exists() {
        return done.join("data");
    }
    let scratch = root.join(format!("{name}.making-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir(&scratch).expect("create the template scratch dir");
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(&scratch, Some(uid), Some(gid)).expect("chown the scratch dir");
    }
    let as_owner = |c: &mut Command| -> Output {
        c.current_dir(&scratch);
        if let Some((uid, gid)) = run_as {
            std::os::unix::process::CommandExt::uid(c, uid);
            std::os::unix::process::CommandExt::gid(c, gid);
        }
        c.output()
            .unwrap_or_else(|e| panic!("run {:?}: {e}", c.get_program()))
    };
    let check = |what: &str, out: Output| {
        assert!(
            out.status.success(),
            "{what} for the template cluster failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Any password: each copy sets its own before it is used.
    let pwfile = scratch.join("pwfile");
    std::fs::write(&pwfile, "template").expect("write the pwfile");
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).expect("chown the pwfile");
    }
    let data = scratch.join("data");
    // --no-sync: the clean shutdown below and each copy's syncfs flush it.
    check(
        "initdb",
        as_owner(
            Command::new(bin.join("initdb"))
                .arg("--pgdata")
                .arg(&data)
                .arg("--username")
                .arg(ROLE)
                .arg("--pwfile")
                .arg(&pwfile)
                .args([
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ]),
        ),
    );
    let port = free_port();
    append_conf(&data, BASE_CONF);
    append_conf(
        &data,
        &format!(
            "port = {port}\nunix_socket_directories = '{}'\n",
            scratch.display()
        ),
    );
    let pg_ctl = |args: &[&str]| {
        as_owner(
            Command::new(bin.join("pg_ctl"))
                .arg("--pgdata")
                .arg(&data)
                .arg("--log")
                .arg(scratch.join("server.log"))
                .args(args)
                .args(["--wait", "--silent", "--timeout"])
                .arg(PG_CTL_LIMIT_SECS.to_string()),
        )
    };
    check("pg_ctl start", pg_ctl(&["start"]));
    for (db, sql) in [
        ("postgres", format!("CREATE DATABASE {DATABASE}")),
        (DATABASE, "CREATE EXTENSION pg_stat_statements".to_string()),
    ] {
        check(
            &sql,
            Command::new(bin.join("psql"))
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
                .arg(&scratch)
                .args(["-p", &port.to_string(), "-U", ROLE, "-d", db, "-c", &sql])
                .output()
                .expect("run psql"),
        );
    }
    check("pg_ctl stop", pg_ctl(&["stop", "--mode", "fast"]));
    let _ = std::fs::remove_file(&pwfile);
    let _ = std::fs::remove_dir_all(&done);
    std::fs::rename(&scratch, &done).expect("move the template into place");
    done.join("data")
}

/// Appends lines to a cluster's postgresql.conf (a later line wins).
fn append_conf(data: &Path, lines: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .expect("open postgresql.conf");
    std::io::Write::write_all(
        &mut f,
        format!("\n# tests/common/pg.rs\n{lines}\n").as_bytes(),
    )
    .expect("append to postgresql.conf");
}

/// The newest PostgreSQL's programs under /usr/lib/postgresql/N/bin
/// (Debian's layout; the major version is in the path, not on PATH).
pub fn pg_bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (is the postgresql package installed?)",
                root.display()
            )
        })
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            e.path()
                .join("bin/initdb")
                .exists()
                .then_some((v, e.path()))
        })
        .max_by_key(|(v, _)| *v);
    match newest {
        Some((_, p)) => p.join("bin"),
        None => panic!("no /usr/lib/postgresql/N/bin/initdb: install postgresql"),
    }
}

/// (uid, gid) of [`PG_USER`], created as a system user if missing. Two
/// test processes may race to create it: whoever loses finds it made.
fn ensure_pg_user() -> (u32, u32) {
    if let Some(ids) = user_ids(PG_USER) {
        return ids;
    }
    let out = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ])
        .arg(PG_USER)
        .output()
        .expect("run useradd");
    user_ids(PG_USER).unwrap_or_else(|| {
        panic!(
            "useradd {PG_USER} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn user_ids(name: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").arg(flag).arg(name).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// A port on 127.0.0.1 nobody listens on now: the kernel's pick, let go at
/// once for the server to take (self-contained, so the spool's unit tests
/// can use this file without the rest of tests/common).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}
