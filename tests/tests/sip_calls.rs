//! Outgoing calls through the SIP stack alone (no media yet): a scripted far end answers the
//! INVITE and the test checks every message the stack sends — ACK for 2xx (new branch, INVITE's
//! CSeq), ACK for non-2xx (INVITE's branch), CANCEL only after a provisional response, BYE in
//! the dialog, the authenticated retry, and a BYE from the far end.

#![allow(clippy::disallowed_methods)] // Instant::now is only the epoch

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use sylkgw_core::config::SipConfig;
use sylkgw_core::rng::Rng;
use sylkgw_core::sip::calls::{CallParams, LegId};
use sylkgw_core::sip::invite::CallProgress;
use sylkgw_core::sip::stack::{SipEvent, SipIdentity, SipOutput, SipStack};
use sylkgw_core::sip::transport::TransportOut;
use sylkgw_core::SocketId;

const PROXY: &str = "192.0.2.5:5060";

struct Harness {
    stack: SipStack,
    rng: Rng,
    now: Instant,
}

impl Harness {
    fn new() -> Self {
        let cfg = SipConfig {
            listen: "192.0.2.1:5060".parse().unwrap(),
            outbound_sip_proxy: Some(PROXY.into()),
            ..SipConfig::default()
        };
        let mut stack = SipStack::new(cfg);
        stack.set_udp_socket(SocketId(0), "192.0.2.1:5060".parse().unwrap());
        Self { stack, rng: Rng::new([9; 32]), now: Instant::now() }
    }

    fn call(&mut self) -> LegId {
        let params = CallParams {
            identity: SipIdentity {
                aor: "alice@example.com".into(),
                secret: "secret".into(),
                display_name: Some("Alice".into()),
                user_agent: None,
                contact_user: "alice-1".into(),
            },
            target: "bob@example.com".into(),
            sdp:
                b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
                    .to_vec(),
            headers: vec![("X-Test".into(), "1".into())],
        };
        self.stack.invite(params, self.now, &mut self.rng)
    }

    /// Every SIP text the stack sent since the last call.
    fn sent(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(o) = self.stack.poll_output() {
            if let SipOutput::Transport(TransportOut::Datagram { to, payload, .. }) = o {
                assert_eq!(to, PROXY.parse::<SocketAddr>().unwrap(), "everything goes through the proxy");
                out.push(String::from_utf8(payload).unwrap());
            }
        }
        out
    }

    fn events(&mut self) -> Vec<CallProgress> {
        let mut out = Vec::new();
        while let Some(e) = self.stack.poll_event() {
            if let SipEvent::Call { progress, .. } = e {
                out.push(progress);
            }
        }
        out
    }

    fn receive(&mut self, text: &str) {
        self.now += Duration::from_millis(10);
        self.stack.handle_datagram(PROXY.parse().unwrap(), text.as_bytes(), self.now, &mut self.rng);
    }
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.split("\r\n")
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .unwrap_or_else(|| panic!("no {name} in\n{msg}"))
}

fn branch(msg: &str) -> &str {
    header(msg, "Via").split("branch=").nth(1).unwrap().split(';').next().unwrap()
}

/// A response to `req` with `code`, To tag `tag`, and optional extra lines.
fn reply(req: &str, code: u16, reason: &str, tag: Option<&str>, extra: &str, body: &str) -> String {
    let to = match tag {
        Some(t) => format!("{};tag={t}", header(req, "To")),
        None => header(req, "To").to_string(),
    };
    format!(
        "SIP/2.0 {code} {reason}\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        header(req, "Via"),
        header(req, "From"),
        header(req, "Call-ID"),
        header(req, "CSeq"),
        body.len()
    )
}

