//! Conference room benchmark (issue #13; prints figures, asserts nothing): str0m load clients
//! ([`WebRtcClient`]) fill one room of N participants through a gateway: each participant has its
//! own WebSocket, publishes audio (Opus, 50 packets/s) and video (VP8, `VIDEO_FPS` frames/s,
//! one packet each) on a send-only publisher PeerConnection, and attaches every other
//! participant's feed, as the web phone does: N·(N−1) feeds, 2·N·(N−1) forwarded streams.
//! After a warm-up, a measurement window gives:
//!
//! * the gateway's CPU (utime + stime of every thread) per forwarded stream, and per forwarded
//!   packet;
//! * loss: packets sent in the window that no subscriber got (each should reach N−1);
//! * latency, publisher → gateway → subscriber, from the send time the publisher writes into each
//!   payload (one clock, this process), p50/p99; and the same for a plain UDP packet sent each
//!   tick from and to this process's own loop (the baseline: what the client's single loop adds
//!   by itself, without a gateway);
//! * the gateway's RSS growth per participant (before the first join → the end of the window), and kernel
//!   drops on every UDP socket of the namespace.
//!
//! `bench_rooms [WINDOW_S]` (default 5 s) runs rooms of 5 and 10 on `sylkgw-mio`, on
//! `sylkgw --threads 1` and on `sylkgw --threads 2` (the room lives on its home worker; the
//! participants whose WebSocket the kernel gave the other worker are served through it:
//! docs/conferences.md), each on a fresh gateway. The process re-executes itself in a fresh network namespace (needs root, `unshare`,
//! `ip`). The gateway binaries are the ones next to this program (`target/release` for a release
//! build), or `$SYLKGW_BIN_DIR`'s. A gateway is stopped (SIGTERM, then killed by PID) whichever
//! way a run ends, a panic included.

use serde_json::{json, Value};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use sylkgw_tests::call_load::pid_cpu_s;
use sylkgw_tests::netns::{self, assert_isolated};
use sylkgw_tests::webrtc_client::{config, ClientOutput, Video, WebRtcClient, VP8};
use sylkgw_tests::{config_file, vm_rss_kib, Server, WsClient};

const ENV_INSIDE: &str = "SYLKGW_BENCH_ROOMS_INSIDE";
const ROOM: &str = "bench@videoconference.example.com";
const HA1: &str = "0123456789abcdef0123456789abcdef";
const OPUS: u8 = 111;
const AUDIO_EVERY: Duration = Duration::from_millis(20);
const VIDEO_FPS: u32 = 30;
const AUDIO_LEN: usize = 120;
const VIDEO_LEN: usize = 1100;
const MAGIC: &[u8; 4] = b"ROOM";
const WARMUP: Duration = Duration::from_secs(2);
const SETTLE: Duration = Duration::from_millis(500);
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
const RCVBUF: i32 = 1 << 20;

fn main() -> ExitCode {
    if std::env::var_os(ENV_INSIDE).is_none() {
        return netns::reexec_self("bench_rooms", ENV_INSIDE, Duration::from_secs(900));
    }
    assert_isolated();
    let window: f64 = std::env::args().nth(1).map(|a| a.parse().expect("WINDOW_S: seconds")).unwrap_or(5.0);
    let window = Duration::from_secs_f64(window.max(1.0));
    println!(
        "==== bench_rooms: rooms of N str0m participants, audio (Opus {} pkt/s, {AUDIO_LEN} B) + video (VP8 {VIDEO_FPS} pkt/s, \
         {VIDEO_LEN} B), every feed attached; window {:.0} s ====",
        1000 / AUDIO_EVERY.as_millis(),
        window.as_secs_f64()
    );
    let gateways: [(&str, &[&str]); 3] =
        [("sylkgw-mio", &[]), ("sylkgw", &["--threads", "1"]), ("sylkgw", &["--threads", "2"])];
    for (bin, args) in gateways {
        for n in [5, 10] {
            run(bin, args, n, window);
        }
    }
    ExitCode::SUCCESS
}

