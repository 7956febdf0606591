//! Conferences on `sylkRTC-1` as SylkServer 4.0–4.1 served them (`handler.py` at release-4.1.0:
//! `videoroom-join`, `videoroom-ctl`, `videoroom-terminate`, `videoroom_event`,
//! `conference_invite`), mapped onto the typed [`VideoroomRequest`] / [`VideoroomEvent`] that the
//! rooms serve for both dialects. The audit is `docs/sylkrtc1-audit.md`.
//!
//! `videoroom-ctl` carries its option's fields in an object named after the option (`"option":
//! "feed-attach", "feed_attach": {"session": F, "publisher": P}`); the feed's id is that object's
//! `session`. Besides 4.1's five options, the two that sylkrtc.js 0.9.6 also sends (`update`:
//! pause a feed's video; `configure-room`: active speakers) are served as SylkServer's 2017 master
//! (still `sylkRTC-1`, commit e0adcfd^) served them. Events nest their details under `data`
//! (`configure-room`'s are flat, as that master sent them); what the rooms do that 4.1 could not
//! say (chat, hands, mute) has no encoding here and is not sent.

use super::json::JsonObject;
use super::schema::{self, Base, Field, Kind, ObjectSchema, RequestSchema};
use super::videoroom::{publishers, VideoroomEvent as V, VideoroomRequest as R};
use super::{DecodeError, Fields, Identity, Request, RequestBody};
use serde_json::{Map, Value};

const fn req(name: &'static str, kind: Kind) -> Field {
    Field { name, kind, optional: false }
}

const fn opt(name: &'static str, kind: Kind) -> Field {
    Field { name, kind, optional: true }
}

/// 4.1's `VideoRoomJoinRequest` (no `audio`/`video` flags: publishers always offer both).
static JOIN: RequestSchema = RequestSchema {
    kind: "videoroom-join",
    class: "VideoRoomJoinRequest",
    base: Base::Session,
    fields: &[req("account", Kind::Aor), req("uri", Kind::Aor), req("sdp", Kind::Str)],
};

/// 4.1's `VideoRoomTerminateRequest`.
static TERMINATE: RequestSchema =
    RequestSchema { kind: "videoroom-terminate", class: "VideoRoomTerminateRequest", base: Base::Session, fields: &[] };

static TRICKLE: ObjectSchema = ObjectSchema {
    class: "VideoRoomControlTrickleRequest",
    fields: &[opt("session", Kind::Str), opt("candidates", Kind::Objects(&schema::ICE_CANDIDATE))],
};
static FEED_ATTACH: ObjectSchema = ObjectSchema {
    class: "VideoRoomControlFeedAttachRequest",
    fields: &[req("session", Kind::Str), req("publisher", Kind::Str)],
};
static FEED_ANSWER: ObjectSchema = ObjectSchema {
    class: "VideoRoomControlFeedAnswerRequest",
    fields: &[req("session", Kind::Str), req("sdp", Kind::Str)],
};
static FEED_DETACH: ObjectSchema =
    ObjectSchema { class: "VideoRoomControlFeedDetachRequest", fields: &[req("session", Kind::Str)] };
static INVITE: ObjectSchema =
    ObjectSchema { class: "VideoRoomControlInviteParticipantsRequest", fields: &[opt("participants", Kind::AorList)] };
/// 2017 master's `VideoroomControlUpdateOptions`.
static UPDATE: ObjectSchema = ObjectSchema {
    class: "VideoroomControlUpdateOptions",
    fields: &[opt("audio", Kind::Bool), opt("video", Kind::Bool), opt("bitrate", Kind::Int)],
};
/// 2017 master's `VideoroomControlConfigureRoomOptions`.
static CONFIGURE_ROOM: ObjectSchema = ObjectSchema {
    class: "VideoroomControlConfigureRoomOptions",
    fields: &[req("active_participants", Kind::ActiveParticipants)],
};

