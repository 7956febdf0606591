//! Conferences: SylkServer's videoroom API (spec `sylkrtc-protocol.md` §2.4, §3.4, §4.4) served
//! by sylkgw itself as an SFU on str0m, in place of the Janus VideoRoom plugin.
//!
//! # Model
//! - A **room** (by AOR) is created by its first `videoroom-join`, with that joiner's audio/video
//!   flags and the room's options ([`limits::RoomConfig`]: access policy, video codec, video
//!   off); it is removed when its last participant goes.
//! - A **participant** is one connection's publisher session in a room: one ice-lite
//!   [`BrowserLeg`](crate::media::webrtc::BrowserLeg) that answers the browser's send-only offer
//!   (our answer has every candidate: the protocol cannot trickle towards the browser).
//! - A **feed** is a subscriber PeerConnection (`videoroom-feed-attach`): one more `BrowserLeg`,
//!   which offers the publisher's answered codecs at the publisher's payload types, so RTP is
//!   forwarded without decoding and without PT mapping. Each feed rewrites sequence numbers and
//!   timestamps per medium ([`SeqTsRewriter`](crate::media::rtp::SeqTsRewriter)) so a publisher
//!   that restarts its stream (new SSRC) stays one continuous stream for the subscriber.
//! - Keyframes: a PLI/FIR from a subscriber is relayed to its publisher as a PLI/FIR; a feed whose
//!   media comes up, or whose video is resumed, asks the publisher for one too.
//! - Loss: video NACKs are answered with RTX from each feed's resend history, and str0m NACKs
//!   the publishers' video ([`nack`]).
//! - Bitrate: each publisher gets a REMB with the room's `max_bitrate` split, capped by its
//!   subscribers' REMBs ([`bitrate`]).
//! - Audio levels: `conference-audio-levels` from the publishers' RFC 6464 header extension,
//!   every 500 ms while they change ([`levels`]).
//!
//! # Events and their order (SylkServer's)
//! `videoroom-join`: `session-state progress`, the `ack`, `session-state accepted` (our answer),
//! `initial-publishers`, then `configure` (if active speakers), `raised-hands` (if any); the
//! others get `publishers-joined`. `established` / `feed-established` follow ICE+DTLS.
//! `videoroom-leave`: `session-state terminated` before the `ack`; the others get
//! `publishers-left` (and `configure` if an active speaker left). `configure`, `mute-audio` and
//! `raised-hands` reach every participant before the requester's `ack`. `feed-attached` (our
//! offer) follows the `ack` of `videoroom-feed-attach`. Chat (`videoroom-message`,
//! `videoroom-composing-indication`) is relayed here: `message` / `composing-indication` to the
//! other participants, `message-delivery` to the sender.
//!
//! Deviations from SylkServer+Janus, by design: a publisher is announced at its join (Janus
//! waits for its media), so the signalling does not depend on media (captures replay);
//! `publishers-left` goes to every other participant (not only those that attached a feed).
//!
//! # Sans-IO
//! The gateway calls [`Conferences::request`], [`Conferences::datagram`],
//! [`Conferences::handle_timeout`] and [`Conferences::conn_gone`] with an [`Env`], then drains
//! [`Conferences::poll_output`] ([`ConfOutput`]: events for connections, datagrams for the
//! WebRTC socket, invitations for other connections). [`Conferences::next_deadline`] is the
//! earliest leg timer.
//!
//! # Files
//! `limits` (configuration), `errors`, `tables` (rooms, participants, feeds, ids), `signalling`
//! (the requests), `forward` (the media plane: datagrams, leg outputs, RTP forwarding),
//! `nack` (loss repair options), `bitrate` (REMB), `levels` (audio levels), `remote` (rooms
//! across workers: the messages, home workers, remote connections' aliases, routes).

pub mod bitrate;
pub mod errors;
mod forward;
pub mod levels;
pub mod limits;
pub mod nack;
pub mod remote;
mod signalling;
pub mod tables;

use crate::api::{Event, Identity};
use crate::ids::ConnId;
use crate::media::demux::Demux;
use crate::media::webrtc::DtlsIdentity;
use crate::rng::Rng;
use crate::time::TimerTable;
use limits::ConferenceConfig;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tables::{Feed, FeedId, LegKey, Participant, ParticipantId, Room};

/// What the conference layer may use of the gateway for one call.
pub struct Env<'a> {
    /// Now.
    pub now: Instant,
    /// Wall-clock time now (chat timestamps).
    pub unix: Duration,
    /// The gateway's RNG (ICE credentials, invitation ids).
    pub rng: &'a mut Rng,
    /// The shared DTLS certificate, if configured.
    pub cert: Option<&'a DtlsIdentity>,
    /// Our ICE host candidates (the WebRTC socket's advertised addresses), once it is bound.
    pub candidates: Option<Vec<SocketAddr>>,
    /// Limits and room options.
    pub config: &'a ConferenceConfig,
}

