//! Outgoing calls (`session-create`): the INVITE once the RTP pairs are bound, and the SIP
//! peer's answers (provisional with SDP, 200) applied to the SIP media and turned into the
//! browser's answer.

use super::negotiation::{answered_crypto, carried, carried_video, parse_sdp, srtp_contexts, video_index};
use crate::api::SessionState;
use crate::call::{Call, CallId, Origin, Pending, Slot, State};
use crate::config::SdesMode;
use crate::errors::{AnswerError, CallError, SdpProblem};
use crate::gateway::Gateway;
use crate::ids::ConnId;
use crate::media::bridge::{pair_codecs, SipMedia};
use crate::media::sdp::{self, Codec, MediaKind, SessionDescription};
use crate::media::sip_video_fb::VideoFeedback;
use crate::media::srtp::{CryptoAttribute, SrtpProfile};
use crate::sip::calls::CallParams;
use crate::sip::invite::CallProgress;
use std::net::{IpAddr, SocketAddr};

/// The SIP answer's video line (outgoing calls; media spec §2.3 point 2). The first answer decides:
/// port and a common format (and acceptable crypto) → video in use, and the browser may have
/// exactly those formats (returned, at its numbers and with its fmtp); else refused for good.
/// Later answers move the media (address, direction) or refuse it with port 0.
fn sip_video_answer(
    call: &mut Call,
    desc: &SessionDescription,
    now: std::time::Instant,
    rng: &mut crate::rng::Rng,
    mode: SdesMode,
) -> Vec<Codec> {
    let Some(pos) = call.layout.iter().position(|s| *s == Slot::Video) else { return Vec::new() };
    let Some(v) = call.video.as_mut().filter(|v| v.is_open()) else { return Vec::new() };
    let Some(m) = desc.media.get(pos).filter(|m| m.kind == MediaKind::Video && !m.is_rejected()) else {
        v.refuse();
        return Vec::new();
    };
    let remote = desc.rtp_addr(m).unwrap_or_else(|| SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0));
    let direction = desc.effective_direction(m).reversed();
    if let Some(media) = &mut v.media {
        media.set_remote(remote);
        media.set_direction(direction);
        return Vec::new();
    }
    if v.accepted.is_some() {
        return Vec::new();
    }
    let pairs = pair_codecs(&v.offered, &m.codecs(), true);
    let crypto = answered_crypto(m, &v.local_crypto, mode);
    let contexts = match &crypto {
        Ok(Some((ours, theirs))) => srtp_contexts(ours, theirs).map(Some),
        Ok(None) => Some(None),
        Err(()) => None,
    };
    let (Some(contexts), false) = (contexts, pairs.is_empty()) else {
        v.refuse();
        return Vec::new();
    };
    let mut media = SipMedia::new(remote, pairs.clone(), now, rng);
    media.set_direction(direction);
    // What the answer lists of the feedback we offered (RFC 4585 §4.2), at its numbers.
    let answered: Vec<Codec> = pairs.iter().map(|p| p.sip_codec()).collect();
    let offered = std::mem::take(&mut v.feedback);
    v.feedback = VideoFeedback::listed(m, &answered);
    v.feedback.fb.retain(|f| offered.fb.iter().any(|o| o.1 == f.1));
    if offered.rtx.is_empty() {
        v.feedback.rtx.clear();
    }
    media.set_video_feedback(v.feedback.clone(), rng);
    match (contexts, crypto) {
        (Some((tx, rx)), Ok(Some((ours, theirs)))) => {
            media.set_srtp(tx, rx);
            v.local_crypto = vec![ours];
            v.remote_crypto = Some(theirs);
            if m.proto.is_secure() {
                v.proto = sdp::Proto::RtpSavp;
            }
        }
        _ => v.local_crypto.clear(),
    }
    v.media = Some(media);
    v.accepted = Some(true);
    pairs
        .iter()
        .map(|p| {
            v.offered
                .iter()
                .find(|o| o.pt == p.browser_pt)
                .cloned()
                .unwrap_or(Codec { pt: p.browser_pt, ..p.codec.clone() })
        })
        .collect()
}

