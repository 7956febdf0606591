//! The call layer: sylkRTC sessions (spec `sylkrtc-protocol.md` §2.3, §3.3, §4.1) joined to SIP
//! legs (`sip/calls.rs`, `sip/incoming.rs`), browser legs (`media/webrtc.rs`, behind the demux of
//! the shared WebRTC socket) and SIP-side media (`media/bridge.rs`, on an RTP/RTCP pair).
//!
//! # Outgoing (`session-create`)
//! The browser's offer is read and narrowed to the codecs we carry (at the browser's numbers);
//! an RTP pair is asked for; once it is bound the INVITE goes out with our SIP offer (`progress`).
//! The first SIP answer (a 183 with SDP, or the 200) becomes the browser's answer, with exactly
//! the codecs the SIP side accepted (`early-media` or `accepted` with `sdp`, once); a later,
//! different SDP is absorbed by the media plane. `established` follows ICE+DTLS.
//!
//! # Incoming (an INVITE for a registered account)
//! The SIP offer is narrowed the same way; the browser leg makes the offer (`incoming-session`);
//! `session-answer` applies the browser's answer and sends the 200 with the codecs it kept.
//!
//! # Video
//! A browser offer (or SIP offer) with VP8/H.264 video gets a second SIP-side m-line on a second
//! RTP pair ([`VideoLine`]); the SIP answer (or the browser's) decides once whether it is used,
//! with exactly the answered formats (H.264 paired by packetization mode and profile). A refused
//! line stays port 0 in every later SDP. Video RTP is bridged like audio (its own SSRC/seq/ts
//! rewriting and latching); RTCP is terminated per leg, but keyframe requests cross: a PLI/FIR from
//! the SIP side asks the browser for a key frame, the browser's becomes an RTCP PLI to the SIP side.
//! The SIP-side m-lines of a call, in order, are its `layout` ([`Slot`]): our offers keep them,
//! our answers follow the offer's (other lines refused).
//!
//! # Ending
//! `terminated` is sent exactly once, when the call is dropped from the tables: from the SIP
//! stack's end of the leg, a decline, the media timeout, or a failure here. A connection that goes
//! away hangs up its calls without events.
//!
//! # Files
//! This file takes the session requests and SIP events in, creates and ends calls. The rest, by
//! what it holds: [`table`] (the call tables and timers), `negotiation` (pure SDP and crypto
//! decisions), `outgoing`, `incoming`, `late` (incoming INVITEs without SDP), `updates`
//! (re-INVITE, hold, DTMF) and `media` (browser legs, SIP-side RTP, call timers);
//! `gateway/containment.rs` contains panics of the media.
//! Arrows go one way: the others import `table` and `negotiation`, nothing imports them back.
//! Errors are [`crate::errors::CallError`] (SylkServer's strings are there).

mod incoming;
mod late;
mod media;
mod negotiation;
mod outgoing;
pub(super) mod table;
mod updates;

pub use media::MEDIA_TIMEOUT_REASON;

use crate::api::{AccountEvent, Dialect, Event, RequestBody, SessionEvent, SessionState};
use crate::call::{self, Call, CallId, Origin, Pending, RtpPair, Slot, State, VideoLine};
use crate::errors::{CallError, MediaShortage};
use crate::gateway::Gateway;
use crate::ids::{ConnId, SocketId};
use crate::media::sdp::{self, Codec, LocalMedia, LocalSession, MediaKind, SdpVersioner};
use crate::media::webrtc::{BrowserLeg, LegOutput};
use crate::sip::calls::LegId;
use crate::sip::incoming::IncomingCall;
use crate::sip::invite::CallProgress;
use crate::sip::stack::{RegId, SipIdentity};
use negotiation::video_local_media;
use std::net::{IpAddr, SocketAddr};
use table::CallTimer;

