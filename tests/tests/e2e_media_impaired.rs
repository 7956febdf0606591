//! Media under 5 % packet loss and 50 ms ± 25 ms jitter, end to end, in a private network
//! namespace: a str0m browser (`sylkgw_tests::webrtc_client`) on a real UDP socket calls a sipp
//! `-rtp_echo` UAS through `sylkgw-mio`, and every datagram between the browser and the gateway
//! (ICE, DTLS, SRTP, SRTCP; both directions) goes through an impairment stage in the test
//! process: dropped with probability 5 %, else delivered after a uniform 25–75 ms delay (so
//! packets are reordered), as `tc qdisc … netem delay 50ms 25ms loss 5%` would do.
//!
//! Why not netem: this machine's kernel has no `sch_netem` (CONFIG_NET_SCH_NETEM unset, no
//! modules), so `tc qdisc add … netem` fails with "Specified qdisc kind is unknown". The stage
//! here sits on the browser leg only (the SIP side is clean loopback); a packet crosses it twice
//! (to the echo and back).
//!
//! The browser polls str0m after every datagram it receives: in RTP mode str0m holds one received
//! packet until the next poll, so two datagrams handed in back to back (which jitter makes
//! common) would lose the first.
//!
//! Checked: ICE and DTLS come up despite the loss (`established`); 8 s of a 1000 Hz µ-law tone
//! sent every 20 ms comes back with a loss in the range the impairment implies (about 10 %, two
//! crossings) and still holds the tone; the call is not torn down (no `terminated` until we hang
//! up, `200 OK`); afterwards the core's tables are back at their baseline.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use sylkgw_tests::audio::{assert_tone, tone_samples, ulaw_decode, ulaw_encode};
use sylkgw_tests::churn::{first_stats, wait_baseline, wait_for};
use sylkgw_tests::netns::in_netns_with_timeout;
use sylkgw_tests::peers::Sipp;
use sylkgw_tests::webrtc_client::{config, Datagram, Video, WebRtcClient};
use sylkgw_tests::{binary, Server, TempDir, WsClient};
use tungstenite::Message;

const LOSS: f64 = 0.05;
const DELAY: Duration = Duration::from_millis(50);
const JITTER: Duration = Duration::from_millis(25);
const TONE_HZ: f64 = 1000.0;
const TALK: Duration = Duration::from_secs(8);
const PTIME: Duration = Duration::from_millis(20);

/// The impairment stage: a deterministic generator (xorshift64*) deciding loss and delay.
struct Netem {
    state: u64,
    /// Datagrams waiting for their time: (due, from, to, bytes).
    queue: Vec<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    dropped: usize,
    passed: usize,
}

impl Netem {
    fn new(seed: u64) -> Self {
        Self { state: seed | 1, queue: Vec::new(), dropped: 0, passed: 0 }
    }

    fn uniform(&mut self) -> f64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        (self.state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Drops `data` (5 %) or queues it for now + 50 ms ± 25 ms.
    fn offer(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        if self.uniform() < LOSS {
            self.dropped += 1;
            return;
        }
        self.passed += 1;
        let delay = DELAY - JITTER + JITTER.mul_f64(2.0 * self.uniform());
        self.queue.push((now + delay, from, to, data));
    }

    /// The datagrams due by `now`, in due order.
    fn due(&mut self, now: Instant) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
        self.queue.sort_by_key(|d| d.0);
        let n = self.queue.iter().take_while(|d| d.0 <= now).count();
        self.queue.drain(..n).map(|(_, f, t, d)| (f, t, d)).collect()
    }
}

fn session_events(ws: &mut WsClient, into: &mut Vec<serde_json::Value>) {
    while let Ok(Some(m)) = ws.next_before(Instant::now() + Duration::from_millis(1)) {
        if let Message::Text(t) = m {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(t.as_str()) {
                into.push(v);
            }
        }
    }
}

