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

use super::Gateway;
use crate::api::{AccountEvent, Dialect, Event, Identity, RequestBody, SessionEvent, SessionState};
use crate::call::{self, Call, CallId, MediaEvent, Origin, Pending, RtpPair, Slot, State, VideoLine};
use crate::config::SdesMode;
use crate::drive::{Output, Transmit};
use crate::ids::{ConnId, SocketId};
use crate::media::bridge::{pair_codecs, SipMedia};
use crate::media::sdp::{self, Codec, LocalMedia, LocalSession, MediaKind, SdpVersioner, SessionDescription};
use crate::media::srtp::{CryptoAttribute, SrtpContext, SrtpProfile};
use crate::media::webrtc::{BrowserLeg, LegOutput};
use crate::sip::calls::{CallParams, LegId};
use crate::sip::incoming::IncomingCall;
use crate::sip::invite::CallProgress;
use crate::sip::stack::{RegId, SipIdentity};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A call's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum CallTimer {
    /// The browser leg's (str0m's) next deadline.
    Browser,
    /// Check for media from the SIP side (`Config::media_timeout`).
    Media,
    /// Our next RTCP report on the SIP side.
    Rtcp,
}

impl CallTimer {
    pub(super) const FIRST: Self = Self::Browser;
    pub(super) const LAST: Self = Self::Rtcp;
}

/// The reason in `terminated` when the SIP side sent no media for `media_timeout`.
pub const MEDIA_TIMEOUT_REASON: &str = "408 Media Timeout";

/// The call tables of a gateway.
#[derive(Debug, Default)]
pub(super) struct Calls {
    pub(super) calls: std::collections::BTreeMap<CallId, Call>,
    /// (connection, session id) → call.
    pub(super) sessions: std::collections::BTreeMap<(ConnId, String), CallId>,
    /// SIP leg → call.
    pub(super) legs: std::collections::BTreeMap<LegId, CallId>,
    /// RTP socket id → call (RTCP is RTP + 1).
    pub(super) sockets: std::collections::BTreeMap<SocketId, CallId>,
    /// The shared WebRTC socket's demultiplexer.
    pub(super) demux: crate::media::demux::Demux<CallId>,
    /// The calls' timers (kept apart from the connections': their deadlines depend on media,
    /// which captures leave out, so captures do not show them).
    pub(super) timers: crate::time::TimerTable<(CallId, CallTimer)>,
    /// Faults tests inject (`containment`).
    pub(super) faults: super::containment::Faults,
    next: u64,
}

fn parse_sdp(sdp: &[u8]) -> Result<(SessionDescription, usize), String> {
    let desc = SessionDescription::parse(sdp).map_err(|e| format!("Invalid SDP: {}", e.as_str()))?;
    let idx = desc
        .media
        .iter()
        .position(|m| m.kind == MediaKind::Audio && !m.is_rejected())
        .ok_or_else(|| "Invalid SDP: no audio stream".to_string())?;
    Ok((desc, idx))
}

/// The SRTP contexts of a call: ours protects what we send, theirs checks what the peer sends.
fn srtp_contexts(ours: &CryptoAttribute, theirs: &CryptoAttribute) -> Option<(SrtpContext, SrtpContext)> {
    Some((SrtpContext::from_crypto(ours).ok()?, SrtpContext::from_crypto(theirs).ok()?))
}

/// The codecs of `m` we carry, in `m`'s order and numbers.
fn carried(m: &sdp::MediaDescription) -> Vec<Codec> {
    sdp::intersect(&m.codecs(), &call::supported_codecs())
}

/// The first video m-line of `desc` in use (a port), if any.
fn video_index(desc: &SessionDescription) -> Option<usize> {
    desc.media.iter().position(|m| m.kind == MediaKind::Video && !m.is_rejected())
}

/// The video codecs of `m` we carry (VP8, H.264), in `m`'s order and numbers.
fn carried_video(m: &sdp::MediaDescription) -> Vec<Codec> {
    sdp::intersect(&m.codecs(), &call::supported_video_codecs())
}

