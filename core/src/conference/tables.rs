//! What a gateway holds about conferences: rooms, participants (one publisher PeerConnection
//! each) and feeds (one subscriber PeerConnection each), referring to each other by id.

use super::limits::RoomConfig;
use crate::api::Identity;
use crate::ids::ConnId;
use crate::media::rtp::SeqTsRewriter;
use crate::media::sdp::Codec;
use crate::media::webrtc::BrowserLeg;
use std::collections::BTreeSet;
use std::fmt;
use std::time::Instant;

/// A participant (publisher) of some room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParticipantId(pub u64);

/// A feed: one subscriber PeerConnection of a participant, receiving one publisher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeedId(pub u64);

/// One PeerConnection of the conference media plane: the key of the WebRTC demux and of timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LegKey {
    /// A participant's publisher PeerConnection.
    Publisher(ParticipantId),
    /// A feed's subscriber PeerConnection.
    Feed(FeedId),
}

impl fmt::Display for LegKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Publisher(p) => write!(f, "publisher#{}", p.0),
            Self::Feed(x) => write!(f, "feed#{}", x.0),
        }
    }
}

/// A room: created by its first join, removed when its last participant leaves.
#[derive(Debug)]
pub struct Room {
    /// Its options.
    pub config: RoomConfig,
    /// Audio offered to subscribers (the first joiner's choice).
    pub audio: bool,
    /// Video offered (the first joiner's choice, unless `video_disabled`).
    pub video: bool,
    /// Participants in join order.
    pub members: Vec<ParticipantId>,
    /// Active speakers (session ids, at most two).
    pub active: Vec<String>,
    /// Raised hands (session ids) in raising order.
    pub hands: Vec<String>,
    /// The audio levels last reported (`conference::levels`): (session, peak, mean), in
    /// member order.
    pub levels_sent: Vec<(String, u8, u8)>,
}

/// A participant: a connection's publisher session in a room.
#[derive(Debug)]
pub struct Participant {
    /// Its WebSocket.
    pub conn: ConnId,
    /// The client's publisher session id.
    pub session: String,
    /// Its account.
    pub identity: Identity,
    /// Its room's AOR.
    pub room: String,
    /// The publisher PeerConnection (receives only).
    pub leg: BrowserLeg,
    /// The codecs we answered, at the browser's PTs: what its subscribers are offered.
    pub codecs: Vec<Codec>,
    /// Feeds (of any connection) that receive this publisher.
    pub subscribers: BTreeSet<FeedId>,
    /// Feeds this participant's connection attached through this session.
    pub feeds: BTreeSet<FeedId>,
    /// Forward its audio / video (`videoroom-session-update` on the publisher).
    pub send_audio: bool,
    /// See `send_audio`.
    pub send_video: bool,
    /// Bitrate asked for by `videoroom-session-update` on the publisher: a cap on what it is
    /// told to send (`conference::bitrate`; 0 or less: none).
    pub bitrate: Option<i64>,
    /// Its audio levels and REMB.
    pub media: PublisherMedia,
}

/// What the media plane keeps about a publisher besides its leg.
#[derive(Debug, Default, Clone)]
pub struct PublisherMedia {
    /// Its audio levels since the last report.
    pub levels: LevelWindow,
    /// The last REMB sent to it: bit/s, when.
    pub remb: Option<(u64, Instant)>,
    /// What it sends (payload bit/s over the last measured second).
    pub rate: Rate,
}

/// A payload rate, measured over about a second at a time.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rate {
    /// Bytes since `since`.
    pub bytes: u64,
    /// The start of the current measurement.
    pub since: Option<Instant>,
    /// The last measurement, bit/s.
    pub bps: u64,
}

/// RFC 6464 audio levels (-dBov, 0 = loudest, 127 = silence) of one publisher's packets in one
/// report period.
#[derive(Debug, Default, Clone, Copy)]
pub struct LevelWindow {
    /// The loudest level (the smallest -dBov).
    pub loudest: Option<u8>,
    /// The sum of the packets' amplitudes (fractions of full scale).
    pub amplitude_sum: f64,
    /// Packets with a level.
    pub packets: u32,
}

/// A feed: a subscriber PeerConnection of `parent`'s connection, receiving `publisher`.
#[derive(Debug)]
pub struct Feed {
    /// Its WebSocket.
    pub conn: ConnId,
    /// The client's feed id.
    pub id: String,
    /// The participant whose session attached it (events go to its session).
    pub parent: ParticipantId,
    /// The participant it receives.
    pub publisher: ParticipantId,
    /// The subscriber PeerConnection (sends only).
    pub leg: BrowserLeg,
    /// Sequence/timestamp continuity of the audio sent to it.
    pub audio: SeqTsRewriter,
    /// Sequence/timestamp continuity of the video sent to it.
    pub video: SeqTsRewriter,
    /// Forward audio / video to it (`videoroom-session-update` on the feed).
    pub send_audio: bool,
    /// See `send_audio`.
    pub send_video: bool,
    /// `feed-established` was sent.
    pub established: bool,
    /// Its receiver's estimate and cap (`conference::bitrate`).
    pub media: FeedMedia,
}

/// What the media plane keeps about a feed besides its leg.
#[derive(Debug, Default, Clone, Copy)]
pub struct FeedMedia {
    /// The subscriber's last REMB (bit/s) and when it came.
    pub estimate: Option<(u64, Instant)>,
    /// A cap the subscriber asked for with `videoroom-session-update` `bitrate`.
    pub max_bitrate: Option<u64>,
}
