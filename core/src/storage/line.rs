//! Capture encoding: a request, or an outcome, as one line of JSON text (no newline inside:
//! serde_json escapes control characters in strings), and back.

use crate::storage::error::StoreError;
use crate::storage::request::StoreRequest;
use crate::storage::result::StoreResult;

/// A request or outcome line that does not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError(pub String);

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad storage line: {}", self.0)
    }
}

impl std::error::Error for LineError {}

/// `request` as one line.
pub fn encode_request(request: &StoreRequest) -> String {
    serde_json::to_string(request).expect("plain data serializes")
}

/// The request `line` encodes.
pub fn decode_request(line: &str) -> Result<StoreRequest, LineError> {
    serde_json::from_str(line).map_err(|e| LineError(e.to_string()))
}

/// An outcome as one line: `{"ok":…}` or `{"err":…}`.
pub fn encode_outcome(outcome: &Result<StoreResult, StoreError>) -> String {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "lowercase")]
    enum Outcome<'a> {
        Ok(&'a StoreResult),
        Err(&'a StoreError),
    }
    let outcome = match outcome {
        Ok(result) => Outcome::Ok(result),
        Err(error) => Outcome::Err(error),
    };
    serde_json::to_string(&outcome).expect("plain data serializes")
}

/// The outcome `line` encodes.
pub fn decode_outcome(line: &str) -> Result<Result<StoreResult, StoreError>, LineError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "lowercase", deny_unknown_fields)]
    enum Outcome {
        Ok(StoreResult),
        Err(StoreError),
    }
    match serde_json::from_str(line).map_err(|e| LineError(e.to_string()))? {
        Outcome::Ok(result) => Ok(Ok(result)),
        Outcome::Err(error) => Ok(Err(error)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::storage::message::{Direction, JournalStamp, MessageState, NewMessage, UnixMicros};
    use crate::storage::request::{AddressbookAction, AddressbookKind, RemoveSide};
    use crate::storage::result::{AccountInfo, AddOutcome, Addressbook, HistoryAnswer, JournalEntry};

    fn stamp() -> JournalStamp {
        JournalStamp { message_id: "m-1".into(), created_at: UnixMicros(7), timestamp: "2026-01-01T00:00:00Z".into() }
    }

    fn every_request() -> Vec<StoreRequest> {
        let message = NewMessage {
            account: "alice@example.com".into(),
            contact: "bob@example.com".into(),
            direction: Some(Direction::Outgoing),
            content_type: "text/plain".into(),
            content: "two\nlines \u{1} \"quoted\" ü".into(),
            message_id: "id-1".into(),
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            disposition: vec!["positive-delivery".into(), "display".into()],
            state: Some(MessageState::Pending),
            created_at: UnixMicros(1_767_225_600_000_000),
        };
        let account = || "alice@example.com".to_string();
        vec![
            StoreRequest::AddMessage { message: message.clone(), require_account: false },
            StoreRequest::AddMessage {
                message: NewMessage { direction: None, state: None, ..message },
                require_account: true,
            },
            StoreRequest::UpdateState { account: account(), message_id: "id-1".into(), state: MessageState::Displayed },
            StoreRequest::Journal {
                account: account(),
                message_id: Some("id-1".into()),
                since: None,
                limit: Some(5000),
            },
            StoreRequest::Journal { account: account(), message_id: None, since: Some(UnixMicros(-3)), limit: None },
            StoreRequest::MarkConversationRead {
                account: account(),
                contact: "bob@example.com".into(),
                stamp: stamp(),
            },
            StoreRequest::RemoveMessage {
                account: account(),
                contact: "bob@example.com".into(),
                message_id: "id-1".into(),
                side: RemoveSide::Receiver,
                stamp: stamp(),
            },
            StoreRequest::RemoveConversation { account: account(), contact: "bob@example.com".into(), stamp: stamp() },
            StoreRequest::TrimJournal { account: account(), keep: 10 },
            StoreRequest::StorePublicKey { account: account(), public_key: "KEY".into(), created_at: UnixMicros(1) },
            StoreRequest::LookupPublicKey { account: account() },
            StoreRequest::TouchAccount { account: account(), now: UnixMicros(2) },
            StoreRequest::GetAccount { account: account() },
            StoreRequest::SetApiToken { account: account(), token: "t".into(), expires_at: UnixMicros(3) },
            StoreRequest::History {
                account: account(),
                token: "t".into(),
                message_id: None,
                now: UnixMicros(4),
                limit: 5000,
            },
            StoreRequest::FetchAddressbook { account: account() },
            StoreRequest::UpdateAddressbook {
                account: account(),
                kind: AddressbookKind::Policy,
                action: AddressbookAction::Update,
                id: "p1".into(),
                data: json!({"id": "p1", "uri": "bob@example.com", "nested": [1, {"a": null}]}),
                max_items: 1000,
            },
        ]
    }

    fn every_outcome() -> Vec<Result<StoreResult, StoreError>> {
        let entry = JournalEntry {
            contact: "bob@example.com".into(),
            timestamp: "2026-01-01T00:00:00Z".into(),
            disposition: vec![],
            message_id: "id-1".into(),
            content_type: "text/plain".into(),
            content: "hi\r\n".into(),
            direction: Some(Direction::Incoming),
            state: Some(MessageState::Received),
            created_at: UnixMicros(9),
        };
        vec![
            Ok(StoreResult::Done),
            Ok(StoreResult::Added { outcome: AddOutcome::Duplicate }),
            Ok(StoreResult::Journal {
                entries: vec![entry.clone(), JournalEntry { direction: None, state: None, ..entry.clone() }],
            }),
            Ok(StoreResult::Removed { found: true }),
            Ok(StoreResult::Trimmed { dropped: 3 }),
            Ok(StoreResult::PublicKey { public_key: None }),
            Ok(StoreResult::PublicKey { public_key: Some("K".into()) }),
            Ok(StoreResult::Account {
                account: Some(AccountInfo { account: "a@b".into(), last_login: UnixMicros(1), token_expires: None }),
            }),
            Ok(StoreResult::History { answer: HistoryAnswer::Unauthorized }),
            Ok(StoreResult::History { answer: HistoryAnswer::Entries(vec![entry]) }),
            Ok(StoreResult::Addressbook {
                addressbook: Addressbook { contacts: vec![json!({"id": "c"})], groups: vec![], policies: vec![] },
            }),
            Err(StoreError::Unavailable("connection refused".into())),
            Err(StoreError::Constraint("duplicate key".into())),
            Err(StoreError::NotFound),
            Err(StoreError::Corrupt("bad json".into())),
        ]
    }

    #[test]
    fn every_request_round_trips_on_one_line() {
        for request in every_request() {
            let line = encode_request(&request);
            assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
            assert_eq!(decode_request(&line).unwrap(), request, "{line}");
        }
    }

    #[test]
    fn every_outcome_round_trips_on_one_line() {
        for outcome in every_outcome() {
            let line = encode_outcome(&outcome);
            assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
            assert_eq!(decode_outcome(&line).unwrap(), outcome, "{line}");
        }
    }

    #[test]
    fn the_line_format_is_stable() {
        let request = StoreRequest::Journal { account: "a@b".into(), message_id: None, since: None, limit: Some(2) };
        assert_eq!(
            encode_request(&request),
            r#"{"op":"journal","account":"a@b","message_id":null,"since":null,"limit":2}"#
        );
        assert_eq!(encode_outcome(&Err(StoreError::NotFound)), r#"{"err":{"error":"not-found"}}"#);
        assert_eq!(
            encode_outcome(&Ok(StoreResult::Removed { found: false })),
            r#"{"ok":{"result":"removed","found":false}}"#
        );
    }

    #[test]
    fn bad_lines_are_errors_not_panics() {
        for line in ["", "{", "null", r#"{"op":"nope"}"#, r#"{"op":"journal"}"#, r#"{"ok":1}"#, r#"{"ok":{},"err":{}}"#]
        {
            assert!(decode_request(line).is_err(), "{line}");
            assert!(decode_outcome(line).is_err(), "{line}");
        }
        assert!(decode_outcome(r#"{"maybe":{"result":"done"}}"#).is_err());
        assert!(decode_request(r#"{"op":"update-state","account":"a","message_id":"m","state":"bogus"}"#).is_err());
    }
}
