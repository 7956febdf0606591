//! The videoroom (conference) part of sylkRTC: the `videoroom-*` requests (spec §2.4) as one
//! typed [`VideoroomRequest`], and the `videoroom-event`s (§3.4) as [`VideoroomEvent`], with
//! their sylkRTC-2 encoding. sylkRTC-1 (4.1's `videoroom-ctl`) is `sylkrtc1_videoroom`.

use super::json::JsonObject;
use super::{Fields, IceCandidate, Identity};
use serde_json::Value;

/// A validated `videoroom-*` request. `session` is the client's publisher session id (or, for
/// `videoroom-session-trickle` and `videoroom-session-update`, possibly a feed id).
#[derive(Debug, Clone, PartialEq)]
pub enum VideoroomRequest {
    /// `videoroom-join`: publish the browser's send-only `sdp` in room `uri`.
    Join { session: String, account: String, uri: String, sdp: String, audio: bool, video: bool },
    /// `videoroom-leave`.
    Leave { session: String },
    /// `videoroom-configure`: the room's active speakers (at most two).
    Configure { session: String, active_participants: Vec<String> },
    /// `videoroom-feed-attach`: a subscriber PeerConnection `feed` for `publisher`.
    FeedAttach { session: String, publisher: String, feed: String },
    /// `videoroom-feed-answer`: the browser's answer to our `feed-attached` offer.
    FeedAnswer { session: String, feed: String, sdp: String },
    /// `videoroom-feed-detach`.
    FeedDetach { session: String, feed: String },
    /// `videoroom-invite`: `conference-invite` to other connections holding these accounts.
    Invite { session: String, participants: Vec<String> },
    /// `videoroom-session-trickle`: candidates of a publisher or feed PeerConnection; none =
    /// end of candidates.
    Trickle { session: String, candidates: Vec<IceCandidate> },
    /// `videoroom-session-update`: pause or resume audio/video of a publisher or feed.
    SessionUpdate { session: String, audio: Option<bool>, video: Option<bool>, bitrate: Option<i64> },
    /// `videoroom-message`: in-room chat.
    Message { session: String, message_id: String, content: String, content_type: String },
    /// `videoroom-composing-indication`.
    Composing { session: String, state: String, refresh: Option<i64> },
    /// `videoroom-mute-audio-participants`.
    MuteAudio { session: String },
    /// `videoroom-toggle-hand`: of `session_id`, or of `session` when absent.
    ToggleHand { session: String, session_id: Option<String> },
}

impl VideoroomRequest {
    /// The session the request names (`session`).
    pub fn session(&self) -> &str {
        match self {
            Self::Join { session, .. }
            | Self::Leave { session }
            | Self::Configure { session, .. }
            | Self::FeedAttach { session, .. }
            | Self::FeedAnswer { session, .. }
            | Self::FeedDetach { session, .. }
            | Self::Invite { session, .. }
            | Self::Trickle { session, .. }
            | Self::SessionUpdate { session, .. }
            | Self::Message { session, .. }
            | Self::Composing { session, .. }
            | Self::MuteAudio { session }
            | Self::ToggleHand { session, .. } => session,
        }
    }

    /// The request type (`sylkrtc` value).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Join { .. } => "videoroom-join",
            Self::Leave { .. } => "videoroom-leave",
            Self::Configure { .. } => "videoroom-configure",
            Self::FeedAttach { .. } => "videoroom-feed-attach",
            Self::FeedAnswer { .. } => "videoroom-feed-answer",
            Self::FeedDetach { .. } => "videoroom-feed-detach",
            Self::Invite { .. } => "videoroom-invite",
            Self::Trickle { .. } => "videoroom-session-trickle",
            Self::SessionUpdate { .. } => "videoroom-session-update",
            Self::Message { .. } => "videoroom-message",
            Self::Composing { .. } => "videoroom-composing-indication",
            Self::MuteAudio { .. } => "videoroom-mute-audio-participants",
            Self::ToggleHand { .. } => "videoroom-toggle-hand",
        }
    }
}