fn gateway_binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("SYLKGW_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| {
        std::env::current_exe().unwrap().parent().expect("the benchmark lives in target/PROFILE").to_path_buf()
    });
    dir.join(name)
}

// ===== Time stamps in payloads =====

fn payload(len: usize, from: usize, sent_ns: u64) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[..4].copy_from_slice(MAGIC);
    p[4..6].copy_from_slice(&(from as u16).to_be_bytes());
    p[8..16].copy_from_slice(&sent_ns.to_be_bytes());
    p
}

/// (publisher index, send time) of a payload [`payload`] wrote.
fn stamp(p: &[u8]) -> Option<(usize, u64)> {
    if p.len() < 16 || &p[..4] != MAGIC {
        return None;
    }
    Some((usize::from(u16::from_be_bytes([p[4], p[5]])), u64::from_be_bytes(p[8..16].try_into().ok()?)))
}

// ===== One PeerConnection on its own socket =====

struct Pc {
    sock: UdpSocket,
    client: WebRtcClient,
    /// Whose media it receives (feeds), or its own index (publishers).
    peer: usize,
}

impl Pc {
    fn new(peer: usize) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a client socket");
        sock.set_nonblocking(true).expect("nonblocking");
        set_rcvbuf(&sock);
        let addr = sock.local_addr().unwrap();
        let client = WebRtcClient::new(config(Video::Vp8, false), None, Instant::now(), addr).expect("a client");
        Self { sock, client, peer }
    }
}

fn set_rcvbuf(sock: &UdpSocket) {
    let size: i32 = RCVBUF;
    // SAFETY: setsockopt(2) reads `size` for its length and touches nothing else.
    #[allow(unsafe_code)]
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const size).cast(),
            size_of::<i32>() as libc::socklen_t,
        );
    }
}

// ===== Signalling =====

struct Party {
    ws: WsClient,
    session: String,
    next_tx: u64,
}

impl Party {
    /// Sends `req` and returns the events up to its ack (panics on an error answer).
    fn request(&mut self, mut req: Value) -> Vec<Value> {
        self.next_tx += 1;
        req["transaction"] = json!(format!("t{}", self.next_tx));
        self.ws.send_text(&req.to_string());
        let mut events = Vec::new();
        loop {
            let v: Value = serde_json::from_str(&self.ws.recv_text()).expect("JSON from the gateway");
            if v["transaction"] == req["transaction"] {
                assert_eq!(v["sylkrtc"], "ack", "{req}: {v}");
                return events;
            }
            events.push(v);
        }
    }

    /// The first videoroom event `event` (with `feed`, if given) among `seen`, else the next one.
    fn wait_event(&mut self, seen: Vec<Value>, event: &str, feed: Option<&str>) -> Value {
        let wanted = |v: &Value| {
            v["sylkrtc"] == "videoroom-event"
                && (v["event"] == event || v["state"] == event)
                && feed.is_none_or(|f| v["feed"] == f)
        };
        if let Some(v) = seen.into_iter().find(wanted) {
            return v;
        }
        loop {
            let v: Value = serde_json::from_str(&self.ws.recv_text()).expect("JSON from the gateway");
            if wanted(&v) {
                return v;
            }
        }
    }
}

// ===== The run =====

#[derive(Default)]
struct Counts {
    /// Packets each publisher sent inside the window (audio, video).
    sent: Vec<[u64; 2]>,
    /// Packets stamped inside the window that subscribers received (audio, video).
    got: [u64; 2],
    latency_ns: Vec<u64>,
    baseline_ns: Vec<u64>,
}

struct Room {
    epoch: Instant,
    publishers: Vec<Pc>,
    feeds: Vec<Pc>,
    probe: (UdpSocket, UdpSocket),
    window: (u64, u64),
    counts: Counts,
    /// Next RTP sequence number of each publisher (audio, video).
    seq: Vec<[u64; 2]>,
    /// When the next audio and video packets are due, once media flows.
    next: Option<(Instant, Instant)>,
}

impl Room {
    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn in_window(&self, ns: u64) -> bool {
        ns >= self.window.0 && ns < self.window.1
    }

    fn pcs(&mut self) -> impl Iterator<Item = &mut Pc> {
        self.publishers.iter_mut().chain(self.feeds.iter_mut())
    }

