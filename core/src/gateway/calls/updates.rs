//! Changes to an established call: re-INVITE both ways (spec §2.3 `session-update`, §3.3
//! `update`; hold and resume are re-INVITEs), SRTP re-keying, and DTMF both ways
//! (`session-dtmf-info` becomes INFO; a DTMF INFO from the SIP side becomes RFC 4733 events to
//! the browser).

use super::negotiation::{answer_layout, parse_sdp, rekey, video_index};
use crate::api::{Event, SessionEvent};
use crate::call::{self, CallId, Slot, State};
use crate::errors::{CallError, SdpProblem, SessionOp};
use crate::gateway::Gateway;
use crate::media::dtmf;
use crate::media::sdp::{self, Codec, MediaKind, SessionDescription};
use crate::media::srtp::CryptoAttribute;

impl Gateway {
    /// An INFO from the SIP side (answered 200 by the stack). A DTMF one
    /// (`application/dtmf-relay`, `application/dtmf`) is played to the browser as RFC 4733
    /// telephone-events in its audio stream; anything else is only logged.
    pub(super) fn sip_info(&mut self, id: CallId, content_type: &str, body: &[u8]) {
        let Some(event) = dtmf::from_info(content_type, body) else {
            log::info!("{id}: INFO {content_type} ({} bytes) from the SIP side ignored", body.len());
            return;
        };
        self.contained(id, "the SIP-side media", |gw| {
            let now = gw.now;
            let Some(call) = gw.calls.calls.get_mut(&id) else { return };
            let Some(media) = call.media.as_mut() else {
                log::info!("{id}: DTMF INFO before the media is up; dropped");
                return;
            };
            let packets = media.dtmf_to_browser(now, event);
            if packets.is_empty() {
                log::info!("{id}: DTMF INFO, but no telephone-event towards the browser; dropped");
            }
            for (p, payload) in packets {
                if let Err(e) = call.browser.write_rtp(now, false, p.pt, p.seq, p.ts, p.marker, &payload) {
                    log::debug!("{id}: DTMF event to the browser dropped: {e}");
                }
            }
            log::debug!("{id}: DTMF {} ({} ms) from a SIP INFO", event.code, event.duration_ms);
            gw.drain_browser(id);
        });
    }

    /// `session-dtmf-info`: one INFO (`application/dtmf-relay`) per DTMF digit of `digit`, which
    /// may have at most [`call::MAX_DTMF_DIGITS`] characters.
    pub(super) fn session_dtmf_info(
        &mut self,
        id: CallId,
        session: String,
        digit: &str,
        duration: Option<i64>,
    ) -> Result<(), CallError> {
        let Some(call) = self.calls.calls.get(&id) else { return Err(CallError::UnknownSession { session }) };
        if digit.chars().nth(call::MAX_DTMF_DIGITS).is_some() {
            return Err(CallError::TooManyDigits { max: call::MAX_DTMF_DIGITS });
        }
        if !call.state.can_send_dtmf() {
            return Err(CallError::InvalidState { session, op: SessionOp::DtmfInfo, state: call.state.name() });
        }
        let leg = call.leg.ok_or(CallError::NoDialog { session, op: SessionOp::DtmfInfo })?;
        for d in digit.chars().filter(|c| call::is_dtmf_digit(*c)) {
            let body = call::dtmf_relay_body(d, duration);
            self.sip.send_info(leg, "application/dtmf-relay", body, self.now, &mut self.rng);
        }
        Ok(())
    }

