//! The addressbook requests (spec §2.2 `account-fetch-addressbook`, `account-update-addressbook`)
//! and their events (§3.2 `addressbook-fetched`, `addressbook-updated`,
//! `addressbook-update-failed`).
//!
//! `data` of an update is validated the way SylkServer's `AccountUpdateAddressBookRequest` does
//! it: `XCAPMapper.from_payload(data, type)` runs *before* the request's own fields are checked,
//! so its failures (`'data'`, `Unknown type: x`, the `Contact`/`Group`/`Policy` model messages)
//! come first, then the usual ones (`Mandatory property 'transaction' …`). The item kept is the
//! model's `__data__`: declared keys only, a `Contact` without `defaultUri` gets its first URI.
//! One deliberate difference: `attributes` objects are kept as given (SylkServer's
//! `ObjectProperty(JSONObject)` turns every one of them into `{}`).

use serde_json::{Map, Value};

use super::json::JsonObject;
use super::repr::py_repr;
use crate::storage::{Addressbook, AddressbookAction, AddressbookKind};

/// A validated addressbook request.
#[derive(Debug, Clone, PartialEq)]
pub enum AddressbookRequest {
    /// `account-fetch-addressbook`.
    Fetch { account: String },
    /// `account-update-addressbook`.
    Update {
        account: String,
        action: AddressbookAction,
        kind: AddressbookKind,
        /// The item's `id`.
        id: String,
        /// The item as the model keeps it (see the module doc).
        item: Value,
    },
}

impl AddressbookRequest {
    /// The account it is about.
    pub fn account(&self) -> &str {
        match self {
            Self::Fetch { account } | Self::Update { account, .. } => account,
        }
    }

    /// The request type (`sylkrtc` value).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Fetch { .. } => "account-fetch-addressbook",
            Self::Update { .. } => "account-update-addressbook",
        }
    }
}

/// The addressbook `account-event`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressbookEvent {
    /// `addressbook-fetched`.
    Fetched(Addressbook),
    /// `addressbook-updated`: the item under its type's key (`contact`, `group`, `policy`).
    Updated { kind: AddressbookKind, action: AddressbookAction, item: Value },
    /// `addressbook-update-failed`.
    UpdateFailed { kind: AddressbookKind, action: AddressbookAction, error: String, id: String },
}

fn action_str(action: AddressbookAction) -> &'static str {
    match action {
        AddressbookAction::Add => "add",
        AddressbookAction::Update => "update",
        AddressbookAction::Delete => "delete",
    }
}

/// Adds the members of `event` to an `account-event` object (after `account`).
pub(super) fn encode(o: JsonObject, event: &AddressbookEvent) -> JsonObject {
    match event {
        AddressbookEvent::Fetched(book) => {
            let lists = JsonObject::new()
                .value("contacts", &Value::Array(book.contacts.clone()))
                .value("groups", &Value::Array(book.groups.clone()))
                .value("policies", &Value::Array(book.policies.clone()));
            o.str("event", "addressbook-fetched").obj("addressbook", lists)
        }
        AddressbookEvent::Updated { kind, action, item } => o
            .str("event", "addressbook-updated")
            .str("type", kind.as_str())
            .str("action", action_str(*action))
            .value(kind.as_str(), item),
        AddressbookEvent::UpdateFailed { kind, action, error, id } => o
            .str("event", "addressbook-update-failed")
            .str("type", kind.as_str())
            .str("action", action_str(*action))
            .str("error", error)
            .str("id", id),
    }
}

// ===== The XCAP models (SylkServer `models/xcap.py`) =====

#[derive(Debug, Clone, Copy)]
enum Prop {
    Str,
    Bool,
    /// Any object (`attributes`).
    AnyObject,
    Object(&'static Model),
    Array(&'static Model),
}

#[derive(Debug)]
struct Model {
    class: &'static str,
    /// `(name, kind, optional)` in declaration order.
    props: &'static [(&'static str, Prop, bool)],
}

static CONTACT_URI: Model = Model {
    class: "ContactURI",
    props: &[
        ("id", Prop::Str, false),
        ("uri", Prop::Str, false),
        ("type", Prop::Str, true),
        ("attributes", Prop::AnyObject, true),
        ("default", Prop::Bool, true),
    ],
};

static EVENT_HANDLING: Model =
    Model { class: "EventHandling", props: &[("policy", Prop::Str, false), ("subscribe", Prop::Bool, false)] };

