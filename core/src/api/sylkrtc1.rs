//! `sylkRTC-1` as SylkServer 3.1–4.1 served it and sylkrtc.js 0.9.x reads it (spec §8.1, §8.2;
//! the audit is `docs/sylkrtc1-audit.md`): events `event` / `account_event` / `session_event` with
//! underscored names and the details in a nested `data` object; the callers' identity an object
//! `{uri, display_name}`; 4.1's error texts; only 4.1's requests (and `ping`).
//! States sylkRTC-1 never had (`proceeding`, `ringing`, `early-media`, re-INVITE updates) have no
//! encoding and are not sent.

use super::json::JsonObject;
use super::schema::{self, Base, Field, Kind, RequestSchema};
use super::{
    AccountEvent, DecodeError, Event, Identity, RegistrationState, Request, RequestBody, SessionEvent, SessionState,
};
use serde_json::{Map, Value};

/// The requests SylkServer 4.1 served (`sylkrtc_models` in `handler.py`), and `ping`, which it did
/// not know but which costs nothing to ack.
const REQUESTS: &[&str] = &[
    "ping",
    "account-add",
    "account-remove",
    "account-register",
    "account-unregister",
    "account-devicetoken",
    "session-create",
    "session-answer",
    "session-trickle",
    "session-terminate",
    "videoroom-join",
    "videoroom-ctl",
    "videoroom-terminate",
];

/// 4.1's `AccountDeviceTokenRequest`: both tokens optional (sylkrtc.js 0.9.6 `setDeviceToken`).
static DEVICE_TOKEN: RequestSchema = RequestSchema {
    kind: "account-devicetoken",
    class: "AccountDeviceTokenRequest",
    base: Base::Account,
    fields: &[
        Field { name: "old_token", kind: Kind::Str, optional: true },
        Field { name: "new_token", kind: Kind::Str, optional: true },
    ],
};

/// Decodes a request of a sylkRTC-1 connection. Request types SylkServer 4.1 did not have
/// (`session-update`, `session-dtmf-info`, messaging, …) are unknown here, answered
/// `Unknown request type: …` when they carry a transaction (4.1 did not answer at all, which
/// leaves the client's callback pending). `account-devicetoken` has 4.1's fields
/// (`old_token`, `new_token`) and decodes to [`RequestBody::Unsupported`]; the conference
/// requests (`videoroom-join`, `videoroom-ctl`, `videoroom-terminate`) are 4.1's
/// ([`sylkrtc1_videoroom`](super::sylkrtc1_videoroom)).
pub fn decode(text: &str) -> Result<Request, DecodeError> {
    let decoded = super::decode(text);
    let kind = match &decoded {
        Ok(request) => request.body.kind(),
        Err(DecodeError::UnknownType { kind, .. } | DecodeError::Invalid { kind, .. }) => kind.as_str(),
        Err(_) => return decoded,
    };
    if let Some(schema) = own_schema(kind) {
        return decode_own(schema, text);
    }
    if let Some(conference) = super::sylkrtc1_videoroom::decode(kind, text) {
        return conference;
    }
    if REQUESTS.contains(&kind) {
        return decoded;
    }
    let kind = kind.to_string();
    let transaction = match decoded {
        Ok(request) => Some(request.transaction),
        Err(DecodeError::UnknownType { transaction, .. } | DecodeError::Invalid { transaction, .. }) => transaction,
        Err(_) => None,
    };
    Err(DecodeError::UnknownType { kind, transaction })
}

/// The sylkRTC-1 model of `kind` where it differs from sylkRTC-2's (or sylkRTC-2 has none).
fn own_schema(kind: &str) -> Option<&'static RequestSchema> {
    [&DEVICE_TOKEN].into_iter().find(|s| s.kind == kind)
}

/// Validates `text` against `schema`; the request is one sylkgw does not carry out.
fn decode_own(schema: &'static RequestSchema, text: &str) -> Result<Request, DecodeError> {
    let msg: Map<String, Value> = serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
    let transaction = msg.get("transaction").and_then(Value::as_str).map(String::from);
    let fields = schema::validate(schema, &msg).map_err(|message| DecodeError::Invalid {
        kind: schema.kind.to_string(),
        transaction: transaction.clone(),
        message,
    })?;
    let account = fields.get("account").and_then(Value::as_str).map(String::from);
    Ok(Request {
        transaction: transaction.unwrap_or_default(),
        body: RequestBody::Unsupported { kind: schema.kind, account },
    })
}

