//! The sylkRTC API: one typed model of requests and events, and the codecs of the two dialects
//! (`sylkRTC-2`, today's; `sylkRTC-1`, the original of 2015). Knows JSON and the protocol, not
//! SIP or media.
//!
//! Requests are the same in both dialects (sylkRTC-1's are a subset, see [`Dialect::decode`]);
//! events differ, so each dialect module has an `encode`.

pub mod addressbook;
mod json;
pub mod messaging;
mod repr;
pub mod schema;
pub mod sylkrtc1;
pub mod sylkrtc1_videoroom;
pub mod sylkrtc2;
mod uri;
pub mod videoroom;

pub use repr::{py_repr, py_str_repr};
pub use uri::normalize_aor;

use serde_json::{Map, Value};
use std::fmt;

/// The WebSocket subprotocol a connection negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dialect {
    /// `sylkRTC-1`: SylkServer 3.0–4.1, events with underscores and a nested `data` object.
    V1,
    /// `sylkRTC-2`: SylkServer ≥ 5.0 and sylkrtc.js ≥ 0.9.9.
    V2,
}

impl Dialect {
    /// The `Sec-WebSocket-Protocol` token.
    pub fn token(self) -> &'static str {
        match self {
            Self::V1 => "sylkRTC-1",
            Self::V2 => "sylkRTC-2",
        }
    }

    /// Picks the dialect from the client's offered tokens, preferring `sylkRTC-2`.
    pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let mut best = None;
        for token in offered {
            match token.trim() {
                "sylkRTC-2" => return Some(Self::V2),
                "sylkRTC-1" => best = Some(Self::V1),
                _ => {}
            }
        }
        best
    }

    /// Decodes a request of a connection in this dialect (sylkRTC-1 knows only 4.1's requests).
    pub fn decode(self, text: &str) -> Result<Request, DecodeError> {
        match self {
            Self::V1 => sylkrtc1::decode(text),
            Self::V2 => decode(text),
        }
    }

    /// Encodes `event` in this dialect; `None` when the dialect has no way to say it.
    pub fn encode(self, event: &Event) -> Option<String> {
        match self {
            Self::V1 => sylkrtc1::encode(event),
            Self::V2 => Some(sylkrtc2::encode(event)),
        }
    }
}

// ===== Requests =====

/// A validated request: its transaction and what it asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The client's `transaction`, echoed in the `ack` or `error`.
    pub transaction: String,
    /// What is asked.
    pub body: RequestBody,
}

/// A `{"name": …, "value": …}` item of a request's `headers` array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// An item of `session-trickle`'s `candidates`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCandidate {
    /// The `candidate:` attribute line.
    pub candidate: String,
    /// Index of the m-line.
    pub sdp_mline_index: i64,
    /// The media stream id.
    pub sdp_mid: String,
}

/// Every request sylkRTC defines, with its validated fields. AORs are bare (`user@domain`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RequestBody {
    /// `ping`: acked.
    Ping,
    /// `account-add`.
    AccountAdd {
        account: String,
        /// The HA1 `md5(user:realm:password)`, or the clear password with external auth.
        password: String,
        display_name: Option<String>,
        user_agent: Option<String>,
        incoming_header_prefixes: Vec<String>,
    },
    /// `account-remove`.
    AccountRemove { account: String },
    /// `account-register`.
    AccountRegister { account: String },
    /// `account-unregister`.
    AccountUnregister { account: String },
    /// `account-devicetoken`: push parameters for the REGISTER Contact.
    AccountDeviceToken { account: String, token: String, platform: String, device: String, silent: bool, app: String },
    /// `session-create`: an outgoing call.
    SessionCreate { session: String, account: String, uri: String, sdp: String, headers: Vec<Header> },
    /// `session-answer`: answer an incoming call.
    SessionAnswer { session: String, sdp: String, headers: Vec<Header> },
    /// `session-trickle`: browser ICE candidates; empty means end-of-candidates.
    SessionTrickle { session: String, candidates: Vec<IceCandidate> },
    /// `session-terminate`.
    SessionTerminate { session: String },
    /// `session-update`: a re-INVITE offer, or the answer to the remote one.
    SessionUpdate { session: String, sdp: String, headers: Vec<Header> },
    /// `session-message`: SIP MESSAGE in the dialog.
    SessionMessage { session: String, message_id: String, content: String, content_type: String, timestamp: String },
    /// `session-dtmf-info`: one SIP INFO per digit.
    SessionDtmfInfo { session: String, digit: String, duration: Option<i64> },
    /// A messaging request (`api::messaging`), carried out by the gateway's messaging machine.
    Messaging(messaging::MessagingRequest),
    /// `account-fetch-addressbook` / `account-update-addressbook` (`api::addressbook`).
    Addressbook(addressbook::AddressbookRequest),
    /// A `videoroom-*` request (conferences, [`videoroom`]).
    Videoroom(videoroom::VideoroomRequest),
    /// A valid request of a feature sylkgw does not provide (messaging, storage, address book,
    /// public keys, videorooms). Answered with an `error`.
    Unsupported {
        /// The request type.
        kind: &'static str,
        /// Its `account`, when it has one.
        account: Option<String>,
    },
}