impl Gateway {
    /// A session request from connection `conn` (already validated; the account of a
    /// `session-create` is known). Answers it with one `ack` or `error`, followed by the events
    /// it caused.
    pub(super) fn session_request(&mut self, conn: ConnId, transaction: String, body: RequestBody) {
        let mut after = Vec::new();
        let result = self.apply_session_request(conn, body, &mut after);
        let answer = match result {
            Ok(()) => Event::Ack { transaction },
            Err(error) => {
                log::info!("{conn}: session request failed ({transaction}): {error}");
                Event::Error { transaction, error: error.to_string() }
            }
        };
        self.send_event(conn, &answer);
        // Nothing but its own `terminated` follows the end of a session (the call may have ended
        // meanwhile, e.g. a contained panic).
        after.retain(|e| match e {
            Event::Session { event: SessionEvent::State(SessionState::Terminated { .. }), .. } => true,
            Event::Session { session, .. } => self.calls.sessions.contains_key(&(conn, session.clone())),
            _ => true,
        });
        for e in &after {
            self.send_event(conn, e);
        }
    }

    fn call_of_session(&self, conn: ConnId, session: &str) -> Result<CallId, CallError> {
        self.calls
            .sessions
            .get(&(conn, session.to_string()))
            .copied()
            .ok_or_else(|| CallError::UnknownSession { session: session.to_string() })
    }

    /// Sessions `conn` has (`Config::max_sessions_per_connection`).
    fn session_count(&self, conn: ConnId) -> usize {
        self.calls.sessions.range((conn, String::new())..).take_while(|((c, _), _)| *c == conn).count()
    }

    fn apply_session_request(
        &mut self,
        conn: ConnId,
        body: RequestBody,
        after: &mut Vec<Event>,
    ) -> Result<(), CallError> {
        match body {
            RequestBody::SessionCreate { session, account, uri, sdp, headers } => {
                let headers = headers.into_iter().map(|h| (h.name, h.value)).collect();
                let headers = call::custom_headers(headers, &self.config.allowed_client_headers);
                self.session_create(conn, session, account, uri, sdp, headers)
            }
            RequestBody::SessionAnswer { session, sdp, headers } => {
                let id = self.call_of_session(conn, &session)?;
                let headers = headers.into_iter().map(|h| (h.name, h.value)).collect();
                let headers = call::custom_headers(headers, &self.config.allowed_client_headers);
                self.session_answer(id, &session, &sdp, headers, after)
            }
            RequestBody::SessionTrickle { session, candidates } => {
                let id = self.call_of_session(conn, &session)?;
                self.session_trickle(id, candidates);
                Ok(())
            }
            RequestBody::SessionTerminate { session } => {
                let id = self.call_of_session(conn, &session)?;
                if self.calls.calls.get(&id).is_some_and(|c| c.leg.is_none()) {
                    // No INVITE yet (its ports are being bound): the call ends now, and its
                    // `terminated` follows the answer to this request.
                    self.drop_call(id);
                    log::info!("{conn}: {id} session {session} terminated before its INVITE");
                    let reason = "487 Request Terminated".to_string();
                    let state = SessionEvent::State(SessionState::Terminated { reason });
                    after.push(Event::Session { session, event: state });
                    return Ok(());
                }
                self.terminate_call(id);
                Ok(())
            }
            RequestBody::SessionDtmfInfo { session, digit, duration } => {
                let id = self.call_of_session(conn, &session)?;
                self.session_dtmf_info(id, session, &digit, duration)
            }
            RequestBody::SessionUpdate { session, sdp, .. } => {
                let id = self.call_of_session(conn, &session)?;
                self.session_update(id, &session, &sdp, after)
            }
            RequestBody::SessionMessage { session, message_id, content, content_type, timestamp } => {
                let id = self.call_of_session(conn, &session)?;
                self.session_message(id, message_id, &content, &content_type, timestamp)
            }
            _ => Err(CallError::Internal),
        }
    }