/// The typed request of an already validated `videoroom-*` message; `None` for another kind.
pub(super) fn decode(kind: &str, f: &Fields<'_>) -> Option<VideoroomRequest> {
    let session = f.s("session");
    Some(match kind {
        "videoroom-join" => VideoroomRequest::Join {
            session,
            account: f.s("account"),
            uri: f.s("uri"),
            sdp: f.s("sdp"),
            // Defaults true (spec §2.4); `null` is absent.
            audio: f.0.get("audio").and_then(Value::as_bool).unwrap_or(true),
            video: f.0.get("video").and_then(Value::as_bool).unwrap_or(true),
        },
        "videoroom-leave" => VideoroomRequest::Leave { session },
        "videoroom-configure" => {
            VideoroomRequest::Configure { session, active_participants: f.strings("active_participants") }
        }
        "videoroom-feed-attach" => {
            VideoroomRequest::FeedAttach { session, publisher: f.s("publisher"), feed: f.s("feed") }
        }
        "videoroom-feed-answer" => VideoroomRequest::FeedAnswer { session, feed: f.s("feed"), sdp: f.s("sdp") },
        "videoroom-feed-detach" => VideoroomRequest::FeedDetach { session, feed: f.s("feed") },
        "videoroom-invite" => VideoroomRequest::Invite { session, participants: f.strings("participants") },
        "videoroom-session-trickle" => VideoroomRequest::Trickle { session, candidates: f.candidates() },
        "videoroom-session-update" => {
            let o = f.0.get("options");
            let get = |k: &str| o.and_then(|o| o.get(k));
            VideoroomRequest::SessionUpdate {
                session,
                audio: get("audio").and_then(Value::as_bool),
                video: get("video").and_then(Value::as_bool),
                bitrate: get("bitrate").and_then(Value::as_i64),
            }
        }
        "videoroom-message" => VideoroomRequest::Message {
            session,
            message_id: f.s("message_id"),
            content: f.s("content"),
            content_type: f.s("content_type"),
        },
        "videoroom-composing-indication" => VideoroomRequest::Composing {
            session,
            state: f.s("state"),
            refresh: f.0.get("refresh").and_then(Value::as_i64),
        },
        "videoroom-mute-audio-participants" => VideoroomRequest::MuteAudio { session },
        "videoroom-toggle-hand" => VideoroomRequest::ToggleHand { session, session_id: f.opt_s("session_id") },
        _ => return None,
    })
}

/// A publisher as `initial-publishers` and `publishers-joined` list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publisher {
    /// The publisher's session id (the other client's, never an internal number).
    pub id: String,
    /// Its account (bare AOR).
    pub uri: String,
    /// Its display name (`""` when none, as SylkServer sends it).
    pub display_name: String,
}

/// One publisher's audio level in `conference-audio-levels`, in hundredths of full-scale
/// amplitude (W3C `audioLevel` × 100: 100 = 0 dBov, 10 = -20 dBov); written as 0.00–1.00.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioLevel {
    /// The publisher's session id.
    pub participant_id: String,
    /// The loudest packet of the period.
    pub rx_peak: u8,
    /// The mean amplitude of the period's packets.
    pub rx: u8,
}

