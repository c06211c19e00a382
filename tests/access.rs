//! The per-request edge against the real binary: `allow_ips` judged on the
//! peer or, behind a trusted proxy, on the forwarded client; a missing
//! signature header refused before the body is sent; the shared body budget
//! (`max_buffered`) answering 503; `/metrics` only on its own listener; the
//! commit deadline answering 503 while the spool is locked; `check-config`'s
//! warning about `allow_ips` behind a loopback proxy.

mod common;

use std::io::{BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn};

/// A TCP connection to `to` whose source address is `from` (any 127/8
/// address reaches a listener on 127.0.0.1), with read/write deadlines.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    socket::bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(from, 0)),
    )
    .unwrap();
    socket::connect(fd.as_raw_fd(), &SockaddrIn::from(to)).unwrap();
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(READ_DEADLINE)).unwrap();
    s.set_write_timeout(Some(READ_DEADLINE)).unwrap();
    s
}

/// One request from source address `from`, `Connection: close`.
fn post_from(from: Ipv4Addr, to: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut s = connect_from(from, to);
    write_request(&mut s, "POST", path, headers, b"{}", true).unwrap();
    read_response(&mut BufReader::new(s)).unwrap()
}

fn open_hook(name: &str, url: &str, extra: &str) -> String {
    format!(
        r#"[[hook]]
name = "{name}"
verify = {{ scheme = "none" }}
action = {{ forward = "{url}", timeout = "10s" }}
{extra}
"#
    )
}

fn metrics(h: &Hookd) -> String {
    let r = request(h.metrics_addr(), "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

const LOCAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[test]
fn allow_ips_on_the_peer_without_trusted_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::ok();
    let hooks = open_hook("local", &up.url(), r#"allow_ips = ["127.0.0.1", "::1"]"#);
    let mut h = Hookd::configure(dir.path(), &hooks);
    h.start();

    let r = post_from(LOCAL, h.addr(), "/hooks/local", &[]);
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    let r = post_from(OTHER, h.addr(), "/hooks/local", &[]);
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "ip_not_allowed");
    // Without a trusted proxy, a forwarding header is the sender's word only.
    let r = post_from(
        OTHER,
        h.addr(),
        "/hooks/local",
        &[("X-Forwarded-For", "127.0.0.1")],
    );
    assert_eq!(r.status, 403);
    assert_eq!(h.spool_total(), 1, "a refused request was spooled");
    let text = metrics(&h);
    assert!(
        text.contains("hookd_rejected_total{hook=\"local\",reason=\"ip_not_allowed\"} 2"),
        "{text}"
    );
}

#[test]
fn allow_ips_on_the_forwarded_client_behind_a_trusted_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::ok();
    let hooks = open_hook("gh", &up.url(), r#"allow_ips = ["203.0.113.0/24"]"#);
    let mut h = Hookd::configure_with(dir.path(), r#"trusted_proxies = ["127.0.0.1/32"]"#, &hooks);
    h.start();

    // From the proxy, the forwarded client is judged.
    let r = post_from(
        LOCAL,
        h.addr(),
        "/hooks/gh",
        &[("X-Forwarded-For", "203.0.113.5")],
    );
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    let r = post_from(
        LOCAL,
        h.addr(),
        "/hooks/gh",
        &[("Forwarded", "for=198.51.100.1, for=203.0.113.6;proto=https")],
    );
    assert_eq!(r.status, 202);
    // The proxy itself is no allowed client.
    let r = post_from(LOCAL, h.addr(), "/hooks/gh", &[]);
    assert_eq!(r.status, 403);
    // The right-most hop our proxy did not add is the client: a sender that
    // writes an allowed address itself gets nowhere.
    let r = post_from(
        LOCAL,
        h.addr(),
        "/hooks/gh",
        &[("X-Forwarded-For", "203.0.113.5, 198.51.100.1")],
    );
    assert_eq!(r.status, 403);
    // 127.0.0.2 is no trusted proxy: its header means nothing.
    let r = post_from(
        OTHER,
        h.addr(),
        "/hooks/gh",
        &[("X-Forwarded-For", "203.0.113.5")],
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "ip_not_allowed");
    assert_eq!(h.spool_total(), 2);

    // The upstream hears of the client hookd established, not the sender's claims.
    let got = wait_for(Duration::from_secs(20), "two deliveries", || {
        let got = up.received();
        (got.len() >= 2).then_some(got)
    });
    let mut clients: Vec<_> = got
        .iter()
        .map(|r| r.header("x-forwarded-for").unwrap_or("").to_string())
        .collect();
    clients.sort();
    assert_eq!(clients, vec!["203.0.113.5", "203.0.113.6"]);
    assert!(got.iter().all(|r| r.header("forwarded").is_none()));
}

#[test]
fn missing_signature_header_is_refused_before_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::ok();
    let mut h = Hookd::configure(dir.path(), &forward_hook(dir.path(), "gh", &up.url(), ""));
    h.start();

    let mut s = connect(h.addr());
    // Headers only: the 512 KiB body is never sent, so only an answer that
    // does not wait for it can arrive.
    s.write_all(
        b"POST /hooks/gh HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 524288\r\n\r\n",
    )
    .unwrap();
    let started = Instant::now();
    let r = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "signature_missing");
    // Well inside the 2 s read timeout, which would answer 408 instead.
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(h.spool_total(), 0);
}

