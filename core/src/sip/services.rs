//! What the SIP machines (registrations, call legs) share and reach through ids: the
//! transport layer, the client and server transactions, the named timers, name resolution and
//! the queues of [`SipEvent`]s and [`SipOutput`]s. [`super::stack::SipStack`] owns one
//! [`Services`] and hands it to the machine it routes an input to; the machines never see the
//! stack or each other.

use super::build::{put, response_peer, ALLOW};
use super::dialog::Dialog;
use super::digest;
use super::events::{InboundMsgId, LegId, LegTx, MsgId, RegId, SipEvent, SipOutput};
use super::identity::SipIdentity;
use super::message::{HeaderName, Headers, Method, Request, Response};
use super::rfc3263::{Lookup, Resolution, Step};
use super::target::{split_hostport, ProxySpec, Transport};
use super::transaction::{ClientTransaction, Kind, ServerTransaction, Timers};
use super::transport::{Peer, TransportOut, Transports};
use crate::config::SipConfig;
use crate::dns::cache::DnsCache;
use crate::dns::{Answer, QueryType};
use crate::ids::ConnId;
use crate::rng::Rng;
use crate::time::TimerTable;
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

/// Why a timer is armed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum SipTimer {
    Client(String),
    Server(ServerKey),
    Reg(RegId),
    /// An incoming call's 2xx retransmission or ACK wait (§13.3.1.4).
    Leg(LegId),
    /// Our 2xx to a re-INVITE: retransmission or ACK wait (§13.3.1.4).
    Reoffer(LegId),
    /// An incoming call's reliable provisional waits for its PRACK (RFC 3262 §3).
    Reliable(LegId),
    /// Our re-INVITE answered 491 waits to be retried (§14.1).
    Glare(LegId),
    /// An incoming MESSAGE waits for the transaction user's answer.
    MessageAnswer(InboundMsgId),
}

/// RFC 3261 §17.2.3: branch, sent-by and method (ACK matches INVITE).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ServerKey {
    pub(super) branch: String,
    pub(super) sent_by: String,
    pub(super) method: String,
}

/// Who a client transaction (or a name query) works for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    /// A registration's REGISTER.
    Reg(RegId),
    /// A call leg's INVITE, CANCEL, BYE, INFO or re-INVITE.
    Leg(LegId, LegTx),
    /// An outgoing MESSAGE.
    Msg(MsgId),
}

/// An RFC 3263 lookup waiting for the answer to one query.
struct PendingLookup {
    owner: Owner,
    lookup: Lookup,
    qtype: QueryType,
    name: String,
}

/// A client transaction and what it retransmits.
pub(super) struct ClientEntry {
    pub(super) tx: ClientTransaction,
    pub(super) bytes: Vec<u8>,
    pub(super) peer: Peer,
    pub(super) owner: Owner,
}

/// A server transaction.
pub(super) struct ServerEntry {
    pub(super) tx: ServerTransaction,
    pub(super) peer: Peer,
    /// Request-URI, From tag, Call-ID, CSeq: a request with these and another branch is merged
    /// (§8.2.2.2). The Request-URI is part of it because each of our Contacts is its own UA: a
    /// registrar forks to every contact of an AoR, and two of them may be ours.
    pub(super) merge_key: (String, String, String, String),
}

/// Small copyable handle for [`TimerTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct SipTimerKey(u64);

/// What building a request in a leg's established dialog needs.
pub(super) struct DialogCtx {
    /// A copy of the dialog: store it back once a request used a new CSeq number or the target
    /// changed.
    pub(super) dialog: Dialog,
    /// Where the dialog's requests go.
    pub(super) peer: Peer,
    /// The next hop's name (TLS server name).
    pub(super) name: String,
    /// Our Contact URI.
    pub(super) contact: String,
    /// `User-Agent`.
    pub(super) user_agent: String,
    /// The account, for digest credentials (none for an incoming call whose registration went).
    pub(super) identity: Option<SipIdentity>,
}

