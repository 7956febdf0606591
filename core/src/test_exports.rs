//! Entry points for the fuzz targets and the test crate. The bodies live here so they compile
//! and run under plain `cargo test`; the fuzz shims only call them.
//!
//! The real clock is read here only to get an epoch: every time fed to the core is an offset
//! from it, so runs stay deterministic.
#![allow(clippy::disallowed_methods)]

use crate::api;
use crate::capture;
use crate::drive::{Input, Output};
use crate::ids::{ConnId, Listener};
use crate::ws::frames::{client_frame, FrameOut};
use crate::{Config, Gateway};
use std::time::{Duration, Instant};

/// Fuzz body: any text as a sylkRTC request, decoded, handled by a client, and every resulting
/// event encoded in both dialects.
pub fn fuzz_sylkrtc_request(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = api::decode(text);
    let config = Config::default();
    for dialect in [api::Dialect::V1, api::Dialect::V2] {
        let mut client = crate::client::Client::new(dialect);
        let mut out = Vec::new();
        client.handle_text(text, &config, &mut out);
        client.handle_text(text, &config, &mut out);
        for e in &out {
            let _ = dialect.encode(e);
        }
    }
}

/// The upgrade request the fuzz targets and tests open connections with.
pub const UPGRADE_V2: &str = "GET /webrtcgateway/ws HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Protocol: sylkRTC-2\r\n\r\n";

/// Fuzz body: an arbitrary byte stream on one connection, cut into chunks by the first byte of
/// each chunk. Checks that the core never panics and that every drain ends with a deadline that
/// is not in the past unless output was produced.
pub fn fuzz_ws_stream(data: &[u8]) {
    let start = Instant::now();
    let Ok(mut gw) = Gateway::new(Config::default(), [1; 32], start, Duration::ZERO) else { return };
    let conn = ConnId(1);
    let mut now = start;
    gw.handle_input(now, Input::Accepted { conn, listener: Listener::Web, peer: ([127, 0, 0, 1], 1).into() });
    drain(&mut gw);
    // Half the inputs start with a valid upgrade so the frame layer is reached.
    if data.first().is_some_and(|b| b & 1 == 1) {
        gw.handle_input(now, Input::StreamData { conn, data: UPGRADE_V2.as_bytes() });
        drain(&mut gw);
    }
    let mut rest = data.get(1..).unwrap_or_default();
    while let Some((&len, tail)) = rest.split_first() {
        let n = (len as usize).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        gw.handle_input(now, Input::StreamData { conn, data: chunk });
        let deadline = drain(&mut gw);
        now += Duration::from_millis(u64::from(len) * 50);
        if deadline <= now {
            gw.handle_input(now, Input::Timeout);
            // A timeout that leaves its own deadline in the past would make a runtime spin.
            assert!(drain(&mut gw) > now, "deadline did not move past a handled timeout");
        }
        rest = next;
    }
}

/// Drains `gw`; returns the deadline.
pub fn drain(gw: &mut Gateway) -> Instant {
    loop {
        if let Output::Timeout(at) = gw.poll_output() {
            return at;
        }
    }
}

/// Fuzz body: capture text parsed and, if it parses, replayed twice with identical results.
pub fn fuzz_capture(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cap) = capture::parse(text) else { return };
    if cap.inputs.len() > 64 {
        return;
    }
    let epoch = Instant::now();
    let a = capture::replay(&cap, epoch);
    let b = capture::replay(&cap, epoch);
    assert_eq!(a, b, "replay is not deterministic");
}

/// A masked client text frame, for tests that speak WebSocket to the core directly.
pub fn client_text_frame(text: &str) -> Vec<u8> {
    client_frame(&FrameOut::Text(text.to_string()))
}
