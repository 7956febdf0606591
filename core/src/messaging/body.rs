//! What an incoming SIP MESSAGE body is, as the gateway forwards it (SylkServer's
//! `MessageHandler._parse_message` and `_EH_janus_sip_event_message`, RFC 3428, RFC 5438):
//! a chat message (CPIM-wrapped or sent bare by plain SIP peers), an IMDN, a multi-device sync
//! entry, a PGP public key, a file-transfer notice, a SylkServer API request from a SIP device,
//! or an is-composing indication.
//!
//! [`classify`] is pure: where SylkServer fills in the time of receipt or a fresh UUID (no
//! `DateTime`, no `imdn.Message-ID`), the fields here are `None` and the caller supplies them.

use std::fmt;

use serde_json::Value;

use super::content;
use super::content_type::ContentType;
use super::cpim::{CpimError, CpimMessage};
use super::identity::{Identity, MAX_URI_LEN};
use super::imdn::{self, Imdn, ImdnError};

/// Content types with a meaning of their own (SylkServer, sylkrtc.js, RFC 3994).
pub mod types {
    pub const CPIM: &str = "message/cpim";
    pub const IMDN: &str = super::imdn::CONTENT_TYPE;
    pub const IS_COMPOSING: &str = "application/im-iscomposing+xml";
    pub const PGP_PUBLIC_KEY: &str = "text/pgp-public-key";
    pub const PGP_PRIVATE_KEY: &str = "text/pgp-private-key";
    pub const FILE_TRANSFER: &str = "application/sylk-file-transfer";
    pub const CONVERSATION_READ: &str = "application/sylk-conversation-read";
    pub const MESSAGE_REMOVE: &str = "application/sylk-message-remove";
    pub const CONVERSATION_REMOVE: &str = "application/sylk-conversation-remove";
    pub const API_TOKEN: &str = "application/sylk-api-token";
    pub const API_PGP_KEY_LOOKUP: &str = "application/sylk-api-pgp-key-lookup";
    pub const API_MESSAGE_REMOVE: &str = "application/sylk-api-message-remove";
    pub const API_CONVERSATION_READ: &str = "application/sylk-api-conversation-read";
    pub const API_CONVERSATION_REMOVE: &str = "application/sylk-api-conversation-remove";
}

/// Largest JSON body (sync entries, API requests, file-transfer notices) accepted, in bytes.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// An incoming MESSAGE, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Forward as `account-event message` (or `session-event message` in a dialog).
    Message(ChatMessage),
    /// A `text/pgp-public-key` the sender publishes: store it as the sender's key, and forward
    /// it as a `message` too (sylkrtc.js imports keys from `message` events).
    PublicKey(ChatMessage),
    /// An `application/sylk-file-transfer` notice: forwarded as a `message`; `file` is its
    /// validated JSON.
    FileTransfer { message: ChatMessage, file: FileTransfer },
    /// An IMDN: becomes a `disposition-notification`.
    Disposition(DispositionReport),
    /// A journal entry another device of the same account sent to it (§3.2 `sync`).
    Sync(SyncEntry),
    /// A request a SIP device makes of the server (SylkServer's `application/sylk-api-*`).
    Api(ApiRequest),
    /// `application/im-iscomposing+xml` (RFC 3994): SylkServer drops these.
    Composing,
}

/// The fields of the sylkRTC `message` event. `content_type` is the bare media type (no
/// parameters); `content` follows [`content::from_wire`]. `timestamp` is the CPIM `DateTime`
/// and `message_id` the `imdn.Message-ID`, when present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub sender: Identity,
    pub timestamp: Option<String>,
    pub disposition_notification: Option<Vec<String>>,
    pub message_id: Option<String>,
    pub content: String,
    pub content_type: String,
}

/// An IMDN received: `imdn.state()` is the event `state`, `imdn.message_id` its `message_id`,
/// `imdn.datetime` its `message_timestamp`. `timestamp` is the CPIM `DateTime` of the
/// notification itself, if wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispositionReport {
    pub sender: Identity,
    pub imdn: Imdn,
    pub timestamp: Option<String>,
}

