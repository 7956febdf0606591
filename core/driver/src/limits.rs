//! Connection limits that hold for the whole process, whatever worker the kernel hands an accept
//! to: web connections per source IP (`max_connections_per_ip`), SIP TCP connections per source
//! IP and in total (`max_sip_tcp_connections_per_ip`, `max_sip_tcp_connections`).
//!
//! # Contract
//! - The runtime asks [`ConnLimits::admit`] for every accepted socket *before* the core hears of
//!   it. Refused: the runtime closes the socket at once and the core never sees it (a capture
//!   records nothing of it, so replay stays exact). Admitted: the [`Permit`] lives as long as the
//!   socket (the runtime keeps it next to the socket), and dropping it gives the place back.
//! - The counts are shared by every clone (one `Arc`, one lock per accept and per close), so a
//!   process with N workers refuses exactly where a process with one does. The core's own
//!   per-worker `max_connections_per_ip` check stays; with these counts in front it never fires
//!   in the runtimes.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use sylkgw_core::Listener;

/// Default `max_sip_tcp_connections_per_ip`: a proxy or peer needs a few, not hundreds.
pub const DEFAULT_SIP_TCP_PER_IP: usize = 10;
/// Default `max_sip_tcp_connections`.
pub const DEFAULT_SIP_TCP_TOTAL: usize = 1000;

/// The caps: per source IP and in total, for web and for SIP TCP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Web connections from one IP (`max_connections_per_ip`).
    pub web_per_ip: usize,
    /// Web connections in all (no option: unlimited).
    pub web_total: usize,
    /// SIP TCP connections from one IP (`max_sip_tcp_connections_per_ip`).
    pub sip_per_ip: usize,
    /// SIP TCP connections in all (`max_sip_tcp_connections`).
    pub sip_total: usize,
}

/// Why an accepted connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `cap` connections of this kind from `ip` are open already.
    PerIp { ip: IpAddr, cap: usize },
    /// `cap` connections of this kind are open already.
    Total { cap: usize },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PerIp { ip, cap } => write!(f, "{cap} connections from {ip} already"),
            Self::Total { cap } => write!(f, "{cap} connections already"),
        }
    }
}

/// One kind's counts.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Only IPs with at least one connection.
    per_ip: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Shared {
    /// Changed by a reload ([`ConnLimits::set_caps`]).
    caps: Mutex<Caps>,
    /// Peers whose web connections are not held to the per-IP cap at accept: trusted reverse
    /// proxies, whose connections the core counts under their clients' addresses. Changed by a
    /// reload ([`ConnLimits::set_trusted`]).
    trusted: Mutex<sylkgw_core::http::forwarded::TrustedProxies>,
    /// Web, SIP TCP.
    counts: [Mutex<Counts>; 2],
}

/// The process's connection counts; clone it into every worker.
#[derive(Debug, Clone)]
pub struct ConnLimits(Arc<Shared>);

/// An admitted connection's place; dropping it frees the place.
#[derive(Debug)]
pub struct Permit {
    shared: Arc<Shared>,
    kind: usize,
    ip: IpAddr,
}

impl ConnLimits {
    /// Empty counts under `caps`.
    pub fn new(caps: Caps) -> Self {
        Self::with_trusted(caps, Default::default())
    }

    /// Empty counts under `caps`; web connections from `trusted` (reverse proxies) are held to
    /// the total cap only (the core applies the per-IP cap once it knows the client's address).
    pub fn with_trusted(caps: Caps, trusted: sylkgw_core::http::forwarded::TrustedProxies) -> Self {
        Self(Arc::new(Shared { caps: Mutex::new(caps), trusted: Mutex::new(trusted), counts: Default::default() }))
    }

    /// New caps (a reload): connections already open stay, even over them.
    pub fn set_caps(&self, caps: Caps) {
        *self.0.caps.lock().unwrap_or_else(|e| e.into_inner()) = caps;
    }

    /// New trusted proxies (a reload): connections already open keep the place they hold.
    pub fn set_trusted(&self, trusted: sylkgw_core::http::forwarded::TrustedProxies) {
        *self.0.trusted.lock().unwrap_or_else(|e| e.into_inner()) = trusted;
    }

    /// Counts a connection accepted on `listener` from `ip`, unless that would pass a cap.
    pub fn admit(&self, listener: Listener, ip: IpAddr) -> Result<Permit, Refusal> {
        let caps = *self.0.caps.lock().unwrap_or_else(|e| e.into_inner());
        let trusted = self.0.trusted.lock().unwrap_or_else(|e| e.into_inner()).contains(ip);
        let (kind, per_ip_cap, total_cap) = match listener {
            // SIP over TCP and over TLS share the SIP caps.
            Listener::SipTcp | Listener::SipTls => (1, caps.sip_per_ip, caps.sip_total),
            _ if trusted => (0, usize::MAX, caps.web_total),
            _ => (0, caps.web_per_ip, caps.web_total),
        };
        let mut counts = lock(&self.0.counts[kind]);
        if counts.total >= total_cap {
            return Err(Refusal::Total { cap: total_cap });
        }
        let from_ip = counts.per_ip.entry(ip).or_default();
        if *from_ip >= per_ip_cap {
            if *from_ip == 0 {
                counts.per_ip.remove(&ip);
            }
            return Err(Refusal::PerIp { ip, cap: per_ip_cap });
        }
        *from_ip += 1;
        counts.total += 1;
        Ok(Permit { shared: Arc::clone(&self.0), kind, ip })
    }

