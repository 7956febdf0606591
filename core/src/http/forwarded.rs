//! Reverse proxies in front of the web listener: which peers are trusted (`trusted_proxies`),
//! the client address they pass on in `Forwarded` (RFC 7239) or `X-Forwarded-For`, and the
//! PROXY protocol version 2 header (HAProxy's `send-proxy-v2`, proxy-protocol.txt §2.2).
//!
//! # Contract
//! - Only a peer in [`TrustedProxies`] is believed; from anyone else the headers are ignored
//!   and a PROXY header is a protocol error (the caller closes the connection).
//! - From a list of forwarded addresses the client is the right-most one that is not itself a
//!   trusted proxy (each proxy appends the address it saw: the entries to its left are the
//!   client's own claims).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// An address range: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `ADDR` or `ADDR/PREFIX` (IPv4 or IPv6).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("{text:?} is not an address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(|| format!("{text:?}: bad prefix"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }

    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The `trusted_proxies` option: the peers whose forwarded client addresses are believed.
/// Empty by default (nobody is trusted). Serialised as a list of `ADDR/PREFIX` strings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses a comma- or space-separated list of addresses and CIDRs.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split([',', ' ']).filter(|s| !s.trim().is_empty()).map(IpNet::parse).collect::<Result<_, _>>().map(Self)
    }

    /// Whether nobody is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client among `forwarded` (in header order, left to right) as seen through trusted
    /// proxies: the right-most address that is not a trusted proxy; the left-most when all are.
    pub fn client(&self, forwarded: &[IpAddr]) -> Option<IpAddr> {
        forwarded.iter().rev().find(|ip| !self.contains(**ip)).or(forwarded.first()).copied()
    }
}

impl Serialize for TrustedProxies {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

impl<'de> Deserialize<'de> for TrustedProxies {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = Vec::<String>::deserialize(d)?;
        list.iter().map(|s| IpNet::parse(s)).collect::<Result<_, _>>().map(Self).map_err(serde::de::Error::custom)
    }
}

/// The forwarded client addresses of a request head, left to right: the `for=` parameters of
/// `Forwarded` when it is present, else the entries of `X-Forwarded-For`. Entries that are not
/// addresses (`unknown`, obfuscated identifiers) are skipped. `headers` are (name, value).
pub fn forwarded_for(headers: &[(String, String)]) -> Vec<IpAddr> {
    let values = |name: &'static str| {
        headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).flat_map(|(_, v)| v.split(','))
    };
    let from_forwarded: Vec<IpAddr> = values("forwarded")
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| node_address(v.trim().trim_matches('"')))?
            })
        })
        .collect();
    if !from_forwarded.is_empty() {
        return from_forwarded;
    }
    values("x-forwarded-for").filter_map(|v| node_address(v.trim())).collect()
}

/// An RFC 7239 §6 node (`192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]`, `[2001:db8::1]:80`) or
/// a bare IPv6 address (`X-Forwarded-For`) as an address.
fn node_address(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    if let Ok(sa) = node.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    let inner = node.strip_prefix('[')?.split(']').next()?;
    inner.parse().ok()
}

/// The first header of `headers` named `X-Forwarded-Host`, or the `host=` of `Forwarded`.
pub fn forwarded_host(headers: &[(String, String)]) -> Option<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("forwarded"))
        .flat_map(|(_, v)| v.split([',', ';']))
        .find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            k.trim().eq_ignore_ascii_case("host").then(|| v.trim().trim_matches('"').to_string())
        })
        .or_else(|| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-host"))
                .map(|(_, v)| v.split(',').next().unwrap_or("").trim().to_string())
        })
        .filter(|h| !h.is_empty())
}

// ===== PROXY protocol version 2 =====

/// The 12 bytes every PROXY v2 header starts with (proxy-protocol.txt §2.2).
pub const PROXY_V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Largest PROXY v2 header accepted: the 16 fixed bytes and the addresses with some TLVs.
pub const MAX_PROXY_HEADER: usize = 16 + 512;

/// What the first bytes of a connection are, as to PROXY v2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preamble {
    /// Not enough bytes to say.
    Partial,
    /// No PROXY header: the bytes are the protocol's own.
    Absent,
    /// A PROXY header of `len` bytes; `source` is the client (`None` for the LOCAL command or an
    /// address family other than TCP over IPv4/IPv6: keep the peer's address).
    Proxy {
        /// Bytes of the header, to skip.
        len: usize,
        /// The original source address.
        source: Option<SocketAddr>,
    },
    /// A PROXY signature followed by something that is not a valid v2 header.
    Invalid(&'static str),
}

