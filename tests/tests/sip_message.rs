//! SIP MESSAGE (RFC 3428) through the SIP stack alone: a scripted far end answers our MESSAGEs
//! (out of dialog through the proxy or to the target's domain, with a digest retry, over TCP
//! when the body is large, and inside a call's dialog) and sends its own (to one of our
//! registrations' Contacts, to an unknown user, inside a call's dialog); the test checks every
//! message the stack sends and every result it reports.

#![allow(clippy::disallowed_methods)] // Instant::now is only the epoch

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use sylkgw_core::config::SipConfig;
use sylkgw_core::dns::{Answer, QueryType, Records};
use sylkgw_core::rng::Rng;
use sylkgw_core::sip::calls::{CallParams, LegId};
use sylkgw_core::sip::invite::CallProgress;
use sylkgw_core::sip::stack::{
    MessageParams, MsgId, RegParams, SipEvent, SipIdentity, SipOutput, SipStack, MESSAGE_ANSWER_WAIT,
};
use sylkgw_core::sip::transport::TransportOut;
use sylkgw_core::{ConnId, SocketId};
use sylkgw_tests::sip_text::{body, header, response};

const PROXY: &str = "192.0.2.5:5060";

struct Harness {
    stack: SipStack,
    rng: Rng,
    now: Instant,
}

fn alice() -> SipIdentity {
    SipIdentity {
        aor: "alice@example.com".into(),
        secret: "secret".into(),
        display_name: Some("Alice Liddell".into()),
        user_agent: None,
        contact_user: "alice-1".into(),
    }
}

fn text(body: &str) -> MessageParams {
    MessageParams {
        identity: alice(),
        target: "bob@example.com".into(),
        content_type: "text/plain".into(),
        body: body.as_bytes().to_vec(),
        headers: vec![("X-Test".into(), "1".into())],
    }
}

impl Harness {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(tune: impl FnOnce(&mut SipConfig)) -> Self {
        let mut cfg = SipConfig {
            listen: "192.0.2.1:5060".parse().unwrap(),
            outbound_sip_proxy: Some(PROXY.into()),
            ..SipConfig::default()
        };
        tune(&mut cfg);
        let mut stack = SipStack::new(cfg);
        stack.set_udp_socket(SocketId(0), "192.0.2.1:5060".parse().unwrap());
        Self { stack, rng: Rng::new([7; 32]), now: Instant::now() }
    }

    fn send(&mut self, params: MessageParams) -> MsgId {
        self.stack.send_message(params, self.now, &mut self.rng)
    }

    /// Every output since the last call.
    fn outputs(&mut self) -> Vec<SipOutput> {
        std::iter::from_fn(|| self.stack.poll_output()).collect()
    }

    /// Every datagram the stack sent since the last call, with where it went.
    fn sent_to(&mut self) -> Vec<(SocketAddr, String)> {
        self.outputs()
            .into_iter()
            .filter_map(|o| match o {
                SipOutput::Transport(TransportOut::Datagram { to, payload, .. }) => {
                    Some((to, String::from_utf8(payload).unwrap()))
                }
                _ => None,
            })
            .collect()
    }

    /// Every datagram since the last call; all must go to the proxy.
    fn sent(&mut self) -> Vec<String> {
        self.sent_to()
            .into_iter()
            .map(|(to, m)| {
                assert_eq!(to, PROXY.parse::<SocketAddr>().unwrap(), "everything goes through the proxy");
                m
            })
            .collect()
    }

    fn events(&mut self) -> Vec<SipEvent> {
        std::iter::from_fn(|| self.stack.poll_event()).collect()
    }

    fn receive(&mut self, text: &str) {
        self.now += Duration::from_millis(10);
        self.stack.handle_datagram(PROXY.parse().unwrap(), text.as_bytes(), self.now, &mut self.rng);
    }

    fn tick(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.stack.handle_timeout(self.now, &mut self.rng);
    }

    /// Registers alice (Contact user `alice-1`).
    fn registered(&mut self) {
        self.stack.register(RegParams { identity: alice(), push: None }, self.now, &mut self.rng);
        let register = self.sent().remove(0);
        self.receive(&reply(&register, 200, "OK", Some("r1"), ""));
        self.sent();
        self.events();
    }

