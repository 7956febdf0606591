//! Captures of TLS connections are taken after TLS, so they replay on a plain core. A TLS
//! failure (here: plain HTTP sent to the wss listener) must leave a capture that still replays
//! identically.

#![allow(clippy::disallowed_methods)] // Instant::now is only the epoch

use std::time::{Duration, Instant};
use sylkgw_core::{capture, Config, ConnId, Gateway, Input, Listener, Output, TlsConfig};

use sylkgw_kit::drain_outputs as drain;

#[test]
fn tls_failure_capture_replays_identically() {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let tls =
        TlsConfig { cert_pem: key.cert.pem().into_bytes(), key_pem: key.signing_key.serialize_pem().into_bytes() };
    let config = Config { tls: Some(tls), capture: true, ..Config::default() };
    let t0 = Instant::now();
    let mut gw = Gateway::new(config, [3; 32], t0, Duration::from_secs(1_767_225_600)).unwrap();
    drain(&mut gw);
    let conn = ConnId(1);
    gw.handle_input(t0, Input::Accepted { conn, listener: Listener::Web, peer: ([127, 0, 0, 1], 5000).into() });
    drain(&mut gw);
    let t1 = t0 + Duration::from_millis(5);
    gw.handle_input(t1, Input::StreamData { conn, data: b"GET /webrtcgateway/ws HTTP/1.1\r\nHost: x\r\n\r\n" });
    let out = drain(&mut gw);
    assert!(matches!(out.last(), Some(Output::StreamClose { conn: c }) if *c == conn), "{out:?}");
    assert_eq!(gw.connection_count(), 0);
    let text = gw.take_capture();
    let cap = capture::parse(&text).unwrap();
    let replayed = capture::replay(&cap, Instant::now()).unwrap();
    assert_eq!(replayed, text, "the capture of a failed TLS connection does not replay identically");
}

/// A full wss session through the core over memory: the client sees ready-event, and the
/// capture (plaintext, taken above TLS) replays identically on a plain core.
#[test]
fn tls_session_capture_is_plaintext_and_replays() {
    use std::io::{Read, Write};
    let cert = sylkgw_tests::SelfSigned::generate();
    let tls = TlsConfig {
        cert_pem: std::fs::read(&cert.cert_path).unwrap(),
        key_pem: std::fs::read(&cert.key_path).unwrap(),
    };
    let t0 = Instant::now();
    let mut gw =
        Gateway::new(Config { tls: Some(tls), capture: true, ..Config::default() }, [4; 32], t0, Duration::ZERO)
            .unwrap();
    drain(&mut gw);
    let conn = ConnId(7);
    gw.handle_input(t0, Input::Accepted { conn, listener: Listener::Web, peer: ([127, 0, 0, 1], 5001).into() });
    drain(&mut gw);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(cert.client_config(), name).unwrap();
    client.writer().write_all(sylkgw_kit::UPGRADE_V2.as_bytes()).unwrap();
    let mut plain = Vec::new();
    // Pump records both ways until the client has read the ready event.
    for step in 0..20 {
        let now = t0 + Duration::from_millis(step);
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        if !wire.is_empty() {
            gw.handle_input(now, Input::StreamData { conn, data: &wire });
        }
        for o in drain(&mut gw) {
            if let Output::StreamWrite { data, .. } = o {
                client.read_tls(&mut &data[..]).unwrap();
                client.process_new_packets().unwrap();
            }
        }
        let mut buf = [0u8; 4096];
        while let Ok(n) = client.reader().read(&mut buf) {
            if n == 0 {
                break;
            }
            plain.extend_from_slice(&buf[..n]);
        }
        if plain.ends_with(br#"{"sylkrtc":"ready-event"}"#) {
            break;
        }
    }
    assert!(plain.starts_with(b"HTTP/1.1 101 "), "{}", String::from_utf8_lossy(&plain));
    assert!(plain.ends_with(br#"{"sylkrtc":"ready-event"}"#));
    let text = gw.take_capture();
    assert!(text.contains("ws.text  {\"sylkrtc\":\"ready-event\"}"), "{text}");
    let replayed = capture::replay(&capture::parse(&text).unwrap(), Instant::now()).unwrap();
    assert_eq!(replayed, text);
}
