//! Value types shared by requests and results: directions, message states, stamps.

use serde::{Deserialize, Serialize};

/// Wall time in microseconds since the Unix epoch (the core derives it from its `Clock`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMicros(pub i64);

/// Which way a journal entry went, seen from its account. Markers (conversation read/removed)
/// have none and are stored and replayed as `""`, as SylkServer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Incoming,
    Outgoing,
}

impl Direction {
    /// The wire and column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Incoming => "incoming",
            Direction::Outgoing => "outgoing",
        }
    }

    /// Parses a column value; `""` (markers) and unknown text are `None`.
    pub fn parse(text: &str) -> Option<Direction> {
        match text {
            "incoming" => Some(Direction::Incoming),
            "outgoing" => Some(Direction::Outgoing),
            _ => None,
        }
    }
}

/// A stored message's state: SylkServer's `Message.state` choices plus the IMDN statuses an
/// incoming notification may carry (RFC 5438 §7.2.1: `processed`, `stored`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    Pending,
    Accepted,
    Delivered,
    Displayed,
    Failed,
    Forbidden,
    Error,
    Received,
    Processed,
    Stored,
}

impl MessageState {
    /// Every state, for tests and column decoding.
    pub const ALL: [MessageState; 10] = [
        MessageState::Pending,
        MessageState::Accepted,
        MessageState::Delivered,
        MessageState::Displayed,
        MessageState::Failed,
        MessageState::Forbidden,
        MessageState::Error,
        MessageState::Received,
        MessageState::Processed,
        MessageState::Stored,
    ];

    /// The wire and column value.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Pending => "pending",
            MessageState::Accepted => "accepted",
            MessageState::Delivered => "delivered",
            MessageState::Displayed => "displayed",
            MessageState::Failed => "failed",
            MessageState::Forbidden => "forbidden",
            MessageState::Error => "error",
            MessageState::Received => "received",
            MessageState::Processed => "processed",
            MessageState::Stored => "stored",
        }
    }

    /// Parses a column value.
    pub fn parse(text: &str) -> Option<MessageState> {
        MessageState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One message to journal (SylkServer `MessageStorage.add`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMessage {
    /// The AOR whose journal gets the entry.
    pub account: String,
    /// The other party's AOR.
    pub contact: String,
    pub direction: Option<Direction>,
    pub content_type: String,
    pub content: String,
    /// The message's own id (`imdn.Message-ID` / the client's `message_id`).
    pub message_id: String,
    /// The message's timestamp as sent (ISO 8601 text), replayed as `timestamp`.
    pub timestamp: String,
    /// Requested notifications (`positive-delivery`, `display`, …).
    pub disposition: Vec<String>,
    pub state: Option<MessageState>,
    /// When the gateway stored it: the key `since` compares against.
    pub created_at: UnixMicros,
}

/// Identity and time of a journal marker the store writes itself (read, removed message,
/// removed conversation): a fresh id drawn by the core, the wall time, its ISO text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalStamp {
    pub message_id: String,
    pub created_at: UnixMicros,
    pub timestamp: String,
}
