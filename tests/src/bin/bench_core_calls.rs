//! CPU per bridged audio call-second of the sans-IO core alone, in memory (prints figures; not a
//! test): the low-noise loop for work on the media path (issue #14).
//!
//! `bench_core_calls [--calls N] [--seconds S] [--warmup W]` (defaults N = 300, S = 10, W = 2).
//!
//! One fresh [`Gateway`] ([`GatewaySim`]'s addresses, capture off, WebSocket pings out of the
//! way) on a virtual clock, N str0m browsers ([`sylkgw_tests::webrtc_client`]: full ICE, DTLS-SRTP,
//! PCMU + telephone-event, as the load client of `bench_calls`), each on its own WebSocket with
//! its own account, and an in-memory SIP far end: a UAS answering every INVITE 100 + 200 (PCMU +
//! telephone-event) and one RTP echo that sends every packet back to where it came from. A
//! datagram takes [`LATENCY`]. Every call is placed and brought up (ICE, DTLS); then every
//! browser sends a 160-byte PCMU packet every 20 ms (the N browsers evenly staggered over the 20
//! ms), so each call carries 50 packets a second each way through both legs of the gateway; after
//! W seconds of warm-up, S seconds of simulated media time are measured.
//!
//! Measured: the thread CPU time (`CLOCK_THREAD_CPUTIME_ID`) spent only inside the gateway's
//! `handle_input` and the `poll_output` calls that drain it (its outputs are collected and carried
//! out after the clock stops, as a runtime queues them), minus the cost of reading that clock
//! (calibrated at start), split by input: a datagram on the WebRTC socket (browser → gateway),
//! on a call's RTP/RTCP socket (far end → gateway), and timers. Printed as µs per call-second and
//! per input, with the heap allocations made inside those calls (a counting global allocator
//! that counts only while the clock runs) per packet forwarded. Packets forwarded each way and
//! the browsers' receipts are printed too, so a change that drops media shows.
//!
//! Nothing here touches the network or the machine's other processes; the figure depends on the
//! CPU's speed, not on the load of other processes (thread CPU time), except through caches.

#![allow(clippy::disallowed_methods)] // Instant::now: the virtual clock's epoch and wall time only

use serde_json::json;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use sylkgw_core::{ConnId, Gateway, Input, Output, SocketId};
use sylkgw_tests::gateway_sim::{addr, far_sdp, reply, BindAnswer, GatewaySim, FAR_SIP, GW_WEBRTC, HA1, LATENCY};
use sylkgw_tests::sip_text::header;
use sylkgw_tests::webrtc_client::{config, Datagram, Video, WebRtcClient};

/// The far end's RTP echo.
const FAR_RTP: &str = "127.0.0.1:30000";
/// One packet every 20 ms per call.
const PACKET_INTERVAL: Duration = Duration::from_millis(20);
/// A 20 ms PCMU payload.
const PCMU_PAYLOAD: [u8; 160] = [0xd5; 160];

/// The system allocator, counting allocations (and their bytes) while [`COUNTING`] is set.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

impl Counting {
    fn count(size: usize) {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            ALLOC_BYTES.fetch_add(size as u64, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated besides.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// What a timed input was, for the split of the figures.
#[derive(Clone, Copy)]
enum Kind {
    /// A datagram on the WebRTC socket.
    WebRtc,
    /// A datagram on a call's RTP or RTCP socket.
    Rtp,
    /// `Input::Timeout`.
    Timer,
}

#[derive(Default, Clone, Copy)]
struct Tally {
    inputs: u64,
    cpu: Duration,
    allocs: u64,
    bytes: u64,
}

struct Opts {
    calls: usize,
    seconds: u64,
    warmup: u64,
}

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts { calls: 300, seconds: 10, warmup: 2 };
    let mut argv = std::env::args().skip(1);
    while let Some(a) = argv.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            let v = argv.next().ok_or(format!("{name} needs a value"))?;
            v.parse::<u64>().map_err(|e| format!("{name} {v:?}: {e}"))
        };
        match a.as_str() {
            "--calls" => o.calls = number("--calls")? as usize,
            "--seconds" => o.seconds = number("--seconds")?,
            "--warmup" => o.warmup = number("--warmup")?,
            _ => {
                return Err(format!(
                    "unknown argument {a:?}; usage: bench_core_calls [--calls N] [--seconds S] [--warmup W]"
                ))
            }
        }
    }
    if o.calls == 0 || o.calls > 20_000 || o.seconds == 0 {
        return Err("--calls 1..20000, --seconds at least 1".into());
    }
    Ok(o)
}

