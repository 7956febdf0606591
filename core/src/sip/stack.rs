//! The SIP user agent core (RFC 3261 §8, §10, §17): the parent of the SIP machines. It owns the
//! `Services` (transport layer, client and server transactions, timers), the registrations
//! (`Registrant`), the call legs (`Leg`) and the outgoing MESSAGEs (`Pager`); it routes every
//! input to the machine it belongs to by id, answers what it can answer alone (OPTIONS, unknown
//! users, unknown methods, merged requests), holds incoming MESSAGEs until the transaction user
//! answers them, and forgets machines once they are over. It knows SIP, not sylkRTC: the
//! gateway drives it by id and hears back through [`SipEvent`]s.

use super::answered::{Answered, MergeKey};
use super::budget::{SourceBudget, Verdict};
pub use super::build::ALLOW;
use super::build::{first_value, response_peer, unsupported_required};
use super::calls::{CallParams, OutLeg};
use super::events::LegId;
pub use super::events::{InboundMsgId, IncomingMessage, InfoError, MsgId, RegId, SipEvent, SipOutput};
pub use super::identity::{PushContact, RegParams, SipIdentity};
use super::incoming::InLeg;
use super::leg::Leg;
use super::message::{HeaderName, Method, Request, Response, SipMessage};
pub use super::midcall::MAX_QUEUED_INFOS;
use super::pager::{incoming_message, Pager};
pub use super::pager::{MessageParams, MESSAGE_ANSWER_WAIT};
use super::parse::{parse_message, parse_message_with, validate_request, ParseError, ParseOptions};
use super::registrant::Registrant;
use super::services::{Owner, ServerEntry, ServerKey, Services, SipTimer};
use super::transaction::{ClientEvent, ClientState, Kind, ResponseVerdict, ServerEvent, ServerTransaction};
use super::transport::{Arrival, Peer};
use super::uri::Uri;

use crate::config::SipConfig;
use crate::ids::{ConnId, SocketId};
use crate::rng::Rng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

/// The SIP stack.
pub struct SipStack {
    svc: Services,
    /// Answers to incoming requests that got no server transaction (retransmissions).
    answered: Answered,
    /// Incoming requests per second per source IP.
    budget: SourceBudget,
    regs: BTreeMap<RegId, Registrant>,
    legs: BTreeMap<LegId, Leg>,
    /// Outgoing MESSAGEs until their result.
    pagers: BTreeMap<MsgId, Pager>,
    /// Incoming MESSAGEs waiting for the transaction user's answer: their server transaction
    /// and request (bounded by `SipConfig::max_server_transactions`).
    inbox: BTreeMap<InboundMsgId, (ServerKey, Request)>,
    next_reg: u64,
    next_leg: u64,
    next_msg: u64,
}

impl SipStack {
    /// A stack with no sockets yet. `cfg.outbound_sip_proxy` must already be valid.
    pub fn new(cfg: SipConfig) -> Self {
        Self {
            answered: Answered::new(cfg.max_answered),
            budget: SourceBudget::new(cfg.max_requests_per_second_per_ip),
            svc: Services::new(cfg),
            regs: BTreeMap::new(),
            legs: BTreeMap::new(),
            pagers: BTreeMap::new(),
            inbox: BTreeMap::new(),
            next_reg: 1,
            next_leg: 1,
            next_msg: 1,
        }
    }

    /// The runtime bound the SIP UDP socket at `local`.
    pub fn set_udp_socket(&mut self, socket: SocketId, local: SocketAddr) {
        self.svc.transports.set_udp(socket, local);
    }

    /// Whether a stream connection belongs to SIP.
    pub fn owns_conn(&self, conn: ConnId) -> bool {
        self.svc.transports.owns(conn)
    }

    /// Whether the bytes of a SIP stream connection are TLS records (captures record the
    /// plaintext instead, from `TransportOut::Tap`).
    pub fn encrypted_conn(&self, conn: ConnId) -> bool {
        self.svc.transports.encrypted(conn)
    }

    /// Anchors the wall clock TLS certificate checks use: `unix` is the Unix time at `start`.
    pub fn set_clock(&mut self, start: Instant, unix: std::time::Duration) {
        self.svc.transports.set_clock(start, unix);
    }

    /// Reports the plaintext of TLS flows (`TransportOut::Tap`) for captures.
    pub fn set_tap(&mut self, on: bool) {
        self.svc.transports.set_tap(on);
    }

    /// Bytes of requests the client transactions keep to retransmit (for memory checks).
    pub fn retransmit_bytes(&self) -> usize {
        self.svc.clients.values().map(|c| c.bytes.len()).sum()
    }

    /// Table sizes: (transactions, registrations, flows).
    pub fn sizes(&self) -> (usize, usize, usize) {
        // Call legs count with the transactions until the calls layer reports its own.
        (self.svc.clients.len() + self.svc.servers.len(), self.regs.len(), self.svc.transports.flow_count())
    }

