//! The connection edge against the real binary over real sockets: clients
//! that stop reading cannot hold a stop or a hand-off, answers not taken
//! within `write_timeout` close the connection, so do keep-alive connections
//! idle past `idle_timeout` (and only those), the descriptor limit and the
//! per-address cap leave room for legitimate clients and for `hookd status`,
//! and oversized headers are refused.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// A hookd whose `[server]` also carries `server_extra`; `read_timeout` is
/// raised to 30 s so idle test connections are not answered 408 mid-test.
fn configure(dir: &std::path::Path, server_extra: &str) -> Hookd {
    let h = Hookd::configure(
        dir,
        &forward_hook(dir, "gh", "http://127.0.0.1:9/unused", ""),
    );
    let text = std::fs::read_to_string(&h.config).unwrap().replace(
        "read_timeout = \"2s\"\n",
        &format!("read_timeout = \"30s\"\n{server_extra}\n"),
    );
    std::fs::write(&h.config, text).unwrap();
    h
}

/// A TCP connection from `from` (any 127.0.0.0/8 address) with a small
/// receive buffer, so a client that does not read jams quickly.
fn connect_from(from: [u8; 4], to: SocketAddr, rcvbuf: Option<usize>) -> TcpStream {
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    let sin = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // Safety: plain socket calls on a descriptor we own, with valid pointers.
    unsafe {
        let raw = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(raw);
        if let Some(n) = rcvbuf {
            let n = n as libc::c_int;
            let rc = libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &n as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            assert_eq!(rc, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
        }
        let local = sin(from, 0);
        let rc = libc::bind(raw, &local as *const _ as *const libc::sockaddr, len);
        assert_eq!(rc, 0, "bind {from:?}: {}", std::io::Error::last_os_error());
        let remote = sin(to.ip().octets(), to.port());
        let rc = libc::connect(raw, &remote as *const _ as *const libc::sockaddr, len);
        assert_eq!(rc, 0, "connect {to}: {}", std::io::Error::last_os_error());
        let s = TcpStream::from(fd);
        s.set_read_timeout(Some(READ_DEADLINE)).unwrap();
        s
    }
}

/// A client that pipelines requests and never reads an answer: answers
/// (about 8 MB) that the socket buffers cannot hold, so hookd ends up
/// blocked writing. Returns once hookd has stopped reading it (see
/// [`wait_server_stalled`]). Answers that fit in the kernel's buffers leave
/// hookd idle instead, and an idle connection is closed by the drain at once.
fn stalled_reader(to: SocketAddr) -> TcpStream {
    let mut s = connect_from([127, 0, 0, 1], to, Some(4096));
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let req = b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(40_000);
    match s.write_all(&req) {
        Ok(()) => {}
        // hookd stopped reading before it took them all: stalled already.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        Err(e) => panic!("pipelining: {e}"),
    }
    wait_server_stalled(to.port(), s.local_addr().unwrap().port());
    s
}

/// Waits until hookd's end of the connection from `client_port` has unread
/// requests that it leaves alone for half a second: it is blocked writing
/// answers the client does not take. Read from /proc/net/tcp (the receive
/// queue of hookd's socket), since the client cannot see it otherwise.
fn wait_server_stalled(server_port: u16, client_port: u16) {
    let key = format!(":{server_port:04X} 0100007F:{client_port:04X} ");
    let rx_queue = || -> Option<u64> {
        let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
        let line = table.lines().find(|l| l.contains(&key))?;
        let queues = line.split_whitespace().nth(4)?;
        u64::from_str_radix(queues.split(':').nth(1)?, 16).ok()
    };
    let mut last = None;
    let mut same_since = Instant::now();
    wait_for(
        Duration::from_secs(30),
        "hookd to stop reading the stalled client",
        || {
            let now = rx_queue().filter(|&n| n > 0);
            if now != last {
                last = now;
                same_since = Instant::now();
            }
            (last.is_some() && same_since.elapsed() >= Duration::from_millis(500)).then_some(())
        },
    );
}

/// Whether the peer has closed the connection (FIN or RST), without reading.
fn peer_closed(s: &TcpStream) -> bool {
    let mut p = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // Safety: one pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

#[test]
fn an_answer_not_taken_within_write_timeout_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = configure(dir.path(), "write_timeout = \"2s\"");
    h.start();
    let s = stalled_reader(h.addr());
    let stalled = Instant::now();
    assert!(!peer_closed(&s), "closed before write_timeout");
    // Nothing else would close it: read_timeout is 30 s, idle_timeout 60 s.
    wait_for(
        Duration::from_secs(10),
        "the stalled connection closed",
        || peer_closed(&s).then_some(()),
    );
    // `stalled` only says hookd stopped reading; it may still be working
    // through requests it buffered before it blocks on a write, hence the margin.
    let took = stalled.elapsed();
    assert!(
        took < Duration::from_secs(2) + Duration::from_secs(3),
        "closed {took:?} after hookd was seen stalled, write_timeout 2s\n{}",
        h.log_text()
    );
    // The daemon is fine, and serves the next client.
    assert_eq!(h.post_signed("gh", b"{}", &[]).status, 202);
}

#[test]
fn clients_that_stop_reading_cannot_hold_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = configure(dir.path(), "write_timeout = \"3s\"");
    h.start();
    let stalled: Vec<TcpStream> = (0..3).map(|_| stalled_reader(h.addr())).collect();
    let sent = Instant::now();
    h.signal(Signal::SIGTERM);
    // The drain keeps accepting and spooling while the stalled ones are closed.
    std::thread::sleep(Duration::from_millis(300));
    let r = match request(
        h.addr(),
        "POST",
        "/hooks/gh",
        &[(
            "X-Hub-Signature-256",
            &github_sig(SECRET, b"{\"during\":\"stop\"}"),
        )],
        b"{\"during\":\"stop\"}",
    ) {
        Ok(r) => r,
        Err(e) => panic!("a webhook during the stop: {e}\n{}", h.log_text()),
    };
    assert_eq!(r.status, 202, "{:?}", r.body);
    let st = h.wait_exit(Duration::from_secs(15));
    let took = sent.elapsed();
    assert_eq!(st.code(), Some(0), "{}", h.log_text());
    assert!(
        took < Duration::from_secs(3) + Duration::from_millis(2500),
        "the stop took {took:?} with write_timeout 3s"
    );
    drop(stalled);
    assert_eq!(
        h.items("pending").len(),
        1,
        "the webhook posted during the stop"
    );
}

