//! The SIP user agent core (RFC 3261 §8, §10, §17): owns the transport layer, the client and
//! server transactions, and the registrations; answers what it can answer alone (OPTIONS,
//! unknown users, unknown methods, merged requests). It knows SIP, not sylkRTC: the gateway
//! drives it by id and hears back through [`SipEvent`]s.

use super::digest::{self, Answer, Secret};
use super::message::{HeaderName, Headers, Method, Request, Response, SipMessage};
use super::parse::{parse_message, parse_message_with, validate_request, ParseError, ParseOptions};
use super::registration::{RegResponse, RegState, Registration, SendRegister};
use super::target::{ProxySpec, Transport};
use super::transaction::{
    ClientEvent, ClientTransaction, Kind, ResponseVerdict, ServerEvent, ServerTransaction, Timers,
};
use super::transport::{Arrival, Peer, TransportOut, Transports};
use crate::config::SipConfig;
use crate::ids::{ConnId, SocketId};
use crate::rng::Rng;
use crate::time::TimerTable;
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Methods we answer; sent in `Allow`.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, MESSAGE";

/// A registration's handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegId(pub u64);

/// What the stack asks the runtime for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipOutput {
    /// Transport work.
    Transport(TransportOut),
    /// Resolve a host name (A/AAAA); answer with [`SipStack::handle_resolved`].
    Resolve { query: u64, name: String },
}

/// What the transaction user hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipEvent {
    /// A registration changed state.
    Registration { id: RegId, state: RegState },
    /// A call progressed (outgoing, or an incoming one after [`SipEvent::Incoming`]).
    Call { leg: super::calls::LegId, progress: super::invite::CallProgress },
    /// An INVITE for the Contact of registration `reg`; answer with [`SipStack::answer`] or
    /// [`SipStack::decline`]. A 180 Ringing has been sent.
    Incoming { leg: super::calls::LegId, reg: RegId, call: super::incoming::IncomingCall },
    /// An INFO arrived in the dialog of a call (answered 200 already; RFC 6086 legacy usage,
    /// e.g. `application/dtmf-relay`).
    Info { leg: super::calls::LegId, content_type: String, body: Vec<u8> },
    /// The peer sent a new offer in the established call: a re-INVITE (RFC 3261 §14.2) or an
    /// UPDATE (RFC 3311) with SDP. Answer with [`SipStack::answer_reoffer`]. `sdp` is empty for a
    /// re-INVITE without SDP (late offer): then pass our offer, and the answer arrives as
    /// [`SipEvent::ReofferAck`]. A 100 Trying has been sent for a re-INVITE.
    Reoffer { leg: super::calls::LegId, sdp: Vec<u8> },
    /// The ACK for our 2xx to a late-offer re-INVITE carried the peer's answer.
    ReofferAck { leg: super::calls::LegId, sdp: Vec<u8> },
    /// The outcome of [`SipStack::reinvite`]: the answer SDP of the 2xx (empty if it had none),
    /// or `"<code> <phrase>"` (the session is unchanged, RFC 3261 §14.1). A 481 or 408 is
    /// followed by the call's [`SipEvent::Call`] `Ended` (§12.2.1.2).
    ReinviteResult { leg: super::calls::LegId, result: Result<Vec<u8>, String> },
}

/// Push parameters for the Contact (RFC 8599).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushContact {
    /// `pn-app`.
    pub app: String,
    /// `pn-tok`.
    pub token: String,
    /// `pn-type`.
    pub platform: String,
    /// `pn-device`.
    pub device: String,
    /// `pn-silent`.
    pub silent: bool,
}

/// The account a registration or a call acts for.
#[derive(Clone)]
pub struct SipIdentity {
    /// `user@domain` (no scheme).
    pub aor: String,
    /// The account's password or HA1 (sylkRTC's `password`).
    pub secret: String,
    /// For From.
    pub display_name: Option<String>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// Our Contact's user part, unique per account and connection.
    pub contact_user: String,
}

impl SipIdentity {
    /// Our From value with `tag`: `"Display" <sip:aor>;tag=…` (quotes escaped).
    pub(super) fn tagged_from(&self, tag: &str) -> String {
        match &self.display_name {
            Some(d) => format!("\"{}\" <sip:{}>;tag={tag}", d.replace('"', "\\\""), self.aor),
            None => format!("<sip:{}>;tag={tag}", self.aor),
        }
    }
}

/// Our Via value: `SIP/2.0/<T> host:port;rport;branch=…` (RFC 3581 `rport` always).
pub(super) fn via_value(transport: Transport, host: &str, port: u16, branch: &str) -> String {
    format!("SIP/2.0/{} {host}:{port};rport;branch={branch}", transport.via_token())
}

impl std::fmt::Debug for SipIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is never printed.
        f.debug_struct("SipIdentity")
            .field("aor", &self.aor)
            .field("contact_user", &self.contact_user)
            .finish_non_exhaustive()
    }
}

/// Who registers, and how.
#[derive(Clone, Debug)]
pub struct RegParams {
    /// The account.
    pub identity: SipIdentity,
    /// Push parameters.
    pub push: Option<PushContact>,
}

