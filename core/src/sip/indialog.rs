//! Requests inside an established call's dialog, for outgoing and incoming legs alike (RFC 3261
//! §12.2, §14; RFC 3311; RFC 6086): answering the peer's BYE, OPTIONS, INFO, re-INVITE, UPDATE
//! and the CANCEL of a re-INVITE, and sending our INFO and re-INVITE. The rules live in
//! [`super::midcall`]; this module builds the messages and wires them to transactions, timers
//! and [`SipEvent`]s.

use super::calls::{LegId, LegTx};
use super::dialog::Dialog;
use super::digest::{self, Answer, Challenge, Secret};
use super::invite::CallProgress;
use super::message::{HeaderName, Headers, Method, Request, Response};
use super::midcall::{retry_after_secs, MidCall, OfferVerdict, Phase, Reinvite, ReinviteStep, Reoffer, Sent2xx, Tick};
use super::stack::{header_values, put, via_value, Owner, ServerKey, SipEvent, SipIdentity, SipStack, SipTimer, ALLOW};
use super::transaction::{Kind, ResponseVerdict};
use super::transport::Peer;
use crate::rng::Rng;
use std::time::Instant;

/// What building a request in a leg's established dialog needs.
pub(super) struct DialogCtx {
    /// A copy of the dialog: store it back ([`SipStack::store_dialog`]) once a request used a
    /// new CSeq number or the target changed.
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

impl SipStack {
    // ===== The transaction user's side =====

    /// Sends an INFO with `content_type` and `body` in the leg's established dialog (either
    /// direction; e.g. `application/dtmf-relay` with `Signal=1\r\nDuration=160\r\n`). INFOs go out
    /// one at a time (RFC 6086 §4.2.1): a second one waits in the leg's queue until the first has
    /// its final response or timed out. The response is only logged: no failure ends the call.
    /// Returns false if the leg has no established dialog.
    pub fn send_info(&mut self, id: LegId, content_type: &str, body: Vec<u8>, now: Instant, rng: &mut Rng) -> bool {
        if self.dialog_ctx(id).is_none() {
            return false;
        }
        let Some(mid) = self.mid_mut(id) else { return false };
        mid.queue_info(content_type, body);
        self.pump_info(id, now, rng);
        true
    }

    /// Sends a re-INVITE offering `sdp` in the leg's established dialog (§14.1); the outcome
    /// arrives as [`SipEvent::ReinviteResult`]. Returns false if there is no established dialog
    /// (an incoming call counts once its 2xx was ACKed) or an INVITE transaction is in progress
    /// in either direction (ours, or the peer's offer not answered and ACKed yet).
    pub fn reinvite(&mut self, id: LegId, sdp: Vec<u8>, now: Instant, rng: &mut Rng) -> bool {
        if self.dialog_ctx(id).is_none() || (self.inbound.contains_key(&id) && !self.inbound_confirmed(id)) {
            return false;
        }
        let Some(mid) = self.mid_mut(id) else { return false };
        if !mid.may_reinvite() {
            return false;
        }
        mid.reinvite = Some(Reinvite::new(sdp));
        self.send_reinvite(id, None, now, rng);
        true
    }

