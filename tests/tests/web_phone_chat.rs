//! The web phone's chat panel in headless Chromium, against a scripted sylkRTC peer (the page is
//! served by the real gateway; its WebSocket goes to a small server in this test that speaks the
//! protocol as SylkServer does for messaging): after `registered` the page fetches the history
//! with `account-sync-conversations` and rebuilds its conversations from the journal (messages,
//! an IMDN, a removed conversation); it answers `delivered` for an incoming message that asks
//! for it and `displayed` once the conversation is on screen; it sends `account-message` and
//! shows the `accepted` → `delivered` → `displayed` marks; after a reload it syncs the whole
//! history again. Runs in its own network namespace with only loopback.
//!
//! The second test runs two pages (alice and bob) through the gateway's own messaging and
//! kamailio: the message, `delivered` and `displayed` marks, and bob's history after a reload.
//!
//! `SYLKGW_SCREENSHOT_DIR=DIR` saves a PNG of the page with the conversation.

use serde_json::{json, Value};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sylkgw_tests::browser::Browser;
use sylkgw_tests::netns::in_netns;
use sylkgw_tests::peers::{Kamailio, KamailioOpts};
use sylkgw_tests::{binary, Server, TempDir};
use tungstenite::handshake::server::{Request, Response};
use tungstenite::Message;

const STEP: Duration = Duration::from_secs(10);
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

