//! The addressbook requests (spec §2.2, §3.2) and the history endpoint (§6.3) through the whole
//! gateway on a virtual clock, every `Output::Store` carried out by a real SQLite backend in a
//! temporary directory: alice registers with a scripted registrar, fetches and changes her
//! addressbook on one WebSocket while a second one with the same account hears each change;
//! a SIP device reads her journal over HTTP with its API token. Both runs are kept as replay
//! captures (`WRITE_CAPTURES=1` rewrites `tests/captures/addressbook*.cap`,
//! `history_http.cap`).

#![allow(clippy::disallowed_methods)] // Instant::now is only the epoch of the virtual clock

use serde_json::{json, Value};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use sylkgw_core::capture;
use sylkgw_core::storage::{Direction, MessageState, NewMessage, StoreRequest, UnixMicros};
use sylkgw_core::{Config, ConnId, Gateway, Input, Listener, Output};
use sylkgw_storage::{Sqlite, Storage};
use sylkgw_tests::gateway_sim::{addr, reply, BindAnswer, GatewaySim, World, FAR_SIP, HA1};
use sylkgw_tests::sip_text::header;
use sylkgw_tests::webrtc_client::{Datagram, WebRtcClient};
use sylkgw_tests::TempDir;

const WS1: ConnId = ConnId(1);
const WS2: ConnId = ConnId(2);
const ALICE: &str = "alice@example.com";

/// The gateway and a registrar that accepts every REGISTER (and a SIP device that accepts every
/// MESSAGE), the store shared with the test.
struct Sim {
    net: GatewaySim,
    db: Rc<RefCell<Sqlite>>,
    /// Everything the gateway sent to the far end.
    sip_in: Vec<String>,
    _dir: TempDir,
}

impl World for Sim {
    fn parts(&mut self) -> (&mut GatewaySim, Vec<&mut WebRtcClient>) {
        (&mut self.net, Vec::new())
    }

    fn media_tick(&mut self) {}

    fn deliver(&mut self, d: Datagram) {
        if d.to != addr(FAR_SIP) {
            return self.net.deliver(d);
        }
        let text = String::from_utf8(d.data).unwrap();
        self.sip_in.push(text.clone());
        if text.starts_with("REGISTER ") {
            let contact = header(&text, "Contact").to_string();
            self.net.far_send(reply(&text, 200, "OK", &format!("Contact: {contact};expires=600\r\n"), ""));
        } else if text.starts_with("MESSAGE ") {
            self.net.far_send(reply(&text, 200, "OK", "", ""));
        }
    }
}

impl Sim {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = TempDir::new("addressbook-sim");
        let mut net = GatewaySim::new([9; 32], BindAnswer::AtOnce, tweak);
        let db = Rc::new(RefCell::new(Sqlite::open(dir.path()).unwrap()));
        let store = Rc::clone(&db);
        net.storage = Some(Box::new(move |request| store.borrow_mut().execute(request)));
        Self { net, db, sip_in: Vec::new(), _dir: dir }
    }

    fn ask(&mut self, conn: ConnId, req: Value) -> Value {
        let t = self.net.next_transaction(conn).to_string();
        self.net.request(conn, req, &t)
    }

    fn events(&mut self, conn: ConnId) -> Vec<Value> {
        self.net.take_events(conn)
    }

    fn add_alice(&mut self, conn: ConnId) {
        self.net.open_ws(conn);
        let ack = self.ask(conn, json!({"sylkrtc": "account-add", "account": ALICE, "password": HA1}));
        assert_eq!(ack["sylkrtc"], "ack");
    }

    fn check_capture(&mut self, name: &str) {
        check_capture(name, &self.net.take_capture());
    }
}

fn check_capture(name: &str, text: &str) {
    let cap = capture::parse(text).expect("the capture parses");
    let got = capture::replay(&cap, Instant::now()).expect("replay");
    assert_eq!(text, got, "{name}: the replay differs");
    if std::env::var_os("WRITE_CAPTURES").is_some() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("captures").join(format!("{name}.cap"));
        std::fs::write(path, text).unwrap();
    }
}

fn contact(id: &str, name: &str) -> Value {
    json!({"id": id, "name": name, "uris": [{"id": "u1", "uri": "bob@example.com", "type": "sip"}],
           "dialog": {"policy": "allow", "subscribe": false}, "presence": {"policy": "allow", "subscribe": true},
           "attributes": {"favorite": "yes"}})
}

