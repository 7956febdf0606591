//! One registration's client side (RFC 3261 §10): the [`Registration`] state machine wired to
//! its REGISTER requests — name resolution of the next hop (RFC 3263, with failover to the
//! next target on a timeout, a 503 or a connection failure, §4.3), building and authenticating
//! each REGISTER, its client transaction and the flow it keeps open — through [`Services`].
//! The stack routes the registration's inputs here by [`RegId`] and forgets it once
//! [`Registrant::is_gone`].

use super::build::{header_values, put, via_value, ALLOW};
use super::digest::{self, Answer, Secret};
use super::events::{RegId, SipEvent};
use super::identity::{RegParams, SipIdentity};
use super::message::{ContactList, HeaderName, Headers, Method, Request, Response};
use super::registration::{RegResponse, RegState, Registration, SendRegister};
use super::rfc3263::{Resolution, Target};
use super::services::{Owner, Services, SipTimer};
use super::target::{ProxySpec, Transport};
use super::transaction::Kind;
use super::transport::Peer;
use super::uri::{escape_param, Uri};
use crate::ids::ConnId;
use crate::rng::Rng;
use std::time::{Duration, Instant};

/// One registration.
pub(super) struct Registrant {
    id: RegId,
    reg: Registration,
    params: RegParams,
    call_id: String,
    from_tag: String,
    cseq: u32,
    hop: ProxySpec,
    /// The next hop's targets (RFC 3263), in order; empty until resolved.
    targets: Vec<Target>,
    /// The one in use.
    current: usize,
    /// Whether a REGISTER was ever sent (an unregistration then has something to remove).
    sent: bool,
    /// A REGISTER waiting for name resolution.
    waiting: Option<SendRegister>,
    /// The REGISTER in flight, sent again to the next target on failure (§4.3).
    last_send: Option<SendRegister>,
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
    /// Removed: the stack drops it.
    gone: bool,
}

impl Registrant {
    /// The state the transaction user last heard (for metrics).
    pub(super) fn state(&self) -> &RegState {
        self.reg.state()
    }

    /// A registration for `params`, not started.
    pub(super) fn new(id: RegId, params: RegParams, svc: &Services, rng: &mut Rng) -> Self {
        let domain = params.identity.domain().to_string();
        let hop = svc.proxy.clone().unwrap_or_else(|| {
            ProxySpec::parse(&domain).unwrap_or(ProxySpec {
                host: domain.clone(),
                port: None,
                transport: Transport::Udp,
                transport_given: false,
            })
        });
        let contact_uri = contact_uri(svc, &params, hop.transport);
        Self {
            id,
            reg: Registration::new(svc.cfg.register_ttl)
                .with_backoff_base(Duration::from_secs(svc.cfg.register_retry_interval.into())),
            params,
            call_id: format!("{}@sylkgw", rng.hex(24)),
            from_tag: rng.hex(16),
            cseq: (rng.next_u64() % 10_000) as u32 + 1,
            hop,
            targets: Vec::new(),
            current: 0,
            sent: false,
            waiting: None,
            last_send: None,
            in_flight: None,
            stop_after_response: false,
            flow: None,
            remove_when_done: false,
            contact_uri,
            gone: false,
        }
    }

    /// The account.
    pub(super) fn identity(&self) -> &SipIdentity {
        &self.params.identity
    }

    /// Whether it was removed (the stack forgets it).
    pub(super) fn is_gone(&self) -> bool {
        self.gone
    }

    /// Starts registering.
    pub(super) fn start(&mut self, svc: &mut Services, now: Instant, rng: &mut Rng) {
        let mut changes = Vec::new();
        let send = self.reg.start(&mut changes);
        self.announce(svc, changes);
        self.send_register(svc, send, now, rng);
    }

