//! Call load benchmark for `sylkgw-mio` (prints figures; not a test).
//!
//! `bench_calls [--calls N[,N...]] [--seconds S] [--threads T] [--concurrency K] [--media-during-setup] [-v]`
//! (defaults: N = 100,500,1000, S = 10, T = 2 client threads, K = 50 call setups in flight).
//!
//! For each N, with a fresh gateway:
//!
//! 1. An in-process SIP far end starts on 127.0.0.1 (one UDP socket): it answers every INVITE
//!    with `100` and `200 OK` (PCMU 0 + telephone-event 101, one RTP port shared by every call),
//!    ACK needs nothing, BYE and anything else get `200`. Its RTP socket echoes every datagram
//!    back to where it came from (the gateway's per-call RTP port), so each call is an RTP echo.
//! 2. `target/release/sylkgw-mio` (the debug build, with a warning, when there is no release
//!    build; `$SYLKGW_BIN_DIR` overrides) starts on loopback with
//!    `--outbound-proxy <far end> --rtp-ports 20000-29999 --media-address 127.0.0.1` and a config
//!    file raising `max_connections_per_ip` (the default 100 would refuse the load client).
//!    `RLIMIT_NOFILE` is raised to the hard limit first, so the gateway inherits it.
//! 3. N str0m clients (full ICE, controlling; DTLS-SRTP; RTP mode; PCMU + telephone-event), each
//!    with its own UDP socket on 127.0.0.1:0 and its own WebSocket (`sylkRTC-2`), spread over T
//!    threads (epoll over the sockets, str0m polled on its timeouts). Each client adds an
//!    account (a guest: no registration), then, at most K setups in flight overall, sends
//!    `session-create` with its offer, applies the `accepted` answer and waits for
//!    `established`. Call setups per second = calls established / (last `established` − first
//!    `session-create`).
//! 4. Once connected, each client sends a 20 ms PCMU packet (160-byte payload carrying a send
//!    timestamp) every 20 ms; the echo comes back through the gateway. After a 2 s warm-up, a
//!    window of S seconds measures: loss (packets sent in the window vs. their echoes received,
//!    counted after a 1 s settle; split into browser→far end, counted by the echo, and back),
//!    round-trip time p50/p99 (browser → gateway → far end → gateway → browser: what the gateway
//!    adds, twice, plus the client's own scheduling), the same for a plain UDP probe to the echo
//!    socket run in the same client loop (the baseline without the gateway), the gateway's CPU
//!    (utime + stime from /proc/PID/stat, % of one core, and per call), its VmRSS before the
//!    calls and during them (per call), and the load client's own CPU (per thread), since it
//!    shares the machine's cores with the gateway.
//! 5. The clients close their WebSockets (the gateway hangs up: BYE), the gateway gets SIGTERM.
//!
//! All traffic stays on 127.0.0.1.

use serde_json::Value;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use str0m::RtcConfig;
use sylkgw_tests::webrtc_client::{self, ClientOutput, Video, WebRtcClient};
use sylkgw_tests::{opcode, parse_frame, vm_rss_kib, RawWs, Server, TempDir};

/// Marks the payloads of our packets: `MAGIC`, sequence (u32), send time (ns since the epoch).
const MAGIC: &[u8; 4] = b"SYLK";
/// The same for the baseline probe's packets (not counted by the echo).
const PROBE_MAGIC: &[u8; 4] = b"PRBE";
const PAYLOAD_LEN: usize = 160;
const PTIME: Duration = Duration::from_millis(20);
const TELE: u8 = 101;
/// A setup taking longer than this counts as failed.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
const WARMUP: Duration = Duration::from_secs(2);
const SETTLE: Duration = Duration::from_secs(1);
/// The receive buffer asked for on every UDP socket of the load client and far end.
const RCVBUF: i32 = 1 << 20;

