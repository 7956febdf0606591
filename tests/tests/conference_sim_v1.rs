//! Conferences on `sylkRTC-1` (issue #16) on the whole gateway, simulated: str0m browsers join
//! one room with 4.1's `videoroom-join`, attach each other's feeds through `videoroom-ctl`
//! (`feed-attach`, `feed-answer`, `trickle`, `update`, `feed-detach`), and the RTP each
//! subscriber receives is counted and checked against its publisher; `videoroom-terminate` and a
//! vanishing WebSocket give the others `publishers_left`. Every message is read by a model of
//! sylkrtc.js 0.9.6's `ConferenceCall` (`lib/conference.js`: which fields it reads, where it
//! would throw), so the test sees what an application on 0.9.6 would see. The signalling run
//! (every option's errors in 4.1's words, `configure-room`, `conference_invite`, a sylkRTC-2
//! participant in the same room) is also a capture (`WRITE_CAPTURES=1` writes
//! `tests/captures/v1_conference_signalling.cap`, replayed by `tests/replay.rs`).

#![allow(clippy::disallowed_methods)] // Instant::now is only the replay's epoch

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use sylkgw_core::capture;
use sylkgw_core::conference::Census;
use sylkgw_core::{ConnId, Input, Listener};
use sylkgw_kit::{client_text_frame, UPGRADE_V2};
use sylkgw_tests::gateway_sim::{addr, BindAnswer, GatewaySim, World, Ws, HA1, LATENCY};
use sylkgw_tests::webrtc_client::{config, Datagram, Video, WebRtcClient, VP8};

const ROOM: &str = "room@videoconference.example.com";
const OPUS: u8 = 111;
const NAMES: [&str; 3] = ["alice", "bob", "carol"];

// ===== sylkrtc.js 0.9.6's ConferenceCall, as a model of what it reads =====

/// A `Participant` of 0.9.6: a publisher of the room, and our subscription to it (`id`, the feed
/// id the client chose).
#[derive(Debug, Clone)]
struct Participant096 {
    /// `Participant.id` (`uuidv4()` in 0.9.6): the `feed_attach.session` of its subscription.
    id: String,
    /// `identity.uri`, `identity.displayName`.
    uri: String,
    display_name: String,
    /// `Participant.state`: `null` → `progress` (attach) → `established`.
    state: Option<String>,
}

/// What 0.9.6 tells the application, or does, on a `videoroom_event`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Told {
    /// `stateChanged` (for `accepted`: after applying `RemoteAnswer`).
    State { new: String, reason: Option<String> },
    /// `setRemoteDescription({type: 'answer', sdp: mungeSdp(data.sdp)})` of the publisher.
    RemoteAnswer(String),
    /// `participantJoined` (publisher id).
    Joined(String),
    /// `participantLeft` (publisher id).
    Left(String),
    /// `Participant._handleOffer(data.sdp)` of the participant with this publisher id.
    FeedOffer { publisher: String, sdp: String },
    /// `roomConfigured` {originator, activeParticipants (publisher ids)}.
    RoomConfigured { originator: Option<String>, active: Vec<String> },
}

/// 0.9.6's `ConferenceCall` of one account.
#[derive(Debug, Default)]
struct Conf096 {
    /// `ConferenceCall.id` (the publisher session).
    id: String,
    state: Option<String>,
    /// Participants by publisher id.
    participants: BTreeMap<String, Participant096>,
}

fn str_at(v: &Value, path: &[&str]) -> Result<String, String> {
    let mut cur = v;
    for (i, key) in path.iter().enumerate() {
        cur = cur.get(key).ok_or_else(|| format!("TypeError: `{}` is undefined", path[..=i].join(".")))?;
    }
    cur.as_str().map(String::from).ok_or_else(|| format!("`{}` is not a string: {cur}", path.join(".")))
}

