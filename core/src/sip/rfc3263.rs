//! RFC 3263 §4: the ordered targets (transport, address, port) of a next hop, from its URI and
//! the DNS. A [`Lookup`] is a small machine: it names one query at a time ([`Step::Query`]),
//! takes its answer, and ends with the targets in the order to try ([`Step::Done`]; §4.3: on
//! a timeout, a 503 or a connection failure the next one is tried) or with nothing
//! ([`Step::Failed`]). The queries are IO: `Services` asks the runtime (or its cache).
//!
//! - an IP literal: that address, no query (§4.2);
//! - a port given: A/AAAA of the host, that port (§4.2);
//! - a transport given: SRV for it (§4.2), else A/AAAA with the default port;
//! - neither: NAPTR (§4.1) for SIP+D2U/SIP+D2T/SIPS+D2T (only SIPS+D2T for `sips`) and SRV of
//!   each replacement in order; with no NAPTR, SRV for `_sip._udp`, `_sip._tcp`, `_sips._tcp`
//!   (only `_sips._tcp` for `sips`) and the first that has records; with no SRV, A/AAAA of the
//!   host with the default port (UDP, TLS for `sips`).
//!
//! SRV records are ordered by priority, then by weighted random choice (RFC 2782) with the
//! core's rng.

use super::target::{ProxySpec, Transport};
use crate::dns::{NaptrRecord, QueryType, Records, SrvRecord};
use crate::rng::Rng;
use std::collections::VecDeque;
use std::net::SocketAddr;

/// Most NAPTR records followed.
const MAX_NAPTR: usize = 4;
/// Most SRV targets resolved to addresses.
const MAX_HOSTS: usize = 8;
/// Most targets kept.
const MAX_TARGETS: usize = 16;

/// One place to send a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Transport to use.
    pub transport: Transport,
    /// Address and port.
    pub addr: SocketAddr,
}

/// A lookup's end: the targets in order, or the last resolver error (`None`: no records).
pub type Resolution = Result<Vec<Target>, Option<String>>;

/// What the lookup needs next, or its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Query `name` for records of this type; answer with [`Lookup::answer`].
    Query(QueryType, String),
    /// The targets, in the order to try (never empty).
    Done(Vec<Target>),
    /// Nothing resolved: the last resolver error, or `None` when the names had no records.
    Failed(Option<String>),
}

/// The query in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Waiting {
    Naptr,
    /// SRV for one transport; `from_naptr`: named by a NAPTR record (all are followed).
    Srv {
        transport: Transport,
        from_naptr: bool,
    },
    /// A/AAAA of a host, for `transport` at `port`.
    Host {
        transport: Transport,
        port: u16,
    },
}

/// One next hop being resolved.
#[derive(Debug)]
pub struct Lookup {
    host: String,
    secure: bool,
    /// Transport and port of the final A/AAAA fallback.
    fallback: Option<(Transport, u16)>,
    srv_queue: VecDeque<(Transport, String, bool)>,
    host_queue: VecDeque<(Transport, String, u16)>,
    waiting: Option<Waiting>,
    targets: Vec<Target>,
    last_error: Option<String>,
}

impl Lookup {
    /// Starts resolving `hop`: the first step (an IP literal is done at once).
    pub fn start(hop: &ProxySpec) -> (Self, Step) {
        let secure = hop.transport == Transport::Tls && !hop.transport_given;
        let mut me = Self {
            host: hop.host.clone(),
            secure,
            fallback: None,
            srv_queue: VecDeque::new(),
            host_queue: VecDeque::new(),
            waiting: None,
            targets: Vec::new(),
            last_error: None,
        };
        if let Some(ip) = hop.ip() {
            // §4.2: a numeric address: no lookup.
            me.targets.push(Target { transport: hop.transport, addr: SocketAddr::new(ip, hop.port_or_default()) });
            let step = me.finish();
            return (me, step);
        }
        if let Some(port) = hop.port {
            // §4.2: an explicit port: A/AAAA only.
            me.host_queue.push_back((hop.transport, hop.host.clone(), port));
        } else if hop.transport_given {
            // §4.2: a transport but no port: SRV for it, then A/AAAA.
            me.srv_queue.push_back((hop.transport, srv_name(hop.transport, &hop.host), false));
            me.fallback = Some((hop.transport, hop.transport.default_port()));
        } else {
            // §4.1: neither: NAPTR first.
            me.waiting = Some(Waiting::Naptr);
            me.fallback = Some((hop.transport, hop.transport.default_port()));
            return (me, Step::Query(QueryType::Naptr, hop.host.clone()));
        }
        let step = me.next();
        (me, step)
    }

