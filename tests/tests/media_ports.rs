//! Media socket plumbing through the whole core: RTP/RTCP pairs asked for by the call layer's
//! entry points (no request triggers them yet, so no capture can), bound, failed and moved to the
//! next pair, released; datagrams on media sockets dropped and never taken for SIP. The outputs
//! are asserted directly, and the capture lines they record are parsed back.

#![allow(clippy::disallowed_methods)] // Instant::now is only the epoch

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use sylkgw_core::capture::{self, ReplayInput};
use sylkgw_core::config::{MediaConfig, SipConfig};
use sylkgw_core::drive::UdpPurpose;
use sylkgw_core::{Config, Gateway, Input, Output, SocketId};
use sylkgw_kit::drain_outputs as drain;
use sylkgw_kit::{release_rtp_pair_for_test as release, request_rtp_pair_for_test as request};

const SIP: SocketId = SocketId(0);
const WEBRTC: SocketId = SocketId(1);
const OPTIONS: &str = "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n\
    Max-Forwards: 70\r\nTo: <sip:gw@127.0.0.1>\r\nFrom: <sip:p@127.0.0.1>;tag=1\r\nCall-ID: o1\r\n\
    CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A core with its SIP and WebRTC sockets bound, RTP ports `rtp_ports`.
fn gateway(t0: Instant, rtp_ports: (u16, u16)) -> Gateway {
    let config = Config {
        sip: SipConfig { listen: addr("127.0.0.1:5060"), ..SipConfig::default() },
        media: MediaConfig { rtp_ports, ..MediaConfig::default() },
        capture: true,
        ..Config::default()
    };
    let mut gw = Gateway::new(config, [5; 32], t0, Duration::ZERO).unwrap();
    assert_eq!(gw.webrtc_listen(), addr("127.0.0.1:0"), "by default the SIP IP, port chosen by the OS");
    drain(&mut gw);
    gw.handle_input(t0, Input::UdpBound { socket: SIP, purpose: UdpPurpose::Sip, local: addr("127.0.0.1:5060") });
    assert!(drain(&mut gw).is_empty());
    let local = addr("127.0.0.1:40000");
    gw.handle_input(t0, Input::UdpBound { socket: WEBRTC, purpose: UdpPurpose::WebRtc, local });
    assert!(drain(&mut gw).is_empty());
    gw
}

fn bound(gw: &mut Gateway, t: Instant, socket: u32, purpose: UdpPurpose, port: u16) -> Vec<Output> {
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    gw.handle_input(t, Input::UdpBound { socket: SocketId(socket), purpose, local });
    drain(gw)
}

fn failed(gw: &mut Gateway, t: Instant, socket: u32) -> Vec<Output> {
    gw.handle_input(t, Input::UdpBindFailed { socket: SocketId(socket), error: "Address in use (os error 98)".into() });
    drain(gw)
}

