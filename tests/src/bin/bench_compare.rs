//! sylkgw against Janus 1.1, same far end, same load, one table (prints figures; not a test).
//!
//! `bench_compare [--accounts N] [--ws K] [--only LIST]` (defaults: N = 200 accounts, K = 20
//! WebSockets for sylkgw, LIST = `mio,tokio1,tokio2,janus`). The process re-executes itself in a
//! fresh network namespace (`SYLKGW_BENCH_COMPARE_INSIDE=1`; needs root, `unshare`, `ip`;
//! bounded by `SYLKGW_BENCH_TIMEOUT_SECS`, default 900) and, inside it, adds a veth pair `v0`/`v1`
//! (10.200.0.1/24, existing only in that namespace) for Janus's ICE, which never uses loopback.
//! kamailio (`tests/peers/kamailio`, users `alice1`…`aliceN`, password `secret`) is the far end.
//! Then, one target at a time, each started fresh and stopped by PID afterwards:
//! `sylkgw-mio`, `sylkgw --threads 1`, `sylkgw --threads 2` (release builds; `$SYLKGW_BIN_DIR`
//! overrides) and Janus (Debian's `janus`, configured by `tests/peers/janus/`, one WebSocket
//! carrying one session + one SIP handle per account, as a SylkServer backend would):
//!
//! a. idle: RSS (and its anonymous part), threads and fds of the process before any account;
//! b. all N `register`s sent at one instant; registrations/s until the last `registered`,
//!    latency (send → `registered`) p50/p99, the target's CPU time per registration; then, with
//!    the N accounts registered, RSS, anonymous RSS, threads and fds per account over idle (RSS
//!    also counts the code pages that serving maps back in: once per process, not per account).
//!
//!
//! Then, unless `--calls none`, the call scenarios, each target fresh again, with the load client
//! of [`sylkgw_tests::call_load`] (str0m browsers, sylkRTC-2 or Janus's `janus.plugin.sip`) and
//! its in-process SIP far end with an RTP echo (both gateways send their INVITEs straight to it:
//! sylkgw `--outbound-proxy`, Janus guest accounts with `outbound_proxy`):
//!
//! c. call setups/s and setup latency p50/p99 (call request → answer applied and ICE + DTLS up);
//! d. step-up over `--calls N1,N2,…` (default 50,100,200,400,800) concurrent audio calls, each a
//!    20 ms PCMU packet every 20 ms echoed by the far end, a `--seconds` window per step: loss,
//!    the gateway's CPU per call-second, RSS/threads/fds per call; stepping stops at the first
//!    step over 0.1 % loss; the most calls at < 0.1 % loss is the largest step that passed;
//! e. the latency the gateway adds per hop, from the browser's and the echo's timestamps (one
//!    clock) minus a plain-UDP probe's, p50/p99, with as many of the calls sending as load the
//!    gateway to 10, 50 and 90 % of one core (from the CPU per call of d).
//!
//! The tables print each figure per target and, for sylkgw, its ratio to Janus's.
//!
//! `--pin` (calls): the load client and far end (this process) run on CPU 1 and each gateway of
//! the call scenarios on CPU 0 ([`sylkgw_tests::cpu_control`]), so that the levels of e are
//! shares of a core the gateway has to itself.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Barrier};
use std::time::{Duration, Instant};
use sylkgw_tests::bench::{add_kamailio_users, sylkrtc_add_accounts, sylkrtc_register, udp_drops, Registered};
use sylkgw_tests::call_load::{pct_d_ms, pct_ms, Api, Clock, FarEnd, Load, LoadConfig, Setup, Window};
use sylkgw_tests::janus::{Janus, JanusOpts, JanusWs};
use sylkgw_tests::netns::{self, assert_isolated, find_program};
use sylkgw_tests::peers::{Kamailio, KamailioOpts};
use sylkgw_tests::{config_file, Server, TempDir};

/// Set in the environment of the re-executed benchmark inside the namespace.
const ENV_INSIDE: &str = "SYLKGW_BENCH_COMPARE_INSIDE";
const REALM: &str = "127.0.0.1";
const PASSWORD: &str = "secret";
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Janus drops sessions silent for 60 s: a keepalive for each this often.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(20);

/// One gateway under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Mio,
    Tokio1,
    Tokio2,
    Janus,
}

impl Target {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "mio" => Self::Mio,
            "tokio1" => Self::Tokio1,
            "tokio2" => Self::Tokio2,
            "janus" => Self::Janus,
            _ => return None,
        })
    }

    fn label(self) -> &'static str {
        match self {
            Self::Mio => "sylkgw-mio",
            Self::Tokio1 => "sylkgw -t1",
            Self::Tokio2 => "sylkgw -t2",
            Self::Janus => "Janus 1.1",
        }
    }
}

/// Process figures from /proc.
#[derive(Debug, Clone, Copy, Default)]
struct Proc {
    rss_kib: u64,
    /// The anonymous part of `rss_kib` (RssAnon): memory of the process's own, not the pages of
    /// its binary and libraries, which are shared page cache mapped in as code runs.
    anon_kib: u64,
    threads: u64,
    fds: u64,
}

