//! SIP MESSAGE (RFC 3428) through kamailio: two SIP stacks (alice and bob, each on its own UDP
//! socket, driven by a small loop here) register, and alice's MESSAGE — challenged by kamailio
//! with 407, answered with her credentials — reaches bob's Contact, whose user answers it; both
//! results come back; and alice's MESSAGE to a sipp UAS (not one of ours) through kamailio.
//! Each test runs in its own network namespace with only loopback.

#![allow(clippy::disallowed_methods)] // a real clock drives real sockets

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use sylkgw_core::config::SipConfig;
use sylkgw_core::rng::Rng;
use sylkgw_core::sip::registration::RegState;
use sylkgw_core::sip::stack::{MessageParams, RegParams, SipEvent, SipIdentity, SipOutput, SipStack};
use sylkgw_core::sip::transport::TransportOut;
use sylkgw_core::SocketId;
use sylkgw_tests::netns::in_netns;
use sylkgw_tests::peers::{Kamailio, KamailioOpts, Scenario, Sipp};
use sylkgw_tests::TempDir;

const STEP: Duration = Duration::from_secs(10);

/// One SIP user agent on a real UDP socket.
struct Ua {
    stack: SipStack,
    sock: UdpSocket,
    rng: Rng,
    events: Vec<SipEvent>,
}

impl Ua {
    fn new(proxy: SocketAddr, seed: u8) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        let local = sock.local_addr().unwrap();
        let cfg = SipConfig { listen: local, outbound_sip_proxy: Some(proxy.to_string()), ..SipConfig::default() };
        let mut stack = SipStack::new(cfg);
        stack.set_udp_socket(SocketId(0), local);
        Self { stack, sock, rng: Rng::new([seed; 32]), events: Vec::new() }
    }

    fn identity(user: &str, domain: &str) -> SipIdentity {
        SipIdentity {
            aor: format!("{user}@{domain}"),
            secret: "secret".into(),
            display_name: Some(user.to_uppercase()),
            user_agent: None,
            contact_user: format!("{user}-1"),
        }
    }

    /// Sends what the stack asks for, reads one datagram if any, runs the timers.
    fn turn(&mut self) {
        while let Some(out) = self.stack.poll_output() {
            match out {
                SipOutput::Transport(TransportOut::Datagram { to, payload, .. }) => {
                    self.sock.send_to(&payload, to).unwrap();
                }
                other => panic!("only UDP to an IP proxy here, got {other:?}"),
            }
        }
        let mut buf = vec![0; 65_536];
        if let Ok((n, from)) = self.sock.recv_from(&mut buf) {
            self.stack.handle_datagram(from, &buf[..n], Instant::now(), &mut self.rng);
        }
        self.stack.handle_timeout(Instant::now(), &mut self.rng);
        self.events.extend(std::iter::from_fn(|| self.stack.poll_event()));
    }
}

/// Turns both user agents until `done` finds what it wants in the events of `which` (taken).
fn until<T>(uas: &mut [&mut Ua], which: usize, mut done: impl FnMut(&SipEvent) -> Option<T>) -> T {
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        for ua in uas.iter_mut() {
            ua.turn();
        }
        let events = &mut uas[which].events;
        if let Some(pos) = events.iter().position(|e| done(e).is_some()) {
            let e = events.remove(pos);
            return done(&e).unwrap();
        }
    }
    panic!("timed out; events: {:?}", uas.iter().map(|u| &u.events).collect::<Vec<_>>());
}

fn register(ua: &mut Ua, identity: SipIdentity) {
    ua.stack.register(RegParams { identity, push: None }, Instant::now(), &mut ua.rng);
    until(&mut [ua], 0, |e| matches!(e, SipEvent::Registration { state: RegState::Registered, .. }).then_some(()));
}

