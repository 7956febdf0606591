//! Whole-gateway simulation of what one connection may do to the gateway and to others: the
//! sessions-per-connection limit (outgoing and incoming), the SIP message size limit on
//! datagrams, isolation between connections (a guessed or known session id or account of
//! another connection is unknown), containment of a panic in one call's media handling (that
//! call ends with `500 Internal error`, the others go on, no table keeps a trace of it), the
//! answer order of a `session-terminate` that ends a call at once, and the HA1 in captures.
//!
//! The real `Gateway` runs on a virtual clock with an in-memory network
//! (`sylkgw_tests::gateway_sim`) between str0m browsers (`sylkgw_tests::webrtc_client`, one per
//! session) and a scripted SIP far end that answers every call (its own RTP port per call) and
//! sends RTP on each answered call every 20 ms.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use sylkgw_core::config::Config;
use sylkgw_core::media::rtp;
use sylkgw_core::{ConnId, Input, Stats};
use sylkgw_kit::client_text_frame;
use sylkgw_tests::gateway_sim::{
    addr, far_sdp, reply, sdp_rtp_addr, BindAnswer, GatewaySim, World, FAR_SIP, HA1, LATENCY,
};
use sylkgw_tests::sip_text::{body, header};
use sylkgw_tests::webrtc_client::{Datagram, Video, WebRtcClient};

/// The far end's RTP port of its first call; call k uses this + 2k.
const FAR_RTP_BASE: u16 = 30000;

/// One call as the far end sees it.
struct FarCall {
    /// Our RTP port for it.
    port: u16,
    /// Where the gateway wants RTP (from its SDP).
    target: SocketAddr,
    /// RTP payloads received from the gateway.
    got: Vec<Vec<u8>>,
    seq: u16,
    /// It got a BYE (or answered our CANCEL): it sends no more.
    ended: bool,
}

struct Sim {
    net: GatewaySim,
    /// (connection, session) → its browser.
    browsers: BTreeMap<(ConnId, String), WebRtcClient>,
    /// SIP the far end received, in order.
    sip_in: Vec<String>,
    /// Call-ID → the far end's call.
    far: BTreeMap<String, FarCall>,
    /// The Contact URI of each REGISTER the far end accepted, by AOR user.
    contacts: BTreeMap<String, String>,
}

impl World for Sim {
    fn parts(&mut self) -> (&mut GatewaySim, Vec<&mut WebRtcClient>) {
        (&mut self.net, self.browsers.values_mut().collect())
    }

    fn media_tick(&mut self) {
        let now = self.net.now;
        for ((_, session), b) in &mut self.browsers {
            if b.connected {
                let seq = b.got.len() as u64 + 1;
                let payload = format!("from-browser-{session}");
                b.send_rtp(now, (0, seq, seq as u32 * 160, false), payload.as_bytes(), LATENCY, &mut self.net.wire);
            }
        }
        for (call_id, far) in &mut self.far {
            if far.ended {
                continue;
            }
            let mut buf = vec![0; 200];
            far.seq = far.seq.wrapping_add(1);
            let h = rtp::RtpOut { marker: false, pt: 0, seq: far.seq, ts: u32::from(far.seq) * 160, ssrc: 0xfa7 };
            let n = rtp::write_packet(&mut buf, &h, format!("from-far-{call_id}").as_bytes()).unwrap();
            buf.truncate(n);
            let from = SocketAddr::new(addr(FAR_SIP).ip(), far.port);
            self.net.wire.push_back(Datagram { at: now + LATENCY, from, to: far.target, data: buf });
        }
    }

    fn deliver(&mut self, d: Datagram) {
        let now = self.net.now;
        if let Some(b) = self.browsers.values_mut().find(|b| b.addr == d.to) {
            b.receive(now, d.from, d.to, &d.data).unwrap();
            b.drain(now, LATENCY, &mut self.net.wire);
        } else if d.to == addr(FAR_SIP) {
            self.far_sip(String::from_utf8(d.data).unwrap());
        } else if let Some(far) = self.far.values_mut().find(|f| f.port == d.to.port()) {
            if let Ok(p) = rtp::parse(&d.data) {
                far.got.push(p.payload().to_vec());
            }
        } else {
            self.net.deliver(d);
        }
    }
}

