//! How many client connections hookd holds, in all and per client address.
//!
//! Every accepted connection registers here before it is served. At a cap the
//! oldest idle connection (no request in progress) is closed to make room, so
//! a crowd of idle or stalled connections cannot lock a real client out; when
//! none is idle the newcomer is refused. The total cap is derived from the
//! open-file limit, leaving a reserve so the spool, the control socket and
//! deliveries never run out of descriptors because of ingress.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::access::Cidr;
use crate::config::Config;

/// Descriptors kept for everything but client connections: the spool (db,
/// WAL, shm), the control socket and its clients, the runtime's own, logs.
const FIXED_RESERVE: u64 = 64;
/// Per delivery slot: an exec child's three pipes and a forward socket.
const PER_DELIVERY: u64 = 4;
/// Below this a derived cap would make hookd useless; the operator is told.
const MIN_DERIVED: u64 = 16;

/// The caps and the timeouts every connection is served with.
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) max_per_ip: usize,
    pub(crate) trusted: Vec<Cidr>,
    pub(crate) write_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    /// When the connections still open must be gone, once deliveries are
    /// done: set by the first connection that sees the switch, so the ones
    /// accepted later share the same end instead of each getting a new one.
    close_by: OnceLock<Instant>,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    conns: HashMap<u64, Entry>,
    /// Idle connections, oldest first.
    idle: BTreeSet<(Instant, u64)>,
    per_ip: HashMap<IpAddr, usize>,
}

struct Entry {
    ip: Option<IpAddr>,
    /// Set while no request is in progress: since when.
    idle_since: Option<Instant>,
    shed: Arc<Notify>,
}

/// Where the total cap came from, for the start-up log line.
pub(crate) struct Derivation {
    pub(crate) nofile: Option<u64>,
    pub(crate) reserve: u64,
    pub(crate) configured: bool,
}

impl Limits {
    pub(crate) fn from_config(cfg: &Config) -> (Limits, Derivation) {
        let s = &cfg.server;
        let slots: u64 = cfg
            .hooks
            .iter()
            .flat_map(|h| &h.get_ref().routes)
            .map(|r| r.concurrency as u64)
            .sum();
        let reserve = FIXED_RESERVE + PER_DELIVERY * slots;
        let nofile = open_file_limit();
        let derived = match nofile {
            Some(n) => n.saturating_sub(reserve).max(MIN_DERIVED),
            None => 4096,
        };
        let limits = Limits {
            max_connections: s.max_connections.unwrap_or(derived as usize),
            max_per_ip: s.max_connections_per_ip,
            trusted: s.trusted_proxies.clone(),
            write_timeout: s.write_timeout,
            idle_timeout: s.idle_timeout,
            max_header_bytes: s.max_header_bytes as usize,
            close_by: OnceLock::new(),
            table: Mutex::new(Table::default()),
        };
        let how = Derivation {
            nofile,
            reserve,
            configured: s.max_connections.is_some(),
        };
        (limits, how)
    }

    /// Logs the caps once at start; warns when they leave no reserve.
    pub(crate) fn log(&self, how: &Derivation) {
        let (max, per_ip) = (self.max_connections, self.max_per_ip);
        let nofile = how.nofile.map_or("unknown".to_string(), |n| n.to_string());
        tracing::info!(
            hookd_event = "connection_limits",
            max_connections = max as u64,
            max_connections_per_ip = per_ip as u64,
            open_file_limit = %nofile,
            reserve = how.reserve,
            "at most {max} client connections ({per_ip} per client address); {} (open-file limit {nofile}, {} kept for the spool, deliveries and the control socket)",
            if how.configured { "server.max_connections" } else { "derived" },
            how.reserve
        );
        if let Some(n) = how.nofile {
            if (max as u64).saturating_add(how.reserve) > n {
                tracing::warn!(
                    "server.max_connections {max} plus a reserve of {} exceeds the open-file limit {n}: deliveries may fail with \"Too many open files\" under load; raise LimitNOFILE= or lower server.max_connections",
                    how.reserve
                );
            }
        }
    }

    /// Registers a connection from `ip` (None: a unix socket), closing the
    /// oldest idle one when a cap is reached. None: refused, nothing idle to shed.
    pub(crate) fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Option<Slot> {
        let ip = ip.map(|i| i.to_canonical());
        let capped_ip = ip.filter(|i| !self.trusted.iter().any(|n| n.contains(*i)));
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = capped_ip {
            if t.per_ip.get(&i).copied().unwrap_or(0) >= self.max_per_ip
                && !t.shed_oldest_idle(Some(i))
            {
                return None;
            }
        }
        if t.conns.len() >= self.max_connections && !t.shed_oldest_idle(None) {
            return None;
        }
        let id = t.next_id;
        t.next_id += 1;
        let now = Instant::now();
        let shed = Arc::new(Notify::new());
        t.conns.insert(
            id,
            Entry {
                ip,
                idle_since: Some(now),
                shed: shed.clone(),
            },
        );
        t.idle.insert((now, id));
        if let Some(i) = ip {
            *t.per_ip.entry(i).or_default() += 1;
        }
        Some(Slot {
            limits: self.clone(),
            id,
            shed,
        })
    }

