//! Registration throughput of the sans-IO core alone, in memory (prints figures; not a test).
//!
//! `bench_register_core [--batch B] [N...]` (default N = 1000 10000 50000, B = 1000): for each N,
//! in a fresh child process (so that RSS deltas start from a fresh heap), one [`Gateway`] with
//! `sip.listen` 192.0.2.1:5060 and `outbound_sip_proxy` 192.0.2.5:5060 is driven on a virtual
//! clock (an epoch plus offsets; every input advances it by [`TICK`]):
//!
//! 1. N WebSocket connections are accepted and upgraded (`UPGRADE_V2`); each adds one account
//!    `alice-I@example.com` with its HA1.
//! 2. Every connection sends `account-register`, B at a time; after each batch an in-process fake
//!    registrar answers every REGISTER datagram the core emitted (a 401 MD5/qop=auth challenge
//!    for a REGISTER without credentials; 200 OK with the Contact echoed `;expires=600` for one
//!    whose digest checks out), until the queue is empty. Done when N `registered` events came
//!    out of the WebSocket frames.
//! 3. The clock moves 6 s on (timer K ends the completed transactions): the steady state.
//! 4. The clock moves to the refresh time (30 s before the 600 s expire): every due timer is fed,
//!    and the refreshes (REGISTER, 401, REGISTER with credentials, 200) answered until N bindings
//!    were renewed.
//! 5. Every connection goes away; the un-REGISTERs (`Expires: 0`) are answered; the clock moves
//!    6 s on, and the tables should be empty.
//!
//! Printed per phase: wall time and rate, the time spent inside `handle_input`/`poll_output`
//! ("core", which excludes the fake registrar and the frame parsing of this harness), the
//! bench process's VmRSS delta per account (as read, and after `malloc_trim(0)` returned the
//! allocator's free pages, e.g. of ended transactions), and `gw.stats()`. WebSocket pings are
//! moved out of the way (`websocket_ping_interval` = 1 day) so that only registration work is
//! measured.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use sylkgw_core::config::SipConfig;
use sylkgw_core::sip::digest::Algorithm;
use sylkgw_core::{Config, ConnId, Gateway, Input, Listener, Output, SocketId, Stats, UdpPurpose};
use sylkgw_kit::{client_text_frame, UPGRADE_V2};
use sylkgw_tests::{opcode, parse_frame, vm_rss_kib};

const DOMAIN: &str = "example.com";
const PASSWORD: &str = "secret";
const SIP_LOCAL: &str = "192.0.2.1:5060";
const PROXY: &str = "192.0.2.5:5060";
const SIP_SOCKET: SocketId = SocketId(0);
/// The interval the fake registrar grants.
const GRANTED: u32 = 600;
/// Virtual time each input takes.
const TICK: Duration = Duration::from_micros(10);
/// How far the clock moves for completed transactions to end (timer K is T4 = 5 s over UDP).
const SETTLE: Duration = Duration::from_secs(6);

/// The system allocator, counting the bytes currently allocated (for live-heap figures that
/// neither fragmentation nor memory the allocator keeps cached can blur).
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only a counter is updated besides.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on as it is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_kib() -> f64 {
    LIVE_BYTES.load(Ordering::Relaxed) as f64 / 1024.0
}

