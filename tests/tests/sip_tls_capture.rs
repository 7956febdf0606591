//! SIP over TLS through the whole core, in memory: the gateway registers through a TLS
//! outbound proxy played by a rustls server and the test registrar's logic, and the capture of
//! the run, taken above TLS, replays identically on a plain core. The same for a handshake that
//! fails (untrusted certificate), which a capture records as the stream going away.

#![allow(clippy::disallowed_methods)] // Instant::now is only the epoch

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use sylkgw_core::config::{PemBundle, SipConfig};
use sylkgw_core::drive::UdpPurpose;
use sylkgw_core::sip::digest::Algorithm;
use sylkgw_core::{capture, Config, ConnId, Gateway, Input, Listener, Output, SocketId};
use sylkgw_kit::{client_text_frame, UPGRADE_V2};
use sylkgw_tests::tls_registrar::{answer, next_message};

const UNIX: Duration = Duration::from_secs(1_767_225_600);
const PROXY: &str = "192.0.2.5:5061";

use sylkgw_kit::drain_outputs as drain;

/// A self-signed certificate for `names`: (PEM, server configuration).
fn server(names: &[&str]) -> (String, Arc<rustls::ServerConfig>) {
    let ck = rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    (ck.cert.pem(), Arc::new(config))
}

/// The gateway with a WebSocket client that added and registered alice@sip.test; returns the
/// outputs of the register request.
fn start(ca_pem: Option<String>, t0: Instant) -> (Gateway, Vec<Output>) {
    let sip = SipConfig {
        listen: "192.0.2.1:5060".parse().unwrap(),
        outbound_sip_proxy: Some(format!("{PROXY};transport=tls")),
        tls_ca_pem: ca_pem.map(|p| PemBundle(p.into_bytes().into())),
        ..SipConfig::default()
    };
    let config = Config { sip, capture: true, ..Config::default() };
    let mut gw = Gateway::new(config, [9; 32], t0, UNIX).unwrap();
    drain(&mut gw);
    let local: SocketAddr = "192.0.2.1:5060".parse().unwrap();
    gw.handle_input(t0, Input::UdpBound { socket: SocketId(0), purpose: UdpPurpose::Sip, local });
    drain(&mut gw);
    let ws = ConnId(1);
    gw.handle_input(
        t0,
        Input::Accepted { conn: ws, listener: Listener::Web, peer: "192.0.2.10:5000".parse().unwrap() },
    );
    drain(&mut gw);
    gw.handle_input(t0, Input::StreamData { conn: ws, data: UPGRADE_V2.as_bytes() });
    drain(&mut gw);
    let ha1 = Algorithm::Md5.hash_hex(b"alice:sip.test:secret");
    let add = format!(r#"{{"sylkrtc":"account-add","transaction":"1","account":"alice@sip.test","password":"{ha1}"}}"#);
    gw.handle_input(t0, Input::StreamData { conn: ws, data: &client_text_frame(&add) });
    drain(&mut gw);
    let reg = r#"{"sylkrtc":"account-register","transaction":"2","account":"alice@sip.test"}"#;
    gw.handle_input(t0, Input::StreamData { conn: ws, data: &client_text_frame(reg) });
    let out = drain(&mut gw);
    (gw, out)
}

/// The SIP connection the gateway opened to the proxy.
fn connect_of(out: &[Output]) -> ConnId {
    out.iter()
        .find_map(|o| match o {
            Output::Connect { conn, to } if to.to_string() == PROXY => Some(*conn),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Connect to {PROXY}: {out:?}"))
}

/// Runs the server side of `conn`: TLS records between the gateway and a rustls server, SIP
/// requests answered by the registrar logic, until nothing moves. Returns the statuses sent.
fn serve(
    gw: &mut Gateway,
    conn: ConnId,
    srv: &mut rustls::ServerConnection,
    out: Vec<Output>,
    at: Instant,
) -> Vec<u16> {
    let users = vec![("alice".to_string(), "secret".to_string())];
    let (mut pending, mut plain, mut statuses) = (out, Vec::new(), Vec::new());
    for _ in 0..50 {
        let mut to_server = Vec::new();
        for o in pending.drain(..) {
            if let Output::StreamWrite { conn: c, data } = o {
                if c == conn {
                    to_server.extend_from_slice(&data);
                }
            }
        }
        let mut rd = &to_server[..];
        while !rd.is_empty() {
            srv.read_tls(&mut rd).unwrap();
            if srv.process_new_packets().is_err() {
                break;
            }
        }
        let _ = srv.reader().read_to_end(&mut plain);
        while let Some(m) = next_message(&mut plain) {
            let (status, resp) = answer(&users, &m);
            statuses.push(status);
            if let Some(r) = resp {
                srv.writer().write_all(r.as_bytes()).unwrap();
            }
        }
        let mut to_client = Vec::new();
        while srv.wants_write() {
            srv.write_tls(&mut to_client).unwrap();
        }
        if to_server.is_empty() && to_client.is_empty() {
            break;
        }
        if !to_client.is_empty() {
            gw.handle_input(at, Input::StreamData { conn, data: &to_client });
            pending = drain(gw);
        }
    }
    statuses
}

/// `direction verb` of the capture lines of `conn`.
fn verbs(text: &str, conn: ConnId) -> Vec<String> {
    let id = conn.to_string();
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 4 && f[2] == id)
        .map(|f| format!("{} {}", f[1], f[3]))
        .collect()
}

fn replays_identically(gw: &mut Gateway) -> String {
    let text = gw.take_capture();
    let cap = capture::parse(&text).unwrap();
    let replayed = capture::replay(&cap, Instant::now()).unwrap();
    assert_eq!(replayed, text, "the capture of a SIP TLS session does not replay identically");
    text
}

#[test]
fn registration_over_tls_replays_as_plaintext() {
    let t0 = Instant::now();
    let (ca, server_config) = server(&["192.0.2.5"]);
    let (mut gw, out) = start(Some(ca), t0);
    let conn = connect_of(&out);
    let t1 = t0 + Duration::from_millis(3);
    gw.handle_input(t1, Input::Connected { conn, result: Ok(()) });
    let out = drain(&mut gw);
    let mut srv = rustls::ServerConnection::new(server_config).unwrap();
    let t2 = t1 + Duration::from_millis(4);
    assert_eq!(serve(&mut gw, conn, &mut srv, out, t2), [401, 200]);
    // The registrar ends the session with close_notify: the flow is lost (TLS-level close).
    srv.send_close_notify();
    let mut records = Vec::new();
    while srv.wants_write() {
        srv.write_tls(&mut records).unwrap();
    }
    let t3 = t2 + Duration::from_secs(1);
    gw.handle_input(t3, Input::StreamData { conn, data: &records });
    let out = drain(&mut gw);
    assert!(matches!(out.last(), Some(Output::StreamClose { conn: c }) if *c == conn), "{out:?}");

    let text = replays_identically(&mut gw);
    // Plaintext only, as on a plain TCP flow: the handshake is not in the capture.
    assert_eq!(
        verbs(&text, conn),
        ["< connect", "> connected", "< sip", "> sip", "< sip", "> sip", "> closed"],
        "{text}"
    );
    let id = conn.to_string();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(&id)).collect();
    assert!(lines[2].contains(r#""REGISTER sip:sip.test SIP/2.0\r\nVia: SIP/2.0/TLS"#), "{}", lines[2]);
    assert!(lines[3].contains("SIP/2.0 401 Unauthorized"), "{}", lines[3]);
    assert!(lines[5].contains("SIP/2.0 200 OK"), "{}", lines[5]);
    let zeroed = format!(r#"response=\"{}\""#, "0".repeat(32));
    assert!(lines[4].contains(&zeroed), "the digest response is redacted: {}", lines[4]);
    assert!(text.contains(r#""state":"registered""#), "{text}");
}

#[test]
fn failed_handshake_replays() {
    let t0 = Instant::now();
    let (_, server_config) = server(&["192.0.2.5"]);
    let (other_ca, _) = server(&["192.0.2.5"]);
    let (mut gw, out) = start(Some(other_ca), t0);
    let conn = connect_of(&out);
    gw.handle_input(t0, Input::Connected { conn, result: Ok(()) });
    let out = drain(&mut gw);
    let mut srv = rustls::ServerConnection::new(server_config).unwrap();
    assert!(serve(&mut gw, conn, &mut srv, out, t0).is_empty());
    let text = replays_identically(&mut gw);
    // What was queued is handed to TLS when the connection is up; the failure below SIP is the
    // stream going away.
    assert_eq!(verbs(&text, conn), ["< connect", "> connected", "< sip", "> closed"], "{text}");
    assert!(text.contains(r#""reason":"503 Service Unavailable""#), "{text}");
}

/// No trust roots: the flow fails as soon as the connection is up, which replays too.
#[test]
fn no_trust_roots_replays() {
    let t0 = Instant::now();
    let (mut gw, out) = start(None, t0);
    let conn = connect_of(&out);
    gw.handle_input(t0 + Duration::from_millis(2), Input::Connected { conn, result: Ok(()) });
    let out = drain(&mut gw);
    assert!(
        matches!(&out[..], [Output::StreamClose { conn: c }, ..] if *c == conn),
        "closed without a TLS record: {out:?}"
    );
    let text = replays_identically(&mut gw);
    assert_eq!(verbs(&text, conn), ["< connect", "> connected", "< sip", "> closed"], "{text}");
    assert!(text.contains(r#""reason":"503 Service Unavailable""#), "{text}");
}

/// The SIP TLS listener (`sip.tls_listen`): a TLS peer connects, its OPTIONS arrives above TLS
/// and the 200 goes back encrypted on the same connection; the capture (`accept sip-tls`, the
/// plaintext SIP only) replays identically on a plain core.
#[test]
fn accepted_tls_flow_replays_as_plaintext() {
    let t0 = Instant::now();
    let ck = rcgen::generate_simple_self_signed(vec!["192.0.2.1".to_string()]).unwrap();
    let tls = sylkgw_core::config::TlsConfig {
        cert_pem: ck.cert.pem().into_bytes(),
        key_pem: ck.signing_key.serialize_pem().into_bytes(),
    };
    let sip = SipConfig {
        listen: "192.0.2.1:5060".parse().unwrap(),
        tls_listen: Some("192.0.2.1:5061".parse().unwrap()),
        ..SipConfig::default()
    };
    let config = Config { sip, tls: Some(tls), capture: true, ..Config::default() };
    let mut gw = Gateway::new(config, [9; 32], t0, UNIX).unwrap();
    drain(&mut gw);
    let local: SocketAddr = "192.0.2.1:5060".parse().unwrap();
    gw.handle_input(t0, Input::UdpBound { socket: SocketId(0), purpose: UdpPurpose::Sip, local });
    drain(&mut gw);
    let conn = ConnId(3);
    let peer: SocketAddr = "192.0.2.9:40000".parse().unwrap();
    // One instant from the accept on: the handshake records are below the capture, so a
    // deadline they alone moved could not be replayed.
    let at = t0 + Duration::from_millis(2);
    gw.handle_input(at, Input::Accepted { conn, listener: Listener::SipTls, peer });
    assert!(drain(&mut gw).iter().all(|o| !matches!(o, Output::StreamClose { .. })), "accepted");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("192.0.2.1").unwrap();
    let mut cli = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
    let options =
        "OPTIONS sip:192.0.2.1:5061;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.9:40000;branch=z9hG4bKo1\r\n\
                   Max-Forwards: 70\r\nFrom: <sip:peer@192.0.2.9>;tag=p1\r\nTo: <sip:192.0.2.1>\r\nCall-ID: o1@peer\r\n\
                   CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    cli.writer().write_all(options.as_bytes()).unwrap();
    let mut plain = Vec::new();
    for _ in 0..10 {
        let mut records = Vec::new();
        while cli.wants_write() {
            cli.write_tls(&mut records).unwrap();
        }
        if records.is_empty() {
            break;
        }
        gw.handle_input(at, Input::StreamData { conn, data: &records });
        for o in drain(&mut gw) {
            if let Output::StreamWrite { conn: c, data } = o {
                assert_eq!(c, conn);
                let mut rd = &data[..];
                while !rd.is_empty() {
                    cli.read_tls(&mut rd).unwrap();
                    cli.process_new_packets().unwrap();
                }
            }
        }
        let _ = cli.reader().read_to_end(&mut plain);
    }
    let answer = String::from_utf8_lossy(&plain);
    assert!(answer.starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS 192.0.2.9:40000;branch=z9hG4bKo1"), "{answer}");
    let text = replays_identically(&mut gw);
    assert_eq!(verbs(&text, conn), ["> accept", "> sip", "< sip"], "{text}");
    assert!(text.contains("accept   sip-tls 192.0.2.9:40000"), "{text}");
}