impl Sim {
    fn new(tweak: impl FnOnce(&mut Config)) -> Self {
        Self {
            net: GatewaySim::new([9; 32], BindAnswer::AfterDrain, tweak),
            browsers: BTreeMap::new(),
            sip_in: Vec::new(),
            far: BTreeMap::new(),
            contacts: BTreeMap::new(),
        }
    }

    /// Opens WebSocket `conn` and adds `account` (password: an HA1) on it.
    fn connect(&mut self, conn: u64, account: &str) -> ConnId {
        let id = ConnId(conn);
        self.net.open_ws(id);
        let add = json!({"sylkrtc": "account-add", "account": account, "password": HA1});
        assert_eq!(self.request(id, add)["sylkrtc"], "ack");
        id
    }

    /// Sends a request on `conn` (a transaction added) and returns its answer.
    fn request(&mut self, conn: ConnId, req: Value) -> Value {
        let t = format!("{conn}-{}", self.net.next_transaction(conn));
        self.net.request(conn, req, &t)
    }

    fn take_events(&mut self, conn: ConnId) -> Vec<Value> {
        self.net.take_events(conn)
    }

    /// The far end: registers everyone, answers every call (its own RTP port per call).
    fn far_sip(&mut self, text: String) {
        self.sip_in.push(text.clone());
        if text.starts_with("SIP/2.0") {
            return;
        }
        let method = text.split(' ').next().unwrap().to_string();
        let call_id = header(&text, "Call-ID").to_string();
        match method.as_str() {
            "REGISTER" => {
                let contact = header(&text, "Contact").to_string();
                let uri = contact.trim_start_matches('<').split('>').next().unwrap().to_string();
                let user = header(&text, "To").split("sip:").nth(1).unwrap().split('@').next().unwrap().to_string();
                self.contacts.insert(user, uri);
                self.net.far_send(reply(&text, 200, "OK", &format!("Contact: {contact};expires=600\r\n"), ""));
            }
            "INVITE" if header(&text, "To").contains("tag=") => {
                let port = self.far.get(&call_id).map_or(FAR_RTP_BASE, |f| f.port);
                let extra = "Contact: <sip:bob@127.0.0.1:5070>\r\nContent-Type: application/sdp\r\n";
                self.net.far_send(reply(&text, 200, "OK", extra, &far_sdp(port, "sendrecv")));
            }
            "INVITE" => {
                let port = FAR_RTP_BASE + 2 * self.far.len() as u16;
                let target = sdp_rtp_addr(body(&text));
                self.far.insert(call_id, FarCall { port, target, got: Vec::new(), seq: 100, ended: false });
                let contact = "Contact: <sip:bob@127.0.0.1:5070>\r\n";
                self.net.far_send(reply(&text, 100, "Trying", "", ""));
                self.net.far_send(reply(&text, 180, "Ringing", contact, ""));
                let extra = format!("{contact}Content-Type: application/sdp\r\n");
                self.net.far_send(reply(&text, 200, "OK", &extra, &far_sdp(port, "sendrecv")));
            }
            "ACK" => {}
            "BYE" | "CANCEL" => {
                if let Some(f) = self.far.get_mut(&call_id) {
                    f.ended = true;
                }
                self.net.far_send(reply(&text, 200, "OK", "", ""));
            }
            _ => self.net.far_send(reply(&text, 200, "OK", "", "")),
        }
    }

    /// Runs until an event on `conn` matches `pred` (10 s at most); returns the events taken.
    fn until(&mut self, conn: ConnId, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.until_event(conn, Duration::from_secs(10), pred)
    }

    /// `session-create` of `session` on `conn` for `account` with a fresh browser's offer;
    /// returns the answer (ack or error).
    fn create(&mut self, conn: ConnId, account: &str, session: &str) -> Value {
        let port = 50000 + self.browsers.len() as u16;
        let mut browser = WebRtcClient::browser(self.net.now, addr(&format!("127.0.0.1:{port}")), Video::None);
        let offer = browser.offer(false).unwrap();
        let req = json!({
            "sylkrtc": "session-create", "account": account, "session": session,
            "uri": "bob@example.com", "sdp": offer,
        });
        let answer = self.request(conn, req);
        if answer["sylkrtc"] == "ack" {
            self.browsers.insert((conn, session.to_string()), browser);
        }
        answer
    }

