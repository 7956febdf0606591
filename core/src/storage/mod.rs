//! Storage vocabulary: what the core asks of its message store and what it gets back.
//!
//! Storage is IO, so the core only speaks about it: a [`StoreRequest`] goes out (with a
//! [`StoreId`]), and its outcome, `Result<`[`StoreResult`]`, `[`StoreError`]`>`, comes back in.
//! The runtimes carry requests out off the event loop (crate `sylkgw-storage` holds the SQLite
//! and PostgreSQL backends); captures record both sides as one text line each ([`line`]) so
//! replays need no database.
//!
//! The journal semantics follow SylkServer's message storage (`webrtcgateway/storage.py`): every
//! entry (chat message, IMDN, read/remove marker) is one row for one account, replayed in the
//! order it was stored; `account-sync-conversations` pages it by `message_id` (entries stored
//! after that one), else `since` (entries stored after that wall time), else from the start,
//! then keeps the first `limit`. Layout: `message` (shared value types), `request`, `result`,
//! `error`, `line` (capture encoding), `iso` (wall times as text).

pub mod error;
pub mod iso;
pub mod line;
pub mod message;
pub mod request;
pub mod result;

pub use error::StoreError;
pub use message::{Direction, JournalStamp, MessageState, NewMessage, UnixMicros};
pub use request::{AddressbookAction, AddressbookKind, RemoveSide, StoreRequest};
pub use result::{AccountInfo, AddOutcome, Addressbook, HistoryAnswer, JournalEntry, StoreResult};

/// Names one storage request, so its outcome can be matched to it. Chosen by the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreId(pub u64);

impl std::fmt::Display for StoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}
