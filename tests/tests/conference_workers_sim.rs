//! One room across two workers (issue #13, `conference::remote`), simulated: two gateways (worker
//! 0 and 1 of two) wired by their `Output::ToWorker` / `Input::FromWorker`, three str0m browsers
//! split over them. The room lives on its home worker (`remote::home_of`): the participants whose
//! WebSocket is on the other worker get the same events in the same order as local ones, their
//! PeerConnections are the home's (its WebRTC port in every SDP, media never crosses workers),
//! and every table of both gateways returns to its baseline. The signalling run is also a pair of
//! captures (`WRITE_CAPTURES=1` writes `tests/captures/conference_workers_{home,origin}.cap`,
//! replayed by `tests/replay.rs`).

#![allow(clippy::disallowed_methods)] // Instant::now is only the replay's epoch

use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use sylkgw_core::capture;
use sylkgw_core::conference::remote::{home_of, WorkerMsg};
use sylkgw_core::conference::Census;
use sylkgw_core::{ConnId, Input, Listener};
use sylkgw_kit::{client_text_frame, UPGRADE_V2};
use sylkgw_tests::gateway_sim::{addr, BindAnswer, GatewaySim, Ws, HA1, LATENCY, MEDIA_INTERVAL};
use sylkgw_tests::webrtc_client::{config, Datagram, Video, WebRtcClient, VP8};

const ROOM: &str = "room@videoconference.example.com";
const OPUS: u8 = 111;
const NAMES: [&str; 3] = ["alice", "bob", "carol"];

/// Worker `w`'s WebRTC socket.
fn webrtc_of(w: usize) -> String {
    format!("127.0.0.1:{}", 40000 + w)
}

/// One participant: its worker, WebSocket, publisher session and PeerConnections.
struct Party {
    worker: usize,
    conn: ConnId,
    session: String,
    publisher: WebRtcClient,
    /// Feeds by the publisher session they receive: (feed id, subscriber PeerConnection).
    feeds: BTreeMap<String, (String, WebRtcClient)>,
    seq: u64,
}

/// Two workers' gateways, the browsers and the network between them.
struct Workers {
    nets: Vec<GatewaySim>,
    parties: Vec<Party>,
    wire: VecDeque<Datagram>,
    /// Messages to this worker are handed back to their sender as undeliverable.
    down: Option<usize>,
}

impl Workers {
    fn new() -> Self {
        let nets = (0..2)
            .map(|w| {
                GatewaySim::new([13 + w as u8; 32], BindAnswer::AtOnce, |c| {
                    c.conference.worker = w;
                    c.conference.workers = 2;
                    c.media.webrtc_listen = Some(addr(&webrtc_of(w)));
                })
            })
            .collect();
        Self { nets, parties: Vec::new(), wire: VecDeque::new(), down: None }
    }

    /// Carries the messages between the workers (at once, in order) until none is left.
    fn pump(&mut self) {
        loop {
            let mut any = false;
            for from in 0..self.nets.len() {
                while let Some((to, msg)) = self.nets[from].to_workers.pop_front() {
                    any = true;
                    match self.down == Some(to) {
                        true => self.nets[from].input(Input::ToWorkerFailed { worker: to, msg }),
                        false => self.nets[to].input(Input::FromWorker { worker: from, msg }),
                    }
                }
            }
            if !any {
                break;
            }
        }
        for n in &mut self.nets {
            self.wire.extend(n.wire.drain(..));
        }
    }

    /// Feeds `input` to worker `w` and carries what follows between the workers.
    fn input(&mut self, w: usize, input: Input<'_>) {
        self.nets[w].input(input);
        self.pump();
    }

    /// Sends `req` on `conn` of worker `w`; returns every event that came on `conn`.
    fn send(&mut self, w: usize, conn: ConnId, mut req: Value) -> Vec<Value> {
        let t = self.nets[w].next_transaction(conn);
        req["transaction"] = Value::String(t.to_string());
        let frame = client_text_frame(&req.to_string());
        self.input(w, Input::StreamData { conn, data: &frame });
        self.nets[w].take_events(conn)
    }

    fn events(&mut self, w: usize, conn: ConnId) -> Vec<Value> {
        self.nets[w].take_events(conn)
    }