/// A sync entry, with the JSON fields SylkServer writes (`AccountMarkConversationReadEventData`,
/// `AccountMessageRemoveEventData`, `AccountConversationRemoveEventData`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEntry {
    /// `application/sylk-conversation-read`: `{"contact"}`.
    ConversationRead { contact: String },
    /// `application/sylk-message-remove`: `{"contact","message_id","direction"}`; `direction`
    /// defaults to `outgoing` as in SylkServer's model.
    MessageRemove { contact: String, message_id: String, direction: String },
    /// `application/sylk-conversation-remove`: `{"contact","timestamp"}`.
    ConversationRemove { contact: String, timestamp: Option<String> },
}

/// SylkServer's API over SIP MESSAGE (`sip_handlers.MessageHandler.incoming_message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiRequest {
    /// `application/sylk-api-token`: issue a history API token to the sender.
    Token,
    /// `application/sylk-api-pgp-key-lookup`: send the public key of the To account back.
    PublicKeyLookup,
    /// `application/sylk-api-message-remove`: the body is the message id.
    MessageRemove { message_id: String },
    /// `application/sylk-api-conversation-read`: `{"contact"}`.
    ConversationRead { contact: String },
    /// `application/sylk-api-conversation-remove`: `{"contact","timestamp"}`.
    ConversationRemove { contact: String, timestamp: Option<String> },
}

/// SylkServer's `FileTransferMessage` (the JSON of `application/sylk-file-transfer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTransfer {
    pub filename: String,
    pub filesize: u64,
    pub sender_uri: String,
    pub receiver_uri: String,
    pub transfer_id: String,
    pub timestamp: String,
    pub until: Option<String>,
    pub url: Option<String>,
    pub filetype: Option<String>,
    pub hash: Option<String>,
}

/// Why a MESSAGE body cannot be forwarded. All are the sender's fault: answer
/// [`BodyError::status`] (400) and log [`BodyError::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// The SIP Content-Type (or CPIM's inner one) is missing or invalid.
    ContentType,
    Cpim(CpimError),
    /// CPIM inside CPIM.
    NestedCpim,
    Imdn(ImdnError),
    /// A sync, API or file-transfer body that is too large (JSON: over [`MAX_JSON_BODY`]), not
    /// what its type carries, or lacks a field; names the content type.
    Payload(&'static str),
}

impl BodyError {
    /// The SIP status to answer the MESSAGE with.
    pub fn status(&self) -> u16 {
        400
    }