#[test]
fn answered_then_hung_up() {
    let mut h = Harness::new();
    h.call();
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    let invite = sent[0].clone();
    assert!(invite.starts_with("INVITE sip:bob@example.com SIP/2.0\r\n"), "{invite}");
    assert!(invite.contains("Route: <sip:192.0.2.5:5060;lr>") && invite.contains("X-Test: 1"));
    assert!(invite.contains("Content-Type: application/sdp") && invite.ends_with("m=audio 40000 RTP/AVP 0\r\n"));
    h.receive(&reply(&invite, 180, "Ringing", Some("b1"), "Contact: <sip:bob@198.51.100.7>\r\n", ""));
    assert_eq!(h.events(), [CallProgress::Provisional { code: 180, reason: "Ringing".into(), sdp: None }]);
    let ok = reply(
        &invite,
        200,
        "OK",
        Some("b1"),
        "Contact: <sip:bob@198.51.100.7:5062>\r\nContent-Type: application/sdp\r\n",
        "v=0\r\n",
    );
    h.receive(&ok);
    assert_eq!(h.events(), [CallProgress::Answered { sdp: Some(b"v=0\r\n".to_vec()) }]);
    let acks = h.sent();
    assert_eq!(acks.len(), 1);
    let ack = &acks[0];
    assert!(ack.starts_with("ACK sip:bob@198.51.100.7:5062 SIP/2.0\r\n"), "{ack}");
    assert_ne!(branch(ack), branch(&invite), "the ACK of a 2xx is a new transaction");
    assert_eq!(header(ack, "CSeq").split(' ').next(), header(&invite, "CSeq").split(' ').next());
    assert!(header(ack, "To").ends_with(";tag=b1"));
    h.receive(&ok);
    assert_eq!(h.sent().len(), 1, "a retransmitted 2xx is ACKed again");
    h.stack.hang_up(LegId(1), h.now, &mut h.rng);
    let bye = h.sent().remove(0);
    assert!(bye.starts_with("BYE sip:bob@198.51.100.7:5062 SIP/2.0\r\n"), "{bye}");
    h.receive(&reply(&bye, 200, "OK", None, "", ""));
    assert_eq!(h.events(), [CallProgress::Ended { reason: "200 OK".into() }]);
    assert_eq!(h.stack.leg_count(), 0);
}

#[test]
fn cancelled_after_ringing_and_busy_is_acked() {
    let mut h = Harness::new();
    h.call();
    let invite = h.sent().remove(0);
    h.stack.hang_up(LegId(1), h.now, &mut h.rng);
    assert!(h.sent().is_empty(), "no CANCEL before a provisional response");
    h.receive(&reply(&invite, 180, "Ringing", Some("b1"), "", ""));
    let cancel = h.sent().remove(0);
    assert!(cancel.starts_with("CANCEL sip:bob@example.com SIP/2.0\r\n"), "{cancel}");
    assert_eq!(branch(&cancel), branch(&invite), "CANCEL reuses the INVITE's branch");
    h.receive(&reply(&cancel, 200, "OK", Some("b1"), "", ""));
    h.receive(&reply(&invite, 487, "Request Terminated", Some("b1"), "", ""));
    let ack = h.sent().remove(0);
    assert!(ack.starts_with("ACK sip:bob@example.com SIP/2.0\r\n"));
    assert_eq!(branch(&ack), branch(&invite), "the ACK of a non-2xx belongs to the INVITE transaction");
    assert_eq!(h.events().last(), Some(&CallProgress::Ended { reason: "487 Request Terminated".into() }));

    let mut h = Harness::new();
    h.call();
    let invite = h.sent().remove(0);
    h.receive(&reply(&invite, 486, "Busy Here", Some("b2"), "", ""));
    assert!(h.sent()[0].starts_with("ACK "));
    assert_eq!(h.events(), [CallProgress::Ended { reason: "486 Busy Here".into() }]);
}

