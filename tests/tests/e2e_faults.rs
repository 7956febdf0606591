//! Faults, end to end, each test in its own network namespace (loopback only), every helper
//! process stopped by its PID:
//!
//! - the registrar stops while the account is registered: the refresh times out (`failed`
//!   `408 Request Timeout`) and, once kamailio is back, the retry registers it again;
//! - the registrar is down: over UDP the REGISTER times out (`failed` `408 Request Timeout`,
//!   timer F), over TCP the connection is refused (`failed` `503 Service Unavailable`); the
//!   gateway retries on its own with a doubling back-off (`register_retry_interval = 2` here:
//!   2, 4, 8 s), and once kamailio is back the account gets `registered` without the client
//!   doing anything;
//! - a SIP peer that never answers an INVITE: the INVITE is retransmitted (timer A) and after
//!   timer B (64·T1 = 32 s) the session ends with `terminated` `408 Request Timeout`; nothing is
//!   left in the core's tables afterwards.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sylkgw_tests::churn::{first_stats, wait_baseline, wait_for_within};
use sylkgw_tests::netns::in_netns_with_timeout;
use sylkgw_tests::peers::{Kamailio, KamailioOpts};
use sylkgw_tests::webrtc_client::{Video, WebRtcClient};
use sylkgw_tests::{binary, config_file, ha1, Server, TempDir, WsClient};

const ALICE: &str = "alice@127.0.0.1";

fn gateway(bin: &str, proxy: Option<&str>) -> (TempDir, Server) {
    let (dir, cfg) = config_file("register_retry_interval = 2\n");
    let mut args = vec!["--config", cfg.to_str().expect("utf-8 path"), "--sip-listen", "127.0.0.1:5080"];
    args.extend(["--stats-interval", "1", "--rtp-ports", "40000-40999", "--media-address", "127.0.0.1"]);
    if let Some(p) = proxy {
        args.extend(["--outbound-proxy", p]);
    }
    if bin == "sylkgw" {
        args.extend(["--threads", "1"]);
    }
    (dir, Server::start(binary(bin), &args))
}

/// The next `registration-state` (40 s at most: a UDP REGISTER times out after 32 s).
fn next_registration_state(ws: &mut WsClient) -> (String, Option<String>) {
    let e = wait_for_within(ws, "registration-state", Duration::from_secs(40), |e| e["event"] == "registration-state");
    (e["state"].as_str().unwrap_or_default().to_string(), e["reason"].as_str().map(String::from))
}

fn registrar_down_then_back(bin: &str, tcp: bool) {
    let work = TempDir::new("regdown");
    let proxy = if tcp { "127.0.0.1:5060;transport=tcp" } else { "127.0.0.1:5060" };
    let (_cfg, gw) = gateway(bin, Some(proxy));
    let mut ws = WsClient::ready(&gw);
    ws.add_and_register(ALICE, &ha1("alice", "127.0.0.1", "secret"));
    let mut failures = Vec::new();
    let expected = if tcp { "503 Service Unavailable" } else { "408 Request Timeout" };
    // UDP: one timer F (32 s) per attempt, so one failure is enough; TCP fails at once, so the
    // back-off itself is measured: 2, 4, 8 s between attempts.
    let wanted = if tcp { 4 } else { 1 };
    while failures.len() < wanted {
        let (state, reason) = next_registration_state(&mut ws);
        match state.as_str() {
            "failed" => {
                assert_eq!(reason.as_deref(), Some(expected), "gateway log:\n{}", gw.stderr_text());
                failures.push(Instant::now());
            }
            "registering" => {}
            other => panic!("unexpected {other} {reason:?} while the registrar is down"),
        }
    }
    for (i, pair) in failures.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let want = Duration::from_secs(2 << i);
        assert!(
            gap >= want - Duration::from_millis(300) && gap <= want + Duration::from_millis(1500),
            "retry {} came after {gap:?}, expected about {want:?}",
            i + 1
        );
    }
    eprintln!(
        "[faults] {} failure(s) at {:?}",
        failures.len(),
        failures.iter().map(|t| *t - failures[0]).collect::<Vec<_>>()
    );
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    registered_again(ws, kam, expected);
}

/// kamailio is back: the gateway's retries register the account again without the client doing
/// anything (a retry that raced kamailio's start may fail once more with `failure`); then the
/// binding is there, and closing the WebSocket removes it.
fn registered_again(mut ws: WsClient, kam: Kamailio, failure: &str) {
    let back = Instant::now();
    loop {
        let (state, reason) = next_registration_state(&mut ws);
        match state.as_str() {
            "registered" => break,
            "registering" => {}
            "failed" => assert_eq!(reason.as_deref(), Some(failure), "a retry that lost the race with kamailio"),
            other => panic!("unexpected {other} {reason:?} after kamailio came back"),
        }
    }
    eprintln!("[faults] registered again {:?} after kamailio came back", back.elapsed());
    kam.wait_binding("alice", Duration::from_secs(5));
    ws.close();
    kam.wait_no_binding("alice", Duration::from_secs(10));
    kam.stop();
}

#[test]
fn registrar_down_udp_times_out_and_recovers_mio() {
    if in_netns_with_timeout("registrar_down_udp_times_out_and_recovers_mio", Duration::from_secs(120)) {
        registrar_down_then_back("sylkgw-mio", false);
    }
}

