//! The default backend: a bundled SQLite, one file under the data directory, in WAL mode (so
//! readers on other worker threads never block the writer).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode};
use sylkgw_core::storage::{StoreError, StoreRequest, StoreResult};

use crate::schema::{self, Migration, MIGRATIONS};
use crate::sql::{Db, Dialect, Param, Val};
use crate::{ops, Storage};

/// How long a writer waits for another connection's write lock before `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to the SQLite store. One per worker thread; all of them may share one file.
pub struct Sqlite {
    conn: Connection,
    path: PathBuf,
}

impl Sqlite {
    /// The database file's name under the data directory.
    pub const FILE_NAME: &'static str = "sylkgw.sqlite3";

    /// Opens (creating the directory, the file and the schema as needed) `data_dir/sylkgw.sqlite3`.
    pub fn open(data_dir: &Path) -> Result<Sqlite, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", data_dir.display())))?;
        Sqlite::open_file(&data_dir.join(Self::FILE_NAME))
    }

    /// Opens the database file `path`, migrated to the current schema.
    pub fn open_file(path: &Path) -> Result<Sqlite, StoreError> {
        Sqlite::open_with(path, MIGRATIONS)
    }

    /// Opens `path` migrated to the last of `migrations` (tests use this to build old databases).
    pub fn open_with(path: &Path, migrations: &[Migration]) -> Result<Sqlite, StoreError> {
        let conn = Connection::open(path).map_err(|e| unavailable(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| unavailable(path, e))?;
        let mode: String =
            conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)).map_err(|e| unavailable(path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!("{}: journal mode {mode}, not wal", path.display())));
        }
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(|e| unavailable(path, e))?;
        let mut store = Sqlite { conn, path: path.to_path_buf() };
        schema::migrate(&mut store, migrations)?;
        Ok(store)
    }

    /// The schema version the file is at.
    pub fn schema_version(&mut self) -> Result<i64, StoreError> {
        let rows = self.query("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?;
        rows.into_iter().next().map_or(Ok(0), |r| r[0].int())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Storage for Sqlite {
    fn execute(&mut self, request: &StoreRequest) -> Result<StoreResult, StoreError> {
        ops::execute(self, request)
    }
}

fn unavailable(path: &Path, error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("{}: {error}", path.display()))
}

/// Constraint violations are the database refusing the change; everything else (busy, I/O,
/// full, read-only) means it cannot take it now.
fn store_error(error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => StoreError::Constraint(error.to_string()),
        _ => StoreError::Unavailable(error.to_string()),
    }
}

/// `$1` → `?1`: SQLite reads `?NNN` as "parameter NNN", the same meaning as PostgreSQL's `$NNN`.
fn positional(sql: &str) -> String {
    sql.replace('$', "?")
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Param::Int(v) => ToSqlOutput::from(*v),
            Param::Text(v) => ToSqlOutput::from(*v),
            Param::OptText(Some(v)) => ToSqlOutput::from(*v),
            Param::OptText(None) => ToSqlOutput::from(rusqlite::types::Null),
        })
    }
}

impl Db for Sqlite {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.conn.execute_batch(sql).map_err(store_error)
    }

    fn exec(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let mut statement = self.conn.prepare_cached(&positional(sql)).map_err(store_error)?;
        let changed = statement.execute(rusqlite::params_from_iter(params)).map_err(store_error)?;
        Ok(changed as u64)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Vec<Val>>, StoreError> {
        let mut statement = self.conn.prepare_cached(&positional(sql)).map_err(store_error)?;
        let width = statement.column_count();
        let mut rows = statement.query(rusqlite::params_from_iter(params)).map_err(store_error)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(store_error)? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(match row.get_ref(i).map_err(store_error)? {
                    ValueRef::Null => Val::Null,
                    ValueRef::Integer(v) => Val::Int(v),
                    ValueRef::Text(v) => Val::Text(String::from_utf8_lossy(v).into_owned()),
                    other => {
                        return Err(StoreError::Corrupt(format!("unexpected column type {:?}", other.data_type())))
                    }
                });
            }
            out.push(values);
        }
        Ok(out)
    }

    fn begin(&mut self) -> Result<(), StoreError> {
        self.batch("BEGIN IMMEDIATE")
    }
}