/// `VideoRoomControlRequest`: 4.1's five options and 0.9.6's `update` and `configure-room`, each
/// with its optional object (which the handler requires for the option named).
static CTL: RequestSchema = RequestSchema {
    kind: "videoroom-ctl",
    class: "VideoRoomControlRequest",
    base: Base::Session,
    fields: &[
        req(
            "option",
            Kind::Choice(&[
                "configure-room",
                "feed-answer",
                "feed-attach",
                "feed-detach",
                "invite-participants",
                "trickle",
                "update",
            ]),
        ),
        opt("configure_room", Kind::Object(&CONFIGURE_ROOM)),
        opt("feed_attach", Kind::Object(&FEED_ATTACH)),
        opt("feed_answer", Kind::Object(&FEED_ANSWER)),
        opt("feed_detach", Kind::Object(&FEED_DETACH)),
        opt("invite_participants", Kind::Object(&INVITE)),
        opt("trickle", Kind::Object(&TRICKLE)),
        opt("update", Kind::Object(&UPDATE)),
    ],
};

/// Decodes a sylkRTC-1 conference request (`videoroom-join`, `videoroom-ctl`,
/// `videoroom-terminate`) of a JSON object `text`; `None` for any other type. A `videoroom-ctl`
/// without its option's object is invalid: `missing 'feed_attach' field in request` (2017
/// master's text; 4.1 only logged it and never answered).
pub(super) fn decode(kind: &str, text: &str) -> Option<Result<Request, DecodeError>> {
    let schema = [&JOIN, &CTL, &TERMINATE].into_iter().find(|s| s.kind == kind)?;
    Some(decode_with(schema, text))
}

fn decode_with(schema: &'static RequestSchema, text: &str) -> Result<Request, DecodeError> {
    let msg: Map<String, Value> = serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
    let transaction = msg.get("transaction").and_then(Value::as_str).map(String::from);
    let invalid =
        |message| DecodeError::Invalid { kind: schema.kind.to_string(), transaction: transaction.clone(), message };
    let fields = schema::validate(schema, &msg).map_err(invalid)?;
    let f = Fields(&fields);
    let session = f.s("session");
    let body = match schema.kind {
        "videoroom-join" => {
            R::Join { session, account: f.s("account"), uri: f.s("uri"), sdp: f.s("sdp"), audio: true, video: true }
        }
        "videoroom-terminate" => R::Leave { session },
        _ => control(session, &fields).map_err(invalid)?,
    };
    Ok(Request { transaction: f.s("transaction"), body: RequestBody::Videoroom(body) })
}

/// The request a validated `videoroom-ctl` stands for.
fn control(session: String, fields: &Map<String, Value>) -> Result<R, String> {
    let option = fields.get("option").and_then(Value::as_str).unwrap_or_default();
    let key = option.replace('-', "_");
    let Some(Value::Object(o)) = fields.get(&key) else {
        return Err(format!("missing '{key}' field in request"));
    };
    let o = Fields(o);
    let flag = |k: &str| o.0.get(k).and_then(Value::as_bool);
    Ok(match option {
        // The feed's id, or the publisher's when absent.
        "trickle" => R::Trickle { session: o.opt_s("session").unwrap_or(session), candidates: o.candidates() },
        "feed-attach" => R::FeedAttach { session, publisher: o.s("publisher"), feed: o.s("session") },
        "feed-answer" => R::FeedAnswer { session, feed: o.s("session"), sdp: o.s("sdp") },
        "feed-detach" => R::FeedDetach { session, feed: o.s("session") },
        "invite-participants" => R::Invite { session, participants: o.strings("participants") },
        "update" => R::SessionUpdate {
            session,
            audio: flag("audio"),
            video: flag("video"),
            bitrate: o.0.get("bitrate").and_then(Value::as_i64),
        },
        _ => R::Configure { session, active_participants: o.strings("active_participants") },
    })
}

