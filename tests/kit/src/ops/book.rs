//! `gateway_ops` operations for the addressbook and the history endpoint: the two requests with
//! well-formed and broken payloads, a history `GET` on a web connection (upgraded or not), and
//! storage outcomes for the ids the gateway asked (every kind, whether or not it fits the
//! request) or for ids it never asked.

use super::cursor::ByteCursor;
use super::harness::GatewayHarness;
use super::templates::FUZZ_ACCOUNTS;
use serde_json::json;
use sylkgw_core::storage::{Addressbook, HistoryAnswer, JournalEntry, StoreError, StoreId, StoreResult, UnixMicros};
use sylkgw_core::Input;

const DATA: [&str; 8] = [
    r#"{"id":"c1","name":"Bob","uris":[{"id":"u","uri":"bob@example.com"}],"dialog":{"policy":"allow","subscribe":false},"presence":{"policy":"allow","subscribe":true}}"#,
    r#"{"id":"g1","name":"G","contacts":[]}"#,
    r#"{"id":"p1","name":"P","uri":"x@y","dialog":{"policy":"deny","subscribe":false},"presence":{"policy":"deny","subscribe":false},"attributes":{"a":[1,{"b":null}]}}"#,
    r#"{"contacts":[],"groups":[],"policies":[]}"#,
    r#"{"id":7}"#,
    r#"[]"#,
    r#"null"#,
    r#"{"id":"c1","name":"n","uris":["x",{}],"default_uri":5}"#,
];

/// One addressbook or history operation.
pub(super) fn fuzz_book_op(h: &mut GatewayHarness, c: &mut ByteCursor<'_>) {
    match c.below(4) {
        0 => {
            let tr = c.byte();
            let account = *c.pick(&FUZZ_ACCOUNTS);
            let text = if c.byte() & 1 == 0 {
                format!(r#"{{"sylkrtc":"account-fetch-addressbook","transaction":"{tr}","account":"{account}"}}"#)
            } else {
                let action = c.pick(&["add", "update", "delete", "move", "null"]);
                let kind = c.pick(&[r#""contact""#, r#""group""#, r#""policy""#, r#""addressbook""#, "null", "3"]);
                let data = c.pick(&DATA);
                format!(
                    r#"{{"sylkrtc":"account-update-addressbook","transaction":"{tr}","account":"{account}","action":"{action}","type":{kind},"data":{data}}}"#
                )
            };
            let Some(conn) = h.pick_web(c) else { return };
            h.send_text(conn, &text);
        }
        1 => {
            let Some(conn) = h.pick_web(c) else { return };
            let account = c.pick(&["alice@example.com", "sip:alice%40example.com", "%ff", "a/b/c", ""]);
            let auth =
                c.pick(&["Authorization: Apikey t\r\n", "Authorization: Apikey\r\n", "", "Authorization: x y z\r\n"]);
            let method = c.pick(&["GET", "OPTIONS", "HEAD", "POST"]);
            let tail = c.pick(&["", "/m-1", "/"]);
            let text =
                format!("{method} /webrtcgateway/messages/history/{account}{tail} HTTP/1.1\r\nHost: gw\r\n{auth}\r\n");
            h.input(Input::StreamData { conn, data: text.as_bytes() });
        }
        _ => {
            let id = match h.stores.is_empty() || c.byte() < 16 {
                true => StoreId(u64::from(c.byte())),
                false => h.stores.remove(c.below(h.stores.len())).0,
            };
            let entry = JournalEntry {
                contact: "bob@example.com".into(),
                timestamp: "2026-01-01T00:00:00Z".into(),
                disposition: vec![],
                message_id: "m-1".into(),
                content_type: "text/plain".into(),
                content: "\u{0}\"<".into(),
                direction: None,
                state: None,
                created_at: UnixMicros(0),
            };
            let result = match c.below(8) {
                0 => Ok(StoreResult::Done),
                1 => Ok(StoreResult::Addressbook {
                    addressbook: Addressbook {
                        contacts: vec![json!({"id": "c1"}), json!(null)],
                        groups: vec![],
                        policies: vec![],
                    },
                }),
                2 => Ok(StoreResult::History { answer: HistoryAnswer::Entries(vec![entry]) }),
                3 => Ok(StoreResult::History { answer: HistoryAnswer::Unauthorized }),
                4 => Ok(StoreResult::Removed { found: true }),
                5 => Err(StoreError::NotFound),
                6 => Err(StoreError::Corrupt("bad".into())),
                _ => Err(StoreError::Unavailable("down".into())),
            };
            h.input(Input::Stored { id, result });
        }
    }
}
