//! `bench_hop_floor [--work-us W[,W...]] [--levels P[,P...]] [--flows N[,N...]] [--calibrate N]
//! [--seconds S] [--threads T] [--max-flows M] [--shared] [--pin] [--nice NI]`
//! (defaults: W = 0,9, P = 10,50,90, N from the levels, calibration 200 flows, S = 5, T = 2,
//! M = 4000).
//!
//! The floor of a hop on this machine (issue #14): what latency per hop any relay reaches with
//! the load shape of `bench_calls`/`bench_compare`, with nothing of the gateway's code. Inside
//! its own network namespace (traffic on loopback only):
//!
//! * N plain-UDP flows shaped like `call_load`'s calls: one 12 + 160-byte RTP packet per flow
//!   every 20 ms ([`call_load::PTIME`]), T sender threads each over its flows with epoll and a
//!   millisecond timeout (the load client's 1 ms tick: the flows due in a tick go out one after the
//!   other), each packet stamped when it is written, each flow's phase spread evenly over the
//!   20 ms (a low-discrepancy sequence, as call setups spread them). Sender thread 0 also runs the
//!   same plain-UDP baseline probe to the echo as `call_load` (no relay).
//! * A relay thread: one epoll, two sockets per flow like the gateway's (the flow's socket facing
//!   the sender, and one facing the far end), `recvmmsg` up to 32 datagrams of a ready socket, then
//!   one `sendmmsg` of them on the other socket of the flow; `--work-us W` burns W µs of the
//!   relay thread's CPU (`CLOCK_THREAD_CPUTIME_ID`) per datagram received, before the batch goes out.
//! * `--shared`: the relay faces every sender with one socket instead (as sylkgw's one WebRTC
//!   socket faces every browser) and gathers its datagrams to the senders into one `sendmmsg`
//!   after 16 events, at 32 datagrams, or before it sleeps (as `sylkgw-mio` does).
//! * The far end: `call_load`'s own RTP echo ([`FarEnd`]), which stamps each packet's echo time.
//!
//! "Added per hop" is [`Window::added_ms`], as in `bench_compare`'s scenario e: path − baseline
//! probe, mean of both directions. For each W, a calibration run of `--calibrate` flows gives
//! the relay's CPU per flow-second, from which N is chosen for each level (% of one core), unless
//! `--flows` names them; a level missed by more than 15 % is run again with N scaled by
//! target / measured (twice at most; every run is printed). `--pin` and `--nice NI` do what they do in `bench_calls`: relay on CPU 0;
//! senders, echo and receivers on CPU 1; an autogroup of its own at nice NI. Each run starts and
//! stops its relay and senders (threads joined); past `SYLKGW_BENCH_TIMEOUT_SECS` (default 900)
//! the outer process kills the inner one by PID.

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use sylkgw_tests::call_load::{self, pct_ms, Clock, Epoll, FarEnd, Media, Window, MAGIC, PROBE_MAGIC, PTIME};
use sylkgw_tests::cpu_control;
use sylkgw_tests::netns::{self, assert_isolated};

const ENV_INSIDE: &str = "SYLKGW_BENCH_HOP_FLOOR_INSIDE";
/// Datagrams per `recvmmsg` / `sendmmsg` (the gateway's batch).
const BATCH: usize = 32;
/// Every sender runs this long before a window.
const WARMUP: Duration = Duration::from_secs(2);
/// After a window: echoes of its last packets may still arrive.
const SETTLE: Duration = Duration::from_secs(1);
/// Epoll token of the baseline probe's socket.
const PROBE: u64 = u64::MAX;
const USAGE: &str = "usage: bench_hop_floor [--work-us W[,W...]] [--levels P[,P...]] [--flows N[,N...]] \
                     [--calibrate N] [--seconds S] [--threads T] [--max-flows M] [--shared] [--pin] [--nice NI]";

