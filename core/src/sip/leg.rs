//! A call leg, outgoing ([`OutLeg`]) or incoming ([`InLeg`]), and the requests inside its
//! established dialog, either way (RFC 3261 §12.2, §14; RFC 3311; RFC 6086): answering the
//! peer's BYE, OPTIONS, PRACK, INFO, re-INVITE, UPDATE and the CANCEL of a re-INVITE, and sending our
//! INFO and re-INVITE. The rules live in [`super::midcall`]; this module builds the messages and
//! wires them to transactions, timers and events through [`Services`].

use super::build::{header_values, non_2xx_ack, put, via_value, ALLOW};
use super::calls::OutLeg;
use super::digest::{self, Answer, Challenge, Secret};
use super::events::{InfoError, LegId, LegTx, SipEvent};
use super::incoming::InLeg;
use super::invite::CallProgress;
use super::message::{HeaderName, Method, Request, Response};
use super::midcall::{retry_after_secs, MidCall, OfferVerdict, Phase, Reinvite, ReinviteStep, Reoffer, Sent2xx, Tick};
use super::pager::{incoming_message, DialogMessage};
use super::services::{DialogCtx, Owner, ServerKey, Services, SipTimer};
use super::transaction::{Kind, ResponseVerdict};
use crate::rng::Rng;
use std::time::Instant;

/// One call leg.
pub(super) enum Leg {
    /// A call we placed.
    Out(Box<OutLeg>),
    /// A call we received.
    In(Box<InLeg>),
}

impl Leg {
    // ===== Either kind =====

    /// Whether the call is over (the stack forgets it).
    pub(super) fn is_gone(&self) -> bool {
        match self {
            Leg::Out(l) => l.is_gone(),
            Leg::In(l) => l.is_gone(),
        }
    }

    /// Whether we placed the call (§14.1: then we own the Call-ID).
    pub(super) fn is_outgoing(&self) -> bool {
        matches!(self, Leg::Out(_))
    }

    /// The leg's mid-call state.
    fn mid(&mut self) -> &mut MidCall {
        match self {
            Leg::Out(l) => &mut l.mid,
            Leg::In(l) => &mut l.mid,
        }
    }

    /// What building a request in the established dialog needs; `None` before the call is
    /// answered and once it is closing.
    fn dialog_ctx(&self, svc: &Services) -> Option<DialogCtx> {
        match self {
            Leg::Out(l) => l.dialog_ctx(svc),
            Leg::In(l) => l.dialog_ctx(svc),
        }
    }

    /// Stores the established dialog back after building a request.
    fn store_dialog(&mut self, dialog: super::dialog::Dialog) {
        match self {
            Leg::Out(l) => l.store_dialog(dialog),
            Leg::In(l) => {
                if let Some(d) = l.dialog_mut() {
                    *d = dialog;
                }
            }
        }
    }

    /// The dialog with the peer's tag `remote_tag`.
    fn dialog_mut(&mut self, remote_tag: &str) -> Option<&mut super::dialog::Dialog> {
        match self {
            Leg::Out(l) => l.dialog_mut(remote_tag),
            Leg::In(l) => l.dialog_mut(),
        }
    }

    /// Our Contact URI in the call.
    fn contact(&self, svc: &Services) -> String {
        match self {
            Leg::Out(l) => l.contact(svc),
            Leg::In(l) => l.contact(),
        }
    }

    /// Hangs up: a pending offer of the peer gets 487; then CANCEL or BYE (outgoing), decline
    /// or BYE (incoming).
    pub(super) fn hang_up(&mut self, svc: &mut Services, id: LegId, now: Instant, rng: &mut Rng) {
        self.abandon_reoffer(svc, id, now);
        match self {
            Leg::Out(l) => l.hang_up(svc, now, rng),
            Leg::In(l) => l.hang_up(svc, now, rng),
        }
    }

