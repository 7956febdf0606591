//! The conference media plane's extras (issue #13) on the whole gateway, simulated with str0m
//! browsers: audio levels (`conference-audio-levels` from the publishers' RFC 6464 header
//! extension), NACK answered with RTX towards a subscriber (loss injected on the wire), and the
//! REMB each publisher gets (the room's `max_bitrate` split, `videoroom-configure`, the
//! subscribers' estimates, `videoroom-session-update` `bitrate`).

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;
use str0m::bwe::Bitrate;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, Mid};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Input, RtcConfig};
use sylkgw_core::conference::bitrate::SUBSCRIBER_FLOOR;
use sylkgw_core::{ConnId, Input as GwInput};
use sylkgw_kit::client_text_frame;
use sylkgw_tests::gateway_sim::{addr, BindAnswer, GatewaySim, World, HA1, LATENCY};
use sylkgw_tests::webrtc_client::{Datagram, WebRtcClient, VP8};

const ROOM: &str = "room@videoconference.example.com";
const OPUS: u8 = 111;
/// The RTX payload type of VP8 in the browsers' configuration (Chrome's number).
const RTX: u8 = 97;
const NAMES: [&str; 3] = ["alice", "bob", "carol"];

/// A browser: Opus, and VP8 with RTX (`with_rtx`) as Chrome offers it, or without.
fn browser_config(with_rtx: bool) -> RtcConfig {
    let mut config = RtcConfig::new().set_rtp_mode(true).clear_codecs().enable_opus(true, false);
    let rtx = with_rtx.then_some(RTX.into());
    config.codec_config().add_config(VP8.into(), rtx, Codec::Vp8, Frequency::NINETY_KHZ, None, FormatParams::default());
    config
}

/// One participant: its WebSocket, publisher session and PeerConnections.
struct Party {
    conn: ConnId,
    session: String,
    publisher: WebRtcClient,
    /// Feeds by the publisher session they receive: (feed id, subscriber PeerConnection).
    feeds: BTreeMap<String, (String, WebRtcClient)>,
    seq: u64,
    /// The audio level it sends (RFC 6464, -dBov: 0 loudest, 127 silence).
    level: u8,
    /// The size of its video payloads (50 a second).
    video_size: usize,
}

/// Drops video RTP on its way from the gateway to one address: every `every`-th packet.
struct Loss {
    to: SocketAddr,
    every: usize,
    seen: usize,
    dropped: Vec<u16>,
}

/// One entry of `conference-audio-levels`: (participant, rx_peak, rx).
type Level = (String, f64, f64);

struct Conf {
    net: GatewaySim,
    parties: Vec<Party>,
    losses: Vec<Loss>,
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

    /// Each connected publisher sends an Opus packet carrying its audio level and a VP8 packet.
    fn media_tick(&mut self) {
        let now = self.net.now;
        for (i, p) in self.parties.iter_mut().enumerate() {
            if !p.publisher.connected {
                continue;
            }
            p.seq += 1;
            let seq = p.seq;
            let (audio, video) = (p.publisher.audio.unwrap(), p.publisher.video.unwrap());
            let level = ExtensionValues {
                audio_level: Some(-(p.level as i8)),
                voice_activity: Some(p.level < 127),
                ..Default::default()
            };
            let mut api = p.publisher.rtc.direct_api();
            let tx = api.stream_tx_by_mid(audio, None).expect("an audio stream");
            let payload: &[u8] = &[i as u8, 1, 2, 3];
            tx.write_rtp(RtpWrite::new(OPUS.into(), seq.into(), (seq * 960) as u32, now, payload).ext_vals(level));
            p.publisher.rtc.handle_input(Input::Timeout(now)).unwrap();
            let mut frame = vec![i as u8, 0x10, 0, 0x9d];
            frame.resize(p.video_size.max(4), 0);
            p.publisher.write_rtp(now, video, (VP8, seq, (seq * 3000) as u32, true), &frame);
            p.publisher.drain(now, LATENCY, &mut self.net.wire);
        }
    }