/// What the conference layer wants done, from [`Conferences::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfOutput {
    /// Send `event` on WebSocket `conn`.
    Event { conn: ConnId, event: Event },
    /// Send `payload` to `to` from the WebRTC socket.
    Transmit { to: SocketAddr, payload: Vec<u8> },
    /// Send `event` to every WebSocket except `except` that holds `account`.
    ToAccount { except: ConnId, account: String, event: Event },
    /// Connection `conn` holds `session` (a publisher session or feed id) no more (the origin
    /// worker of a remote connection forgets its route, `remote`).
    SessionClosed { conn: ConnId, session: String },
}

/// Every room, participant and feed of one gateway. See the module documentation.
#[derive(Debug, Default)]
pub struct Conferences {
    rooms: BTreeMap<String, Room>,
    participants: BTreeMap<ParticipantId, Participant>,
    feeds: BTreeMap<FeedId, Feed>,
    /// (connection, session or feed id) → its PeerConnection.
    sessions: BTreeMap<(ConnId, String), LegKey>,
    /// The shared WebRTC socket's demultiplexer for conference legs.
    demux: Demux<LegKey>,
    /// Each leg's next str0m deadline.
    timers: TimerTable<LegKey>,
    next: u64,
    out: VecDeque<ConfOutput>,
    /// Legs that reported `Closed` while drained, removed by `reap`.
    ended: Vec<LegKey>,
    /// Home side of rooms across workers: remote connections' aliases.
    pub(crate) remotes: remote::Remotes,
    /// Origin side: this gateway's connections' sessions on other workers.
    pub(crate) routes: remote::Routes,
    /// The audio levels timer ([`levels`]), armed while levels come in.
    levels_due: Option<Instant>,
}

/// How many rooms, participants, feeds and sessions are held (tests check the baseline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Census {
    /// Rooms.
    pub rooms: usize,
    /// Participants (publisher legs).
    pub participants: usize,
    /// Feeds (subscriber legs).
    pub feeds: usize,
    /// Session and feed ids known.
    pub sessions: usize,
    /// Legs in the demultiplexer.
    pub demux: usize,
    /// Leg timers armed.
    pub timers: usize,
    /// Remote connections served here (`remote::Remotes`).
    pub remotes: usize,
    /// Sessions and feeds of this gateway's connections on other workers (`remote::Routes`).
    pub routes: usize,
}

impl Conferences {
    /// The next output, `None` when there is none.
    pub fn poll_output(&mut self) -> Option<ConfOutput> {
        self.out.pop_front()
    }

    /// The earliest leg deadline, or the audio levels timer's.
    pub fn next_deadline(&self) -> Option<Instant> {
        let levels = self.levels_due.filter(|_| !self.rooms.is_empty());
        match (self.timers.next().map(|(at, _)| at), levels) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The sizes of the tables.
    pub fn census(&self) -> Census {
        Census {
            rooms: self.rooms.len(),
            participants: self.participants.len(),
            feeds: self.feeds.len(),
            sessions: self.sessions.len(),
            demux: self.demux.len(),
            timers: self.timers.len(),
            remotes: self.remotes.len(),
            routes: self.routes.len(),
        }
    }

    /// Whether connection `conn` has any conference session (the gateway's census of a
    /// connection).
    pub fn has_conn(&self, conn: ConnId) -> bool {
        self.sessions.range((conn, String::new())..).next().is_some_and(|((c, _), _)| *c == conn)
    }

    /// Whether connection `conn` holds session or feed `id`.
    pub fn holds(&self, conn: ConnId, id: &str) -> bool {
        self.sessions.contains_key(&(conn, id.to_string()))
    }

    /// Feeds connection `conn` holds here.
    pub fn feeds_of(&self, conn: ConnId) -> usize {
        self.feeds.values().filter(|f| f.conn == conn).count()
    }

    fn event(&mut self, conn: ConnId, session: &str, event: crate::api::videoroom::VideoroomEvent) {
        self.out.push_back(ConfOutput::Event { conn, event: Event::Videoroom { session: session.to_string(), event } });
    }

    fn next_id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// The identity of a participant.
    fn identity(&self, p: ParticipantId) -> Option<Identity> {
        self.participants.get(&p).map(|p| p.identity.clone())
    }
}

#[cfg(test)]
mod tests;