#[test]
fn message_through_kamailio() {
    if !in_netns("message_through_kamailio") {
        return;
    }
    let work = TempDir::new("msg-kam");
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    let domain = kam.domain();
    let (mut alice, mut bob) = (Ua::new(kam.addr(), 1), Ua::new(kam.addr(), 2));
    register(&mut alice, Ua::identity("alice", &domain));
    register(&mut bob, Ua::identity("bob", &domain));

    // alice → bob: kamailio challenges (407), then relays to bob's Contact; bob answers 202.
    let params = MessageParams {
        identity: Ua::identity("alice", &domain),
        target: format!("bob@{domain}"),
        content_type: "text/plain".into(),
        body: b"hello bob".to_vec(),
        headers: Vec::new(),
    };
    let id = alice.stack.send_message(params, Instant::now(), &mut alice.rng);
    let (inbound, message) = until(&mut [&mut alice, &mut bob], 1, |e| match e {
        SipEvent::Message { id, message, .. } => Some((*id, message.clone())),
        _ => None,
    });
    assert_eq!(message.from_uri, format!("alice@{domain}"));
    assert_eq!(message.display_name.as_deref(), Some("ALICE"));
    assert_eq!((message.content_type.as_str(), message.body.as_slice()), ("text/plain", &b"hello bob"[..]));
    bob.stack.answer_message(inbound, 202, Instant::now());
    let result = until(&mut [&mut alice, &mut bob], 0, |e| match e {
        SipEvent::MessageResult { id: i, code, reason } if *i == id => Some((*code, reason.clone())),
        _ => None,
    });
    let log = kam.log_text();
    assert_eq!(result, (202, "Accepted".to_string()), "kamailio log:\n{log}");
    let tries = log.matches(&format!("REQ MESSAGE sip:bob@{domain}")).count();
    assert_eq!(tries, 2, "challenged once, then authorized:\n{log}");

    // A MESSAGE to a user with no binding: kamailio's 404 is the result.
    let params = MessageParams {
        identity: Ua::identity("alice", &domain),
        target: format!("carol@{domain}"),
        content_type: "text/plain".into(),
        body: b"anyone?".to_vec(),
        headers: Vec::new(),
    };
    let id = alice.stack.send_message(params, Instant::now(), &mut alice.rng);
    let code = until(&mut [&mut alice, &mut bob], 0, |e| match e {
        SipEvent::MessageResult { id: i, code, .. } if *i == id => Some(*code),
        _ => None,
    });
    assert_eq!(code, 404);
    kam.stop();
}

/// alice's MESSAGE through kamailio to a sipp UAS that checks the body and answers 200.
#[test]
fn message_to_sipp_through_kamailio() {
    if !in_netns("message_to_sipp_through_kamailio") {
        return;
    }
    let work = TempDir::new("msg-sipp");
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    let domain = kam.domain();
    let sipp_addr: SocketAddr = "127.0.0.1:5090".parse().unwrap();
    let mut uas = Sipp::new(work.path(), Scenario::peer_file("uas_message.xml"))
        .local(sipp_addr)
        .calls(1)
        .timeout(Duration::from_secs(20))
        .spawn();
    uas.wait_bound(STEP);
    let mut alice = Ua::new(kam.addr(), 3);
    let params = MessageParams {
        identity: Ua::identity("alice", &domain),
        target: format!("echo@{sipp_addr}"),
        content_type: "text/plain".into(),
        body: b"hello sipp".to_vec(),
        headers: Vec::new(),
    };
    let id = alice.stack.send_message(params, Instant::now(), &mut alice.rng);
    let result = until(&mut [&mut alice], 0, |e| match e {
        SipEvent::MessageResult { id: i, code, reason } if *i == id => Some((*code, reason.clone())),
        _ => None,
    });
    assert_eq!(result, (200, "OK".to_string()), "kamailio log:\n{}", kam.log_text());
    uas.wait(STEP).assert_success();
    kam.stop();
}

// ===== sylkRTC messaging through the gateway (issue #12) =====

/// Reads `ws` until an event matches `pred` (the REPLY_TIMEOUT of each read at most); returns it.
fn until_event(
    ws: &mut sylkgw_tests::WsClient,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let v: serde_json::Value = serde_json::from_str(&ws.recv_text()).unwrap();
        if pred(&v) {
            return v;
        }
    }
    panic!("no {what} within 20 s");
}

fn registered(gw: &sylkgw_tests::Server, account: &str) -> sylkgw_tests::WsClient {
    let mut ws = sylkgw_tests::WsClient::ready(gw);
    let user = account.split('@').next().unwrap();
    ws.add_and_register(account, &sylkgw_tests::ha1(user, "127.0.0.1", "secret"));
    assert_eq!(ws.next_registration_state().0, "registered", "gateway log:\n{}", gw.stderr_text());
    ws
}

