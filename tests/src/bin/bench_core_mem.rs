//! Heap bytes per bridged audio call of the sans-IO core alone, in memory, deterministic (prints
//! figures; not a test). Issue #14 ("RSS per audio call").
//!
//! `bench_core_mem [--calls N] [--seconds S] [--leak a|b|c]` (defaults N = 200, S = 2): the real [`Gateway`] on a
//! virtual clock ([`sylkgw_tests::gateway_sim`]), N str0m browsers (PCMU + telephone-event, as
//! `bench_calls`' load client) each with its own WebSocket and guest account, and an in-memory
//! SIP far end answering every INVITE (100, 200 with PCMU on its own port) and echoing every RTP
//! packet back. The configuration is the binary's defaults (capture off) with the limits lifted.
//!
//! Two runs, each from a fresh gateway: **A** opens the N WebSockets and adds the accounts;
//! **B** does the same, places the N calls, waits for every `established`, and runs S virtual
//! seconds of 20 ms PCMU both ways. At the end of each run the gateway is swapped out of the
//! simulation and dropped, and the bytes that frees are what it held (a counting global
//! allocator; the browsers and the harness are not counted). Per call = (B − A) ÷ N, as
//! requested bytes and as malloc'd bytes (`malloc_usable_size` + 8 bytes of chunk header each,
//! glibc's layout). A third run **C** does B, then hangs every call up (`session-terminate`),
//! runs 40 s more (transactions end) and reports what its gateway still holds per call above A
//! (state kept after a call: should be about 0). Also printed: `size_of` of the per-call structs.
//!
//! `--leak a|b|c`: the gateway of that run is forgotten instead of dropped (its figures then
//! read 0), so that `heaptrack`'s leak report lists what it holds by allocation site, without
//! the browsers' and the harness's allocations (which are freed).
//!
//! Deterministic except for DTLS (its randoms come from the OS): the figures move by a few bytes
//! between runs.

use serde_json::Value;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use sylkgw_core::{ConnId, Gateway};
use sylkgw_tests::gateway_sim::{self, addr, reply, BindAnswer, GatewaySim, World, FAR_SIP, HA1, LATENCY};
use sylkgw_tests::sip_text::header;
use sylkgw_tests::webrtc_client::{self, Datagram, Video, WebRtcClient};

/// Counts live heap bytes: requested, and as malloc holds them.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);
static LIVE_MALLOC: AtomicI64 = AtomicI64::new(0);

/// glibc's chunk header on 64-bit.
const CHUNK_HEADER: i64 = 8;

fn usable(p: *mut u8) -> i64 {
    // SAFETY: `p` was returned by the system allocator (malloc family) and is live.
    #[allow(unsafe_code)]
    let n = unsafe { libc::malloc_usable_size(p.cast()) };
    n as i64 + CHUNK_HEADER
}

