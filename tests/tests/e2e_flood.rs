//! A SIP flood does not starve the gateway (#10): while 20,000 unauthenticated OPTIONS arrive
//! over UDP from one address, a WebSocket user registers through kamailio, unregisters and
//! registers again. Runs in its own network namespace with only loopback; the flood goes from
//! 127.0.0.2 to the gateway's SIP port on 127.0.0.1, bounded in count, and stops by itself.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sylkgw_tests::netns::in_netns;
use sylkgw_tests::peers::{Kamailio, KamailioOpts};
use sylkgw_tests::{binary, ha1, Server, TempDir, WsClient};

const STEP: Duration = Duration::from_secs(10);
const GATEWAY_SIP: &str = "127.0.0.1:5080";
const FLOOD: usize = 20_000;

/// Sends `FLOOD` OPTIONS (each its own transaction) from 127.0.0.2 within about two seconds;
/// returns how many answers came back.
fn flood(done: Arc<AtomicBool>) -> usize {
    let sock = UdpSocket::bind("127.0.0.2:0").expect("bind the flooder on loopback");
    sock.set_nonblocking(true).unwrap();
    let port = sock.local_addr().unwrap().port();
    let mut answers = 0;
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    for i in 0..FLOOD {
        let msg = format!(
            "OPTIONS sip:gw@{GATEWAY_SIP} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:{port};branch=z9hG4bKflood{i}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:flood@127.0.0.2>;tag=f{i}\r\nTo: <sip:gw@127.0.0.1>\r\n\
             Call-ID: flood-{i}@127.0.0.2\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        let _ = sock.send_to(msg.as_bytes(), GATEWAY_SIP);
        while sock.recv(&mut buf).is_ok() {
            answers += 1;
        }
        // About 10,000 a second: the flood overlaps the registration.
        if i % 100 == 99 {
            let due = Duration::from_millis((i as u64 + 1) / 10);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        match sock.recv(&mut buf) {
            Ok(_) => answers += 1,
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    done.store(true, Ordering::SeqCst);
    answers
}

fn register_during_flood(bin: &str) {
    let work = TempDir::new("gw-flood");
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    let mut args = vec!["--sip-listen", GATEWAY_SIP];
    if bin == "sylkgw" {
        args.extend(["--threads", "1"]);
    }
    let proxy = kam.addr().to_string();
    args.extend(["--outbound-proxy", &proxy]);
    let gw = Server::start(binary(bin), &args);
    let mut ws = WsClient::ready(&gw);
    let done = Arc::new(AtomicBool::new(false));
    let flooder = {
        let done = done.clone();
        std::thread::spawn(move || flood(done))
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(!done.load(Ordering::SeqCst), "the flood is still going when the user registers");
    ws.add_and_register("alice@127.0.0.1", &ha1("alice", "127.0.0.1", "secret"));
    assert_eq!(ws.next_registration_state(), ("registered".into(), None), "gateway log:\n{}", gw.stderr_text());
    kam.wait_binding("alice", STEP);
    let unreg = r#"{"sylkrtc":"account-unregister","transaction":"u","account":"alice@127.0.0.1"}"#;
    assert_eq!(ws.request(unreg), r#"{"sylkrtc":"ack","transaction":"u"}"#);
    kam.wait_no_binding("alice", STEP);
    let reg = r#"{"sylkrtc":"account-register","transaction":"r2","account":"alice@127.0.0.1"}"#;
    assert_eq!(ws.request(reg), r#"{"sylkrtc":"ack","transaction":"r2"}"#);
    assert_eq!(ws.next_registration_state(), ("registering".into(), None));
    assert_eq!(ws.next_registration_state(), ("registered".into(), None), "gateway log:\n{}", gw.stderr_text());
    kam.wait_binding("alice", STEP);
    let answers = flooder.join().expect("the flooder");
    assert!(answers > 0, "the flood reached the gateway");
    assert!(answers < FLOOD, "the per-source budget cut the flood ({answers} answers)");
    ws.close();
    kam.wait_no_binding("alice", STEP);
    kam.stop();
}

#[test]
fn register_during_flood_mio() {
    if in_netns("register_during_flood_mio") {
        register_during_flood("sylkgw-mio");
    }
}

#[test]
fn register_during_flood_tokio() {
    if in_netns("register_during_flood_tokio") {
        register_during_flood("sylkgw");
    }
}
