//! Request validation as SylkServer's `models/sylkrtc.py` does it, table-driven: one
//! [`RequestSchema`] per request type, checked field by field in the model's declaration order
//! (base class fields first), so the first problem reported is the one SylkServer reports, with
//! its exact message.

use super::repr::py_repr;
use super::uri::normalize_aor;
use serde_json::{Map, Value};

/// How a field is checked.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A string.
    Str,
    /// A string that must be a SIP AOR; stored without its `sip:` scheme.
    Aor,
    /// A string of 1 to 9999 characters (`password`).
    Password,
    /// A boolean.
    Bool,
    /// An integer.
    Int,
    /// One of a fixed set of strings (sorted, for the message).
    Choice(&'static [&'static str]),
    /// An array of strings, duplicates dropped.
    UniqueStrings,
    /// An array of AORs, duplicates dropped.
    AorList,
    /// An array of at most two unique strings (`active_participants`).
    ActiveParticipants,
    /// An array of objects, each checked against the nested schema.
    Objects(&'static ObjectSchema),
    /// An object checked against the nested schema.
    Object(&'static ObjectSchema),
    /// Any JSON object (`data` of `account-update-addressbook`).
    AnyObject,
}

/// One field of a model.
#[derive(Debug)]
pub struct Field {
    /// JSON key.
    pub name: &'static str,
    /// How it is checked.
    pub kind: Kind,
    /// Optional fields may be absent or `null`.
    pub optional: bool,
}

/// A nested model (`ICECandidate`, `Header`, `VideoroomSessionOptions`).
#[derive(Debug)]
pub struct ObjectSchema {
    /// Model class name, as it appears in messages.
    pub class: &'static str,
    /// Fields in declaration order.
    pub fields: &'static [Field],
}

/// The fields every request of a family inherits, validated first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// `transaction` only.
    Plain,
    /// `transaction`, `account` (AOR).
    Account,
    /// `transaction`, `session`.
    Session,
}

/// One request type.
#[derive(Debug)]
pub struct RequestSchema {
    /// The `sylkrtc` value.
    pub kind: &'static str,
    /// Model class name, as it appears in messages.
    pub class: &'static str,
    /// Inherited fields.
    pub base: Base,
    /// The model's own fields in declaration order.
    pub fields: &'static [Field],
}

const fn req(name: &'static str, kind: Kind) -> Field {
    Field { name, kind, optional: false }
}

const fn opt(name: &'static str, kind: Kind) -> Field {
    Field { name, kind, optional: true }
}

/// `ICECandidate` (extra keys such as the browser's `usernameFragment` are ignored).
pub static ICE_CANDIDATE: ObjectSchema = ObjectSchema {
    class: "ICECandidate",
    fields: &[req("candidate", Kind::Str), req("sdpMLineIndex", Kind::Int), req("sdpMid", Kind::Str)],
};

/// `Header` (`{"name": …, "value": …}` in request `headers` arrays).
pub static HEADER: ObjectSchema =
    ObjectSchema { class: "Header", fields: &[req("name", Kind::Str), req("value", Kind::Str)] };

/// `VideoroomSessionOptions`.
pub static VIDEOROOM_OPTIONS: ObjectSchema = ObjectSchema {
    class: "VideoroomSessionOptions",
    fields: &[opt("audio", Kind::Bool), opt("video", Kind::Bool), opt("bitrate", Kind::Int)],
};

const fn schema(kind: &'static str, class: &'static str, base: Base, fields: &'static [Field]) -> RequestSchema {
    RequestSchema { kind, class, base, fields }
}