// SAFETY: every call is forwarded to `System` unchanged; the counters only observe.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
            LIVE_MALLOC.fetch_add(usable(p), Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
            LIVE_MALLOC.fetch_add(usable(p), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
        LIVE_MALLOC.fetch_sub(usable(p), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let before = usable(p);
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            LIVE.fetch_add(new as i64 - l.size() as i64, Ordering::Relaxed);
            LIVE_MALLOC.fetch_add(usable(q) - before, Ordering::Relaxed);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> (i64, i64) {
    (LIVE.load(Ordering::Relaxed), LIVE_MALLOC.load(Ordering::Relaxed))
}

/// The far end's RTP ports start here, two per call (above the gateway's WebRTC socket, 40000).
const FAR_RTP_BASE: u16 = 50000;

struct Sim {
    net: GatewaySim,
    browsers: Vec<WebRtcClient>,
    /// Browser address → index.
    by_addr: BTreeMap<SocketAddr, usize>,
    /// INVITEs answered so far (the next far-end RTP port).
    invites: u16,
    /// Media ticks so far (each browser's next sequence number).
    seq: u64,
}

impl World for Sim {
    fn parts(&mut self) -> (&mut GatewaySim, Vec<&mut WebRtcClient>) {
        (&mut self.net, self.browsers.iter_mut().collect())
    }

    fn media_tick(&mut self) {
        self.seq += 1;
        let (now, seq) = (self.net.now, self.seq);
        let payload = [0xffu8; 160];
        for b in self.browsers.iter_mut().filter(|b| b.connected) {
            b.send_rtp(now, (0, seq, (seq * 160) as u32, false), &payload, LATENCY, &mut self.net.wire);
        }
    }

    fn deliver(&mut self, d: Datagram) {
        let now = self.net.now;
        if let Some(&i) = self.by_addr.get(&d.to) {
            let b = &mut self.browsers[i];
            b.receive(now, d.from, d.to, &d.data).unwrap();
            b.drain(now, LATENCY, &mut self.net.wire);
        } else if d.to == addr(FAR_SIP) {
            self.far_sip(String::from_utf8(d.data).unwrap());
        } else if d.to.port() >= FAR_RTP_BASE && d.to.ip() == addr(FAR_SIP).ip() {
            // The RTP echo (RTCP too: the gateway takes it as the peer's).
            self.net.wire.push_back(Datagram { at: now + LATENCY, from: d.to, to: d.from, data: d.data });
        } else {
            self.net.deliver(d);
        }
    }
}

impl Sim {
    fn new(calls: usize) -> Self {
        let net = GatewaySim::new([7; 32], BindAnswer::AtOnce, |c| {
            c.capture = false;
            c.max_connections_per_ip = calls + 100;
            c.max_requests_per_second = 1000;
            c.sip.max_requests_per_second_per_ip = 0;
            c.media.rtp_ports = (20000, 29999);
            c.websocket_ping_interval = 86_400;
        });
        Self { net, browsers: Vec::new(), by_addr: BTreeMap::new(), invites: 0, seq: 0 }
    }

    fn far_sip(&mut self, text: String) {
        if text.starts_with("SIP/2.0") {
            return;
        }
        match text.split(' ').next().unwrap() {
            "INVITE" if !header(&text, "To").contains("tag=") => {
                let port = FAR_RTP_BASE + 2 * self.invites;
                self.invites += 1;
                self.net.far_send(reply(&text, 100, "Trying", "", ""));
                let extra = "Contact: <sip:bob@127.0.0.1:5070>\r\nContent-Type: application/sdp\r\n";
                self.net.far_send(reply(&text, 200, "OK", extra, &gateway_sim::far_sdp(port, "sendrecv")));
            }
            "ACK" => {}
            _ => self.net.far_send(reply(&text, 200, "OK", "", "")),
        }
    }

    /// Opens `n` WebSockets, each with a guest account `uI@example.com`.
    fn accounts(&mut self, n: usize) {
        for i in 0..n {
            let conn = ConnId(1000 + i as u64);
            self.net.open_ws(conn);
            let req =
                serde_json::json!({"sylkrtc": "account-add", "account": format!("u{i}@example.com"), "password": HA1});
            let ack = self.net.request(conn, req, "1");
            assert_eq!(ack["sylkrtc"], "ack", "{ack}");
        }
    }

    /// Places `n` calls (one per WebSocket of [`Sim::accounts`]) and runs until every one is
    /// `established`.
    fn calls(&mut self, n: usize) {
        let cert = gateway_sim::test_cert();
        for i in 0..n {
            let conn = ConnId(1000 + i as u64);
            let at = addr(&format!("127.0.0.2:{}", 40000 + i));
            let config = webrtc_client::config(Video::None, true);
            let mut b = WebRtcClient::new(config, Some(cert.as_dtls_cert()), self.net.now, at).unwrap();
            let offer = b.offer(false).unwrap();
            self.by_addr.insert(at, self.browsers.len());
            self.browsers.push(b);
            let req = serde_json::json!({"sylkrtc": "session-create", "account": format!("u{i}@example.com"),
                "session": format!("s{i}"), "uri": "bob@example.com", "sdp": offer});
            self.net.send_request(conn, req, "2");
        }
        let mut established = vec![false; n];
        let mut answered = vec![false; n];
        let deadline = self.net.now + Duration::from_secs(60);
        while established.iter().any(|e| !e) {
            assert!(self.net.now < deadline, "calls not established: {}", established.iter().filter(|e| !**e).count());
            self.run(Duration::from_millis(10));
            for i in 0..n {
                for e in self.net.take_events(ConnId(1000 + i as u64)) {
                    match (e["sylkrtc"].as_str(), e["state"].as_str()) {
                        (Some("session-event"), Some("accepted")) if !answered[i] => {
                            let sdp = e["sdp"].as_str().expect("the answer");
                            self.browsers[i].accept_answer(sdp).unwrap();
                            answered[i] = true;
                        }
                        (Some("session-event"), Some("established")) => established[i] = true,
                        (Some("session-event"), Some("terminated")) => panic!("call {i} ended: {e}"),
                        (Some("error"), _) => panic!("call {i}: {e}"),
                        _ => {}
                    }
                }
            }
        }
    }

    /// Hangs every call up and runs until each is `terminated`, then 40 s more.
    fn hang_up(&mut self, n: usize) {
        for i in 0..n {
            let req = serde_json::json!({"sylkrtc": "session-terminate", "session": format!("s{i}")});
            self.net.send_request(ConnId(1000 + i as u64), req, "3");
        }
        self.run(Duration::from_secs(2));
        let ended = (0..n)
            .filter(|i| {
                let events: Vec<Value> = self.net.take_events(ConnId(1000 + *i as u64));
                events.iter().any(|e| e["state"] == "terminated")
            })
            .count();
        assert_eq!(ended, n, "calls terminated");
        self.browsers.clear();
        self.by_addr.clear();
        self.run(Duration::from_secs(40));
    }

    /// Drops the gateway and returns the bytes that freed (requested, malloc'd). With `leak`
    /// the gateway is forgotten instead (for heaptrack's leak report) and nothing is counted.
    fn gateway_bytes(&mut self, leak: bool) -> (i64, i64) {
        self.net.wire.clear();
        let spare = Gateway::new(sylkgw_core::Config::default(), [1; 32], self.net.now, Duration::from_secs(1))
            .expect("a spare gateway");
        let old = std::mem::replace(&mut self.net.gw, spare);
        if leak {
            std::mem::forget(old);
            return (0, 0);
        }
        let before = live();
        drop(old);
        let after = live();
        (before.0 - after.0, before.1 - after.1)
    }
}

fn arg<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).ok_or(format!("{name} needs a number")),
        None => Ok(default),
    }
}