    /// The ICE host candidates of browser legs: every advertised media address with the WebRTC
    /// socket's port.
    pub(super) fn webrtc_candidates(&self) -> Option<Vec<SocketAddr>> {
        let (_, local) = self.media.webrtc()?;
        let ips: Vec<IpAddr> =
            self.config.media.media_advertised_addresses.iter().filter_map(|a| a.parse().ok()).collect();
        if ips.is_empty() {
            return Some(vec![local]);
        }
        Some(ips.into_iter().map(|ip| SocketAddr::new(ip, local.port())).collect())
    }

    /// The address in our SIP-side SDP: the first advertised media address of the peer's
    /// family (IPv4 when unknown), else the WebRTC socket's IP.
    fn sip_media_address(&self, peer: Option<IpAddr>) -> IpAddr {
        let ips: Vec<IpAddr> =
            self.config.media.media_advertised_addresses.iter().filter_map(|a| a.parse().ok()).collect();
        let v6 = peer.is_some_and(|p| p.is_ipv6() && p.to_canonical().is_ipv6());
        ips.iter()
            .find(|ip| ip.is_ipv6() == v6)
            .or(ips.first())
            .copied()
            .or_else(|| self.media.webrtc().map(|(_, a)| a.ip()))
            .unwrap_or(IpAddr::from([127, 0, 0, 1]))
    }

    fn new_call(
        &mut self,
        conn: ConnId,
        session: String,
        account: String,
        origin: Origin,
    ) -> Result<CallId, CallError> {
        let unavailable = CallError::MediaUnavailable;
        let cert = self.config.webrtc.dtls_cert.clone().ok_or(unavailable(MediaShortage::NoDtlsCertificate))?;
        let candidates = self.webrtc_candidates().ok_or(unavailable(MediaShortage::NoWebRtcSocket))?;
        let (rtp, rtcp, _) = self.request_rtp_pair().ok_or(unavailable(MediaShortage::NoPorts))?;
        let browser = BrowserLeg::new(&cert, &candidates, &mut self.rng);
        let id = CallId(self.calls.next);
        self.calls.next += 1;
        if self.calls.demux.register(browser.ufrag(), id).is_err() {
            self.release_rtp_pair(rtp);
            return Err(CallError::Internal);
        }
        let sdp_id = self.rng.next_u64() >> 2;
        let call = Call {
            conn,
            session: session.clone(),
            account,
            origin,
            state: State::Connecting,
            leg: None,
            call_id: None,
            browser,
            browser_offer: None,
            offered: Vec::new(),
            offer_addr: None,
            browser_answered: false,
            rtp: RtpPair::new(rtp, rtcp),
            media: None,
            sdp: SdpVersioner::new(sdp_id, sdp_id),
            pending: Pending::None,
            ice_up: false,
            answer_codecs: Vec::new(),
            originator: None,
            pending_update: None,
            sip_proto: sdp::Proto::RtpAvp,
            local_crypto: Vec::new(),
            remote_crypto: None,
            answer_headers: Vec::new(),
            video: None,
            layout: vec![Slot::Audio],
            late_offer: false,
            browser_timer: None,
        };
        self.calls.calls.insert(id, Box::new(call));
        self.tally.call_started(id, origin, self.now);
        self.calls.sessions.insert((conn, session), id);
        self.calls.sockets.insert(rtp, id);
        Ok(id)
    }

    /// Gives call `id` a video line offering `offered` on a second RTP pair of its own; false
    /// (no video, logged) when no pair is free.
    fn add_video_line(&mut self, id: CallId, offered: Vec<Codec>) -> bool {
        let Some((rtp, rtcp, _)) = self.request_rtp_pair() else {
            log::info!("{id}: no RTP pair for video; the call is audio only");
            return false;
        };
        self.calls.sockets.insert(rtp, id);
        let Some(call) = self.calls.calls.get_mut(&id) else { return false };
        call.video = Some(Box::new(VideoLine::new(RtpPair::new(rtp, rtcp), offered)));
        true
    }

