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