    /// One turn of the loop: every socket read dry (str0m drained after each datagram: it keeps
    /// only what one input produced), every client's timers, transmits sent; RTP counted.
    fn pump(&mut self) {
        let mut buf = vec![0u8; 2048];
        let epoch = self.epoch;
        let window = self.window;
        let mut got = [0u64; 2];
        let mut latency = Vec::new();
        for pc in self.publishers.iter_mut().chain(self.feeds.iter_mut()) {
            loop {
                match pc.sock.recv_from(&mut buf) {
                    Ok((len, from)) => {
                        let to = pc.client.addr;
                        if let Err(e) = pc.client.receive(Instant::now(), from, to, &buf[..len]) {
                            eprintln!("client {to}: {e}");
                        }
                        drain(pc, epoch, window, &mut got, &mut latency);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("recv: {e}"),
                }
            }
            let now = Instant::now();
            if now >= pc.client.timeout {
                let _ = pc.client.handle_timeout(now);
            }
            drain(pc, epoch, window, &mut got, &mut latency);
        }
        self.counts.got[0] += got[0];
        self.counts.got[1] += got[1];
        self.counts.latency_ns.extend(latency);
        // The baseline: a plain datagram through the loop.
        let mut b = [0u8; 16];
        while let Ok(len) = self.probe.1.recv(&mut b) {
            if len == 8 {
                let sent = u64::from_be_bytes(b[..8].try_into().unwrap());
                let now = self.ns(Instant::now());
                if self.in_window(sent) {
                    self.counts.baseline_ns.push(now.saturating_sub(sent));
                }
            }
        }
    }

    /// Runs the loop until `done` holds or `deadline`; media flows when `media`.
    fn run_until(&mut self, deadline: Instant, media: bool, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        let video_every = Duration::from_secs(1) / VIDEO_FPS;
        loop {
            if done(self) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let mut next = now + Duration::from_millis(2);
            if media {
                let (mut audio, mut video) = *self.next.get_or_insert((now, now));
                if now >= audio {
                    audio += AUDIO_EVERY;
                    self.send_all(now, false);
                    let ns = self.ns(now);
                    let _ = self.probe.0.send(&ns.to_be_bytes());
                }
                if now >= video {
                    video += video_every;
                    self.send_all(now, true);
                }
                self.next = Some((audio, video));
                next = audio.min(video);
            }
            self.pump();
            let wait = next.saturating_duration_since(Instant::now()).min(Duration::from_millis(1));
            poll_fds(self, wait);
        }
    }

    fn send_all(&mut self, now: Instant, video: bool) {
        let ns = self.ns(now);
        let counting = self.in_window(ns);
        let k = usize::from(video);
        for (i, pc) in self.publishers.iter_mut().enumerate() {
            if !pc.client.connected {
                continue;
            }
            self.seq[i][k] += 1;
            let s = self.seq[i][k];
            let (mid, pt, ts, len) = if video {
                (pc.client.video, VP8, (s * 3000) as u32, VIDEO_LEN)
            } else {
                (pc.client.audio, OPUS, (s * 960) as u32, AUDIO_LEN)
            };
            let Some(mid) = mid else { continue };
            if pc.client.write_rtp(now, mid, (pt, s, ts, video), &payload(len, i, ns)) && counting {
                self.counts.sent[i][k] += 1;
            }
            // A publisher receives no RTP: only its transmits come out here.
            drain(pc, self.epoch, self.window, &mut [0; 2], &mut Vec::new());
        }
    }
}

/// Polls `pc`'s str0m until its next timeout: transmits sent, RTP of its peer stamped inside
/// `window` counted (audio, video) with its latency.
fn drain(pc: &mut Pc, epoch: Instant, window: (u64, u64), got: &mut [u64; 2], latency: &mut Vec<u64>) {
    let (sock, peer) = (&pc.sock, pc.peer);
    pc.client
        .poll(|o| match o {
            ClientOutput::Transmit { to, data, .. } => {
                let _ = sock.send_to(&data, to);
            }
            ClientOutput::Rtp(g) => {
                let at = Instant::now().saturating_duration_since(epoch).as_nanos() as u64;
                if let Some((from, sent)) = stamp(&g.payload) {
                    if from == peer && sent >= window.0 && sent < window.1 {
                        got[usize::from(g.pt == VP8)] += 1;
                        latency.push(at.saturating_sub(sent));
                    }
                }
            }
            ClientOutput::Connected | ClientOutput::KeyframeRequest(..) => {}
        })
        .unwrap_or_else(|e| eprintln!("client poll: {e}"));
}

/// Sleeps until a socket is readable or `wait` passed.
fn poll_fds(room: &mut Room, wait: Duration) {
    let mut fds: Vec<libc::pollfd> =
        room.pcs().map(|pc| libc::pollfd { fd: pc.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    fds.push(libc::pollfd { fd: room.probe.1.as_raw_fd(), events: libc::POLLIN, revents: 0 });
    let ms = i32::try_from(wait.as_millis()).unwrap_or(1);
    // SAFETY: poll(2) reads and writes only the `fds` array we own, of the length we pass.
    #[allow(unsafe_code)]
    unsafe {
        libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms);
    }
}

/// Kernel drops on every UDP socket of this namespace (the `drops` column of /proc/net/udp).
fn udp_drops_all() -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    table.lines().skip(1).filter_map(|l| l.split_whitespace().last().and_then(|d| d.parse::<u64>().ok())).sum()
}

fn pct_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[i] as f64 / 1e6
}

