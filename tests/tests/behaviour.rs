//! The behavioural suite: every scenario runs over real sockets against both binaries,
//! `sylkgw-mio` (one thread) and `sylkgw --threads 2` (tokio). Build them first:
//! `cargo build --workspace`.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use sylkgw_tests::{
    config_file, http_request, opcode, tls_offer, upgrade_request, Offer, RawWs, SelfSigned, Server, TempDir, WsClient,
    WS_PATH,
};
use tungstenite::Message;

/// One binary and its fixed arguments.
struct Variant {
    bin: &'static str,
    args: &'static [&'static str],
}

const MIO: Variant = Variant { bin: "sylkgw-mio", args: &[] };
const TOKIO: Variant = Variant { bin: "sylkgw", args: &["--threads", "2"] };

impl Variant {
    fn start(&self, extra: &[String]) -> Server {
        let mut args: Vec<String> = self.args.iter().map(|s| s.to_string()).collect();
        args.extend(extra.iter().cloned());
        Server::start(sylkgw_tests::binary(self.bin), &args)
    }

    fn start_plain(&self) -> Server {
        self.start(&[])
    }

    /// Starts with a config file holding `ini`; keep the returned dir alive.
    fn start_with_config(&self, ini: &str) -> (Server, TempDir) {
        let (dir, path) = config_file(ini);
        (self.start(&["--config".into(), path.display().to_string()]), dir)
    }

    fn multi_worker(&self) -> bool {
        self.args.contains(&"--threads")
    }
}

/// Runs every named scenario `fn name(v: &Variant)` as `mio::name` and `tokio::name`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod mio {
            $( #[test] fn $name() { super::$name(&super::MIO) } )*
        }
        mod tokio {
            $( #[test] fn $name() { super::$name(&super::TOKIO) } )*
        }
    };
}

both!(
    ready_sylkrtc_2,
    prefers_sylkrtc_2,
    ready_sylkrtc_1,
    no_compatible_protocol_406,
    web_origins_403,
    other_path_404,
    ping_ack,
    account_add_and_duplicate,
    account_add_missing_password,
    sip_domains_enforced,
    account_remove_unknown,
    unknown_request_type,
    garbage_gets_no_reply,
    message_too_large_1009,
    websocket_ping_timeout,
    wss_ready,
    sigterm_closes_1001_and_exits_0,
    capture_replays_identically,
    media_sockets_bound_and_read,
    bad_media_options_exit_2,
    slow_reader_dropped,
    secrets_not_logged_or_captured,
    http_header_too_large_431,
    data_dir_holds_the_store,
    postgresql_storage_opened_at_start,
    bad_storage_options_exit_2,
);

const PASSWORD: &str = "b1726872c344b6dc8365b774f8fd6412";

