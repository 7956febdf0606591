//! Carrier SIP end to end (issue #15), in a private network namespace (loopback only): a
//! sylkRTC-2 client over a real WebSocket with a str0m browser on a real UDP socket, through
//! `sylkgw-mio`, against sipp playing a carrier.
//!
//! - `outgoing_100rel_and_info_dtmf`: sipp (`tests/peers/sipp/uas_100rel_info.xml`) is the
//!   outbound proxy and the callee: it checks that our INVITE offers `Supported: 100rel`, answers
//!   with a reliable 183 carrying SDP, takes our PRACK (`RAck: 1 <CSeq> INVITE`, checked), then
//!   200 and ACK; a second later it sends an INFO `application/dtmf-relay` `Signal=5`, which the
//!   browser receives as RFC 4733 telephone-events (event 5, E bit, 200 ms at 8 kHz).
//!
//! - `incoming_100rel_late_offer`: alice registers through kamailio; sipp
//!   (`tests/peers/sipp/uac_100rel_late.xml`) calls her with an INVITE without SDP that requires
//!   100rel: it checks our 180 is reliable (`Require: 100rel`, `RSeq`) and PRACKs it; the browser
//!   answers our all-codecs offer, our 200 carries the SIP offer, sipp's ACK the answer, and
//!   sipp's `-rtp_echo` sends the browser's audio back.
//!
//! - `incoming_video_nack_and_rtx`: sipp (`tests/peers/sipp/uac_video_rtx.xml`) calls alice
//!   through kamailio offering VP8 with `a=rtcp-fb` nack and RTX, its RTP and RTCP on the test's
//!   sockets: a NACK for a video packet the browser sent comes back as RTX (OSN, payload), and an
//!   RTX packet of the caller reaches the browser as the VP8 packet it repairs (RFC 4585, 4588).
//!
//! Ports inside the namespace: kamailio 5060, gateway SIP 5080, sipp UAS 5076 / UAC 5084, RTP
//! 6000. Needs root, `unshare`, kamailio and sipp (`SYLKGW_SKIP_E2E=1` skips loudly).

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use sylkgw_tests::netns::in_netns;
use sylkgw_tests::peers::{Kamailio, KamailioOpts, Scenario, Sipp};
use sylkgw_tests::webrtc_client::{config, Datagram, Video, WebRtcClient, TELE};
use sylkgw_tests::{binary, ha1, Server, TempDir, WsClient};
use tungstenite::Message;

const STEP: Duration = Duration::from_secs(15);
const ALICE: &str = "alice@127.0.0.1";

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A sylkRTC-2 client with its browser.
struct Phone {
    ws: WsClient,
    events: Vec<Value>,
    browser: WebRtcClient,
    sock: UdpSocket,
    wire: VecDeque<Datagram>,
    sent: u64,
    next_transaction: u32,
}

impl Phone {
    /// Connects and adds alice (no registration: calls go out through the outbound proxy).
    fn connect(gw: &Server) -> Self {
        Self::connect_with(gw, Video::None)
    }

    /// As [`Phone::connect`], with a browser that has `video`.
    fn connect_with(gw: &Server, video: Video) -> Self {
        let ws = WsClient::ready(gw);
        let sock = UdpSocket::bind("127.0.0.1:0").expect("browser socket");
        sock.set_nonblocking(true).expect("non-blocking");
        let local = sock.local_addr().expect("local");
        let browser = WebRtcClient::new(config(video, true), None, Instant::now(), local).expect("client");
        let mut p = Self { ws, events: Vec::new(), browser, sock, wire: VecDeque::new(), sent: 0, next_transaction: 1 };
        let password = ha1("alice", "127.0.0.1", "secret");
        p.request(json!({"sylkrtc": "account-add", "account": ALICE, "password": password}));
        p
    }

    /// Registers alice (with the registrar as outbound proxy) and waits for `registered`.
    fn register(&mut self) {
        self.request(json!({"sylkrtc": "account-register", "account": ALICE}));
        let seen = self.until("registered", |e| e["state"] == "registered" || e["state"] == "failed");
        assert!(seen.iter().any(|e| e["state"] == "registered"), "{seen:#?}");
    }