/// `for (let p of <path>)`: throws unless an array.
fn array_at<'a>(v: &'a Value, path: &[&str]) -> Result<&'a Vec<Value>, String> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key).ok_or_else(|| format!("TypeError: `{}` is not iterable", path.join(".")))?;
    }
    cur.as_array().ok_or_else(|| format!("TypeError: `{}` is not iterable", path.join(".")))
}

impl Conf096 {
    fn new(id: &str) -> Self {
        Self { id: id.into(), ..Self::default() }
    }

    /// The participant whose subscription is `feed` (0.9.6 maps both ids to it).
    fn by_feed(&mut self, feed: &str) -> Option<(&String, &mut Participant096)> {
        self.participants.iter_mut().find(|(_, p)| p.id == feed)
    }

    fn add(&mut self, p: &Value) -> Result<String, String> {
        let id = str_at(p, &["id"])?;
        let (uri, display_name) = (str_at(p, &["uri"])?, str_at(p, &["display_name"])?);
        let participant = Participant096 { id: format!("{}~{id}", self.id), uri, display_name, state: None };
        self.participants.insert(id.clone(), participant);
        Ok(id)
    }

    /// `connection.js` `_onMessage` for `videoroom_event` + `ConferenceCall._handleEvent`.
    fn read(&mut self, msg: &Value) -> Result<Vec<Told>, String> {
        if msg["sylkrtc"] != "videoroom_event" || msg["session"] != self.id.as_str() {
            return Ok(Vec::new());
        }
        let mut told = Vec::new();
        match msg["event"].as_str().unwrap_or_default() {
            "state" => {
                let new = str_at(msg, &["data", "state"])?;
                self.state = Some(new.clone());
                if new == "accepted" {
                    told.push(Told::RemoteAnswer(str_at(msg, &["data", "sdp"]).map_err(|e| format!("mungeSdp: {e}"))?));
                }
                let reason = msg["data"].get("reason").and_then(Value::as_str).map(String::from);
                told.push(Told::State { new, reason });
            }
            "initial_publishers" => {
                for p in array_at(msg, &["data", "publishers"])? {
                    self.add(p)?;
                }
            }
            "publishers_joined" => {
                for p in array_at(msg, &["data", "publishers"])? {
                    told.push(Told::Joined(self.add(p)?));
                }
            }
            "publishers_left" => {
                for id in array_at(msg, &["data", "publishers"])? {
                    let id = id.as_str().unwrap_or_default();
                    if self.participants.remove(id).is_some() {
                        told.push(Told::Left(id.into()));
                    }
                }
            }
            "feed_attached" => {
                let feed = str_at(msg, &["data", "subscription"])?;
                if let Some((publisher, _)) = self.by_feed(&feed) {
                    let publisher = publisher.clone();
                    told.push(Told::FeedOffer { publisher, sdp: str_at(msg, &["data", "sdp"])? });
                }
            }
            "feed_established" => {
                let feed = str_at(msg, &["data", "subscription"])?;
                if let Some((_, p)) = self.by_feed(&feed) {
                    p.state = Some("established".into());
                }
            }
            // Flat, as 2017 master sent it.
            "configure-room" => {
                let originator = msg.get("originator").and_then(Value::as_str).map(String::from);
                let active = array_at(msg, &["active_participants"])?;
                let active = active.iter().filter_map(|a| a.as_str().map(String::from)).collect();
                told.push(Told::RoomConfigured { originator, active });
            }
            _ => {}
        }
        Ok(told)
    }

    fn ctl(&self, session: &str, option: &str, body: Value) -> Value {
        let mut req = json!({"sylkrtc":"videoroom-ctl","session":session,"option":option});
        req[option.replace('-', "_")] = body;
        req
    }

    /// `Participant.attach()` → `_sendAttach`.
    fn attach(&mut self, publisher: &str) -> Value {
        let p = self.participants.get_mut(publisher).expect("a known participant");
        p.state = Some("progress".into());
        let body = json!({"session": p.id, "publisher": publisher});
        self.ctl(&self.id, "feed-attach", body)
    }