#[test]
fn bodies_past_max_buffered_are_503_busy() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::ok();
    let hooks = open_hook("big", &up.url(), "");
    let mut h = Hookd::configure_with(
        dir.path(),
        "max_body = \"40KiB\"\nmax_buffered = \"64KiB\"\nread_timeout = \"10s\"",
        &hooks,
    );
    // configure_with's own read_timeout comes first; the later one would be a
    // duplicate key, so rewrite it instead.
    let text = std::fs::read_to_string(&h.config).unwrap();
    let text = text.replacen("read_timeout = \"2s\"\n", "", 1);
    std::fs::write(&h.config, text).unwrap();
    h.start();

    let body = vec![b'x'; 40_000];
    let head = |n: usize| {
        format!("POST /hooks/big HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n")
    };
    // A holds 40 000 of the 65 536 bytes while it sends its body slowly.
    let mut a = connect(h.addr());
    a.write_all(head(body.len()).as_bytes()).unwrap();
    a.write_all(&body[..1000]).unwrap();
    // A's reservation is taken as soon as its headers are handled, which
    // takes hookd far less than this; B must come after it (a B first would
    // hold the budget itself, waiting for a body it never sends).
    std::thread::sleep(Duration::from_millis(500));
    let mut b = connect(h.addr());
    b.write_all(head(body.len()).as_bytes()).unwrap();
    let started = Instant::now();
    let busy = read_response(&mut BufReader::new(b)).unwrap();
    assert_eq!(busy.status, 503);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(busy.json()["error"], "busy");
    assert!(busy.header("retry-after").is_some());

    a.write_all(&body[1000..]).unwrap();
    let r = read_response(&mut BufReader::new(a)).unwrap();
    assert_eq!(r.status, 202);
    // Given back: the same request fits now.
    let r = request(h.addr(), "POST", "/hooks/big", &[], &body).unwrap();
    assert_eq!(r.status, 202);
    assert!(metrics(&h).contains("reason=\"busy\""));
}

#[test]
fn metrics_are_not_on_the_webhook_listener() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::ok();
    let mut h = Hookd::configure(dir.path(), &open_hook("a", &up.url(), ""));
    h.start();
    let r = request(h.addr(), "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not_found");
    // Not through a proxy on loopback either: no header changes that.
    let r = request(
        h.addr(),
        "GET",
        "/metrics",
        &[("X-Forwarded-For", "127.0.0.1")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 404);
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(
            request(h.addr(), "GET", probe, &[], b"").unwrap().status,
            200
        );
        assert_eq!(
            request(h.metrics_addr(), "GET", probe, &[], b"")
                .unwrap()
                .status,
            200
        );
    }
    assert!(metrics(&h).contains("hookd_drain_state 0"));
    // The metrics listener takes no webhooks.
    let r = request(h.metrics_addr(), "POST", "/hooks/a", &[], b"{}").unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(h.spool_total(), 0);
}

#[test]
fn metrics_on_the_webhook_listener_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::ok();
    let mut h = Hookd::configure_with(
        dir.path(),
        "metrics_on_webhook_listener = true",
        &open_hook("a", &up.url(), ""),
    );
    h.start();
    let r = request(h.addr(), "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn a_commit_past_commit_timeout_is_503() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::ok();
    let mut h = Hookd::configure(dir.path(), &format!("{}\n", open_hook("a", &up.url(), "")));
    let text = std::fs::read_to_string(&h.config).unwrap();
    let text = text.replacen("[spool]\n", "[spool]\ncommit_timeout = \"300ms\"\n", 1);
    std::fs::write(&h.config, text).unwrap();
    h.start();

    // Another writer holds the database's write lock: hookd's commit waits
    // on it as it would on a disk that does not answer.
    let lock = rusqlite::Connection::open(h.spool_path()).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    let r = request(h.addr(), "POST", "/hooks/a", &[], b"{}").unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "spool_unavailable");
    assert!(r.header("retry-after").is_some());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    let r = request(h.addr(), "POST", "/hooks/a", &[], b"{}").unwrap();
    assert_eq!(r.status, 202);
}