    /// The answer to the last request in `events` (`ack` or the error text).
    fn answer(events: &[Value]) -> String {
        let a = events.iter().find(|e| e["sylkrtc"] == "ack" || e["sylkrtc"] == "error").expect("an answer");
        if a["sylkrtc"] == "ack" {
            "ack".into()
        } else {
            a["error"].as_str().unwrap().to_string()
        }
    }

    /// Opens WebSocket `conn` on worker `w` and adds `account` on it.
    fn connect(&mut self, w: usize, conn: ConnId, account: &str) {
        self.nets[w].open_ws(conn);
        let add = json!({"sylkrtc":"account-add","account":account,"password":HA1,"display_name":account});
        assert_eq!(Self::answer(&self.send(w, conn, add)), "ack");
    }

    /// Party `i` connects on worker `w` (connection `i` + 1 there) and joins room `room`.
    fn join(&mut self, i: usize, w: usize, room: &str) -> Vec<Value> {
        let conn = ConnId(i as u64 + 1);
        let account = format!("{}@example.com", NAMES[i]);
        self.connect(w, conn, &account);
        let now = self.nets[w].now;
        let mut publisher =
            WebRtcClient::new(config(Video::Vp8, false), None, now, addr(&format!("127.0.0.1:{}", 51000 + 100 * i)))
                .unwrap();
        let offer = publisher.sendonly_offer();
        let session = format!("p{i}");
        let req = json!({"sylkrtc":"videoroom-join","account":account,"session":session,"uri":room,"sdp":offer});
        let events = self.send(w, conn, req);
        self.parties.push(Party { worker: w, conn, session, publisher, feeds: BTreeMap::new(), seq: 0 });
        events
    }

    /// Applies the `accepted` answer of party `i`; returns its SDP.
    fn accept(&mut self, i: usize, events: &[Value]) -> String {
        let accepted = events.iter().find(|e| e["state"] == "accepted").expect("accepted");
        let sdp = accepted["sdp"].as_str().unwrap().to_string();
        self.parties[i].publisher.accept_answer(&sdp).unwrap();
        sdp
    }

    /// Party `i` attaches a feed of party `j`'s publisher and answers its offer; returns the
    /// offer.
    fn attach(&mut self, i: usize, j: usize) -> String {
        let (w, conn, session) = (self.parties[i].worker, self.parties[i].conn, self.parties[i].session.clone());
        let publisher = self.parties[j].session.clone();
        let feed = format!("f{i}{j}");
        let req = json!({"sylkrtc":"videoroom-feed-attach","session":session,"publisher":publisher,"feed":feed});
        let events = self.send(w, conn, req);
        assert_eq!(names(&events), ["ack", "feed-attached"], "{events:#?}");
        let offer = events[1]["sdp"].as_str().unwrap().to_string();
        let now = self.nets[w].now;
        let port = 51000 + 100 * i + 1 + j;
        let mut client =
            WebRtcClient::new(config(Video::Vp8, false), None, now, addr(&format!("127.0.0.1:{port}"))).unwrap();
        let answer = client.answer(&offer, true);
        let req = json!({"sylkrtc":"videoroom-feed-answer","session":session,"feed":feed,"sdp":answer});
        assert_eq!(Self::answer(&self.send(w, conn, req)), "ack");
        self.parties[i].feeds.insert(publisher, (feed, client));
        offer
    }

    fn census(&self, w: usize) -> Census {
        self.nets[w].gw.conference_census()
    }

    /// Runs the virtual world for `d`: both gateways' timers, the browsers', media every
    /// [`MEDIA_INTERVAL`], the wire.
    fn run(&mut self, d: Duration) {
        let end = self.nets[0].now + d;
        let mut next_media = self.nets[0].now;
        loop {
            let browsers_at = self.clients().map(|b| b.timeout).min();
            let wire_at = self.wire.iter().map(|d| d.at).min();
            let deadlines = self.nets.iter().map(|n| n.deadline).min();
            let t = [Some(end), deadlines, browsers_at, wire_at, Some(next_media)].into_iter().flatten().min().unwrap();
            if t > end {
                break;
            }
            let now = self.nets[0].now.max(t);
            for n in &mut self.nets {
                n.now = now;
            }
            for w in 0..self.nets.len() {
                if self.nets[w].deadline <= now {
                    self.input(w, Input::Timeout);
                }
            }
            let mut out = VecDeque::new();
            for b in self.clients() {
                if b.timeout <= now {
                    b.handle_timeout(now).unwrap();
                    b.drain(now, LATENCY, &mut out);
                }
            }
            self.wire.extend(out);
            if next_media <= now {
                next_media = now + MEDIA_INTERVAL;
                self.media_tick(now);
            }
            while let Some(i) = self.wire.iter().position(|d| d.at <= now) {
                let d = self.wire.remove(i).unwrap();
                self.deliver(now, d);
            }
            if now >= end {
                break;
            }
        }
    }

