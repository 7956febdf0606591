//! The message history endpoint for SIP devices (spec §6.3, SylkServer `web.py`
//! `WebRTCGatewayWeb.messages`): `GET` or `OPTIONS`
//! `/webrtcgateway/messages/history/<account>[/<message_id>]` with
//! `Authorization: Apikey <token>` answers `{"account": …, "messages": [...]}` (the account's
//! journal, after `message_id` if given, at most [`HISTORY_LIMIT`] entries); anything else
//! about the token is `401 Unauthorized`.
//!
//! Pure: [`route`] reads the request head, the gateway asks the store (`StoreRequest::History`)
//! and [`answer`] turns its outcome into the response. The token itself is the one SylkServer
//! hands a SIP device that sends it a MESSAGE of type `application/sylk-api-token`
//! (`sip_handlers.py` `_handle_generate_token`).

use serde_json::{json, Value};

use super::upgrade::{RequestHead, Response};
use crate::storage::{HistoryAnswer, JournalEntry, StoreError, StoreResult};

/// Where the endpoint lives.
pub const HISTORY_PREFIX: &str = "/webrtcgateway/messages/history/";
/// At most this many entries in one answer (SylkServer: `result[:5000]`).
pub const HISTORY_LIMIT: u32 = 5000;

/// The content type of the SIP MESSAGE a device sends to get an API token, and of the answer
/// that carries it (SylkServer `sip_handlers.py` `_handle_generate_token`).
pub const API_TOKEN_TYPE: &str = "application/sylk-api-token";
/// How long a token is valid: 31 days (SylkServer's Cassandra TTL, 2678400 s).
pub const API_TOKEN_LIFETIME_SECS: i64 = 2_678_400;

/// A fresh token as Python's `secrets.token_urlsafe()`: 32 random bytes, URL-safe base64
/// without padding (43 characters).
pub fn new_token(random: &[u8; 32]) -> String {
    crate::base64::encode(random).trim_end_matches('=').replace('+', "-").replace('/', "_")
}

/// The body of the token MESSAGE: `{"token": …, "url": "<web_url>/webrtcgateway/messages/history/<account>"}`.
pub fn token_body(token: &str, web_url: Option<&str>, account: &str) -> String {
    let url = format!("{}{HISTORY_PREFIX}{account}", web_url.unwrap_or(""));
    json!({"token": token, "url": url}).to_string()
}

/// A history request with a well-formed `Apikey` header, for the store to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// The account of the path (percent-decoded, without `sip:`).
    pub account: String,
    /// The `<message_id>` segment, if any.
    pub message_id: Option<String>,
    /// The token of the `Authorization` header.
    pub token: String,
    /// `HEAD`: answer without the body.
    pub head_only: bool,
}

/// What to do with a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Ask the store.
    Ask(HistoryQuery),
    /// Answer at once and close.
    Answer(Response),
}

/// The route of `head`, or `None` when the path is not the history endpoint.
pub fn route(head: &RequestHead) -> Option<Route> {
    let rest = head.path.strip_prefix(HISTORY_PREFIX)?;
    let segments: Vec<&str> = rest.split('/').collect();
    let (account, message_id) = match segments.as_slice() {
        [account] if !account.is_empty() => (*account, None),
        [account, id] if !account.is_empty() && !id.is_empty() => (*account, Some(*id)),
        _ => return Some(Route::Answer(Response::text(404, "Not Found"))),
    };
    let head_only = match head.method.as_str() {
        "GET" | "OPTIONS" => false,
        "HEAD" => true,
        _ => {
            let mut r = Response::text(405, "Method Not Allowed");
            r.headers.push(("Allow", "GET, HEAD, OPTIONS".into()));
            return Some(Route::Answer(r));
        }
    };
    let decode = |s: &str| String::from_utf8(crate::sip::uri::unescape(s)).ok();
    let (Some(account), Some(message_id)) = (decode(account), message_id.map(decode).unwrap_or(Some(String::new())))
    else {
        return Some(Route::Answer(Response::text(404, "Not Found")));
    };
    let account = crate::api::normalize_aor(&account).unwrap_or(account);
    let message_id = (!message_id.is_empty()).then_some(message_id);
    // `method, auth_token = header.split()`: exactly two words, the first `Apikey`.
    let token = head.header("authorization").and_then(|h| match h.split_whitespace().collect::<Vec<_>>()[..] {
        ["Apikey", token] => Some(token.to_string()),
        _ => None,
    });
    let Some(token) = token else {
        log::info!("history for {account}: no `Authorization: Apikey <token>`");
        return Some(Route::Answer(unauthorized(head_only)));
    };
    Some(Route::Ask(HistoryQuery { account, message_id, token, head_only }))
}

/// `401 Unauthorized`, as SylkServer's `auth_error`.
pub fn unauthorized(head_only: bool) -> Response {
    let mut r = Response::text(401, "Unauthorized");
    r.head_only = head_only;
    r
}