/// The m-lines of a SIP offer as slots of our answer: the audio line we use (`audio`), the video
/// line (`video`, when we take it), every other line refused.
fn answer_layout(desc: &SessionDescription, audio: usize, video: Option<usize>) -> Vec<Slot> {
    desc.media
        .iter()
        .enumerate()
        .map(|(i, m)| match i {
            i if i == audio => Slot::Audio,
            i if Some(i) == video => Slot::Video,
            _ => Slot::Reject(LocalMedia::rejected(m)),
        })
        .collect()
}

/// Our video m-line: in use (port, codecs, crypto, `direction`) or refused (port 0).
fn video_local_media(video: Option<&VideoLine>, direction: sdp::Direction) -> LocalMedia {
    match video {
        Some(v) if v.is_open() && v.rtp.port.is_some() => LocalMedia {
            direction,
            proto: v.proto.clone(),
            crypto: v.local_crypto.clone(),
            ..LocalMedia::new(MediaKind::Video, v.rtp.port.unwrap_or(0), v.sip_codecs())
        },
        _ => LocalMedia {
            proto: video.map_or(sdp::Proto::RtpAvp, |v| v.proto.clone()),
            fallback_format: video.and_then(|v| v.offered.first()).map(|c| c.pt.to_string()),
            direction: sdp::Direction::Inactive,
            ..LocalMedia::new(MediaKind::Video, 0, Vec::new())
        },
    }
}

/// SDES for one m-line of an answer to our offer (RFC 4568 §7.1.2): the answer's crypto names one
/// of our offered lines by tag and suite. `Ok(None)`: plain RTP; `Err`: not acceptable.
fn answered_crypto(
    m: &sdp::MediaDescription,
    ours: &[CryptoAttribute],
    mode: SdesMode,
) -> Result<Option<(CryptoAttribute, CryptoAttribute)>, ()> {
    match (m.usable_crypto(), ours.is_empty()) {
        (_, true) => Ok(None),
        (Some(theirs), false) => {
            let ours = ours.iter().find(|c| c.tag == theirs.tag && c.profile == theirs.profile).ok_or(())?;
            Ok(Some((ours.clone(), theirs.clone())))
        }
        (None, false) if mode == SdesMode::Mandatory => Err(()),
        (None, false) => Ok(None),
    }
}

