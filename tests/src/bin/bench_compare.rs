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
//! a. idle: RSS, threads and fds of the process before any account;
//! b. all N `register`s sent at one instant; registrations/s until the last `registered`,
//!    latency (send → `registered`) p50/p99, the target's CPU time per registration; then, with
//!    the N accounts registered, RSS, threads and fds per account over idle.
//!
//! The table prints each figure per target and, for sylkgw, its ratio to Janus's. Call setups
//! and concurrent calls are not measured yet (see BENCHMARKS.md).

use std::process::ExitCode;
use std::sync::{mpsc, Barrier};
use std::time::{Duration, Instant};
use sylkgw_tests::bench::{add_kamailio_users, sylkrtc_add_accounts, sylkrtc_register, udp_drops, Registered};
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
    Proc { rss_kib: field("VmRSS:"), threads: field("Threads:"), fds }
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
        let timeout = std::env::var("SYLKGW_BENCH_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(Duration::from_secs(900), Duration::from_secs);
        return netns::reexec_self("bench_compare", ENV_INSIDE, timeout);
    }
    assert_isolated();
    let (mut n, mut k) = (200usize, 20usize);
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
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    if n == 0 || k == 0 {
        usage("N and K must be at least 1");
    }
    let k = k.min(n);
    match run(n, k, &targets) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench_compare: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(why: &str) -> ! {
    eprintln!("bench_compare: {why}\nusage: bench_compare [--accounts N] [--ws K] [--only mio,tokio1,tokio2,janus]");
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

fn run(n: usize, k: usize, targets: &[Target]) -> Result<bool, String> {
    println!("==== bench_compare: {n} accounts (sylkgw: over {k} WebSockets; Janus: one WebSocket, a session + SIP handle each) ====");
    println!("load average at the start: {}", loadavg());
    let (soft, _) = sylkgw_tests::bench::raise_nofile();
    if (soft as usize) < 10 * n + 64 {
        eprintln!("warning: {soft} file descriptors may be too few for Janus with {n} accounts (8 each)");
    }
    if targets.contains(&Target::Janus) {
        Janus::available()?;
        veth()?;
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
    let metrics: [Metric; 11] = [
        ("idle RSS (KiB)", |f| f.idle.rss_kib as f64, false),
        ("idle threads", |f| f.idle.threads as f64, false),
        ("idle fds", |f| f.idle.fds as f64, false),
        ("RSS per account (KiB)", |f| f.per_account(|p| p.rss_kib), false),
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