#[derive(Debug, Clone)]
struct Opts {
    work_us: Vec<u32>,
    levels: Vec<u32>,
    flows: Vec<usize>,
    calibrate: usize,
    seconds: f64,
    threads: usize,
    max_flows: usize,
    pin: bool,
    nice: Option<i32>,
    shared: bool,
}

fn list<T: std::str::FromStr>(name: &str, v: &str) -> Result<Vec<T>, String> {
    v.split(',').map(|s| s.trim().parse::<T>().map_err(|_| format!("{name} {s:?}: not a number"))).collect()
}

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        work_us: vec![0, 9],
        levels: vec![10, 50, 90],
        flows: Vec::new(),
        calibrate: 200,
        seconds: 5.0,
        threads: 2,
        max_flows: 4000,
        pin: false,
        nice: None,
        shared: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name}: value missing\n{USAGE}"));
        let one = |name: &str, v: String| v.parse::<f64>().map_err(|_| format!("{name} {v:?}: not a number"));
        match a.as_str() {
            "--work-us" => o.work_us = list("--work-us", &value("--work-us")?)?,
            "--levels" => o.levels = list("--levels", &value("--levels")?)?,
            "--flows" => o.flows = list("--flows", &value("--flows")?)?,
            "--calibrate" => o.calibrate = one("--calibrate", value("--calibrate")?)? as usize,
            "--seconds" => o.seconds = one("--seconds", value("--seconds")?)?,
            "--threads" => o.threads = one("--threads", value("--threads")?)? as usize,
            "--max-flows" => o.max_flows = one("--max-flows", value("--max-flows")?)? as usize,
            "--pin" => o.pin = true,
            "--shared" => o.shared = true,
            "--nice" => o.nice = Some(one("--nice", value("--nice")?)? as i32),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if o.seconds <= 0.0 || o.threads == 0 || o.calibrate == 0 || o.max_flows == 0 || o.flows.contains(&0) {
        return Err("S, T, N and M must be positive".into());
    }
    Ok(o)
}

// ===== The relay =====

/// `recvmmsg`/`sendmmsg` buffers of one batch, with their peers' addresses (the pointers refer
/// to its own heap parts).
struct Batch {
    bufs: Vec<[u8; 2048]>,
    iov: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_in>,
    hdr: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new() -> Self {
        let mut b = Self {
            bufs: vec![[0u8; 2048]; BATCH],
            // SAFETY (both): iovec and mmsghdr are plain data; zeroed is a valid value.
            iov: vec![unsafe { std::mem::zeroed() }; BATCH],
            // SAFETY: sockaddr_in is plain data.
            names: vec![unsafe { std::mem::zeroed() }; BATCH],
            hdr: vec![unsafe { std::mem::zeroed() }; BATCH],
        };
        for i in 0..BATCH {
            b.iov[i].iov_base = b.bufs[i].as_mut_ptr().cast();
            b.hdr[i].msg_hdr.msg_iov = &mut b.iov[i];
            b.hdr[i].msg_hdr.msg_iovlen = 1;
            b.hdr[i].msg_hdr.msg_name = (&mut b.names[i] as *mut libc::sockaddr_in).cast();
        }
        b
    }

    /// Sets the headers' address lengths: `true` to read / give peers' addresses (unconnected
    /// socket), `false` for a connected one.
    fn named(&mut self, on: bool) {
        let len = if on { size_of::<libc::sockaddr_in>() as libc::socklen_t } else { 0 };
        for h in &mut self.hdr {
            h.msg_hdr.msg_namelen = len;
        }
    }

    /// Source port of datagram `i` read with [`Batch::named`] on.
    fn port(&self, i: usize) -> u16 {
        u16::from_be(self.names[i].sin_port)
    }

