//! Why a storage request failed.

use serde::{Deserialize, Serialize};

/// A storage failure, typed by what the caller can do about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "error", content = "detail", rename_all = "kebab-case")]
pub enum StoreError {
    /// The database cannot be reached or written now (connection lost, disk full, locked too
    /// long, schema newer than this gateway). Retrying later may succeed; nothing was changed.
    Unavailable(String),
    /// The database refused the change as inconsistent (a unique or check constraint).
    Constraint(String),
    /// The row the request names does not exist (message id, account, addressbook item).
    NotFound,
    /// Stored data could not be read back (a JSON column that does not parse).
    Corrupt(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable(why) => write!(f, "storage unavailable: {why}"),
            StoreError::Constraint(why) => write!(f, "storage constraint violated: {why}"),
            StoreError::NotFound => f.write_str("not found"),
            StoreError::Corrupt(why) => write!(f, "stored data corrupt: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}