/// The response to `query` once the store answered.
pub fn answer(query: &HistoryQuery, outcome: &Result<StoreResult, StoreError>) -> Response {
    let mut r = match outcome {
        Ok(StoreResult::History { answer: HistoryAnswer::Entries(entries) }) => {
            let messages: Vec<Value> = entries.iter().take(HISTORY_LIMIT as usize).map(entry_json).collect();
            let body = json!({"account": query.account, "messages": messages}).to_string();
            Response { content_type: "application/json", ..Response::text(200, body) }
        }
        Ok(StoreResult::History { answer: HistoryAnswer::Unauthorized }) => unauthorized(false),
        Ok(other) => {
            log::error!("history for {}: the store answered {other:?}", query.account);
            Response::text(500, "Internal Server Error")
        }
        Err(e) => {
            log::warn!("history for {}: {e}", query.account);
            Response::text(503, "Service Unavailable")
        }
    };
    r.head_only = query.head_only;
    r
}

/// One journal entry as SylkServer's `Message` model serializes a stored row: markers have
/// direction `""` and state `null`.
pub fn entry_json(e: &JournalEntry) -> Value {
    json!({
        "contact": e.contact,
        "timestamp": e.timestamp,
        "disposition": e.disposition,
        "message_id": e.message_id,
        "content_type": e.content_type,
        "content": e.content,
        "direction": e.direction.map_or("", |d| d.as_str()),
        "state": e.state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Direction, MessageState, UnixMicros};

    fn head(method: &str, path: &str, auth: Option<&str>) -> RequestHead {
        let mut headers = vec![("Host".to_string(), "gw".to_string())];
        if let Some(a) = auth {
            headers.push(("Authorization".to_string(), a.to_string()));
        }
        RequestHead { method: method.into(), path: path.into(), headers }
    }

    fn status(r: Option<Route>) -> u16 {
        match r {
            Some(Route::Answer(r)) => r.status,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn routes() {
        assert_eq!(route(&head("GET", "/webrtcgateway/ws", None)), None);
        assert_eq!(route(&head("GET", "/webrtcgateway/messages/history", None)), None);
        let ask =
            route(&head("GET", "/webrtcgateway/messages/history/sip%3Aalice%40example.com/m-1", Some("Apikey t0k")));
        assert_eq!(
            ask,
            Some(Route::Ask(HistoryQuery {
                account: "alice@example.com".into(),
                message_id: Some("m-1".into()),
                token: "t0k".into(),
                head_only: false,
            }))
        );
        let Some(Route::Ask(q)) = route(&head("OPTIONS", "/webrtcgateway/messages/history/a@b", Some(" Apikey   x ")))
        else {
            panic!()
        };
        assert_eq!((q.account.as_str(), q.message_id, q.token.as_str()), ("a@b", None, "x"));
        for bad in [None, Some("Bearer x"), Some("Apikey"), Some("Apikey a b"), Some("apikey x")] {
            assert_eq!(status(route(&head("GET", "/webrtcgateway/messages/history/a@b", bad))), 401, "{bad:?}");
        }
        for path in [
            "/webrtcgateway/messages/history/",
            "/webrtcgateway/messages/history/a@b/",
            "/webrtcgateway/messages/history/a/b/c",
            "/webrtcgateway/messages/history/%ff",
        ] {
            assert_eq!(status(route(&head("GET", path, Some("Apikey x")))), 404, "{path}");
        }
        assert_eq!(status(route(&head("POST", "/webrtcgateway/messages/history/a@b", Some("Apikey x")))), 405);
    }

    #[test]
    fn tokens() {
        let t = new_token(&[0xfb; 32]);
        assert_eq!(t.len(), 43);
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{t}");
        let body: Value = serde_json::from_str(&token_body("T", Some("https://gw.example:10888"), "a@b")).unwrap();
        assert_eq!(body, json!({"token": "T", "url": "https://gw.example:10888/webrtcgateway/messages/history/a@b"}));
        let body: Value = serde_json::from_str(&token_body("T", None, "a@b")).unwrap();
        assert_eq!(body["url"], "/webrtcgateway/messages/history/a@b");
    }

    #[test]
    fn answers() {
        let q = HistoryQuery { account: "a@b".into(), message_id: None, token: "t".into(), head_only: false };
        let entry = JournalEntry {
            contact: "bob@b".into(),
            timestamp: "2026-01-01T00:00:00Z".into(),
            disposition: vec!["display".into()],
            message_id: "m".into(),
            content_type: "text/plain".into(),
            content: "hi".into(),
            direction: Some(Direction::Incoming),
            state: Some(MessageState::Received),
            created_at: UnixMicros(1),
        };
        let ok = answer(&q, &Ok(StoreResult::History { answer: HistoryAnswer::Entries(vec![entry.clone()]) }));
        assert_eq!((ok.status, ok.content_type), (200, "application/json"));
        let body: Value = serde_json::from_str(&ok.body).unwrap();
        assert_eq!(
            body,
            json!({"account": "a@b", "messages": [{"contact": "bob@b", "timestamp": "2026-01-01T00:00:00Z",
                "disposition": ["display"], "message_id": "m", "content_type": "text/plain", "content": "hi",
                "direction": "incoming", "state": "received"}]})
        );
        let marker = entry_json(&JournalEntry { direction: None, state: None, ..entry });
        assert_eq!((&marker["direction"], &marker["state"]), (&json!(""), &Value::Null));
        let no = answer(&q, &Ok(StoreResult::History { answer: HistoryAnswer::Unauthorized }));
        assert_eq!((no.status, no.body.as_str()), (401, "Unauthorized"));
        assert_eq!(answer(&q, &Err(StoreError::Unavailable("down".into()))).status, 503);
        assert_eq!(answer(&q, &Ok(StoreResult::Done)).status, 500);
    }
}
