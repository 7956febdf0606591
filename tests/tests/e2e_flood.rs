//! One flood must not lock everyone out (issue #10). In a private network namespace: kamailio as
//! registrar and proxy, a sipp `-rtp_echo` UAS behind it, and the gateway, all on 127.0.0.1. A
//! flooder in the test process sends at least 20,000 unauthenticated out-of-dialog SIP requests
//! over UDP from one address, 127.0.0.2 (not the proxy's), to the gateway's SIP port (OPTIONS
//! mostly, plus INVITEs for unknown users, stray BYEs and MESSAGEs), paced at 2,000 a second, and
//! keeps flooding until the test is done. Once
//! 12,000 have gone out (more than `max_sip_transactions`, 10,000, and all within Timer J's
//! 32 s, which used to fill the shared transaction table), a WebSocket user registers through
//! kamailio and calls the echo with a str0m browser. Checked, while the flood still runs:
//! `registered`, the call `accepted` and `established` (ICE and DTLS up through the gateway's
//! WebRTC socket), the echoed RTP comes back, a `ping` is answered; afterwards the flood had
//! sent at least 20,000 requests and the call hangs up with `200 OK`.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use sylkgw_tests::churn::wait_for;
use sylkgw_tests::netns::in_netns_with_timeout;
use sylkgw_tests::peers::{Kamailio, KamailioOpts, Sipp};
use sylkgw_tests::webrtc_client::{config, Video, WebRtcClient};
use sylkgw_tests::{binary, ha1, Server, TempDir, WsClient};

/// Requests the flood sends at least.
const FLOOD_MIN: usize = 20_000;
/// Requests already sent before the user starts registering.
const FLOOD_BEFORE_USER: usize = 12_000;
/// The flood's bound, whatever happens (30 s at the pace below).
const FLOOD_MAX: usize = 60_000;
/// Requests per second.
const FLOOD_RATE: usize = 2_000;
const GW_SIP: u16 = 5080;
const STEP: Duration = Duration::from_secs(10);