    /// Sizes of the tables [`Self::sizes`] and `leg_count` leave out, for leak checks
    /// (`Gateway::stats`): (armed timers, timer keys, timer keys' reverse map, DNS queries).
    pub fn census(&self) -> (usize, usize, usize, usize) {
        self.svc.census()
    }

    /// Registrations by state (for metrics): registering, registered, failed, unregistered.
    pub fn registration_states(&self) -> [usize; 4] {
        let mut by = [0; 4];
        for r in self.regs.values() {
            by[match r.state() {
                super::registration::RegState::Registering => 0,
                super::registration::RegState::Registered => 1,
                super::registration::RegState::Failed(_) => 2,
                super::registration::RegState::Unregistered => 3,
            }] += 1;
        }
        by
    }

    /// Next output for the runtime.
    pub fn poll_output(&mut self) -> Option<SipOutput> {
        self.svc.poll_output()
    }

    /// Next event for the transaction user.
    pub fn poll_event(&mut self) -> Option<SipEvent> {
        self.svc.poll_event()
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.svc.next_deadline()
    }

    // ===== Routing to the machines =====

    /// Runs `f` on registration `id` (if it exists), then forgets it if it is gone.
    fn with_reg<R>(&mut self, id: RegId, f: impl FnOnce(&mut Registrant, &mut Services) -> R) -> Option<R> {
        let reg = self.regs.get_mut(&id)?;
        let r = f(reg, &mut self.svc);
        if reg.is_gone() {
            self.regs.remove(&id);
            for leg in self.legs.values_mut() {
                if let Leg::In(l) = leg {
                    l.registration_gone(id);
                }
            }
        }
        Some(r)
    }

    /// Runs `f` on call leg `id` (if it exists), then forgets it if it is over.
    fn with_leg<R>(&mut self, id: LegId, f: impl FnOnce(&mut Leg, &mut Services) -> R) -> Option<R> {
        let leg = self.legs.get_mut(&id)?;
        let r = f(leg, &mut self.svc);
        if leg.is_gone() {
            self.legs.remove(&id);
        }
        Some(r)
    }

    /// Runs `f` on outgoing MESSAGE `id` (if it exists), then forgets it if it is over.
    fn with_pager<R>(&mut self, id: MsgId, f: impl FnOnce(&mut Pager, &mut Services) -> R) -> Option<R> {
        let pager = self.pagers.get_mut(&id)?;
        let r = f(pager, &mut self.svc);
        if pager.is_gone() {
            self.pagers.remove(&id);
        }
        Some(r)
    }

    // ===== Registrations =====

    /// Starts registering; events follow.
    pub fn register(&mut self, params: RegParams, now: Instant, rng: &mut Rng) -> RegId {
        let id = RegId(self.next_reg);
        self.next_reg += 1;
        let reg = Registrant::new(id, params, &self.svc, rng);
        self.regs.insert(id, reg);
        self.with_reg(id, |r, svc| r.start(svc, now, rng));
        id
    }

    /// Unregisters (REGISTER with `Expires: 0` for our binding) and forgets the registration
    /// once that is answered (after the REGISTER in flight, if any: RFC 3261 §10.2).
    pub fn unregister(&mut self, id: RegId, now: Instant, rng: &mut Rng) {
        self.with_reg(id, |r, svc| r.stop(svc, now, rng));
    }

    // ===== Calls =====

    /// Places a call; progress arrives as [`SipEvent::Call`].
    pub fn invite(&mut self, params: CallParams, now: Instant, rng: &mut Rng) -> LegId {
        let id = self.new_leg_id();
        let leg = OutLeg::new(id, params, &self.svc, rng);
        self.legs.insert(id, Leg::Out(Box::new(leg)));
        self.with_leg(id, |leg, svc| {
            if let Leg::Out(l) = leg {
                l.start(svc, now, rng);
            }
        });
        id
    }

    fn new_leg_id(&mut self) -> LegId {
        let id = LegId(self.next_leg);
        self.next_leg += 1;
        id
    }

    /// Hangs up: CANCEL before an answer (once a provisional came), BYE after; an incoming call
    /// still ringing is declined.
    pub fn hang_up(&mut self, id: LegId, now: Instant, rng: &mut Rng) {
        self.with_leg(id, |leg, svc| leg.hang_up(svc, id, now, rng));
    }

    /// Number of call legs alive (outgoing and incoming).
    pub fn leg_count(&self) -> usize {
        self.legs.len()
    }

    /// Every dialog (early or confirmed) of every call leg, outgoing and incoming, with its leg:
    /// the stateful fuzz target checks that no two share an id.
    #[doc(hidden)]
    pub fn dialog_ids_for_test(&self) -> Vec<(LegId, super::dialog::DialogId)> {
        let out = self.legs.iter().filter_map(|(id, l)| match l {
            Leg::Out(l) => Some(l.dialogs().map(|d| (*id, d.id.clone())).collect::<Vec<_>>()),
            Leg::In(_) => None,
        });
        let inbound = self.legs.iter().filter_map(|(id, l)| match l {
            Leg::In(l) => l.dialog().map(|d| (*id, d.id.clone())),
            Leg::Out(_) => None,
        });
        out.flatten().chain(inbound).collect()
    }