static CONTACT: Model = Model {
    class: "Contact",
    props: &[
        ("id", Prop::Str, false),
        ("name", Prop::Str, false),
        ("uris", Prop::Array(&CONTACT_URI), false),
        ("dialog", Prop::Object(&EVENT_HANDLING), false),
        ("presence", Prop::Object(&EVENT_HANDLING), false),
        ("attributes", Prop::AnyObject, true),
        ("defaultUri", Prop::Object(&CONTACT_URI), true),
    ],
};

static GROUP: Model = Model {
    class: "Group",
    props: &[
        ("id", Prop::Str, false),
        ("name", Prop::Str, false),
        ("attributes", Prop::AnyObject, true),
        ("contacts", Prop::Array(&CONTACT), false),
    ],
};

static POLICY: Model = Model {
    class: "Policy",
    props: &[
        ("id", Prop::Str, false),
        ("name", Prop::Str, false),
        ("uri", Prop::Str, false),
        ("dialog", Prop::Object(&EVENT_HANDLING), false),
        ("presence", Prop::Object(&EVENT_HANDLING), false),
        ("attributes", Prop::AnyObject, true),
    ],
};

static ADDRESSBOOK: Model = Model {
    class: "AddressBook",
    props: &[
        ("contacts", Prop::Array(&CONTACT), false),
        ("groups", Prop::Array(&GROUP), false),
        ("policies", Prop::Array(&POLICY), false),
    ],
};

/// Python's type name of a JSON value, for `TypeError`/`AttributeError` texts.
fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// `Model(**data)`: the model's keys checked in order; the item it keeps.
fn build(model: &Model, data: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    let mut data = std::borrow::Cow::Borrowed(data);
    if std::ptr::eq(model, &CONTACT) && data.contains_key("default_uri") && !data.contains_key("defaultUri") {
        let mut renamed = data.into_owned();
        let v = renamed.remove("default_uri").unwrap_or(Value::Null);
        renamed.insert("defaultUri".into(), v);
        data = std::borrow::Cow::Owned(renamed);
    }
    let mut out = Map::new();
    for &(name, prop, optional) in model.props {
        match data.get(name) {
            None if optional => {}
            None => return Err(format!("Mandatory property '{name}' of '{}' object is missing", model.class)),
            Some(Value::Null) if optional => {
                out.insert(name.into(), Value::Null);
            }
            Some(v) => {
                out.insert(name.into(), parse(name, prop, v)?);
            }
        }
    }
    if std::ptr::eq(model, &CONTACT) && out.get("defaultUri").is_none_or(Value::is_null) {
        if let Some(first) = out.get("uris").and_then(Value::as_array).and_then(|u| u.first()).cloned() {
            out.insert("defaultUri".into(), first);
        }
    }
    Ok(out)
}

fn parse(name: &str, prop: Prop, v: &Value) -> Result<Value, String> {
    let invalid = || format!("Invalid value for '{name}' property: {}", py_repr(v));
    match prop {
        Prop::Str if v.is_string() => Ok(v.clone()),
        Prop::Bool if v.is_boolean() => Ok(v.clone()),
        Prop::AnyObject if v.is_object() => Ok(v.clone()),
        Prop::Object(model) => match v {
            Value::Object(m) => Ok(Value::Object(build(model, m)?)),
            _ => Err(invalid()),
        },
        Prop::Array(model) => {
            let items = v.as_array().ok_or_else(invalid)?;
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let m =
                    item.as_object().ok_or_else(|| format!("Invalid value for {}: {}", model.class, py_repr(item)))?;
                out.push(Value::Object(build(model, m)?));
            }
            Ok(Value::Array(out))
        }
        Prop::Str | Prop::Bool | Prop::AnyObject => Err(invalid()),
    }
}

/// What `XCAPMapper.from_payload(msg["data"], msg["type"])` does in the request's constructor,
/// before any field is validated: the item (for a valid `type`), or SylkServer's error text.
pub(super) fn map_payload(msg: &Map<String, Value>) -> Result<Option<Value>, String> {
    let data = msg.get("data").ok_or("'data'")?;
    let kind = msg.get("type").ok_or("'type'")?;
    let model = match kind {
        Value::Null => match data {
            Value::Object(m) if ["contacts", "groups", "policies"].iter().any(|k| m.contains_key(*k)) => &ADDRESSBOOK,
            _ => return Err("Cannot detect type, please specify obj_type".into()),
        },
        Value::String(s) => match s.to_lowercase().as_str() {
            "contact" => &CONTACT,
            "group" => &GROUP,
            "policy" => &POLICY,
            "addressbook" => &ADDRESSBOOK,
            _ => return Err(format!("Unknown type: {s}")),
        },
        other => return Err(format!("'{}' object has no attribute 'lower'", py_type(other))),
    };
    let Value::Object(m) = data else {
        return Err(format!(
            "sylk.applications.webrtcgateway.models.xcap.{}() argument after ** must be a mapping, not {}",
            model.class,
            py_type(data)
        ));
    };
    let item = Value::Object(build(model, m)?);
    // An addressbook never passes the `type` check that follows; only items are kept.
    Ok((!std::ptr::eq(model, &ADDRESSBOOK)).then_some(item))
}