    /// The SIP identity of `account` as added on `conn` (a fresh Contact user each time).
    pub(super) fn identity(&mut self, conn: ConnId, account: &str) -> Option<SipIdentity> {
        let acc = self.client(conn)?.account(account)?.clone();
        Some(SipIdentity {
            contact_user: crate::client::contact_user(&acc.aor, &mut self.rng),
            aor: acc.aor,
            secret: acc.password,
            display_name: acc.display_name,
            user_agent: acc.user_agent,
        })
    }

    /// Our SIP-side SDP for the call: one sendrecv audio line on our RTP port with `codecs`.
    fn local_sdp(&mut self, id: CallId, codecs: Vec<Codec>, peer: Option<IpAddr>) -> Option<Vec<u8>> {
        self.local_sdp_directed(id, codecs, peer, sdp::Direction::SendRecv)
    }

    /// [`Self::local_sdp`] with a direction (hold and resume).
    fn local_sdp_directed(
        &mut self,
        id: CallId,
        codecs: Vec<Codec>,
        peer: Option<IpAddr>,
        direction: sdp::Direction,
    ) -> Option<Vec<u8>> {
        let address = self.sip_media_address(peer);
        let call = self.calls.calls.get_mut(&id)?;
        let port = call.rtp.port?;
        let audio = LocalMedia {
            ptime: Some(20),
            direction,
            proto: call.sip_proto.clone(),
            crypto: call.local_crypto.clone(),
            ..LocalMedia::new(MediaKind::Audio, port, codecs)
        };
        // Every m-line of the session, in order (video follows the audio direction).
        let media = call
            .layout
            .iter()
            .map(|slot| match slot {
                Slot::Audio => audio.clone(),
                Slot::Video => video_local_media(call.video.as_deref(), direction),
                Slot::Reject(m) => m.clone(),
            })
            .collect();
        let session = LocalSession { username: "sylkgw".into(), session_name: "sylkgw".into(), address, media };
        Some(call.sdp.render(&session).into_bytes())
    }

    /// Both sockets of the call's RTP pair are bound: what waited for them goes out.
    pub(super) fn call_rtp_ready(&mut self, rtp: SocketId, port: u16) {
        let Some(&id) = self.calls.sockets.get(&rtp) else {
            log::debug!("{rtp}: RTP pair bound for no call");
            return;
        };
        let Some(call) = self.calls.calls.get_mut(&id) else { return };
        match call.video.as_mut() {
            Some(v) if v.rtp.rtp == rtp => v.rtp.port = Some(port),
            _ => call.rtp.port = Some(port),
        }
        self.run_pending(id);
    }

    /// What waited for the call's RTP pairs goes out once all are bound.
    fn run_pending(&mut self, id: CallId) {
        let Some(call) = self.calls.calls.get_mut(&id) else { return };
        if !call.pairs_bound() {
            return;
        }
        match std::mem::replace(&mut call.pending, Pending::None) {
            Pending::None => {}
            Pending::Invite { uri, headers } => self.send_invite(id, uri, headers),
            Pending::Answer => self.send_answer(id),
        }
    }

    /// The call's RTP pair could not be bound.
    pub(super) fn call_rtp_failed(&mut self, rtp: SocketId) {
        let Some(&id) = self.calls.sockets.get(&rtp) else { return };
        self.calls.sockets.remove(&rtp);
        if let Some(call) = self.calls.calls.get_mut(&id) {
            if let Some(v) = call.video.as_mut().filter(|v| v.rtp.rtp == rtp) {
                // Without its pair the video line is refused (port 0); the call goes on.
                log::warn!("{id}: no RTP ports for video; the call is audio only");
                v.refuse();
                self.run_pending(id);
                return;
            }
            call.rtp.port = None;
        }
        log::warn!("{id}: no RTP ports; ending the call");
        self.end_call(id, "503 Service Unavailable", true);
    }