    /// Sends a request and waits for its `ack` (panics on `error`).
    fn request(&mut self, mut req: Value) {
        let t = self.next_transaction.to_string();
        self.next_transaction += 1;
        req["transaction"] = json!(t);
        self.ws.send_text(&req.to_string());
        let seen = self.until("the answer", |e| e["transaction"] == t);
        let mut answer = None;
        for e in seen {
            if e["transaction"] == t {
                answer = Some(e);
            } else {
                self.events.push(e); // for the next `until`
            }
        }
        let answer = answer.unwrap();
        assert_eq!(answer["sylkrtc"], "ack", "{req} answered {answer}");
    }

    /// One turn: the browser's datagrams, timers and RTP (PCMU silence every 20 ms once
    /// connected), and the WebSocket's events.
    fn pump(&mut self, next_rtp: &mut Instant) {
        let now = Instant::now();
        self.browser.drain(now, Duration::ZERO, &mut self.wire);
        for d in self.wire.drain(..) {
            let _ = self.sock.send_to(&d.data, d.to);
        }
        let mut buf = [0u8; 2048];
        let local = self.browser.addr;
        while let Ok((n, from)) = self.sock.recv_from(&mut buf) {
            self.browser.receive(now, from, local, &buf[..n]).expect("str0m accepts the datagram");
            self.browser.drain(now, Duration::ZERO, &mut self.wire);
        }
        if now >= self.browser.timeout {
            self.browser.handle_timeout(now).expect("str0m timeout");
        }
        if self.browser.connected && now >= *next_rtp {
            let header = (0, self.sent + 1, (self.sent * 160) as u32, self.sent == 0);
            self.browser.send_rtp(now, header, &[0xff; 160], Duration::ZERO, &mut self.wire);
            self.sent += 1;
            *next_rtp = now + Duration::from_millis(20);
        }
        while let Ok(Some(m)) = self.ws.next_before(Instant::now() + Duration::from_millis(1)) {
            if let Message::Text(t) = m {
                self.events.push(serde_json::from_str(t.as_str()).expect("JSON from the gateway"));
            }
        }
    }

    /// Pumps until an event matches `pred` (≤ [`STEP`]); returns the events taken meanwhile.
    fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let end = Instant::now() + STEP;
        let mut next_rtp = Instant::now();
        loop {
            self.pump(&mut next_rtp);
            if self.events.iter().any(&pred) {
                return std::mem::take(&mut self.events);
            }
            assert!(Instant::now() < end, "no {what} within {STEP:?}; got {:#?}", self.events);
        }
    }

    /// Pumps until `cond` holds (≤ [`STEP`]).
    fn pump_until(&mut self, what: &str, cond: impl Fn(&Self) -> bool) {
        let end = Instant::now() + STEP;
        let mut next_rtp = Instant::now();
        while !cond(self) {
            assert!(Instant::now() < end, "no {what} within {STEP:?} ({} RTP received)", self.browser.got.len());
            self.pump(&mut next_rtp);
        }
    }
}

fn state_is(e: &Value, state: &str) -> bool {
    e["sylkrtc"] == "session-event" && e["event"] == "state" && e["state"] == state
}

#[test]
fn outgoing_100rel_and_info_dtmf() {
    if !in_netns("outgoing_100rel_and_info_dtmf") {
        return;
    }
    let work = TempDir::new("carrier-out");
    let mut uas = Sipp::new(work.path(), Scenario::peer_file("uas_100rel_info.xml"))
        .local(addr(5076))
        .media_port(6000)
        .calls(1)
        .arg("-rtp_echo")
        .spawn();
    uas.wait_bound(STEP);
    let args = ["--sip-listen", "127.0.0.1:5080", "--outbound-proxy", "127.0.0.1:5076", "--media-address", "127.0.0.1"];
    let gw = Server::start(binary("sylkgw-mio"), &args);
    let phone = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut p = Phone::connect(&gw);
        let offer = p.browser.offer(false).expect("offer");
        p.request(json!({"sylkrtc": "session-create", "account": ALICE, "session": "c1", "uri": "carrier@127.0.0.1:5076", "sdp": offer}));
        let seen = p.until("accepted", |e| state_is(e, "accepted") || state_is(e, "terminated"));
        let early = seen.iter().find(|e| state_is(e, "early-media"));
        let early = early.unwrap_or_else(|| panic!("no early media: {seen:#?}\n{}", gw.stderr_text()));
        assert!(seen.iter().any(|e| state_is(e, "accepted")), "{seen:#?}\n{}", gw.stderr_text());
        p.browser.accept_answer(early["sdp"].as_str().expect("the 183's SDP")).expect("the answer applies");
        p.pump_until("ICE and DTLS", |p| p.browser.connected);
        p.pump_until("the DTMF event", |p| p.browser.got.iter().filter(|g| g.pt == TELE).count() >= 4);
        let events: Vec<_> = p.browser.got.iter().filter(|g| g.pt == TELE).collect();
        assert_eq!(events[0].payload, [5, 10, 0, 160], "start: event 5, 20 ms");
        assert!(events[0].marker);
        assert!(events[1..4].iter().all(|g| g.payload == [5, 0x8a, 0x06, 0x40]), "end: E bit, 1600 ticks: {events:?}");
        p.request(json!({"sylkrtc": "session-terminate", "session": "c1"}));
        p.until("terminated", |e| state_is(e, "terminated"));
    }));
    if let Err(e) = phone {
        eprintln!("{}", uas.wait(STEP));
        std::panic::resume_unwind(e);
    }
    let done = uas.wait(STEP);
    done.assert_success();
}

