//! `sylkRTC-1` events (SylkServer 3.0–4.1, spec §8.1): `event` / `account_event` /
//! `session_event` with underscored names and the details in a nested `data` object.
//! States sylkRTC-1 never had (`proceeding`, `ringing`, `early-media`, re-INVITE updates) have no
//! encoding and are not sent.

use super::json::JsonObject;
use super::{AccountEvent, Event, RegistrationState, SessionEvent, SessionState};

/// Encodes `event` as sylkRTC-1 JSON, or `None` if the dialect cannot express it.
pub fn encode(event: &Event) -> Option<String> {
    Some(match event {
        Event::Ready => JsonObject::sylkrtc("event").str("event", "ready").finish(),
        Event::Ack { transaction } => JsonObject::sylkrtc("ack").str("transaction", transaction).finish(),
        Event::Error { transaction, error } => {
            JsonObject::sylkrtc("error").str("transaction", transaction).str("error", error).finish()
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
                AccountEvent::IncomingSession { session, originator, sdp, .. } => o
                    .str("session", session)
                    .str("event", "incoming_session")
                    .obj("data", JsonObject::new().str("originator", &originator.uri).str("sdp", sdp)),
                AccountEvent::MissedSession { originator } => o.str("event", "missed_session").obj(
                    "data",
                    JsonObject::new().obj(
                        "originator",
                        JsonObject::new()
                            .str("uri", &originator.uri)
                            .opt_str("display_name", originator.display_name.as_deref()),
                    ),
                ),
            }
            .finish()
        }
        Event::Session { session, event } => {
            let data = match event {
                SessionEvent::State(SessionState::Progress) => JsonObject::new().str("state", "progress"),
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
