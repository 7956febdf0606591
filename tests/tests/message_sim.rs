//! Whole-gateway messaging simulation (issue #12): the real `Gateway` with its storage requests
//! carried out by the real SQLite backend (`sylkgw-storage`, a file in a temporary directory),
//! two WebSockets with the same account, and a scripted SIP far end (registrar, proxy, peer),
//! on a virtual clock.
//!
//! What it proves: `account-message` is journaled, sent as CPIM, forked as `sync` to the other
//! connection, and reported `accepted`/`failed` with the SIP code; an incoming MESSAGE reaches
//! every connection of the account and is journaled; an IMDN becomes `disposition-notification`;
//! a MESSAGE for an offline account of the store is kept for it (`accepted` 202) and found in its
//! `account-sync-conversations`; markers (read, removals) are journaled, forked and sent to the
//! account's other devices, our own copy coming back is dropped; public keys are stored and
//! looked up; the errors (unknown account, not authenticated, too large, too many, storage down).

#![allow(clippy::disallowed_methods)] // Instant::now is only the epoch of the virtual clock

use serde_json::{json, Value};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use sylkgw_core::capture;
use sylkgw_core::storage::{StoreError, StoreRequest};
use sylkgw_core::{ConnId, Input};
use sylkgw_tests::gateway_sim::{reply, BindAnswer, GatewaySim, World, HA1};
use sylkgw_tests::sip_text::{body, header};
use sylkgw_tests::webrtc_client::{Datagram, WebRtcClient};
use sylkgw_tests::TempDir;

const A1: ConnId = ConnId(1);
const A2: ConnId = ConnId(2);
const B: ConnId = ConnId(3);

struct Sim {
    net: GatewaySim,
    /// SIP requests and responses the far end received.
    sip_in: Vec<String>,
    /// The far end's answer to the next MESSAGEs.
    message_code: u16,
    /// Storage is down while set.
    down: Rc<Cell<bool>>,
    _dir: TempDir,
}

impl World for Sim {
    fn parts(&mut self) -> (&mut GatewaySim, Vec<&mut WebRtcClient>) {
        (&mut self.net, vec![])
    }

    fn media_tick(&mut self) {}

    fn deliver(&mut self, d: Datagram) {
        if d.to == sylkgw_tests::gateway_sim::addr(sylkgw_tests::gateway_sim::FAR_SIP) {
            let text = String::from_utf8(d.data).unwrap();
            self.far_sip(text);
        } else {
            self.net.deliver(d);
        }
    }
}

impl Sim {
    fn new(tweak: impl FnOnce(&mut sylkgw_core::config::Config)) -> Self {
        let dir = TempDir::new("message-sim");
        let mut store = sylkgw_storage::open(None, &dir.path().join("data")).unwrap();
        let down = Rc::new(Cell::new(false));
        let is_down = down.clone();
        let mut net = GatewaySim::new([9; 32], BindAnswer::AtOnce, tweak);
        net.storage = Some(Box::new(move |request: &StoreRequest| {
            if is_down.get() {
                return Err(StoreError::Unavailable("database is locked".into()));
            }
            store.execute(request)
        }));
        Self { net, sip_in: Vec::new(), message_code: 200, down, _dir: dir }
    }

    fn far_sip(&mut self, text: String) {
        self.sip_in.push(text.clone());
        if text.starts_with("SIP/2.0") {
            return;
        }
        match text.split(' ').next().unwrap() {
            "REGISTER" => {
                let contact = header(&text, "Contact").to_string();
                self.net.far_send(reply(&text, 200, "OK", &format!("Contact: {contact};expires=600\r\n"), ""));
            }
            "MESSAGE" => {
                let code = self.message_code;
                let reason = match code {
                    200 => "OK",
                    403 => "Forbidden",
                    404 => "Not Found",
                    _ => "Whatever",
                };
                self.net.far_send(reply(&text, code, reason, "", ""));
            }
            _ => {}
        }
    }

    fn request(&mut self, conn: ConnId, req: Value) -> Value {
        let t = self.net.next_transaction(conn).to_string();
        self.net.request(conn, req, &t)
    }