#[test]
fn clients_that_stop_reading_cannot_hold_a_hand_off() {
    common::subreaper();
    let dir = tempfile::tempdir().unwrap();
    let mut h = configure(dir.path(), "write_timeout = \"3s\"");
    h.start();
    let stalled: Vec<TcpStream> = (0..3).map(|_| stalled_reader(h.addr())).collect();
    let (code, out, err) = h.cli(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    let handed = Instant::now();
    let new = h.successor_pid();
    // The successor serves while the old instance finishes.
    let r = h.post_signed("gh", b"{\"during\":\"handoff\"}", &[]);
    assert_eq!(r.status, 202, "{:?}", r.body);
    let st = h.wait_exit(Duration::from_secs(15));
    let took = handed.elapsed();
    assert_eq!(st.code(), Some(0), "{}", h.log_text());
    assert!(
        took < Duration::from_secs(3) + Duration::from_millis(2500),
        "the old instance stayed {took:?} with write_timeout 3s"
    );
    drop(stalled);
    stop_successor(new, Duration::from_secs(15));
}

/// Starts `h` with its open-file limit lowered to `nofile`.
fn start_with_nofile(h: &mut Hookd, nofile: u64) {
    let mut c = h.command();
    // Safety: setrlimit is async-signal-safe; nothing else runs in the child.
    unsafe {
        c.pre_exec(move || {
            let r = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    h.child = Some(c.spawn().unwrap());
    wait_for(Duration::from_secs(20), "READY=1", || {
        if let Some(st) = h.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("hookd exited with {st}; log:\n{}", h.log_text());
        }
        (!h.notify.lines_with("READY=1").is_empty()).then_some(())
    });
}

/// Hundreds of idle connections against a low descriptor limit: a signed
/// webhook still gets 202, `hookd status` still answers, the log stays quiet.
fn exhaustion(server_extra: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut h = configure(dir.path(), server_extra);
    start_with_nofile(&mut h, 256);
    let idle: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect_timeout(&h.addr(), Duration::from_secs(5)).ok())
        .collect();
    assert!(idle.len() >= 250, "only {} connected", idle.len());
    let start = Instant::now();
    let r = h.post_signed("gh", b"{\"under\":\"pressure\"}", &[]);
    assert_eq!(r.status, 202, "{:?}\n{}", r.body, h.log_text());
    assert!(start.elapsed() < Duration::from_secs(10));
    let (code, out, err) = h.cli(&["status"]);
    assert_eq!(code, 0, "hookd status failed: {out}{err}");
    // A second's worth of pressure: the log must not grow a line per try.
    std::thread::sleep(Duration::from_secs(1));
    let _ = TcpStream::connect_timeout(&h.addr(), Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    let log = h.log_text();
    let failures = log.matches("accept failed").count();
    assert!(failures <= 2, "{failures} accept failures logged:\n{log}");
    drop(idle);
    h.signal(Signal::SIGTERM);
    assert_eq!(h.wait_exit(Duration::from_secs(15)).code(), Some(0));
    log
}

#[test]
fn descriptor_exhaustion_leaves_room_for_a_webhook_and_for_status() {
    // Derived from the limit: 256 minus the reserve (64 + 4 per delivery slot).
    let log = exhaustion("");
    assert!(log.contains("at most 188 client connections"), "{log}");
    // A cap set above the limit: accept runs out of descriptors, closes idle
    // connections to make room, and backs off instead of spinning.
    let log = exhaustion("max_connections = 10000");
    assert!(log.contains("exceeds the open-file limit"), "{log}");
}

/// A request in progress: the headers of a signed POST, half its body.
fn busy_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let mut s = connect_from(from, to, None);
    let body = vec![b'x'; 100];
    let sig = github_sig(SECRET, &body);
    write!(
        s,
        "POST /hooks/gh HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: {sig}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body[..50]).unwrap();
    s
}

#[test]
fn the_per_address_cap_refuses_one_address_and_not_another() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = configure(dir.path(), "max_connections_per_ip = 4");
    h.start();
    let busy: Vec<TcpStream> = (0..4)
        .map(|_| busy_from([127, 0, 0, 2], h.addr()))
        .collect();
    // Give hookd time to start all four requests (they wait on their bodies).
    std::thread::sleep(Duration::from_millis(300));
    let mut fifth = connect_from([127, 0, 0, 2], h.addr(), None);
    let mut text = String::new();
    let _ = fifth.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 503"), "{text:?}");
    assert!(text.contains("retry-after: 1"), "{text:?}");
    assert!(text.contains("\"too_many_connections\""), "{text:?}");
    // Another address gets through.
    assert_eq!(h.post_signed("gh", b"{}", &[]).status, 202);
    let log = h.log_text();
    assert!(
        log.contains("connection_refused") || log.contains("refused 1 connections"),
        "{log}"
    );
    drop(busy);
    // Once 127.0.0.2's requests are gone it is served again.
    wait_for(Duration::from_secs(10), "127.0.0.2 served again", || {
        let mut s = connect_from([127, 0, 0, 2], h.addr(), None);
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut t = String::new();
        s.read_to_string(&mut t).ok()?;
        t.starts_with("HTTP/1.1 200").then_some(())
    });
}

#[test]
fn oversized_headers_get_431() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = configure(dir.path(), "max_header_bytes = \"8KiB\"");
    h.start();
    let big = "a".repeat(12 * 1024);
    let mut s = connect(h.addr());
    let _ = write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
    );
    let mut text = Vec::new();
    let _ = s.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text);
    assert!(text.starts_with("HTTP/1.1 431"), "{text:?}");
    // Just under the limit is fine.
    let fits = "a".repeat(7 * 1024);
    let r = request(h.addr(), "GET", "/healthz", &[("X-Fits", &fits)], b"").unwrap();
    assert_eq!(r.status, 200);
}

