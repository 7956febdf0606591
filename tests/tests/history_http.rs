//! The message history endpoint (spec §6.3) of both real binaries on their real SQLite store:
//! the data directory is seeded through `sylkgw-storage` (an account with an API token and its
//! journal), then a SIP device's `GET /webrtcgateway/messages/history/<account>[/<id>]` with
//! `Authorization: Apikey <token>` gets the journal as JSON, and any other token `401`. Each
//! binary runs in its own network namespace with only loopback.

#![allow(clippy::disallowed_methods)] // SystemTime::now: the token must be valid for the binary's clock

use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};
use sylkgw_core::storage::{Direction, MessageState, NewMessage, StoreRequest, UnixMicros};
use sylkgw_storage::{Sqlite, Storage};
use sylkgw_tests::netns::in_netns;
use sylkgw_tests::{binary, http_request, Server, TempDir};

const TOKEN: &str = "dGhlIHRva2VuIG9mIGEgU0lQIGRldmljZQ";
const PATH: &str = "/webrtcgateway/messages/history/alice@example.com";

/// A data directory whose store knows alice, her token (valid for an hour) and two messages.
fn seeded() -> TempDir {
    let dir = TempDir::new("history-http");
    let mut db = Sqlite::open(dir.path()).unwrap();
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros()).unwrap();
    let mut run = |r: StoreRequest| db.execute(&r).unwrap();
    run(StoreRequest::TouchAccount { account: "alice@example.com".into(), now: UnixMicros(now) });
    run(StoreRequest::SetApiToken {
        account: "alice@example.com".into(),
        token: TOKEN.into(),
        expires_at: UnixMicros(now + 3_600_000_000),
    });
    for (i, direction) in [Direction::Outgoing, Direction::Incoming].into_iter().enumerate() {
        let message = NewMessage {
            account: "alice@example.com".into(),
            contact: "bob@example.com".into(),
            direction: Some(direction),
            content_type: "text/plain".into(),
            content: format!("message {i}"),
            message_id: format!("m-{i}"),
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            disposition: vec!["positive-delivery".into()],
            state: Some(MessageState::Accepted),
            created_at: UnixMicros(now - 1000 + i as i64),
        };
        run(StoreRequest::AddMessage { message, require_account: false });
    }
    dir
}

fn get(gw: &Server, path: &str, auth: &str) -> (u16, String) {
    let r = http_request(gw.addr, &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n"));
    (r.status(), r.body)
}

fn check(name: &str) {
    let dir = seeded();
    let gw = Server::start(binary(name), &[std::ffi::OsStr::new("--data-dir"), dir.path().as_os_str()]);
    let apikey = format!("Authorization: Apikey {TOKEN}\r\n");

    let (status, body) = get(&gw, PATH, &apikey);
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["account"], "alice@example.com");
    assert_eq!(
        body["messages"][1],
        json!({"contact": "bob@example.com", "timestamp": "2026-01-01T00:00:00.000Z",
               "disposition": ["positive-delivery"], "message_id": "m-1", "content_type": "text/plain",
               "content": "message 1", "direction": "incoming", "state": "accepted"})
    );
    let (status, body) = get(&gw, &format!("{PATH}/m-0"), &apikey);
    assert_eq!(status, 200);
    let after: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(after["messages"].as_array().map(Vec::len), Some(1));

    for auth in ["", "Authorization: Apikey nope\r\n", "Authorization: Bearer x\r\n"] {
        assert_eq!(get(&gw, PATH, auth), (401, "Unauthorized".to_string()), "{auth:?}");
    }
    assert_eq!(get(&gw, "/webrtcgateway/messages/history/bob@example.com", &apikey).0, 401);
}

#[test]
fn history_from_sylkgw() {
    if !in_netns("history_from_sylkgw") {
        return;
    }
    check("sylkgw");
}

#[test]
fn history_from_sylkgw_mio() {
    if !in_netns("history_from_sylkgw_mio") {
        return;
    }
    check("sylkgw-mio");
}
