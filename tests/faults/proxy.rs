//! A misbehaving upstream: a fault proxy on 127.0.0.1 between hookd's
//! `forward` action and the checker's real upstream. Each delivery attempt
//! gets one seeded fault; the proxy logs (hookd id, attempt, fault, start,
//! end) for every attempt, so a test can check retry intervals against the
//! backoff policy. Every answer is `Connection: close`, so one connection is
//! one attempt and hookd's pool never reuses a half-broken one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What the proxy does with one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwarded; the upstream's answer relayed.
    Pass,
    /// 503 with a body, not forwarded.
    Unavailable,
    /// The request's headers read, then a TCP reset; not forwarded.
    ResetAfterHeaders,
    /// The request read, then no answer until hookd gives up; not forwarded.
    Hang,
    /// Forwarded, then `200` headers and part of the body, then a reset.
    OkThenReset,
    /// Forwarded, then `200` and a body one byte every 50 ms (2 s in all).
    Trickle,
}

impl Fault {
    /// Seeded choice: 40 % of attempts pass, the rest misbehave.
    pub fn mix(rng: &mut StdRng, _attempt: Option<u32>) -> Fault {
        match rng.gen_range(0..100) {
            0..=39 => Fault::Pass,
            40..=57 => Fault::Unavailable,
            58..=72 => Fault::ResetAfterHeaders,
            73..=80 => Fault::Hang,
            81..=90 => Fault::OkThenReset,
            _ => Fault::Trickle,
        }
    }
}

/// One attempt as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub hookd_id: Option<i64>,
    pub attempt: Option<u32>,
    pub fault: Fault,
    /// The request line arrived.
    pub start: Instant,
    /// The proxy's part ended: answer written, reset sent, or (hang) hookd
    /// closed the connection.
    pub end: Instant,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Attempt>>>,
}

/// The longest a hanging attempt is held if hookd never gives up.
const HANG_LIMIT: Duration = Duration::from_secs(60);

/// Chooses the fault of one attempt (given its `Hookd-Attempt`).
pub type Pick = fn(&mut StdRng, Option<u32>) -> Fault;

impl FaultProxy {
    /// A proxy to `upstream` whose faults come from `pick`, seeded.
    pub fn start(upstream: SocketAddr, seed: u64, pick: Pick) -> FaultProxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let addr = l.local_addr().expect("proxy address");
        let log: Arc<Mutex<Vec<Attempt>>> = Arc::default();
        let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
        let lg = log.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { break };
                let (lg, rng) = (lg.clone(), rng.clone());
                std::thread::spawn(move || {
                    if let Some(a) = one_attempt(s, upstream, &rng, pick) {
                        lg.lock().unwrap().push(a);
                    }
                });
            }
        });
        FaultProxy { addr, log }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.log.lock().unwrap().clone()
    }
}

/// A TCP reset instead of a FIN: SO_LINGER with a zero timeout, then close
/// (the last descriptor of the socket: drop its clones first).
fn reset(s: TcpStream) {
    let _ = nix::sys::socket::setsockopt(
        &s.as_fd(),
        nix::sys::socket::sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    );
    drop(s);
}

/// Serves one connection = one attempt. `None` if it was not a request.
fn one_attempt(
    s: TcpStream,
    upstream: SocketAddr,
    rng: &Mutex<StdRng>,
    pick: Pick,
) -> Option<Attempt> {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut w = s.try_clone().ok()?;
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut head = String::new();
    r.read_line(&mut head).ok().filter(|&n| n > 0)?;
    let start = Instant::now();
    let (mut len, mut hookd_id, mut attempt) = (0usize, None, None);
    // Bounded: hookd sends a few dozen headers.
    for _ in 0..200 {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        if h.trim_end().is_empty() {
            break;
        }
        if let Some((n, v)) = h.trim_end().split_once(':') {
            let v = v.trim();
            if n.eq_ignore_ascii_case("content-length") {
                len = v.parse().unwrap_or(0);
            } else if n.eq_ignore_ascii_case("hookd-delivery-id") {
                hookd_id = v.parse().ok();
            } else if n.eq_ignore_ascii_case("hookd-attempt") {
                attempt = v.parse().ok();
            }
            if !n.eq_ignore_ascii_case("connection") {
                head.push_str(&h);
            }
        }
    }
    let fault = pick(&mut rng.lock().unwrap(), attempt);
    let done = |fault| {
        Some(Attempt {
            hookd_id,
            attempt,
            fault,
            start,
            end: Instant::now(),
        })
    };
    if fault == Fault::ResetAfterHeaders {
        drop((r, w));
        reset(s);
        return done(fault);
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    match fault {
        Fault::Unavailable => {
            let _ = w.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 12\r\nConnection: close\r\n\r\nupstream 503",
            );
            done(fault)
        }
        Fault::Hang => {
            // Until hookd's timeout closes the connection (EOF or reset).
            let _ = s.set_read_timeout(Some(HANG_LIMIT));
            let mut buf = [0u8; 256];
            while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
            done(fault)
        }
        Fault::Pass => {
            let status = forward(upstream, &head, &body).unwrap_or(502);
            let _ = write!(
                w,
                "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
            done(fault)
        }
        Fault::OkThenReset => {
            forward(upstream, &head, &body)?;
            let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\npart");
            let _ = w.flush();
            // Let the headers reach hookd before the reset overtakes them.
            std::thread::sleep(Duration::from_millis(20));
            drop((r, w));
            reset(s);
            done(fault)
        }
        Fault::Trickle => {
            forward(upstream, &head, &body)?;
            let _ =
                w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\nConnection: close\r\n\r\n");
            for _ in 0..40 {
                if w.write_all(b"t").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            done(fault)
        }
        Fault::ResetAfterHeaders => unreachable!("handled above"),
    }
}

/// Sends the request to the real upstream; returns its status.
fn forward(upstream: SocketAddr, head: &str, body: &[u8]) -> Option<u16> {
    let mut u = TcpStream::connect(upstream).ok()?;
    let _ = u.set_read_timeout(Some(Duration::from_secs(30)));
    u.write_all(head.as_bytes()).ok()?;
    u.write_all(b"Connection: close\r\n\r\n").ok()?;
    u.write_all(body).ok()?;
    let mut line = String::new();
    BufReader::new(u).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}