/// The 4.1 wording of a failed conference request `req` whose sylkRTC-2 text is `error`
/// (`conference::errors::ConfError`'s): 4.1 prefixed `videoroom-ctl` errors with the option and
/// said `video room session ID`. Texts 4.1 did not have pass unchanged.
pub fn error_text(req: &R, error: &str) -> String {
    let unknown = |option: &str, id: &str| format!("{option}: unknown video room session ID specified: {id}");
    if let Some(id) = error.strip_prefix("Unknown room session: ") {
        return match req {
            R::Leave { .. } => format!("Unknown video room session ID specified: {id}"),
            R::Trickle { .. } => unknown("trickle", id),
            R::FeedAttach { .. } => unknown("feed-attach", id),
            R::FeedAnswer { .. } => unknown("feed-answer", id),
            R::FeedDetach { .. } => unknown("feed-detach", id),
            R::Invite { .. } => unknown("invite-participants", id),
            R::SessionUpdate { .. } => format!("update: unknown video room session: {id}"),
            R::Configure { .. } => format!("configure-room: unknown video room session: {id}"),
            _ => error.to_string(),
        };
    }
    match req {
        R::Join { session, account, .. } => {
            if let Some(uri) = error.strip_prefix("is not allowed to join room ") {
                return format!("{account} is not allowed to join room {uri}");
            }
            if error.starts_with("Session ID ") && error.ends_with(" already in use") {
                return format!("Video room session ID ({session}) already in use");
            }
        }
        R::FeedAttach { feed, publisher, .. } => {
            if error.starts_with("Video room session ID ") && error.ends_with(" already in use") {
                return format!("feed-attach: video room session ID ({feed}) already in use");
            }
            if error.starts_with("Unknown publisher room session to attach to: ") {
                return format!("feed-attach: unknown publisher video room session ID specified: {publisher}");
            }
        }
        // The feed is unknown, or not one of this publisher session's (4.1 looked only at the feed).
        R::FeedAnswer { feed, .. } if error.ends_with(&format!("is not an attached feed of {}", req.session())) => {
            return unknown("feed-answer", feed);
        }
        R::FeedDetach { feed, .. } => {
            if error.starts_with("Unknown room session to detach: ") {
                return unknown("feed-detach", feed);
            }
            if error.contains(" is not an attached feed of ") {
                return format!("feed-detach: {error}");
            }
        }
        R::Configure { .. } if error.starts_with("unknown participant session id: ") => {
            return format!("configure-room: {error}");
        }
        _ => {}
    }
    error.to_string()
}

/// `{"sylkrtc":"videoroom_event","session":S,…}` of publisher session `session`, or `None` for
/// an event sylkRTC-1 has no words for.
pub(super) fn encode(session: &str, event: &V) -> Option<String> {
    let o = JsonObject::sylkrtc("videoroom_event").str("session", session);
    let state = |o: JsonObject, data: JsonObject| o.str("event", "state").obj("data", data);
    let with = |o: JsonObject, event: &str, data: JsonObject| o.str("event", event).obj("data", data);
    let new = JsonObject::new;
    Some(
        match event {
            V::Progress => state(o, new().str("state", "progress")),
            V::Accepted { sdp, .. } => state(o, new().str("state", "accepted").str("sdp", sdp)),
            V::Established => state(o, new().str("state", "established")),
            V::Terminated { reason } => match reason {
                Some(r) => state(o, new().str("state", "terminated").str("reason", r)),
                None => state(o, new().str("state", "terminated")),
            },
            V::InitialPublishers(p) => with(o, "initial_publishers", new().raw("publishers", &publishers(p))),
            V::PublishersJoined(p) => with(o, "publishers_joined", new().raw("publishers", &publishers(p))),
            V::PublishersLeft(ids) => with(o, "publishers_left", new().raw("publishers", &strings(ids))),
            V::FeedAttached { feed, sdp } => with(o, "feed_attached", new().str("sdp", sdp).str("subscription", feed)),
            V::FeedEstablished { feed } => {
                with(o, "feed_established", new().str("state", "established").str("subscription", feed))
            }
            // 2017 master's `VideoroomConfigurationEvent`: flat, in its declaration order.
            V::Configure { originator, active_participants } => JsonObject::sylkrtc("videoroom_event")
                .str("event", "configure-room")
                .str("session", session)
                .str("originator", originator)
                .raw("active_participants", &strings(active_participants)),
            V::Message { .. } | V::Composing { .. } | V::MessageDelivery { .. } | V::MuteAudio { .. } => return None,
            V::RaisedHands(_) | V::AudioLevels(_) => return None,
        }
        .finish(),
    )
}