    fn clients(&mut self) -> impl Iterator<Item = &mut WebRtcClient> {
        self.parties
            .iter_mut()
            .flat_map(|p| std::iter::once(&mut p.publisher).chain(p.feeds.values_mut().map(|f| &mut f.1)))
    }

    /// Each connected publisher sends an Opus and a VP8 packet whose payloads start with its
    /// index.
    fn media_tick(&mut self, now: Instant) {
        for (i, p) in self.parties.iter_mut().enumerate() {
            if !p.publisher.connected {
                continue;
            }
            p.seq += 1;
            p.publisher.publish_marked(now, (i as u8, p.seq), LATENCY, &mut self.wire);
        }
    }

    /// A datagram to a browser, or to the worker whose socket it is addressed to.
    fn deliver(&mut self, now: Instant, d: Datagram) {
        let mut out = VecDeque::new();
        if let Some(c) = self.clients().find(|c| c.addr == d.to) {
            c.receive(now, d.from, d.to, &d.data).unwrap();
            c.drain(now, LATENCY, &mut out);
        }
        if !out.is_empty() || self.clients().any(|c| c.addr == d.to) {
            self.wire.extend(out);
            return;
        }
        let to = d.to;
        match self.nets.iter().position(|n| n.sockets.values().any(|a| *a == to)) {
            Some(w) => {
                self.nets[w].deliver(d);
                self.pump();
            }
            None => panic!("a datagram to {to}, which nobody has"),
        }
    }

    /// Runs until an event on `conn` of worker `w` matches `pred`; returns every event taken.
    fn until_event(&mut self, w: usize, conn: ConnId, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let end = self.nets[w].now + Duration::from_secs(5);
        let mut seen = Vec::new();
        loop {
            seen.extend(self.events(w, conn));
            if seen.iter().any(&pred) {
                return seen;
            }
            assert!(self.nets[w].now < end, "timed out; events on {conn} of worker {w}: {seen:#?}");
            self.run(Duration::from_millis(10));
        }
    }
}

/// The `event` names of the videoroom events (and `ack`/`error`) in `events`, in order.
fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e["sylkrtc"].as_str().unwrap() {
            "videoroom-event" if e["event"] == "session-state" => format!("state:{}", e["state"].as_str().unwrap()),
            "videoroom-event" => e["event"].as_str().unwrap().to_string(),
            "account-event" => e["event"].as_str().unwrap().to_string(),
            other => other.to_string(),
        })
        .collect()
}

/// The port of the first host candidate of `sdp`.
fn candidate_port(sdp: &str) -> u16 {
    let line = sdp.lines().find(|l| l.starts_with("a=candidate:")).expect("a candidate");
    line.split(' ').nth(5).unwrap().parse().unwrap()
}

/// A room whose home is worker `w` of two.
fn room_on(w: usize) -> String {
    (0..).map(|i| format!("room{i}@videoconference.example.com")).find(|r| home_of(r, 2) == w).unwrap()
}

