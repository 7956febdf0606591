//! RFC 3263 in the SIP stack, without an outbound proxy: the queries it asks for, failover to the
//! next target (§4.3) for REGISTER, MESSAGE and INVITE, and answers kept for their TTLs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use sylkgw_core::config::SipConfig;
use sylkgw_core::dns::{Answer, NaptrRecord, QueryType, Records, SrvRecord};
use sylkgw_core::rng::Rng;
use sylkgw_core::sip::calls::CallParams;
use sylkgw_core::sip::invite::CallProgress;
use sylkgw_core::sip::registration::RegState;
use sylkgw_core::sip::stack::{MessageParams, RegParams, SipEvent, SipIdentity, SipOutput, SipStack};
use sylkgw_core::sip::transport::TransportOut;
use sylkgw_core::SocketId;
use sylkgw_tests::sip_text::{header, response};

struct Harness {
    stack: SipStack,
    rng: Rng,
    now: Instant,
}

fn alice() -> SipIdentity {
    SipIdentity {
        aor: "alice@example.com".into(),
        secret: "secret".into(),
        display_name: None,
        user_agent: None,
        contact_user: "alice-1".into(),
    }
}

/// `example.com`: NAPTR to `_sip._udp.example.com`, whose SRV names `a` (priority 10) and `b`
/// (priority 20); `a` is 192.0.2.10, `b` is 192.0.2.20.
fn records(qtype: QueryType, name: &str) -> Result<Answer, String> {
    let records = match (qtype, name) {
        (QueryType::Naptr, "example.com") => Records::Naptr(vec![NaptrRecord {
            order: 10,
            preference: 10,
            flags: "S".into(),
            services: "SIP+D2U".into(),
            replacement: "_sip._udp.example.com".into(),
        }]),
        (QueryType::Srv, "_sip._udp.example.com") => Records::Srv(vec![
            SrvRecord { priority: 20, weight: 0, port: 5060, target: "b.example.com".into() },
            SrvRecord { priority: 10, weight: 0, port: 5060, target: "a.example.com".into() },
        ]),
        (QueryType::Ip, "a.example.com") => Records::Ip(vec!["192.0.2.10".parse().unwrap()]),
        (QueryType::Ip, "b.example.com") => Records::Ip(vec!["192.0.2.20".parse().unwrap()]),
        (t, _) => Records::empty(t),
    };
    Ok(Answer { records, ttl: 60 })
}

const A: &str = "192.0.2.10:5060";
const B: &str = "192.0.2.20:5060";

impl Harness {
    fn new() -> Self {
        let cfg = SipConfig { listen: "192.0.2.1:5060".parse().unwrap(), ..SipConfig::default() };
        let mut stack = SipStack::new(cfg);
        stack.set_udp_socket(SocketId(0), "192.0.2.1:5060".parse().unwrap());
        Self { stack, rng: Rng::new([7; 32]), now: Instant::now() }
    }