/// The shared layer under the SIP machines.
pub(super) struct Services {
    pub(super) cfg: SipConfig,
    pub(super) timers: Timers,
    pub(super) proxy: Option<ProxySpec>,
    pub(super) transports: Transports,
    pub(super) clients: BTreeMap<String, ClientEntry>,
    pub(super) servers: BTreeMap<ServerKey, ServerEntry>,
    /// RFC 3263 lookups waiting for a query's answer, by query id.
    queries: BTreeMap<u64, PendingLookup>,
    next_query: u64,
    /// Lookups started, ever (a gateway sees whether handling a request started one).
    lookups_started: u64,
    dns: DnsCache,
    table: TimerTable<SipTimerKey>,
    keys: BTreeMap<SipTimerKey, SipTimer>,
    key_of: BTreeMap<SipTimer, SipTimerKey>,
    next_key: u64,
    events: VecDeque<SipEvent>,
    out: VecDeque<SipOutput>,
}

impl Services {
    /// Services with no sockets yet. `cfg.outbound_sip_proxy` must already be valid.
    pub(super) fn new(cfg: SipConfig) -> Self {
        let proxy = cfg.outbound_sip_proxy.as_deref().and_then(|p| ProxySpec::parse(p).ok());
        let mut transports = Transports::new(cfg.max_message_size);
        transports.set_tls_roots(cfg.tls_ca_pem.as_ref().map(|p| std::sync::Arc::clone(&p.0)));
        transports.set_tls_replay_plaintext(cfg.tls_replay_plaintext);
        Self {
            transports,
            cfg,
            timers: Timers::default(),
            proxy,
            clients: BTreeMap::new(),
            servers: BTreeMap::new(),
            queries: BTreeMap::new(),
            next_query: 1,
            lookups_started: 0,
            dns: DnsCache::default(),
            table: TimerTable::default(),
            keys: BTreeMap::new(),
            key_of: BTreeMap::new(),
            next_key: 1,
            events: VecDeque::new(),
            out: VecDeque::new(),
        }
    }

    // ===== Outputs and events =====

    /// Tells the transaction user.
    pub(super) fn event(&mut self, event: SipEvent) {
        self.events.push_back(event);
    }

    pub(super) fn poll_event(&mut self) -> Option<SipEvent> {
        self.events.pop_front()
    }

    pub(super) fn poll_output(&mut self) -> Option<SipOutput> {
        self.out.pop_front()
    }

    /// Resolves `hop` for `owner` (RFC 3263 §4) from the cache and the runtime's answers: the
    /// targets in order, or `Err` with the last resolver error (`None`: no records), when known
    /// now; `None` when a query went out and the result comes back through `SipStack`.
    pub(super) fn resolve(&mut self, owner: Owner, hop: &ProxySpec, now: Instant, rng: &mut Rng) -> Option<Resolution> {
        self.lookups_started += 1;
        let (lookup, step) = Lookup::start(hop);
        self.drive_lookup(owner, lookup, step, now, rng)
    }

    /// The runtime answered `query`: who the lookup is for and its result, once it is complete.
    pub(super) fn answer_query(
        &mut self,
        query: u64,
        result: Result<Answer, String>,
        now: Instant,
        rng: &mut Rng,
    ) -> Option<(Owner, Resolution)> {
        let PendingLookup { owner, mut lookup, qtype, name } = self.queries.remove(&query)?;
        let records = match result {
            Ok(answer) if answer.records.query_type() == qtype => {
                self.dns.put(qtype, &name, &answer, now);
                Ok(answer.records)
            }
            Ok(answer) => {
                log::warn!("dns {query}: a {} answer to a {qtype} query; taken as empty", answer.records.query_type());
                Ok(crate::dns::Records::empty(qtype))
            }
            Err(e) => {
                log::info!("dns {query}: {qtype} {name}: {e}");
                Err(e)
            }
        };
        let step = lookup.answer(records, rng);
        self.drive_lookup(owner, lookup, step, now, rng).map(|r| (owner, r))
    }