#[test]
fn a_room_split_over_two_workers_is_one_room() {
    let mut sim = Workers::new();
    let home = home_of(ROOM, 2);
    let away = 1 - home;
    // alice and carol are on the worker that is not the room's home, bob on the home.
    let placement = [away, home, away];
    let home_port = 40000 + home as u16;
    for (i, worker) in placement.into_iter().enumerate() {
        let events = sim.join(i, worker, ROOM);
        assert_eq!(names(&events), ["state:progress", "ack", "state:accepted", "initial-publishers"], "{events:#?}");
        assert_eq!(events[3]["publishers"].as_array().unwrap().len(), i);
        let sdp = sim.accept(i, &events);
        assert_eq!(candidate_port(&sdp), home_port, "the answer is the home worker's: {sdp}");
        for j in 0..i {
            let (w, conn) = (sim.parties[j].worker, sim.parties[j].conn);
            let joined = sim.events(w, conn);
            assert_eq!(names(&joined), ["publishers-joined"]);
            assert_eq!(joined[0]["session"], format!("p{j}"));
            assert_eq!(joined[0]["publishers"][0]["id"], format!("p{i}"));
        }
    }
    assert_eq!((sim.census(home).rooms, sim.census(home).participants, sim.census(home).remotes), (1, 3, 2));
    assert_eq!((sim.census(away).rooms, sim.census(away).routes), (0, 2), "the away worker holds no room");

    // Media up for the publishers; everybody attaches the other two.
    for i in 0..3 {
        let (w, conn) = (sim.parties[i].worker, sim.parties[i].conn);
        sim.until_event(w, conn, |e| e["state"] == "established");
    }
    for i in 0..3 {
        for j in 0..3 {
            if i != j {
                let offer = sim.attach(i, j);
                assert_eq!(candidate_port(&offer), home_port, "the feed is the home worker's");
            }
        }
    }
    assert_eq!((sim.census(home).feeds, sim.census(away).routes), (6, 6));
    for i in 0..3 {
        let (w, conn) = (sim.parties[i].worker, sim.parties[i].conn);
        let mut seen = Vec::new();
        while seen.iter().filter(|e: &&Value| e["event"] == "feed-established").count() < 2 {
            seen.extend(sim.until_event(w, conn, |e| e["event"] == "feed-established"));
        }
    }
    sim.run(Duration::from_secs(2));
    // Each subscriber got audio and video of exactly its publisher, continuous sequence numbers.
    for i in 0..3 {
        for (publisher, (feed, client)) in &sim.parties[i].feeds {
            let j: u8 = publisher[1..].parse().unwrap();
            let audio: Vec<_> = client.got.iter().filter(|g| g.pt == OPUS).collect();
            let video: Vec<_> = client.got.iter().filter(|g| g.pt == VP8).collect();
            assert!(audio.len() > 40 && video.len() > 40, "{feed}: {} audio, {} video", audio.len(), video.len());
            assert!(client.got.iter().all(|g| g.payload[0] == j), "{feed} got another publisher's media");
            for w in audio.windows(2) {
                assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "{feed}: audio sequence continuous");
            }
        }
    }
    assert!(sim.parties.iter().all(|p| !p.publisher.keyframe_requests.is_empty()), "key frames asked for");

    // Chat from a remote participant reaches the others; it gets message-delivery.
    let req = json!({"sylkrtc":"videoroom-message","session":"p2","message_id":"m1","content":"hi","content_type":"text/plain"});
    assert_eq!(names(&sim.send(away, ConnId(3), req)), ["ack", "message-delivery"]);
    for (w, conn) in [(away, ConnId(1)), (home, ConnId(2))] {
        let got = sim.events(w, conn);
        assert_eq!(names(&got), ["message"]);
        assert_eq!(got[0]["sender"]["uri"], "carol@example.com");
    }
    // Raised hands reach everybody before the requester's ack, wherever they are.
    assert_eq!(
        names(&sim.send(home, ConnId(2), json!({"sylkrtc":"videoroom-toggle-hand","session":"p1"}))),
        ["raised-hands", "ack"]
    );
    for conn in [ConnId(1), ConnId(3)] {
        assert_eq!(sim.events(away, conn)[0]["raised_hands"], json!(["p1"]));
    }
    // An invitation reaches the invitee's connections on both workers, not the inviter's.
    sim.connect(home, ConnId(9), "dave@example.com");
    sim.connect(away, ConnId(9), "dave@example.com");
    let req = json!({"sylkrtc":"videoroom-invite","session":"p0","participants":["dave@example.com"]});
    assert_eq!(names(&sim.send(away, ConnId(1), req)), ["ack"]);
    for w in [home, away] {
        let got = sim.events(w, ConnId(9));
        assert_eq!(names(&got), ["conference-invite"], "worker {w}");
        assert_eq!(
            (got[0]["room"].as_str(), got[0]["originator"]["uri"].as_str()),
            (Some(ROOM), Some("alice@example.com"))
        );
    }

    // carol (remote) leaves: terminated before the ack; the others get publishers-left.
    assert_eq!(
        names(&sim.send(away, ConnId(3), json!({"sylkrtc":"videoroom-leave","session":"p2"}))),
        ["state:terminated", "ack"]
    );
    for (w, conn) in [(away, ConnId(1)), (home, ConnId(2))] {
        assert_eq!(sim.events(w, conn)[0]["publishers"], json!(["p2"]));
    }
    let (h, a) = (sim.census(home), sim.census(away));
    assert_eq!((h.participants, h.feeds, h.remotes, a.routes), (2, 2, 1, 2), "carol's sessions and feeds are gone");
    let before = sim.parties[1].feeds["p0"].1.got.len();
    sim.run(Duration::from_secs(1));
    assert!(sim.parties[1].feeds["p0"].1.got.len() > before + 20, "media goes on");

    // alice's WebSocket vanishes on the away worker: bob gets publishers-left; bob leaves and
    // both workers' tables are back to their baseline.
    sim.input(away, Input::StreamClosed { conn: ConnId(1) });
    let left = sim.events(home, ConnId(2));
    assert_eq!(names(&left), ["publishers-left"]);
    assert_eq!(left[0]["publishers"], json!(["p0"]));
    assert_eq!(sim.census(away), Census::default());
    assert_eq!(
        names(&sim.send(home, ConnId(2), json!({"sylkrtc":"videoroom-leave","session":"p1"}))),
        ["state:terminated", "ack"]
    );
    assert_eq!(sim.census(home), Census::default());
}

