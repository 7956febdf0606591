//! Benchmark (prints figures, asserts nothing): the journal of one account with 100,000 stored
//! entries on SQLite and on PostgreSQL (a throw-away server on a Unix socket): insert time per
//! entry (one request, one transaction each), a full sync (every entry in one answer), a first
//! page (`limit` 5000, the protocol default), and a paged sync (pages of 5000 after the last
//! `message_id`, as a client catches up). PostgreSQL is loaded with fsync off (an fsync per
//! commit would make the load take most of an hour on a slow disk; queries do not depend on
//! it), and its durable insert cost is measured on 1,000 entries against a second server with
//! default settings.
//!
//! `cargo run --release -p sylkgw-storage --bin storage_bench [entries]`

use std::time::{Duration, Instant};

use sylkgw_core::storage::{Direction, MessageState, NewMessage, StoreRequest, StoreResult, UnixMicros};
use sylkgw_storage::pg_server::{Durability, PgServer};
use sylkgw_storage::{Postgres, Sqlite, Storage};

const ACCOUNT: &str = "alice@example.com";
const PAGE: u32 = 5000;

fn main() {
    let entries: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("sylkgw-storage-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    println!("{entries} entries stored, 9 in 10 for the account whose journal is read");
    match Sqlite::open(&dir) {
        Ok(mut sqlite) => run("sqlite (WAL, synchronous=NORMAL)", &mut sqlite, entries),
        Err(e) => println!("sqlite: cannot open: {e}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
    match postgres(Durability::Fast) {
        Ok((_server, mut pg)) => run("postgresql (unix socket, fsync off)", &mut pg, entries),
        Err(e) => println!("postgresql: {e}"),
    }
    match postgres(Durability::Default) {
        Ok((_server, mut pg)) => insert_only("postgresql (unix socket, fsync on)", &mut pg, entries.min(1000)),
        Err(e) => println!("postgresql: {e}"),
    }
}

fn postgres(durability: Durability) -> Result<(PgServer, Postgres), String> {
    let server = PgServer::start(durability)?;
    let url = server.create_database()?;
    let store = Postgres::open(&url).map_err(|e| e.to_string())?;
    Ok((server, store))
}

/// Stores `entries` entries; the time it took, or `None` after an error.
fn insert(store: &mut dyn Storage, entries: usize) -> Option<Duration> {
    let start = Instant::now();
    for i in 0..entries {
        let account = if i % 10 == 9 { "other@example.com" } else { ACCOUNT };
        let request = StoreRequest::AddMessage { message: message(account, i), require_account: false };
        if let Err(e) = store.execute(&request) {
            println!("insert {i}: {e}");
            return None;
        }
    }
    Some(start.elapsed())
}

fn insert_only(name: &str, store: &mut dyn Storage, entries: usize) {
    println!("== {name}");
    if let Some(took) = insert(store, entries) {
        println!("insert: {entries} entries in {:.2} s, {} per entry", took.as_secs_f64(), per(took, entries));
    }
}

fn message(account: &str, i: usize) -> NewMessage {
    NewMessage {
        account: account.into(),
        contact: format!("contact{}@example.com", i % 50),
        direction: Some(if i.is_multiple_of(2) { Direction::Outgoing } else { Direction::Incoming }),
        content_type: "text/plain".into(),
        content: format!("message number {i}, about sixty bytes of ordinary chat text"),
        message_id: format!("{i:08x}-6b2c-4c8e-9a5e-0242ac120002"),
        timestamp: "2026-01-01T00:00:00.000Z".into(),
        disposition: vec!["positive-delivery".into(), "display".into()],
        state: Some(MessageState::Delivered),
        created_at: UnixMicros(1_767_225_600_000_000 + i as i64),
    }
}

fn journal(store: &mut dyn Storage, message_id: Option<String>, limit: Option<u32>) -> Vec<String> {
    let request = StoreRequest::Journal { account: ACCOUNT.into(), message_id, since: None, limit };
    match store.execute(&request) {
        Ok(StoreResult::Journal { entries }) => entries.into_iter().map(|e| e.message_id).collect(),
        other => panic!("journal: {other:?}"),
    }
}

fn per(total: Duration, n: usize) -> String {
    format!("{:.1} µs", total.as_secs_f64() * 1e6 / n.max(1) as f64)
}

fn run(name: &str, store: &mut dyn Storage, entries: usize) {
    println!("== {name}");
    let Some(insert) = insert(store, entries) else { return };
    let mine = journal(store, None, None).len();
    println!("insert: {entries} entries in {:.2} s, {} per entry", insert.as_secs_f64(), per(insert, entries));

    let start = Instant::now();
    let all = journal(store, None, None);
    println!("full sync (no limit): {} entries in {:.1} ms", all.len(), start.elapsed().as_secs_f64() * 1e3);

    let start = Instant::now();
    let first = journal(store, None, Some(PAGE));
    println!("first page (limit {PAGE}): {} entries in {:.1} ms", first.len(), start.elapsed().as_secs_f64() * 1e3);

    let start = Instant::now();
    let mid = journal(store, Some(all[all.len() / 2].clone()), Some(PAGE));
    println!("page after a middle id: {} entries in {:.1} ms", mid.len(), start.elapsed().as_secs_f64() * 1e3);

    let start = Instant::now();
    let (mut pages, mut seen, mut cursor) = (0, 0, None);
    loop {
        let page = journal(store, cursor.clone(), Some(PAGE));
        if page.is_empty() {
            break;
        }
        pages += 1;
        seen += page.len();
        cursor = page.last().cloned();
    }
    let paged = start.elapsed();
    println!(
        "paged sync: {seen} of {mine} entries in {pages} pages of {PAGE}, {:.1} ms ({:.1} ms per page)",
        paged.as_secs_f64() * 1e3,
        paged.as_secs_f64() * 1e3 / f64::from(pages.max(1))
    );
}