/// Why a timer is armed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum SipTimer {
    Client(String),
    Server(ServerKey),
    Reg(RegId),
    /// An incoming call's 2xx retransmission or ACK wait (§13.3.1.4).
    Leg(super::calls::LegId),
    /// Our 2xx to a re-INVITE: retransmission or ACK wait (§13.3.1.4).
    Reoffer(super::calls::LegId),
    /// Our re-INVITE answered 491 waits to be retried (§14.1).
    Glare(super::calls::LegId),
}

/// RFC 3261 §17.2.3: branch, sent-by and method (ACK matches INVITE).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ServerKey {
    pub(super) branch: String,
    pub(super) sent_by: String,
    pub(super) method: String,
}

/// Who a client transaction works for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    /// A registration's REGISTER.
    Reg(RegId),
    /// A call leg's INVITE, CANCEL, BYE, INFO or re-INVITE.
    Leg(super::calls::LegId, super::calls::LegTx),
}

pub(super) struct ClientEntry {
    pub(super) tx: ClientTransaction,
    pub(super) bytes: Vec<u8>,
    pub(super) peer: Peer,
    pub(super) owner: Owner,
}

struct ServerEntry {
    tx: ServerTransaction,
    peer: Peer,
    /// Request-URI, From tag, Call-ID, CSeq: a request with these and another branch is merged
    /// (§8.2.2.2). The Request-URI is part of it because each of our Contacts is its own UA: a
    /// registrar forks to every contact of an AoR, and two of them may be ours.
    merge_key: (String, String, String, String),
}

struct RegEntry {
    reg: Registration,
    params: RegParams,
    call_id: String,
    from_tag: String,
    cseq: u32,
    hop: ProxySpec,
    /// The resolved next hop.
    resolved: Option<SocketAddr>,
    /// A REGISTER waiting for name resolution.
    waiting: Option<SendRegister>,
    /// The branch of the REGISTER in flight.
    in_flight: Option<String>,
    /// The stream flow the registration keeps open.
    flow: Option<ConnId>,
    /// Forget the entry once it is unregistered.
    remove_when_done: bool,
    /// Unregistering waits for the final response to the REGISTER in flight (RFC 3261 §10.2).
    stop_after_response: bool,
    /// The Contact URI we register, to find our binding in the 200.
    contact_uri: String,
}

/// The SIP stack.
pub struct SipStack {
    pub(super) cfg: SipConfig,
    pub(super) timers: Timers,
    pub(super) proxy: Option<ProxySpec>,
    pub(super) transports: Transports,
    pub(super) clients: BTreeMap<String, ClientEntry>,
    pub(super) legs: BTreeMap<super::calls::LegId, super::calls::LegEntry>,
    pub(super) inbound: BTreeMap<super::calls::LegId, super::incoming::InLeg>,
    pub(super) next_leg: u64,
    servers: BTreeMap<ServerKey, ServerEntry>,
    regs: BTreeMap<RegId, RegEntry>,
    pub(super) queries: BTreeMap<u64, Owner>,
    pub(super) next_query: u64,
    next_reg: u64,
    table: TimerTable<SipTimerKey>,
    keys: BTreeMap<SipTimerKey, SipTimer>,
    key_of: BTreeMap<SipTimer, SipTimerKey>,
    next_key: u64,
    pub(super) events: VecDeque<SipEvent>,
    pub(super) out: VecDeque<SipOutput>,
}

/// Small copyable handle for [`TimerTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct SipTimerKey(u64);

impl SipStack {
    /// A stack with no sockets yet. `cfg.outbound_sip_proxy` must already be valid.
    pub fn new(cfg: SipConfig) -> Self {
        let proxy = cfg.outbound_sip_proxy.as_deref().and_then(|p| ProxySpec::parse(p).ok());
        let mut transports = Transports::new(cfg.max_message_size);
        transports.set_tls_roots(cfg.tls_ca_pem.as_ref().map(|p| p.0.clone()));
        transports.set_tls_replay_plaintext(cfg.tls_replay_plaintext);
        Self {
            transports,
            cfg,
            timers: Timers::default(),
            proxy,
            clients: BTreeMap::new(),
            legs: BTreeMap::new(),
            inbound: BTreeMap::new(),
            next_leg: 1,
            servers: BTreeMap::new(),
            regs: BTreeMap::new(),
            queries: BTreeMap::new(),
            next_query: 1,
            next_reg: 1,
            table: TimerTable::default(),
            keys: BTreeMap::new(),
            key_of: BTreeMap::new(),
            next_key: 1,
            events: VecDeque::new(),
            out: VecDeque::new(),
        }
    }

    /// The runtime bound the SIP UDP socket at `local`.
    pub fn set_udp_socket(&mut self, socket: SocketId, local: SocketAddr) {
        self.transports.set_udp(socket, local);
    }

    /// Whether a stream connection belongs to SIP.
    pub fn owns_conn(&self, conn: ConnId) -> bool {
        self.transports.owns(conn)
    }

    /// Whether the bytes of a SIP stream connection are TLS records (captures record the
    /// plaintext instead, from [`TransportOut::Tap`]).
    pub fn encrypted_conn(&self, conn: ConnId) -> bool {
        self.transports.encrypted(conn)
    }

    /// Anchors the wall clock TLS certificate checks use: `unix` is the Unix time at `start`.
    pub fn set_clock(&mut self, start: Instant, unix: std::time::Duration) {
        self.transports.set_clock(start, unix);
    }

