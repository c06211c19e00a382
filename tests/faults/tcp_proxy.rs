//! A TCP fault proxy on 127.0.0.1 in front of one target (PostgreSQL, for
//! the multi-node tests): bytes are relayed as they are, and the test
//! switches at run time what the network does to them ([`Mode`]). The
//! switch applies to connections already open as well as to new ones, the
//! way a partition or a cut cable hits a pool's long-lived connections.
//! (`proxy.rs` is the other fault proxy: a misbehaving HTTP upstream.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the network between client and target does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every byte relayed both ways.
    Pass,
    /// Connections are accepted, nothing moves either way; open ones
    /// stall. Bytes are left unread, not dropped, so on a switch back to
    /// `Pass` they arrive late, as TCP retransmits them after a partition.
    Blackhole,
    /// Every connection, open or new, is reset (SO_LINGER 0: an RST, no
    /// FIN) on both sides.
    Reset,
    /// Client→target relayed, target→client swallowed: the target acts on
    /// what it is sent (a COMMIT commits) and the client never hears back.
    DropReplies,
}

/// What a [`TcpProxy::trap`] does to the one connection it catches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trap {
    /// The caught bytes reach the target; its answers to them, and to
    /// anything after, are swallowed: a COMMIT that commits unheard.
    AnswerLost,
    /// The caught bytes never reach the target, and nothing moves either
    /// way after: a COMMIT lost on the way, never applied.
    RequestLost,
}

/// An armed [`TcpProxy::trap`].
struct TrapSpec {
    after: Vec<u8>,
    at: Vec<u8>,
    how: Trap,
}

impl Mode {
    fn from_u8(v: u8) -> Mode {
        match v {
            0 => Mode::Pass,
            1 => Mode::Blackhole,
            2 => Mode::Reset,
            _ => Mode::DropReplies,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Mode::Pass => 0,
            Mode::Blackhole => 1,
            Mode::Reset => 2,
            Mode::DropReplies => 3,
        }
    }
}

/// How often a relay looks at the mode and the stop flag: a switch takes
/// effect within this time.
const TICK_MS: u16 = 5;

/// How long the proxy waits for the target to accept a connection.
const CONNECT_LIMIT: Duration = Duration::from_secs(2);

/// A relay whose peer stops reading gives up writing after this long.
const WRITE_LIMIT: Duration = Duration::from_secs(10);

/// No relay outlives this, whatever its peers do: a bound on a test that
/// forgets to drop its proxy.
const RELAY_LIFETIME: Duration = Duration::from_secs(900);

struct Shared {
    mode: AtomicU8,
    /// Armed by [`TcpProxy::drop_replies_after`]: the client bytes that
    /// switch the mode to `DropReplies` before they are relayed.
    trigger: std::sync::Mutex<Option<Vec<u8>>>,
    /// Armed by [`TcpProxy::trap`]; taken by the connection it catches.
    trap: std::sync::Mutex<Option<TrapSpec>>,
    /// A connection has been caught by the trap.
    trapped: AtomicBool,
    /// Set by [`TcpProxy::cut_trapped`]: the caught connection is reset.
    cut: AtomicBool,
    stop: AtomicBool,
    accepted: AtomicUsize,
    open: AtomicUsize,
}