impl RequestBody {
    /// The request type (`sylkrtc` value).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::AccountAdd { .. } => "account-add",
            Self::AccountRemove { .. } => "account-remove",
            Self::AccountRegister { .. } => "account-register",
            Self::AccountUnregister { .. } => "account-unregister",
            Self::AccountDeviceToken { .. } => "account-devicetoken",
            Self::SessionCreate { .. } => "session-create",
            Self::SessionAnswer { .. } => "session-answer",
            Self::SessionTrickle { .. } => "session-trickle",
            Self::SessionTerminate { .. } => "session-terminate",
            Self::SessionUpdate { .. } => "session-update",
            Self::SessionMessage { .. } => "session-message",
            Self::SessionDtmfInfo { .. } => "session-dtmf-info",
            Self::Messaging(m) => m.kind(),
            Self::Addressbook(r) => r.kind(),
            Self::Videoroom(r) => r.kind(),
            Self::Unsupported { kind, .. } => kind,
        }
    }
}

/// Why a text message did not yield a request. Only [`DecodeError::reply`] goes back to the
/// client; everything is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON (or not an object). No reply.
    Json(String),
    /// No `sylkrtc` key. No reply.
    NoType,
    /// A request type sylkRTC does not define.
    UnknownType { kind: String, transaction: Option<String> },
    /// A known type whose fields are wrong.
    Invalid { kind: String, transaction: Option<String>, message: String },
}

impl DecodeError {
    /// The `error` event to send, if the message carried a transaction to answer.
    pub fn reply(&self) -> Option<Event> {
        match self {
            Self::UnknownType { kind, transaction: Some(t) } => {
                Some(Event::Error { transaction: t.clone(), error: format!("Unknown request type: {kind}") })
            }
            Self::Invalid { transaction: Some(t), message, .. } => {
                Some(Event::Error { transaction: t.clone(), error: message.clone() })
            }
            _ => None,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The log texts are SylkServer's.
        match self {
            Self::Json(e) => write!(f, "could not parse WebSocket payload: {e}"),
            Self::NoType => write!(f, "could not get WebSocket message type"),
            Self::UnknownType { kind, .. } => write!(f, "unknown WebSocket request: {kind}"),
            Self::Invalid { kind, message, .. } => write!(f, "invalid {kind} request: {message}"),
        }
    }
}

/// Decodes and validates one text message.
pub fn decode(text: &str) -> Result<Request, DecodeError> {
    let value: Value = serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
    let Value::Object(msg) = value else {
        return Err(DecodeError::Json("not a JSON object".into()));
    };
    let kind = match msg.get("sylkrtc") {
        None => return Err(DecodeError::NoType),
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(DecodeError::UnknownType { kind: py_repr(other), transaction: transaction_of(&msg) })
        }
    };
    let Some(schema) = schema::lookup(kind) else {
        return Err(DecodeError::UnknownType { kind: kind.to_string(), transaction: transaction_of(&msg) });
    };
    let invalid = |message| DecodeError::Invalid { kind: kind.to_string(), transaction: transaction_of(&msg), message };
    // SylkServer maps the addressbook payload before it checks any field.
    let item =
        if kind == "account-update-addressbook" { addressbook::map_payload(&msg).map_err(invalid)? } else { None };
    let fields = schema::validate(schema, &msg).map_err(invalid)?;
    let f = Fields(&fields);
    let body = match schema.kind {
        "ping" => RequestBody::Ping,
        "account-add" => RequestBody::AccountAdd {
            account: f.s("account"),
            password: f.s("password"),
            display_name: f.opt_s("display_name"),
            user_agent: f.opt_s("user_agent"),
            incoming_header_prefixes: f.strings("incoming_header_prefixes"),
        },
        "account-remove" => RequestBody::AccountRemove { account: f.s("account") },
        "account-register" => RequestBody::AccountRegister { account: f.s("account") },
        "account-unregister" => RequestBody::AccountUnregister { account: f.s("account") },
        "account-devicetoken" => RequestBody::AccountDeviceToken {
            account: f.s("account"),
            token: f.s("token"),
            platform: f.s("platform"),
            device: f.s("device"),
            silent: f.b("silent"),
            app: f.s("app"),
        },
        "session-create" => RequestBody::SessionCreate {
            session: f.s("session"),
            account: f.s("account"),
            uri: f.s("uri"),
            sdp: f.s("sdp"),
            headers: f.headers(),
        },
        "session-answer" => {
            RequestBody::SessionAnswer { session: f.s("session"), sdp: f.s("sdp"), headers: f.headers() }
        }
        "session-trickle" => RequestBody::SessionTrickle { session: f.s("session"), candidates: f.candidates() },
        "session-terminate" => RequestBody::SessionTerminate { session: f.s("session") },
        "session-update" => {
            RequestBody::SessionUpdate { session: f.s("session"), sdp: f.s("sdp"), headers: f.headers() }
        }
        "session-message" => RequestBody::SessionMessage {
            session: f.s("session"),
            message_id: f.s("message_id"),
            content: f.s("content"),
            content_type: f.s("content_type"),
            timestamp: f.s("timestamp"),
        },
        "session-dtmf-info" => RequestBody::SessionDtmfInfo {
            session: f.s("session"),
            digit: f.s("digit"),
            duration: f.0.get("duration").and_then(Value::as_i64),
        },
        "account-fetch-addressbook" | "account-update-addressbook" => {
            RequestBody::Addressbook(addressbook::request(kind, &fields, item))
        }
        kind => match messaging::decode(kind, f.0) {
            Some(request) => RequestBody::Messaging(request),
            None => match videoroom::decode(kind, &f) {
                Some(r) => RequestBody::Videoroom(r),
                None => RequestBody::Unsupported { kind: schema.kind, account: f.opt_s("account") },
            },
        },
    };
    Ok(Request { transaction: f.s("transaction"), body })
}