#[test]
fn check_config_warns_about_allow_ips_behind_a_loopback_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = open_hook(
        "a",
        "http://127.0.0.1:9/",
        r#"allow_ips = ["192.30.252.0/22"]"#,
    );
    // One directory per configuration: each holds its own notify socket.
    let sub = |n: &str| {
        let p = dir.path().join(n);
        std::fs::create_dir(&p).unwrap();
        p
    };
    let h = Hookd::configure(&sub("plain"), &hooks);
    let (code, _out, err) = h.cli(&["check-config"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning") && err.contains("trusted_proxies"),
        "{err}"
    );

    let h = Hookd::configure_with(
        &sub("trusted"),
        r#"trusted_proxies = ["127.0.0.1/32", "::1/128"]"#,
        &hooks,
    );
    let (code, _out, err) = h.cli(&["check-config"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");

    let bad = open_hook(
        "a",
        "http://127.0.0.1:9/",
        r#"allow_ips_file = "/nonexistent/list""#,
    );
    let h = Hookd::configure(&sub("bad"), &bad);
    let (code, _out, err) = h.cli(&["check-config"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("allow_ips_file /nonexistent/list"), "{err}");
}

#[test]
fn allow_ips_file_is_read_with_comments() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::ok();
    let list = dir.path().join("allow.txt");
    std::fs::write(
        &list,
        "# only the second loopback address\n127.0.0.2 # the test's peer\n\n",
    )
    .unwrap();
    let hooks = open_hook(
        "a",
        &up.url(),
        &format!("allow_ips_file = \"{}\"", list.display()),
    );
    let mut h = Hookd::configure(dir.path(), &hooks);
    h.start();
    assert_eq!(post_from(OTHER, h.addr(), "/hooks/a", &[]).status, 202);
    assert_eq!(post_from(LOCAL, h.addr(), "/hooks/a", &[]).status, 403);
}

#[test]
fn a_socket_named_metrics_serves_metrics_under_socket_activation() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::ok();
    let mut h = Hookd::configure(dir.path(), &open_hook("a", &up.url(), ""));
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (http_addr, metrics_addr) = (http.local_addr().unwrap(), metrics.local_addr().unwrap());
    let child = activate(&h, &[http.as_raw_fd(), metrics.as_raw_fd()], "http:metrics")
        .spawn()
        .unwrap();
    h.child = Some(child);
    drop((http, metrics));
    h.notify.wait_line("READY=1", Duration::from_secs(20));

    assert_eq!(
        request(http_addr, "GET", "/metrics", &[], b"")
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        request(metrics_addr, "GET", "/metrics", &[], b"")
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        request(metrics_addr, "POST", "/hooks/a", &[], b"{}")
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        request(http_addr, "POST", "/hooks/a", &[], b"{}")
            .unwrap()
            .status,
        202
    );
    // The config's metrics_listen is not bound: systemd's sockets win.
    assert!(request(h.metrics_addr(), "GET", "/metrics", &[], b"").is_err());
}

#[test]
fn a_reload_rereads_allow_ips_file_and_keeps_the_metrics_listener() {
    // The successor is reparented to us when its predecessor exits.
    common::subreaper();
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::ok();
    let list = dir.path().join("allow.txt");
    std::fs::write(&list, "127.0.0.2\n").unwrap();
    let hooks = open_hook(
        "a",
        &up.url(),
        &format!("allow_ips_file = \"{}\"", list.display()),
    );
    let mut h = Hookd::configure(dir.path(), &hooks);
    h.start();
    assert_eq!(post_from(LOCAL, h.addr(), "/hooks/a", &[]).status, 403);

    std::fs::write(&list, "# now this host\n127.0.0.1\n").unwrap();
    h.signal(nix::sys::signal::Signal::SIGHUP);
    let new = wait_for(Duration::from_secs(10), "MAINPID after SIGHUP", || {
        h.notify
            .lines_with("MAINPID=")
            .first()
            .and_then(|(_, l)| l["MAINPID=".len()..].parse::<i32>().ok())
    });
    assert_eq!(h.wait_exit(Duration::from_secs(20)).code(), Some(0));

    assert_eq!(post_from(LOCAL, h.addr(), "/hooks/a", &[]).status, 202);
    assert_eq!(post_from(OTHER, h.addr(), "/hooks/a", &[]).status, 403);
    // The metrics listener went to the successor as one, not as a webhook listener.
    assert!(metrics(&h).contains("reason=\"ip_not_allowed\"} 1"));
    assert_eq!(
        request(h.addr(), "GET", "/metrics", &[], b"")
            .unwrap()
            .status,
        404
    );

    stop_successor(new, Duration::from_secs(20));
}