    /// The Call-ID of outgoing leg `id`.
    pub fn leg_call_id(&self, id: LegId) -> Option<String> {
        match self.legs.get(&id) {
            Some(Leg::Out(l)) => Some(l.call_id().to_string()),
            _ => None,
        }
    }

    /// Answers an incoming call with `sdp` (200 OK, retransmitted until the ACK).
    pub fn answer(&mut self, id: LegId, sdp: Vec<u8>, now: Instant) {
        self.answer_with_headers(id, sdp, Vec::new(), now);
    }

    /// [`SipStack::answer`] with extra headers in the 2xx (and its retransmissions). Names must
    /// be tokens (the caller filters them); values lose CR/LF when written.
    pub fn answer_with_headers(&mut self, id: LegId, sdp: Vec<u8>, headers: Vec<(String, String)>, now: Instant) {
        self.with_leg(id, |leg, svc| {
            if let Leg::In(l) = leg {
                l.answer(svc, sdp, headers, now);
            }
        });
    }

    /// Declines an incoming call that is still ringing (486 by default, 603 configurable).
    pub fn decline(&mut self, id: LegId, code: u16, reason: &str, now: Instant) {
        self.with_leg(id, |leg, svc| {
            if let Leg::In(l) = leg {
                l.decline(svc, code, reason, now);
            }
        });
    }

    /// Whether `id` is an incoming call still ringing.
    pub fn is_ringing(&self, id: LegId) -> bool {
        matches!(self.legs.get(&id), Some(Leg::In(l)) if l.is_ringing())
    }

    /// Sends an INFO with `content_type` and `body` in the leg's established dialog (either
    /// direction; e.g. `application/dtmf-relay` with `Signal=1\r\nDuration=160\r\n`). INFOs go out
    /// one at a time (RFC 6086 §4.2.1): a second one waits in the leg's queue until the first has
    /// its final response or timed out. The response is only logged: no failure ends the call.
    /// Returns false if the INFO was not taken (see [`SipStack::try_send_info`] for why).
    pub fn send_info(&mut self, id: LegId, content_type: &str, body: Vec<u8>, now: Instant, rng: &mut Rng) -> bool {
        self.try_send_info(id, content_type, body, now, rng).is_ok()
    }

    /// [`SipStack::send_info`], saying why an INFO was not taken: [`InfoError::NoDialog`] (no
    /// established dialog) or [`InfoError::QueueFull`] ([`MAX_QUEUED_INFOS`] already wait behind
    /// the one in flight; nothing was queued, the call goes on).
    pub fn try_send_info(
        &mut self,
        id: LegId,
        content_type: &str,
        body: Vec<u8>,
        now: Instant,
        rng: &mut Rng,
    ) -> Result<(), InfoError> {
        self.with_leg(id, |leg, svc| leg.send_info(svc, id, content_type, body, now, rng))
            .unwrap_or(Err(InfoError::NoDialog))
    }

    /// Sends a re-INVITE offering `sdp` in the leg's established dialog (§14.1); the outcome
    /// arrives as [`SipEvent::ReinviteResult`]. Returns false if there is no established dialog
    /// (an incoming call counts once its 2xx was ACKed) or an INVITE transaction is in progress
    /// in either direction (ours, or the peer's offer not answered and ACKed yet).
    pub fn reinvite(&mut self, id: LegId, sdp: Vec<u8>, now: Instant, rng: &mut Rng) -> bool {
        self.with_leg(id, |leg, svc| leg.reinvite(svc, id, sdp, now, rng)).unwrap_or(false)
    }

    /// Answers the peer's offer ([`SipEvent::Reoffer`]): `Ok(sdp)` sends 200 with our SDP,
    /// Contact and Allow (for a re-INVITE retransmitted until the ACK, §13.3.1.4; for a late
    /// offer `sdp` is our offer), `Err((code, reason))` a final error such as 488 (a code outside
    /// 300–699 becomes 500). Does nothing if no offer is waiting (it was CANCELled and answered
    /// 487, or the call ended).
    pub fn answer_reoffer(&mut self, id: LegId, result: Result<Vec<u8>, (u16, String)>, now: Instant) {
        self.with_leg(id, |leg, svc| leg.answer_reoffer(svc, id, result, now));
    }

    // ===== Messages (RFC 3428) =====

    /// Sends a MESSAGE out of dialog, routed as an INVITE is (outbound proxy, else the target's
    /// domain); a 401/407 is answered with the account's credentials once. The result arrives
    /// as [`SipEvent::MessageResult`].
    pub fn send_message(&mut self, params: MessageParams, now: Instant, rng: &mut Rng) -> MsgId {
        let id = self.new_msg_id();
        self.pagers.insert(id, Pager::new(id, params, &self.svc, rng));
        self.with_pager(id, |p, svc| p.start(svc, now, rng));
        id
    }