    /// Open connections accepted on `listener` (all IPs), and from `ip`.
    pub fn open(&self, listener: Listener, ip: IpAddr) -> (usize, usize) {
        let sip = matches!(listener, Listener::SipTcp | Listener::SipTls);
        let counts = lock(&self.0.counts[usize::from(sip)]);
        (counts.total, counts.per_ip.get(&ip).copied().unwrap_or(0))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = lock(&self.shared.counts[self.kind]);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

fn lock(m: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn caps_hold_across_clones_and_free_on_drop() {
        let limits = ConnLimits::new(Caps { web_per_ip: 3, web_total: usize::MAX, sip_per_ip: 2, sip_total: 3 });
        let other_worker = limits.clone();
        let mut web: Vec<Permit> = (0..3).map(|_| limits.admit(Listener::Web, ip(1)).unwrap()).collect();
        assert_eq!(
            other_worker.admit(Listener::Web, ip(1)).unwrap_err(),
            Refusal::PerIp { ip: ip(1), cap: 3 },
            "the fourth from one IP is refused whichever worker accepted it"
        );
        assert!(other_worker.admit(Listener::Web, ip(2)).is_ok(), "another IP is not affected");
        web.pop();
        assert!(other_worker.admit(Listener::Web, ip(1)).is_ok(), "a closed connection frees its place");
        // SIP TCP counts apart from web, per IP and in total.
        let sip: Vec<Permit> = vec![
            limits.admit(Listener::SipTcp, ip(1)).unwrap(),
            other_worker.admit(Listener::SipTcp, ip(1)).unwrap(),
            limits.admit(Listener::SipTcp, ip(2)).unwrap(),
        ];
        assert_eq!(limits.admit(Listener::SipTcp, ip(3)).unwrap_err(), Refusal::Total { cap: 3 });
        assert_eq!(limits.open(Listener::SipTcp, ip(1)), (3, 2));
        drop(sip);
        drop(web);
        assert_eq!(limits.open(Listener::SipTcp, ip(1)), (0, 0));
        assert_eq!(limits.open(Listener::Web, ip(1)), (0, 0), "every place is back");
        assert_eq!(Refusal::PerIp { ip: ip(1), cap: 3 }.to_string(), "3 connections from 192.0.2.1 already");
    }

    #[test]
    fn a_trusted_proxy_is_held_to_the_total_only() {
        let caps = Caps { web_per_ip: 2, web_total: 5, sip_per_ip: 1, sip_total: 5 };
        let trusted = sylkgw_core::http::forwarded::TrustedProxies::parse("192.0.2.0/31").unwrap();
        let limits = ConnLimits::with_trusted(caps, trusted);
        let held: Vec<Permit> = (0..5).map(|_| limits.admit(Listener::Web, ip(1)).unwrap()).collect();
        assert_eq!(limits.admit(Listener::Web, ip(1)).unwrap_err(), Refusal::Total { cap: 5 });
        drop(held);
        let _two: Vec<Permit> = (0..2).map(|_| limits.admit(Listener::Web, ip(2)).unwrap()).collect();
        assert_eq!(limits.admit(Listener::Web, ip(2)).unwrap_err(), Refusal::PerIp { ip: ip(2), cap: 2 });
        let _sip = limits.admit(Listener::SipTcp, ip(1)).unwrap();
        assert!(limits.admit(Listener::SipTcp, ip(1)).is_err(), "SIP TCP is not proxied");
    }

    #[test]
    fn trusted_proxies_reload() {
        let caps = Caps { web_per_ip: 1, web_total: 10, sip_per_ip: 1, sip_total: 5 };
        let limits = ConnLimits::new(caps);
        let first = limits.admit(Listener::Web, ip(1)).unwrap();
        assert!(limits.admit(Listener::Web, ip(1)).is_err(), "not trusted yet");
        limits.set_trusted(sylkgw_core::http::forwarded::TrustedProxies::parse("192.0.2.1").unwrap());
        let proxied: Vec<Permit> = (0..3).map(|_| limits.admit(Listener::Web, ip(1)).unwrap()).collect();
        limits.set_trusted(Default::default());
        assert!(limits.admit(Listener::Web, ip(1)).is_err(), "no longer trusted");
        drop((first, proxied));
        assert_eq!(limits.open(Listener::Web, ip(1)), (0, 0), "places held before the reload are given back");
    }
}