    /// Runs `lookup` through the cache until it needs the runtime (`None`) or ends.
    fn drive_lookup(
        &mut self,
        owner: Owner,
        mut lookup: Lookup,
        mut step: Step,
        now: Instant,
        rng: &mut Rng,
    ) -> Option<Resolution> {
        loop {
            match step {
                Step::Query(qtype, name) => {
                    if let Some(cached) = self.dns.get(qtype, &name, now) {
                        step = lookup.answer(Ok(cached.records.clone()), rng);
                        continue;
                    }
                    let query = self.next_query;
                    self.next_query += 1;
                    self.out.push_back(SipOutput::Resolve { query, qtype, name: name.clone() });
                    self.queries.insert(query, PendingLookup { owner, lookup, qtype, name });
                    return None;
                }
                Step::Done(targets) => return Some(Ok(targets)),
                Step::Failed(error) => return Some(Err(error)),
            }
        }
    }

    /// Lookups started so far.
    pub(super) fn lookups_started(&self) -> u64 {
        self.lookups_started
    }

    /// (armed timers, timer keys, timer keys' reverse map, DNS queries in flight), for leak checks.
    pub(super) fn census(&self) -> (usize, usize, usize, usize) {
        (self.table.len(), self.keys.len(), self.key_of.len(), self.queries.len())
    }

    pub(super) fn transmit(&mut self, peer: Peer, bytes: Vec<u8>, now: Instant) {
        let mut out = Vec::new();
        self.transports.send(peer, bytes, now, &mut out);
        self.emit(out);
    }

    pub(super) fn emit(&mut self, out: Vec<TransportOut>) {
        self.out.extend(out.into_iter().map(SipOutput::Transport));
    }

    /// Host and port for Via and Contact over `transport`. Over TLS, when the SIP TLS listener
    /// has a port of its own (`sip_tls_listen`, not 0), its port (and its address unless
    /// `advertised_address` names one): a TLS peer opens connections to it for responses whose
    /// connection is gone (RFC 3261 §18.2.2) and for requests to our Contact (§8.1.1.8); else
    /// the UDP/TCP listener's, as for the other transports.
    pub(super) fn advertised(&self, transport: Transport) -> (String, u16) {
        let mut bound = self.transports.udp().map_or(self.cfg.listen, |(_, a)| a);
        let tls = self.cfg.tls_listen.filter(|a| transport == Transport::Tls && a.port() != 0);
        if let Some(tls) = tls {
            let ip = if tls.ip().is_unspecified() { bound.ip() } else { tls.ip() };
            bound = std::net::SocketAddr::new(ip, tls.port());
        }
        let port = bound.port();
        match &self.cfg.advertised_address {
            Some(a) => match split_hostport(a) {
                Some((h, p)) => (super::build::bracket(&h), if tls.is_some() { port } else { p.unwrap_or(port) }),
                None => (a.clone(), port),
            },
            None => (super::build::bracket(&bound.ip().to_string()), port),
        }
    }

    /// The user agent string for an account (its own, else the configured one).
    pub(super) fn user_agent(&self, identity: Option<&SipIdentity>) -> String {
        identity.and_then(|i| i.user_agent.clone()).unwrap_or_else(|| self.cfg.user_agent.clone())
    }

    // ===== Timers =====

    /// Arms (`Some`) or stops (`None`) a named timer.
    pub(super) fn arm(&mut self, timer: SipTimer, at: Option<Instant>) {
        let key = match self.key_of.get(&timer) {
            Some(k) => *k,
            None if at.is_none() => return,
            None => {
                let k = SipTimerKey(self.next_key);
                self.next_key += 1;
                self.key_of.insert(timer.clone(), k);
                self.keys.insert(k, timer.clone());
                k
            }
        };
        match at {
            Some(at) => self.table.set(key, at),
            None => {
                self.table.stop(key);
                self.key_of.remove(&timer);
                self.keys.remove(&key);
            }
        }
    }

    /// The next timer due at `now`, disarmed.
    pub(super) fn pop_expired(&mut self, now: Instant) -> Option<SipTimer> {
        loop {
            let key = self.table.pop_expired(now)?;
            let Some(timer) = self.keys.remove(&key) else { continue };
            self.key_of.remove(&timer);
            return Some(timer);
        }
    }