    /// Appends a copy of `data` for `to` (127.0.0.1:`port`) as datagram `i`.
    fn put(&mut self, i: usize, data: &[u8], port: u16) {
        self.bufs[i][..data.len()].copy_from_slice(data);
        self.iov[i].iov_len = data.len();
        self.names[i] = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be() },
            sin_zero: [0; 8],
        };
    }

    /// Reads up to [`BATCH`] datagrams of `fd` (non-blocking); how many.
    fn recv(&mut self, fd: RawFd) -> usize {
        for i in 0..BATCH {
            self.iov[i].iov_len = 2048;
        }
        if self.hdr[0].msg_hdr.msg_namelen != 0 {
            self.named(true);
        }
        // SAFETY: every header points to its own iovec and buffer of 2048 bytes, alive as long as
        // `self`; the kernel writes at most BATCH headers.
        let n = unsafe {
            libc::recvmmsg(fd, self.hdr.as_mut_ptr(), BATCH as u32, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        let n = n.max(0) as usize;
        for i in 0..n {
            self.iov[i].iov_len = self.hdr[i].msg_len as usize;
        }
        n
    }

    /// Sends the first `n` datagrams read on connected socket `fd`.
    fn send(&mut self, fd: RawFd, n: usize) {
        let mut off = 0;
        while off < n {
            // SAFETY: as in `recv`; the kernel reads the first `n - off` headers from `off`.
            let sent = unsafe { libc::sendmmsg(fd, self.hdr[off..].as_mut_ptr(), (n - off) as u32, 0) };
            if sent <= 0 {
                return; // buffer full: dropped, as the gateway would
            }
            off += sent as usize;
        }
    }
}

/// CPU time of the calling thread, ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Burns `ns` of the calling thread's CPU (the stand-in for a gateway's work on one datagram).
fn burn(ns: u64) {
    if ns == 0 {
        return;
    }
    let end = thread_cpu_ns() + ns;
    while thread_cpu_ns() < end {
        std::hint::spin_loop();
    }
}

/// The relay thread: socket `2i` (flow i, facing its sender) ↔ socket `2i + 1` (facing the echo).
fn relay(socks: Vec<UdpSocket>, work_ns: u64, pin: bool, stop: Arc<AtomicBool>, tid: mpsc::Sender<u32>) {
    if pin {
        if let Err(e) = cpu_control::pin_self(0) {
            eprintln!("relay: pinning to CPU 0: {e}");
        }
    }
    // SAFETY: gettid has no preconditions.
    let _ = tid.send(unsafe { libc::gettid() } as u32);
    let epoll = match Epoll::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("relay: epoll: {e}");
            return;
        }
    };
    for (i, s) in socks.iter().enumerate() {
        if let Err(e) = epoll.add(s.as_raw_fd(), i as u64) {
            eprintln!("relay: epoll_ctl: {e}");
            return;
        }
    }
    let mut batch = Batch::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut ready = Vec::with_capacity(1024);
    while !stop.load(Ordering::Relaxed) {
        epoll.wait(&mut events, 100, &mut ready);
        for &t in &ready {
            let (from, to) = (socks[t as usize].as_raw_fd(), socks[(t ^ 1) as usize].as_raw_fd());
            loop {
                let n = batch.recv(from);
                for _ in 0..n {
                    burn(work_ns);
                }
                batch.send(to, n);
                if n < BATCH {
                    break; // a short batch ends the read (level-triggered: more is a new event)
                }
            }
        }
    }
}