    /// Answers every query from [`records`] until none is left; returns them (`type name`) and
    /// the datagrams sent meanwhile.
    fn resolve(&mut self) -> (Vec<String>, Vec<(SocketAddr, String)>) {
        let (mut queries, mut sent) = (Vec::new(), Vec::new());
        loop {
            let mut next = None;
            for o in std::iter::from_fn(|| self.stack.poll_output()) {
                match o {
                    SipOutput::Resolve { query, qtype, name } => {
                        assert!(next.is_none(), "one query at a time");
                        next = Some((query, qtype, name));
                    }
                    SipOutput::Transport(TransportOut::Datagram { to, payload, .. }) => {
                        sent.push((to, String::from_utf8(payload).unwrap()))
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            let Some((query, qtype, name)) = next else { return (queries, sent) };
            queries.push(format!("{qtype} {name}"));
            self.stack.handle_resolved(query, records(qtype, &name), self.now, &mut self.rng);
        }
    }

    fn events(&mut self) -> Vec<SipEvent> {
        std::iter::from_fn(|| self.stack.poll_event()).collect()
    }

    fn receive(&mut self, from: &str, text: &str) -> Vec<(SocketAddr, String)> {
        self.now += Duration::from_millis(10);
        self.stack.handle_datagram(from.parse().unwrap(), text.as_bytes(), self.now, &mut self.rng);
        self.resolve().1
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn reply(req: &str, code: u16, reason: &str) -> String {
    response(req, code, reason, &format!("{};tag=x", header(req, "To")), "", "")
}

#[test]
fn register_follows_naptr_and_srv_and_fails_over_on_503() {
    let mut h = Harness::new();
    let reg = h.stack.register(RegParams { identity: alice(), push: None }, h.now, &mut h.rng);
    let (queries, sent) = h.resolve();
    assert_eq!(
        queries,
        ["naptr example.com", "srv _sip._udp.example.com", "ip a.example.com", "ip b.example.com"],
        "RFC 3263 §4.1: NAPTR, its SRV, then each target's addresses in priority order"
    );
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, addr(A), "priority 10 first");
    assert!(h.events().contains(&SipEvent::Resolved { id: reg, result: Ok(()) }));
    // §4.3: a 503 sends the REGISTER to the next target, as a new transaction.
    let sent_b = h.receive(A, &reply(&sent[0].1, 503, "Service Unavailable"));
    assert_eq!(sent_b.len(), 1, "{sent_b:?}");
    assert_eq!(sent_b[0].0, addr(B));
    assert_ne!(header(&sent_b[0].1, "Via"), header(&sent[0].1, "Via"), "a new branch");
    assert!(!h.events().iter().any(|e| matches!(e, SipEvent::Registration { state: RegState::Failed(_), .. })));
    let none = h.receive(B, &reply(&sent_b[0].1, 200, "OK"));
    assert!(none.is_empty());
    assert!(h.events().contains(&SipEvent::Registration { id: reg, state: RegState::Registered }));
}

#[test]
fn register_fails_over_on_timeout_and_gives_up_after_the_last_target() {
    let mut h = Harness::new();
    h.stack.register(RegParams { identity: alice(), push: None }, h.now, &mut h.rng);
    let (_, sent) = h.resolve();
    assert_eq!(sent[0].0, addr(A));
    let mut seen_b = false;
    let mut failed = false;
    // Timer F (64 × T1) for each target in turn; retransmissions in between.
    for _ in 0..200 {
        h.now += Duration::from_millis(500);
        h.stack.handle_timeout(h.now, &mut h.rng);
        for (to, _) in h.resolve().1 {
            seen_b |= to == addr(B);
        }
        if h.events().iter().any(|e| matches!(e, SipEvent::Registration { state: RegState::Failed(_), .. })) {
            failed = true;
            break;
        }
    }
    assert!(seen_b, "the REGISTER went to the second target after the first timed out");
    assert!(failed, "with both timed out, the registration failed");
}

#[test]
fn answers_are_cached_for_their_ttl() {
    let mut h = Harness::new();
    let params = |target: &str| MessageParams {
        identity: alice(),
        target: target.into(),
        content_type: "text/plain".into(),
        body: b"hi".to_vec(),
        headers: Vec::new(),
    };
    h.stack.send_message(params("bob@example.com"), h.now, &mut h.rng);
    let (queries, sent) = h.resolve();
    assert_eq!(queries.len(), 4);
    assert_eq!(sent[0].0, addr(A));
    h.receive(A, &reply(&sent[0].1, 200, "OK"));
    h.now += Duration::from_secs(59);
    h.stack.send_message(params("carol@example.com"), h.now, &mut h.rng);
    let (queries, sent) = h.resolve();
    assert!(queries.is_empty(), "within the TTL the cache answers: {queries:?}");
    assert_eq!(sent[0].0, addr(A));
    h.receive(A, &reply(&sent[0].1, 200, "OK"));
    h.now += Duration::from_secs(2);
    h.stack.send_message(params("dave@example.com"), h.now, &mut h.rng);
    assert_eq!(h.resolve().0.len(), 4, "after the TTL the records are asked again");
}

#[test]
fn message_fails_over_on_503() {
    let mut h = Harness::new();
    let params = MessageParams {
        identity: alice(),
        target: "bob@example.com".into(),
        content_type: "text/plain".into(),
        body: b"hi".to_vec(),
        headers: Vec::new(),
    };
    let id = h.stack.send_message(params, h.now, &mut h.rng);
    let (_, sent) = h.resolve();
    let sent_b = h.receive(A, &reply(&sent[0].1, 503, "Service Unavailable"));
    assert_eq!(sent_b[0].0, addr(B));
    assert!(h.events().is_empty(), "no result yet");
    h.receive(B, &reply(&sent_b[0].1, 200, "OK"));
    assert_eq!(h.events(), [SipEvent::MessageResult { id, code: 200, reason: "OK".into() }]);
}

#[test]
fn invite_fails_over_on_503_before_a_dialog() {
    let mut h = Harness::new();
    let params = CallParams {
        identity: alice(),
        target: "bob@example.com".into(),
        sdp: b"v=0\r\n".to_vec(),
        headers: Vec::new(),
    };
    let leg = h.stack.invite(params, h.now, &mut h.rng);
    let (_, sent) = h.resolve();
    assert!(sent[0].1.starts_with("INVITE "));
    let out = h.receive(A, &reply(&sent[0].1, 503, "Service Unavailable"));
    let acks: Vec<_> = out.iter().filter(|(_, m)| m.starts_with("ACK ")).collect();
    let invites: Vec<_> = out.iter().filter(|(_, m)| m.starts_with("INVITE ")).collect();
    assert_eq!(acks.len(), 1, "the 503 is acknowledged (§17.1.1.3)");
    assert_eq!(acks[0].0, addr(A));
    assert_eq!(invites.len(), 1, "{out:?}");
    assert_eq!(invites[0].0, addr(B));
    assert!(!h.events().iter().any(|e| matches!(e, SipEvent::Call { progress: CallProgress::Ended { .. }, .. })));
    // The second target's 503 is the end.
    let invite_b = invites[0].1.clone();
    h.receive(B, &reply(&invite_b, 503, "Service Unavailable"));
    let events = h.events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SipEvent::Call { leg: l, progress: CallProgress::Ended { .. } } if *l == leg)),
        "{events:?}"
    );
}

#[test]
fn nothing_resolves_is_reported_once_with_no_records() {
    let mut h = Harness::new();
    let identity = SipIdentity { aor: "carol@nowhere.invalid".into(), ..alice() };
    let reg = h.stack.register(RegParams { identity, push: None }, h.now, &mut h.rng);
    let (queries, sent) = h.resolve();
    assert_eq!(queries.len(), 5, "{queries:?}");
    assert!(sent.is_empty());
    let events = h.events();
    assert!(events.contains(&SipEvent::Resolved { id: reg, result: Err(None) }), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, SipEvent::Registration { state: RegState::Failed(_), .. })));
}