fn the_event(events: &[Value], name: &str) -> Value {
    let found: Vec<&Value> = events.iter().filter(|e| e["event"] == name).collect();
    assert_eq!(found.len(), 1, "one {name} in {events:#?}");
    found[0].clone()
}

#[test]
fn addressbook_fetch_update_fork() {
    let mut sim = Sim::new();
    sim.add_alice(WS1);
    sim.add_alice(WS2);

    // Before a registration: SylkServer's errors; nothing is asked of the store.
    let err = sim.ask(WS1, json!({"sylkrtc": "account-fetch-addressbook", "account": ALICE}));
    assert_eq!(err["error"], "Account not authenticated");
    let err = sim.ask(WS1, json!({"sylkrtc": "account-fetch-addressbook", "account": "carol@example.com"}));
    assert_eq!(err["error"], "Unknown account specified: carol@example.com");
    let err = sim.ask(
        WS1,
        json!({"sylkrtc": "account-update-addressbook", "account": ALICE, "action": "add",
        "type": "contact", "data": {"id": "x"}}),
    );
    assert_eq!(err["error"], "Mandatory property 'name' of 'Contact' object is missing");

    let ack = sim.ask(WS1, json!({"sylkrtc": "account-register", "account": ALICE}));
    assert_eq!(ack["sylkrtc"], "ack");
    sim.until_event(WS1, Duration::from_secs(5), |e| e["state"] == "registered");

    // An empty addressbook at first: ack, then the event.
    let ack = sim.ask(WS1, json!({"sylkrtc": "account-fetch-addressbook", "account": ALICE}));
    assert_eq!(ack["sylkrtc"], "ack");
    let fetched = the_event(&sim.events(WS1), "addressbook-fetched");
    assert_eq!(fetched["addressbook"], json!({"contacts": [], "groups": [], "policies": []}));

    // Add a contact: this connection and the other one with alice hear it.
    let ack = sim.ask(
        WS1,
        json!({"sylkrtc": "account-update-addressbook", "account": ALICE, "action": "add",
        "type": "contact", "data": contact("c1", "Bob")}),
    );
    assert_eq!(ack["sylkrtc"], "ack");
    let updated = the_event(&sim.events(WS1), "addressbook-updated");
    assert_eq!((&updated["type"], &updated["action"]), (&json!("contact"), &json!("add")));
    assert_eq!(updated["contact"]["defaultUri"]["uri"], "bob@example.com");
    assert_eq!(updated["contact"]["attributes"], json!({"favorite": "yes"}));
    let forked = the_event(&sim.events(WS2), "addressbook-updated");
    assert_eq!(forked, updated);

    // The other connection never registered alice: it hears the changes but may not make any.
    let err = sim.ask(
        WS2,
        json!({"sylkrtc": "account-update-addressbook", "account": ALICE, "action": "add",
        "type": "contact", "data": contact("c2", "Carol")}),
    );
    assert_eq!(err["error"], "Account not authenticated");

    // A group and a policy; then an update of the contact in place.
    for (kind, data) in [
        ("group", json!({"id": "g1", "name": "Friends", "contacts": [contact("c1", "Bob")]})),
        (
            "policy",
            json!({"id": "p1", "name": "Mallory", "uri": "mallory@example.com",
            "dialog": {"policy": "deny", "subscribe": false}, "presence": {"policy": "deny", "subscribe": false}}),
        ),
    ] {
        let ack = sim.ask(
            WS1,
            json!({"sylkrtc": "account-update-addressbook", "account": ALICE, "action": "add",
            "type": kind, "data": data}),
        );
        assert_eq!(ack["sylkrtc"], "ack");
        assert_eq!(the_event(&sim.events(WS1), "addressbook-updated")["type"], kind);
        assert_eq!(the_event(&sim.events(WS2), "addressbook-updated")["type"], kind);
    }
    let ack = sim.ask(
        WS1,
        json!({"sylkrtc": "account-update-addressbook", "account": ALICE, "action": "update",
        "type": "contact", "data": contact("c1", "Robert")}),
    );
    assert_eq!(ack["sylkrtc"], "ack");
    assert_eq!(the_event(&sim.events(WS1), "addressbook-updated")["contact"]["name"], "Robert");
    assert_eq!(the_event(&sim.events(WS2), "addressbook-updated")["contact"]["name"], "Robert");

    sim.ask(WS1, json!({"sylkrtc": "account-fetch-addressbook", "account": ALICE}));
    let book = the_event(&sim.events(WS1), "addressbook-fetched")["addressbook"].clone();
    let ids = |list: &str| book[list].as_array().unwrap().iter().map(|i| i["id"].clone()).collect::<Vec<_>>();
    assert_eq!(
        (ids("contacts"), ids("groups"), ids("policies")),
        (vec![json!("c1")], vec![json!("g1")], vec![json!("p1")])
    );
    assert_eq!(book["contacts"][0]["name"], "Robert");
    assert_eq!(book["groups"][0]["contacts"][0]["defaultUri"]["id"], "u1");

    // Changing an item that is not there fails, for this connection only.
    let ack = sim.ask(
        WS1,
        json!({"sylkrtc": "account-update-addressbook", "account": ALICE, "action": "update",
        "type": "contact", "data": contact("nope", "Nobody")}),
    );
    assert_eq!(ack["sylkrtc"], "ack");
    let failed = the_event(&sim.events(WS1), "addressbook-update-failed");
    assert_eq!(
        failed,
        json!({"sylkrtc": "account-event", "account": ALICE, "event": "addressbook-update-failed",
        "type": "contact", "action": "update", "error": "contact nope not found", "id": "nope"})
    );
    assert!(sim.events(WS2).is_empty());

    // Delete: both hear it, and it is gone.
    let ack = sim.ask(
        WS1,
        json!({"sylkrtc": "account-update-addressbook", "account": ALICE, "action": "delete",
        "type": "contact", "data": contact("c1", "Robert")}),
    );
    assert_eq!(ack["sylkrtc"], "ack");
    assert_eq!(the_event(&sim.events(WS1), "addressbook-updated")["action"], "delete");
    assert_eq!(the_event(&sim.events(WS2), "addressbook-updated")["action"], "delete");
    sim.ask(WS1, json!({"sylkrtc": "account-fetch-addressbook", "account": ALICE}));
    assert_eq!(the_event(&sim.events(WS1), "addressbook-fetched")["addressbook"]["contacts"], json!([]));

    sim.check_capture("addressbook");
}