/// The relay of `--shared`: one socket `inner` (unconnected) faces every sender, as sylkgw's one
/// WebRTC socket faces every browser; flow i's socket facing the echo is `outer[i]`, and
/// `ports[i]` its sender's port. Datagrams for the senders are gathered as `sylkgw-mio` does:
/// they leave in one `sendmmsg` after 16 events, when 32 wait, or before the relay sleeps.
fn relay_shared(
    inner: UdpSocket,
    outer: Vec<UdpSocket>,
    ports: Vec<u16>,
    work_ns: u64,
    pin: bool,
    stop: Arc<AtomicBool>,
    tid: mpsc::Sender<u32>,
) {
    if pin {
        if let Err(e) = cpu_control::pin_self(0) {
            eprintln!("relay: pinning to CPU 0: {e}");
        }
    }
    // SAFETY: gettid has no preconditions.
    let _ = tid.send(unsafe { libc::gettid() } as u32);
    let Ok(epoll) = Epoll::new() else { return };
    let mut flow_of_port = vec![u32::MAX; 65536];
    for (i, (s, &p)) in outer.iter().zip(&ports).enumerate() {
        flow_of_port[usize::from(p)] = i as u32;
        let _ = epoll.add(s.as_raw_fd(), i as u64);
    }
    let _ = epoll.add(inner.as_raw_fd(), PROBE);
    let (mut rx, mut gather) = (Batch::new(), Batch::new());
    rx.named(false);
    gather.named(true);
    let mut waiting = 0;
    let flush = |gather: &mut Batch, waiting: &mut usize| {
        gather.send(inner.as_raw_fd(), *waiting);
        *waiting = 0;
    };
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut ready = Vec::with_capacity(1024);
    while !stop.load(Ordering::Relaxed) {
        epoll.wait(&mut events, 100, &mut ready);
        for (k, &t) in ready.iter().enumerate() {
            if t == PROBE {
                // From the senders: each datagram to its flow's far-end socket.
                rx.named(true);
                loop {
                    let n = rx.recv(inner.as_raw_fd());
                    for i in 0..n {
                        burn(work_ns);
                        let f = flow_of_port[usize::from(rx.port(i))];
                        if let Some(s) = outer.get(f as usize) {
                            let _ = s.send(&rx.bufs[i][..rx.iov[i].iov_len]);
                        }
                    }
                    if n < BATCH {
                        break;
                    }
                }
                rx.named(false);
            } else {
                let f = t as usize;
                loop {
                    let n = rx.recv(outer[f].as_raw_fd());
                    for i in 0..n {
                        burn(work_ns);
                        gather.put(waiting, &rx.bufs[i][..rx.iov[i].iov_len], ports[f]);
                        waiting += 1;
                        if waiting == BATCH {
                            flush(&mut gather, &mut waiting);
                        }
                    }
                    if n < BATCH {
                        break;
                    }
                }
            }
            if (k + 1) % 16 == 0 && waiting > 0 {
                flush(&mut gather, &mut waiting);
            }
        }
        if waiting > 0 {
            flush(&mut gather, &mut waiting);
        }
    }
}

// ===== The senders =====

struct Flow {
    sock: UdpSocket,
    next_send: Instant,
    seq: u32,
}