    /// The answer to the last [`Step::Query`]: the next step. An answer of another type counts
    /// as empty.
    pub fn answer(&mut self, result: Result<Records, String>, rng: &mut Rng) -> Step {
        let records = match result {
            Ok(r) => r,
            Err(e) => {
                self.last_error = Some(e);
                Records::empty(QueryType::Ip)
            }
        };
        match (self.waiting.take(), records) {
            (Some(Waiting::Naptr), Records::Naptr(list)) => self.on_naptr(&list),
            (Some(Waiting::Naptr), _) => self.on_naptr(&[]),
            (Some(Waiting::Srv { transport, from_naptr }), records) => {
                let list = match records {
                    Records::Srv(l) => l,
                    _ => Vec::new(),
                };
                let found = !list.is_empty();
                for r in order_srv(list, rng) {
                    if self.host_queue.len() < MAX_HOSTS {
                        self.host_queue.push_back((transport, r.target, r.port));
                    }
                }
                if found {
                    // §4.2: SRV records found: no A/AAAA fallback on the bare name.
                    self.fallback = None;
                    if !from_naptr {
                        // No NAPTR: the first transport (by preference) that has SRV records.
                        self.srv_queue.clear();
                    }
                }
            }
            (Some(Waiting::Host { transport, port }), Records::Ip(ips)) => {
                if ips.is_empty() {
                    log::debug!("dns: no address for a target of {}", self.host);
                }
                for ip in ips {
                    let t = Target { transport, addr: SocketAddr::new(ip, port) };
                    if self.targets.len() < MAX_TARGETS && !self.targets.contains(&t) {
                        self.targets.push(t);
                    }
                }
            }
            (Some(Waiting::Host { .. }), _) | (None, _) => {}
        }
        self.next()
    }

    /// NAPTR records (§4.1): the SIP ones we can use, in order, each an SRV query.
    fn on_naptr(&mut self, list: &[NaptrRecord]) {
        let mut usable: Vec<&NaptrRecord> = list
            .iter()
            .filter(|r| r.flags.eq_ignore_ascii_case("s") && naptr_transport(&r.services, self.secure).is_some())
            .collect();
        usable.sort_by_key(|r| (r.order, r.preference));
        for r in usable.into_iter().take(MAX_NAPTR) {
            if let Some(t) = naptr_transport(&r.services, self.secure) {
                self.srv_queue.push_back((t, r.replacement.clone(), true));
            }
        }
        if self.srv_queue.is_empty() {
            // §4.1: no NAPTR: SRV for each transport we support, by our preference.
            let transports: &[Transport] =
                if self.secure { &[Transport::Tls] } else { &[Transport::Udp, Transport::Tcp, Transport::Tls] };
            for &t in transports {
                self.srv_queue.push_back((t, srv_name(t, &self.host), false));
            }
        }
    }

    /// The next query, or the end.
    fn next(&mut self) -> Step {
        if let Some((transport, name, from_naptr)) = self.srv_queue.pop_front() {
            self.waiting = Some(Waiting::Srv { transport, from_naptr });
            return Step::Query(QueryType::Srv, name);
        }
        if let Some((transport, name, port)) = self.host_queue.pop_front() {
            if let Ok(ip) = name.parse() {
                self.targets.push(Target { transport, addr: SocketAddr::new(ip, port) });
                return self.next();
            }
            self.waiting = Some(Waiting::Host { transport, port });
            return Step::Query(QueryType::Ip, name);
        }
        if let Some((transport, port)) = self.fallback.take() {
            // §4.2: no SRV records: the host's addresses, the transport's default port.
            self.waiting = Some(Waiting::Host { transport, port });
            return Step::Query(QueryType::Ip, self.host.clone());
        }
        self.finish()
    }

    fn finish(&mut self) -> Step {
        if self.targets.is_empty() {
            Step::Failed(self.last_error.take())
        } else {
            Step::Done(self.targets.clone())
        }
    }
}

/// `_sip._udp.host`, `_sip._tcp.host`, `_sips._tcp.host` (§4.1).
fn srv_name(t: Transport, host: &str) -> String {
    match t {
        Transport::Udp => format!("_sip._udp.{host}"),
        Transport::Tcp => format!("_sip._tcp.{host}"),
        Transport::Tls => format!("_sips._tcp.{host}"),
    }
}