    fn far_messages(&self) -> Vec<&String> {
        self.sip_in.iter().filter(|m| m.starts_with("MESSAGE ")).collect()
    }

    /// Opens `conn`, adds `account` and registers it; returns the Contact user.
    fn login(&mut self, conn: ConnId, account: &str) -> String {
        self.net.open_ws(conn);
        let add = json!({"sylkrtc": "account-add", "account": account, "password": HA1});
        assert_eq!(self.request(conn, add)["sylkrtc"], "ack");
        let before = self.sip_in.len();
        assert_eq!(self.request(conn, json!({"sylkrtc": "account-register", "account": account}))["sylkrtc"], "ack");
        self.until_event(conn, Duration::from_secs(5), |e| e["state"] == "registered");
        let reg = self.sip_in[before..].iter().find(|m| m.starts_with("REGISTER ")).unwrap().clone();
        let contact = header(&reg, "Contact");
        contact.split("sip:").nth(1).unwrap().split('@').next().unwrap().to_string()
    }

    fn message(&mut self, conn: ConnId, to: &str, id: &str, content: &str, content_type: &str) -> Value {
        self.request(
            conn,
            json!({"sylkrtc": "account-message", "account": "alice@example.com", "uri": to, "message_id": id,
                   "content": content, "content_type": content_type, "timestamp": "2026-01-01T12:00:00.000Z"}),
        )
    }

    fn journal(&mut self, conn: ConnId, account: &str) -> Vec<Value> {
        let req = json!({"sylkrtc": "account-sync-conversations", "account": account});
        assert_eq!(self.request(conn, req)["sylkrtc"], "ack");
        let events = self.net.take_events(conn);
        let sync = events.iter().find(|e| e["event"] == "sync-conversations").expect("sync-conversations");
        sync["messages"].as_array().unwrap().clone()
    }

    /// The far end sends a MESSAGE to Contact user `user`.
    fn far_message(&mut self, user: &str, n: u32, content_type: &str, payload: &str) {
        let msg = format!(
            "MESSAGE sip:{user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKm{n}\r\n\
             From: \"Bob\" <sip:bob@example.com>;tag=b{n}\r\nTo: <sip:alice@example.com>\r\nCall-ID: m{n}@far\r\n\
             CSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{payload}",
            payload.len()
        );
        self.net.far_send(msg);
        self.run(Duration::from_millis(50));
    }

    /// Replays what the capture recorded so far and checks the core does the same again
    /// (`WRITE_CAPTURES=1` also writes it to `tests/captures/<name>.cap`).
    fn check_capture(&mut self, name: &str) {
        let text = self.net.take_capture();
        let cap = capture::parse(&text).expect("the capture parses");
        let got = capture::replay(&cap, Instant::now()).expect("replay");
        assert_eq!(capture::mask_media(&text), capture::mask_media(&got), "{name}: the replay differs");
        assert!(text.contains("> storage   stored"), "{name}: storage recorded");
        if std::env::var_os("WRITE_CAPTURES").is_some() {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("captures").join(format!("{name}.cap"));
            std::fs::write(path, text).unwrap();
        }
    }

    /// The status line of the gateway's answer to the far end's MESSAGE `n`.
    fn answer_to(&self, n: u32) -> String {
        let call_id = format!("Call-ID: m{n}@far");
        let answer = self.sip_in.iter().find(|m| m.starts_with("SIP/2.0") && m.contains(&call_id)).expect("an answer");
        answer.lines().next().unwrap().to_string()
    }
}

fn cpim_from_bob(id: &str, inner_type: &str, payload: &str) -> String {
    format!(
        "From: Bob <sip:bob@example.com>\r\nTo: <sip:alice@example.com>\r\nDateTime: 2026-01-01T12:00:01Z\r\n\
         NS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: {id}\r\n\
         imdn.Disposition-Notification: positive-delivery, display\r\n\r\nContent-Type: {inner_type}\r\n\r\n{payload}"
    )
}