    /// `Participant._sendAnswer`.
    fn answer(&self, publisher: &str, sdp: &str) -> Value {
        self.ctl(&self.id, "feed-answer", json!({"session": self.participants[publisher].id, "sdp": sdp}))
    }

    /// `Participant._sendTrickle` (`Some(publisher)`) or `ConferenceCall._sendTrickle`.
    fn trickle(&self, publisher: Option<&str>, candidates: Value) -> Value {
        match publisher {
            Some(p) => {
                self.ctl(&self.id, "trickle", json!({"session": self.participants[p].id, "candidates": candidates}))
            }
            None => self.ctl(&self.id, "trickle", json!({"candidates": candidates})),
        }
    }

    /// `Participant.pauseVideo()` / `resumeVideo()`: `session` is the participant's id.
    fn video(&self, publisher: &str, on: bool) -> Value {
        self.ctl(&self.participants[publisher].id, "update", json!({"video": on}))
    }
}

// ===== The world =====

/// One participant: its WebSocket, 0.9.6 model and PeerConnections.
struct Party {
    conn: ConnId,
    conf: Conf096,
    publisher: WebRtcClient,
    /// Subscriber PeerConnections by the publisher id they receive.
    feeds: BTreeMap<String, WebRtcClient>,
    told: Vec<Told>,
    seq: u64,
}

struct Conf {
    net: GatewaySim,
    parties: Vec<Party>,
}

impl World for Conf {
    fn parts(&mut self) -> (&mut GatewaySim, Vec<&mut WebRtcClient>) {
        let mut clients = Vec::new();
        for p in &mut self.parties {
            clients.push(&mut p.publisher);
            clients.extend(p.feeds.values_mut());
        }
        (&mut self.net, clients)
    }

    /// Each connected publisher sends Opus and VP8 whose payloads start with its index.
    fn media_tick(&mut self) {
        let now = self.net.now;
        for (i, p) in self.parties.iter_mut().enumerate() {
            if !p.publisher.connected {
                continue;
            }
            p.seq += 1;
            p.publisher.publish_marked(now, (i as u8, p.seq), LATENCY, &mut self.net.wire);
        }
    }

    fn deliver(&mut self, d: Datagram) {
        self.deliver_to_browsers(d);
    }
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

/// `ack`, `error`, `state:<state>` or the event name of each message, in order.
fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| match (e["sylkrtc"].as_str().unwrap(), e["event"].as_str()) {
            ("videoroom_event", Some("state")) => format!("state:{}", e["data"]["state"].as_str().unwrap()),
            (_, Some(event)) => event.to_string(),
            (kind, None) => kind.to_string(),
        })
        .collect()
}

impl Conf {
    fn new() -> Self {
        Self { net: GatewaySim::new([16; 32], BindAnswer::AtOnce, |_| {}), parties: Vec::new() }
    }

    /// Opens WebSocket `conn` with `sylkRTC-1` and checks its `ready`.
    fn open_v1(&mut self, conn: ConnId) {
        self.net.conns.insert(conn, Ws::default());
        self.net.input(Input::Accepted { conn, listener: Listener::Web, peer: addr("127.0.0.1:61000") });
        let upgrade = UPGRADE_V2.replace("sylkRTC-2", "sylkRTC-1");
        self.net.input(Input::StreamData { conn, data: upgrade.as_bytes() });
        assert_eq!(self.net.take_events(conn), [json!({"sylkrtc":"event","event":"ready"})]);
    }

    /// Sends `req` on `conn`; returns every message that came on `conn`, its answer included.
    fn send(&mut self, conn: ConnId, mut req: Value) -> Vec<Value> {
        let t = self.net.next_transaction(conn);
        req["transaction"] = Value::String(t.to_string());
        let frame = client_text_frame(&req.to_string());
        self.net.input(Input::StreamData { conn, data: &frame });
        self.net.take_events(conn)
    }