/// The transport of a NAPTR service field we support (§4.1; only TLS for `sips`).
fn naptr_transport(services: &str, secure: bool) -> Option<Transport> {
    let t = match services.to_ascii_uppercase().as_str() {
        "SIP+D2U" => Transport::Udp,
        "SIP+D2T" => Transport::Tcp,
        "SIPS+D2T" => Transport::Tls,
        _ => return None,
    };
    (!secure || t == Transport::Tls).then_some(t)
}

/// RFC 2782 order: by priority; within one, weighted random selection (weight 0 records first
/// in the running sum, so they are picked rarely but can be). A target of `.` means "no
/// service here" and is dropped.
pub fn order_srv(mut list: Vec<SrvRecord>, rng: &mut Rng) -> Vec<SrvRecord> {
    list.retain(|r| !r.target.is_empty() && r.target != ".");
    list.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut out = Vec::with_capacity(list.len());
    while !list.is_empty() {
        let prio = list[0].priority;
        let end = list.iter().position(|r| r.priority != prio).unwrap_or(list.len());
        let mut group: Vec<SrvRecord> = list.drain(..end).collect();
        while group.len() > 1 {
            let total: u64 = group.iter().map(|r| u64::from(r.weight)).sum();
            let pick = rng.next_u64() % (total + 1);
            let mut sum = 0;
            let i = group
                .iter()
                .position(|r| {
                    sum += u64::from(r.weight);
                    sum >= pick
                })
                .unwrap_or(0);
            out.push(group.remove(i));
        }
        // The last one needs no draw.
        out.append(&mut group);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::NaptrRecord;

    fn rng() -> Rng {
        Rng::new([7; 32])
    }

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord { priority, weight, port, target: target.into() }
    }

    fn naptr(order: u16, pref: u16, services: &str, replacement: &str) -> NaptrRecord {
        NaptrRecord {
            order,
            preference: pref,
            flags: "S".into(),
            services: services.into(),
            replacement: replacement.into(),
        }
    }

    fn ip(s: &str) -> Records {
        Records::Ip(vec![s.parse().unwrap()])
    }

    fn t(transport: Transport, addr: &str) -> Target {
        Target { transport, addr: addr.parse().unwrap() }
    }

    fn query(t: QueryType, n: &str) -> Step {
        Step::Query(t, n.into())
    }

    #[test]
    fn ip_literal_and_explicit_port_skip_naptr_and_srv() {
        let (_, step) = Lookup::start(&ProxySpec::parse("192.0.2.1:5070;transport=tcp").unwrap());
        assert_eq!(step, Step::Done(vec![t(Transport::Tcp, "192.0.2.1:5070")]));
        let (mut l, step) = Lookup::start(&ProxySpec::parse("sip.example.com:5080").unwrap());
        assert_eq!(step, query(QueryType::Ip, "sip.example.com"));
        assert_eq!(l.answer(Ok(ip("192.0.2.2")), &mut rng()), Step::Done(vec![t(Transport::Udp, "192.0.2.2:5080")]));
    }

    #[test]
    fn explicit_transport_queries_its_srv_then_falls_back_to_the_host() {
        let (mut l, step) = Lookup::start(&ProxySpec::parse("example.com;transport=tcp").unwrap());
        assert_eq!(step, query(QueryType::Srv, "_sip._tcp.example.com"));
        assert_eq!(l.answer(Ok(Records::Srv(vec![])), &mut rng()), query(QueryType::Ip, "example.com"));
        assert_eq!(l.answer(Ok(ip("192.0.2.3")), &mut rng()), Step::Done(vec![t(Transport::Tcp, "192.0.2.3:5060")]));
    }

    #[test]
    fn naptr_then_srv_then_addresses_in_order() {
        let (mut l, step) = Lookup::start(&ProxySpec::parse("example.com").unwrap());
        assert_eq!(step, query(QueryType::Naptr, "example.com"));
        let records = Records::Naptr(vec![
            naptr(20, 10, "SIP+D2U", "_sip._udp.example.com"),
            naptr(10, 10, "SIP+D2T", "_sip._tcp.example.com"),
            naptr(5, 10, "SIP+D2X", "_sip._sctp.example.com"),
            naptr(5, 10, "E2U+sip", "ignored.example.com"),
        ]);
        let mut r = rng();
        assert_eq!(l.answer(Ok(records), &mut r), query(QueryType::Srv, "_sip._tcp.example.com"));
        let step = l.answer(Ok(Records::Srv(vec![srv(10, 0, 5062, "b.example.com")])), &mut r);
        assert_eq!(step, query(QueryType::Srv, "_sip._udp.example.com"));
        let step = l.answer(
            Ok(Records::Srv(vec![srv(20, 0, 5060, "c.example.com"), srv(10, 0, 5060, "a.example.com")])),
            &mut r,
        );
        assert_eq!(step, query(QueryType::Ip, "b.example.com"));
        assert_eq!(l.answer(Ok(ip("192.0.2.2")), &mut r), query(QueryType::Ip, "a.example.com"));
        assert_eq!(l.answer(Err("timed out".into()), &mut r), query(QueryType::Ip, "c.example.com"));
        let step = l.answer(Ok(ip("192.0.2.3")), &mut r);
        assert_eq!(step, Step::Done(vec![t(Transport::Tcp, "192.0.2.2:5062"), t(Transport::Udp, "192.0.2.3:5060")]));
    }

    #[test]
    fn without_naptr_the_first_transport_with_srv_records_wins() {
        let (mut l, _) = Lookup::start(&ProxySpec::parse("example.com").unwrap());
        let mut r = rng();
        assert_eq!(l.answer(Ok(Records::Naptr(vec![])), &mut r), query(QueryType::Srv, "_sip._udp.example.com"));
        assert_eq!(l.answer(Err("SERVFAIL".into()), &mut r), query(QueryType::Srv, "_sip._tcp.example.com"));
        let step = l.answer(Ok(Records::Srv(vec![srv(0, 0, 5070, "tcp.example.com")])), &mut r);
        assert_eq!(step, query(QueryType::Ip, "tcp.example.com"), "no _sips._tcp query, no bare A");
        assert_eq!(l.answer(Ok(ip("192.0.2.9")), &mut r), Step::Done(vec![t(Transport::Tcp, "192.0.2.9:5070")]));
    }

    #[test]
    fn nothing_anywhere_fails_with_the_last_error_or_none() {
        let (mut l, _) = Lookup::start(&ProxySpec::parse("nowhere.invalid").unwrap());
        let mut r = rng();
        let mut step = l.answer(Ok(Records::Naptr(vec![])), &mut r);
        for name in ["_sip._udp.nowhere.invalid", "_sip._tcp.nowhere.invalid", "_sips._tcp.nowhere.invalid"] {
            assert_eq!(step, query(QueryType::Srv, name));
            step = l.answer(Ok(Records::Srv(vec![])), &mut r);
        }
        assert_eq!(step, query(QueryType::Ip, "nowhere.invalid"));
        assert_eq!(l.answer(Ok(Records::Ip(vec![])), &mut r), Step::Failed(None));
        let (mut l, _) = Lookup::start(&ProxySpec::parse("h.invalid:5060").unwrap());
        assert_eq!(l.answer(Err("no route".into()), &mut r), Step::Failed(Some("no route".into())));
    }

    #[test]
    fn sips_uses_only_tls() {
        let (mut l, step) = Lookup::start(&ProxySpec::parse("sips:example.com").unwrap());
        assert_eq!(step, query(QueryType::Naptr, "example.com"));
        let records = Records::Naptr(vec![naptr(10, 10, "SIP+D2U", "_sip._udp.example.com")]);
        assert_eq!(l.answer(Ok(records), &mut rng()), query(QueryType::Srv, "_sips._tcp.example.com"));
        assert_eq!(l.answer(Ok(Records::Srv(vec![])), &mut rng()), query(QueryType::Ip, "example.com"));
        assert_eq!(l.answer(Ok(ip("192.0.2.5")), &mut rng()), Step::Done(vec![t(Transport::Tls, "192.0.2.5:5061")]));
    }

    #[test]
    fn srv_order_is_by_priority_then_weighted_random() {
        let list = vec![
            srv(20, 0, 1, "last"),
            srv(10, 1, 2, "light"),
            srv(10, 99, 3, "heavy"),
            srv(5, 0, 4, "."),
            srv(10, 0, 5, "zero"),
        ];
        let mut r = rng();
        let mut heavy_first = 0;
        for _ in 0..200 {
            let got = order_srv(list.clone(), &mut r);
            let names: Vec<&str> = got.iter().map(|s| s.target.as_str()).collect();
            assert_eq!(names.len(), 4, "the `.` target is dropped");
            assert_eq!(names[3], "last", "priority 20 after every priority 10");
            heavy_first += usize::from(names[0] == "heavy");
        }
        // Weight 99 of 100: first nearly always, but not by rule.
        assert!(heavy_first > 170, "{heavy_first}");
    }
}