    /// The earliest deadline of timers and transports.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let t = self.table.next().map(|(at, _)| at);
        [t, self.transports.next_deadline()].into_iter().flatten().min()
    }

    // ===== Client transactions =====

    /// Whether `SipConfig::max_transactions` of our client transactions are alive (incoming
    /// requests have their own budget, [`Services::servers_full`]).
    pub(super) fn transactions_full(&self) -> bool {
        self.clients.len() >= self.cfg.max_transactions
    }

    /// Whether `SipConfig::max_server_transactions` server transactions are alive.
    pub(super) fn servers_full(&self) -> bool {
        self.servers.len() >= self.cfg.max_server_transactions
    }

    /// Where the client transaction `branch` sends.
    pub(super) fn client_peer(&self, branch: &str) -> Option<Peer> {
        self.clients.get(branch).map(|c| c.peer)
    }

    /// Sends a request and starts its client transaction; returns the connection used.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_client(
        &mut self,
        branch: String,
        bytes: Vec<u8>,
        peer: Peer,
        name: &str,
        owner: Owner,
        kind: Kind,
        now: Instant,
    ) -> Option<ConnId> {
        let mut tout = Vec::new();
        let conn = self.transports.send_named(peer, Some(name), bytes.clone(), now, &mut tout);
        self.emit(tout);
        let peer = Peer { conn, ..peer };
        if let Some(c) = conn {
            self.transports.retain(c, true, now);
        }
        let tx = ClientTransaction::new(kind, peer.transport.reliable(), self.timers, now);
        let deadline = tx.next_deadline();
        self.clients.insert(branch.clone(), ClientEntry { tx, bytes, peer, owner });
        self.arm(SipTimer::Client(branch), deadline);
        conn
    }

    // ===== Server transactions =====

    /// Whether the server transaction `key` is alive.
    pub(super) fn has_server(&self, key: &ServerKey) -> bool {
        self.servers.contains_key(key)
    }

    pub(super) fn respond(&mut self, key: &ServerKey, req: &Request, code: u16, reason: &str, now: Instant) {
        self.respond_full(key, req, code, reason, &[], &[], now);
    }

    /// Answers `req` through its server transaction `key` (our To tag added), with extra headers
    /// and a body; returns whether the response went out (one final response only).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn respond_full(
        &mut self,
        key: &ServerKey,
        req: &Request,
        code: u16,
        reason: &str,
        extra: &[(HeaderName, String)],
        body: &[u8],
        now: Instant,
    ) -> bool {
        self.respond_kept(key, req, code, reason, extra, body, now).is_some()
    }

    /// [`Services::respond_full`], returning where the response went and its bytes (for a 2xx
    /// the UA core retransmits, §13.3.1.4).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn respond_kept(
        &mut self,
        key: &ServerKey,
        req: &Request,
        code: u16,
        reason: &str,
        extra: &[(HeaderName, String)],
        body: &[u8],
        now: Instant,
    ) -> Option<(Peer, Vec<u8>)> {
        let bytes = self.build_response(key, req, code, reason, extra, body);
        let s = self.servers.get_mut(key)?;
        if !s.tx.send_response(code, bytes.clone(), now) {
            return None;
        }
        let peer = s.peer;
        let deadline = s.tx.next_deadline();
        self.arm(SipTimer::Server(key.clone()), deadline);
        let dest = response_peer(req, peer);
        self.transmit(dest, bytes.clone(), now);
        Some((dest, bytes))
    }

    /// Our response to `req` (server transaction `key`): our To tag (stable per transaction),
    /// extra headers, Allow where it belongs, Server, the body.
    pub(super) fn build_response(
        &self,
        key: &ServerKey,
        req: &Request,
        code: u16,
        reason: &str,
        extra: &[(HeaderName, String)],
        body: &[u8],
    ) -> Vec<u8> {
        let mut resp = Response::for_request(req, code, reason);
        for (name, value) in extra {
            put(&mut resp.headers, name.clone(), value);
        }
        resp.body = body.to_vec();
        if code != 100 {
            add_to_tag(&mut resp.headers, key);
        }
        if code == 200 && req.method == Method::Options || code == 405 || code == 501 {
            put(&mut resp.headers, HeaderName::Allow, ALLOW);
        }
        if req.method == Method::Options && code == 200 {
            put(&mut resp.headers, HeaderName::Accept, "application/sdp");
            put(&mut resp.headers, HeaderName::Supported, "");
        }
        put(&mut resp.headers, HeaderName::Server, &self.cfg.user_agent.clone());
        resp.to_bytes()
    }

    /// Answers without a transaction (the request could not be matched to one).
    pub(super) fn reply_stateless(&mut self, req: &Request, peer: Peer, code: u16, reason: &str, now: Instant) {
        let resp = Response::for_request(req, code, reason);
        let dest = response_peer(req, peer);
        self.transmit(dest, resp.to_bytes(), now);
    }
}