    /// Answers the peer's offer ([`SipEvent::Reoffer`]): `Ok(sdp)` sends 200 with our SDP,
    /// Contact and Allow (for a re-INVITE retransmitted until the ACK, §13.3.1.4; for a late
    /// offer `sdp` is our offer), `Err((code, reason))` a final error such as 488 (a code outside
    /// 300–699 becomes 500). Does nothing if no offer is waiting (it was CANCELled and answered
    /// 487, or the call ended).
    pub fn answer_reoffer(&mut self, id: LegId, result: Result<Vec<u8>, (u16, String)>, now: Instant) {
        let Some(mid) = self.mid_mut(id) else { return };
        if mid.reoffer.as_ref().is_none_or(|r| r.sent.is_some()) {
            return;
        }
        let Some(mut re) = mid.reoffer.take() else { return };
        match result {
            Ok(sdp) => {
                let contact = self.contact_of(id).unwrap_or_default();
                let mut extra = vec![(HeaderName::Contact, format!("<{contact}>")), (HeaderName::Allow, ALLOW.into())];
                if !sdp.is_empty() {
                    extra.push((HeaderName::ContentType, "application/sdp".into()));
                }
                let kept = self.respond_kept(&re.key, &re.req, 200, "OK", &extra, &sdp, now);
                if let (true, Some((dest, bytes))) = (re.is_invite(), kept) {
                    let sent = Sent2xx::new(bytes, dest, now, self.timers);
                    let at = sent.next_deadline();
                    re.sent = Some(sent);
                    if let Some(mid) = self.mid_mut(id) {
                        mid.reoffer = Some(re);
                    }
                    self.arm(SipTimer::Reoffer(id), at);
                }
            }
            Err((code, reason)) => {
                let code = if (300..700).contains(&code) { code } else { 500 };
                self.respond_full(&re.key, &re.req, code, &reason, &[], &[], now);
            }
        }
    }

    // ===== Requests from the peer =====

    /// A request inside the dialog of one of our calls (§12.2.2): answered here (or left pending
    /// for the transaction user); false if it belongs to no call's dialog.
    pub(super) fn in_dialog_request(&mut self, req: &Request, key: &ServerKey, now: Instant, rng: &mut Rng) -> bool {
        let Some((id, remote_tag, established)) = self.leg_of_request(req).or_else(|| self.inbound_of_request(req))
        else {
            return false;
        };
        if req.method == Method::Cancel {
            self.dialog_cancel(id, req, key, now);
            return true;
        }
        let cseq = req.headers.cseq().map(|c| c.seq).unwrap_or_default();
        if self.dialog_mut(id, &remote_tag).is_some_and(|d| !d.accept_remote_cseq(cseq)) {
            self.respond(key, req, 500, "Server Internal Error", now);
            return true;
        }
        match req.method {
            Method::Bye => {
                // §15.1.2: a pending request of the dialog still gets its answer, 487.
                self.abandon_reoffer(id, now);
                self.respond(key, req, 200, "OK", now);
            }
            Method::Options => self.respond(key, req, 200, "OK", now),
            Method::Info => {
                self.respond(key, req, 200, "OK", now);
                let content_type = req.headers.get_str(&HeaderName::ContentType).unwrap_or_default().into_owned();
                self.events.push_back(SipEvent::Info { leg: id, content_type, body: req.body.clone() });
            }
            Method::Update if req.body.is_empty() => {
                // RFC 3311 §5.2: a target refresh without an offer; its 2xx carries our Contact.
                if let Some(d) = self.dialog_mut(id, &remote_tag) {
                    d.refresh_target(&req.headers);
                }
                let contact = self.contact_of(id).unwrap_or_default();
                let extra = [(HeaderName::Contact, format!("<{contact}>")), (HeaderName::Allow, ALLOW.into())];
                self.respond_full(key, req, 200, "OK", &extra, &[], now);
            }
            Method::Invite | Method::Update => self.offer_request(id, &remote_tag, established, req, key, now, rng),
            _ => self.respond(key, req, 405, "Method Not Allowed", now),
        }
        true
    }