#[test]
fn incoming_100rel_late_offer() {
    if !in_netns("incoming_100rel_late_offer") {
        return;
    }
    let work = TempDir::new("carrier-in");
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    let proxy = kam.addr().to_string();
    let args = ["--sip-listen", "127.0.0.1:5080", "--outbound-proxy", &proxy, "--media-address", "127.0.0.1"];
    let gw = Server::start(binary("sylkgw-mio"), &args);
    let mut p = Phone::connect(&gw);
    p.register();
    kam.wait_binding("alice", STEP);
    let caller = Sipp::new(work.path(), Scenario::peer_file("uac_100rel_late.xml"))
        .remote(kam.addr())
        .local(addr(5084))
        .media_port(6000)
        .service("alice")
        .auth("bob", "secret")
        .calls(1)
        .arg("-rtp_echo")
        .timeout(Duration::from_secs(40))
        .spawn();
    let phone = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let seen = p.until("the incoming call", |e| e["event"] == "incoming-session");
        let inc = seen.iter().find(|e| e["event"] == "incoming-session").unwrap().clone();
        let offer = inc["sdp"].as_str().expect("an offer for the browser");
        // Let the PRACK exchange finish first (the caller's scenario expects it before the 200).
        let settle = Instant::now() + Duration::from_millis(1500);
        p.pump_until("the PRACK", |_| Instant::now() >= settle);
        let answer = p.browser.answer(offer, true);
        p.request(json!({"sylkrtc": "session-answer", "session": inc["session"], "sdp": answer}));
        let seen = p.until("established", |e| state_is(e, "established") || state_is(e, "terminated"));
        assert!(seen.iter().any(|e| state_is(e, "established")), "{seen:#?}\n{}", gw.stderr_text());
        p.pump_until("50 packets echoed by the caller", |p| p.browser.got.iter().filter(|g| g.pt == 0).count() > 50);
        p.request(json!({"sylkrtc": "session-terminate", "session": inc["session"]}));
        p.until("terminated", |e| state_is(e, "terminated"));
    }));
    if let Err(e) = phone {
        eprintln!("{}", caller.wait(STEP));
        std::panic::resume_unwind(e);
    }
    let done = caller.wait(STEP);
    done.assert_success();
    kam.stop();
}