    fn deliver(&mut self, d: Datagram) {
        if let Some(loss) = self.losses.iter_mut().find(|l| l.to == d.to) {
            // SRTP keeps the RTP header in the clear (RFC 3711 §3.1): version 2, PT in byte 1.
            if d.data.len() > 12 && d.data[0] >> 6 == 2 && d.data[1] & 0x7f == VP8 {
                loss.seen += 1;
                if loss.seen % loss.every == 0 {
                    loss.dropped.push(u16::from_be_bytes([d.data[2], d.data[3]]));
                    return;
                }
            }
        }
        self.deliver_to_browsers(d);
    }
}

impl Conf {
    fn new(tweak: impl FnOnce(&mut sylkgw_core::Config)) -> Self {
        Self { net: GatewaySim::new([14; 32], BindAnswer::AtOnce, tweak), parties: Vec::new(), losses: Vec::new() }
    }

    /// Sends `req` on `conn`; returns its answer (`ack` or the error text). Events stay queued.
    fn send(&mut self, conn: ConnId, mut req: Value) -> String {
        let t = self.net.next_transaction(conn);
        req["transaction"] = Value::String(t.to_string());
        let frame = client_text_frame(&req.to_string());
        self.net.input(GwInput::StreamData { conn, data: &frame });
        let events = &self.net.conns[&conn].events;
        let t = t.to_string();
        let a = events.iter().rev().find(|e| e["transaction"] == t.as_str()).expect("an answer");
        if a["sylkrtc"] == "ack" {
            "ack".into()
        } else {
            a["error"].as_str().unwrap().to_string()
        }
    }

    /// `n` parties join the room and their publishers come up.
    fn join_all(&mut self, n: usize) {
        for (i, name) in NAMES.iter().enumerate().take(n) {
            let conn = ConnId(i as u64 + 1);
            self.net.open_ws(conn);
            let account = format!("{name}@example.com");
            let add = json!({"sylkrtc":"account-add","account":account,"password":HA1,"display_name":name});
            assert_eq!(self.send(conn, add), "ack");
            let now = self.net.now;
            let at = addr(&format!("127.0.0.1:{}", 52000 + 100 * i));
            let mut publisher = WebRtcClient::new(browser_config(true), None, now, at).unwrap();
            let offer = publisher.sendonly_offer();
            let session = format!("p{i}");
            let req = json!({"sylkrtc":"videoroom-join","account":account,"session":session,"uri":ROOM,"sdp":offer});
            assert_eq!(self.send(conn, req), "ack");
            let events = self.net.take_events(conn);
            let accepted = events.iter().find(|e| e["state"] == "accepted").expect("accepted");
            publisher.accept_answer(accepted["sdp"].as_str().unwrap()).unwrap();
            self.parties.push(Party {
                conn,
                session,
                publisher,
                feeds: BTreeMap::new(),
                seq: 0,
                level: 127,
                video_size: 4,
            });
        }
        for i in 0..n {
            let conn = self.parties[i].conn;
            self.until_event(conn, Duration::from_secs(5), |e| e["state"] == "established");
        }
    }