#[test]
fn an_account_message_is_journaled_sent_forked_and_accepted() {
    let mut sim = Sim::new(|_| {});
    sim.login(A1, "alice@example.com");
    sim.login(A2, "alice@example.com");
    assert_eq!(sim.message(A1, "bob@example.com", "m-1", "Hello Bob ✓", "text/plain")["sylkrtc"], "ack");
    // The other connection of the account gets the request as `sync` at once.
    let forked = sim.net.take_events(A2);
    assert_eq!(forked.len(), 1, "{forked:?}");
    assert_eq!((forked[0]["event"].as_str(), forked[0]["type"].as_str()), (Some("sync"), Some("message")));
    assert_eq!(forked[0]["action"], "add");
    assert_eq!(forked[0]["content"]["message_id"], "m-1");
    assert_eq!(forked[0]["content"]["sylkrtc"], "account-message");
    sim.run(Duration::from_millis(100));
    let sent = sim.far_messages();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].starts_with("MESSAGE sip:bob@example.com SIP/2.0"));
    assert_eq!(header(sent[0], "Content-Type"), "message/cpim");
    let cpim = body(sent[0]);
    assert!(cpim.contains("imdn.Message-ID: m-1\r\n"), "{cpim}");
    assert!(cpim.contains("imdn.Disposition-Notification: positive-delivery, display\r\n"));
    assert!(cpim.ends_with("Content-Type: text/plain; charset=utf-8\r\n\r\nHello Bob ✓"), "{cpim}");
    // 200 → `accepted` on both connections.
    for conn in [A1, A2] {
        let events = sim.net.take_events(conn);
        let d: Vec<&Value> = events.iter().filter(|e| e["event"] == "disposition-notification").collect();
        assert_eq!(d.len(), 1, "{events:?}");
        assert_eq!((d[0]["state"].as_str(), d[0]["code"].as_u64()), (Some("accepted"), Some(200)));
        assert_eq!(d[0]["message_id"], "m-1");
        assert_eq!(d[0]["message_timestamp"], "2026-01-01T12:00:00.000Z");
    }
    let journal = sim.journal(A2, "alice@example.com");
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0]["message_id"], "m-1");
    assert_eq!(journal[0]["state"], "accepted");
    assert_eq!(journal[0]["direction"], "outgoing");
    assert_eq!(journal[0]["content"], "Hello Bob ✓");
    // The same id again is acknowledged and not sent twice.
    assert_eq!(sim.message(A1, "bob@example.com", "m-1", "Hello Bob ✓", "text/plain")["sylkrtc"], "ack");
    sim.run(Duration::from_millis(100));
    assert_eq!(sim.far_messages().len(), 1);
    sim.check_capture("msg_outgoing_accepted");
}

#[test]
fn a_refused_message_is_failed_with_the_sip_code() {
    let mut sim = Sim::new(|_| {});
    sim.login(A1, "alice@example.com");
    sim.message_code = 403;
    assert_eq!(sim.message(A1, "bob@example.com", "m-2", "hi", "text/plain")["sylkrtc"], "ack");
    let events = sim.until_event(A1, Duration::from_secs(1), |e| e["event"] == "disposition-notification");
    let d = events.iter().find(|e| e["event"] == "disposition-notification").unwrap();
    assert_eq!(
        (d["state"].as_str(), d["code"].as_u64(), d["reason"].as_str()),
        (Some("failed"), Some(403), Some("Forbidden"))
    );
    assert_eq!(sim.journal(A1, "alice@example.com")[0]["state"], "failed");
}