    /// Reports the plaintext of TLS flows ([`TransportOut::Tap`]) for captures.
    pub fn set_tap(&mut self, on: bool) {
        self.transports.set_tap(on);
    }

    /// Table sizes: (transactions, registrations, flows).
    pub fn sizes(&self) -> (usize, usize, usize) {
        // Call legs count with the transactions until the calls layer reports its own.
        (self.clients.len() + self.servers.len(), self.regs.len(), self.transports.flow_count())
    }

    /// Sizes of the tables [`Self::sizes`] and `leg_count` leave out, for leak checks
    /// (`Gateway::stats`): (armed timers, timer keys, timer keys' reverse map, DNS queries).
    pub fn census(&self) -> (usize, usize, usize, usize) {
        (self.table.len(), self.keys.len(), self.key_of.len(), self.queries.len())
    }

    /// Next output for the runtime.
    pub fn poll_output(&mut self) -> Option<SipOutput> {
        self.out.pop_front()
    }

    /// Next event for the transaction user.
    pub fn poll_event(&mut self) -> Option<SipEvent> {
        self.events.pop_front()
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        let t = self.table.next().map(|(at, _)| at);
        [t, self.transports.next_deadline()].into_iter().flatten().min()
    }

    // ===== Registrations =====

    /// Starts registering; events follow.
    pub fn register(&mut self, params: RegParams, now: Instant, rng: &mut Rng) -> RegId {
        let id = RegId(self.next_reg);
        self.next_reg += 1;
        let domain = params.identity.aor.split_once('@').map_or(params.identity.aor.as_str(), |(_, d)| d).to_string();
        let hop = self.proxy.clone().unwrap_or_else(|| {
            ProxySpec::parse(&domain).unwrap_or(ProxySpec {
                host: domain.clone(),
                port: None,
                transport: Transport::Udp,
            })
        });
        let contact_uri = self.contact_uri(&params, hop.transport);
        let entry = RegEntry {
            reg: Registration::new(self.cfg.register_ttl)
                .with_backoff_base(std::time::Duration::from_secs(self.cfg.register_retry_interval.into())),
            params,
            call_id: format!("{}@sylkgw", rng.hex(24)),
            from_tag: rng.hex(16),
            cseq: (rng.next_u64() % 10_000) as u32 + 1,
            hop,
            resolved: None,
            waiting: None,
            in_flight: None,
            stop_after_response: false,
            flow: None,
            remove_when_done: false,
            contact_uri,
        };
        self.regs.insert(id, entry);
        let mut changes = Vec::new();
        let send = self.regs.get_mut(&id).map(|e| e.reg.start(&mut changes));
        self.announce(id, changes);
        if let Some(send) = send {
            self.send_register(id, send, now, rng);
        }
        id
    }

    /// Unregisters (REGISTER with `Expires: 0` for our binding) and forgets the registration
    /// once that is answered. A REGISTER in flight is let finish first (RFC 3261 §10.2: no new
    /// REGISTER before the previous one has its final response or timed out): a registrar that
    /// handles requests in parallel could otherwise apply it after the removal, leaving a
    /// binding nobody refreshes or removes until it expires.
    pub fn unregister(&mut self, id: RegId, now: Instant, rng: &mut Rng) {
        let Some(e) = self.regs.get_mut(&id) else { return };
        e.remove_when_done = true;
        e.waiting = None;
        if e.in_flight.is_some() {
            // An un-REGISTER in flight just finishes; a REGISTER is followed by one.
            e.stop_after_response = !e.reg.unregistering();
            return;
        }
        if e.resolved.is_none() {
            // Nothing was ever sent (the next hop never resolved): nothing to remove.
            self.remove_reg(id, now);
            return;
        }
        match e.reg.stop() {
            Some(send) => self.send_register(id, send, now, rng),
            None => self.remove_reg(id, now),
        }
    }

    fn contact_uri(&self, p: &RegParams, transport: Transport) -> String {
        let (host, port) = self.advertised(transport);
        let mut uri = format!("sip:{}@{host}:{port}", p.identity.contact_user);
        if transport != Transport::Udp {
            uri.push_str(&format!(";transport={}", transport.param()));
        }
        if let Some(push) = &p.push {
            uri.push_str(&format!(
                ";pn-app={};pn-tok={};pn-type={};pn-device={};pn-silent={}",
                push.app,
                push.token,
                push.platform,
                push.device,
                if push.silent { "1" } else { "0" }
            ));
        }
        uri
    }

    /// Host and port for Via and Contact.
    pub(super) fn advertised(&self, transport: Transport) -> (String, u16) {
        let bound = self.transports.udp().map_or(self.cfg.listen, |(_, a)| a);
        let port = bound.port();
        let _ = transport;
        match &self.cfg.advertised_address {
            Some(a) => match super::target::split_hostport(a) {
                Some((h, p)) => (bracket(&h), p.unwrap_or(port)),
                None => (a.clone(), port),
            },
            None => (bracket(&bound.ip().to_string()), port),
        }
    }