    /// [`Sim::create`], then runs the call up to `established` (the browser applies the answer).
    fn call(&mut self, conn: ConnId, account: &str, session: &str) {
        let answer = self.create(conn, account, session);
        assert_eq!(answer["sylkrtc"], "ack", "{answer}");
        let accepted = |e: &Value| e["session"] == session && e["state"] == "accepted";
        let seen = self.until(conn, accepted);
        let sdp = seen.iter().find(|e| accepted(e)).unwrap()["sdp"].as_str().unwrap().to_string();
        self.browsers.get_mut(&(conn, session.to_string())).unwrap().accept_answer(&sdp).unwrap();
        self.until(conn, |e| e["session"] == session && e["state"] == "established");
    }

    /// The Call-ID of the INVITE the far end got for the `n`-th call (0-based).
    fn invite_call_id(&self, n: usize) -> String {
        let invites: Vec<&String> =
            self.sip_in.iter().filter(|m| m.starts_with("INVITE ") && !header(m, "To").contains("tag=")).collect();
        header(invites[n], "Call-ID").to_string()
    }

    fn far_requests(&self, method: &str, call_id: &str) -> usize {
        self.sip_in.iter().filter(|m| m.starts_with(&format!("{method} ")) && header(m, "Call-ID") == call_id).count()
    }

    /// RTP payloads the browser of (`conn`, `session`) received so far.
    fn browser_rtp(&self, conn: ConnId, session: &str) -> usize {
        self.browsers[&(conn, session.to_string())].got.len()
    }

    /// An INVITE from the far end to the Contact registered for `user`.
    fn incoming_invite(&mut self, user: &str, call_id: &str) {
        self.incoming_invite_with(user, call_id, "");
    }

    /// [`Sim::incoming_invite`] with `extra` header lines.
    fn incoming_invite_with(&mut self, user: &str, call_id: &str, extra: &str) {
        let contact = self.contacts[user].clone();
        let sdp = far_sdp(FAR_RTP_BASE + 40, "sendrecv");
        let invite = format!(
            "INVITE {contact} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{call_id}\r\n\
             From: <sip:carol@example.com>;tag=c1\r\nTo: <sip:{user}@example.com>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:carol@127.0.0.1:5070>\r\nMax-Forwards: 70\r\n{extra}\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        self.net.far_send(invite);
    }

    fn register(&mut self, conn: ConnId, account: &str) {
        assert_eq!(self.request(conn, json!({"sylkrtc": "account-register", "account": account}))["sylkrtc"], "ack");
        self.until(conn, |e| e["state"] == "registered");
    }
}

fn states_of(events: &[Value], session: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["session"] == session && e["event"] == "state")
        .map(|e| e["state"].as_str().unwrap().to_string())
        .collect()
}

// ===== Sessions per connection =====

#[test]
fn session_create_beyond_the_limit_is_refused() {
    let mut sim = Sim::new(|c| c.max_sessions_per_connection = 2);
    let a = sim.connect(1, "alice@example.com");
    let b = sim.connect(2, "bob@example.com");
    assert_eq!(sim.create(a, "alice@example.com", "a1")["sylkrtc"], "ack");
    assert_eq!(sim.create(a, "alice@example.com", "a2")["sylkrtc"], "ack");
    let refused = sim.create(a, "alice@example.com", "a3");
    assert_eq!(refused["sylkrtc"], "error");
    assert_eq!(refused["error"], "Too many sessions on this connection");
    // Per connection: another connection has its own room.
    assert_eq!(sim.create(b, "bob@example.com", "b1")["sylkrtc"], "ack");
    assert_eq!(sim.net.gw.stats().calls, 3, "the refused session left nothing behind");
    // An ended session makes room.
    assert_eq!(sim.request(a, json!({"sylkrtc": "session-terminate", "session": "a1"}))["sylkrtc"], "ack");
    sim.until(a, |e| e["session"] == "a1" && e["state"] == "terminated");
    assert_eq!(sim.create(a, "alice@example.com", "a3")["sylkrtc"], "ack");
    assert_eq!(sim.net.gw.stats().calls, 3);
}