    /// Party `i` attaches a feed of party `j`'s publisher (its browser with or without RTX) and
    /// waits for `feed-established`.
    fn attach(&mut self, i: usize, j: usize, with_rtx: bool) {
        let (conn, session) = (self.parties[i].conn, self.parties[i].session.clone());
        let publisher = self.parties[j].session.clone();
        let feed = format!("f{i}{j}");
        let req = json!({"sylkrtc":"videoroom-feed-attach","session":session,"publisher":publisher,"feed":feed});
        assert_eq!(self.send(conn, req), "ack");
        let events = self.net.take_events(conn);
        let attached = events.iter().find(|e| e["event"] == "feed-attached").expect("feed-attached");
        let offer = attached["sdp"].as_str().unwrap().to_string();
        let now = self.net.now;
        let at = addr(&format!("127.0.0.1:{}", 52000 + 100 * i + 1 + j));
        let mut client = WebRtcClient::new(browser_config(with_rtx), None, now, at).unwrap();
        // str0m takes RTX from an offer whatever its own configuration: a browser without RTX
        // is one that never saw it offered.
        let offer = if with_rtx { offer } else { strip_rtx(&offer) };
        let answer = client.answer(&offer, true);
        let req = json!({"sylkrtc":"videoroom-feed-answer","session":session,"feed":feed,"sdp":answer});
        assert_eq!(self.send(conn, req), "ack");
        self.parties[i].feeds.insert(publisher, (feed.clone(), client));
        self.until_event(conn, Duration::from_secs(5), |e| e["event"] == "feed-established" && e["feed"] == feed);
    }

    /// The `conference-audio-levels` events `conn` got since the last call, as
    /// (session the event is on, [(participant, rx_peak, rx)]).
    fn levels(&mut self, conn: ConnId) -> Vec<(String, Vec<Level>)> {
        let events = self.net.take_events(conn);
        events
            .iter()
            .filter(|e| e["event"] == "conference-audio-levels")
            .map(|e| {
                let levels = e["levels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| {
                        let id = l["participant_id"].as_str().unwrap().to_string();
                        (id, l["rx_peak"].as_f64().unwrap(), l["rx"].as_f64().unwrap())
                    })
                    .collect();
                (e["session"].as_str().unwrap().to_string(), levels)
            })
            .collect()
    }

    /// Party `i`'s browser sends a REMB of `bitrate` about the video of its feed of `publisher`.
    fn subscriber_remb(&mut self, i: usize, publisher: &str, bitrate: u64) {
        let now = self.net.now;
        let (_, client) = self.parties[i].feeds.get_mut(publisher).unwrap();
        let mid: Mid = client.video.unwrap();
        client.rtc.direct_api().stream_rx_by_mid(mid, None).expect("its video").request_remb(Bitrate::bps(bitrate));
        client.handle_timeout(now).unwrap();
        client.drain(now, LATENCY, &mut self.net.wire);
    }

    /// The last REMB party `i`'s publisher browser got about its video.
    fn last_remb(&self, i: usize) -> Option<u64> {
        let p = &self.parties[i].publisher;
        p.remb.iter().rev().find(|(mid, _)| Some(*mid) == p.video).map(|(_, b)| *b)
    }
}

/// `offer` without RTX: its payload type, attributes, SSRC and FID group.
fn strip_rtx(offer: &str) -> String {
    let pt = offer
        .lines()
        .find_map(|l| l.strip_prefix("a=rtpmap:").filter(|r| r.contains(" rtx/")))
        .and_then(|r| r.split(' ').next())
        .expect("an RTX payload type in our offer")
        .to_string();
    let rtx_ssrc = offer
        .lines()
        .find_map(|l| l.strip_prefix("a=ssrc-group:FID "))
        .map(|g| g.split(' ').nth(1).unwrap().to_string());
    let mut out = String::new();
    for line in offer.split_inclusive("\r\n") {
        let l = line.trim_end();
        let attr_of = |prefix: &str| l.strip_prefix(prefix).is_some_and(|r| r.split([' ', ':']).next() == Some(&*pt));
        if attr_of("a=rtpmap:") || attr_of("a=fmtp:") || attr_of("a=rtcp-fb:") || l.starts_with("a=ssrc-group:FID") {
            continue;
        }
        if rtx_ssrc.as_ref().is_some_and(|s| l.starts_with(&format!("a=ssrc:{s} "))) {
            continue;
        }
        if l.starts_with("m=video ") {
            let kept: Vec<&str> = l.split(' ').filter(|w| *w != pt).collect();
            out.push_str(&kept.join(" "));
            out.push_str("\r\n");
            continue;
        }
        out.push_str(line);
    }
    assert!(!out.contains(" rtx/"), "{out}");
    out
}