    /// Sends a MESSAGE in the established dialog of call leg `leg` (its route set and next
    /// CSeq; RFC 3428 §4); the result arrives as [`SipEvent::MessageResult`]. `None` if the leg
    /// has no established dialog. A challenge to it is the result (no retry: the dialog's CSeq
    /// is the leg's); no result ends the call (as for INFO).
    pub fn send_message_in_dialog(
        &mut self,
        leg: LegId,
        content_type: &str,
        body: Vec<u8>,
        now: Instant,
        rng: &mut Rng,
    ) -> Option<MsgId> {
        let msg = self.with_leg(leg, |l, svc| l.message_request(svc, content_type, body, rng))??;
        let id = self.new_msg_id();
        self.pagers.insert(id, Pager::in_dialog(id));
        self.with_pager(id, |p, svc| p.send_in_dialog(svc, msg, now));
        Some(id)
    }

    fn new_msg_id(&mut self) -> MsgId {
        let id = MsgId(self.next_msg);
        self.next_msg += 1;
        id
    }

    /// Answers the incoming MESSAGE `id` ([`SipEvent::Message`]): 200 (delivered), 202
    /// (accepted for later delivery) or an error (a code outside 200–699 becomes 500). Does
    /// nothing if it was answered already (by the [`MESSAGE_ANSWER_WAIT`] fallback).
    pub fn answer_message(&mut self, id: InboundMsgId, code: u16, now: Instant) {
        let Some((key, req)) = self.inbox.remove(&id) else { return };
        self.svc.arm(SipTimer::MessageAnswer(id), None);
        let code = if (200..700).contains(&code) { code } else { 500 };
        self.svc.respond(&key, &req, code, super::message::default_reason(code), now);
    }

    /// Number of outgoing MESSAGEs waiting for their result and incoming ones waiting for an
    /// answer, for leak checks.
    pub fn message_count(&self) -> (usize, usize) {
        (self.pagers.len(), self.inbox.len())
    }

    // ===== Input =====

    /// The runtime answered DNS query `query`; a lookup that is now complete goes to its owner.
    pub fn handle_resolved(
        &mut self,
        query: u64,
        result: Result<crate::dns::Answer, String>,
        now: Instant,
        rng: &mut Rng,
    ) {
        let Some((owner, result)) = self.svc.answer_query(query, result, now, rng) else { return };
        match owner {
            Owner::Reg(id) => {
                self.with_reg(id, |r, svc| r.on_resolved(svc, result, now, rng));
            }
            Owner::Leg(id, _) => {
                self.with_leg(id, |leg, svc| {
                    if let Leg::Out(l) = leg {
                        l.on_resolved(svc, result, now, rng);
                    }
                });
            }
            Owner::Msg(id) => {
                self.with_pager(id, |p, svc| p.on_resolved(svc, result, now, rng));
            }
        }
    }

    /// RFC 3263 lookups started so far: a caller compares it before and after a request to
    /// learn whether the request started one (a registration then reports
    /// [`SipEvent::Resolved`]).
    pub fn lookups_started(&self) -> u64 {
        self.svc.lookups_started()
    }