/// A bare gateway (no SIP, no WebSocket) serving HTTP, its store a seeded SQLite file.
struct Http {
    gw: Gateway,
    now: Instant,
    db: Sqlite,
    next_conn: u64,
    /// When set, the store is down: every request is answered with this instead.
    down: bool,
    _dir: TempDir,
}

/// What one HTTP exchange produced.
#[derive(Debug, Default)]
struct Exchange {
    response: String,
    closed: bool,
    asked: Vec<StoreRequest>,
}

const UNIX_START: u64 = 1_767_225_600;
const TOKEN: &str = "Zq3-token_of-a-sip-device";

impl Http {
    fn new() -> Self {
        let dir = TempDir::new("history-sim");
        let mut db = Sqlite::open(dir.path()).unwrap();
        let at = |s: u64| UnixMicros(i64::try_from(s * 1_000_000).unwrap());
        let mut run = |r: StoreRequest| db.execute(&r).unwrap();
        for account in [ALICE, "carol@example.com"] {
            run(StoreRequest::TouchAccount { account: account.into(), now: at(UNIX_START - 100) });
        }
        run(StoreRequest::SetApiToken {
            account: ALICE.into(),
            token: TOKEN.into(),
            expires_at: at(UNIX_START + 3600),
        });
        // Carol's token ran out before the gateway started.
        run(StoreRequest::SetApiToken {
            account: "carol@example.com".into(),
            token: TOKEN.into(),
            expires_at: at(UNIX_START - 1),
        });
        for (i, (direction, content)) in
            [(Direction::Outgoing, "hello bob"), (Direction::Incoming, "hi alice"), (Direction::Outgoing, "ünïcode ✓")]
                .into_iter()
                .enumerate()
        {
            let message = NewMessage {
                account: ALICE.into(),
                contact: "bob@example.com".into(),
                direction: Some(direction),
                content_type: "text/plain".into(),
                content: content.into(),
                message_id: format!("m-{i}"),
                timestamp: format!("2026-01-01T00:00:0{i}.000Z"),
                disposition: vec![],
                state: Some(if direction == Direction::Incoming {
                    MessageState::Received
                } else {
                    MessageState::Accepted
                }),
                created_at: at(UNIX_START - 50 + i as u64),
            };
            run(StoreRequest::AddMessage { message, require_account: false });
        }
        let config = Config { capture: true, ..Config::default() };
        let now = Instant::now();
        let mut gw = Gateway::new(config, [3; 32], now, Duration::from_secs(UNIX_START)).unwrap();
        while !matches!(gw.poll_output(), Output::Timeout(_)) {}
        Self { gw, now, db, next_conn: 100, down: false, _dir: dir }
    }

