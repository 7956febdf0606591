//! The gateway registers sylkRTC accounts with real registrars: kamailio (digest MD5 and
//! SHA-256, UDP and TCP) and the sipp stub registrar. Every test runs in its own network
//! namespace with only loopback, starts its peers there and stops them by PID.

use std::time::Duration;
use sylkgw_tests::netns::in_netns;
use sylkgw_tests::peers::{DigestAlgorithm, Kamailio, KamailioOpts, Sipp, Transport};
use sylkgw_tests::{binary, ha1, Server, TempDir, WsClient};

const STEP: Duration = Duration::from_secs(10);

fn gateway(bin: &str, args: &[&str]) -> Server {
    let mut all = vec!["--sip-listen", "127.0.0.1:5080"];
    if bin == "sylkgw" {
        all.extend(["--threads", "1"]);
    }
    all.extend(args);
    Server::start(binary(bin), &all)
}

/// alice registers through kamailio over `transport`; the binding shows in kamailio's location
/// table; `account-unregister` removes it; registering again and closing the WebSocket removes
/// it too.
fn kamailio_register(bin: &str, transport: Transport) {
    let work = TempDir::new("gw-kam");
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    let proxy = match transport {
        Transport::Udp => format!("{}", kam.addr()),
        Transport::Tcp => format!("{};transport=tcp", kam.addr()),
    };
    let gw = gateway(bin, &["--outbound-proxy", &proxy]);
    let mut ws = WsClient::ready(&gw);
    ws.add_and_register("alice@127.0.0.1", &ha1("alice", "127.0.0.1", "secret"));
    assert_eq!(ws.next_registration_state(), ("registered".into(), None), "gateway log:\n{}", gw.stderr_text());
    let b = kam.wait_binding("alice", STEP);
    assert!(b.address.contains("@127.0.0.1:5080"), "binding {b:?}");
    if transport == Transport::Tcp {
        assert!(b.address.contains("transport=tcp") || b.socket.contains("tcp"), "binding {b:?}");
    }
    let unreg = r#"{"sylkrtc":"account-unregister","transaction":"u","account":"alice@127.0.0.1"}"#;
    assert_eq!(ws.request(unreg), r#"{"sylkrtc":"ack","transaction":"u"}"#);
    kam.wait_no_binding("alice", STEP);
    let reg = r#"{"sylkrtc":"account-register","transaction":"r2","account":"alice@127.0.0.1"}"#;
    assert_eq!(ws.request(reg), r#"{"sylkrtc":"ack","transaction":"r2"}"#);
    assert_eq!(ws.next_registration_state(), ("registering".into(), None));
    assert_eq!(ws.next_registration_state(), ("registered".into(), None));
    kam.wait_binding("alice", STEP);
    ws.close();
    kam.wait_no_binding("alice", STEP);
    kam.stop();
}

#[test]
fn kamailio_udp_mio() {
    if in_netns("kamailio_udp_mio") {
        kamailio_register("sylkgw-mio", Transport::Udp);
    }
}

#[test]
fn kamailio_tcp_mio() {
    if in_netns("kamailio_tcp_mio") {
        kamailio_register("sylkgw-mio", Transport::Tcp);
    }
}

#[test]
fn kamailio_udp_tokio() {
    if in_netns("kamailio_udp_tokio") {
        kamailio_register("sylkgw", Transport::Udp);
    }
}

#[test]
fn kamailio_tcp_tokio() {
    if in_netns("kamailio_tcp_tokio") {
        kamailio_register("sylkgw", Transport::Tcp);
    }
}

/// A wrong HA1: `failed` with kamailio's code and phrase, then nothing more (no retry storm).
#[test]
fn kamailio_wrong_password() {
    if !in_netns("kamailio_wrong_password") {
        return;
    }
    let work = TempDir::new("gw-kam-bad");
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    let gw = gateway("sylkgw-mio", &["--outbound-proxy", &kam.addr().to_string()]);
    let mut ws = WsClient::ready(&gw);
    ws.add_and_register("alice@127.0.0.1", &ha1("alice", "127.0.0.1", "wrong"));
    assert_eq!(ws.next_registration_state(), ("failed".into(), Some("401 Unauthorized".into())));
    // Nothing else happens: the client hears nothing until it asks again.
    let ping = r#"{"sylkrtc":"ping","transaction":"p"}"#;
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(ws.request(ping), r#"{"sylkrtc":"ack","transaction":"p"}"#, "an event came after `failed`");
    assert!(kam.binding("alice").is_none());
    kam.stop();
}

/// kamailio challenging with SHA-256: an account given its clear password registers (an MD5
/// HA1 cannot answer a SHA-256 challenge).
#[test]
fn kamailio_sha256() {
    if !in_netns("kamailio_sha256") {
        return;
    }
    let work = TempDir::new("gw-kam-sha");
    let kam = Kamailio::start(work.path(), KamailioOpts::with_algorithm(DigestAlgorithm::Sha256));
    let gw = gateway("sylkgw-mio", &["--outbound-proxy", &kam.addr().to_string()]);
    let mut ws = WsClient::ready(&gw);
    ws.add_and_register("alice@127.0.0.1", "secret");
    assert_eq!(ws.next_registration_state(), ("registered".into(), None), "gateway log:\n{}", gw.stderr_text());
    kam.wait_binding("alice", STEP);
    kam.stop();
}

/// The sipp stub registrar (`reg_auth_uas.xml`, realm `sipp.test`) over UDP and TCP.
fn sipp_stub(transport: Transport) {
    let work = TempDir::new("gw-sipp");
    let stub_addr: std::net::SocketAddr = "127.0.0.1:5090".parse().unwrap();
    let mut stub = Sipp::stub_registrar(work.path(), stub_addr, 1).transport(transport).spawn();
    stub.wait_bound(STEP);
    let proxy = match transport {
        Transport::Udp => stub_addr.to_string(),
        Transport::Tcp => format!("{stub_addr};transport=tcp"),
    };
    let gw = gateway("sylkgw-mio", &["--outbound-proxy", &proxy]);
    let mut ws = WsClient::ready(&gw);
    ws.add_and_register("alice@sipp.test", &ha1("alice", "sipp.test", "secret"));
    assert_eq!(ws.next_registration_state(), ("registered".into(), None), "gateway log:\n{}", gw.stderr_text());
    let outcome = stub.wait(STEP);
    outcome.assert_success();
}

#[test]
fn sipp_stub_udp() {
    if in_netns("sipp_stub_udp") {
        sipp_stub(Transport::Udp);
    }
}

#[test]
fn sipp_stub_tcp() {
    if in_netns("sipp_stub_tcp") {
        sipp_stub(Transport::Tcp);
    }
}