/// The gateway, its peers and the measurement.
struct Bench {
    sim: GatewaySim,
    browsers: Vec<WebRtcClient>,
    /// Browser index by its address.
    browser_at: HashMap<SocketAddr, usize>,
    /// Browser deadlines, (when, index), and each browser's entry in it.
    browser_timers: BTreeSet<(Instant, usize)>,
    browser_deadline: Vec<Instant>,
    /// Gateway socket by its address (filled once the calls are up).
    socket_at: HashMap<SocketAddr, SocketId>,
    /// The next RTP sequence number of each browser.
    seq: Vec<u64>,
    /// While set, gateway inputs are timed into `tally`.
    measuring: bool,
    tally: [Tally; 3],
    /// Cost of one pair of clock reads, subtracted from every timed input.
    clock_cost: Duration,
    /// Outputs of the timed input, carried out after the clock stopped.
    outs: Vec<Output>,
    /// Packets (measured window): browsers sent, the far end echoed, browsers received.
    sent: u64,
    echoed: u64,
    received: u64,
    /// INVITEs the far end answered.
    invites: usize,
}

impl Bench {
    fn new(n: usize) -> Self {
        let sim = GatewaySim::new([7; 32], BindAnswer::AtOnce, |c| {
            c.capture = false;
            c.max_connections_per_ip = n + 10;
            c.websocket_ping_interval = 86_400;
            c.media.rtp_ports = (20000, (20100 + 2 * n).min(65_000) as u16);
        });
        // The browsers' own certificate (the gateway has another).
        let cert = sylkgw_tests::gateway_sim::test_cert();
        let now = sim.now;
        let mut browsers = Vec::with_capacity(n);
        let mut browser_at = HashMap::new();
        for i in 0..n {
            let ip = Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250) as u8 + 1);
            let a = SocketAddr::new(ip.into(), 50000);
            let b = WebRtcClient::new(config(Video::None, true), Some(cert.as_dtls_cert()), now, a).expect("a browser");
            browser_at.insert(a, i);
            browsers.push(b);
        }
        Self {
            sim,
            browser_timers: (0..n).map(|i| (now, i)).collect(),
            browser_deadline: vec![now; n],
            browsers,
            browser_at,
            socket_at: HashMap::new(),
            seq: vec![0; n],
            measuring: false,
            tally: [Tally::default(); 3],
            clock_cost: Duration::ZERO,
            outs: Vec::new(),
            sent: 0,
            echoed: 0,
            received: 0,
            invites: 0,
        }
    }

    /// One input to the gateway, its outputs drained; timed while measuring.
    fn feed(&mut self, kind: Kind, input: Input<'_>) {
        let (a0, b0) = (ALLOCS.load(Ordering::Relaxed), ALLOC_BYTES.load(Ordering::Relaxed));
        let deadline = if self.measuring {
            COUNTING.store(true, Ordering::Relaxed);
            let t0 = thread_cpu();
            let deadline = measured_step(&mut self.sim.gw, self.sim.now, input, &mut self.outs);
            let t1 = thread_cpu();
            COUNTING.store(false, Ordering::Relaxed);
            let t = &mut self.tally[kind as usize];
            t.inputs += 1;
            t.cpu += (t1 - t0).saturating_sub(self.clock_cost);
            t.allocs += ALLOCS.load(Ordering::Relaxed) - a0;
            t.bytes += ALLOC_BYTES.load(Ordering::Relaxed) - b0;
            deadline
        } else {
            step(&mut self.sim.gw, self.sim.now, input, &mut self.outs)
        };
        self.sim.deadline = deadline;
        let mut outs = std::mem::take(&mut self.outs);
        for o in outs.drain(..) {
            self.sim.carry(o);
        }
        self.outs = outs;
        // Binds answered at once have outputs of their own.
        self.sim.drain();
    }

    fn browser_drain(&mut self, i: usize) {
        let now = self.sim.now;
        let b = &mut self.browsers[i];
        b.drain(now, LATENCY, &mut self.sim.wire);
        if self.measuring {
            self.received += b.got.len() as u64;
        }
        b.got.clear();
        let t = b.timeout;
        if t != self.browser_deadline[i] {
            self.browser_timers.remove(&(self.browser_deadline[i], i));
            self.browser_timers.insert((t, i));
            self.browser_deadline[i] = t;
        }
    }

    /// A datagram whose time has come.
    fn deliver(&mut self, d: Datagram) {
        if let Some(&i) = self.browser_at.get(&d.to) {
            let now = self.sim.now;
            self.browsers[i].receive(now, d.from, d.to, &d.data).expect("browser receive");
            self.browser_drain(i);
        } else if d.to == addr(FAR_SIP) {
            self.far_sip(&String::from_utf8(d.data).expect("SIP text"));
        } else if d.to == addr(FAR_RTP) {
            if self.measuring {
                self.echoed += 1;
            }
            let now = self.sim.now;
            self.sim.wire.push_back(Datagram { at: now + LATENCY, from: d.to, to: d.from, data: d.data });
        } else if let Some(socket) = self.socket(d.to) {
            let kind = if d.to == addr(GW_WEBRTC) { Kind::WebRtc } else { Kind::Rtp };
            self.feed(kind, Input::Datagram { socket, from: d.from, data: &d.data });
        }
        // RTCP to the far end (port + 1) ends here.
    }

    fn socket(&mut self, to: SocketAddr) -> Option<SocketId> {
        if let Some(s) = self.socket_at.get(&to) {
            return Some(*s);
        }
        let s = self.sim.sockets.iter().find(|(_, a)| **a == to).map(|(s, _)| *s)?;
        self.socket_at.insert(to, s);
        Some(s)
    }

    /// The far end's SIP: 100 + 200 with SDP for an INVITE, 200 for the rest but ACK.
    fn far_sip(&mut self, text: &str) {
        if text.starts_with("SIP/2.0") || text.starts_with("ACK ") {
            return;
        }
        if text.starts_with("INVITE ") && !header(text, "To").contains("tag=") {
            self.invites += 1;
            let contact = "Contact: <sip:echo@127.0.0.1:5070>\r\n";
            self.sim.far_send(reply(text, 100, "Trying", "", ""));
            let extra = format!("{contact}Content-Type: application/sdp\r\n");
            self.sim.far_send(reply(text, 200, "OK", &extra, &far_sdp(30000, "sendrecv")));
            return;
        }
        self.sim.far_send(reply(text, 200, "OK", "", ""));
    }

    /// Runs the world until `end`; browsers send media from `media_from` on, evenly staggered.
    fn run_until(&mut self, end: Instant, media_from: Option<Instant>) {
        let n = self.browsers.len();
        let step = PACKET_INTERVAL / n as u32;
        let mut next_send = media_from.map(|t| (t, 0usize));
        loop {
            let wire_at = self.sim.wire.front().map(|d| d.at);
            let browser_at = self.browser_timers.first().map(|(t, _)| *t);
            let send_at = next_send.map(|(t, _)| t);
            let t = [Some(self.sim.deadline), wire_at, browser_at, send_at].into_iter().flatten().min();
            let t = t.unwrap_or(end);
            if t > end {
                self.sim.now = end;
                return;
            }
            self.sim.now = self.sim.now.max(t);
            let now = self.sim.now;
            if self.sim.deadline <= now {
                self.feed(Kind::Timer, Input::Timeout);
            }
            while let Some(&(at, i)) = self.browser_timers.first() {
                if at > now {
                    break;
                }
                self.browsers[i].handle_timeout(now).expect("browser timeout");
                self.browser_drain(i);
                if self.browser_deadline[i] <= now {
                    // Not moved on: str0m wants `now` again later, not a spin.
                    self.browser_timers.remove(&(self.browser_deadline[i], i));
                    self.browser_deadline[i] = now + Duration::from_millis(1);
                    self.browser_timers.insert((self.browser_deadline[i], i));
                }
            }
            while let Some((at, i)) = next_send.filter(|(at, _)| *at <= now) {
                self.send_media(i);
                next_send = Some((at + step, (i + 1) % n));
            }
            while self.sim.wire.front().is_some_and(|d| d.at <= now) {
                let d = self.sim.wire.pop_front().expect("a datagram");
                self.deliver(d);
            }
        }
    }

    fn send_media(&mut self, i: usize) {
        let b = &mut self.browsers[i];
        if !b.connected {
            return;
        }
        self.seq[i] += 1;
        let seq = self.seq[i];
        let now = self.sim.now;
        b.send_rtp(now, (0, seq, (seq * 160) as u32, false), &PCMU_PAYLOAD, LATENCY, &mut self.sim.wire);
        if self.measuring {
            self.sent += 1;
        }
        self.browser_drain(i);
    }

    /// Places every call and runs until each is established.
    fn set_up(&mut self) -> Result<(), String> {
        let n = self.browsers.len();
        for i in 0..n {
            let conn = ConnId(i as u64 + 1);
            self.sim.open_ws(conn);
            let add = json!({"sylkrtc": "account-add", "account": format!("u{i}@example.com"), "password": HA1});
            let ack = self.sim.request(conn, add, "a");
            if ack["sylkrtc"] != "ack" {
                return Err(format!("account-add: {ack}"));
            }
            let offer = self.browsers[i].offer(false)?;
            let create = json!({"sylkrtc": "session-create", "account": format!("u{i}@example.com"),
                "session": format!("s{i}"), "uri": "echo@example.com", "sdp": offer});
            let ack = self.sim.request(conn, create, "c");
            if ack["sylkrtc"] != "ack" {
                return Err(format!("session-create: {ack}"));
            }
        }
        let mut accepted = vec![false; n];
        let mut established = 0;
        let give_up = self.sim.now + Duration::from_secs(30);
        while established < n {
            if self.sim.now > give_up {
                return Err(format!("{established} of {n} calls established after 30 s (simulated)"));
            }
            let until = self.sim.now + Duration::from_millis(10);
            self.run_until(until, None);
            for (i, accepted) in accepted.iter_mut().enumerate() {
                for e in self.sim.take_events(ConnId(i as u64 + 1)) {
                    if e["event"] != "state" {
                        continue;
                    }
                    match e["state"].as_str() {
                        Some("accepted") if !*accepted => {
                            *accepted = true;
                            let sdp = e["sdp"].as_str().ok_or("accepted without SDP")?;
                            self.browsers[i].accept_answer(sdp)?;
                            self.browser_drain(i);
                        }
                        Some("established") => established += 1,
                        Some("terminated") => return Err(format!("call {i} terminated: {e}")),
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }
}

/// `input` into the gateway, then its outputs into `outs` until its next deadline (returned).
fn step(gw: &mut Gateway, now: Instant, input: Input<'_>, outs: &mut Vec<Output>) -> Instant {
    gw.handle_input(now, input);
    loop {
        match gw.poll_output() {
            Output::Timeout(at) => return at,
            o => outs.push(o),
        }
    }
}

/// [`step`] while measuring: a function of its own, so that an instruction count can be taken of
/// it alone (`valgrind --tool=callgrind --toggle-collect='*measured_step*'`).
#[inline(never)]
fn measured_step(gw: &mut Gateway, now: Instant, input: Input<'_>, outs: &mut Vec<Output>) -> Instant {
    step(gw, now, input, outs)
}

/// The cost of one pair of thread-CPU clock reads (the least of many tries).
fn calibrate_clock() -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..20 {
        let t0 = thread_cpu();
        for _ in 0..1000 {
            std::hint::black_box(thread_cpu());
        }
        let t1 = thread_cpu();
        best = best.min((t1 - t0) / 1000);
    }
    best * 2
}

fn main() -> ExitCode {
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let n = opts.calls;
    let wall0 = Instant::now();
    let mut bench = Bench::new(n);
    bench.clock_cost = calibrate_clock();
    if let Err(e) = bench.set_up() {
        eprintln!("setup failed: {e}");
        return ExitCode::FAILURE;
    }
    let setup_wall = wall0.elapsed();
    let start = bench.sim.now;
    bench.run_until(start + Duration::from_secs(opts.warmup), Some(start));
    bench.measuring = true;
    let window_start = bench.sim.now;
    let wall1 = Instant::now();
    // Media continues on the same stagger: the next round starts one interval on.
    let phase = (window_start - start).as_nanos() % PACKET_INTERVAL.as_nanos();
    let first = window_start + (PACKET_INTERVAL - Duration::from_nanos(phase as u64));
    bench.run_until(window_start + Duration::from_secs(opts.seconds), Some(first));
    bench.measuring = false;
    let wall = wall1.elapsed();
    let stats = bench.sim.gw.stats();

    let call_seconds = (n as u64 * opts.seconds) as f64;
    let total: Duration = bench.tally.iter().map(|t| t.cpu).sum();
    let allocs: u64 = bench.tally.iter().map(|t| t.allocs).sum();
    let bytes: u64 = bench.tally.iter().map(|t| t.bytes).sum();
    let [web, rtp, timer] = bench.tally;
    let forwarded = (web.inputs + rtp.inputs).max(1);
    println!(
        "bench_core_calls: {n} calls, {} s window after {} s warm-up (simulated); setup {:.1} s, window {:.1} s wall; \
         clock read pair {} ns subtracted per input",
        opts.seconds,
        opts.warmup,
        setup_wall.as_secs_f64(),
        wall.as_secs_f64(),
        bench.clock_cost.as_nanos()
    );
    println!(
        "  packets in the window: browsers sent {}, far end echoed {}, browsers got {}; INVITEs {}; gateway stats: {} calls",
        bench.sent, bench.echoed, bench.received, bench.invites, stats.calls
    );
    println!(
        "  gateway CPU {:.1} µs per call-second ({:.3} s in the gateway's calls for {call_seconds} call-seconds); \
         {:.2} allocations ({:.0} bytes) per input datagram",
        total.as_secs_f64() * 1e6 / call_seconds,
        total.as_secs_f64(),
        allocs as f64 / forwarded as f64,
        bytes as f64 / forwarded as f64,
    );
    for (name, t) in [("WebRTC datagram", web), ("RTP/RTCP datagram", rtp), ("timer", timer)] {
        let per = |x: f64| if t.inputs == 0 { 0.0 } else { x / t.inputs as f64 };
        println!(
            "  {name:<18} {:>9} inputs, {:>7.2} µs each, {:>6.1} µs per call-second, {:>5.2} allocations ({:.0} bytes) each",
            t.inputs,
            per(t.cpu.as_secs_f64() * 1e6),
            t.cpu.as_secs_f64() * 1e6 / call_seconds,
            per(t.allocs as f64),
            per(t.bytes as f64),
        );
    }
    let expected = bench.sent;
    if bench.echoed < expected * 99 / 100 || bench.received < expected * 98 / 100 {
        eprintln!("media lost: {} sent, {} echoed, {} received", bench.sent, bench.echoed, bench.received);
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
