//! An incoming call leg: the INVITE server session ([`UasInvite`]) wired to its server
//! transaction and dialog through `Services` — 180 Ringing at once, the 2xx with our SDP
//! retransmitted until the ACK (§13.3.1.4), decline with a final error, CANCEL → 200 + 487
//! (§9.2), BYE both ways. When the INVITE allows it (`100rel`), the 180 is reliable and
//! retransmitted until its PRACK (RFC 3262 §3). Requests inside the answered dialog are `leg`'s.

use super::build::{contact_uri, put, via_value, ALLOW};
use super::dialog::Dialog;
pub use super::events::IncomingCall;
use super::events::{LegId, RegId, SipEvent};
use super::identity::SipIdentity;
use super::invite::{CallProgress, UasAction, UasInvite};
use super::message::{default_reason, HeaderName, Method, Request, Response};
use super::midcall::{MidCall, Sent2xx, Tick};
use super::reliable::{self, PrackVerdict, ReliableUas};
use super::services::{to_tag_for, DialogCtx, ServerKey, Services, SipTimer};
use super::transport::Peer;
use super::uri::Uri;
use crate::rng::Rng;
use std::time::Instant;

/// One incoming call.
pub(super) struct InLeg {
    id: LegId,
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
    contact: String,
    /// The registration whose Contact the INVITE reached.
    reg: RegId,
    /// That registration's account while it lives (its credentials answer challenges to our
    /// re-INVITE); cleared when the registration goes.
    identity: Option<SipIdentity>,
    /// INFO, re-INVITE and UPDATE once answered.
    pub(super) mid: MidCall,
    /// Reliable provisionals (RFC 3262), when the INVITE allowed them.
    reliable: Option<ReliableUas>,
    /// Over: the stack drops it.
    gone: bool,
}