    /// Party `i`'s model reads `events`; a message 0.9.6 would throw on fails the test.
    fn read(&mut self, i: usize, events: &[Value]) {
        let p = &mut self.parties[i];
        for e in events {
            let told = p.conf.read(e).unwrap_or_else(|err| panic!("sylkrtc.js 0.9.6 throws on {e}: {err}"));
            p.told.extend(told);
        }
    }

    /// The events that came to party `i` meanwhile, read by its model.
    fn take(&mut self, i: usize) -> Vec<Value> {
        let events = self.net.take_events(self.parties[i].conn);
        self.read(i, &events);
        events
    }

    /// Connection `i` + 1 opens with sylkRTC-1, adds its account and joins the room.
    fn join(&mut self, i: usize) -> Vec<Value> {
        let conn = ConnId(i as u64 + 1);
        self.open_v1(conn);
        let account = format!("{}@example.com", NAMES[i]);
        let add = json!({"sylkrtc":"account-add","account":account,"password":HA1,"display_name":NAMES[i]});
        assert_eq!(answer(&self.send(conn, add)), "ack");
        let now = self.net.now;
        let local = addr(&format!("127.0.0.1:{}", 52000 + 100 * i));
        let mut publisher = WebRtcClient::new(config(Video::Vp8, false), None, now, local).unwrap();
        let offer = publisher.sendonly_offer();
        let conf = Conf096::new(&format!("conf-{i}"));
        let req = json!({"sylkrtc":"videoroom-join","account":account,"session":conf.id,"uri":ROOM,"sdp":offer});
        self.parties.push(Party { conn, conf, publisher, feeds: BTreeMap::new(), told: Vec::new(), seq: 0 });
        let events = self.send(conn, req);
        self.read(i, &events);
        // 0.9.6 applies the answer (a join refused leaves the application told nothing).
        let told = std::mem::take(&mut self.parties[i].told);
        if let [Told::State { new: progress, .. }, Told::RemoteAnswer(sdp), Told::State { new: accepted, .. }] =
            &told[..]
        {
            assert_eq!((progress.as_str(), accepted.as_str()), ("progress", "accepted"));
            self.parties[i].publisher.accept_answer(sdp).unwrap();
        } else {
            assert!(told.is_empty(), "{told:?}");
        }
        events
    }

    /// Party `i` attaches party `j`'s publisher the way 0.9.6 does and answers the offer.
    fn attach(&mut self, i: usize, j: usize) {
        let conn = self.parties[i].conn;
        let publisher = self.parties[j].conf.id.clone();
        let req = self.parties[i].conf.attach(&publisher);
        let events = self.send(conn, req);
        assert_eq!(names(&events), ["ack", "feed_attached"], "{events:#?}");
        self.read(i, &events);
        let told = std::mem::take(&mut self.parties[i].told);
        let Some(Told::FeedOffer { sdp, .. }) =
            told.iter().find(|t| matches!(t, Told::FeedOffer { publisher: p, .. } if *p == publisher))
        else {
            panic!("no offer for {publisher}: {told:?}");
        };
        let now = self.net.now;
        let port = 52000 + 100 * i + 1 + j;
        let mut client =
            WebRtcClient::new(config(Video::Vp8, false), None, now, addr(&format!("127.0.0.1:{port}"))).unwrap();
        let sdp_answer = client.answer(sdp, true);
        let req = self.parties[i].conf.answer(&publisher, &sdp_answer);
        assert_eq!(names(&self.send(conn, req)), ["ack"]);
        // The subscriber's candidate, trickled with the feed's id; then the end of candidates.
        let candidate = format!("candidate:1 1 udp 2122194687 127.0.0.1 {port} typ host");
        let req = self.parties[i]
            .conf
            .trickle(Some(&publisher), json!([{"candidate":candidate,"sdpMid":"0","sdpMLineIndex":0}]));
        assert_eq!(names(&self.send(conn, req)), ["ack"]);
        let req = self.parties[i].conf.trickle(Some(&publisher), json!([]));
        assert_eq!(names(&self.send(conn, req)), ["ack"]);
        self.parties[i].feeds.insert(publisher, client);
    }

