//! Storage as IO below the runtimes: the core asks (`Output::Store`), the drive loop hands the
//! request to a [`StorePool`] on SQLite in a temporary data directory, the outcome comes back as
//! `Input::Stored`, and the capture file records both (`< storage store`, `> storage stored`).
//! On SQLite and on a throw-away PostgreSQL server. Nothing in the core asks for storage yet, so
//! the test asks through `Gateway::store_for_test`.

#![allow(clippy::disallowed_methods)] // Instant::now: the drive loop's clock

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use sylkgw_core::storage::{StoreError, StoreId, StoreRequest, StoreResult, UnixMicros};
use sylkgw_core::{Config, ConnId, Gateway, Input, SocketId, Transmit, UdpPurpose};
use sylkgw_driver::store_pool::Outcome;
use sylkgw_driver::{open_backend, Backend, BindAnswer, CaptureFile, Deferred, Driver, Io, StorageSettings, StorePool};
use sylkgw_storage::pg_server::{Durability, PgServer};
use sylkgw_tests::TempDir;

const WAIT: Duration = Duration::from_secs(10);

/// Carries out storage requests on a pool; the core of this test opens no socket.
struct PoolIo {
    pool: StorePool,
    deferred: VecDeque<Deferred>,
}

impl Io for PoolIo {
    fn write(&mut self, conn: ConnId, _: Vec<u8>) {
        panic!("{conn}: no connection in this test");
    }
    fn close(&mut self, conn: ConnId) {
        panic!("{conn}: no connection in this test");
    }
    fn send_datagram(&mut self, t: Transmit) {
        panic!("{}: no socket in this test", t.socket);
    }
    fn connect(&mut self, conn: ConnId, _: SocketAddr) {
        panic!("{conn}: no connect in this test");
    }
    fn resolve(&mut self, query: u64, _: sylkgw_core::dns::QueryType, name: String) {
        panic!("query {query} ({name}): no lookup in this test");
    }
    fn store(&mut self, id: StoreId, request: StoreRequest) {
        if let Err(refused) = self.pool.submit(id, request) {
            self.deferred.push_back(Deferred::Stored(id, Err(refused)));
        }
    }
    fn bind_udp(&mut self, socket: SocketId, _: UdpPurpose, _: SocketAddr) -> BindAnswer {
        panic!("{socket}: no bind in this test");
    }
    fn close_udp(&mut self, socket: SocketId) {
        panic!("{socket}: no socket in this test");
    }
    fn take_deferred(&mut self) -> Option<Deferred> {
        self.deferred.pop_front()
    }
}

/// A capturing core and the file its driver writes.
fn core(dir: &TempDir) -> (Gateway, CaptureFile, std::path::PathBuf) {
    let config = Config { capture: true, ..Config::default() };
    let gw = Gateway::new(config, [7; 32], Instant::now(), Duration::from_secs(1_767_225_600)).unwrap();
    let path = dir.path().join("store.cap");
    (gw, CaptureFile::create(&path).unwrap(), path)
}

/// A one-thread pool (answers in the order asked) and where its answers arrive.
fn pool(backend: &Backend) -> (StorePool, Receiver<(StoreId, Outcome)>) {
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    let pool =
        StorePool::start(backend, 1, 8, move |id, outcome| drop(tx.lock().unwrap().send((id, outcome)))).unwrap();
    (pool, rx)
}

fn capture_lines(path: &std::path::Path, channel: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().filter(|l| l.contains(channel)).map(|l| l.split_once(' ').unwrap().1.trim().to_string()).collect()
}

#[test]
fn requests_run_on_sqlite_and_both_sides_are_captured() {
    let dir = TempDir::new("storage-io");
    round_trip(&dir, StorageSettings { url: None, data_dir: dir.path().join("data"), explicit: true });
}

#[test]
fn requests_run_on_postgresql_and_both_sides_are_captured() {
    let server = PgServer::start(Durability::Fast).unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let url = server.create_database().unwrap();
    let dir = TempDir::new("storage-io-pg");
    round_trip(&dir, StorageSettings { url: Some(url), data_dir: dir.path().join("unused"), explicit: true });
    assert!(!dir.path().join("unused").exists(), "no SQLite file with PostgreSQL");
}

/// Stores a public key and looks it up through the drive loop and a pool on `settings`.
fn round_trip(dir: &TempDir, settings: StorageSettings) {
    let backend = open_backend(&settings).unwrap();
    let (pool, answers) = pool(&backend);
    let (mut gw, capture, path) = core(dir);
    let account = || "alice@example.com".to_string();
    let first = gw.store_for_test(StoreRequest::StorePublicKey {
        account: account(),
        public_key: "KEY".into(),
        created_at: UnixMicros(1),
    });
    let second = gw.store_for_test(StoreRequest::LookupPublicKey { account: account() });
    let (mut driver, mut io) = (Driver::new(gw, Some(capture)), PoolIo { pool, deferred: VecDeque::new() });
    driver.drain(&mut io);
    for _ in 0..2 {
        let (id, result) = answers.recv_timeout(WAIT).expect("an answer");
        driver.feed(&mut io, Input::Stored { id, result });
    }
    assert_eq!(
        capture_lines(&path, " storage "),
        [
            format!(
                r#"< storage   store    {first} {{"op":"store-public-key","account":"alice@example.com","public_key":"KEY","created_at":1}}"#
            ),
            format!(r#"< storage   store    {second} {{"op":"lookup-public-key","account":"alice@example.com"}}"#),
            format!(r#"> storage   stored   {first} {{"ok":{{"result":"done"}}}}"#),
            format!(r#"> storage   stored   {second} {{"ok":{{"result":"public-key","public_key":"KEY"}}}}"#),
        ]
    );
    // The stored outcomes parse back into the inputs that were fed.
    let cap = sylkgw_core::capture::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let stored: Vec<_> = cap
        .inputs
        .iter()
        .filter_map(|(_, i)| match i {
            sylkgw_core::capture::ReplayInput::Stored { id, result } => Some((*id, result.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        stored,
        [(first, Ok(StoreResult::Done)), (second, Ok(StoreResult::PublicKey { public_key: Some("KEY".into()) }))]
    );
}

#[test]
fn without_storage_requests_are_answered_unavailable_after_the_drain() {
    let dir = TempDir::new("storage-io-none");
    let (pool, answers) = pool(&Backend::Unavailable("cannot create /nowhere".into()));
    let (mut gw, capture, path) = core(&dir);
    let id = gw.store_for_test(StoreRequest::GetAccount { account: "bob@example.com".into() });
    let (mut driver, mut io) = (Driver::new(gw, Some(capture)), PoolIo { pool, deferred: VecDeque::new() });
    driver.drain(&mut io);
    assert!(io.deferred.is_empty(), "fed right after the drain");
    assert!(answers.try_recv().is_err(), "nothing from the pool");
    let error = StoreError::Unavailable("cannot create /nowhere".into());
    assert_eq!(
        capture_lines(&path, " storage "),
        [
            format!(r#"< storage   store    {id} {{"op":"get-account","account":"bob@example.com"}}"#),
            format!("> storage   stored   {id} {}", sylkgw_core::storage::line::encode_outcome(&Err(error))),
        ]
    );
}
