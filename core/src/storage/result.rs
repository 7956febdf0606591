//! What the store answers.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::storage::message::{Direction, MessageState, UnixMicros};

/// One journal entry as `sync-conversations` replays it (spec §3.2), plus when it was stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub contact: String,
    pub timestamp: String,
    pub disposition: Vec<String>,
    pub message_id: String,
    pub content_type: String,
    pub content: String,
    pub direction: Option<Direction>,
    pub state: Option<MessageState>,
    pub created_at: UnixMicros,
}

/// What `AddMessage` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddOutcome {
    /// A new journal entry.
    Journaled,
    /// The id was journaled before; nothing changed.
    Duplicate,
    /// A `text/pgp-public-key`: stored as the key, not journaled.
    PublicKeyStored,
    /// A `text/pgp-private-key`: the id is reserved, nothing is stored.
    IdReserved,
}

/// An account record (SylkServer `ChatAccount`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountInfo {
    pub account: String,
    pub last_login: UnixMicros,
    /// When the history API token expires, if one is set.
    pub token_expires: Option<UnixMicros>,
}

/// An addressbook, each list in the order items were first added.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addressbook {
    pub contacts: Vec<Value>,
    pub groups: Vec<Value>,
    pub policies: Vec<Value>,
}

/// The history endpoint's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HistoryAnswer {
    /// No token, an expired one, or a different one: HTTP 401.
    Unauthorized,
    Entries(Vec<JournalEntry>),
}

/// A successful storage outcome; which variant answers which request is stated on
/// [`StoreRequest`](crate::storage::StoreRequest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum StoreResult {
    Done,
    Added { outcome: AddOutcome },
    Journal { entries: Vec<JournalEntry> },
    Removed { found: bool },
    Trimmed { dropped: u64 },
    PublicKey { public_key: Option<String> },
    Account { account: Option<AccountInfo> },
    History { answer: HistoryAnswer },
    Addressbook { addressbook: Addressbook },
}