/// Outputs as text, for readable comparisons.
fn show(outs: &[Output]) -> Vec<String> {
    outs.iter()
        .map(|o| match o {
            Output::BindUdp { socket, purpose, local } => format!("bind {socket} {} {local}", purpose.name()),
            Output::CloseUdp { socket } => format!("close {socket}"),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn bind_fail_move_release() {
    let t0 = Instant::now();
    let mut gw = gateway(t0, (20000, 20007));

    // A pair: RTP on the even port, RTCP above it, ids from 16, on the media IP.
    assert_eq!(request(&mut gw), Some((SocketId(16), SocketId(17), 20000)));
    assert_eq!(show(&drain(&mut gw)), ["bind udp:16 rtp 127.0.0.1:20000", "bind udp:17 rtcp 127.0.0.1:20001"]);
    assert_eq!(gw.stats().rtp_pairs, 1);

    // RTP bound, RTCP's port taken: the pair moves, under the same ids, to the next pair.
    let t1 = t0 + Duration::from_millis(1);
    assert!(bound(&mut gw, t1, 16, UdpPurpose::Rtp, 20000).is_empty());
    assert_eq!(
        show(&failed(&mut gw, t1, 17)),
        ["close udp:16", "bind udp:16 rtp 127.0.0.1:20002", "bind udp:17 rtcp 127.0.0.1:20003"]
    );
    assert!(bound(&mut gw, t1, 16, UdpPurpose::Rtp, 20002).is_empty());
    assert!(bound(&mut gw, t1, 17, UdpPurpose::Rtcp, 20003).is_empty());

    // Media datagrams are dropped; on the WebRTC socket not even SIP text is taken for SIP,
    // which the SIP socket answers.
    gw.handle_input(t1, Input::Datagram { socket: SocketId(16), from: addr("192.0.2.9:7000"), data: &[0x80, 0] });
    assert!(drain(&mut gw).is_empty());
    gw.handle_input(t1, Input::Datagram { socket: WEBRTC, from: addr("127.0.0.1:5070"), data: OPTIONS.as_bytes() });
    assert!(drain(&mut gw).is_empty(), "a datagram on the WebRTC socket went to SIP");
    gw.handle_input(t1, Input::Datagram { socket: SIP, from: addr("127.0.0.1:5070"), data: OPTIONS.as_bytes() });
    assert!(
        drain(&mut gw).iter().any(|o| matches!(o, Output::Datagram(t) if t.socket == SIP)),
        "the SIP socket answers"
    );

    // Released: both closed, the pair free again.
    release(&mut gw, SocketId(16));
    assert_eq!(show(&drain(&mut gw)), ["close udp:16", "close udp:17"]);
    assert_eq!(gw.stats().rtp_pairs, 0);
    release(&mut gw, SocketId(16));
    assert!(drain(&mut gw).is_empty(), "a second release is ignored");

    // Round robin: the next pair after the last one handed out; new ids.
    assert_eq!(request(&mut gw), Some((SocketId(18), SocketId(19), 20004)));
    assert_eq!(show(&drain(&mut gw)), ["bind udp:18 rtp 127.0.0.1:20004", "bind udp:19 rtcp 127.0.0.1:20005"]);
    // Released before the runtime answered: closed at once, the late answers ignored.
    release(&mut gw, SocketId(18));
    assert_eq!(show(&drain(&mut gw)), ["close udp:18", "close udp:19"]);
    assert!(bound(&mut gw, t1, 18, UdpPurpose::Rtp, 20004).is_empty());
    assert!(failed(&mut gw, t1, 19).is_empty());

    // Both binds fail: nothing to close; the pair moves once both answers are in, skipping the
    // pairs that failed recently (20000 and, now, 20006).
    assert_eq!(request(&mut gw), Some((SocketId(20), SocketId(21), 20006)));
    drain(&mut gw);
    assert!(failed(&mut gw, t1, 20).is_empty(), "waits for the RTCP answer");
    assert_eq!(show(&failed(&mut gw, t1, 21)), ["bind udp:20 rtp 127.0.0.1:20002", "bind udp:21 rtcp 127.0.0.1:20003"]);

    // The capture records the requests, the answers and the closes, and parses back; media
    // datagrams are left out (str0m is not replayable).
    let text = gw.take_capture();
    for line in [
        "< udp:16    bind     rtp 127.0.0.1:20000",
        "< udp:17    bind     rtcp 127.0.0.1:20001",
        "> udp:17    bindfailed \"Address in use (os error 98)\"",
        "< udp:16    closeudp",
        "> udp:1     bound    webrtc 127.0.0.1:40000",
    ] {
        assert!(text.lines().any(|l| l.ends_with(line)), "no `{line}` in\n{text}");
    }
    assert!(!text.contains("udp:16<"), "media datagrams are not captured:\n{text}");
    let cap = capture::parse(&text).unwrap();
    let failures = cap.inputs.iter().filter(|(_, i)| matches!(i, ReplayInput::UdpBindFailed { .. })).count();
    assert_eq!(failures, 4);
}

#[test]
fn gives_up_when_no_pair_binds() {
    let t0 = Instant::now();
    let mut gw = gateway(t0, (30000, 30003));
    assert_eq!(request(&mut gw), Some((SocketId(16), SocketId(17), 30000)));
    drain(&mut gw);
    assert!(bound(&mut gw, t0, 16, UdpPurpose::Rtp, 30000).is_empty());
    assert_eq!(
        show(&failed(&mut gw, t0, 17)),
        ["close udp:16", "bind udp:16 rtp 127.0.0.1:30002", "bind udp:17 rtcp 127.0.0.1:30003"]
    );
    assert!(failed(&mut gw, t0, 16).is_empty());
    // Out of pairs (both cooling down): the pair is given up, nothing left bound.
    assert!(failed(&mut gw, t0, 17).is_empty());
    assert_eq!(gw.stats().rtp_pairs, 0);
    assert_eq!(request(&mut gw), None, "every pair failed recently");
    // After the cool-down the range is tried again.
    let later = t0 + Duration::from_secs(60);
    gw.handle_input(later, Input::Timeout);
    drain(&mut gw);
    assert_eq!(request(&mut gw), Some((SocketId(18), SocketId(19), 30000)));
}

#[test]
fn webrtc_listen_is_configurable() {
    let config = Config {
        media: MediaConfig { webrtc_listen: Some(addr("127.0.0.2:41000")), ..MediaConfig::default() },
        ..Config::default()
    };
    let mut gw = Gateway::new(config, [5; 32], Instant::now(), Duration::ZERO).unwrap();
    assert_eq!(gw.webrtc_listen(), addr("127.0.0.2:41000"));
    drain(&mut gw);
    // RTP pairs bind on the IP of the WebRTC socket.
    request(&mut gw);
    assert_eq!(show(&drain(&mut gw)), ["bind udp:16 rtp 127.0.0.2:20000", "bind udp:17 rtcp 127.0.0.2:20001"]);
    // A bad range is refused at construction.
    let config =
        Config { media: MediaConfig { rtp_ports: (20001, 20010), ..MediaConfig::default() }, ..Config::default() };
    assert!(Gateway::new(config, [5; 32], Instant::now(), Duration::ZERO).is_err());
}
