//! Incoming calls in the SIP stack: the INVITE server session ([`super::invite::UasInvite`])
//! wired to its server transaction and dialog — 180 Ringing at once, the 2xx with our SDP
//! retransmitted until the ACK (§13.3.1.4), decline with a final error, CANCEL → 200 + 487
//! (§9.2), BYE both ways.

use super::calls::LegId;
use super::dialog::Dialog;
use super::invite::{CallProgress, UasAction, UasInvite};
use super::message::{HeaderName, Method, Request};
use super::stack::{to_tag_for, RegId, ServerKey, SipEvent, SipStack, SipTimer, ALLOW};
use super::target::Transport;
use super::transport::Peer;
use crate::rng::Rng;
use std::time::Instant;

/// What the transaction user learns of an incoming call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCall {
    /// The caller's URI without scheme (`bob@example.com`).
    pub from_uri: String,
    /// The caller's display name.
    pub display_name: Option<String>,
    /// The SIP Call-ID.
    pub call_id: String,
    /// The SDP offer (empty for a late-offer INVITE).
    pub sdp: Vec<u8>,
    /// Every header, for the TU's `incoming_header_prefixes` filter.
    pub headers: Vec<(String, String)>,
}

/// One incoming call.
pub(super) struct InLeg {
    uas: UasInvite,
    invite: Request,
    key: ServerKey,
    peer: Peer,
    dialog: Option<Dialog>,
    /// Our answer's SDP, kept for 2xx retransmissions.
    answer: Vec<u8>,
    contact: String,
}

impl SipStack {
    /// An INVITE arrived for registration `reg`'s Contact: ring, and tell the TU.
    pub(super) fn inbound_invite(&mut self, reg: RegId, req: &Request, peer: Peer, key: &ServerKey, now: Instant) {
        let id = LegId(self.next_leg);
        self.next_leg += 1;
        let (host, port) = self.advertised(peer.transport);
        let user = match &req.uri {
            super::uri::Uri::Sip(u) => u.user.clone().unwrap_or_default(),
            _ => String::new(),
        };
        let mut contact = format!("sip:{user}@{host}:{port}");
        if peer.transport != Transport::Udp {
            contact.push_str(&format!(";transport={}", peer.transport.param()));
        }
        let dialog = Dialog::uas(req, &to_tag_for(key)).ok();
        let from = req.headers.from_header().ok();
        let call = IncomingCall {
            from_uri: match from.as_ref().map(|f| &f.uri) {
                Some(super::uri::Uri::Sip(u)) => {
                    let mut s = u.host.to_string();
                    if let Some(user) = &u.user {
                        s = format!("{user}@{s}");
                    }
                    s
                }
                Some(other) => other.to_string(),
                None => String::new(),
            },
            display_name: from.and_then(|f| f.display_name),
            call_id: req.headers.call_id().unwrap_or_default().to_string(),
            sdp: req.body.clone(),
            headers: req.headers.iter().map(|h| (h.name.canonical().to_string(), h.value_str().into_owned())).collect(),
        };
        self.inbound.insert(
            id,
            InLeg {
                uas: UasInvite::new(self.timers),
                invite: req.clone(),
                key: key.clone(),
                peer,
                dialog,
                answer: Vec::new(),
                contact: contact.clone(),
            },
        );
        // §13.3.1.1: ring while the user decides.
        let extra = [(HeaderName::Contact, format!("<{contact}>"))];
        self.respond_full(key, req, 180, "Ringing", &extra, &[], now);
        self.events.push_back(SipEvent::Incoming { leg: id, reg, call });
    }

    /// Answers an incoming call with `sdp` (200 OK, retransmitted until the ACK).
    pub fn answer(&mut self, id: LegId, sdp: Vec<u8>, now: Instant) {
        let Some(leg) = self.inbound.get_mut(&id) else { return };
        let reliable = leg.peer.transport.reliable();
        leg.answer = sdp;
        let actions = leg.uas.answer(now, reliable);
        self.inbound_actions(id, actions, now);
    }

