//! Incoming calls: an INVITE for a registered account offered to its connection's browser
//! (`incoming-session`), and `session-answer` turned into our 200.

use super::negotiation::{answer_layout, carried, carried_video, parse_sdp, srtp_contexts, video_index};
use crate::api::{AccountEvent, Event, Identity, SessionEvent, SessionState};
use crate::call::{self, CallId, Origin, Pending, State};
use crate::config::SdesMode;
use crate::errors::{CallError, SdpProblem, SessionOp};
use crate::gateway::Gateway;
use crate::ids::ConnId;
use crate::media::bridge::{pair_codecs, SipMedia};
use crate::media::sdp::{self, Codec};
use crate::media::sip_video_fb::VideoFeedback;
use crate::media::srtp::CryptoAttribute;
use crate::sip::calls::LegId;
use crate::sip::incoming::IncomingCall;
use crate::sip::stack::RegId;
use std::net::{IpAddr, SocketAddr};

impl Gateway {
    /// An INVITE for registration `reg`: offered to its connection's browser, or declined.
    pub(super) fn incoming_call(&mut self, leg: LegId, reg: RegId, call: IncomingCall) {
        let Some((conn, account)) = self.regs.get(&reg).cloned() else {
            self.sip.decline(leg, 480, "Temporarily Unavailable", self.now);
            return;
        };
        match self.offer_incoming(conn, &account, leg, &call) {
            Ok(()) => {}
            Err((code, reason)) => {
                log::info!("{conn}: incoming call {} from {} declined: {code} {reason}", call.call_id, call.from_uri);
                self.sip.decline(leg, code, reason, self.now);
            }
        }
    }

    fn offer_incoming(
        &mut self,
        conn: ConnId,
        account: &str,
        leg: LegId,
        incoming: &IncomingCall,
    ) -> Result<(), (u16, &'static str)> {
        let mut session = call::incoming_session_id(&incoming.call_id);
        if self.speaks_v1(conn) {
            // SylkServer ≤ 4.1 (sylkRTC-1) ids were `uuid4().hex`: 32 hex digits, no dashes.
            session.retain(|c| c != '-');
        }
        if self.calls.sessions.contains_key(&(conn, session.clone())) {
            return Err((482, "Loop Detected"));
        }
        let sessions = self.session_count(conn);
        if sessions >= self.config.max_sessions_per_connection {
            log::warn!("{conn}: {sessions} sessions already (max_sessions_per_connection); incoming call refused");
            // SylkServer reports a call refused because every handle is busy as missed (spec
            // §3.2 `missed-session` (b)).
            let originator = Identity { uri: incoming.from_uri.clone(), display_name: incoming.display_name.clone() };
            let event = AccountEvent::MissedSession { originator };
            self.send_event(conn, &Event::Account { account: account.to_string(), event });
            self.flush(conn);
            return Err((486, "Busy Here"));
        }
        let prefixes = self.client(conn).and_then(|c| c.account(account)).map(|a| a.incoming_header_prefixes.clone());
        let Some(prefixes) = prefixes else { return Err((480, "Temporarily Unavailable")) };
        if incoming.sdp.is_empty() {
            // Late offer (§13.2.1): the browser is offered every codec we carry (`late`).
            let offered = self.late_offer_codecs()?;
            return self.offer_to_browser(conn, account, leg, incoming, session, prefixes, offered, None);
        }
        let (desc, idx) = parse_sdp(&incoming.sdp).map_err(|_| (488, "Not Acceptable Here"))?;
        let m = &desc.media[idx];
        let mode = self.config.sdes_srtp;
        let theirs = m.usable_crypto().cloned();
        let srtp = match (mode, m.proto.is_secure(), &theirs) {
            (SdesMode::Disabled, true, _) | (_, true, None) => return Err((488, "Not Acceptable Here")),
            (SdesMode::Mandatory, false, None) => return Err((488, "Not Acceptable Here")),
            (SdesMode::Disabled, false, _) | (_, false, None) => None,
            (_, _, Some(theirs)) => Some((CryptoAttribute::answer(theirs, &mut self.rng), theirs.clone())),
        };
        let secure = m.proto.is_secure();
        let offered = carried(m);
        if !offered.iter().any(|c| !c.name.eq_ignore_ascii_case("telephone-event")) {
            return Err((488, "Not Acceptable Here"));
        }
        let offer_addr = desc.rtp_addr(m);
        let id = self
            .new_call(conn, session.clone(), account.to_string(), Origin::Incoming)
            .map_err(|_| (503, "Service Unavailable"))?;
        // Video (VP8, H.264) when the SIP side offers it and we can take it; else refused (port 0).
        let mut video_at = None;
        // The browser leg has telephone-event/8000 only: another rate is mapped (`dtmf_rate`).
        let mut browser_codecs = crate::media::dtmf_rate::for_browser(&offered);
        if let Some(vi) = video_index(&desc) {
            let vm = &desc.media[vi];
            let vtheirs = vm.usable_crypto().cloned();
            let vsrtp = match (mode, vm.proto.is_secure(), &vtheirs) {
                (_, _, _) if !vm.proto.is_rtp() => Err(()),
                (SdesMode::Disabled, true, _) | (_, true, None) | (SdesMode::Mandatory, false, None) => Err(()),
                (SdesMode::Disabled, false, _) | (_, false, None) => Ok(None),
                (_, _, Some(theirs)) => Ok(Some((CryptoAttribute::answer(theirs, &mut self.rng), theirs.clone()))),
            };
            let vcodecs = carried_video(vm);
            if let (Ok(vsrtp), false) = (vsrtp, vcodecs.is_empty()) {
                if self.add_video_line(id, vcodecs.clone()) {
                    video_at = Some(vi);
                    browser_codecs.extend(vcodecs.iter().cloned());
                    if let Some(v) = self.calls.calls.get_mut(&id).and_then(|c| c.video.as_mut()) {
                        v.offer_addr = desc.rtp_addr(vm);
                        v.feedback = VideoFeedback::listed(vm, &vcodecs);
                        if vm.proto.is_secure() {
                            v.proto = sdp::Proto::RtpSavp;
                        }
                        if let Some((ours, theirs)) = vsrtp {
                            v.local_crypto = vec![ours];
                            v.remote_crypto = Some(theirs);
                        }
                    }
                }
            }
        }
        let Some(call) = self.calls.calls.get_mut(&id) else { return Err((500, "Server Internal Error")) };
        call.layout = answer_layout(&desc, idx, video_at);
        if let Some((ours, theirs)) = srtp {
            call.local_crypto = vec![ours];
            call.remote_crypto = Some(theirs);
            call.sip_proto = if secure { sdp::Proto::RtpSavp } else { sdp::Proto::RtpAvp };
        }
        call.offer_addr = offer_addr;
        self.offer_to_browser(conn, account, leg, incoming, session, prefixes, offered, Some((id, browser_codecs)))
    }

