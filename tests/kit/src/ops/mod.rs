//! The stateful fuzz target `gateway_ops`: the bytes choose a sequence of operations against
//! one whole gateway ([`harness::GatewayHarness`] models the runtime side and checks the
//! invariants; [`templates`] builds the messages).

mod book;
mod cursor;
mod harness;
mod templates;

use crate::wire::{release_rtp_pair_for_test, request_rtp_pair_for_test, UPGRADE_V2};
use cursor::ByteCursor;
use harness::FUZZ_PROXY;
use harness::{ConnKind, GatewayHarness};
use std::time::Duration;
use sylkgw_core::ids::{ConnId, Listener};
use sylkgw_core::{Gateway, Input};
use templates::{fuzz_call_op, fuzz_flood_op, fuzz_sip_text, fuzz_sylkrtc_text};

/// The upgrade request in either dialect.
fn fuzz_upgrade(v1: bool) -> String {
    match v1 {
        true => UPGRADE_V2.replace("sylkRTC-2", "sylkRTC-1"),
        false => UPGRADE_V2.to_string(),
    }
}

/// Fuzz body: the bytes choose a sequence of operations against one whole [`Gateway`]: web
/// connections (upgrades, sylkRTC requests from templates, raw bytes, closes), SIP datagrams and
/// stream bytes from templates (responses echo the requests the gateway sent), answers to
/// `Resolve`/`Connect`/`BindUdp`, time passing and `Shutdown`, and calls ([`fuzz_call_op`]:
/// browser offers and answers, far-end answers on two forks, in-dialog requests, CANCEL,
/// incoming INVITEs, RTP/RTCP on media sockets), and requests as large as a message allows
/// ([`fuzz_flood_op`]: long lists, long DTMF strings, floods of ICE candidates), and the
/// addressbook requests and history `GET`s with storage outcomes for them (`book`). The first byte picks the outbound proxy (mostly
/// `192.0.2.5:5060`; sometimes over TCP, by name, or none). After every step it checks: no panic;
/// (b) a handled `Timeout` moves the deadline past `now`; (c) writes and closes name only live
/// connections the runtime accepted or the core asked for; (d) datagrams leave only from bound
/// sockets; (e) `stats()` counts no more connections than are live; (f) every session event
/// names a session its connection created or was offered, and nothing follows its `terminated`;
/// (g) no call outlives its WebSocket; (h) no two calls share a SIP leg and no two legs share a
/// dialog; (i) no session ends by a contained panic (`500 Internal error`); (j) one input
/// yields a bounded output (outputs and bytes per drain, see [`harness`]).
pub fn fuzz_gateway_ops(data: &[u8]) {
    fuzz_gateway_ops_with(data, &mut |_| {});
}