fn main() -> ExitCode {
    let mut batch = 1000usize;
    let mut sizes = Vec::new();
    let mut argv = std::env::args().skip(1);
    while let Some(a) = argv.next() {
        if a == "--batch" {
            batch = argv.next().and_then(|b| b.parse().ok()).expect("--batch B: a number of requests");
        } else {
            sizes.push(a.parse::<usize>().unwrap_or_else(|_| panic!("N: a number of registrations, got {a:?}")));
        }
    }
    assert!(batch > 0, "B must be at least 1");
    if sizes.is_empty() {
        sizes = vec![1_000, 10_000, 50_000];
    }
    if let [n] = sizes[..] {
        return run(n, batch);
    }
    // One process per N: the RSS of one run must not reuse memory freed by the previous one.
    let exe = std::env::current_exe().expect("current_exe");
    let mut ok = true;
    for n in sizes {
        let status = Command::new(&exe).args(["--batch", &batch.to_string(), &n.to_string()]).status();
        match status {
            Ok(s) if s.success() => {}
            other => {
                eprintln!("bench_register_core {n}: {other:?}");
                ok = false;
            }
        }
        println!();
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn rss() -> u64 {
    vm_rss_kib(std::process::id()).expect("VmRSS of this process")
}

/// This process's memory at one point.
#[derive(Clone, Copy)]
struct Mem {
    /// VmRSS as read (counts memory freed but kept by the allocator, e.g. of ended transactions).
    rss: u64,
    /// VmRSS after `malloc_trim(0)` handed the heap's free pages back (live memory plus
    /// fragmentation).
    trimmed: u64,
    /// Bytes allocated and not freed, in KiB.
    live: f64,
}

fn mem() -> Mem {
    let live = live_kib();
    let rss = rss();
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    Mem { rss, trimmed: vm_rss_kib(std::process::id()).unwrap_or(rss), live }
}

/// Memory per item between two points (RSS deltas start from `before.trimmed`).
fn mem_line(what: &str, before: Mem, after: Mem, n: usize) {
    println!(
        "  memory per {what}: VmRSS {:.2} KiB, after malloc_trim {:.2} KiB, live heap {:.2} KiB \
         (VmRSS {} -> {} KiB, {} after trim; live heap {:.0} -> {:.0} KiB)",
        kib_per(after.rss, before.trimmed, n),
        kib_per(after.trimmed, before.trimmed, n),
        (after.live - before.live) / n as f64,
        before.trimmed,
        after.rss,
        after.trimmed,
        before.live,
        after.live
    );
}

fn ha1(user: &str) -> String {
    Algorithm::Md5.hash_hex(format!("{user}:{DOMAIN}:{PASSWORD}").as_bytes())
}

fn run(n: usize, batch: usize) -> ExitCode {
    println!("==== bench_register_core: N = {n} registrations, batches of {batch}, tick {TICK:?} ====");
    let m0 = mem();
    let mut b = Bench::new();
    let mut ok = true;

    // 1. Connections and accounts.
    let t = Instant::now();
    let core0 = b.core;
    for i in 0..n {
        let conn = ConnId(i as u64 + 1);
        let peer = SocketAddr::from(([198, 51, 100, (i % 250) as u8 + 1], 10_000 + (i % 50_000) as u16));
        b.tick();
        b.feed(Input::Accepted { conn, listener: Listener::Web, peer });
        b.feed(Input::StreamData { conn, data: UPGRADE_V2.as_bytes() });
        let user = format!("alice-{}", i + 1);
        let add = format!(
            r#"{{"sylkrtc":"account-add","transaction":"a{i}","account":"{user}@{DOMAIN}","password":"{}"}}"#,
            ha1(&user)
        );
        b.tick();
        b.feed(Input::StreamData { conn, data: &client_text_frame(&add) });
    }
    let setup = (t.elapsed(), b.core - core0);
    let m1 = mem();
    let stats1 = b.gw.stats();
    ok &=
        check(b.ws.ready == n as u64 && b.ws.acks == n as u64, "every connection ready and its account-add acked", &b);
    report("connect + upgrade + account-add", n, setup, "connections/s");
    mem_line("connection with its account", m0, m1, n);
    println!("  stats: {}", fmt_stats(&stats1));

    // 2. Registrations.
    let t = Instant::now();
    let (core0, reg0) = (b.core, b.registrar.time);
    for start in (0..n).step_by(batch) {
        for i in start..(start + batch).min(n) {
            let conn = ConnId(i as u64 + 1);
            let reg = format!(
                r#"{{"sylkrtc":"account-register","transaction":"r{i}","account":"alice-{}@{DOMAIN}"}}"#,
                i + 1
            );
            b.tick();
            b.feed(Input::StreamData { conn, data: &client_text_frame(&reg) });
        }
        b.pump();
    }
    let register = (t.elapsed(), b.core - core0);
    let registered_at = b.now;
    let registrar_time = b.registrar.time - reg0;
    let m2 = mem();
    let stats2 = b.gw.stats();
    println!(
        "-- registration: {} REGISTERs answered ({} challenged, {} bound)",
        b.registrar.registers, b.registrar.challenged, b.registrar.bound
    );
    ok &= check(b.ws.registered == n as u64, "every account reached `registered`", &b);
    ok &= check(b.registrar.registers == 2 * n as u64, "exactly 2 REGISTERs per registration (no retransmissions)", &b);
    report("register (account-register -> registered)", n, register, "registrations/s");
    println!("  fake registrar: {:.3} s of the wall time", registrar_time.as_secs_f64());
    mem_line("registration (its 2 completed transactions still held)", m1, m2, n);
    println!("  stats: {}", fmt_stats(&stats2));

    // 3. Steady state.
    let t = Instant::now();
    let end = b.now + SETTLE;
    b.run_timers_until(end);
    let settle_time = t.elapsed();
    let m3 = mem();
    let stats3 = b.gw.stats();
    println!("-- steady state ({SETTLE:?} later; timers took {:.3} s)", settle_time.as_secs_f64());
    mem_line("registered account (connection + account + registration)", m0, m3, n);
    mem_line("registration alone", m1, m3, n);
    println!("  stats: {}", fmt_stats(&stats3));
    ok &= check(stats3.sip_transactions == 0, "no SIP transaction left once timer K ran", &b);
    ok &= check(stats3.sip_registrations == n, "one SIP registration per account", &b);

    // 4. Refreshes.
    let (bound0, registers0) = (b.registrar.bound, b.registrar.registers);
    let events0 = b.ws.events();
    let refresh_at = b.deadline;
    let t = Instant::now();
    let (core0, reg0) = (b.core, b.registrar.time);
    let far = b.now + Duration::from_secs(3600);
    while b.registrar.bound - bound0 < n as u64 && b.deadline < far {
        b.now = b.now.max(b.deadline);
        b.feed(Input::Timeout);
        b.pump();
    }
    let refresh = (t.elapsed(), b.core - core0);
    let registrar_time = b.registrar.time - reg0;
    let refreshed = b.registrar.bound - bound0;
    let stats4 = b.gw.stats();
    let m4 = mem();
    println!(
        "-- refresh: first refresh due {:.1} s after the registrations; {} REGISTERs, {} refreshed over {:.0} ms of virtual time",
        refresh_at.saturating_duration_since(registered_at).as_secs_f64(),
        b.registrar.registers - registers0,
        refreshed,
        b.now.saturating_duration_since(refresh_at).as_secs_f64() * 1e3
    );
    ok &= check(refreshed == n as u64, "every binding refreshed", &b);
    ok &= check(b.registrar.registers - registers0 == 2 * n as u64, "exactly 2 REGISTERs per refresh", &b);
    ok &= check(b.ws.events() == events0, "a refresh sends no event to the client", &b);
    report("refresh (timer -> 200 OK)", n, refresh, "refreshes/s");
    println!("  fake registrar: {:.3} s of the wall time", registrar_time.as_secs_f64());
    mem_line("account, growth over the refresh (2 completed transactions each still held)", m3, m4, n);
    println!("  stats: {}", fmt_stats(&stats4));

    // 5. Teardown: every connection goes away and unregisters.
    let (unbound0, registers0) = (b.registrar.unbound, b.registrar.registers);
    let t = Instant::now();
    let core0 = b.core;
    for start in (0..n).step_by(batch) {
        for i in start..(start + batch).min(n) {
            b.tick();
            b.feed(Input::StreamClosed { conn: ConnId(i as u64 + 1) });
        }
        b.pump();
    }
    let teardown = (t.elapsed(), b.core - core0);
    let unbound = b.registrar.unbound - unbound0;
    let end = b.now + SETTLE;
    b.run_timers_until(end);
    let stats5 = b.gw.stats();
    println!("-- teardown: {} REGISTERs, {unbound} bindings removed", b.registrar.registers - registers0);
    ok &= check(unbound == n as u64, "every binding removed (Expires: 0)", &b);
    report("close -> unregistered", n, teardown, "unregistrations/s");
    println!("  stats {SETTLE:?} later: {}", fmt_stats(&stats5));
    ok &= check(stats5 == Stats::default(), "every table empty", &b);
    mem_line("account left once everything closed (0 unless something leaks)", m0, mem(), n);
    b.print_odd();
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn check(cond: bool, what: &str, b: &Bench) -> bool {
    if !cond {
        println!("  !! NOT MET: {what}; ws {:?}; registrar {:?}", b.ws, b.registrar);
    }
    cond
}

fn kib_per(after: u64, before: u64, n: usize) -> f64 {
    (after as f64 - before as f64) / n as f64
}

fn report(what: &str, n: usize, (wall, core): (Duration, Duration), unit: &str) {
    println!(
        "-- {what}: {n} in {:.3} s wall = {:.0} {unit} (core alone {:.3} s = {:.0} {unit}, {:.2} µs each)",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        core.as_secs_f64(),
        n as f64 / core.as_secs_f64(),
        core.as_secs_f64() * 1e6 / n as f64
    );
}

fn fmt_stats(s: &Stats) -> String {
    format!(
        "connections {} websockets {} accounts {} timers {} sip_transactions {} sip_registrations {} sip_flows {}",
        s.connections, s.websockets, s.accounts, s.timers, s.sip_transactions, s.sip_registrations, s.sip_flows
    )
}

// ===== The in-memory drive loop =====

/// What the WebSocket side of the core sent, counted from the (unmasked) server frames.
#[derive(Debug, Default)]
struct WsCounts {
    ready: u64,
    acks: u64,
    errors: u64,
    registering: u64,
    registered: u64,
    failed: u64,
    other_text: u64,
    pings: u64,
    close_frames: u64,
    stream_closes: u64,
}

impl WsCounts {
    fn events(&self) -> u64 {
        self.registering + self.registered + self.failed + self.other_text + self.errors
    }
}

struct Bench {
    gw: Gateway,
    now: Instant,
    deadline: Instant,
    outs: Vec<Output>,
    /// Wall time spent in `handle_input` and `poll_output`.
    core: Duration,
    ws: WsCounts,
    /// Bytes of a frame split across writes (does not happen today).
    partial: HashMap<ConnId, Vec<u8>>,
    /// REGISTERs waiting for the registrar.
    queue: VecDeque<Vec<u8>>,
    registrar: Registrar,
    proxy: SocketAddr,
    /// Outputs this bench does not expect, by kind, with a first example.
    odd: HashMap<&'static str, (u64, String)>,
}

impl Bench {
    fn new() -> Self {
        let config = Config {
            // Pings (and their pong timeouts) would need answers over the 10 virtual minutes.
            websocket_ping_interval: 86_400,
            sip: SipConfig {
                listen: SIP_LOCAL.parse().expect("address"),
                outbound_sip_proxy: Some(PROXY.to_string()),
                ..SipConfig::default()
            },
            ..Config::default()
        };
        #[allow(clippy::disallowed_methods)] // the epoch of the virtual clock
        let epoch = Instant::now();
        let gw = Gateway::new(config, [7; 32], epoch, Duration::from_secs(1_767_225_600)).expect("config");
        let mut b = Self {
            gw,
            now: epoch,
            deadline: epoch,
            outs: Vec::new(),
            core: Duration::ZERO,
            ws: WsCounts::default(),
            partial: HashMap::new(),
            queue: VecDeque::new(),
            registrar: Registrar::default(),
            proxy: PROXY.parse().expect("address"),
            odd: HashMap::new(),
        };
        b.deadline = drain(&mut b.gw, &mut b.outs);
        b.handle_outputs();
        let local = SIP_LOCAL.parse().expect("address");
        b.feed(Input::UdpBound { socket: SIP_SOCKET, purpose: UdpPurpose::Sip, local });
        b
    }

    fn tick(&mut self) {
        self.now += TICK;
    }

    /// Feeds one input at `now`, drains, handles the outputs, and feeds `Timeout` for as long
    /// as the deadline is not in the future.
    fn feed(&mut self, input: Input<'_>) {
        self.feed_once(input);
        while self.deadline <= self.now {
            self.feed_once(Input::Timeout);
        }
    }

    fn feed_once(&mut self, input: Input<'_>) {
        let t = Instant::now();
        self.gw.handle_input(self.now, input);
        self.deadline = drain(&mut self.gw, &mut self.outs);
        self.core += t.elapsed();
        self.handle_outputs();
    }

    /// Lets the registrar answer every queued REGISTER (and whatever the answers cause).
    fn pump(&mut self) {
        while let Some(req) = self.queue.pop_front() {
            let t = Instant::now();
            let resp = self.registrar.answer(&req);
            self.registrar.time += t.elapsed();
            if let Some(resp) = resp {
                self.tick();
                let from = self.proxy;
                self.feed(Input::Datagram { socket: SIP_SOCKET, from, data: &resp });
            }
        }
    }

    /// Feeds every timer due up to `end` (answering what they send), then sets the clock to `end`.
    fn run_timers_until(&mut self, end: Instant) {
        while self.deadline <= end {
            self.now = self.now.max(self.deadline);
            self.feed(Input::Timeout);
            self.pump();
        }
        self.now = self.now.max(end);
    }

    fn handle_outputs(&mut self) {
        let outs = std::mem::take(&mut self.outs);
        for o in &outs {
            match o {
                Output::StreamWrite { conn, data } => self.frames(*conn, data),
                Output::StreamClose { conn } => {
                    self.ws.stream_closes += 1;
                    self.odd("stream close", format!("{conn}"));
                }
                Output::Datagram(t) if t.to == self.proxy && t.socket == SIP_SOCKET => {
                    self.queue.push_back(t.payload.clone())
                }
                Output::Datagram(t) => self.odd("datagram elsewhere", format!("{} -> {}", t.socket, t.to)),
                Output::Connect { conn, to } => self.odd("connect", format!("{conn} -> {to}")),
                Output::Resolve { name, .. } => self.odd("resolve", name.clone()),
                Output::BindUdp { socket, local, .. } => self.odd("bind udp", format!("{socket} {local}")),
                Output::CloseUdp { socket } => self.odd("close udp", format!("{socket}")),
                Output::Store { id, .. } => self.odd("store", format!("{id}")),
                Output::ToWorker { worker, .. } => self.odd("to worker", format!("{worker}")),
                Output::Timeout(_) => {}
            }
        }
        self.outs = outs;
        self.outs.clear();
    }

    fn odd(&mut self, kind: &'static str, example: String) {
        self.odd.entry(kind).or_insert((0, example)).0 += 1;
    }

    fn print_odd(&self) {
        for (kind, (count, example)) in &self.odd {
            println!("  odd: {count} × {kind} (first: {example})");
        }
    }

    /// Counts the sylkRTC messages in the server frames of one write.
    fn frames(&mut self, conn: ConnId, data: &[u8]) {
        let mut buf: &[u8] = data;
        let joined;
        if let Some(mut p) = self.partial.remove(&conn) {
            p.extend_from_slice(data);
            joined = p;
            buf = &joined;
        }
        if buf.starts_with(b"HTTP/1.1 ") {
            match buf.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(end) if buf.starts_with(b"HTTP/1.1 101 ") => buf = &buf[end + 4..],
                _ => {
                    self.odd("http response", String::from_utf8_lossy(buf).lines().next().unwrap_or("").to_string());
                    return;
                }
            }
        }
        while !buf.is_empty() {
            let Some((frame, used)) = parse_frame(buf) else {
                self.partial.insert(conn, buf.to_vec());
                return;
            };
            buf = &buf[used..];
            match frame.opcode {
                opcode::TEXT => self.text(&frame.payload),
                opcode::PING => self.ws.pings += 1,
                opcode::CLOSE => self.ws.close_frames += 1,
                _ => self.odd("frame", format!("opcode {}", frame.opcode)),
            }
        }
    }

    fn text(&mut self, t: &[u8]) {
        let has = |needle: &[u8]| t.windows(needle.len()).any(|w| w == needle);
        if t.starts_with(br#"{"sylkrtc":"ack""#) {
            self.ws.acks += 1;
        } else if t.starts_with(br#"{"sylkrtc":"ready-event""#) {
            self.ws.ready += 1;
        } else if t.starts_with(br#"{"sylkrtc":"error""#) {
            self.ws.errors += 1;
            self.odd("error", String::from_utf8_lossy(t).into_owned());
        } else if has(br#""event":"registration-state""#) {
            if has(br#""state":"registered""#) {
                self.ws.registered += 1;
            } else if has(br#""state":"registering""#) {
                self.ws.registering += 1;
            } else {
                self.ws.failed += 1;
                self.odd("registration state", String::from_utf8_lossy(t).into_owned());
            }
        } else {
            self.ws.other_text += 1;
            self.odd("text", String::from_utf8_lossy(t).into_owned());
        }
    }
}

fn drain(gw: &mut Gateway, outs: &mut Vec<Output>) -> Instant {
    loop {
        match gw.poll_output() {
            Output::Timeout(at) => return at,
            o => outs.push(o),
        }
    }
}

// ===== The fake registrar =====

/// Answers REGISTERs from their text alone: 401 (MD5, qop=auth) without credentials, 200 OK with
/// the Contact echoed (`;expires=600`, or no Contact for `Expires: 0`) when the digest response
/// is right, 403 when it is wrong.
#[derive(Debug, Default)]
struct Registrar {
    nonces: u64,
    registers: u64,
    challenged: u64,
    /// 200 OK for a REGISTER with expires > 0.
    bound: u64,
    /// 200 OK for a REGISTER with expires 0.
    unbound: u64,
    bad_auth: u64,
    malformed: u64,
    time: Duration,
}

impl Registrar {
    fn answer(&mut self, req: &[u8]) -> Option<Vec<u8>> {
        let Some(msg) = std::str::from_utf8(req).ok().and_then(Register::parse) else {
            self.malformed += 1;
            return None;
        };
        self.registers += 1;
        let to_tag = "fakereg";
        let mut out = format!(
            "Via: {}\r\nFrom: {}\r\nTo: {};tag={to_tag}\r\nCall-ID: {}\r\nCSeq: {}\r\n",
            msg.via, msg.from, msg.to, msg.call_id, msg.cseq
        );
        let Some(auth) = msg.authorization else {
            self.challenged += 1;
            self.nonces += 1;
            let nonce = format!("{:016x}{:08x}", self.nonces.wrapping_mul(0x9e37_79b9_7f4a_7c15), self.nonces);
            out.push_str(&format!(
                "WWW-Authenticate: Digest realm=\"{DOMAIN}\", nonce=\"{nonce}\", qop=\"auth\", algorithm=MD5\r\n"
            ));
            return Some(response("401 Unauthorized", &out));
        };
        if !digest_ok(auth) {
            self.bad_auth += 1;
            return Some(response("403 Forbidden", &out));
        }
        let expires = msg.expires.unwrap_or(3600);
        if expires == 0 {
            self.unbound += 1;
        } else {
            self.bound += 1;
            out.push_str(&format!("Contact: <{}>;expires={GRANTED}\r\n", msg.contact_uri));
        }
        Some(response("200 OK", &out))
    }
}

fn response(status: &str, headers: &str) -> Vec<u8> {
    format!("SIP/2.0 {status}\r\n{headers}Server: fake-registrar\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

/// The parts of a REGISTER the registrar reads.
struct Register<'a> {
    via: &'a str,
    from: &'a str,
    to: &'a str,
    call_id: &'a str,
    cseq: &'a str,
    contact_uri: &'a str,
    expires: Option<u32>,
    authorization: Option<&'a str>,
}

impl<'a> Register<'a> {
    fn parse(text: &'a str) -> Option<Self> {
        let head = &text[..text.find("\r\n\r\n")?];
        let mut lines = head.split("\r\n");
        if !lines.next()?.starts_with("REGISTER ") {
            return None;
        }
        let (mut via, mut from, mut to, mut call_id, mut cseq, mut contact) = (None, None, None, None, None, None);
        let (mut expires_header, mut authorization) = (None, None);
        for line in lines {
            let (name, value) = line.split_once(':')?;
            let (name, value) = (name.trim(), value.trim());
            let is = |long: &str, short: &str| name.eq_ignore_ascii_case(long) || name.eq_ignore_ascii_case(short);
            if is("via", "v") {
                via.get_or_insert(value); // the top Via
            } else if is("from", "f") {
                from = Some(value);
            } else if is("to", "t") {
                to = Some(value);
            } else if is("call-id", "i") {
                call_id = Some(value);
            } else if name.eq_ignore_ascii_case("cseq") {
                cseq = Some(value);
            } else if is("contact", "m") {
                contact = Some(value);
            } else if name.eq_ignore_ascii_case("expires") {
                expires_header = value.parse().ok();
            } else if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value);
            }
        }
        let contact = contact?;
        let contact_uri = &contact[contact.find('<')? + 1..contact.find('>')?];
        let contact_expires = contact[contact.find('>')?..]
            .split(';')
            .find_map(|p| p.trim().strip_prefix("expires="))
            .and_then(|v| v.parse().ok());
        Some(Self {
            via: via?,
            from: from?,
            to: to?,
            call_id: call_id?,
            cseq: cseq?,
            contact_uri,
            expires: contact_expires.or(expires_header),
            authorization,
        })
    }
}

/// Checks an `Authorization: Digest …` (MD5, qop=auth) against the users' password.
fn digest_ok(value: &str) -> bool {
    let Some(params) = value.strip_prefix("Digest ") else { return false };
    let mut p: HashMap<&str, &str> = HashMap::new();
    for item in params.split(',') {
        if let Some((k, v)) = item.split_once('=') {
            p.insert(k.trim(), v.trim().trim_matches('"'));
        }
    }
    let get = |k: &str| p.get(k).copied().unwrap_or("");
    if get("realm") != DOMAIN || get("qop") != "auth" {
        return false;
    }
    let md5 = |s: String| Algorithm::Md5.hash_hex(s.as_bytes());
    let ha1 = md5(format!("{}:{DOMAIN}:{PASSWORD}", get("username")));
    let ha2 = md5(format!("REGISTER:{}", get("uri")));
    let expected = md5(format!("{ha1}:{}:{}:{}:auth:{ha2}", get("nonce"), get("nc"), get("cnonce")));
    expected == get("response")
}
