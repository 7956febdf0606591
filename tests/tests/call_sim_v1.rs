//! Whole-gateway call simulation on `sylkRTC-1`, read the way sylkrtc.js 0.9.6 reads it
//! ([`sylkgw_tests::sylkrtc1_client`]): the real `Gateway` between a str0m browser and a scripted
//! SIP far end on a virtual clock (as `call_sim.rs`), the connection upgraded with `sylkRTC-1`.
//!
//! What it proves, for each row of `docs/sylkrtc1-audit.md` about calls: an outgoing call goes
//! `progress` → `accepted` (with the answer SDP) and media flows; a far end with early media
//! (183 + SDP, then 200) still gives the answer in `accepted` (sylkRTC-1 has no `early-media`);
//! an incoming call gives the application the caller's URI and display name, a 32-hex session
//! id (`uuid4().hex` in SylkServer 4.1), `accepted` without SDP and media both ways; a caller's
//! CANCEL gives `terminated` (487) and `missed_session` with the originator object; a decline is
//! 486; errors carry SylkServer 4.1's texts. Each scenario is recorded as a `v1_*` capture.

#![allow(clippy::disallowed_methods)] // Instant::now is only the epoch of the virtual clock

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use sylkgw_core::capture;
use sylkgw_core::media::rtp;
use sylkgw_core::{ConnId, Input, Listener};
use sylkgw_kit::{client_text_frame, UPGRADE_V2};
use sylkgw_tests::gateway_sim::{
    self, addr, reply, sdp_rtp_addr, BindAnswer, GatewaySim, World, Ws, FAR_SIP, HA1, LATENCY,
};
use sylkgw_tests::sip_text::{body, header};
use sylkgw_tests::sylkrtc1_client::{AppEvent, Client096, Identity};
use sylkgw_tests::webrtc_client::{Datagram, Video, WebRtcClient as Browser};

const FAR_RTP: &str = "127.0.0.1:30000";
const BROWSER: &str = "127.0.0.1:50000";
const WS: ConnId = ConnId(1);
const ALICE: &str = "alice@example.com";

/// What the far end does with an INVITE.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    /// 180, then 200 with its SDP.
    Answer,
    /// 183 with its SDP; the 200 (same SDP) when the test sends `far_later`.
    EarlyMedia,
}

struct Sim {
    net: GatewaySim,
    browser: Browser,
    app: Client096,
    /// What the application was told, in order (not taken yet).
    told: Vec<AppEvent>,
    script: Script,
    sip_in: Vec<String>,
    far_rtp: usize,
    far_rtp_target: Option<SocketAddr>,
    far_later: Option<String>,
    seq: u64,
}

fn far_sdp() -> String {
    gateway_sim::far_sdp(30000, "sendrecv")
}

impl Sim {
    fn new(script: Script) -> Self {
        let net = GatewaySim::new([9; 32], BindAnswer::AtOnce, |_| {});
        let browser = Browser::browser(net.now, addr(BROWSER), Video::None);
        let mut sim = Self {
            net,
            browser,
            app: Client096::new(),
            told: Vec::new(),
            script,
            sip_in: Vec::new(),
            far_rtp: 0,
            far_rtp_target: None,
            far_later: None,
            seq: 0,
        };
        sim.net.conns.insert(WS, Ws::default());
        sim.net.input(Input::Accepted { conn: WS, listener: Listener::Web, peer: addr("127.0.0.1:61000") });
        let upgrade = UPGRADE_V2.replace("sylkRTC-2", "sylkRTC-1");
        sim.net.input(Input::StreamData { conn: WS, data: upgrade.as_bytes() });
        sim.read();
        assert_eq!(sim.take(), [AppEvent::Ready]);
        let (t, text) = sim.app.add_account(ALICE, HA1, "Alice");
        sim.send(&text);
        assert_eq!(sim.take(), [AppEvent::Answer { transaction: t, error: None }]);
        sim
    }