/// The typed request from fields `schema::validate` accepted and the item of [`map_payload`].
pub(super) fn request(kind: &str, fields: &Map<String, Value>, item: Option<Value>) -> AddressbookRequest {
    let s = |k: &str| fields.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let account = s("account");
    if kind == "account-fetch-addressbook" {
        return AddressbookRequest::Fetch { account };
    }
    let action = match s("action").as_str() {
        "add" => AddressbookAction::Add,
        "update" => AddressbookAction::Update,
        _ => AddressbookAction::Delete,
    };
    let kind = match s("type").as_str() {
        "contact" => AddressbookKind::Contact,
        "group" => AddressbookKind::Group,
        _ => AddressbookKind::Policy,
    };
    let item = item.unwrap_or_else(|| Value::Object(Map::new()));
    let id = item.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
    AddressbookRequest::Update { account, action, kind, id, item }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::{decode, sylkrtc2, AccountEvent, DecodeError, Event, RequestBody};

    fn contact() -> Value {
        json!({"id": "c1", "name": "Bob", "uris": [{"id": "u1", "uri": "bob@example.com"}],
               "dialog": {"policy": "allow", "subscribe": false},
               "presence": {"policy": "allow", "subscribe": true}})
    }

    fn update(fields: Value) -> Result<RequestBody, String> {
        let mut msg =
            json!({"sylkrtc": "account-update-addressbook", "transaction": "t", "account": "sip:alice@example.com"});
        for (k, v) in fields.as_object().unwrap() {
            msg[k] = v.clone();
        }
        match decode(&msg.to_string()) {
            Ok(r) => Ok(r.body),
            Err(DecodeError::Invalid { message, .. }) => Err(message),
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn update_keeps_the_model_data() {
        let mut c = contact();
        c["extra"] = json!(1);
        c["uris"][0]["attributes"] = json!({"k": "v"});
        let body = update(json!({"action": "add", "type": "contact", "data": c})).unwrap();
        let RequestBody::Addressbook(AddressbookRequest::Update { account, action, kind, id, item }) = body else {
            panic!("{body:?}")
        };
        assert_eq!(
            (account.as_str(), action, kind, id.as_str()),
            ("alice@example.com", AddressbookAction::Add, AddressbookKind::Contact, "c1")
        );
        assert!(item.get("extra").is_none());
        // A Contact without defaultUri gets its first URI.
        assert_eq!(item["defaultUri"], json!({"id": "u1", "uri": "bob@example.com", "attributes": {"k": "v"}}));
        let body = update(json!({"action": "delete", "type": "policy",
            "data": {"id": "p", "name": "n", "uri": "x@y", "dialog": {"policy": "deny", "subscribe": false},
                     "presence": {"policy": "deny", "subscribe": false}, "attributes": null}}))
        .unwrap();
        let RequestBody::Addressbook(AddressbookRequest::Update { item, .. }) = body else { panic!() };
        assert_eq!(item["attributes"], Value::Null);
        // `default_uri` is read as `defaultUri`.
        let mut c = contact();
        c["default_uri"] = json!({"id": "u2", "uri": "b2@example.com"});
        let RequestBody::Addressbook(AddressbookRequest::Update { item, .. }) =
            update(json!({"action": "update", "type": "contact", "data": c})).unwrap()
        else {
            panic!()
        };
        assert_eq!(item["defaultUri"]["id"], "u2");
    }

    #[test]
    fn sylkserver_messages_in_sylkserver_order() {
        let cases = [
            (json!({"action": "add", "type": "contact"}), "'data'"),
            (json!({"action": "add", "data": {}}), "'type'"),
            (json!({"action": "add", "type": "buddy", "data": {}}), "Unknown type: buddy"),
            (json!({"action": "add", "type": 5, "data": {}}), "'int' object has no attribute 'lower'"),
            (json!({"action": "add", "type": null, "data": {}}), "Cannot detect type, please specify obj_type"),
            (
                json!({"action": "add", "type": "group", "data": []}),
                "sylk.applications.webrtcgateway.models.xcap.Group() argument after ** must be a mapping, not list",
            ),
            (
                json!({"action": "add", "type": "contact", "data": {"id": "c"}}),
                "Mandatory property 'name' of 'Contact' object is missing",
            ),
            (json!({"action": "add", "type": "contact", "data": {"id": 1}}), "Invalid value for 'id' property: 1"),
            (
                json!({"action": "add", "type": "contact", "data": {"id": "c", "name": "n", "uris": ["x"]}}),
                "Invalid value for ContactURI: 'x'",
            ),
            (
                json!({"action": "add", "type": "contact", "data": {"id": "c", "name": "n", "uris": [], "dialog": {"policy": "p"}}}),
                "Mandatory property 'subscribe' of 'EventHandling' object is missing",
            ),
            (
                json!({"action": "add", "type": "policy", "data": {"id": "p", "name": null}}),
                "Invalid value for 'name' property: None",
            ),
            // The payload first, then the request's own fields.
            (
                json!({"action": "move", "type": "contact", "data": contact()}),
                "Invalid value for 'action' property: 'move' (expected: add, delete or update)",
            ),
            (
                json!({"action": "add", "type": "Contact", "data": contact()}),
                "Invalid value for 'type' property: 'Contact' (expected: contact, group or policy)",
            ),
            (
                json!({"action": "add", "type": null, "data": {"contacts": [], "groups": [], "policies": []}}),
                "Invalid value for 'type' property: None (expected: contact, group or policy)",
            ),
        ];
        for (fields, error) in cases {
            assert_eq!(update(fields.clone()).unwrap_err(), error, "{fields}");
        }
        // A bad payload is reported even before a missing account.
        let msg = json!({"sylkrtc": "account-update-addressbook", "transaction": "t", "type": "contact", "data": {}});
        let Err(DecodeError::Invalid { message, transaction, .. }) = decode(&msg.to_string()) else { panic!() };
        assert_eq!(
            (message.as_str(), transaction.as_deref()),
            ("Mandatory property 'id' of 'Contact' object is missing", Some("t"))
        );
        let msg = json!({"sylkrtc": "account-update-addressbook", "transaction": "t", "type": "contact", "data": contact(), "action": "add"});
        let Err(DecodeError::Invalid { message, .. }) = decode(&msg.to_string()) else { panic!() };
        assert_eq!(message, "Mandatory property 'account' of 'AccountUpdateAddressBookRequest' object is missing");
    }

    #[test]
    fn fetch_request() {
        let r = decode(r#"{"sylkrtc":"account-fetch-addressbook","transaction":"t","account":"alice@example.com"}"#)
            .unwrap();
        assert_eq!(r.body, RequestBody::Addressbook(AddressbookRequest::Fetch { account: "alice@example.com".into() }));
        assert_eq!(r.body.kind(), "account-fetch-addressbook");
    }

    #[test]
    fn events_as_sylkserver_sends_them() {
        let account =
            |event| Event::Account { account: "alice@example.com".into(), event: AccountEvent::Addressbook(event) };
        let fetched = account(AddressbookEvent::Fetched(Addressbook {
            contacts: vec![json!({"id": "c1"})],
            groups: vec![],
            policies: vec![],
        }));
        assert_eq!(
            sylkrtc2::encode(&fetched),
            r#"{"sylkrtc":"account-event","account":"alice@example.com","event":"addressbook-fetched","addressbook":{"contacts":[{"id":"c1"}],"groups":[],"policies":[]}}"#
        );
        let updated = account(AddressbookEvent::Updated {
            kind: AddressbookKind::Group,
            action: AddressbookAction::Update,
            item: json!({"id": "g"}),
        });
        assert_eq!(
            sylkrtc2::encode(&updated),
            r#"{"sylkrtc":"account-event","account":"alice@example.com","event":"addressbook-updated","type":"group","action":"update","group":{"id":"g"}}"#
        );
        let failed = account(AddressbookEvent::UpdateFailed {
            kind: AddressbookKind::Contact,
            action: AddressbookAction::Delete,
            error: "not found".into(),
            id: "c9".into(),
        });
        assert_eq!(
            sylkrtc2::encode(&failed),
            r#"{"sylkrtc":"account-event","account":"alice@example.com","event":"addressbook-update-failed","type":"contact","action":"delete","error":"not found","id":"c9"}"#
        );
        // sylkRTC-1 has no addressbook.
        assert_eq!(crate::api::Dialect::V1.encode(&fetched), None);
    }
}