    /// Closes the oldest idle connection, to free a descriptor when accept
    /// runs out of them. True if there was one.
    pub(crate) fn shed_one(&self) -> bool {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.shed_oldest_idle(None)
    }

    pub(crate) fn open(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .conns
            .len()
    }

    /// The moment open connections are closed, once deliveries are done.
    pub(crate) fn close_by(&self) -> Instant {
        *self
            .close_by
            .get_or_init(|| Instant::now() + self.write_timeout)
    }

    fn set_idle(&self, id: u64, idle: bool) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let Some(e) = t.conns.get_mut(&id) else {
            return; // already shed
        };
        let old = e.idle_since.take();
        if idle {
            let now = Instant::now();
            e.idle_since = Some(now);
            t.idle.insert((now, id));
        }
        if let Some(since) = old {
            t.idle.remove(&(since, id));
        }
    }

    fn remove(&self, id: u64) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.forget(id);
    }
}

impl Table {
    /// Takes a connection out of the table (its descriptor closes when its
    /// task sees the notice) and returns its shed notice.
    fn forget(&mut self, id: u64) -> Option<Arc<Notify>> {
        let e = self.conns.remove(&id)?;
        if let Some(since) = e.idle_since {
            self.idle.remove(&(since, id));
        }
        if let Some(ip) = e.ip {
            if let Some(n) = self.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&ip);
                }
            }
        }
        Some(e.shed)
    }

    fn shed_oldest_idle(&mut self, ip: Option<IpAddr>) -> bool {
        let victim = self
            .idle
            .iter()
            .map(|&(_, id)| id)
            .find(|id| ip.is_none() || self.conns.get(id).and_then(|e| e.ip) == ip);
        match victim.and_then(|id| self.forget(id)) {
            Some(shed) => {
                // notify_one keeps the notice if the task is not waiting yet.
                shed.notify_one();
                true
            }
            None => false,
        }
    }
}

/// One admitted connection; leaves the table on drop.
pub(crate) struct Slot {
    limits: Arc<Limits>,
    id: u64,
    shed: Arc<Notify>,
}

impl Slot {
    pub(crate) fn busy(&self) {
        self.limits.set_idle(self.id, false);
    }

    pub(crate) fn idle(&self) {
        self.limits.set_idle(self.id, true);
    }

    /// Completes when this connection was chosen to make room for another.
    pub(crate) async fn shed(&self) {
        self.shed.notified().await
    }

    pub(crate) fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.remove(self.id);
    }
}

/// The soft `RLIMIT_NOFILE`, the one `accept` runs into.
fn open_file_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // Safety: getrlimit writes one struct rlimit to the pointer we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return None;
    }
    (r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_ip: usize, trusted: &[&str]) -> Arc<Limits> {
        let mut cfg = Config::parse("", std::path::Path::new("t.toml")).unwrap();
        cfg.server.max_connections = Some(max);
        cfg.server.max_connections_per_ip = per_ip;
        cfg.server.trusted_proxies = trusted.iter().map(|t| t.parse().unwrap()).collect();
        Arc::new(Limits::from_config(&cfg).0)
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let l = limits(2, 10, &[]);
        let a = l.admit(ip("127.0.0.1")).unwrap();
        let b = l.admit(ip("127.0.0.1")).unwrap();
        a.busy();
        // b is the only idle one: it goes, even though a is older.
        let c = l.admit(ip("127.0.0.1")).unwrap();
        tokio::time::timeout(Duration::from_secs(1), b.shed())
            .await
            .unwrap();
        assert_eq!(l.open(), 2);
        c.busy();
        assert!(l.admit(ip("127.0.0.1")).is_none(), "nothing idle: refused");
        drop(b);
        assert_eq!(l.open(), 2, "a shed slot is already out of the table");
        a.idle();
        assert!(l.admit(ip("127.0.0.1")).is_some());
    }

    #[test]
    fn the_per_address_cap_spares_other_addresses_and_trusted_proxies() {
        let l = limits(100, 2, &["10.0.0.0/8"]);
        let a = l.admit(ip("127.0.0.2")).unwrap();
        let b = l.admit(ip("127.0.0.2")).unwrap();
        a.busy();
        b.busy();
        assert!(l.admit(ip("127.0.0.2")).is_none());
        assert!(
            l.admit(ip("::ffff:127.0.0.2")).is_none(),
            "mapped is the same"
        );
        let _c = l.admit(ip("127.0.0.1")).unwrap();
        let proxies: Vec<_> = (0..5).map(|_| l.admit(ip("10.1.2.3")).unwrap()).collect();
        assert_eq!(proxies.len(), 5);
        let _u = l.admit(None).unwrap();
        drop(a);
        assert!(l.admit(ip("127.0.0.2")).is_some());
    }
}
