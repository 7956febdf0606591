//! Cleanup under churn, end to end: WebSockets connect, register through kamailio, call sipp and
//! each other, hang up, or vanish (no close frame; FIN or RST) mid-call, mid-registration, while
//! a call rings and while an incoming call is offered (`sylkgw_tests::churn`). Afterwards the
//! gateway's `--stats-interval` line must show every table back at 0 (connections, accounts,
//! registrations, transactions, flows, RTP pairs, calls, SIP legs) and timers and open fds back
//! at their values before the churn, and kamailio's location table must be empty (every
//! registration ended with `Expires: 0`). Each test runs in its own network namespace.
//!
//! `unregister_waits_for_register_in_flight_*`: the `Expires: 0` of a WebSocket that vanished
//! while its REGISTER was in flight waits for that REGISTER's final response (RFC 3261 §10.2).

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use sylkgw_tests::churn::{at_baseline, first_stats, vanish, wait_baseline, Round, Scene, USERS};
use sylkgw_tests::netns::{in_netns, in_netns_with_timeout};
use sylkgw_tests::peers::{SipMessage, SipUdp};
use sylkgw_tests::sip_text::{header, response};
use sylkgw_tests::{binary, ha1, Server, TempDir, WsClient};

/// Rounds per test: every kind of [`Round`] three times.
const ROUNDS: usize = 3 * Round::ALL.len();
/// Transactions linger after their final response (timer J/K up to 64·T1 = 32 s on UDP), so
/// the tables may take that long to empty.
const SETTLE: Duration = Duration::from_secs(45);

