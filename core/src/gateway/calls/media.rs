//! The media of calls: datagrams on the shared WebRTC socket (demultiplexed to browser legs)
//! and on the calls' RTP/RTCP pairs, the browser leg's outputs, the media plane's decisions
//! (`established`, media timeout) and the call timers.

use super::table::CallTimer;
use crate::api::{IceCandidate, SessionState};
use crate::call::{Call, CallId, MediaEvent, State};
use crate::drive::{Output, Transmit};
use crate::gateway::Gateway;
use crate::ids::SocketId;
use crate::media::webrtc::{LegOutput, WebRtcError, MAX_REMOTE_CANDIDATES};
use std::net::SocketAddr;
use std::time::Duration;

/// The reason in `terminated` when the SIP side sent no media for `media_timeout`.
pub const MEDIA_TIMEOUT_REASON: &str = "408 Media Timeout";

impl Gateway {
    /// `session-trickle`: the browser's candidates into its leg; none means end-of-candidates.
    pub(super) fn session_trickle(&mut self, id: CallId, candidates: Vec<IceCandidate>) {
        let Some(call) = self.calls.calls.get_mut(&id) else { return };
        if candidates.is_empty() {
            call.browser.end_of_candidates();
        }
        let mut beyond_cap = 0;
        for c in candidates {
            // A candidate str0m cannot read, or one beyond the leg's cap, is dropped and the
            // request still acked (sylkrtc.js ends the call on a trickle error): with ICE-lite
            // the browser's checks reveal its addresses anyway.
            match call.browser.add_remote_candidate(&c.candidate) {
                Ok(()) => {}
                Err(WebRtcError::TooManyCandidates) => beyond_cap += 1,
                Err(e) => log::debug!("{id}: candidate {:?} ignored: {e}", c.candidate),
            }
        }
        if beyond_cap > 0 {
            log::info!("{id}: {beyond_cap} trickled candidate(s) beyond {MAX_REMOTE_CANDIDATES} ignored");
        }
        self.drain_browser(id);
    }

    /// A datagram on the WebRTC socket. The call is looked up once for the datagram and the
    /// drain of its browser leg ([`Gateway::feed_browser`]).
    pub(in crate::gateway) fn webrtc_datagram(&mut self, local: SocketAddr, from: SocketAddr, data: &[u8]) {
        let Some((id, learned)) = self.calls.demux.route_learned(from, data) else {
            if !self.conference_datagram(local, from, data) {
                log::debug!("{} WebRTC bytes from {from} for no call; dropped", data.len());
            }
            return;
        };
        self.contained(id, "the browser leg", |gw| {
            gw.feed_browser(id, |call, leg| {
                if call.browser.handle_datagram(leg.now, from, local, data) && !learned {
                    leg.demux.learn(from, id);
                }
                true
            });
        });
    }

    /// A datagram on a call's RTP or RTCP socket.
    pub(in crate::gateway) fn rtp_datagram(&mut self, socket: SocketId, from: SocketAddr, data: &[u8]) {
        let rtp = SocketId(socket.0 & !1);
        let Some(&id) = self.calls.sockets.get(&rtp) else { return };
        let on_video = |call: &Call| call.video.as_ref().is_some_and(|v| v.rtp.rtp == rtp);
        self.contained(id, "the SIP-side media", |gw| {
            if socket == rtp {
                // RTP, every 20 ms: the call is looked up once for it and the leg's drain.
                gw.feed_browser(id, |call, leg| {
                    let video = on_video(call);
                    let media =
                        if video { call.video.as_mut().and_then(|v| v.media.as_mut()) } else { call.media.as_mut() };
                    let Some(media) = media else { return false };
                    match media.from_sip(leg.now, from, data) {
                        Ok(p) => {
                            let payload = media.rx_payload(p.payload.clone());
                            match call.browser.write_rtp(leg.now, video, p.pt, p.seq, p.ts, p.marker, payload) {
                                Ok(()) => {
                                    leg.tally.counters.to_browser.packets += 1;
                                    leg.tally.counters.to_browser.bytes += data.len() as u64;
                                }
                                Err(e) => log::trace!("{id}: RTP to the browser dropped: {e}"),
                            }
                            true
                        }
                        Err(why) => {
                            log::trace!("{id}: RTP from {from} dropped: {why:?}");
                            false
                        }
                    }
                });
                return;
            }
            let now = gw.now;
            let Some(call) = gw.calls.calls.get_mut(&id) else { return };
            let video = on_video(call);
            let media = if video { call.video.as_mut().and_then(|v| v.media.as_mut()) } else { call.media.as_mut() };
            let Some(media) = media else { return };
            let keyframe = media.rtcp_from_sip(now, from, data);
            // NACKs from the SIP side: the packets again, on the RTP socket (`sip_video_fb`).
            for (to, payload) in media.take_resends() {
                gw.tally.counters.to_sip.packets += 1;
                gw.tally.counters.to_sip.bytes += payload.len() as u64;
                gw.out.push_back(Output::Datagram(Transmit { socket: rtp, to, payload }));
            }
            // A PLI or FIR from the SIP side: the browser is asked for a key frame.
            if keyframe && video {
                if !call.browser.request_keyframe(false) {
                    log::debug!("{id}: key frame request from the SIP side, but no video from the browser yet");
                }
                gw.drain_browser(id);
            }
        });
    }

    pub(super) fn send_webrtc(&mut self, to: SocketAddr, payload: Vec<u8>) {
        if let Some((socket, _)) = self.media.webrtc() {
            // Media is not recorded in captures.
            self.out.push_back(Output::Datagram(Transmit { socket, to, payload }));
        }
    }

