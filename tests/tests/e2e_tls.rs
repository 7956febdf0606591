//! SIP over TLS as a client (RFC 3261 §26.3.1, RFC 5922): the gateway registers through a TLS
//! outbound proxy, the test's own registrar ([`sylkgw_tests::tls_registrar`]), verifying its
//! certificate against `--sip-tls-ca-file`. Every test runs in its own network namespace with
//! only loopback.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use sylkgw_tests::netns::in_netns;
use sylkgw_tests::tls_registrar::TlsRegistrar;
use sylkgw_tests::{binary, ha1, Server, WsClient};

const STEP: Duration = Duration::from_secs(10);
const PROXY: &str = "127.0.0.1:5061;transport=tls";

fn registrar_addr() -> SocketAddr {
    "127.0.0.1:5061".parse().unwrap()
}

fn gateway(bin: &str, ca_file: &str) -> Server {
    let mut args = vec!["--sip-listen", "127.0.0.1:5080", "--outbound-proxy", PROXY, "--sip-tls-ca-file", ca_file];
    if bin == "sylkgw" {
        args.extend(["--threads", "1"]);
    }
    Server::start(binary(bin), &args)
}

/// Waits until the gateway's log has a line containing all of `needles`.
fn wait_log(gw: &Server, needles: &[&str]) {
    let deadline = Instant::now() + STEP;
    while !gw.stderr_text().lines().any(|l| needles.iter().all(|n| l.contains(n))) {
        assert!(Instant::now() < deadline, "no log line with {needles:?}; gateway log:\n{}", gw.stderr_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn add_and_register(ws: &mut WsClient) {
    ws.add_and_register("alice@sip.test", &ha1("alice", "sip.test", "secret"));
}

/// alice registers over TLS (401 challenge, then 200); closing the WebSocket un-REGISTERs over
/// the same TLS connection.
fn tls_register(bin: &str) {
    let reg = TlsRegistrar::start(registrar_addr());
    let gw = gateway(bin, &reg.ca_path().display().to_string());
    let mut ws = WsClient::ready(&gw);
    add_and_register(&mut ws);
    assert_eq!(ws.next_registration_state(), ("registered".into(), None), "gateway log:\n{}", gw.stderr_text());

    let got = reg.received();
    let registers: Vec<_> = got.iter().filter(|r| r.message.start_line().starts_with("REGISTER ")).collect();
    assert_eq!(registers.iter().map(|r| r.answered).collect::<Vec<_>>(), [401, 200], "{got:#?}");
    for r in &registers {
        assert_eq!(r.connection, 0, "one TLS connection: {got:#?}");
        // The proxy is an IP literal: no SNI (RFC 6066 §3), the IP address SAN was verified.
        assert!(r.sni.is_none() || r.sni.as_deref() == Some("127.0.0.1"), "SNI {:?}", r.sni);
        let via = r.message.header("Via").unwrap_or_default();
        assert!(via.starts_with("SIP/2.0/TLS "), "Via {via}");
        let contact = r.message.header("Contact").unwrap_or_default();
        assert!(contact.contains(";transport=tls"), "Contact {contact}");
        let route = r.message.header("Route").unwrap_or_default();
        assert!(route.contains("transport=tls"), "Route {route}");
    }
    assert!(registers[1].message.header("Authorization").is_some());
    assert_eq!(reg.connections(), 1);
    assert!(reg.tls_errors().is_empty(), "{:?}", reg.tls_errors());

    ws.close();
    let unreg = reg.wait_for("un-REGISTER answered 200", STEP, |r| r.is_unregister() && r.answered == 200);
    assert_eq!(unreg.connection, 0, "the un-REGISTER reuses the TLS connection");
    assert_eq!(reg.connections(), 1);
    wait_log(&gw, &["SIP TLS to 127.0.0.1", "up"]);
}

#[test]
fn tls_register_mio() {
    if in_netns("tls_register_mio") {
        tls_register("sylkgw-mio");
    }
}

#[test]
fn tls_register_tokio() {
    if in_netns("tls_register_tokio") {
        tls_register("sylkgw");
    }
}

/// The CA file does not hold the registrar's certificate: the handshake fails, the registration
/// is `failed` at once (no hang), nothing SIP reaches the registrar, and the gateway logs the
/// TLS error.
fn tls_untrusted(bin: &str) {
    let reg = TlsRegistrar::start(registrar_addr());
    let other = TlsRegistrar::start("127.0.0.1:0".parse().unwrap());
    let gw = gateway(bin, &other.ca_path().display().to_string());
    let mut ws = WsClient::ready(&gw);
    let start = Instant::now();
    add_and_register(&mut ws);
    assert_eq!(ws.next_registration_state(), ("failed".into(), Some("503 Service Unavailable".into())));
    assert!(start.elapsed() < STEP, "failing took {:?}", start.elapsed());
    let error = reg.wait_tls_error(STEP);
    assert!(error.to_ascii_lowercase().contains("alert"), "registrar's TLS error: {error}");
    assert!(reg.received().is_empty(), "{:#?}", reg.received());
    wait_log(&gw, &["SIP TLS to 127.0.0.1", "failed", "invalid peer certificate"]);
}

#[test]
fn tls_untrusted_mio() {
    if in_netns("tls_untrusted_mio") {
        tls_untrusted("sylkgw-mio");
    }
}

#[test]
fn tls_untrusted_tokio() {
    if in_netns("tls_untrusted_tokio") {
        tls_untrusted("sylkgw");
    }
}