#[test]
fn routing_errors_and_an_unreachable_home() {
    let mut sim = Workers::new();
    let home = home_of(ROOM, 2);
    let away = 1 - home;
    let (a, b) = (ConnId(1), ConnId(2));
    let e0 = sim.join(0, away, ROOM);
    assert_eq!(names(&e0), ["state:progress", "ack", "state:accepted", "initial-publishers"]);
    let e1 = sim.join(1, home, ROOM);
    assert_eq!(Workers::answer(&e1), "ack");
    assert_eq!(names(&sim.events(away, a)), ["publishers-joined"]);

    // Session and feed ids are unique over every worker a connection uses.
    let other_room = room_on(away);
    let alice = "alice@example.com";
    let req = json!({"sylkrtc":"videoroom-join","account":alice,"session":"p0","uri":other_room,"sdp":"v=0\r\n"});
    assert_eq!(Workers::answer(&sim.send(away, a, req)), "Session ID p0 already in use");
    let req = json!({"sylkrtc":"videoroom-feed-attach","session":"p0","publisher":"p1","feed":"f1"});
    assert_eq!(names(&sim.send(away, a, req.clone())), ["ack", "feed-attached"]);
    assert_eq!(Workers::answer(&sim.send(away, a, req)), "Video room session ID f1 already in use");
    // The home's own errors come back as they are; a refused join leaves no route behind.
    let req = json!({"sylkrtc":"videoroom-join","account":alice,"session":"x","uri":ROOM,"sdp":"v=0\r\n"});
    assert!(Workers::answer(&sim.send(away, a, req)).starts_with("Invalid SDP: "));
    let req = json!({"sylkrtc":"videoroom-feed-attach","session":"p0","publisher":"p9","feed":"f9"});
    assert_eq!(Workers::answer(&sim.send(away, a, req)), "Unknown publisher room session to attach to: p9");
    assert_eq!(sim.census(away).routes, 2, "p0 and f1");
    let req = json!({"sylkrtc":"videoroom-feed-detach","session":"p0","feed":"f1"});
    assert_eq!(names(&sim.send(away, a, req)), ["ack"]);
    assert_eq!((sim.census(away).routes, sim.census(home).feeds), (1, 0));
    // A session this connection has nowhere is answered where it is.
    let req = json!({"sylkrtc":"videoroom-leave","session":"nope"});
    assert_eq!(Workers::answer(&sim.send(away, a, req)), "Unknown room session: nope");
    // configure from the home reaches the remote participant before the ack.
    let req = json!({"sylkrtc":"videoroom-configure","session":"p1","active_participants":["p0"]});
    assert_eq!(names(&sim.send(home, b, req)), ["configure", "ack"]);
    assert_eq!(sim.events(away, a)[0]["active_participants"], json!(["p0"]));

    // The home worker is gone: requests are answered with an error at once, never left hanging.
    sim.down = Some(home);
    let req = json!({"sylkrtc":"videoroom-mute-audio-participants","session":"p0"});
    assert_eq!(Workers::answer(&sim.send(away, a, req)), "Room unavailable, try again later");
    sim.connect(away, ConnId(3), "carol@example.com");
    let req =
        json!({"sylkrtc":"videoroom-join","account":"carol@example.com","session":"p2","uri":ROOM,"sdp":"v=0\r\n"});
    assert_eq!(Workers::answer(&sim.send(away, ConnId(3), req)), "Room unavailable, try again later");
    assert_eq!(sim.census(away).routes, 1, "the refused join left no route");
    // The home misses events it could not deliver: the remote participant leaves there.
    sim.down = Some(away);
    sim.input(home, Input::StreamClosed { conn: b });
    assert_eq!(sim.census(home), Census::default(), "alice left when her publishers-left was lost");
    sim.down = None;
    sim.input(away, Input::StreamClosed { conn: a });
    sim.input(away, Input::StreamClosed { conn: ConnId(3) });
    assert_eq!(sim.census(away), Census::default());

    // Both workers' captures replay, messages between them included.
    for (w, name) in [(home, "home"), (away, "origin")] {
        let text = sim.nets[w].take_capture();
        assert!(text.contains(" worker:") && text.contains(" failed "), "{name}: messages are recorded");
        let cap = capture::parse(&text).expect("the capture parses");
        let got = capture::replay(&cap, Instant::now()).expect("replay");
        assert_eq!(capture::mask_media(&text), capture::mask_media(&got), "the {name} capture replays");
        if std::env::var_os("WRITE_CAPTURES").is_some() {
            let file = format!("captures/conference_workers_{name}.cap");
            std::fs::write(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file), text).unwrap();
        }
    }
    // A message is one JSON line either way.
    let msg = WorkerMsg::Gone { conn: 1 };
    assert_eq!(WorkerMsg::decode(&msg.encode()), Ok(msg));
}