    /// An outgoing call answered by bob (remote target 198.51.100.7:5062, his tag `b1`); returns
    /// the leg and the INVITE.
    fn answered_call(&mut self) -> (LegId, String) {
        let params = CallParams {
            identity: alice(),
            target: "bob@example.com".into(),
            sdp: b"v=0\r\n".to_vec(),
            headers: Vec::new(),
        };
        let leg = self.stack.invite(params, self.now, &mut self.rng);
        let invite = self.sent().remove(0);
        self.receive(&reply(&invite, 200, "OK", Some("b1"), "Contact: <sip:bob@198.51.100.7:5062>\r\n"));
        assert!(self
            .events()
            .iter()
            .any(|e| matches!(e, SipEvent::Call { progress: CallProgress::Answered { .. }, .. })));
        let ack = self.sent().remove(0);
        assert!(ack.starts_with("ACK "), "{ack}");
        (leg, invite)
    }
}

fn branch(msg: &str) -> &str {
    header(msg, "Via").split("branch=").nth(1).unwrap().split(';').next().unwrap()
}

fn cseq(msg: &str) -> u32 {
    header(msg, "CSeq").split(' ').next().unwrap().parse().unwrap()
}

/// A response to `req` with `code`, To tag `tag` and extra header lines.
fn reply(req: &str, code: u16, reason: &str, tag: Option<&str>, extra: &str) -> String {
    let to = match tag {
        Some(t) => format!("{};tag={t}", header(req, "To")),
        None => header(req, "To").to_string(),
    };
    response(req, code, reason, &to, extra, "")
}

fn result(id: MsgId, code: u16, reason: &str) -> SipEvent {
    SipEvent::MessageResult { id, code, reason: reason.into() }
}