#[test]
fn registrar_down_tcp_backs_off_and_recovers_tokio() {
    if in_netns_with_timeout("registrar_down_tcp_backs_off_and_recovers_tokio", Duration::from_secs(120)) {
        registrar_down_then_back("sylkgw", true);
    }
}

#[test]
fn registrar_down_tcp_backs_off_and_recovers_mio() {
    if in_netns_with_timeout("registrar_down_tcp_backs_off_and_recovers_mio", Duration::from_secs(120)) {
        registrar_down_then_back("sylkgw-mio", true);
    }
}

/// Registered (10 s asked, kamailio's `min_expires` lowered to 5), then kamailio stops: the
/// refresh (half-way) times out (`failed` `408 Request Timeout`); kamailio starts again and the
/// retry 2 s later registers the account again, without the client doing anything.
fn registrar_restarts(bin: &str) {
    let work = TempDir::new("regrestart");
    let opts =
        KamailioOpts { extra: vec![r#"modparam("registrar", "min_expires", 5)"#.into()], ..KamailioOpts::default() };
    let kam = Kamailio::start(work.path(), opts.clone());
    let (_cfg, cfg_path) = config_file("register_retry_interval = 2\nregister_ttl = 10\n");
    let mut args = vec!["--config", cfg_path.to_str().expect("utf-8 path"), "--sip-listen", "127.0.0.1:5080"];
    args.extend(["--outbound-proxy", "127.0.0.1:5060"]);
    if bin == "sylkgw" {
        args.extend(["--threads", "1"]);
    }
    let gw = Server::start(binary(bin), &args);
    let mut ws = WsClient::ready(&gw);
    ws.add_and_register(ALICE, &ha1("alice", "127.0.0.1", "secret"));
    assert_eq!(next_registration_state(&mut ws), ("registered".into(), None), "{}", gw.stderr_text());
    let b = kam.wait_binding("alice", Duration::from_secs(5));
    assert!(b.expires.is_some_and(|e| e <= 10), "granted 10 s: {b:?}");
    kam.stop();
    let down = Instant::now();
    assert_eq!(next_registration_state(&mut ws), ("failed".into(), Some("408 Request Timeout".into())));
    eprintln!("[faults] refresh failed {:?} after kamailio stopped", down.elapsed());
    let kam = Kamailio::start(work.path(), opts);
    registered_again(ws, kam, "408 Request Timeout");
}

#[test]
fn registrar_restarts_while_registered_mio() {
    if in_netns_with_timeout("registrar_restarts_while_registered_mio", Duration::from_secs(120)) {
        registrar_restarts("sylkgw-mio");
    }
}

/// A UDP "peer" on `addr` that reads and discards everything, counting INVITEs.
struct BlackHole {
    invites: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BlackHole {
    fn bind(addr: SocketAddr) -> Self {
        let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(100))).expect("read timeout");
        let (invites, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (i, s) = (Arc::clone(&invites), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    if buf[..n].starts_with(b"INVITE ") {
                        i.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Self { invites, stop, thread: Some(thread) }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn invite_never_answered(bin: &str) {
    let hole = BlackHole::bind(SocketAddr::from(([127, 0, 0, 1], 5099)));
    let (_cfg, gw) = gateway(bin, None);
    let baseline = first_stats(&gw, Duration::from_secs(5));
    let mut ws = WsClient::ready(&gw);
    let add = format!(r#"{{"sylkrtc":"account-add","transaction":"a","account":"{ALICE}","password":"x"}}"#);
    assert_eq!(ws.request(&add), r#"{"sylkrtc":"ack","transaction":"a"}"#);
    let offer = WebRtcClient::browser(Instant::now(), SocketAddr::from(([127, 0, 0, 1], 9)), Video::None)
        .offer(false)
        .expect("offer");
    let req = serde_json::json!({"sylkrtc": "session-create", "transaction": "c", "account": ALICE,
        "session": "s1", "uri": "sip:nobody@127.0.0.1:5099", "sdp": offer});
    let sent = Instant::now();
    assert_eq!(ws.request(&req.to_string()), r#"{"sylkrtc":"ack","transaction":"c"}"#);
    let t = wait_for_within(&mut ws, "terminated", Duration::from_secs(40), |e| {
        e["sylkrtc"] == "session-event" && (e["state"] == "terminated" || e["state"] == "accepted")
    });
    let after = sent.elapsed();
    assert_eq!(t["reason"], "408 Request Timeout", "{t}");
    assert!(after >= Duration::from_secs(31) && after <= Duration::from_secs(36), "timer B after {after:?}");
    // Timer A: sent at 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s.
    let invites = hole.invites.load(Ordering::Relaxed);
    assert_eq!(invites, 7, "INVITE and its six retransmissions");
    eprintln!("[faults] timer B: terminated after {after:?}, {invites} INVITEs");
    ws.close();
    let s = wait_baseline(&gw, &baseline, Duration::from_secs(10));
    eprintln!("[faults] back to the baseline {s}");
}

#[test]
fn invite_never_answered_times_out_mio() {
    if in_netns_with_timeout("invite_never_answered_times_out_mio", Duration::from_secs(90)) {
        invite_never_answered("sylkgw-mio");
    }
}

#[test]
fn invite_never_answered_times_out_tokio() {
    if in_netns_with_timeout("invite_never_answered_times_out_tokio", Duration::from_secs(90)) {
        invite_never_answered("sylkgw");
    }
}