    /// A re-INVITE (§14.2) or an UPDATE with SDP (RFC 3311 §5.2).
    #[allow(clippy::too_many_arguments)]
    fn offer_request(
        &mut self,
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
            self.respond_full(key, req, 415, "Unsupported Media Type", &extra, &[], now);
            return;
        }
        let outgoing = self.legs.contains_key(&id);
        let verdict = match self.mid_mut(id) {
            Some(mid) if established => mid.offer_verdict(),
            // Not answered yet: our own INVITE is in progress (glare) for an outgoing call; for
            // an incoming one the peer's INVITE still waits for our final response.
            _ if outgoing => OfferVerdict::Glare,
            _ => OfferVerdict::Busy,
        };
        match verdict {
            OfferVerdict::Glare => self.respond(key, req, 491, "Request Pending", now),
            OfferVerdict::Busy => {
                let extra = [(HeaderName::RetryAfter, retry_after_secs(rng).to_string())];
                self.respond_full(key, req, 500, "Server Internal Error", &extra, &[], now);
            }
            OfferVerdict::Accept => {
                // §12.2.2: a target refresh request replaces the remote target.
                if let Some(d) = self.dialog_mut(id, remote_tag) {
                    d.refresh_target(&req.headers);
                }
                let invite = req.method == Method::Invite;
                if invite {
                    // §17.2.1: the answer comes from the transaction user, later than 200 ms.
                    self.respond(key, req, 100, "Trying", now);
                }
                let re =
                    Reoffer { key: key.clone(), req: req.clone(), late: invite && req.body.is_empty(), sent: None };
                if let Some(mid) = self.mid_mut(id) {
                    mid.reoffer = Some(re);
                }
                self.events.push_back(SipEvent::Reoffer { leg: id, sdp: req.body.clone() });
            }
        }
    }

    /// A CANCEL inside a dialog: it can only target a re-INVITE (§9.2). A pending one gets 487
    /// and the session stays as it was; the CANCEL gets 200 if its transaction exists, else 481.
    fn dialog_cancel(&mut self, id: LegId, req: &Request, key: &ServerKey, now: Instant) {
        let invite = ServerKey { method: "INVITE".into(), ..key.clone() };
        let pending = self.mid_mut(id).and_then(|m| m.reoffer.take_if(|r| r.key == invite && r.sent.is_none()));
        if let Some(re) = pending {
            self.respond(key, req, 200, "OK", now);
            self.respond(&re.key, &re.req, 487, "Request Terminated", now);
        } else if self.has_server(&invite) {
            self.respond(key, req, 200, "OK", now);
        } else {
            self.respond(key, req, 481, "Call/Transaction Does Not Exist", now);
        }
    }

    /// An ACK outside any transaction: the ACK of a 2xx (§13.3.1.4) — to a re-INVITE of ours,
    /// or to an incoming call's INVITE.
    pub(super) fn dialog_ack(&mut self, req: &Request) {
        let call_id = req.headers.call_id().unwrap_or_default();
        let seq = req.headers.cseq().map(|c| c.seq).unwrap_or_default();
        let acked = |m: &MidCall| {
            m.reoffer.as_ref().is_some_and(|r| {
                r.sent.is_some() && r.cseq() == seq && r.req.headers.call_id().is_ok_and(|c| c == call_id)
            })
        };
        let id = self
            .legs
            .iter()
            .find(|(_, l)| acked(&l.mid))
            .map(|(id, _)| *id)
            .or_else(|| self.inbound.iter().find(|(_, l)| acked(&l.mid)).map(|(id, _)| *id));
        let Some(id) = id else {
            self.inbound_ack(req);
            return;
        };
        let re = self.mid_mut(id).and_then(|m| m.reoffer.take());
        self.arm(SipTimer::Reoffer(id), None);
        if re.is_some_and(|r| r.late) && !req.body.is_empty() {
            self.events.push_back(SipEvent::ReofferAck { leg: id, sdp: req.body.clone() });
        }
    }