/// Request `i` of the flood: unauthenticated, out of dialog, each a new transaction.
fn flood_request(i: usize, local: SocketAddr) -> String {
    let (method, extra, body) = match i % 10 {
        0 => ("INVITE", "Contact: <sip:flood@127.0.0.2>\r\nContent-Type: application/sdp\r\n", FLOOD_SDP),
        1 => ("BYE", "", ""),
        2 => ("MESSAGE", "Content-Type: text/plain\r\n", "hello"),
        _ => ("OPTIONS", "Accept: application/sdp\r\n", ""),
    };
    format!(
        "{method} sip:nobody{i}@127.0.0.1:{GW_SIP} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-flood-{i}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:flood@127.0.0.2>;tag=flood{i}\r\n\
         To: <sip:nobody{i}@127.0.0.1>\r\n\
         Call-ID: flood-{i}@127.0.0.2\r\n\
         CSeq: 1 {method}\r\n\
         {extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

const FLOOD_SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                         m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// The flooder: sends paced requests from one socket until `stop` (and at least [`FLOOD_MIN`]),
/// reading whatever the gateway answers so its replies never block it.
struct Flood {
    sent: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Flood {
    fn start(to: SocketAddr) -> Self {
        let sent = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, a, st) = (sent.clone(), answered.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.2:0").expect("flood socket on loopback");
            sock.set_nonblocking(true).expect("non-blocking");
            let local = sock.local_addr().expect("local");
            let start = Instant::now();
            let mut buf = [0u8; 4096];
            let mut i = 0;
            while i < FLOOD_MAX && !(i >= FLOOD_MIN && st.load(Ordering::Relaxed)) {
                let due = start + Duration::from_secs_f64(i as f64 / FLOOD_RATE as f64);
                let now = Instant::now();
                if now < due {
                    thread::sleep((due - now).min(Duration::from_millis(2)));
                } else {
                    // A full socket buffer is the flood's problem, not the test's: count it sent
                    // only when the kernel took it.
                    if sock.send_to(flood_request(i, local).as_bytes(), to).is_ok() {
                        i += 1;
                        s.store(i, Ordering::Relaxed);
                    }
                }
                while sock.recv_from(&mut buf).is_ok() {
                    a.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Self { sent, answered, stop, thread: Some(thread) }
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Asks the flood to end (once it has sent [`FLOOD_MIN`]) and waits for it.
    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("flood thread");
        }
        (self.sent(), self.answered.load(Ordering::Relaxed))
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn wait_sent(flood: &Flood, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while flood.sent() < n {
        assert!(Instant::now() < deadline, "the flood sent only {} of {n} requests in 30 s", flood.sent());
        thread::sleep(Duration::from_millis(20));
    }
}

/// Drives the browser over `sock` until `done` says so or `max` passes; returns whether `done`.
fn run_browser(
    browser: &mut WebRtcClient,
    sock: &UdpSocket,
    max: Duration,
    mut tick: impl FnMut(&mut WebRtcClient, Instant),
    done: impl Fn(&WebRtcClient) -> bool,
) -> bool {
    let mut wire = std::collections::VecDeque::new();
    let mut buf = [0u8; 2048];
    let local = sock.local_addr().expect("local");
    let end = Instant::now() + max;
    while Instant::now() < end {
        let now = Instant::now();
        browser.drain(now, Duration::ZERO, &mut wire);
        for d in wire.drain(..) {
            let _ = sock.send_to(&d.data, d.to);
        }
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            browser.receive(now, from, local, &buf[..n]).expect("str0m accepts the datagram");
            browser.drain(now, Duration::ZERO, &mut wire);
        }
        if now >= browser.timeout {
            browser.handle_timeout(now).expect("str0m timeout");
        }
        tick(browser, now);
        if done(browser) {
            return true;
        }
        thread::sleep(Duration::from_millis(1));
    }
    false
}

fn register_and_call_during_flood(bin: &str) {
    let work = TempDir::new("flood");
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    let mut echo = Sipp::echo_uas(work.path(), SocketAddr::from(([127, 0, 0, 1], 5076)), 6000).spawn();
    echo.wait_bound(STEP);
    let mut args = vec![
        "--sip-listen".to_string(),
        format!("127.0.0.1:{GW_SIP}"),
        "--outbound-proxy".into(),
        kam.addr().to_string(),
        "--rtp-ports".into(),
        "40000-40999".into(),
        "--media-address".into(),
        "127.0.0.1".into(),
    ];
    if bin == "sylkgw" {
        args.extend(["--threads".to_string(), "1".into()]);
    }
    let gw = Server::start(binary(bin), &args);

    let flood = Flood::start(SocketAddr::from(([127, 0, 0, 1], GW_SIP)));
    wait_sent(&flood, FLOOD_BEFORE_USER);

    // Registration through kamailio, during the flood.
    let mut ws = WsClient::ready(&gw);
    ws.add_and_register("alice@127.0.0.1", &ha1("alice", "127.0.0.1", "secret"));
    assert_eq!(
        ws.next_registration_state(),
        ("registered".into(), None),
        "registration during the flood ({} sent); gateway log:\n{}",
        flood.sent(),
        gw.stderr_text()
    );
    kam.wait_binding("alice", STEP);
    let ping = r#"{"sylkrtc":"ping","transaction":"p"}"#;
    assert_eq!(ws.request(ping), r#"{"sylkrtc":"ack","transaction":"p"}"#);

    // A call to the echo, during the flood.
    let sock = UdpSocket::bind("127.0.0.1:0").expect("browser socket");
    sock.set_nonblocking(true).expect("non-blocking");
    let mut browser =
        WebRtcClient::new(config(Video::None, true), None, Instant::now(), sock.local_addr().unwrap()).expect("client");
    let offer = browser.offer(false).expect("offer");
    let req = serde_json::json!({"sylkrtc": "session-create", "transaction": "c", "account": "alice@127.0.0.1",
        "session": "s1", "uri": "sip:echo@127.0.0.1:5076", "sdp": offer});
    ws.send_text(&req.to_string());
    let accepted = wait_for(&mut ws, "accepted", |e| e["state"] == "accepted" || e["state"] == "terminated");
    assert_eq!(accepted["state"], "accepted", "the call during the flood: {accepted}\n{}", gw.stderr_text());
    browser.accept_answer(accepted["sdp"].as_str().expect("answer SDP")).expect("answer applies");
    let up = run_browser(&mut browser, &sock, STEP, |_, _| {}, |b| b.connected);
    assert!(up, "ICE/DTLS through the gateway did not come up during the flood");
    let established = wait_for(&mut ws, "established", |e| e["state"] == "established" || e["state"] == "terminated");
    assert_eq!(established["state"], "established", "{established}");

    // Media through the gateway to the echo and back.
    let mut seq = 0u64;
    let mut next = Instant::now();
    let echoed = run_browser(
        &mut browser,
        &sock,
        STEP,
        |b, now| {
            if now >= next && seq < 500 {
                let mut wire = std::collections::VecDeque::new();
                b.send_rtp(now, (0, seq + 1, (seq * 160) as u32, seq == 0), &[0xff; 160], Duration::ZERO, &mut wire);
                for d in wire.drain(..) {
                    let _ = sock.send_to(&d.data, d.to);
                }
                seq += 1;
                next = now + Duration::from_millis(20);
            }
        },
        |b| b.got.iter().filter(|g| g.pt == 0).count() >= 25,
    );
    assert!(echoed, "no echoed audio during the flood (sent {seq}, got {})", browser.got.len());
    let during = flood.sent();
    assert!(during < FLOOD_MAX, "the flood ended before the call was up: the test proves nothing");

    let bye = r#"{"sylkrtc":"session-terminate","transaction":"t","session":"s1"}"#;
    ws.send_text(bye);
    let t = wait_for(&mut ws, "terminated", |e| e["state"] == "terminated");
    assert_eq!(t["reason"], "200 OK", "{t}");
    let (sent, answered) = flood.finish();
    eprintln!("[flood] {bin}: {sent} requests sent ({during} when the call carried audio), {answered} answers read");
    assert!(sent >= FLOOD_MIN, "the flood sent {sent}");
    ws.close();
    echo.wait(STEP).assert_success();
    kam.stop();
}

#[test]
fn register_and_call_during_flood_mio() {
    if in_netns_with_timeout("register_and_call_during_flood_mio", Duration::from_secs(120)) {
        register_and_call_during_flood("sylkgw-mio");
    }
}

#[test]
fn register_and_call_during_flood_tokio() {
    if in_netns_with_timeout("register_and_call_during_flood_tokio", Duration::from_secs(120)) {
        register_and_call_during_flood("sylkgw");
    }
}