/// One sender thread: its flows and (thread 0) the baseline probe; what it measured.
fn sender(mut flows: Vec<Flow>, probe: Option<UdpSocket>, clock: Arc<Clock>, stop: Arc<AtomicBool>) -> (Media, Media) {
    let (mut calls, mut base) = (Media::default(), Media::default());
    let Ok(epoll) = Epoll::new() else { return (calls, base) };
    for (i, f) in flows.iter().enumerate() {
        let _ = epoll.add(f.sock.as_raw_fd(), i as u64);
    }
    if let Some(p) = &probe {
        let _ = epoll.add(p.as_raw_fd(), PROBE);
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut ready = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    let (mut probe_next, mut probe_seq) = (Instant::now(), 0u32);
    let mut next_due = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // As call_load's client threads: epoll with a millisecond timeout, then whatever is due.
        let now = Instant::now();
        let wait_ms = next_due.saturating_duration_since(now).as_micros().div_ceil(1000).min(20) as i32;
        epoll.wait(&mut events, wait_ms, &mut ready);
        for &t in &ready {
            let (sock, media, magic) = match (t, &probe) {
                (PROBE, Some(p)) => (p, &mut base, PROBE_MAGIC),
                (PROBE, None) => continue,
                (i, _) => (&flows[i as usize].sock, &mut calls, MAGIC),
            };
            while let Ok((n, _, kernel)) = call_load::recv_stamped(sock.as_raw_fd(), &mut buf, &clock) {
                let read = clock.now_ns();
                let Some(r) = call_load::rtp_payload_range(&buf[..n]) else { continue };
                if let Some(s) = call_load::stamps(&buf[r], magic) {
                    if clock.in_window(s.sent) {
                        media.record(s, kernel.unwrap_or(read), read);
                    }
                }
            }
        }
        let now = Instant::now();
        if now >= next_due {
            next_due = now + Duration::from_millis(50);
            for f in &mut flows {
                if f.next_send <= now {
                    let mut next = f.next_send + PTIME;
                    if next <= now {
                        // More than a ptime late: skip what was missed rather than bursting, and
                        // keep the flow's phase.
                        let missed = ((now - f.next_send).as_nanos() / PTIME.as_nanos()) as u32;
                        if clock.in_window(clock.now_ns()) {
                            calls.slips += u64::from(missed);
                        }
                        next = f.next_send + PTIME * (missed + 1);
                    }
                    f.next_send = next;
                    let sent_ns = clock.now_ns();
                    let pkt = call_load::plain_rtp_packet(MAGIC, f.seq, sent_ns);
                    f.seq = f.seq.wrapping_add(1);
                    if f.sock.send(&pkt).is_ok() && clock.in_window(sent_ns) {
                        calls.sent += 1;
                    }
                }
                next_due = next_due.min(f.next_send);
            }
        }
        if let Some(p) = &probe {
            if now >= probe_next {
                let sent_ns = clock.now_ns();
                if p.send(&call_load::plain_rtp_packet(PROBE_MAGIC, probe_seq, sent_ns)).is_ok()
                    && clock.in_window(sent_ns)
                {
                    base.sent += 1;
                }
                probe_seq = probe_seq.wrapping_add(1);
                probe_next = if probe_next + PTIME > now { probe_next + PTIME } else { now + PTIME };
            }
            next_due = next_due.min(probe_next);
        }
    }
    (calls, base)
}

// ===== One run =====

/// What one run measured.
struct Run {
    work_us: u32,
    window: Window,
    /// Relay thread's CPU over the window, % of one core.
    relay_pct: f64,
    /// Everything else of this process (senders, echo), % of one core.
    others_pct: f64,
}

fn udp_pair(far: std::net::SocketAddr) -> io::Result<(UdpSocket, UdpSocket, UdpSocket)> {
    let sender = UdpSocket::bind("127.0.0.1:0")?;
    let inner = UdpSocket::bind("127.0.0.1:0")?;
    let outer = UdpSocket::bind("127.0.0.1:0")?;
    sender.connect(inner.local_addr()?)?;
    inner.connect(sender.local_addr()?)?;
    outer.connect(far)?;
    for s in [&sender, &inner, &outer] {
        s.set_nonblocking(true)?;
        call_load::set_rcvbuf(s.as_raw_fd(), call_load::RCVBUF);
    }
    // The hops end where the kernel queued the echo on the sender's socket, as in `call_load`.
    call_load::enable_rx_stamps(sender.as_raw_fd());
    Ok((sender, inner, outer))
}