    /// Runs the browser leg's outputs: transmits, RTP to the SIP side, state changes, its timer.
    /// A panic inside ends the call (`containment`).
    pub(in crate::gateway) fn drain_browser(&mut self, id: CallId) {
        self.contained(id, "the browser leg", |gw| gw.poll_browser(id));
    }

    /// The browser leg's outputs until its next deadline.
    fn poll_browser(&mut self, id: CallId) {
        self.feed_browser(id, |_, _| true);
    }

    /// Looks call `id` up once, lets `feed` hand its browser leg something (a datagram, an RTP
    /// packet; `feed` returns whether the leg is to be drained), then runs the leg's outputs until
    /// its next deadline: one call lookup per media packet (issue #14). The call's
    /// [`CallTimer::Browser`] is only ever moved earlier here: str0m's next deadline moves later
    /// with nearly every packet (its ICE-lite agent idles until 3 s after the last input), and a
    /// timer that fires early costs one [`crate::media::webrtc::BrowserLeg::poll`] that finds
    /// nothing due and re-arms it, where moving it costs two ordered-set updates per packet. The
    /// deadline armed is kept in the call too ([`Call::browser_timer`]): while it is still ahead
    /// of `now` the timer table holds it, and the drain does not look it up there.
    fn feed_browser(&mut self, id: CallId, feed: impl FnOnce(&mut Call, &mut LegParts<'_>) -> bool) {
        let Gateway { calls, out, tally, media, config, clock, now, .. } = self;
        let Some(call) = calls.calls.get_mut(&id) else { return };
        let mut leg = LegParts { now: *now, demux: &mut calls.demux, tally };
        if !feed(call, &mut leg) {
            return;
        }
        let now = *now;
        let webrtc = media.webrtc().map(|(socket, _)| socket);
        let mut connected = false;
        let mut closed = false;
        let mut next = None;
        while let Some(o) = call.browser.poll(now) {
            match o {
                LegOutput::Transmit { to, payload, .. } => {
                    // Media is not recorded in captures.
                    if let Some(socket) = webrtc {
                        out.push_back(Output::Datagram(Transmit { socket, to, payload }));
                    }
                }
                LegOutput::Rtp { video, pt, seq, ts, marker, ssrc, payload, .. } => {
                    let (socket, bound, media) = match (video, call.video.as_mut()) {
                        (false, _) => (call.rtp.rtp, call.rtp.port.is_some(), call.media.as_mut()),
                        (true, Some(v)) => (v.rtp.rtp, v.rtp.port.is_some(), v.media.as_mut()),
                        (true, None) => continue,
                    };
                    if let (Some(media), true) = (media, bound) {
                        if let Some((to, pkt)) = media.from_browser(now, (pt, seq, ts, marker, ssrc), &payload) {
                            let payload = pkt.to_vec();
                            tally.counters.to_sip.packets += 1;
                            tally.counters.to_sip.bytes += payload.len() as u64;
                            out.push_back(Output::Datagram(Transmit { socket, to, payload }));
                        }
                    }
                }
                LegOutput::Connected => connected = !config.replay,
                // A call has no use for the browser's REMB (conference legs relay it).
                LegOutput::ReceiverEstimate { .. } => {}
                LegOutput::Disconnected => log::info!("{id}: the browser stopped ICE consent checks"),
                LegOutput::Reconnected => log::info!("{id}: the browser is back"),
                LegOutput::KeyframeRequest { .. } => {
                    // The browser lost video: a PLI to the SIP side's video source (RFC 4585).
                    let Some(v) = call.video.as_mut().filter(|v| v.rtp.port.is_some()) else { continue };
                    let socket = v.rtp.rtcp;
                    let unix = clock.unix(now);
                    if let Some((to, payload)) = v.media.as_mut().and_then(|m| m.keyframe_request(now, unix)) {
                        out.push_back(Output::Datagram(Transmit { socket, to, payload }));
                    }
                }
                LegOutput::Timeout(at) => {
                    next = Some(at);
                    break;
                }
                LegOutput::Closed => {
                    closed = !config.replay;
                    break;
                }
            }
        }
        let key = (id, CallTimer::Browser);
        match next {
            // Armed (by this drain) at or before `at`, and not due yet: still in the table.
            Some(at) if call.browser_timer.is_some_and(|armed| armed <= at && armed > now) => {}
            Some(at) => match calls.timers.get(key) {
                Some(armed) if armed <= at => call.browser_timer = Some(armed),
                _ => {
                    calls.timers.set(key, at);
                    call.browser_timer = Some(at);
                }
            },
            None if closed => {}
            None => {
                calls.timers.stop(key);
                call.browser_timer = None;
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

    pub(super) fn arm_media_timeout(&mut self, id: CallId) {
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
    pub(in crate::gateway) fn call_timer(&mut self, id: CallId, timer: CallTimer) {
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
}

/// What feeding a call's browser leg needs of the gateway besides the call
/// ([`Gateway::feed_browser`]).
pub(in crate::gateway) struct LegParts<'a> {
    /// The gateway's `now`.
    pub(in crate::gateway) now: std::time::Instant,
    /// The WebRTC socket's demultiplexer (to learn a browser's address).
    pub(in crate::gateway) demux: &'a mut crate::media::demux::Demux<CallId>,
    /// The packet counters.
    pub(in crate::gateway) tally: &'a mut crate::gateway::stats::Tally,
}