#[derive(Debug, Clone)]
struct Opts {
    calls: Vec<usize>,
    seconds: u64,
    threads: usize,
    concurrency: usize,
    /// Established calls send media while the others are still being set up.
    media_during_setup: bool,
    verbose: bool,
}

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        calls: vec![100, 500, 1000],
        seconds: 10,
        threads: 2,
        concurrency: 50,
        media_during_setup: false,
        verbose: false,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(a) = argv.next() {
        let mut value = |name: &str| argv.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--calls" => {
                o.calls = value("--calls")?
                    .split(',')
                    .map(|s| s.trim().parse::<usize>().map_err(|e| format!("--calls {s:?}: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            "--seconds" => o.seconds = value("--seconds")?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--threads" => o.threads = value("--threads")?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--concurrency" => {
                o.concurrency = value("--concurrency")?.parse().map_err(|e| format!("--concurrency: {e}"))?;
            }
            "--media-during-setup" => o.media_during_setup = true,
            "-v" => o.verbose = true,
            "-h" | "--help" => {
                return Err(
                    "usage: bench_calls [--calls N[,N...]] [--seconds S] [--threads T] [--concurrency K] [--media-during-setup] [-v]".into()
                )
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if o.calls.contains(&0) || o.seconds == 0 || o.threads == 0 || o.concurrency == 0 {
        return Err("N, S, T and K must be at least 1".into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let (soft, hard) = sylkgw_tests::bench::raise_nofile();
    let bin = sylkgw_tests::bench::locate_binary();
    println!(
        "==== bench_calls: N = {:?}, {} s measured per N, {} client threads, {} setups in flight; {} cores; RLIMIT_NOFILE {soft}/{hard} ====",
        opts.calls,
        opts.seconds,
        opts.threads,
        opts.concurrency,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("gateway binary: {}", bin.display());
    let mut rows = Vec::new();
    let mut ok = true;
    for &n in &opts.calls {
        if (soft as usize) < 2 * n + 200 {
            println!(
                "  !! RLIMIT_NOFILE {soft} is too low for {n} calls (2 descriptors per call here, 3 in the gateway)"
            );
        }
        match run(&bin, n, &opts) {
            Ok(fig) => {
                ok &= fig.established == n && fig.dropped_calls == 0;
                rows.push(fig);
            }
            Err(e) => {
                ok = false;
                println!("  !! N = {n}: {e}");
            }
        }
    }
    println!();
    println!("==== summary (sylkgw-mio, loopback, {} s windows) ====", opts.seconds);
    println!(
        "{:>6} {:>9} {:>10} {:>8} {:>16} {:>16} {:>10} {:>12} {:>10} {:>11} {:>10}",
        "calls",
        "setups/s",
        "estab.",
        "loss %",
        "RTT p50/p99 ms",
        "base p50/p99 ms",
        "gw CPU %",
        "CPU %/call",
        "gw RSS MiB",
        "KiB/call",
        "client CPU%"
    );
    for f in &rows {
        println!(
            "{:>6} {:>9.0} {:>10} {:>8.3} {:>16} {:>16} {:>10.1} {:>12.4} {:>10.1} {:>11.1} {:>10.0}",
            f.n,
            f.setups_per_s,
            format!("{}/{}", f.established, f.n),
            f.loss_pct,
            format!("{:.2}/{:.2}", f.rtt_p50_ms, f.rtt_p99_ms),
            format!("{:.2}/{:.2}", f.base_p50_ms, f.base_p99_ms),
            f.gw_cpu_pct,
            f.gw_cpu_pct / f.n as f64,
            f.rss_calls_kib as f64 / 1024.0,
            f.kib_per_call,
            f.client_cpu_pct
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The figures of one N.
#[derive(Debug, Default)]
struct Figures {
    n: usize,
    established: usize,
    setups_per_s: f64,
    loss_pct: f64,
    rtt_p50_ms: f64,
    rtt_p99_ms: f64,
    base_p50_ms: f64,
    base_p99_ms: f64,
    gw_cpu_pct: f64,
    rss_calls_kib: u64,
    kib_per_call: f64,
    client_cpu_pct: f64,
    dropped_calls: usize,
}

// ===== Shared state of the load client =====

/// Phases the main thread moves the client threads through.
mod phase {
    /// Accounts added; waiting.
    pub const WAIT: u8 = 0;
    /// Place the calls (media only with `--media-during-setup`).
    pub const CALL: u8 = 1;
    /// Every call sends media.
    pub const MEDIA: u8 = 2;
    /// Stop sending media (the settle time).
    pub const QUIET: u8 = 3;
    /// Report and hang up (close the WebSockets).
    pub const END: u8 = 4;
}

struct Shared {
    epoch: Instant,
    phase: AtomicU8,
    /// The measurement window, ns since `epoch` (`u64::MAX` until set).
    window_start: AtomicU64,
    window_end: AtomicU64,
    /// Setups in flight, over every client thread.
    in_flight: AtomicU64,
    concurrency: u64,
    media_during_setup: bool,
}

impl Shared {
    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn in_window(&self, ns: u64) -> bool {
        ns >= self.window_start.load(Ordering::Relaxed) && ns < self.window_end.load(Ordering::Relaxed)
    }
}

/// The RTT samples and counts of a set of packets.
#[derive(Debug, Default)]
struct Media {
    /// Packets sent in the window.
    sent: u64,
    /// Echoes received of packets sent in the window.
    received: u64,
    /// Their round-trip times, µs.
    rtt_us: Vec<u32>,
    /// Sends that were due but skipped because the thread came late by more than one ptime.
    slips: u64,
}

impl Media {
    fn merge(&mut self, o: Media) {
        self.sent += o.sent;
        self.received += o.received;
        self.rtt_us.extend(o.rtt_us);
        self.slips += o.slips;
    }
}

/// What a client thread reports.
enum Report {
    /// Its WebSockets are open and accounts added (its thread id, for CPU accounting), or why not.
    Ready { tid: i32, error: Option<String> },
    /// Every call it placed is established or failed: when each was established, and
    /// session-create → established per call.
    SetupDone { established: Vec<Instant>, setup: Vec<Duration>, failed: Vec<String> },
    /// The end: media figures through the gateway and of the baseline probe.
    Final { calls: Media, probe: Media, dropped: Vec<String>, connected: usize },
}

// ===== The far end =====

struct FarEnd {
    sip: SocketAddr,
    rtp: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Packets echoed whose send time is in the window.
    echoed_in_window: Arc<AtomicU64>,
    /// Calls (distinct Call-IDs of INVITEs) and BYEs.
    invites: Arc<AtomicU64>,
    byes: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn set_rcvbuf(fd: RawFd, bytes: i32) {
    // SAFETY: setsockopt reads `bytes` (an int) for its size; fd is an open socket of ours.
    let _ = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
}

/// An even RTP port with its RTCP neighbour, both on 127.0.0.1 (below the ephemeral range).
fn bind_rtp_pair() -> io::Result<(UdpSocket, UdpSocket)> {
    for port in (30000u16..32000).step_by(2) {
        let Ok(rtp) = UdpSocket::bind(("127.0.0.1", port)) else { continue };
        let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)) else { continue };
        return Ok((rtp, rtcp));
    }
    Err(io::Error::other("no free RTP pair in 30000-31999"))
}

impl FarEnd {
    fn start(shared: Arc<Shared>) -> io::Result<Self> {
        let sip = UdpSocket::bind("127.0.0.1:0")?;
        let (rtp, rtcp) = bind_rtp_pair()?;
        for s in [&sip, &rtp, &rtcp] {
            s.set_read_timeout(Some(Duration::from_millis(100)))?;
            set_rcvbuf(s.as_raw_fd(), 4 * RCVBUF);
        }
        let (sip_addr, rtp_addr) = (sip.local_addr()?, rtp.local_addr()?);
        let stop = Arc::new(AtomicBool::new(false));
        let echoed_in_window = Arc::new(AtomicU64::new(0));
        let invites = Arc::new(AtomicU64::new(0));
        let byes = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        {
            let (stop, invites, byes) = (stop.clone(), invites.clone(), byes.clone());
            threads.push(std::thread::spawn(move || far_sip(&sip, sip_addr, rtp_addr.port(), &stop, &invites, &byes)));
        }
        {
            let (stop, echoed) = (stop.clone(), echoed_in_window.clone());
            threads.push(std::thread::spawn(move || echo(&rtp, &shared, &stop, &echoed)));
        }
        {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let _ = rtcp.recv_from(&mut buf);
                }
            }));
        }
        Ok(Self { sip: sip_addr, rtp: rtp_addr, stop, echoed_in_window, invites, byes, threads })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// The RTP echo: every datagram goes back to its source. Counts our packets sent in the window.
fn echo(sock: &UdpSocket, shared: &Shared, stop: &AtomicBool, echoed: &AtomicU64) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
        let _ = sock.send_to(&buf[..n], from);
        if let Some(p) = rtp_payload(&buf[..n]) {
            if let Some((_, sent_ns)) = parse_payload(p) {
                if shared.in_window(sent_ns) {
                    echoed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The payload of a plain RTP packet.
fn rtp_payload(p: &[u8]) -> Option<&[u8]> {
    if p.len() < 12 || p[0] >> 6 != 2 {
        return None;
    }
    let mut off = 12 + 4 * usize::from(p[0] & 0x0f);
    if p[0] & 0x10 != 0 {
        let ext = p.get(off + 2..off + 4)?;
        off += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let mut end = p.len();
    if p[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*p.last()?))?;
    }
    p.get(off..end)
}

/// Our payload (`magic`): (sequence, send time in ns since the epoch).
fn parse_payload_of(p: &[u8], magic: &[u8; 4]) -> Option<(u32, u64)> {
    if p.len() < 16 || &p[..4] != magic {
        return None;
    }
    Some((u32::from_be_bytes(p[4..8].try_into().ok()?), u64::from_be_bytes(p[8..16].try_into().ok()?)))
}

/// A call's payload: (sequence, send time in ns since the epoch).
fn parse_payload(p: &[u8]) -> Option<(u32, u64)> {
    parse_payload_of(p, MAGIC)
}

fn make_payload(magic: &[u8; 4], seq: u32, sent_ns: u64) -> [u8; PAYLOAD_LEN] {
    let mut p = [0xffu8; PAYLOAD_LEN]; // µ-law silence
    p[..4].copy_from_slice(magic);
    p[4..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(&sent_ns.to_be_bytes());
    p
}

/// Header `name` of a SIP message (full form, case-insensitive): every value in order.
fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    let head = msg.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    headers(msg, name).first().copied().unwrap_or("")
}

/// A response to `req` (the pattern of call_sim.rs): `tag` goes on To unless it has one.
fn reply(req: &str, code: u16, reason: &str, tag: &str, extra: &str, body: &str) -> String {
    let to = header(req, "To");
    let to = if to.contains(";tag=") || code == 100 { to.to_string() } else { format!("{to};tag={tag}") };
    let vias: String = headers(req, "Via").iter().map(|v| format!("Via: {v}\r\n")).collect();
    format!(
        "SIP/2.0 {code} {reason}\r\n{vias}From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        header(req, "From"),
        header(req, "Call-ID"),
        header(req, "CSeq"),
        body.len()
    )
}

fn far_sdp(rtp_port: u16) -> String {
    format!(
        "v=0\r\no=far 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0 {TELE}\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:{TELE} telephone-event/8000\r\na=fmtp:{TELE} 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

/// The SIP far end: 100 + 200 to INVITE, nothing to ACK, 200 to the rest; responses ignored.
fn far_sip(sock: &UdpSocket, me: SocketAddr, rtp_port: u16, stop: &AtomicBool, invites: &AtomicU64, byes: &AtomicU64) {
    let mut buf = vec![0u8; 65536];
    let sdp = far_sdp(rtp_port);
    let contact = format!("Contact: <sip:echo@{me}>\r\n");
    let mut dialogs = std::collections::HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
        let Ok(text) = std::str::from_utf8(&buf[..n]) else { continue };
        if text.starts_with("SIP/2.0") || text.trim().is_empty() {
            continue;
        }
        let method = text.split(' ').next().unwrap_or("");
        // One To tag per dialog, the same for retransmissions.
        let tag = format!("far{:x}", fnv1a(header(text, "Call-ID").as_bytes()));
        let out = match method {
            "INVITE" => {
                if dialogs.insert(header(text, "Call-ID").to_string()) {
                    invites.fetch_add(1, Ordering::Relaxed);
                }
                let _ = sock.send_to(reply(text, 100, "Trying", &tag, "", "").as_bytes(), from);
                let extra = format!("{contact}Content-Type: application/sdp\r\n");
                reply(text, 200, "OK", &tag, &extra, &sdp)
            }
            "ACK" => continue,
            "BYE" => {
                byes.fetch_add(1, Ordering::Relaxed);
                reply(text, 200, "OK", &tag, "", "")
            }
            _ => reply(text, 200, "OK", &tag, "", ""),
        };
        let _ = sock.send_to(out.as_bytes(), from);
    }
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3))
}

// ===== The load client =====

/// epoll over our sockets (level-triggered).
struct Epoll(RawFd);

impl Epoll {
    fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes a flag and returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(fd))
    }

    fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        // SAFETY: epoll_ctl reads the event struct we pass; both descriptors are open.
        if unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn del(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`.
        unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// Waits up to `timeout_ms`; the tokens that are ready.
    fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32, out: &mut Vec<u64>) {
        out.clear();
        // SAFETY: the kernel writes at most `events.len()` entries into `events`.
        let n = unsafe { libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as i32, timeout_ms) };
        for ev in events.iter().take(n.max(0) as usize) {
            out.push(ev.u64);
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor.
        unsafe { libc::close(self.0) };
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CallState {
    Idle,
    /// `session-create` sent at this instant.
    Offered(Instant),
    Established,
    Failed(String),
}

struct Client {
    idx: usize,
    sock: UdpSocket,
    local: SocketAddr,
    ws: TcpStream,
    ws_buf: Vec<u8>,
    /// The WebSocket reached its end (taken out of epoll).
    ws_closed: bool,
    /// The call's browser (str0m), while a call is on.
    rtc: Option<WebRtcClient>,
    state: CallState,
    next_send: Option<Instant>,
    rtp_seq: u64,
    pkt_seq: u32,
}

/// A masked client frame on a non-blocking stream (retries briefly on a full send buffer).
fn ws_send(stream: &mut TcpStream, op: u8, payload: &[u8]) -> io::Result<()> {
    const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x08];
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x80 | op);
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&MASK);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    let mut off = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while off < f.len() {
        match stream.write(&f[off..]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "WebSocket closed")),
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Opens client `idx`'s WebSocket and UDP socket and adds its account (blocking).
fn open_client(idx: usize, gw: SocketAddr) -> io::Result<Client> {
    let (mut ws, _) = RawWs::connect(gw, "sylkRTC-2")?;
    let ready = ws.recv_text()?;
    if ready != r#"{"sylkrtc":"ready-event"}"# {
        return Err(io::Error::other(format!("expected the ready-event, got {ready}")));
    }
    let add = format!(
        r#"{{"sylkrtc":"account-add","transaction":"a{idx}","account":"load{idx}@127.0.0.1","password":"0123456789abcdef0123456789abcdef"}}"#
    );
    ws.send_text(&add)?;
    let ack = ws.recv_text()?;
    if !ack.starts_with(r#"{"sylkrtc":"ack""#) {
        return Err(io::Error::other(format!("account-add: {ack}")));
    }
    // Nothing else is sent before a session-create, so RawWs's buffer is empty now.
    let RawWs { stream, .. } = ws;
    stream.set_nonblocking(true)?;
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_nonblocking(true)?;
    set_rcvbuf(sock.as_raw_fd(), RCVBUF);
    let local = sock.local_addr()?;
    Ok(Client {
        idx,
        sock,
        local,
        ws: stream,
        ws_buf: Vec::new(),
        ws_closed: false,
        rtc: None,
        state: CallState::Idle,
        next_send: None,
        rtp_seq: 1,
        pkt_seq: 0,
    })
}

/// One client thread's state.
struct Shard<'a> {
    shared: &'a Shared,
    epoll: &'a Epoll,
    clients: Vec<Client>,
    config: RtcConfig,
    calls: Media,
    probe: Media,
    established: Vec<Instant>,
    setup: Vec<Duration>,
    failed: Vec<String>,
    /// Calls that ended after they were established.
    dropped: Vec<String>,
    buf: Vec<u8>,
}

/// Token of the probe socket.
const PROBE: u64 = u64::MAX;

impl Shard<'_> {
    /// Feeds str0m's outputs to the socket and our bookkeeping.
    fn drain(&mut self, c: usize, now: Instant) {
        let client = &mut self.clients[c];
        let Some(rtc) = client.rtc.as_mut() else { return };
        let (sock, shared, calls, next_send) = (&client.sock, self.shared, &mut self.calls, &mut client.next_send);
        let result = rtc.poll(|o| match o {
            ClientOutput::Transmit { to, data, .. } => {
                let _ = sock.send_to(&data, to);
            }
            ClientOutput::Connected => *next_send = Some(now),
            ClientOutput::Rtp(p) => {
                if let Some((_, sent_ns)) = parse_payload(&p.payload) {
                    if shared.in_window(sent_ns) {
                        calls.received += 1;
                        let rtt = shared.ns(Instant::now()).saturating_sub(sent_ns);
                        calls.rtt_us.push((rtt / 1000).min(u64::from(u32::MAX)) as u32);
                    }
                }
            }
            ClientOutput::KeyframeRequest(..) => {}
        });
        if let Err(e) = result {
            self.fail(c, format!("str0m: {e}"));
        }
    }

    fn start_call(&mut self, c: usize, now: Instant) {
        let client = &mut self.clients[c];
        let mut rtc = None;
        let offer = WebRtcClient::new(self.config.clone(), None, now, client.local).and_then(|mut r| {
            let offer = r.offer(false)?;
            rtc = Some(r);
            Ok(offer)
        });
        let offer = match offer {
            Ok(o) => o,
            Err(e) => {
                client.state = CallState::Failed(format!("client {}: offer: {e}", client.idx));
                return;
            }
        };
        client.rtc = rtc;
        let req = serde_json::json!({
            "sylkrtc": "session-create", "transaction": format!("c{}", client.idx),
            "account": format!("load{}@127.0.0.1", client.idx), "session": format!("s{}", client.idx),
            "uri": "echo@127.0.0.1", "sdp": offer,
        });
        match ws_send(&mut client.ws, opcode::TEXT, req.to_string().as_bytes()) {
            Ok(()) => {
                client.state = CallState::Offered(now);
                self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => client.state = CallState::Failed(format!("client {}: session-create: {e}", client.idx)),
        }
        self.drain(c, now);
    }

    /// Reads what the UDP socket holds into str0m.
    fn on_udp(&mut self, c: usize) {
        loop {
            let client = &mut self.clients[c];
            let Ok((n, from)) = client.sock.recv_from(&mut self.buf) else { return };
            let now = Instant::now();
            let Some(rtc) = client.rtc.as_mut() else { continue };
            if rtc.receive(now, from, client.local, &self.buf[..n]).is_ok() {
                self.drain(c, now);
            }
        }
    }

    /// Reads the WebSocket and handles its events.
    fn on_ws(&mut self, c: usize) {
        let mut chunk = [0u8; 16384];
        let mut closed = false;
        loop {
            match self.clients[c].ws.read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => self.clients[c].ws_buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        while let Some((frame, used)) = parse_frame(&self.clients[c].ws_buf) {
            self.clients[c].ws_buf.drain(..used);
            match frame.opcode {
                opcode::TEXT => {
                    let Ok(v) = serde_json::from_slice::<Value>(&frame.payload) else { continue };
                    self.on_event(c, &v);
                }
                opcode::PING => {
                    let _ = ws_send(&mut self.clients[c].ws, opcode::PONG, &frame.payload);
                }
                opcode::CLOSE => closed = true,
                _ => {}
            }
        }
        if closed {
            let client = &mut self.clients[c];
            client.ws_closed = true;
            self.epoll.del(client.ws.as_raw_fd());
            if self.shared.phase.load(Ordering::Relaxed) < phase::END {
                self.fail(c, "the gateway closed the WebSocket".into());
            }
        }
    }

    /// Ends client `c`'s call (counted as failed, or dropped when it was established).
    fn fail(&mut self, c: usize, why: String) {
        let client = &mut self.clients[c];
        let why = format!("client {}: {why}", client.idx);
        match std::mem::replace(&mut client.state, CallState::Failed(why.clone())) {
            CallState::Established => self.dropped.push(why),
            CallState::Offered(_) => {
                self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            }
            CallState::Idle => {}
            CallState::Failed(first) => {
                client.state = CallState::Failed(first);
                return;
            }
        }
        client.rtc = None;
    }

    fn on_event(&mut self, c: usize, v: &Value) {
        match v["sylkrtc"].as_str() {
            Some("error") => self.fail(c, format!("error: {v}")),
            Some("session-event") if v["event"] == "state" => {
                let now = Instant::now();
                match v["state"].as_str() {
                    Some("accepted") => {
                        let Some(sdp) = v["sdp"].as_str() else { return };
                        let client = &mut self.clients[c];
                        let Some(rtc) = client.rtc.as_mut().filter(|r| r.pending.is_some()) else { return };
                        match rtc.accept_answer(sdp) {
                            Ok(()) => self.drain(c, now),
                            Err(e) => self.fail(c, format!("accept_answer: {e}")),
                        }
                    }
                    Some("established") => {
                        if let CallState::Offered(at) = self.clients[c].state {
                            self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
                            self.established.push(now);
                            self.setup.push(now - at);
                            self.clients[c].state = CallState::Established;
                        }
                    }
                    Some("terminated") => {
                        let reason = v["reason"].as_str().unwrap_or("?").to_string();
                        self.fail(c, format!("terminated: {reason}"));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// Timers and media of every client; returns the next instant something is due.
    fn scan(&mut self, now: Instant, sending: bool) -> Instant {
        let mut next = now + Duration::from_millis(50);
        for c in 0..self.clients.len() {
            let client = &mut self.clients[c];
            let Some(rtc) = client.rtc.as_mut() else { continue };
            if rtc.timeout <= now {
                if rtc.handle_timeout(now).is_err() {
                    continue;
                }
                self.drain(c, now);
            }
            if let CallState::Offered(at) = self.clients[c].state {
                if now - at > SETUP_TIMEOUT {
                    self.fail(c, format!("not established after {SETUP_TIMEOUT:?}"));
                    continue;
                }
            }
            if sending {
                self.send_media(c, now);
            }
            let client = &self.clients[c];
            if let Some(rtc) = &client.rtc {
                next = next.min(rtc.timeout);
            }
            if let (Some(t), true) = (client.next_send, sending) {
                next = next.min(t);
            }
        }
        next
    }

    fn send_media(&mut self, c: usize, now: Instant) {
        let client = &mut self.clients[c];
        let Some(due) = client.next_send else { return };
        if !client.rtc.as_ref().is_some_and(|r| r.connected) || due > now {
            return;
        }
        let mut next = due + PTIME;
        if next <= now {
            // More than a ptime late: skip what was missed rather than bursting.
            if self.shared.in_window(self.shared.ns(now)) {
                self.calls.slips += ((now - due).as_nanos() / PTIME.as_nanos()) as u64;
            }
            next = now + PTIME;
        }
        client.next_send = Some(next);
        let Some(rtc) = client.rtc.as_mut() else { return };
        let Some(mid) = rtc.audio else { return };
        let sent_ns = self.shared.ns(now);
        let payload = make_payload(MAGIC, client.pkt_seq, sent_ns);
        client.pkt_seq = client.pkt_seq.wrapping_add(1);
        let seq = client.rtp_seq;
        client.rtp_seq += 1;
        if !rtc.write_rtp(now, mid, (0, seq, (seq * 160) as u32, false), &payload[..]) {
            return;
        }
        if self.shared.in_window(sent_ns) {
            self.calls.sent += 1;
        }
        self.drain(c, now);
    }
}

/// One client thread: `indices` are its clients. `probe`: the baseline probe's target.
fn client_thread(
    shared: &Shared,
    gw: SocketAddr,
    indices: &[usize],
    config: RtcConfig,
    probe_to: Option<SocketAddr>,
    tx: &mpsc::Sender<Report>,
) {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
    let epoll = match Epoll::new() {
        Ok(e) => e,
        Err(e) => {
            let _ = tx.send(Report::Ready { tid, error: Some(format!("epoll: {e}")) });
            return;
        }
    };
    let mut clients = Vec::with_capacity(indices.len());
    for &idx in indices {
        let opened = open_client(idx, gw).and_then(|c| {
            let slot = clients.len() as u64;
            epoll.add(c.sock.as_raw_fd(), slot * 2)?;
            epoll.add(c.ws.as_raw_fd(), slot * 2 + 1)?;
            Ok(c)
        });
        match opened {
            Ok(c) => clients.push(c),
            Err(e) => {
                let _ = tx.send(Report::Ready { tid, error: Some(format!("client {idx}: {e}")) });
                return;
            }
        }
    }
    let probe = match probe_to {
        Some(to) => {
            let s = UdpSocket::bind("127.0.0.1:0").and_then(|s| {
                s.connect(to)?;
                s.set_nonblocking(true)?;
                epoll.add(s.as_raw_fd(), PROBE)?;
                Ok(s)
            });
            match s {
                Ok(s) => Some(s),
                Err(e) => {
                    let _ = tx.send(Report::Ready { tid, error: Some(format!("probe socket: {e}")) });
                    return;
                }
            }
        }
        None => None,
    };
    let _ = tx.send(Report::Ready { tid, error: None });
    while shared.phase.load(Ordering::Relaxed) == phase::WAIT {
        std::thread::sleep(Duration::from_millis(1));
    }

    let mut shard = Shard {
        shared,
        epoll: &epoll,
        clients,
        config,
        calls: Media::default(),
        probe: Media::default(),
        established: Vec::new(),
        setup: Vec::new(),
        failed: Vec::new(),
        dropped: Vec::new(),
        buf: vec![0u8; 4096],
    };
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut ready = Vec::with_capacity(1024);
    let mut next_start = 0usize;
    let mut setup_reported = false;
    let mut next_due = Instant::now();
    let mut probe_next = Instant::now();
    let mut probe_seq = 0u32;
    loop {
        let ph = shared.phase.load(Ordering::Relaxed);
        if ph >= phase::END {
            break;
        }
        let now = Instant::now();
        // Admit new setups while the global bound allows.
        while ph == phase::CALL
            && next_start < shard.clients.len()
            && shared.in_flight.load(Ordering::Relaxed) < shared.concurrency
        {
            shard.start_call(next_start, now);
            next_start += 1;
        }
        if !setup_reported && next_start == shard.clients.len() {
            let pending = shard.clients.iter().any(|c| matches!(c.state, CallState::Offered(_)));
            if !pending {
                setup_reported = true;
                for c in &shard.clients {
                    if let CallState::Failed(why) = &c.state {
                        shard.failed.push(why.clone());
                    }
                }
                let _ = tx.send(Report::SetupDone {
                    established: std::mem::take(&mut shard.established),
                    setup: std::mem::take(&mut shard.setup),
                    failed: std::mem::take(&mut shard.failed),
                });
            }
        }
        let wait = next_due.saturating_duration_since(now);
        let mut wait_ms = wait.as_micros().div_ceil(1000).min(20) as i32;
        if next_start < shard.clients.len() {
            wait_ms = wait_ms.min(2);
        }
        epoll.wait(&mut events, wait_ms, &mut ready);
        for &token in &ready {
            if token == PROBE {
                if let Some(p) = &probe {
                    let mut b = [0u8; 512];
                    while let Ok(n) = p.recv(&mut b) {
                        if let Some((_, sent_ns)) = rtp_payload(&b[..n]).and_then(|p| parse_payload_of(p, PROBE_MAGIC))
                        {
                            if shared.in_window(sent_ns) {
                                shard.probe.received += 1;
                                let rtt = shared.ns(Instant::now()).saturating_sub(sent_ns);
                                shard.probe.rtt_us.push((rtt / 1000) as u32);
                            }
                        }
                    }
                }
                continue;
            }
            let c = (token / 2) as usize;
            if token % 2 == 0 {
                shard.on_udp(c);
            } else {
                shard.on_ws(c);
            }
        }
        let now = Instant::now();
        let ph = shared.phase.load(Ordering::Relaxed);
        let sending = ph == phase::MEDIA || (ph == phase::CALL && shared.media_during_setup);
        if now >= next_due {
            next_due = shard.scan(now, sending);
        } else {
            // Inputs may have moved a client's deadline earlier.
            for c in &shard.clients {
                if let Some(rtc) = &c.rtc {
                    next_due = next_due.min(rtc.timeout);
                }
            }
        }
        if let (Some(p), true) = (&probe, sending) {
            if now >= probe_next {
                let sent_ns = shared.ns(now);
                let mut pkt = [0u8; 12 + PAYLOAD_LEN];
                pkt[0] = 0x80;
                pkt[2..4].copy_from_slice(&(probe_seq as u16).to_be_bytes());
                pkt[12..].copy_from_slice(&make_payload(PROBE_MAGIC, probe_seq, sent_ns));
                probe_seq = probe_seq.wrapping_add(1);
                if p.send(&pkt).is_ok() && shared.in_window(sent_ns) {
                    shard.probe.sent += 1;
                }
                probe_next = if probe_next + PTIME > now { probe_next + PTIME } else { now + PTIME };
            }
            next_due = next_due.min(probe_next);
        }
    }
    let connected = shard
        .clients
        .iter()
        .filter(|c| c.rtc.as_ref().is_some_and(|r| r.connected) && c.state == CallState::Established)
        .count();
    let _ = tx.send(Report::Final {
        calls: std::mem::take(&mut shard.calls),
        probe: std::mem::take(&mut shard.probe),
        dropped: std::mem::take(&mut shard.dropped),
        connected,
    });
    // Hang up: close every WebSocket (the gateway sends the BYEs).
    for c in shard.clients.iter_mut().filter(|c| !c.ws_closed) {
        let _ = ws_send(&mut c.ws, opcode::CLOSE, &1000u16.to_be_bytes());
    }
    std::thread::sleep(Duration::from_millis(200));
}

// ===== Measurements =====

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a /proc stat file, in seconds.
fn stat_cpu_s(path: &str) -> f64 {
    let Ok(s) = std::fs::read_to_string(path) else { return 0.0 };
    let Some((_, rest)) = s.rsplit_once(')') else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| f.get(i).and_then(|v| v.parse::<u64>().ok())).sum();
    ticks as f64 / clk_tck()
}

fn pid_cpu_s(pid: u32) -> f64 {
    stat_cpu_s(&format!("/proc/{pid}/stat"))
}

fn tid_cpu_s(tid: i32) -> f64 {
    stat_cpu_s(&format!("/proc/self/task/{tid}/stat"))
}

/// (RcvbufErrors, SndbufErrors) of UDP in this network namespace.
fn udp_buf_errors() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    if lines.len() < 2 {
        return (0, 0);
    }
    let names: Vec<&str> = lines[0].split_whitespace().collect();
    let values: Vec<&str> = lines[1].split_whitespace().collect();
    let get = |n: &str| {
        names.iter().position(|x| *x == n).and_then(|i| values.get(i)).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    (get("RcvbufErrors"), get("SndbufErrors"))
}

/// Busy CPU time of the whole machine (every process), seconds: /proc/stat minus idle and iowait.
fn machine_busy_s() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else { return 0.0 };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest is already in user).
    let busy: u64 = v.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, x)| x).sum();
    busy as f64 / clk_tck()
}

/// Datagrams the kernel dropped per local UDP port on 127.0.0.1 (the `drops` column of
/// /proc/net/udp, summed over the sockets of a port).
fn udp_drops_by_port() -> std::collections::HashMap<u16, u64> {
    let mut out = std::collections::HashMap::new();
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    for l in table.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (Some(local), Some(drops)) = (f.get(1), f.last().and_then(|d| d.parse::<u64>().ok())) else { continue };
        let Some((ip, port)) = local.split_once(':') else { continue };
        if ip != "0100007F" {
            continue;
        }
        if let Ok(port) = u16::from_str_radix(port, 16) {
            *out.entry(port).or_insert(0) += drops;
        }
    }
    out
}

/// Where the kernel dropped datagrams between two [`udp_drops_by_port`] snapshots.
fn drops_report(
    before: &std::collections::HashMap<u16, u64>,
    after: &std::collections::HashMap<u16, u64>,
    webrtc: Option<u16>,
    echo: u16,
) -> String {
    let (mut web, mut rtp, mut far, mut other) = (0, 0, 0, 0);
    for (&port, &d) in after {
        let d = d.saturating_sub(before.get(&port).copied().unwrap_or(0));
        match port {
            p if Some(p) == webrtc => web += d,
            20000..=29999 => rtp += d,
            p if p == echo || p == echo + 1 => far += d,
            _ => other += d,
        }
    }
    format!(
        "gateway WebRTC socket {web}, gateway RTP sockets {rtp}, far-end echo {far}, others (the load clients' sockets) {other}"
    )
}

fn pct_us(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p / 100.0) as usize).min(sorted.len() - 1);
    f64::from(sorted[i]) / 1000.0
}

fn pct_d(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p / 100.0) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1000.0
}

// ===== One run =====

fn run(bin: &std::path::Path, n: usize, opts: &Opts) -> Result<Figures, String> {
    println!();
    println!("---- N = {n} calls ----");
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        phase: AtomicU8::new(phase::WAIT),
        window_start: AtomicU64::new(u64::MAX),
        window_end: AtomicU64::new(u64::MAX),
        in_flight: AtomicU64::new(0),
        concurrency: opts.concurrency as u64,
        media_during_setup: opts.media_during_setup,
    });
    let far = FarEnd::start(shared.clone()).map_err(|e| format!("far end: {e}"))?;
    let work = TempDir::new("bcalls");
    let conf = work.write("sylkgw.ini", format!("max_connections_per_ip = {}\n", n + 100));
    let proxy = far.sip.to_string();
    let conf_arg = conf.to_string_lossy().into_owned();
    let mut args = vec![
        "--config",
        &conf_arg,
        "--outbound-proxy",
        &proxy,
        "--rtp-ports",
        "20000-29999",
        "--media-address",
        "127.0.0.1",
    ];
    if opts.verbose {
        args.push("-v");
    }
    let mut server = Server::start(bin, &args);
    let pid = server.pid();
    println!("gateway pid {pid}: {} {}; far end SIP {}, RTP echo {}", bin.display(), args.join(" "), far.sip, far.rtp);
    std::thread::sleep(Duration::from_millis(200));
    let rss_idle = vm_rss_kib(pid).unwrap_or(0);

    let cert =
        str0m::crypto::from_feature_flags().dtls_provider.generate_certificate().ok_or("client DTLS certificate")?;
    let config = webrtc_client::config(Video::None, true).set_dtls_cert(cert);
    let threads = opts.threads.min(n);
    let (tx, rx) = mpsc::channel::<Report>();
    let gw = server.addr;
    let probe_to = far.rtp;
    let result = std::thread::scope(|s| {
        for t in 0..threads {
            let indices: Vec<usize> = (t..n).step_by(threads).collect();
            let (tx, shared, config) = (tx.clone(), &*shared, config.clone());
            let probe = (t == 0).then_some(probe_to);
            s.spawn(move || client_thread(shared, gw, &indices, config, probe, &tx));
        }
        drop(tx);
        let r = measure(n, opts, &shared, &far, pid, rss_idle, threads, &rx, &mut server);
        // On every path the client threads end (and close their WebSockets).
        shared.phase.store(phase::END, Ordering::Relaxed);
        r
    });
    // The WebSockets are closed: the gateway hangs up.
    let t = Instant::now();
    while far.byes.load(Ordering::Relaxed) < far.invites.load(Ordering::Relaxed)
        && t.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "after closing the WebSockets: far end got {} INVITEs, {} BYEs (after {:.2} s); gateway VmRSS {} KiB",
        far.invites.load(Ordering::Relaxed),
        far.byes.load(Ordering::Relaxed),
        t.elapsed().as_secs_f64(),
        vm_rss_kib(pid).unwrap_or(0)
    );
    let stderr = server.stderr_text();
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
    println!("gateway log: {} lines, {} warnings/errors", stderr.lines().count(), warnings.len());
    for w in warnings.iter().take(8) {
        println!("  {w}");
    }
    server.sigterm();
    let exit = server.wait_exit(Duration::from_secs(15));
    println!("gateway exited with {exit:?}");
    far.stop();
    result
}

#[allow(clippy::too_many_arguments)]
fn measure(
    n: usize,
    opts: &Opts,
    shared: &Shared,
    far: &FarEnd,
    pid: u32,
    rss_idle: u64,
    threads: usize,
    rx: &mpsc::Receiver<Report>,
    server: &mut Server,
) -> Result<Figures, String> {
    let mut fig = Figures { n, ..Figures::default() };
    let t = Instant::now();
    let mut tids = Vec::new();
    for _ in 0..threads {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Report::Ready { tid, error: None }) => tids.push(tid),
            Ok(Report::Ready { error: Some(e), .. }) => return Err(format!("client setup: {e}")),
            Ok(_) => return Err("unexpected report".into()),
            Err(e) => return Err(format!("client threads not ready: {e}")),
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss_ws = vm_rss_kib(pid).unwrap_or(0);
    println!(
        "{n} WebSockets opened and accounts added in {:.2} s; gateway VmRSS {rss_idle} KiB idle, {rss_ws} KiB now",
        t.elapsed().as_secs_f64()
    );

    // Call setups.
    let gw_cpu0 = pid_cpu_s(pid);
    let self_cpu0 = pid_cpu_s(std::process::id());
    let t_go = Instant::now();
    shared.phase.store(phase::CALL, Ordering::Relaxed);
    let mut established = Vec::new();
    let mut setup = Vec::new();
    let mut failed = Vec::new();
    for _ in 0..threads {
        match rx.recv_timeout(SETUP_TIMEOUT + Duration::from_secs(30 + n as u64 / 10)) {
            Ok(Report::SetupDone { established: e, setup: s, failed: f }) => {
                established.extend(e);
                setup.extend(s);
                failed.extend(f);
            }
            Ok(_) => return Err("unexpected report".into()),
            Err(e) => return Err(format!("call setups did not finish: {e}")),
        }
    }
    let setup_wall = established.iter().max().map_or(Duration::ZERO, |l| *l - t_go);
    let gw_setup_cpu = pid_cpu_s(pid) - gw_cpu0;
    let self_setup_cpu = pid_cpu_s(std::process::id()) - self_cpu0;
    setup.sort_unstable();
    fig.established = established.len();
    fig.setups_per_s = established.len() as f64 / setup_wall.as_secs_f64().max(1e-9);
    println!(
        "setup: {}/{n} established in {:.2} s = {:.0} call setups/s ({} in flight at most); session-create -> established p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        established.len(),
        setup_wall.as_secs_f64(),
        fig.setups_per_s,
        opts.concurrency,
        pct_d(&setup, 50.0),
        pct_d(&setup, 99.0),
        pct_d(&setup, 100.0),
    );
    println!(
        "  CPU during setup: gateway {:.2} s ({:.2} ms per call), load client {:.2} s (includes its own DTLS handshakes)",
        gw_setup_cpu,
        gw_setup_cpu * 1000.0 / n as f64,
        self_setup_cpu
    );
    if !failed.is_empty() {
        println!("  !! {} calls failed; first: {}", failed.len(), failed[0]);
        for f in failed.iter().skip(1).take(4) {
            println!("     {f}");
        }
    }
    if !server.running() {
        return Err(format!("the gateway exited; stderr tail:\n{}", tail(&server.stderr_text(), 20)));
    }

    // Steady state.
    shared.phase.store(phase::MEDIA, Ordering::Relaxed);
    std::thread::sleep(WARMUP);
    let window = Duration::from_secs(opts.seconds);
    let gw_cpu0 = pid_cpu_s(pid);
    let self_cpu0 = pid_cpu_s(std::process::id());
    let tid_cpu0: Vec<f64> = tids.iter().map(|&t| tid_cpu_s(t)).collect();
    let drops0 = udp_buf_errors();
    let port_drops0 = udp_drops_by_port();
    let busy0 = machine_busy_s();
    let w0 = Instant::now();
    shared.window_start.store(shared.ns(w0), Ordering::Relaxed);
    shared.window_end.store(shared.ns(w0 + window), Ordering::Relaxed);
    // VmRSS once a second through the window (does it level off?).
    let mut rss_series = Vec::new();
    while w0.elapsed() < window {
        std::thread::sleep(Duration::from_secs(1).min(window.saturating_sub(w0.elapsed())));
        rss_series.push(vm_rss_kib(pid).unwrap_or(0));
    }
    let rss_mid = rss_series[rss_series.len() / 2];
    let elapsed = w0.elapsed().as_secs_f64();
    let gw_cpu = pid_cpu_s(pid) - gw_cpu0;
    let self_cpu = pid_cpu_s(std::process::id()) - self_cpu0;
    let tid_cpu: Vec<f64> = tids.iter().zip(&tid_cpu0).map(|(&t, c0)| tid_cpu_s(t) - c0).collect();
    let rss_end = *rss_series.last().unwrap_or(&0);
    let busy = machine_busy_s() - busy0;
    let port_drops1 = udp_drops_by_port();
    shared.phase.store(phase::QUIET, Ordering::Relaxed);
    std::thread::sleep(SETTLE);
    let drops1 = udp_buf_errors();
    shared.phase.store(phase::END, Ordering::Relaxed);
    let mut calls = Media::default();
    let mut probe = Media::default();
    let mut dropped = Vec::new();
    let mut connected = 0;
    for _ in 0..threads {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Report::Final { calls: c, probe: p, dropped: d, connected: k }) => {
                calls.merge(c);
                probe.merge(p);
                dropped.extend(d);
                connected += k;
            }
            Ok(_) => return Err("unexpected report".into()),
            Err(e) => return Err(format!("client threads did not report: {e}")),
        }
    }
    calls.rtt_us.sort_unstable();
    probe.rtt_us.sort_unstable();
    let echoed = far.echoed_in_window.load(Ordering::Relaxed);
    let loss =
        |sent: u64, got: u64| if sent == 0 { f64::NAN } else { 100.0 * (sent as f64 - got as f64) / sent as f64 };
    fig.loss_pct = loss(calls.sent, calls.received);
    fig.rtt_p50_ms = pct_us(&calls.rtt_us, 50.0);
    fig.rtt_p99_ms = pct_us(&calls.rtt_us, 99.0);
    fig.base_p50_ms = pct_us(&probe.rtt_us, 50.0);
    fig.base_p99_ms = pct_us(&probe.rtt_us, 99.0);
    fig.gw_cpu_pct = 100.0 * gw_cpu / elapsed;
    fig.rss_calls_kib = rss_end;
    fig.kib_per_call = (fig.rss_calls_kib as f64 - rss_ws as f64) / fig.established.max(1) as f64;
    fig.client_cpu_pct = 100.0 * self_cpu / elapsed;
    fig.dropped_calls = dropped.len();
    println!(
        "steady state, {elapsed:.1} s with {connected}/{n} calls up: {} packets sent ({:.1}/s per call), {} echoed by the far end, {} back",
        calls.sent,
        calls.sent as f64 / elapsed / connected.max(1) as f64,
        echoed,
        calls.received
    );
    println!(
        "  loss {:.3}% (browser -> far end {:.3}%, far end -> browser {:.3}%); client send slips {} (sends skipped when a client thread ran more than 20 ms late)",
        fig.loss_pct,
        loss(calls.sent, echoed),
        loss(echoed, calls.received),
        calls.slips
    );
    println!(
        "  RTT browser -> gateway -> echo -> gateway -> browser: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        fig.rtt_p50_ms,
        pct_us(&calls.rtt_us, 90.0),
        fig.rtt_p99_ms,
        pct_us(&calls.rtt_us, 100.0),
        calls.rtt_us.len()
    );
    println!(
        "  baseline RTT (plain UDP from the same client loop straight to the echo): p50 {:.2} ms, p99 {:.2} ms, loss {:.3}% ({} samples); added by the gateway (p50 difference) ~{:.2} ms",
        fig.base_p50_ms,
        fig.base_p99_ms,
        loss(probe.sent, probe.received),
        probe.rtt_us.len(),
        fig.rtt_p50_ms - fig.base_p50_ms
    );
    println!(
        "  gateway CPU {:.1}% of one core = {:.4}% per call ({:.1} µs CPU per call-second); VmRSS {rss_ws} KiB before the calls, {rss_end} KiB at the end of the window = {:.1} KiB per call",
        fig.gw_cpu_pct,
        fig.gw_cpu_pct / n as f64,
        gw_cpu * 1e6 / elapsed / connected.max(1) as f64,
        fig.kib_per_call
    );
    let per_thread: Vec<String> = tid_cpu.iter().map(|c| format!("{:.0}%", 100.0 * c / elapsed)).collect();
    println!(
        "  load client CPU {:.1}% of one core (client threads {}; the rest is the far end and echo); machine: {} cores",
        fig.client_cpu_pct,
        per_thread.join(" + "),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  machine: {:.0}% busy of {} cores during the window; processes other than the gateway and this client used {:.0}% of one core",
        100.0 * busy / elapsed / std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        100.0 * (busy - gw_cpu - self_cpu).max(0.0) / elapsed
    );
    println!(
        "  kernel UDP buffer errors during the window (whole namespace): receive {}, send {}; receive drops by socket: {}",
        drops1.0 - drops0.0,
        drops1.1 - drops0.1,
        drops_report(&port_drops0, &port_drops1, webrtc_port(&server.stderr_text()), far.rtp.port())
    );
    println!(
        "  gateway VmRSS each second of the window, KiB: {} (mid-window {rss_mid})",
        rss_series.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
    );
    if !dropped.is_empty() {
        println!("  !! {} calls ended during the run; first: {}", dropped.len(), dropped[0]);
    }
    Ok(fig)
}

/// The port of the gateway's WebRTC socket, from its log line `WebRTC media on ADDR (udp)`.
fn webrtc_port(log: &str) -> Option<u16> {
    log.lines().find_map(|l| {
        let rest = l.split("WebRTC media on ").nth(1)?;
        rest.split_whitespace().next()?.parse::<SocketAddr>().ok().map(|a| a.port())
    })
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}