/// A new SDP of the SIP peer for one m-line of an SRTP call (RFC 4568 §7.1.4): a changed
/// `a=crypto` gets new contexts, with our key under the peer's tag. False when the line is SRTP
/// and the SDP has no usable crypto (a plain line offered one stays plain).
fn rekey(
    local: &mut Vec<CryptoAttribute>,
    remote: &mut Option<CryptoAttribute>,
    media: Option<&mut SipMedia>,
    theirs: Option<&CryptoAttribute>,
    rng: &mut crate::rng::Rng,
) -> bool {
    let Some(current) = remote.clone() else { return true };
    let Some(theirs) = theirs else { return false };
    if &current == theirs {
        return true;
    }
    let mut ours = local.first().cloned().unwrap_or_else(|| CryptoAttribute::answer(theirs, rng));
    if ours.profile != theirs.profile {
        ours = CryptoAttribute::answer(theirs, rng);
    }
    ours.tag = theirs.tag;
    let Some((tx, rx)) = srtp_contexts(&ours, theirs) else { return false };
    if let Some(media) = media {
        media.set_srtp(tx, rx);
    }
    *local = vec![ours];
    *remote = Some(theirs.clone());
    true
}

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
                Event::Error { transaction, error }
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

    fn call_of_session(&self, conn: ConnId, session: &str) -> Result<CallId, String> {
        self.calls
            .sessions
            .get(&(conn, session.to_string()))
            .copied()
            .ok_or_else(|| format!("Unknown session {session}"))
    }

    /// Sessions `conn` has (`Config::max_sessions_per_connection`).
    fn session_count(&self, conn: ConnId) -> usize {
        self.calls.sessions.range((conn, String::new())..).take_while(|((c, _), _)| *c == conn).count()
    }

    fn apply_session_request(&mut self, conn: ConnId, body: RequestBody, after: &mut Vec<Event>) -> Result<(), String> {
        match body {
            RequestBody::SessionCreate { session, account, uri, sdp, headers } => {
                let headers = call::custom_headers(headers.into_iter().map(|h| (h.name, h.value)).collect());
                self.session_create(conn, session, account, uri, sdp, headers)
            }
            RequestBody::SessionAnswer { session, sdp, headers } => {
                let id = self.call_of_session(conn, &session)?;
                let headers = call::custom_headers(headers.into_iter().map(|h| (h.name, h.value)).collect());
                self.session_answer(id, &session, &sdp, headers, after)
            }
            RequestBody::SessionTrickle { session, candidates } => {
                let id = self.call_of_session(conn, &session)?;
                let Some(call) = self.calls.calls.get_mut(&id) else {
                    return Err(format!("Unknown session {session}"));
                };
                if candidates.is_empty() {
                    call.browser.end_of_candidates();
                }
                for c in candidates {
                    // A candidate str0m cannot read is dropped: with ICE-lite the browser's
                    // checks reveal its addresses anyway.
                    if let Err(e) = call.browser.add_remote_candidate(&c.candidate) {
                        log::debug!("{id}: candidate {:?} ignored: {e}", c.candidate);
                    }
                }
                self.drain_browser(id);
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
                let call = &self.calls.calls[&id];
                if !call.state.can_send_dtmf() {
                    return Err(format!("Invalid state session {session}: {} for DTMF info", call.state.name()));
                }
                let leg = call.leg.ok_or_else(|| format!("Invalid state session {session}: no dialog"))?;
                for d in digit.chars().filter(|c| call::is_dtmf_digit(*c)) {
                    let body = call::dtmf_relay_body(d, duration);
                    self.sip.send_info(leg, "application/dtmf-relay", body, self.now, &mut self.rng);
                }
                Ok(())
            }
            RequestBody::SessionUpdate { session, sdp, .. } => {
                let id = self.call_of_session(conn, &session)?;
                self.session_update(id, &session, &sdp, after)
            }
            RequestBody::SessionMessage { session, .. } => {
                let id = self.call_of_session(conn, &session)?;
                let state = self.calls.calls[&id].state;
                Err(format!("Invalid state session {session}: {} for sending messages", state.name()))
            }
            _ => Err("Internal error".into()),
        }
    }

    /// The ICE host candidates of browser legs: every advertised media address with the WebRTC
    /// socket's port.
    fn webrtc_candidates(&self) -> Option<Vec<SocketAddr>> {
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

    fn new_call(&mut self, conn: ConnId, session: String, account: String, origin: Origin) -> Result<CallId, String> {
        let cert = self.config.webrtc.dtls_cert.clone().ok_or("Media is not available (no DTLS certificate)")?;
        let candidates = self.webrtc_candidates().ok_or("Media is not available (no WebRTC socket)")?;
        let (rtp, rtcp, _) = self.request_rtp_pair().ok_or("No media ports available")?;
        let browser = BrowserLeg::new(&cert, &candidates, &mut self.rng);
        let id = CallId(self.calls.next);
        self.calls.next += 1;
        if self.calls.demux.register(browser.ufrag(), id).is_err() {
            self.release_rtp_pair(rtp);
            return Err("Internal error".into());
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
        };
        self.calls.calls.insert(id, call);
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
        call.video = Some(VideoLine::new(RtpPair::new(rtp, rtcp), offered));
        true
    }

    fn identity(&mut self, conn: ConnId, account: &str) -> Option<SipIdentity> {
        let acc = self.client(conn)?.account(account)?.clone();
        Some(SipIdentity {
            contact_user: crate::client::contact_user(&acc.aor, &mut self.rng),
            aor: acc.aor,
            secret: acc.password,
            display_name: acc.display_name,
            user_agent: acc.user_agent,
        })
    }

    // ===== Outgoing =====

    fn session_create(
        &mut self,
        conn: ConnId,
        session: String,
        account: String,
        uri: String,
        sdp: String,
        headers: Vec<(String, String)>,
    ) -> Result<(), String> {
        if self.calls.sessions.contains_key(&(conn, session.clone())) {
            return Err(format!("Session ID {session} already in use"));
        }
        if self.session_count(conn) >= self.config.max_sessions_per_connection {
            return Err(crate::client::TOO_MANY_SESSIONS.into());
        }
        let (desc, idx) = parse_sdp(sdp.as_bytes())?;
        let offered = carried(&desc.media[idx]);
        if !offered.iter().any(|c| !c.name.eq_ignore_ascii_case("telephone-event")) {
            return Err("Invalid SDP: no supported audio codec (Opus, G722, PCMU, PCMA)".into());
        }
        let video = video_index(&desc).map(|i| carried_video(&desc.media[i])).filter(|v| !v.is_empty());
        let id = self.new_call(conn, session, account, Origin::Outgoing)?;
        // Video (VP8, H.264) when the browser offers it: a second m-line on a second RTP pair.
        if let Some(video) = video {
            if self.add_video_line(id, video) {
                if let Some(call) = self.calls.calls.get_mut(&id) {
                    call.layout.push(Slot::Video);
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
                Slot::Video => video_local_media(call.video.as_ref(), direction),
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

    fn send_invite(&mut self, id: CallId, uri: String, headers: Vec<(String, String)>) {
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
    fn apply_sip_answer(&mut self, id: CallId, sdp: &[u8]) -> Result<Option<String>, String> {
        let (desc, idx) = parse_sdp(sdp)?;
        let m = &desc.media[idx];
        let remote = desc.rtp_addr(m);
        let direction = desc.effective_direction(m).reversed();
        let now = self.now;
        let Some(call) = self.calls.calls.get_mut(&id) else { return Err("gone".into()) };
        let pairs = pair_codecs(&call.offered, &m.codecs(), true);
        if !pairs.iter().any(|p| !p.codec.name.eq_ignore_ascii_case("telephone-event")) {
            return Err("488 Not Acceptable Here".into());
        }
        let remote = remote.unwrap_or_else(|| SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0));
        // SDES: the answer's crypto names one of our offered lines by tag and suite.
        let srtp = answered_crypto(m, &call.local_crypto, self.config.sdes_srtp)
            .map_err(|()| "488 Not Acceptable Here".to_string())?;
        let contexts = match &srtp {
            Some((ours, theirs)) => Some(srtp_contexts(ours, theirs).ok_or("488 Not Acceptable Here")?),
            None => None,
        };
        let video = sip_video_answer(call, &desc, now, &mut self.rng, self.config.sdes_srtp);
        let answer = if call.browser_answered {
            None
        } else {
            let mut allowed: Vec<Codec> = pairs.iter().map(|p| Codec { pt: p.browser_pt, ..p.codec.clone() }).collect();
            allowed.extend(video);
            let offer = call.browser_offer.take().unwrap_or_default();
            let answer = call.browser.accept_offer(&offer, &allowed, now).map_err(|e| {
                log::info!("{id}: the browser's offer could not be answered: {e}");
                "488 Not Acceptable Here".to_string()
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

    fn call_progress(&mut self, id: CallId, progress: CallProgress) {
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
                            self.hang_up_call(id, &reason);
                        }
                    },
                }
            }
            CallProgress::Answered { sdp } => {
                let Some(call) = self.calls.calls.get(&id) else { return };
                let first = !call.browser_answered;
                let result = match sdp {
                    Some(sdp) => self.apply_sip_answer(id, &sdp),
                    None if first => Err("488 Not Acceptable Here".into()),
                    None => Ok(None),
                };
                match result {
                    Ok(answer) => {
                        let call_id = self.leg_call_id(id);
                        let Some(call) = self.calls.calls.get_mut(&id) else { return };
                        if call.state != State::Established {
                            call.state = State::Accepted;
                        }
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
                        self.hang_up_call(id, &reason);
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

    // ===== Incoming =====

    /// An INVITE for registration `reg`: offered to its connection's browser, or declined.
    fn incoming_call(&mut self, leg: LegId, reg: RegId, call: IncomingCall) {
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
            return Err((486, "Busy Here"));
        }
        let prefixes = self.client(conn).and_then(|c| c.account(account)).map(|a| a.incoming_header_prefixes.clone());
        let Some(prefixes) = prefixes else { return Err((480, "Temporarily Unavailable")) };
        if incoming.sdp.is_empty() {
            // Late offer (an INVITE without SDP) is not supported.
            return Err((488, "Not Acceptable Here"));
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
        let mut browser_codecs = offered.clone();
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
                    browser_codecs.extend(vcodecs);
                    if let Some(v) = self.calls.calls.get_mut(&id).and_then(|c| c.video.as_mut()) {
                        v.offer_addr = desc.rtp_addr(vm);
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
        let now = self.now;
        let Some(call) = self.calls.calls.get_mut(&id) else { return Err((500, "Server Internal Error")) };
        call.layout = answer_layout(&desc, idx, video_at);
        let offer = match call.browser.create_offer(&browser_codecs, now) {
            Ok(o) => o,
            Err(e) => {
                log::info!("{id}: no offer for the browser: {e}");
                self.drop_call(id);
                return Err((488, "Not Acceptable Here"));
            }
        };
        call.offered = offered;
        call.offer_addr = offer_addr;
        call.leg = Some(leg);
        if let Some((ours, theirs)) = srtp {
            call.local_crypto = vec![ours];
            call.remote_crypto = Some(theirs);
            call.sip_proto = if secure { sdp::Proto::RtpSavp } else { sdp::Proto::RtpAvp };
        }
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

    fn session_answer(
        &mut self,
        id: CallId,
        session: &str,
        sdp: &str,
        headers: Vec<(String, String)>,
        after: &mut Vec<Event>,
    ) -> Result<(), String> {
        let now = self.now;
        let call = self.calls.calls.get_mut(&id).ok_or_else(|| format!("Unknown session {session}"))?;
        if call.origin == Origin::Outgoing {
            return Err(format!("Cannot answer outgoing session {session}"));
        }
        if call.state != State::Connecting {
            return Err(format!("Invalid state for answering session {session}: {}", call.state.name()));
        }
        let (desc, idx) = parse_sdp(sdp.as_bytes())?;
        call.browser.accept_answer(sdp, now).map_err(|e| format!("Invalid SDP: {e}"))?;
        let pairs = pair_codecs(&call.offered, &desc.media[idx].codecs(), false);
        if !pairs.iter().any(|p| !p.codec.name.eq_ignore_ascii_case("telephone-event")) {
            return Err("Invalid SDP: no common codec".into());
        }
        call.answer_codecs = pairs.iter().map(|p| Codec { pt: p.sip_pt, ..p.codec.clone() }).collect();
        let remote = call.offer_addr.unwrap_or_else(|| SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0));
        let mut media = SipMedia::new(remote, pairs, now, &mut self.rng);
        if let (Some(ours), Some(theirs)) = (call.local_crypto.first(), &call.remote_crypto) {
            let (tx, rx) = srtp_contexts(ours, theirs).ok_or("Internal error")?;
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

    fn send_answer(&mut self, id: CallId) {
        let Some(call) = self.calls.calls.get(&id) else { return };
        let (leg, codecs, peer) = (call.leg, call.answer_codecs.clone(), call.offer_addr.map(|a| a.ip()));
        let headers = call.answer_headers.clone();
        let Some(leg) = leg else { return };
        let Some(sdp) = self.local_sdp(id, codecs, peer) else { return };
        self.sip.answer_with_headers(leg, sdp, headers, self.now);
    }

    // ===== Updates (re-INVITE both ways, spec §2.3 `session-update`, §3.3 `update`) =====

    /// `session-update`: in `remote-updating` the browser's answer to the SIP peer's re-offer;
    /// when established (or accepted) a new offer from the browser, sent as a re-INVITE.
    fn session_update(&mut self, id: CallId, session: &str, sdp: &str, _after: &mut Vec<Event>) -> Result<(), String> {
        let now = self.now;
        let call = self.calls.calls.get_mut(&id).ok_or_else(|| format!("Unknown session {session}"))?;
        let leg =
            call.leg.ok_or_else(|| format!("Invalid state for updating session {session}: {}", call.state.name()))?;
        match call.state {
            State::RemoteUpdating => {
                call.browser.accept_answer(sdp, now).map_err(|e| format!("Invalid SDP: {e}"))?;
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
                let answer = call.browser.accept_offer(sdp, &[], now).map_err(|e| format!("Invalid SDP: {e}"))?;
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
                let body = self.local_sdp_directed(id, codecs, peer, direction).ok_or("Internal error")?;
                if !self.sip.reinvite(leg, body, now, &mut self.rng) {
                    if let Some(call) = self.calls.calls.get_mut(&id) {
                        call.state = State::Established;
                        call.pending_update = None;
                    }
                    return Err(format!("Invalid state for updating session {session}: no dialog"));
                }
                Ok(())
            }
            other => Err(format!("Invalid state for updating session {session}: {}", other.name())),
        }
    }

    /// The SIP peer re-offers (re-INVITE or UPDATE with SDP): the browser gets `update`
    /// `received` with our re-offer in the direction the peer asked for, and answers with
    /// `session-update`. The 200 waits for that answer.
    fn call_reoffer(&mut self, id: CallId, sdp: &[u8]) {
        let now = self.now;
        let Some(call) = self.calls.calls.get_mut(&id) else { return };
        let Some(leg) = call.leg else { return };
        if !matches!(call.state, State::Established | State::Accepted) {
            self.sip.answer_reoffer(leg, Err((491, "Request Pending".into())), now);
            return;
        }
        let parsed = if sdp.is_empty() { Err("late offer".to_string()) } else { parse_sdp(sdp) };
        let (desc, idx) = match parsed {
            Ok(d) => d,
            Err(e) => {
                log::info!("{id}: re-offer refused: {e}");
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
    fn call_reinvite_result(&mut self, id: CallId, result: Result<Vec<u8>, String>) {
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

    // ===== Ending =====

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

    // ===== SIP events =====

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
            SipEvent::Info { content_type, body, .. } => {
                log::info!("{id}: INFO {content_type} ({} bytes) from the SIP side", body.len());
            }
            SipEvent::Reoffer { sdp, .. } => self.call_reoffer(id, &sdp),
            SipEvent::ReofferAck { .. } => log::debug!("{id}: late-offer ACK ignored"),
            SipEvent::ReinviteResult { result, .. } => self.call_reinvite_result(id, result),
            _ => {}
        }
    }

    /// An incoming INVITE for a registration.
    pub(super) fn call_sip_incoming(&mut self, leg: LegId, reg: RegId, call: IncomingCall) {
        self.incoming_call(leg, reg, call);
    }

    // ===== Media =====

    /// A datagram on the WebRTC socket.
    pub(super) fn webrtc_datagram(&mut self, local: SocketAddr, from: SocketAddr, data: &[u8]) {
        let Some(id) = self.calls.demux.route(from, data) else {
            log::debug!("{} WebRTC bytes from {from} for no call; dropped", data.len());
            return;
        };
        self.contained(id, "the browser leg", |gw| {
            let now = gw.now;
            let Some(call) = gw.calls.calls.get_mut(&id) else { return };
            if call.browser.handle_datagram(now, from, local, data) {
                gw.calls.demux.learn(from, id);
            }
            gw.drain_browser(id);
        });
    }

    /// A datagram on a call's RTP or RTCP socket.
    pub(super) fn rtp_datagram(&mut self, socket: SocketId, from: SocketAddr, data: &[u8]) {
        let rtp = SocketId(socket.0 & !1);
        let Some(&id) = self.calls.sockets.get(&rtp) else { return };
        self.contained(id, "the SIP-side media", |gw| {
            let now = gw.now;
            let Some(call) = gw.calls.calls.get_mut(&id) else { return };
            let video = call.video.as_ref().is_some_and(|v| v.rtp.rtp == rtp);
            let media = if video { call.video.as_mut().and_then(|v| v.media.as_mut()) } else { call.media.as_mut() };
            let Some(media) = media else { return };
            if socket != rtp {
                // A PLI or FIR from the SIP side: the browser is asked for a key frame.
                if media.rtcp_from_sip(now, from, data) && video {
                    if !call.browser.request_keyframe(false) {
                        log::debug!("{id}: key frame request from the SIP side, but no video from the browser yet");
                    }
                    gw.drain_browser(id);
                }
                return;
            }
            match media.from_sip(now, from, data) {
                Ok(p) => {
                    let payload = media.rx_payload(p.payload.clone());
                    if let Err(e) = call.browser.write_rtp(now, video, p.pt, p.seq, p.ts, p.marker, payload) {
                        log::trace!("{id}: RTP to the browser dropped: {e}");
                    }
                    gw.drain_browser(id);
                }
                Err(why) => log::trace!("{id}: RTP from {from} dropped: {why:?}"),
            }
        });
    }

    fn send_webrtc(&mut self, to: SocketAddr, payload: Vec<u8>) {
        if let Some((socket, _)) = self.media.webrtc() {
            // Media is not recorded in captures.
            self.out.push_back(Output::Datagram(Transmit { socket, to, payload }));
        }
    }

    /// Runs the browser leg's outputs: transmits, RTP to the SIP side, state changes, its timer.
    /// A panic inside ends the call (`containment`).
    pub(super) fn drain_browser(&mut self, id: CallId) {
        self.contained(id, "the browser leg", |gw| gw.poll_browser(id));
    }

    fn poll_browser(&mut self, id: CallId) {
        let now = self.now;
        let unix = self.clock.unix(now);
        let mut connected = false;
        let mut closed = false;
        loop {
            let Some(call) = self.calls.calls.get_mut(&id) else { return };
            let Some(o) = call.browser.poll(now) else {
                self.calls.timers.stop((id, CallTimer::Browser));
                break;
            };
            match o {
                LegOutput::Transmit { to, payload, .. } => self.send_webrtc(to, payload),
                LegOutput::Rtp { video, pt, seq, ts, marker, ssrc, payload } => {
                    let (socket, bound, media) = match (video, call.video.as_mut()) {
                        (false, _) => (call.rtp.rtp, call.rtp.port.is_some(), call.media.as_mut()),
                        (true, Some(v)) => (v.rtp.rtp, v.rtp.port.is_some(), v.media.as_mut()),
                        (true, None) => continue,
                    };
                    if let (Some(media), true) = (media, bound) {
                        if let Some((to, pkt)) = media.from_browser(now, (pt, seq, ts, marker, ssrc), &payload) {
                            let payload = pkt.to_vec();
                            self.out.push_back(Output::Datagram(Transmit { socket, to, payload }));
                        }
                    }
                }
                LegOutput::Connected => connected = !self.config.replay,
                LegOutput::Disconnected => log::info!("{id}: the browser stopped ICE consent checks"),
                LegOutput::Reconnected => log::info!("{id}: the browser is back"),
                LegOutput::KeyframeRequest { .. } => {
                    // The browser lost video: a PLI to the SIP side's video source (RFC 4585).
                    let Some(v) = call.video.as_mut().filter(|v| v.rtp.port.is_some()) else { continue };
                    let socket = v.rtp.rtcp;
                    if let Some((to, payload)) = v.media.as_mut().and_then(|m| m.keyframe_request(now, unix)) {
                        self.out.push_back(Output::Datagram(Transmit { socket, to, payload }));
                    }
                }
                LegOutput::Timeout(at) => {
                    self.calls.timers.set((id, CallTimer::Browser), at);
                    break;
                }
                LegOutput::Closed => {
                    closed = !self.config.replay;
                    break;
                }
            }
        }
        if connected {
            self.media_event(id, MediaEvent::Connected);
        }
        if closed {
            self.media_event(id, MediaEvent::Closed);
        }
    }

    /// A decision of the media plane about call `id`: recorded (media is not), then acted on.
    fn media_event(&mut self, id: CallId, event: MediaEvent) {
        if !self.calls.calls.contains_key(&id) {
            return;
        }
        if let Some(rec) = &mut self.recorder {
            rec.media_event(self.now, id, event);
        }
        match event {
            MediaEvent::Connected => {
                let Some(call) = self.calls.calls.get_mut(&id) else { return };
                if call.ice_up {
                    return;
                }
                call.ice_up = true;
                if matches!(call.state, State::Accepted | State::EarlyMedia) {
                    call.state = State::Established;
                }
                self.call_event(id, SessionState::Established);
            }
            MediaEvent::Closed => {
                log::info!("{id}: the browser leg closed");
                self.end_call(id, "200 OK", true);
            }
            MediaEvent::Timeout => {
                log::info!("{id}: no media from the SIP side for {} s; hanging up", self.config.media_timeout);
                self.hang_up_call(id, MEDIA_TIMEOUT_REASON);
            }
        }
    }

    /// Replays a media decision recorded in a capture (`capture::replay` only).
    #[doc(hidden)]
    pub fn replay_media_event(&mut self, now: std::time::Instant, id: CallId, event: MediaEvent) {
        debug_assert!(now >= self.now, "time went backwards");
        self.now = now.max(self.now);
        self.media_event(id, event);
        self.drain_sip();
    }

    fn arm_media_timeout(&mut self, id: CallId) {
        if !self.calls.calls.contains_key(&id) {
            return; // ended meanwhile (a contained panic)
        }
        self.calls.timers.set((id, CallTimer::Rtcp), self.now + crate::media::bridge::RTCP_INTERVAL);
        if self.config.media_timeout > 0 {
            let at = self.now + Duration::from_secs(self.config.media_timeout);
            self.calls.timers.set((id, CallTimer::Media), at);
        }
    }

    /// A call timer fired.
    pub(super) fn call_timer(&mut self, id: CallId, timer: CallTimer) {
        match timer {
            CallTimer::Browser => self.drain_browser(id),
            CallTimer::Rtcp => {
                let (now, unix) = (self.now, self.clock.unix(self.now));
                let Some(call) = self.calls.calls.get_mut(&id) else { return };
                let socket = call.rtp.rtcp;
                let report = call.media.as_mut().and_then(|m| m.rtcp_report(now, unix));
                if let (Some((to, payload)), Some(_)) = (report, call.rtp.port) {
                    self.out.push_back(Output::Datagram(Transmit { socket, to, payload }));
                }
                if let Some(v) = call.video.as_mut().filter(|v| v.rtp.port.is_some()) {
                    let socket = v.rtp.rtcp;
                    if let Some((to, payload)) = v.media.as_mut().and_then(|m| m.rtcp_report(now, unix)) {
                        self.out.push_back(Output::Datagram(Transmit { socket, to, payload }));
                    }
                }
                self.calls.timers.set((id, CallTimer::Rtcp), now + crate::media::bridge::RTCP_INTERVAL);
            }
            CallTimer::Media => {
                let limit = Duration::from_secs(self.config.media_timeout);
                let Some(call) = self.calls.calls.get(&id) else { return };
                let Some(media) = &call.media else { return };
                // The browser never came up (ICE or DTLS failed) within the timeout after the
                // answer: nobody can hear anything (the first check is a full timeout after it).
                if !call.ice_up && !self.config.replay {
                    log::info!("{id}: ICE/DTLS with the browser did not come up in {} s", limit.as_secs());
                    self.media_event(id, MediaEvent::Timeout);
                    return;
                }
                let last = media.last_rx();
                // On hold (the peer does not send) the timeout does not apply; nor in a replay,
                // which has no media (the capture's decision comes as a media event).
                let quiet_allowed = !media.direction().receives() || self.config.replay;
                if quiet_allowed || self.now.saturating_duration_since(last) < limit {
                    let base = if quiet_allowed { self.now } else { last };
                    self.calls.timers.set((id, CallTimer::Media), base + limit);
                    return;
                }
                self.media_event(id, MediaEvent::Timeout);
            }
        }
    }

    /// Whether connection `conn` negotiated `sylkRTC-1`.
    fn speaks_v1(&self, conn: ConnId) -> bool {
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