/// A MESSAGE from bob to `ruri` (`To` alice's AoR unless `to_tag` puts it in a dialog).
fn bobs_message(ruri: &str, branch: &str, call_id: &str, from_tag: &str, to_tag: Option<&str>, cseq: u32) -> String {
    let to = match to_tag {
        Some(t) => format!("<sip:alice@example.com>;tag={t}"),
        None => "<sip:alice@example.com>".into(),
    };
    format!(
        "MESSAGE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5:5060;branch={branch}\r\nMax-Forwards: 70\r\n\
         From: \"Bob\" <sip:bob@example.com>;tag={from_tag}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    )
}

// ===== Out of dialog =====

#[test]
fn out_of_dialog_answered_200() {
    let mut h = Harness::new();
    let id = h.send(text("hi bob"));
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    let msg = &sent[0];
    assert!(msg.starts_with("MESSAGE sip:bob@example.com SIP/2.0\r\n"), "{msg}");
    assert_eq!(header(msg, "From").split(";tag=").next(), Some("\"Alice Liddell\" <sip:alice@example.com>"));
    assert_eq!(header(msg, "To"), "<sip:bob@example.com>");
    assert_eq!(header(msg, "Route"), "<sip:192.0.2.5:5060;lr>");
    assert_eq!(header(msg, "CSeq").split(' ').nth(1), Some("MESSAGE"));
    assert_eq!((header(msg, "Content-Type"), header(msg, "X-Test"), body(msg)), ("text/plain", "1", "hi bob"));
    assert!(!msg.contains("\r\nContact:"), "a MESSAGE sets up no dialog (RFC 3428 §4)");
    h.receive(&reply(msg, 100, "Trying", None, ""));
    assert!(h.events().is_empty(), "a provisional response is no result");
    h.receive(&reply(msg, 200, "OK", Some("x1"), ""));
    assert_eq!(h.events(), [result(id, 200, "OK")]);
    h.receive(&reply(msg, 200, "OK", Some("x1"), ""));
    assert!(h.events().is_empty(), "a retransmitted 200 is absorbed");
    assert_eq!(h.stack.message_count(), (0, 0));
}

#[test]
fn proxy_challenge_answered_once() {
    let mut h = Harness::new();
    let id = h.send(text("hi"));
    let msg = h.sent().remove(0);
    let challenge = "Proxy-Authenticate: Digest realm=\"example.com\", nonce=\"abc\", qop=\"auth\"\r\n";
    h.receive(&reply(&msg, 407, "Proxy Authentication Required", Some("p1"), challenge));
    assert!(h.events().is_empty(), "the challenge is answered, not reported");
    let retry = h.sent().remove(0);
    assert!(retry.starts_with("MESSAGE sip:bob@example.com SIP/2.0\r\n"), "{retry}");
    let auth = header(&retry, "Proxy-Authorization");
    assert!(auth.starts_with("Digest username=\"alice\"") && auth.contains("uri=\"sip:bob@example.com\""), "{auth}");
    assert_eq!(header(&retry, "Call-ID"), header(&msg, "Call-ID"));
    assert_eq!(cseq(&retry), cseq(&msg) + 1);
    assert_ne!(branch(&retry), branch(&msg), "a new transaction");
    assert_eq!(body(&retry), "hi");
    h.receive(&reply(&retry, 200, "OK", Some("x1"), ""));
    assert_eq!(h.events(), [result(id, 200, "OK")]);

    // A second challenge for the same request (not stale) is the result.
    let id = h.send(text("again"));
    let msg = h.sent().remove(0);
    let www = "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"n1\"\r\n";
    h.receive(&reply(&msg, 401, "Unauthorized", Some("p2"), www));
    let retry = h.sent().remove(0);
    assert!(header(&retry, "Authorization").starts_with("Digest username=\"alice\""));
    h.receive(&reply(&retry, 401, "Unauthorized", Some("p3"), www));
    assert_eq!(h.events(), [result(id, 401, "Unauthorized")]);
    assert!(h.sent().is_empty(), "no third attempt");
}

#[test]
fn failure_is_the_result() {
    let mut h = Harness::new();
    let id = h.send(text("hi"));
    let msg = h.sent().remove(0);
    h.receive(&reply(&msg, 404, "Not Found", Some("x"), ""));
    assert_eq!(h.events(), [result(id, 404, "Not Found")]);
    assert_eq!(h.stack.message_count(), (0, 0));
}

#[test]
fn no_answer_is_408() {
    let mut h = Harness::new();
    let id = h.send(text("hi"));
    let msg = h.sent().remove(0);
    let mut retransmissions = 0;
    for _ in 0..400 {
        h.tick(100);
        retransmissions += h.sent().iter().filter(|m| **m == msg).count();
        if h.stack.message_count().0 == 0 {
            break;
        }
    }
    assert!(retransmissions > 0, "UDP retransmits (Timer E)");
    assert_eq!(h.events(), [result(id, 408, "Request Timeout")]);
    assert_eq!(h.stack.message_count(), (0, 0));
}

/// Answers the stack's RFC 3263 queries until none is left: NAPTR and SRV with nothing, A/AAAA
/// with `ip`. Returns the queries seen, as `type name`, and the outputs after the last one.
fn resolve_all(h: &mut Harness, ip: &Result<Answer, String>) -> (Vec<String>, Vec<SipOutput>) {
    let mut seen = Vec::new();
    loop {
        let outputs = h.outputs();
        let Some((query, qtype, name)) = outputs.iter().find_map(|o| match o {
            SipOutput::Resolve { query, qtype, name } => Some((*query, *qtype, name.clone())),
            _ => None,
        }) else {
            return (seen, outputs);
        };
        assert_eq!(outputs.len(), 1, "one query at a time: {outputs:?}");
        seen.push(format!("{qtype} {name}"));
        let result = match qtype {
            QueryType::Ip => ip.clone(),
            t => Ok(Answer { records: Records::empty(t), ttl: 0 }),
        };
        h.stack.handle_resolved(query, result, h.now, &mut h.rng);
    }
}

#[test]
fn unresolvable_domain_is_503_and_a_resolved_one_is_used() {
    let mut h = Harness::with(|c| c.outbound_sip_proxy = None);
    let id = h.send(MessageParams { target: "bob@nowhere.invalid".into(), ..text("hi") });
    let (seen, _) = resolve_all(&mut h, &Err("no such name".into()));
    assert_eq!(
        seen,
        [
            "naptr nowhere.invalid",
            "srv _sip._udp.nowhere.invalid",
            "srv _sip._tcp.nowhere.invalid",
            "srv _sips._tcp.nowhere.invalid",
            "ip nowhere.invalid"
        ],
        "RFC 3263 §4: NAPTR, then SRV for each transport, then the host"
    );
    assert_eq!(h.events(), [result(id, 503, "Service Unavailable")]);
    assert_eq!(h.stack.census().3, 0, "no query left");

    let id = h.send(MessageParams { target: "bob@example.org".into(), ..text("hi") });
    let (_, outputs) = resolve_all(&mut h, &Ok(Answer::ips(vec!["198.51.100.9".parse().unwrap()])));
    let (to, msg) = match &outputs[..] {
        [SipOutput::Transport(TransportOut::Datagram { to, payload, .. })] => {
            (*to, String::from_utf8(payload.clone()).unwrap())
        }
        other => panic!("expected the MESSAGE, got {other:?}"),
    };
    assert_eq!(to, "198.51.100.9:5060".parse::<SocketAddr>().unwrap());
    assert!(msg.starts_with("MESSAGE sip:bob@example.org SIP/2.0\r\n") && !msg.contains("\r\nRoute:"), "{msg}");
    h.stack.handle_datagram(to, reply(&msg, 200, "OK", Some("x"), "").as_bytes(), h.now, &mut h.rng);
    assert_eq!(h.events(), [result(id, 200, "OK")]);
}

#[test]
fn large_body_goes_over_tcp() {
    let mut h = Harness::new();
    let big = "x".repeat(2000);
    let id = h.send(text(&big));
    let conn = match &h.outputs()[..] {
        [SipOutput::Transport(TransportOut::Connect { conn, to })] => {
            assert_eq!(*to, PROXY.parse::<SocketAddr>().unwrap());
            *conn
        }
        other => panic!("expected a Connect (RFC 3261 §18.1.1), got {other:?}"),
    };
    h.stack.handle_connected(conn, true, h.now, &mut h.rng);
    let written: Vec<u8> = h
        .outputs()
        .into_iter()
        .filter_map(|o| match o {
            SipOutput::Transport(TransportOut::Write { conn: c, data }) if c == conn => Some(data),
            _ => None,
        })
        .flatten()
        .collect();
    let msg = String::from_utf8(written).unwrap();
    assert!(msg.starts_with("MESSAGE sip:bob@example.com SIP/2.0\r\n"), "{msg}");
    assert!(header(&msg, "Via").starts_with("SIP/2.0/TCP "), "the Via says TCP");
    assert_eq!(body(&msg), big);
    let ok = reply(&msg, 200, "OK", Some("x"), "");
    h.stack.handle_stream_data(conn, ok.as_bytes(), h.now, &mut h.rng);
    assert_eq!(h.events(), [result(id, 200, "OK")]);
}

#[test]
fn no_room_for_a_transaction_is_503() {
    let mut h = Harness::with(|c| c.max_transactions = 1);
    let first = h.send(text("one"));
    assert_eq!(h.sent().len(), 1);
    let second = h.send(text("two"));
    assert!(h.sent().is_empty(), "nothing goes out");
    assert_eq!(h.events(), [result(second, 503, "Service Unavailable")]);
    assert_ne!(first, second);
}

// ===== In a dialog =====

#[test]
fn in_dialog_both_ways() {
    let mut h = Harness::new();
    let (leg, invite) = h.answered_call();
    let id = h.stack.send_message_in_dialog(leg, "message/cpim", b"cpim".to_vec(), h.now, &mut h.rng).unwrap();
    let msg = h.sent().remove(0);
    assert!(msg.starts_with("MESSAGE sip:bob@198.51.100.7:5062 SIP/2.0\r\n"), "to the remote target: {msg}");
    assert_eq!(header(&msg, "Call-ID"), header(&invite, "Call-ID"));
    assert!(header(&msg, "To").ends_with(";tag=b1"), "in the dialog");
    assert_eq!(header(&msg, "From"), header(&invite, "From"));
    assert_eq!(cseq(&msg), cseq(&invite) + 1, "the dialog's next CSeq");
    assert_eq!((header(&msg, "Content-Type"), body(&msg)), ("message/cpim", "cpim"));
    h.receive(&reply(&msg, 200, "OK", None, ""));
    assert_eq!(h.events(), [result(id, 200, "OK")]);

    // Bob's MESSAGE in the same dialog.
    let from_tag = header(&invite, "From").split("tag=").nth(1).unwrap().to_string();
    let call_id = header(&invite, "Call-ID").to_string();
    let bobs = bobs_message("sip:alice-1@192.0.2.1:5060", "z9hG4bKdm1", &call_id, "b1", Some(&from_tag), 2);
    h.receive(&bobs);
    let resp = h.sent().remove(0);
    assert!(resp.starts_with("SIP/2.0 200 OK\r\n"), "{resp}");
    match &h.events()[..] {
        [SipEvent::DialogMessage { leg: l, message }] => {
            assert_eq!(*l, leg);
            assert_eq!((message.from_uri.as_str(), message.display_name.as_deref()), ("bob@example.com", Some("Bob")));
            assert_eq!((message.content_type.as_str(), message.body.as_slice()), ("text/plain", &b"hello"[..]));
            assert_eq!(message.call_id, call_id);
        }
        other => panic!("expected a DialogMessage, got {other:?}"),
    }
    // A MESSAGE with an old CSeq is refused (§12.2.2).
    h.receive(&bobs.replace("z9hG4bKdm1", "z9hG4bKdm2").replace("2 MESSAGE", "1 MESSAGE"));
    assert!(h.sent()[0].starts_with("SIP/2.0 500 "));
    assert!(h.events().is_empty());

    // After the call: no dialog, no MESSAGE.
    h.stack.hang_up(leg, h.now, &mut h.rng);
    let bye = h.sent().remove(0);
    h.receive(&reply(&bye, 200, "OK", None, ""));
    h.events();
    assert_eq!(h.stack.send_message_in_dialog(leg, "text/plain", b"late".to_vec(), h.now, &mut h.rng), None);
    assert!(h.sent().is_empty());
}

#[test]
fn in_dialog_timeout_is_408() {
    let mut h = Harness::new();
    let (leg, _) = h.answered_call();
    let id = h.stack.send_message_in_dialog(leg, "text/plain", b"hi".to_vec(), h.now, &mut h.rng).unwrap();
    h.sent();
    for _ in 0..400 {
        h.tick(100);
    }
    let events = h.events();
    assert!(events.contains(&result(id, 408, "Request Timeout")), "{events:?}");
}

// ===== Incoming, out of dialog =====

#[test]
fn incoming_to_a_registration_waits_for_its_user() {
    let mut h = Harness::new();
    h.registered();
    let msg = bobs_message("sip:alice-1@192.0.2.1:5060", "z9hG4bKm1", "m1@198.51.100.7", "t1", None, 5);
    h.receive(&msg);
    assert!(h.sent().is_empty(), "no answer before the user's");
    let id = match &h.events()[..] {
        [SipEvent::Message { id, message, .. }] => {
            assert_eq!((message.from_uri.as_str(), message.display_name.as_deref()), ("bob@example.com", Some("Bob")));
            assert_eq!(message.to_uri, "alice@example.com");
            assert_eq!(message.call_id, "m1@198.51.100.7");
            assert_eq!((message.content_type.as_str(), message.body.as_slice()), ("text/plain", &b"hello"[..]));
            *id
        }
        other => panic!("expected a Message event, got {other:?}"),
    };
    h.receive(&msg);
    assert!(h.sent().is_empty() && h.events().is_empty(), "a retransmission is absorbed");
    h.stack.answer_message(id, 202, h.now);
    let resp = h.sent().remove(0);
    assert!(resp.starts_with("SIP/2.0 202 Accepted\r\n"), "{resp}");
    assert!(header(&resp, "To").contains(";tag="));
    h.receive(&msg);
    assert_eq!(h.sent(), [resp], "a retransmission gets the same answer");
    h.stack.answer_message(id, 200, h.now);
    assert!(h.sent().is_empty(), "answered once");
    assert_eq!(h.stack.message_count(), (0, 0));
}

#[test]
fn incoming_unanswered_gets_480() {
    let mut h = Harness::new();
    h.registered();
    h.receive(&bobs_message("sip:alice-1@192.0.2.1:5060", "z9hG4bKm2", "m2@198.51.100.7", "t2", None, 1));
    let id = match &h.events()[..] {
        [SipEvent::Message { id, .. }] => *id,
        other => panic!("expected a Message event, got {other:?}"),
    };
    h.tick(MESSAGE_ANSWER_WAIT.as_millis() as u64 - 100);
    assert!(h.sent().is_empty());
    h.tick(200);
    let resp = h.sent().remove(0);
    assert!(resp.starts_with("SIP/2.0 480 "), "{resp}");
    h.stack.answer_message(id, 200, h.now);
    assert!(h.sent().is_empty(), "too late: answered already");
    assert_eq!(h.stack.message_count(), (0, 0));
}

#[test]
fn incoming_to_an_unknown_user_is_404() {
    let mut h = Harness::new();
    h.registered();
    h.receive(&bobs_message("sip:nobody@192.0.2.1:5060", "z9hG4bKm3", "m3@198.51.100.7", "t3", None, 1));
    let resp = h.sent().remove(0);
    assert!(resp.starts_with("SIP/2.0 404 Not Found\r\n"), "{resp}");
    assert!(h.events().is_empty());
    // A MESSAGE claiming a dialog we do not have.
    h.receive(&bobs_message("sip:alice-1@192.0.2.1:5060", "z9hG4bKm4", "m4@198.51.100.7", "t4", Some("zz"), 1));
    assert!(h.sent().remove(0).starts_with("SIP/2.0 481 "));
    assert!(h.events().is_empty());
}

#[test]
fn incoming_flood_is_cut_by_the_source_budget() {
    let mut h = Harness::with(|c| c.max_requests_per_second_per_ip = 3);
    h.registered(); // the 200 to the REGISTER is a response, not a request
    for i in 0..5 {
        let b = format!("z9hG4bKf{i}");
        h.receive(&bobs_message("sip:alice-1@192.0.2.1:5060", &b, &format!("f{i}@x"), "t", None, 1));
    }
    let delivered = h.events().iter().filter(|e| matches!(e, SipEvent::Message { .. })).count();
    assert_eq!(delivered, 3, "the rest of the second is dropped (UDP)");
}

/// A MESSAGE over a stream connection the far end opened is answered on it.
#[test]
fn incoming_over_tcp_answered_on_the_connection() {
    let mut h = Harness::new();
    h.registered();
    let conn = ConnId(7);
    h.stack.handle_accepted(conn, PROXY.parse().unwrap(), h.now);
    let msg = bobs_message("sip:alice-1@192.0.2.1:5060", "z9hG4bKt1", "t1@x", "t", None, 1).replace("/UDP", "/TCP");
    h.stack.handle_stream_data(conn, msg.as_bytes(), h.now, &mut h.rng);
    let id = match &h.events()[..] {
        [SipEvent::Message { id, .. }] => *id,
        other => panic!("expected a Message event, got {other:?}"),
    };
    h.stack.answer_message(id, 200, h.now);
    let written = h.outputs().into_iter().any(|o| {
        matches!(o, SipOutput::Transport(TransportOut::Write { conn: c, data }) if c == conn && data.starts_with(b"SIP/2.0 200 OK"))
    });
    assert!(written, "the 200 goes back on the connection");
}

/// A MESSAGE whose connection closes before its user answers is forgotten at once (its server
/// transaction went with the flow), not kept until the answer timer.
#[test]
fn incoming_over_a_closed_connection_is_forgotten() {
    let mut h = Harness::new();
    h.registered();
    let conn = ConnId(8);
    h.stack.handle_accepted(conn, PROXY.parse().unwrap(), h.now);
    let msg = bobs_message("sip:alice-1@192.0.2.1:5060", "z9hG4bKt2", "t2@x", "t", None, 1).replace("/UDP", "/TCP");
    h.stack.handle_stream_data(conn, msg.as_bytes(), h.now, &mut h.rng);
    let id = match &h.events()[..] {
        [SipEvent::Message { id, .. }] => *id,
        other => panic!("expected a Message event, got {other:?}"),
    };
    assert_eq!(h.stack.message_count(), (0, 1));
    h.stack.handle_closed(conn, h.now, &mut h.rng);
    assert_eq!(h.stack.message_count(), (0, 0), "nothing left to answer");
    h.stack.answer_message(id, 200, h.now);
    assert!(h.outputs().is_empty(), "no answer to a closed connection");
}
