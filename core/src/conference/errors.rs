//! Why a `videoroom-*` request failed: the `error` text the client gets (SylkServer's strings
//! where SylkServer has one).

use std::fmt;

/// A failed conference request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfError {
    /// `videoroom-join` with a session id this connection (or the room) already uses.
    SessionInUse { session: String },
    /// `videoroom-join` naming an account the connection has not added.
    UnknownAccount { account: String },
    /// The room's access policy refuses the account.
    NotAllowed { uri: String },
    /// A request naming a session this connection has not in a room.
    UnknownSession { session: String },
    /// `videoroom-feed-attach` with a feed id already used.
    FeedInUse { feed: String },
    /// `videoroom-feed-attach` for a publisher not in the room.
    UnknownPublisher { publisher: String },
    /// `videoroom-feed-answer`/`-detach` naming a feed this connection does not hold.
    UnknownFeed { feed: String, detach: bool },
    /// The feed belongs to another publisher session of the connection.
    NotAttached { feed: String, session: String },
    /// `videoroom-configure` naming sessions not in the room.
    UnknownParticipants { ids: Vec<String> },
    /// The browser's SDP could not be used.
    BadSdp { why: String },
    /// No DTLS certificate or no WebRTC socket: media cannot be served.
    MediaUnavailable,
    /// `ConferenceConfig::max_rooms` reached.
    TooManyRooms,
    /// `ConferenceConfig::max_participants_per_room` reached.
    RoomFull { uri: String },
    /// `ConferenceConfig::max_feeds_per_connection` reached.
    TooManyFeeds,
    /// The room's home worker did not take the request (its queue is full, or it is gone).
    HomeUnavailable,
}

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SessionInUse { session } => write!(f, "Session ID {session} already in use"),
            Self::UnknownAccount { account } => write!(f, "Unknown account specified: {account}"),
            Self::NotAllowed { uri } => write!(f, "is not allowed to join room {uri}"),
            Self::UnknownSession { session } => write!(f, "Unknown room session: {session}"),
            Self::FeedInUse { feed } => write!(f, "Video room session ID {feed} already in use"),
            Self::UnknownPublisher { publisher } => {
                write!(f, "Unknown publisher room session to attach to: {publisher}")
            }
            Self::UnknownFeed { feed, detach: false } => write!(f, "Unknown room session: {feed}"),
            Self::UnknownFeed { feed, detach: true } => write!(f, "Unknown room session to detach: {feed}"),
            Self::NotAttached { feed, session } => write!(f, "{feed} is not an attached feed of {session}"),
            Self::UnknownParticipants { ids } => write!(f, "unknown participant session id: {}", ids.join(", ")),
            Self::BadSdp { why } => write!(f, "Invalid SDP: {why}"),
            Self::MediaUnavailable => f.write_str("Media unavailable"),
            Self::TooManyRooms => f.write_str("Too many rooms"),
            Self::RoomFull { uri } => write!(f, "Room {uri} is full"),
            Self::TooManyFeeds => f.write_str("Too many feeds on this connection"),
            Self::HomeUnavailable => f.write_str("Room unavailable, try again later"),
        }
    }
}

impl std::error::Error for ConfError {}