/// Our To tag for the requests of server transaction `key` (stable, so retransmitted
/// responses and the dialog agree).
pub(super) fn to_tag_for(key: &ServerKey) -> String {
    digest::Algorithm::Md5.hash_hex(key.branch.as_bytes()).chars().take(16).collect()
}

/// Adds our To tag (stable per transaction) unless the request had one.
fn add_to_tag(h: &mut Headers, key: &ServerKey) {
    let Some(to) = super::build::first_value(h, HeaderName::To) else { return };
    if h.to_header().is_ok_and(|t| t.tag().is_some()) {
        return;
    }
    let tag = to_tag_for(key);
    h.set(HeaderName::To, format!("{to};tag={tag}").into_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PemBundle, SipConfig};

    /// The CA bundle (≈ 220 KiB for the system's) is held by the configuration and the
    /// transports, and by every clone of the configuration, as one shared buffer, not copies.
    #[test]
    fn the_ca_bundle_is_shared_not_copied() {
        let bundle = PemBundle(b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".to_vec().into());
        let cfg = SipConfig { tls_ca_pem: Some(bundle.clone()), ..SipConfig::default() };
        let svc = Services::new(cfg.clone());
        // The test's bundle, `cfg`, the services' configuration and their transports.
        assert_eq!(std::sync::Arc::strong_count(&bundle.0), 4);
        drop((svc, cfg));
        assert_eq!(std::sync::Arc::strong_count(&bundle.0), 1);
    }

    #[test]
    fn tls_flows_advertise_the_tls_listener() {
        let cfg = SipConfig {
            listen: "192.0.2.1:5060".parse().unwrap(),
            tls_listen: Some("0.0.0.0:5071".parse().unwrap()),
            ..SipConfig::default()
        };
        let svc = Services::new(cfg.clone());
        assert_eq!(svc.advertised(Transport::Udp), ("192.0.2.1".into(), 5060));
        assert_eq!(svc.advertised(Transport::Tcp), ("192.0.2.1".into(), 5060));
        assert_eq!(svc.advertised(Transport::Tls), ("192.0.2.1".into(), 5071), "the listener's port, our address");
        let named = SipConfig { advertised_address: Some("sip.example.com:5090".into()), ..cfg.clone() };
        let svc = Services::new(named);
        assert_eq!(svc.advertised(Transport::Udp), ("sip.example.com".into(), 5090));
        assert_eq!(svc.advertised(Transport::Tls), ("sip.example.com".into(), 5071));
        let own_ip = SipConfig { tls_listen: Some("192.0.2.9:5071".parse().unwrap()), ..cfg.clone() };
        assert_eq!(Services::new(own_ip).advertised(Transport::Tls), ("192.0.2.9".into(), 5071));
        // No listener, or one on a port the OS chose (not known here): the UDP/TCP address.
        let none = SipConfig { tls_listen: None, ..cfg.clone() };
        assert_eq!(Services::new(none).advertised(Transport::Tls), ("192.0.2.1".into(), 5060));
        let any_port = SipConfig { tls_listen: Some("0.0.0.0:0".parse().unwrap()), ..cfg };
        assert_eq!(Services::new(any_port).advertised(Transport::Tls), ("192.0.2.1".into(), 5060));
    }
}