    /// `session-terminate`: decline a ringing incoming call, else hang up (CANCEL or BYE).
    fn terminate_call(&mut self, id: CallId) {
        let Some(call) = self.calls.calls.get(&id) else { return };
        match (call.origin, call.state, call.leg) {
            (Origin::Incoming, State::Connecting, Some(leg)) => {
                let code = self.config.decline_code;
                let reason = crate::sip::message::default_reason(code);
                self.sip.decline(leg, code, reason, self.now);
            }
            (_, _, Some(leg)) => self.sip.hang_up(leg, self.now, &mut self.rng),
            (_, _, None) => self.end_call(id, "487 Request Terminated", true),
        }
    }

    /// Hangs up the SIP leg because of us (no usable answer, media timeout) and ends the call
    /// with `reason` at once; the leg finishes in the stack on its own.
    fn hang_up_call(&mut self, id: CallId, reason: &str) {
        self.end_call(id, reason, true);
    }

    /// Drops the call and sends `terminated` with `reason` (once). `hang_up`: the SIP leg is
    /// still up and must be ended (CANCEL, BYE or a decline).
    pub(super) fn end_call(&mut self, id: CallId, reason: &str, hang_up: bool) {
        let Some(call) = self.calls.calls.get(&id) else { return };
        let (conn, session, leg) = (call.conn, call.session.clone(), call.leg);
        // The caller gave up before the browser answered (spec §3.3).
        let missed = (call.origin == Origin::Incoming && call.state == State::Connecting && reason.starts_with("487"))
            .then(|| call.originator.clone())
            .flatten();
        let account = call.account.clone();
        if hang_up {
            if let Some(leg) = leg {
                self.release_leg(id, leg);
            }
        }
        self.drop_call(id);
        log::info!("{conn}: {id} session {session} terminated: {reason}");
        let event = Event::Session {
            session: session.clone(),
            event: SessionEvent::State(SessionState::Terminated { reason: reason.to_string() }),
        };
        self.send_event(conn, &event);
        if let Some(originator) = missed {
            self.send_event(conn, &Event::Account { account, event: AccountEvent::MissedSession { originator } });
        }
        self.flush(conn);
    }

    /// Ends the SIP leg of a call that is going away: a ringing incoming call is declined 480
    /// (the browser is gone) unless it is answered, else CANCEL or BYE.
    fn release_leg(&mut self, id: CallId, leg: LegId) {
        self.calls.legs.remove(&leg);
        if self.sip.is_ringing(leg) {
            log::debug!("{id}: declining the ringing leg");
            self.sip.decline(leg, 480, "Temporarily Unavailable", self.now);
        } else {
            self.sip.hang_up(leg, self.now, &mut self.rng);
        }
    }