/// 4.1's `conference_invite` account event: the inviter's account and display name (`null` when
/// it has none), the room.
pub(super) fn conference_invite(account: &str, room: &str, originator: &Identity) -> String {
    let who = JsonObject::new().str("uri", &originator.uri).opt_str("display_name", originator.display_name.as_deref());
    JsonObject::sylkrtc("account_event")
        .str("account", account)
        .str("event", "conference_invite")
        .obj("data", JsonObject::new().obj("originator", who).str("room", room))
        .finish()
}

fn strings(items: &[String]) -> String {
    Value::from(items.to_vec()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::videoroom::Publisher;
    use crate::api::{sylkrtc1, AccountEvent, Event};

    fn body(text: &str) -> Result<R, DecodeError> {
        sylkrtc1::decode(text).map(|r| match r.body {
            RequestBody::Videoroom(v) => v,
            other => panic!("not a videoroom request: {other:?}"),
        })
    }

    /// sylkrtc.js 0.9.6 `lib/conference.js`: the requests as it builds them.
    #[test]
    fn requests_as_0_9_6_sends_them() {
        let join = r#"{"sylkrtc":"videoroom-join","transaction":"t","account":"sip:a@x.com","session":"P","uri":"room@conf.x.com","sdp":"v=0","audio":false}"#;
        let want = R::Join {
            session: "P".into(),
            account: "a@x.com".into(),
            uri: "room@conf.x.com".into(),
            sdp: "v=0".into(),
            audio: true,
            video: true,
        };
        assert_eq!(body(join), Ok(want), "4.1 had no audio/video flags");
        let cases = [
            (
                r#"{"option":"trickle","trickle":{"candidates":[{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}]}}"#,
                R::Trickle {
                    session: "P".into(),
                    candidates: vec![crate::api::IceCandidate {
                        candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
                        sdp_mline_index: 0,
                        sdp_mid: "0".into(),
                    }],
                },
            ),
            (
                r#"{"option":"trickle","trickle":{"session":"F","candidates":[]}}"#,
                R::Trickle { session: "F".into(), candidates: vec![] },
            ),
            (
                r#"{"option":"feed-attach","feed_attach":{"session":"F","publisher":"Q"}}"#,
                R::FeedAttach { session: "P".into(), publisher: "Q".into(), feed: "F".into() },
            ),
            (
                r#"{"option":"feed-answer","feed_answer":{"session":"F","sdp":"v=0"}}"#,
                R::FeedAnswer { session: "P".into(), feed: "F".into(), sdp: "v=0".into() },
            ),
            (
                r#"{"option":"feed-detach","feed_detach":{"session":"F"}}"#,
                R::FeedDetach { session: "P".into(), feed: "F".into() },
            ),
            (
                r#"{"option":"invite-participants","invite_participants":{"participants":["sip:b@x.com","b@x.com","c@x.com"]}}"#,
                R::Invite { session: "P".into(), participants: vec!["b@x.com".into(), "c@x.com".into()] },
            ),
            (
                r#"{"option":"update","update":{"video":false}}"#,
                R::SessionUpdate { session: "P".into(), audio: None, video: Some(false), bitrate: None },
            ),
            (
                r#"{"option":"configure-room","configure_room":{"active_participants":["Q"]}}"#,
                R::Configure { session: "P".into(), active_participants: vec!["Q".into()] },
            ),
        ];
        for (rest, want) in cases {
            let text = format!(r#"{{"sylkrtc":"videoroom-ctl","transaction":"t","session":"P",{}"#, &rest[1..]);
            assert_eq!(body(&text), Ok(want), "{text}");
        }
        assert_eq!(
            body(r#"{"sylkrtc":"videoroom-terminate","transaction":"t","session":"P"}"#),
            Ok(R::Leave { session: "P".into() })
        );
    }

    #[test]
    fn invalid_control_requests_are_answered() {
        let err = |text: &str| match sylkrtc1::decode(text) {
            Err(e) => e.reply().map(|r| match r {
                Event::Error { error, .. } => error,
                other => panic!("{other:?}"),
            }),
            Ok(r) => panic!("decoded {r:?}"),
        };
        let ctl = |rest: &str| format!(r#"{{"sylkrtc":"videoroom-ctl","transaction":"t","session":"P"{rest}}}"#);
        assert_eq!(err(&ctl(r#","option":"feed-attach""#)).unwrap(), "missing 'feed_attach' field in request");
        assert_eq!(
            err(&ctl(r#","option":"feed-attach","feed_attach":{"session":"F"}"#)).unwrap(),
            "Mandatory property 'publisher' of 'VideoRoomControlFeedAttachRequest' object is missing"
        );
        assert!(err(&ctl(r#","option":"mute""#)).unwrap().starts_with("Invalid value for 'option' property: 'mute'"));
        assert_eq!(
            err(r#"{"sylkrtc":"videoroom-join","transaction":"t","session":"P","account":"a@x.com","uri":"r@x.com"}"#)
                .unwrap(),
            "Mandatory property 'sdp' of 'VideoRoomJoinRequest' object is missing"
        );
        // No transaction: nothing to answer.
        assert_eq!(err(r#"{"sylkrtc":"videoroom-ctl","session":"P","option":"trickle"}"#), None);
    }

    /// `handler.py` at release-4.1.0 (`_OH_videoroom_*`) and 2017 master for `update` and
    /// `configure-room`; the sylkRTC-2 texts are `ConfError`'s.
    #[test]
    fn errors_in_4_1_words() {
        let join = R::Join {
            session: "P".into(),
            account: "a@x.com".into(),
            uri: "r@x.com".into(),
            sdp: String::new(),
            audio: true,
            video: true,
        };
        let attach = R::FeedAttach { session: "P".into(), publisher: "Q".into(), feed: "F".into() };
        let answer = R::FeedAnswer { session: "P".into(), feed: "F".into(), sdp: String::new() };
        let detach = R::FeedDetach { session: "P".into(), feed: "F".into() };
        let cases = [
            (&join, "Session ID P already in use", "Video room session ID (P) already in use"),
            (&join, "is not allowed to join room r@x.com", "a@x.com is not allowed to join room r@x.com"),
            (&join, "Unknown account specified: a@x.com", "Unknown account specified: a@x.com"),
            (&join, "Room r@x.com is full", "Room r@x.com is full"),
            (
                &R::Leave { session: "P".into() },
                "Unknown room session: P",
                "Unknown video room session ID specified: P",
            ),
            (
                &R::Trickle { session: "F".into(), candidates: vec![] },
                "Unknown room session: F",
                "trickle: unknown video room session ID specified: F",
            ),
            (&attach, "Unknown room session: P", "feed-attach: unknown video room session ID specified: P"),
            (
                &attach,
                "Video room session ID F already in use",
                "feed-attach: video room session ID (F) already in use",
            ),
            (
                &attach,
                "Unknown publisher room session to attach to: Q",
                "feed-attach: unknown publisher video room session ID specified: Q",
            ),
            (&answer, "Unknown room session: F", "feed-answer: unknown video room session ID specified: F"),
            (&answer, "F is not an attached feed of P", "feed-answer: unknown video room session ID specified: F"),
            (&detach, "Unknown room session: P", "feed-detach: unknown video room session ID specified: P"),
            (&detach, "Unknown room session to detach: F", "feed-detach: unknown video room session ID specified: F"),
            (&detach, "F is not an attached feed of P", "feed-detach: F is not an attached feed of P"),
            (
                &R::Invite { session: "P".into(), participants: vec![] },
                "Unknown room session: P",
                "invite-participants: unknown video room session ID specified: P",
            ),
            (
                &R::SessionUpdate { session: "P".into(), audio: None, video: None, bitrate: None },
                "Unknown room session: P",
                "update: unknown video room session: P",
            ),
            (
                &R::Configure { session: "P".into(), active_participants: vec![] },
                "unknown participant session id: Z",
                "configure-room: unknown participant session id: Z",
            ),
        ];
        for (req, ours, theirs) in cases {
            assert_eq!(error_text(req, ours), theirs, "{req:?}");
            // The call layer's rewording (`sylkrtc1::error_text`) leaves them alone.
            assert_eq!(sylkrtc1::error_text(theirs), theirs);
        }
    }

    /// `handler.py` at release-4.1.0: `dict(sylkrtc='videoroom_event', session=…, event=…,
    /// data=…)`; sylkrtc.js 0.9.6 `ConferenceCall._handleEvent` reads `message.data.*`.
    #[test]
    fn events_as_4_1_wrote_them() {
        let enc = |e: V| sylkrtc1::encode(&Event::Videoroom { session: "P".into(), event: e });
        let head = r#"{"sylkrtc":"videoroom_event","session":"P","event":"#;
        let cases = [
            (V::Progress, r#""state","data":{"state":"progress"}}"#),
            (
                V::Accepted { sdp: "v=0".into(), audio: true, video: true },
                r#""state","data":{"state":"accepted","sdp":"v=0"}}"#,
            ),
            (V::Established, r#""state","data":{"state":"established"}}"#),
            (V::Terminated { reason: None }, r#""state","data":{"state":"terminated"}}"#),
            (
                V::Terminated { reason: Some("media timeout".into()) },
                r#""state","data":{"state":"terminated","reason":"media timeout"}}"#,
            ),
            (
                V::InitialPublishers(vec![Publisher {
                    id: "Q".into(),
                    uri: "b@x.com".into(),
                    display_name: "".into(),
                }]),
                r#""initial_publishers","data":{"publishers":[{"id":"Q","uri":"b@x.com","display_name":""}]}}"#,
            ),
            (
                V::PublishersJoined(vec![Publisher {
                    id: "Q".into(),
                    uri: "b@x.com".into(),
                    display_name: "B".into(),
                }]),
                r#""publishers_joined","data":{"publishers":[{"id":"Q","uri":"b@x.com","display_name":"B"}]}}"#,
            ),
            (V::PublishersLeft(vec!["Q".into()]), r#""publishers_left","data":{"publishers":["Q"]}}"#),
            (
                V::FeedAttached { feed: "F".into(), sdp: "v=0".into() },
                r#""feed_attached","data":{"sdp":"v=0","subscription":"F"}}"#,
            ),
            (
                V::FeedEstablished { feed: "F".into() },
                r#""feed_established","data":{"state":"established","subscription":"F"}}"#,
            ),
        ];
        for (event, tail) in cases {
            assert_eq!(enc(event).unwrap(), format!("{head}{tail}"));
        }
        assert_eq!(
            enc(V::Configure { originator: "videoroom".into(), active_participants: vec!["Q".into()] }).unwrap(),
            r#"{"sylkrtc":"videoroom_event","event":"configure-room","session":"P","originator":"videoroom","active_participants":["Q"]}"#
        );
        assert_eq!(enc(V::RaisedHands(vec![])), None);
        assert_eq!(enc(V::MuteAudio { originator: "Q".into() }), None);
        let invite = Event::Account {
            account: "c@x.com".into(),
            event: AccountEvent::ConferenceInvite {
                room: "room@conf.x.com".into(),
                session_id: "u-u-i-d".into(),
                originator: Identity { uri: "a@x.com".into(), display_name: None },
            },
        };
        assert_eq!(
            sylkrtc1::encode(&invite).unwrap(),
            r#"{"sylkrtc":"account_event","account":"c@x.com","event":"conference_invite","data":{"originator":{"uri":"a@x.com","display_name":null},"room":"room@conf.x.com"}}"#
        );
    }
}
