//! The conference media plane: datagrams on the shared WebRTC socket to their leg, each leg's
//! outputs, and RTP from a publisher forwarded to its subscribers without decoding.
//!
//! Draining works through a list of legs to drain, not recursion: forwarding to a feed, or a
//! feed's keyframe request reaching its publisher, queues that leg, drained in turn.

use super::tables::{LegKey, ParticipantId};
use super::{ConfOutput, Conferences, Env};
use crate::api::videoroom::VideoroomEvent as V;
use crate::media::webrtc::{BrowserLeg, LegOutput};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// One RTP packet from a publisher, as its leg reported it.
struct Packet {
    video: bool,
    pt: u8,
    seq: u16,
    ts: u32,
    marker: bool,
    ssrc: u32,
    payload: Arc<[u8]>,
    audio_level: Option<i8>,
}

impl Conferences {
    /// A datagram on the WebRTC socket that no call took: true if a conference leg did.
    pub fn datagram(&mut self, env: &mut Env<'_>, local: SocketAddr, from: SocketAddr, data: &[u8]) -> bool {
        let Some(key) = self.demux.route(from, data) else { return false };
        let now = env.now;
        let took = match key {
            LegKey::Publisher(p) => {
                self.participants.get_mut(&p).map(|p| p.leg.handle_datagram(now, from, local, data))
            }
            LegKey::Feed(f) => self.feeds.get_mut(&f).map(|f| f.leg.handle_datagram(now, from, local, data)),
        };
        if took == Some(true) {
            self.demux.learn(from, key);
        }
        self.drain(now, key);
        self.reap(env);
        true
    }

    /// The legs whose deadline has passed run their timers; then the audio levels timer.
    pub fn handle_timeout(&mut self, env: &mut Env<'_>) {
        while let Some(key) = self.timers.pop_expired(env.now) {
            self.drain(env.now, key);
        }
        self.reap(env);
        if self.rooms.is_empty() {
            self.levels_due = None;
        } else if self.levels_due.is_some_and(|at| at <= env.now) {
            self.report_levels(env.now);
        }
    }

    /// Legs that ended on their own while being drained are taken out of the tables.
    pub(super) fn reap(&mut self, env: &mut Env<'_>) {
        let ended = std::mem::take(&mut self.ended);
        for key in ended {
            self.leg_closed(env, key);
        }
    }

    /// Drains `start`'s outputs, and those of every leg this makes work.
    pub(super) fn drain(&mut self, now: Instant, start: LegKey) {
        let mut work = vec![start];
        while let Some(key) = work.pop() {
            self.drain_one(now, key, &mut work);
        }
    }

    fn leg(&mut self, key: LegKey) -> Option<&mut BrowserLeg> {
        match key {
            LegKey::Publisher(p) => self.participants.get_mut(&p).map(|p| &mut p.leg),
            LegKey::Feed(f) => self.feeds.get_mut(&f).map(|f| &mut f.leg),
        }
    }

    fn drain_one(&mut self, now: Instant, key: LegKey, work: &mut Vec<LegKey>) {
        loop {
            let Some(leg) = self.leg(key) else { return };
            let Some(o) = leg.poll(now) else {
                self.timers.stop(key);
                return;
            };
            match o {
                LegOutput::Transmit { to, payload, .. } => self.out.push_back(ConfOutput::Transmit { to, payload }),
                LegOutput::Rtp { video, pt, seq, ts, marker, ssrc, payload, audio_level } => {
                    if let LegKey::Publisher(p) = key {
                        let packet = Packet { video, pt, seq, ts, marker, ssrc, payload, audio_level };
                        self.forward(now, p, &packet, work);
                    }
                }
                LegOutput::ReceiverEstimate { bitrate } => {
                    if let LegKey::Feed(f) = key {
                        self.receiver_estimate(now, f, bitrate);
                    }
                }
                LegOutput::Connected => self.connected(key, work),
                LegOutput::Disconnected => log::info!("{key}: the browser stopped ICE consent checks"),
                LegOutput::Reconnected => log::info!("{key}: the browser is back"),
                LegOutput::KeyframeRequest { full_intra } => {
                    if let LegKey::Feed(f) = key {
                        if let Some(p) = self.feeds.get(&f).map(|f| f.publisher) {
                            if self.keyframe(p, full_intra) {
                                work.push(LegKey::Publisher(p));
                            }
                        }
                    }
                }
                LegOutput::Timeout(at) => {
                    self.timers.set(key, at);
                    return;
                }
                LegOutput::Closed => {
                    self.timers.stop(key);
                    self.ended.push(key);
                    return;
                }
            }
        }
    }

