//! Who is asking: the client address a request came from, and CIDR lists to
//! judge it by (`allow_ips`, `trusted_proxies`).
//!
//! The address is the TCP peer's unless the peer is a trusted proxy: then the
//! forwarding headers it added are believed, read right to left, and the client
//! is the first hop that is not itself a trusted proxy. A hop left of an
//! untrusted one was written by that untrusted party and means nothing.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;
use std::str::FromStr;

use http::HeaderMap;

/// The stored header under which ingress keeps the client address it
/// established; a sender's own header of that name is dropped at ingress.
pub(crate) const CLIENT_ADDR_HEADER: &str = "hookd-client-addr";
/// The stored header under which ingress keeps the request's query string
/// (without `?`), for `{query.…}` placeholders; only hookd writes it.
pub(crate) const QUERY_HEADER: &str = "hookd-query";

/// An address block: `192.30.252.0/22`, `2a0a:a440::/29`, or a bare address
/// (one host: /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside the block. IPv4-mapped IPv6 addresses
    /// (`::ffff:a.b.c.d`, what a dual-stack socket reports for IPv4 peers)
    /// compare as the IPv4 address they carry.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }

    /// Whether the block holds only loopback addresses' neighbours, i.e. its
    /// network is a loopback address.
    pub(crate) fn is_loopback(&self) -> bool {
        self.net.is_loopback()
    }
}

/// Whether the first `bits` bits of `a` and `b` agree.
fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    let rest = bits % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| {
            format!(
                "{s:?} is not an IP address or CIDR block (e.g. 192.30.252.0/22, 2a0a:a440::/29)"
            )
        })?;
        let net = canonical(net);
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: the prefix length must be 0 to {max}")),
            },
        };
        // A block is written by its first address; host bits set usually mean
        // a typo (`10.0.0.1/8` for `10.0.0.0/8`? or for `10.0.0.1/32`?).
        if (Cidr { net, prefix }).first() != net {
            return Err(format!(
                "{s:?} has bits set past its /{prefix}; write the block's first address"
            ));
        }
        Ok(Cidr { net, prefix })
    }
}

impl Cidr {
    fn first(&self) -> IpAddr {
        match self.net {
            IpAddr::V4(a) => {
                let bits = u32::from(a)
                    & u32::MAX
                        .checked_shl(32 - u32::from(self.prefix))
                        .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(bits))
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a)
                    & u128::MAX
                        .checked_shl(128 - u32::from(self.prefix))
                        .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses an `allow_ips_file`: one block per line, `#` starts a comment,
/// blank lines are skipped. Errors name the file and line.
pub(crate) fn parse_cidr_file(path: &std::path::Path, text: &str) -> Result<Vec<Cidr>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        out.push(
            line.parse()
                .map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?,
        );
    }
    Ok(out)
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The connection's peer, put on every request as an extension by the server.
/// `None` for a unix-socket peer, which has no IP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer(pub(crate) Option<IpAddr>);

impl Peer {
    /// The peer of a connected socket, by `getpeername`.
    pub(crate) fn of(fd: RawFd) -> Peer {
        let addr = nix::sys::socket::getpeername::<nix::sys::socket::SockaddrStorage>(fd).ok();
        let ip = addr.and_then(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        });
        Peer(ip.map(canonical))
    }
}

/// Whether `ip` is in any block of `list`.
pub(crate) fn listed(list: &[Cidr], ip: IpAddr) -> bool {
    list.iter().any(|c| c.contains(ip))
}

/// The client hookd believes sent the request: the peer, or, when the peer is
/// a trusted proxy, the right-most forwarded hop that is not one. A unix-socket
/// peer is a proxy on this host: it is trusted when a loopback block is.
/// `None` when no address can be established (a unix peer that is not
/// trusted, or a forwarding header that cannot be read).
pub(crate) fn client_addr(peer: Peer, headers: &HeaderMap, trusted: &[Cidr]) -> Option<IpAddr> {
    let peer_trusted = match peer.0 {
        Some(ip) => listed(trusted, ip),
        None => trusted.iter().any(Cidr::is_loopback),
    };
    if !peer_trusted {
        return peer.0;
    }
    let hops = match forwarded_hops(headers) {
        Some(h) => h,
        None => return peer.0,
    };
    let mut last = peer.0;
    for hop in hops.iter().rev() {
        let ip = parse_hop(hop)?;
        if !listed(trusted, ip) {
            return Some(ip);
        }
        last = Some(ip);
    }
    // Every hop is a trusted proxy: the left-most one is the client.
    last
}