    fn census(&self) -> Census {
        self.net.gw.conference_census()
    }
}

#[test]
fn three_v1_parties_hear_and_see_each_other_through_videoroom_ctl() {
    let mut sim = Conf::new();
    // 4.1's order: the ack, then progress; then (Janus `joined`) accepted and initial_publishers.
    let first = sim.join(0);
    assert_eq!(names(&first), ["ack", "state:progress", "state:accepted", "initial_publishers"]);
    assert_eq!(first[3]["data"], json!({"publishers": []}));
    let sdp = first[2]["data"]["sdp"].as_str().unwrap();
    assert!(sdp.contains("a=candidate:") && sdp.contains("a=recvonly"), "{sdp}");
    for i in 1..3 {
        let events = sim.join(i);
        assert_eq!(names(&events), ["ack", "state:progress", "state:accepted", "initial_publishers"]);
        let initial = &events[3]["data"]["publishers"];
        assert_eq!(initial.as_array().unwrap().len(), i);
        assert_eq!(initial[0], json!({"id":"conf-0","uri":"alice@example.com","display_name":"alice"}));
        assert_eq!(sim.parties[i].conf.participants.len(), i, "0.9.6 holds the participants already there");
        for j in 0..i {
            let joined = sim.take(j);
            assert_eq!(names(&joined), ["publishers_joined"]);
            assert_eq!(joined[0]["session"], format!("conf-{j}"));
            let told = std::mem::take(&mut sim.parties[j].told);
            assert_eq!(told, [Told::Joined(format!("conf-{i}"))]);
        }
    }
    assert_eq!(sim.parties[2].conf.participants["conf-1"].uri, "bob@example.com");
    assert_eq!(sim.parties[2].conf.participants["conf-1"].display_name, "bob");
    // The publisher's end of candidates (0.9.6 trickles without `trickle.session`).
    let req = sim.parties[0].conf.trickle(None, json!([]));
    assert_eq!(names(&sim.send(ConnId(1), req)), ["ack"]);
    // Media up for the publishers: `established`.
    for i in 0..3 {
        let conn = sim.parties[i].conn;
        let events = sim.until_event(conn, Duration::from_secs(5), |e| e["data"]["state"] == "established");
        sim.read(i, &events);
        assert_eq!(sim.parties[i].conf.state.as_deref(), Some("established"));
    }
    // Everybody attaches the other two through videoroom-ctl.
    for i in 0..3 {
        for j in (0..3).filter(|j| *j != i) {
            sim.attach(i, j);
        }
    }
    assert_eq!(sim.census().feeds, 6);
    for i in 0..3 {
        let conn = sim.parties[i].conn;
        let mut seen = Vec::new();
        while seen.iter().filter(|e: &&Value| e["event"] == "feed_established").count() < 2 {
            seen.extend(sim.until_event(conn, Duration::from_secs(5), |e| e["event"] == "feed_established"));
        }
        sim.read(i, &seen);
        for p in sim.parties[i].conf.participants.values() {
            assert_eq!(p.state.as_deref(), Some("established"), "0.9.6's participant {} of {i}", p.uri);
        }
        sim.parties[i].told.clear();
    }
    sim.run(Duration::from_secs(2));
    // Each subscriber got audio and video of exactly its publisher.
    for i in 0..3 {
        for (publisher, client) in &sim.parties[i].feeds {
            let j: u8 = publisher["conf-".len()..].parse().unwrap();
            let audio = client.got.iter().filter(|g| g.pt == OPUS).count();
            let video = client.got.iter().filter(|g| g.pt == VP8).count();
            assert!(audio > 40 && video > 40, "{i} of {publisher}: {audio} audio, {video} video");
            assert!(client.got.iter().all(|g| g.payload[0] == j), "{i} got another publisher's media for {publisher}");
        }
    }
    // 0.9.6's `pauseVideo()` of a participant: `update` on the feed's id; video stops, audio goes
    // on; `resumeVideo()` brings it back.
    let req = sim.parties[0].conf.video("conf-1", false);
    assert_eq!(names(&sim.send(ConnId(1), req)), ["ack"]);
    sim.run(Duration::from_millis(200));
    let count = |sim: &Conf, pt: u8| sim.parties[0].feeds["conf-1"].got.iter().filter(|g| g.pt == pt).count();
    let (audio0, video0) = (count(&sim, OPUS), count(&sim, VP8));
    sim.run(Duration::from_secs(1));
    assert_eq!(count(&sim, VP8), video0, "no video while paused");
    assert!(count(&sim, OPUS) > audio0 + 20, "audio goes on");
    let req = sim.parties[0].conf.video("conf-1", true);
    assert_eq!(names(&sim.send(ConnId(1), req)), ["ack"]);
    sim.run(Duration::from_secs(1));
    assert!(count(&sim, VP8) > video0 + 20, "video again");

    // carol terminates: the ack, then `terminated` (4.1's order); the others get publishers_left
    // and 0.9.6 tells them participantLeft.
    let req = json!({"sylkrtc":"videoroom-terminate","session":"conf-2"});
    let events = sim.send(sim.parties[2].conn, req);
    assert_eq!(names(&events), ["ack", "state:terminated"]);
    sim.read(2, &events);
    assert!(sim.parties[2].told.contains(&Told::State { new: "terminated".into(), reason: None }));
    for i in 0..2 {
        let left = sim.take(i);
        assert_eq!(
            left,
            [
                json!({"sylkrtc":"videoroom_event","session":format!("conf-{i}"),"event":"publishers_left","data":{"publishers":["conf-2"]}})
            ]
        );
        assert_eq!(std::mem::take(&mut sim.parties[i].told), [Told::Left("conf-2".into())]);
        sim.parties[i].feeds.remove("conf-2");
    }
    let c = sim.census();
    assert_eq!((c.rooms, c.participants, c.feeds), (1, 2, 2), "carol's feeds and the feeds of her are gone");
    let before = sim.parties[0].feeds["conf-1"].got.len();
    sim.run(Duration::from_secs(1));
    assert!(sim.parties[0].feeds["conf-1"].got.len() > before + 20, "media goes on between the two left");

    // alice detaches bob's feed (`feed-detach` with the feed's id), then bob's WebSocket
    // vanishes: alice gets publishers_left; alice terminates and every table is at its baseline.
    let feed = sim.parties[0].conf.participants["conf-1"].id.clone();
    let req =
        json!({"sylkrtc":"videoroom-ctl","session":"conf-0","option":"feed-detach","feed_detach":{"session":feed}});
    assert_eq!(names(&sim.send(ConnId(1), req)), ["ack"]);
    assert_eq!(sim.census().feeds, 1);
    sim.net.input(Input::StreamClosed { conn: ConnId(2) });
    assert_eq!(names(&sim.take(0)), ["publishers_left"]);
    let events = sim.send(ConnId(1), json!({"sylkrtc":"videoroom-terminate","session":"conf-0"}));
    assert_eq!(names(&events), ["ack", "state:terminated"]);
    sim.net.input(Input::StreamClosed { conn: ConnId(3) });
    assert_eq!(sim.census(), Census::default());
}

