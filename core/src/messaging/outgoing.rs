//! The MESSAGE bodies the gateway sends, as SylkServer's webrtcgateway sends them
//! (`_send_sip_message`, `_send_in_dialog_sip_message`, `_RH_account_disposition_notification`,
//! `_send_simple_sip_message`): chat lines and IMDNs wrapped in CPIM, sync entries as bare JSON.

use std::fmt;

use serde_json::{Map, Value};

use super::body::{types, SyncEntry};
use super::content::{self, ContentError};
use super::content_type::ContentType;
use super::cpim::{CpimError, CpimMessage};
use super::identity::Identity;
use super::imdn::{self, Imdn, ImdnError};

/// A body to send: the SIP `Content-Type` and the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingBody {
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// The dispositions an outgoing chat message asks for (RFC 5438 §6.2): SylkServer asks for
/// both out of dialog and none in a call's dialog.
pub const RECEIPTS: [&str; 2] = ["positive-delivery", "display"];

/// Why a body cannot be built from what a client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutgoingError {
    /// The `content_type` of the request is not `type/subtype`.
    ContentType,
    Content(ContentError),
    Cpim(CpimError),
    Imdn(ImdnError),
}

impl fmt::Display for OutgoingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutgoingError::ContentType => f.write_str("invalid content_type"),
            OutgoingError::Content(e) => e.fmt(f),
            OutgoingError::Cpim(e) => e.fmt(f),
            OutgoingError::Imdn(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for OutgoingError {}

/// An `account-message` (or `session-message`) as `message/cpim`: `From` the account with its
/// display name, `To` the target, `DateTime` the request's `timestamp`, `imdn.Message-ID` its
/// `message_id`, and, if `receipts`, `imdn.Disposition-Notification: positive-delivery,
/// display`. `text/*` content is sent as UTF-8 with `charset=utf-8`, other types byte per
/// character ([`content::to_wire`]).
pub fn chat_message(
    from: &Identity,
    to: &Identity,
    message_id: &str,
    datetime: &str,
    content: &str,
    content_type: &str,
    receipts: bool,
) -> Result<OutgoingBody, OutgoingError> {
    let media = ContentType::parse(content_type).map_err(|_| OutgoingError::ContentType)?;
    let charset = media.is_text().then_some("utf-8");
    let media = ContentType::new(&media.media_type, charset).map_err(|_| OutgoingError::ContentType)?;
    let payload = content::to_wire(content, &media).map_err(OutgoingError::Content)?;
    let mut message = CpimMessage::new(media, payload);
    message.from = Some(from.clone());
    message.to = vec![to.clone()];
    message.datetime = Some(datetime.to_string());
    message.message_id = Some(message_id.to_string());
    if receipts {
        message.disposition_notification = Some(RECEIPTS.iter().map(|r| r.to_string()).collect());
    }
    Ok(OutgoingBody { content_type: types::CPIM, body: message.encode().map_err(OutgoingError::Cpim)? })
}

/// An IMDN (RFC 5438 §7.1.1) as `message/cpim`: `imdn.Message-ID` is `notification_id` (a
/// fresh id, not the acknowledged message's), no disposition is requested, and the MIME part
/// carries `Content-Disposition: notification`.
pub fn disposition(
    from: &Identity,
    to: &Identity,
    notification_id: &str,
    datetime: &str,
    notification: &Imdn,
) -> Result<OutgoingBody, OutgoingError> {
    let xml = notification.encode().map_err(OutgoingError::Imdn)?;
    let media = ContentType::new(imdn::CONTENT_TYPE, None).map_err(|_| OutgoingError::ContentType)?;
    let mut message = CpimMessage::new(media, xml.into_bytes());
    message.from = Some(from.clone());
    message.to = vec![to.clone()];
    message.datetime = Some(datetime.to_string());
    message.message_id = Some(notification_id.to_string());
    message.content_disposition = Some("notification".to_string());
    Ok(OutgoingBody { content_type: types::CPIM, body: message.encode().map_err(OutgoingError::Cpim)? })
}

/// A sync entry as the bare JSON body SylkServer sends to the account itself, for its other
/// devices (§2.2 `account-mark-conversation-read` and the two removals).
pub fn sync_entry(entry: &SyncEntry) -> OutgoingBody {
    let mut object = Map::new();
    let content_type = match entry {
        SyncEntry::ConversationRead { contact } => {
            object.insert("contact".into(), contact.as_str().into());
            types::CONVERSATION_READ
        }
        SyncEntry::MessageRemove { contact, message_id, direction } => {
            object.insert("contact".into(), contact.as_str().into());
            object.insert("message_id".into(), message_id.as_str().into());
            object.insert("direction".into(), direction.as_str().into());
            types::MESSAGE_REMOVE
        }
        SyncEntry::ConversationRemove { contact, timestamp } => {
            object.insert("contact".into(), contact.as_str().into());
            if let Some(timestamp) = timestamp {
                object.insert("timestamp".into(), timestamp.as_str().into());
            }
            types::CONVERSATION_REMOVE
        }
    };
    OutgoingBody { content_type, body: Value::Object(object).to_string().into_bytes() }
}

#[cfg(test)]
mod tests {
    use super::super::body::{classify, Incoming};
    use super::super::imdn::DispositionState;
    use super::*;

    fn alice() -> Identity {
        Identity::from_aor("alice@example.com", Some("Alice \"Al\" Liddell"))
    }

    fn bob() -> Identity {
        Identity::from_aor("bob@example.com", None)
    }

    #[test]
    fn a_chat_message_reads_back_as_the_receiver_sees_it() {
        let sent = chat_message(&alice(), &bob(), "m-1", "2026-01-01T12:00:00Z", "Hi ✓\r\nline 2", "text/plain", true)
            .unwrap();
        assert_eq!(sent.content_type, "message/cpim");
        let text = String::from_utf8(sent.body.clone()).unwrap();
        assert!(text.contains("imdn.Disposition-Notification: positive-delivery, display\r\n"));
        assert!(text.contains("\r\n\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHi ✓\r\nline 2"));
        let Incoming::Message(message) = classify(sent.content_type, &sent.body, &bob()).unwrap() else { panic!() };
        assert_eq!(message.sender, alice());
        assert_eq!(message.sender.aor(), "alice@example.com");
        assert_eq!(message.message_id.as_deref(), Some("m-1"));
        assert_eq!(message.timestamp.as_deref(), Some("2026-01-01T12:00:00Z"));
        assert_eq!(message.disposition_notification, Some(vec!["positive-delivery".into(), "display".into()]));
        assert_eq!((message.content.as_str(), message.content_type.as_str()), ("Hi ✓\r\nline 2", "text/plain"));
    }

    #[test]
    fn in_dialog_messages_ask_for_no_receipts() {
        let sent = chat_message(&alice(), &bob(), "m-2", "t", "x", "text/html", false).unwrap();
        let Incoming::Message(message) = classify(sent.content_type, &sent.body, &bob()).unwrap() else { panic!() };
        assert_eq!(message.disposition_notification, None);
        assert!(!String::from_utf8(sent.body).unwrap().contains("Disposition-Notification"));
    }

    #[test]
    fn binary_content_survives_the_round_trip() {
        let content: String = (0..=255u8).map(char::from).collect();
        let sent = chat_message(&alice(), &bob(), "m-3", "t", &content, "application/octet-stream", true).unwrap();
        let Incoming::Message(message) = classify(sent.content_type, &sent.body, &bob()).unwrap() else { panic!() };
        assert_eq!((message.content, message.content_type.as_str()), (content, "application/octet-stream"));
    }

    #[test]
    fn public_keys_go_out_as_messages_and_come_back_as_keys() {
        let key = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nabc\n-----END PGP PUBLIC KEY BLOCK-----";
        let sent = chat_message(&alice(), &bob(), "k-1", "t", key, "text/pgp-public-key", true).unwrap();
        let Incoming::PublicKey(message) = classify(sent.content_type, &sent.body, &bob()).unwrap() else { panic!() };
        assert_eq!(message.content, key);
    }

    #[test]
    fn bad_client_input_is_a_typed_error() {
        let build = |content: &str, content_type: &str, id: &str| {
            chat_message(&alice(), &bob(), id, "t", content, content_type, true)
        };
        assert_eq!(build("x", "plain", "m"), Err(OutgoingError::ContentType));
        assert_eq!(build("x", "text/plain\r\nX: y", "m"), Err(OutgoingError::ContentType));
        assert_eq!(build("✓", "application/json", "m"), Err(OutgoingError::Content(ContentError::NotLatin1)));
        assert_eq!(build("x", "text/plain", "a\r\nb"), Err(OutgoingError::Cpim(CpimError::MalformedHeader)));
        let bad_to = Identity::new("sip:bob@example.com>\r\nX: y", None);
        assert!(matches!(
            chat_message(&alice(), &bad_to, "m", "t", "x", "text/plain", true),
            Err(OutgoingError::Cpim(_))
        ));
    }

    #[test]
    fn every_disposition_state_goes_out_and_reads_back() {
        for state in ["delivered", "failed", "displayed", "forbidden", "error"] {
            let imdn = Imdn::for_state(
                "m-1",
                "2026-01-01T12:00:00Z",
                Some("sip:alice@example.com"),
                DispositionState::parse(state).unwrap(),
            );
            let sent = disposition(&bob(), &alice(), "n-1", "2026-01-01T12:00:05Z", &imdn).unwrap();
            let text = String::from_utf8(sent.body.clone()).unwrap();
            assert!(text
                .contains("\r\n\r\nContent-Type: message/imdn+xml\r\nContent-Disposition: notification\r\n\r\n<?xml"));
            assert!(!text.contains("Disposition-Notification:"));
            let Incoming::Disposition(report) = classify(sent.content_type, &sent.body, &alice()).unwrap() else {
                panic!()
            };
            assert_eq!(report.sender, bob());
            assert_eq!(report.imdn, imdn);
            assert_eq!(report.imdn.state(), state);
            assert_eq!(report.timestamp.as_deref(), Some("2026-01-01T12:00:05Z"));
        }
        let mut bad = Imdn::for_state("", "t", None, DispositionState::Delivered);
        assert_eq!(
            disposition(&bob(), &alice(), "n", "t", &bad),
            Err(OutgoingError::Imdn(ImdnError::Missing("message-id")))
        );
        bad.message_id = "m".into();
        assert_eq!(
            disposition(&bob(), &alice(), "n\n", "t", &bad),
            Err(OutgoingError::Cpim(CpimError::MalformedHeader))
        );
    }

    #[test]
    fn sync_entries_read_back() {
        let me = Identity::from_aor("alice@example.com", None);
        for entry in [
            SyncEntry::ConversationRead { contact: "bob@example.com".into() },
            SyncEntry::MessageRemove {
                contact: "bob@example.com".into(),
                message_id: "m-1".into(),
                direction: "outgoing".into(),
            },
            SyncEntry::ConversationRemove {
                contact: "bob@example.com".into(),
                timestamp: Some("2026-01-01T12:00:00Z".into()),
            },
            SyncEntry::ConversationRemove { contact: "bob \"b\"@example.com".into(), timestamp: None },
        ] {
            let sent = sync_entry(&entry);
            assert_eq!(classify(sent.content_type, &sent.body, &me), Ok(Incoming::Sync(entry)));
        }
        let read = sync_entry(&SyncEntry::ConversationRead { contact: "bob@example.com".into() });
        assert_eq!(
            (read.content_type, read.body.as_slice()),
            ("application/sylk-conversation-read", br#"{"contact":"bob@example.com"}"#.as_slice())
        );
    }
}
