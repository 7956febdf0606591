//! Incoming calls in the SIP stack: the INVITE server session ([`super::invite::UasInvite`])
//! wired to its server transaction and dialog — 180 Ringing at once, the 2xx with our SDP
//! retransmitted until the ACK (§13.3.1.4), decline with a final error, CANCEL → 200 + 487
//! (§9.2), BYE both ways.

use super::calls::LegId;
use super::dialog::Dialog;
use super::indialog::DialogCtx;
use super::invite::{CallProgress, UasAction, UasInvite};
use super::message::{HeaderName, Method, Request};
use super::midcall::MidCall;
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
    /// Extra headers of our 2xx (sylkRTC `session-answer` `headers`).
    answer_headers: Vec<(String, String)>,
    /// Our Contact URI.
    pub(super) contact: String,
    /// The registration whose Contact the INVITE reached (its account's credentials answer
    /// challenges to our re-INVITE).
    reg: RegId,
    /// INFO, re-INVITE and UPDATE once answered.
    pub(super) mid: MidCall,
}

impl SipStack {
    /// The dialogs of the incoming legs that have one (see `dialog_ids_for_test`).
    pub(super) fn inbound_dialog_ids_for_test(&self) -> Vec<(LegId, super::dialog::DialogId)> {
        self.inbound.iter().filter_map(|(id, l)| l.dialog.as_ref().map(|d| (*id, d.id.clone()))).collect()
    }

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
                answer_headers: Vec::new(),
                contact: contact.clone(),
                reg,
                mid: MidCall::default(),
            },
        );
        // §13.3.1.1: ring while the user decides.
        let extra = [(HeaderName::Contact, format!("<{contact}>"))];
        self.respond_full(key, req, 180, "Ringing", &extra, &[], now);
        self.events.push_back(SipEvent::Incoming { leg: id, reg, call });
    }

    /// Answers an incoming call with `sdp` (200 OK, retransmitted until the ACK).
    pub fn answer(&mut self, id: LegId, sdp: Vec<u8>, now: Instant) {
        self.answer_with_headers(id, sdp, Vec::new(), now);
    }

    /// [`SipStack::answer`] with extra headers in the 2xx (and its retransmissions). Names must
    /// be tokens (the caller filters them); values lose CR/LF when written.
    pub fn answer_with_headers(&mut self, id: LegId, sdp: Vec<u8>, headers: Vec<(String, String)>, now: Instant) {
        let Some(leg) = self.inbound.get_mut(&id) else { return };
        let reliable = leg.peer.transport.reliable();
        leg.answer = sdp;
        leg.answer_headers = headers;
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
                        extra.extend(leg.answer_headers.iter().map(|(n, v)| (HeaderName::parse(n), v.clone())));
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
                    for (name, value) in &leg.answer_headers {
                        super::stack::put(&mut resp.headers, HeaderName::parse(name), value);
                    }
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
                    self.inbound_send_bye(id, now, rng.as_deref_mut());
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

    /// Sends BYE in the incoming call's dialog; the far end answers it, and its response needs
    /// no owner.
    pub(super) fn inbound_send_bye(&mut self, id: LegId, now: Instant, rng: Option<&mut Rng>) {
        let Some(leg) = self.inbound.get(&id) else { return };
        let Some(mut dialog) = leg.dialog.clone() else { return };
        let peer = leg.peer;
        let (vhost, vport) = self.advertised(peer.transport);
        let tag = match rng {
            Some(r) => r.hex(20),
            None => to_tag_for(&leg.key),
        };
        let branch = format!("z9hG4bK{tag}");
        let via = super::stack::via_value(peer.transport, &vhost, vport, &branch);
        let bye = dialog.request(Method::Bye, &via, None, None);
        if let Some(l) = self.inbound.get_mut(&id) {
            l.dialog = Some(dialog);
        }
        self.transmit(peer, bye.to_bytes(), now);
    }

    fn finish_inbound(&mut self, id: LegId, reason: &str) {
        if self.remove_inbound(id) {
            self.events.push_back(SipEvent::Call { leg: id, progress: CallProgress::Ended { reason: reason.into() } });
        }
    }

    pub(super) fn remove_inbound(&mut self, id: LegId) -> bool {
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

    /// The incoming call whose dialog `req` is in: the leg, the peer's tag, and whether the
    /// call is answered (2xx sent).
    pub(super) fn inbound_of_request(&self, req: &Request) -> Option<(LegId, String, bool)> {
        let to_tag = req.headers.to_header().ok()?.tag()?.to_string();
        let call_id = req.headers.call_id().ok()?;
        let (id, leg) = self
            .inbound
            .iter()
            .find(|(_, l)| l.dialog.as_ref().is_some_and(|d| d.id.call_id == call_id && d.id.local_tag == to_tag))?;
        let remote_tag = leg.dialog.as_ref().map(|d| d.id.remote_tag.clone()).unwrap_or_default();
        Some((*id, remote_tag, leg.uas.is_established()))
    }

    /// The incoming call's dialog.
    pub(super) fn inbound_dialog_mut(&mut self, id: LegId) -> Option<&mut Dialog> {
        self.inbound.get_mut(&id)?.dialog.as_mut()
    }

    /// Whether the incoming call's 2xx was ACKed (its INVITE transaction is over, §14.1).
    pub(super) fn inbound_confirmed(&self, id: LegId) -> bool {
        self.inbound.get(&id).is_some_and(|l| l.uas.is_confirmed())
    }

    /// The answered dialog of an incoming call, and what requests in it need.
    pub(super) fn inbound_dialog_ctx(&self, id: LegId) -> Option<DialogCtx> {
        let leg = self.inbound.get(&id).filter(|l| l.uas.is_established())?;
        let identity = self.reg_identity(leg.reg).cloned();
        Some(DialogCtx {
            dialog: leg.dialog.clone()?,
            peer: leg.peer,
            name: leg.peer.addr.ip().to_string(),
            contact: leg.contact.clone(),
            user_agent: identity
                .as_ref()
                .and_then(|i| i.user_agent.clone())
                .unwrap_or_else(|| self.cfg.user_agent.clone()),
            identity,
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