fn run(bin: &str, args: &[&str], n: usize, window: Duration) {
    let (_cfg_dir, cfg) = config_file("max_requests_per_second = 1000000\n");
    let cfg = cfg.display().to_string();
    let mut all_args: Vec<&str> = args.to_vec();
    all_args.extend(["--config", &cfg]);
    let gw = Server::start(gateway_binary(bin), &all_args);
    let label = format!("{bin}{}{}", if args.is_empty() { "" } else { " " }, args.join(" "));
    let pid = gw.pid();
    std::thread::sleep(Duration::from_millis(300));
    let rss0 = vm_rss_kib(pid).unwrap_or(0);
    let drops0 = udp_drops_all();
    let epoch = Instant::now();
    let probe_rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe_rx.set_nonblocking(true).unwrap();
    let probe_tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe_tx.connect(probe_rx.local_addr().unwrap()).unwrap();
    let mut room = Room {
        epoch,
        publishers: Vec::new(),
        feeds: Vec::new(),
        probe: (probe_tx, probe_rx),
        window: (u64::MAX, u64::MAX),
        counts: Counts { sent: vec![[0; 2]; n], ..Counts::default() },
        seq: vec![[0; 2]; n],
        next: None,
    };
    let t_setup = Instant::now();
    // Everybody joins and publishes.
    let mut parties = Vec::new();
    for i in 0..n {
        let mut p = Party { ws: WsClient::ready(&gw), session: format!("p{i}"), next_tx: 0 };
        let account = format!("u{i}@example.com");
        p.request(json!({"sylkrtc":"account-add","account":account,"password":HA1,"display_name":format!("U{i}")}));
        let mut pc = Pc::new(i);
        let offer = pc.client.sendonly_offer();
        let seen =
            p.request(json!({"sylkrtc":"videoroom-join","account":account,"session":p.session,"uri":ROOM,"sdp":offer}));
        let accepted = p.wait_event(seen, "accepted", None);
        pc.client.accept_answer(accepted["sdp"].as_str().expect("the answer")).expect("answer applies");
        room.publishers.push(pc);
        parties.push(p);
        room.run_until(Instant::now() + Duration::from_millis(5), false, |_| false);
    }
    // Everybody attaches every other publisher's feed.
    for (i, p) in parties.iter_mut().enumerate() {
        for j in (0..n).filter(|j| *j != i) {
            let feed = format!("f{i}-{j}");
            let seen = p.request(
                json!({"sylkrtc":"videoroom-feed-attach","session":p.session,"publisher":format!("p{j}"),"feed":feed}),
            );
            let attached = p.wait_event(seen, "feed-attached", Some(&feed));
            let mut pc = Pc::new(j);
            let answer = pc.client.answer(attached["sdp"].as_str().expect("the offer"), true);
            p.request(json!({"sylkrtc":"videoroom-feed-answer","session":p.session,"feed":feed,"sdp":answer}));
            room.feeds.push(pc);
            room.run_until(Instant::now() + Duration::from_millis(2), false, |_| false);
        }
    }
    let up = room.run_until(Instant::now() + SETUP_TIMEOUT, false, |r| r.pcs().all(|pc| pc.client.connected));
    let connected = room.pcs().filter(|pc| pc.client.connected).count();
    let setup = t_setup.elapsed();
    if !up {
        println!("{label}, room of {n}: only {connected} of {} PeerConnections up after {SETUP_TIMEOUT:?}", n * n);
    }
    // Media: warm-up, then the window (CPU read at its ends), then late packets of the window.
    let start = Instant::now() + WARMUP;
    room.window = (room.ns(start), room.ns(start + window));
    room.run_until(start, true, |_| false);
    let me = std::process::id();
    let (cpu_before, my_cpu_before, t_cpu) = (pid_cpu_s(pid), pid_cpu_s(me), Instant::now());
    room.run_until(start + window, true, |_| false);
    let (cpu_s, my_cpu_s) = (pid_cpu_s(pid) - cpu_before, pid_cpu_s(me) - my_cpu_before);
    let cpu_wall = t_cpu.elapsed().as_secs_f64();
    let rss1 = vm_rss_kib(pid).unwrap_or(0);
    room.run_until(Instant::now() + SETTLE, true, |_| false);
    let drops = udp_drops_all() - drops0;

    let c = &mut room.counts;
    let sent: [u64; 2] = c.sent.iter().fold([0, 0], |a, s| [a[0] + s[0], a[1] + s[1]]);
    let expected = [sent[0] * (n as u64 - 1), sent[1] * (n as u64 - 1)];
    let loss = |k: usize| {
        if expected[k] == 0 {
            f64::NAN
        } else {
            100.0 * (expected[k].saturating_sub(c.got[k])) as f64 / expected[k] as f64
        }
    };
    c.latency_ns.sort_unstable();
    c.baseline_ns.sort_unstable();
    let streams = 2 * n * (n - 1);
    let fwd_pps = (expected[0] + expected[1]) as f64 / window.as_secs_f64();
    let core_share = cpu_s / cpu_wall;
    println!(
        "-- {label}, room of {n}: {connected}/{} PeerConnections up, setup {:.2} s --",
        n * n,
        setup.as_secs_f64()
    );
    println!(
        "   forwarded streams {streams} ({:.0} packets/s out); gateway CPU {:.1}% of a core = {:.3}% per stream, {:.1} µs per forwarded packet; \
         client CPU {:.0}% of a core",
        fwd_pps,
        100.0 * core_share,
        100.0 * core_share / streams as f64,
        1e6 * cpu_s / (fwd_pps * cpu_wall),
        100.0 * my_cpu_s / cpu_wall
    );
    println!(
        "   loss audio {:.2}% video {:.2}% ({} + {} of {} + {} expected); UDP drops in the namespace {drops}",
        loss(0),
        loss(1),
        c.got[0],
        c.got[1],
        expected[0],
        expected[1]
    );
    println!(
        "   latency publisher -> subscriber p50 {:.2} ms p99 {:.2} ms (client loop alone: p50 {:.2} ms p99 {:.2} ms)",
        pct_ms(&c.latency_ns, 50.0),
        pct_ms(&c.latency_ns, 99.0),
        pct_ms(&c.baseline_ns, 50.0),
        pct_ms(&c.baseline_ns, 99.0)
    );
    println!(
        "   gateway RSS {} KiB -> {} KiB: {:.0} KiB per participant ({} PeerConnections each)",
        rss0,
        rss1,
        rss1.saturating_sub(rss0) as f64 / n as f64,
        n
    );
    drop(parties);
    drop(room);
    gw.sigterm();
    let mut gw = gw;
    let _ = gw.wait_exit(Duration::from_secs(10));
}
