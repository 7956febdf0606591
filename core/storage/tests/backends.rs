//! What only one backend has: SQLite's file and WAL mode, PostgreSQL's server, its loss and
//! concurrent first start; and the `open` that picks one.

mod common;

use std::path::Path;

use sylkgw_core::storage::{Direction, NewMessage, StoreError, StoreRequest, StoreResult, UnixMicros};
use sylkgw_storage::pg_server::{Durability, PgServer};
use sylkgw_storage::{open, Postgres, Sqlite, Storage};

use common::{PgFixture, TempDir};

fn add(id: &str) -> StoreRequest {
    StoreRequest::AddMessage {
        message: NewMessage {
            account: "alice@example.com".into(),
            contact: "bob@example.com".into(),
            direction: Some(Direction::Outgoing),
            content_type: "text/plain".into(),
            content: "hi".into(),
            message_id: id.into(),
            timestamp: "2026-01-01T00:00:00Z".into(),
            disposition: vec![],
            state: None,
            created_at: UnixMicros(1),
        },
        require_account: false,
    }
}

fn count(store: &mut dyn Storage) -> usize {
    let all = StoreRequest::Journal { account: "alice@example.com".into(), message_id: None, since: None, limit: None };
    match store.execute(&all) {
        Ok(StoreResult::Journal { entries }) => entries.len(),
        other => panic!("Journal answered {other:?}"),
    }
}

#[test]
fn sqlite_creates_its_directory_and_file_in_wal_mode_and_keeps_data_across_restarts() {
    let dir = TempDir::new("restart");
    let data_dir = dir.path().join("nested/data");
    {
        let mut store = open(None, &data_dir).expect("first open");
        store.execute(&add("m1")).unwrap();
    }
    let file = data_dir.join(Sqlite::FILE_NAME);
    assert!(file.is_file());
    let conn = rusqlite::Connection::open(&file).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    drop(conn);
    let mut again = Sqlite::open(&data_dir).expect("reopen");
    assert_eq!(again.schema_version(), Ok(1));
    assert_eq!(count(&mut again), 1);
}

#[test]
fn sqlite_in_a_directory_that_cannot_be_created_is_unavailable() {
    let dir = TempDir::new("blocked");
    std::fs::create_dir_all(dir.path()).unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    assert!(matches!(Sqlite::open(&file.join("data")), Err(StoreError::Unavailable(_))));
    // A file that is not a database is refused too, and left as it was.
    let bogus = dir.path().join("bogus.sqlite3");
    std::fs::write(&bogus, vec![0x55; 4096]).unwrap();
    assert!(matches!(Sqlite::open_file(&bogus), Err(StoreError::Unavailable(_))));
    assert_eq!(std::fs::read(&bogus).unwrap(), vec![0x55; 4096]);
}

#[test]
fn open_picks_postgresql_by_url() {
    let db = PgFixture::new();
    let dir = TempDir::new("unused");
    let mut store = open(Some(&db.url), dir.path()).expect("open postgres");
    store.execute(&add("m1")).unwrap();
    assert!(!dir.path().exists(), "no SQLite file for a postgresql:// setting");
    assert_eq!(count(&mut Postgres::open(&db.url).unwrap()), 1);
}

#[test]
fn gateways_starting_together_migrate_once() {
    let db = PgFixture::new();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            std::thread::spawn(move || Postgres::open(&url).map(|mut p| p.schema_version()))
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), Ok(Ok(1)));
    }
    let mut client = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    let rows: i64 = client.query_one("SELECT COUNT(*) FROM schema_version", &[]).unwrap().get(0);
    assert_eq!(rows, 1);
}

#[test]
fn postgresql_without_a_server_is_unavailable() {
    let dir = TempDir::new("nosrv");
    std::fs::create_dir_all(dir.path()).unwrap();
    let url = format!("postgresql://postgres@/postgres?host={}&port=5432", dir.path().display());
    assert!(matches!(Postgres::open(&url), Err(StoreError::Unavailable(_))));
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_lost_server_is_unavailable_and_the_harness_stops_it_by_pid() {
    let mut server = PgServer::start(Durability::Fast).unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let pid = server.pid().expect("running");
    assert!(pid_alive(pid));
    let url = server.create_database().unwrap();
    let mut store = Postgres::open(&url).unwrap();
    store.execute(&add("m1")).unwrap();
    server.stop();
    assert!(!pid_alive(pid), "server {pid} still running");
    assert!(matches!(store.execute(&add("m2")), Err(StoreError::Unavailable(_))));
    // Still unavailable (and no panic) on the next request, which tries to reconnect.
    assert!(matches!(store.execute(&add("m3")), Err(StoreError::Unavailable(_))));
    drop(server);
}

/// A gateway that numbered an entry first but commits last must not be overtaken: a reader
/// that pages after the newest id it saw would never get the earlier-numbered entry.
#[test]
fn journal_positions_follow_commit_order_across_gateways() {
    let db = PgFixture::new();
    let mut reader = Postgres::open(&db.url).unwrap();
    // A slow gateway: inside its transaction it has journaled "slow" (and so holds the
    // account's head row, as every journal write does) but has not committed yet.
    let mut slow = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    let mut tx = slow.transaction().unwrap();
    tx.batch_execute(
        "INSERT INTO journal_heads (account, entries_written) VALUES ('alice@example.com', 1)
         ON CONFLICT (account) DO UPDATE SET entries_written = journal_heads.entries_written + 1;
         INSERT INTO journal (account, contact, direction, content_type, content, message_id, msg_timestamp,
                              disposition, state, created_at)
         VALUES ('alice@example.com', 'bob@example.com', 'outgoing', 'text/plain', 'x', 'slow', 't', '[]', NULL, 1);
         INSERT INTO message_ids (account, message_id, seq, created_at)
         SELECT account, message_id, seq, created_at FROM journal WHERE message_id = 'slow';",
    )
    .unwrap();
    // Another gateway journals "fast" meanwhile.
    let url = db.url.clone();
    let fast = std::thread::spawn(move || Postgres::open(&url).unwrap().execute(&add("fast")));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let seen = journal_ids(&mut reader, None);
    assert!(seen.is_empty(), "{seen:?} is visible before the earlier-numbered entry commits");
    tx.commit().unwrap();
    assert!(fast.join().unwrap().is_ok());
    assert_eq!(journal_ids(&mut reader, None), ["slow", "fast"]);
}

fn journal_ids(store: &mut dyn Storage, after: Option<&str>) -> Vec<String> {
    let request = StoreRequest::Journal {
        account: "alice@example.com".into(),
        message_id: after.map(str::to_string),
        since: None,
        limit: None,
    };
    match store.execute(&request) {
        Ok(StoreResult::Journal { entries }) => entries.into_iter().map(|e| e.message_id).collect(),
        other => panic!("Journal answered {other:?}"),
    }
}