    /// Unregisters (REGISTER with `Expires: 0` for our binding) and is removed once that is
    /// answered. A REGISTER in flight is let finish first (RFC 3261 §10.2: no new REGISTER
    /// before the previous one has its final response or timed out): a registrar that handles
    /// requests in parallel could otherwise apply it after the removal, leaving a binding nobody
    /// refreshes or removes until it expires.
    pub(super) fn stop(&mut self, svc: &mut Services, now: Instant, rng: &mut Rng) {
        self.remove_when_done = true;
        self.waiting = None;
        if self.in_flight.is_some() {
            // An un-REGISTER in flight just finishes; a REGISTER is followed by one.
            self.stop_after_response = !self.reg.unregistering();
            return;
        }
        if !self.sent {
            // Nothing was ever sent (the next hop never resolved): nothing to remove.
            self.remove(svc, now);
            return;
        }
        match self.reg.stop() {
            Some(send) => self.send_register(svc, send, now, rng),
            None => self.remove(svc, now),
        }
    }

    /// Its timer ([`SipTimer::Reg`]) fired.
    pub(super) fn on_timer(&mut self, svc: &mut Services, now: Instant, rng: &mut Rng) {
        let mut changes = Vec::new();
        let send = self.reg.on_timeout(now, &mut changes);
        self.announce(svc, changes);
        if let Some(send) = send {
            self.send_register(svc, send, now, rng);
        }
        if !self.gone {
            self.arm(svc);
        }
    }

    /// The next hop's lookup ended (RFC 3263): the REGISTER waiting for it goes to the first
    /// target (the one in use before, if it is still among them), or fails with 503.
    pub(super) fn on_resolved(&mut self, svc: &mut Services, result: Resolution, now: Instant, rng: &mut Rng) {
        let send = self.waiting.take();
        svc.event(SipEvent::Resolved { id: self.id, result: result.as_ref().map(|_| ()).map_err(Clone::clone) });
        match result {
            Ok(targets) => {
                let before = self.targets.get(self.current).copied();
                self.current = before.and_then(|b| targets.iter().position(|t| *t == b)).unwrap_or(0);
                if targets.get(self.current) != before.as_ref() {
                    if let Some(conn) = self.flow.take() {
                        svc.transports.retain(conn, false, now);
                    }
                }
                self.targets = targets;
                if let Some(send) = send {
                    self.transmit(svc, send, now, rng);
                }
            }
            Err(error) => {
                log::info!(
                    "registration of {}: cannot resolve {}: {}",
                    self.params.identity.aor,
                    self.hop.host,
                    error.as_deref().unwrap_or("no records")
                );
                let resp = RegResponse { code: 503, reason: "Service Unavailable".into(), ..RegResponse::default() };
                self.on_reg_response(svc, &resp, now, rng);
            }
        }
    }

    /// A final (or provisional) response to its REGISTER.
    pub(super) fn on_response(&mut self, svc: &mut Services, resp: &Response, now: Instant, rng: &mut Rng) {
        // RFC 3263 §4.3: a 503 moves on to the next target.
        if resp.code == 503 && self.fail_over(svc, now, rng) {
            return;
        }
        let rr = RegResponse {
            code: resp.code,
            reason: resp.reason.clone(),
            granted: granted_expires(&resp.headers, &self.contact_uri),
            challenges: header_values(
                &resp.headers,
                if resp.code == 407 { HeaderName::ProxyAuthenticate } else { HeaderName::WwwAuthenticate },
            ),
            min_expires: resp.headers.min_expires().ok().flatten(),
        };
        self.on_reg_response(svc, &rr, now, rng);
    }

    /// Its REGISTER failed without a response (timeout, transport error): the next target, if
    /// any (RFC 3263 §4.3), else the failure.
    pub(super) fn on_failed(&mut self, svc: &mut Services, code: u16, reason: &str, now: Instant, rng: &mut Rng) {
        if self.fail_over(svc, now, rng) {
            return;
        }
        let resp = RegResponse { code, reason: reason.into(), ..RegResponse::default() };
        self.on_reg_response(svc, &resp, now, rng);
    }

    /// Sends the REGISTER in flight again to the next target (RFC 3263 §4.3), as a new
    /// transaction; `false` when there is none (or an unregistration waits).
    fn fail_over(&mut self, svc: &mut Services, now: Instant, rng: &mut Rng) -> bool {
        if self.stop_after_response {
            return false;
        }
        if self.current + 1 >= self.targets.len() {
            // Every target failed: the next attempt starts again from the first.
            if self.current != 0 {
                self.current = 0;
                if let Some(conn) = self.flow.take() {
                    svc.transports.retain(conn, false, now);
                }
            }
            return false;
        }
        let Some(send) = self.last_send.clone() else { return false };
        let (from, to) = (self.targets[self.current], self.targets[self.current + 1]);
        log::info!(
            "registration of {}: {} {} failed; trying {} {}",
            self.params.identity.aor,
            from.transport,
            from.addr,
            to.transport,
            to.addr
        );
        self.current += 1;
        self.in_flight = None;
        if let Some(conn) = self.flow.take() {
            svc.transports.retain(conn, false, now);
        }
        self.transmit(svc, send, now, rng);
        true
    }