/// Every request type sylkRTC defines (spec §2), in the order of the spec.
pub static REQUESTS: &[RequestSchema] = &[
    schema("ping", "PingRequest", Base::Plain, &[]),
    schema("lookup-public-key", "LookupPublicKeyRequest", Base::Plain, &[req("uri", Kind::Aor)]),
    schema(
        "account-add",
        "AccountAddRequest",
        Base::Account,
        &[
            req("password", Kind::Password),
            opt("display_name", Kind::Str),
            opt("user_agent", Kind::Str),
            opt("incoming_header_prefixes", Kind::UniqueStrings),
        ],
    ),
    schema("account-remove", "AccountRemoveRequest", Base::Account, &[]),
    schema("account-register", "AccountRegisterRequest", Base::Account, &[]),
    schema("account-unregister", "AccountUnregisterRequest", Base::Account, &[]),
    schema(
        "account-devicetoken",
        "AccountDeviceTokenRequest",
        Base::Account,
        &[
            req("token", Kind::Str),
            req("platform", Kind::Str),
            req("device", Kind::Str),
            req("silent", Kind::Bool),
            req("app", Kind::Str),
        ],
    ),
    schema(
        "account-message",
        "AccountMessageRequest",
        Base::Account,
        &[
            req("uri", Kind::Aor),
            req("message_id", Kind::Str),
            req("content", Kind::Str),
            req("content_type", Kind::Str),
            req("timestamp", Kind::Str),
            opt("server_generated", Kind::Bool),
        ],
    ),
    schema(
        "account-disposition-notification",
        "AccountDispositionNotificationRequest",
        Base::Account,
        &[
            req("uri", Kind::Aor),
            req("message_id", Kind::Str),
            req("state", Kind::Choice(&["delivered", "displayed", "error", "failed", "forbidden"])),
            req("timestamp", Kind::Str),
        ],
    ),
    schema(
        "account-sync-conversations",
        "AccountSyncConversationsRequest",
        Base::Account,
        &[opt("message_id", Kind::Str), opt("since", Kind::Str), opt("limit", Kind::Int)],
    ),
    schema(
        "account-mark-conversation-read",
        "AccountMarkConversationReadRequest",
        Base::Account,
        &[req("contact", Kind::Aor)],
    ),
    schema(
        "account-remove-message",
        "AccountMessageRemoveRequest",
        Base::Account,
        &[req("message_id", Kind::Str), req("contact", Kind::Aor)],
    ),
    schema(
        "account-remove-conversation",
        "AccountConversationRemoveRequest",
        Base::Account,
        &[req("contact", Kind::Aor)],
    ),
    schema("account-fetch-addressbook", "AccountFetchAddressbookRequest", Base::Account, &[]),
    schema(
        "account-update-addressbook",
        "AccountUpdateAddressBookRequest",
        Base::Account,
        &[
            req("action", Kind::Choice(&["add", "delete", "update"])),
            req("type", Kind::Choice(&["contact", "group", "policy"])),
            req("data", Kind::AnyObject),
        ],
    ),
    schema(
        "session-create",
        "SessionCreateRequest",
        Base::Session,
        &[
            req("account", Kind::Aor),
            req("uri", Kind::Aor),
            req("sdp", Kind::Str),
            opt("headers", Kind::Objects(&HEADER)),
        ],
    ),
    schema(
        "session-answer",
        "SessionAnswerRequest",
        Base::Session,
        &[req("sdp", Kind::Str), opt("headers", Kind::Objects(&HEADER))],
    ),
    schema(
        "session-trickle",
        "SessionTrickleRequest",
        Base::Session,
        &[req("candidates", Kind::Objects(&ICE_CANDIDATE))],
    ),
    schema("session-terminate", "SessionTerminateRequest", Base::Session, &[]),
    schema(
        "session-update",
        "SessionUpdateRequest",
        Base::Session,
        &[req("sdp", Kind::Str), opt("headers", Kind::Objects(&HEADER))],
    ),
    schema(
        "session-message",
        "SessionMessageRequest",
        Base::Session,
        &[
            req("message_id", Kind::Str),
            req("content", Kind::Str),
            req("content_type", Kind::Str),
            req("timestamp", Kind::Str),
        ],
    ),
    schema(
        "session-dtmf-info",
        "SessionDtmfInfoRequest",
        Base::Session,
        &[req("digit", Kind::Str), opt("duration", Kind::Int)],
    ),
    schema(
        "videoroom-join",
        "VideoroomJoinRequest",
        Base::Session,
        &[
            req("account", Kind::Aor),
            req("uri", Kind::Aor),
            req("sdp", Kind::Str),
            opt("audio", Kind::Bool),
            opt("video", Kind::Bool),
        ],
    ),
    schema("videoroom-leave", "VideoroomLeaveRequest", Base::Session, &[]),
    schema(
        "videoroom-configure",
        "VideoroomConfigureRequest",
        Base::Session,
        &[req("active_participants", Kind::ActiveParticipants)],
    ),
    schema(
        "videoroom-feed-attach",
        "VideoroomFeedAttachRequest",
        Base::Session,
        &[req("publisher", Kind::Str), req("feed", Kind::Str)],
    ),
    schema(
        "videoroom-feed-answer",
        "VideoroomFeedAnswerRequest",
        Base::Session,
        &[req("feed", Kind::Str), req("sdp", Kind::Str)],
    ),
    schema("videoroom-feed-detach", "VideoroomFeedDetachRequest", Base::Session, &[req("feed", Kind::Str)]),
    schema("videoroom-invite", "VideoroomInviteRequest", Base::Session, &[req("participants", Kind::AorList)]),
    schema(
        "videoroom-session-trickle",
        "VideoroomSessionTrickleRequest",
        Base::Session,
        &[req("candidates", Kind::Objects(&ICE_CANDIDATE))],
    ),
    schema(
        "videoroom-session-update",
        "VideoroomSessionUpdateRequest",
        Base::Session,
        &[req("options", Kind::Object(&VIDEOROOM_OPTIONS))],
    ),
    schema(
        "videoroom-message",
        "VideoroomMessageRequest",
        Base::Session,
        &[req("message_id", Kind::Str), req("content", Kind::Str), req("content_type", Kind::Str)],
    ),
    schema(
        "videoroom-composing-indication",
        "VideoroomComposingIndicationRequest",
        Base::Session,
        &[req("state", Kind::Choice(&["active", "idle"])), opt("refresh", Kind::Int)],
    ),
    schema("videoroom-mute-audio-participants", "VideoroomMuteAudioParticipantsRequest", Base::Session, &[]),
    schema("videoroom-toggle-hand", "VideoroomToggleHandRequest", Base::Session, &[opt("session_id", Kind::Str)]),
];