    /// Our 2xx to a re-INVITE: retransmit it, or end the call when no ACK came (§13.3.1.4).
    pub(super) fn reoffer_timer(&mut self, id: LegId, now: Instant, rng: &mut Rng) {
        let Some(sent) = self.mid_mut(id).and_then(|m| m.reoffer.as_mut()).and_then(|r| r.sent.as_mut()) else {
            return;
        };
        let tick = sent.on_timeout(now);
        let (dest, bytes, at) = (sent.dest, sent.bytes.clone(), sent.next_deadline());
        match tick {
            Tick::Nothing => self.arm(SipTimer::Reoffer(id), at),
            Tick::Resend => {
                self.transmit(dest, bytes, now);
                self.arm(SipTimer::Reoffer(id), at);
            }
            Tick::GiveUp => {
                if let Some(m) = self.mid_mut(id) {
                    m.reoffer = None;
                }
                log::info!("call {id:?}: no ACK for our 2xx to the re-INVITE; BYE");
                self.end_with_bye(id, "408 Request Timeout", now, rng);
            }
        }
    }

    /// The peer's offer is abandoned (we hang up, or the peer sent BYE): a pending request gets
    /// 487 (§15.1.2), a 2xx waiting for its ACK is forgotten.
    pub(super) fn abandon_reoffer(&mut self, id: LegId, now: Instant) {
        let Some(re) = self.mid_mut(id).and_then(|m| m.reoffer.take()) else { return };
        self.arm(SipTimer::Reoffer(id), None);
        if re.sent.is_none() {
            self.respond(&re.key, &re.req, 487, "Request Terminated", now);
        }
    }

    // ===== Our INFO =====

    /// Sends the next queued INFO unless one is in flight.
    fn pump_info(&mut self, id: LegId, now: Instant, rng: &mut Rng) {
        let Some(ctx) = self.dialog_ctx(id) else { return };
        let Some((content_type, body)) = self.mid_mut(id).and_then(MidCall::next_info) else { return };
        let branch = format!("z9hG4bK{}", rng.hex(20));
        let (vhost, vport) = self.advertised(ctx.peer.transport);
        let via = via_value(ctx.peer.transport, &vhost, vport, &branch);
        let mut dialog = ctx.dialog;
        let mut req = dialog.request(Method::Info, &via, None, None);
        put(&mut req.headers, HeaderName::ContentType, &content_type);
        req.body = body;
        self.store_dialog(id, dialog);
        if let Some(mid) = self.mid_mut(id) {
            mid.info_sent(branch.clone());
        }
        let owner = Owner::Leg(id, LegTx::Info);
        self.send_client(branch, req.to_bytes(), ctx.peer, &ctx.name, owner, Kind::NonInvite, now);
    }

    /// A response to one of our INFOs: logged; a final one lets the next INFO go.
    pub(super) fn info_response(&mut self, id: LegId, branch: &str, resp: &Response, now: Instant, rng: &mut Rng) {
        if resp.code < 200 {
            return;
        }
        log::debug!("call {id:?}: INFO answered {} {}", resp.code, resp.reason);
        self.info_finished(id, branch, now, rng);
    }

    /// An INFO transaction completed (with a final response, a timeout or a transport error:
    /// none of them ends the call).
    pub(super) fn info_finished(&mut self, id: LegId, branch: &str, now: Instant, rng: &mut Rng) {
        if self.mid_mut(id).is_some_and(|m| m.info_done(branch)) {
            self.pump_info(id, now, rng);
        }
    }

    // ===== Our re-INVITE =====