    /// ICE and DTLS of `key` are up: `established` for a publisher, `feed-established` for a
    /// feed (whose publisher is asked for a key frame).
    fn connected(&mut self, key: LegKey, work: &mut Vec<LegKey>) {
        match key {
            LegKey::Publisher(p) => {
                let Some(p) = self.participants.get(&p) else { return };
                let (conn, session) = (p.conn, p.session.clone());
                self.event(conn, &session, V::Established);
            }
            LegKey::Feed(f) => {
                let Some(feed) = self.feeds.get_mut(&f) else { return };
                if feed.established {
                    return;
                }
                feed.established = true;
                let (conn, id, parent, publisher) = (feed.conn, feed.id.clone(), feed.parent, feed.publisher);
                let session = self.participants.get(&parent).map(|p| p.session.clone()).unwrap_or_default();
                self.event(conn, &session, V::FeedEstablished { feed: id });
                if self.keyframe(publisher, false) {
                    work.push(LegKey::Publisher(publisher));
                }
            }
        }
    }

    /// Asks publisher `p` for a key frame (PLI, or FIR when `full_intra`); true if it has video.
    pub(super) fn keyframe(&mut self, p: ParticipantId, full_intra: bool) -> bool {
        self.participants.get_mut(&p).is_some_and(|p| p.leg.request_keyframe(full_intra))
    }

    /// One packet of publisher `p` to each of its subscribers that is up and wants that medium,
    /// with the subscriber's own sequence numbers and timestamps.
    fn forward(&mut self, now: Instant, p: ParticipantId, packet: &Packet, work: &mut Vec<LegKey>) {
        let Some(publ) = self.participants.get(&p) else { return };
        if (packet.video && !publ.send_video) || (!packet.video && !publ.send_audio) {
            return;
        }
        self.measure(now, p, packet.payload.len());
        match (packet.video, packet.audio_level) {
            (true, _) => {
                if self.maybe_remb(now, p) {
                    work.push(LegKey::Publisher(p));
                }
            }
            (false, Some(level)) => self.note_level(now, p, level),
            (false, None) => {}
        }
        let Some(publ) = self.participants.get(&p) else { return };
        let default_clock = if packet.video { 90_000 } else { 48_000 };
        let clock = publ.codecs.iter().find(|c| c.pt == packet.pt).map_or(default_clock, |c| c.clock_rate);
        for f in &publ.subscribers {
            let Some(feed) = self.feeds.get_mut(f) else { continue };
            let wanted = if packet.video { feed.send_video } else { feed.send_audio };
            if !wanted || !feed.leg.is_connected() {
                continue;
            }
            let rw = if packet.video { &mut feed.video } else { &mut feed.audio };
            let Some(r) = rw.rewrite(now, packet.ssrc, packet.seq, packet.ts, clock) else { continue };
            // A new source starts a talkspurt (RFC 3551 §4.1); video keeps the frame's marker.
            let marker = packet.marker || (!packet.video && r.new_source);
            match feed.leg.forward_rtp(now, packet.video, packet.pt, r.ext_seq, r.ts, marker, &packet.payload) {
                Ok(()) => work.push(LegKey::Feed(*f)),
                Err(e) => log::trace!("feed#{}: RTP dropped: {e}", f.0),
            }
        }
    }

    /// A leg ended on its own (DTLS closed, str0m error): a publisher's participant leaves the
    /// room (`terminated` to it, `publishers-left` to the others), a feed is detached.
    fn leg_closed(&mut self, env: &mut Env<'_>, key: LegKey) {
        match key {
            LegKey::Publisher(p) => {
                let Some(part) = self.participants.get(&p) else { return };
                let (conn, session) = (part.conn, part.session.clone());
                log::info!("{conn}: {key} ({session}) closed by the browser");
                self.event(conn, &session, V::Terminated { reason: Some("media closed".into()) });
                let after = self.remove_participant(env, p);
                self.out.extend(after);
            }
            LegKey::Feed(f) => self.remove_feed(env, f),
        }
    }

    /// Closes a leg taken out of the tables: its last datagrams (RTCP BYE, DTLS close_notify)
    /// go out.
    pub(super) fn close_leg(&mut self, now: Instant, leg: &mut BrowserLeg) {
        leg.close();
        while let Some(o) = leg.poll(now) {
            match o {
                LegOutput::Transmit { to, payload, .. } => self.out.push_back(ConfOutput::Transmit { to, payload }),
                LegOutput::Closed | LegOutput::Timeout(_) => break,
                _ => {}
            }
        }
    }
}