/// REMB carries an 18-bit mantissa and an exponent (draft-alvestrand-rmcat-remb §2.2): values
/// above 2^18 come back rounded down to a multiple of a power of two.
fn about(got: Option<u64>, want: u64) -> bool {
    got.is_some_and(|g| g <= want && want - g <= want / 1000)
}

#[test]
fn audio_levels_reach_every_participant_when_they_change() {
    let mut sim = Conf::new(|_| {});
    sim.join_all(3);
    // alice at 0 dBov, bob at -20 dBov, carol silent.
    sim.parties[0].level = 0;
    sim.parties[1].level = 20;
    sim.run(Duration::from_secs(2));
    let want = vec![("p0".to_string(), 1.0, 1.0), ("p1".to_string(), 0.1, 0.1), ("p2".to_string(), 0.0, 0.0)];
    for i in 0..3 {
        let conn = sim.parties[i].conn;
        let got = sim.levels(conn);
        let (session, last) = got.last().unwrap_or_else(|| panic!("{conn}: no conference-audio-levels"));
        assert_eq!(session, &format!("p{i}"), "on the participant's own session");
        assert_eq!(last, &want);
        assert!(got.iter().all(|(_, l)| l.len() == 3), "every member of the room, each time");
    }
    // Unchanged levels are not reported again.
    sim.run(Duration::from_secs(2));
    for i in 0..3 {
        let conn = sim.parties[i].conn;
        assert_eq!(sim.levels(conn), vec![], "{conn}: nothing changed");
    }
    // alice stops talking: reported (the period she stopped in may come first), then quiet.
    sim.parties[0].level = 127;
    sim.run(Duration::from_secs(2));
    for i in 0..3 {
        let conn = sim.parties[i].conn;
        let got = sim.levels(conn);
        assert!((1..=2).contains(&got.len()), "{conn}: {got:?}");
        assert_eq!(got.last().unwrap().1[0], ("p0".to_string(), 0.0, 0.0));
    }
    sim.run(Duration::from_secs(2));
    for i in 0..3 {
        let conn = sim.parties[i].conn;
        assert_eq!(sim.levels(conn), vec![], "{conn}: silence is not repeated");
    }
    // A paused publisher (`videoroom-session-update` audio off) counts as silent.
    sim.parties[1].level = 0;
    sim.run(Duration::from_secs(1));
    sim.levels(ConnId(1));
    let req = json!({"sylkrtc":"videoroom-session-update","session":"p1","options":{"audio":false}});
    assert_eq!(sim.send(ConnId(2), req), "ack");
    sim.run(Duration::from_secs(1));
    let got = sim.levels(ConnId(1));
    assert_eq!(got.last().map(|(_, l)| l[1].clone()), Some(("p1".to_string(), 0.0, 0.0)), "{got:?}");
}