    /// Sends the leg's re-INVITE (a new transaction with the next CSeq), with credentials for
    /// `auth` = (challenge, proxy, nc) when it answers a 401/407.
    fn send_reinvite(&mut self, id: LegId, auth: Option<(Challenge, bool, u32)>, now: Instant, rng: &mut Rng) {
        let Some(sdp) = self.mid_mut(id).and_then(|m| m.reinvite.as_ref()).map(|r| r.sdp.clone()) else { return };
        let Some(ctx) = self.dialog_ctx(id) else {
            return self.reinvite_step(
                id,
                ReinviteStep::Failed("481 Call/Transaction Does Not Exist".into()),
                None,
                now,
                rng,
            );
        };
        let branch = format!("z9hG4bK{}", rng.hex(20));
        let (vhost, vport) = self.advertised(ctx.peer.transport);
        let via = via_value(ctx.peer.transport, &vhost, vport, &branch);
        let mut dialog = ctx.dialog;
        let mut req = dialog.request(Method::Invite, &via, Some(&ctx.contact), None);
        if let Some((challenge, proxy, nc)) = auth {
            let failed = if proxy { "407 Proxy Authentication Required" } else { "401 Unauthorized" };
            let Some(identity) = &ctx.identity else {
                return self.reinvite_step(id, ReinviteStep::Failed(failed.into()), None, now, rng);
            };
            let username = identity.aor.split_once('@').map_or(identity.aor.as_str(), |(u, _)| u);
            let uri = req.uri.to_string();
            let cnonce = rng.hex(16);
            let answer = Answer { username, method: "INVITE", uri: &uri, cnonce: &cnonce, nc };
            match digest::authorize(&challenge, Secret::from_sylkrtc(&identity.secret), &answer) {
                Ok(value) => {
                    let name = if proxy { HeaderName::ProxyAuthorization } else { HeaderName::Authorization };
                    put(&mut req.headers, name, &value);
                }
                Err(e) => {
                    log::info!("re-INVITE of call {id:?}: {e}");
                    return self.reinvite_step(id, ReinviteStep::Failed(failed.into()), None, now, rng);
                }
            }
        }
        put(&mut req.headers, HeaderName::UserAgent, &ctx.user_agent);
        put(&mut req.headers, HeaderName::Allow, ALLOW);
        put(&mut req.headers, HeaderName::ContentType, "application/sdp");
        req.body = sdp;
        let bytes = req.to_bytes();
        self.store_dialog(id, dialog);
        if let Some(r) = self.mid_mut(id).and_then(|m| m.reinvite.as_mut()) {
            r.phase = Phase::Sending;
            r.sent = Some((req, branch.clone()));
        }
        let owner = Owner::Leg(id, LegTx::Reinvite);
        self.send_client(branch, bytes, ctx.peer, &ctx.name, owner, Kind::Invite, now);
    }

