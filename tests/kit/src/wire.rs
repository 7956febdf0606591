//! Helpers for tests that speak to the core directly: draining, the upgrade request, client
//! frames, and the media-socket hooks.

use std::time::Instant;
use sylkgw_core::ws::frames::{client_frame, FrameOut};
use sylkgw_core::{Gateway, Output, SocketId};

/// The upgrade request the fuzz targets and tests open connections with.
pub const UPGRADE_V2: &str = "GET /webrtcgateway/ws HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Protocol: sylkRTC-2\r\n\r\n";

/// Drains `gw`; returns every output before the final `Timeout`.
pub fn drain_outputs(gw: &mut Gateway) -> Vec<Output> {
    let mut out = Vec::new();
    loop {
        match gw.poll_output() {
            Output::Timeout(_) => return out,
            o => out.push(o),
        }
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

/// A masked client text frame, for tests that speak WebSocket to the core directly.
pub fn client_text_frame(text: &str) -> Vec<u8> {
    client_frame(&FrameOut::Text(text.to_string()))
}

// ===== Media sockets (the call layer's entry points, until requests trigger them) =====

/// `Gateway::request_rtp_pair` for tests: emits the two `Output::BindUdp` and returns the RTP
/// id, the RTCP id and the RTP port asked for (`None`: no free pair).
pub fn request_rtp_pair_for_test(gw: &mut Gateway) -> Option<(SocketId, SocketId, u16)> {
    gw.request_rtp_pair()
}

/// `Gateway::release_rtp_pair` for tests: closes the pair whose RTP id is `rtp`.
pub fn release_rtp_pair_for_test(gw: &mut Gateway, rtp: SocketId) {
    gw.release_rtp_pair(rtp)
}