    fn send_register(&mut self, id: RegId, send: SendRegister, now: Instant, rng: &mut Rng) {
        // `SipConfig::max_transactions`: no room for the REGISTER's transaction; it fails at once.
        if self.transactions_full() {
            log::warn!("{} SIP transactions in flight; REGISTER not sent", self.cfg.max_transactions);
            let resp = RegResponse { code: 503, reason: "Service Unavailable".into(), ..RegResponse::default() };
            return self.reg_response(id, &resp, now, rng);
        }
        let Some(e) = self.regs.get_mut(&id) else { return };
        let Some(addr) = e.resolved.or_else(|| e.hop.ip().map(|ip| SocketAddr::new(ip, e.hop.port_or_default())))
        else {
            // Ask the runtime to resolve the next hop first.
            e.waiting = Some(send);
            let query = self.next_query;
            self.next_query += 1;
            self.queries.insert(query, Owner::Reg(id));
            self.out.push_back(SipOutput::Resolve { query, name: e.hop.host.clone() });
            return;
        };
        e.resolved = Some(addr);
        e.cseq += 1;
        let branch = format!("z9hG4bK{}", rng.hex(20));
        let transport = e.hop.transport;
        let domain = e.params.identity.aor.split_once('@').map_or(e.params.identity.aor.as_str(), |(_, d)| d);
        let ruri = format!("sip:{domain}");
        let (vhost, vport) = self.advertised(transport);
        let e = self.regs.get_mut(&id).expect("present");
        let mut h = Headers::default();
        put(&mut h, HeaderName::Via, &via_value(transport, &vhost, vport, &branch));
        put(&mut h, HeaderName::MaxForwards, "70");
        let from = e.params.identity.tagged_from(&e.from_tag);
        put(&mut h, HeaderName::From, &from);
        put(&mut h, HeaderName::To, &format!("<sip:{}>", e.params.identity.aor));
        put(&mut h, HeaderName::CallId, &e.call_id);
        put(&mut h, HeaderName::CSeq, &format!("{} REGISTER", e.cseq));
        if self.proxy.is_some() {
            put(&mut h, HeaderName::Route, &e.hop.route());
        }
        put(&mut h, HeaderName::Contact, &format!("<{}>;expires={}", e.contact_uri, send.expires));
        put(&mut h, HeaderName::Expires, &send.expires.to_string());
        if let Some((challenge, proxy, nc)) = &send.auth {
            let username = e.params.identity.aor.split_once('@').map_or(e.params.identity.aor.as_str(), |(u, _)| u);
            let cnonce = rng.hex(16);
            let answer = Answer { username, method: "REGISTER", uri: &ruri, cnonce: &cnonce, nc: *nc };
            match digest::authorize(challenge, Secret::from_sylkrtc(&e.params.identity.secret), &answer) {
                Ok(value) => {
                    let name = if *proxy { HeaderName::ProxyAuthorization } else { HeaderName::Authorization };
                    put(&mut h, name, &value);
                }
                Err(err) => {
                    log::info!("registration of {}: {err}", e.params.identity.aor);
                    let resp = RegResponse { code: 403, reason: "Forbidden".into(), ..RegResponse::default() };
                    let mut changes = Vec::new();
                    e.reg.on_response(&resp, now, &mut changes);
                    self.announce(id, changes);
                    self.arm_reg(id);
                    return;
                }
            }
        }
        let ua = e.params.identity.user_agent.clone().unwrap_or_else(|| self.cfg.user_agent.clone());
        put(&mut h, HeaderName::UserAgent, &ua);
        put(&mut h, HeaderName::Allow, ALLOW);
        let Ok(uri) = ruri.parse() else {
            log::error!("registration of {}: bad request URI {ruri}", e.params.identity.aor);
            return;
        };
        let mut req = Request { method: Method::Register, uri, headers: h, body: Vec::new() };
        let mut bytes = req.to_bytes();
        // RFC 3261 §18.1.1: a request over 1300 bytes moves from UDP to TCP, and its Via says so.
        let transport = if transport == Transport::Udp && bytes.len() > 1300 {
            let via = via_value(Transport::Tcp, &vhost, vport, &branch);
            req.headers.set(HeaderName::Via, via.into_bytes());
            bytes = req.to_bytes();
            Transport::Tcp
        } else {
            transport
        };
        let peer = Peer { transport, addr, conn: e.flow };
        e.in_flight = Some(branch.clone());
        // RFC 5922 §4: a TLS next hop is verified (and named in SNI) by its domain.
        let name = e.hop.host.clone();
        self.send_client(branch, bytes, peer, &name, Owner::Reg(id), Kind::NonInvite, now);
    }

