//! The messaging part of sylkRTC (spec §2.1 `lookup-public-key`, §2.2 `account-message` …
//! `account-remove-conversation`, §3.1–§3.3 their events): request models, and the events as
//! sylkRTC-2 JSON. sylkRTC-1 has no messaging: its connections never get these events.
//!
//! Fields arrive validated by `schema` (AORs bare, choices checked); this module only reads
//! them. Events are written with keys in SylkServer's order (`sylkrtc` first).

use serde_json::{Map, Value};

/// A messaging request (`RequestBody::Messaging`).
#[derive(Debug, Clone, PartialEq)]
pub enum MessagingRequest {
    /// `lookup-public-key`: the stored PGP key of `uri`.
    LookupPublicKey { uri: String },
    /// `account-message`: a chat line (or a PGP public key) to `uri`.
    Message(OutgoingMessage),
    /// `account-disposition-notification`: an IMDN for a message received from `uri`.
    Disposition { account: String, uri: String, message_id: String, state: String, timestamp: String },
    /// `account-sync-conversations`: the journal after `message_id`, else after `since`.
    SyncConversations { account: String, message_id: Option<String>, since: Option<String>, limit: Option<i64> },
    /// `account-mark-conversation-read`.
    MarkConversationRead { account: String, contact: String },
    /// `account-remove-message`.
    RemoveMessage { account: String, message_id: String, contact: String },
    /// `account-remove-conversation`.
    RemoveConversation { account: String, contact: String },
}

/// The fields of `account-message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub account: String,
    pub uri: String,
    pub message_id: String,
    pub content: String,
    pub content_type: String,
    pub timestamp: String,
    pub server_generated: Option<bool>,
}

impl MessagingRequest {
    /// The request type (`sylkrtc` value).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::LookupPublicKey { .. } => "lookup-public-key",
            Self::Message(_) => "account-message",
            Self::Disposition { .. } => "account-disposition-notification",
            Self::SyncConversations { .. } => "account-sync-conversations",
            Self::MarkConversationRead { .. } => "account-mark-conversation-read",
            Self::RemoveMessage { .. } => "account-remove-message",
            Self::RemoveConversation { .. } => "account-remove-conversation",
        }
    }

    /// The account the request is about (`None` for `lookup-public-key`).
    pub fn account(&self) -> Option<&str> {
        match self {
            Self::LookupPublicKey { .. } => None,
            Self::Message(m) => Some(&m.account),
            Self::Disposition { account, .. }
            | Self::SyncConversations { account, .. }
            | Self::MarkConversationRead { account, .. }
            | Self::RemoveMessage { account, .. }
            | Self::RemoveConversation { account, .. } => Some(account),
        }
    }
}

/// The messaging request of type `kind` from fields `schema::validate` accepted; `None` if
/// `kind` is not a messaging request.
pub fn decode(kind: &str, f: &Map<String, Value>) -> Option<MessagingRequest> {
    let s = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let opt = |k: &str| f.get(k).and_then(Value::as_str).map(String::from);
    Some(match kind {
        "lookup-public-key" => MessagingRequest::LookupPublicKey { uri: s("uri") },
        "account-message" => MessagingRequest::Message(OutgoingMessage {
            account: s("account"),
            uri: s("uri"),
            message_id: s("message_id"),
            content: s("content"),
            content_type: s("content_type"),
            timestamp: s("timestamp"),
            server_generated: f.get("server_generated").and_then(Value::as_bool),
        }),
        "account-disposition-notification" => MessagingRequest::Disposition {
            account: s("account"),
            uri: s("uri"),
            message_id: s("message_id"),
            state: s("state"),
            timestamp: s("timestamp"),
        },
        "account-sync-conversations" => MessagingRequest::SyncConversations {
            account: s("account"),
            message_id: opt("message_id"),
            since: opt("since"),
            limit: f.get("limit").and_then(Value::as_i64),
        },
        "account-mark-conversation-read" => {
            MessagingRequest::MarkConversationRead { account: s("account"), contact: s("contact") }
        }
        "account-remove-message" => MessagingRequest::RemoveMessage {
            account: s("account"),
            message_id: s("message_id"),
            contact: s("contact"),
        },
        "account-remove-conversation" => {
            MessagingRequest::RemoveConversation { account: s("account"), contact: s("contact") }
        }
        _ => return None,
    })
}

// ===== Events =====

