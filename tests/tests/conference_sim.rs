//! Conferences (issue #13) on the whole gateway, simulated: str0m browsers publish into one room
//! through `videoroom-join`, attach each other's feeds, and the RTP each subscriber receives is
//! counted and checked against its publisher; leaving, a vanishing WebSocket, and the signalling
//! requests (configure, mute, hands, chat, invite, access policy) with their events in
//! SylkServer's order. The signalling run is also a capture (`WRITE_CAPTURES=1` writes
//! `tests/captures/conference_signalling.cap`, replayed by `tests/replay.rs`).

#![allow(clippy::disallowed_methods)] // Instant::now is only the replay's epoch

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use sylkgw_core::capture;
use sylkgw_core::conference::limits::RoomConfig;
use sylkgw_core::conference::Census;
use sylkgw_core::{ConnId, Input};
use sylkgw_kit::client_text_frame;
use sylkgw_tests::gateway_sim::{addr, BindAnswer, GatewaySim, World, HA1, LATENCY};
use sylkgw_tests::webrtc_client::{config, Datagram, Video, WebRtcClient, VP8};

const ROOM: &str = "room@videoconference.example.com";
const OPUS: u8 = 111;
const NAMES: [&str; 3] = ["alice", "bob", "carol"];

/// One participant: its WebSocket, publisher session and PeerConnections.
struct Party {
    conn: ConnId,
    session: String,
    publisher: WebRtcClient,
    /// Feeds by the publisher session they receive: (feed id, subscriber PeerConnection).
    feeds: BTreeMap<String, (String, WebRtcClient)>,
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
            clients.extend(p.feeds.values_mut().map(|(_, c)| c));
        }
        (&mut self.net, clients)
    }

    /// Each connected publisher sends an Opus packet and a VP8 packet whose payloads start with
    /// its index, so a subscriber can tell whose media it got.
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

impl Conf {
    fn new(tweak: impl FnOnce(&mut sylkgw_core::Config)) -> Self {
        Self { net: GatewaySim::new([13; 32], BindAnswer::AtOnce, tweak), parties: Vec::new() }
    }

    /// Sends `req` on `conn` and returns every event that came on `conn`, its answer included.
    fn send(&mut self, conn: ConnId, mut req: Value) -> Vec<Value> {
        let t = self.net.next_transaction(conn);
        req["transaction"] = Value::String(t.to_string());
        let frame = client_text_frame(&req.to_string());
        self.net.input(Input::StreamData { conn, data: &frame });
        self.net.take_events(conn)
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

    /// Connection `i` + 1 opens, adds its account and joins the room with a publisher.
    fn join(&mut self, i: usize) -> Vec<Value> {
        let conn = ConnId(i as u64 + 1);
        self.net.open_ws(conn);
        let account = format!("{}@example.com", NAMES[i]);
        let add = json!({"sylkrtc":"account-add","account":account,"password":HA1,"display_name":NAMES[i]});
        assert_eq!(Self::answer(&self.send(conn, add)), "ack");
        let now = self.net.now;
        let mut publisher =
            WebRtcClient::new(config(Video::Vp8, false), None, now, addr(&format!("127.0.0.1:{}", 51000 + 100 * i)))
                .unwrap();
        let offer = publisher.sendonly_offer();
        let session = format!("p{i}");
        let req = json!({"sylkrtc":"videoroom-join","account":account,"session":session,"uri":ROOM,"sdp":offer});
        let events = self.send(conn, req);
        self.parties.push(Party { conn, session, publisher, feeds: BTreeMap::new(), seq: 0 });
        events
    }

    /// Applies the `accepted` answer of party `i`.
    fn accept(&mut self, i: usize, events: &[Value]) {
        let accepted = events.iter().find(|e| e["state"] == "accepted").expect("accepted");
        self.parties[i].publisher.accept_answer(accepted["sdp"].as_str().unwrap()).unwrap();
    }

    /// Party `i` attaches a feed of party `j`'s publisher and answers its offer.
    fn attach(&mut self, i: usize, j: usize) {
        let (conn, session) = (self.parties[i].conn, self.parties[i].session.clone());
        let publisher = self.parties[j].session.clone();
        let feed = format!("f{i}{j}");
        let req = json!({"sylkrtc":"videoroom-feed-attach","session":session,"publisher":publisher,"feed":feed});
        let events = self.send(conn, req);
        assert_eq!(Self::answer(&events), "ack", "{events:#?}");
        let attached = events.iter().find(|e| e["event"] == "feed-attached").expect("feed-attached");
        assert_eq!(attached["session"], session.as_str());
        assert_eq!(attached["feed"], feed.as_str());
        let now = self.net.now;
        let port = 51000 + 100 * i + 1 + j;
        let mut client =
            WebRtcClient::new(config(Video::Vp8, false), None, now, addr(&format!("127.0.0.1:{port}"))).unwrap();
        let answer = client.answer(attached["sdp"].as_str().unwrap(), true);
        let req = json!({"sylkrtc":"videoroom-feed-answer","session":session,"feed":feed,"sdp":answer});
        assert_eq!(Self::answer(&self.send(conn, req)), "ack");
        self.parties[i].feeds.insert(publisher, (feed, client));
    }

    fn census(&self) -> Census {
        self.net.gw.conference_census()
    }
}

/// The `event` names of the videoroom events (and `ack`) in `events`, in order.
fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e["sylkrtc"].as_str().unwrap() {
            "videoroom-event" if e["event"] == "session-state" => format!("state:{}", e["state"].as_str().unwrap()),
            "videoroom-event" => e["event"].as_str().unwrap().to_string(),
            other => other.to_string(),
        })
        .collect()
}