#[test]
fn an_incoming_message_reaches_every_connection_and_the_journal() {
    let mut sim = Sim::new(|_| {});
    let user = sim.login(A1, "alice@example.com");
    sim.login(A2, "alice@example.com");
    sim.far_message(&user, 1, "message/cpim", &cpim_from_bob("b-1", "text/plain", "Hi Alice"));
    assert_eq!(sim.answer_to(1), "SIP/2.0 200 OK");
    for conn in [A1, A2] {
        let events = sim.net.take_events(conn);
        let m: Vec<&Value> = events.iter().filter(|e| e["event"] == "message").collect();
        assert_eq!(m.len(), 1, "{events:?}");
        assert_eq!(m[0]["sender"], json!({"uri": "bob@example.com", "display_name": "Bob"}));
        assert_eq!(m[0]["message_id"], "b-1");
        assert_eq!(m[0]["content"], "Hi Alice");
        assert_eq!(m[0]["content_type"], "text/plain");
        assert_eq!(m[0]["timestamp"], "2026-01-01T12:00:01Z");
        assert_eq!(m[0]["disposition_notification"], json!(["positive-delivery", "display"]));
    }
    // A plain text/plain MESSAGE from a SIP phone too, with an id and a time of our own.
    sim.far_message(&user, 2, "text/plain", "bare");
    assert_eq!(sim.answer_to(2), "SIP/2.0 200 OK");
    let events = sim.net.take_events(A1);
    assert_eq!(events[0]["content"], "bare");
    assert_eq!(events[0]["message_id"].as_str().unwrap().len(), 36);
    let journal = sim.journal(A1, "alice@example.com");
    assert_eq!(journal.len(), 2);
    assert_eq!(
        (journal[0]["direction"].as_str(), journal[0]["contact"].as_str()),
        (Some("incoming"), Some("bob@example.com"))
    );
    assert_eq!(journal[0]["state"], "received");
    // Garbage is refused with 400, and nothing reaches the browser.
    sim.far_message(&user, 3, "message/cpim", "not cpim at all");
    assert_eq!(sim.answer_to(3), "SIP/2.0 400 Bad Request");
    assert!(sim.net.take_events(A1).is_empty());
    sim.check_capture("msg_incoming");
}

#[test]
fn receipts_go_both_ways() {
    let mut sim = Sim::new(|_| {});
    let user = sim.login(A1, "alice@example.com");
    assert_eq!(sim.message(A1, "bob@example.com", "m-3", "hi", "text/plain")["sylkrtc"], "ack");
    sim.run(Duration::from_millis(100));
    sim.net.take_events(A1);
    // Bob's phone says it was displayed.
    let imdn = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<imdn xmlns=\"urn:ietf:params:xml:ns:imdn\">\
<message-id>m-3</message-id><datetime>2026-01-01T12:00:00.000Z</datetime><display-notification><status><displayed/></status></display-notification></imdn>";
    sim.far_message(&user, 4, "message/imdn+xml", imdn);
    assert_eq!(sim.answer_to(4), "SIP/2.0 200 OK");
    let events = sim.net.take_events(A1);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], "disposition-notification");
    assert_eq!((events[0]["state"].as_str(), events[0]["message_id"].as_str()), (Some("displayed"), Some("m-3")));
    assert_eq!(sim.journal(A1, "alice@example.com")[0]["state"], "displayed");
    // Alice's app acknowledges one of Bob's: every state the model allows goes out as an IMDN.
    for (n, state) in ["delivered", "displayed", "failed", "forbidden", "error"].into_iter().enumerate() {
        let req = json!({"sylkrtc": "account-disposition-notification", "account": "alice@example.com",
                         "uri": "bob@example.com", "message_id": "b-9", "state": state, "timestamp": "t"});
        assert_eq!(sim.request(A1, req)["sylkrtc"], "ack", "{state}");
        sim.run(Duration::from_millis(50));
        let sent = sim.far_messages();
        assert_eq!(sent.len(), 2 + n);
        let last = sent.last().unwrap();
        assert!(body(last).contains("Content-Type: message/imdn+xml"), "{last}");
        assert!(body(last).contains("<message-id>b-9</message-id>"));
    }
}

