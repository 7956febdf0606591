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