    /// A short reason for logs and the SIP reason phrase (never message content).
    pub fn reason(&self) -> &'static str {
        match self {
            BodyError::ContentType => "invalid Content-Type",
            BodyError::Cpim(e) => e.reason(),
            BodyError::NestedCpim => "nested CPIM",
            BodyError::Imdn(e) => e.reason(),
            BodyError::Payload(_) => "invalid body for its content type",
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Cpim(e) => e.fmt(f),
            BodyError::Imdn(e) => e.fmt(f),
            BodyError::Payload(content_type) => write!(f, "invalid {content_type} body"),
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for BodyError {}

/// Classifies a MESSAGE from its `Content-Type` header value, body and the SIP `From`
/// identity. For CPIM, the CPIM `From` is the sender when present (as in SylkServer), else
/// `sip_from`. Total: never panics.
pub fn classify(content_type: &str, body: &[u8], sip_from: &Identity) -> Result<Incoming, BodyError> {
    let outer = ContentType::parse(content_type).map_err(|_| BodyError::ContentType)?;
    if outer.media_type != types::CPIM {
        let envelope = Envelope { sender: sip_from.clone(), timestamp: None, message_id: None, disposition: None };
        return classify_payload(envelope, &outer, body);
    }
    let cpim = CpimMessage::parse(body).map_err(BodyError::Cpim)?;
    if cpim.content_type.media_type == types::CPIM {
        return Err(BodyError::NestedCpim);
    }
    let envelope = Envelope {
        sender: cpim.from.clone().unwrap_or_else(|| sip_from.clone()),
        timestamp: cpim.datetime.clone(),
        message_id: cpim.message_id.clone(),
        disposition: cpim.disposition_notification.clone(),
    };
    classify_payload(envelope, &cpim.content_type, &cpim.body)
}

/// What CPIM (or the SIP headers) said around the payload.
struct Envelope {
    sender: Identity,
    timestamp: Option<String>,
    message_id: Option<String>,
    disposition: Option<Vec<String>>,
}

fn classify_payload(envelope: Envelope, content_type: &ContentType, payload: &[u8]) -> Result<Incoming, BodyError> {
    let media_type = content_type.media_type.as_str();
    let chat = |envelope: Envelope| ChatMessage {
        sender: envelope.sender,
        timestamp: envelope.timestamp,
        disposition_notification: envelope.disposition,
        message_id: envelope.message_id,
        content: content::from_wire(payload, content_type),
        content_type: media_type.to_string(),
    };
    Ok(match media_type {
        imdn::CONTENT_TYPE => Incoming::Disposition(DispositionReport {
            imdn: Imdn::parse(payload).map_err(BodyError::Imdn)?,
            sender: envelope.sender,
            timestamp: envelope.timestamp,
        }),
        types::IS_COMPOSING => Incoming::Composing,
        types::PGP_PUBLIC_KEY => Incoming::PublicKey(chat(envelope)),
        types::FILE_TRANSFER => {
            let file =
                file_transfer(&json(payload, types::FILE_TRANSFER)?).ok_or(BodyError::Payload(types::FILE_TRANSFER))?;
            Incoming::FileTransfer { message: chat(envelope), file }
        }
        types::CONVERSATION_READ => {
            let value = json(payload, types::CONVERSATION_READ)?;
            Incoming::Sync(SyncEntry::ConversationRead { contact: contact(&value, types::CONVERSATION_READ)? })
        }
        types::MESSAGE_REMOVE => {
            let value = json(payload, types::MESSAGE_REMOVE)?;
            let bad = BodyError::Payload(types::MESSAGE_REMOVE);
            Incoming::Sync(SyncEntry::MessageRemove {
                contact: contact(&value, types::MESSAGE_REMOVE)?,
                message_id: text_field(&value, "message_id").flatten().ok_or(bad)?,
                direction: text_field(&value, "direction").ok_or(bad)?.unwrap_or_else(|| "outgoing".to_string()),
            })
        }
        types::CONVERSATION_REMOVE => {
            let value = json(payload, types::CONVERSATION_REMOVE)?;
            Incoming::Sync(SyncEntry::ConversationRemove {
                contact: contact(&value, types::CONVERSATION_REMOVE)?,
                timestamp: text_field(&value, "timestamp").ok_or(BodyError::Payload(types::CONVERSATION_REMOVE))?,
            })
        }
        types::API_TOKEN => Incoming::Api(ApiRequest::Token),
        types::API_PGP_KEY_LOOKUP => Incoming::Api(ApiRequest::PublicKeyLookup),
        types::API_MESSAGE_REMOVE => {
            let message_id = std::str::from_utf8(payload).map(str::trim).unwrap_or_default();
            if message_id.is_empty() || message_id.len() > MAX_URI_LEN || message_id.chars().any(char::is_control) {
                return Err(BodyError::Payload(types::API_MESSAGE_REMOVE));
            }
            Incoming::Api(ApiRequest::MessageRemove { message_id: message_id.to_string() })
        }
        types::API_CONVERSATION_READ => {
            let value = json(payload, types::API_CONVERSATION_READ)?;
            Incoming::Api(ApiRequest::ConversationRead { contact: contact(&value, types::API_CONVERSATION_READ)? })
        }
        types::API_CONVERSATION_REMOVE => {
            let value = json(payload, types::API_CONVERSATION_REMOVE)?;
            Incoming::Api(ApiRequest::ConversationRemove {
                contact: contact(&value, types::API_CONVERSATION_REMOVE)?,
                timestamp: text_field(&value, "timestamp").ok_or(BodyError::Payload(types::API_CONVERSATION_REMOVE))?,
            })
        }
        _ => Incoming::Message(chat(envelope)),
    })
}

/// A JSON object body, bounded in size.
fn json(payload: &[u8], content_type: &'static str) -> Result<Value, BodyError> {
    if payload.len() > MAX_JSON_BODY {
        return Err(BodyError::Payload(content_type));
    }
    serde_json::from_slice::<Value>(payload).ok().filter(Value::is_object).ok_or(BodyError::Payload(content_type))
}

/// An optional string field: `Some(None)` if absent or null, `None` if of another type or
/// too long or holding control characters.
fn text_field(value: &Value, name: &str) -> Option<Option<String>> {
    match value.get(name) {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) if s.len() <= MAX_URI_LEN && !s.chars().any(char::is_control) => Some(Some(s.clone())),
        Some(_) => None,
    }
}

/// The mandatory, non-empty `contact` field.
fn contact(value: &Value, content_type: &'static str) -> Result<String, BodyError> {
    text_field(value, "contact").flatten().filter(|c| !c.trim().is_empty()).ok_or(BodyError::Payload(content_type))
}

fn file_transfer(value: &Value) -> Option<FileTransfer> {
    let required = |name: &str| text_field(value, name).flatten();
    let uri_of =
        |name: &str| value.get(name)?.get("uri")?.as_str().filter(|s| s.len() <= MAX_URI_LEN).map(str::to_string);
    Some(FileTransfer {
        filename: required("filename")?,
        filesize: value.get("filesize")?.as_u64()?,
        sender_uri: uri_of("sender")?,
        receiver_uri: uri_of("receiver")?,
        transfer_id: required("transfer_id")?,
        timestamp: required("timestamp")?,
        until: text_field(value, "until")?,
        url: text_field(value, "url")?,
        filetype: text_field(value, "filetype")?,
        hash: text_field(value, "hash")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip_from() -> Identity {
        Identity::new("sip:bob@example.com", Some("Bob"))
    }

    fn cpim(inner_type: &str, headers: &str, payload: &str) -> Vec<u8> {
        format!("{headers}\r\nContent-Type: {inner_type}\r\n\r\n{payload}").into_bytes()
    }

    const SYLK_HEADERS: &str = "From: Alice <sip:alice@example.com>\r\nTo: <sip:bob@example.com>\r\n\
DateTime: 2026-01-01T12:00:00+00:00\r\nNS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: m-1\r\n\
imdn.Disposition-Notification: positive-delivery, display\r\n";

    #[test]
    fn a_cpim_chat_message_carries_every_event_field() {
        let body = cpim("text/plain; charset=\"utf-8\"", SYLK_HEADERS, "Hello ✓");
        let Incoming::Message(message) = classify("message/cpim", &body, &sip_from()).unwrap() else { panic!() };
        assert_eq!(message.sender, Identity::new("sip:alice@example.com", Some("Alice")));
        assert_eq!(message.sender.aor(), "alice@example.com");
        assert_eq!(message.timestamp.as_deref(), Some("2026-01-01T12:00:00+00:00"));
        assert_eq!(message.disposition_notification, Some(vec!["positive-delivery".into(), "display".into()]));
        assert_eq!(message.message_id.as_deref(), Some("m-1"));
        assert_eq!((message.content.as_str(), message.content_type.as_str()), ("Hello ✓", "text/plain"));
    }

    #[test]
    fn cpim_without_from_takes_the_sip_sender() {
        let body = cpim("text/html", "", "<b>hi</b>");
        let Incoming::Message(message) = classify("Message/CPIM", &body, &sip_from()).unwrap() else { panic!() };
        assert_eq!(message.sender, sip_from());
        assert_eq!((message.timestamp, message.message_id, message.disposition_notification), (None, None, None));
        assert_eq!(message.content_type, "text/html");
    }

    #[test]
    fn bare_bodies_from_plain_sip_peers() {
        for (content_type, body, expected_type, expected) in [
            ("text/plain", "hello".as_bytes(), "text/plain", "hello"),
            ("text/plain;charset=UTF-8", "héllo".as_bytes(), "text/plain", "héllo"),
            ("text/html", b"<p>x</p>".as_slice(), "text/html", "<p>x</p>"),
            ("text/plain; charset=iso-8859-1", b"h\xe9".as_slice(), "text/plain", "hé"),
            ("application/octet-stream", b"\x00\xff".as_slice(), "application/octet-stream", "\u{0}\u{ff}"),
            ("application/sylk-contact-update", b"{}".as_slice(), "application/sylk-contact-update", "{}"),
            ("text/plain", b"".as_slice(), "text/plain", ""),
        ] {
            let Incoming::Message(message) = classify(content_type, body, &sip_from()).unwrap() else {
                panic!("{content_type}")
            };
            assert_eq!(message.sender, sip_from());
            assert_eq!((message.content_type.as_str(), message.content.as_str()), (expected_type, expected));
            assert_eq!((message.timestamp, message.message_id, message.disposition_notification), (None, None, None));
        }
    }

    const IMDN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><imdn xmlns=\"urn:ietf:params:xml:ns:imdn\">\
<message-id>m-1</message-id><datetime>2026-01-01T12:00:00+00:00</datetime>\
<delivery-notification><status><delivered/></status></delivery-notification></imdn>";

    #[test]
    fn imdns_wrapped_or_bare_become_disposition_reports() {
        let wrapped =
            cpim("message/imdn+xml", "From: <sip:alice@example.com>\r\nimdn.Message-ID: n-9\r\nDateTime: t2\r\n", IMDN);
        let Incoming::Disposition(report) = classify("message/cpim", &wrapped, &sip_from()).unwrap() else { panic!() };
        assert_eq!(report.sender.uri, "sip:alice@example.com");
        assert_eq!(
            (report.imdn.message_id.as_str(), report.imdn.datetime.as_str()),
            ("m-1", "2026-01-01T12:00:00+00:00")
        );
        assert_eq!(report.imdn.state(), "delivered");
        assert_eq!(report.timestamp.as_deref(), Some("t2"));

        let Incoming::Disposition(report) = classify("message/imdn+xml", IMDN.as_bytes(), &sip_from()).unwrap() else {
            panic!()
        };
        assert_eq!((report.sender, report.timestamp), (sip_from(), None));

        let broken = cpim("message/imdn+xml", "", "<imdn/>");
        assert_eq!(
            classify("message/cpim", &broken, &sip_from()),
            Err(BodyError::Imdn(ImdnError::Missing("message-id")))
        );
    }

    #[test]
    fn public_keys_composing_and_file_transfers() {
        let key = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nxyz\n-----END PGP PUBLIC KEY BLOCK-----\n";
        let Incoming::PublicKey(message) = classify("text/pgp-public-key", key.as_bytes(), &sip_from()).unwrap() else {
            panic!()
        };
        assert_eq!(message.content, key);
        let wrapped = cpim("text/pgp-public-key", SYLK_HEADERS, key);
        assert!(
            matches!(classify("message/cpim", &wrapped, &sip_from()), Ok(Incoming::PublicKey(m)) if m.message_id.as_deref() == Some("m-1"))
        );

        let composing =
            "<isComposing xmlns=\"urn:ietf:params:xml:ns:im-iscomposing\"><state>active</state></isComposing>";
        assert_eq!(
            classify("application/im-iscomposing+xml", composing.as_bytes(), &sip_from()),
            Ok(Incoming::Composing)
        );

        let file = r#"{"filename": "a.png", "filesize": 1234, "sender": {"uri": "alice@example.com", "display_name": ""},
            "receiver": {"uri": "bob@example.com", "display_name": ""}, "transfer_id": "t-1",
            "timestamp": "2026-01-01T12:00:00+00:00", "until": "2026-02-01T12:00:00+00:00",
            "url": "https://example.com/webrtcgateway/filetransfer/x/a.png", "filetype": "image/png", "hash": null}"#;
        let Incoming::FileTransfer { message, file: parsed } =
            classify("message/cpim", &cpim("application/sylk-file-transfer", SYLK_HEADERS, file), &sip_from()).unwrap()
        else {
            panic!()
        };
        assert_eq!(message.content, file);
        assert_eq!((parsed.filename.as_str(), parsed.filesize, parsed.transfer_id.as_str()), ("a.png", 1234, "t-1"));
        assert_eq!(
            (parsed.sender_uri.as_str(), parsed.receiver_uri.as_str()),
            ("alice@example.com", "bob@example.com")
        );
        assert_eq!((parsed.filetype.as_deref(), parsed.hash), (Some("image/png"), None));
        for bad in [r#"{"filename": "a"}"#, r#"{"filename": "a", "filesize": -1}"#, "[]", "not json"] {
            assert_eq!(
                classify("application/sylk-file-transfer", bad.as_bytes(), &sip_from()),
                Err(BodyError::Payload(types::FILE_TRANSFER)),
                "{bad}"
            );
        }
    }

    #[test]
    fn sync_entries_from_other_devices() {
        let me = Identity::new("sip:alice@example.com", None);
        let cases = [
            (
                "application/sylk-conversation-read",
                r#"{"contact": "bob@example.com"}"#,
                SyncEntry::ConversationRead { contact: "bob@example.com".into() },
            ),
            (
                "application/sylk-message-remove",
                r#"{"contact": "bob@example.com", "message_id": "m-1", "direction": "incoming"}"#,
                SyncEntry::MessageRemove {
                    contact: "bob@example.com".into(),
                    message_id: "m-1".into(),
                    direction: "incoming".into(),
                },
            ),
            (
                "application/sylk-message-remove",
                r#"{"contact": "bob@example.com", "message_id": "m-1"}"#,
                SyncEntry::MessageRemove {
                    contact: "bob@example.com".into(),
                    message_id: "m-1".into(),
                    direction: "outgoing".into(),
                },
            ),
            (
                "application/sylk-conversation-remove",
                r#"{"contact": "bob@example.com", "timestamp": "2026-01-01T12:00:00+00:00"}"#,
                SyncEntry::ConversationRemove {
                    contact: "bob@example.com".into(),
                    timestamp: Some("2026-01-01T12:00:00+00:00".into()),
                },
            ),
            (
                "application/sylk-conversation-remove",
                r#"{"contact": "bob@example.com"}"#,
                SyncEntry::ConversationRemove { contact: "bob@example.com".into(), timestamp: None },
            ),
        ];
        for (content_type, body, expected) in cases {
            assert_eq!(classify(content_type, body.as_bytes(), &me), Ok(Incoming::Sync(expected.clone())), "{body}");
            let wrapped = cpim(content_type, "", body);
            assert_eq!(classify("message/cpim", &wrapped, &me), Ok(Incoming::Sync(expected)), "{body}");
        }
    }

    #[test]
    fn malformed_sync_entries_are_refused() {
        let me = Identity::new("sip:alice@example.com", None);
        let huge = format!(r#"{{"contact": "bob@example.com", "pad": "{}"}}"#, "x".repeat(MAX_JSON_BODY));
        let cases = [
            ("application/sylk-conversation-read", "{}".to_string()),
            ("application/sylk-conversation-read", r#"{"contact": ""}"#.to_string()),
            ("application/sylk-conversation-read", r#"{"contact": 5}"#.to_string()),
            ("application/sylk-conversation-read", r#"{"contact": "a\r\nb"}"#.to_string()),
            ("application/sylk-conversation-read", r#""bob@example.com""#.to_string()),
            ("application/sylk-conversation-read", huge),
            ("application/sylk-conversation-read", "[".repeat(10_000)),
            ("application/sylk-message-remove", r#"{"contact": "bob@example.com"}"#.to_string()),
            ("application/sylk-message-remove", r#"{"contact": "b@x", "message_id": "m", "direction": 1}"#.to_string()),
            ("application/sylk-conversation-remove", r#"{"contact": "b@x", "timestamp": {}}"#.to_string()),
        ];
        for (content_type, body) in cases {
            let error = classify(content_type, body.as_bytes(), &me).unwrap_err();
            assert!(matches!(error, BodyError::Payload(t) if t == content_type), "{content_type} {body:.60}");
            assert_eq!(error.status(), 400);
        }
    }

    #[test]
    fn sylkserver_api_requests() {
        let me = Identity::new("sip:alice@example.com", None);
        assert_eq!(classify("application/sylk-api-token", b"", &me), Ok(Incoming::Api(ApiRequest::Token)));
        assert_eq!(
            classify("application/sylk-api-pgp-key-lookup", b"", &me),
            Ok(Incoming::Api(ApiRequest::PublicKeyLookup))
        );
        assert_eq!(
            classify("application/sylk-api-message-remove", b" m-1\r\n", &me),
            Ok(Incoming::Api(ApiRequest::MessageRemove { message_id: "m-1".into() }))
        );
        assert_eq!(
            classify("application/sylk-api-message-remove", b"", &me),
            Err(BodyError::Payload(types::API_MESSAGE_REMOVE))
        );
        assert_eq!(
            classify("application/sylk-api-message-remove", b"a\x00b", &me),
            Err(BodyError::Payload(types::API_MESSAGE_REMOVE))
        );
        assert_eq!(
            classify("application/sylk-api-conversation-read", br#"{"contact":"bob@example.com"}"#, &me),
            Ok(Incoming::Api(ApiRequest::ConversationRead { contact: "bob@example.com".into() }))
        );
        assert_eq!(
            classify("application/sylk-api-conversation-remove", br#"{"contact":"bob@example.com"}"#, &me),
            Ok(Incoming::Api(ApiRequest::ConversationRemove { contact: "bob@example.com".into(), timestamp: None }))
        );
    }

    #[test]
    fn broken_envelopes_are_typed_errors() {
        assert_eq!(classify("", b"x", &sip_from()), Err(BodyError::ContentType));
        assert_eq!(classify("text", b"x", &sip_from()), Err(BodyError::ContentType));
        assert_eq!(classify("message/cpim", b"hello", &sip_from()), Err(BodyError::Cpim(CpimError::NoSeparator)));
        let nested = cpim("message/cpim", "", &String::from_utf8(cpim("text/plain", "", "x")).unwrap());
        assert_eq!(classify("message/cpim", &nested, &sip_from()), Err(BodyError::NestedCpim));
        for error in [BodyError::ContentType, BodyError::NestedCpim, BodyError::Cpim(CpimError::TooManyHeaders)] {
            assert_eq!(error.status(), 400);
            assert!(!error.reason().is_empty() && !error.to_string().is_empty());
        }
    }

    #[test]
    fn classify_is_total_on_mutations() {
        let file = r#"{"filename":"a","filesize":1,"sender":{"uri":"a@b"},"receiver":{"uri":"c@d"},"transfer_id":"t","timestamp":"x"}"#;
        let samples = [
            ("message/cpim", cpim("text/plain", SYLK_HEADERS, "hi")),
            ("message/cpim", cpim("message/imdn+xml", SYLK_HEADERS, IMDN)),
            ("message/cpim", cpim("application/sylk-file-transfer", "", file)),
            ("application/sylk-message-remove", br#"{"contact":"b@x","message_id":"m"}"#.to_vec()),
        ];
        for (content_type, sample) in samples {
            for i in 0..sample.len() {
                for byte in [0u8, b'\n', b'"', b'{', b'<', 0xff] {
                    let mut mutated = sample.clone();
                    mutated[i] = byte;
                    let _ = classify(content_type, &mutated, &sip_from());
                    let _ = classify(content_type, &mutated[..i], &sip_from());
                }
            }
        }
    }
}