#[test]
fn markers_are_journaled_forked_and_sent_to_the_other_devices() {
    let mut sim = Sim::new(|_| {});
    let user = sim.login(A1, "alice@example.com");
    sim.login(A2, "alice@example.com");
    sim.far_message(&user, 5, "message/cpim", &cpim_from_bob("b-5", "text/plain", "one"));
    sim.net.take_events(A1);
    sim.net.take_events(A2);
    let before = sim.far_messages().len();
    let read = json!({"sylkrtc": "account-mark-conversation-read", "account": "alice@example.com", "contact": "bob@example.com"});
    assert_eq!(sim.request(A1, read)["sylkrtc"], "ack");
    let forked = sim.net.take_events(A2);
    assert_eq!(forked.len(), 1);
    assert_eq!((forked[0]["type"].as_str(), forked[0]["action"].as_str()), (Some("conversation"), Some("read")));
    assert_eq!(forked[0]["content"], json!({"contact": "bob@example.com"}));
    assert!(sim.net.take_events(A1).is_empty(), "not to the connection that asked");
    sim.run(Duration::from_millis(50));
    let to_self = sim.far_messages()[before].clone();
    assert!(to_self.starts_with("MESSAGE sip:alice@example.com SIP/2.0"), "{to_self}");
    assert_eq!(header(&to_self, "Content-Type"), "application/sylk-conversation-read");
    assert_eq!(body(&to_self), r#"{"contact":"bob@example.com"}"#);
    // The proxy forks it back to our own Contact: dropped, answered 200.
    let origin = header(&to_self, "X-Sylkgw-Sync").to_string();
    let back = format!(
        "MESSAGE sip:{user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKself\r\n\
         From: <sip:alice@example.com>;tag=s1\r\nTo: <sip:alice@example.com>\r\nCall-ID: m6@far\r\nCSeq: 1 MESSAGE\r\n\
         X-Sylkgw-Sync: {origin}\r\nContent-Type: application/sylk-conversation-read\r\nContent-Length: 29\r\n\r\n{{\"contact\":\"bob@example.com\"}}"
    );
    sim.net.far_send(back.clone());
    sim.run(Duration::from_millis(50));
    assert_eq!(sim.answer_to(6), "SIP/2.0 200 OK");
    assert!(sim.net.take_events(A1).is_empty() && sim.net.take_events(A2).is_empty());
    // From another gateway (no mark of ours): a `sync` for both connections.
    let other =
        back.replace(&origin, "someone-else").replace("m6@far", "m7@far").replace("z9hG4bKself", "z9hG4bKother");
    sim.net.far_send(other);
    sim.run(Duration::from_millis(50));
    for conn in [A1, A2] {
        let events = sim.net.take_events(conn);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["event"], "sync");
    }
    // Remove the message, then the conversation.
    let remove = json!({"sylkrtc": "account-remove-message", "account": "alice@example.com", "contact": "bob@example.com", "message_id": "b-5"});
    assert_eq!(sim.request(A1, remove)["sylkrtc"], "ack");
    let forked = sim.net.take_events(A2);
    assert_eq!(
        forked[0]["content"],
        json!({"contact": "bob@example.com", "message_id": "b-5", "direction": "outgoing"})
    );
    let remove =
        json!({"sylkrtc": "account-remove-conversation", "account": "alice@example.com", "contact": "bob@example.com"});
    assert_eq!(sim.request(A1, remove)["sylkrtc"], "ack");
    let forked = sim.net.take_events(A2);
    assert_eq!((forked[0]["type"].as_str(), forked[0]["action"].as_str()), (Some("conversation"), Some("remove")));
    let journal = sim.journal(A1, "alice@example.com");
    let types: Vec<&str> = journal.iter().map(|e| e["content_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["application/sylk-conversation-remove"]);
    sim.check_capture("msg_markers");
}

#[test]
fn a_message_for_an_offline_account_is_kept_for_it() {
    let mut sim = Sim::new(|_| {});
    // Bob logged in once (the store knows him), then went away.
    sim.login(B, "bob@example.com");
    sim.net.input(Input::StreamClosed { conn: B });
    sim.run(Duration::from_millis(100));
    sim.login(A1, "alice@example.com");
    sim.message_code = 404;
    assert_eq!(sim.message(A1, "bob@example.com", "m-off", "while you were out", "text/plain")["sylkrtc"], "ack");
    let events = sim.until_event(A1, Duration::from_secs(1), |e| e["event"] == "disposition-notification");
    let d = events.iter().find(|e| e["event"] == "disposition-notification").unwrap();
    assert_eq!((d["state"].as_str(), d["code"].as_u64()), (Some("accepted"), Some(202)));
    // To someone the store never saw: failed, 404.
    assert_eq!(sim.message(A1, "carol@example.com", "m-c", "hello?", "text/plain")["sylkrtc"], "ack");
    let events = sim.until_event(A1, Duration::from_secs(1), |e| e["event"] == "disposition-notification");
    let d = events.iter().find(|e| e["event"] == "disposition-notification").unwrap();
    assert_eq!((d["state"].as_str(), d["code"].as_u64()), (Some("failed"), Some(404)));
    // Bob comes back and finds it.
    sim.login(ConnId(4), "bob@example.com");
    let journal = sim.journal(ConnId(4), "bob@example.com");
    assert_eq!(journal.len(), 1, "{journal:?}");
    assert_eq!(journal[0]["message_id"], "m-off");
    assert_eq!(journal[0]["direction"], "incoming");
    assert_eq!(journal[0]["contact"], "alice@example.com");
    assert_eq!(journal[0]["content"], "while you were out");
    sim.check_capture("msg_offline_stored");
}

#[test]
fn public_keys_are_stored_and_looked_up() {
    let mut sim = Sim::new(|_| {});
    sim.login(A1, "alice@example.com");
    let lookup = json!({"sylkrtc": "lookup-public-key", "uri": "alice@example.com"});
    assert_eq!(sim.request(A1, lookup.clone())["sylkrtc"], "ack");
    let events = sim.net.take_events(A1);
    assert_eq!(events, [json!({"sylkrtc": "lookup-public-key-event", "uri": "alice@example.com", "public_key": null})]);
    let key = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nabc\n-----END PGP PUBLIC KEY BLOCK-----";
    assert_eq!(sim.message(A1, "bob@example.com", "k-1", key, "text/pgp-public-key")["sylkrtc"], "ack");
    sim.run(Duration::from_millis(100));
    assert!(body(sim.far_messages()[0]).contains("Content-Type: text/pgp-public-key"));
    assert_eq!(sim.request(A1, lookup)["sylkrtc"], "ack");
    let events = sim.net.take_events(A1);
    let event = events.iter().find(|e| e["sylkrtc"] == "lookup-public-key-event").unwrap();
    assert_eq!(event["public_key"], key);
}

#[test]
fn errors_are_sylkservers_and_limits_hold() {
    let mut sim = Sim::new(|c| {
        c.max_message_size = 10;
        c.max_messages_per_second = 2;
    });
    sim.net.open_ws(A1);
    let add = json!({"sylkrtc": "account-add", "account": "alice@example.com", "password": HA1});
    assert_eq!(sim.request(A1, add)["sylkrtc"], "ack");
    let error = |v: Value| v["error"].as_str().unwrap().to_string();
    let answer = sim.message(A1, "bob@example.com", "x", "hi", "text/plain");
    assert_eq!(error(answer), "Account not authenticated");
    let req = json!({"sylkrtc": "account-sync-conversations", "account": "nobody@example.com"});
    assert_eq!(error(sim.request(A1, req)), "Unknown account specified: nobody@example.com");
    sim.net.input(Input::StreamClosed { conn: A1 });
    sim.login(A2, "alice@example.com");
    let answer = sim.message(A2, "bob@example.com", "x", "more than ten bytes", "text/plain");
    assert_eq!(error(answer), "Message too large: at most 10 bytes");
    let answer = sim.message(A2, "bob@example.com", "x", "✓", "application/json");
    assert!(error(answer).starts_with("Invalid message: "));
    assert_eq!(sim.message(A2, "bob@example.com", "r-2", "two", "text/plain")["sylkrtc"], "ack");
    assert_eq!(error(sim.message(A2, "bob@example.com", "r-3", "three", "text/plain")), "Too many messages");
    let req = json!({"sylkrtc": "account-sync-conversations", "account": "alice@example.com", "since": "yesterday"});
    assert_eq!(error(sim.request(A2, req)), "Invalid since: not an ISO 8601 timestamp");
    // Storage down: a clear error, nothing sent, nothing acknowledged.
    sim.run(Duration::from_secs(2));
    let sent = sim.far_messages().len();
    sim.down.set(true);
    let answer = sim.message(A2, "bob@example.com", "d-1", "lost?", "text/plain");
    assert_eq!(error(answer), "storage unavailable: database is locked");
    sim.run(Duration::from_millis(100));
    assert_eq!(sim.far_messages().len(), sent);
    sim.down.set(false);
    assert_eq!(sim.message(A2, "bob@example.com", "d-1", "lost?", "text/plain")["sylkrtc"], "ack");
}

#[test]
fn the_journal_keeps_the_newest_entries() {
    let mut sim = Sim::new(|c| c.max_journal_entries = 2);
    sim.login(A1, "alice@example.com");
    for id in ["j-1", "j-2", "j-3"] {
        assert_eq!(sim.message(A1, "bob@example.com", id, "x", "text/plain")["sylkrtc"], "ack");
    }
    sim.run(Duration::from_millis(100));
    let ids: Vec<String> =
        sim.journal(A1, "alice@example.com").iter().map(|e| e["message_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, ["j-2", "j-3"], "the oldest dropped");
}

#[test]
fn an_incoming_message_reaches_a_connection_while_storage_is_down() {
    let mut sim = Sim::new(|_| {});
    let user = sim.login(A1, "alice@example.com");
    sim.down.set(true);
    // Not stored, but alice has it: the sender gets 200, not an error to retry on.
    sim.far_message(&user, 20, "text/plain", "one");
    assert_eq!(sim.answer_to(20), "SIP/2.0 200 OK");
    assert_eq!(sim.net.take_events(A1)[0]["content"], "one");
    // Her requests that need the store say so.
    let req = json!({"sylkrtc": "account-sync-conversations", "account": "alice@example.com"});
    assert_eq!(sim.request(A1, req)["error"], "storage unavailable: database is locked");
}

/// An `account-message` whose WebSocket goes away before the store has journaled it is still
/// sent, as the account of another connection of this gateway; with none left it is journaled
/// `failed`. (It stayed `pending` for ever, never sent.)
#[test]
fn a_message_whose_connection_went_away_is_sent_or_failed() {
    let mut sim = Sim::new(|_| {});
    sim.login(ConnId(1), "alice@example.com");
    sim.login(ConnId(2), "alice@example.com");
    let sent_before = sim.far_messages().len();
    let send = |sim: &mut Sim, conn: ConnId, id: &str| {
        let req = json!({"sylkrtc": "account-message", "account": "alice@example.com", "uri": "bob@example.com",
                         "message_id": id, "content": "hi", "content_type": "text/plain",
                         "timestamp": "2026-01-01T12:00:00.000Z"});
        sim.net.hold_stores = true;
        sim.net.send_request(conn, req, "gone");
        sim.net.input(Input::StreamClosed { conn });
        sim.net.release_stores();
        sim.run(Duration::from_secs(2));
    };
    send(&mut sim, ConnId(1), "m-gone-1");
    let sent: Vec<&String> = sim.far_messages()[sent_before..].to_vec();
    assert!(
        sent.iter().any(|m| m.contains("m-gone-1") && !m.contains("X-Sylkgw-Sync")),
        "the message went out with the other connection's account: {sent:?}"
    );
    let journal = sim.journal(ConnId(2), "alice@example.com");
    let entry = journal.iter().find(|e| e["message_id"] == "m-gone-1").expect("journaled");
    assert_eq!(entry["state"], "accepted", "{entry}");

    let before = sim.far_messages().len();
    send(&mut sim, ConnId(2), "m-gone-2");
    assert!(sim.far_messages()[before..].iter().all(|m| !m.contains("m-gone-2")), "no account left to send it as");
    sim.login(ConnId(4), "alice@example.com");
    let journal = sim.journal(ConnId(4), "alice@example.com");
    let entry = journal.iter().find(|e| e["message_id"] == "m-gone-2").expect("journaled");
    assert_eq!(entry["state"], "failed", "{entry}");
}