fn read_proc(pid: u32) -> Proc {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    Proc { rss_kib: field("VmRSS:"), anon_kib: field("RssAnon:"), threads: field("Threads:"), fds }
}

/// What one target measured.
#[derive(Debug, Default)]
struct Figures {
    idle: Proc,
    registered: Proc,
    accounts: usize,
    ok: usize,
    elapsed: Duration,
    /// Send → `registered`, sorted.
    lat: Vec<Duration>,
    cpu_ms: f64,
    notes: Vec<String>,
}

impl Figures {
    fn per_account(&self, f: impl Fn(&Proc) -> u64) -> f64 {
        (f(&self.registered) as f64 - f(&self.idle) as f64) / self.accounts.max(1) as f64
    }

    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn pct_ms(&self, p: usize) -> f64 {
        if self.lat.is_empty() {
            return f64::NAN;
        }
        self.lat[(self.lat.len() * p / 100).min(self.lat.len() - 1)].as_secs_f64() * 1e3
    }
}

/// CPU time of every live thread of `pid` so far, in ms (/proc/PID/task/*/schedstat; threads
/// that already ended are not counted).
fn process_cpu_ms(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0.0 };
    let pids: Vec<u32> = tasks.filter_map(|t| t.ok()?.file_name().to_str()?.parse().ok()).collect();
    let ns: f64 = pids
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/{pid}/task/{t}/schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ns / 1e6
}