    /// A response to our re-INVITE.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reinvite_response(
        &mut self,
        id: LegId,
        branch: &str,
        resp: &Response,
        verdict: ResponseVerdict,
        now: Instant,
        rng: &mut Rng,
    ) {
        if verdict == ResponseVerdict::Absorb {
            return;
        }
        if matches!(verdict, ResponseVerdict::DeliverAndAck | ResponseVerdict::AckAgain) {
            self.reinvite_ack_non_2xx(id, branch, resp, verdict == ResponseVerdict::AckAgain, now);
            if verdict == ResponseVerdict::AckAgain {
                return;
            }
        }
        if resp.code < 200 {
            return;
        }
        // §14.1: we own the Call-ID of the calls we placed.
        let owner = self.legs.contains_key(&id);
        let challenge_header =
            if resp.code == 407 { HeaderName::ProxyAuthenticate } else { HeaderName::WwwAuthenticate };
        let challenges = header_values(&resp.headers, challenge_header);
        let Some(r) = self.mid_mut(id).and_then(|m| m.reinvite.as_mut()) else { return };
        if r.branch() != Some(branch) {
            return; // an earlier attempt's response
        }
        let step = r.on_final(resp.code, &resp.reason, &challenges, owner, rng);
        self.reinvite_step(id, step, Some(resp), now, rng);
    }

    /// Our re-INVITE's transaction failed without a response (408 timeout, 503 transport).
    pub(super) fn reinvite_failed(
        &mut self,
        id: LegId,
        branch: &str,
        code: u16,
        reason: &str,
        now: Instant,
        rng: &mut Rng,
    ) {
        let owner = self.legs.contains_key(&id);
        let Some(r) = self.mid_mut(id).and_then(|m| m.reinvite.as_mut()) else { return };
        if r.branch() != Some(branch) {
            return;
        }
        let step = r.on_final(code, reason, &[], owner, rng);
        self.reinvite_step(id, step, None, now, rng);
    }

    fn reinvite_step(&mut self, id: LegId, step: ReinviteStep, resp: Option<&Response>, now: Instant, rng: &mut Rng) {
        match step {
            ReinviteStep::Nothing => {}
            ReinviteStep::Accepted { first: true } => {
                let Some(resp) = resp else { return };
                // §12.2.1.2: the 2xx of a target refresh request replaces the remote target.
                if let Some(mut ctx) = self.dialog_ctx(id) {
                    ctx.dialog.refresh_target(&resp.headers);
                    self.store_dialog(id, ctx.dialog);
                }
                let Some(ctx) = self.dialog_ctx(id) else { return };
                let Some(r) = self.mid_mut(id).and_then(|m| m.reinvite.as_mut()) else { return };
                let cseq = r.sent.as_ref().and_then(|(req, _)| req.headers.cseq().ok()).map(|c| c.seq);
                // §13.2.2.4: the ACK of a 2xx is the UA core's: a new branch, the INVITE's CSeq.
                let (vhost, vport) = self.advertised(ctx.peer.transport);
                let via = via_value(ctx.peer.transport, &vhost, vport, &format!("z9hG4bK{}", rng.hex(20)));
                let mut dialog = ctx.dialog;
                let bytes = dialog.request(Method::Ack, &via, None, cseq).to_bytes();
                if let Some(r) = self.mid_mut(id).and_then(|m| m.reinvite.as_mut()) {
                    r.ack = Some(bytes.clone());
                }
                self.transmit(ctx.peer, bytes, now);
                self.events.push_back(SipEvent::ReinviteResult { leg: id, result: Ok(resp.body.clone()) });
            }
            ReinviteStep::Accepted { first: false } => {
                let Some(ctx) = self.dialog_ctx(id) else { return };
                let ack = self.mid_mut(id).and_then(|m| m.reinvite.as_ref()).and_then(|r| r.ack.clone());
                if let Some(ack) = ack {
                    self.transmit(ctx.peer, ack, now);
                }
            }
            ReinviteStep::Authenticate { challenge, proxy, nc } => {
                self.send_reinvite(id, Some((challenge, proxy, nc)), now, rng);
            }
            ReinviteStep::Backoff(wait) => {
                log::debug!("call {id:?}: re-INVITE glare; retry in {wait:?}");
                self.arm(SipTimer::Glare(id), Some(now + wait));
            }
            ReinviteStep::Failed(reason) => {
                if let Some(r) = self.mid_mut(id).and_then(|m| m.reinvite.as_mut()) {
                    r.phase = Phase::Done;
                }
                self.events.push_back(SipEvent::ReinviteResult { leg: id, result: Err(reason) });
            }
            ReinviteStep::DialogGone(reason) => {
                self.events.push_back(SipEvent::ReinviteResult { leg: id, result: Err(reason.clone()) });
                self.end_call(id, &reason);
            }
        }
    }

    /// The 491 back-off is over: send the re-INVITE again, unless the peer's own offer is being
    /// answered now (then the 491 is the result).
    pub(super) fn glare_timer(&mut self, id: LegId, now: Instant, rng: &mut Rng) {
        let Some(mid) = self.mid_mut(id) else { return };
        let busy = mid.reoffer.is_some();
        let Some(r) = mid.reinvite.as_mut().filter(|r| r.phase == Phase::Backoff) else { return };
        if busy {
            let reason = r.give_up();
            self.events.push_back(SipEvent::ReinviteResult { leg: id, result: Err(reason) });
            return;
        }
        r.retry();
        self.send_reinvite(id, None, now, rng);
    }

    /// §17.1.1.3: the ACK of a non-2xx final response to our re-INVITE (the INVITE's top Via,
    /// Request-URI, From, Call-ID and Route; the response's To), sent again for retransmissions.
    fn reinvite_ack_non_2xx(&mut self, id: LegId, branch: &str, resp: &Response, again: bool, now: Instant) {
        let Some(peer) = self.clients.get(branch).map(|c| c.peer) else { return };
        let Some(r) = self.mid_mut(id).and_then(|m| m.reinvite.as_mut()) else { return };
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
        self.transmit(peer, bytes, now);
    }

    // ===== Ending =====

    /// The call is over without a BYE (§12.2.1.2: 481 or 408 to a request in the dialog).
    fn end_call(&mut self, id: LegId, reason: &str) {
        self.arm(SipTimer::Reoffer(id), None);
        self.arm(SipTimer::Glare(id), None);
        let gone = self.legs.remove(&id).is_some() || self.remove_inbound(id);
        if gone {
            self.events.push_back(SipEvent::Call { leg: id, progress: CallProgress::Ended { reason: reason.into() } });
        }
    }

    /// Sends BYE in the established dialog and ends the call with `reason` at once.
    fn end_with_bye(&mut self, id: LegId, reason: &str, now: Instant, rng: &mut Rng) {
        if let Some(tag) = self.legs.get(&id).and_then(|l| l.confirmed_tag()) {
            self.send_bye(id, &tag, now, rng);
        } else {
            self.inbound_send_bye(id, now, Some(rng));
        }
        self.end_call(id, reason);
    }

    // ===== Either kind of leg =====

    /// The leg's mid-call state.
    fn mid_mut(&mut self, id: LegId) -> Option<&mut MidCall> {
        if let Some(l) = self.legs.get_mut(&id) {
            return Some(&mut l.mid);
        }
        self.inbound.get_mut(&id).map(|l| &mut l.mid)
    }

    /// What building a request in the leg's established dialog needs; `None` before the call
    /// is answered and once it is closing.
    pub(super) fn dialog_ctx(&self, id: LegId) -> Option<DialogCtx> {
        self.leg_dialog_ctx(id).or_else(|| self.inbound_dialog_ctx(id))
    }

    /// Stores the leg's established dialog back after building a request.
    pub(super) fn store_dialog(&mut self, id: LegId, dialog: Dialog) {
        if self.legs.contains_key(&id) {
            self.leg_store_dialog(id, dialog);
        } else if let Some(d) = self.inbound_dialog_mut(id) {
            *d = dialog;
        }
    }

    /// The dialog with the peer's tag `remote_tag` of the leg.
    fn dialog_mut(&mut self, id: LegId, remote_tag: &str) -> Option<&mut Dialog> {
        if self.legs.contains_key(&id) {
            return self.leg_dialog_mut(id, remote_tag);
        }
        self.inbound_dialog_mut(id)
    }
}

/// §17.1.1.3: the ACK for a non-2xx final response to `invite`: its Request-URI, top Via, From,
/// Call-ID and Route; the response's To; the INVITE's CSeq number with method ACK.
pub(super) fn non_2xx_ack(invite: &Request, resp: &Response) -> Request {
    let mut h = Headers::default();
    if let Some(v) = invite.headers.get(&HeaderName::Via) {
        h.push(HeaderName::Via, v.value.clone());
    }
    put(&mut h, HeaderName::MaxForwards, "70");
    for name in [HeaderName::From, HeaderName::CallId] {
        if let Some(v) = invite.headers.get(&name) {
            h.push(name, v.value.clone());
        }
    }
    if let Some(to) = resp.headers.get(&HeaderName::To) {
        h.push(HeaderName::To, to.value.clone());
    }
    let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or_default();
    put(&mut h, HeaderName::CSeq, &format!("{seq} ACK"));
    for r in invite.headers.get_all(&HeaderName::Route) {
        h.push(HeaderName::Route, r.value.clone());
    }
    Request { method: Method::Ack, uri: invite.uri.clone(), headers: h, body: Vec::new() }
}