/// The schema of request type `kind`, if sylkRTC defines it.
pub fn lookup(kind: &str) -> Option<&'static RequestSchema> {
    REQUESTS.iter().find(|s| s.kind == kind)
}

const TRANSACTION: Field = req("transaction", Kind::Str);
const ACCOUNT: Field = req("account", Kind::Aor);
const SESSION: Field = req("session", Kind::Str);

/// Validates `msg` against `schema`. On success returns the checked fields, normalised (AORs
/// without scheme, unique lists de-duplicated, `null` optionals dropped); on failure the exact
/// message SylkServer would send.
pub fn validate(schema: &RequestSchema, msg: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    let base: &[Field] = match schema.base {
        Base::Plain => &[TRANSACTION],
        Base::Account => &[TRANSACTION, ACCOUNT],
        Base::Session => &[TRANSACTION, SESSION],
    };
    let mut out = Map::new();
    for field in base.iter().chain(schema.fields) {
        check_field(schema.class, field, msg, &mut out)?;
    }
    Ok(out)
}

fn check_object(schema: &ObjectSchema, msg: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for field in schema.fields {
        check_field(schema.class, field, msg, &mut out)?;
    }
    Ok(out)
}

fn check_field(
    class: &str,
    field: &Field,
    msg: &Map<String, Value>,
    out: &mut Map<String, Value>,
) -> Result<(), String> {
    let name = field.name;
    match msg.get(name) {
        None if field.optional => Ok(()),
        None => Err(format!("Mandatory property '{name}' of '{class}' object is missing")),
        Some(Value::Null) if field.optional => Ok(()),
        Some(v) => {
            let checked = check_value(field, v)?;
            out.insert(name.to_string(), checked);
            Ok(())
        }
    }
}

fn invalid(name: &str, v: &Value) -> String {
    format!("Invalid value for '{name}' property: {}", py_repr(v))
}

fn check_value(field: &Field, v: &Value) -> Result<Value, String> {
    let name = field.name;
    match field.kind {
        Kind::Str => v.as_str().map(|_| v.clone()).ok_or_else(|| invalid(name, v)),
        Kind::Aor => {
            let s = v.as_str().ok_or_else(|| invalid(name, v))?;
            normalize_aor(s).map(Value::String).ok_or_else(|| format!("invalid SIP URI: {s}"))
        }
        Kind::Password => {
            let s = v.as_str().ok_or_else(|| invalid(name, v))?;
            let n = s.chars().count();
            if (1..=9999).contains(&n) {
                Ok(v.clone())
            } else {
                Err("the value's length must be between 1 and 9999 inclusive".into())
            }
        }
        Kind::Bool => v.as_bool().map(|_| v.clone()).ok_or_else(|| invalid(name, v)),
        Kind::Int => {
            if v.is_i64() || v.is_u64() {
                Ok(v.clone())
            } else {
                Err(invalid(name, v))
            }
        }
        Kind::Choice(values) => match v.as_str() {
            Some(s) if values.contains(&s) => Ok(v.clone()),
            _ => Err(format!("{} (expected: {})", invalid(name, v), choice_list(values))),
        },
        Kind::UniqueStrings | Kind::AorList | Kind::ActiveParticipants => {
            let items = v.as_array().ok_or_else(|| invalid(name, v))?;
            unique_strings(field.kind, items).map(Value::Array)
        }
        Kind::Objects(schema) => {
            let items = v.as_array().ok_or_else(|| invalid(name, v))?;
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let obj =
                    item.as_object().ok_or_else(|| format!("Invalid value for {}: {}", schema.class, py_repr(item)))?;
                out.push(Value::Object(check_object(schema, obj)?));
            }
            Ok(Value::Array(out))
        }
        Kind::Object(schema) => {
            let obj = v.as_object().ok_or_else(|| invalid(name, v))?;
            Ok(Value::Object(check_object(schema, obj)?))
        }
        Kind::AnyObject => v.as_object().map(|_| v.clone()).ok_or_else(|| invalid(name, v)),
    }
}