#[test]
fn three_party_room_forwards_media_and_cleans_up() {
    let mut sim = Conf::new(|_| {});
    // Joining: progress before the ack, then accepted and initial-publishers (SylkServer's order).
    let first = sim.join(0);
    assert_eq!(names(&first), ["state:progress", "ack", "state:accepted", "initial-publishers"]);
    let accepted = &first[2];
    assert_eq!((accepted["audio"].as_bool(), accepted["video"].as_bool()), (Some(true), Some(true)));
    let sdp = accepted["sdp"].as_str().unwrap();
    assert!(sdp.contains("a=candidate:") && sdp.contains("a=recvonly"), "{sdp}");
    assert_eq!(first[3]["publishers"], json!([]));
    sim.accept(0, &first);
    for i in 1..3 {
        let events = sim.join(i);
        sim.accept(i, &events);
        let initial = events.iter().find(|e| e["event"] == "initial-publishers").unwrap();
        assert_eq!(initial["publishers"].as_array().unwrap().len(), i);
        assert_eq!(initial["publishers"][0], json!({"id":"p0","uri":"alice@example.com","display_name":"alice"}));
        for j in 0..i {
            let conn = sim.parties[j].conn;
            let joined = sim.net.take_events(conn);
            assert_eq!(names(&joined), ["publishers-joined"]);
            assert_eq!(joined[0]["session"], format!("p{j}"));
            assert_eq!(joined[0]["publishers"][0]["id"], format!("p{i}"));
        }
    }
    // Media up for the publishers.
    for i in 0..3 {
        let conn = sim.parties[i].conn;
        sim.until_event(conn, Duration::from_secs(5), |e| e["state"] == "established");
    }
    // Everybody attaches the other two.
    for i in 0..3 {
        for j in 0..3 {
            if i != j {
                sim.attach(i, j);
            }
        }
    }
    assert_eq!(sim.census().feeds, 6);
    for i in 0..3 {
        let conn = sim.parties[i].conn;
        let mut seen = Vec::new();
        while seen.iter().filter(|e: &&Value| e["event"] == "feed-established").count() < 2 {
            seen.extend(sim.until_event(conn, Duration::from_secs(5), |e| e["event"] == "feed-established"));
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
    // Every publisher was asked for a key frame when its subscribers came up; a subscriber's PLI
    // reaches its publisher.
    for p in &mut sim.parties {
        assert!(!p.publisher.keyframe_requests.is_empty(), "{} got no keyframe request", p.session);
        p.publisher.keyframe_requests.clear();
    }
    {
        let (_, client) = sim.parties[1].feeds.get_mut("p0").unwrap();
        let mid = client.video.unwrap();
        assert!(client.request_keyframe(mid));
        let now = sim.net.now;
        client.handle_timeout(now).unwrap();
        client.drain(now, LATENCY, &mut sim.net.wire);
    }
    sim.run(Duration::from_secs(2));
    assert!(!sim.parties[0].publisher.keyframe_requests.is_empty(), "the PLI was relayed");

    // A subscriber pauses the video of a feed (`videoroom-session-update`): its video stops,
    // audio goes on; resumed, video comes back and the publisher is asked for a key frame.
    let feed = sim.parties[0].feeds["p1"].0.clone();
    let update = |video: bool| json!({"sylkrtc":"videoroom-session-update","session":feed,"options":{"video":video}});
    assert_eq!(Conf::answer(&sim.send(ConnId(1), update(false))), "ack");
    sim.run(Duration::from_millis(200));
    let count = |sim: &Conf, pt: u8| sim.parties[0].feeds["p1"].1.got.iter().filter(|g| g.pt == pt).count();
    let (audio0, video0) = (count(&sim, OPUS), count(&sim, VP8));
    sim.run(Duration::from_secs(1));
    assert_eq!(count(&sim, VP8), video0, "no video while paused");
    assert!(count(&sim, OPUS) > audio0 + 20, "audio goes on");
    sim.parties[1].publisher.keyframe_requests.clear();
    assert_eq!(Conf::answer(&sim.send(ConnId(1), update(true))), "ack");
    sim.run(Duration::from_secs(1));
    assert!(count(&sim, VP8) > video0 + 20, "video again");
    assert!(!sim.parties[1].publisher.keyframe_requests.is_empty(), "a key frame for the resumed feed");

    // carol leaves: terminated before the ack; the others get publishers-left, their feeds end.
    let (conn, session) = (sim.parties[2].conn, sim.parties[2].session.clone());
    let events = sim.send(conn, json!({"sylkrtc":"videoroom-leave","session":session}));
    assert_eq!(names(&events), ["state:terminated", "ack"]);
    for i in 0..2 {
        let conn = sim.parties[i].conn;
        let left = sim.net.take_events(conn);
        assert_eq!(names(&left), ["publishers-left"]);
        assert_eq!(left[0]["publishers"], json!(["p2"]));
    }
    assert_eq!(
        (sim.census().rooms, sim.census().participants, sim.census().feeds),
        (1, 2, 2),
        "carol's feeds and the feeds of her are gone"
    );
    // Media keeps flowing between the two left.
    let before = sim.parties[0].feeds["p1"].1.got.len();
    sim.run(Duration::from_secs(1));
    assert!(sim.parties[0].feeds["p1"].1.got.len() > before + 20);

    // bob's WebSocket vanishes: alice gets publishers-left; then alice leaves and every table is
    // back to its baseline.
    let conn = sim.parties[1].conn;
    sim.net.input(Input::StreamClosed { conn });
    let left = sim.net.take_events(sim.parties[0].conn);
    assert_eq!(names(&left), ["publishers-left"]);
    assert_eq!(left[0]["publishers"], json!(["p1"]));
    let c = sim.census();
    assert_eq!((c.rooms, c.participants, c.feeds, c.sessions, c.demux), (1, 1, 0, 1, 1));
    let events = sim.send(sim.parties[0].conn, json!({"sylkrtc":"videoroom-leave","session":"p0"}));
    assert_eq!(names(&events), ["state:terminated", "ack"]);
    assert_eq!(sim.census(), Census::default());
}

#[test]
fn signalling_requests_and_their_events() {
    let mut sim = Conf::new(|c| {
        let mut closed = RoomConfig::for_uri("closed@videoconference.example.com");
        closed.deny = vec!["example.com".into()];
        c.conference.rooms.push(closed);
    });
    let e0 = sim.join(0);
    let e1 = sim.join(1);
    sim.accept(0, &e0);
    sim.accept(1, &e1);
    sim.net.take_events(ConnId(1));
    let (a, b) = (ConnId(1), ConnId(2));

    // Errors, with SylkServer's strings.
    let bob = "bob@example.com";
    let cases = [
        (json!({"sylkrtc":"videoroom-leave","session":"nope"}), "Unknown room session: nope"),
        (
            json!({"sylkrtc":"videoroom-join","account":bob,"session":"p1","uri":ROOM,"sdp":"v=0\r\n"}),
            "Session ID p1 already in use",
        ),
        (
            json!({"sylkrtc":"videoroom-join","account":"dave@example.com","session":"x","uri":ROOM,"sdp":"v=0\r\n"}),
            "Unknown account specified: dave@example.com",
        ),
        (
            json!({"sylkrtc":"videoroom-join","account":bob,"session":"x","uri":"closed@videoconference.example.com","sdp":"v=0\r\n"}),
            "is not allowed to join room closed@videoconference.example.com",
        ),
        (
            json!({"sylkrtc":"videoroom-feed-attach","session":"p1","publisher":"p9","feed":"f"}),
            "Unknown publisher room session to attach to: p9",
        ),
        (
            json!({"sylkrtc":"videoroom-feed-attach","session":"p1","publisher":"p0","feed":"p1"}),
            "Video room session ID p1 already in use",
        ),
        (json!({"sylkrtc":"videoroom-feed-answer","session":"p1","feed":"f","sdp":"v=0"}), "Unknown room session: f"),
        (json!({"sylkrtc":"videoroom-feed-detach","session":"p1","feed":"f"}), "Unknown room session to detach: f"),
        (
            json!({"sylkrtc":"videoroom-configure","session":"p1","active_participants":["p0","zz"]}),
            "unknown participant session id: zz",
        ),
        (json!({"sylkrtc":"videoroom-session-trickle","session":"nope","candidates":[]}), "Unknown room session: nope"),
    ];
    for (req, want) in cases {
        assert_eq!(Conf::answer(&sim.send(b, req.clone())), want, "{req}");
    }
    assert_eq!(sim.census().rooms, 1, "a refused join leaves no room behind");

    // A feed, detached again.
    let events = sim.send(b, json!({"sylkrtc":"videoroom-feed-attach","session":"p1","publisher":"p0","feed":"f1"}));
    assert_eq!(names(&events), ["ack", "feed-attached"]);
    let req = json!({"sylkrtc":"videoroom-feed-detach","session":"p0","feed":"f1"});
    assert_eq!(Conf::answer(&sim.send(a, req)), "Unknown room session to detach: f1", "another connection's feed");
    let events = sim.send(b, json!({"sylkrtc":"videoroom-feed-detach","session":"p1","feed":"f1"}));
    assert_eq!(names(&events), ["ack"]);
    assert_eq!(sim.census().feeds, 0);
    let trickle = json!({"sylkrtc":"videoroom-session-trickle","session":"p1","candidates":[
        {"candidate":"candidate:1 1 udp 2122194687 127.0.0.1 51100 typ host","sdpMid":"0","sdpMLineIndex":0}]});
    assert_eq!(Conf::answer(&sim.send(b, trickle)), "ack");

    // configure, mute-audio and raised-hands reach everybody before the requester's ack.
    let events = sim.send(b, json!({"sylkrtc":"videoroom-configure","session":"p1","active_participants":["p0"]}));
    assert_eq!(names(&events), ["configure", "ack"]);
    assert_eq!(events[0]["originator"], "p1");
    let other = sim.net.take_events(a);
    assert_eq!((other[0]["event"].as_str(), &other[0]["active_participants"]), (Some("configure"), &json!(["p0"])));
    let events = sim.send(a, json!({"sylkrtc":"videoroom-mute-audio-participants","session":"p0"}));
    assert_eq!(names(&events), ["mute-audio", "ack"]);
    assert_eq!(sim.net.take_events(b)[0]["originator"], "p0");
    let events = sim.send(b, json!({"sylkrtc":"videoroom-toggle-hand","session":"p1"}));
    assert_eq!(names(&events), ["raised-hands", "ack"]);
    assert_eq!(sim.net.take_events(a)[0]["raised_hands"], json!(["p1"]));

    // A third participant gets the room's state after initial-publishers.
    let e2 = sim.join(2);
    assert_eq!(
        names(&e2),
        ["state:progress", "ack", "state:accepted", "initial-publishers", "configure", "raised-hands"]
    );
    assert_eq!(e2[4]["originator"], "videoroom");
    let c = ConnId(3);
    sim.net.take_events(a);
    sim.net.take_events(b);

    // Chat is relayed to the others; the sender gets message-delivery.
    let req = json!({"sylkrtc":"videoroom-message","session":"p0","message_id":"m1","content":"hi","content_type":"text/plain"});
    let events = sim.send(a, req);
    assert_eq!(names(&events), ["ack", "message-delivery"]);
    assert_eq!((events[1]["message_id"].as_str(), events[1]["delivered"].as_bool()), (Some("m1"), Some(true)));
    for conn in [b, c] {
        let got = sim.net.take_events(conn);
        assert_eq!(names(&got), ["message"]);
        assert_eq!(got[0]["content"], "hi");
        assert_eq!(got[0]["sender"], json!({"uri":"alice@example.com","display_name":"alice"}));
    }
    let req = json!({"sylkrtc":"videoroom-composing-indication","session":"p0","state":"active"});
    assert_eq!(names(&sim.send(a, req)), ["ack"]);
    assert_eq!(names(&sim.net.take_events(b)), ["composing-indication"]);
    sim.net.take_events(c);

    // An invitation reaches the invitee's other connections, not the inviter's.
    sim.net.open_ws(ConnId(9));
    let add = json!({"sylkrtc":"account-add","account":"dave@example.com","password":HA1});
    assert_eq!(Conf::answer(&sim.send(ConnId(9), add)), "ack");
    let req =
        json!({"sylkrtc":"videoroom-invite","session":"p0","participants":["dave@example.com","bob@example.com"]});
    assert_eq!(names(&sim.send(a, req)), ["ack"]);
    let invite = sim.net.take_events(ConnId(9));
    assert_eq!(invite.len(), 1);
    assert_eq!(invite[0]["event"], "conference-invite");
    assert_eq!(invite[0]["room"], ROOM);
    assert_eq!(invite[0]["originator"]["uri"], "alice@example.com");
    assert_eq!(sim.net.take_events(b)[0]["account"], "bob@example.com");

    // An active speaker leaving: publishers-left, then configure from the room.
    let events = sim.send(a, json!({"sylkrtc":"videoroom-leave","session":"p0"}));
    assert_eq!(names(&events), ["state:terminated", "ack"]);
    assert_eq!(names(&sim.net.take_events(b)), ["publishers-left", "configure"]);
    sim.net.input(Input::StreamClosed { conn: b });
    sim.net.input(Input::StreamClosed { conn: c });
    assert_eq!(sim.census(), Census::default());

    // The capture replays (no media ran: the signalling alone).
    let text = sim.net.take_capture();
    let cap = capture::parse(&text).expect("the capture parses");
    let got = capture::replay(&cap, Instant::now()).expect("replay");
    assert_eq!(capture::mask_media(&text), capture::mask_media(&got), "the capture replays");
    if std::env::var_os("WRITE_CAPTURES").is_some() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/conference_signalling.cap");
        std::fs::write(path, text).unwrap();
    }
}

#[test]
fn limits_refuse_with_their_errors() {
    let mut sim = Conf::new(|c| {
        c.conference.max_rooms = 1;
        c.conference.max_participants_per_room = 1;
        c.conference.max_feeds_per_connection = 0;
    });
    let events = sim.join(0);
    assert_eq!(Conf::answer(&events), "ack");
    assert_eq!(Conf::answer(&sim.join(1)), format!("Room {ROOM} is full"));
    let other = "other@videoconference.example.com";
    let req = json!({"sylkrtc":"videoroom-join","account":"bob@example.com","session":"x","uri":other,"sdp":"v=0\r\n"});
    assert_eq!(Conf::answer(&sim.send(ConnId(2), req)), "Too many rooms");
    let req = json!({"sylkrtc":"videoroom-feed-attach","session":"p0","publisher":"p0","feed":"f"});
    assert_eq!(Conf::answer(&sim.send(ConnId(1), req)), "Too many feeds on this connection");
    // A join whose offer cannot be used leaves nothing behind.
    let req = json!({"sylkrtc":"videoroom-leave","session":"p0"});
    assert_eq!(Conf::answer(&sim.send(ConnId(1), req)), "ack");
    let req = json!({"sylkrtc":"videoroom-join","account":"bob@example.com","session":"x","uri":ROOM,"sdp":"v=0\r\n"});
    assert!(Conf::answer(&sim.send(ConnId(2), req)).starts_with("Invalid SDP: "));
    assert_eq!(sim.census(), Census::default());
}
