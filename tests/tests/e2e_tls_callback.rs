//! The SIP TLS listener advertised (issue #15, docs/carrier-sip.md "SIP TLS listener"): alice
//! registers through a TLS outbound proxy (the test's registrar) with `--sip-tls-listen`; her
//! REGISTER's Via and Contact name the TLS listener (`;transport=tls`, its port), so the peer
//! calls back by opening a new TLS connection to that Contact: its MESSAGE reaches alice's
//! WebSocket and is answered over the new connection. Both binaries, each in its own network
//! namespace with only loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use sylkgw_tests::netns::in_netns;
use sylkgw_tests::tls_registrar::{next_message, TlsRegistrar};
use sylkgw_tests::{binary, ha1, tls_offer, SelfSigned, Server, WsClient};

const STEP: Duration = Duration::from_secs(10);
const TLS_LISTEN: &str = "127.0.0.1:5081";

fn tls_callback(bin: &str) {
    let reg = TlsRegistrar::start("127.0.0.1:5061".parse().unwrap());
    let cert = SelfSigned::generate();
    let ca = reg.ca_path().display().to_string();
    let mut args: Vec<String> = ["--sip-listen", "127.0.0.1:5080", "--sip-tls-listen", TLS_LISTEN]
        .into_iter()
        .chain(["--outbound-proxy", "127.0.0.1:5061;transport=tls", "--sip-tls-ca-file", &ca])
        .map(String::from)
        .collect();
    args.extend(cert.args());
    if bin == "sylkgw" {
        args.extend(["--threads".to_string(), "1".to_string()]);
    }
    let gw = Server::start(binary(bin), &args);
    let mut ws = WsClient::connect(&gw, tls_offer(&cert, "sylkRTC-2")).expect("wss");
    assert_eq!(ws.recv_text(), r#"{"sylkrtc":"ready-event"}"#);
    ws.add_and_register("alice@sip.test", &ha1("alice", "sip.test", "secret"));
    assert_eq!(ws.next_registration_state(), ("registered".into(), None), "gateway log:\n{}", gw.stderr_text());

    let got = reg.received();
    let register = got.iter().rev().find(|r| r.message.start_line().starts_with("REGISTER ")).expect("a REGISTER");
    let via = register.message.header("Via").unwrap_or_default().to_string();
    assert!(via.starts_with(&format!("SIP/2.0/TLS {TLS_LISTEN};")), "Via names the TLS listener: {via}");
    let contact = register.message.header("Contact").unwrap_or_default().to_string();
    assert!(contact.contains(&format!("@{TLS_LISTEN};transport=tls")), "Contact names the TLS listener: {contact}");
    let uri = contact.trim_start_matches('<').split('>').next().unwrap_or_default().to_string();

    // The peer calls back: a new TLS connection to the Contact's address.
    let to: SocketAddr = TLS_LISTEN.parse().unwrap();
    let tcp = TcpStream::connect_timeout(&to, STEP).expect("connect to the advertised TLS listener");
    tcp.set_read_timeout(Some(STEP)).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let session = rustls::ClientConnection::new(cert.client_config(), name).expect("client session");
    let mut tls = rustls::StreamOwned::new(session, tcp);
    let local = tls.sock.local_addr().unwrap();
    let body = "hello over TLS";
    let message = format!(
        "MESSAGE {uri} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bKcb1\r\nMax-Forwards: 70\r\n\
         From: <sip:bob@sip.test>;tag=b1\r\nTo: <sip:alice@sip.test>\r\nCall-ID: callback-1@peer\r\n\
         CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(message.as_bytes()).expect("TLS write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    let answer = loop {
        if let Some(m) = next_message(&mut buf) {
            if !m.start_line().starts_with("SIP/2.0 1") {
                break m;
            }
            continue;
        }
        let n = tls.read(&mut chunk).unwrap_or_else(|e| panic!("TLS read: {e}\n{}", gw.stderr_text()));
        assert!(n > 0, "closed:\n{}", gw.stderr_text());
        buf.extend_from_slice(&chunk[..n]);
    };
    assert!(answer.start_line().starts_with("SIP/2.0 200"), "{}", answer.text);
    assert!(answer.header("Via").is_some_and(|v| v.contains("branch=z9hG4bKcb1")), "{}", answer.text);
    let deadline = Instant::now() + STEP;
    loop {
        let text = ws.recv_text();
        if text.contains(body) {
            break;
        }
        assert!(Instant::now() < deadline, "the MESSAGE did not reach alice's WebSocket");
    }
}

#[test]
fn tls_peer_calls_back_to_the_advertised_listener_mio() {
    if in_netns("tls_peer_calls_back_to_the_advertised_listener_mio") {
        tls_callback("sylkgw-mio");
    }
}

#[test]
fn tls_peer_calls_back_to_the_advertised_listener_tokio() {
    if in_netns("tls_peer_calls_back_to_the_advertised_listener_tokio") {
        tls_callback("sylkgw");
    }
}