/// A sylkRTC-1 participant whose WebSocket is not on the room's home worker is answered as 4.1
/// answered (issue #16): the ack before its session's `progress`, events in 4.1's shape, errors in
/// 4.1's words; the home knows the dialect from the forwarded request, not from a connection.
#[test]
fn a_sylkrtc1_participant_on_another_worker_gets_4_1_order() {
    let mut sim = Workers::new();
    let away = 1 - home_of(ROOM, 2);
    let conn = ConnId(1);
    sim.nets[away].conns.insert(conn, Ws::default());
    sim.input(away, Input::Accepted { conn, listener: Listener::Web, peer: addr("127.0.0.1:61000") });
    let upgrade = UPGRADE_V2.replace("sylkRTC-2", "sylkRTC-1");
    sim.input(away, Input::StreamData { conn, data: upgrade.as_bytes() });
    assert_eq!(sim.events(away, conn), [json!({"sylkrtc":"event","event":"ready"})]);
    let add = json!({"sylkrtc":"account-add","account":"alice@example.com","password":HA1,"display_name":"alice"});
    assert_eq!(Workers::answer(&sim.send(away, conn, add)), "ack");
    let now = sim.nets[away].now;
    let mut publisher = WebRtcClient::new(config(Video::Vp8, false), None, now, addr("127.0.0.1:51000")).unwrap();
    let offer = publisher.sendonly_offer();
    let join = json!({"sylkrtc":"videoroom-join","account":"alice@example.com","session":"c1","uri":ROOM,"sdp":offer});
    let events = sim.send(away, conn, join);
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match (e["sylkrtc"].as_str().unwrap(), e["data"]["state"].as_str()) {
            ("videoroom_event", Some(state)) => format!("state:{state}"),
            ("videoroom_event", None) => e["event"].as_str().unwrap().to_string(),
            (other, _) => other.to_string(),
        })
        .collect();
    assert_eq!(kinds, ["ack", "state:progress", "state:accepted", "initial_publishers"], "{events:#?}");
    // A 4.1 error text for an option of `videoroom-ctl`, from the home.
    let ctl =
        json!({"sylkrtc":"videoroom-ctl","session":"c1","option":"feed-detach","feed_detach":{"session":"nobody"}});
    let error = Workers::answer(&sim.send(away, conn, ctl));
    assert!(error.starts_with("feed-detach: "), "{error}");
    // A refusal of the worker holding the WebSocket (its session ids are unique over workers).
    let again = json!({"sylkrtc":"videoroom-join","account":"alice@example.com","session":"c1","uri":ROOM,"sdp":"v=0"});
    assert_eq!(Workers::answer(&sim.send(away, conn, again)), "Video room session ID (c1) already in use");
}
