//! sylkgw-storage: carries out the core's storage requests ([`sylkgw_core::storage`]).
//!
//! A [`Storage`] executes one [`StoreRequest`] at a time, synchronously; the runtimes call it
//! from worker threads, one backend value per thread. Two backends share one implementation of
//! the semantics (`ops`, over the small SQL interface in `sql`), so they cannot drift apart:
//! - [`Sqlite`]: the default, a bundled SQLite in WAL mode, one file under the data directory,
//!   created on first open;
//! - [`Postgres`]: `storage = postgresql://…`, for several gateways sharing one history.
//!
//! Both create and migrate their schema themselves ([`schema`]). [`pg_server`] starts a
//! throw-away PostgreSQL server for tests and benchmarks.

#![deny(unsafe_code)]

mod ops;
pub mod pg_server;
pub mod postgres;
pub mod schema;
mod sql;
pub mod sqlite;

use std::path::Path;

pub use sylkgw_core::storage::{StoreError, StoreRequest, StoreResult};

pub use crate::postgres::Postgres;
pub use crate::sqlite::Sqlite;

/// Something that carries out storage requests.
pub trait Storage {
    /// Executes `request` atomically: on `Err`, nothing was changed.
    fn execute(&mut self, request: &StoreRequest) -> Result<StoreResult, StoreError>;
}

/// Opens the backend the `storage` setting names: `postgresql://…` (or `postgres://…`)
/// selects PostgreSQL; anything else (`None`, `"sqlite"`) the SQLite file under `data_dir`.
pub fn open(storage: Option<&str>, data_dir: &Path) -> Result<Box<dyn Storage + Send>, StoreError> {
    match storage {
        Some(url) if url.starts_with("postgresql://") || url.starts_with("postgres://") => {
            Ok(Box::new(Postgres::open(url)?))
        }
        _ => Ok(Box::new(Sqlite::open(data_dir)?)),
    }
}