    /// Whether `SipConfig::max_transactions` (client and server together) are alive.
    fn transactions_full(&self) -> bool {
        self.clients.len() + self.servers.len() >= self.cfg.max_transactions
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
            if let Owner::Reg(id) = owner {
                if let Some(e) = self.regs.get_mut(&id) {
                    e.flow = Some(c);
                }
            }
        }
        let tx = ClientTransaction::new(kind, peer.transport.reliable(), self.timers, now);
        let deadline = tx.next_deadline();
        self.clients.insert(branch.clone(), ClientEntry { tx, bytes, peer, owner });
        self.arm(SipTimer::Client(branch), deadline);
        conn
    }

    fn remove_reg(&mut self, id: RegId, now: Instant) {
        if let Some(e) = self.regs.remove(&id) {
            if let Some(conn) = e.flow {
                self.transports.retain(conn, false, now);
            }
        }
        self.arm(SipTimer::Reg(id), None);
    }

    /// The runtime resolved a name.
    pub fn handle_resolved(&mut self, query: u64, result: Result<Vec<IpAddr>, String>, now: Instant, rng: &mut Rng) {
        let id = match self.queries.remove(&query) {
            Some(Owner::Reg(id)) => id,
            Some(Owner::Leg(leg, _)) => return self.leg_resolved(leg, result, now, rng),
            None => return,
        };
        let Some(e) = self.regs.get_mut(&id) else { return };
        let send = e.waiting.take();
        match result.ok().and_then(|ips| ips.first().copied()) {
            Some(ip) => {
                e.resolved = Some(SocketAddr::new(ip, e.hop.port_or_default()));
                if let Some(send) = send {
                    self.send_register(id, send, now, rng);
                }
            }
            None => {
                log::info!("registration of {}: cannot resolve {}", e.params.identity.aor, e.hop.host);
                let resp = RegResponse { code: 503, reason: "Service Unavailable".into(), ..RegResponse::default() };
                self.reg_response(id, &resp, now, rng);
            }
        }
    }

    fn reg_response(&mut self, id: RegId, resp: &RegResponse, now: Instant, rng: &mut Rng) {
        let Some(e) = self.regs.get_mut(&id) else { return };
        e.in_flight = None;
        if std::mem::take(&mut e.stop_after_response) {
            // Unregistered while this REGISTER was in flight: now remove what it may have bound.
            log::debug!("registration of {}: {} {}, now unregistering", e.params.identity.aor, resp.code, resp.reason);
            match e.reg.stop() {
                Some(send) => self.send_register(id, send, now, rng),
                None => self.remove_reg(id, now),
            }
            return;
        }
        let mut changes = Vec::new();
        let next = e.reg.on_response(resp, now, &mut changes);
        let done = e.remove_when_done && !e.reg.in_flight() && next.is_none();
        self.announce(id, changes);
        if let Some(send) = next {
            self.send_register(id, send, now, rng);
        } else if done {
            self.remove_reg(id, now);
            return;
        }
        self.arm_reg(id);
    }

    fn arm_reg(&mut self, id: RegId) {
        let deadline = self.regs.get(&id).and_then(|e| e.reg.next_deadline());
        self.arm(SipTimer::Reg(id), deadline);
    }

    fn announce(&mut self, id: RegId, changes: Vec<RegState>) {
        for state in changes {
            self.events.push_back(SipEvent::Registration { id, state });
        }
    }

    // ===== Input =====

    /// A datagram on the SIP socket.
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Instant, rng: &mut Rng) {
        let mut arrivals = Vec::new();
        self.transports.datagram(from, data, &mut arrivals);
        self.arrivals(arrivals, now, rng);
    }

    /// A TCP connection arrived on the SIP listener.
    pub fn handle_accepted(&mut self, conn: ConnId, peer: SocketAddr, now: Instant) {
        self.transports.accepted(conn, peer, now);
    }

    /// Bytes on a SIP stream connection.
    pub fn handle_stream_data(&mut self, conn: ConnId, data: &[u8], now: Instant, rng: &mut Rng) {
        let (mut out, mut arrivals) = (Vec::new(), Vec::new());
        self.transports.stream_data(conn, data, now, &mut out, &mut arrivals);
        self.emit(out);
        self.arrivals(arrivals, now, rng);
    }

    /// The runtime finished (or failed) connecting.
    pub fn handle_connected(&mut self, conn: ConnId, ok: bool, now: Instant, rng: &mut Rng) {
        let (mut out, mut arrivals) = (Vec::new(), Vec::new());
        self.transports.connected(conn, ok, now, &mut out, &mut arrivals);
        self.emit(out);
        self.arrivals(arrivals, now, rng);
    }

    /// A SIP stream connection closed.
    pub fn handle_closed(&mut self, conn: ConnId, now: Instant, rng: &mut Rng) {
        let mut arrivals = Vec::new();
        self.transports.closed(conn, &mut arrivals);
        self.arrivals(arrivals, now, rng);
    }

    fn arrivals(&mut self, arrivals: Vec<Arrival>, now: Instant, rng: &mut Rng) {
        for a in arrivals {
            match a {
                Arrival::Message { peer, bytes } => self.message(peer, &bytes, now, rng),
                Arrival::FlowLost { conn } => self.flow_lost(conn, now, rng),
                Arrival::TlsLost { conn } => {
                    let mut out = Vec::new();
                    if self.transports.lose_tls(conn, &mut out) {
                        self.emit(out);
                        self.flow_lost(conn, now, rng);
                    }
                }
            }
        }
    }

    fn flow_lost(&mut self, conn: ConnId, now: Instant, rng: &mut Rng) {
        // §17.1.4: a transport error fails the transactions using the flow.
        let failed: Vec<String> =
            self.clients.iter().filter(|(_, c)| c.peer.conn == Some(conn)).map(|(b, _)| b.clone()).collect();
        for branch in failed {
            if let Some(c) = self.clients.remove(&branch) {
                self.arm(SipTimer::Client(branch.clone()), None);
                self.client_failed(c.owner, &branch, 503, "Service Unavailable", now, rng);
            }
        }
        for e in self.regs.values_mut() {
            if e.flow == Some(conn) {
                e.flow = None;
            }
        }
        self.servers.retain(|_, s| s.peer.conn != Some(conn));
    }

    fn message(&mut self, peer: Peer, bytes: &[u8], now: Instant, rng: &mut Rng) {
        match parse_message(bytes) {
            Ok(SipMessage::Response(resp)) => self.response(resp, now, rng),
            Ok(SipMessage::Request(req)) => self.request(req, peer, now, rng),
            Err(ParseError::Version) => {
                // §8.2.4 / RFC 4475 badvers: answer 505 if the request is readable otherwise.
                let opts = ParseOptions { any_version: true, ..ParseOptions::default() };
                if let Ok(SipMessage::Request(req)) = parse_message_with(bytes, &opts) {
                    self.reply_stateless(&req, peer, 505, "Version Not Supported", now);
                }
            }
            Err(e) => {
                log::info!("unparsable SIP message from {}: {e:?}", peer.addr);
                // A request we cannot read gets a 400 when enough of it is there to address one.
                let opts = ParseOptions { any_version: true, ..ParseOptions::default() };
                if let Ok(SipMessage::Request(req)) = parse_message_with(bytes, &opts) {
                    self.reply_stateless(&req, peer, 400, "Bad Request", now);
                }
            }
        }
    }

    fn response(&mut self, resp: Response, now: Instant, rng: &mut Rng) {
        let Some(branch) = resp.headers.top_via().ok().and_then(|v| v.branch().map(String::from)) else {
            log::debug!("response without a Via branch; dropped");
            return;
        };
        // A CANCEL shares its INVITE's branch (§9.1); its transaction is keyed apart.
        let branch = match resp.headers.cseq() {
            Ok(c) if c.method == Method::Cancel => cancel_key(&branch),
            _ => branch,
        };
        let Some(c) = self.clients.get_mut(&branch) else {
            log::debug!("response for no transaction of ours ({branch}); dropped");
            return;
        };
        let verdict = c.tx.on_response(resp.code, now);
        let owner = c.owner;
        let deadline = c.tx.next_deadline();
        self.arm(SipTimer::Client(branch.clone()), deadline);
        let owner = match owner {
            Owner::Reg(id) => id,
            Owner::Leg(leg, tx) => return self.leg_response(leg, tx, &branch, &resp, verdict, now, rng),
        };
        if verdict == ResponseVerdict::Absorb || resp.code < 200 {
            return;
        }
        let Some(e) = self.regs.get(&owner) else { return };
        let rr = RegResponse {
            code: resp.code,
            reason: resp.reason.clone(),
            granted: granted_expires(&resp.headers, &e.contact_uri),
            challenges: header_values(
                &resp.headers,
                if resp.code == 407 { HeaderName::ProxyAuthenticate } else { HeaderName::WwwAuthenticate },
            ),
            min_expires: resp.headers.min_expires().ok().flatten(),
        };
        self.reg_response(owner, &rr, now, rng);
    }

    fn request(&mut self, req: Request, peer: Peer, now: Instant, rng: &mut Rng) {
        let Ok(via) = req.headers.top_via() else {
            log::info!("request from {} without a readable Via; dropped", peer.addr);
            return;
        };
        // RFC 2543 requests may lack a branch (RFC 4475 inv2543); key them by Call-ID and CSeq.
        let branch = match via.branch() {
            Some(b) if b.starts_with("z9hG4bK") && b.len() > 7 => b.to_string(),
            _ => format!(
                "2543:{}:{}",
                req.headers.call_id().unwrap_or_default(),
                req.headers.cseq().map(|c| c.seq).unwrap_or_default()
            ),
        };
        let sent_by = match via.port {
            Some(p) => format!("{}:{p}", via.host).to_ascii_lowercase(),
            None => via.host.to_string().to_ascii_lowercase(),
        };
        let method_key = if req.method == Method::Ack { "INVITE".to_string() } else { req.method.as_str().to_string() };
        let key = ServerKey { branch: branch.clone(), sent_by, method: method_key };
        // Retransmission of a request we are handling: resend our response (§17.2).
        if let Some(s) = self.servers.get_mut(&key) {
            if req.method == Method::Ack {
                s.tx.on_ack(now);
                let deadline = s.tx.next_deadline();
                self.arm(SipTimer::Server(key), deadline);
            } else if let Some(last) = s.tx.on_retransmitted_request().map(<[u8]>::to_vec) {
                let p = s.peer;
                self.transmit(p, last, now);
            }
            return;
        }
        if req.method == Method::Ack {
            // The ACK of a 2xx is its own transaction (§13.3.1.4): it belongs to the call.
            self.dialog_ack(&req);
            return;
        }
        if let Err(rej) = validate_request(&req) {
            self.reply_stateless(&req, peer, rej.code, rej.reason, now);
            return;
        }
        if self.transactions_full() {
            log::warn!(
                "{} SIP transactions in flight; 503 to {} from {}",
                self.cfg.max_transactions,
                req.method.as_str(),
                peer.addr
            );
            self.reply_stateless(&req, peer, 503, "Service Unavailable", now);
            return;
        }
        let from_tag = req.headers.from_header().ok().and_then(|f| f.tag().map(String::from)).unwrap_or_default();
        let merge_key = (
            req.uri.to_string(),
            from_tag,
            req.headers.call_id().unwrap_or_default().to_string(),
            first_value(&req.headers, HeaderName::CSeq).unwrap_or_default(),
        );
        // §8.2.2.2: same From tag, Call-ID and CSeq on another branch (to the same contact): a
        // merged request.
        let untagged = req.headers.to_header().is_ok_and(|to| to.tag().is_none());
        let merged = untagged && self.servers.values().any(|s| s.merge_key == merge_key);
        let kind = if req.method == Method::Invite { Kind::Invite } else { Kind::NonInvite };
        let tx = ServerTransaction::new(kind, peer.transport.reliable(), self.timers);
        self.servers.insert(key.clone(), ServerEntry { tx, peer, merge_key });
        if merged {
            self.respond(&key, &req, 482, "Loop Detected", now);
            return;
        }
        // §8.2.2.3: we support no extension, so any option tag in Require is unsupported.
        let required = unsupported_required(&req);
        if !required.is_empty() && req.method != Method::Cancel {
            let extra = [(HeaderName::Unsupported, required.join(", "))];
            self.respond_full(&key, &req, 420, "Bad Extension", &extra, &[], now);
            return;
        }
        // Requests inside one of our calls' dialogs (§12.2.2) are answered by the call.
        if self.in_dialog_request(&req, &key, now, rng) {
            self.leg_after_request(&req, now, rng);
            return;
        }
        let (code, reason) = if req.headers.to_header().is_ok_and(|to| to.tag().is_some())
            && req.method != Method::Options
        {
            // §12.2.2: a request for a dialog we do not have.
            (481, "Call/Transaction Does Not Exist")
        } else if req.headers.max_forwards().ok().flatten() == Some(0)
            && !matches!(req.method, Method::Options | Method::Cancel)
        {
            // A new request that used up its hops (spec §2.9: a B2BUA ends loops with 483). Requests
            // inside a dialog reached their destination and are served (a BYE must not fail).
            (483, "Too Many Hops")
        } else {
            match &req.method {
                Method::Options => (200, "OK"),
                Method::Other(_) => (501, "Not Implemented"),
                Method::Cancel => {
                    // §9.2: the CANCEL matches the INVITE transaction with the same branch.
                    let invite = ServerKey { method: "INVITE".into(), ..key.clone() };
                    if self.inbound_cancel(&invite, now) {
                        (200, "OK")
                    } else {
                        (481, "Call/Transaction Does Not Exist")
                    }
                }
                _ if !self.is_local_user(&req) => (404, "Not Found"),
                Method::Invite => {
                    if let Some(reg) = self.reg_of_user(&req) {
                        self.inbound_invite(reg, &req, peer, &key, now);
                        return;
                    }
                    (480, "Temporarily Unavailable")
                }
                Method::Bye | Method::Info | Method::Update | Method::Prack => (481, "Call/Transaction Does Not Exist"),
                _ => (405, "Method Not Allowed"),
            }
        };
        self.respond(&key, &req, code, reason, now);
    }

    /// Whether the Request-URI names one of our Contacts.
    fn is_local_user(&self, req: &Request) -> bool {
        self.reg_of_user(req).is_some()
    }

    /// The registration whose Contact the Request-URI names.
    fn reg_of_user(&self, req: &Request) -> Option<RegId> {
        let super::uri::Uri::Sip(uri) = &req.uri else { return None };
        let user = uri.user.as_deref()?;
        self.regs.iter().find(|(_, e)| e.params.identity.contact_user == user).map(|(id, _)| *id)
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

    /// [`SipStack::respond_full`], returning where the response went and its bytes (for a 2xx
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
        let bytes = resp.to_bytes();
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

    /// Whether the server transaction `key` is alive.
    pub(super) fn has_server(&self, key: &ServerKey) -> bool {
        self.servers.contains_key(key)
    }

    /// The account of registration `reg`.
    pub(super) fn reg_identity(&self, reg: RegId) -> Option<&SipIdentity> {
        self.regs.get(&reg).map(|e| &e.params.identity)
    }

    pub(super) fn reply_stateless(&mut self, req: &Request, peer: Peer, code: u16, reason: &str, now: Instant) {
        let resp = Response::for_request(req, code, reason);
        let dest = response_peer(req, peer);
        self.transmit(dest, resp.to_bytes(), now);
    }

    pub(super) fn transmit(&mut self, peer: Peer, bytes: Vec<u8>, now: Instant) {
        let mut out = Vec::new();
        self.transports.send(peer, bytes, now, &mut out);
        self.emit(out);
    }

    pub(super) fn emit(&mut self, out: Vec<TransportOut>) {
        self.out.extend(out.into_iter().map(SipOutput::Transport));
    }

    // ===== Timers =====

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

    /// Runs every due timer.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut Rng) {
        while let Some(key) = self.table.pop_expired(now) {
            let Some(timer) = self.keys.remove(&key) else { continue };
            self.key_of.remove(&timer);
            match timer {
                SipTimer::Client(branch) => self.client_timer(branch, now, rng),
                SipTimer::Server(skey) => self.server_timer(skey, now),
                SipTimer::Leg(leg) => self.inbound_timer(leg, now, rng),
                SipTimer::Reoffer(leg) => self.reoffer_timer(leg, now, rng),
                SipTimer::Glare(leg) => self.glare_timer(leg, now, rng),
                SipTimer::Reg(id) => {
                    let mut changes = Vec::new();
                    let send = self.regs.get_mut(&id).and_then(|e| e.reg.on_timeout(now, &mut changes));
                    self.announce(id, changes);
                    if let Some(send) = send {
                        self.send_register(id, send, now, rng);
                    }
                    self.arm_reg(id);
                }
            }
        }
        let mut out = Vec::new();
        self.transports.close_idle(now, &mut out);
        self.emit(out);
    }

    fn client_timer(&mut self, branch: String, now: Instant, rng: &mut Rng) {
        let Some(c) = self.clients.get_mut(&branch) else { return };
        let mut events = Vec::new();
        c.tx.on_timeout(now, &mut events);
        let (peer, bytes, owner) = (c.peer, c.bytes.clone(), c.owner);
        let deadline = c.tx.next_deadline();
        for ev in events {
            match ev {
                ClientEvent::Retransmit => self.transmit(peer, bytes.clone(), now),
                ClientEvent::TimedOut => {
                    self.clients.remove(&branch);
                    if let Some(conn) = peer.conn {
                        self.transports.retain(conn, false, now);
                    }
                    self.client_failed(owner, &branch, 408, "Request Timeout", now, rng);
                    return;
                }
                ClientEvent::Terminated => {
                    self.clients.remove(&branch);
                    if let Some(conn) = peer.conn {
                        self.transports.retain(conn, false, now);
                    }
                    return;
                }
            }
        }
        self.arm(SipTimer::Client(branch), deadline);
    }

    /// A client transaction failed without a response (timeout, transport error).
    fn client_failed(&mut self, owner: Owner, branch: &str, code: u16, reason: &str, now: Instant, rng: &mut Rng) {
        match owner {
            Owner::Reg(id) => {
                let resp = RegResponse { code, reason: reason.into(), ..RegResponse::default() };
                self.reg_response(id, &resp, now, rng);
            }
            Owner::Leg(leg, tx) => self.leg_failed(leg, tx, branch, code, reason, now, rng),
        }
    }

    fn server_timer(&mut self, key: ServerKey, now: Instant) {
        let Some(s) = self.servers.get_mut(&key) else { return };
        let mut events = Vec::new();
        s.tx.on_timeout(now, &mut events);
        let peer = s.peer;
        let last = s.tx.last_response().map(<[u8]>::to_vec);
        let deadline = s.tx.next_deadline();
        for ev in events {
            match ev {
                ServerEvent::Retransmit => {
                    if let Some(b) = last.clone() {
                        self.transmit(peer, b, now);
                    }
                }
                ServerEvent::AckTimeout => log::debug!("no ACK for our final response ({})", key.branch),
                ServerEvent::Terminated => {
                    self.servers.remove(&key);
                    return;
                }
            }
        }
        self.arm(SipTimer::Server(key), deadline);
    }
}