/// Reads a PROXY protocol v2 header at the start of `buf` (proxy-protocol.txt §2.2).
pub fn proxy_v2(buf: &[u8]) -> Preamble {
    let n = buf.len().min(PROXY_V2_SIGNATURE.len());
    if buf[..n] != PROXY_V2_SIGNATURE[..n] {
        return Preamble::Absent;
    }
    if buf.len() < 16 {
        return Preamble::Partial;
    }
    let (ver_cmd, family) = (buf[12], buf[13]);
    if ver_cmd >> 4 != 2 {
        return Preamble::Invalid("not version 2");
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > MAX_PROXY_HEADER {
        return Preamble::Invalid("header too long");
    }
    if buf.len() < len {
        return Preamble::Partial;
    }
    let body = &buf[16..len];
    match ver_cmd & 0x0f {
        0 => return Preamble::Proxy { len, source: None }, // LOCAL: the proxy's own connection
        1 => {}
        _ => return Preamble::Invalid("unknown command"),
    }
    let source = match family {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([body[8], body[9]])))
        }
        0x21 if body.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            Some(SocketAddr::new(Ipv6Addr::from(octets).into(), u16::from_be_bytes([body[32], body[33]])))
        }
        0x11 | 0x21 => return Preamble::Invalid("addresses cut short"),
        _ => None, // UNSPEC, UDP, UNIX: nothing we use
    };
    Preamble::Proxy { len, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn ranges() {
        let t = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1 2001:db8::/32").unwrap();
        assert!(t.contains(ip("10.1.2.3")) && t.contains(ip("127.0.0.1")) && t.contains(ip("2001:db8::5")));
        assert!(t.contains(ip("::ffff:10.9.9.9")), "IPv4-mapped");
        assert!(!t.contains(ip("127.0.0.2")) && !t.contains(ip("11.0.0.1")) && !t.contains(ip("2001:db9::1")));
        assert!(TrustedProxies::parse("0.0.0.0/0").unwrap().contains(ip("203.0.113.9")));
        for bad in ["10.0.0.0/33", "example.com", "1.2.3.4/x"] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"["10.0.0.0/8","127.0.0.1/32","2001:db8::/32"]"#);
        assert_eq!(serde_json::from_str::<TrustedProxies>(&json).unwrap(), t);
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_address() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let h = headers(&[("X-Forwarded-For", "1.1.1.1, 203.0.113.7"), ("x-forwarded-for", "10.0.0.2")]);
        let list = forwarded_for(&h);
        assert_eq!(list, [ip("1.1.1.1"), ip("203.0.113.7"), ip("10.0.0.2")]);
        assert_eq!(t.client(&list), Some(ip("203.0.113.7")), "1.1.1.1 is the client's own claim");
        assert_eq!(t.client(&[ip("10.0.0.1")]), Some(ip("10.0.0.1")));
        assert_eq!(t.client(&[]), None);
        let h = headers(&[
            ("Forwarded", r#"for=192.0.2.60;proto=https;host=gw.example.com, for="[2001:db8::7]:4711""#),
            ("X-Forwarded-For", "9.9.9.9"),
        ]);
        assert_eq!(forwarded_for(&h), [ip("192.0.2.60"), ip("2001:db8::7")], "Forwarded wins");
        assert_eq!(forwarded_host(&h).as_deref(), Some("gw.example.com"));
        let h = headers(&[("Forwarded", "for=unknown"), ("X-Forwarded-Host", "a.example")]);
        assert!(forwarded_for(&h).is_empty());
        assert_eq!(forwarded_host(&h).as_deref(), Some("a.example"));
    }

    fn v2(cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut b = PROXY_V2_SIGNATURE.to_vec();
        b.extend([0x20 | cmd, family]);
        b.extend((body.len() as u16).to_be_bytes());
        b.extend(body);
        b
    }

    #[test]
    fn proxy_v2_headers() {
        let body = [203, 0, 113, 7, 127, 0, 0, 1, 0x9c, 0x40, 0x2a, 0x68];
        let mut h = v2(1, 0x11, &body);
        h.extend(b"GET / HTTP/1.1\r\n");
        let source = Some("203.0.113.7:40000".parse().unwrap());
        assert_eq!(proxy_v2(&h), Preamble::Proxy { len: 28, source });
        for cut in [1, 12, 15, 27] {
            assert_eq!(proxy_v2(&h[..cut]), Preamble::Partial, "{cut}");
        }
        let mut body6 = [0u8; 36];
        body6[..16].copy_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        body6[32..34].copy_from_slice(&4711u16.to_be_bytes());
        let source = Some("[2001:db8::7]:4711".parse().unwrap());
        assert_eq!(proxy_v2(&v2(1, 0x21, &body6)), Preamble::Proxy { len: 52, source });
        assert_eq!(proxy_v2(&v2(0, 0x00, &[])), Preamble::Proxy { len: 16, source: None }, "LOCAL");
        assert_eq!(proxy_v2(b"GET / HTTP/1.1"), Preamble::Absent);
        assert_eq!(proxy_v2(&[0x16, 3, 1]), Preamble::Absent, "a TLS ClientHello");
        assert_eq!(proxy_v2(b"\r\n\r\nGET"), Preamble::Absent);
        assert!(matches!(proxy_v2(&v2(1, 0x11, &body[..4])), Preamble::Invalid(_)));
        let mut bad = v2(1, 0x11, &body);
        bad[12] = 0x11;
        assert!(matches!(proxy_v2(&bad), Preamble::Invalid(_)));
        let mut long = v2(1, 0x11, &body);
        long[14..16].copy_from_slice(&2000u16.to_be_bytes());
        assert!(matches!(proxy_v2(&long), Preamble::Invalid(_)));
    }
}
