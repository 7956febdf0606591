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
        let mut sip = crate::sip::stack::SipStack::new(config.sip.clone());
        let mut rng = crate::rng::Rng::new([2; 32]);
        let mut regs = std::collections::BTreeMap::new();
        let mut ctx = crate::client::SipCtx {
            sip: &mut sip,
            rng: &mut rng,
            now: Instant::now(),
            conn: ConnId(1),
            regs: &mut regs,
        };
        client.handle_text(text, &config, &mut ctx, &mut out);
        client.handle_text(text, &config, &mut ctx, &mut out);
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

/// Fuzz body: any bytes as one SIP datagram. Checks that parsing and every typed view never
/// panic, that printing is stable (print → parse → print gives the same bytes), and that the
/// typed views print to text that parses back to the same value.
pub fn fuzz_sip_message(data: &[u8]) {
    use crate::sip::message::{CSeq, ContactList, NameAddr, SipMessage, Via};
    use crate::sip::parse::{parse_message, parse_message_with, validate_request, validate_response, ParseOptions};
    use crate::sip::uri::Uri;

    let Ok(msg) = parse_message(data) else {
        let _ = parse_message_with(data, &ParseOptions { any_version: true, ..ParseOptions::default() });
        return;
    };
    match &msg {
        SipMessage::Request(r) => {
            let _ = validate_request(r);
            let uri: Uri = r.uri.to_string().parse().expect("a printed Request-URI parses");
            assert_eq!(uri, r.uri, "Request-URI does not survive printing");
        }
        SipMessage::Response(r) => {
            let _ = validate_response(r);
        }
    }
    let h = msg.headers();
    let _ = (h.top_via(), h.call_id(), h.max_forwards(), h.expires(), h.min_expires(), h.content_length());
    for via in h.vias().unwrap_or_default() {
        assert_eq!(Via::parse(via.to_string().as_bytes()).as_ref(), Ok(&via), "Via does not survive printing");
        let _ = (via.branch(), via.received_ip(), via.rport());
    }
    let mut addrs: Vec<NameAddr> = [h.from_header(), h.to_header()].into_iter().flatten().collect();
    addrs.extend(h.routes().unwrap_or_default());
    addrs.extend(h.record_routes().unwrap_or_default());
    if let Ok(ContactList::Bindings(list)) = h.contacts() {
        addrs.extend(list);
    }
    for a in addrs {
        assert_eq!(NameAddr::parse(a.to_string().as_bytes()).as_ref(), Ok(&a), "name-addr does not survive printing");
        let _ = (a.tag(), a.expires(), a.uri.equivalent(&a.uri));
    }
    if let Ok(cseq) = h.cseq() {
        assert_eq!(CSeq::parse(cseq.to_string().as_bytes()).as_ref(), Ok(&cseq));
    }
    let printed = msg.to_bytes();
    let reparsed = parse_message(&printed).expect("a printed message parses");
    assert_eq!(reparsed.to_bytes(), printed, "printing is not stable");
    assert_eq!(reparsed.body(), msg.body(), "the body changed");
}

/// Fuzz body: the first byte picks a chunking, the rest is a TCP byte stream. Checks that the
/// framer never panics and that the messages and errors it finds do not depend on how the
/// stream was cut into reads (keep-alives may: a split CRLFCRLF reads as pong then ping).
pub fn fuzz_sip_stream(data: &[u8]) {
    use crate::sip::framing::{Framed, FramingError, StreamFramer};

    let Some((&mode, stream)) = data.split_first() else { return };
    let keep = |r: &Result<Framed, FramingError>| !matches!(r, Ok(Framed::KeepAlivePing | Framed::KeepAlivePong));
    let mut whole = StreamFramer::new(2048);
    whole.push(stream);
    let expected: Vec<_> = std::iter::from_fn(|| whole.next()).filter(keep).collect();

    let mut chunked = StreamFramer::new(2048);
    let mut got = Vec::new();
    let mut rest = stream;
    let mut k = usize::from(mode);
    while !rest.is_empty() {
        let n = if mode & 1 == 1 { 1 } else { 1 + (k * 31 + 7) % 97 };
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        chunked.push(chunk);
        got.extend(std::iter::from_fn(|| chunked.next()).filter(keep));
        rest = tail;
        k += 1;
    }
    assert_eq!(got, expected, "framing depends on how the stream is cut");
    for item in expected {
        if let Ok(Framed::Message(bytes)) = item {
            let _ = crate::sip::parse::parse_message(&bytes);
        }
    }
}