impl Gateway {
    pub(super) fn session_create(
        &mut self,
        conn: ConnId,
        session: String,
        account: String,
        uri: String,
        sdp: String,
        headers: Vec<(String, String)>,
    ) -> Result<(), CallError> {
        if self.calls.sessions.contains_key(&(conn, session.clone())) {
            return Err(CallError::SessionInUse { session });
        }
        if self.session_count(conn) >= self.config.max_sessions_per_connection {
            return Err(CallError::TooManySessions);
        }
        let (desc, idx) = parse_sdp(sdp.as_bytes())?;
        let offered = carried(&desc.media[idx]);
        if !offered.iter().any(|c| !c.name.eq_ignore_ascii_case("telephone-event")) {
            return Err(SdpProblem::NoSupportedAudioCodec.into());
        }
        let video = video_index(&desc).map(|i| carried_video(&desc.media[i])).filter(|v| !v.is_empty());
        // We offer the browser's `a=rtcp-fb` and RTX for those formats, at its numbers.
        let feedback = video_index(&desc)
            .zip(video.as_ref())
            .map(|(i, v)| VideoFeedback::listed(&desc.media[i], v))
            .unwrap_or_default();
        let id = self.new_call(conn, session, account, Origin::Outgoing)?;
        // Video (VP8, H.264) when the browser offers it: a second m-line on a second RTP pair.
        if let Some(video) = video {
            if self.add_video_line(id, video) {
                if let Some(call) = self.calls.calls.get_mut(&id) {
                    call.layout.push(Slot::Video);
                    if let Some(v) = call.video.as_mut() {
                        v.feedback = feedback;
                    }
                }
            }
        }
        let call = self.calls.calls.get_mut(&id).expect("just added");
        call.browser_offer = Some(sdp);
        call.offered = offered;
        call.pending = Pending::Invite { uri, headers };
        log::info!(
            "{conn}: {id} session {} to {}",
            call.session,
            match &call.pending {
                Pending::Invite { uri, .. } => uri.as_str(),
                _ => "",
            }
        );
        Ok(())
    }

    pub(super) fn send_invite(&mut self, id: CallId, uri: String, headers: Vec<(String, String)>) {
        let Some(call) = self.calls.calls.get(&id) else { return };
        let (conn, account, codecs) = (call.conn, call.account.clone(), call.offered.clone());
        let Some(identity) = self.identity(conn, &account) else {
            self.end_call(id, "480 Temporarily Unavailable", true);
            return;
        };
        // SDES (RFC 4568): both suites offered, each with its own key.
        let mode = self.config.sdes_srtp;
        if mode != SdesMode::Disabled {
            let crypto = vec![
                CryptoAttribute::generate(1, SrtpProfile::AesCm128HmacSha1_80, &mut self.rng),
                CryptoAttribute::generate(2, SrtpProfile::AesCm128HmacSha1_32, &mut self.rng),
            ];
            let proto = if mode == SdesMode::Mandatory { sdp::Proto::RtpSavp } else { sdp::Proto::RtpAvp };
            let has_video = self.calls.calls.get(&id).is_some_and(|c| c.video.is_some());
            // The video line has keys of its own (RFC 4568 §6.1: crypto is per m-line).
            let video_crypto = has_video.then(|| {
                vec![
                    CryptoAttribute::generate(1, SrtpProfile::AesCm128HmacSha1_80, &mut self.rng),
                    CryptoAttribute::generate(2, SrtpProfile::AesCm128HmacSha1_32, &mut self.rng),
                ]
            });
            if let Some(call) = self.calls.calls.get_mut(&id) {
                call.local_crypto = crypto;
                call.sip_proto = proto.clone();
                if let (Some(v), Some(c)) = (call.video.as_mut(), video_crypto) {
                    v.local_crypto = c;
                    v.proto = proto;
                }
            }
        }
        let Some(sdp) = self.local_sdp(id, codecs, None) else { return };
        let params = CallParams { identity, target: uri, sdp, headers };
        let leg = self.sip.invite(params, self.now, &mut self.rng);
        self.calls.legs.insert(leg, id);
        let Some(call) = self.calls.calls.get_mut(&id) else { return };
        call.leg = Some(leg);
        call.state = State::Progress;
        self.call_event(id, SessionState::Progress);
    }

