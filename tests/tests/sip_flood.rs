//! A SIP flood cannot starve the gateway's own requests (#10): unauthenticated requests from
//! one address are answered from a bounded cache (no server transaction each), are limited per
//! source, and never take the room our REGISTERs need.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use sylkgw_core::config::SipConfig;
use sylkgw_core::rng::Rng;
use sylkgw_core::sip::registration::RegState;
use sylkgw_core::sip::stack::{RegParams, SipEvent, SipIdentity, SipOutput, SipStack};
use sylkgw_core::sip::transport::TransportOut;
use sylkgw_core::SocketId;
use sylkgw_tests::sip_text::{header, response};

const PROXY: &str = "192.0.2.5:5060";
const FLOODER: &str = "198.51.100.66:5060";

fn stack(cfg: SipConfig) -> SipStack {
    let cfg = SipConfig { listen: "192.0.2.1:5060".parse().unwrap(), outbound_sip_proxy: Some(PROXY.into()), ..cfg };
    let mut stack = SipStack::new(cfg);
    stack.set_udp_socket(SocketId(0), "192.0.2.1:5060".parse().unwrap());
    stack
}

fn register(stack: &mut SipStack, now: Instant, rng: &mut Rng) {
    let identity = SipIdentity {
        aor: "alice@example.com".into(),
        secret: "secret".into(),
        display_name: None,
        user_agent: None,
        contact_user: "alice-1".into(),
    };
    stack.register(RegParams { identity, push: None }, now, rng);
}

/// Every datagram sent since the last call: (destination, text).
fn sent(stack: &mut SipStack) -> Vec<(SocketAddr, String)> {
    let mut out = Vec::new();
    while let Some(o) = stack.poll_output() {
        if let SipOutput::Transport(TransportOut::Datagram { to, payload, .. }) = o {
            out.push((to, String::from_utf8(payload).unwrap()));
        }
    }
    out
}

