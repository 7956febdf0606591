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
use sylkgw_tests::sip_text::{header, response};

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

fn branch(msg: &str) -> &str {
    header(msg, "Via").split("branch=").nth(1).unwrap().split(';').next().unwrap()
}

/// A response to `req` with `code`, To tag `tag`, and optional extra lines.
fn reply(req: &str, code: u16, reason: &str, tag: Option<&str>, extra: &str, body: &str) -> String {
    let to = match tag {
        Some(t) => format!("{};tag={t}", header(req, "To")),
        None => header(req, "To").to_string(),
    };
    response(req, code, reason, &to, extra, body)
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

/// A client transaction keeps its request's bytes only while it may still resend them (§17.1.1.2,
/// §17.1.2.2): nothing is resent after a final response, and an INVITE transaction stays 32 s in
/// Accepted after its 2xx (RFC 6026 §7.2), so keeping them costs every call that much (issue #14).
#[test]
fn request_bytes_are_released_once_a_final_response_came() {
    let mut h = Harness::new();
    h.call();
    let invite = h.sent().remove(0);
    assert_eq!(h.stack.retransmit_bytes(), invite.len());
    h.receive(&reply(&invite, 180, "Ringing", Some("b1"), "Contact: <sip:bob@198.51.100.7>\r\n", ""));
    assert_eq!(h.stack.retransmit_bytes(), invite.len(), "resent until a final response");
    let contact = "Contact: <sip:bob@198.51.100.7:5062>\r\nContent-Type: application/sdp\r\n";
    h.receive(&reply(&invite, 200, "OK", Some("b1"), contact, "v=0\r\n"));
    assert_eq!(h.sent().len(), 1, "the ACK");
    assert_eq!(h.stack.sizes().0, 1, "the INVITE transaction is in Accepted");
    assert_eq!(h.stack.retransmit_bytes(), 0);
    h.stack.hang_up(LegId(1), h.now, &mut h.rng);
    let bye = h.sent().remove(0);
    assert_eq!(h.stack.retransmit_bytes(), bye.len());
    h.receive(&reply(&bye, 200, "OK", None, "", ""));
    assert_eq!(h.stack.retransmit_bytes(), 0, "the BYE's transaction is Completed");
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
        self.register_contact("alice-1", "r1");
    }

    /// Registers alice with Contact user `contact_user`; the registrar's 200 has To tag `tag`.
    fn register_contact(&mut self, contact_user: &str, tag: &str) {
        let params = sylkgw_core::sip::stack::RegParams {
            identity: SipIdentity {
                aor: "alice@example.com".into(),
                secret: "secret".into(),
                display_name: None,
                user_agent: None,
                contact_user: contact_user.into(),
            },
            push: None,
        };
        self.stack.register(params, self.now, &mut self.rng);
        let register = self.sent().remove(0);
        self.receive(&reply(&register, 200, "OK", Some(tag), "", ""));
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

/// Found by the soak: a registrar forks an INVITE to every contact of the AoR, and two of them
/// may be ours (two tabs registered through one gateway, or a binding not yet removed). Each
/// contact is its own UA: the branches share From tag, Call-ID and CSeq but not the
/// Request-URI, so neither is a merged request (§8.2.2.2) and both ring. The same request
/// reaching the same contact twice is still merged (482).
#[test]
fn forked_invite_to_two_of_our_contacts_rings_both() {
    let mut h = Harness::new();
    h.registered();
    h.register_contact("alice-2", "r2");

    h.receive(&incoming_invite("z9hG4bKfork1"));
    incoming_leg(&h.events_all());
    h.receive(&incoming_invite("z9hG4bKfork2").replacen("sip:alice-1@", "sip:alice-2@", 1));
    incoming_leg(&h.events_all());
    assert!(h.sent().iter().all(|m| !m.starts_with("SIP/2.0 482 ")), "no branch is a merged request");
    h.receive(&incoming_invite("z9hG4bKfork3"));
    let sent = h.sent();
    assert!(sent.iter().any(|m| m.starts_with("SIP/2.0 482 ")), "the same contact twice is merged: {sent:?}");
    assert!(h.events_all().is_empty());
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

// ===== Inside the dialog: INFO, re-INVITE, UPDATE =====

const DTMF: &str = "Signal=1\r\nDuration=160\r\n";
const BOB_CONTACT: &str = "Contact: <sip:bob@198.51.100.7:5062>\r\n";

fn cseq_no(msg: &str) -> u32 {
    header(msg, "CSeq").split(' ').next().unwrap().parse().unwrap()
}

impl Harness {
    /// An answered outgoing call (bob's tag `b1`, Contact `sip:bob@198.51.100.7:5062`): the leg
    /// and our INVITE.
    fn answered(&mut self) -> (LegId, String) {
        let leg = self.call();
        let invite = self.sent().remove(0);
        let extra = format!("{BOB_CONTACT}Content-Type: application/sdp\r\n");
        self.receive(&reply(&invite, 200, "OK", Some("b1"), &extra, "v=0\r\n"));
        assert!(self.sent()[0].starts_with("ACK "));
        self.events_all();
        (leg, invite)
    }

    /// An answered and ACKed incoming call: the leg and our To tag.
    fn answered_incoming(&mut self) -> (LegId, String) {
        self.registered();
        self.receive(&incoming_invite("z9hG4bKinA"));
        let ringing = self.sent().remove(0);
        let tag = header(&ringing, "To").split("tag=").nth(1).unwrap().to_string();
        let leg = incoming_leg(&self.events_all());
        self.stack.answer(leg, b"v=0\r\nanswer\r\n".to_vec(), self.now);
        self.sent();
        self.receive(&from_caller(&tag, "ACK", 7, "z9hG4bKackA", "", ""));
        (leg, tag)
    }
}

/// A request from bob in the dialog of our outgoing call (`invite`), CSeq `cseq`.
fn from_bob(invite: &str, method: &str, cseq: u32, branch: &str, extra: &str, body: &str) -> String {
    format!(
        "{method} sip:alice-1@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5:5060;branch={branch}\r\nMax-Forwards: 70\r\n\
         From: <sip:bob@example.com>;tag=b1\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        header(invite, "From"),
        header(invite, "Call-ID"),
        body.len()
    )
}

/// A request from the caller of the incoming call (our To tag `tag`), CSeq `cseq`.
fn from_caller(tag: &str, method: &str, cseq: u32, branch: &str, extra: &str, body: &str) -> String {
    format!(
        "{method} sip:alice-1@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5:5060;branch={branch}\r\nMax-Forwards: 70\r\n\
         From: \"Bob\" <sip:bob@example.com>;tag=caller1\r\nTo: <sip:alice@example.com>;tag={tag}\r\n\
         Call-ID: in-1@198.51.100.7\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn info_goes_out_one_at_a_time_and_failures_end_nothing() {
    let mut h = Harness::new();
    let leg = h.call();
    assert!(!h.stack.send_info(leg, "application/dtmf-relay", DTMF.into(), h.now, &mut h.rng), "not answered yet");
    let invite = h.sent().remove(0);
    let extra = format!("{BOB_CONTACT}Content-Type: application/sdp\r\n");
    h.receive(&reply(&invite, 200, "OK", Some("b1"), &extra, "v=0\r\n"));
    h.sent();
    h.events_all();
    assert!(h.stack.send_info(leg, "application/dtmf-relay", DTMF.into(), h.now, &mut h.rng));
    let two = "Signal=2\r\nDuration=160\r\n";
    assert!(h.stack.send_info(leg, "application/dtmf-relay", two.into(), h.now, &mut h.rng));
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "the second INFO waits for the first: {sent:?}");
    let info = &sent[0];
    assert!(info.starts_with("INFO sip:bob@198.51.100.7:5062 SIP/2.0\r\n"), "{info}");
    assert_eq!(header(info, "CSeq"), format!("{} INFO", cseq_no(&invite) + 1));
    assert_eq!(header(info, "Content-Type"), "application/dtmf-relay");
    assert_eq!(header(info, "Max-Forwards"), "70");
    assert!(header(info, "To").ends_with(";tag=b1") && header(info, "Call-ID") == header(&invite, "Call-ID"));
    assert!(info.ends_with(&format!("\r\n\r\n{DTMF}")), "{info}");
    h.tick(500);
    assert_eq!(h.sent(), std::slice::from_ref(info), "timer E retransmits the INFO over UDP");
    h.receive(&reply(info, 200, "OK", None, "", ""));
    let second = h.sent().remove(0);
    assert!(second.starts_with("INFO ") && second.ends_with(two), "{second}");
    assert_eq!(cseq_no(&second), cseq_no(info) + 1);
    assert_ne!(branch(&second), branch(info));
    h.receive(&reply(&second, 481, "Call/Transaction Does Not Exist", None, "", ""));
    assert!(h.events_all().is_empty(), "a failed INFO ends nothing");
    assert_eq!(h.stack.leg_count(), 1);
    // A third one times out (timer F, 64·T1): still nothing ends, and the next one goes.
    assert!(h.stack.send_info(leg, "application/dtmf-relay", DTMF.into(), h.now, &mut h.rng));
    assert!(h.stack.send_info(leg, "application/dtmf-relay", two.into(), h.now, &mut h.rng));
    let third = h.sent().remove(0);
    for _ in 0..64 {
        h.tick(500);
    }
    let after = h.sent();
    assert!(after.iter().all(|m| *m == third || m.ends_with(two)), "{after:?}");
    assert!(after.last().unwrap().ends_with(two), "the queued INFO went after the timeout");
    assert!(h.events_all().is_empty());
    assert_eq!(h.stack.leg_count(), 1);

    // The far end's INFO: 200 and an event.
    h.receive(&from_bob(&invite, "INFO", 5, "z9hG4bKinfo1", "Content-Type: application/dtmf-relay\r\n", DTMF));
    let ok = h.sent().remove(0);
    assert!(ok.starts_with("SIP/2.0 200 OK\r\n") && header(&ok, "CSeq") == "5 INFO", "{ok}");
    assert_eq!(
        h.events_all(),
        [SipEvent::Info { leg, content_type: "application/dtmf-relay".into(), body: DTMF.into() }]
    );
}

#[test]
fn info_in_an_incoming_call() {
    let mut h = Harness::new();
    let (leg, tag) = h.answered_incoming();
    assert!(h.stack.send_info(leg, "application/dtmf-relay", DTMF.into(), h.now, &mut h.rng));
    let info = h.sent().remove(0);
    assert!(info.starts_with("INFO sip:bob@198.51.100.7:5062 SIP/2.0\r\n"), "{info}");
    assert_eq!(header(&info, "From"), format!("<sip:alice@example.com>;tag={tag}"));
    assert!(header(&info, "To").ends_with("tag=caller1"));
    assert_eq!(header(&info, "CSeq"), "1 INFO");
    h.receive(&reply(&info, 200, "OK", None, "", ""));
    h.receive(&from_caller(&tag, "INFO", 8, "z9hG4bKinfo2", "Content-Type: application/dtmf-relay\r\n", DTMF));
    assert!(h.sent()[0].starts_with("SIP/2.0 200 OK\r\n"));
    assert!(
        matches!(&h.events_all()[..], [SipEvent::Info { leg: l, body, .. }] if *l == leg && body == DTMF.as_bytes())
    );
}

#[test]
fn reinvite_from_the_far_end_is_answered_and_retransmitted_until_ack() {
    let mut h = Harness::new();
    let (leg, invite) = h.answered();
    let new_contact = "Contact: <sip:bob@198.51.100.8:5070>\r\nContent-Type: application/sdp\r\n";
    h.receive(&from_bob(&invite, "INVITE", 2, "z9hG4bKre1", new_contact, OFFER));
    let trying = h.sent();
    assert_eq!(trying.len(), 1);
    assert!(trying[0].starts_with("SIP/2.0 100 Trying\r\n") && header(&trying[0], "CSeq") == "2 INVITE");
    assert_eq!(h.events_all(), [SipEvent::Reoffer { leg, sdp: OFFER.into() }]);
    // A second offer while the first waits: 500 with Retry-After 0–10 s (§14.2).
    h.receive(&from_bob(&invite, "INVITE", 3, "z9hG4bKre2", new_contact, OFFER));
    let busy = h.sent().remove(0);
    assert!(busy.starts_with("SIP/2.0 500 "), "{busy}");
    assert!(header(&busy, "Retry-After").parse::<u32>().unwrap() <= 10);
    assert!(h.events_all().is_empty());
    h.receive(&from_bob(&invite, "ACK", 3, "z9hG4bKre2", "", ""));
    // A retransmission of the re-INVITE gets the 100 again.
    h.receive(&from_bob(&invite, "INVITE", 2, "z9hG4bKre1", new_contact, OFFER));
    assert!(h.sent()[0].starts_with("SIP/2.0 100 Trying"));

    h.stack.answer_reoffer(leg, Ok(b"v=0\r\nour-answer\r\n".to_vec()), h.now);
    let ok = h.sent().remove(0);
    assert!(ok.starts_with("SIP/2.0 200 OK\r\n") && ok.ends_with("\r\n\r\nv=0\r\nour-answer\r\n"), "{ok}");
    assert_eq!(header(&ok, "CSeq"), "2 INVITE");
    assert_eq!(header(&ok, "Contact"), "<sip:alice-1@192.0.2.1:5060>");
    assert_eq!(header(&ok, "Content-Type"), "application/sdp");
    assert!(header(&ok, "Allow").contains("INVITE") && header(&ok, "Allow").contains("INFO"));
    h.tick(500);
    assert_eq!(h.sent(), std::slice::from_ref(&ok), "§13.3.1.4: the 2xx again at T1");
    h.tick(1000);
    assert_eq!(h.sent(), std::slice::from_ref(&ok), "and at 2·T1");
    h.receive(&from_bob(&invite, "ACK", 2, "z9hG4bKreack", "", ""));
    h.tick(2000);
    h.tick(4000);
    assert!(h.sent().is_empty(), "no retransmission after the ACK");
    assert!(h.events_all().is_empty(), "an ACK without SDP for an offer is no news");
    // The re-INVITE's Contact is the new remote target (§12.2.2).
    h.stack.hang_up(leg, h.now, &mut h.rng);
    let bye = h.sent().remove(0);
    assert!(bye.starts_with("BYE sip:bob@198.51.100.8:5070 SIP/2.0\r\n"), "{bye}");
}

#[test]
fn reinvite_rejected_cancelled_and_unacked() {
    let mut h = Harness::new();
    let (leg, invite) = h.answered();
    let sdp = "Content-Type: application/sdp\r\n";
    h.receive(&from_bob(&invite, "INVITE", 2, "z9hG4bKre1", sdp, OFFER));
    h.sent();
    h.events_all();
    h.stack.answer_reoffer(leg, Err((488, "Not Acceptable Here".into())), h.now);
    let rejected = h.sent().remove(0);
    assert!(rejected.starts_with("SIP/2.0 488 Not Acceptable Here\r\n"), "{rejected}");
    h.receive(&from_bob(&invite, "ACK", 2, "z9hG4bKre1", "", ""));
    assert!(h.sent().is_empty() && h.events_all().is_empty(), "the ACK of the 488 stays in its transaction");
    assert_eq!(h.stack.leg_count(), 1, "the call goes on");

    // A re-INVITE CANCELled before the answer: 200 to the CANCEL, 487 to the re-INVITE.
    h.receive(&from_bob(&invite, "INVITE", 3, "z9hG4bKre3", sdp, OFFER));
    h.sent();
    assert!(matches!(&h.events_all()[..], [SipEvent::Reoffer { .. }]));
    h.receive(&from_bob(&invite, "CANCEL", 3, "z9hG4bKre3", "", ""));
    let sent = h.sent();
    assert!(sent[0].starts_with("SIP/2.0 200 OK\r\n") && header(&sent[0], "CSeq") == "3 CANCEL", "{sent:?}");
    assert!(sent[1].starts_with("SIP/2.0 487 Request Terminated\r\n") && header(&sent[1], "CSeq") == "3 INVITE");
    h.stack.answer_reoffer(leg, Ok(b"v=0\r\n".to_vec()), h.now);
    assert!(h.sent().is_empty(), "the cancelled offer is not answered");

    // A 2xx never ACKed: 64·T1 later the call ends with BYE.
    h.receive(&from_bob(&invite, "INVITE", 4, "z9hG4bKre4", sdp, OFFER));
    h.sent();
    h.events_all();
    h.stack.answer_reoffer(leg, Ok(b"v=0\r\n".to_vec()), h.now);
    h.sent();
    for _ in 0..64 {
        h.tick(500);
    }
    let sent = h.sent();
    assert!(sent.iter().filter(|m| m.starts_with("SIP/2.0 200 OK")).count() >= 8, "{sent:?}");
    assert!(sent.last().unwrap().starts_with("BYE sip:bob@198.51.100.7:5062 "), "{sent:?}");
    let events = h.events_all();
    assert!(
        matches!(&events[..], [SipEvent::Call { progress: CallProgress::Ended { reason }, .. }] if reason == "408 Request Timeout"),
        "{events:?}"
    );
    assert_eq!(h.stack.leg_count(), 0);
}

#[test]
fn late_offer_reinvite_and_update_in_an_incoming_call() {
    let mut h = Harness::new();
    let (leg, tag) = h.answered_incoming();
    h.events_all();
    // A re-INVITE without SDP: we offer in the 2xx, the ACK answers.
    h.receive(&from_caller(&tag, "INVITE", 8, "z9hG4bKlate", BOB_CONTACT, ""));
    assert!(h.sent()[0].starts_with("SIP/2.0 100 Trying"));
    assert_eq!(h.events_all(), [SipEvent::Reoffer { leg, sdp: Vec::new() }]);
    h.stack.answer_reoffer(leg, Ok(b"v=0\r\nour-offer\r\n".to_vec()), h.now);
    let ok = h.sent().remove(0);
    assert!(ok.starts_with("SIP/2.0 200 OK\r\n") && ok.ends_with("our-offer\r\n"), "{ok}");
    assert_eq!(header(&ok, "To"), format!("<sip:alice@example.com>;tag={tag}"));
    let answer_sdp = "Content-Type: application/sdp\r\n";
    h.receive(&from_caller(&tag, "ACK", 8, "z9hG4bKlateack", answer_sdp, OFFER));
    assert_eq!(h.events_all(), [SipEvent::ReofferAck { leg, sdp: OFFER.into() }]);
    h.tick(500);
    assert!(h.sent().is_empty());

    // UPDATE with SDP (RFC 3311): reported, answered without ACK.
    h.receive(&from_caller(&tag, "UPDATE", 9, "z9hG4bKupd1", answer_sdp, OFFER));
    assert!(h.sent().is_empty(), "no 100 for an UPDATE");
    assert_eq!(h.events_all(), [SipEvent::Reoffer { leg, sdp: OFFER.into() }]);
    h.stack.answer_reoffer(leg, Ok(b"v=0\r\nupd\r\n".to_vec()), h.now);
    let ok = h.sent().remove(0);
    assert!(ok.starts_with("SIP/2.0 200 OK\r\n") && header(&ok, "CSeq") == "9 UPDATE" && ok.ends_with("upd\r\n"));
    assert!(header(&ok, "Contact").contains("sip:alice-1@192.0.2.1:5060"));
    h.tick(500);
    assert!(h.sent().is_empty(), "the UPDATE's 2xx is the transaction's");
    // UPDATE without SDP: a target refresh answered at once.
    h.receive(&from_caller(&tag, "UPDATE", 10, "z9hG4bKupd2", "Contact: <sip:bob@198.51.100.9>\r\n", ""));
    let ok = h.sent().remove(0);
    assert!(ok.starts_with("SIP/2.0 200 OK\r\n") && header(&ok, "Contact").contains("alice-1"), "{ok}");
    assert!(h.events_all().is_empty());
    // An offer in another content type: 415.
    h.receive(&from_caller(&tag, "UPDATE", 11, "z9hG4bKupd3", "Content-Type: text/plain\r\n", "hi"));
    let r = h.sent().remove(0);
    assert!(r.starts_with("SIP/2.0 415 ") && header(&r, "Accept") == "application/sdp", "{r}");
    // A lower CSeq: 500 (§12.2.2).
    h.receive(&from_caller(&tag, "INFO", 3, "z9hG4bKold", "", ""));
    assert!(h.sent()[0].starts_with("SIP/2.0 500 "));
    h.stack.hang_up(leg, h.now, &mut h.rng);
    let bye = h.sent().remove(0);
    assert!(bye.starts_with("BYE sip:bob@198.51.100.9 SIP/2.0\r\n"), "target refreshed by the UPDATE: {bye}");
}

#[test]
fn our_reinvite_glare_retry_digest_and_ack() {
    let mut h = Harness::new();
    let (leg, invite) = h.answered();
    let offer = b"v=0\r\nhold\r\n".to_vec();
    assert!(h.stack.reinvite(leg, offer.clone(), h.now, &mut h.rng));
    assert!(!h.stack.reinvite(leg, offer.clone(), h.now, &mut h.rng), "one INVITE transaction at a time");
    let re = h.sent().remove(0);
    assert!(re.starts_with("INVITE sip:bob@198.51.100.7:5062 SIP/2.0\r\n"), "{re}");
    assert_eq!(header(&re, "CSeq"), format!("{} INVITE", cseq_no(&invite) + 1));
    assert_eq!(header(&re, "Call-ID"), header(&invite, "Call-ID"));
    assert!(header(&re, "To").ends_with(";tag=b1"));
    assert_eq!(header(&re, "Contact"), "<sip:alice-1@192.0.2.1:5060>");
    assert_eq!(header(&re, "Max-Forwards"), "70");
    assert_eq!(header(&re, "Content-Type"), "application/sdp");
    assert!(re.ends_with("\r\n\r\nv=0\r\nhold\r\n"));

    // Glare: the far end's re-INVITE meets ours (491), and ours gets 491 too.
    h.receive(&from_bob(&invite, "INVITE", 2, "z9hG4bKglare", "Content-Type: application/sdp\r\n", OFFER));
    let r = h.sent().remove(0);
    assert!(r.starts_with("SIP/2.0 491 Request Pending\r\n"), "{r}");
    assert!(h.events_all().is_empty());
    h.receive(&from_bob(&invite, "ACK", 2, "z9hG4bKglare", "", ""));
    h.receive(&reply(&re, 491, "Request Pending", Some("b1"), "", ""));
    let ack = h.sent().remove(0);
    assert!(ack.starts_with("ACK sip:bob@198.51.100.7:5062 SIP/2.0\r\n"), "{ack}");
    assert_eq!(branch(&ack), branch(&re), "the ACK of a non-2xx is the INVITE transaction's");
    assert_eq!(header(&ack, "CSeq"), format!("{} ACK", cseq_no(&re)));
    assert!(h.events_all().is_empty(), "a 491 is retried, not reported");
    // We own the Call-ID: the retry comes 2.1–4 s later (§14.1).
    h.tick(2090);
    assert!(h.sent().is_empty(), "no retry before 2.1 s");
    h.tick(1910);
    let retry = h.sent().remove(0);
    assert!(retry.starts_with("INVITE sip:bob@198.51.100.7:5062 ") && retry.ends_with("hold\r\n"), "{retry}");
    assert_eq!(cseq_no(&retry), cseq_no(&re) + 1);
    assert_ne!(branch(&retry), branch(&re));

    // 407 on the re-INVITE: answered with credentials, like the initial INVITE.
    let challenge = "Proxy-Authenticate: Digest realm=\"example.com\", nonce=\"xyz\", qop=\"auth\"\r\n";
    h.receive(&reply(&retry, 407, "Proxy Authentication Required", Some("b1"), challenge, ""));
    let sent = h.sent();
    assert!(sent[0].starts_with("ACK ") && branch(&sent[0]) == branch(&retry));
    let authed = &sent[1];
    assert!(authed.starts_with("INVITE sip:bob@198.51.100.7:5062 "), "{authed}");
    let auth = header(authed, "Proxy-Authorization");
    assert!(auth.contains("username=\"alice\"") && auth.contains("uri=\"sip:bob@198.51.100.7:5062\""), "{auth}");
    assert_eq!(cseq_no(authed), cseq_no(&retry) + 1);

    // The 2xx (with a new Contact) is ACKed by us: new branch, the re-INVITE's CSeq number.
    let extra = "Contact: <sip:bob@198.51.100.8:5070>\r\nContent-Type: application/sdp\r\n";
    let ok = reply(authed, 200, "OK", Some("b1"), extra, "v=0\r\nheld\r\n");
    h.receive(&ok);
    let ack = h.sent().remove(0);
    assert!(ack.starts_with("ACK sip:bob@198.51.100.8:5070 SIP/2.0\r\n"), "target refreshed: {ack}");
    assert_eq!(header(&ack, "CSeq"), format!("{} ACK", cseq_no(authed)));
    assert_ne!(branch(&ack), branch(authed));
    assert_eq!(h.events_all(), [SipEvent::ReinviteResult { leg, result: Ok(b"v=0\r\nheld\r\n".to_vec()) }]);
    h.receive(&ok);
    assert_eq!(h.sent(), std::slice::from_ref(&ack), "a retransmitted 2xx gets the same ACK");
    assert!(h.events_all().is_empty());

    // A failure leaves the call as it was.
    assert!(h.stack.reinvite(leg, offer, h.now, &mut h.rng));
    let re = h.sent().remove(0);
    assert_eq!(cseq_no(&re), cseq_no(authed) + 1);
    h.receive(&reply(&re, 488, "Not Acceptable Here", Some("b1"), "", ""));
    h.sent();
    assert_eq!(h.events_all(), [SipEvent::ReinviteResult { leg, result: Err("488 Not Acceptable Here".into()) }]);
    assert_eq!(h.stack.leg_count(), 1);
}

#[test]
fn our_reinvite_in_an_incoming_call_retries_glare_within_2s() {
    let mut h = Harness::new();
    let (leg, tag) = h.answered_incoming();
    h.events_all();
    assert!(h.stack.reinvite(leg, b"v=0\r\n".to_vec(), h.now, &mut h.rng));
    let re = h.sent().remove(0);
    assert!(re.starts_with("INVITE sip:bob@198.51.100.7:5062 SIP/2.0\r\n"), "{re}");
    assert_eq!(header(&re, "From"), format!("<sip:alice@example.com>;tag={tag}"));
    assert_eq!(header(&re, "CSeq"), "1 INVITE");
    h.receive(&reply(&re, 491, "Request Pending", None, "", ""));
    h.sent();
    // Not the Call-ID's owner: 0–2 s.
    h.tick(2000);
    let retry = h.sent().remove(0);
    assert_eq!(header(&retry, "CSeq"), "2 INVITE");
    h.receive(&reply(&retry, 200, "OK", None, BOB_CONTACT, ""));
    let ack = h.sent().remove(0);
    assert!(ack.starts_with("ACK sip:bob@198.51.100.7:5062 ") && header(&ack, "CSeq") == "2 ACK", "{ack}");
    assert_eq!(h.events_all(), [SipEvent::ReinviteResult { leg, result: Ok(Vec::new()) }]);
}

#[test]
fn reinvite_481_or_timeout_ends_the_call() {
    let mut h = Harness::new();
    let (leg, _) = h.answered();
    assert!(h.stack.reinvite(leg, b"v=0\r\n".to_vec(), h.now, &mut h.rng));
    let re = h.sent().remove(0);
    h.receive(&reply(&re, 481, "Call/Transaction Does Not Exist", Some("b1"), "", ""));
    assert!(h.sent()[0].starts_with("ACK "));
    let events = h.events_all();
    assert_eq!(
        events,
        [
            SipEvent::ReinviteResult { leg, result: Err("481 Call/Transaction Does Not Exist".into()) },
            SipEvent::Call {
                leg,
                progress: CallProgress::Ended { reason: "481 Call/Transaction Does Not Exist".into() }
            },
        ]
    );
    assert_eq!(h.stack.leg_count(), 0);
    assert!(!h.stack.reinvite(leg, b"v=0\r\n".to_vec(), h.now, &mut h.rng), "no call, no re-INVITE");

    let mut h = Harness::new();
    let (leg, _) = h.answered();
    assert!(h.stack.reinvite(leg, b"v=0\r\n".to_vec(), h.now, &mut h.rng));
    let re = h.sent().remove(0);
    for _ in 0..64 {
        h.tick(500);
    }
    let sent = h.sent();
    assert!(sent.len() >= 5 && sent.iter().all(|m| *m == re), "timer A retransmissions only: {sent:?}");
    let events = h.events_all();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        matches!(&events[1], SipEvent::Call { progress: CallProgress::Ended { reason }, .. } if reason == "408 Request Timeout")
    );
    assert_eq!(h.stack.leg_count(), 0);
}

#[test]
fn require_unknown_gets_420_and_no_hops_left_gets_483() {
    let mut h = Harness::new();
    h.registered();
    // 100rel is supported (RFC 3262, #15); any other required extension is not.
    let invite = incoming_invite("z9hG4bKreq").replace("X-Custom: yes\r\n", "Require: 100rel, timer\r\n");
    h.receive(&invite);
    let r = h.sent().remove(0);
    assert!(r.starts_with("SIP/2.0 420 Bad Extension\r\n"), "{r}");
    assert_eq!(header(&r, "Unsupported"), "timer");
    assert!(header(&r, "To").contains(";tag="), "a final response carries our To tag");
    assert!(h.events_all().is_empty(), "no call");
    assert_eq!(h.stack.leg_count(), 0);
    // Another Call-ID each time: the same From tag, Call-ID and CSeq would be a merged request.
    let invite = incoming_invite("z9hG4bKmf0").replace("Max-Forwards: 69", "Max-Forwards: 0").replace("in-1@", "in-2@");
    h.receive(&invite);
    let r = h.sent().remove(0);
    assert!(r.starts_with("SIP/2.0 483 Too Many Hops\r\n"), "{r}");
    assert!(h.events_all().is_empty());
    // Supported: 100rel (not Require) is fine: the 180 is reliable (RFC 3262 §3).
    let invite = incoming_invite("z9hG4bKsup").replace("X-Custom: yes\r\n", "Supported: 100rel\r\n");
    h.receive(&invite.replace("in-1@", "in-3@"));
    let ringing = h.sent().remove(0);
    assert!(ringing.starts_with("SIP/2.0 180 Ringing"), "{ringing}");
    assert_eq!(header(&ringing, "Require"), "100rel");
    assert!(header(&ringing, "RSeq").parse::<u32>().is_ok_and(|n| n > 0), "{ringing}");
    assert!(matches!(&h.events_all()[..], [SipEvent::Incoming { .. }]));
}

// ===== What we advertise =====

/// Every Allow we send (REGISTER, INVITE, OPTIONS) advertises MESSAGE, and an out-of-dialog
/// MESSAGE for a registered Contact waits for its user's answer (#12; it was 405 in #10).
#[test]
fn message_is_advertised_and_answered_by_its_user() {
    let mut h = Harness::new();
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
    h.stack.register(params, h.now, &mut h.rng);
    let register = h.sent().remove(0);
    assert!(header(&register, "Allow").contains("MESSAGE"), "{register}");
    h.receive(&reply(&register, 200, "OK", Some("r1"), "", ""));
    h.call();
    let invite = h.sent().remove(0);
    assert!(header(&invite, "Allow").contains("INFO") && header(&invite, "Allow").contains("MESSAGE"));
    let message =
        "MESSAGE sip:alice-1@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKmsg1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=m1\r\nTo: <sip:alice@example.com>\r\nCall-ID: msg-1\r\n\
         CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi";
    h.receive(message);
    assert!(h.sent().is_empty(), "the MESSAGE waits for its user's answer");
    let id = std::iter::from_fn(|| h.stack.poll_event())
        .find_map(|e| match e {
            SipEvent::Message { id, message, .. } => Some((id, message)),
            _ => None,
        })
        .map(|(id, m)| {
            assert_eq!((m.from_uri.as_str(), m.body.as_slice()), ("bob@example.com", &b"hi"[..]));
            id
        })
        .expect("a Message event");
    h.stack.answer_message(id, 200, h.now);
    let resp = h.sent().remove(0);
    assert!(resp.starts_with("SIP/2.0 200 OK\r\n"), "{resp}");
    let options =
        message.replace("MESSAGE sip:", "OPTIONS sip:").replace("1 MESSAGE", "1 OPTIONS").replace("msg1", "opt1");
    h.receive(&options);
    let resp = h.sent().remove(0);
    assert!(resp.starts_with("SIP/2.0 200 ") && header(&resp, "Allow").contains("MESSAGE"), "{resp}");
}

// ===== Bounded INFO queue =====

/// A leg queues at most `MAX_QUEUED_INFOS` INFOs behind the one in flight; one more is refused
/// with a typed error (nothing is sent or queued), and a leg without an established dialog says
/// so. Once the queue drains, INFOs are accepted again (#10).
#[test]
fn info_queue_is_bounded_and_overflow_is_typed() {
    use sylkgw_core::sip::stack::{InfoError, MAX_QUEUED_INFOS};
    let mut h = Harness::new();
    let leg = h.call();
    assert_eq!(
        h.stack.try_send_info(leg, "application/dtmf-relay", DTMF.into(), h.now, &mut h.rng),
        Err(InfoError::NoDialog)
    );
    h.sent();
    let mut h = Harness::new();
    let (leg, _) = h.answered();
    h.sent();
    // The first goes out at once; MAX_QUEUED_INFOS wait behind it.
    for _ in 0..=MAX_QUEUED_INFOS {
        assert_eq!(h.stack.try_send_info(leg, "application/dtmf-relay", DTMF.into(), h.now, &mut h.rng), Ok(()));
    }
    let first = h.sent().remove(0);
    assert_eq!(
        h.stack.try_send_info(leg, "application/dtmf-relay", DTMF.into(), h.now, &mut h.rng),
        Err(InfoError::QueueFull)
    );
    assert!(!h.stack.send_info(leg, "application/dtmf-relay", DTMF.into(), h.now, &mut h.rng));
    assert!(h.sent().is_empty(), "an INFO over the cap sends nothing");
    // The first is answered: the next leaves the queue, so one more fits.
    h.receive(&reply(&first, 200, "OK", None, "", ""));
    let second = h.sent().remove(0);
    assert!(second.starts_with("INFO "), "{second}");
    assert_eq!(h.stack.try_send_info(leg, "application/dtmf-relay", DTMF.into(), h.now, &mut h.rng), Ok(()));
    assert_eq!(h.stack.leg_count(), 1, "an overflow ends nothing");
}

// ===== Header hygiene =====

/// Parses one header of a message the stack sent as a name-addr.
fn name_addr_of(msg: &str, name: &str) -> sylkgw_core::sip::message::NameAddr {
    let parsed = sylkgw_core::sip::parse::parse_message(msg.as_bytes()).expect("the stack sends parsable SIP");
    let headers = match parsed {
        sylkgw_core::sip::message::SipMessage::Request(r) => r.headers,
        sylkgw_core::sip::message::SipMessage::Response(r) => r.headers,
    };
    let value = headers.get(&sylkgw_core::sip::message::HeaderName::parse(name)).expect(name).value.clone();
    let mut list = sylkgw_core::sip::message::name_addr_list(&value).expect("a well-formed name-addr");
    assert_eq!(list.len(), 1, "{name}: one value, nothing injected");
    list.remove(0)
}

/// A display name with quotes and backslashes (one ending in `\"`, which used to close the
/// quoted string so the client wrote its own `<sip:…>` into From) is quoted so that From
/// parses back to the same name and our own URI and tag (#10).
#[test]
fn hostile_display_names_stay_inside_the_quotes() {
    for name in
        [r#"Mallory\"#, r#"Mallory\" <sip:evil@attacker.example>;tag=x \"#, r#"a"b\c\\"d"#, r#"\\\""#, "tab\there"]
    {
        let mut h = Harness::new();
        let params = CallParams {
            identity: SipIdentity {
                aor: "alice@example.com".into(),
                secret: "secret".into(),
                display_name: Some(name.into()),
                user_agent: None,
                contact_user: "alice-1".into(),
            },
            target: "bob@example.com".into(),
            sdp: b"v=0\r\n".to_vec(),
            headers: Vec::new(),
        };
        h.stack.invite(params, h.now, &mut h.rng);
        let invite = h.sent().remove(0);
        let from = name_addr_of(&invite, "From");
        assert_eq!(from.display_name.as_deref(), Some(name), "{invite}");
        assert_eq!(from.uri.to_string(), "sip:alice@example.com", "{invite}");
        assert!(from.tag().is_some_and(|t| t != "x"), "{invite}");
    }
}

/// Push parameters from `account-devicetoken` go into the Contact URI escaped (RFC 3261 §25.1
/// paramchar): hostile values cannot end the URI, add parameters or headers, and they parse
/// back (unescaped) to what the client sent (#10).
#[test]
fn hostile_push_parameters_are_escaped_in_the_contact() {
    use sylkgw_core::sip::stack::{PushContact, RegParams};
    use sylkgw_core::sip::uri::{unescape, Uri};
    let push = PushContact {
        app: "com.example.app;maddr=evil.example".into(),
        token: "tok>;expires=0, <sip:evil@attacker.example>".into(),
        platform: "apple\r\nX-Injected: 1".into(),
        device: "dev%41 \"quoted\" ?h=v&x".into(),
        silent: true,
    };
    let mut h = Harness::new();
    let params = RegParams {
        identity: SipIdentity {
            aor: "alice@example.com".into(),
            secret: "secret".into(),
            display_name: None,
            user_agent: None,
            contact_user: "alice-1".into(),
        },
        push: Some(push.clone()),
    };
    h.stack.register(params, h.now, &mut h.rng);
    let register = h.sent().remove(0);
    assert!(!register.contains("\r\nX-Injected"), "no header injected: {register}");
    let contact = name_addr_of(&register, "Contact");
    let Uri::Sip(uri) = &contact.uri else { panic!("{register}") };
    assert_eq!(uri.user.as_deref(), Some("alice-1"));
    assert_eq!(uri.maddr(), None, "{register}");
    assert!(uri.headers.is_empty(), "{register}");
    let names: Vec<&str> = uri.params.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["pn-app", "pn-tok", "pn-type", "pn-device", "pn-silent"], "{register}");
    let value = |n: &str| unescape(uri.params.value(n).unwrap());
    assert_eq!(value("pn-app"), push.app.as_bytes());
    assert_eq!(value("pn-tok"), push.token.as_bytes());
    assert_eq!(value("pn-type"), push.platform.as_bytes());
    assert_eq!(value("pn-device"), push.device.as_bytes());
    assert_eq!(value("pn-silent"), b"1");
    assert_eq!(contact.expires(), Some(600), "{register}");
}

/// §12.1.1: the responses that make the dialog of an incoming call (the 180, the 200 and its
/// retransmissions) carry the INVITE's Record-Route headers in order, so that the caller's
/// requests in the dialog (ACK, PRACK, BYE) go back through the proxies (found by
/// `e2e_carrier.rs`: kamailio answered the caller's PRACK 404 without them).
#[test]
fn incoming_dialog_responses_copy_record_route() {
    let mut h = Harness::new();
    h.registered();
    let rr = "Record-Route: <sip:192.0.2.5;lr>\r\nRecord-Route: <sip:198.51.100.1;lr;ftag=x>\r\n";
    h.receive(&incoming_invite("z9hG4bKrr1").replace("X-Custom: yes\r\n", &format!("X-Custom: yes\r\n{rr}")));
    let ringing = h.sent().remove(0);
    let routes =
        |m: &str| m.split("\r\n").filter(|l| l.starts_with("Record-Route: ")).map(String::from).collect::<Vec<_>>();
    let want = ["Record-Route: <sip:192.0.2.5;lr>", "Record-Route: <sip:198.51.100.1;lr;ftag=x>"];
    assert_eq!(routes(&ringing), want, "{ringing}");
    let leg = incoming_leg(&h.events_all());
    h.stack.answer(leg, b"v=0\r\nanswer\r\n".to_vec(), h.now);
    let ok = h.sent().remove(0);
    assert_eq!(routes(&ok), want, "{ok}");
    h.tick(500);
    let again = h.sent().remove(0);
    assert!(again.starts_with("SIP/2.0 200 OK"));
    assert_eq!(routes(&again), want, "{again}");
}