    /// The stream flow `conn` is gone.
    pub(super) fn flow_lost(&mut self, conn: ConnId) {
        if self.flow == Some(conn) {
            self.flow = None;
        }
    }

    fn on_reg_response(&mut self, svc: &mut Services, resp: &RegResponse, now: Instant, rng: &mut Rng) {
        self.in_flight = None;
        if std::mem::take(&mut self.stop_after_response) {
            // Unregistered while this REGISTER was in flight: now remove what it may have bound.
            log::debug!(
                "registration of {}: {} {}, now unregistering",
                self.params.identity.aor,
                resp.code,
                resp.reason
            );
            match self.reg.stop() {
                Some(send) => self.send_register(svc, send, now, rng),
                None => self.remove(svc, now),
            }
            return;
        }
        let mut changes = Vec::new();
        let next = self.reg.on_response(resp, now, &mut changes);
        let done = self.remove_when_done && !self.reg.in_flight() && next.is_none();
        self.announce(svc, changes);
        if let Some(send) = next {
            self.send_register(svc, send, now, rng);
        } else if done {
            self.remove(svc, now);
            return;
        }
        if !self.gone {
            self.arm(svc);
        }
    }

    fn send_register(&mut self, svc: &mut Services, send: SendRegister, now: Instant, rng: &mut Rng) {
        if self.gone {
            return;
        }
        // `SipConfig::max_transactions`: no room for the REGISTER's transaction; it fails at once.
        if svc.transactions_full() {
            log::warn!("{} SIP transactions in flight; REGISTER not sent", svc.cfg.max_transactions);
            let resp = RegResponse { code: 503, reason: "Service Unavailable".into(), ..RegResponse::default() };
            return self.on_reg_response(svc, &resp, now, rng);
        }
        // A new REGISTER (not an unregistration, not a challenge's answer) resolves the next hop
        // again: the cache answers until the records' TTLs run out. An IP literal needs nothing.
        let fresh = send.expires > 0 && send.auth.is_none();
        if self.targets.is_empty() || (fresh && self.hop.ip().is_none()) {
            if let Some(ip) = self.hop.ip() {
                let addr = std::net::SocketAddr::new(ip, self.hop.port_or_default());
                self.targets = vec![Target { transport: self.hop.transport, addr }];
            } else {
                self.waiting = Some(send);
                if let Some(result) = svc.resolve(Owner::Reg(self.id), &self.hop, now, rng) {
                    self.on_resolved(svc, result, now, rng);
                }
                return;
            }
        }
        self.transmit(svc, send, now, rng);
    }