    /// Sends a request's text.
    fn send(&mut self, text: &str) {
        let frame = client_text_frame(text);
        self.net.input(Input::StreamData { conn: WS, data: &frame });
        self.read();
    }

    /// Sends a request and returns its callback's error (`None`: ack).
    fn ask(&mut self, kind: &str, fields: Value) -> Option<String> {
        let (t, text) = self.app.request(kind, fields);
        self.send(&text);
        let i = self
            .told
            .iter()
            .position(|e| matches!(e, AppEvent::Answer { transaction, .. } if *transaction == t))
            .expect("an answer");
        match self.told.remove(i) {
            AppEvent::Answer { error, .. } => error,
            _ => unreachable!(),
        }
    }

    /// Feeds every message received to the 0.9.6 model; a message it would throw on fails.
    fn read(&mut self) {
        for msg in self.net.take_events(WS) {
            let told = self.app.read(&msg).unwrap_or_else(|e| panic!("sylkrtc.js 0.9.6 throws on {msg}: {e}"));
            self.told.extend(told);
        }
    }

    fn take(&mut self) -> Vec<AppEvent> {
        std::mem::take(&mut self.told)
    }

    /// Runs until the application is told something matching `pred`; returns all it was told.
    fn until(&mut self, pred: impl Fn(&AppEvent) -> bool) -> Vec<AppEvent> {
        let end = self.net.now + Duration::from_secs(10);
        loop {
            self.read();
            if self.told.iter().any(&pred) {
                return self.take();
            }
            assert!(self.net.now < end, "timed out; told so far: {:#?}", self.told);
            self.run(Duration::from_millis(10));
        }
    }

    /// Runs until the browser's ICE and DTLS are up (the gateway's `established`, which 0.9.6
    /// ignores on outgoing calls).
    fn until_connected(&mut self) {
        let end = self.net.now + Duration::from_secs(10);
        while !self.browser.connected {
            assert!(self.net.now < end, "ICE and DTLS never came up");
            self.run(Duration::from_millis(10));
        }
    }

    fn until_state(&mut self, state: &str) -> Vec<AppEvent> {
        self.until(|e| matches!(e, AppEvent::CallStateChanged { new, .. } if new == state))
    }

    fn far_requests(&self, method: &str) -> Vec<&String> {
        self.sip_in.iter().filter(|m| m.starts_with(&format!("{method} "))).collect()
    }

    fn far_sip(&mut self, text: String) {
        self.sip_in.push(text.clone());
        if text.starts_with("SIP/2.0") {
            return;
        }
        let contact = "Contact: <sip:bob@127.0.0.1:5070>\r\n";
        let with_sdp = format!("{contact}Content-Type: application/sdp\r\n");
        match text.split(' ').next().unwrap() {
            "REGISTER" => {
                let c = header(&text, "Contact").to_string();
                self.net.far_send(reply(&text, 200, "OK", &format!("Contact: {c};expires=600\r\n"), ""));
            }
            "INVITE" => {
                self.far_rtp_target = Some(sdp_rtp_addr(body(&text)));
                self.net.far_send(reply(&text, 100, "Trying", "", ""));
                match self.script {
                    Script::Answer => {
                        self.net.far_send(reply(&text, 180, "Ringing", contact, ""));
                        self.net.far_send(reply(&text, 200, "OK", &with_sdp, &far_sdp()));
                    }
                    Script::EarlyMedia => {
                        self.net.far_send(reply(&text, 183, "Session Progress", &with_sdp, &far_sdp()));
                        self.far_later = Some(reply(&text, 200, "OK", &with_sdp, &far_sdp()));
                    }
                }
            }
            "ACK" => {}
            _ => self.net.far_send(reply(&text, 200, "OK", "", "")),
        }
    }

