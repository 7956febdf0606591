//! Calls both ways on `sylkRTC-1`, end to end, in a private network namespace (loopback only):
//! a client that reads the gateway's messages the way sylkrtc.js 0.9.6 does
//! ([`sylkgw_tests::sylkrtc1_client`]) over a real WebSocket, with a str0m browser
//! (`sylkgw_tests::webrtc_client`) on a real UDP socket, through `sylkgw-mio` and kamailio.
//!
//! - Outgoing: alice (registered through kamailio) calls a sipp `-rtp_echo` UAS; the client sees
//!   `progress`, `accepted` with the answer SDP, ICE and DTLS come up, a µ-law tone comes back;
//!   the client hangs up (`terminated`, `200 OK`).
//! - Incoming (the acceptance of issue #16): a sipp UAC (`uac_auth_named.xml`, From
//!   `"Bob Sipp" <sip:bob@127.0.0.1>`) calls alice through kamailio; the client's incoming call
//!   shows the caller's URI and display name; it answers, the call is `established`; the client
//!   hangs up (sipp gets the BYE, `terminated`).
//!
//! Ports inside the namespace: kamailio 5060, gateway SIP 5080, sipp UAC 5084, sipp echo 5076 /
//! RTP 6000. Needs root, `unshare`, kamailio and sipp (`SYLKGW_SKIP_E2E=1` skips loudly).

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use sylkgw_tests::audio::{tone_samples, ulaw_encode};
use sylkgw_tests::netns::in_netns;
use sylkgw_tests::peers::{Kamailio, KamailioOpts, Scenario, Sipp};
use sylkgw_tests::sylkrtc1_client::{AppEvent, Client096, Identity};
use sylkgw_tests::webrtc_client::{config, Datagram, Video, WebRtcClient};
use sylkgw_tests::{binary, ha1, Offer, Server, TempDir, WsClient};
use tungstenite::Message;

const STEP: Duration = Duration::from_secs(15);
const ALICE: &str = "alice@127.0.0.1";

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The 0.9.6-reading client with its browser.
struct Phone {
    ws: WsClient,
    app: Client096,
    /// What the application was told and the test has not taken.
    told: Vec<AppEvent>,
    browser: WebRtcClient,
    sock: UdpSocket,
    wire: VecDeque<Datagram>,
    /// RTP packets sent so far.
    sent: u64,
    tone: Vec<u8>,
}

impl Phone {
    /// Connects with `sylkRTC-1` only, waits for `ready`, adds and registers alice.
    fn connect(gw: &Server) -> Self {
        let ws = WsClient::connect(gw, Offer::protocols("sylkRTC-1")).expect("upgrade");
        assert_eq!(ws.protocol(), Some("sylkRTC-1"));
        let sock = UdpSocket::bind("127.0.0.1:0").expect("browser socket");
        sock.set_nonblocking(true).expect("non-blocking");
        let local = sock.local_addr().expect("local");
        let browser = WebRtcClient::new(config(Video::None, true), None, Instant::now(), local).expect("client");
        let tone = tone_samples(1000.0, 8000, 20.0, 0.3).into_iter().map(ulaw_encode).collect();
        let mut p =
            Self { ws, app: Client096::new(), told: Vec::new(), browser, sock, wire: VecDeque::new(), sent: 0, tone };
        p.until("ready", |e| *e == AppEvent::Ready);
        let (t, text) = p.app.add_account(ALICE, &ha1("alice", "127.0.0.1", "secret"), "Alice");
        p.ws.send_text(&text);
        p.answer_of(&t).expect("account-add acked");
        let (t, text) = p.app.request("account-register", json!({"account": ALICE}));
        p.ws.send_text(&text);
        p.answer_of(&t).expect("account-register acked");
        let told = p.until(
            "registered",
            |e| matches!(e, AppEvent::RegistrationStateChanged { new, .. } if new == "registered" || new == "failed"),
        );
        assert!(
            told.iter().any(|e| matches!(e, AppEvent::RegistrationStateChanged { new, .. } if new == "registered")),
            "{told:?}\n{}",
            gw.stderr_text()
        );
        p
    }

