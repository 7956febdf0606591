//! Fixtures shared by the storage tests: a temporary directory, one PostgreSQL server shared by
//! the tests running at a time (a fresh database each), and the [`Fixture`] the conformance
//! checks open connections through.

#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use sylkgw_storage::pg_server::{Durability, PgServer};
use sylkgw_storage::schema::Migration;
use sylkgw_storage::{Postgres, Sqlite, Storage, StoreError};

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sylkgw-store-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server the tests running now share; started by the first, stopped after the last.
/// If PostgreSQL cannot be started the test fails (never skips).
pub fn pg_server() -> Arc<PgServer> {
    static SHARED: Mutex<Weak<PgServer>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(server) = shared.upgrade() {
        return server;
    }
    let server = Arc::new(PgServer::start(Durability::Fast).unwrap_or_else(|e| panic!("PostgreSQL: {e}")));
    *shared = Arc::downgrade(&server);
    server
}

/// One database, opened as many times as a test wants (as several worker threads or gateways).
pub trait Fixture {
    fn open(&self) -> Box<dyn Storage + Send>;
    /// Opens with a different migration list; the schema version it is at.
    fn open_with(&self, migrations: &[Migration]) -> Result<i64, StoreError>;
    /// Runs SQL directly on the database (tests check columns the API does not show).
    fn sql(&self, sql: &str) -> Vec<Vec<String>>;
}

pub struct SqliteFixture {
    pub dir: TempDir,
}

impl SqliteFixture {
    pub fn new() -> SqliteFixture {
        SqliteFixture { dir: TempDir::new("sqlite") }
    }

    pub fn file(&self) -> PathBuf {
        self.dir.path().join(Sqlite::FILE_NAME)
    }
}

impl Fixture for SqliteFixture {
    fn open(&self) -> Box<dyn Storage + Send> {
        Box::new(Sqlite::open(self.dir.path()).expect("open sqlite"))
    }

    fn open_with(&self, migrations: &[Migration]) -> Result<i64, StoreError> {
        std::fs::create_dir_all(self.dir.path()).unwrap();
        Sqlite::open_with(&self.file(), migrations)?.schema_version()
    }

    fn sql(&self, sql: &str) -> Vec<Vec<String>> {
        let conn = rusqlite::Connection::open(self.file()).unwrap();
        let mut statement = conn.prepare(sql).unwrap();
        let width = statement.column_count();
        let rows = statement
            .query_map([], |row| {
                (0..width)
                    .map(|i| {
                        Ok(match row.get_ref(i)? {
                            rusqlite::types::ValueRef::Null => "NULL".to_string(),
                            rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                            rusqlite::types::ValueRef::Text(v) => String::from_utf8_lossy(v).into_owned(),
                            other => format!("{other:?}"),
                        })
                    })
                    .collect::<rusqlite::Result<Vec<String>>>()
            })
            .unwrap();
        rows.map(Result::unwrap).collect()
    }
}

pub struct PgFixture {
    pub server: Arc<PgServer>,
    pub url: String,
}

impl PgFixture {
    pub fn new() -> PgFixture {
        let server = pg_server();
        let url = server.create_database().unwrap_or_else(|e| panic!("create database: {e}"));
        PgFixture { server, url }
    }
}

impl Fixture for PgFixture {
    fn open(&self) -> Box<dyn Storage + Send> {
        Box::new(Postgres::open(&self.url).expect("open postgres"))
    }

    fn open_with(&self, migrations: &[Migration]) -> Result<i64, StoreError> {
        Postgres::open_with(&self.url, migrations)?.schema_version()
    }

    fn sql(&self, sql: &str) -> Vec<Vec<String>> {
        let mut client = postgres::Client::connect(&self.url, postgres::NoTls).unwrap();
        client
            .simple_query(sql)
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(row) => {
                    Some((0..row.len()).map(|i| row.get(i).unwrap_or("NULL").to_string()).collect())
                }
                _ => None,
            })
            .collect()
    }
}