    /// A response matched one of the leg's client transactions.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_response(
        &mut self,
        svc: &mut Services,
        id: LegId,
        tx: LegTx,
        branch: &str,
        resp: &Response,
        verdict: ResponseVerdict,
        now: Instant,
        rng: &mut Rng,
    ) {
        if verdict == ResponseVerdict::Absorb {
            return;
        }
        match (tx, self) {
            (LegTx::Info, leg) => leg.info_response(svc, id, branch, resp, now, rng),
            (LegTx::Reinvite, leg) => leg.reinvite_response(svc, id, branch, resp, verdict, now, rng),
            (tx, Leg::Out(l)) => l.on_response(svc, tx, branch, resp, verdict, now, rng),
            (_, Leg::In(_)) => {}
        }
    }

    /// A client transaction (`branch`) of the leg failed without a response.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_failed(
        &mut self,
        svc: &mut Services,
        id: LegId,
        tx: LegTx,
        branch: &str,
        code: u16,
        reason: &str,
        now: Instant,
        rng: &mut Rng,
    ) {
        match (tx, self) {
            (LegTx::Info, leg) => leg.info_finished(svc, id, branch, now, rng),
            (LegTx::Reinvite, leg) => leg.reinvite_failed(svc, id, branch, code, reason, now, rng),
            (tx, Leg::Out(l)) => l.on_failed(svc, tx, code, reason, now, rng),
            (_, Leg::In(_)) => {}
        }
    }

    // ===== The transaction user's side =====

    /// Queues an INFO (see `SipStack::try_send_info`).
    pub(super) fn send_info(
        &mut self,
        svc: &mut Services,
        id: LegId,
        content_type: &str,
        body: Vec<u8>,
        now: Instant,
        rng: &mut Rng,
    ) -> Result<(), InfoError> {
        if self.dialog_ctx(svc).is_none() {
            return Err(InfoError::NoDialog);
        }
        self.mid().queue_info(content_type, body)?;
        self.pump_info(svc, id, now, rng);
        Ok(())
    }

    /// Starts a re-INVITE (see `SipStack::reinvite`); false if not possible now.
    pub(super) fn reinvite(
        &mut self,
        svc: &mut Services,
        id: LegId,
        sdp: Vec<u8>,
        now: Instant,
        rng: &mut Rng,
    ) -> bool {
        if self.dialog_ctx(svc).is_none() || matches!(self, Leg::In(l) if !l.confirmed()) {
            return false;
        }
        let mid = self.mid();
        if !mid.may_reinvite() {
            return false;
        }
        mid.reinvite = Some(Reinvite::new(sdp));
        self.send_reinvite(svc, id, None, now, rng);
        true
    }

    /// Answers the peer's offer (see `SipStack::answer_reoffer`).
    pub(super) fn answer_reoffer(
        &mut self,
        svc: &mut Services,
        id: LegId,
        result: Result<Vec<u8>, (u16, String)>,
        now: Instant,
    ) {
        let mid = self.mid();
        if mid.reoffer.as_ref().is_none_or(|r| r.sent.is_some()) {
            return;
        }
        let Some(mut re) = mid.reoffer.take() else { return };
        match result {
            Ok(sdp) => {
                let contact = self.contact(svc);
                let mut extra = vec![(HeaderName::Contact, format!("<{contact}>")), (HeaderName::Allow, ALLOW.into())];
                if !sdp.is_empty() {
                    extra.push((HeaderName::ContentType, "application/sdp".into()));
                }
                let kept = svc.respond_kept(&re.key, &re.req, 200, "OK", &extra, &sdp, now);
                if let (true, Some((dest, bytes))) = (re.is_invite(), kept) {
                    let sent = Sent2xx::new(bytes, dest, now, svc.timers);
                    let at = sent.next_deadline();
                    re.sent = Some(sent);
                    self.mid().reoffer = Some(re);
                    svc.arm(SipTimer::Reoffer(id), at);
                }
            }
            Err((code, reason)) => {
                let code = if (300..700).contains(&code) { code } else { 500 };
                svc.respond_full(&re.key, &re.req, code, &reason, &[], &[], now);
            }
        }
    }

    // ===== Requests from the peer =====

    /// The leg's dialog with `req`'s tags: the peer's tag, and whether that dialog is the
    /// answered one.
    pub(super) fn of_request(&self, req: &Request) -> Option<(String, bool)> {
        match self {
            Leg::Out(l) => l.of_request(req),
            Leg::In(l) => l.of_request(req),
        }
    }

    /// A request inside the leg's dialog with the peer's tag `remote_tag` (§12.2.2): answered
    /// here, or left pending for the transaction user.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn in_dialog_request(
        &mut self,
        svc: &mut Services,
        id: LegId,
        (remote_tag, established): (String, bool),
        req: &Request,
        key: &ServerKey,
        now: Instant,
        rng: &mut Rng,
    ) {
        if req.method == Method::Cancel {
            self.dialog_cancel(svc, req, key, now);
            return;
        }
        let cseq = req.headers.cseq().map(|c| c.seq).unwrap_or_default();
        if self.dialog_mut(&remote_tag).is_some_and(|d| !d.accept_remote_cseq(cseq)) {
            svc.respond(key, req, 500, "Server Internal Error", now);
            return;
        }
        match req.method {
            Method::Bye => {
                // §15.1.2: a pending request of the dialog still gets its answer, 487.
                self.abandon_reoffer(svc, id, now);
                svc.respond(key, req, 200, "OK", now);
            }
            Method::Options => svc.respond(key, req, 200, "OK", now),
            // RFC 3262 §3: the PRACK of a reliable provisional of ours (only incoming calls send them).
            Method::Prack => match self {
                Leg::In(l) => l.on_prack(svc, req, key, now),
                Leg::Out(_) => svc.respond(key, req, 481, "Call/Transaction Does Not Exist", now),
            },
            Method::Info => {
                svc.respond(key, req, 200, "OK", now);
                let content_type = req.headers.get_str(&HeaderName::ContentType).unwrap_or_default().into_owned();
                svc.event(SipEvent::Info { leg: id, content_type, body: req.body.clone() });
            }
            Method::Message => {
                // RFC 3428 §7: a MESSAGE in the dialog is delivered to the call's user.
                svc.respond(key, req, 200, "OK", now);
                svc.event(SipEvent::DialogMessage { leg: id, message: incoming_message(req) });
            }
            Method::Update if req.body.is_empty() => {
                // RFC 3311 §5.2: a target refresh without an offer; its 2xx carries our Contact.
                if let Some(d) = self.dialog_mut(&remote_tag) {
                    d.refresh_target(&req.headers);
                }
                let contact = self.contact(svc);
                let extra = [(HeaderName::Contact, format!("<{contact}>")), (HeaderName::Allow, ALLOW.into())];
                svc.respond_full(key, req, 200, "OK", &extra, &[], now);
            }
            Method::Invite | Method::Update => {
                self.offer_request(svc, id, &remote_tag, established, req, key, now, rng)
            }
            _ => svc.respond(key, req, 405, "Method Not Allowed", now),
        }
    }

    /// A re-INVITE (§14.2) or an UPDATE with SDP (RFC 3311 §5.2).
    #[allow(clippy::too_many_arguments)]
    fn offer_request(
        &mut self,
        svc: &mut Services,
        id: LegId,
        remote_tag: &str,
        established: bool,
        req: &Request,
        key: &ServerKey,
        now: Instant,
        rng: &mut Rng,
    ) {
        let content_type = req.headers.get_str(&HeaderName::ContentType).unwrap_or_default().to_ascii_lowercase();
        if !req.body.is_empty() && content_type.split(';').next().map(str::trim) != Some("application/sdp") {
            // §21.4.16: only SDP is understood.
            let extra = [(HeaderName::Accept, "application/sdp".to_string())];
            svc.respond_full(key, req, 415, "Unsupported Media Type", &extra, &[], now);
            return;
        }
        let verdict = if established {
            self.mid().offer_verdict()
        } else if self.is_outgoing() {
            // Not answered yet: our own INVITE is in progress (glare) for an outgoing call; for
            // an incoming one the peer's INVITE still waits for our final response.
            OfferVerdict::Glare
        } else {
            OfferVerdict::Busy
        };
        match verdict {
            OfferVerdict::Glare => svc.respond(key, req, 491, "Request Pending", now),
            OfferVerdict::Busy => {
                let extra = [(HeaderName::RetryAfter, retry_after_secs(rng).to_string())];
                svc.respond_full(key, req, 500, "Server Internal Error", &extra, &[], now);
            }
            OfferVerdict::Accept => {
                // §12.2.2: a target refresh request replaces the remote target.
                if let Some(d) = self.dialog_mut(remote_tag) {
                    d.refresh_target(&req.headers);
                }
                let invite = req.method == Method::Invite;
                if invite {
                    // §17.2.1: the answer comes from the transaction user, later than 200 ms.
                    svc.respond(key, req, 100, "Trying", now);
                }
                let re =
                    Reoffer { key: key.clone(), req: req.clone(), late: invite && req.body.is_empty(), sent: None };
                self.mid().reoffer = Some(re);
                svc.event(SipEvent::Reoffer { leg: id, sdp: req.body.clone() });
            }
        }
    }

    /// A CANCEL inside a dialog: it can only target a re-INVITE (§9.2). A pending one gets 487
    /// and the session stays as it was; the CANCEL gets 200 if its transaction exists, else 481.
    fn dialog_cancel(&mut self, svc: &mut Services, req: &Request, key: &ServerKey, now: Instant) {
        let invite = ServerKey { method: "INVITE".into(), ..key.clone() };
        let pending = self.mid().reoffer.take_if(|r| r.key == invite && r.sent.is_none());
        if let Some(re) = pending {
            svc.respond(key, req, 200, "OK", now);
            svc.respond(&re.key, &re.req, 487, "Request Terminated", now);
        } else if svc.has_server(&invite) {
            svc.respond(key, req, 200, "OK", now);
        } else {
            svc.respond(key, req, 481, "Call/Transaction Does Not Exist", now);
        }
    }

    /// Whether an ACK with Call-ID `call_id` and CSeq `seq` acknowledges our 2xx to the peer's
    /// re-INVITE.
    pub(super) fn acks_reoffer(&mut self, call_id: &str, seq: u32) -> bool {
        self.mid()
            .reoffer
            .as_ref()
            .is_some_and(|r| r.sent.is_some() && r.cseq() == seq && r.req.headers.call_id().is_ok_and(|c| c == call_id))
    }

    /// The ACK of our 2xx to the peer's re-INVITE (§13.3.1.4); for a late offer it carries the
    /// answer.
    pub(super) fn on_reoffer_ack(&mut self, svc: &mut Services, id: LegId, req: &Request) {
        let re = self.mid().reoffer.take();
        svc.arm(SipTimer::Reoffer(id), None);
        if re.is_some_and(|r| r.late) && !req.body.is_empty() {
            svc.event(SipEvent::ReofferAck { leg: id, sdp: req.body.clone() });
        }
    }

    /// Our 2xx to a re-INVITE: retransmit it, or end the call when no ACK came (§13.3.1.4).
    pub(super) fn reoffer_timer(&mut self, svc: &mut Services, id: LegId, now: Instant, rng: &mut Rng) {
        let Some(sent) = self.mid().reoffer.as_mut().and_then(|r| r.sent.as_mut()) else { return };
        let tick = sent.on_timeout(now);
        let (dest, bytes, at) = (sent.dest, sent.bytes.clone(), sent.next_deadline());
        match tick {
            Tick::Nothing => svc.arm(SipTimer::Reoffer(id), at),
            Tick::Resend => {
                svc.transmit(dest, bytes, now);
                svc.arm(SipTimer::Reoffer(id), at);
            }
            Tick::GiveUp => {
                self.mid().reoffer = None;
                log::info!("call {id:?}: no ACK for our 2xx to the re-INVITE; BYE");
                self.end_with_bye(svc, id, "408 Request Timeout", now, rng);
            }
        }
    }

    /// The peer's offer is abandoned (we hang up, or the peer sent BYE): a pending request gets
    /// 487 (§15.1.2), a 2xx waiting for its ACK is forgotten.
    pub(super) fn abandon_reoffer(&mut self, svc: &mut Services, id: LegId, now: Instant) {
        let Some(re) = self.mid().reoffer.take() else { return };
        svc.arm(SipTimer::Reoffer(id), None);
        if re.sent.is_none() {
            svc.respond(&re.key, &re.req, 487, "Request Terminated", now);
        }
    }

    /// After answering the peer's BYE: the call ends.
    pub(super) fn on_remote_bye(&mut self, svc: &mut Services, now: Instant, rng: &mut Rng) {
        match self {
            Leg::Out(l) => l.on_remote_bye(svc, now, rng),
            Leg::In(l) => l.on_remote_bye(svc, now),
        }
    }

    // ===== Our INFO =====

    /// Sends the next queued INFO unless one is in flight.
    fn pump_info(&mut self, svc: &mut Services, id: LegId, now: Instant, rng: &mut Rng) {
        let Some(ctx) = self.dialog_ctx(svc) else { return };
        let Some((content_type, body)) = self.mid().next_info() else { return };
        let branch = format!("z9hG4bK{}", rng.hex(20));
        let (vhost, vport) = svc.advertised(ctx.peer.transport);
        let via = via_value(ctx.peer.transport, &vhost, vport, &branch);
        let mut dialog = ctx.dialog;
        let mut req = dialog.request(Method::Info, &via, None, None);
        put(&mut req.headers, HeaderName::ContentType, &content_type);
        req.body = body;
        self.store_dialog(dialog);
        self.mid().info_sent(branch.clone());
        let owner = Owner::Leg(id, LegTx::Info);
        svc.send_client(branch, req.to_bytes(), ctx.peer, &ctx.name, owner, Kind::NonInvite, now);
    }

    /// A response to one of our INFOs: logged; a final one lets the next INFO go.
    fn info_response(
        &mut self,
        svc: &mut Services,
        id: LegId,
        branch: &str,
        resp: &Response,
        now: Instant,
        rng: &mut Rng,
    ) {
        if resp.code < 200 {
            return;
        }
        log::debug!("call {id:?}: INFO answered {} {}", resp.code, resp.reason);
        self.info_finished(svc, id, branch, now, rng);
    }

    /// An INFO transaction completed (with a final response, a timeout or a transport error:
    /// none of them ends the call).
    fn info_finished(&mut self, svc: &mut Services, id: LegId, branch: &str, now: Instant, rng: &mut Rng) {
        if self.mid().info_done(branch) {
            self.pump_info(svc, id, now, rng);
        }
    }

    // ===== Our MESSAGE =====

    /// A MESSAGE with `content_type` and `body` in the established dialog (RFC 3428 §4: the
    /// dialog's route set and next CSeq), for the stack to send; `None` without one.
    pub(super) fn message_request(
        &mut self,
        svc: &Services,
        content_type: &str,
        body: Vec<u8>,
        rng: &mut Rng,
    ) -> Option<DialogMessage> {
        let ctx = self.dialog_ctx(svc)?;
        let branch = format!("z9hG4bK{}", rng.hex(20));
        let (vhost, vport) = svc.advertised(ctx.peer.transport);
        let via = via_value(ctx.peer.transport, &vhost, vport, &branch);
        let mut dialog = ctx.dialog;
        let mut req = dialog.request(Method::Message, &via, None, None);
        put(&mut req.headers, HeaderName::UserAgent, &ctx.user_agent);
        put(&mut req.headers, HeaderName::ContentType, content_type);
        req.body = body;
        self.store_dialog(dialog);
        Some(DialogMessage { branch, req, peer: ctx.peer, name: ctx.name })
    }

    // ===== Our re-INVITE =====

    /// Sends the leg's re-INVITE (a new transaction with the next CSeq), with credentials for
    /// `auth` = (challenge, proxy, nc) when it answers a 401/407.
    fn send_reinvite(
        &mut self,
        svc: &mut Services,
        id: LegId,
        auth: Option<(Challenge, bool, u32)>,
        now: Instant,
        rng: &mut Rng,
    ) {
        let Some(sdp) = self.mid().reinvite.as_ref().map(|r| r.sdp.clone()) else { return };
        let Some(ctx) = self.dialog_ctx(svc) else {
            let step = ReinviteStep::Failed("481 Call/Transaction Does Not Exist".into());
            return self.reinvite_step(svc, id, step, None, now, rng);
        };
        let branch = format!("z9hG4bK{}", rng.hex(20));
        let (vhost, vport) = svc.advertised(ctx.peer.transport);
        let via = via_value(ctx.peer.transport, &vhost, vport, &branch);
        let mut dialog = ctx.dialog;
        let mut req = dialog.request(Method::Invite, &via, Some(&ctx.contact), None);
        if let Some((challenge, proxy, nc)) = auth {
            let failed = if proxy { "407 Proxy Authentication Required" } else { "401 Unauthorized" };
            let Some(identity) = &ctx.identity else {
                return self.reinvite_step(svc, id, ReinviteStep::Failed(failed.into()), None, now, rng);
            };
            let uri = req.uri.to_string();
            let cnonce = rng.hex(16);
            let answer = Answer { username: identity.username(), method: "INVITE", uri: &uri, cnonce: &cnonce, nc };
            match digest::authorize(&challenge, Secret::from_sylkrtc(&identity.secret), &answer) {
                Ok(value) => {
                    let name = if proxy { HeaderName::ProxyAuthorization } else { HeaderName::Authorization };
                    put(&mut req.headers, name, &value);
                }
                Err(e) => {
                    log::info!("re-INVITE of call {id:?}: {e}");
                    return self.reinvite_step(svc, id, ReinviteStep::Failed(failed.into()), None, now, rng);
                }
            }
        }
        put(&mut req.headers, HeaderName::UserAgent, &ctx.user_agent);
        put(&mut req.headers, HeaderName::Allow, ALLOW);
        put(&mut req.headers, HeaderName::ContentType, "application/sdp");
        req.body = sdp;
        let bytes = req.to_bytes();
        self.store_dialog(dialog);
        if let Some(r) = self.mid().reinvite.as_mut() {
            r.phase = Phase::Sending;
            r.sent = Some((req, branch.clone()));
        }
        let owner = Owner::Leg(id, LegTx::Reinvite);
        svc.send_client(branch, bytes, ctx.peer, &ctx.name, owner, Kind::Invite, now);
    }

    /// A response to our re-INVITE.
    #[allow(clippy::too_many_arguments)]
    fn reinvite_response(
        &mut self,
        svc: &mut Services,
        id: LegId,
        branch: &str,
        resp: &Response,
        verdict: ResponseVerdict,
        now: Instant,
        rng: &mut Rng,
    ) {
        if matches!(verdict, ResponseVerdict::DeliverAndAck | ResponseVerdict::AckAgain) {
            self.reinvite_ack_non_2xx(svc, branch, resp, verdict == ResponseVerdict::AckAgain, now);
            if verdict == ResponseVerdict::AckAgain {
                return;
            }
        }
        if resp.code < 200 {
            return;
        }
        // §14.1: we own the Call-ID of the calls we placed.
        let owner = self.is_outgoing();
        let challenge_header =
            if resp.code == 407 { HeaderName::ProxyAuthenticate } else { HeaderName::WwwAuthenticate };
        let challenges = header_values(&resp.headers, challenge_header);
        let Some(r) = self.mid().reinvite.as_mut() else { return };
        if r.branch() != Some(branch) {
            return; // an earlier attempt's response
        }
        let step = r.on_final(resp.code, &resp.reason, &challenges, owner, rng);
        self.reinvite_step(svc, id, step, Some(resp), now, rng);
    }

    /// Our re-INVITE's transaction failed without a response (408 timeout, 503 transport).
    #[allow(clippy::too_many_arguments)]
    fn reinvite_failed(
        &mut self,
        svc: &mut Services,
        id: LegId,
        branch: &str,
        code: u16,
        reason: &str,
        now: Instant,
        rng: &mut Rng,
    ) {
        let owner = self.is_outgoing();
        let Some(r) = self.mid().reinvite.as_mut() else { return };
        if r.branch() != Some(branch) {
            return;
        }
        let step = r.on_final(code, reason, &[], owner, rng);
        self.reinvite_step(svc, id, step, None, now, rng);
    }

    fn reinvite_step(
        &mut self,
        svc: &mut Services,
        id: LegId,
        step: ReinviteStep,
        resp: Option<&Response>,
        now: Instant,
        rng: &mut Rng,
    ) {
        match step {
            ReinviteStep::Nothing => {}
            ReinviteStep::Accepted { first: true } => {
                let Some(resp) = resp else { return };
                // §12.2.1.2: the 2xx of a target refresh request replaces the remote target.
                if let Some(mut ctx) = self.dialog_ctx(svc) {
                    ctx.dialog.refresh_target(&resp.headers);
                    self.store_dialog(ctx.dialog);
                }
                let Some(ctx) = self.dialog_ctx(svc) else { return };
                let Some(r) = self.mid().reinvite.as_mut() else { return };
                let cseq = r.sent.as_ref().and_then(|(req, _)| req.headers.cseq().ok()).map(|c| c.seq);
                // §13.2.2.4: the ACK of a 2xx is the UA core's: a new branch, the INVITE's CSeq.
                let (vhost, vport) = svc.advertised(ctx.peer.transport);
                let via = via_value(ctx.peer.transport, &vhost, vport, &format!("z9hG4bK{}", rng.hex(20)));
                let mut dialog = ctx.dialog;
                let bytes = dialog.request(Method::Ack, &via, None, cseq).to_bytes();
                if let Some(r) = self.mid().reinvite.as_mut() {
                    r.ack = Some(bytes.clone());
                }
                svc.transmit(ctx.peer, bytes, now);
                svc.event(SipEvent::ReinviteResult { leg: id, result: Ok(resp.body.clone()) });
            }
            ReinviteStep::Accepted { first: false } => {
                let Some(ctx) = self.dialog_ctx(svc) else { return };
                let ack = self.mid().reinvite.as_ref().and_then(|r| r.ack.clone());
                if let Some(ack) = ack {
                    svc.transmit(ctx.peer, ack, now);
                }
            }
            ReinviteStep::Authenticate { challenge, proxy, nc } => {
                self.send_reinvite(svc, id, Some((challenge, proxy, nc)), now, rng);
            }
            ReinviteStep::Backoff(wait) => {
                log::debug!("call {id:?}: re-INVITE glare; retry in {wait:?}");
                svc.arm(SipTimer::Glare(id), Some(now + wait));
            }
            ReinviteStep::Failed(reason) => {
                if let Some(r) = self.mid().reinvite.as_mut() {
                    r.phase = Phase::Done;
                }
                svc.event(SipEvent::ReinviteResult { leg: id, result: Err(reason) });
            }
            ReinviteStep::DialogGone(reason) => {
                svc.event(SipEvent::ReinviteResult { leg: id, result: Err(reason.clone()) });
                self.end_call(svc, id, &reason);
            }
        }
    }

    /// The 491 back-off is over: send the re-INVITE again, unless the peer's own offer is being
    /// answered now (then the 491 is the result).
    pub(super) fn glare_timer(&mut self, svc: &mut Services, id: LegId, now: Instant, rng: &mut Rng) {
        let mid = self.mid();
        let busy = mid.reoffer.is_some();
        let Some(r) = mid.reinvite.as_mut().filter(|r| r.phase == Phase::Backoff) else { return };
        if busy {
            let reason = r.give_up();
            svc.event(SipEvent::ReinviteResult { leg: id, result: Err(reason) });
            return;
        }
        r.retry();
        self.send_reinvite(svc, id, None, now, rng);
    }

    /// §17.1.1.3: the ACK of a non-2xx final response to our re-INVITE (the INVITE's top Via,
    /// Request-URI, From, Call-ID and Route; the response's To), sent again for retransmissions.
    fn reinvite_ack_non_2xx(&mut self, svc: &mut Services, branch: &str, resp: &Response, again: bool, now: Instant) {
        let Some(peer) = svc.client_peer(branch) else { return };
        let Some(r) = self.mid().reinvite.as_mut() else { return };
        let bytes = if again {
            match &r.non_2xx_ack {
                Some((b, bytes)) if b == branch => bytes.clone(),
                _ => return,
            }
        } else {
            let Some((invite, _)) = r.sent.as_ref().filter(|(_, b)| b == branch) else { return };
            let bytes = non_2xx_ack(invite, resp).to_bytes();
            r.non_2xx_ack = Some((branch.to_string(), bytes.clone()));
            bytes
        };
        svc.transmit(peer, bytes, now);
    }

    // ===== Ending =====

    /// The call is over without a BYE (§12.2.1.2: 481 or 408 to a request in the dialog).
    fn end_call(&mut self, svc: &mut Services, id: LegId, reason: &str) {
        svc.arm(SipTimer::Reoffer(id), None);
        svc.arm(SipTimer::Glare(id), None);
        let gone = match self {
            Leg::Out(l) => {
                let was = !l.is_gone();
                l.end_silently();
                was
            }
            Leg::In(l) => l.remove(svc),
        };
        if gone {
            svc.event(SipEvent::Call { leg: id, progress: CallProgress::Ended { reason: reason.into() } });
        }
    }

    /// Sends BYE in the established dialog and ends the call with `reason` at once.
    fn end_with_bye(&mut self, svc: &mut Services, id: LegId, reason: &str, now: Instant, rng: &mut Rng) {
        match self {
            Leg::Out(l) => {
                if let Some(tag) = l.confirmed_tag() {
                    l.send_bye(svc, &tag, now, rng);
                }
            }
            Leg::In(l) => l.send_bye(svc, now, Some(rng)),
        }
        self.end_call(svc, id, reason);
    }
}