// ===== Reading and writing headers =====

/// The client-transaction key of the CANCEL for the INVITE with `branch`.
pub(super) fn cancel_key(branch: &str) -> String {
    format!("{branch}:CANCEL")
}

pub(super) fn put(h: &mut Headers, name: HeaderName, value: &str) {
    h.push(name, value.as_bytes().to_vec());
}

pub(super) fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

pub(super) fn header_values(h: &Headers, name: HeaderName) -> Vec<String> {
    h.get_all(&name).map(|v| v.value_str().into_owned()).collect()
}

/// The option tags of the request's Require headers (all of them: we support none, §8.2.2.3).
fn unsupported_required(req: &Request) -> Vec<String> {
    header_values(&req.headers, HeaderName::Require)
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

fn first_value(h: &Headers, name: HeaderName) -> Option<String> {
    h.get(&name).map(|v| v.value_str().into_owned())
}

/// Our To tag for the requests of server transaction `key` (stable, so retransmitted
/// responses and the dialog agree).
pub(super) fn to_tag_for(key: &ServerKey) -> String {
    digest::Algorithm::Md5.hash_hex(key.branch.as_bytes()).chars().take(16).collect()
}

/// Adds our To tag (stable per transaction) unless the request had one.
fn add_to_tag(h: &mut Headers, key: &ServerKey) {
    let Some(to) = first_value(h, HeaderName::To) else { return };
    if h.to_header().is_ok_and(|t| t.tag().is_some()) {
        return;
    }
    let tag = to_tag_for(key);
    h.set(HeaderName::To, format!("{to};tag={tag}").into_bytes());
}

/// RFC 3581 / §18.2.2: responses go back over the request's connection, or for UDP to the
/// source address (with `rport`) or the Via's sent-by port.
fn response_peer(req: &Request, peer: Peer) -> Peer {
    if peer.transport != Transport::Udp {
        return peer;
    }
    let Ok(via) = req.headers.top_via() else { return peer };
    if via.rport().is_some() {
        return peer;
    }
    Peer { addr: SocketAddr::new(peer.addr.ip(), via.port.unwrap_or(5060)), ..peer }
}

/// The granted interval from a REGISTER 200 (§10.2.4): the `expires` of our own binding in
/// the Contact list, else the `Expires` header.
fn granted_expires(h: &Headers, ours: &str) -> Option<u32> {
    let ours: Option<super::uri::Uri> = ours.parse().ok();
    if let (Some(ours), Ok(super::message::ContactList::Bindings(list))) = (&ours, h.contacts()) {
        if let Some(e) = list.iter().find(|na| ours.equivalent(&na.uri)).and_then(|na| na.expires()) {
            return Some(e);
        }
    }
    h.expires().ok().flatten()
}