impl InLeg {
    /// An INVITE arrived for registration `reg`'s Contact (server transaction `key`): rings,
    /// and tells the TU. `first_rseq` is given when the INVITE allows reliable provisionals
    /// (`Supported`/`Require: 100rel`): the 180 is then reliable, with that RSeq.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        svc: &mut Services,
        id: LegId,
        reg: RegId,
        identity: SipIdentity,
        req: &Request,
        peer: Peer,
        key: &ServerKey,
        now: Instant,
        first_rseq: Option<u32>,
    ) -> Self {
        let (host, port) = svc.advertised(peer.transport);
        let user = match &req.uri {
            Uri::Sip(u) => u.user.clone().unwrap_or_default(),
            _ => String::new(),
        };
        let contact = contact_uri(&user, &host, port, peer.transport);
        let dialog = Dialog::uas(req, &to_tag_for(key)).ok();
        let from = req.headers.from_header().ok();
        let call = IncomingCall {
            from_uri: match from.as_ref().map(|f| &f.uri) {
                Some(Uri::Sip(u)) => {
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
        let invite_cseq = req.headers.cseq().map(|c| c.seq).unwrap_or_default();
        let mut leg = InLeg {
            id,
            uas: UasInvite::new(svc.timers),
            invite: req.clone(),
            key: key.clone(),
            peer,
            dialog,
            answer: Vec::new(),
            answer_headers: Vec::new(),
            contact: contact.clone(),
            reg,
            identity: Some(identity),
            mid: MidCall::default(),
            reliable: first_rseq.map(|first| ReliableUas::new(invite_cseq, first)),
            gone: false,
        };
        // §13.3.1.1: ring while the user decides; reliably if the caller allows (RFC 3262 §3).
        let mut extra = record_routes(req);
        extra.push((HeaderName::Contact, format!("<{contact}>")));
        let rseq = leg.reliable.as_mut().and_then(ReliableUas::next_rseq);
        if let Some(rseq) = rseq {
            extra.push((HeaderName::Require, reliable::TAG.to_string()));
            extra.push((HeaderName::RSeq, rseq.to_string()));
        }
        let sent = svc.respond_kept(key, req, 180, "Ringing", &extra, &[], now);
        if let (Some(r), Some((dest, bytes))) = (leg.reliable.as_mut(), sent.filter(|_| rseq.is_some())) {
            r.sent(Sent2xx::new(bytes, dest, now, svc.timers));
            leg.arm_reliable(svc);
        }
        svc.event(SipEvent::Incoming { leg: id, reg, call });
        leg
    }

    /// A PRACK in the early dialog (RFC 3262 §3): 200 if it acknowledges one of our reliable
    /// provisionals (no more retransmissions of it), else 481.
    pub(super) fn on_prack(&mut self, svc: &mut Services, req: &Request, key: &ServerKey, now: Instant) {
        let verdict = match self.reliable.as_mut() {
            Some(r) => r.on_prack(reliable::rack(&req.headers)),
            None => PrackVerdict::NoMatch,
        };
        match verdict {
            PrackVerdict::Acknowledged => svc.respond(key, req, 200, "OK", now),
            PrackVerdict::NoMatch => svc.respond(key, req, 481, "Call/Transaction Does Not Exist", now),
        }
        self.arm_reliable(svc);
    }

    /// Its reliable provisional's timer ([`SipTimer::Reliable`]) fired: resend it, or after
    /// 64·T1 without PRACK reject the INVITE with a 5xx (RFC 3262 §3).
    pub(super) fn reliable_timer(&mut self, svc: &mut Services, now: Instant) {
        let Some(r) = self.reliable.as_mut() else { return };
        let resend = r.unacked().map(|s| (s.dest, s.bytes.clone()));
        match r.on_timeout(now) {
            Tick::Nothing => {}
            Tick::Resend => {
                if let Some((dest, bytes)) = resend {
                    svc.transmit(dest, bytes, now);
                }
            }
            Tick::GiveUp => {
                log::info!("call {:?}: no PRACK for our reliable 180; 504", self.id);
                let actions = self.uas.decline(504, "Server Time-out");
                self.actions(svc, actions, now, None);
            }
        }
        self.arm_reliable(svc);
    }

    fn arm_reliable(&self, svc: &mut Services) {
        let at = if self.gone { None } else { self.reliable.as_ref().and_then(ReliableUas::next_deadline) };
        svc.arm(SipTimer::Reliable(self.id), at);
    }

    /// Whether the call is over (the stack forgets it).
    pub(super) fn is_gone(&self) -> bool {
        self.gone
    }

    /// The dialog, once there is one.
    pub(super) fn dialog(&self) -> Option<&Dialog> {
        self.dialog.as_ref()
    }

    /// Registration `reg` went: its credentials are no longer ours to use.
    pub(super) fn registration_gone(&mut self, reg: RegId) {
        if self.reg == reg {
            self.identity = None;
        }
    }

    /// Answers with `sdp` and extra 2xx headers (200 OK, retransmitted until the ACK).
    pub(super) fn answer(&mut self, svc: &mut Services, sdp: Vec<u8>, headers: Vec<(String, String)>, now: Instant) {
        let reliable = self.peer.transport.reliable();
        self.answer = sdp;
        self.answer_headers = headers;
        let actions = self.uas.answer(now, reliable);
        self.actions(svc, actions, now, None);
    }

    /// Declines while ringing.
    pub(super) fn decline(&mut self, svc: &mut Services, code: u16, reason: &str, now: Instant) {
        let actions = self.uas.decline(code, reason);
        self.actions(svc, actions, now, None);
    }

    /// Whether it is still ringing.
    pub(super) fn is_ringing(&self) -> bool {
        self.uas.is_offered()
    }

    /// Hangs up (decline while ringing, BYE once answered).
    pub(super) fn hang_up(&mut self, svc: &mut Services, now: Instant, rng: &mut Rng) {
        let actions = self.uas.hang_up();
        self.actions(svc, actions, now, Some(rng));
    }

    /// Its timer ([`SipTimer::Leg`]) fired.
    pub(super) fn on_timer(&mut self, svc: &mut Services, now: Instant, rng: &mut Rng) {
        let actions = self.uas.on_timeout(now);
        self.actions(svc, actions, now, Some(rng));
        self.arm(svc);
    }

    /// Whether a CANCEL for the INVITE transaction `invite` is for this call.
    pub(super) fn is_invite(&self, invite: &ServerKey) -> bool {
        &self.key == invite
    }

    /// A CANCEL for its INVITE (§9.2).
    pub(super) fn on_cancel(&mut self, svc: &mut Services, now: Instant) {
        let actions = self.uas.on_cancel();
        self.actions(svc, actions, now, None);
    }

    /// Whether its dialog has Call-ID `call_id`.
    pub(super) fn has_call_id(&self, call_id: &str) -> bool {
        self.dialog.as_ref().is_some_and(|d| d.id.call_id == call_id)
    }

    /// The ACK of our 2xx. For an INVITE without SDP (late offer, §13.2.1) our 2xx offered
    /// and the ACK answers: its SDP is reported as [`SipEvent::ReofferAck`].
    pub(super) fn on_ack(&mut self, svc: &mut Services, ack: &Request) {
        let was = self.uas.is_confirmed();
        self.uas.on_ack();
        if !was && self.uas.is_confirmed() && self.invite.body.is_empty() && !ack.body.is_empty() {
            svc.event(SipEvent::ReofferAck { leg: self.id, sdp: ack.body.clone() });
        }
        self.arm(svc);
    }

    /// The peer's BYE was answered: the call ends.
    pub(super) fn on_remote_bye(&mut self, svc: &mut Services, now: Instant) {
        let actions = self.uas.on_remote_bye();
        self.actions(svc, actions, now, None);
    }

    fn actions(&mut self, svc: &mut Services, actions: Vec<UasAction>, now: Instant, mut rng: Option<&mut Rng>) {
        for action in actions {
            if self.gone {
                return;
            }
            if matches!(action, UasAction::SendFinal { .. } | UasAction::CancelAccepted) {
                // RFC 3262 §3: a final response ends the reliable provisional's retransmissions.
                if let Some(r) = self.reliable.as_mut() {
                    r.stop();
                }
                self.arm_reliable(svc);
            }
            match action {
                UasAction::SendFinal { code } => {
                    let mut extra = if code < 300 { record_routes(&self.invite) } else { Vec::new() };
                    extra.push((HeaderName::Contact, format!("<{}>", self.contact)));
                    let body = if code < 300 { self.answer.clone() } else { Vec::new() };
                    if code < 300 {
                        extra.push((HeaderName::Allow, ALLOW.to_string()));
                        extra.push((HeaderName::ContentType, "application/sdp".to_string()));
                        extra.extend(self.answer_headers.iter().map(|(n, v)| (HeaderName::parse(n), v.clone())));
                    }
                    let reason = default_reason(code);
                    svc.respond_full(&self.key, &self.invite, code, reason, &extra, &body, now);
                    self.arm(svc);
                }
                UasAction::Retransmit2xx => {
                    // §13.3.1.4: the same 2xx again (the transaction is in Accepted: resend by hand).
                    let mut resp = Response::for_request(&self.invite, 200, "OK");
                    let to = resp.headers.get(&HeaderName::To).map(|h| h.value_str().into_owned()).unwrap_or_default();
                    resp.headers.set(HeaderName::To, format!("{to};tag={}", to_tag_for(&self.key)).into_bytes());
                    for (name, value) in record_routes(&self.invite) {
                        put(&mut resp.headers, name, &value);
                    }
                    put(&mut resp.headers, HeaderName::Contact, &format!("<{}>", self.contact));
                    put(&mut resp.headers, HeaderName::Allow, ALLOW);
                    put(&mut resp.headers, HeaderName::ContentType, "application/sdp");
                    for (name, value) in &self.answer_headers {
                        put(&mut resp.headers, HeaderName::parse(name), value);
                    }
                    resp.body = self.answer.clone();
                    svc.transmit(self.peer, resp.to_bytes(), now);
                    self.arm(svc);
                }
                UasAction::CancelAccepted => {
                    svc.respond_full(&self.key, &self.invite, 487, "Request Terminated", &[], &[], now);
                }
                UasAction::Bye => {
                    self.send_bye(svc, now, rng.as_deref_mut());
                    // The call is over for us once the BYE is out.
                    self.finish(svc, "200 OK");
                }
                UasAction::Report(progress) => {
                    let ended = matches!(progress, CallProgress::Ended { .. });
                    svc.event(SipEvent::Call { leg: self.id, progress });
                    if ended {
                        self.remove(svc);
                    }
                }
            }
        }
    }

    /// Sends BYE in the dialog; the far end answers it, and its response needs no owner.
    pub(super) fn send_bye(&mut self, svc: &mut Services, now: Instant, rng: Option<&mut Rng>) {
        let Some(dialog) = self.dialog.as_mut() else { return };
        let (vhost, vport) = svc.advertised(self.peer.transport);
        let tag = match rng {
            Some(r) => r.hex(20),
            None => to_tag_for(&self.key),
        };
        let branch = format!("z9hG4bK{tag}");
        let via = via_value(self.peer.transport, &vhost, vport, &branch);
        let bye = dialog.request(Method::Bye, &via, None, None);
        svc.transmit(self.peer, bye.to_bytes(), now);
    }

    fn finish(&mut self, svc: &mut Services, reason: &str) {
        if self.remove(svc) {
            svc.event(SipEvent::Call { leg: self.id, progress: CallProgress::Ended { reason: reason.into() } });
        }
    }

    /// Over (its timer stopped); false if it already was.
    pub(super) fn remove(&mut self, svc: &mut Services) -> bool {
        svc.arm(SipTimer::Leg(self.id), None);
        svc.arm(SipTimer::Reliable(self.id), None);
        !std::mem::replace(&mut self.gone, true)
    }

    fn arm(&self, svc: &mut Services) {
        let at = if self.gone { None } else { self.uas.next_deadline() };
        svc.arm(SipTimer::Leg(self.id), at);
    }

    /// Whether `req` is in this call's dialog: the peer's tag, and whether the call is answered
    /// (2xx sent).
    pub(super) fn of_request(&self, req: &Request) -> Option<(String, bool)> {
        let to_tag = req.headers.to_header().ok()?.tag()?.to_string();
        let call_id = req.headers.call_id().ok()?;
        let d = self.dialog.as_ref().filter(|d| d.id.call_id == call_id && d.id.local_tag == to_tag)?;
        Some((d.id.remote_tag.clone(), self.uas.is_established()))
    }

    /// The dialog.
    pub(super) fn dialog_mut(&mut self) -> Option<&mut Dialog> {
        self.dialog.as_mut()
    }

    /// Whether our 2xx was ACKed (its INVITE transaction is over, §14.1).
    pub(super) fn confirmed(&self) -> bool {
        self.uas.is_confirmed()
    }

    /// The answered dialog, and what requests in it need.
    pub(super) fn dialog_ctx(&self, svc: &Services) -> Option<DialogCtx> {
        if !self.uas.is_established() {
            return None;
        }
        Some(DialogCtx {
            dialog: self.dialog.clone()?,
            peer: self.peer,
            name: self.peer.addr.ip().to_string(),
            contact: self.contact.clone(),
            user_agent: svc.user_agent(self.identity.as_ref()),
            identity: self.identity.clone(),
        })
    }

    /// Our Contact URI in this call.
    pub(super) fn contact(&self) -> String {
        self.contact.clone()
    }
}

/// §12.1.1: the Record-Route headers of the INVITE, in order, for every response that makes a
/// dialog (the 180 and the 2xx), so that the caller's requests in the dialog take the proxies'
/// path.
fn record_routes(invite: &Request) -> Vec<(HeaderName, String)> {
    invite
        .headers
        .get_all(&HeaderName::RecordRoute)
        .map(|h| (HeaderName::RecordRoute, h.value_str().into_owned()))
        .collect()
}
