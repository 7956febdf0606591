//! The end-to-end harness itself, proven with the real peers alone (no gateway yet): each test
//! runs in its own network namespace (`netns::in_netns`), starts kamailio and/or sipp there,
//! holds their PIDs and stops them by PID.
//!
//! Needs root, `unshare`, `ip`, `kamailio` and `sipp` (tests/run-all.sh installs the packages);
//! `SYLKGW_SKIP_E2E=1` skips these tests loudly instead of failing them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};
use sylkgw_tests::netns::{alive, assert_isolated, in_netns};
use sylkgw_tests::peers::{
    digest_params, DigestAlgorithm, Kamailio, KamailioOpts, SipMessage, SipUdp, Sipp, SippProcess, Transport,
};
use sylkgw_tests::TempDir;

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
const STEP: Duration = Duration::from_secs(5);

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The challenge of a 401, as `(key, value)` pairs; panics unless `m` is a 401 with one.
fn challenge(m: &SipMessage) -> Vec<(String, String)> {
    assert_eq!(m.status(), Some(401), "expected a 401:\n{}", m.text);
    let h = m.header("WWW-Authenticate").unwrap_or_else(|| panic!("401 without WWW-Authenticate:\n{}", m.text));
    assert!(h.starts_with("Digest "), "not a Digest challenge: {h}");
    digest_params(h)
}

#[test]
fn netns_is_isolated() {
    if !in_netns("netns_is_isolated") {
        return;
    }
    assert_isolated();
    // Loopback works, v4 and v6.
    for ip in [V4, V6] {
        let a = SipUdp::bind(ip).expect("bind");
        let b = SipUdp::bind(ip).expect("bind");
        a.send_to("ping", b.local_addr()).expect("send");
        assert_eq!(b.recv(STEP).expect("loopback datagram").text, "ping");
    }
    // Ports are private to the namespace: 5060 is free here whatever the host runs.
    std::net::UdpSocket::bind((V4, 5060)).expect("5060/udp is free inside the namespace");
    std::net::TcpListener::bind((V4, 5060)).expect("5060/tcp is free inside the namespace");
}

/// kamailio (MD5) + sipp `reg_auth_uac.xml` over `transport`: alice registers with `secret`;
/// ul.dump shows the binding; a wrong password is refused.
fn kamailio_md5_register(transport: Transport) {
    let t0 = Instant::now();
    let work = TempDir::new("kam");
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    let started = t0.elapsed();
    let registrar = kam.addr();
    let local = SocketAddr::new(V4, 5081);

    // MD5 challenge on the wire (the UDP listener serves it whatever transport sipp uses).
    let raw = SipUdp::bind(V4).expect("bind");
    let r = raw.request(
        &raw.register_request("alice", &kam.domain(), &sylkgw_tests::peers::unique("c"), 1, ""),
        registrar,
        STEP,
    );
    let ch = challenge(&r);
    assert_eq!(param(&ch, "algorithm"), Some("MD5"), "{ch:?}");
    assert_eq!(param(&ch, "realm"), Some("127.0.0.1"), "{ch:?}");

    let out = Sipp::register(work.path(), registrar, local, "alice", "secret").transport(transport).run();
    out.assert_success();
    assert!(out.messages.contains("SIP/2.0 401"), "no 401 seen by sipp:\n{out}");
    assert!(out.messages.contains("SIP/2.0 200"), "no 200 seen by sipp:\n{out}");

    let b = kam.wait_binding("alice", STEP);
    let proto = match transport {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
    };
    assert_eq!(b.address, format!("sip:alice@127.0.0.1:5081;transport={proto}"), "{b:?}");
    assert_eq!(b.socket, format!("{}:127.0.0.1:5060", proto.to_ascii_lowercase()), "{b:?}");
    assert!(b.expires.is_some_and(|e| e > 3500), "{b:?}");
    assert!(kam.ul_dump().contains("AoR: alice"));
    assert!(kam.log_text().contains("REQ REGISTER sip:127.0.0.1"), "{}", kam.log_text());

    // Wrong password: kamailio challenges again, sipp's scenario fails (exit 1), bob stays unknown.
    let bad =
        Sipp::register(work.path(), registrar, SocketAddr::new(V4, 5082), "bob", "wrong").transport(transport).run();
    bad.assert_code(1);
    assert!(kam.binding("bob").is_none(), "{}", kam.ul_dump());

    kam.ul_rm("alice");
    assert!(kam.binding("alice").is_none(), "{}", kam.ul_dump());

    let pids = kam.pids();
    assert!(pids.len() > 3, "kamailio should run several processes: {pids:?}");
    kam.stop();
    assert!(pids.iter().all(|&p| !alive(p)), "kamailio processes left: {pids:?}");
    eprintln!("[timing] kamailio ready in {started:.2?}, whole test {:.2?}", t0.elapsed());
}

#[test]
fn kamailio_md5_register_udp() {
    if !in_netns("kamailio_md5_register_udp") {
        return;
    }
    kamailio_md5_register(Transport::Udp);
}

#[test]
fn kamailio_md5_register_tcp() {
    if !in_netns("kamailio_md5_register_tcp") {
        return;
    }
    kamailio_md5_register(Transport::Tcp);
}

