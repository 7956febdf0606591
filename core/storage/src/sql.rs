//! The little SQL both backends speak: statements with `$1`-style parameters, integer and text
//! values, and transactions. `ops` is written against this, once.

use sylkgw_core::storage::StoreError;

/// A statement parameter. Nullable ones carry their type (PostgreSQL needs it).
#[derive(Clone, Debug)]
pub(crate) enum Param<'a> {
    Int(i64),
    Text(&'a str),
    OptText(Option<&'a str>),
}

/// A column value read back.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Val {
    Int(i64),
    Text(String),
    Null,
}

impl Val {
    pub(crate) fn int(&self) -> Result<i64, StoreError> {
        match self {
            Val::Int(v) => Ok(*v),
            other => Err(StoreError::Corrupt(format!("expected an integer column, got {other:?}"))),
        }
    }

    pub(crate) fn opt_int(&self) -> Result<Option<i64>, StoreError> {
        match self {
            Val::Null => Ok(None),
            other => other.int().map(Some),
        }
    }

    pub(crate) fn text(self) -> Result<String, StoreError> {
        match self {
            Val::Text(v) => Ok(v),
            other => Err(StoreError::Corrupt(format!("expected a text column, got {other:?}"))),
        }
    }

    pub(crate) fn opt_text(self) -> Result<Option<String>, StoreError> {
        match self {
            Val::Null => Ok(None),
            other => other.text().map(Some),
        }
    }
}

/// Which SQL the schema must be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// One database connection.
pub(crate) trait Db {
    fn dialect(&self) -> Dialect;
    /// Runs statements without parameters or results (DDL, `COMMIT`).
    fn batch(&mut self, sql: &str) -> Result<(), StoreError>;
    /// Runs one statement; the number of rows it changed.
    fn exec(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError>;
    /// Runs one query; its rows.
    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Vec<Val>>, StoreError>;
    /// Starts a transaction that will write (SQLite takes the write lock at once, so two
    /// writers never deadlock upgrading their locks).
    fn begin(&mut self) -> Result<(), StoreError>;
}

/// Runs `work` in one transaction: committed if it returns `Ok`, rolled back otherwise.
pub(crate) fn transaction<T>(
    db: &mut dyn Db,
    work: impl FnOnce(&mut dyn Db) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    db.begin()?;
    match work(db) {
        Ok(value) => {
            db.batch("COMMIT")?;
            Ok(value)
        }
        Err(error) => {
            if let Err(rollback) = db.batch("ROLLBACK") {
                log::warn!("storage: rollback failed: {rollback}");
            }
            Err(error)
        }
    }
}