fn account_event(event: &str, fields: Value) -> Value {
    let mut e = json!({"sylkrtc": "account-event", "account": ALICE, "event": event});
    for (k, v) in fields.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

/// The journal the scripted peer replays: two messages with bob (ours, then an IMDN saying bob
/// read it; bob's, asking to be told when displayed), and a conversation with carol removed.
fn history() -> Value {
    let entry = |contact: &str, id: &str, direction: &str, ct: &str, content: &str, state: Value, disp: Value| {
        json!({"contact": contact, "timestamp": "2026-01-01T10:00:00.000Z", "disposition": disp, "message_id": id,
               "content_type": ct, "content": content, "direction": direction, "state": state})
    };
    json!([
        entry(BOB, "h-1", "outgoing", "text/plain", "earlier, from alice", json!("delivered"), json!([])),
        entry(BOB, "h-2", "incoming", "text/plain", "earlier, from bob", json!("received"), json!(["display"])),
        entry(
            BOB,
            "h-3",
            "incoming",
            "message/imdn",
            r#"{"message_id":"h-1","state":"displayed"}"#,
            json!("received"),
            json!([])
        ),
        entry("carol@example.com", "h-4", "incoming", "text/plain", "soon gone", json!("received"), json!([])),
        entry(
            "carol@example.com",
            "h-5",
            "",
            "application/sylk-conversation-remove",
            "carol@example.com",
            Value::Null,
            json!([])
        ),
    ])
}

/// A sylkRTC peer on one WebSocket at a time: acks everything, registers at once, answers
/// sync-conversations with [`history`] and every account-message with accepted, delivered and
/// displayed. Records the requests; `push` sends extra events.
struct Peer {
    port: u16,
    requests: Arc<Mutex<Vec<Value>>>,
    push: Sender<Value>,
    stop: Arc<AtomicBool>,
}

impl Peer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (push, pushed) = channel();
        let (r, s) = (Arc::clone(&requests), Arc::clone(&stop));
        std::thread::spawn(move || serve(listener, r, pushed, s));
        Self { port, requests, push, stop }
    }

    fn requests(&self, kind: &str) -> Vec<Value> {
        self.requests.lock().unwrap().iter().filter(|r| r["sylkrtc"] == kind).cloned().collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(listener: TcpListener, requests: Arc<Mutex<Vec<Value>>>, pushed: Receiver<Value>, stop: Arc<AtomicBool>) {
    listener.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::Relaxed) {
        let Ok((stream, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        stream.set_nonblocking(false).unwrap();
        #[allow(clippy::result_large_err)] // tungstenite's callback type
        let echo = |_: &Request, mut resp: Response| {
            resp.headers_mut().insert("Sec-WebSocket-Protocol", "sylkRTC-2".parse().unwrap());
            Ok(resp)
        };
        let Ok(mut ws) = tungstenite::accept_hdr(stream, echo) else { continue };
        ws.get_ref().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let send = |ws: &mut tungstenite::WebSocket<std::net::TcpStream>, v: Value| {
            let _ = ws.send(Message::text(v.to_string()));
        };
        send(&mut ws, json!({"sylkrtc": "ready-event"}));
        while !stop.load(Ordering::Relaxed) {
            while let Ok(v) = pushed.try_recv() {
                send(&mut ws, v);
            }
            let text = match ws.read() {
                Ok(Message::Text(t)) => t.to_string(),
                Ok(Message::Close(_)) => break,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(_) => break,
            };
            let req: Value = serde_json::from_str(&text).unwrap();
            requests.lock().unwrap().push(req.clone());
            send(&mut ws, json!({"sylkrtc": "ack", "transaction": req["transaction"]}));
            match req["sylkrtc"].as_str().unwrap_or_default() {
                "account-register" => {
                    send(&mut ws, account_event("registration-state", json!({"state": "registered"})))
                }
                "account-sync-conversations" => {
                    send(&mut ws, account_event("sync-conversations", json!({"messages": history()})))
                }
                "account-message" => {
                    for state in ["accepted", "delivered", "displayed"] {
                        send(
                            &mut ws,
                            account_event(
                                "disposition-notification",
                                json!({"message_id": req["message_id"], "message_timestamp": req["timestamp"],
                                       "state": state, "code": 200, "reason": "OK"}),
                            ),
                        );
                    }
                }
                _ => {}
            }
        }
    }
}

/// Connects the page to the peer, adds and registers alice, and waits for the history.
fn sign_in(b: &mut Browser, peer: &Peer) {
    b.wait_for("typeof window.phone === 'object'", STEP);
    let url = format!("ws://127.0.0.1:{}/webrtcgateway/ws", peer.port);
    assert_eq!(b.eval_ok(&format!("phone.connect({})", json!(url))), "ready");
    b.eval_ok(&format!("phone.addAccount('{ALICE}', 'secret', 'Alice')"));
    b.eval_ok("phone.register()");
    b.wait_for("phone.state().registration === 'registered' && phone.state().chat.synced", STEP);
}

fn marks(peer: &Peer) -> Vec<(String, String)> {
    peer.requests("account-disposition-notification")
        .iter()
        .map(|r| (r["message_id"].as_str().unwrap().to_string(), r["state"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn web_phone_chat() {
    if !in_netns("web_phone_chat") {
        return;
    }
    let gw = Server::start(binary("sylkgw-mio"), &[] as &[&str]);
    let peer = Peer::start();
    let page = format!("http://{}/", gw.addr);
    let mut b = Browser::launch(&page);
    sign_in(&mut b, &peer);

    // The history, rebuilt from the journal: h-1 marked read by the IMDN, carol's conversation gone.
    let sync = peer.requests("account-sync-conversations");
    assert_eq!(sync.len(), 1);
    assert_eq!(sync[0]["message_id"], Value::Null);
    let chat = b.eval_ok("phone.state().chat");
    let bob = chat["conversations"][BOB].as_array().expect("a conversation with bob").clone();
    let ids: Vec<&str> = bob.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["h-1", "h-2"]);
    assert_eq!(bob[0]["state"], "displayed");
    assert!(chat["conversations"].get("carol@example.com").is_none(), "{chat}");
    assert!(marks(&peer).is_empty(), "nothing is displayed before the conversation is shown");

    // On screen: bob's message that asked for it is reported `displayed`.
    b.eval_ok(&format!("phone.openConversation('{BOB}')"));
    b.wait_for("document.querySelectorAll('#chat-messages li').length === 2", STEP);
    let wait_mark = |b: &mut Browser, id: &str, state: &str| {
        b.wait_for(&format!("phone.state().chat.marks.some(m => m.id === '{id}' && m.state === '{state}')"), STEP);
    };
    wait_mark(&mut b, "h-2", "displayed");

    // A live message asking for both: `delivered` at once, `displayed` because it is on screen.
    let live = account_event(
        "message",
        json!({"sender": {"uri": BOB, "display_name": "Bob"}, "timestamp": "2026-01-01T10:05:00.000Z",
               "disposition_notification": ["positive-delivery", "display"], "message_id": "live-1",
               "content": "are you there?", "content_type": "text/plain"}),
    );
    peer.push.send(live).unwrap();
    b.eval_ok("phone.ping()");
    wait_mark(&mut b, "live-1", "delivered");
    wait_mark(&mut b, "live-1", "displayed");
    b.wait_for("document.getElementById('chat-messages').textContent.includes('are you there?')", STEP);

    // Sending: the request as sylkrtc.js words it, then the marks as the notifications come.
    let id = b.eval_ok(&format!("phone.sendMessage('sip:{BOB}', 'hello bob')"));
    let id = id.as_str().expect("the message id").to_string();
    let sent = peer.requests("account-message");
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (&sent[0]["account"], &sent[0]["uri"], &sent[0]["content"], &sent[0]["content_type"], &sent[0]["message_id"]),
        (&json!(ALICE), &json!(BOB), &json!("hello bob"), &json!("text/plain"), &json!(id))
    );
    b.wait_for(
        &format!("phone.state().chat.conversations['{BOB}'].find(m => m.id === '{id}').state === 'displayed'"),
        STEP,
    );
    b.wait_for("document.getElementById('chat-messages').textContent.includes('✓✓ read')", STEP);
    let mark_requests = peer.requests("account-disposition-notification");
    assert!(mark_requests.iter().all(|r| r["account"] == ALICE && r["uri"] == BOB), "{mark_requests:?}");
    assert_eq!(marks(&peer).len(), 3, "each mark once: {:?}", marks(&peer));

    if let Some(dir) = std::env::var_os("SYLKGW_SCREENSHOT_DIR") {
        b.save_screenshot(&std::path::PathBuf::from(dir).join("web_phone_chat.png"));
    }

    // The next sync asks for what came after the last entry seen.
    b.eval_ok("phone.syncConversations()");
    b.wait_for("phone.state().chat.syncs === 2", STEP);
    assert_eq!(peer.requests("account-sync-conversations")[1]["message_id"], "h-5");

    // A reload forgets everything: the whole history comes back from the gateway.
    b.navigate(&page);
    sign_in(&mut b, &peer);
    let sync = peer.requests("account-sync-conversations");
    assert_eq!(sync.last().unwrap()["message_id"], Value::Null);
    let ids = b.eval_ok(&format!("phone.state().chat.conversations['{BOB}'].map(m => m.id)"));
    assert_eq!(ids, json!(["h-1", "h-2"]));
    b.wait_for("document.querySelectorAll('#chat-conversations li').length === 1", STEP);
}

/// Connects the page to the gateway that served it, adds and registers `aor` (password
/// `secret`) and waits for its history.
fn sign_in_here(b: &mut Browser, aor: &str) {
    b.wait_for("typeof window.phone === 'object'", STEP);
    assert_eq!(b.eval_ok("phone.connect()"), "ready");
    b.eval_ok(&format!("phone.addAccount('{aor}', 'secret')"));
    b.eval_ok("phone.register()");
    let state = b.eval_ok("phone.waitFor('registration', ['registered', 'failed'], 20000)");
    assert_eq!(state["registration"], "registered", "{}", b.diagnostics());
    b.wait_for("phone.state().chat.synced", STEP);
}

/// Alice and bob, each in a page of the gateway, chat through the gateway and kamailio: bob's
/// page shows alice's message and answers `delivered` by itself, and `displayed` when he opens
/// the conversation; alice's page shows both marks; bob reloads and finds the conversation again
/// in the gateway's store.
#[test]
fn web_phone_chat_through_kamailio() {
    if !in_netns("web_phone_chat_through_kamailio") {
        return;
    }
    let work = TempDir::new("web-phone-chat");
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    let gw = Server::start(
        binary("sylkgw-mio"),
        &["--sip-listen", "127.0.0.1:5080", "--outbound-proxy", &kam.addr().to_string()],
    );
    let page = format!("http://{}/", gw.addr);
    let mut alice = Browser::launch(&page);
    let mut bob = Browser::launch(&page);
    sign_in_here(&mut alice, "alice@127.0.0.1");
    sign_in_here(&mut bob, "bob@127.0.0.1");

    let id = alice.eval_ok("phone.sendMessage('bob@127.0.0.1', 'hello bob')");
    let id = id.as_str().expect("a message id").to_string();
    let has_it = "(phone.state().chat.conversations['alice@127.0.0.1'] || []).some(m => m.content === 'hello bob')";
    bob.wait_for(has_it, STEP);
    let state = |b: &mut Browser| {
        b.eval_ok(&format!("phone.state().chat.conversations['bob@127.0.0.1'].find(m => m.id === '{id}').state"))
    };
    let deadline = std::time::Instant::now() + STEP;
    while state(&mut alice) != "delivered" && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(state(&mut alice), "delivered", "gateway log:\n{}", gw.stderr_text());

    bob.eval_ok("phone.openConversation('alice@127.0.0.1')");
    alice.wait_for(
        &format!("phone.state().chat.conversations['bob@127.0.0.1'].find(m => m.id === '{id}').state === 'displayed'"),
        STEP,
    );
    alice.wait_for("document.getElementById('chat-messages').textContent.includes('✓✓ read')", STEP);
    if let Some(dir) = std::env::var_os("SYLKGW_SCREENSHOT_DIR") {
        alice.save_screenshot(&std::path::PathBuf::from(dir).join("web_phone_chat_alice.png"));
    }

    // Bob reloads: the conversation comes back from the gateway's store.
    bob.navigate(&page);
    sign_in_here(&mut bob, "bob@127.0.0.1");
    bob.wait_for(has_it, STEP);
    alice.close();
    bob.close();
    kam.stop();
}