    /// Declines an incoming call that is still ringing (486 by default, 603 configurable).
    pub fn decline(&mut self, id: LegId, code: u16, reason: &str, now: Instant) {
        let Some(leg) = self.inbound.get_mut(&id) else { return };
        let actions = leg.uas.decline(code, reason);
        self.inbound_actions(id, actions, now);
    }

    /// Whether `id` is an incoming call still ringing.
    pub fn is_ringing(&self, id: LegId) -> bool {
        self.inbound.get(&id).is_some_and(|l| l.uas.is_offered())
    }

    pub(super) fn inbound_hang_up(&mut self, id: LegId, now: Instant, rng: &mut Rng) -> bool {
        let Some(leg) = self.inbound.get_mut(&id) else { return false };
        let actions = leg.uas.hang_up();
        self.inbound_actions_rng(id, actions, now, Some(rng));
        true
    }

    fn inbound_actions(&mut self, id: LegId, actions: Vec<UasAction>, now: Instant) {
        self.inbound_actions_rng(id, actions, now, None);
    }

    fn inbound_actions_rng(&mut self, id: LegId, actions: Vec<UasAction>, now: Instant, mut rng: Option<&mut Rng>) {
        for action in actions {
            let Some(leg) = self.inbound.get(&id) else { return };
            match action {
                UasAction::SendFinal { code } => {
                    let (invite, key, contact) = (leg.invite.clone(), leg.key.clone(), leg.contact.clone());
                    let mut extra = vec![(HeaderName::Contact, format!("<{contact}>"))];
                    let body = if code < 300 { leg.answer.clone() } else { Vec::new() };
                    if code < 300 {
                        extra.push((HeaderName::Allow, ALLOW.to_string()));
                        extra.push((HeaderName::ContentType, "application/sdp".to_string()));
                    }
                    let reason = super::message::default_reason(code);
                    self.respond_full(&key, &invite, code, reason, &extra, &body, now);
                    self.arm_inbound(id);
                }
                UasAction::Retransmit2xx => {
                    // §13.3.1.4: the same 2xx again (the transaction is in Accepted: resend by hand).
                    let (invite, key, contact, body) =
                        (leg.invite.clone(), leg.key.clone(), leg.contact.clone(), leg.answer.clone());
                    let mut resp = super::message::Response::for_request(&invite, 200, "OK");
                    let to = resp.headers.get(&HeaderName::To).map(|h| h.value_str().into_owned()).unwrap_or_default();
                    resp.headers.set(HeaderName::To, format!("{to};tag={}", to_tag_for(&key)).into_bytes());
                    super::stack::put(&mut resp.headers, HeaderName::Contact, &format!("<{contact}>"));
                    super::stack::put(&mut resp.headers, HeaderName::Allow, ALLOW);
                    super::stack::put(&mut resp.headers, HeaderName::ContentType, "application/sdp");
                    resp.body = body;
                    let peer = leg.peer;
                    self.transmit(peer, resp.to_bytes(), now);
                    self.arm_inbound(id);
                }
                UasAction::CancelAccepted => {
                    let (invite, key) = (leg.invite.clone(), leg.key.clone());
                    self.respond_full(&key, &invite, 487, "Request Terminated", &[], &[], now);
                }
                UasAction::Bye => {
                    let Some(mut dialog) = leg.dialog.clone() else { continue };
                    let peer = Peer { conn: leg.peer.conn, ..leg.peer };
                    let (vhost, vport) = self.advertised(peer.transport);
                    let tag = match rng.as_deref_mut() {
                        Some(r) => r.hex(20),
                        None => to_tag_for(&leg.key),
                    };
                    let branch = format!("z9hG4bK{tag}");
                    let via = super::stack::via_value(peer.transport, &vhost, vport, &branch);
                    let bye = dialog.request(Method::Bye, &via, None, None);
                    if let Some(l) = self.inbound.get_mut(&id) {
                        l.dialog = Some(dialog);
                    }
                    // The far end answers the BYE; its response needs no owner.
                    self.transmit(peer, bye.to_bytes(), now);
                    // The call is over for us once the BYE is out.
                    self.finish_inbound(id, "200 OK");
                }
                UasAction::Report(progress) => {
                    let ended = matches!(progress, CallProgress::Ended { .. });
                    self.events.push_back(SipEvent::Call { leg: id, progress });
                    if ended {
                        self.remove_inbound(id);
                    }
                }
            }
        }
    }