/// alice and bob, each on their own WebSocket through the gateway, with kamailio between:
/// alice's message reaches bob as `message`, she gets `accepted`, then `delivered` and
/// `displayed` as bob's app acknowledges. Then bob goes away: alice's next message is stored for
/// him (`accepted` 202) and he finds it in `account-sync-conversations` once back.
#[test]
fn sylkrtc_messaging_through_kamailio() {
    if !in_netns("sylkrtc_messaging_through_kamailio") {
        return;
    }
    let work = TempDir::new("gw-msg");
    let data = work.path().join("data").display().to_string();
    messaging_scenario(&work, &["--data-dir", &data]);
}

/// The same scenario with the store on a real PostgreSQL server (a throw-away one the test
/// starts): receipts, offline storage, markers as `sync`, the journal, and the history after the
/// gateway restarts, all kept by the server.
#[test]
fn sylkrtc_messaging_through_kamailio_on_postgresql() {
    if !in_netns("sylkrtc_messaging_through_kamailio_on_postgresql") {
        return;
    }
    use sylkgw_storage::pg_server::{Durability, PgServer};
    let pg = PgServer::start(Durability::Fast).unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let url = pg.create_database().unwrap();
    let work = TempDir::new("gw-msg-pg1");
    messaging_scenario(&work, &["--storage", &url]);
}