/// Most unique items of `active_participants`.
const MAX_ACTIVE_PARTICIPANTS: usize = 2;

/// An array of strings (`kind` is `UniqueStrings`, `AorList` or `ActiveParticipants`), duplicates
/// dropped in first-seen order, as SylkServer's unique list types: the first item that is not a
/// string (or, for `AorList`, not an AOR) is the error; then the length limit of
/// `ActiveParticipants`. Linear: a set answers "seen?" (one 256 KiB message holds ~43k items), and
/// once `ActiveParticipants` is over its limit the rest is only type-checked, never stored.
fn unique_strings(kind: Kind, items: &[Value]) -> Result<Vec<Value>, String> {
    let not_str = |item: &Value| format!("Invalid value for str: {}", py_repr(item));
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let s = item.as_str().ok_or_else(|| not_str(item))?;
        let s = match kind {
            Kind::AorList => normalize_aor(s).ok_or_else(|| format!("invalid SIP URI: {s}"))?,
            _ => s.to_string(),
        };
        if seen.insert(s.clone()) {
            out.push(Value::String(s));
        }
        if matches!(kind, Kind::ActiveParticipants) && out.len() > MAX_ACTIVE_PARTICIPANTS {
            // Refused whatever follows; only a later non-string would be reported first.
            if let Some(bad) = items[i + 1..].iter().find(|item| !item.is_string()) {
                return Err(not_str(bad));
            }
            return Err(format!("the value's length must be between 0 and {MAX_ACTIVE_PARTICIPANTS} inclusive"));
        }
    }
    Ok(out)
}