    fn finish_inbound(&mut self, id: LegId, reason: &str) {
        if self.remove_inbound(id) {
            self.events.push_back(SipEvent::Call { leg: id, progress: CallProgress::Ended { reason: reason.into() } });
        }
    }

    fn remove_inbound(&mut self, id: LegId) -> bool {
        self.arm(SipTimer::Leg(id), None);
        self.inbound.remove(&id).is_some()
    }

    fn arm_inbound(&mut self, id: LegId) {
        let at = self.inbound.get(&id).and_then(|l| l.uas.next_deadline());
        self.arm(SipTimer::Leg(id), at);
    }

    pub(super) fn inbound_timer(&mut self, id: LegId, now: Instant, rng: &mut Rng) {
        let Some(leg) = self.inbound.get_mut(&id) else { return };
        let actions = leg.uas.on_timeout(now);
        self.inbound_actions_rng(id, actions, now, Some(rng));
        self.arm_inbound(id);
    }

    /// A CANCEL matching the INVITE transaction `invite` (§9.2): true if it was ours.
    pub(super) fn inbound_cancel(&mut self, invite: &ServerKey, now: Instant) -> bool {
        let Some(id) = self.inbound.iter().find(|(_, l)| &l.key == invite).map(|(id, _)| *id) else {
            return false;
        };
        let actions = self.inbound.get_mut(&id).map(|l| l.uas.on_cancel()).unwrap_or_default();
        self.inbound_actions(id, actions, now);
        true
    }

    /// An ACK outside any transaction: the ACK of our 2xx.
    pub(super) fn inbound_ack(&mut self, req: &Request) {
        let Ok(call_id) = req.headers.call_id() else { return };
        let id = self.inbound.iter().find(|(_, l)| l.dialog.as_ref().is_some_and(|d| d.id.call_id == call_id));
        if let Some((id, _)) = id {
            let id = *id;
            if let Some(l) = self.inbound.get_mut(&id) {
                l.uas.on_ack();
            }
            self.arm_inbound(id);
        }
    }

    /// The answer to a request inside an incoming call's dialog, if it belongs to one.
    pub(super) fn inbound_request(&mut self, req: &Request) -> Option<(u16, &'static str)> {
        let to_tag = req.headers.to_header().ok()?.tag()?.to_string();
        let call_id = req.headers.call_id().ok()?.to_string();
        let cseq = req.headers.cseq().ok()?.seq;
        let leg = self
            .inbound
            .values_mut()
            .find(|l| l.dialog.as_ref().is_some_and(|d| d.id.call_id == call_id && d.id.local_tag == to_tag))?;
        let dialog = leg.dialog.as_mut()?;
        if !dialog.accept_remote_cseq(cseq) {
            return Some((500, "Server Internal Error"));
        }
        Some(match req.method {
            Method::Bye | Method::Info | Method::Options => (200, "OK"),
            Method::Invite | Method::Update => (488, "Not Acceptable Here"),
            _ => (405, "Method Not Allowed"),
        })
    }

    /// After answering a BYE inside an incoming call: the call ends.
    pub(super) fn inbound_after_bye(&mut self, req: &Request, now: Instant) -> bool {
        let Ok(call_id) = req.headers.call_id() else { return false };
        let id = self.inbound.iter().find(|(_, l)| l.dialog.as_ref().is_some_and(|d| d.id.call_id == call_id));
        let Some((id, _)) = id else { return false };
        let id = *id;
        let actions = self.inbound.get_mut(&id).map(|l| l.uas.on_remote_bye()).unwrap_or_default();
        self.inbound_actions(id, actions, now);
        true
    }
}