    /// Applies the SIP peer's answer (outgoing): the SIP media, and the first time the browser's
    /// answer, returned.
    fn apply_sip_answer(&mut self, id: CallId, sdp: &[u8]) -> Result<Option<String>, AnswerError> {
        let (desc, idx) = parse_sdp(sdp)?;
        let m = &desc.media[idx];
        let remote = desc.rtp_addr(m);
        let direction = desc.effective_direction(m).reversed();
        let now = self.now;
        let Some(call) = self.calls.calls.get_mut(&id) else { return Err(AnswerError::Gone) };
        let pairs = pair_codecs(&call.offered, &m.codecs(), true);
        if !pairs.iter().any(|p| !p.codec.name.eq_ignore_ascii_case("telephone-event")) {
            return Err(AnswerError::NotAcceptable);
        }
        let remote = remote.unwrap_or_else(|| SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0));
        // SDES: the answer's crypto names one of our offered lines by tag and suite.
        let srtp =
            answered_crypto(m, &call.local_crypto, self.config.sdes_srtp).map_err(|()| AnswerError::NotAcceptable)?;
        let contexts = match &srtp {
            Some((ours, theirs)) => Some(srtp_contexts(ours, theirs).ok_or(AnswerError::NotAcceptable)?),
            None => None,
        };
        let video = sip_video_answer(call, &desc, now, &mut self.rng, self.config.sdes_srtp);
        let answer = if call.browser_answered {
            None
        } else {
            let mut allowed: Vec<Codec> = pairs.iter().map(|p| p.browser_codec()).collect();
            allowed.extend(video);
            let offer = call.browser_offer.take().unwrap_or_default();
            let answer = call.browser.accept_offer(&offer, &allowed, now).map_err(|e| {
                log::info!("{id}: the browser's offer could not be answered: {e}");
                AnswerError::NotAcceptable
            })?;
            call.browser_answered = true;
            if let Some(v) = call.video.as_mut().filter(|v| v.media.is_some() && !call.browser.has_video()) {
                log::info!("{id}: the browser refused the video the SIP side accepted");
                v.refuse();
            }
            Some(answer)
        };
        let fresh = call.media.is_none();
        let media = call.media.get_or_insert_with(|| SipMedia::new(remote, pairs.clone(), now, &mut self.rng));
        media.set_remote(remote);
        media.set_codecs(pairs);
        media.set_direction(direction);
        if let (Some((tx, rx)), Some((ours, theirs))) = (contexts, srtp) {
            if call.remote_crypto.as_ref() != Some(&theirs) {
                media.set_srtp(tx, rx);
                call.local_crypto = vec![ours];
                call.remote_crypto = Some(theirs);
                if call.sip_proto == sdp::Proto::RtpAvp && m.proto.is_secure() {
                    call.sip_proto = sdp::Proto::RtpSavp;
                }
            }
        } else if fresh {
            // No SRTP: later offers carry no crypto.
            call.local_crypto.clear();
        }
        if fresh {
            self.arm_media_timeout(id);
        }
        self.drain_browser(id);
        Ok(answer)
    }

    pub(super) fn call_progress(&mut self, id: CallId, progress: CallProgress) {
        match progress {
            CallProgress::Provisional { code, sdp, .. } => {
                self.call_event(id, SessionState::Proceeding { code });
                // sylkRTC-1 has no early media (SylkServer ≤ 4.1): its clients take the answer
                // from `accepted` only, so an 18x SDP is left for the 200, which repeats the
                // answer (RFC 3261 §13.3.1.4).
                let v1 = self.calls.calls.get(&id).is_some_and(|c| self.speaks_v1(c.conn));
                let sdp = sdp.filter(|_| !v1);
                match sdp {
                    None if code == 180 || code == 183 => self.call_event(id, SessionState::Ringing),
                    None => {}
                    Some(sdp) => match self.apply_sip_answer(id, &sdp) {
                        Ok(Some(answer)) => {
                            let call_id = self.leg_call_id(id);
                            if let Some(call) = self.calls.calls.get_mut(&id) {
                                call.state = State::EarlyMedia;
                            }
                            self.call_event(
                                id,
                                SessionState::EarlyMedia { sdp: answer, call_id: call_id.unwrap_or_default() },
                            );
                        }
                        Ok(None) => {}
                        Err(reason) => {
                            log::info!("{id}: early media refused: {reason}");
                            self.hang_up_call(id, &reason.to_string());
                        }
                    },
                }
            }
            CallProgress::Answered { sdp } => {
                let Some(call) = self.calls.calls.get(&id) else { return };
                let first = !call.browser_answered;
                let result = match sdp {
                    Some(sdp) => self.apply_sip_answer(id, &sdp),
                    None if first => Err(AnswerError::NotAcceptable),
                    None => Ok(None),
                };
                match result {
                    Ok(answer) => {
                        let call_id = self.leg_call_id(id);
                        let Some(call) = self.calls.calls.get_mut(&id) else { return };
                        if call.state != State::Established {
                            call.state = State::Accepted;
                        }
                        self.tally.call_answered(id, self.now);
                        if let Some(m) = &mut call.media {
                            m.touch(self.now);
                        }
                        let sdp_sent = answer.is_some();
                        self.call_event(
                            id,
                            SessionState::Accepted {
                                sdp: answer,
                                call_id: if sdp_sent { call_id } else { None },
                                headers: Vec::new(),
                            },
                        );
                    }
                    Err(reason) => {
                        log::info!("{id}: answer refused: {reason}");
                        self.hang_up_call(id, &reason.to_string());
                    }
                }
            }
            CallProgress::Ended { reason } => self.end_call(id, &reason, false),
        }
    }

    fn leg_call_id(&self, id: CallId) -> Option<String> {
        let call = self.calls.calls.get(&id)?;
        call.call_id.clone().or_else(|| call.leg.and_then(|l| self.sip.leg_call_id(l)))
    }
}