/// `a, b or c`, as Python's `' or '.join(', '.join(sorted(values)).rsplit(', ', 1))`.
fn choice_list(values: &[&str]) -> String {
    let mut sorted: Vec<&str> = values.to_vec();
    sorted.sort_unstable();
    match sorted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => (*last).to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<Map<String, Value>, String> {
        let obj = v.as_object().unwrap().clone();
        validate(lookup(obj["sylkrtc"].as_str().unwrap()).unwrap(), &obj)
    }

    #[test]
    fn sylkserver_messages() {
        assert_eq!(
            check(json!({"sylkrtc":"account-add","transaction":"t","account":"a@b.c"})).unwrap_err(),
            "Mandatory property 'password' of 'AccountAddRequest' object is missing"
        );
        assert_eq!(
            check(json!({"sylkrtc":"account-add","transaction":"t","account":"a@b.c","password":5})).unwrap_err(),
            "Invalid value for 'password' property: 5"
        );
        assert_eq!(
            check(json!({"sylkrtc":"account-add","transaction":"t","account":"a@b.c","password":""})).unwrap_err(),
            "the value's length must be between 1 and 9999 inclusive"
        );
        assert_eq!(
            check(json!({"sylkrtc":"account-add","transaction":"t","account":"a@","password":"x"})).unwrap_err(),
            "invalid SIP URI: a@"
        );
        assert_eq!(
            check(json!({"sylkrtc":"account-remove","transaction":"t","account":null})).unwrap_err(),
            "Invalid value for 'account' property: None"
        );
        assert_eq!(
            check(json!({"sylkrtc":"videoroom-composing-indication","transaction":"t","session":"s","state":"x"}))
                .unwrap_err(),
            "Invalid value for 'state' property: 'x' (expected: active or idle)"
        );
        assert_eq!(
            check(json!({"sylkrtc":"session-trickle","transaction":"t","session":"s","candidates":[{"candidate":"c","sdpMLineIndex":0}]}))
                .unwrap_err(),
            "Mandatory property 'sdpMid' of 'ICECandidate' object is missing"
        );
        assert_eq!(
            check(json!({"sylkrtc":"session-trickle","transaction":"t","session":"s","candidates":["c"]})).unwrap_err(),
            "Invalid value for ICECandidate: 'c'"
        );
        assert_eq!(
            check(json!({"sylkrtc":"videoroom-configure","transaction":"t","session":"s","active_participants":["a","b","c"]}))
                .unwrap_err(),
            "the value's length must be between 0 and 2 inclusive"
        );
    }

    #[test]
    fn base_fields_come_first() {
        // `transaction` is checked before `account`, `account` before the model's own fields.
        assert_eq!(
            check(json!({"sylkrtc":"account-add"})).unwrap_err(),
            "Mandatory property 'transaction' of 'AccountAddRequest' object is missing"
        );
        assert_eq!(
            check(json!({"sylkrtc":"session-create","transaction":"t","account":"a@b.c"})).unwrap_err(),
            "Mandatory property 'session' of 'SessionCreateRequest' object is missing"
        );
    }

    /// Unique lists keep the first of each item in order; AORs are compared normalised.
    #[test]
    fn unique_lists_drop_duplicates_in_order() {
        let v = check(json!({"sylkrtc":"account-add","transaction":"t","account":"a@b.c","password":"x",
            "incoming_header_prefixes":["X-B","X-A","X-B","X-C","X-A"]}))
        .unwrap();
        assert_eq!(v["incoming_header_prefixes"], json!(["X-B", "X-A", "X-C"]));
        let v = check(json!({"sylkrtc":"videoroom-invite","transaction":"t","session":"s",
            "participants":["sip:b@x.y","a@x.y","b@x.y","sip:a@x.y"]}))
        .unwrap();
        assert_eq!(v["participants"], json!(["b@x.y", "a@x.y"]));
        let err = check(json!({"sylkrtc":"videoroom-invite","transaction":"t","session":"s",
            "participants":["a@x.y","a@x.y", "b@"]}))
        .unwrap_err();
        assert_eq!(err, "invalid SIP URI: b@");
    }

    /// A list as large as one message can carry (~43k items) is de-duplicated whole.
    #[test]
    fn unique_lists_of_a_whole_message() {
        let items: Vec<String> = (0..43_000).map(|i| format!("X-{}", i % 30_000)).collect();
        let v = check(json!({"sylkrtc":"account-add","transaction":"t","account":"a@b.c","password":"x",
            "incoming_header_prefixes":items}))
        .unwrap();
        let got = v["incoming_header_prefixes"].as_array().unwrap();
        assert_eq!(got.len(), 30_000);
        assert_eq!((got[0].as_str(), got[29_999].as_str()), (Some("X-0"), Some("X-29999")));
    }

    /// `active_participants` counts unique items against its limit of 2; duplicates do not count,
    /// and a type error anywhere in the list is still reported before the length.
    #[test]
    fn active_participants_limit() {
        let configure = |list: Value| {
            check(json!({"sylkrtc":"videoroom-configure","transaction":"t","session":"s","active_participants":list}))
        };
        assert_eq!(configure(json!(["a", "a", "b", "a", "b"])).unwrap()["active_participants"], json!(["a", "b"]));
        let too_long = "the value's length must be between 0 and 2 inclusive";
        assert_eq!(configure(json!(["a", "b", "c"])).unwrap_err(), too_long);
        assert_eq!(configure(json!(["a", "b", "c", "d", 7, "e"])).unwrap_err(), "Invalid value for str: 7");
        assert_eq!(configure(json!([1, "a", "b", "c"])).unwrap_err(), "Invalid value for str: 1");
        let huge: Vec<String> = (0..43_000).map(|i| i.to_string()).collect();
        assert_eq!(configure(json!(huge)).unwrap_err(), too_long);
    }

    #[test]
    fn normalises() {
        let v = check(json!({"sylkrtc":"account-add","transaction":"t","account":"sip:a@b.c","password":"x",
            "display_name":null,"incoming_header_prefixes":["X-","X-"],"extra":1}))
        .unwrap();
        assert_eq!(v["account"], "a@b.c");
        assert_eq!(v["incoming_header_prefixes"], json!(["X-"]));
        assert!(!v.contains_key("display_name") && !v.contains_key("extra"));
    }
}