/// `videoroom-event`s (spec §3.4), in SylkServer's models' field order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoroomEvent {
    /// `session-state progress`.
    Progress,
    /// `session-state accepted` with our answer.
    Accepted { sdp: String, audio: bool, video: bool },
    /// `session-state established`: the publisher's media is up.
    Established,
    /// `session-state terminated`.
    Terminated { reason: Option<String> },
    /// `initial-publishers`.
    InitialPublishers(Vec<Publisher>),
    /// `publishers-joined`.
    PublishersJoined(Vec<Publisher>),
    /// `publishers-left` (session ids).
    PublishersLeft(Vec<String>),
    /// `feed-attached`: our offer for the subscriber PeerConnection `feed`.
    FeedAttached { feed: String, sdp: String },
    /// `feed-established`.
    FeedEstablished { feed: String },
    /// `configure`: `originator` is a session id or `videoroom`.
    Configure { originator: String, active_participants: Vec<String> },
    /// `message`: in-room chat.
    Message { kind: &'static str, content: String, content_type: String, sender: Identity, timestamp: String },
    /// `composing-indication`.
    Composing { state: String, refresh: i64, content_type: String, sender: Identity },
    /// `message-delivery`.
    MessageDelivery { message_id: String, delivered: bool, code: i64, reason: String },
    /// `mute-audio`.
    MuteAudio { originator: String },
    /// `raised-hands`.
    RaisedHands(Vec<String>),
    /// `conference-audio-levels`: sylkrtc.js reads it, SylkServer never sends it (spec §3.4).
    AudioLevels(Vec<AudioLevel>),
}

/// `{"sylkrtc":"videoroom-event","session":…,"event":…}` in sylkRTC-2.
pub(super) fn encode_v2(session: &str, event: &VideoroomEvent) -> String {
    let o = JsonObject::sylkrtc("videoroom-event").str("session", session);
    let state = |o: JsonObject, s: &str| o.str("event", "session-state").str("state", s);
    match event {
        VideoroomEvent::Progress => state(o, "progress"),
        VideoroomEvent::Accepted { sdp, audio, video } => {
            state(o, "accepted").str("sdp", sdp).boolean("video", *video).boolean("audio", *audio)
        }
        VideoroomEvent::Established => state(o, "established"),
        VideoroomEvent::Terminated { reason } => match reason {
            Some(r) => state(o, "terminated").str("reason", r),
            None => state(o, "terminated"),
        },
        VideoroomEvent::InitialPublishers(p) => o.str("event", "initial-publishers").raw("publishers", &publishers(p)),
        VideoroomEvent::PublishersJoined(p) => o.str("event", "publishers-joined").raw("publishers", &publishers(p)),
        VideoroomEvent::PublishersLeft(ids) => o.str("event", "publishers-left").raw("publishers", &strings(ids)),
        VideoroomEvent::FeedAttached { feed, sdp } => o.str("event", "feed-attached").str("feed", feed).str("sdp", sdp),
        VideoroomEvent::FeedEstablished { feed } => o.str("event", "feed-established").str("feed", feed),
        VideoroomEvent::Configure { originator, active_participants } => o
            .str("event", "configure")
            .str("originator", originator)
            .raw("active_participants", &strings(active_participants)),
        VideoroomEvent::Message { kind, content, content_type, sender, timestamp } => o
            .str("event", "message")
            .str("type", kind)
            .str("content", content)
            .str("content_type", content_type)
            .obj("sender", identity(sender))
            .str("timestamp", timestamp),
        VideoroomEvent::Composing { state, refresh, content_type, sender } => o
            .str("event", "composing-indication")
            .str("state", state)
            .num("refresh", *refresh)
            .str("content_type", content_type)
            .obj("sender", identity(sender)),
        VideoroomEvent::MessageDelivery { message_id, delivered, code, reason } => o
            .str("event", "message-delivery")
            .str("message_id", message_id)
            .boolean("delivered", *delivered)
            .num("code", *code)
            .str("reason", reason),
        VideoroomEvent::MuteAudio { originator } => o.str("event", "mute-audio").str("originator", originator),
        VideoroomEvent::RaisedHands(ids) => o.str("event", "raised-hands").raw("raised_hands", &strings(ids)),
        VideoroomEvent::AudioLevels(l) => o.str("event", "conference-audio-levels").raw("levels", &levels(l)),
    }
    .finish()
}

fn identity(id: &Identity) -> JsonObject {
    JsonObject::new().str("uri", &id.uri).opt_str("display_name", id.display_name.as_deref())
}

fn strings(items: &[String]) -> String {
    Value::from(items.to_vec()).to_string()
}