    /// One turn: the browser's datagrams out and in, its timers, its RTP (a 1000 Hz µ-law tone
    /// every 20 ms once connected), and the WebSocket's messages read as 0.9.6 reads them.
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
            let i = (self.sent as usize % 900) * 160;
            let payload = self.tone[i..i + 160].to_vec();
            let header = (0, self.sent + 1, (self.sent * 160) as u32, self.sent == 0);
            self.browser.send_rtp(now, header, &payload, Duration::ZERO, &mut self.wire);
            self.sent += 1;
            *next_rtp = now + Duration::from_millis(20);
        }
        while let Ok(Some(m)) = self.ws.next_before(Instant::now() + Duration::from_millis(1)) {
            if let Message::Text(t) = m {
                let msg: Value = serde_json::from_str(t.as_str()).expect("JSON from the gateway");
                let told = self.app.read(&msg).unwrap_or_else(|e| panic!("sylkrtc.js 0.9.6 throws on {msg}: {e}"));
                self.told.extend(told);
            }
        }
    }

    /// Pumps until the application is told something matching `pred` (≤ [`STEP`]); returns
    /// everything it was told meanwhile.
    fn until(&mut self, what: &str, pred: impl Fn(&AppEvent) -> bool) -> Vec<AppEvent> {
        let end = Instant::now() + STEP;
        let mut next_rtp = Instant::now();
        loop {
            self.pump(&mut next_rtp);
            if self.told.iter().any(&pred) {
                return std::mem::take(&mut self.told);
            }
            assert!(Instant::now() < end, "no {what} within {STEP:?}; told {:#?}", self.told);
        }
    }

    /// Pumps until `cond` holds (≤ [`STEP`]); panics naming `what` otherwise.
    fn pump_until(&mut self, what: &str, cond: impl Fn(&Self) -> bool) {
        let end = Instant::now() + STEP;
        let mut next_rtp = Instant::now();
        while !cond(self) {
            assert!(
                Instant::now() < end,
                "no {what} within {STEP:?} ({} RTP sent, {} received)",
                self.sent,
                self.browser.got.len()
            );
            self.pump(&mut next_rtp);
        }
    }

    /// The callback of request `t`: `Ok` on ack, `Err(text)` on error.
    fn answer_of(&mut self, t: &str) -> Result<(), String> {
        let told = self.until("the answer", |e| matches!(e, AppEvent::Answer { transaction, .. } if transaction == t));
        let mut error = None;
        for e in told {
            match e {
                AppEvent::Answer { transaction, error: err } if transaction == t => error = Some(err),
                other => self.told.push(other),
            }
        }
        match error.flatten() {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

fn terminated_reason(told: &[AppEvent]) -> Option<String> {
    told.iter().find_map(|e| match e {
        AppEvent::CallStateChanged { new, reason, .. } if new == "terminated" => reason.clone(),
        _ => None,
    })
}

fn start(work: &TempDir) -> (Kamailio, Server) {
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    let proxy = kam.addr().to_string();
    let args = [
        "--sip-listen",
        "127.0.0.1:5080",
        "--outbound-proxy",
        &proxy,
        "--rtp-ports",
        "40000-40999",
        "--media-address",
        "127.0.0.1",
    ];
    let gw = Server::start(binary("sylkgw-mio"), &args);
    (kam, gw)
}

#[test]
fn v1_client_calls_sipp_echo_and_hears_itself() {
    if !in_netns("v1_client_calls_sipp_echo_and_hears_itself") {
        return;
    }
    let work = TempDir::new("v1-out");
    let (kam, gw) = start(&work);
    let mut echo = Sipp::echo_uas(work.path(), addr(5076), 6000).spawn();
    echo.wait_bound(STEP);
    let mut p = Phone::connect(&gw);
    kam.wait_binding("alice", STEP);

    let session = "3b0c9f1e-2a4d-4e6f-8a1b-5c7d9e0f1a2b";
    let offer = p.browser.offer(false).expect("offer");
    let (t, text) = p.app.call(ALICE, session, "echo@127.0.0.1:5076", &offer);
    p.ws.send_text(&text);
    p.answer_of(&t).expect("session-create acked");
    let told = p.until("accepted", |e| {
        matches!(e, AppEvent::RemoteAnswer { .. })
            || matches!(e, AppEvent::CallStateChanged { new, .. } if new == "terminated")
    });
    let answer = told.iter().find_map(|e| match e {
        AppEvent::RemoteAnswer { sdp, .. } => Some(sdp.clone()),
        _ => None,
    });
    let answer = answer.unwrap_or_else(|| panic!("no accepted with an SDP: {told:?}\n{}", gw.stderr_text()));
    p.browser.accept_answer(&answer).expect("the answer applies");
    p.told.push(p.app.answer_applied(session));
    p.pump_until("ICE and DTLS", |p| p.browser.connected);
    p.pump_until("50 packets echoed", |p| p.browser.got.iter().filter(|g| g.pt == 0).count() > 50);

    let (t, text) = p.app.request("session-terminate", json!({"session": session}));
    p.ws.send_text(&text);
    p.answer_of(&t).expect("session-terminate acked");
    let told = p.until("terminated", |e| matches!(e, AppEvent::CallStateChanged { new, .. } if new == "terminated"));
    assert_eq!(terminated_reason(&told).as_deref(), Some("200 OK"));
    let done = echo.wait(STEP);
    done.assert_success();
    kam.stop();
}

#[test]
fn v1_client_gets_the_callers_uri_and_display_name() {
    if !in_netns("v1_client_gets_the_callers_uri_and_display_name") {
        return;
    }
    let work = TempDir::new("v1-in");
    let (kam, gw) = start(&work);
    let mut p = Phone::connect(&gw);
    kam.wait_binding("alice", STEP);

    let caller = Sipp::new(work.path(), Scenario::peer_file("uac_auth_named.xml"))
        .remote(kam.addr())
        .local(addr(5084))
        .service("alice")
        .auth("bob", "secret")
        .set("caller", "bob")
        .set("display", "Bob Sipp")
        .calls(1)
        .timeout(Duration::from_secs(30))
        .spawn();
    let told = p.until("the incoming call", |e| matches!(e, AppEvent::IncomingCall { .. }));
    let Some(AppEvent::IncomingCall { session, remote, sdp, .. }) =
        told.into_iter().find(|e| matches!(e, AppEvent::IncomingCall { .. }))
    else {
        unreachable!()
    };
    assert_eq!(remote, Identity { uri: Some("bob@127.0.0.1".into()), display_name: Some("Bob Sipp".into()) });
    let answer = p.browser.answer(&sdp, true);
    let (t, text) = p.app.request("session-answer", json!({"session": session, "sdp": answer}));
    p.ws.send_text(&text);
    p.answer_of(&t).expect("session-answer acked");
    let told = p.until(
        "established",
        |e| matches!(e, AppEvent::CallStateChanged { new, .. } if new == "established" || new == "terminated"),
    );
    let states: Vec<&str> = told
        .iter()
        .filter_map(|e| match e {
            AppEvent::CallStateChanged { new, .. } => Some(new.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(states, ["accepted", "established"], "{}", gw.stderr_text());
    p.pump_until("ICE and DTLS", |p| p.browser.connected);
    p.pump_until("50 packets sent", |p| p.sent > 50);
    let (t, text) = p.app.request("session-terminate", json!({"session": session}));
    p.ws.send_text(&text);
    p.answer_of(&t).expect("session-terminate acked");
    let told = p.until("terminated", |e| matches!(e, AppEvent::CallStateChanged { new, .. } if new == "terminated"));
    assert_eq!(terminated_reason(&told).as_deref(), Some("200 OK"));
    let done = caller.wait(STEP);
    done.assert_success();
    kam.stop();
}
