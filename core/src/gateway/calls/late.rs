//! Incoming late offer (RFC 3261 §13.2.1, RFC 3264): an INVITE without SDP. The browser leg
//! offers every codec we carry (`incoming-session`); the browser's answer decides our SIP offer,
//! which goes in the 200; the SIP side's answer arrives in the ACK and starts the SIP-side media.
//! Audio only, plain RTP/AVP (a late-offer call with `sdes_srtp = mandatory` is refused 488: the
//! peer gave nothing to check our keys against before we must offer).

use super::negotiation::parse_sdp;
use crate::api::{Event, SessionEvent, SessionState};
use crate::call::{self, CallId, Pending, Slot, State};
use crate::config::SdesMode;
use crate::errors::{CallError, SdpProblem};
use crate::gateway::Gateway;
use crate::media::bridge::{pair_codecs, SipMedia};
use crate::media::sdp::Codec;

impl Gateway {
    /// The codecs our late-offer call offers the browser (and then the SIP side), or `Err` for
    /// the 488 when the configuration cannot offer plain RTP.
    pub(super) fn late_offer_codecs(&self) -> Result<Vec<Codec>, (u16, &'static str)> {
        if self.config.sdes_srtp == SdesMode::Mandatory {
            return Err((488, "Not Acceptable Here"));
        }
        Ok(call::supported_codecs().to_vec())
    }

    /// `session-answer` for a late-offer call: the browser's answer applies, and the codecs it
    /// kept (at our offer's numbers) become our SIP offer in the 200 (once the RTP pair is bound).
    pub(super) fn session_answer_late(
        &mut self,
        id: CallId,
        session: &str,
        sdp: &str,
        headers: Vec<(String, String)>,
        after: &mut Vec<Event>,
    ) -> Result<(), CallError> {
        let now = self.now;
        let call = self.calls.calls.get_mut(&id).ok_or(CallError::Internal)?;
        let (desc, idx) = parse_sdp(sdp.as_bytes())?;
        let pairs = pair_codecs(&call.offered, &desc.media[idx].codecs(), false);
        if !pairs.iter().any(|p| !p.codec.name.eq_ignore_ascii_case("telephone-event")) {
            return Err(SdpProblem::NoCommonCodec.into());
        }
        call.browser.accept_answer(sdp, now).map_err(SdpProblem::Browser)?;
        // Our SIP offer: what the browser kept, at the numbers we offered it (RFC 3264 §6.1: the
        // browser answered with them).
        call.answer_codecs = pairs.iter().map(|p| p.sip_codec()).collect();
        call.layout = vec![Slot::Audio];
        call.state = State::Accepted;
        call.answer_headers = headers;
        let ready = call.pairs_bound();
        if !ready {
            call.pending = Pending::Answer;
        }
        self.drain_browser(id);
        if ready {
            self.send_answer(id);
        }
        after.push(Event::Session {
            session: session.to_string(),
            event: SessionEvent::State(SessionState::Accepted { sdp: None, call_id: None, headers: Vec::new() }),
        });
        Ok(())
    }

    /// The ACK of a late-offer call carried the SIP side's answer to the offer in our 200: the
    /// SIP-side media starts (codecs paired with what the browser kept). An unusable answer
    /// hangs up with BYE.
    pub(super) fn late_answer_in_ack(&mut self, id: CallId, sdp: &[u8]) {
        let now = self.now;
        let Some(call) = self.calls.calls.get_mut(&id) else { return };
        if call.media.is_some() {
            log::debug!("{id}: an ACK with SDP for a call with media; ignored");
            return;
        }
        let answer = parse_sdp(sdp).ok().and_then(|(desc, idx)| {
            let m = &desc.media[idx];
            let addr = desc.rtp_addr(m)?;
            Some((addr, pair_codecs(&call.answer_codecs, &m.codecs(), true), m.proto.is_secure()))
        });
        let pairs = match answer {
            Some((addr, pairs, false))
                if pairs.iter().any(|p| !p.codec.name.eq_ignore_ascii_case("telephone-event")) =>
            {
                call.offer_addr = Some(addr);
                pairs
            }
            _ => {
                log::info!("{id}: the ACK's answer to our late-offer 200 is not usable; BYE");
                self.hang_up_call(id, "488 Not Acceptable Here");
                return;
            }
        };
        let Some(remote) = call.offer_addr else { return };
        call.media = Some(SipMedia::new(remote, pairs, now, &mut self.rng));
        log::info!("{id}: late offer answered in the ACK; SIP media to {remote}");
        self.arm_media_timeout(id);
    }
}