/// `idle_timeout` is the wait for the next request on a keep-alive
/// connection, not a cap on the connection's life: a connection that keeps
/// sending for longer than it stays open, and one that goes quiet after an
/// answer is closed about `idle_timeout` later.
#[test]
fn a_keep_alive_connection_idle_past_idle_timeout_is_closed_and_a_busy_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    // read_timeout stays 2 s (the first request's 408 timer); hookd keeps
    // the keep-alive timer at least read_timeout + 1 s, so 5 s is the idle one.
    let mut h = Hookd::configure_with(
        dir.path(),
        "idle_timeout = \"5s\"",
        &forward_hook(dir.path(), "gh", "http://127.0.0.1:9/unused", ""),
    );
    h.start();

    // Busy: seven requests a second apart, 6 s in all, on one connection.
    let mut busy: Option<std::io::BufReader<TcpStream>> = None;
    let mut first_conn = None;
    for i in 0..7 {
        if i > 0 {
            // Pacing the client, not waiting for hookd.
            std::thread::sleep(Duration::from_secs(1));
        }
        let r = post_gh_keep_alive(&mut busy, h.addr(), b"{}")
            .unwrap_or_else(|e| panic!("request {i} on the busy connection: {e}"));
        assert_eq!(r.status, 202, "request {i}: {:?}", r.body);
        let port = busy
            .as_ref()
            .map(|c| c.get_ref().local_addr().unwrap().port());
        assert!(port.is_some(), "request {i}: hookd asked to close");
        assert!(
            first_conn.is_none() || first_conn == port,
            "request {i} needed a new connection: the busy one was closed"
        );
        first_conn = port;
    }

    // Quiet: one answer, then nothing.
    let mut quiet = connect_from([127, 0, 0, 1], h.addr(), None);
    write_request(&mut quiet, "GET", "/healthz", &[], b"", false).unwrap();
    let mut rd = std::io::BufReader::new(quiet.try_clone().unwrap());
    assert_eq!(read_response(&mut rd).unwrap().status, 200);
    let answered = Instant::now();
    wait_for(
        Duration::from_secs(20),
        "the idle keep-alive connection closed",
        || peer_closed(&quiet).then_some(()),
    );
    let took = answered.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(12),
        "closed {took:?} after its answer, idle_timeout 5s\n{}",
        h.log_text()
    );
}
