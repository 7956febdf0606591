//! Where a request goes: the next hop as the URI gives it (host, port, transport). Its targets
//! (RFC 3263 §4: NAPTR, SRV, A/AAAA, in order, with failover) are `super::rfc3263`'s.

use std::fmt;
use std::net::IpAddr;

/// SIP transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// UDP (RFC 3261 §18), unreliable: transactions retransmit.
    Udp,
    /// TCP, reliable, framed by Content-Length.
    Tcp,
    /// TLS over TCP (`sips`, or `transport=tls`).
    Tls,
}

impl Transport {
    /// The Via token (`UDP`, `TCP`, `TLS`).
    pub fn via_token(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
        }
    }

    /// The URI `transport` parameter value.
    pub fn param(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }

    /// Parses a `transport` parameter or Via token, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Some(Self::Udp),
            "tcp" => Some(Self::Tcp),
            "tls" => Some(Self::Tls),
            _ => None,
        }
    }

    /// Reliable transports do not retransmit (RFC 3261 §17).
    pub fn reliable(self) -> bool {
        self != Self::Udp
    }

    /// 5060, or 5061 for TLS.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Tls => 5061,
            _ => 5060,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.param())
    }
}

/// A next hop before name resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySpec {
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// Port, if given.
    pub port: Option<u16>,
    /// Transport.
    pub transport: Transport,
    /// Whether the URI named the transport (`;transport=`): then RFC 3263 skips NAPTR (§4.1).
    pub transport_given: bool,
}

impl ProxySpec {
    /// Parses `host[:port][;transport=udp|tcp|tls]` (SylkServer's `outbound_sip_proxy`; a
    /// leading `sip:`/`sips:` is accepted, IPv6 in brackets). The error names what was expected.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        const EXPECTED: &str = "host[:port][;transport=udp|tcp|tls]";
        let mut secure = false;
        let mut rest = text.trim();
        if let Some(r) = rest.strip_prefix("sips:") {
            secure = true;
            rest = r;
        } else if let Some(r) = rest.strip_prefix("sip:") {
            rest = r;
        }
        let mut parts = rest.split(';');
        let hostport = parts.next().unwrap_or_default();
        let mut transport = if secure { Transport::Tls } else { Transport::Udp };
        let mut transport_given = false;
        for p in parts {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            if k.trim().eq_ignore_ascii_case("transport") {
                transport = Transport::parse(v.trim()).ok_or(EXPECTED)?;
                transport_given = true;
            }
        }
        let (host, port) = split_hostport(hostport).ok_or(EXPECTED)?;
        Ok(Self { host, port, transport, transport_given })
    }

    /// The port to use.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or_else(|| self.transport.default_port())
    }

    /// The host as an IP address, if it is a literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// `<sip:host:port;transport=…;lr>` for a preloaded Route.
    pub fn route(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        match self.transport {
            Transport::Udp => format!("<sip:{host}{port};lr>"),
            t => format!("<sip:{host}{port};transport={};lr>", t.param()),
        }
    }
}

/// The next hop of an out-of-dialog request to `target` (`user@domain` or a bare domain), as
/// INVITE and MESSAGE route (spec §5.3): the outbound proxy when there is one, else the target's
/// domain (resolved by RFC 3263, `super::rfc3263`).
pub fn next_hop(target: &str, proxy: Option<&ProxySpec>) -> ProxySpec {
    let domain = target.split_once('@').map_or(target, |(_, d)| d);
    proxy.cloned().unwrap_or_else(|| {
        ProxySpec::parse(domain).unwrap_or(ProxySpec {
            host: domain.to_string(),
            port: None,
            transport: Transport::Udp,
            transport_given: false,
        })
    })
}

/// Splits `host`, `host:port`, `[v6]`, `[v6]:port`; `None` if malformed.
pub fn split_hostport(hp: &str) -> Option<(String, Option<u16>)> {
    let hp = hp.trim();
    if let Some(v6) = hp.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        addr.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok().filter(|&p: &u16| p != 0)?),
        };
        return Some((addr.to_string(), port));
    }
    let (host, port) = match hp.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse().ok().filter(|&p: &u16| p != 0)?)),
        None => (hp, None),
    };
    let ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    ok.then(|| (host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sylkserver_proxy_forms() {
        assert_eq!(
            ProxySpec::parse("proxy.example.com").unwrap(),
            ProxySpec {
                host: "proxy.example.com".into(),
                port: None,
                transport: Transport::Udp,
                transport_given: false
            }
        );
        let p = ProxySpec::parse("127.0.0.1:5070;transport=tcp").unwrap();
        assert_eq!((p.port_or_default(), p.transport), (5070, Transport::Tcp));
        assert_eq!(p.route(), "<sip:127.0.0.1:5070;transport=tcp;lr>");
        let p = ProxySpec::parse("sips:[::1]").unwrap();
        assert_eq!((p.host.as_str(), p.port_or_default(), p.transport), ("::1", 5061, Transport::Tls));
        assert_eq!(p.route(), "<sip:[::1];transport=tls;lr>");
        for bad in ["", "a b", "host:0", "host:99999", "[::1", "h;transport=sctp"] {
            assert!(ProxySpec::parse(bad).is_err(), "{bad}");
        }
    }
}