#[test]
fn proxy_challenge_then_remote_bye() {
    let mut h = Harness::new();
    h.call();
    let invite = h.sent().remove(0);
    let challenge = "Proxy-Authenticate: Digest realm=\"example.com\", nonce=\"abc\", qop=\"auth\"\r\n";
    h.receive(&reply(&invite, 407, "Proxy Authentication Required", Some("p1"), challenge, ""));
    let sent = h.sent();
    assert!(sent[0].starts_with("ACK "), "the 407 is ACKed");
    let retry = &sent[1];
    assert!(retry.starts_with("INVITE ") && retry.contains("Proxy-Authorization: Digest username=\"alice\""));
    assert_eq!(header(retry, "Call-ID"), header(&invite, "Call-ID"));
    let n = |m: &str| header(m, "CSeq").split(' ').next().unwrap().parse::<u32>().unwrap();
    assert_eq!(n(retry), n(&invite) + 1);
    h.receive(&reply(retry, 200, "OK", Some("b9"), "Contact: <sip:bob@198.51.100.7>\r\n", ""));
    h.sent();
    h.events();
    // The far end hangs up.
    let bye = format!(
        "BYE sip:alice-1@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKbye1\r\nFrom: <sip:bob@example.com>;tag=b9\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(retry, "From"),
        header(retry, "Call-ID")
    );
    h.receive(&bye);
    assert!(h.sent()[0].starts_with("SIP/2.0 200 OK"));
    assert_eq!(h.events(), [CallProgress::Ended { reason: "200 OK".into() }]);
    // A BYE for a dialog we no longer have gets 481.
    h.receive(&bye.replace("z9hG4bKbye1", "z9hG4bKbye2"));
    assert!(h.sent()[0].starts_with("SIP/2.0 481 "));
}

// ===== Incoming calls =====

impl Harness {
    /// Registers alice (Contact user `alice-1`) so INVITEs for her Contact are ours.
    fn registered(&mut self) {
        let params = sylkgw_core::sip::stack::RegParams {
            identity: SipIdentity {
                aor: "alice@example.com".into(),
                secret: "secret".into(),
                display_name: None,
                user_agent: None,
                contact_user: "alice-1".into(),
            },
            push: None,
        };
        self.stack.register(params, self.now, &mut self.rng);
        let register = self.sent().remove(0);
        self.receive(&reply(&register, 200, "OK", Some("r1"), "", ""));
        while self.stack.poll_event().is_some() {}
    }

    fn events_all(&mut self) -> Vec<SipEvent> {
        let mut out = Vec::new();
        while let Some(e) = self.stack.poll_event() {
            out.push(e);
        }
        out
    }

    fn tick(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.stack.handle_timeout(self.now, &mut self.rng);
    }
}

const OFFER: &str =
    "v=0\r\no=- 2 2 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

fn incoming_invite(branch: &str) -> String {
    format!(
        "INVITE sip:alice-1@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5:5060;branch={branch}\r\nMax-Forwards: 69\r\n\
         From: \"Bob\" <sip:bob@example.com>;tag=caller1\r\nTo: <sip:alice@example.com>\r\nCall-ID: in-1@198.51.100.7\r\n\
         CSeq: 7 INVITE\r\nContact: <sip:bob@198.51.100.7:5062>\r\nX-Custom: yes\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{OFFER}",
        OFFER.len()
    )
}

fn incoming_leg(events: &[SipEvent]) -> LegId {
    match events {
        [SipEvent::Incoming { leg, call, .. }] => {
            assert_eq!(call.from_uri, "bob@example.com");
            assert_eq!(call.display_name.as_deref(), Some("Bob"));
            assert_eq!(call.call_id, "in-1@198.51.100.7");
            assert_eq!(call.sdp, OFFER.as_bytes());
            assert!(call.headers.iter().any(|(n, v)| n == "X-Custom" && v == "yes"));
            *leg
        }
        other => panic!("expected one Incoming event, got {other:?}"),
    }
}