/// [`fuzz_gateway_ops`] with `before_step` called on the gateway before every step, for tests
/// that prove the invariants fire (e.g. arming `Gateway::inject_media_panic`).
pub fn fuzz_gateway_ops_with(data: &[u8], before_step: &mut dyn FnMut(&mut Gateway)) {
    let mut c = ByteCursor::new(data);
    let proxy = match c.byte() % 8 {
        5 => "192.0.2.5:5060;transport=tcp",
        6 => "proxy.example:5060",
        7 => "proxy.example;transport=tcp",
        _ => "192.0.2.5:5060",
    };
    let Some(mut h) = GatewayHarness::new(proxy) else { return };
    let mut steps = 0;
    while !c.done() && steps < 256 {
        steps += 1;
        before_step(&mut h.gw);
        match c.below(16) {
            0 => {
                let conn = ConnId(u64::from(c.byte() % 6) + 1);
                if h.live.contains_key(&conn) {
                    continue;
                }
                let (listener, kind) = match conn.0 {
                    6 => (Listener::SipTcp, ConnKind::SipTcp),
                    _ => (Listener::Web, ConnKind::Web),
                };
                h.live.insert(conn, kind);
                h.known.insert(conn);
                let peer = ([203, 0, 113, conn.0 as u8], 40000).into();
                h.input(Input::Accepted { conn, listener, peer });
            }
            1 => {
                let v1 = c.byte().is_multiple_of(4);
                let Some(conn) = h.pick_web(&mut c) else { continue };
                h.input(Input::StreamData { conn, data: fuzz_upgrade(v1).as_bytes() });
            }
            2..=4 => {
                let text = fuzz_sylkrtc_text(&mut c);
                let Some(conn) = h.pick_web(&mut c) else { continue };
                h.send_text(conn, &text);
            }
            5 => {
                let conns: Vec<ConnId> = h.live.keys().copied().collect();
                if conns.is_empty() {
                    continue;
                }
                let conn = *c.pick(&conns);
                let raw = c.bytes(48).to_vec();
                h.input(Input::StreamData { conn, data: &raw });
            }
            6 => {
                let conns: Vec<ConnId> = h.live.keys().copied().collect();
                if conns.is_empty() {
                    continue;
                }
                let conn = *c.pick(&conns);
                h.forget(conn);
                h.live.remove(&conn);
                h.connects.retain(|x| *x != conn);
                h.input(Input::StreamClosed { conn });
            }
            7 | 8 => {
                let msg = fuzz_sip_text(&mut h, &mut c);
                h.deliver_sip(&mut c, &msg);
            }
            9 => fuzz_answer(&mut h, &mut c),
            10 | 11 => {
                let b = c.byte();
                let step = match b % 4 {
                    0 => Duration::from_millis(u64::from(b) * 10),
                    1 => Duration::from_secs(u64::from(b)),
                    2 => Duration::from_secs(u64::from(b) * 60),
                    // Straight to the deadline (the idle one is years away: checks it moves on).
                    _ => h.deadline.saturating_duration_since(h.now),
                };
                h.now += step;
                h.run_due_timers();
            }
            12 => match c.byte() {
                0..8 => h.input(Input::Shutdown),
                8..16 => fuzz_flood_op(&mut h, &mut c),
                248.. => book::fuzz_book_op(&mut h, &mut c),
                _ => fuzz_call_op(&mut h, &mut c),
            },
            13 => {
                if c.byte() & 1 == 0 || h.rtp_pairs.is_empty() {
                    if let Some((rtp, _, _)) = request_rtp_pair_for_test(&mut h.gw) {
                        h.rtp_pairs.push(rtp);
                    }
                } else {
                    let rtp = h.rtp_pairs.remove(c.below(h.rtp_pairs.len()));
                    release_rtp_pair_for_test(&mut h.gw, rtp);
                }
                h.drain();
                h.run_due_timers();
            }
            _ => {
                let sockets: Vec<sylkgw_core::SocketId> = h.bound.iter().copied().collect();
                let socket = *c.pick(&sockets);
                let data = c.bytes(64).to_vec();
                h.input(Input::Datagram { socket, from: ([198, 51, 100, 9], 7000).into(), data: &data });
            }
        }
    }
}

/// Answers one pending `Resolve`, `Connect` or `BindUdp`, success or failure by the cursor.
fn fuzz_answer(h: &mut GatewayHarness, c: &mut ByteCursor<'_>) {
    let ok = !c.byte().is_multiple_of(4);
    match c.below(3) {
        0 if !h.resolves.is_empty() => {
            let query = h.resolves.remove(c.below(h.resolves.len()));
            let result = match ok {
                true => Ok(vec![std::net::IpAddr::from(FUZZ_PROXY.0)]),
                false => Err(c.pick(&["NXDOMAIN", ""]).to_string()),
            };
            let result = if c.byte() == 0 { Ok(Vec::new()) } else { result };
            h.input(Input::Resolved { query, result });
        }
        1 if !h.connects.is_empty() => {
            let conn = h.connects.remove(c.below(h.connects.len()));
            if !ok {
                h.live.remove(&conn);
            }
            let result = if ok { Ok(()) } else { Err("connection refused".to_string()) };
            h.input(Input::Connected { conn, result });
        }
        _ if !h.binds.is_empty() => {
            let (socket, purpose, local) = h.binds.remove(c.below(h.binds.len()));
            let closed = h.closed_pending.remove(&socket);
            if ok {
                if !closed {
                    h.bound.insert(socket);
                }
                h.input(Input::UdpBound { socket, purpose, local });
            } else {
                h.input(Input::UdpBindFailed { socket, error: "address in use".into() });
            }
        }
        _ if !h.stores.is_empty() => {
            let (id, request) = h.stores.remove(c.below(h.stores.len()));
            let result = templates::fuzz_store_outcome(c, &request, ok);
            h.input(Input::Stored { id, result });
        }
        _ => {}
    }
}