    /// A datagram on the SIP socket.
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Instant, rng: &mut Rng) {
        let mut arrivals = Vec::new();
        self.svc.transports.datagram(from, data, &mut arrivals);
        self.arrivals(arrivals, now, rng);
    }

    /// A TCP connection arrived on the SIP listener.
    pub fn handle_accepted(&mut self, conn: ConnId, peer: SocketAddr, now: Instant) {
        self.svc.transports.accepted(conn, peer, now);
    }

    /// The server configuration (certificate, key) of the SIP TLS listener.
    pub fn set_tls_server(&mut self, config: std::sync::Arc<rustls::ServerConfig>) {
        self.svc.transports.set_tls_server(config);
    }

    /// A connection accepted on the SIP TLS listener (RFC 3261 §26.3.1): a TLS flow, served with
    /// [`SipStack::set_tls_server`]'s configuration. False when there is none: close it.
    pub fn handle_accepted_tls(&mut self, conn: ConnId, peer: SocketAddr, now: Instant) -> bool {
        self.svc.transports.accepted_tls(conn, peer, now)
    }

    /// Bytes on a SIP stream connection.
    pub fn handle_stream_data(&mut self, conn: ConnId, data: &[u8], now: Instant, rng: &mut Rng) {
        let (mut out, mut arrivals) = (Vec::new(), Vec::new());
        self.svc.transports.stream_data(conn, data, now, &mut out, &mut arrivals);
        self.svc.emit(out);
        self.arrivals(arrivals, now, rng);
    }

    /// The runtime finished (or failed) connecting.
    pub fn handle_connected(&mut self, conn: ConnId, ok: bool, now: Instant, rng: &mut Rng) {
        let (mut out, mut arrivals) = (Vec::new(), Vec::new());
        self.svc.transports.connected(conn, ok, now, &mut out, &mut arrivals);
        self.svc.emit(out);
        self.arrivals(arrivals, now, rng);
    }

    /// A SIP stream connection closed.
    pub fn handle_closed(&mut self, conn: ConnId, now: Instant, rng: &mut Rng) {
        let mut arrivals = Vec::new();
        self.svc.transports.closed(conn, &mut arrivals);
        self.arrivals(arrivals, now, rng);
    }

    fn arrivals(&mut self, arrivals: Vec<Arrival>, now: Instant, rng: &mut Rng) {
        for a in arrivals {
            match a {
                Arrival::Message { peer, bytes } => self.message(peer, &bytes, now, rng),
                Arrival::FlowLost { conn } => self.flow_lost(conn, now, rng),
                Arrival::TlsLost { conn } => {
                    let mut out = Vec::new();
                    if self.svc.transports.lose_tls(conn, &mut out) {
                        self.svc.emit(out);
                        self.flow_lost(conn, now, rng);
                    }
                }
            }
        }
    }

    fn flow_lost(&mut self, conn: ConnId, now: Instant, rng: &mut Rng) {
        // §17.1.4: a transport error fails the transactions using the flow.
        let failed: Vec<String> =
            self.svc.clients.iter().filter(|(_, c)| c.peer.conn == Some(conn)).map(|(b, _)| b.clone()).collect();
        for branch in failed {
            if let Some(c) = self.svc.clients.remove(&branch) {
                self.svc.arm(SipTimer::Client(branch.clone()), None);
                self.client_failed(c.owner, &branch, 503, "Service Unavailable", now, rng);
            }
        }
        for r in self.regs.values_mut() {
            r.flow_lost(conn);
        }
        self.svc.servers.retain(|_, s| s.peer.conn != Some(conn));
        // An incoming MESSAGE whose server transaction went with the flow has no one to answer.
        let orphans: Vec<InboundMsgId> =
            self.inbox.iter().filter(|(_, (key, _))| !self.svc.has_server(key)).map(|(id, _)| *id).collect();
        for id in orphans {
            self.inbox.remove(&id);
            self.svc.arm(SipTimer::MessageAnswer(id), None);
        }
    }

    fn message(&mut self, peer: Peer, bytes: &[u8], now: Instant, rng: &mut Rng) {
        match parse_message(bytes) {
            Ok(SipMessage::Response(resp)) => self.response(resp, now, rng),
            Ok(SipMessage::Request(req)) => self.request(req, peer, now, rng),
            Err(ParseError::Version) => {
                // §8.2.4 / RFC 4475 badvers: answer 505 if the request is readable otherwise.
                let opts = ParseOptions { any_version: true, ..ParseOptions::default() };
                if let Ok(SipMessage::Request(req)) = parse_message_with(bytes, &opts) {
                    self.svc.reply_stateless(&req, peer, 505, "Version Not Supported", now);
                }
            }
            Err(e) => {
                log::info!("unparsable SIP message from {}: {e:?}", peer.addr);
                // A request we cannot read gets a 400 when enough of it is there to address one.
                let opts = ParseOptions { any_version: true, ..ParseOptions::default() };
                if let Ok(SipMessage::Request(req)) = parse_message_with(bytes, &opts) {
                    self.svc.reply_stateless(&req, peer, 400, "Bad Request", now);
                }
            }
        }
    }

    /// A response: to the client transaction it matches, then to the transaction's owner.
    fn response(&mut self, resp: Response, now: Instant, rng: &mut Rng) {
        let Some(branch) = resp.headers.top_via().ok().and_then(|v| v.branch().map(String::from)) else {
            log::debug!("response without a Via branch; dropped");
            return;
        };
        // A CANCEL shares its INVITE's branch (§9.1); its transaction is keyed apart.
        let branch = match resp.headers.cseq() {
            Ok(c) if c.method == Method::Cancel => super::build::cancel_key(&branch),
            _ => branch,
        };
        let Some(c) = self.svc.clients.get_mut(&branch) else {
            log::debug!("response for no transaction of ours ({branch}); dropped");
            return;
        };
        let verdict = c.tx.on_response(resp.code, now);
        // After a final response the request is never resent (§17.1.1.2 Completed, RFC 6026 §7.2
        // Accepted, §17.1.2.2 Completed): its bytes go, though the transaction stays for up to
        // 32 s (issue #14).
        if matches!(c.tx.state(), ClientState::Completed | ClientState::Accepted | ClientState::Terminated) {
            c.bytes = Vec::new();
        }
        let owner = c.owner;
        let deadline = c.tx.next_deadline();
        self.svc.arm(SipTimer::Client(branch.clone()), deadline);
        match owner {
            Owner::Leg(id, tx) => {
                self.with_leg(id, |leg, svc| leg.on_response(svc, id, tx, &branch, &resp, verdict, now, rng));
            }
            Owner::Reg(id) => {
                if verdict == ResponseVerdict::Absorb || resp.code < 200 {
                    return;
                }
                self.with_reg(id, |r, svc| r.on_response(svc, &resp, now, rng));
            }
            Owner::Msg(id) => {
                self.with_pager(id, |p, svc| p.on_response(svc, &branch, &resp, verdict, now, rng));
            }
        }
    }

    /// A client transaction failed without a response (timeout, transport error).
    fn client_failed(&mut self, owner: Owner, branch: &str, code: u16, reason: &str, now: Instant, rng: &mut Rng) {
        match owner {
            Owner::Reg(id) => {
                self.with_reg(id, |r, svc| r.on_failed(svc, code, reason, now, rng));
            }
            Owner::Leg(id, tx) => {
                self.with_leg(id, |leg, svc| leg.on_failed(svc, id, tx, branch, code, reason, now, rng));
            }
            Owner::Msg(id) => {
                self.with_pager(id, |p, svc| p.on_failed(svc, branch, code, reason, now, rng));
            }
        }
    }

    /// A request: a retransmission goes to its server transaction; a new one gets one (unless
    /// the table is full), then is answered here or handed to the call leg whose dialog it is in.
    fn request(&mut self, req: Request, peer: Peer, now: Instant, rng: &mut Rng) {
        // `SipConfig::max_requests_per_second_per_ip`: a flood from one source is cut here,
        // before it costs a transaction or an answer.
        match self.budget.check(peer.addr.ip(), now) {
            Verdict::Allow => {}
            over => {
                if over == Verdict::FirstOver {
                    log::warn!(
                        "more than {} SIP requests a second from {}; {} until the next second",
                        self.svc.cfg.max_requests_per_second_per_ip,
                        peer.addr.ip(),
                        if peer.transport.reliable() { "503" } else { "dropped" }
                    );
                }
                if peer.transport.reliable() && req.method != Method::Ack {
                    self.reply_busy(&req, peer, now);
                }
                return;
            }
        }
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
        if let Some(s) = self.svc.servers.get_mut(&key) {
            if req.method == Method::Ack {
                s.tx.on_ack(now);
                let deadline = s.tx.next_deadline();
                self.svc.arm(SipTimer::Server(key), deadline);
            } else if let Some(last) = s.tx.on_retransmitted_request().map(<[u8]>::to_vec) {
                let p = s.peer;
                self.svc.transmit(p, last, now);
            }
            return;
        }
        if let Some((dest, bytes)) = self.answered.get(&key, now) {
            // A retransmission of a request answered at once (§17.2.2).
            let bytes = bytes.to_vec();
            self.svc.transmit(dest, bytes, now);
            return;
        }
        if req.method == Method::Ack {
            // The ACK of a 2xx is its own transaction (§13.3.1.4): it belongs to the call.
            self.dialog_ack(&req);
            return;
        }
        if let Err(rej) = validate_request(&req) {
            self.svc.reply_stateless(&req, peer, rej.code, rej.reason, now);
            return;
        }
        // INVITEs and requests inside our calls' dialogs get a server transaction; the rest is
        // answered at once, its answer kept (bounded) for retransmissions.
        let in_dialog = self.leg_of_request(&req);
        // A MESSAGE for one of our Contacts waits for the transaction user's answer (RFC 3428 §7).
        let for_inbox = req.method == Method::Message
            && req.headers.to_header().is_ok_and(|to| to.tag().is_none())
            && self.reg_of_user(&req).is_some();
        let stateful = req.method == Method::Invite || in_dialog.is_some() || for_inbox;
        if stateful && self.svc.servers_full() {
            log::warn!(
                "{} SIP server transactions in flight; 503 to {} from {}",
                self.svc.cfg.max_server_transactions,
                req.method.as_str(),
                peer.addr
            );
            self.svc.reply_stateless(&req, peer, 503, "Service Unavailable", now);
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
        let merged = untagged
            && (self.svc.servers.values().any(|s| s.merge_key == merge_key) || self.answered.has_merge_key(&merge_key));
        if stateful {
            let kind = if req.method == Method::Invite { Kind::Invite } else { Kind::NonInvite };
            let tx = ServerTransaction::new(kind, peer.transport.reliable(), self.svc.timers);
            self.svc.servers.insert(key.clone(), ServerEntry { tx, peer, merge_key: merge_key.clone() });
        }
        let answer = Answer { key: &key, req: &req, peer, merge_key };
        if merged {
            self.reply(answer, 482, "Loop Detected", &[], now);
            return;
        }
        // §8.2.2.3: of the extensions, we support only 100rel (in an INVITE, RFC 3262).
        let required = unsupported_required(&req);
        if !required.is_empty() && req.method != Method::Cancel {
            let extra = [(HeaderName::Unsupported, required.join(", "))];
            self.reply(answer, 420, "Bad Extension", &extra, now);
            return;
        }
        // Requests inside one of our calls' dialogs (§12.2.2) are answered by the call.
        if let Some((id, found)) = in_dialog {
            self.with_leg(id, |leg, svc| leg.in_dialog_request(svc, id, found, &req, &key, now, rng));
            self.after_dialog_request(&req, now, rng);
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
                _ if self.reg_of_user(&req).is_none() => (404, "Not Found"),
                Method::Invite => {
                    if let Some(reg) = self.reg_of_user(&req) {
                        self.inbound_invite(reg, &req, peer, &key, now, rng);
                        return;
                    }
                    (480, "Temporarily Unavailable")
                }
                Method::Message => {
                    if let Some(reg) = self.reg_of_user(&req) {
                        self.inbound_message(reg, &req, &key, now);
                        return;
                    }
                    (480, "Temporarily Unavailable")
                }
                Method::Bye | Method::Info | Method::Update | Method::Prack => (481, "Call/Transaction Does Not Exist"),
                _ => (405, "Method Not Allowed"),
            }
        };
        self.reply(answer, code, reason, &[], now);
    }

    /// Answers a request with a final response: through its server transaction if it has one,
    /// else at once, keeping the answer for retransmissions (UDP: Timer J, §17.2.2; a reliable
    /// transport does not retransmit).
    fn reply(&mut self, a: Answer<'_>, code: u16, reason: &str, extra: &[(HeaderName, String)], now: Instant) {
        if self.svc.has_server(a.key) {
            self.svc.respond_full(a.key, a.req, code, reason, extra, &[], now);
            return;
        }
        let bytes = self.svc.build_response(a.key, a.req, code, reason, extra, &[]);
        let dest = response_peer(a.req, a.peer);
        if !a.peer.transport.reliable() {
            let until = now + self.svc.timers.t64();
            self.answered.insert(a.key.clone(), a.merge_key, dest, bytes.clone(), until);
        }
        self.svc.transmit(dest, bytes, now);
    }

    /// 503 with Retry-After to a request over the per-source budget (stream transports only).
    fn reply_busy(&mut self, req: &Request, peer: Peer, now: Instant) {
        let mut resp = Response::for_request(req, 503, "Service Unavailable");
        resp.headers.push(HeaderName::RetryAfter, b"1".to_vec());
        let dest = response_peer(req, peer);
        self.svc.transmit(dest, resp.to_bytes(), now);
    }

    /// The registration whose Contact the Request-URI names.
    fn reg_of_user(&self, req: &Request) -> Option<RegId> {
        let Uri::Sip(uri) = &req.uri else { return None };
        let user = uri.user.as_deref()?;
        self.regs.iter().find(|(_, r)| r.identity().contact_user == user).map(|(id, _)| *id)
    }

    /// An INVITE for registration `reg`'s Contact: a new incoming leg rings.
    fn inbound_invite(&mut self, reg: RegId, req: &Request, peer: Peer, key: &ServerKey, now: Instant, rng: &mut Rng) {
        let Some(identity) = self.regs.get(&reg).map(|r| r.identity().clone()) else { return };
        let id = self.new_leg_id();
        // RFC 3262 §7.1: the first RSeq is random in 1..2^31 (a small start leaves room to count);
        // drawn only when the INVITE allows reliable provisionals.
        let first_rseq = super::reliable::invite_offers_100rel(req).then(|| (rng.next_u64() % (1 << 30)) as u32 + 1);
        let leg = InLeg::new(&mut self.svc, id, reg, identity, req, peer, key, now, first_rseq);
        self.legs.insert(id, Leg::In(Box::new(leg)));
    }

    /// A MESSAGE for registration `reg`'s Contact (RFC 3428 §7): the transaction user hears it
    /// and answers; unanswered after [`MESSAGE_ANSWER_WAIT`], the stack answers 480.
    fn inbound_message(&mut self, reg: RegId, req: &Request, key: &ServerKey, now: Instant) {
        let id = InboundMsgId(self.next_msg);
        self.next_msg += 1;
        self.inbox.insert(id, (key.clone(), req.clone()));
        self.svc.arm(SipTimer::MessageAnswer(id), Some(now + MESSAGE_ANSWER_WAIT));
        self.svc.event(SipEvent::Message { id, reg, message: incoming_message(req) });
    }

    /// A CANCEL matching the INVITE transaction `invite` (§9.2): true if it was an incoming
    /// call's.
    fn inbound_cancel(&mut self, invite: &ServerKey, now: Instant) -> bool {
        let id = self.legs.iter().find(|(_, l)| matches!(l, Leg::In(l) if l.is_invite(invite))).map(|(id, _)| *id);
        let Some(id) = id else { return false };
        self.with_leg(id, |leg, svc| {
            if let Leg::In(l) = leg {
                l.on_cancel(svc, now);
            }
        });
        true
    }

    /// The leg whose dialog `req` is in (outgoing calls first), with the peer's tag and whether
    /// the call is answered.
    fn leg_of_request(&self, req: &Request) -> Option<(LegId, (String, bool))> {
        let find = |outgoing: bool| {
            self.legs
                .iter()
                .filter(|(_, l)| l.is_outgoing() == outgoing)
                .find_map(|(id, l)| l.of_request(req).map(|m| (*id, m)))
        };
        find(true).or_else(|| find(false))
    }

    /// After answering an in-dialog request: a BYE ends the call (an incoming call with the
    /// Call-ID first, else an outgoing one).
    fn after_dialog_request(&mut self, req: &Request, now: Instant, rng: &mut Rng) {
        if req.method != Method::Bye {
            return;
        }
        let Ok(call_id) = req.headers.call_id() else { return };
        let inbound = self.legs.iter().find(|(_, l)| matches!(l, Leg::In(l) if l.has_call_id(call_id)));
        let outgoing = || self.legs.iter().find(|(_, l)| matches!(l, Leg::Out(l) if l.call_id() == call_id));
        let Some(id) = inbound.or_else(outgoing).map(|(id, _)| *id) else { return };
        self.with_leg(id, |leg, svc| leg.on_remote_bye(svc, now, rng));
    }

    /// An ACK outside any transaction: the ACK of a 2xx (§13.3.1.4) — to a re-INVITE of the
    /// peer's (outgoing calls first), or to an incoming call's INVITE.
    fn dialog_ack(&mut self, req: &Request) {
        let call_id = req.headers.call_id().unwrap_or_default();
        let seq = req.headers.cseq().map(|c| c.seq).unwrap_or_default();
        let mut find = |outgoing: bool| {
            self.legs
                .iter_mut()
                .filter(|(_, l)| l.is_outgoing() == outgoing)
                .find_map(|(id, l)| l.acks_reoffer(call_id, seq).then_some(*id))
        };
        if let Some(id) = find(true).or_else(|| find(false)) {
            self.with_leg(id, |leg, svc| leg.on_reoffer_ack(svc, id, req));
            return;
        }
        let id = self.legs.iter().find(|(_, l)| matches!(l, Leg::In(l) if l.has_call_id(call_id))).map(|(id, _)| *id);
        if let Some(id) = id {
            self.with_leg(id, |leg, svc| {
                if let Leg::In(l) = leg {
                    l.on_ack(svc, req);
                }
            });
        }
    }

    // ===== Timers =====

    /// Runs every due timer.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut Rng) {
        while let Some(timer) = self.svc.pop_expired(now) {
            match timer {
                SipTimer::Client(branch) => self.client_timer(branch, now, rng),
                SipTimer::Server(skey) => self.server_timer(skey, now),
                SipTimer::Leg(id) => {
                    self.with_leg(id, |leg, svc| {
                        if let Leg::In(l) = leg {
                            l.on_timer(svc, now, rng);
                        }
                    });
                }
                SipTimer::Reoffer(id) => {
                    self.with_leg(id, |leg, svc| leg.reoffer_timer(svc, id, now, rng));
                }
                SipTimer::Reliable(id) => {
                    self.with_leg(id, |leg, svc| {
                        if let Leg::In(l) = leg {
                            l.reliable_timer(svc, now);
                        }
                    });
                }
                SipTimer::Glare(id) => {
                    self.with_leg(id, |leg, svc| leg.glare_timer(svc, id, now, rng));
                }
                SipTimer::Reg(id) => {
                    self.with_reg(id, |r, svc| r.on_timer(svc, now, rng));
                }
                SipTimer::MessageAnswer(id) => {
                    if let Some((key, req)) = self.inbox.remove(&id) {
                        log::info!("MESSAGE {} not answered in time; 480", key.branch);
                        self.svc.respond(&key, &req, 480, "Temporarily Unavailable", now);
                    }
                }
            }
        }
        let mut out = Vec::new();
        self.svc.transports.close_idle(now, &mut out);
        self.svc.emit(out);
    }

    fn client_timer(&mut self, branch: String, now: Instant, rng: &mut Rng) {
        let Some(c) = self.svc.clients.get_mut(&branch) else { return };
        let mut events = Vec::new();
        c.tx.on_timeout(now, &mut events);
        let (peer, bytes, owner) = (c.peer, c.bytes.clone(), c.owner);
        let deadline = c.tx.next_deadline();
        for ev in events {
            match ev {
                ClientEvent::Retransmit => self.svc.transmit(peer, bytes.clone(), now),
                ClientEvent::TimedOut => {
                    self.svc.clients.remove(&branch);
                    if let Some(conn) = peer.conn {
                        self.svc.transports.retain(conn, false, now);
                    }
                    self.client_failed(owner, &branch, 408, "Request Timeout", now, rng);
                    return;
                }
                ClientEvent::Terminated => {
                    self.svc.clients.remove(&branch);
                    if let Some(conn) = peer.conn {
                        self.svc.transports.retain(conn, false, now);
                    }
                    return;
                }
            }
        }
        self.svc.arm(SipTimer::Client(branch), deadline);
    }

    fn server_timer(&mut self, key: ServerKey, now: Instant) {
        let Some(s) = self.svc.servers.get_mut(&key) else { return };
        let mut events = Vec::new();
        s.tx.on_timeout(now, &mut events);
        let peer = s.peer;
        let last = s.tx.last_response().map(<[u8]>::to_vec);
        let deadline = s.tx.next_deadline();
        for ev in events {
            match ev {
                ServerEvent::Retransmit => {
                    if let Some(b) = last.clone() {
                        self.svc.transmit(peer, b, now);
                    }
                }
                ServerEvent::AckTimeout => log::debug!("no ACK for our final response ({})", key.branch),
                ServerEvent::Terminated => {
                    self.svc.servers.remove(&key);
                    return;
                }
            }
        }
        self.svc.arm(SipTimer::Server(key), deadline);
    }
}

/// A request to answer, and what answering it at once needs.
struct Answer<'a> {
    key: &'a ServerKey,
    req: &'a Request,
    peer: Peer,
    merge_key: MergeKey,
}
