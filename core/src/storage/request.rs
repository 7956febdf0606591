//! What the core asks of the store: one variant per operation the messaging and addressbook
//! features need. Each doc states the contract every backend keeps (the conformance suite in
//! `sylkgw-storage` checks it).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::storage::message::{JournalStamp, MessageState, NewMessage, UnixMicros};

/// Which addressbook list an item belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressbookKind {
    Contact,
    Group,
    Policy,
}

impl AddressbookKind {
    /// The wire and column value.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressbookKind::Contact => "contact",
            AddressbookKind::Group => "group",
            AddressbookKind::Policy => "policy",
        }
    }
}

/// `account-update-addressbook`'s `action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressbookAction {
    Add,
    Update,
    Delete,
}

/// Whose copy `RemoveMessage` removes (SylkServer `_RH_account_remove_message`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoveSide {
    /// The requesting account: its copy (any direction) goes, and the marker is journaled
    /// with direction `outgoing` whether or not a copy was found.
    Sender,
    /// The peer's copy: removed only if it is stored as `incoming`; the marker (direction
    /// `incoming`) is journaled only then.
    Receiver,
}

/// One storage operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum StoreRequest {
    /// Journals a message. A `message_id` already journaled for the account is a
    /// [`Duplicate`](crate::storage::AddOutcome::Duplicate) (and so is any `message/imdn+json`
    /// for a known id); `text/pgp-public-key` stores the key (for the account if outgoing, else
    /// for the contact) instead of journaling; `text/pgp-private-key` only reserves the id.
    /// With `require_account`, an account never seen by `TouchAccount` is `NotFound` (messages
    /// are stored for offline accounts only if they have logged in once).
    AddMessage { message: NewMessage, require_account: bool },
    /// Sets the state of the account's message `message_id` (unless it is `received`);
    /// `delivered` drops `positive-delivery` from its disposition, `displayed` clears it.
    /// `NotFound` if the account has no such message.
    UpdateState { account: String, message_id: String, state: MessageState },
    /// The account's journal in stored order: entries after `message_id` if that id was ever
    /// journaled for the account, else after wall time `since` if given, else all; then the
    /// first `limit` (all if `None`). Answered with `Journal`.
    Journal { account: String, message_id: Option<String>, since: Option<UnixMicros>, limit: Option<u32> },
    /// Clears the disposition of every entry with `contact`, drops earlier
    /// `application/sylk-conversation-read` entries for it, and journals a new one (content:
    /// the contact). Answered with `Done`.
    MarkConversationRead { account: String, contact: String, stamp: JournalStamp },
    /// Removes one message (see [`RemoveSide`]) and journals `application/sylk-message-remove`
    /// with content `{"contact","message_id","direction"}`. Answered with `Removed`.
    RemoveMessage { account: String, contact: String, message_id: String, side: RemoveSide, stamp: JournalStamp },
    /// Removes every entry with `contact` and journals `application/sylk-conversation-remove`
    /// (content: the contact). Answered with `Removed` (`found`: anything was removed).
    RemoveConversation { account: String, contact: String, stamp: JournalStamp },
    /// Drops the account's oldest journal entries beyond the newest `keep`. Ids stay known,
    /// so paging after a dropped id still works. Answered with `Trimmed`.
    TrimJournal { account: String, keep: u64 },
    /// Stores (replaces) the PGP public key of `account`. Answered with `Done`.
    StorePublicKey { account: String, public_key: String, created_at: UnixMicros },
    /// The PGP public key of `account`, if any. Answered with `PublicKey`.
    LookupPublicKey { account: String },
    /// Records that `account` logged in at `now` (creating it). Answered with `Done`.
    TouchAccount { account: String, now: UnixMicros },
    /// The account record. Answered with `Account` (`None` if never touched).
    GetAccount { account: String },
    /// Sets the account's history API token, valid until `expires_at`. `NotFound` for an
    /// account never touched.
    SetApiToken { account: String, token: String, expires_at: UnixMicros },
    /// The journal for the HTTP history endpoint (spec §6.3): only if `token` equals the
    /// account's unexpired API token at `now`; entries after `message_id` (as `Journal`), the
    /// first `limit`. Answered with `History`.
    History { account: String, token: String, message_id: Option<String>, now: UnixMicros, limit: u32 },
    /// The account's addressbook (empty lists if none). Answered with `Addressbook`.
    FetchAddressbook { account: String },
    /// Changes one addressbook item, identified by `id` (the item's `id` field). `add` inserts
    /// or replaces; `update` replaces in place, `delete` removes, both `NotFound` if there is no
    /// such item. `data` is kept as given (ignored for `delete`). Answered with `Done`. An
    /// `add` of a new item when the account already holds `max_items` (all kinds; 0: no bound)
    /// is refused with `Constraint("addressbook holds at most N items")` and changes nothing.
    UpdateAddressbook {
        account: String,
        kind: AddressbookKind,
        action: AddressbookAction,
        id: String,
        data: Value,
        #[serde(default)]
        max_items: u32,
    },
}