    /// Builds and sends `send` to the target in use.
    fn transmit(&mut self, svc: &mut Services, send: SendRegister, now: Instant, rng: &mut Rng) {
        if self.gone {
            return;
        }
        let Some(target) = self.targets.get(self.current).copied() else { return };
        // The Contact names the transport of the target in use.
        self.contact_uri = contact_uri(svc, &self.params, target.transport);
        self.sent = true;
        self.last_send = Some(send.clone());
        self.cseq += 1;
        let branch = format!("z9hG4bK{}", rng.hex(20));
        let (transport, addr) = (target.transport, target.addr);
        let identity = &self.params.identity;
        let ruri = format!("sip:{}", identity.domain());
        let (vhost, vport) = svc.advertised(transport);
        let mut h = Headers::default();
        put(&mut h, HeaderName::Via, &via_value(transport, &vhost, vport, &branch));
        put(&mut h, HeaderName::MaxForwards, "70");
        put(&mut h, HeaderName::From, &identity.tagged_from(&self.from_tag));
        put(&mut h, HeaderName::To, &format!("<sip:{}>", identity.aor));
        put(&mut h, HeaderName::CallId, &self.call_id);
        put(&mut h, HeaderName::CSeq, &format!("{} REGISTER", self.cseq));
        if svc.proxy.is_some() {
            put(&mut h, HeaderName::Route, &self.hop.route());
        }
        put(&mut h, HeaderName::Contact, &format!("<{}>;expires={}", self.contact_uri, send.expires));
        put(&mut h, HeaderName::Expires, &send.expires.to_string());
        if let Some((challenge, proxy, nc)) = &send.auth {
            let cnonce = rng.hex(16);
            let answer =
                Answer { username: identity.username(), method: "REGISTER", uri: &ruri, cnonce: &cnonce, nc: *nc };
            match digest::authorize(challenge, Secret::from_sylkrtc(&identity.secret), &answer) {
                Ok(value) => {
                    let name = if *proxy { HeaderName::ProxyAuthorization } else { HeaderName::Authorization };
                    put(&mut h, name, &value);
                }
                Err(err) => {
                    log::info!("registration of {}: {err}", identity.aor);
                    let resp = RegResponse { code: 403, reason: "Forbidden".into(), ..RegResponse::default() };
                    let mut changes = Vec::new();
                    self.reg.on_response(&resp, now, &mut changes);
                    self.announce(svc, changes);
                    self.arm(svc);
                    return;
                }
            }
        }
        put(&mut h, HeaderName::UserAgent, &svc.user_agent(Some(identity)));
        put(&mut h, HeaderName::Allow, ALLOW);
        let Ok(uri) = ruri.parse() else {
            log::error!("registration of {}: bad request URI {ruri}", identity.aor);
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
        let peer = Peer { transport, addr, conn: self.flow };
        self.in_flight = Some(branch.clone());
        // RFC 5922 §4: a TLS next hop is verified (and named in SNI) by its domain.
        let name = self.hop.host.clone();
        if let Some(conn) = svc.send_client(branch, bytes, peer, &name, Owner::Reg(self.id), Kind::NonInvite, now) {
            self.flow = Some(conn);
        }
    }

    /// Removed: its flow is let go and its timer stopped.
    fn remove(&mut self, svc: &mut Services, now: Instant) {
        if self.gone {
            return;
        }
        self.gone = true;
        if let Some(conn) = self.flow {
            svc.transports.retain(conn, false, now);
        }
        svc.arm(SipTimer::Reg(self.id), None);
    }

    fn arm(&self, svc: &mut Services) {
        svc.arm(SipTimer::Reg(self.id), self.reg.next_deadline());
    }

    fn announce(&self, svc: &mut Services, changes: Vec<RegState>) {
        for state in changes {
            svc.event(SipEvent::Registration { id: self.id, state });
        }
    }
}

/// The Contact URI we register: ours, with the push parameters (RFC 8599).
fn contact_uri(svc: &Services, p: &RegParams, transport: Transport) -> String {
    let (host, port) = svc.advertised(transport);
    let mut uri = format!("sip:{}@{host}:{port}", p.identity.contact_user);
    if transport != Transport::Udp {
        uri.push_str(&format!(";transport={}", transport.param()));
    }
    if let Some(push) = &p.push {
        // The values are the client's (`account-devicetoken`): escaped (RFC 3261 §25.1 paramchar).
        uri.push_str(&format!(
            ";pn-app={};pn-tok={};pn-type={};pn-device={};pn-silent={}",
            escape_param(&push.app),
            escape_param(&push.token),
            escape_param(&push.platform),
            escape_param(&push.device),
            if push.silent { "1" } else { "0" }
        ));
    }
    uri
}

/// The granted interval from a REGISTER 200 (§10.2.4): the `expires` of our own binding in
/// the Contact list, else the `Expires` header.
fn granted_expires(h: &Headers, ours: &str) -> Option<u32> {
    let ours: Option<Uri> = ours.parse().ok();
    if let (Some(ours), Ok(ContactList::Bindings(list))) = (&ours, h.contacts()) {
        if let Some(e) = list.iter().find(|na| ours.equivalent(&na.uri)).and_then(|na| na.expires()) {
            return Some(e);
        }
    }
    h.expires().ok().flatten()
}