/// SylkServer 4.1's wording of an `error` whose sylkRTC-2 text differs (`handler.py`'s
/// `APIError`s); other texts pass unchanged.
pub fn error_text(error: &str) -> String {
    if let Some((_, account)) =
        error.strip_prefix("Unknown account specified for ").and_then(|rest| rest.split_once(": "))
    {
        return format!("Unknown account specified: {account}");
    }
    if let Some(session) = error.strip_prefix("Unknown session ") {
        return format!("Unknown session specified: {session}");
    }
    if let Some(session) = error.strip_prefix("Session ID ").and_then(|rest| rest.strip_suffix(" already in use")) {
        return format!("Session ID ({session}) already in use");
    }
    if error.starts_with("Cannot answer outgoing session") {
        return "Cannot answer outgoing session".into();
    }
    if error.starts_with("Invalid state for answering session") {
        return "Invalid state for session answer".into();
    }
    error.to_string()
}

/// `{"uri": …, "display_name": …}`, the `SessionPartyIdentity.__dict__` of 3.1–4.1: an absent
/// display name is `""`.
fn identity(id: &Identity) -> JsonObject {
    JsonObject::new().str("uri", &id.uri).str("display_name", id.display_name.as_deref().unwrap_or(""))
}

/// Encodes `event` as sylkRTC-1 JSON, or `None` if the dialect cannot express it.
pub fn encode(event: &Event) -> Option<String> {
    Some(match event {
        // sylkRTC-1 predates messaging.
        Event::Messaging(_) => return None,
        Event::Ready => JsonObject::sylkrtc("event").str("event", "ready").finish(),
        Event::Ack { transaction } => JsonObject::sylkrtc("ack").str("transaction", transaction).finish(),
        Event::Error { transaction, error } => {
            JsonObject::sylkrtc("error").str("transaction", transaction).str("error", &error_text(error)).finish()
        }
        Event::Account { account, event } => {
            let o = JsonObject::sylkrtc("account_event").str("account", account);
            match event {
                AccountEvent::Registration(state) => {
                    let data = match state {
                        RegistrationState::Registering => JsonObject::new().str("state", "registering"),
                        RegistrationState::Registered => JsonObject::new().str("state", "registered"),
                        RegistrationState::Failed { reason } => {
                            JsonObject::new().str("state", "failed").str("reason", reason)
                        }
                    };
                    o.str("event", "registration_state").obj("data", data)
                }
                // 3.1–4.1 `handler.py`: `data=dict(originator=…__dict__, sdp=jsep['sdp'])`; no
                // call_id, no headers.
                AccountEvent::IncomingSession { session, originator, sdp, .. } => o
                    .str("session", session)
                    .str("event", "incoming_session")
                    .obj("data", JsonObject::new().obj("originator", identity(originator)).str("sdp", sdp)),
                AccountEvent::MissedSession { originator } => o
                    .str("event", "missed_session")
                    .obj("data", JsonObject::new().obj("originator", identity(originator))),
                // 4.1 had no addressbook.
                AccountEvent::Addressbook(_) => return None,
                AccountEvent::ConferenceInvite { room, originator, .. } => {
                    return Some(super::sylkrtc1_videoroom::conference_invite(account, room, originator))
                }
            }
            .finish()
        }
        Event::Session { session, event } => {
            let data = match event {
                SessionEvent::State(SessionState::Progress) => JsonObject::new().str("state", "progress"),
                // The answer SDP only for outgoing calls; no call_id, no headers.
                SessionEvent::State(SessionState::Accepted { sdp, .. }) => {
                    let d = JsonObject::new().str("state", "accepted");
                    match sdp {
                        Some(sdp) => d.str("sdp", sdp),
                        None => d,
                    }
                }
                SessionEvent::State(SessionState::Established) => JsonObject::new().str("state", "established"),
                SessionEvent::State(SessionState::Terminated { reason }) => {
                    JsonObject::new().str("state", "terminated").str("reason", reason)
                }
                _ => return None,
            };
            JsonObject::sylkrtc("session_event")
                .str("session", session)
                .str("event", "state")
                .obj("data", data)
                .finish()
        }
        Event::Videoroom { session, event } => return super::sylkrtc1_videoroom::encode(session, event),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Identity;

    #[test]
    fn original_shapes() {
        assert_eq!(encode(&Event::Ready).unwrap(), r#"{"sylkrtc":"event","event":"ready"}"#);
        let e = Event::Account {
            account: "a@b".into(),
            event: AccountEvent::Registration(RegistrationState::Failed { reason: "408 Request Timeout".into() }),
        };
        assert_eq!(
            encode(&e).unwrap(),
            r#"{"sylkrtc":"account_event","account":"a@b","event":"registration_state","data":{"state":"failed","reason":"408 Request Timeout"}}"#
        );
        let e = Event::Session { session: "s".into(), event: SessionEvent::State(SessionState::Ringing) };
        assert_eq!(encode(&e), None);
    }

    /// SylkServer 3.1–4.1 `handler.py`: `data=dict(originator=session.remote_identity.__dict__, sdp=…)`;
    /// sylkrtc.js 0.9.6 `call.js` reads `caller.uri`, `caller.display_name`.
    #[test]
    fn incoming_session_originator_is_an_object() {
        let e = Event::Account {
            account: "alice@example.com".into(),
            event: AccountEvent::IncomingSession {
                session: "0123456789abcdef0123456789abcdef".into(),
                originator: Identity { uri: "bob@example.com".into(), display_name: Some("Bob".into()) },
                sdp: "v=0\r\n".into(),
                call_id: "c@x".into(),
                headers: vec![("X-A".into(), "1".into())],
            },
        };
        assert_eq!(
            encode(&e).unwrap(),
            r#"{"sylkrtc":"account_event","account":"alice@example.com","session":"0123456789abcdef0123456789abcdef","event":"incoming_session","data":{"originator":{"uri":"bob@example.com","display_name":"Bob"},"sdp":"v=0\r\n"}}"#
        );
    }

    #[test]
    fn missed_session_without_display_name_is_empty_string() {
        let e = Event::Account {
            account: "alice@example.com".into(),
            event: AccountEvent::MissedSession {
                originator: Identity { uri: "bob@example.com".into(), display_name: None },
            },
        };
        assert_eq!(
            encode(&e).unwrap(),
            r#"{"sylkrtc":"account_event","account":"alice@example.com","event":"missed_session","data":{"originator":{"uri":"bob@example.com","display_name":""}}}"#
        );
    }

    #[test]
    fn session_states_nest_under_data() {
        let accepted =
            SessionState::Accepted { sdp: Some("v=0".into()), call_id: Some("c".into()), headers: Vec::new() };
        let cases = [
            (SessionState::Progress, r#"{"state":"progress"}"#),
            (accepted, r#"{"state":"accepted","sdp":"v=0"}"#),
            (SessionState::Accepted { sdp: None, call_id: None, headers: Vec::new() }, r#"{"state":"accepted"}"#),
            (SessionState::Established, r#"{"state":"established"}"#),
            (
                SessionState::Terminated { reason: "486 Busy Here".into() },
                r#"{"state":"terminated","reason":"486 Busy Here"}"#,
            ),
        ];
        for (state, data) in cases {
            let e = Event::Session { session: "s".into(), event: SessionEvent::State(state) };
            let want = format!(r#"{{"sylkrtc":"session_event","session":"s","event":"state","data":{data}}}"#);
            assert_eq!(encode(&e).unwrap(), want);
        }
        for state in [
            SessionState::Proceeding { code: 180 },
            SessionState::EarlyMedia { sdp: "v=0".into(), call_id: "c".into() },
        ] {
            assert_eq!(encode(&Event::Session { session: "s".into(), event: SessionEvent::State(state) }), None);
        }
        let update = SessionEvent::Update(crate::api::UpdateState::Received { sdp: "v=0".into() });
        assert_eq!(encode(&Event::Session { session: "s".into(), event: update }), None);
    }

    /// `handler.py` at release-4.1.0: the `APIError` texts.
    #[test]
    fn errors_in_4_1_words() {
        let cases = [
            ("Unknown account specified for remove: a@b", "Unknown account specified: a@b"),
            ("Unknown account specified for register: a@b", "Unknown account specified: a@b"),
            ("Unknown account specified for unregister: a@b", "Unknown account specified: a@b"),
            ("Unknown account specified for token: a@b", "Unknown account specified: a@b"),
            ("Unknown account specified: a@b", "Unknown account specified: a@b"),
            ("Unknown session s1", "Unknown session specified: s1"),
            ("Session ID s1 already in use", "Session ID (s1) already in use"),
            ("Cannot answer outgoing session s1", "Cannot answer outgoing session"),
            ("Invalid state for answering session s1: accepted", "Invalid state for session answer"),
            ("Account a@b already added", "Account a@b already added"),
            ("SIP domain not allowed: b", "SIP domain not allowed: b"),
        ];
        for (ours, theirs) in cases {
            let e = Event::Error { transaction: "t".into(), error: ours.into() };
            assert_eq!(encode(&e).unwrap(), format!(r#"{{"sylkrtc":"error","transaction":"t","error":"{theirs}"}}"#));
        }
    }

    #[test]
    fn only_4_1_requests() {
        let kind = |text: &str| decode(text).map(|r| r.body.kind());
        assert_eq!(kind(r#"{"sylkrtc":"ping","transaction":"t"}"#), Ok("ping"));
        assert_eq!(kind(r#"{"sylkrtc":"session-terminate","transaction":"t","session":"s"}"#), Ok("session-terminate"));
        for newer in [
            r#"{"sylkrtc":"session-update","transaction":"t","session":"s","sdp":"v=0"}"#,
            r#"{"sylkrtc":"session-dtmf-info","transaction":"t","session":"s","digit":"1"}"#,
            r#"{"sylkrtc":"session-update","transaction":"t"}"#,
            r#"{"sylkrtc":"videoroom-leave","transaction":"t","session":"s"}"#,
        ] {
            let want = serde_json::from_str::<Value>(newer).unwrap()["sylkrtc"].as_str().unwrap().to_string();
            assert_eq!(
                decode(newer),
                Err(DecodeError::UnknownType { kind: want, transaction: Some("t".into()) }),
                "{newer}"
            );
        }
        // 4.1's devicetoken fields (sylkrtc.js 0.9.6 `setDeviceToken`); the conference requests
        // (`sylkrtc1_videoroom`).
        let r = decode(
            r#"{"sylkrtc":"account-devicetoken","transaction":"t","account":"sip:a@b.c","old_token":null,"new_token":"x"}"#,
        );
        assert_eq!(
            r.unwrap().body,
            RequestBody::Unsupported { kind: "account-devicetoken", account: Some("a@b.c".into()) }
        );
        let r = decode(
            r#"{"sylkrtc":"videoroom-ctl","transaction":"t","session":"s","option":"trickle","trickle":{"candidates":[]}}"#,
        );
        assert_eq!(r.unwrap().body.kind(), "videoroom-session-trickle");
        assert_eq!(kind(r#"{"sylkrtc":"videoroom-terminate","transaction":"t","session":"s"}"#), Ok("videoroom-leave"));
        let bad = decode(r#"{"sylkrtc":"videoroom-ctl","transaction":"t","session":"s","option":"x"}"#).unwrap_err();
        assert!(matches!(bad, DecodeError::Invalid { transaction: Some(_), .. }), "{bad:?}");
        // No transaction: nothing to answer (4.1 only logged it).
        let e = decode(r#"{"sylkrtc":"account-remove","account":"a@b.c"}"#).unwrap_err();
        assert_eq!(e.reply(), None);
        let e = decode(r#"{"sylkrtc":"videoroom-ctl","session":"s","option":"trickle"}"#).unwrap_err();
        assert_eq!(e.reply(), None);
    }
}