#[test]
fn incoming_call_beyond_the_limit_is_declined_486() {
    let mut sim = Sim::new(|c| c.max_sessions_per_connection = 1);
    let a = sim.connect(1, "alice@example.com");
    sim.register(a, "alice@example.com");
    sim.call(a, "alice@example.com", "out");
    sim.take_events(a);
    sim.incoming_invite("alice", "busy-1@far");
    sim.run(Duration::from_millis(200));
    let busy = sim.sip_in.iter().find(|m| m.starts_with("SIP/2.0 486 Busy Here") && m.contains("busy-1@far"));
    assert!(busy.is_some(), "the far end got 486: {:#?}", sim.sip_in);
    let events = sim.take_events(a);
    assert!(!events.iter().any(|e| e["event"] == "incoming-session"), "{events:#?}");
    // SylkServer reports a call refused for a limit as missed (spec §3.2 `missed-session`).
    let missed: Vec<&Value> = events.iter().filter(|e| e["event"] == "missed-session").collect();
    assert_eq!(missed.len(), 1, "{events:#?}");
    assert_eq!(missed[0]["account"], "alice@example.com");
    assert_eq!(missed[0]["originator"]["uri"], "carol@example.com");
    assert_eq!(sim.net.gw.stats().calls, 1);
    // Once the call is over, an incoming call is offered again.
    assert_eq!(sim.request(a, json!({"sylkrtc": "session-terminate", "session": "out"}))["sylkrtc"], "ack");
    sim.until(a, |e| e["session"] == "out" && e["state"] == "terminated");
    sim.incoming_invite("alice", "ok-2@far");
    sim.until(a, |e| e["event"] == "incoming-session" && e["call_id"] == "ok-2@far");
}

// ===== SIP message size =====

/// A datagram over `max_sip_message_size` is dropped unanswered; the next one that fits is
/// handled.
#[test]
fn sip_datagram_over_the_limit_is_dropped() {
    let mut sim = Sim::new(|c| c.sip.max_message_size = 2048);
    let a = sim.connect(1, "alice@example.com");
    sim.register(a, "alice@example.com");
    let heard = sim.sip_in.len();
    sim.incoming_invite_with("alice", "big-1@far", &format!("X-Pad: {}\r\n", "p".repeat(2048)));
    sim.run(Duration::from_millis(500));
    assert_eq!(sim.sip_in.len(), heard, "no answer to the oversized INVITE: {:#?}", &sim.sip_in[heard..]);
    assert!(!sim.take_events(a).iter().any(|e| e["event"] == "incoming-session"));
    sim.incoming_invite("alice", "small-2@far");
    sim.until(a, |e| e["event"] == "incoming-session" && e["call_id"] == "small-2@far");
}

// ===== Isolation =====