    /// `session-update`: in `remote-updating` the browser's answer to the SIP peer's re-offer;
    /// when established (or accepted) a new offer from the browser, sent as a re-INVITE.
    pub(super) fn session_update(
        &mut self,
        id: CallId,
        session: &str,
        sdp: &str,
        _after: &mut Vec<Event>,
    ) -> Result<(), CallError> {
        let now = self.now;
        let session_id = || session.to_string();
        let call = self.calls.calls.get_mut(&id).ok_or_else(|| CallError::UnknownSession { session: session_id() })?;
        let state = call.state.name();
        let leg =
            call.leg.ok_or_else(|| CallError::InvalidState { session: session_id(), op: SessionOp::Update, state })?;
        match call.state {
            State::RemoteUpdating => {
                call.browser.accept_answer(sdp, now).map_err(SdpProblem::Browser)?;
                // Towards the SIP peer we do what the browser does towards us: the reverse of our
                // direction towards the browser.
                let direction = call.browser.direction().unwrap_or_default().reversed();
                call.state = if call.ice_up { State::Established } else { State::Accepted };
                let codecs = call
                    .media
                    .as_ref()
                    .map(|m| m.codecs().iter().map(|p| Codec { pt: p.sip_pt, ..p.codec.clone() }).collect())
                    .unwrap_or_default();
                if let Some(m) = &mut call.media {
                    m.set_direction(direction);
                    m.touch(now);
                }
                if let Some(m) = call.video.as_mut().and_then(|v| v.media.as_mut()) {
                    m.set_direction(direction);
                }
                self.drain_browser(id);
                let peer =
                    self.calls.calls.get(&id).and_then(|c| c.media.as_ref()).and_then(|m| m.target()).map(|a| a.ip());
                let body = self.local_sdp_directed(id, codecs, peer, direction);
                match body {
                    Some(body) => self.sip.answer_reoffer(leg, Ok(body), now),
                    None => self.sip.answer_reoffer(leg, Err((500, "Server Internal Error".into())), now),
                }
                Ok(())
            }
            State::Established | State::Accepted => {
                let answer = call.browser.accept_offer(sdp, &[], now).map_err(SdpProblem::Browser)?;
                let direction = call.browser.direction().unwrap_or_default().reversed();
                call.state = State::LocalUpdating;
                call.pending_update = Some(answer);
                let codecs = call
                    .media
                    .as_ref()
                    .map(|m| m.codecs().iter().map(|p| Codec { pt: p.sip_pt, ..p.codec.clone() }).collect())
                    .unwrap_or_default();
                self.drain_browser(id);
                let peer =
                    self.calls.calls.get(&id).and_then(|c| c.media.as_ref()).and_then(|m| m.target()).map(|a| a.ip());
                let body = self.local_sdp_directed(id, codecs, peer, direction).ok_or(CallError::Internal)?;
                if !self.sip.reinvite(leg, body, now, &mut self.rng) {
                    if let Some(call) = self.calls.calls.get_mut(&id) {
                        call.state = State::Established;
                        call.pending_update = None;
                    }
                    return Err(CallError::NoDialog { session: session_id(), op: SessionOp::Update });
                }
                Ok(())
            }
            other => Err(CallError::InvalidState { session: session_id(), op: SessionOp::Update, state: other.name() }),
        }
    }

    /// The SIP peer re-offers (re-INVITE or UPDATE with SDP): the browser gets `update`
    /// `received` with our re-offer in the direction the peer asked for, and answers with
    /// `session-update`. The 200 waits for that answer.
    pub(super) fn call_reoffer(&mut self, id: CallId, sdp: &[u8]) {
        let now = self.now;
        let Some(call) = self.calls.calls.get_mut(&id) else { return };
        let Some(leg) = call.leg else { return };
        if !matches!(call.state, State::Established | State::Accepted) {
            self.sip.answer_reoffer(leg, Err((491, "Request Pending".into())), now);
            return;
        }
        let parsed = if sdp.is_empty() { Err(None) } else { parse_sdp(sdp).map_err(Some) };
        let (desc, idx) = match parsed {
            Ok(d) => d,
            Err(e) => {
                log::info!("{id}: re-offer refused: {}", e.map_or("late offer".to_string(), |e| e.to_string()));
                self.sip.answer_reoffer(leg, Err((488, "Not Acceptable Here".into())), now);
                return;
            }
        };
        let m = &desc.media[idx];
        if !self.rekey_srtp(id, m.usable_crypto()) {
            self.sip.answer_reoffer(leg, Err((488, "Not Acceptable Here".into())), now);
            return;
        }
        // The m-lines of the re-offer are the session's now; video stays as it was (in use, or
        // refused: port 0 stays 0).
        let video_at = video_index(&desc)
            .filter(|_| self.calls.calls.get(&id).and_then(|c| c.video.as_ref()).is_some_and(|v| v.media.is_some()));
        self.update_sip_video(id, &desc, video_at, None);
        let Some(call) = self.calls.calls.get_mut(&id) else { return };
        let video_at = video_at.filter(|_| call.video.as_ref().is_some_and(|v| v.media.is_some()));
        call.layout = answer_layout(&desc, idx, video_at);
        // What the peer will do is what we do towards the browser.
        let direction = desc.effective_direction(m);
        if let (Some(media), Some(remote)) = (&mut call.media, desc.rtp_addr(m)) {
            media.set_remote(remote);
        }
        let offer = match call.browser.create_reoffer(direction, now) {
            Ok(o) => o,
            Err(e) => {
                log::info!("{id}: no re-offer for the browser: {e}");
                self.sip.answer_reoffer(leg, Err((488, "Not Acceptable Here".into())), now);
                return;
            }
        };
        call.state = State::RemoteUpdating;
        self.drain_browser(id);
        self.update_event(id, crate::api::UpdateState::Received { sdp: offer });
    }