#[test]
fn subscriber_nacks_are_answered_with_rtx() {
    let mut sim = Conf::new(|_| {});
    sim.join_all(3);
    // bob receives alice with RTX negotiated; carol receives her with a browser that has none.
    sim.attach(1, 0, true);
    sim.attach(2, 0, false);
    let feed_rtx = sim.parties[1].feeds["p0"].1.addr;
    let feed_plain = sim.parties[2].feeds["p0"].1.addr;
    for to in [feed_rtx, feed_plain] {
        sim.losses.push(Loss { to, every: 10, seen: 0, dropped: Vec::new() });
    }
    sim.run(Duration::from_secs(3));
    // Loss stops; the last NACKs are answered.
    let losses = std::mem::take(&mut sim.losses);
    sim.run(Duration::from_secs(1));
    let recovered = |sim: &Conf, i: usize, loss: &Loss| {
        let got: BTreeSet<u16> =
            sim.parties[i].feeds["p0"].1.got.iter().filter(|g| g.pt == VP8).map(|g| g.seq).collect();
        loss.dropped.iter().filter(|s| got.contains(s)).count()
    };
    let (rtx, plain) = (&losses[0], &losses[1]);
    assert!(rtx.dropped.len() >= 10 && plain.dropped.len() >= 10, "loss was injected");
    let (got_rtx, got_plain) = (recovered(&sim, 1, rtx), recovered(&sim, 2, plain));
    eprintln!(
        "video packets dropped on the way to the subscriber: {} with RTX, {} recovered; {} without, {} recovered",
        rtx.dropped.len(),
        got_rtx,
        plain.dropped.len(),
        got_plain
    );
    assert_eq!(got_rtx, rtx.dropped.len(), "every lost packet came back through NACK/RTX");
    assert_eq!(got_plain, 0, "without RTX nothing is resent");
    // Their content is the publisher's.
    let client = &sim.parties[1].feeds["p0"].1;
    assert!(client.got.iter().filter(|g| g.pt == VP8).all(|g| g.payload == [0, 0x10, 0, 0x9d]));
}

#[test]
fn publishers_get_the_remb_the_room_allows() {
    let mut sim = Conf::new(|c| c.conference.max_bitrate = 1_200_000);
    sim.join_all(3);
    // alice sends about 400 kbit/s of video.
    sim.parties[0].video_size = 1000;
    for i in 0..3 {
        for j in 0..3 {
            if i != j {
                sim.attach(i, j, true);
            }
        }
    }
    sim.run(Duration::from_secs(2));
    // No active speakers: max_bitrate / (n - 1) each.
    for i in 0..3 {
        assert!(about(sim.last_remb(i), 600_000), "p{i}: {:?}", sim.last_remb(i));
    }
    // alice is the active speaker: all of it for her, 100 kbit/s for the others.
    let req = json!({"sylkrtc":"videoroom-configure","session":"p1","active_participants":["p0"]});
    assert_eq!(sim.send(ConnId(2), req), "ack");
    sim.run(Duration::from_secs(2));
    assert!(about(sim.last_remb(0), 1_200_000), "{:?}", sim.last_remb(0));
    assert_eq!((sim.last_remb(1), sim.last_remb(2)), (Some(100_000), Some(100_000)));
    // bob's browser estimates 800 kbit/s while receiving 400: not congested, no change.
    sim.subscriber_remb(1, "p0", 800_000);
    sim.run(Duration::from_secs(2));
    assert!(about(sim.last_remb(0), 1_200_000), "{:?}", sim.last_remb(0));
    // bob's browser can take only 320 kbit/s of alice's 400: she is told so.
    sim.subscriber_remb(1, "p0", 320_000);
    sim.run(Duration::from_secs(2));
    assert!(about(sim.last_remb(0), 320_000), "{:?}", sim.last_remb(0));
    // Not below the subscribers' floor, however congested bob says he is.
    sim.subscriber_remb(1, "p0", 100_000);
    sim.run(Duration::from_secs(2));
    assert!(about(sim.last_remb(0), SUBSCRIBER_FLOOR), "{:?}", sim.last_remb(0));
    // alice caps herself lower (`videoroom-session-update` `bitrate`).
    let req = json!({"sylkrtc":"videoroom-session-update","session":"p0","options":{"bitrate":200_000}});
    assert_eq!(sim.send(ConnId(1), req), "ack");
    sim.run(Duration::from_secs(2));
    assert_eq!(sim.last_remb(0), Some(200_000));
    // The active speaker leaves the list: the split is back to max / (n - 1), still capped.
    let req = json!({"sylkrtc":"videoroom-configure","session":"p1","active_participants":[]});
    assert_eq!(sim.send(ConnId(2), req), "ack");
    sim.run(Duration::from_secs(2));
    assert!(about(sim.last_remb(1), 600_000), "{:?}", sim.last_remb(1));
    assert_eq!(sim.last_remb(0), Some(200_000));
}