/// alice and bob through one gateway whose store `storage` names (the options that choose it).
fn messaging_scenario(work: &TempDir, storage: &[&str]) {
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    let args = ["--sip-listen", "127.0.0.1:5080", "--outbound-proxy", &kam.addr().to_string()];
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.extend(storage.iter().map(|s| s.to_string()));
    let gw = sylkgw_tests::Server::start(sylkgw_tests::binary("sylkgw-mio"), &args);
    let mut alice = registered(&gw, "alice@127.0.0.1");
    let mut bob = registered(&gw, "bob@127.0.0.1");
    kam.wait_binding("bob", STEP);
    let send = |ws: &mut sylkgw_tests::WsClient, t: &str, id: &str, text: &str| {
        let req = serde_json::json!({"sylkrtc": "account-message", "transaction": t, "account": "alice@127.0.0.1",
            "uri": "bob@127.0.0.1", "message_id": id, "content": text, "content_type": "text/plain",
            "timestamp": "2026-01-01T12:00:00.000Z"});
        ws.send_text(&req.to_string());
        until_event(ws, "the ack", |v| v["transaction"] == t)
    };
    assert_eq!(send(&mut alice, "m1", "id-1", "Hello Bob")["sylkrtc"], "ack");
    let m = until_event(&mut bob, "the message", |v| v["event"] == "message");
    assert_eq!((m["sender"]["uri"].as_str(), m["content"].as_str()), (Some("alice@127.0.0.1"), Some("Hello Bob")));
    assert_eq!(m["message_id"], "id-1");
    let d = until_event(&mut alice, "accepted", |v| v["event"] == "disposition-notification");
    assert_eq!((d["state"].as_str(), d["code"].as_u64()), (Some("accepted"), Some(200)), "{d}");
    for state in ["delivered", "displayed"] {
        let req = serde_json::json!({"sylkrtc": "account-disposition-notification", "transaction": state,
            "account": "bob@127.0.0.1", "uri": "alice@127.0.0.1", "message_id": "id-1", "state": state,
            "timestamp": "2026-01-01T12:00:00.000Z"});
        bob.send_text(&req.to_string());
        assert_eq!(until_event(&mut bob, "the ack", |v| v["transaction"] == state)["sylkrtc"], "ack");
        let d = until_event(&mut alice, state, |v| v["event"] == "disposition-notification");
        assert_eq!((d["state"].as_str(), d["message_id"].as_str()), (Some(state), Some("id-1")), "{d}");
    }
    // Bob goes away; kamailio has no binding for him: the gateway keeps the message for him.
    bob.close();
    let deadline = Instant::now() + STEP;
    while kam.try_rpc(&["ul.lookup", "location", "bob@127.0.0.1"]).is_ok_and(|t| t.contains("Contact")) {
        assert!(Instant::now() < deadline, "bob's binding stays");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(send(&mut alice, "m2", "id-2", "while you were out")["sylkrtc"], "ack");
    let d = until_event(&mut alice, "accepted", |v| v["event"] == "disposition-notification");
    assert_eq!((d["state"].as_str(), d["code"].as_u64()), (Some("accepted"), Some(202)), "{d}\n{}", gw.stderr_text());
    let mut bob = registered(&gw, "bob@127.0.0.1");
    let sync = r#"{"sylkrtc":"account-sync-conversations","transaction":"s","account":"bob@127.0.0.1"}"#;
    bob.send_text(sync);
    let journal = until_event(&mut bob, "sync-conversations", |v| v["event"] == "sync-conversations");
    let ids: Vec<&str> =
        journal["messages"].as_array().unwrap().iter().map(|m| m["message_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"id-1") && ids.contains(&"id-2"), "{journal}");

    // Alice on a second WebSocket: her markers reach it as `sync` (once: the copy of the
    // MESSAGE to herself that kamailio forks back to the gateway is dropped), and the journal.
    let mut alice2 = registered(&gw, "alice@127.0.0.1");
    let marker = |ws: &mut sylkgw_tests::WsClient, t: &str, kind: &str, extra: &str| {
        let text = format!(
            r#"{{"sylkrtc":"{kind}","transaction":"{t}","account":"alice@127.0.0.1","contact":"bob@127.0.0.1"{extra}}}"#
        );
        ws.send_text(&text);
        assert_eq!(until_event(ws, "the ack", |v| v["transaction"] == t)["sylkrtc"], "ack");
    };
    marker(&mut alice, "r", "account-mark-conversation-read", "");
    let sync = until_event(&mut alice2, "sync", |v| v["event"] == "sync");
    assert_eq!((sync["type"].as_str(), sync["action"].as_str()), (Some("conversation"), Some("read")), "{sync}");
    marker(&mut alice, "rm", "account-remove-message", r#","message_id":"id-1""#);
    let sync = until_event(&mut alice2, "sync", |v| v["event"] == "sync");
    assert_eq!((sync["type"].as_str(), sync["action"].as_str()), (Some("message"), Some("remove")), "{sync}");
    assert_eq!(sync["content"]["message_id"], "id-1");
    std::thread::sleep(Duration::from_millis(300));
    alice2.send_text(r#"{"sylkrtc":"ping","transaction":"p"}"#);
    let next = until_event(&mut alice2, "the ping's ack", |v| v["transaction"] == "p" || v["event"] == "sync");
    assert_eq!(next["sylkrtc"], "ack", "no second sync from the forked copy: {next}");
    let entries = |ws: &mut sylkgw_tests::WsClient, account: &str| {
        let text = format!(r#"{{"sylkrtc":"account-sync-conversations","transaction":"j","account":"{account}"}}"#);
        ws.send_text(&text);
        let journal = until_event(ws, "sync-conversations", |v| v["event"] == "sync-conversations");
        journal["messages"].as_array().unwrap().clone()
    };
    let types: Vec<String> = entries(&mut alice2, "alice@127.0.0.1")
        .iter()
        .map(|m| m["content_type"].as_str().unwrap().to_string())
        .collect();
    assert!(types.contains(&"application/sylk-conversation-read".to_string()), "{types:?}");
    assert!(types.contains(&"application/sylk-message-remove".to_string()), "{types:?}");
    // Removing the whole conversation: `sync` on the other connection, and the journal keeps
    // only the marker of it for bob.
    marker(&mut alice, "rc", "account-remove-conversation", "");
    let sync = until_event(&mut alice2, "sync", |v| v["event"] == "sync");
    assert_eq!((sync["type"].as_str(), sync["action"].as_str()), (Some("conversation"), Some("remove")), "{sync}");
    let left: Vec<(String, String)> = entries(&mut alice2, "alice@127.0.0.1")
        .iter()
        .map(|m| (m["content_type"].as_str().unwrap().to_string(), m["message_id"].as_str().unwrap().to_string()))
        .collect();
    assert!(left.iter().any(|(t, _)| t == "application/sylk-conversation-remove"), "{left:?}");
    assert!(!left.iter().any(|(_, id)| id == "id-1" || id == "id-2"), "bob's conversation is gone: {left:?}");

    // The gateway restarts on the same store: the history is intact.
    drop((alice, alice2, bob));
    let mut gw = gw;
    gw.sigterm();
    gw.wait_exit(Duration::from_secs(10));
    let gw = sylkgw_tests::Server::start(sylkgw_tests::binary("sylkgw-mio"), &args);
    let mut bob = registered(&gw, "bob@127.0.0.1");
    let ids: Vec<String> =
        entries(&mut bob, "bob@127.0.0.1").iter().map(|m| m["message_id"].as_str().unwrap().to_string()).collect();
    assert!(ids.contains(&"id-2".to_string()), "{ids:?}");
}

/// A SIP-only phone (bob: a SIP stack on its own UDP socket, as a desk phone would be) and
/// alice in a browser through the gateway, with kamailio between: bob's plain and CPIM
/// MESSAGEs reach alice as `message`; her `displayed` goes back to bob as an IMDN; her
/// `account-message` reaches bob as CPIM, and his 200 is her `accepted`.
#[test]
fn sip_phone_and_browser_chat_through_kamailio() {
    if !in_netns("sip_phone_and_browser_chat_through_kamailio") {
        return;
    }
    use sylkgw_core::messaging::{classify, outgoing, Identity, Incoming};
    let work = TempDir::new("gw-msg-sip");
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    let domain = kam.domain();
    let data = work.path().join("data").display().to_string();
    let proxy = kam.addr().to_string();
    let args = ["--sip-listen", "127.0.0.1:5080", "--outbound-proxy", &proxy, "--data-dir", &data];
    let gw = sylkgw_tests::Server::start(sylkgw_tests::binary("sylkgw-mio"), &args);
    let mut alice = registered(&gw, "alice@127.0.0.1");
    let mut bob = Ua::new(kam.addr(), 4);
    register(&mut bob, Ua::identity("bob", &domain));
    kam.wait_binding("alice", STEP);
    let bob_sends = |bob: &mut Ua, content_type: &str, body: Vec<u8>| {
        let params = MessageParams {
            identity: Ua::identity("bob", &domain),
            target: format!("alice@{domain}"),
            content_type: content_type.into(),
            body,
            headers: Vec::new(),
        };
        let id = bob.stack.send_message(params, Instant::now(), &mut bob.rng);
        until(&mut [bob], 0, |e| match e {
            SipEvent::MessageResult { id: i, code, .. } if *i == id => Some(*code),
            _ => None,
        })
    };
    assert_eq!(bob_sends(&mut bob, "text/plain", b"plain hello".to_vec()), 200, "{}", gw.stderr_text());
    let m = until_event(&mut alice, "the plain message", |v| v["event"] == "message");
    assert_eq!((m["content"].as_str(), m["sender"]["uri"].as_str()), (Some("plain hello"), Some("bob@127.0.0.1")));
    let me = Identity::from_aor(&format!("bob@{domain}"), Some("BOB"));
    let to = Identity::from_aor(&format!("alice@{domain}"), None);
    let cpim =
        outgoing::chat_message(&me, &to, "b-1", "2026-01-01T12:00:00Z", "cpim hello", "text/plain", true).unwrap();
    assert_eq!(bob_sends(&mut bob, cpim.content_type, cpim.body), 200);
    let m = until_event(&mut alice, "the CPIM message", |v| v["event"] == "message");
    assert_eq!((m["content"].as_str(), m["message_id"].as_str()), (Some("cpim hello"), Some("b-1")));
    assert_eq!(m["disposition_notification"], serde_json::json!(["positive-delivery", "display"]));

    // alice's app says it was displayed: an IMDN reaches bob.
    let req = r#"{"sylkrtc":"account-disposition-notification","transaction":"d","account":"alice@127.0.0.1","uri":"bob@127.0.0.1","message_id":"b-1","state":"displayed","timestamp":"2026-01-01T12:00:00Z"}"#;
    alice.send_text(req);
    let (inbound, message) = until(&mut [&mut bob], 0, |e| match e {
        SipEvent::Message { id, message, .. } => Some((*id, message.clone())),
        _ => None,
    });
    bob.stack.answer_message(inbound, 200, Instant::now());
    let from = Identity::new(format!("sip:{}", message.from_uri), None);
    let Ok(Incoming::Disposition(report)) = classify(&message.content_type, &message.body, &from) else {
        panic!("not an IMDN: {message:?}")
    };
    assert_eq!((report.imdn.message_id.as_str(), report.imdn.state()), ("b-1", "displayed"));

    // alice writes to bob: CPIM at his phone; his 200 is her `accepted`.
    let req = r#"{"sylkrtc":"account-message","transaction":"m","account":"alice@127.0.0.1","uri":"bob@127.0.0.1","message_id":"a-1","content":"hi phone","content_type":"text/plain","timestamp":"2026-01-01T12:00:01Z"}"#;
    alice.send_text(req);
    let (inbound, message) = until(&mut [&mut bob], 0, |e| match e {
        SipEvent::Message { id, message, .. } => Some((*id, message.clone())),
        _ => None,
    });
    bob.stack.answer_message(inbound, 200, Instant::now());
    let from = Identity::new(format!("sip:{}", message.from_uri), None);
    let Ok(Incoming::Message(chat)) = classify(&message.content_type, &message.body, &from) else {
        panic!("not a chat message: {message:?}")
    };
    assert_eq!((chat.content.as_str(), chat.message_id.as_deref()), ("hi phone", Some("a-1")));
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        bob.turn();
    }
    let d = until_event(&mut alice, "accepted", |v| v["event"] == "disposition-notification");
    assert_eq!(
        (d["state"].as_str(), d["message_id"].as_str(), d["code"].as_u64()),
        (Some("accepted"), Some("a-1"), Some(200))
    );
    kam.stop();
}

/// Two gateway processes share one PostgreSQL store (a throw-away server the test starts):
/// alice on the first, bob on the second, kamailio between. Her message reaches him and is in
/// both journals, readable from either gateway; with bob gone, her next message is kept for him
/// by the first gateway and he finds it through the second.
#[test]
fn messaging_on_postgresql_with_two_gateways() {
    if !in_netns("messaging_on_postgresql_with_two_gateways") {
        return;
    }
    use sylkgw_storage::pg_server::{Durability, PgServer};
    let work = TempDir::new("gw-msg-pg");
    let pg = PgServer::start(Durability::Fast).unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let url = pg.create_database().unwrap();
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    let proxy = kam.addr().to_string();
    let start = |sip: &str| {
        let args = ["--sip-listen", sip, "--outbound-proxy", &proxy, "--storage", &url];
        sylkgw_tests::Server::start(sylkgw_tests::binary("sylkgw-mio"), &args)
    };
    let (gw1, gw2) = (start("127.0.0.1:5080"), start("127.0.0.1:5082"));
    let mut alice = registered(&gw1, "alice@127.0.0.1");
    let mut bob = registered(&gw2, "bob@127.0.0.1");
    kam.wait_binding("bob", STEP);
    let send = |ws: &mut sylkgw_tests::WsClient, t: &str, id: &str| {
        let req = serde_json::json!({"sylkrtc": "account-message", "transaction": t, "account": "alice@127.0.0.1",
            "uri": "bob@127.0.0.1", "message_id": id, "content": "over postgres", "content_type": "text/plain",
            "timestamp": "2026-01-01T12:00:00.000Z"});
        ws.send_text(&req.to_string());
        assert_eq!(until_event(ws, "the ack", |v| v["transaction"] == t)["sylkrtc"], "ack");
        until_event(ws, "the result", |v| v["event"] == "disposition-notification")
    };
    let d = send(&mut alice, "m1", "pg-1");
    assert_eq!((d["state"].as_str(), d["code"].as_u64()), (Some("accepted"), Some(200)), "{d}");
    let m = until_event(&mut bob, "the message", |v| v["event"] == "message");
    assert_eq!(m["message_id"], "pg-1");
    let ids = |ws: &mut sylkgw_tests::WsClient, account: &str| -> Vec<String> {
        let text = format!(r#"{{"sylkrtc":"account-sync-conversations","transaction":"j","account":"{account}"}}"#);
        ws.send_text(&text);
        let journal = until_event(ws, "sync-conversations", |v| v["event"] == "sync-conversations");
        journal["messages"].as_array().unwrap().iter().map(|m| m["message_id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(ids(&mut bob, "bob@127.0.0.1"), ["pg-1"]);
    // alice's own journal, read through the other gateway.
    let mut alice_on_2 = registered(&gw2, "alice@127.0.0.1");
    assert_eq!(ids(&mut alice_on_2, "alice@127.0.0.1"), ["pg-1"]);
    // bob leaves; alice's next message is kept for him by gw1, and gw2 gives it to him.
    bob.close();
    let deadline = Instant::now() + STEP;
    while kam.try_rpc(&["ul.lookup", "location", "bob@127.0.0.1"]).is_ok_and(|t| t.contains("Contact")) {
        assert!(Instant::now() < deadline, "bob's binding stays");
        std::thread::sleep(Duration::from_millis(50));
    }
    let d = send(&mut alice, "m2", "pg-2");
    assert_eq!((d["state"].as_str(), d["code"].as_u64()), (Some("accepted"), Some(202)), "{d}");
    let mut bob = registered(&gw2, "bob@127.0.0.1");
    assert_eq!(ids(&mut bob, "bob@127.0.0.1"), ["pg-1", "pg-2"]);
    kam.stop();
}

/// A SIP-only phone that is not ours: bob is sipp, registered at kamailio, with his Contact on a
/// second sipp (the UAS). His plain and CPIM MESSAGEs reach alice's browser as `message`; her
/// `displayed` reaches his phone as an IMDN, and her `account-message` as a chat message, both
/// answered 200 (the UAS checks each body); his 200 is her `accepted`.
#[test]
fn sipp_phone_and_browser_chat_through_kamailio() {
    if !in_netns("sipp_phone_and_browser_chat_through_kamailio") {
        return;
    }
    let work = TempDir::new("gw-msg-sipp");
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    let data = work.path().join("data").display().to_string();
    let proxy = kam.addr().to_string();
    let args = ["--sip-listen", "127.0.0.1:5080", "--outbound-proxy", &proxy, "--data-dir", &data];
    let gw = sylkgw_tests::Server::start(sylkgw_tests::binary("sylkgw-mio"), &args);
    let mut alice = registered(&gw, "alice@127.0.0.1");
    kam.wait_binding("alice", STEP);
    let uas_addr: SocketAddr = "127.0.0.1:5091".parse().unwrap();
    let mut uas = Sipp::new(work.path(), Scenario::peer_file("uas_message_any.xml"))
        .local(uas_addr)
        .calls(2)
        .timeout(Duration::from_secs(30))
        .spawn();
    uas.wait_bound(STEP);
    let uac = Sipp::new(work.path(), Scenario::peer_file("uac_register_message.xml"))
        .remote(kam.addr())
        .local("127.0.0.1:5090".parse().unwrap())
        .service("bob")
        .auth("bob", "secret")
        .arg("-key")
        .arg("bobcontact")
        .arg(uas_addr.to_string())
        .arg("-key")
        .arg("peer")
        .arg("alice")
        .calls(1)
        .timeout(Duration::from_secs(20))
        .spawn();
    // sipp ends each body with the line break of its scenario; the gateway passes bodies as sent.
    let m = until_event(&mut alice, "bob's plain message", |v| v["event"] == "message");
    assert_eq!(
        (m["content"].as_str().map(str::trim_end), m["content_type"].as_str(), m["sender"]["uri"].as_str()),
        (Some("plain hello from sipp"), Some("text/plain"), Some("bob@127.0.0.1")),
        "{m}"
    );
    let m = until_event(&mut alice, "bob's CPIM message", |v| v["event"] == "message");
    assert_eq!(
        (m["content"].as_str().map(str::trim_end), m["message_id"].as_str()),
        (Some("cpim hello from sipp"), Some("sipp-1")),
        "{m}"
    );
    assert_eq!(m["disposition_notification"], serde_json::json!(["positive-delivery", "display"]));
    uac.wait(STEP).assert_success();

    let req = r#"{"sylkrtc":"account-disposition-notification","transaction":"d","account":"alice@127.0.0.1","uri":"bob@127.0.0.1","message_id":"sipp-1","state":"displayed","timestamp":"2026-01-01T12:00:00Z"}"#;
    alice.send_text(req);
    let req = r#"{"sylkrtc":"account-message","transaction":"m","account":"alice@127.0.0.1","uri":"bob@127.0.0.1","message_id":"a-1","content":"hi sipp","content_type":"text/plain","timestamp":"2026-01-01T12:00:01Z"}"#;
    alice.send_text(req);
    let d =
        until_event(&mut alice, "accepted", |v| v["event"] == "disposition-notification" && v["message_id"] == "a-1");
    assert_eq!((d["state"].as_str(), d["code"].as_u64()), (Some("accepted"), Some(200)), "{d}");
    uas.wait(STEP).assert_success();
    kam.stop();
}