fn add_alice(tr: &str) -> String {
    format!(r#"{{"sylkrtc":"account-add","transaction":"{tr}","account":"alice@example.com","password":"{PASSWORD}"}}"#)
}

fn ack(tr: &str) -> String {
    format!(r#"{{"sylkrtc":"ack","transaction":"{tr}"}}"#)
}

fn error(tr: &str, text: &str) -> String {
    format!(r#"{{"sylkrtc":"error","transaction":"{tr}","error":{}}}"#, serde_json::Value::from(text))
}

fn ping(tr: &str) -> String {
    format!(r#"{{"sylkrtc":"ping","transaction":"{tr}"}}"#)
}

// ===== Handshake =====

fn ready_sylkrtc_2(v: &Variant) {
    let s = v.start_plain();
    let mut c = WsClient::connect(&s, Offer::protocols("sylkRTC-2")).expect("upgrade");
    assert_eq!(c.response.status().as_u16(), 101);
    assert_eq!(c.protocol(), Some("sylkRTC-2"));
    assert_eq!(c.recv_text(), r#"{"sylkrtc":"ready-event"}"#);
}

fn prefers_sylkrtc_2(v: &Variant) {
    let s = v.start_plain();
    let mut c = WsClient::connect(&s, Offer::protocols("sylkRTC-1, sylkRTC-2")).expect("upgrade");
    assert_eq!(c.protocol(), Some("sylkRTC-2"));
    assert_eq!(c.recv_text(), r#"{"sylkrtc":"ready-event"}"#);
}

fn ready_sylkrtc_1(v: &Variant) {
    let s = v.start_plain();
    let mut c = WsClient::connect(&s, Offer::protocols("sylkRTC-1")).expect("upgrade");
    assert_eq!(c.protocol(), Some("sylkRTC-1"));
    assert_eq!(c.recv_text(), r#"{"sylkrtc":"event","event":"ready"}"#);
    assert_eq!(c.request(&ping("1")), ack("1"));
}

fn no_compatible_protocol_406(v: &Variant) {
    let s = v.start_plain();
    for extra in ["", "Sec-WebSocket-Protocol: chat, sylkRTC-3\r\n"] {
        let r = http_request(s.addr, &upgrade_request(WS_PATH, extra));
        assert_eq!(r.status_line, "HTTP/1.1 406 Not Acceptable", "offer {extra:?}: {r:?}");
        assert_eq!(r.body, "No compatible protocol specified", "offer {extra:?}");
    }
    // tungstenite sees the same refusal.
    match WsClient::connect(&s, Offer::protocols("chat")) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 406),
        Err(e) => panic!("expected HTTP 406, got {e}"),
        Ok(_) => panic!("expected HTTP 406, got an upgrade"),
    }
}

fn web_origins_403(v: &Variant) {
    let (s, _dir) = v.start_with_config("web_origins = https://good.example\n");
    let r = http_request(
        s.addr,
        &upgrade_request(WS_PATH, "Origin: https://evil.example\r\nSec-WebSocket-Protocol: sylkRTC-2\r\n"),
    );
    assert_eq!(r.status_line, "HTTP/1.1 403 Forbidden", "{r:?}");
    assert_eq!(r.body, "WebSocket connection denied: origin 'https://evil.example' not allowed");
    let offer = Offer { protocols: Some("sylkRTC-2"), origin: Some("https://good.example"), tls: None };
    let mut c = WsClient::connect(&s, offer).expect("the good origin upgrades");
    assert_eq!(c.recv_text(), r#"{"sylkrtc":"ready-event"}"#);
}

/// An upgrade request head over `max_http_header_size` gets 431; one just under it upgrades.
fn http_header_too_large_431(v: &Variant) {
    let (s, _dir) = v.start_with_config("max_http_header_size = 1024\n");
    let big = format!("Sec-WebSocket-Protocol: sylkRTC-2\r\nX-Pad: {}\r\n", "p".repeat(1200));
    let r = http_request(s.addr, &upgrade_request(WS_PATH, &big));
    assert_eq!(r.status_line, "HTTP/1.1 431 Request Header Fields Too Large", "{r:?}");
    let fits = format!("Sec-WebSocket-Protocol: sylkRTC-2\r\nX-Pad: {}\r\n", "p".repeat(600));
    let mut tcp = std::net::TcpStream::connect(s.addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Write::write_all(&mut tcp, upgrade_request(WS_PATH, &fits).as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(std::io::Read::read(&mut tcp, &mut byte).expect("the response head"), 1, "closed early");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
}

fn other_path_404(v: &Variant) {
    let s = v.start_plain();
    let r = http_request(s.addr, "GET /other HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert_eq!(r.status_line, "HTTP/1.1 404 Not Found", "{r:?}");
    assert_eq!(r.body, "Not Found");
    // A WebSocket upgrade on another path is refused the same way.
    let r = http_request(s.addr, &upgrade_request("/other", "Sec-WebSocket-Protocol: sylkRTC-2\r\n"));
    assert_eq!(r.status(), 404, "{r:?}");
}

// ===== Requests =====

fn ping_ack(v: &Variant) {
    let s = v.start_plain();
    let mut c = WsClient::ready(&s);
    assert_eq!(c.request(&ping("1")), r#"{"sylkrtc":"ack","transaction":"1"}"#);
    assert_eq!(c.request(&ping("2")), r#"{"sylkrtc":"ack","transaction":"2"}"#);
}

fn account_add_and_duplicate(v: &Variant) {
    let s = v.start_plain();
    let mut c = WsClient::ready(&s);
    assert_eq!(c.request(&add_alice("1")), ack("1"));
    assert_eq!(c.request(&add_alice("2")), error("2", "Account alice@example.com already added"));
    // Accounts are per connection: another connection may add the same one.
    let mut other = WsClient::ready(&s);
    assert_eq!(other.request(&add_alice("1")), ack("1"));
}

fn account_add_missing_password(v: &Variant) {
    let s = v.start_plain();
    let mut c = WsClient::ready(&s);
    let r = c.request(r#"{"sylkrtc":"account-add","transaction":"1","account":"alice@example.com"}"#);
    assert_eq!(r, error("1", "Mandatory property 'password' of 'AccountAddRequest' object is missing"));
}

fn sip_domains_enforced(v: &Variant) {
    let (s, _dir) = v.start_with_config("[General]\nsip_domains = example.com\n");
    let mut c = WsClient::ready(&s);
    let bob = r#"{"sylkrtc":"account-add","transaction":"1","account":"bob@evil.test","password":"x"}"#;
    assert_eq!(c.request(bob), error("1", "SIP domain not allowed: evil.test"));
    assert_eq!(c.request(&add_alice("2")), ack("2"));
}

fn account_remove_unknown(v: &Variant) {
    let s = v.start_plain();
    let mut c = WsClient::ready(&s);
    let rm = r#"{"sylkrtc":"account-remove","transaction":"1","account":"x@example.com"}"#;
    assert_eq!(c.request(rm), error("1", "Unknown account specified for remove: x@example.com"));
    assert_eq!(c.request(&add_alice("2")), ack("2"));
    let rm = r#"{"sylkrtc":"account-remove","transaction":"3","account":"alice@example.com"}"#;
    assert_eq!(c.request(rm), ack("3"));
}

fn unknown_request_type(v: &Variant) {
    let s = v.start_plain();
    let mut c = WsClient::ready(&s);
    assert_eq!(c.request(r#"{"sylkrtc":"bogus","transaction":"9"}"#), error("9", "Unknown request type: bogus"));
}

fn garbage_gets_no_reply(v: &Variant) {
    let s = v.start_plain();
    let mut c = WsClient::ready(&s);
    c.send_text("{nope");
    c.ws.send(Message::binary(vec![1u8, 2, 3])).expect("binary");
    c.send_text(r#"{"transaction":"1"}"#);
    c.send_text(r#"{"sylkrtc":"bogus"}"#);
    // Replies are in order: if any of the above were answered, this would not be next.
    assert_eq!(c.request(&ping("after")), ack("after"));
    // And nothing else arrives.
    let quiet = c.next_before(Instant::now() + Duration::from_millis(300)).expect("still open");
    assert!(quiet.is_none(), "unexpected message {quiet:?}");
    assert_eq!(c.request(&ping("again")), ack("again"));
}

// ===== WebSocket limits and keepalive =====

fn message_too_large_1009(v: &Variant) {
    let (s, _dir) = v.start_with_config("max_websocket_message_size = 1024\n");
    let mut c = WsClient::ready(&s);
    // Just below the limit still works.
    let padded = format!(r#"{{"sylkrtc":"ping","transaction":"{}"}}"#, "x".repeat(900));
    assert_eq!(c.request(&padded), ack(&"x".repeat(900)));
    let big = format!(r#"{{"sylkrtc":"ping","transaction":"{}"}}"#, "y".repeat(2000));
    c.send_text(&big);
    let (close, texts) = c.expect_close();
    assert!(texts.is_empty(), "no reply expected before the close: {texts:?}");
    assert_eq!(close.map(|(code, _)| code), Some(1009), "close frame");
}

fn websocket_ping_timeout(v: &Variant) {
    let (s, _dir) = v.start_with_config("websocket_ping_interval = 1\n");
    let mut good = WsClient::ready(&s);

    // A client that completes the handshake and then never answers pings.
    let addr = s.addr;
    let (tx, rx) = mpsc::channel();
    let mute = std::thread::spawn(move || {
        let (mut raw, head) = RawWs::connect(addr, "sylkRTC-2").expect("raw upgrade");
        let start = Instant::now();
        raw.stream.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
        let mut frames = Vec::new();
        let outcome = loop {
            match raw.read_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break Ok(start.elapsed()),
                Err(e) => break Err(format!("{e} after {:?}", start.elapsed())),
            }
        };
        let _ = tx.send(());
        (head, frames, outcome)
    });

    // Meanwhile a tungstenite client, which answers pings whenever it reads, stays connected.
    let start = Instant::now();
    let mut pings = 0;
    while let Some(m) = good.next_before(start + Duration::from_millis(3200)).expect("good client stays connected") {
        match m {
            Message::Ping(_) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 2, "expected server pings every second, got {pings} in {:?}", start.elapsed());
    assert_eq!(good.request(&ping("alive")), ack("alive"));

    rx.recv_timeout(Duration::from_secs(8)).expect("the mute client's thread finishes");
    let (head, frames, outcome) = mute.join().expect("mute client thread");
    assert!(head.contains("sylkRTC-2"), "{head}");
    let elapsed = outcome.unwrap_or_else(|e| panic!("server did not close the mute client: {e}"));
    eprintln!("mute client dropped after {elapsed:?}; frames: {frames:?}; good client saw {pings} pings");
    assert!(elapsed <= Duration::from_millis(2500), "mute client dropped only after {elapsed:?}");
    assert_eq!(
        frames.first().map(|f| (f.opcode, f.payload.clone())),
        Some((opcode::TEXT, b"{\"sylkrtc\":\"ready-event\"}".to_vec()))
    );
    assert!(frames.iter().any(|f| f.opcode == opcode::PING), "the server pinged: {frames:?}");
}

// ===== TLS =====

fn wss_ready(v: &Variant) {
    let cert = SelfSigned::generate();
    let s = v.start(&cert.args());
    assert!(s.tls, "listening line should say wss://: {}", s.url());
    let mut c = WsClient::connect(&s, tls_offer(&cert, "sylkRTC-2")).expect("wss upgrade");
    assert_eq!(c.protocol(), Some("sylkRTC-2"));
    assert_eq!(c.recv_text(), r#"{"sylkrtc":"ready-event"}"#);
    assert_eq!(c.request(&ping("1")), ack("1"));
    assert_eq!(c.request(&add_alice("2")), ack("2"));
}

// ===== Shutdown =====

fn sigterm_closes_1001_and_exits_0(v: &Variant) {
    let mut s = v.start_plain();
    let mut a = WsClient::ready(&s);
    let mut b = WsClient::ready(&s);
    assert_eq!(a.request(&ping("1")), ack("1"));
    s.sigterm();
    let (close, texts) = a.expect_close();
    assert!(texts.is_empty(), "{texts:?}");
    assert_eq!(close.map(|(code, _)| code), Some(1001));
    let (close, _) = b.expect_close();
    assert_eq!(close.map(|(code, _)| code), Some(1001));
    assert_eq!(s.wait_exit(Duration::from_secs(5)), Some(0), "exit code after SIGTERM");
}

// ===== Capture =====

fn capture_replays_identically(v: &Variant) {
    let dir = TempDir::new("capture");
    let path = dir.path().join("session.cap");
    let mut s = v.start(&["--capture".into(), path.display().to_string()]);
    let mut c = WsClient::ready(&s);
    assert_eq!(c.request(&ping("1")), ack("1"));
    assert_eq!(c.request(&add_alice("2")), ack("2"));
    let rm = r#"{"sylkrtc":"account-remove","transaction":"3","account":"alice@example.com"}"#;
    assert_eq!(c.request(rm), ack("3"));
    c.send_text("{garbage");
    c.ws.send(Message::binary(vec![0xffu8; 3])).expect("binary");
    assert_eq!(c.request(&ping("4")), ack("4"));
    s.sigterm();
    let (close, _) = c.expect_close();
    assert_eq!(close.map(|(code, _)| code), Some(1001));
    assert_eq!(s.wait_exit(Duration::from_secs(5)), Some(0));

    let files: Vec<PathBuf> = if v.multi_worker() {
        let files: Vec<PathBuf> = (0..2).map(|i| PathBuf::from(format!("{}.{i}", path.display()))).collect();
        for f in &files {
            assert!(f.is_file(), "{} missing (one capture per worker expected)", f.display());
        }
        files
    } else {
        vec![path.clone()]
    };
    let mut with_conn = 0;
    for f in &files {
        let text = read(f);
        let has_conn = text.lines().any(|l| l.contains(" accept "));
        if has_conn {
            with_conn += 1;
            assert!(text.contains(r#"{"sylkrtc":"ready-event"}"#), "{text}");
            assert!(text.contains(&ping("1")), "{text}");
            let redacted = sylkgw_core::capture::redact_secrets(&add_alice("2"));
            assert!(text.contains(&redacted), "password redacted as {redacted}:\n{text}");
            assert!(!text.contains(PASSWORD), "the password must not be in the capture:\n{text}");
            assert!(text.contains("{garbage"), "{text}");
        }
        let cap = sylkgw_core::capture::parse(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", f.display()));
        let replayed = sylkgw_core::capture::replay(&cap, Instant::now())
            .unwrap_or_else(|e| panic!("replaying {}: {e}", f.display()));
        assert_eq!(replayed, text, "replay of {} differs", f.display());
    }
    assert_eq!(with_conn, 1, "exactly one capture file should hold the connection");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ===== Media sockets =====

/// Every worker binds its own WebRTC UDP socket at start and reads it: a datagram on it (even
/// SIP text) is media, routed by the demux (here to no call, so dropped), never answered as SIP.
fn media_sockets_bound_and_read(v: &Variant) {
    let s = v.start(&["-v".into()]);
    let workers = if v.multi_worker() { 2 } else { 1 };
    let deadline = Instant::now() + Duration::from_secs(5);
    let ports = loop {
        let ports: Vec<u16> = s
            .stderr_text()
            .lines()
            .filter_map(|l| l.split("WebRTC media on 127.0.0.1:").nth(1))
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .collect();
        if ports.len() >= workers || Instant::now() > deadline {
            break ports;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(ports.len(), workers, "one WebRTC socket per worker:\n{}", s.stderr_text());
    assert!(ports.iter().all(|&p| p != 0) && (workers == 1 || ports[0] != ports[1]), "{ports:?}");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let options = "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-m1\r\n\
        Max-Forwards: 70\r\nTo: <sip:gw@127.0.0.1>\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\nCall-ID: m1\r\n\
        CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    for &port in &ports {
        udp.send_to(options.as_bytes(), ("127.0.0.1", port)).unwrap();
    }
    let mut buf = [0u8; 2048];
    assert!(udp.recv_from(&mut buf).is_err(), "a datagram on the WebRTC socket was answered");
    let dropped = format!("{} WebRTC bytes from {} for no call", options.len(), udp.local_addr().unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.stderr_text().matches(&dropped).count() < ports.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(s.stderr_text().matches(&dropped).count(), ports.len(), "{}", s.stderr_text());
}

/// Bad RTP port ranges stop the process with exit code 2 and say why.
fn bad_media_options_exit_2(v: &Variant) {
    let mut cases = vec![
        (vec!["--rtp-ports", "20001-20099"], "even"),
        (vec!["--rtp-ports", "20000-20000"], "LOW < HIGH"),
        (vec!["--rtp-ports", "lots"], "LOW-HIGH"),
        (vec!["--media-address", "media.example.com"], "IP address"),
    ];
    if v.multi_worker() {
        cases.push((vec!["--rtp-ports", "20000-20001"], "at least one RTP/RTCP port pair per worker"));
    }
    for (extra, says) in cases {
        let out = std::process::Command::new(sylkgw_tests::binary(v.bin))
            .args(v.args)
            .args(["--listen", "127.0.0.1:0", "--sip-listen", "127.0.0.1:0"])
            .args(&extra)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(says), "{extra:?}: {stderr}");
    }
}

// ===== Storage =====

/// `--data-dir`: the SQLite store is created there at start (and opened again by the next
/// start), and the gateway serves as before. Nothing sends a storage request yet; the pool is
/// tested in `sylkgw-driver` (`store_pool`) and `tests/storage_io.rs`.
fn data_dir_holds_the_store(v: &Variant) {
    let dir = TempDir::new("data-dir");
    let data = dir.path().join("data");
    for run in 0..2 {
        let mut s = v.start(&["--data-dir".into(), data.display().to_string()]);
        let mut c = WsClient::ready(&s);
        assert_eq!(c.request(&ping("1")), ack("1"), "run {run}");
        let file = data.join("sylkgw.sqlite3");
        assert!(file.is_file(), "run {run}: {} missing", file.display());
        assert!(s.stderr_text().contains(&format!("storage: sqlite {}", file.display())), "{}", s.stderr_text());
        s.sigterm();
        let _ = c.expect_close();
        assert_eq!(s.wait_exit(Duration::from_secs(5)), Some(0), "run {run}: {}", s.stderr_text());
    }
}

/// `--storage postgresql://…`: the schema is created on the server at start; no SQLite file.
fn postgresql_storage_opened_at_start(v: &Variant) {
    use sylkgw_storage::pg_server::{Durability, PgServer};
    let server = PgServer::start(Durability::Fast).unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let url = server.create_database().unwrap();
    let dir = TempDir::new("pg-storage");
    let data = dir.path().join("data");
    let mut s = v.start(&["--storage".into(), url.clone(), "--data-dir".into(), data.display().to_string()]);
    let mut c = WsClient::ready(&s);
    assert_eq!(c.request(&ping("1")), ack("1"));
    assert!(s.stderr_text().contains("storage: postgresql "), "{}", s.stderr_text());
    assert!(!data.exists(), "no SQLite store with PostgreSQL");
    let mut store = sylkgw_storage::Postgres::open(&url).expect("the gateway's schema is there");
    let lookup = sylkgw_core::storage::StoreRequest::LookupPublicKey { account: "a@b".into() };
    assert_eq!(
        sylkgw_storage::Storage::execute(&mut store, &lookup),
        Ok(sylkgw_core::storage::StoreResult::PublicKey { public_key: None })
    );
    s.sigterm();
    let _ = c.expect_close();
    assert_eq!(s.wait_exit(Duration::from_secs(5)), Some(0), "{}", s.stderr_text());
}

/// A storage that was asked for and cannot be opened stops the process with exit code 2 and
/// says why.
fn bad_storage_options_exit_2(v: &Variant) {
    let dir = TempDir::new("bad-storage");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let under_file = file.join("data").display().to_string();
    let cases = [
        (vec!["--data-dir", under_file.as_str()], "cannot create"),
        (vec!["--storage", "mysql://db/sylk"], "neither `sqlite` nor a postgresql:// URL"),
        // Nothing listens on port 1 of loopback: refused at once.
        (vec!["--storage", "postgresql://gw:secret@127.0.0.1:1/sylk"], "storage (postgresql 127.0.0.1:1/sylk)"),
    ];
    for (extra, says) in cases {
        let out = std::process::Command::new(sylkgw_tests::binary(v.bin))
            .args(v.args)
            .args(["--listen", "127.0.0.1:0", "--sip-listen", "127.0.0.1:0"])
            .args(&extra)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(says), "{extra:?}: {stderr}");
        assert!(!stderr.contains("secret"), "the password is not logged: {stderr}");
    }
}

// ===== Robustness: slow readers, secrets =====

/// A SIP peer on a loopback UDP socket, for the gateway's `outbound_sip_proxy`: it answers
/// REGISTERs (200 with the binding, or a digest challenge first) and sends requests to the
/// gateway.
struct SipPeer {
    sock: std::net::UdpSocket,
}

/// A SIP request or response received by [`SipPeer`], with its source.
struct SipIn {
    text: String,
    from: std::net::SocketAddr,
}

impl SipIn {
    fn header(&self, name: &str) -> &str {
        self.text
            .split("\r\n")
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
            .unwrap_or_else(|| panic!("no {name} in\n{}", self.text))
    }

    /// A response to this request (To tag added for final responses).
    fn reply(&self, status: &str, extra: &str) -> String {
        let to = self.header("To");
        let to = if to.contains(";tag=") { to.to_string() } else { format!("{to};tag=peer") };
        format!(
            "SIP/2.0 {status}\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
            self.header("Via"),
            self.header("From"),
            self.header("Call-ID"),
            self.header("CSeq"),
        )
    }
}

impl SipPeer {
    fn new() -> Self {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the SIP peer");
        Self { sock }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.sock.local_addr().unwrap()
    }

    /// The next message before `deadline`, if any.
    fn recv(&self, deadline: Instant) -> Option<SipIn> {
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            if let Ok((n, from)) = self.sock.recv_from(&mut buf) {
                return Some(SipIn { text: String::from_utf8_lossy(&buf[..n]).into_owned(), from });
            }
        }
    }

    /// Waits (5 s) for a message whose text contains `what`, skipping the others.
    fn expect(&self, what: &str) -> SipIn {
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Some(m) = self.recv(deadline) {
            if m.text.contains(what) {
                return m;
            }
        }
        panic!("the SIP peer got no message with {what:?} within 5 s");
    }

    fn send(&self, text: &str, to: std::net::SocketAddr) {
        self.sock.send_to(text.as_bytes(), to).expect("send SIP");
    }

    /// Answers a REGISTER with 200 and its binding; returns the Contact URI.
    fn accept_register(&self, reg: &SipIn) -> String {
        let contact = reg.header("Contact");
        self.send(&reg.reply("200 OK", &format!("Contact: {contact};expires=600\r\n")), reg.from);
        let start = contact.find('<').map_or(0, |i| i + 1);
        let end = contact[start..].find('>').map_or(contact.len(), |i| start + i);
        contact[start..end].to_string()
    }
}

/// A WebSocket client that stops reading while the gateway has more and more to send it (here
/// incoming calls whose events carry 24 KiB of headers, so the output is not the answer to its
/// own requests, which the runtimes stop reading): once more than `max_pending_bytes` wait for
/// it, the connection is dropped with a TCP reset, everything it owned is released (its
/// registration ends with `Expires: 0`, its ringing calls are declined 480), and the gateway
/// keeps serving another client.
fn slow_reader_dropped(v: &Variant) {
    let peer = SipPeer::new();
    let ini =
        format!("outbound_sip_proxy = {}\nmax_pending_bytes = 65536\nmax_sessions_per_connection = 500\n", peer.addr());
    let (s, _dir) = v.start_with_config(&ini);
    let mut good = WsClient::ready(&s);
    let (mut slow, _) = RawWs::connect(s.addr, "sylkRTC-2").expect("raw upgrade");
    let small: libc::c_int = 4096;
    // SAFETY: setsockopt reads a valid c_int.
    let set = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&slow.stream),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            std::ptr::addr_of!(small).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "SO_RCVBUF");
    let add = format!(
        r#"{{"sylkrtc":"account-add","transaction":"1","account":"alice@example.com","password":"{PASSWORD}","incoming_header_prefixes":["X-"]}}"#
    );
    slow.send_text(&add).unwrap();
    slow.send_text(r#"{"sylkrtc":"account-register","transaction":"2","account":"alice@example.com"}"#).unwrap();
    let reg = peer.expect("REGISTER ");
    let gateway_sip = reg.from;
    let contact = peer.accept_register(&reg);

    let sdp = "v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 30000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let fill = "f".repeat(24 * 1024);
    let dropped = |s: &Server| s.stderr_text().contains("dropping the connection");
    let mut invites = 0;
    while invites < 400 && !dropped(&s) {
        let p = peer.addr();
        let invite = format!(
            "INVITE {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {p};branch=z9hG4bK-slow{invites}\r\nMax-Forwards: 70\r\n\
             From: <sip:bob@127.0.0.1>;tag=b{invites}\r\nTo: <sip:alice@example.com>\r\n\
             Call-ID: slow-{invites}@peer\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@{p}>\r\nX-Fill: {fill}\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        peer.send(&invite, gateway_sip);
        invites += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dropped(&s) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = s.stderr_text();
    let line = log.lines().find(|l| l.contains("dropping the connection")).unwrap_or_else(|| {
        panic!("not dropped after {invites} incoming calls:\n{log}");
    });
    assert!(line.contains("max_pending_bytes 65536"), "{line}");
    eprintln!("dropped after {invites} incoming calls: {line}");

    // What it owned is released: the binding is removed and the ringing calls are declined.
    let unregister = peer.expect("REGISTER ");
    assert!(unregister.text.to_ascii_lowercase().contains("expires=0") || unregister.text.contains("Expires: 0"));
    peer.send(&unregister.reply("200 OK", ""), unregister.from);
    peer.expect("SIP/2.0 480 ");

    // The slow client's socket was reset (or closed): reading ends without a timeout.
    slow.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink = vec![0u8; 65536];
    let end = loop {
        match std::io::Read::read(&mut slow.stream, &mut sink) {
            Ok(0) => break "EOF".to_string(),
            Ok(_) => {}
            Err(e) => break format!("{:?}", e.kind()),
        }
    };
    assert!(end == "EOF" || end == "ConnectionReset", "the slow client's connection ended with {end}");

    // The other client is still served.
    assert_eq!(good.request(&ping("after")), ack("after"));
}

/// Neither the log (at trace level) nor the capture of a session that adds accounts with a
/// clear password and with an HA1, and registers one through a digest challenge, holds either
/// secret (or the HA1 of the clear password).
fn secrets_not_logged_or_captured(v: &Variant) {
    let peer = SipPeer::new();
    let dir = TempDir::new("secrets");
    let capture = dir.path().join("secrets.cap");
    let conf = dir.write("sylkgw.ini", format!("outbound_sip_proxy = {}\n", peer.addr()));
    let mut s = v.start(&[
        "-v".into(),
        "-v".into(),
        "--config".into(),
        conf.display().to_string(),
        "--capture".into(),
        capture.display().to_string(),
    ]);
    let clear = "Clear-Pa55word-7";
    let clear_ha1 = sylkgw_tests::ha1("bob", "example.com", clear);
    let mut c = WsClient::ready(&s);
    let add_bob =
        format!(r#"{{"sylkrtc":"account-add","transaction":"1","account":"bob@example.com","password":"{clear}"}}"#);
    assert_eq!(c.request(&add_bob), ack("1"));
    assert_eq!(c.request(&add_alice("2")), ack("2"));
    for (tr, account) in [("3", "bob@example.com"), ("4", "alice@example.com")] {
        c.send_text(&format!(r#"{{"sylkrtc":"account-register","transaction":"{tr}","account":"{account}"}}"#));
    }
    // Each REGISTER is challenged once, then accepted.
    let challenge = "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"abc123\", qop=\"auth\", algorithm=MD5\r\n";
    let mut accepted = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while accepted < 2 {
        let reg = peer.recv(deadline).expect("REGISTERs within 5 s");
        if reg.text.contains("Authorization: Digest") {
            peer.accept_register(&reg);
            accepted += 1;
        } else if reg.text.starts_with("REGISTER ") {
            peer.send(&reg.reply("401 Unauthorized", challenge), reg.from);
        }
    }
    let mut registered = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while registered < 2 && Instant::now() < deadline {
        if let Some(Message::Text(t)) = c.next_before(deadline).expect("open") {
            registered += usize::from(t.contains(r#""state":"registered""#));
        }
    }
    assert_eq!(registered, 2, "both accounts registered");
    s.sigterm();
    let _ = c.expect_close();
    assert_eq!(s.wait_exit(Duration::from_secs(5)), Some(0));

    let mut texts = vec![("log".to_string(), s.stderr_text())];
    let files: Vec<PathBuf> = if v.multi_worker() {
        (0..2).map(|i| PathBuf::from(format!("{}.{i}", capture.display()))).collect()
    } else {
        vec![capture.clone()]
    };
    for f in files {
        texts.push((f.display().to_string(), read(&f)));
    }
    assert!(texts.iter().any(|(_, t)| t.contains("Authorization: Digest")), "the REGISTERs were captured");
    for (what, text) in &texts {
        for secret in [clear, PASSWORD, clear_ha1.as_str()] {
            assert!(!text.contains(secret), "{what} holds the secret {secret}:\n{text}");
        }
    }
}
