//! The systemd protocol against the real binary: socket activation (TCP and
//! unix, matched by LISTEN_FDNAMES), READY=1 and STATUS= on a real datagram
//! socket standing in as NOTIFY_SOCKET, and WATCHDOG=1.

mod common;

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use common::*;

#[test]
fn socket_activation_serves_on_inherited_tcp_and_unix_sockets_and_notifies_ready() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::ok();
    let mut h = Hookd::configure(dir.path(), &forward_hook(dir.path(), "gh", &up.url(), ""));
    // The config's own address must stay unused: systemd's sockets win.
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let unix_path = dir.path().join("http.sock");
    let unix = UnixListener::bind(&unix_path).unwrap();

    let child = activate(&h, &[tcp.as_raw_fd(), unix.as_raw_fd()], "http:local")
        .spawn()
        .unwrap();
    h.child = Some(child);
    drop((tcp, unix));
    h.notify.wait_line("READY=1", Duration::from_secs(20));
    let status = h.notify.lines_with("STATUS=");
    assert!(!status.is_empty(), "no STATUS= with READY=1");
    assert!(status[0].1.contains("ready"), "{:?}", status[0]);

    let body = br#"{"via":"tcp"}"#;
    let r = request(
        tcp_addr,
        "POST",
        "/hooks/gh",
        &[("X-Hub-Signature-256", &github_sig(SECRET, body))],
        body,
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));

    let mut s = std::os::unix::net::UnixStream::connect(&unix_path).unwrap();
    s.set_read_timeout(Some(READ_DEADLINE)).unwrap();
    let body = br#"{"via":"unix"}"#;
    write_request(
        &mut s,
        "POST",
        "/hooks/gh",
        &[("X-Hub-Signature-256", &github_sig(SECRET, body))],
        body,
        true,
    )
    .unwrap();
    let r = read_response(&mut std::io::BufReader::new(s)).unwrap();
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));

    assert!(
        std::net::TcpStream::connect(h.addr()).is_err(),
        "hookd bound server.listen although systemd passed sockets"
    );
    wait_for(Duration::from_secs(10), "both deliveries", || {
        (up.ids().len() == 2).then_some(())
    });
    let log = h.log_text();
    assert!(log.contains("using socket from systemd"), "{log}");
}

#[test]
fn watchdog_is_pinged_when_systemd_asks() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Hookd::configure(dir.path(), "");
    let mut c = h.command();
    c.env("WATCHDOG_USEC", "400000");
    h.child = Some(c.spawn().unwrap());
    h.notify.wait_line("READY=1", Duration::from_secs(20));
    wait_for(Duration::from_secs(5), "three WATCHDOG=1", || {
        (h.notify.lines_with("WATCHDOG=1").len() >= 3).then_some(())
    });
}

/// Runs hookd on `config` (written over the test's file) and returns its
/// exit code and stderr.
fn run_with(h: &Hookd, config: &str) -> (Option<i32>, String) {
    std::fs::write(&h.config, config).unwrap();
    let out = h
        .command()
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn start_up_failures_exit_with_their_own_code_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hookd::configure(dir.path(), "");
    // A bad config: exit 2, naming file, line and field.
    let bad = r#"[server]
listen = ["127.0.0.1:1"]
bogus = 1
"#;
    let (code, err) = run_with(&h, bad);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("hookd.toml:3:1") && err.contains("bogus"),
        "{err}"
    );

    // The port is taken: exit 4.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = format!(
        r#"[server]
listen = ["127.0.0.1:{port}"]
[spool]
path = "{}/s.db"
"#,
        dir.path().display()
    );
    let (code, err) = run_with(&h, &config);
    assert_eq!(code, Some(4), "{err}");

    // The spool cannot be opened (its "directory" is a file): exit 3.
    let config = format!(
        r#"[server]
listen = ["127.0.0.1:{}"]
[spool]
path = "{}/s.db"
"#,
        free_port(),
        h.config.display()
    );
    let (code, err) = run_with(&h, &config);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("spool"), "{err}");
}
