//! The conference operations of `gateway_ops`: `videoroom-*` requests with fields picked by the
//! cursor, joins with a browser's offer and feed answers made from the gateway's own
//! `feed-attached` offers (so feeds get negotiated, not only refused).

use super::cursor::ByteCursor;
use super::harness::GatewayHarness;
use super::templates::{fuzz_browser_answer, fuzz_browser_offer, FUZZ_ACCOUNTS};
use serde_json::json;

const ROOMS: [&str; 3] = ["room@videoconference.example.com", "other@conf.test", "x"];

/// One conference request on a web connection.
pub(super) fn fuzz_room_op(h: &mut GatewayHarness, c: &mut ByteCursor<'_>) {
    let n = h.next_id();
    let tr = format!("r{n}");
    let session = format!("p{}", c.byte() % 4);
    let feed = format!("f{}", c.byte() % 4);
    let req = match c.below(12) {
        0 | 1 => {
            let sdp = fuzz_browser_offer(c.byte());
            json!({"sylkrtc":"videoroom-join","transaction":tr,"account":c.pick(&FUZZ_ACCOUNTS),"session":session,
                "uri":c.pick(&ROOMS),"sdp":sdp,"audio":c.byte() & 1 == 0,"video":c.byte() & 1 == 0})
        }
        2 => json!({"sylkrtc":"videoroom-leave","transaction":tr,"session":session}),
        3 => {
            let publisher = format!("p{}", c.byte() % 4);
            json!({"sylkrtc":"videoroom-feed-attach","transaction":tr,"session":session,"publisher":publisher,"feed":feed})
        }
        4 if !h.room_offers.is_empty() => {
            let (conn, session, feed, sdp) = h.room_offers[c.below(h.room_offers.len())].clone();
            let answer = fuzz_browser_answer(&sdp);
            let req =
                json!({"sylkrtc":"videoroom-feed-answer","transaction":tr,"session":session,"feed":feed,"sdp":answer});
            h.send_text(conn, &req.to_string());
            return;
        }
        4 => json!({"sylkrtc":"videoroom-feed-answer","transaction":tr,"session":session,"feed":feed,"sdp":"v=0"}),
        5 => json!({"sylkrtc":"videoroom-feed-detach","transaction":tr,"session":session,"feed":feed}),
        6 => {
            let active: Vec<String> = (0..c.below(3)).map(|_| format!("p{}", c.byte() % 4)).collect();
            json!({"sylkrtc":"videoroom-configure","transaction":tr,"session":session,"active_participants":active})
        }
        7 => json!({"sylkrtc":"videoroom-session-trickle","transaction":tr,"session":session,"candidates":[
            {"candidate":"candidate:1 1 udp 2122194687 203.0.113.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0}]}),
        8 => json!({"sylkrtc":"videoroom-session-update","transaction":tr,"session":feed,
            "options":{"audio":c.byte() & 1 == 0,"video":c.byte() & 1 == 0}}),
        9 => json!({"sylkrtc":"videoroom-message","transaction":tr,"session":session,"message_id":tr,
            "content":"hi","content_type":"text/plain"}),
        10 => json!({"sylkrtc":"videoroom-invite","transaction":tr,"session":session,
            "participants":[c.pick(&FUZZ_ACCOUNTS)]}),
        _ => match c.below(3) {
            0 => json!({"sylkrtc":"videoroom-mute-audio-participants","transaction":tr,"session":session}),
            1 => json!({"sylkrtc":"videoroom-toggle-hand","transaction":tr,"session":session}),
            _ => {
                json!({"sylkrtc":"videoroom-composing-indication","transaction":tr,"session":session,"state":"active"})
            }
        },
    };
    let Some(conn) = h.pick_web(c) else { return };
    h.send_text(conn, &req.to_string());
}