/// The proxy; stops (and drops every relayed connection) when dropped.
pub struct TcpProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl TcpProxy {
    /// A proxy in [`Mode::Pass`] to `target`.
    pub fn start(target: SocketAddr) -> TcpProxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind the TCP proxy");
        let addr = l.local_addr().expect("TCP proxy address");
        l.set_nonblocking(true).expect("non-blocking listener");
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(Mode::Pass.as_u8()),
            trigger: std::sync::Mutex::new(None),
            trap: std::sync::Mutex::new(None),
            trapped: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
        });
        let sh = shared.clone();
        std::thread::spawn(move || accept_loop(l, target, sh));
        TcpProxy { addr, shared }
    }

    /// Switches the mode; open connections follow within a few ms.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.store(mode.as_u8(), Ordering::SeqCst);
    }

    /// Stays in its mode until a client sends `pattern` (within one read),
    /// then switches to [`Mode::DropReplies`] before relaying those bytes:
    /// the server gets them, their answer is swallowed. Fires once.
    pub fn drop_replies_after(&self, pattern: &[u8]) {
        if let Ok(mut t) = self.shared.trigger.lock() {
            *t = Some(pattern.to_vec());
        }
    }

    /// Catches the first connection whose client sends `after` and then
    /// (in the same read, past it, or in a later one) `at`: that one
    /// connection is then treated as `how` says, whatever the mode, while
    /// every other connection, new ones included, goes on as before. So
    /// `trap(marker, b"COMMIT\0", ..)` hits the COMMIT of the one
    /// transaction that wrote `marker`, and the reconnect that follows
    /// passes. Fires once.
    pub fn trap(&self, after: &[u8], at: &[u8], how: Trap) {
        if let Ok(mut t) = self.shared.trap.lock() {
            self.shared.trapped.store(false, Ordering::SeqCst);
            self.shared.cut.store(false, Ordering::SeqCst);
            *t = Some(TrapSpec {
                after: after.to_vec(),
                at: at.to_vec(),
                how,
            });
        }
    }

    /// Whether the trap has caught its connection.
    pub fn trapped(&self) -> bool {
        self.shared.trapped.load(Ordering::SeqCst)
    }

    /// Resets (RST, both sides) the connection the trap caught, within a
    /// tick: its client learns the connection broke, not how its last
    /// request ended.
    pub fn cut_trapped(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
    }

    pub fn mode(&self) -> Mode {
        Mode::from_u8(self.shared.mode.load(Ordering::SeqCst))
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections being relayed (or held) now.
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(l: TcpListener, target: SocketAddr, sh: Arc<Shared>) {
    while !sh.stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((client, _)) => {
                sh.accepted.fetch_add(1, Ordering::SeqCst);
                if Mode::from_u8(sh.mode.load(Ordering::SeqCst)) == Mode::Reset {
                    reset(client);
                    continue;
                }
                let sh = sh.clone();
                std::thread::spawn(move || {
                    sh.open.fetch_add(1, Ordering::SeqCst);
                    relay(client, target, &sh);
                    sh.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut fds = [nix::poll::PollFd::new(
                    l.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(TICK_MS));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(TICK_MS.into())),
        }
    }
}

/// A TCP reset instead of a FIN: SO_LINGER with a zero timeout, then close.
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

/// Relays one connection until a side closes, the mode is `Reset`, or the
/// proxy stops. One thread, both directions, polled: no clones of the
/// sockets, so a reset really is the last close.
fn relay(mut client: TcpStream, target: SocketAddr, sh: &Shared) {
    let mut server = match TcpStream::connect_timeout(&target, CONNECT_LIMIT) {
        Ok(s) => s,
        Err(_) => {
            // A target that is down: the client sees its connection cut.
            reset(client);
            return;
        }
    };
    for s in [&client, &server] {
        let _ = s.set_write_timeout(Some(WRITE_LIMIT));
        let _ = s.set_nodelay(true);
    }
    let born = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    // This connection's part in a trap: has it sent the trap's `after`
    // yet, and has the trap caught it.
    let mut seen_after = false;
    let mut caught: Option<Trap> = None;
    while !sh.stop.load(Ordering::SeqCst) && born.elapsed() < RELAY_LIFETIME {
        if caught.is_some() && sh.cut.load(Ordering::SeqCst) {
            reset(client);
            reset(server);
            return;
        }
        let mode = match caught {
            None => Mode::from_u8(sh.mode.load(Ordering::SeqCst)),
            Some(Trap::AnswerLost) => Mode::DropReplies,
            Some(Trap::RequestLost) => Mode::Blackhole,
        };
        match mode {
            Mode::Reset => {
                reset(client);
                reset(server);
                return;
            }
            Mode::Blackhole => {
                std::thread::sleep(Duration::from_millis(TICK_MS.into()));
                continue;
            }
            Mode::Pass | Mode::DropReplies => {}
        }
        let (from_client, from_server) = {
            let mut fds = [
                nix::poll::PollFd::new(client.as_fd(), nix::poll::PollFlags::POLLIN),
                nix::poll::PollFd::new(server.as_fd(), nix::poll::PollFlags::POLLIN),
            ];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(TICK_MS)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
            let ready = |f: &nix::poll::PollFd| {
                f.revents().is_some_and(|r| {
                    r.intersects(
                        nix::poll::PollFlags::POLLIN
                            | nix::poll::PollFlags::POLLHUP
                            | nix::poll::PollFlags::POLLERR,
                    )
                })
            };
            (ready(&fds[0]), ready(&fds[1]))
        };
        // The mode again: a switch during the poll must apply to the bytes
        // it woke for (a COMMIT sent just after `DropReplies` is set would
        // otherwise have its answer relayed).
        let mode = match caught {
            None => Mode::from_u8(sh.mode.load(Ordering::SeqCst)),
            Some(_) => mode,
        };
        if !matches!(mode, Mode::Pass | Mode::DropReplies) {
            continue;
        }
        if from_client {
            match client.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    fire_trigger(sh, &buf[..n]);
                    if caught.is_none() {
                        caught = spring_trap(sh, &buf[..n], &mut seen_after);
                    }
                    if caught == Some(Trap::RequestLost) {
                        continue;
                    }
                    if server.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        // A trigger fired by the bytes just relayed applies to their answer.
        let mode = match caught {
            None => Mode::from_u8(sh.mode.load(Ordering::SeqCst)),
            Some(_) => Mode::DropReplies,
        };
        if from_server {
            match server.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if mode == Mode::Pass && client.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Where `pat` first occurs in `bytes`.
fn find(bytes: &[u8], pat: &[u8]) -> Option<usize> {
    if pat.is_empty() {
        return None;
    }
    bytes.windows(pat.len()).position(|w| w == pat)
}

/// Whether the armed trap catches the connection that sent `bytes` (having
/// sent the trap's `after` already if `seen_after`); takes the trap if so.
fn spring_trap(sh: &Shared, bytes: &[u8], seen_after: &mut bool) -> Option<Trap> {
    let Ok(mut t) = sh.trap.lock() else {
        return None;
    };
    let spec = t.as_ref()?;
    let rest = if *seen_after {
        bytes
    } else {
        let at = find(bytes, &spec.after)?;
        *seen_after = true;
        &bytes[at + spec.after.len()..]
    };
    find(rest, &spec.at)?;
    let how = spec.how;
    *t = None;
    sh.trapped.store(true, Ordering::SeqCst);
    Some(how)
}

/// Switches to `DropReplies` if the armed pattern is in `bytes`.
fn fire_trigger(sh: &Shared, bytes: &[u8]) {
    let Ok(mut t) = sh.trigger.lock() else {
        return;
    };
    let hit = t
        .as_ref()
        .is_some_and(|p| !p.is_empty() && bytes.windows(p.len()).any(|w| w == p.as_slice()));
    if hit {
        *t = None;
        sh.mode.store(Mode::DropReplies.as_u8(), Ordering::SeqCst);
    }
}