    /// Forgets the call: tables, timers, browser leg, RTP pair. No event.
    fn drop_call(&mut self, id: CallId) {
        let Some(mut call) = self.calls.calls.remove(&id) else { return };
        let lost = call.media.as_ref().map_or(0, |m| m.lost())
            + call.video.as_ref().and_then(|v| v.media.as_ref()).map_or(0, |m| m.lost());
        self.tally.call_ended(id, lost);
        self.calls.sessions.remove(&(call.conn, call.session.clone()));
        if let Some(leg) = call.leg {
            self.calls.legs.remove(&leg);
        }
        self.calls.demux.remove(id);
        if self.calls.sockets.remove(&call.rtp.rtp).is_some() {
            self.release_rtp_pair(call.rtp.rtp);
        }
        if let Some(v) = &call.video {
            if self.calls.sockets.remove(&v.rtp.rtp).is_some() {
                self.release_rtp_pair(v.rtp.rtp);
            }
        }
        // The DTLS close_notify and RTCP BYE are sent if the browser is reachable. A leg a panic
        // left broken (`containment`) may panic again here: that is caught too.
        let now = self.now;
        let closing = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut sends = Vec::new();
            call.browser.close();
            while let Some(o) = call.browser.poll(now) {
                match o {
                    LegOutput::Transmit { to, payload, .. } => sends.push((to, payload)),
                    LegOutput::Timeout(_) | LegOutput::Closed => break,
                    _ => {}
                }
            }
            sends
        }));
        match closing {
            Ok(sends) => sends.into_iter().for_each(|(to, payload)| self.send_webrtc(to, payload)),
            Err(_) => log::error!("{id}: the browser leg panicked while closing"),
        }
        self.calls.timers.stop_range((id, CallTimer::FIRST)..=(id, CallTimer::LAST));
    }

    /// The WebSocket `conn` went away: its calls are hung up without events.
    pub(super) fn release_calls(&mut self, conn: ConnId) {
        let ids: Vec<CallId> = self
            .calls
            .sessions
            .range((conn, String::new())..)
            .take_while(|((c, _), _)| *c == conn)
            .map(|(_, id)| *id)
            .collect();
        for id in ids {
            if let Some(leg) = self.calls.calls.get(&id).and_then(|c| c.leg) {
                self.release_leg(id, leg);
            }
            log::info!("{conn}: {id} hung up with its connection");
            self.drop_call(id);
        }
    }

    /// A SIP stack event about a call leg.
    pub(super) fn call_sip_event(&mut self, leg: LegId, progress: CallProgress) {
        let Some(&id) = self.calls.legs.get(&leg) else {
            log::debug!("leg {leg:?}: {progress:?} for no call");
            return;
        };
        self.call_progress(id, progress);
    }

    /// A mid-call SIP event (re-offer, INFO, our re-INVITE's result).
    pub(super) fn call_sip_midcall(&mut self, ev: crate::sip::stack::SipEvent) {
        use crate::sip::stack::SipEvent;
        let leg = match &ev {
            SipEvent::Info { leg, .. }
            | SipEvent::Reoffer { leg, .. }
            | SipEvent::ReofferAck { leg, .. }
            | SipEvent::ReinviteResult { leg, .. } => *leg,
            _ => return,
        };
        let Some(&id) = self.calls.legs.get(&leg) else {
            log::debug!("leg {leg:?}: mid-call event for no call");
            if let SipEvent::Reoffer { .. } = ev {
                self.sip.answer_reoffer(leg, Err((481, "Call/Transaction Does Not Exist".into())), self.now);
            }
            return;
        };
        match ev {
            SipEvent::Info { content_type, body, .. } => self.sip_info(id, &content_type, &body),
            SipEvent::Reoffer { sdp, .. } => self.call_reoffer(id, &sdp),
            SipEvent::ReofferAck { sdp, .. } => match self.calls.calls.get(&id) {
                Some(call) if call.late_offer => self.late_answer_in_ack(id, &sdp),
                _ => log::debug!("{id}: late-offer ACK ignored"),
            },
            SipEvent::ReinviteResult { result, .. } => self.call_reinvite_result(id, result),
            _ => {}
        }
    }

    /// An incoming INVITE for a registration.
    pub(super) fn call_sip_incoming(&mut self, leg: LegId, reg: RegId, call: IncomingCall) {
        self.incoming_call(leg, reg, call);
    }

    /// Whether connection `conn` negotiated `sylkRTC-1`.
    pub(super) fn speaks_v1(&self, conn: ConnId) -> bool {
        self.client(conn).is_some_and(|c| c.dialect == Dialect::V1)
    }

    /// Sends a session `state` event for the call.
    fn call_event(&mut self, id: CallId, state: SessionState) {
        let Some(call) = self.calls.calls.get(&id) else { return };
        let (conn, session) = (call.conn, call.session.clone());
        self.send_event(conn, &Event::Session { session, event: SessionEvent::State(state) });
        self.flush(conn);
    }
}