    /// Registers alice (the far end is the registrar); returns the Contact user.
    fn register(&mut self) -> String {
        assert_eq!(self.ask("account-register", json!({"account": ALICE})), None);
        let told = self.until(|e| matches!(e, AppEvent::RegistrationStateChanged { new, .. } if new == "registered"));
        let states: Vec<&str> = told
            .iter()
            .filter_map(|e| match e {
                AppEvent::RegistrationStateChanged { new, .. } => Some(new.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(states, ["registering", "registered"]);
        let reg = self.far_requests("REGISTER")[0].clone();
        header(&reg, "Contact").split("sip:").nth(1).unwrap().split('@').next().unwrap().to_string()
    }

    /// The far end calls alice (`from` is its From header value); returns the INVITE.
    fn incoming_invite(&mut self, user: &str, from: &str) -> String {
        let sdp = far_sdp();
        let invite = format!(
            "INVITE sip:{user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv1\r\n\
             From: {from};tag=bobtag\r\nTo: <sip:alice@example.com>\r\nCall-ID: incoming-1@far\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:bob@127.0.0.1:5070>\r\nMax-Forwards: 70\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        self.net.far_send(invite.clone());
        invite
    }

    /// Media flowed both ways for a second of the call.
    fn assert_media_both_ways(&mut self) {
        let (far0, got0) = (self.far_rtp, self.browser.got.len());
        self.run(Duration::from_secs(1));
        assert!(self.far_rtp - far0 > 20, "far end got {} packets", self.far_rtp - far0);
        assert!(self.browser.got.len() - got0 > 20, "browser got {} packets", self.browser.got.len() - got0);
    }

    fn check_capture(&mut self, name: &str) {
        let text = self.net.take_capture();
        let cap = capture::parse(&text).expect("the capture parses");
        let got = capture::replay(&cap, Instant::now()).expect("replay");
        assert_eq!(capture::mask_media(&text), capture::mask_media(&got), "{name}: the replay differs");
        assert!(!text.contains("udp:2<"), "no media in captures");
        if std::env::var_os("WRITE_CAPTURES").is_some() {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("captures").join(format!("{name}.cap"));
            std::fs::write(path, text).unwrap();
        }
    }
}

impl World for Sim {
    fn parts(&mut self) -> (&mut GatewaySim, Vec<&mut Browser>) {
        (&mut self.net, vec![&mut self.browser])
    }

    fn media_tick(&mut self) {
        if self.browser.connected {
            self.seq += 1;
            let (now, seq) = (self.net.now, self.seq);
            self.browser.send_rtp(
                now,
                (0, seq, (seq * 160) as u32, false),
                b"from-browser",
                LATENCY,
                &mut self.net.wire,
            );
        }
        if let Some(to) = self.far_rtp_target {
            let mut buf = vec![0; 200];
            let seq = self.seq as u16;
            let h = rtp::RtpOut { marker: false, pt: 0, seq, ts: u32::from(seq) * 160, ssrc: 0xfa7 };
            let n = rtp::write_packet(&mut buf, &h, b"from-far-end").unwrap();
            buf.truncate(n);
            self.net.wire.push_back(Datagram { at: self.net.now + LATENCY, from: addr(FAR_RTP), to, data: buf });
        }
    }

    fn deliver(&mut self, d: Datagram) {
        if d.to == addr(BROWSER) {
            self.browser.receive(self.net.now, d.from, d.to, &d.data).unwrap();
            self.browser.drain(self.net.now, LATENCY, &mut self.net.wire);
        } else if d.to == addr(FAR_SIP) {
            self.far_sip(String::from_utf8(d.data).unwrap());
        } else if d.to == addr(FAR_RTP) {
            self.far_rtp += 1;
        } else if d.to != addr("127.0.0.1:30001") {
            self.net.deliver(d);
        }
    }
}

fn states(told: &[AppEvent]) -> Vec<&str> {
    told.iter()
        .filter_map(|e| match e {
            AppEvent::CallStateChanged { new, .. } => Some(new.as_str()),
            _ => None,
        })
        .collect()
}

fn reason(told: &[AppEvent]) -> Option<String> {
    told.iter().find_map(|e| match e {
        AppEvent::CallStateChanged { new, reason, .. } if new == "terminated" => reason.clone(),
        _ => None,
    })
}

/// Places a call the way 0.9.6 does and runs it to its answer; returns (session, told).
fn place_call(sim: &mut Sim) -> (String, Vec<AppEvent>) {
    // 0.9.6 makes outgoing session ids with uuidv4(): dashes included, echoed as they are.
    let session = "0f2a4f3c-6d5e-4b1a-9c8d-7e6f5a4b3c2d".to_string();
    let offer = sim.browser.offer(false).unwrap();
    let (t, text) = sim.app.call(ALICE, &session, "bob@example.com", &offer);
    sim.send(&text);
    let told = sim.until(|e| matches!(e, AppEvent::RemoteAnswer { .. }));
    assert!(told.contains(&AppEvent::Answer { transaction: t, error: None }), "{told:?}");
    let answer = told.iter().find_map(|e| match e {
        AppEvent::RemoteAnswer { sdp, .. } => Some(sdp.clone()),
        _ => None,
    });
    sim.browser.accept_answer(&answer.unwrap()).unwrap();
    sim.told.push(sim.app.answer_applied(&session));
    (session, told)
}

#[test]
fn outgoing_call_answered_then_local_hangup() {
    let mut sim = Sim::new(Script::Answer);
    let (session, told) = place_call(&mut sim);
    assert_eq!(states(&told), ["progress", "accepted"]);
    sim.until_connected();
    assert_media_and_hang_up(&mut sim, &session);
    // A request about the ended session: 4.1's text.
    let err = sim.ask("session-terminate", json!({"session": session}));
    assert_eq!(err.as_deref(), Some(format!("Unknown session specified: {session}").as_str()));
    sim.check_capture("v1_call_outgoing");
}

fn assert_media_and_hang_up(sim: &mut Sim, session: &str) {
    sim.assert_media_both_ways();
    assert_eq!(sim.ask("session-terminate", json!({"session": session})), None);
    let told = sim.until_state("terminated");
    assert_eq!(reason(&told).as_deref(), Some("200 OK"));
    assert_eq!(sim.far_requests("BYE").len(), 1);
    assert!(sim.app.call_of(session).is_none());
}

#[test]
fn outgoing_call_with_early_media_gets_its_answer_in_accepted() {
    let mut sim = Sim::new(Script::EarlyMedia);
    let offer = sim.browser.offer(false).unwrap();
    let session = "early-1";
    let (_, text) = sim.app.call(ALICE, session, "bob@example.com", &offer);
    sim.send(&text);
    sim.until_state("progress");
    sim.run(Duration::from_millis(300));
    sim.read();
    assert!(states(&sim.take()).is_empty(), "no state sylkRTC-1 lacks (early-media, ringing)");
    let ok = sim.far_later.take().unwrap();
    sim.net.far_send(ok);
    let told = sim.until(|e| matches!(e, AppEvent::RemoteAnswer { .. }));
    let answer = told.iter().find_map(|e| match e {
        AppEvent::RemoteAnswer { sdp, .. } => Some(sdp.clone()),
        _ => None,
    });
    sim.browser.accept_answer(&answer.unwrap()).unwrap();
    sim.told.push(sim.app.answer_applied(session));
    sim.until_connected();
    assert_media_and_hang_up(&mut sim, session);
    sim.check_capture("v1_call_early_media");
}

#[test]
fn incoming_call_shows_the_caller_and_is_answered() {
    let mut sim = Sim::new(Script::Answer);
    let user = sim.register();
    let invite = sim.incoming_invite(&user, "\"Bob Example\" <sip:bob@example.com>");
    let told = sim.until(|e| matches!(e, AppEvent::IncomingCall { .. }));
    let Some(AppEvent::IncomingCall { session, remote, sdp, .. }) =
        told.into_iter().find(|e| matches!(e, AppEvent::IncomingCall { .. }))
    else {
        unreachable!()
    };
    // The acceptance of issue #16: the caller's URI and display name.
    assert_eq!(remote, Identity { uri: Some("bob@example.com".into()), display_name: Some("Bob Example".into()) });
    // SylkServer ≤ 4.1: `uuid4().hex`, 32 hex digits.
    assert!(session.len() == 32 && session.chars().all(|c| c.is_ascii_hexdigit()), "{session}");
    let answer = sim.browser.answer(&sdp, true);
    assert_eq!(sim.ask("session-answer", json!({"session": session, "sdp": answer})), None);
    let told = sim.until_state("established");
    assert_eq!(states(&told), ["accepted", "established"]);
    let ok = sim.sip_in.iter().find(|m| m.starts_with("SIP/2.0 200 OK") && m.contains("INVITE")).unwrap().clone();
    let ack = format!(
        "ACK sip:{user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKack1\r\nFrom: {}\r\nTo: {}\r\nCall-ID: incoming-1@far\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(&invite, "From"),
        header(&ok, "To")
    );
    sim.net.far_send(ack);
    sim.far_rtp_target = Some(sdp_rtp_addr(body(&ok)));
    sim.assert_media_both_ways();
    let bye = format!(
        "BYE sip:{user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbye2\r\nFrom: {}\r\nTo: {}\r\nCall-ID: incoming-1@far\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(&invite, "From"),
        header(&ok, "To")
    );
    sim.net.far_send(bye);
    let told = sim.until_state("terminated");
    assert_eq!(reason(&told).as_deref(), Some("200 OK"));
    sim.check_capture("v1_call_incoming");
}

#[test]
fn incoming_call_cancelled_is_missed_with_the_originator() {
    let mut sim = Sim::new(Script::Answer);
    let user = sim.register();
    let invite = sim.incoming_invite(&user, "<sip:bob@example.com>");
    let told = sim.until(|e| matches!(e, AppEvent::IncomingCall { .. }));
    let remote = told.iter().find_map(|e| match e {
        AppEvent::IncomingCall { remote, .. } => Some(remote.clone()),
        _ => None,
    });
    // No display name: 4.1 sent "" (`SessionPartyIdentity(uri, display_name='')`).
    assert_eq!(remote, Some(Identity { uri: Some("bob@example.com".into()), display_name: Some(String::new()) }));
    let cancel = format!(
        "CANCEL sip:{user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv1\r\nFrom: {}\r\nTo: {}\r\nCall-ID: incoming-1@far\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(&invite, "From"),
        header(&invite, "To")
    );
    sim.net.far_send(cancel);
    let told = sim.until(|e| matches!(e, AppEvent::MissedCall { .. }));
    assert_eq!(reason(&told).as_deref(), Some("487 Request Terminated"));
    let originator = Identity { uri: Some("bob@example.com".into()), display_name: Some(String::new()) };
    assert_eq!(told.last(), Some(&AppEvent::MissedCall { account: ALICE.into(), originator }));
    sim.check_capture("v1_call_incoming_missed");
}

#[test]
fn incoming_call_declined_with_486() {
    let mut sim = Sim::new(Script::Answer);
    let user = sim.register();
    sim.incoming_invite(&user, "\"Bob\" <sip:bob@example.com>");
    let told = sim.until(|e| matches!(e, AppEvent::IncomingCall { .. }));
    let session = told.iter().find_map(|e| match e {
        AppEvent::IncomingCall { session, .. } => Some(session.clone()),
        _ => None,
    });
    // `session-answer` on an outgoing or unknown session: 4.1's texts.
    let err = sim.ask("session-answer", json!({"session": "nope", "sdp": "v=0"}));
    assert_eq!(err.as_deref(), Some("Unknown session specified: nope"));
    assert_eq!(sim.ask("session-terminate", json!({"session": session.unwrap()})), None);
    let told = sim.until_state("terminated");
    assert_eq!(reason(&told).as_deref(), Some("486 Busy Here"));
    sim.run(Duration::from_millis(100));
    assert!(sim.sip_in.iter().any(|m| m.starts_with("SIP/2.0 486")));
    sim.check_capture("v1_call_incoming_declined");
}