/// `{uri, display_name}` of a sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub uri: String,
    pub display_name: Option<String>,
}

/// The fields of a `message` event (account or session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFields {
    pub sender: Sender,
    pub timestamp: String,
    pub disposition_notification: Option<Vec<String>>,
    pub message_id: String,
    pub content: String,
    pub content_type: String,
}

/// The fields of a `disposition-notification` event (account or session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispositionFields {
    pub message_id: String,
    pub message_timestamp: String,
    pub state: String,
    pub code: u16,
    pub reason: String,
}

/// One `messages` item of `sync-conversations` (spec §3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalItem {
    pub contact: String,
    pub timestamp: String,
    pub disposition: Vec<String>,
    pub message_id: String,
    pub content_type: String,
    pub content: String,
    pub direction: String,
    pub state: Option<String>,
}

/// What an account's event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountMessaging {
    /// `message`.
    Message(MessageFields),
    /// `disposition-notification`.
    Disposition(DispositionFields),
    /// `sync-conversations`.
    SyncConversations(Vec<JournalItem>),
    /// `sync`: `type`, `action`, `content` (an object).
    Sync { kind: &'static str, action: &'static str, content: Value },
}

/// A messaging event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessagingEvent {
    /// `lookup-public-key-event`.
    PublicKey { uri: String, public_key: Option<String> },
    /// An `account-event`.
    Account { account: String, event: AccountMessaging },
    /// A `session-event` `message`.
    SessionMessage { session: String, message: MessageFields },
    /// A `session-event` `disposition-notification`.
    SessionDisposition { session: String, disposition: DispositionFields },
}

/// An object written key by key, in order.
struct Obj(String);

impl Obj {
    fn new() -> Self {
        Obj(String::from("{"))
    }
    fn val(mut self, k: &str, v: &Value) -> Self {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push_str(&Value::from(k).to_string());
        self.0.push(':');
        self.0.push_str(&v.to_string());
        self
    }
    fn raw(mut self, k: &str, json: &str) -> Self {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push_str(&Value::from(k).to_string());
        self.0.push(':');
        self.0.push_str(json);
        self
    }
    fn str(self, k: &str, v: &str) -> Self {
        self.val(k, &Value::from(v))
    }
    fn opt(self, k: &str, v: Option<&str>) -> Self {
        self.val(k, &v.map_or(Value::Null, Value::from))
    }
    fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| Value::from(s.as_str())).collect())
}

fn message(o: Obj, m: &MessageFields) -> Obj {
    let sender = Obj::new().str("uri", &m.sender.uri).opt("display_name", m.sender.display_name.as_deref()).finish();
    o.str("event", "message")
        .raw("sender", &sender)
        .str("timestamp", &m.timestamp)
        .val("disposition_notification", &m.disposition_notification.as_deref().map_or(Value::Null, strings))
        .str("message_id", &m.message_id)
        .str("content_type", &m.content_type)
        .str("content", &m.content)
}

fn disposition(o: Obj, d: &DispositionFields) -> Obj {
    o.str("event", "disposition-notification")
        .str("message_id", &d.message_id)
        .str("message_timestamp", &d.message_timestamp)
        .str("state", &d.state)
        .val("code", &Value::from(d.code))
        .str("reason", &d.reason)
}

fn journal_item(item: &JournalItem) -> String {
    Obj::new()
        .str("contact", &item.contact)
        .str("timestamp", &item.timestamp)
        .val("disposition", &strings(&item.disposition))
        .str("message_id", &item.message_id)
        .str("content_type", &item.content_type)
        .str("content", &item.content)
        .str("direction", &item.direction)
        .opt("state", item.state.as_deref())
        .finish()
}