fn levels(items: &[AudioLevel]) -> String {
    let fraction = |v: u8| format!("{}.{:02}", v / 100, v % 100);
    let list: Vec<String> = items
        .iter()
        .map(|l| {
            JsonObject::new()
                .str("participant_id", &l.participant_id)
                .raw("rx_peak", &fraction(l.rx_peak))
                .raw("rx", &fraction(l.rx))
                .finish()
        })
        .collect();
    format!("[{}]", list.join(","))
}

/// The publishers as a JSON array of `{id, uri, display_name}` (both dialects' shape).
pub(super) fn publishers(items: &[Publisher]) -> String {
    let list: Vec<String> = items
        .iter()
        .map(|p| JsonObject::new().str("id", &p.id).str("uri", &p.uri).str("display_name", &p.display_name).finish())
        .collect();
    format!("[{}]", list.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{decode, Event, RequestBody};

    #[test]
    fn join_defaults_and_options() {
        let r = decode(
            r#"{"sylkrtc":"videoroom-join","transaction":"t","session":"p","account":"sip:a@x","uri":"room@conf.x","sdp":"v=0","video":null}"#,
        )
        .unwrap();
        assert_eq!(
            r.body,
            RequestBody::Videoroom(VideoroomRequest::Join {
                session: "p".into(),
                account: "a@x".into(),
                uri: "room@conf.x".into(),
                sdp: "v=0".into(),
                audio: true,
                video: true,
            })
        );
        let r = decode(
            r#"{"sylkrtc":"videoroom-session-update","transaction":"t","session":"f","options":{"video":false}}"#,
        )
        .unwrap();
        assert_eq!(
            r.body,
            RequestBody::Videoroom(VideoroomRequest::SessionUpdate {
                session: "f".into(),
                audio: None,
                video: Some(false),
                bitrate: None
            })
        );
    }

    #[test]
    fn events_as_sylkserver_writes_them() {
        let enc = |e: VideoroomEvent| crate::api::sylkrtc2::encode(&Event::Videoroom { session: "P".into(), event: e });
        assert_eq!(
            enc(VideoroomEvent::Accepted { sdp: "v=0".into(), audio: true, video: false }),
            r#"{"sylkrtc":"videoroom-event","session":"P","event":"session-state","state":"accepted","sdp":"v=0","video":false,"audio":true}"#
        );
        assert_eq!(
            enc(VideoroomEvent::InitialPublishers(vec![Publisher {
                id: "Q".into(),
                uri: "bob@x".into(),
                display_name: "Bob".into()
            }])),
            r#"{"sylkrtc":"videoroom-event","session":"P","event":"initial-publishers","publishers":[{"id":"Q","uri":"bob@x","display_name":"Bob"}]}"#
        );
        assert_eq!(
            enc(VideoroomEvent::PublishersLeft(vec!["Q".into()])),
            r#"{"sylkrtc":"videoroom-event","session":"P","event":"publishers-left","publishers":["Q"]}"#
        );
        assert_eq!(
            enc(VideoroomEvent::Configure { originator: "videoroom".into(), active_participants: vec![] }),
            r#"{"sylkrtc":"videoroom-event","session":"P","event":"configure","originator":"videoroom","active_participants":[]}"#
        );
        assert_eq!(
            enc(VideoroomEvent::Terminated { reason: None }),
            r#"{"sylkrtc":"videoroom-event","session":"P","event":"session-state","state":"terminated"}"#
        );
        // The shape sylkrtc.js reads (`levels[].participant_id`, `rx_peak ?? rx`).
        assert_eq!(
            enc(VideoroomEvent::AudioLevels(vec![
                AudioLevel { participant_id: "Q".into(), rx_peak: 25, rx: 7 },
                AudioLevel { participant_id: "R".into(), rx_peak: 100, rx: 0 },
            ])),
            r#"{"sylkrtc":"videoroom-event","session":"P","event":"conference-audio-levels","levels":[{"participant_id":"Q","rx_peak":0.25,"rx":0.07},{"participant_id":"R","rx_peak":1.00,"rx":0.00}]}"#
        );
    }
}