fn churn(bin: &str, extra: &[&str]) {
    let work = TempDir::new("churn");
    let scene = Scene::start(work.path(), &binary(bin), extra, Duration::from_secs(240));
    let baseline = scene
        .wait_stats(Duration::from_secs(10), |s| s["connections"] == 0)
        .unwrap_or_else(|last| panic!("no idle stats line; last {last:?}\n{}", scene.gw.stderr_text()));
    eprintln!("[churn] baseline {baseline}");
    let t0 = Instant::now();
    for i in 0..ROUNDS {
        let round = Round::ALL[i % Round::ALL.len()];
        scene.round(round, USERS[i % 2]);
    }
    eprintln!("[churn] {ROUNDS} rounds in {:.1} s", t0.elapsed().as_secs_f64());
    // The stats follow the churn: its transactions linger (timer J/K) past the next line.
    let busy = scene
        .wait_stats(Duration::from_secs(5), |s| s["sip_transactions"].as_u64() > Some(0))
        .unwrap_or_else(|last| panic!("the stats lines do not show the churn: {last:?}"));
    eprintln!("[churn] after the rounds {busy}");
    let end = scene.wait_stats(SETTLE, |s| at_baseline(s, &baseline)).unwrap_or_else(|last| {
        panic!("tables/fds not back to the baseline {baseline} within {SETTLE:?}: last {last:?}")
    });
    eprintln!("[churn] settled {end}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !scene.bindings().is_empty() {
        assert!(Instant::now() < deadline, "kamailio still has bindings: {:?}", scene.bindings());
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = scene.kam.log_text();
    let count = |what: &str| log.matches(&format!("REQ {what} ")).count();
    let (reg, inv, bye, cancel) = (count("REGISTER"), count("INVITE"), count("BYE"), count("CANCEL"));
    eprintln!("[churn] kamailio saw {reg} REGISTER, {inv} INVITE, {bye} BYE, {cancel} CANCEL");
    // Per cycle of the five kinds: 3 calls out (the incoming one counts twice: in and out), 2
    // BYEs (hang-up, vanished mid-call), 1 CANCEL (vanished while ringing).
    let cycles = ROUNDS / Round::ALL.len();
    assert!(cancel >= cycles, "each call vanished while ringing was cancelled");
    assert!(bye >= 2 * cycles, "hang-ups and calls vanished mid-call ended with BYE");
    scene.stop();
}

#[test]
fn churn_cleans_up_mio() {
    if in_netns_with_timeout("churn_cleans_up_mio", Duration::from_secs(240)) {
        churn("sylkgw-mio", &[]);
    }
}

#[test]
fn churn_cleans_up_tokio_two_workers() {
    if in_netns_with_timeout("churn_cleans_up_tokio_two_workers", Duration::from_secs(240)) {
        churn("sylkgw", &["--threads", "2"]);
    }
}

/// A response to `req` with a To tag.
fn reply(req: &SipMessage, code: u16, reason: &str, extra: &str) -> String {
    response(&req.text, code, reason, &format!("{};tag=reg", header(&req.text, "To")), extra, "")
}

/// Found by the soak: a WebSocket that vanished while its REGISTER was in flight made the gateway
/// send the `Expires: 0` REGISTER at once, before the first was answered. RFC 3261 §10.2 forbids
/// that, and a registrar that handles requests in parallel (kamailio's UDP workers) can apply the
/// first after the second: the binding then stays until it expires, and kamailio forks calls for
/// that user to it. The un-REGISTER must wait for the final response to the REGISTER in flight.
fn unregister_waits_for_register_in_flight(bin: &str) {
    let registrar = SipUdp::bind_addr(SocketAddr::from(([127, 0, 0, 1], 5060))).expect("registrar socket");
    let mut args =
        vec!["--sip-listen", "127.0.0.1:5080", "--outbound-proxy", "127.0.0.1:5060", "--stats-interval", "1"];
    if bin == "sylkgw" {
        args.extend(["--threads", "1"]);
    }
    let gw = Server::start(binary(bin), &args);
    let baseline = first_stats(&gw, Duration::from_secs(5));
    let mut ws = WsClient::ready(&gw);
    ws.add_and_register("alice@127.0.0.1", &ha1("alice", "127.0.0.1", "secret"));
    let (first, from) = registrar.recv_from(Duration::from_secs(5)).expect("the REGISTER");
    assert!(first.start_line().starts_with("REGISTER "), "{}", first.text);
    vanish(ws, true);
    // Until it is answered, only retransmissions of the first REGISTER may come (timer E).
    let branch = first.header("Via").unwrap_or_default().to_string();
    let quiet_until = Instant::now() + Duration::from_millis(1500);
    while let Some(m) = registrar.recv(quiet_until.saturating_duration_since(Instant::now())) {
        assert_eq!(m.header("Via"), Some(branch.as_str()), "a new REGISTER while the first is in flight:\n{}", m.text);
    }
    let contact = first.header("Contact").unwrap_or_default().to_string();
    registrar.send_to(&reply(&first, 200, "OK", &format!("Contact: {contact};expires=600\r\n")), from).unwrap();
    // Now the binding it may have made is removed.
    let unreg = loop {
        let m = registrar.recv(Duration::from_secs(5)).expect("the un-REGISTER after the 200");
        if m.header("Via") != Some(branch.as_str()) {
            break m;
        }
    };
    let text = unreg.text.to_ascii_lowercase();
    assert!(
        text.starts_with("register ") && (text.contains("expires: 0") || text.contains("expires=0")),
        "{}",
        unreg.text
    );
    registrar.send_to(&reply(&unreg, 200, "OK", ""), from).unwrap();
    wait_baseline(&gw, &baseline, Duration::from_secs(40));
}

#[test]
fn unregister_waits_for_register_in_flight_mio() {
    if in_netns("unregister_waits_for_register_in_flight_mio") {
        unregister_waits_for_register_in_flight("sylkgw-mio");
    }
}

#[test]
fn unregister_waits_for_register_in_flight_tokio() {
    if in_netns("unregister_waits_for_register_in_flight_tokio") {
        unregister_waits_for_register_in_flight("sylkgw");
    }
}