fn kib(b: i64) -> f64 {
    b as f64 / 1024.0
}

fn main() -> ExitCode {
    let (n, seconds) = match (arg("--calls", 200usize), arg("--seconds", 2u64)) {
        (Ok(n), Ok(s)) if n > 0 && n < 5000 => (n, s),
        _ => {
            eprintln!("usage: bench_core_mem [--calls N (1..4999)] [--seconds S] [--leak a|b|c]");
            return ExitCode::from(2);
        }
    };
    let leak = std::env::args().skip_while(|a| a != "--leak").nth(1).and_then(|r| r.chars().next());
    use std::mem::size_of;
    println!(
        "size_of: Call {} B, BrowserLeg {} B, str0m Rtc {} B, SipMedia {} B, SrtpContext {} B, VideoLine {} B",
        size_of::<sylkgw_core::call::Call>(),
        size_of::<sylkgw_core::media::webrtc::BrowserLeg>(),
        size_of::<str0m::Rtc>(),
        size_of::<sylkgw_core::media::bridge::SipMedia>(),
        size_of::<sylkgw_core::media::srtp::SrtpContext>(),
        size_of::<sylkgw_core::call::VideoLine>(),
    );

    let mut a = Sim::new(n);
    a.accounts(n);
    let base = a.gateway_bytes(leak == Some('a'));
    drop(a);
    println!("A: {n} WebSockets + accounts: gateway holds {:.1} KiB ({:.1} KiB malloc'd)", kib(base.0), kib(base.1));

    let mut b = Sim::new(n);
    b.accounts(n);
    b.calls(n);
    b.run(Duration::from_secs(seconds));
    let with_calls = b.gateway_bytes(leak == Some('b'));
    drop(b);
    println!(
        "B: + {n} calls, {seconds} s of media: gateway holds {:.1} KiB ({:.1} KiB malloc'd)",
        kib(with_calls.0),
        kib(with_calls.1)
    );
    let mut c = Sim::new(n);
    c.accounts(n);
    c.calls(n);
    c.run(Duration::from_secs(seconds));
    c.hang_up(n);
    let after = c.gateway_bytes(leak == Some('c'));
    println!("after hanging up + 40 s: gateway holds {:.1} KiB ({:.1} KiB malloc'd)", kib(after.0), kib(after.1));
    let per = |x: (i64, i64)| ((x.0 - base.0) as f64 / n as f64 / 1024.0, (x.1 - base.1) as f64 / n as f64 / 1024.0);
    let (req, mal) = per(with_calls);
    let (left_req, left_mal) = per(after);
    println!("per call: {req:.2} KiB requested, {mal:.2} KiB malloc'd; left after hang-up: {left_req:.2} / {left_mal:.2} KiB");
    ExitCode::SUCCESS
}
