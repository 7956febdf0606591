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
use sylkgw_core::sip::stack::{SipEvent, SipOutput, SipStack};
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
            aor: "alice@example.com".into(),
            secret: "secret".into(),
            display_name: Some("Alice".into()),
            user_agent: None,
            contact_user: "alice-1".into(),
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