#[test]
fn kamailio_ipv6_register() {
    if !in_netns("kamailio_ipv6_register") {
        return;
    }
    let work = TempDir::new("kam6");
    let kam = Kamailio::start(work.path(), KamailioOpts { ipv6: true, ..KamailioOpts::default() });
    let registrar = SocketAddr::new(V6, 5060);
    assert!(kam.addrs().contains(&registrar));
    Sipp::register(work.path(), registrar, SocketAddr::new(V6, 5081), "alice", "secret").run().assert_success();
    let b = kam.wait_binding("alice", STEP);
    assert_eq!(b.address, "sip:alice@[::1]:5081;transport=UDP", "{b:?}");
    assert_eq!(b.socket, "udp:[::1]:5060", "{b:?}");
    kam.stop();
}

#[test]
fn kamailio_sha256_challenge() {
    if !in_netns("kamailio_sha256_challenge") {
        return;
    }
    let work = TempDir::new("kam256");
    // A non-default port too, to prove the template's $LISTEN.
    let opts = KamailioOpts { port: 5070, ..KamailioOpts::with_algorithm(DigestAlgorithm::Sha256) };
    let kam = Kamailio::start(work.path(), opts);
    assert_eq!(kam.addr(), SocketAddr::new(V4, 5070));

    let sock = SipUdp::bind(V4).expect("bind");
    let call_id = sylkgw_tests::peers::unique("sha");
    let req = sock.register_request("alice", "127.0.0.1", &call_id, 1, "");
    let r = sock.request(&req, kam.addr(), STEP);
    let ch = challenge(&r);
    assert_eq!(param(&ch, "algorithm"), Some("SHA-256"), "{}", r.text);
    assert_eq!(param(&ch, "realm"), Some("127.0.0.1"), "{}", r.text);
    assert_eq!(param(&ch, "qop"), Some("auth"), "{}", r.text);
    assert!(param(&ch, "nonce").is_some_and(|n| !n.is_empty()), "{}", r.text);
    assert_eq!(r.header("Call-ID"), Some(call_id.as_str()));
    assert!(r.header("CSeq").is_some_and(|c| c.ends_with("REGISTER")), "{}", r.text);

    // Credentials that do not match are challenged again, nothing gets registered.
    let bogus = format!(
        "Authorization: Digest username=\"alice\", realm=\"127.0.0.1\", nonce=\"{}\", uri=\"sip:127.0.0.1\", \
         response=\"{}\", algorithm=SHA-256, qop=auth, nc=00000001, cnonce=\"abc\"\r\n",
        param(&ch, "nonce").unwrap_or(""),
        "0".repeat(64)
    );
    let r2 = sock.request(&sock.register_request("alice", "127.0.0.1", &call_id, 2, &bogus), kam.addr(), STEP);
    assert_eq!(r2.status(), Some(401), "{}", r2.text);
    assert!(kam.binding("alice").is_none(), "{}", kam.ul_dump());

    // sipp cannot answer SHA-256 (documented pitfall): it must fail, not hang.
    let out = Sipp::register(work.path(), kam.addr(), SocketAddr::new(V4, 5081), "alice", "secret")
        .timeout(Duration::from_secs(5))
        .run();
    assert!(!out.success(), "sipp answered a SHA-256 challenge?\n{out}");
    kam.stop();
}

#[test]
fn sipp_stub_registrar() {
    if !in_netns("sipp_stub_registrar") {
        return;
    }
    let work = TempDir::new("stub");
    let stub_addr = SocketAddr::new(V4, 5090);

    // 1. Raw client: the stub challenges (MD5, realm sipp.test), then rejects bad credentials (403).
    let mut stub: SippProcess = Sipp::stub_registrar(work.path(), stub_addr, 1).spawn();
    stub.wait_bound(STEP);
    let sock = SipUdp::bind(V4).expect("bind");
    let call_id = sylkgw_tests::peers::unique("stub");
    let r = sock.request(&sock.register_request("alice", "127.0.0.1", &call_id, 1, ""), stub_addr, STEP);
    let ch = challenge(&r);
    assert_eq!(param(&ch, "realm"), Some("sipp.test"), "{}", r.text);
    assert_eq!(param(&ch, "algorithm"), Some("MD5"), "{}", r.text);
    assert_eq!(param(&ch, "qop"), Some("auth"), "{}", r.text);
    let bogus = format!(
        "Authorization: Digest username=\"alice\", realm=\"sipp.test\", nonce=\"{}\", uri=\"sip:127.0.0.1\", \
         response=\"00000000000000000000000000000000\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"abc\"\r\n",
        param(&ch, "nonce").unwrap_or("")
    );
    let r2 = sock.request(&sock.register_request("alice", "127.0.0.1", &call_id, 2, &bogus), stub_addr, STEP);
    assert_eq!(r2.status(), Some(403), "{}", r2.text);
    let pid = stub.pid();
    let done = stub.wait(STEP);
    done.assert_success();
    assert!(done.messages.contains("403 Forbidden"), "{done}");
    assert!(!alive(pid));

    // 2. sipp UAC against the sipp stub: right password → 200, both sides exit 0.
    let mut stub = Sipp::stub_registrar(work.path(), stub_addr, 1).spawn();
    stub.wait_bound(STEP);
    let uac = Sipp::register(work.path(), stub_addr, SocketAddr::new(V4, 5081), "alice", "secret").run();
    uac.assert_success();
    let done = stub.wait(STEP);
    done.assert_success();
    assert!(done.messages.contains("SIP/2.0 200 OK"), "{done}");

    // 3. A stub still waiting is stopped by its PID.
    let mut stub = Sipp::stub_registrar(work.path(), stub_addr, 1).transport(Transport::Tcp).spawn();
    stub.wait_bound(STEP);
    let pid = stub.pid();
    assert!(alive(pid));
    let _ = stub.stop();
    assert!(!alive(pid), "sipp {pid} still runs after stop");
}