/// The hops of `Forwarded` (its `for=` values) or, without it, of
/// `X-Forwarded-For`, left to right across all their lines.
fn forwarded_hops(headers: &HeaderMap) -> Option<Vec<String>> {
    let mut hops = Vec::new();
    let forwarded = headers.get_all(http::header::FORWARDED);
    if forwarded.iter().next().is_some() {
        for v in forwarded {
            let v = v.to_str().ok()?;
            for element in v.split(',') {
                let for_ = element.split(';').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("for").then(|| v.trim())
                });
                // An element without `for=` still stands for one hop we cannot read.
                hops.push(for_.unwrap_or("").trim_matches('"').to_string());
            }
        }
        return Some(hops);
    }
    let xff = headers.get_all("x-forwarded-for");
    // Neither header: nothing was forwarded.
    xff.iter().next()?;
    for v in xff {
        let v = v.to_str().ok()?;
        hops.extend(v.split(',').map(|h| h.trim().to_string()));
    }
    Some(hops)
}

/// `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`, `192.0.2.1:4711` or
/// `[2001:db8::1]:4711`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = hop.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<Ipv6Addr>().ok())
        .map(|ip| canonical(IpAddr::V6(ip)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_contain_their_addresses() {
        let gh = c("192.30.252.0/22");
        assert!(gh.contains(ip("192.30.252.1")));
        assert!(gh.contains(ip("192.30.255.255")));
        assert!(!gh.contains(ip("192.30.251.255")));
        assert!(!gh.contains(ip("192.31.0.0")));
        let v6 = c("2a0a:a440::/29");
        assert!(v6.contains(ip("2a0a:a447:ffff::1")));
        assert!(!v6.contains(ip("2a0a:a448::")));
        assert!(!v6.contains(ip("192.30.252.1")));
        assert!(c("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(!c("0.0.0.0/0").contains(ip("::1")));
        assert!(c("::/0").contains(ip("::1")));
    }

    #[test]
    fn bare_address_is_one_host() {
        assert_eq!(c("127.0.0.1"), c("127.0.0.1/32"));
        assert_eq!(c("::1"), c("::1/128"));
        assert!(c("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!c("127.0.0.1").contains(ip("127.0.0.2")));
    }

    #[test]
    fn mapped_ipv6_compares_as_ipv4() {
        assert!(c("192.30.252.0/22").contains(ip("::ffff:192.30.252.7")));
        assert!(c("::ffff:127.0.0.1").contains(ip("127.0.0.1")));
    }

    #[test]
    fn bad_blocks_are_refused() {
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "1.2.3.4/x",
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cidr_file_names_its_line() {
        let p = std::path::Path::new("gh.txt");
        let list =
            parse_cidr_file(p, "# GitHub\n192.30.252.0/22\n\n2a0a:a440::/29 # v6\n").unwrap();
        assert_eq!(list.len(), 2);
        let e = parse_cidr_file(p, "192.30.252.0/22\nnope\n").unwrap_err();
        assert!(e.starts_with("gh.txt:2: "), "{e}");
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn forwarding_headers_only_from_trusted_peers() {
        let trusted = [c("127.0.0.1")];
        let xff = headers(&[("x-forwarded-for", "203.0.113.9")]);
        let from = |p: &str| Peer(Some(ip(p)));
        assert_eq!(
            client_addr(from("127.0.0.1"), &xff, &trusted),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            client_addr(from("127.0.0.2"), &xff, &trusted),
            Some(ip("127.0.0.2"))
        );
        assert_eq!(
            client_addr(from("127.0.0.1"), &xff, &[]),
            Some(ip("127.0.0.1"))
        );
        assert_eq!(
            client_addr(from("127.0.0.1"), &HeaderMap::new(), &trusted),
            Some(ip("127.0.0.1"))
        );
    }

    #[test]
    fn rightmost_untrusted_hop_is_the_client() {
        let trusted = [c("127.0.0.1"), c("10.0.0.0/8")];
        let peer = Peer(Some(ip("127.0.0.1")));
        // The sender wrote 1.1.1.1 itself; 198.51.100.7 is what our proxies saw.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1, 198.51.100.7"),
            ("x-forwarded-for", "10.1.2.3"),
        ]);
        assert_eq!(client_addr(peer, &h, &trusted), Some(ip("198.51.100.7")));
        let h = headers(&[(
            "forwarded",
            "for=1.1.1.1, for=\"[2001:db8::7]:4711\";proto=https",
        )]);
        assert_eq!(client_addr(peer, &h, &trusted), Some(ip("2001:db8::7")));
        let h = headers(&[("x-forwarded-for", "10.0.0.1")]);
        assert_eq!(client_addr(peer, &h, &trusted), Some(ip("10.0.0.1")));
        let h = headers(&[("x-forwarded-for", "garbage")]);
        assert_eq!(client_addr(peer, &h, &trusted), None);
    }

    #[test]
    fn unix_peer_is_trusted_with_loopback() {
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(client_addr(Peer(None), &h, &[]), None);
        assert_eq!(
            client_addr(Peer(None), &h, &[c("::1")]),
            Some(ip("203.0.113.9"))
        );
    }
}