/// `event` as sylkRTC-2 JSON.
pub fn encode(event: &MessagingEvent) -> String {
    match event {
        MessagingEvent::PublicKey { uri, public_key } => Obj::new()
            .str("sylkrtc", "lookup-public-key-event")
            .str("uri", uri)
            .opt("public_key", public_key.as_deref())
            .finish(),
        MessagingEvent::Account { account, event } => {
            let o = Obj::new().str("sylkrtc", "account-event").str("account", account);
            match event {
                AccountMessaging::Message(m) => message(o, m),
                AccountMessaging::Disposition(d) => disposition(o, d),
                AccountMessaging::SyncConversations(items) => {
                    let list: Vec<String> = items.iter().map(journal_item).collect();
                    o.str("event", "sync-conversations").raw("messages", &format!("[{}]", list.join(",")))
                }
                AccountMessaging::Sync { kind, action, content } => {
                    o.str("event", "sync").str("type", kind).str("action", action).val("content", content)
                }
            }
            .finish()
        }
        MessagingEvent::SessionMessage { session, message: m } => {
            message(Obj::new().str("sylkrtc", "session-event").str("session", session), m).finish()
        }
        MessagingEvent::SessionDisposition { session, disposition: d } => {
            disposition(Obj::new().str("sylkrtc", "session-event").str("session", session), d).finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_sylkserver_writes_them() {
        let m = MessageFields {
            sender: Sender { uri: "bob@example.com".into(), display_name: None },
            timestamp: "2026-01-01T00:00:00Z".into(),
            disposition_notification: Some(vec!["positive-delivery".into(), "display".into()]),
            message_id: "m1".into(),
            content: "hi \"there\"".into(),
            content_type: "text/plain".into(),
        };
        let e = MessagingEvent::Account { account: "alice@example.com".into(), event: AccountMessaging::Message(m) };
        assert_eq!(
            encode(&e),
            r#"{"sylkrtc":"account-event","account":"alice@example.com","event":"message","sender":{"uri":"bob@example.com","display_name":null},"timestamp":"2026-01-01T00:00:00Z","disposition_notification":["positive-delivery","display"],"message_id":"m1","content_type":"text/plain","content":"hi \"there\""}"#
        );
        let d = DispositionFields {
            message_id: "m1".into(),
            message_timestamp: "t".into(),
            state: "failed".into(),
            code: 404,
            reason: "Not Found".into(),
        };
        let e = MessagingEvent::SessionDisposition { session: "s".into(), disposition: d };
        assert_eq!(
            encode(&e),
            r#"{"sylkrtc":"session-event","session":"s","event":"disposition-notification","message_id":"m1","message_timestamp":"t","state":"failed","code":404,"reason":"Not Found"}"#
        );
        let e = MessagingEvent::PublicKey { uri: "bob@example.com".into(), public_key: None };
        assert_eq!(encode(&e), r#"{"sylkrtc":"lookup-public-key-event","uri":"bob@example.com","public_key":null}"#);
        let e = MessagingEvent::Account {
            account: "a@b".into(),
            event: AccountMessaging::SyncConversations(vec![JournalItem {
                contact: "c@d".into(),
                timestamp: "t".into(),
                disposition: vec![],
                message_id: "x".into(),
                content_type: "application/sylk-conversation-read".into(),
                content: "c@d".into(),
                direction: String::new(),
                state: None,
            }]),
        };
        assert_eq!(
            encode(&e),
            r#"{"sylkrtc":"account-event","account":"a@b","event":"sync-conversations","messages":[{"contact":"c@d","timestamp":"t","disposition":[],"message_id":"x","content_type":"application/sylk-conversation-read","content":"c@d","direction":"","state":null}]}"#
        );
        let e = MessagingEvent::Account {
            account: "a@b".into(),
            event: AccountMessaging::Sync {
                kind: "conversation",
                action: "read",
                content: serde_json::json!({"contact": "c@d"}),
            },
        };
        assert_eq!(
            encode(&e),
            r#"{"sylkrtc":"account-event","account":"a@b","event":"sync","type":"conversation","action":"read","content":{"contact":"c@d"}}"#
        );
    }

    #[test]
    fn requests_decode_from_validated_fields() {
        let text = r#"{"sylkrtc":"account-sync-conversations","transaction":"t","account":"a@b","since":"2026-01-01T00:00:00Z","limit":5}"#;
        let req = crate::api::decode(text).unwrap();
        assert_eq!(
            req.body,
            crate::api::RequestBody::Messaging(MessagingRequest::SyncConversations {
                account: "a@b".into(),
                message_id: None,
                since: Some("2026-01-01T00:00:00Z".into()),
                limit: Some(5),
            })
        );
        let text = r#"{"sylkrtc":"lookup-public-key","transaction":"t","uri":"sip:bob@example.com"}"#;
        let req = crate::api::decode(text).unwrap();
        assert_eq!(
            req.body,
            crate::api::RequestBody::Messaging(MessagingRequest::LookupPublicKey { uri: "bob@example.com".into() })
        );
    }
}
