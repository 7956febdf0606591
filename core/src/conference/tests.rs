//! The conference layer alone (no gateway, no media flowing): requests in, outputs checked.

use super::limits::ConferenceConfig;
use super::{Census, ConfOutput, Conferences, Env};
use crate::api::videoroom::{VideoroomEvent as V, VideoroomRequest as R};
use crate::api::{Event, Identity};
use crate::ids::ConnId;
use crate::media::webrtc::DtlsIdentity;
use crate::rng::Rng;
use std::time::{Duration, Instant};

/// A browser's send-only offer (str0m's shape: BUNDLE, Opus and VP8).
const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE a v\r\n\
    m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:GX5GpifvBcXsLzzq\r\n\
    a=ice-pwd:9MfmQRVAU8vICAMaoUDfLb\r\na=fingerprint:sha-256 \
    8A:AF:C6:7E:4F:05:9F:30:B1:2E:B2:58:16:12:EF:D9:C1:4C:15:D3:08:89:B9:C3:0C:B9:95:2F:3A:17:F5:D7\r\n\
    a=setup:actpass\r\na=mid:a\r\na=sendonly\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
    a=ssrc:1 cname:x\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:GX5GpifvBcXsLzzq\r\n\
    a=ice-pwd:9MfmQRVAU8vICAMaoUDfLb\r\na=fingerprint:sha-256 \
    8A:AF:C6:7E:4F:05:9F:30:B1:2E:B2:58:16:12:EF:D9:C1:4C:15:D3:08:89:B9:C3:0C:B9:95:2F:3A:17:F5:D7\r\n\
    a=setup:actpass\r\na=mid:v\r\na=sendonly\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\na=ssrc:2 cname:x\r\n";

struct Fixture {
    conf: Conferences,
    rng: Rng,
    cert: DtlsIdentity,
    config: ConferenceConfig,
    now: Instant,
    tx: u32,
}

impl Fixture {
    fn new() -> Self {
        let now = crate::time::test_epoch();
        let cert = DtlsIdentity::generate().expect("a certificate");
        Self { conf: Conferences::default(), rng: Rng::new([3; 32]), cert, config: Default::default(), now, tx: 0 }
    }

    /// Sends `req` on `conn`; returns the outputs, `(connection, event)` only.
    fn send(&mut self, conn: u64, req: R, account: Option<&str>) -> Vec<(u64, Event)> {
        self.tx += 1;
        let mut env = Env {
            now: self.now,
            unix: Duration::from_secs(1_767_225_600),
            rng: &mut self.rng,
            cert: Some(&self.cert),
            candidates: Some(vec!["127.0.0.1:40000".parse().unwrap()]),
            config: &self.config,
        };
        let identity = account.map(|a| Identity { uri: a.into(), display_name: None });
        self.conf.request(&mut env, ConnId(conn), self.tx.to_string(), req, identity);
        std::iter::from_fn(|| self.conf.poll_output())
            .filter_map(|o| match o {
                ConfOutput::Event { conn, event } => Some((conn.0, event)),
                _ => None,
            })
            .collect()
    }

    fn join(&mut self, conn: u64, session: &str) -> Vec<(u64, Event)> {
        let req = R::Join {
            session: session.into(),
            account: format!("u{conn}@example.com"),
            uri: "room@conf.example.com".into(),
            sdp: OFFER.into(),
            audio: true,
            video: true,
        };
        self.send(conn, req, Some(&format!("u{conn}@example.com")))
    }
}

fn videoroom(events: &[(u64, Event)]) -> Vec<(u64, String, V)> {
    events
        .iter()
        .filter_map(|(c, e)| match e {
            Event::Videoroom { session, event } => Some((*c, session.clone(), event.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn hands_toggle_and_a_vanished_connection_leaves_nothing() {
    let mut f = Fixture::new();
    assert!(matches!(f.join(1, "a")[1], (1, Event::Ack { .. })));
    f.join(2, "b");
    let toggle = |s: &str, who: Option<&str>| R::ToggleHand { session: s.into(), session_id: who.map(String::from) };
    let up = videoroom(&f.send(1, toggle("a", None), None));
    assert_eq!(up.len(), 2, "to both participants");
    assert!(up.iter().all(|(_, _, e)| *e == V::RaisedHands(vec!["a".into()])));
    // Raising someone else's hand (the moderator's use of `session_id`), then lowering both.
    f.send(1, toggle("a", Some("b")), None);
    f.send(2, toggle("b", None), None);
    let down = videoroom(&f.send(1, toggle("a", None), None));
    assert!(down.iter().all(|(_, _, e)| *e == V::RaisedHands(vec![])));
    // An unknown participant in `configure` changes nothing and tells nobody.
    let req = R::Configure { session: "a".into(), active_participants: vec!["b".into(), "zz".into()] };
    let events = f.send(1, req, None);
    assert_eq!(events.len(), 1);
    assert!(matches!(&events[0].1, Event::Error { error, .. } if error == "unknown participant session id: zz"));
    // Connection 2 goes: 1 hears `publishers-left`, and once 1 goes too nothing is left.
    let mut env = Env {
        now: f.now,
        unix: Duration::ZERO,
        rng: &mut f.rng,
        cert: Some(&f.cert),
        candidates: None,
        config: &f.config,
    };
    f.conf.conn_gone(&mut env, ConnId(2));
    let left: Vec<ConfOutput> = std::iter::from_fn(|| f.conf.poll_output()).collect();
    assert!(left.iter().any(|o| matches!(o, ConfOutput::Event { conn: ConnId(1), event: Event::Videoroom {
        event: V::PublishersLeft(ids), .. } } if ids == &["b".to_string()])));
    f.conf.conn_gone(&mut env, ConnId(1));
    while f.conf.poll_output().is_some() {}
    assert_eq!(f.conf.census(), Census::default());
}

#[test]
fn limits_from_the_config_file() {
    let mut config = crate::Config::default();
    let text = "max_rooms = 3\nmax_participants_per_room = 5\nmax_feeds_per_connection = 7\n";
    for entry in crate::config::parse_ini(text).unwrap() {
        assert!(config.apply(&entry).unwrap(), "{} is a core option", entry.key);
    }
    let c = &config.conference;
    assert_eq!((c.max_rooms, c.max_participants_per_room, c.max_feeds_per_connection), (3, 5, 7));
    let zero = crate::config::parse_ini("max_participants_per_room = 0\n").unwrap();
    assert!(config.apply(&zero[0]).is_err(), "a room for nobody is refused");
    // Left out of capture headers while default, so older captures keep their header.
    assert!(crate::Config::default().conference.is_default());
    assert!(!config.conference.is_default());
}