#[test]
fn signalling_in_4_1_shapes_and_words() {
    let mut sim = Conf::new();
    let (a, b) = (ConnId(1), ConnId(2));
    sim.join(0);
    sim.join(1);
    sim.take(0);
    sim.parties[0].told.clear();
    let ctl = |session: &str, option: &str, body: Value| {
        let mut req = json!({"sylkrtc":"videoroom-ctl","session":session,"option":option});
        req[option.replace('-', "_")] = body;
        req
    };
    // Errors, in 4.1's words (2017 master's for `update` and `configure-room`).
    let join = |account: &str, session: &str| json!({"sylkrtc":"videoroom-join","account":account,"session":session,"uri":ROOM,"sdp":"v=0\r\n"});
    let cases = [
        (join("bob@example.com", "conf-1"), "Video room session ID (conf-1) already in use"),
        (join("dave@example.com", "x"), "Unknown account specified: dave@example.com"),
        (json!({"sylkrtc":"videoroom-terminate","session":"nope"}), "Unknown video room session ID specified: nope"),
        (ctl("nope", "trickle", json!({"candidates":[]})), "trickle: unknown video room session ID specified: nope"),
        (
            ctl("conf-1", "trickle", json!({"session":"f9","candidates":[]})),
            "trickle: unknown video room session ID specified: f9",
        ),
        (
            ctl("nope", "feed-attach", json!({"session":"f","publisher":"conf-0"})),
            "feed-attach: unknown video room session ID specified: nope",
        ),
        (
            ctl("conf-1", "feed-attach", json!({"session":"f","publisher":"conf-9"})),
            "feed-attach: unknown publisher video room session ID specified: conf-9",
        ),
        (
            ctl("conf-1", "feed-attach", json!({"session":"conf-1","publisher":"conf-0"})),
            "feed-attach: video room session ID (conf-1) already in use",
        ),
        (
            ctl("conf-1", "feed-answer", json!({"session":"f","sdp":"v=0"})),
            "feed-answer: unknown video room session ID specified: f",
        ),
        (
            ctl("conf-1", "feed-detach", json!({"session":"f"})),
            "feed-detach: unknown video room session ID specified: f",
        ),
        (
            ctl("nope", "invite-participants", json!({"participants":[]})),
            "invite-participants: unknown video room session ID specified: nope",
        ),
        (ctl("nope", "update", json!({"video":false})), "update: unknown video room session: nope"),
        (
            ctl("conf-1", "configure-room", json!({"active_participants":["conf-0","zz"]})),
            "configure-room: unknown participant session id: zz",
        ),
        (
            json!({"sylkrtc":"videoroom-ctl","session":"conf-1","option":"feed-attach"}),
            "missing 'feed_attach' field in request",
        ),
        (json!({"sylkrtc":"videoroom-leave","session":"conf-1"}), "Unknown request type: videoroom-leave"),
    ];
    for (req, want) in cases {
        let events = sim.send(b, req.clone());
        assert_eq!(answer(&events), want, "{req}");
        assert_eq!(events.len(), 1, "{events:?}");
    }
    assert_eq!(sim.census().rooms, 1);

    // A feed attached and detached again; detaching another connection's feed is refused.
    let events = sim.send(b, ctl("conf-1", "feed-attach", json!({"session":"f1","publisher":"conf-0"})));
    assert_eq!(names(&events), ["ack", "feed_attached"]);
    assert_eq!(events[1]["data"]["subscription"], "f1");
    assert_eq!(
        answer(&sim.send(a, ctl("conf-0", "feed-detach", json!({"session":"f1"})))),
        "feed-detach: unknown video room session ID specified: f1"
    );
    assert_eq!(names(&sim.send(b, ctl("conf-1", "feed-detach", json!({"session":"f1"})))), ["ack"]);
    assert_eq!(sim.census().feeds, 0);

    // configure-room reaches everybody (flat, as 0.9.6 reads it) before the ack.
    let events = sim.send(b, ctl("conf-1", "configure-room", json!({"active_participants":["conf-0"]})));
    assert_eq!(names(&events), ["configure-room", "ack"]);
    sim.read(1, &events);
    let configured = Told::RoomConfigured { originator: Some("conf-1".into()), active: vec!["conf-0".into()] };
    assert!(sim.parties[1].told.contains(&configured));
    let other = sim.take(0);
    assert_eq!(
        other,
        [
            json!({"sylkrtc":"videoroom_event","event":"configure-room","session":"conf-0","originator":"conf-1","active_participants":["conf-0"]})
        ]
    );
    assert_eq!(std::mem::take(&mut sim.parties[0].told), [configured]);
    sim.parties[1].told.clear();

    // A sylkRTC-2 participant in the same room: each side hears of the other in its own dialect.
    let c = ConnId(3);
    sim.net.open_ws(c);
    let add = json!({"sylkrtc":"account-add","account":"carol@example.com","password":HA1});
    assert_eq!(answer(&sim.send(c, add)), "ack");
    let now = sim.net.now;
    let mut carol = WebRtcClient::new(config(Video::Vp8, false), None, now, addr("127.0.0.1:52300")).unwrap();
    let offer = carol.sendonly_offer();
    let req = json!({"sylkrtc":"videoroom-join","account":"carol@example.com","session":"v2","uri":ROOM,"sdp":offer});
    let events = sim.send(c, req);
    let v2: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap_or(e["sylkrtc"].as_str().unwrap())).collect();
    assert_eq!(v2, ["session-state", "ack", "session-state", "initial-publishers", "configure"]);
    for i in 0..2 {
        let joined = sim.take(i);
        assert_eq!(joined[0]["data"]["publishers"][0], json!({"id":"v2","uri":"carol@example.com","display_name":""}));
        assert_eq!(std::mem::take(&mut sim.parties[i].told), [Told::Joined("v2".into())]);
    }

    // invite-participants: 4.1's conference_invite to the invitee's other connections (here a
    // sylkRTC-1 one and a sylkRTC-2 one), not to the inviter's.
    sim.open_v1(ConnId(9));
    let add = json!({"sylkrtc":"account-add","account":"dave@example.com","password":HA1});
    assert_eq!(answer(&sim.send(ConnId(9), add)), "ack");
    let add = json!({"sylkrtc":"account-add","account":"dave@example.com","password":HA1});
    assert_eq!(answer(&sim.send(c, add)), "ack");
    let req = ctl("conf-0", "invite-participants", json!({"participants":["sip:dave@example.com"]}));
    assert_eq!(names(&sim.send(a, req)), ["ack"]);
    assert_eq!(
        sim.net.take_events(ConnId(9)),
        [
            json!({"sylkrtc":"account_event","account":"dave@example.com","event":"conference_invite","data":{"originator":{"uri":"alice@example.com","display_name":"alice"},"room":ROOM}})
        ]
    );
    let v2 = sim.net.take_events(c);
    assert_eq!((v2[0]["event"].as_str(), v2[0]["room"].as_str()), (Some("conference-invite"), Some(ROOM)));

    // alice, the active speaker, terminates: bob gets publishers_left, then configure-room from
    // the room.
    let events = sim.send(a, json!({"sylkrtc":"videoroom-terminate","session":"conf-0"}));
    assert_eq!(names(&events), ["ack", "state:terminated"]);
    let events = sim.take(1);
    assert_eq!(names(&events), ["publishers_left", "configure-room"]);
    assert_eq!(events[1]["originator"], "videoroom");
    for conn in [b, c, ConnId(9)] {
        sim.net.input(Input::StreamClosed { conn });
    }
    sim.net.input(Input::StreamClosed { conn: a });
    assert_eq!(sim.census(), Census::default());

    // The capture replays (no media ran: the signalling alone).
    let text = sim.net.take_capture();
    let cap = capture::parse(&text).expect("the capture parses");
    let got = capture::replay(&cap, Instant::now()).expect("replay");
    assert_eq!(capture::mask_media(&text), capture::mask_media(&got), "the capture replays");
    if std::env::var_os("WRITE_CAPTURES").is_some() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/v1_conference_signalling.cap");
        std::fs::write(path, text).unwrap();
    }
}