#[test]
fn incoming_answered_2xx_retransmitted_until_ack_then_remote_bye() {
    let mut h = Harness::new();
    h.registered();
    h.receive(&incoming_invite("z9hG4bKin1"));
    let ringing = h.sent().remove(0);
    assert!(ringing.starts_with("SIP/2.0 180 Ringing\r\n"), "{ringing}");
    let tag = header(&ringing, "To").split("tag=").nth(1).unwrap().to_string();
    let leg = incoming_leg(&h.events_all());
    h.stack.answer(leg, b"v=0\r\nanswer\r\n".to_vec(), h.now);
    let ok = h.sent().remove(0);
    assert!(ok.starts_with("SIP/2.0 200 OK\r\n") && ok.ends_with("v=0\r\nanswer\r\n"), "{ok}");
    assert!(header(&ok, "To").ends_with(&format!("tag={tag}")), "same tag as the 180");
    assert!(header(&ok, "Contact").contains("sip:alice-1@192.0.2.1:5060"));
    h.tick(500);
    assert!(h.sent()[0].starts_with("SIP/2.0 200 OK"), "2xx retransmitted at T1");
    let ack = format!(
        "ACK sip:alice-1@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKack1\r\nMax-Forwards: 70\r\n\
         From: \"Bob\" <sip:bob@example.com>;tag=caller1\r\nTo: <sip:alice@example.com>;tag={tag}\r\n\
         Call-ID: in-1@198.51.100.7\r\nCSeq: 7 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    h.receive(&ack);
    h.tick(1000);
    h.tick(2000);
    assert!(h.sent().is_empty(), "no retransmission after the ACK");
    let bye = ack.replace("ACK sip", "BYE sip").replace("z9hG4bKack1", "z9hG4bKbye1").replace("7 ACK", "8 BYE");
    h.receive(&bye);
    assert!(h.sent()[0].starts_with("SIP/2.0 200 OK"));
    assert!(
        matches!(&h.events_all()[..], [SipEvent::Call { progress: CallProgress::Ended { reason }, .. }] if reason == "200 OK")
    );
    assert_eq!(h.stack.leg_count(), 0);
}

#[test]
fn incoming_cancelled_is_a_missed_call() {
    let mut h = Harness::new();
    h.registered();
    h.receive(&incoming_invite("z9hG4bKin2"));
    h.sent();
    incoming_leg(&h.events_all());
    let cancel = incoming_invite("z9hG4bKin2")
        .replace("INVITE sip:alice-1", "CANCEL sip:alice-1")
        .replace("7 INVITE", "7 CANCEL")
        .split("Contact:")
        .next()
        .unwrap()
        .to_string()
        + "Content-Length: 0\r\n\r\n";
    h.receive(&cancel);
    let sent = h.sent();
    assert!(sent.iter().any(|m| m.starts_with("SIP/2.0 200 OK") && m.contains("CSeq: 7 CANCEL")), "{sent:?}");
    assert!(sent.iter().any(|m| m.starts_with("SIP/2.0 487 Request Terminated") && m.contains("CSeq: 7 INVITE")));
    let ended = h.events_all();
    assert!(
        matches!(&ended[..], [SipEvent::Call { progress: CallProgress::Ended { reason }, .. }] if reason == "487 Request Terminated")
    );
}

#[test]
fn incoming_declined_and_hung_up() {
    let mut h = Harness::new();
    h.registered();
    h.receive(&incoming_invite("z9hG4bKin3"));
    h.sent();
    let leg = incoming_leg(&h.events_all());
    assert!(h.stack.is_ringing(leg));
    h.stack.decline(leg, 603, "Decline", h.now);
    assert!(h.sent()[0].starts_with("SIP/2.0 603 Decline"));

    let mut h = Harness::new();
    h.registered();
    h.receive(&incoming_invite("z9hG4bKin4"));
    h.sent();
    let leg = incoming_leg(&h.events_all());
    h.stack.answer(leg, b"v=0\r\n".to_vec(), h.now);
    h.sent();
    h.stack.hang_up(leg, h.now, &mut h.rng);
    let bye = h.sent().remove(0);
    assert!(bye.starts_with("BYE sip:bob@198.51.100.7:5062 SIP/2.0\r\n"), "{bye}");
    assert!(header(&bye, "From").contains("<sip:alice@example.com>;tag="));
    assert!(header(&bye, "To").ends_with("tag=caller1"));
}