    /// Feeds `input`, then carries out the outputs (storage after each drain) until quiet.
    fn input(&mut self, input: Input<'_>, into: &mut Exchange) {
        self.now += Duration::from_millis(10);
        self.gw.handle_input(self.now, input);
        let mut answers = Vec::new();
        loop {
            match self.gw.poll_output() {
                Output::Timeout(_) => {
                    let Some((id, result)) = answers.pop() else { break };
                    self.gw.handle_input(self.now, Input::Stored { id, result });
                }
                Output::StreamWrite { data, .. } => into.response.push_str(&String::from_utf8(data).unwrap()),
                Output::StreamClose { .. } => into.closed = true,
                Output::Store { id, request } => {
                    let result = if self.down {
                        Err(sylkgw_core::storage::StoreError::Unavailable("disk on fire".into()))
                    } else {
                        self.db.execute(&request)
                    };
                    into.asked.push(request);
                    answers.push((id, result));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Sends `request` on a fresh connection; returns what came back.
    fn exchange(&mut self, request: &str) -> Exchange {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let mut ex = Exchange::default();
        self.input(Input::Accepted { conn, listener: Listener::Web, peer: addr("192.0.2.30:40000") }, &mut ex);
        self.input(Input::StreamData { conn, data: request.as_bytes() }, &mut ex);
        ex
    }
}

/// `max_addressbook_items`: the add past the bound fails for the requester only, as
/// `addressbook-update-failed` with the store's reason; a replace of a held item still works.
#[test]
fn addressbook_items_are_bounded() {
    let mut sim = Sim::with(|c| c.max_addressbook_items = 1);
    sim.add_alice(WS1);
    sim.add_alice(WS2);
    let ack = sim.ask(WS1, json!({"sylkrtc": "account-register", "account": ALICE}));
    assert_eq!(ack["sylkrtc"], "ack");
    sim.until_event(WS1, Duration::from_secs(5), |e| e["state"] == "registered");
    sim.events(WS1);
    sim.events(WS2);
    let add = |id: &str, name: &str| {
        json!({"sylkrtc": "account-update-addressbook", "account": ALICE, "action": "add",
        "type": "contact", "data": contact(id, name)})
    };
    assert_eq!(sim.ask(WS1, add("c1", "Bob"))["sylkrtc"], "ack");
    the_event(&sim.events(WS1), "addressbook-updated");
    the_event(&sim.events(WS2), "addressbook-updated");
    assert_eq!(sim.ask(WS1, add("c2", "Carol"))["sylkrtc"], "ack");
    let failed = the_event(&sim.events(WS1), "addressbook-update-failed");
    assert_eq!(failed["error"], "storage constraint violated: addressbook holds at most 1 items");
    assert_eq!(failed["id"], "c2");
    assert!(sim.events(WS2).is_empty(), "the other connection hears of no change");
    assert_eq!(sim.ask(WS1, add("c1", "Robert"))["sylkrtc"], "ack");
    assert_eq!(the_event(&sim.events(WS1), "addressbook-updated")["contact"]["name"], "Robert");
}

fn get(path: &str, auth: Option<&str>) -> String {
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: gw.example.com\r\n{auth}\r\n")
}

fn status_and_body(ex: &Exchange) -> (u16, &str) {
    let (head, body) = ex.response.split_once("\r\n\r\n").expect("a whole response");
    (head.split(' ').nth(1).unwrap().parse().unwrap(), body)
}

#[test]
fn history_endpoint() {
    let mut http = Http::new();
    let apikey = format!("Apikey {TOKEN}");
    let path = "/webrtcgateway/messages/history/alice@example.com";

    let ex = http.exchange(&get(path, Some(&apikey)));
    assert!(ex.closed);
    assert!(ex.response.contains("Content-Type: application/json\r\n"), "{}", ex.response);
    let (status, body) = status_and_body(&ex);
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["account"], ALICE);
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(
        messages[2],
        json!({"contact": "bob@example.com", "timestamp": "2026-01-01T00:00:02.000Z", "disposition": [],
               "message_id": "m-2", "content_type": "text/plain", "content": "ünïcode ✓",
               "direction": "outgoing", "state": "accepted"})
    );
    let [StoreRequest::History { account, token, message_id: None, limit: 5000, .. }] = &ex.asked[..] else {
        panic!("{:?}", ex.asked)
    };
    assert_eq!((account.as_str(), token.as_str()), (ALICE, TOKEN));

    // After a message id (the journal's paging), and OPTIONS answered as GET, `sip:` in the path.
    let ex = http.exchange(&get(&format!("{path}/m-0"), Some(&apikey)));
    let ids: Vec<Value> = serde_json::from_str::<Value>(status_and_body(&ex).1).unwrap()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].clone())
        .collect();
    assert_eq!(ids, [json!("m-1"), json!("m-2")]);
    let options =
        get("/webrtcgateway/messages/history/sip:alice%40example.com", Some(&apikey)).replacen("GET", "OPTIONS", 1);
    assert_eq!(status_and_body(&http.exchange(&options)).0, 200);

    // Every wrong token is 401 `Unauthorized`: the store decides when the header is well-formed.
    for (path, auth, asks) in [
        (path, Some("Apikey wrong"), true),
        ("/webrtcgateway/messages/history/bob@example.com", Some(apikey.as_str()), true),
        ("/webrtcgateway/messages/history/carol@example.com", Some(apikey.as_str()), true),
        (path, None, false),
        (path, Some(TOKEN), false),
        (path, Some("Bearer x"), false),
    ] {
        let ex = http.exchange(&get(path, auth));
        assert_eq!(status_and_body(&ex), (401, "Unauthorized"), "{path} {auth:?}");
        assert_eq!(ex.asked.len(), usize::from(asks), "{path} {auth:?}");
        assert!(ex.closed);
    }

    // Not the endpoint's shape, or method.
    let post = get(path, Some(&apikey)).replacen("GET", "POST", 1);
    assert_eq!(status_and_body(&http.exchange(&post)).0, 405);
    for bad in [
        "/webrtcgateway/messages/history/a/b/c",
        "/webrtcgateway/messages/history/",
        "/webrtcgateway/messages/history/%c3%28",
    ] {
        let ex = http.exchange(&get(bad, Some(&apikey)));
        assert_eq!((status_and_body(&ex).0, ex.asked.len()), (404, 0), "{bad}");
    }

    // Bytes that come while the store works are ignored: one answer, for the first request.
    let conn = ConnId(900);
    let mut ex = Exchange::default();
    http.input(Input::Accepted { conn, listener: Listener::Web, peer: addr("192.0.2.30:40001") }, &mut ex);
    let two = format!("{}{}", get(path, Some(&apikey)), get(path, Some(&apikey)));
    let (first, second) = two.split_at(two.len() / 2 + 5);
    http.gw.handle_input(http.now, Input::StreamData { conn, data: first.as_bytes() });
    let mut asked = None;
    loop {
        match http.gw.poll_output() {
            Output::Timeout(_) => break,
            Output::Store { id, request } => asked = Some((id, http.db.execute(&request))),
            other => panic!("nothing is sent before the store answers: {other:?}"),
        }
    }
    http.input(Input::StreamData { conn, data: second.as_bytes() }, &mut ex);
    assert!(ex.response.is_empty() && ex.asked.is_empty());
    let (id, result) = asked.expect("the store was asked");
    http.input(Input::Stored { id, result }, &mut ex);
    assert_eq!(status_and_body(&ex).0, 200);
    assert_eq!(ex.response.matches("HTTP/1.1").count(), 1);

    // The client goes away before the store answers: the answer is dropped.
    let conn = ConnId(901);
    let mut ex = Exchange::default();
    http.input(Input::Accepted { conn, listener: Listener::Web, peer: addr("192.0.2.30:40002") }, &mut ex);
    http.gw.handle_input(http.now, Input::StreamData { conn, data: get(path, Some(&apikey)).as_bytes() });
    let Output::Store { id, request } = http.gw.poll_output() else { panic!("the store is asked") };
    while !matches!(http.gw.poll_output(), Output::Timeout(_)) {}
    http.input(Input::StreamClosed { conn }, &mut ex);
    let result = http.db.execute(&request);
    http.input(Input::Stored { id, result }, &mut ex);
    assert!(ex.response.is_empty() && !ex.closed);

    // The store is down: 503.
    http.down = true;
    let ex = http.exchange(&get(path, Some(&apikey)));
    assert_eq!(status_and_body(&ex), (503, "Service Unavailable"));

    check_capture("history_http", &http.gw.take_capture());
}

impl Sim {
    /// A device of `from` sends `body` as `application/sylk-api-token` to registration
    /// `contact_user`; returns the gateway's answer code.
    fn token_message(&mut self, n: u32, from: &str, contact_user: &str, body: &str) -> u16 {
        let call_id = format!("tok-{n}@far");
        self.net.far_send(format!(
            "MESSAGE sip:{contact_user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKtok{n}\r\n\
             From: <sip:{from}>;tag=dev{n}\r\nTo: <sip:{ALICE}>\r\nCall-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\n\
             Max-Forwards: 70\r\nContent-Type: application/sylk-api-token\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        self.run(Duration::from_secs(1));
        let answer = self
            .sip_in
            .iter()
            .find(|t| t.starts_with("SIP/2.0 ") && t.contains(&call_id))
            .unwrap_or_else(|| panic!("an answer to {call_id}: {:#?}", self.sip_in));
        answer[8..11].parse().unwrap()
    }

    /// The MESSAGEs of type `application/sylk-api-token` the gateway sent.
    fn token_answers(&self) -> Vec<String> {
        self.sip_in
            .iter()
            .filter(|t| t.starts_with("MESSAGE ") && t.contains("Content-Type: application/sylk-api-token"))
            .cloned()
            .collect()
    }
}

/// A SIP device of alice asks for a history token (SylkServer `_handle_generate_token`): it
/// gets 200, then a MESSAGE to alice with the token and the URL, and the token opens alice's
/// history in the store. Someone else asking is refused; the token MESSAGE itself, forked back
/// to the gateway's own registration, is only acknowledged.
#[test]
fn api_token_for_a_sip_device() {
    // The public URL the token MESSAGE names.
    let mut sim = Sim::with(|c| c.web_url = Some("https://gw.example.com:10888".into()));
    sim.add_alice(WS1);
    sim.ask(WS1, json!({"sylkrtc": "account-register", "account": ALICE}));
    sim.until_event(WS1, Duration::from_secs(5), |e| e["state"] == "registered");
    let register = sim.sip_in.iter().find(|t| t.starts_with("REGISTER ")).unwrap().clone();
    let contact_user =
        header(&register, "Contact").split("sip:").nth(1).unwrap().split('@').next().unwrap().to_string();

    assert_eq!(sim.token_message(1, "bob@example.com", &contact_user, ""), 403);
    assert!(sim.token_answers().is_empty());

    assert_eq!(sim.token_message(2, ALICE, &contact_user, ""), 200);
    let answers = sim.token_answers();
    assert_eq!(answers.len(), 1, "{answers:#?}");
    assert!(answers[0].starts_with("MESSAGE sip:alice@example.com SIP/2.0"), "{}", answers[0]);
    let body: Value = serde_json::from_str(sylkgw_tests::sip_text::body(&answers[0])).unwrap();
    assert_eq!(body["url"], "https://gw.example.com:10888/webrtcgateway/messages/history/alice@example.com");
    let token = body["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 43);

    // The token opens alice's history, and nobody else's.
    let now = UnixMicros(i64::try_from(sim.net.gw.unix_now().as_micros()).unwrap());
    let history = |sim: &Sim, account: &str| {
        sim.db.borrow_mut().execute(&StoreRequest::History {
            account: account.into(),
            token: token.clone(),
            message_id: None,
            now,
            limit: 10,
        })
    };
    assert!(matches!(
        history(&sim, ALICE),
        Ok(sylkgw_core::storage::StoreResult::History { answer: sylkgw_core::storage::HistoryAnswer::Entries(_) })
    ));
    assert!(matches!(
        history(&sim, "bob@example.com"),
        Ok(sylkgw_core::storage::StoreResult::History { answer: sylkgw_core::storage::HistoryAnswer::Unauthorized })
    ));

    // Our own token MESSAGE coming back: acknowledged, no new token.
    let echo = sylkgw_tests::sip_text::body(&answers[0]).to_string();
    assert_eq!(sim.token_message(3, ALICE, &contact_user, &echo), 200);
    assert_eq!(sim.token_answers().len(), 1);

    sim.check_capture("api_token");
}