/// Connection B knows connection A's session id and account (as an attacker who guessed them):
/// every session and account request naming them is refused as unknown, and A's call goes on
/// untouched (no BYE, no INFO, media flowing). B may even use the same session id for a call
/// of its own: ending it does not touch A's.
#[test]
fn another_connection_cannot_act_on_sessions_or_accounts() {
    let mut sim = Sim::new(|_| {});
    let a = sim.connect(1, "alice@example.com");
    let b = sim.connect(2, "bob@example.com");
    sim.call(a, "alice@example.com", "shared-id");
    let a_call = sim.invite_call_id(0);
    sim.take_events(a);
    let rtp_before = sim.browser_rtp(a, "shared-id");

    let unknown = "Unknown session shared-id";
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n";
    let attempts = [
        (json!({"sylkrtc": "session-terminate", "session": "shared-id"}), unknown.to_string()),
        (json!({"sylkrtc": "session-answer", "session": "shared-id", "sdp": sdp}), unknown.into()),
        (json!({"sylkrtc": "session-update", "session": "shared-id", "sdp": sdp}), unknown.into()),
        (
            json!({"sylkrtc": "session-trickle", "session": "shared-id", "candidates": [
                {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMLineIndex": 0, "sdpMid": "0"}]}),
            unknown.into(),
        ),
        (
            json!({"sylkrtc": "session-dtmf-info", "session": "shared-id", "digit": "1", "duration": 100}),
            unknown.into(),
        ),
        (
            json!({"sylkrtc": "session-create", "account": "alice@example.com", "session": "x",
                   "uri": "bob@example.com", "sdp": sdp}),
            "Unknown account specified: alice@example.com".into(),
        ),
        (
            json!({"sylkrtc": "account-register", "account": "alice@example.com"}),
            "Unknown account specified for register: alice@example.com".into(),
        ),
        (
            json!({"sylkrtc": "account-unregister", "account": "alice@example.com"}),
            "Unknown account specified for unregister: alice@example.com".into(),
        ),
        (
            json!({"sylkrtc": "account-devicetoken", "account": "alice@example.com", "token": "t",
                   "platform": "ios", "device": "d", "silent": false, "app": "com.example"}),
            "Unknown account specified for token: alice@example.com".into(),
        ),
        (
            json!({"sylkrtc": "account-remove", "account": "alice@example.com"}),
            "Unknown account specified for remove: alice@example.com".into(),
        ),
    ];
    for (req, want) in attempts {
        let got = sim.request(b, req.clone());
        assert_eq!((got["sylkrtc"].as_str(), got["error"].as_str()), (Some("error"), Some(want.as_str())), "{req}");
    }
    sim.run(Duration::from_secs(1));
    assert_eq!(states_of(&sim.take_events(a), "shared-id"), Vec::<String>::new(), "A's call saw nothing");
    assert_eq!((sim.far_requests("BYE", &a_call), sim.far_requests("INFO", &a_call)), (0, 0));
    assert!(sim.browser_rtp(a, "shared-id") > rtp_before + 20, "A's media flows");

    // B's own call under the same session id is B's alone.
    sim.call(b, "bob@example.com", "shared-id");
    let b_call = sim.invite_call_id(1);
    assert_eq!(sim.request(b, json!({"sylkrtc": "session-terminate", "session": "shared-id"}))["sylkrtc"], "ack");
    sim.until(b, |e| e["session"] == "shared-id" && e["state"] == "terminated");
    let rtp_before = sim.browser_rtp(a, "shared-id");
    sim.run(Duration::from_secs(1));
    assert_eq!((sim.far_requests("BYE", &b_call), sim.far_requests("BYE", &a_call)), (1, 0));
    assert_eq!(states_of(&sim.take_events(a), "shared-id"), Vec::<String>::new());
    assert!(sim.browser_rtp(a, "shared-id") > rtp_before + 20, "A's media still flows");
    assert_eq!(sim.net.gw.stats().calls, 1);
}

// ===== Containment =====

/// A panic inside one call's media handling ends that call (`terminated` `500 Internal error`,
/// BYE to the far end, its RTP pair released) and nothing else: the other call's media keeps
/// flowing both ways, and once it ends too every table is back to where it started.
#[test]
fn panic_in_one_calls_media_ends_only_that_call() {
    let mut sim = Sim::new(|_| {});
    let a = sim.connect(1, "alice@example.com");
    let idle: Stats = sim.net.gw.stats();
    sim.call(a, "alice@example.com", "one");
    sim.call(a, "alice@example.com", "two");
    let (one, two) = (sim.invite_call_id(0), sim.invite_call_id(1));
    sim.run(Duration::from_millis(500));
    assert!(sim.browser_rtp(a, "one") > 10 && sim.browser_rtp(a, "two") > 10, "both calls carry media");
    sim.take_events(a);
    let stats = sim.net.gw.stats();
    assert_eq!((stats.calls, stats.rtp_pairs), (2, 2));

    sim.net.gw.inject_media_panic("one");
    let seen = sim.until(a, |e| e["session"] == "one" && e["state"] == "terminated");
    let ended = seen.iter().find(|e| e["session"] == "one" && e["state"] == "terminated").unwrap();
    assert_eq!(ended["reason"], "500 Internal error");
    assert!(states_of(&seen, "two").is_empty(), "{seen:#?}");
    sim.run(Duration::from_millis(500));
    assert_eq!(sim.far_requests("BYE", &one), 1, "the broken call is hung up");
    let stats = sim.net.gw.stats();
    assert_eq!((stats.calls, stats.rtp_pairs), (1, 1), "{stats:?}");

    // The other call goes on, both ways.
    let (to_browser, to_far) = (sim.browser_rtp(a, "two"), sim.far[&two].got.len());
    sim.run(Duration::from_secs(1));
    assert!(sim.browser_rtp(a, "two") > to_browser + 30, "the far end's media still reaches the browser");
    assert!(sim.far[&two].got.len() > to_far + 30, "the browser's media still reaches the far end");
    assert_eq!(sim.far_requests("BYE", &two), 0);
    assert!(states_of(&sim.take_events(a), "two").is_empty());

    assert_eq!(sim.request(a, json!({"sylkrtc": "session-terminate", "session": "two"}))["sylkrtc"], "ack");
    sim.until(a, |e| e["session"] == "two" && e["state"] == "terminated");
    sim.browsers.clear();
    sim.run(Duration::from_secs(40));
    let after = sim.net.gw.stats();
    assert_eq!(
        (after.calls, after.rtp_pairs, after.sip_legs, after.sip_transactions, after.timers),
        (0, 0, 0, idle.sip_transactions, idle.timers),
        "{after:?} (idle: {idle:?})"
    );
}

// ===== Census =====

/// After registrations, calls (outgoing, incoming, refused) and candidates, and the connections
/// going away, every table of `Stats` is back to 0, and the timers to the idle gateway's
/// (`churn::at_baseline`, which the churn and soak tests use too).
#[test]
fn every_table_is_empty_again_after_churn() {
    let mut sim = Sim::new(|c| c.max_sessions_per_connection = 1);
    let idle = serde_json::to_value(sim.net.gw.stats()).unwrap();
    let a = sim.connect(1, "alice@example.com");
    let b = sim.connect(2, "bob@example.com");
    sim.register(a, "alice@example.com");
    sim.call(a, "alice@example.com", "out");
    let candidate =
        json!({"candidate": "candidate:1 1 udp 2122194687 10.0.0.1 4000 typ host", "sdpMid": "0", "sdpMLineIndex": 0});
    assert_eq!(
        sim.request(a, json!({"sylkrtc": "session-trickle", "session": "out", "candidates": [candidate]}))["sylkrtc"],
        "ack"
    );
    sim.incoming_invite("alice", "busy@far");
    sim.create(b, "bob@example.com", "pending");
    sim.run(Duration::from_millis(500));
    let busy = serde_json::to_value(sim.net.gw.stats()).unwrap();
    for k in
        ["per_ip", "registration_owners", "sessions", "call_legs", "call_sockets", "demux_calls", "browser_candidates"]
    {
        assert!(busy[k].as_u64() > Some(0), "{k} counts nothing: {busy}");
    }
    sim.net.input(Input::StreamClosed { conn: a });
    sim.net.input(Input::StreamClosed { conn: b });
    sim.browsers.clear();
    sim.run(Duration::from_secs(40));
    let mut after = serde_json::to_value(sim.net.gw.stats()).unwrap();
    let mut idle = idle;
    (after["fds"], idle["fds"]) = (0.into(), 0.into());
    assert!(sylkgw_tests::churn::at_baseline(&after, &idle), "{after}\n(idle: {idle})");
}

// ===== Secrets =====

/// The capture of a session that adds an account and calls with it never holds the HA1.
#[test]
fn capture_masks_the_password() {
    let mut sim = Sim::new(|_| {});
    let a = sim.connect(1, "alice@example.com");
    sim.call(a, "alice@example.com", "s");
    assert!(sim.net.capture.contains("account-add"), "{}", sim.net.capture);
    assert!(!sim.net.capture.contains(HA1), "the HA1 is in the capture:\n{}", sim.net.capture);
}

// ===== Answer order =====

/// `session-terminate` for a call whose INVITE has not gone out yet (its RTP ports are still
/// being bound: here the create and the terminate come in one read) ends it at once, and still
/// answers first: `ack`, then `terminated` (spec: events a request causes follow its answer).
#[test]
fn terminate_before_the_invite_is_acked_before_terminated() {
    let mut sim = Sim::new(|_| {});
    let a = sim.connect(1, "alice@example.com");
    let mut browser = WebRtcClient::browser(sim.net.now, addr("127.0.0.1:50000"), Video::None);
    let offer = browser.offer(false).unwrap();
    let create = json!({"sylkrtc": "session-create", "transaction": "c", "account": "alice@example.com",
                        "session": "s", "uri": "bob@example.com", "sdp": offer});
    let terminate = json!({"sylkrtc": "session-terminate", "transaction": "t", "session": "s"});
    let mut chunk = client_text_frame(&create.to_string());
    chunk.extend(client_text_frame(&terminate.to_string()));
    sim.net.input(Input::StreamData { conn: a, data: &chunk });
    sim.run(Duration::from_millis(100));
    let seen: Vec<String> = sim
        .take_events(a)
        .iter()
        .map(|e| {
            format!("{} {}", e["sylkrtc"].as_str().unwrap(), e["transaction"].as_str().or(e["state"].as_str()).unwrap())
        })
        .collect();
    assert_eq!(seen, ["ack c", "ack t", "session-event terminated"]);
    assert!(!sim.sip_in.iter().any(|m| m.starts_with("INVITE ")), "no INVITE went out");
    let stats = sim.net.gw.stats();
    assert_eq!((stats.calls, stats.rtp_pairs), (0, 0));
}

// ===== Bounded work per request =====

/// `session-dtmf-info` with more than 32 digits gets an `error` naming the limit and sends no
/// INFO; the gateway stays responsive and a short string still works.
#[test]
fn dtmf_digits_beyond_the_cap_get_an_error() {
    let mut sim = Sim::new(|c| c.max_websocket_message_size = 1 << 20);
    let a = sim.connect(1, "alice@example.com");
    sim.call(a, "alice@example.com", "s");
    let call_id = sim.invite_call_id(0);
    let huge = "1".repeat(256 * 1024);
    let answer = sim.request(a, json!({"sylkrtc": "session-dtmf-info", "session": "s", "digit": huge}));
    assert_eq!(answer["sylkrtc"], "error", "{answer}");
    assert_eq!(answer["error"], "Too many DTMF digits: at most 32 per request");
    let over = "1".repeat(33);
    let answer = sim.request(a, json!({"sylkrtc": "session-dtmf-info", "session": "s", "digit": over}));
    assert_eq!(answer["error"], "Too many DTMF digits: at most 32 per request");
    sim.run(Duration::from_millis(500));
    assert_eq!(sim.far_requests("INFO", &call_id), 0, "no INFO for a refused request");
    assert_eq!(sim.request(a, json!({"sylkrtc": "ping"}))["sylkrtc"], "ack");
    let most = "0123456789*#ABCD".repeat(2);
    assert_eq!(
        sim.request(a, json!({"sylkrtc": "session-dtmf-info", "session": "s", "digit": most}))["sylkrtc"],
        "ack"
    );
    sim.run(Duration::from_secs(5));
    assert_eq!(sim.far_requests("INFO", &call_id), 32);
    assert_eq!(sim.far_requests("BYE", &call_id), 0, "the call goes on");
}

/// A flood of trickled candidates: every request is acked (sylkrtc.js ends the call on a
/// trickle error), the browser leg keeps at most 64 of them, and the call goes on.
#[test]
fn trickled_candidates_beyond_the_cap_are_ignored() {
    let mut sim = Sim::new(|c| {
        c.max_websocket_message_size = 1 << 20;
        c.max_requests_per_second = 1000;
    });
    let a = sim.connect(1, "alice@example.com");
    sim.call(a, "alice@example.com", "s");
    let candidate = |i: u32| {
        json!({"candidate": format!("candidate:{i} 1 udp 2122194687 10.{}.{}.{} {} typ host", i >> 16 & 255, i >> 8 & 255, i & 255, 1024 + i % 60000),
               "sdpMid": "0", "sdpMLineIndex": 0})
    };
    let many: Vec<Value> = (0..5000).map(candidate).collect();
    let answer = sim.request(a, json!({"sylkrtc": "session-trickle", "session": "s", "candidates": many}));
    assert_eq!(answer["sylkrtc"], "ack", "{answer}");
    for i in 0..200 {
        let one = json!({"sylkrtc": "session-trickle", "session": "s", "candidates": [candidate(10_000 + i)]});
        assert_eq!(sim.request(a, one)["sylkrtc"], "ack");
    }
    assert_eq!(sim.net.gw.stats().browser_candidates, 64, "{:?}", sim.net.gw.stats());
    let before = sim.browser_rtp(a, "s");
    sim.run(Duration::from_secs(1));
    assert!(sim.browser_rtp(a, "s") > before + 30, "media still flows");
    assert_eq!(sim.request(a, json!({"sylkrtc": "ping"}))["sylkrtc"], "ack");
}