fn transaction_of(msg: &Map<String, Value>) -> Option<String> {
    msg.get("transaction").and_then(Value::as_str).map(String::from)
}

/// Typed reads of fields that [`schema::validate`] already checked.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn s(&self, k: &str) -> String {
        self.opt_s(k).unwrap_or_default()
    }
    fn opt_s(&self, k: &str) -> Option<String> {
        self.0.get(k).and_then(Value::as_str).map(String::from)
    }
    fn b(&self, k: &str) -> bool {
        self.0.get(k).and_then(Value::as_bool).unwrap_or_default()
    }
    fn strings(&self, k: &str) -> Vec<String> {
        self.objects(k).iter().filter_map(|v| v.as_str().map(String::from)).collect()
    }
    fn objects(&self, k: &str) -> &[Value] {
        self.0.get(k).and_then(Value::as_array).map_or(&[], Vec::as_slice)
    }
    fn headers(&self) -> Vec<Header> {
        self.objects("headers").iter().map(|h| Header { name: str_of(h, "name"), value: str_of(h, "value") }).collect()
    }
    fn candidates(&self) -> Vec<IceCandidate> {
        self.objects("candidates")
            .iter()
            .map(|c| IceCandidate {
                candidate: str_of(c, "candidate"),
                sdp_mline_index: c.get("sdpMLineIndex").and_then(Value::as_i64).unwrap_or_default(),
                sdp_mid: str_of(c, "sdpMid"),
            })
            .collect()
    }
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or_default().to_string()
}

// ===== Events =====

/// `{uri, display_name}` of a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Bare AOR (no `sip:`).
    pub uri: String,
    /// Display name, `null` on the wire when absent.
    pub display_name: Option<String>,
}

/// Everything the server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The connection is ready for requests.
    Ready,
    /// A request succeeded.
    Ack { transaction: String },
    /// A request failed.
    Error { transaction: String, error: String },
    /// About an account of this connection.
    Account { account: String, event: AccountEvent },
    /// About a call of this connection.
    Session { session: String, event: SessionEvent },
    /// A messaging event (`api::messaging`; sylkRTC-2 only).
    Messaging(messaging::MessagingEvent),
    /// About a conference session (publisher `session`) of this connection.
    Videoroom { session: String, event: videoroom::VideoroomEvent },
}

/// Registration progress (no `unregistered` state exists on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    Registering,
    Registered,
    /// `reason` is `"<code> <phrase>"`.
    Failed {
        reason: String,
    },
}

/// `account-event`s.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccountEvent {
    /// `registration-state`.
    Registration(RegistrationState),
    /// `incoming-session`.
    IncomingSession {
        session: String,
        originator: Identity,
        sdp: String,
        call_id: String,
        headers: Vec<(String, String)>,
    },
    /// `missed-session`.
    MissedSession { originator: Identity },
    /// `addressbook-fetched`, `addressbook-updated`, `addressbook-update-failed`.
    Addressbook(addressbook::AddressbookEvent),
    /// `conference-invite`: another connection's `videoroom-invite`.
    ConferenceInvite { room: String, session_id: String, originator: Identity },
}

/// `session-event`s.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// `event: "state"`.
    State(SessionState),
    /// `event: "update"`, re-INVITE progress.
    Update(UpdateState),
}

/// Call states (spec §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    Progress,
    Proceeding { code: u16 },
    Ringing,
    EarlyMedia { sdp: String, call_id: String },
    Accepted { sdp: Option<String>, call_id: Option<String>, headers: Vec<(String, String)> },
    Established,
    Terminated { reason: String },
}

/// Re-INVITE states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateState {
    Received { sdp: String },
    Accepted { sdp: String },
    Failed { reason: String },
}