/// N flows through a relay burning `work_us` per datagram, for `seconds` after the warm-up.
fn run(o: &Opts, n: usize, work_us: u32, seconds: f64, far: &FarEnd, clock: &Arc<Clock>) -> Result<Run, String> {
    let start = Instant::now() + Duration::from_millis(100);
    let mut relay_socks = Vec::with_capacity(2 * n);
    let mut per_thread: Vec<Vec<Flow>> = (0..o.threads).map(|_| Vec::new()).collect();
    let shared_inner = if o.shared {
        let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        call_load::set_rcvbuf(s.as_raw_fd(), 4 * call_load::RCVBUF);
        Some(s)
    } else {
        None
    };
    let mut ports = Vec::with_capacity(n);
    for i in 0..n {
        let (sender, inner, outer) = udp_pair(far.rtp).map_err(|e| format!("flow {i}: {e}"))?;
        if let Some(s) = &shared_inner {
            sender.connect(s.local_addr().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
            ports.push(sender.local_addr().map_err(|e| e.to_string())?.port());
        }
        relay_socks.push(inner);
        relay_socks.push(outer);
        per_thread[i % o.threads].push(Flow { sock: sender, next_send: start + call_load::phase(i), seq: 0 });
    }
    let probe = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    probe.connect(far.rtp).map_err(|e| e.to_string())?;
    probe.set_nonblocking(true).map_err(|e| e.to_string())?;
    call_load::enable_rx_stamps(probe.as_raw_fd());
    let stop = Arc::new(AtomicBool::new(false));
    let (tid_tx, tid_rx) = mpsc::channel();
    let relay_thread = {
        let (stop, pin, work_ns) = (stop.clone(), o.pin, u64::from(work_us) * 1000);
        if o.shared {
            let inner = shared_inner.ok_or("no shared socket")?;
            let outer: Vec<UdpSocket> = relay_socks.into_iter().skip(1).step_by(2).collect();
            std::thread::spawn(move || relay_shared(inner, outer, ports, work_ns, pin, stop, tid_tx))
        } else {
            std::thread::spawn(move || relay(relay_socks, work_ns, pin, stop, tid_tx))
        }
    };
    let mut probe = Some(probe);
    let senders: Vec<JoinHandle<(Media, Media)>> = per_thread
        .into_iter()
        .map(|flows| {
            let (clock, stop, probe) = (clock.clone(), stop.clone(), probe.take());
            std::thread::spawn(move || sender(flows, probe, clock, stop))
        })
        .collect();
    let result = measure(n, seconds, clock, &tid_rx);
    stop.store(true, Ordering::Relaxed);
    let mut w = result?;
    for s in senders {
        let (calls, base) = s.join().map_err(|_| "a sender thread panicked")?;
        w.0.calls.merge(calls);
        w.0.probe.merge(base);
    }
    relay_thread.join().map_err(|_| "the relay thread panicked")?;
    let (mut window, relay_pct, others_pct) = w;
    window.calls.sort();
    window.probe.sort();
    Ok(Run { work_us, window, relay_pct, others_pct })
}

/// The window of a run: CPU of the relay thread and of the rest of this process.
fn measure(n: usize, seconds: f64, clock: &Clock, tid_rx: &mpsc::Receiver<u32>) -> Result<(Window, f64, f64), String> {
    let tid = tid_rx.recv_timeout(Duration::from_secs(5)).map_err(|_| "the relay thread did not start")?;
    std::thread::sleep(WARMUP);
    let me = std::process::id();
    let cpu0 = (cpu_control::thread_cpu_s(me, tid), call_load::pid_cpu_s(me));
    let w0 = Instant::now();
    let len = Duration::from_secs_f64(seconds);
    clock.open_window(w0, len);
    std::thread::sleep(len);
    let secs = w0.elapsed().as_secs_f64();
    let relay = cpu_control::thread_cpu_s(me, tid) - cpu0.0;
    let all = call_load::pid_cpu_s(me) - cpu0.1;
    std::thread::sleep(SETTLE);
    clock.close_window();
    let window = Window { active: n, seconds: secs, gw_cpu_s: relay, client_cpu_s: all - relay, ..Window::default() };
    Ok((window, 100.0 * relay / secs, 100.0 * (all - relay) / secs))
}

fn print_header() {
    println!("| W µs/datagram | flows | relay CPU % | senders+echo CPU % | added p50 ms | added p99 ms | out / back p50 ms | baseline p50 / p99 ms | loss % | slips |");
    println!("|---:|---:|---:|---:|---:|---:|---|---|---:|---:|");
}

fn print_row(r: &Run) {
    let w = &r.window;
    println!(
        "| {} | {} | {:.1} | {:.1} | {:.3} | {:.3} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} | {} |",
        r.work_us,
        w.active,
        r.relay_pct,
        r.others_pct,
        w.added_ms(50.0),
        w.added_ms(99.0),
        pct_ms(&w.calls.out_us, 50.0),
        pct_ms(&w.calls.back_us, 50.0),
        (pct_ms(&w.probe.out_us, 50.0) + pct_ms(&w.probe.back_us, 50.0)) / 2.0,
        (pct_ms(&w.probe.out_us, 99.0) + pct_ms(&w.probe.back_us, 99.0)) / 2.0,
        w.loss_pct(),
        w.calls.slips
    );
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> ExitCode {
    if std::env::var_os(ENV_INSIDE).is_none() {
        let timeout = sylkgw_tests::bench::timeout_from_env(Duration::from_secs(900));
        return netns::reexec_self("bench_hop_floor", ENV_INSIDE, timeout);
    }
    assert_isolated();
    let o = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // Before any thread starts: the load side's threads inherit CPU 1 and the nice value.
    if let Err(e) = cpu_control::place_load(o.pin, o.nice) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let (soft, _) = sylkgw_tests::bench::raise_nofile();
    let max_flows = o.max_flows.min((soft as usize).saturating_sub(100) / 3);
    let pin = if o.pin { "relay on CPU 0, senders + echo on CPU 1" } else { "not pinned" };
    println!(
        "==== bench_hop_floor{}: W = {:?} µs, levels {:?} %, {} s windows, {} sender threads; {pin}{}; load average {} ====",
        if o.shared { " --shared (one relay socket faces every sender)" } else { "" },
        o.work_us,
        o.levels,
        o.seconds,
        o.threads,
        o.nice.map_or(String::new(), |ni| format!(", nice {ni}")),
        load_average()
    );
    let clock = Clock::new();
    let far = match FarEnd::start(clock.clone()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("far end: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match run_all(&o, max_flows, &far, &clock) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_hop_floor: {e}");
            ExitCode::FAILURE
        }
    };
    far.stop();
    println!("load average at the end: {}", load_average());
    code
}

fn run_all(o: &Opts, max_flows: usize, far: &FarEnd, clock: &Arc<Clock>) -> Result<(), String> {
    print_header();
    for &w in &o.work_us {
        let counts: Vec<(Option<u32>, usize)> = if o.flows.is_empty() {
            let n = o.calibrate.min(max_flows);
            let cal = run(o, n, w, o.seconds.min(3.0), far, clock)?;
            print_row(&cal);
            let per_flow = cal.window.gw_cpu_s / cal.window.seconds / n as f64;
            o.levels
                .iter()
                .map(|&p| (Some(p), ((f64::from(p) / 100.0 / per_flow.max(1e-9)).round() as usize).clamp(1, max_flows)))
                .collect()
        } else {
            o.flows.iter().map(|&n| (None, n.min(max_flows))).collect()
        };
        for (level, mut n) in counts {
            // The relay's CPU per flow falls as its batches grow: a level off by more than 15 %
            // is run again with N scaled by target / measured (twice at most).
            for _ in 0..3 {
                let r = run(o, n, w, o.seconds, far, clock)?;
                print_row(&r);
                let Some(p) = level.map(f64::from) else { break };
                if (r.relay_pct - p).abs() <= 0.15 * p || r.relay_pct <= 0.0 {
                    break;
                }
                let next = ((n as f64 * p / r.relay_pct).round() as usize).clamp(1, max_flows);
                if next == n {
                    println!("(level {p} %: capped at {max_flows} flows)");
                    break;
                }
                n = next;
            }
        }
    }
    Ok(())
}