fn options(i: usize) -> String {
    format!(
        "OPTIONS sip:alice-1@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {FLOODER};branch=z9hG4bKflood{i}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:flood@attacker.example>;tag=f{i}\r\nTo: <sip:alice@example.com>\r\n\
         Call-ID: flood-{i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Sends `n` OPTIONS from the flooder within `span` of virtual time.
fn flood(stack: &mut SipStack, now: &mut Instant, span: Duration, n: usize, rng: &mut Rng) {
    let step = span / n as u32;
    for i in 0..n {
        *now += step;
        stack.handle_datagram(FLOODER.parse().unwrap(), options(i).as_bytes(), *now, rng);
    }
}

fn registered(stack: &mut SipStack) -> bool {
    let mut ok = false;
    while let Some(e) = stack.poll_event() {
        ok |= matches!(e, SipEvent::Registration { state: RegState::Registered, .. });
    }
    ok
}

/// 20,000 OPTIONS from one address, then a REGISTER: it goes out (no 503 from a table the
/// flood filled) and succeeds; the flood left no transaction behind.
#[test]
fn register_after_a_flood_goes_out() {
    let (mut rng, mut now) = (Rng::new([5; 32]), Instant::now());
    let mut s = stack(SipConfig::default());
    flood(&mut s, &mut now, Duration::from_secs(2), 20_000, &mut rng);
    assert_eq!(s.sizes().0, 0, "answered requests keep no transaction");
    sent(&mut s);
    register(&mut s, now, &mut rng);
    let out = sent(&mut s);
    let (to, register) = out.first().expect("the REGISTER goes out");
    assert_eq!(*to, PROXY.parse::<SocketAddr>().unwrap());
    assert!(register.starts_with("REGISTER "), "{register}");
    now += Duration::from_millis(20);
    let to_tag = format!("{};tag=r1", header(register, "To"));
    let ok = response(register, 200, "OK", &to_tag, "", "");
    s.handle_datagram(PROXY.parse().unwrap(), ok.as_bytes(), now, &mut rng);
    assert!(registered(&mut s));
}

/// The same while the REGISTER is in flight: the flood's requests and the REGISTER's 200
/// interleave; the registration succeeds, and the flooder got at most its per-source budget of
/// answers per second (the rest dropped silently, UDP).
#[test]
fn register_during_a_flood_succeeds_and_the_flood_is_limited() {
    let (mut rng, mut now) = (Rng::new([6; 32]), Instant::now());
    let cfg = SipConfig { max_transactions: 100, ..SipConfig::default() };
    let limit = cfg.max_requests_per_second_per_ip;
    let mut s = stack(cfg);
    register(&mut s, now, &mut rng);
    let register = sent(&mut s).remove(0).1;
    flood(&mut s, &mut now, Duration::from_millis(1500), 10_000, &mut rng);
    let to_tag = format!("{};tag=r1", header(&register, "To"));
    let ok = response(&register, 200, "OK", &to_tag, "", "");
    s.handle_datagram(PROXY.parse().unwrap(), ok.as_bytes(), now, &mut rng);
    flood(&mut s, &mut now, Duration::from_millis(500), 10_000, &mut rng);
    assert!(registered(&mut s));
    let answers = sent(&mut s);
    assert!(answers
        .iter()
        .all(|(to, m)| *to == FLOODER.parse::<SocketAddr>().unwrap() && m.starts_with("SIP/2.0 200 ")));
    assert!(!answers.is_empty() && answers.len() <= 2 * limit as usize + limit as usize, "{} answers", answers.len());
    // The REGISTER's refresh still goes out when it is due, flood or not.
    for _ in 0..700 {
        now += Duration::from_secs(1);
        s.handle_timeout(now, &mut rng);
    }
    assert!(sent(&mut s).iter().any(|(_, m)| m.starts_with("REGISTER ")));
}

/// A retransmitted OPTIONS (same branch) is answered again with the same bytes from the cache
/// of recent answers (RFC 3261 §17.2.2), without a server transaction.
#[test]
fn retransmissions_of_answered_requests_get_the_same_answer() {
    let (mut rng, mut now) = (Rng::new([7; 32]), Instant::now());
    let mut s = stack(SipConfig::default());
    s.handle_datagram(FLOODER.parse().unwrap(), options(1).as_bytes(), now, &mut rng);
    let first = sent(&mut s);
    now += Duration::from_millis(500);
    s.handle_datagram(FLOODER.parse().unwrap(), options(1).as_bytes(), now, &mut rng);
    assert_eq!(sent(&mut s), first);
    assert_eq!(s.sizes().0, 0);
}

/// Over TCP the source is real: a request over the per-source budget gets 503 with Retry-After
/// (its transaction would otherwise wait for Timer F); within the budget it is answered, and a
/// new second brings a new budget.
#[test]
fn over_budget_on_tcp_gets_503_with_retry_after() {
    use sylkgw_core::ConnId;
    let (mut rng, mut now) = (Rng::new([8; 32]), Instant::now());
    let mut s = stack(SipConfig { max_requests_per_second_per_ip: 3, ..SipConfig::default() });
    let conn = ConnId(7);
    s.handle_accepted(conn, FLOODER.parse().unwrap(), now);
    let answers = |s: &mut SipStack| {
        let mut out = Vec::new();
        while let Some(o) = s.poll_output() {
            if let SipOutput::Transport(TransportOut::Write { conn: c, data }) = o {
                assert_eq!(c, conn);
                out.push(String::from_utf8(data).unwrap());
            }
        }
        out
    };
    let tcp = |i: usize| options(i).replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    for i in 0..5 {
        s.handle_stream_data(conn, tcp(i).as_bytes(), now, &mut rng);
    }
    let got = answers(&mut s);
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(got[..3].iter().all(|m| m.starts_with("SIP/2.0 200 ")), "{got:?}");
    for m in &got[3..] {
        assert!(m.starts_with("SIP/2.0 503 ") && header(m, "Retry-After") == "1", "{m}");
    }
    now += Duration::from_secs(1);
    s.handle_stream_data(conn, tcp(9).as_bytes(), now, &mut rng);
    assert!(answers(&mut s)[0].starts_with("SIP/2.0 200 "));
}