    /// Offers the browser `browser_codecs` for the incoming call `id` (created here when `None`:
    /// a late offer, with `offered` as its codecs) and sends `incoming-session`.
    #[allow(clippy::too_many_arguments)]
    fn offer_to_browser(
        &mut self,
        conn: ConnId,
        account: &str,
        leg: LegId,
        incoming: &IncomingCall,
        session: String,
        prefixes: Vec<String>,
        offered: Vec<Codec>,
        created: Option<(CallId, Vec<Codec>)>,
    ) -> Result<(), (u16, &'static str)> {
        let late = created.is_none();
        let (id, browser_codecs) = match created {
            Some(c) => c,
            None => {
                let id = self
                    .new_call(conn, session.clone(), account.to_string(), Origin::Incoming)
                    .map_err(|_| (503, "Service Unavailable"))?;
                (id, offered.clone())
            }
        };
        let now = self.now;
        let Some(call) = self.calls.calls.get_mut(&id) else { return Err((500, "Server Internal Error")) };
        call.late_offer = late;
        let offer = match call.browser.create_offer(&browser_codecs, now) {
            Ok(o) => o,
            Err(e) => {
                log::info!("{id}: no offer for the browser: {e}");
                self.drop_call(id);
                return Err((488, "Not Acceptable Here"));
            }
        };
        call.offered = offered;
        call.leg = Some(leg);
        call.call_id = Some(incoming.call_id.clone());
        let originator = Identity { uri: incoming.from_uri.clone(), display_name: incoming.display_name.clone() };
        call.originator = Some(originator.clone());
        self.calls.legs.insert(leg, id);
        self.drain_browser(id);
        let headers = call::filter_headers(&incoming.headers, &prefixes);
        let event = Event::Account {
            account: account.to_string(),
            event: AccountEvent::IncomingSession {
                session,
                originator,
                sdp: offer,
                call_id: incoming.call_id.clone(),
                headers,
            },
        };
        log::info!("{conn}: {id} incoming call {} from {}", incoming.call_id, incoming.from_uri);
        self.send_event(conn, &event);
        self.flush(conn);
        Ok(())
    }