fn impaired_call(bin: &str) {
    let work = TempDir::new("netem");
    let mut echo = Sipp::echo_uas(work.path(), SocketAddr::from(([127, 0, 0, 1], 5076)), 6000).spawn();
    echo.wait_bound(Duration::from_secs(10));
    let args = ["--sip-listen", "127.0.0.1:5080", "--rtp-ports", "40000-40999", "--media-address", "127.0.0.1"];
    let gw = Server::start(binary(bin), &[&args[..], &["--stats-interval", "1"]].concat());
    let baseline = first_stats(&gw, Duration::from_secs(5));

    let sock = UdpSocket::bind("127.0.0.1:0").expect("browser socket");
    sock.set_nonblocking(true).expect("non-blocking");
    let local = sock.local_addr().expect("local");
    let mut browser = WebRtcClient::new(config(Video::None, true), None, Instant::now(), local).expect("client");
    let offer = browser.offer(false).expect("offer");

    let mut ws = WsClient::ready(&gw);
    let add = r#"{"sylkrtc":"account-add","transaction":"a","account":"alice@127.0.0.1","password":"x"}"#;
    assert_eq!(ws.request(add), r#"{"sylkrtc":"ack","transaction":"a"}"#);
    let req = serde_json::json!({"sylkrtc": "session-create", "transaction": "c", "account": "alice@127.0.0.1",
        "session": "s1", "uri": "sip:echo@127.0.0.1:5076", "sdp": offer});
    ws.send_text(&req.to_string());
    let accepted = wait_for(&mut ws, "accepted", |e| e["state"] == "accepted" || e["state"] == "terminated");
    assert_eq!(accepted["state"], "accepted", "{accepted}");
    browser.accept_answer(accepted["sdp"].as_str().expect("answer SDP")).expect("answer applies");

    let (mut up, mut down) = (Netem::new(0x5eed_0001), Netem::new(0x5eed_0002));
    let mut wire = std::collections::VecDeque::<Datagram>::new();
    let mut events = Vec::new();
    let tone: Vec<u8> =
        tone_samples(TONE_HZ, 8000, TALK.as_secs_f64() + 1.0, 0.3).into_iter().map(ulaw_encode).collect();
    let start = Instant::now();
    let (mut connected_at, mut next_send, mut sent) = (None::<Instant>, None::<Instant>, 0u64);
    let mut buf = [0u8; 2048];
    let end_by = start + Duration::from_secs(30);
    loop {
        let now = Instant::now();
        assert!(now < end_by, "media did not finish within 30 s (connected: {connected_at:?}); events {events:?}");
        // The browser's output, into the uplink stage.
        browser.drain(now, Duration::ZERO, &mut wire);
        for d in wire.drain(..) {
            up.offer(now, d.from, d.to, d.data);
        }
        for (_, to, data) in up.due(now) {
            let _ = sock.send_to(&data, to);
        }
        // The gateway's datagrams, through the downlink stage.
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            down.offer(now, from, local, buf[..n].to_vec());
        }
        for (from, to, data) in down.due(now) {
            browser.receive(now, from, to, &data).expect("str0m accepts the datagram");
            // str0m (RTP mode) holds one received packet until polled: poll after each.
            browser.drain(now, Duration::ZERO, &mut wire);
        }
        if now >= browser.timeout {
            browser.handle_timeout(now).expect("str0m timeout");
        }
        if browser.connected && connected_at.is_none() {
            connected_at = Some(now);
            next_send = Some(now);
        }
        if let Some(at) = next_send.filter(|at| *at <= now) {
            let i = sent as usize;
            let payload = &tone[i * 160..(i + 1) * 160];
            browser.send_rtp(now, (0, sent + 1, (sent * 160) as u32, sent == 0), payload, Duration::ZERO, &mut wire);
            sent += 1;
            next_send = (sent < TALK.as_millis() as u64 / 20).then_some(at + PTIME);
        }
        if next_send.is_none() && connected_at.is_some_and(|c| now >= c + TALK + Duration::from_secs(1)) {
            break;
        }
        session_events(&mut ws, &mut events);
        std::thread::sleep(Duration::from_millis(1));
    }
    session_events(&mut ws, &mut events);
    assert!(events.iter().all(|e| e["state"] != "terminated"), "the call was torn down: {events:?}");
    assert!(events.iter().any(|e| e["state"] == "established"), "established under loss: {events:?}");

    // What came back: order by RTP timestamp, count, reordering, tone.
    let got: Vec<_> = browser.got.iter().filter(|g| g.pt == 0 && g.payload.len() == 160).cloned().collect();
    let first_ts = got.first().map_or(0, |g| g.ts);
    let mut by_ts: HashMap<i64, &[u8]> = HashMap::new();
    let mut reordered = 0;
    let mut max_ts = i64::MIN;
    for g in &got {
        let t = i64::from(g.ts.wrapping_sub(first_ts) as i32);
        if t < max_ts {
            reordered += 1;
        }
        max_ts = max_ts.max(t);
        by_ts.insert(t, &g.payload);
    }
    let mut keys: Vec<_> = by_ts.keys().copied().collect();
    keys.sort_unstable();
    let samples: Vec<f32> =
        keys.iter().flat_map(|k| by_ts[k].iter().map(|&b| f32::from(ulaw_decode(b)) / 32768.0)).collect();
    let ratio = keys.len() as f64 / sent as f64;
    eprintln!(
        "[netem] connected after {:?}; sent {sent}, echoed back {} ({:.1} %), {reordered} out of order; \
         uplink dropped {}/{}, downlink dropped {}/{}",
        connected_at.map(|c| c - start),
        keys.len(),
        ratio * 100.0,
        up.dropped,
        up.dropped + up.passed,
        down.dropped,
        down.dropped + down.passed
    );
    assert!((0.80..=0.97).contains(&ratio), "echo ratio {ratio:.3}: expected about 0.90 (5 % loss each way)");
    assert!(reordered > 0, "50 ms ± 25 ms jitter with 20 ms packets reorders some");
    let report = assert_tone(&samples, 8000, TONE_HZ, "the echoed tone under loss and jitter");
    eprintln!("[netem] tone: {report}");

    let bye = r#"{"sylkrtc":"session-terminate","transaction":"t","session":"s1"}"#;
    ws.send_text(bye);
    let t = wait_for(&mut ws, "terminated", |e| e["state"] == "terminated");
    assert_eq!(t["reason"], "200 OK", "{t}");
    ws.close();
    echo.wait(Duration::from_secs(10)).assert_success();
    // The INVITE transaction stays in Accepted for 64·T1 = 32 s after the 200 (RFC 6026).
    wait_baseline(&gw, &baseline, Duration::from_secs(40));
}

#[test]
fn media_survives_loss_and_jitter_mio() {
    if in_netns_with_timeout("media_survives_loss_and_jitter_mio", Duration::from_secs(90)) {
        impaired_call("sylkgw-mio");
    }
}