/// `--sip-tls-listen`: a TLS peer opens a connection to the gateway (the certificate of
/// `--tls-cert`/`--tls-key`, verified by the client against exactly that certificate) and its
/// OPTIONS is answered 200 over the same TLS connection. (Debian's sipp is built without TLS,
/// so the peer is rustls.)
#[test]
fn sip_tls_listener_answers_a_tls_peer() {
    if !in_netns("sip_tls_listener_answers_a_tls_peer") {
        return;
    }
    use std::io::{Read, Write};
    let cert = sylkgw_tests::SelfSigned::generate();
    let mut args: Vec<String> = ["--sip-listen", "127.0.0.1:5080", "--sip-tls-listen", "127.0.0.1:5081"]
        .into_iter()
        .map(String::from)
        .collect();
    args.extend(cert.args());
    let gw = Server::start(binary("sylkgw-mio"), &args);
    let end = Instant::now() + STEP;
    while !gw.stderr_text().contains("SIP on 127.0.0.1:5081 (tls)") {
        assert!(Instant::now() < end, "no TLS listener:\n{}", gw.stderr_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let tcp = std::net::TcpStream::connect(addr(5081)).expect("connect to the SIP TLS listener");
    tcp.set_read_timeout(Some(STEP)).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let session = rustls::ClientConnection::new(cert.client_config(), name).expect("client session");
    let mut tls = rustls::StreamOwned::new(session, tcp);
    let local = tls.sock.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:127.0.0.1:5081;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bKtls1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:peer@127.0.0.1>;tag=p1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: tls-1@peer\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    tls.write_all(options.as_bytes()).expect("TLS write");
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut buf).unwrap_or_else(|e| panic!("TLS read: {e}\n{}", gw.stderr_text()));
        assert!(n > 0, "closed:\n{}", gw.stderr_text());
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("SIP/2.0 200 OK\r\n"), "{text}");
    assert!(text.contains("Via: SIP/2.0/TLS ") && text.contains("branch=z9hG4bKtls1"), "{text}");
    assert!(text.contains("CSeq: 1 OPTIONS"), "{text}");
}

/// telephone-event 48000 ↔ 8000 (RFC 4733 §2.3.5): alice registers through kamailio; sipp
/// (`tests/peers/sipp/uac_te48000.xml`) calls her offering PCMU and only telephone-event/48000,
/// its RTP on the test's own socket. The browser is offered telephone-event/8000; its event of
/// 800 ticks (100 ms at 8 kHz) reaches the SIP side as 4800 ticks, and the SIP side's event of
/// 4800 ticks reaches the browser as 800.
#[test]
fn incoming_telephone_event_48000_is_mapped() {
    if !in_netns("incoming_telephone_event_48000_is_mapped") {
        return;
    }
    use sylkgw_core::media::rtp;
    let work = TempDir::new("carrier-te48");
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    let proxy = kam.addr().to_string();
    let args = ["--sip-listen", "127.0.0.1:5080", "--outbound-proxy", &proxy, "--media-address", "127.0.0.1"];
    let gw = Server::start(binary("sylkgw-mio"), &args);
    let mut p = Phone::connect(&gw);
    p.register();
    kam.wait_binding("alice", STEP);
    let far = UdpSocket::bind(addr(6100)).expect("the caller's RTP socket");
    far.set_nonblocking(true).expect("non-blocking");
    let caller = Sipp::new(work.path(), Scenario::peer_file("uac_te48000.xml"))
        .remote(kam.addr())
        .local(addr(5084))
        .service("alice")
        .auth("bob", "secret")
        .set("caller", "bob")
        .set("rtpport", "6100")
        .calls(1)
        .arg("-d")
        .arg("8000")
        .timeout(Duration::from_secs(40))
        .spawn();
    let phone = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let seen = p.until("the incoming call", |e| e["event"] == "incoming-session");
        let inc = seen.iter().find(|e| e["event"] == "incoming-session").unwrap().clone();
        let offer = inc["sdp"].as_str().expect("an offer for the browser");
        assert!(offer.contains("a=rtpmap:101 telephone-event/8000"), "the browser's rate: {offer}");
        let answer = p.browser.answer(offer, true);
        p.request(json!({"sylkrtc": "session-answer", "session": inc["session"], "sdp": answer}));
        let seen = p.until("established", |e| state_is(e, "established") || state_is(e, "terminated"));
        assert!(seen.iter().any(|e| state_is(e, "established")), "{seen:#?}\n{}", gw.stderr_text());
        p.pump_until("ICE and DTLS", |p| p.browser.connected);
        // The browser's event 5, ended: 800 ticks at 8 kHz.
        let now = Instant::now();
        let header = (101, p.sent + 1, (p.sent * 160) as u32, true);
        p.browser.send_rtp(now, header, &[5, 0x8a, 0x03, 0x20], Duration::ZERO, &mut p.wire);
        p.sent += 1;
        let mut next_rtp = Instant::now();
        let mut buf = [0u8; 1500];
        let end = Instant::now() + STEP;
        let (gw_rtp, event) = loop {
            assert!(Instant::now() < end, "no telephone-event from the gateway\n{}", gw.stderr_text());
            p.pump(&mut next_rtp);
            let Ok((n, from)) = far.recv_from(&mut buf) else { continue };
            let Ok(v) = rtp::parse(&buf[..n]) else { continue };
            if v.header.pt == 101 {
                break (from, v.payload().to_vec());
            }
        };
        assert_eq!(event, [5, 0x8a, 0x12, 0xc0], "4800 ticks at 48 kHz");
        // The SIP side's event 7, ended: 4800 ticks at 48 kHz, after some audio.
        for seq in 1..=5u16 {
            let (pt, payload): (u8, &[u8]) = if seq < 5 { (0, &[0xff; 160]) } else { (101, &[7, 0x8a, 0x12, 0xc0]) };
            let h = rtp::RtpOut { marker: seq == 5, pt, seq, ts: u32::from(seq) * 160, ssrc: 0x5e48 };
            let n = rtp::write_packet(&mut buf, &h, payload).expect("RTP");
            far.send_to(&buf[..n], gw_rtp).expect("send");
        }
        p.pump_until("the SIP side's event", |p| p.browser.got.iter().any(|g| g.pt == 101));
        let got: Vec<_> = p.browser.got.iter().filter(|g| g.pt == 101).map(|g| g.payload.clone()).collect();
        assert_eq!(got, [vec![7, 0x8a, 0x03, 0x20]], "800 ticks at 8 kHz");
        p.until("terminated by the caller's BYE", |e| state_is(e, "terminated"));
    }));
    if let Err(e) = phone {
        eprintln!("{}", caller.wait(STEP));
        std::panic::resume_unwind(e);
    }
    let done = caller.wait(STEP);
    done.assert_success();
    kam.stop();
}