    pub(super) fn session_answer(
        &mut self,
        id: CallId,
        session: &str,
        sdp: &str,
        headers: Vec<(String, String)>,
        after: &mut Vec<Event>,
    ) -> Result<(), CallError> {
        let now = self.now;
        let session_id = || session.to_string();
        let call = self.calls.calls.get_mut(&id).ok_or_else(|| CallError::UnknownSession { session: session_id() })?;
        if call.origin == Origin::Outgoing {
            return Err(CallError::AnswerOutgoing { session: session_id() });
        }
        if call.state != State::Connecting {
            return Err(CallError::InvalidState {
                session: session_id(),
                op: SessionOp::Answer,
                state: call.state.name(),
            });
        }
        if call.late_offer {
            return self.session_answer_late(id, session, sdp, headers, after);
        }
        let (desc, idx) = parse_sdp(sdp.as_bytes())?;
        call.browser.accept_answer(sdp, now).map_err(SdpProblem::Browser)?;
        let pairs = pair_codecs(&call.offered, &desc.media[idx].codecs(), false);
        if !pairs.iter().any(|p| !p.codec.name.eq_ignore_ascii_case("telephone-event")) {
            return Err(SdpProblem::NoCommonCodec.into());
        }
        call.answer_codecs = pairs.iter().map(|p| p.sip_codec()).collect();
        let remote = call.offer_addr.unwrap_or_else(|| SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0));
        let mut media = SipMedia::new(remote, pairs, now, &mut self.rng);
        if let (Some(ours), Some(theirs)) = (call.local_crypto.first(), &call.remote_crypto) {
            let (tx, rx) = srtp_contexts(ours, theirs).ok_or(CallError::Internal)?;
            media.set_srtp(tx, rx);
        }
        call.media = Some(media);
        // Video: what the browser kept of the SIP side's formats, or refused (port 0).
        let browser_video = video_index(&desc).map(|i| desc.media[i].codecs()).unwrap_or_default();
        let has_video = call.browser.has_video();
        if let Some(v) = call.video.as_mut() {
            let pairs = if has_video { pair_codecs(&v.offered, &browser_video, false) } else { Vec::new() };
            let contexts = match (v.local_crypto.first(), &v.remote_crypto) {
                (Some(ours), Some(theirs)) => srtp_contexts(ours, theirs).map(Some),
                _ => Some(None),
            };
            match (contexts, pairs.is_empty()) {
                (Some(contexts), false) => {
                    v.answer_codecs = pairs.iter().map(|p| Codec { pt: p.sip_pt, ..p.codec.clone() }).collect();
                    let remote = v.offer_addr.unwrap_or_else(|| SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0));
                    let mut media = SipMedia::new(remote, pairs, now, &mut self.rng);
                    // RFC 4585 §4.2: we answer the feedback offered for the formats we keep.
                    v.feedback.retain(&v.answer_codecs.iter().map(|c| c.pt).collect::<Vec<_>>());
                    media.set_video_feedback(v.feedback.clone(), &mut self.rng);
                    if let Some((tx, rx)) = contexts {
                        media.set_srtp(tx, rx);
                    }
                    v.media = Some(media);
                    v.accepted = Some(true);
                }
                _ => v.refuse(),
            }
        }
        call.state = State::Accepted;
        call.answer_headers = headers;
        self.tally.call_answered(id, self.now);
        let ready = call.pairs_bound();
        if !ready {
            call.pending = Pending::Answer;
        }
        self.drain_browser(id);
        if ready {
            self.send_answer(id);
        }
        self.arm_media_timeout(id);
        after.push(Event::Session {
            session: session.to_string(),
            event: SessionEvent::State(SessionState::Accepted { sdp: None, call_id: None, headers: Vec::new() }),
        });
        Ok(())
    }

    pub(super) fn send_answer(&mut self, id: CallId) {
        let Some(call) = self.calls.calls.get(&id) else { return };
        let (leg, codecs, peer) = (call.leg, call.answer_codecs.clone(), call.offer_addr.map(|a| a.ip()));
        let headers = call.answer_headers.clone();
        let Some(leg) = leg else { return };
        let Some(sdp) = self.local_sdp(id, codecs, peer) else { return };
        self.sip.answer_with_headers(leg, sdp, headers, self.now);
    }
}