    /// The result of our re-INVITE.
    pub(super) fn call_reinvite_result(&mut self, id: CallId, result: Result<Vec<u8>, String>) {
        let now = self.now;
        let Some(call) = self.calls.calls.get_mut(&id) else { return };
        let answer = call.pending_update.take();
        call.state = if call.ice_up { State::Established } else { State::Accepted };
        match result {
            Ok(sdp) => {
                if let Ok((desc, idx)) = parse_sdp(&sdp) {
                    let m = &desc.media[idx];
                    let direction = desc.effective_direction(m).reversed();
                    let pos = self.calls.calls.get(&id).and_then(|c| c.layout.iter().position(|s| *s == Slot::Video));
                    let vdir = pos.and_then(|p| desc.media.get(p)).map(|vm| desc.effective_direction(vm).reversed());
                    self.update_sip_video(id, &desc, pos, vdir);
                    let rekeyed = self.rekey_srtp(id, m.usable_crypto());
                    let Some(call) = self.calls.calls.get_mut(&id) else { return };
                    if !rekeyed {
                        log::warn!("{id}: the re-INVITE's answer has no usable crypto; media keeps the old keys");
                    }
                    if let Some(media) = &mut call.media {
                        if let Some(remote) = desc.rtp_addr(m) {
                            media.set_remote(remote);
                        }
                        media.set_direction(direction);
                        media.touch(now);
                    }
                }
                if let Some(answer) = answer {
                    self.update_event(id, crate::api::UpdateState::Accepted { sdp: answer });
                }
            }
            Err(reason) => {
                log::info!("{id}: re-INVITE failed: {reason}");
                self.update_event(id, crate::api::UpdateState::Failed { reason });
            }
        }
    }

    /// A new SDP from the SIP peer in an SRTP call (RFC 4568 §7.1.4): a changed `a=crypto` gets
    /// new contexts, with our key under the peer's tag. False when the call is SRTP and the SDP
    /// has no usable crypto (or a plain call is offered one: it stays plain).
    fn rekey_srtp(&mut self, id: CallId, theirs: Option<&CryptoAttribute>) -> bool {
        let Some(call) = self.calls.calls.get_mut(&id) else { return false };
        rekey(&mut call.local_crypto, &mut call.remote_crypto, call.media.as_mut(), theirs, &mut self.rng)
    }

    /// A new SDP of the SIP peer (re-offer, or the answer to our re-INVITE) for the call's video
    /// line, at position `pos` of its layout: the media moves (address, `direction` from our
    /// side, keys), or video is refused for good (port 0, no such line, unusable crypto).
    fn update_sip_video(
        &mut self,
        id: CallId,
        desc: &SessionDescription,
        pos: Option<usize>,
        direction: Option<sdp::Direction>,
    ) {
        let Some(call) = self.calls.calls.get_mut(&id) else { return };
        let Some(v) = call.video.as_mut().filter(|v| v.media.is_some()) else { return };
        let m = pos.and_then(|p| desc.media.get(p)).filter(|m| m.kind == MediaKind::Video && !m.is_rejected());
        let Some(m) = m else {
            log::info!("{id}: video ended by the SIP side");
            v.refuse();
            return;
        };
        if !rekey(&mut v.local_crypto, &mut v.remote_crypto, v.media.as_mut(), m.usable_crypto(), &mut self.rng) {
            log::info!("{id}: video refused: no usable crypto");
            v.refuse();
            return;
        }
        if let Some(media) = v.media.as_mut() {
            if let Some(remote) = desc.rtp_addr(m) {
                media.set_remote(remote);
            }
            if let Some(d) = direction {
                media.set_direction(d);
            }
        }
    }

    fn update_event(&mut self, id: CallId, update: crate::api::UpdateState) {
        let Some(call) = self.calls.calls.get(&id) else { return };
        let (conn, session) = (call.conn, call.session.clone());
        self.send_event(conn, &Event::Session { session, event: SessionEvent::Update(update) });
        self.flush(conn);
    }
}