/// RFC 4585 / RFC 4588 against a real SIP caller: sipp offers VP8 with `nack`, `nack pli` and RTX
/// through kamailio (its video RTP and RTCP are this test's sockets, 6102/6103); the browser
/// answers with video and sends VP8. Our generic NACK (from 6103 to the gateway's video RTCP port)
/// for a packet we got is answered on the video RTP socket as RTX (payload type 97, OSN first,
/// the same payload); our RTX packet (OSN of the next sequence number, another SSRC) reaches the
/// browser as VP8 (payload type 100).
#[test]
fn incoming_video_nack_and_rtx() {
    if !in_netns("incoming_video_nack_and_rtx") {
        return;
    }
    use sylkgw_core::media::{rtcp, rtp};
    let work = TempDir::new("carrier-rtx");
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    let proxy = kam.addr().to_string();
    let args = ["--sip-listen", "127.0.0.1:5080", "--outbound-proxy", &proxy, "--media-address", "127.0.0.1"];
    let gw = Server::start(binary("sylkgw-mio"), &args);
    let mut p = Phone::connect_with(&gw, Video::Vp8);
    p.register();
    kam.wait_binding("alice", STEP);
    let far = UdpSocket::bind(addr(6100)).expect("the caller's RTP socket");
    let far_video = UdpSocket::bind(addr(6102)).expect("the caller's video RTP socket");
    let far_rtcp = UdpSocket::bind(addr(6103)).expect("the caller's video RTCP socket");
    for s in [&far, &far_video, &far_rtcp] {
        s.set_nonblocking(true).expect("non-blocking");
    }
    let caller = Sipp::new(work.path(), Scenario::peer_file("uac_video_rtx.xml"))
        .remote(kam.addr())
        .local(addr(5084))
        .service("alice")
        .auth("bob", "secret")
        .set("caller", "bob")
        .set("rtpport", "6100")
        .set("vport", "6102")
        .calls(1)
        .arg("-d")
        .arg("8000")
        .timeout(Duration::from_secs(40))
        .spawn();
    let phone = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let seen = p.until("the incoming call", |e| e["event"] == "incoming-session");
        let inc = seen.iter().find(|e| e["event"] == "incoming-session").unwrap().clone();
        let offer = inc["sdp"].as_str().expect("an offer for the browser");
        let answer = p.browser.answer(offer, true);
        p.request(json!({"sylkrtc": "session-answer", "session": inc["session"], "sdp": answer}));
        let seen = p.until("established", |e| state_is(e, "established") || state_is(e, "terminated"));
        assert!(seen.iter().any(|e| state_is(e, "established")), "{seen:#?}\n{}", gw.stderr_text());
        p.pump_until("ICE and DTLS", |p| p.browser.connected);
        let mid = p.browser.video.expect("the browser answered video");
        let mut next_rtp = Instant::now();
        let mut next_video = Instant::now();
        let mut vseq = 0u64;
        let mut buf = [0u8; 1500];
        // The browser's VP8 reaches the caller; it NACKs its sixth packet.
        let mut got: Vec<(u16, u32)> = Vec::new();
        let mut gw_video = None;
        let mut nacked = None;
        let mut rtx = None;
        let end = Instant::now() + STEP;
        while rtx.is_none() {
            assert!(Instant::now() < end, "no RTX answer to our NACK (got {got:?})\n{}", gw.stderr_text());
            p.pump(&mut next_rtp);
            if Instant::now() >= next_video {
                vseq += 1;
                p.browser.write_rtp(Instant::now(), mid, (100, vseq, (vseq * 3000) as u32, true), b"vp8-e2e");
                next_video = Instant::now() + Duration::from_millis(33);
            }
            while let Ok((n, from)) = far_video.recv_from(&mut buf) {
                let Ok(v) = rtp::parse(&buf[..n]) else { continue };
                match v.header.pt {
                    100 => {
                        assert_eq!(v.payload(), b"vp8-e2e");
                        got.push((v.header.seq, v.header.ssrc));
                        gw_video = Some(from);
                    }
                    97 => rtx = Some(v.payload().to_vec()),
                    pt => panic!("unexpected payload type {pt} on the video line"),
                }
            }
            if let (None, Some(&(seq, ssrc)), Some(to)) = (nacked, got.get(5), gw_video) {
                let mut nack = Vec::new();
                rtcp::write_rr(&mut nack, 0x5e1d, &[]);
                nack.extend_from_slice(&[0x81, rtcp::PT_RTPFB, 0, 3]);
                nack.extend_from_slice(&0x5e1du32.to_be_bytes());
                nack.extend_from_slice(&ssrc.to_be_bytes());
                nack.extend_from_slice(&seq.to_be_bytes());
                nack.extend_from_slice(&[0, 0]);
                far_rtcp.send_to(&nack, SocketAddr::new(to.ip(), to.port() + 1)).expect("send the NACK");
                nacked = Some(seq);
            }
        }
        let rtx = rtx.unwrap();
        assert_eq!(&rtx[..2], &nacked.unwrap().to_be_bytes(), "OSN first (RFC 4588 §4)");
        assert_eq!(&rtx[2..], b"vp8-e2e");
        // The caller's VP8 1..=3, then packet 4 as RTX only: the browser gets it as VP8.
        let to = gw_video.unwrap();
        for seq in 1..=3u16 {
            let h = rtp::RtpOut { marker: true, pt: 100, seq, ts: u32::from(seq) * 3000, ssrc: 0x5e1d };
            let n = rtp::write_packet(&mut buf, &h, b"vp8-caller").expect("RTP");
            far_video.send_to(&buf[..n], to).expect("send");
        }
        let mut payload = 4u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"vp8-repaired");
        let h = rtp::RtpOut { marker: true, pt: 97, seq: 900, ts: 12000, ssrc: 0x5e1e };
        let n = rtp::write_packet(&mut buf, &h, &payload).expect("RTP");
        far_video.send_to(&buf[..n], to).expect("send");
        p.pump_until("the repaired packet", |p| p.browser.got.iter().any(|g| g.payload == b"vp8-repaired"));
        let repaired = p.browser.got.iter().find(|g| g.payload == b"vp8-repaired").unwrap();
        assert_eq!(repaired.pt, 100, "the browser got VP8, not RTX");
        p.until("terminated by the caller's BYE", |e| state_is(e, "terminated"));
    }));
    if let Err(e) = phone {
        eprintln!("{}", caller.wait(STEP));
        std::panic::resume_unwind(e);
    }
    let done = caller.wait(STEP);
    done.assert_success();
    let ok = done.messages.split("SIP/2.0 200 OK").find(|m| m.contains("m=video")).unwrap_or_default();
    assert!(ok.contains("a=rtpmap:97 rtx/90000") && ok.contains("a=rtcp-fb:100 nack"), "our 200's video line:\n{done}");
    kam.stop();
}