fn main() -> ExitCode {
    if std::env::var_os(ENV_INSIDE).is_none() {
        let timeout = sylkgw_tests::bench::timeout_from_env(Duration::from_secs(900));
        return netns::reexec_self("bench_compare", ENV_INSIDE, timeout);
    }
    assert_isolated();
    let (mut n, mut k) = (200usize, 20usize);
    let mut calls = CallOpts::default();
    let mut targets = vec![Target::Mio, Target::Tokio1, Target::Tokio2, Target::Janus];
    let mut argv = std::env::args().skip(1);
    while let Some(a) = argv.next() {
        let mut value = || argv.next().unwrap_or_else(|| usage(&format!("{a} needs a value")));
        match a.as_str() {
            "--accounts" => n = value().parse().unwrap_or_else(|_| usage("--accounts: a number")),
            "--ws" => k = value().parse().unwrap_or_else(|_| usage("--ws: a number")),
            "--only" => {
                targets = value()
                    .split(',')
                    .map(|t| Target::parse(t).unwrap_or_else(|| usage(&format!("unknown target {t}"))))
                    .collect()
            }
            "--calls" => {
                let v = value();
                calls.steps = if v == "none" {
                    Vec::new()
                } else {
                    v.split(',').map(|x| x.parse().unwrap_or_else(|_| usage("--calls: numbers"))).collect()
                }
            }
            "--seconds" => calls.seconds = value().parse().unwrap_or_else(|_| usage("--seconds: a number")),
            "--load-threads" => calls.threads = value().parse().unwrap_or_else(|_| usage("--load-threads: a number")),
            "--concurrency" => calls.concurrency = value().parse().unwrap_or_else(|_| usage("--concurrency: a number")),
            "--no-register" => calls.no_register = true,
            "--pin" => calls.pin = true,
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    if n == 0 || k == 0 {
        usage("N and K must be at least 1");
    }
    let k = k.min(n);
    if calls.steps.contains(&0) || calls.seconds <= 0.0 || calls.threads == 0 || calls.concurrency == 0 {
        usage("call steps, --seconds, --load-threads and --concurrency must be positive");
    }
    // Before the client's threads start: they inherit CPU 1.
    if let Err(e) = sylkgw_tests::cpu_control::place_load(calls.pin, None) {
        usage(&e);
    }
    match run(n, k, &targets, &calls) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench_compare: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(why: &str) -> ! {
    eprintln!("bench_compare: {why}\nusage: bench_compare [--accounts N] [--ws K] [--only mio,tokio1,tokio2,janus] [--calls N1,N2,..|none] [--seconds S] [--load-threads T] [--concurrency C] [--no-register] [--pin]");
    std::process::exit(2);
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn run(n: usize, k: usize, targets: &[Target], calls: &CallOpts) -> Result<bool, String> {
    let mut ok = true;
    let (soft, _) = sylkgw_tests::bench::raise_nofile();
    if targets.contains(&Target::Janus) {
        Janus::available()?;
        veth()?;
    }
    if !calls.no_register {
        ok &= run_register(n, k, targets)?;
    }
    if calls.steps.is_empty() {
        return Ok(ok);
    }
    let max = calls.steps.iter().copied().max().unwrap_or(0);
    if (soft as usize) < 12 * max + 200 {
        eprintln!("warning: {soft} file descriptors may be too few for Janus with {max} calls");
    }
    println!();
    println!(
        "==== calls: steps {:?}, {} s windows, {} load threads, {} setups in flight at most ====",
        calls.steps, calls.seconds, calls.threads, calls.concurrency
    );
    println!("load average at the start: {}", loadavg());
    let work = TempDir::new("bcmp-calls");
    let mut results = Vec::new();
    for &t in targets {
        println!("---- calls: {} ----", t.label());
        match run_calls(t, work.path(), calls) {
            Ok(f) => {
                for note in &f.notes {
                    println!("  note: {note}");
                }
                ok &= f.notes.is_empty();
                results.push((t, f));
            }
            Err(e) => {
                ok = false;
                println!("  !! {}: {e}", t.label());
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    println!("load average at the end: {}", loadavg());
    print_call_table(&results);
    Ok(ok)
}

fn run_register(n: usize, k: usize, targets: &[Target]) -> Result<bool, String> {
    println!("==== bench_compare: {n} accounts (sylkgw: over {k} WebSockets; Janus: one WebSocket, a session + SIP handle each) ====");
    println!("load average at the start: {}", loadavg());
    let (soft, _) = sylkgw_tests::bench::raise_nofile();
    if (soft as usize) < 10 * n + 64 {
        eprintln!("warning: {soft} file descriptors may be too few for Janus with {n} accounts (8 each)");
    }
    let work = TempDir::new("bcmp");
    let kam = Kamailio::start(work.path(), KamailioOpts::default());
    add_kamailio_users(&kam, n, PASSWORD)?;
    println!("kamailio {} ready, users alice1..alice{n}", kam.addr());

    let mut results = Vec::new();
    for &t in targets {
        println!("---- {} ----", t.label());
        let r = match t {
            Target::Mio => run_sylkgw("sylkgw-mio", &[], n, k),
            Target::Tokio1 => run_sylkgw("sylkgw", &["--threads", "1"], n, k),
            Target::Tokio2 => run_sylkgw("sylkgw", &["--threads", "2"], n, k),
            Target::Janus => run_janus(work.path(), n),
        };
        match r {
            Ok(f) => {
                println!(
                    "  registered {}/{} in {:.2} s; idle {:?}; registered {:?}",
                    f.ok,
                    f.accounts,
                    f.elapsed.as_secs_f64(),
                    f.idle,
                    f.registered
                );
                for note in &f.notes {
                    println!("  note: {note}");
                }
                results.push((t, f));
            }
            Err(e) => println!("  !! {}: {e}", t.label()),
        }
        // Let kamailio see the unregistrations before the next target.
        std::thread::sleep(Duration::from_secs(2));
    }
    kam.stop();
    println!("load average at the end: {}", loadavg());
    print_table(n, &results);
    Ok(results.len() == targets.len() && results.iter().all(|(_, f)| f.ok == f.accounts))
}

/// A veth pair inside this namespace only: Janus gathers ICE candidates on `v0`.
fn veth() -> Result<(), String> {
    let ip = find_program("ip").ok_or("`ip` is not installed: apt-get install iproute2")?;
    for args in [
        &["link", "add", "v0", "type", "veth", "peer", "name", "v1"][..],
        &["addr", "add", "10.200.0.1/24", "dev", "v0"],
        &["link", "set", "v0", "up"],
        &["link", "set", "v1", "up"],
    ] {
        let out = std::process::Command::new(&ip).args(args).output().map_err(|e| format!("ip: {e}"))?;
        if !out.status.success() {
            return Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)));
        }
    }
    Ok(())
}

/// sylkgw (either runtime): K WebSockets add their share of the accounts, then all register at once.
fn run_sylkgw(binary: &str, extra: &[&str], n: usize, k: usize) -> Result<Figures, String> {
    let bin = sylkgw_tests::bench::locate(binary);
    let per_ws = n.div_ceil(k);
    let (_cfg_dir, cfg) = config_file(&format!(
        "max_connections_per_ip = {}\nmax_accounts_per_connection = {}\nmax_requests_per_second = {}\n",
        k + 16,
        per_ws + 1,
        4 * per_ws + 50
    ));
    let cfg = cfg.to_string_lossy().into_owned();
    let mut args =
        vec!["--config", cfg.as_str(), "--sip-listen", "127.0.0.1:5080", "--outbound-proxy", "127.0.0.1:5060"];
    args.extend_from_slice(extra);
    let mut server = Server::start(&bin, &args);
    let pid = server.pid();
    println!("  {} {}", bin.display(), args.join(" "));
    std::thread::sleep(Duration::from_millis(500));
    let mut f = Figures { idle: read_proc(pid), accounts: n, ..Figures::default() };
    let addr = server.addr;
    let accounts = |c: usize| (c + 1..=n).step_by(k).collect::<Vec<usize>>();
    let start = Barrier::new(k + 1);
    let measured = Barrier::new(k + 1);
    let (done_tx, done_rx) = mpsc::channel::<(usize, Result<Registered, String>)>();
    std::thread::scope(|s| {
        for c in 0..k {
            let (start, measured, done_tx) = (&start, &measured, done_tx.clone());
            let mine = accounts(c);
            s.spawn(move || {
                let ws = sylkrtc_add_accounts(addr, &mine, REALM, PASSWORD, READ_TIMEOUT);
                start.wait();
                let result = match ws {
                    Ok(mut ws) => {
                        let mut res = Registered::default();
                        let r = sylkrtc_register(&mut ws, &mine, REALM, &mut res);
                        let _ = done_tx.send((c, r.map(|()| res).map_err(|e| e.to_string())));
                        Some(ws)
                    }
                    Err(e) => {
                        let _ = done_tx.send((c, Err(format!("setup: {e}"))));
                        None
                    }
                };
                measured.wait();
                if let Some(mut ws) = result {
                    let _ = ws.send_frame(sylkgw_tests::opcode::CLOSE, &1000u16.to_be_bytes());
                }
            });
        }
        drop(done_tx);
        start.wait();
        let cpu0 = process_cpu_ms(pid);
        let drops0 = (udp_drops(5060), udp_drops(5080));
        let t0 = Instant::now();
        for _ in 0..k {
            match done_rx.recv() {
                Ok((_, Ok(r))) => {
                    f.lat.extend(r.at.iter().map(|at| *at - t0));
                    if let Some(first) = r.failed.first() {
                        f.notes.push(format!("{} `failed`, first: {first}", r.failed.len()));
                    }
                    if let Some(e) = r.error {
                        f.notes.push(e);
                    }
                }
                Ok((c, Err(e))) => f.notes.push(format!("connection {c}: {e}")),
                Err(_) => break,
            }
        }
        f.cpu_ms = process_cpu_ms(pid) - cpu0;
        f.notes.push(format!(
            "UDP datagrams the kernel dropped while registering: kamailio :5060 {}, gateway :5080 {} (each one costs a 500 ms retransmission)",
            udp_drops(5060) - drops0.0,
            udp_drops(5080) - drops0.1
        ));
        f.lat.sort_unstable();
        f.ok = f.lat.len();
        f.elapsed = f.lat.last().copied().unwrap_or_default();
        std::thread::sleep(Duration::from_millis(1000));
        f.registered = read_proc(pid);
        measured.wait();
    });
    std::thread::sleep(Duration::from_millis(500));
    server.sigterm();
    let exit = server.wait_exit(Duration::from_secs(15));
    if exit != Some(0) {
        f.notes.push(format!("exited with {exit:?}"));
    }
    Ok(f)
}

/// Janus: one WebSocket; a session and a SIP handle per account, then all `register`s at once.
fn run_janus(workdir: &std::path::Path, n: usize) -> Result<Figures, String> {
    let opts =
        JanusOpts { event_loops: std::thread::available_parallelism().map_or(2, |p| p.get()), ..JanusOpts::default() };
    let mut janus = Janus::start(workdir, &opts)?;
    let pid = janus.pid();
    println!("  janus (pid {pid}), config {} (event_loops {})", janus.dir.display(), opts.event_loops);
    std::thread::sleep(Duration::from_millis(1000));
    let mut f = Figures { idle: read_proc(pid), accounts: n, ..Figures::default() };
    let io = |e: std::io::Error| format!("janus WebSocket: {e}");
    let mut ws = JanusWs::connect(janus.addr).map_err(io)?;
    ws.set_read_timeout(READ_TIMEOUT).map_err(io)?;
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let session = ws.create_session().map_err(io)?;
        let handle = ws.attach_sip(session).map_err(io)?;
        handles.push((session, handle));
    }
    let cpu0 = process_cpu_ms(pid);
    let drops0 = udp_drops(5060);
    let t0 = Instant::now();
    for (i, &(session, handle)) in handles.iter().enumerate() {
        let user = format!("alice{}", i + 1);
        let ha1 = sylkgw_tests::ha1(&user, REALM, PASSWORD);
        ws.send_register(session, handle, &user, REALM, &ha1, "sip:127.0.0.1:5060").map_err(io)?;
    }
    // Janus registers about 10 accounts a second (see BENCHMARKS.md): allow 0.5 s each.
    let deadline = t0 + Duration::from_secs(30) + Duration::from_millis(500) * n as u32;
    ws.set_read_timeout(Duration::from_secs(1)).map_err(io)?;
    let mut last_keepalive = Instant::now();
    let mut failed = 0usize;
    while f.lat.len() + failed < n && Instant::now() < deadline {
        if last_keepalive.elapsed() >= KEEPALIVE_EVERY {
            for &(session, _) in &handles {
                ws.send_keepalive(session).map_err(io)?;
            }
            last_keepalive = Instant::now();
        }
        match ws.next_event() {
            Ok(ev) => match ev.name() {
                "registered" => f.lat.push(t0.elapsed()),
                "registration_failed" | "error" => {
                    failed += 1;
                    if failed == 1 {
                        f.notes.push(format!("first failure: {}", ev.data));
                    }
                }
                _ => {}
            },
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(io(e)),
        }
    }
    f.cpu_ms = process_cpu_ms(pid) - cpu0;
    f.notes.push(format!(
        "UDP datagrams the kernel dropped on kamailio :5060 while registering: {}",
        udp_drops(5060) - drops0
    ));
    f.ok = f.lat.len();
    f.elapsed = f.lat.last().copied().unwrap_or_default();
    if failed > 0 {
        f.notes.push(format!("{failed} registrations failed"));
    }
    if f.ok + failed < n {
        f.notes.push(format!("{} registrations unanswered at the deadline", n - f.ok - failed));
    }
    std::thread::sleep(Duration::from_millis(1000));
    f.registered = read_proc(pid);
    for &(session, _) in &handles {
        let _ = ws.send_destroy(session);
    }
    std::thread::sleep(Duration::from_millis(500));
    ws.close();
    janus.stop();
    Ok(f)
}

fn print_table(n: usize, results: &[(Target, Figures)]) {
    let janus = results.iter().find(|(t, _)| *t == Target::Janus).map(|(_, f)| f);
    type Metric = (&'static str, fn(&Figures) -> f64, bool);
    let metrics: [Metric; 13] = [
        ("idle RSS (KiB)", |f| f.idle.rss_kib as f64, false),
        ("idle anon RSS (KiB)", |f| f.idle.anon_kib as f64, false),
        ("idle threads", |f| f.idle.threads as f64, false),
        ("idle fds", |f| f.idle.fds as f64, false),
        ("RSS per account (KiB)", |f| f.per_account(|p| p.rss_kib), false),
        ("anon RSS per account (KiB)", |f| f.per_account(|p| p.anon_kib), false),
        ("threads per account", |f| f.per_account(|p| p.threads), false),
        ("fds per account", |f| f.per_account(|p| p.fds), false),
        ("registered (of N)", |f| f.ok as f64, true),
        ("registrations/s", Figures::rate, true),
        ("latency p50 (ms)", |f| f.pct_ms(50), false),
        ("latency p99 (ms)", |f| f.pct_ms(99), false),
        ("CPU per registration (µs)", |f| f.cpu_ms * 1e3 / f.ok.max(1) as f64, false),
    ];
    println!();
    println!("==== {n} accounts; cells: value [Janus ÷ value when lower is better, value ÷ Janus when higher is better: >1 = better than Janus] ====");
    let mut header = format!("| {:<26} |", "figure");
    for (t, _) in results {
        header.push_str(&format!(" {:>22} |", t.label()));
    }
    println!("{header}");
    println!("|{}|", ["---"; 1].iter().chain(results.iter().map(|_| &"---:")).copied().collect::<Vec<_>>().join("|"));
    for (name, get, higher_better) in metrics {
        let mut line = format!("| {name:<26} |");
        for (t, f) in results {
            let v = get(f);
            let cell = match janus {
                Some(j) if *t != Target::Janus => {
                    let jv = get(j);
                    let ratio = if higher_better { v / jv } else { jv / v };
                    if ratio.is_finite() {
                        format!("{} [{ratio:.1}×]", fmt(v))
                    } else {
                        fmt(v)
                    }
                }
                _ => fmt(v),
            };
            line.push_str(&format!(" {cell:>22} |"));
        }
        println!("{line}");
    }
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

// ===== Scenarios c–e: calls =====

/// Options of the call scenarios.
#[derive(Debug, Clone)]
struct CallOpts {
    /// Concurrent calls of each step (stepping stops at the first step over 0.1 % loss).
    steps: Vec<usize>,
    /// Length of each measurement window.
    seconds: f64,
    /// Load client threads.
    threads: usize,
    /// Call setups in flight at most.
    concurrency: usize,
    /// Skip scenarios a–b.
    no_register: bool,
    /// Gateways of the call scenarios on CPU 0, this process on CPU 1.
    pin: bool,
}

impl Default for CallOpts {
    fn default() -> Self {
        Self {
            steps: vec![50, 100, 200, 400, 800],
            seconds: 5.0,
            threads: 2,
            concurrency: 20,
            no_register: false,
            pin: false,
        }
    }
}

/// Loss over which a step fails (%).
const LOSS_LIMIT: f64 = 0.1;

/// One step of the step-up: N calls up, all sending.
struct Step {
    n: usize,
    setup: Setup,
    window: Window,
    /// Before this step's calls (its browsers prepared) and at the end of its window.
    before: Proc,
    after: Proc,
}

impl Step {
    fn ok(&self) -> bool {
        self.setup.failed.is_empty() && self.window.dropped.is_empty() && self.window.loss_pct() < LOSS_LIMIT
    }
}

/// Hop latency with the gateway at a share of one core.
struct Level {
    pct: u32,
    /// The calls needed for it were all up.
    reached: bool,
    window: Window,
}

impl Level {
    fn cpu_pct(&self) -> f64 {
        100.0 * self.window.gw_cpu_s / self.window.seconds.max(1e-9)
    }

    /// What the gateway adds per hop at percentile `p`: the mean over both directions of the
    /// path's percentile minus the baseline probe's, ms.
    fn added(&self, p: f64) -> f64 {
        self.window.added_ms(p)
    }
}

/// What one target measured with calls.
#[derive(Default)]
struct CallFigures {
    steps: Vec<Step>,
    levels: Vec<Level>,
    notes: Vec<String>,
}

impl CallFigures {
    /// The largest step that passed, else the first one.
    fn reference(&self) -> Option<&Step> {
        self.steps.iter().rev().find(|s| s.ok()).or(self.steps.first())
    }

    fn max_ok(&self) -> f64 {
        self.steps.iter().filter(|s| s.ok()).map(|s| s.n).max().unwrap_or(0) as f64
    }

    fn setups_per_s(&self) -> f64 {
        let n: usize = self.steps.iter().map(|s| s.setup.established).sum();
        let wall: f64 = self.steps.iter().map(|s| s.setup.wall.as_secs_f64()).sum();
        n as f64 / wall.max(1e-9)
    }

    fn setup_pct(&self, p: f64) -> f64 {
        let mut all: Vec<Duration> = self.steps.iter().flat_map(|s| s.setup.latency.iter().copied()).collect();
        all.sort_unstable();
        pct_d_ms(&all, p)
    }

    fn cpu_us_per_call_s(&self) -> f64 {
        self.reference()
            .map_or(f64::NAN, |s| s.window.gw_cpu_s * 1e6 / s.window.seconds.max(1e-9) / s.window.active.max(1) as f64)
    }

    fn user_us_per_call_s(&self) -> f64 {
        self.reference()
            .map_or(f64::NAN, |s| s.window.gw_user_s * 1e6 / s.window.seconds.max(1e-9) / s.window.active.max(1) as f64)
    }

    /// Growth of `f` over the calls' part of each step up to the reference, per call.
    fn per_call(&self, f: impl Fn(&Proc) -> u64) -> f64 {
        let Some(r) = self.reference() else { return f64::NAN };
        let grown: f64 =
            self.steps.iter().take_while(|s| s.n <= r.n).map(|s| f(&s.after) as f64 - f(&s.before) as f64).sum();
        grown / r.n.max(1) as f64
    }

    fn level(&self, pct: u32) -> Option<&Level> {
        self.levels.iter().find(|l| l.pct == pct)
    }
}

/// The gateway under test in a call run; dropping it stops it by PID.
enum Gw {
    Sylkgw(Box<Server>, TempDir),
    Janus(Janus),
}

impl Gw {
    fn pid(&self) -> u32 {
        match self {
            Self::Sylkgw(s, _) => s.pid(),
            Self::Janus(j) => j.pid(),
        }
    }

    fn running(&mut self) -> bool {
        match self {
            Self::Sylkgw(s, _) => s.running(),
            Self::Janus(j) => netns::alive(j.pid()),
        }
    }

    /// SIGTERM and wait (SIGKILL after 15 s / 5 s); a note when the exit was not clean.
    fn stop(self) -> Option<String> {
        match self {
            Self::Sylkgw(mut s, _dir) => {
                s.sigterm();
                let t = Instant::now();
                while s.running() && t.elapsed() < Duration::from_secs(15) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if s.running() {
                    return Some("the gateway did not exit within 15 s of SIGTERM (killed)".into());
                }
                match s.wait_exit(Duration::from_secs(1)) {
                    Some(0) => None,
                    code => Some(format!("the gateway exited with {code:?}")),
                }
            }
            Self::Janus(mut j) => {
                j.stop();
                None
            }
        }
    }
}

fn start_gw(t: Target, work: &std::path::Path, far: &FarEnd, max_calls: usize) -> Result<Gw, String> {
    let (bin, extra): (&str, &[&str]) = match t {
        Target::Mio => ("sylkgw-mio", &[]),
        Target::Tokio1 => ("sylkgw", &["--threads", "1"]),
        Target::Tokio2 => ("sylkgw", &["--threads", "2"]),
        Target::Janus => {
            let opts = JanusOpts {
                event_loops: std::thread::available_parallelism().map_or(2, |p| p.get()),
                ..JanusOpts::default()
            };
            return Janus::start(work, &opts).map(Gw::Janus);
        }
    };
    let bin = sylkgw_tests::bench::locate(bin);
    let (dir, cfg) =
        config_file(&format!("max_connections_per_ip = {}\nmax_sip_requests_per_second_per_ip = 0\n", max_calls + 100));
    let cfg = cfg.to_string_lossy().into_owned();
    let proxy = far.sip.to_string();
    let mut args = vec![
        "--config",
        cfg.as_str(),
        "--sip-listen",
        "127.0.0.1:5080",
        "--outbound-proxy",
        proxy.as_str(),
        "--rtp-ports",
        "20000-29999",
        "--media-address",
        "127.0.0.1",
    ];
    args.extend_from_slice(extra);
    println!("  {} {}", bin.display(), args.join(" "));
    Ok(Gw::Sylkgw(Box::new(Server::start(&bin, &args)), dir))
}

/// Scenarios c–e for one target: a fresh far end and gateway, the step-up, then the hop latency
/// at 10/50/90 % of one core; everything stopped on every path.
fn run_calls(t: Target, work: &std::path::Path, o: &CallOpts) -> Result<CallFigures, String> {
    let clock = Clock::new();
    let far = FarEnd::start(clock.clone()).map_err(|e| format!("far end: {e}"))?;
    let max = o.steps.iter().copied().max().unwrap_or(0);
    let gw = match start_gw(t, work, &far, max) {
        Ok(g) => g,
        Err(e) => {
            far.stop();
            return Err(e);
        }
    };
    let mut f = CallFigures::default();
    let (api, ws, media_ip): (Api, std::net::SocketAddr, std::net::IpAddr) = match &gw {
        Gw::Sylkgw(s, _) => (Api::Sylkgw, s.addr, [127, 0, 0, 1].into()),
        Gw::Janus(j) => (Api::Janus, j.addr, [10, 200, 0, 1].into()),
    };
    let pid = gw.pid();
    println!("  gateway pid {pid}; far end SIP {}, RTP echo {}", far.sip, far.rtp);
    if o.pin {
        match sylkgw_tests::cpu_control::pin_process(pid, 0) {
            Ok(k) => println!("  gateway: {k} threads pinned to CPU 0"),
            Err(e) => println!("  !! pinning the gateway to CPU 0: {e}"),
        }
    }
    let cfg = LoadConfig {
        api,
        ws,
        media_ip,
        far_sip: far.sip,
        far_rtp: far.rtp,
        threads: o.threads,
        concurrency: o.concurrency,
    };
    let mut gw = gw;
    match Load::start(&cfg, clock) {
        Ok(load) => {
            if let Err(e) = measure_calls(&load, &far, &mut gw, o, &mut f) {
                f.notes.push(e);
            }
            load.stop();
        }
        Err(e) => f.notes.push(e),
    }
    let t0 = Instant::now();
    while far.byes.load(Ordering::Relaxed) < far.invites.load(Ordering::Relaxed)
        && t0.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "  hung up: far end saw {} INVITE dialogs and {} BYEs",
        far.invites.load(Ordering::Relaxed),
        far.byes.load(Ordering::Relaxed)
    );
    if let Some(note) = gw.stop() {
        f.notes.push(note);
    }
    far.stop();
    Ok(f)
}

fn measure_calls(load: &Load, far: &FarEnd, gw: &mut Gw, o: &CallOpts, f: &mut CallFigures) -> Result<(), String> {
    let pid = gw.pid();
    std::thread::sleep(Duration::from_millis(500));
    println!("  idle: {:?}", read_proc(pid));
    let janus = matches!(gw, Gw::Janus(_));
    let mut prepared = 0;
    for &n in &o.steps {
        // Janus prepares about 10 accounts a second (guest `register` too: janus_sip.c).
        let per = if janus { Duration::from_millis(250) } else { Duration::from_millis(50) };
        let t = Instant::now();
        load.prepare(n, Duration::from_secs(30) + per * n.saturating_sub(prepared) as u32)?;
        prepared = n;
        std::thread::sleep(Duration::from_millis(300));
        let before = read_proc(pid);
        let setup = load.call(n)?;
        println!(
            "  N = {n}: browsers prepared in {:.1} s; {} calls set up in {:.2} s ({:.0}/s), setup p50 {:.1} ms p99 {:.1} ms{}",
            t.elapsed().as_secs_f64() - setup.wall.as_secs_f64(),
            setup.established,
            setup.wall.as_secs_f64(),
            setup.established as f64 / setup.wall.as_secs_f64().max(1e-9),
            pct_d_ms(&setup.latency, 50.0),
            pct_d_ms(&setup.latency, 99.0),
            setup.failed.first().map_or(String::new(), |e| format!("; {} failed, first: {e}", setup.failed.len()))
        );
        if o.pin {
            // Threads the gateway started since (Janus: per handle) are on CPU 0 if their
            // creator was; this catches any other.
            let _ = sylkgw_tests::cpu_control::pin_process(pid, 0);
        }
        let window = load.window(n, o.seconds, pid, far)?;
        let after = read_proc(pid);
        print_window(&window, &before, &after);
        let step = Step { n, setup, window, before, after };
        let ok = step.ok();
        f.steps.push(step);
        if !gw.running() {
            return Err(format!("the gateway exited during N = {n}"));
        }
        if !ok {
            println!("  N = {n} is over {LOSS_LIMIT} % loss or lost calls: stepping stops");
            break;
        }
    }
    // e. Hop latency at 10/50/90 % of one core: the calls that load the gateway that much send,
    // the others stay up silent.
    let Some(r) = f.reference() else { return Ok(()) };
    let up: usize = f
        .steps
        .iter()
        .map(|s| s.setup.established)
        .sum::<usize>()
        .saturating_sub(f.steps.iter().map(|s| s.window.dropped.len()).sum::<usize>());
    let per_call = r.window.gw_cpu_s / r.window.seconds.max(1e-9) / r.window.active.max(1) as f64;
    for pct in [10u32, 50, 90] {
        let want = ((f64::from(pct) / 100.0 / per_call.max(1e-9)).round() as usize).max(1);
        let active = want.min(up);
        let window = load.window(active, o.seconds, pid, far)?;
        let level = Level { pct, reached: want <= up, window };
        println!(
            "  at {pct} % of a core ({} calls sending{}): gateway CPU {:.1} %; added per hop p50 {:.3} ms, p99 {:.3} ms",
            active,
            if level.reached { String::new() } else { format!(", {want} wanted but only {up} up") },
            level.cpu_pct(),
            level.added(50.0),
            level.added(99.0)
        );
        print_window(&level.window, &read_proc(pid), &read_proc(pid));
        f.levels.push(level);
    }
    Ok(())
}

fn print_window(w: &Window, before: &Proc, after: &Proc) {
    println!(
        "    window {:.1} s, {} calls sending: {} sent, {} echoed, {} back = loss {:.3} %; {} send slips; {} calls dropped",
        w.seconds,
        w.active,
        w.calls.sent,
        w.echoed,
        w.calls.received,
        w.loss_pct(),
        w.calls.slips,
        w.dropped.len()
    );
    println!(
        "    hop out (browser -> echo) p50/p99 {:.3}/{:.3} ms, back {:.3}/{:.3} ms; baseline probe out {:.3}/{:.3}, back {:.3}/{:.3} ms",
        pct_ms(&w.calls.out_us, 50.0),
        pct_ms(&w.calls.out_us, 99.0),
        pct_ms(&w.calls.back_us, 50.0),
        pct_ms(&w.calls.back_us, 99.0),
        pct_ms(&w.probe.out_us, 50.0),
        pct_ms(&w.probe.out_us, 99.0),
        pct_ms(&w.probe.back_us, 50.0),
        pct_ms(&w.probe.back_us, 99.0)
    );
    println!("    {}", w.waits_line());
    println!(
        "    gateway CPU {:.1} % of a core ({:.1} µs per call-second); load client CPU {:.1} %; gateway {:?} -> {:?}",
        100.0 * w.gw_cpu_s / w.seconds.max(1e-9),
        w.gw_cpu_s * 1e6 / w.seconds.max(1e-9) / w.active.max(1) as f64,
        100.0 * w.client_cpu_s / w.seconds.max(1e-9),
        before,
        after
    );
    if let Some(d) = w.dropped.first() {
        println!("    first dropped call: {d}");
    }
}

fn print_call_table(results: &[(Target, CallFigures)]) {
    type Metric = (&'static str, fn(&CallFigures) -> f64, bool);
    let metrics: [Metric; 19] = [
        ("largest step tried", |f| f.steps.last().map_or(f64::NAN, |s| s.n as f64), true),
        (
            "load client slips (%)",
            |f| {
                f.reference().map_or(f64::NAN, |s| {
                    let c = &s.window.calls;
                    100.0 * c.slips as f64 / (c.sent + c.slips).max(1) as f64
                })
            },
            false,
        ),
        ("call setups/s", CallFigures::setups_per_s, true),
        ("setup p50 (ms)", |f| f.setup_pct(50.0), false),
        ("setup p99 (ms)", |f| f.setup_pct(99.0), false),
        ("calls at < 0.1 % loss", CallFigures::max_ok, true),
        ("CPU per call-second (µs)", CallFigures::cpu_us_per_call_s, false),
        ("of which userspace (µs)", CallFigures::user_us_per_call_s, false),
        ("calls per core (derived)", |f| 1e6 / f.cpu_us_per_call_s(), true),
        ("RSS per call (KiB)", |f| f.per_call(|p| p.rss_kib), false),
        ("threads per call", |f| f.per_call(|p| p.threads), false),
        ("fds per call", |f| f.per_call(|p| p.fds), false),
        ("load @10% core (% CPU)", |f| f.level(10).map_or(f64::NAN, Level::cpu_pct), true),
        ("hop +p50 @10% (ms)", |f| f.level(10).map_or(f64::NAN, |l| l.added(50.0)), false),
        ("hop +p99 @10% (ms)", |f| f.level(10).map_or(f64::NAN, |l| l.added(99.0)), false),
        ("hop +p50 @50% (ms)", |f| f.level(50).map_or(f64::NAN, |l| l.added(50.0)), false),
        ("hop +p99 @50% (ms)", |f| f.level(50).map_or(f64::NAN, |l| l.added(99.0)), false),
        ("hop +p50 @90% (ms)", |f| f.level(90).map_or(f64::NAN, |l| l.added(50.0)), false),
        ("hop +p99 @90% (ms)", |f| f.level(90).map_or(f64::NAN, |l| l.added(99.0)), false),
    ];
    let janus = results.iter().find(|(t, _)| *t == Target::Janus).map(|(_, f)| f);
    println!();
    println!("==== calls; cells: value [Janus ÷ value when lower is better, value ÷ Janus when higher is better: >1 = better than Janus] ====");
    let mut header = format!("| {:<26} |", "figure");
    for (t, _) in results {
        header.push_str(&format!(" {:>22} |", t.label()));
    }
    println!("{header}");
    println!("|{}|", ["---"; 1].iter().chain(results.iter().map(|_| &"---:")).copied().collect::<Vec<_>>().join("|"));
    for (name, get, higher_better) in metrics {
        let mut line = format!("| {name:<26} |");
        for (t, f) in results {
            let v = get(f);
            let cell = match janus {
                // The load rows are not better or worse: no ratio.
                Some(j) if *t != Target::Janus && !name.starts_with("load") && !name.starts_with("largest") => {
                    let jv = get(j);
                    let ratio = if higher_better { v / jv } else { jv / v };
                    if ratio.is_finite() && ratio > 0.0 {
                        format!("{} [{ratio:.1}×]", fmt(v))
                    } else {
                        fmt(v)
                    }
                }
                _ => fmt(v),
            };
            line.push_str(&format!(" {cell:>22} |"));
        }
        println!("{line}");
    }
    println!(
        "(hop rows: what the gateway adds per hop, path minus the plain-UDP baseline, a negative value is noise; \
         load client slips: 20 ms sends the load client skipped because it ran late, at the step of the CPU/RSS rows)"
    );
}
