//! `sylkRTC-2` events (SylkServer ≥ 5.0, sylkrtc.js ≥ 0.9.9): flat fields, hyphenated names.

use super::json::JsonObject;
use super::{AccountEvent, Event, RegistrationState, SessionEvent, SessionState, UpdateState};

/// Encodes `event` as sylkRTC-2 JSON.
pub fn encode(event: &Event) -> String {
    match event {
        Event::Messaging(event) => super::messaging::encode(event),
        Event::Ready => JsonObject::sylkrtc("ready-event").finish(),
        Event::Ack { transaction } => JsonObject::sylkrtc("ack").str("transaction", transaction).finish(),
        Event::Error { transaction, error } => {
            JsonObject::sylkrtc("error").str("transaction", transaction).str("error", error).finish()
        }
        Event::Account { account, event } => {
            let o = JsonObject::sylkrtc("account-event").str("account", account);
            match event {
                AccountEvent::Registration(state) => {
                    let o = o.str("event", "registration-state");
                    match state {
                        RegistrationState::Registering => o.str("state", "registering"),
                        RegistrationState::Registered => o.str("state", "registered"),
                        RegistrationState::Failed { reason } => o.str("state", "failed").str("reason", reason),
                    }
                }
                AccountEvent::IncomingSession { session, originator, sdp, call_id, headers } => {
                    let o = o
                        .str("event", "incoming-session")
                        .str("session", session)
                        .obj("originator", identity(originator))
                        .str("sdp", sdp)
                        .str("call_id", call_id);
                    if headers.is_empty() {
                        o
                    } else {
                        o.pairs("headers", headers)
                    }
                }
                AccountEvent::MissedSession { originator } => {
                    o.str("event", "missed-session").obj("originator", identity(originator))
                }
                AccountEvent::Addressbook(event) => super::addressbook::encode(o, event),
            }
            .finish()
        }
        Event::Session { session, event } => {
            let o = JsonObject::sylkrtc("session-event").str("session", session);
            match event {
                SessionEvent::State(state) => {
                    let o = o.str("event", "state");
                    match state {
                        SessionState::Progress => o.str("state", "progress"),
                        SessionState::Proceeding { code } => o.str("state", "proceeding").num("code", i64::from(*code)),
                        SessionState::Ringing => o.str("state", "ringing"),
                        SessionState::EarlyMedia { sdp, call_id } => {
                            o.str("state", "early-media").str("sdp", sdp).str("call_id", call_id)
                        }
                        SessionState::Accepted { sdp, call_id, headers } => {
                            let mut o = o.str("state", "accepted");
                            if let Some(sdp) = sdp {
                                o = o.str("sdp", sdp);
                            }
                            if let Some(call_id) = call_id {
                                o = o.str("call_id", call_id);
                            }
                            if !headers.is_empty() {
                                o = o.pairs("headers", headers);
                            }
                            o
                        }
                        SessionState::Established => o.str("state", "established"),
                        SessionState::Terminated { reason } => o.str("state", "terminated").str("reason", reason),
                    }
                }
                SessionEvent::Update(update) => {
                    let o = o.str("event", "update");
                    match update {
                        UpdateState::Received { sdp } => o.str("state", "received").str("sdp", sdp),
                        UpdateState::Accepted { sdp } => o.str("state", "accepted").str("sdp", sdp),
                        UpdateState::Failed { reason } => o.str("state", "failed").str("reason", reason),
                    }
                }
            }
            .finish()
        }
    }
}

fn identity(id: &super::Identity) -> JsonObject {
    JsonObject::new().str("uri", &id.uri).opt_str("display_name", id.display_name.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Identity;

    #[test]
    fn spec_examples() {
        assert_eq!(encode(&Event::Ready), r#"{"sylkrtc":"ready-event"}"#);
        assert_eq!(encode(&Event::Ack { transaction: "t".into() }), r#"{"sylkrtc":"ack","transaction":"t"}"#);
        let e = Event::Account {
            account: "alice@example.com".into(),
            event: AccountEvent::Registration(RegistrationState::Failed { reason: "403 Forbidden".into() }),
        };
        assert_eq!(
            encode(&e),
            r#"{"sylkrtc":"account-event","account":"alice@example.com","event":"registration-state","state":"failed","reason":"403 Forbidden"}"#
        );
        let e = Event::Account {
            account: "alice@example.com".into(),
            event: AccountEvent::MissedSession {
                originator: Identity { uri: "bob@example.com".into(), display_name: None },
            },
        };
        assert_eq!(
            encode(&e),
            r#"{"sylkrtc":"account-event","account":"alice@example.com","event":"missed-session","originator":{"uri":"bob@example.com","display_name":null}}"#
        );
        let e =
            Event::Session { session: "s".into(), event: SessionEvent::State(SessionState::Proceeding { code: 183 }) };
        assert_eq!(
            encode(&e),
            r#"{"sylkrtc":"session-event","session":"s","event":"state","state":"proceeding","code":183}"#
        );
    }
}
