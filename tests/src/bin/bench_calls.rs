//! Call load benchmark for one sylkgw target, alone (prints figures; not a test): the quick loop
//! for work on the media path. `bench_compare` runs the same load against every target and Janus.
//!
//! `bench_calls [--calls N[,N...]] [--seconds S] [--threads T] [--concurrency K]
//! [--target mio|tokio1|tokio2] [--hold H] [--pin] [--nice NI] [--worker-quota PCT] [--levels P[,P...]] [-v]`
//! (defaults: N = 100,300,500, S = 10, T = 2 load threads, K = 50 setups in flight, `mio`, H = 0).
//!
//! It re-executes itself in a fresh network namespace (only `lo`; bounded by
//! `SYLKGW_BENCH_TIMEOUT_SECS`, default 900). For each N, fresh: the far end and load client of
//! [`sylkgw_tests::call_load`] (its in-process SIP UAS with one RTP echo; str0m browsers,
//! sylkRTC-2, a WebSocket and a guest account each), and the target (release build;
//! `$SYLKGW_BIN_DIR` overrides) with `--outbound-proxy` = the far end. N calls are placed, K at
//! a time; then all N send a 20 ms PCMU packet every 20 ms, and after the load client's warm-up
//! an S-second window measures: loss, the latency the gateway adds per hop (browser → echo and
//! echo → browser, minus a plain-UDP probe's, from one clock), the target's CPU (utime + stime of
//! every thread) per call-second, its VmRSS per call (growth from before the calls to the end of
//! the window), the load client's own CPU, and where the kernel dropped datagrams. With `--hold
//! H` the calls keep sending H seconds more after the window (time to attach `perf record -p`
//! to the printed PID). Then the WebSockets close (the gateway hangs up), the target gets SIGTERM;
//! everything is stopped by PID on every path. The steps stop after the first N over 0.1 % loss
//! (or with a failed or dropped call): the summary names the largest N that passed.
//!
//! CPU control ([`sylkgw_tests::cpu_control`]; the 2-vCPU box cannot give the gateway two whole
//! cores and the load client its own):
//! * `--pin`: the load client and far end (this process) run on CPU 1, the gateway on CPU 0.
//! * `--nice NI` (e.g. -10): this process and every gateway thread run at that nice value, in a
//!   scheduling autogroup of their own with that nice value too, so that other work on the
//!   machine takes less of their CPUs (the quota still bounds the gateway).
//! * `--worker-quota PCT`: once the calls are set up (setups run unthrottled), each of the
//!   gateway's event-loop threads (`sylkgw`'s workers, `sylkgw-mio`'s main thread) gets its own
//!   cgroup v1 `cpu` group allowed PCT % of one core; removed after the step (and by the outer
//!   process after the run, however the inner one ended). 2 workers ÷ 1 worker at the same PCT
//!   is the scaling figure.
//! * `--levels P,…`: after each step's window, the latency windows of `bench_compare`'s scenario
//!   e: as many of the N calls send as load the gateway to P % of one core (from the step's CPU
//!   per call-second), the others stay up silent.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use sylkgw_tests::call_load::{pct_d_ms, pct_ms, Api, Clock, FarEnd, Load, LoadConfig, Window};
use sylkgw_tests::cpu_control::{self, Quotas, WorkerThreads};
use sylkgw_tests::netns::{self, assert_isolated};
use sylkgw_tests::{config_file, vm_rss_kib, Server};

/// Set in the environment of the re-executed benchmark inside the namespace.
const ENV_INSIDE: &str = "SYLKGW_BENCH_CALLS_INSIDE";

#[derive(Debug, Clone)]
struct Opts {
    calls: Vec<usize>,
    seconds: f64,
    threads: usize,
    concurrency: usize,
    /// Binary and extra arguments.
    target: (&'static str, &'static [&'static str], &'static str),
    hold: u64,
    verbose: bool,
    pin: bool,
    nice: Option<i32>,
    worker_quota: Option<u32>,
    levels: Vec<u32>,
}

const USAGE: &str = "usage: bench_calls [--calls N[,N...]] [--seconds S] [--threads T] [--concurrency K] \
                     [--target mio|tokio1|tokio2] [--hold H] [--pin] [--nice NI] [--worker-quota PCT] [--levels P[,P...]] [-v]";

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        calls: vec![100, 300, 500],
        seconds: 10.0,
        threads: 2,
        concurrency: 50,
        target: ("sylkgw-mio", &[], "sylkgw-mio"),
        hold: 0,
        verbose: false,
        pin: false,
        nice: None,
        worker_quota: None,
        levels: Vec::new(),
    };
    let mut argv = std::env::args().skip(1);
    while let Some(a) = argv.next() {
        let mut value = |name: &str| argv.next().ok_or(format!("{name} needs a value"));
        let number = |name: &str, v: String| v.parse::<u64>().map_err(|e| format!("{name} {v:?}: {e}"));
        match a.as_str() {
            "--calls" => {
                o.calls = value("--calls")?
                    .split(',')
                    .map(|s| s.trim().parse::<usize>().map_err(|e| format!("--calls {s:?}: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            "--seconds" => o.seconds = number("--seconds", value("--seconds")?)? as f64,
            "--threads" => o.threads = number("--threads", value("--threads")?)? as usize,
            "--concurrency" => o.concurrency = number("--concurrency", value("--concurrency")?)? as usize,
            "--hold" => o.hold = number("--hold", value("--hold")?)?,
            "--target" => {
                o.target = match value("--target")?.as_str() {
                    "mio" => ("sylkgw-mio", &[], "sylkgw-mio"),
                    "tokio1" => ("sylkgw", &["--threads", "1"], "sylkgw -t1"),
                    "tokio2" => ("sylkgw", &["--threads", "2"], "sylkgw -t2"),
                    t => return Err(format!("unknown target {t:?}: mio, tokio1 or tokio2")),
                }
            }
            "-v" => o.verbose = true,
            "--pin" => o.pin = true,
            "--nice" => {
                let v = value("--nice")?;
                o.nice = Some(v.parse::<i32>().map_err(|e| format!("--nice {v:?}: {e}"))?);
            }
            "--worker-quota" => {
                let q = number("--worker-quota", value("--worker-quota")?)?;
                if !(1..=100).contains(&q) {
                    return Err(format!("--worker-quota {q}: 1 to 100 (% of one core per worker)"));
                }
                o.worker_quota = Some(q as u32);
            }
            "--levels" => {
                o.levels = value("--levels")?
                    .split(',')
                    .map(|s| s.trim().parse::<u32>().map_err(|e| format!("--levels {s:?}: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if o.calls.contains(&0) || o.seconds == 0.0 || o.threads == 0 || o.concurrency == 0 {
        return Err("N, S, T and K must be at least 1".into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    if std::env::var_os(ENV_INSIDE).is_none() {
        let timeout = sylkgw_tests::bench::timeout_from_env(Duration::from_secs(900));
        let code = netns::reexec_self("bench_calls", ENV_INSIDE, timeout);
        // Groups of `--worker-quota` that an inner process killed on its timeout left behind.
        let stale = cpu_control::remove_stale();
        if stale > 0 {
            eprintln!("removed {stale} cgroup(s) left by the inner bench_calls");
        }
        return code;
    }
    assert_isolated();
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    // Before any thread starts: the load side's threads inherit CPU 1 and the nice value.
    if let Err(e) = cpu_control::place_load(opts.pin, opts.nice) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let (soft, hard) = sylkgw_tests::bench::raise_nofile();
    let bin = sylkgw_tests::bench::locate(opts.target.0);
    println!(
        "==== bench_calls {}: N = {:?}, {} s windows, {} load threads, {} setups in flight; {cores} cores; {}; load average {}; RLIMIT_NOFILE {soft}/{hard} ====",
        opts.target.2,
        opts.calls,
        opts.seconds,
        opts.threads,
        opts.concurrency,
        cpu_setup(&opts),
        load_average()
    );
    let mut rows = Vec::new();
    let mut ok = true;
    for &n in &opts.calls {
        match run(&bin, n, &opts) {
            Ok(fig) => {
                let passed = fig.passed();
                ok &= fig.established == n && fig.dropped == 0;
                rows.push(fig);
                if !passed {
                    println!("  N = {n} is over {LOSS_LIMIT} % loss or lost calls: stepping stops");
                    break;
                }
            }
            Err(e) => {
                ok = false;
                println!("  !! N = {n}: {e}");
                break;
            }
        }
    }
    println!();
    println!(
        "==== summary ({}, loopback, {} s windows; load average now {}) ====",
        opts.target.2,
        opts.seconds,
        load_average()
    );
    println!("({})", cpu_setup(&opts));
    println!(
        "{:>6} {:>8} {:>9} {:>15} {:>8} {:>17} {:>8} {:>13} {:>9} {:>10} {:>14}",
        "calls",
        "estab.",
        "setups/s",
        "setup p50/p99",
        "loss %",
        "hop +p50/+p99 ms",
        "gw CPU%",
        "µs/call-s",
        "KiB/call",
        "client CPU%",
        "workers CPU%"
    );
    for f in &rows {
        println!(
            "{:>6} {:>8} {:>9.0} {:>15} {:>8.3} {:>17} {:>8.1} {:>13.0} {:>9.1} {:>10.0} {:>14}",
            f.n,
            format!("{}/{}", f.established, f.n),
            f.setups_per_s,
            format!("{:.0}/{:.0}", f.setup_p50_ms, f.setup_p99_ms),
            f.loss_pct,
            format!("{:.2}/{:.2}", f.hop_p50_ms, f.hop_p99_ms),
            f.gw_cpu_pct,
            f.us_per_call_s,
            f.kib_per_call,
            f.client_cpu_pct,
            f.workers_cpu_pct.iter().map(|c| format!("{c:.0}")).collect::<Vec<_>>().join("/")
        );
    }
    let best = rows.iter().filter(|f| f.passed()).map(|f| f.n).max();
    println!(
        "largest N at < {LOSS_LIMIT} % loss: {} (of {:?} tried)",
        best.map_or("none".into(), |n| n.to_string()),
        rows.iter().map(|f| f.n).collect::<Vec<_>>()
    );
    let levels: Vec<&Level> = rows.iter().flat_map(|f| &f.levels).collect();
    if !levels.is_empty() {
        println!(
            "{:>6} {:>8} {:>8} {:>9} {:>17} {:>8} {:>10}",
            "calls", "level %", "sending", "loss %", "hop +p50/+p99 ms", "gw CPU%", "client CPU%"
        );
        for l in levels {
            println!(
                "{:>6} {:>8} {:>8} {:>9.3} {:>17} {:>8.1} {:>10.0}",
                l.n,
                l.pct,
                l.active,
                l.loss_pct,
                format!("{:.3}/{:.3}", l.hop_p50_ms, l.hop_p99_ms),
                l.gw_cpu_pct,
                l.client_cpu_pct
            );
        }
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
    setup_p50_ms: f64,
    setup_p99_ms: f64,
    loss_pct: f64,
    hop_p50_ms: f64,
    hop_p99_ms: f64,
    gw_cpu_pct: f64,
    us_per_call_s: f64,
    kib_per_call: f64,
    client_cpu_pct: f64,
    dropped: usize,
    failed: usize,
    /// Each event-loop thread's CPU over the warm-up, window and settle, % of a core.
    workers_cpu_pct: Vec<f64>,
    levels: Vec<Level>,
}

impl Figures {
    /// Under the loss limit with no call failed or dropped.
    fn passed(&self) -> bool {
        self.established == self.n && self.failed == 0 && self.dropped == 0 && self.loss_pct < LOSS_LIMIT
    }
}

/// A latency window at a share of one core (`--levels`).
#[derive(Debug, Default)]
struct Level {
    n: usize,
    pct: u32,
    active: usize,
    loss_pct: f64,
    hop_p50_ms: f64,
    hop_p99_ms: f64,
    gw_cpu_pct: f64,
    client_cpu_pct: f64,
}

/// Loss over which a step fails (%).
const LOSS_LIMIT: f64 = 0.1;

/// The CPU control in force, for the headings.
fn cpu_setup(o: &Opts) -> String {
    let pin = if o.pin { "gateway on CPU 0, load client + far end on CPU 1" } else { "not pinned" };
    let pin = match o.nice {
        Some(ni) => format!("{pin}, nice {ni}"),
        None => pin.to_owned(),
    };
    match o.worker_quota {
        Some(q) => format!("{pin}; {q} % of a core per event-loop thread (cgroup v1, after the setups)"),
        None => format!("{pin}; no quota"),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One N: far end, target and load client fresh, each stopped on every path.
fn run(bin: &std::path::Path, n: usize, opts: &Opts) -> Result<Figures, String> {
    println!();
    println!("---- N = {n} calls ----");
    let clock = Clock::new();
    let far = FarEnd::start(clock.clone()).map_err(|e| format!("far end: {e}"))?;
    let (_dir, conf) =
        config_file(&format!("max_connections_per_ip = {}\nmax_sip_requests_per_second_per_ip = 0\n", n + 100));
    let conf = conf.to_string_lossy().into_owned();
    let proxy = far.sip.to_string();
    let mut args = vec![
        "--config",
        conf.as_str(),
        "--sip-listen",
        "127.0.0.1:5080",
        "--outbound-proxy",
        proxy.as_str(),
        "--rtp-ports",
        "20000-29999",
        "--media-address",
        "127.0.0.1",
    ];
    args.extend_from_slice(opts.target.1);
    if opts.verbose {
        args.push("-v");
    }
    let mut server = Server::start(bin, &args);
    let pid = server.pid();
    if opts.pin {
        match cpu_control::pin_process(pid, 0) {
            Ok(k) => println!("gateway: {k} threads pinned to CPU 0"),
            Err(e) => println!("  !! pinning the gateway to CPU 0: {e}"),
        }
    }
    if let Some(ni) = opts.nice {
        if let Err(e) = cpu_control::nice_process(pid, ni) {
            println!("  !! nice {ni} for the gateway: {e}");
        }
    }
    println!("gateway pid {pid}: {} {}; far end SIP {}, RTP echo {}", bin.display(), args.join(" "), far.sip, far.rtp);
    let cfg = LoadConfig {
        api: Api::Sylkgw,
        ws: server.addr,
        media_ip: "127.0.0.1".parse().expect("an address"),
        far_sip: far.sip,
        far_rtp: far.rtp,
        threads: opts.threads.min(n),
        concurrency: opts.concurrency,
    };
    let result = Load::start(&cfg, clock).and_then(|load| {
        let r = measure(n, opts, &load, &far, &mut server);
        load.stop();
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
        "after hanging up: far end got {} INVITEs, {} BYEs (after {:.2} s); gateway VmRSS {} KiB",
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
    println!("gateway exited with {:?}", server.wait_exit(Duration::from_secs(15)));
    far.stop();
    result
}

fn measure(n: usize, opts: &Opts, load: &Load, far: &FarEnd, server: &mut Server) -> Result<Figures, String> {
    let pid = server.pid();
    let mut fig = Figures { n, ..Figures::default() };
    let rss_idle = vm_rss_kib(pid).unwrap_or(0);
    let t = Instant::now();
    load.prepare(n, Duration::from_secs(60 + n as u64 / 10))?;
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = vm_rss_kib(pid).unwrap_or(0);
    println!(
        "{n} WebSockets and accounts in {:.2} s; gateway VmRSS {rss_idle} KiB idle, {rss_before} KiB now",
        t.elapsed().as_secs_f64()
    );
    let cpu0 = sylkgw_tests::call_load::pid_cpu_s(pid);
    let setup = load.call(n)?;
    let setup_cpu = sylkgw_tests::call_load::pid_cpu_s(pid) - cpu0;
    fig.established = setup.established;
    fig.failed = setup.failed.len();
    fig.setups_per_s = setup.established as f64 / setup.wall.as_secs_f64().max(1e-9);
    fig.setup_p50_ms = pct_d_ms(&setup.latency, 50.0);
    fig.setup_p99_ms = pct_d_ms(&setup.latency, 99.0);
    println!(
        "setup: {}/{n} in {:.2} s = {:.0}/s ({} in flight at most); p50 {:.0} ms, p99 {:.0} ms; gateway CPU {:.2} ms per setup",
        setup.established,
        setup.wall.as_secs_f64(),
        fig.setups_per_s,
        opts.concurrency,
        fig.setup_p50_ms,
        fig.setup_p99_ms,
        setup_cpu * 1000.0 / setup.established.max(1) as f64
    );
    if let Some(first) = setup.failed.first() {
        println!("  !! {} calls failed; first: {first}", setup.failed.len());
    }
    if !server.running() {
        return Err("the gateway exited during the setups".into());
    }
    if opts.pin {
        // Threads started during the setups (storage pool, resolver) inherited CPU 0 already;
        // pin again in case one came from a thread that was not pinned yet.
        let _ = cpu_control::pin_process(pid, 0);
    }
    if let Some(ni) = opts.nice {
        let _ = cpu_control::nice_process(pid, ni);
    }
    let workers = WorkerThreads::find(pid).map_err(|e| format!("the gateway's threads: {e}"))?;
    // Dropped (groups removed) at the end of this step, on every path out of it.
    let quotas = match opts.worker_quota {
        Some(pct) => {
            let tids: Vec<u32> = workers.threads.iter().map(|&(_, t)| t).collect();
            let q = Quotas::apply(&tids, pct).map_err(|e| format!("--worker-quota: {e}"))?;
            println!(
                "quota: {pct} % of a core each for {}",
                workers.threads.iter().map(|(n, t)| format!("{n} (tid {t})")).collect::<Vec<_>>().join(", ")
            );
            Some(q)
        }
        None => None,
    };
    let drops0 = udp_drops_by_port();
    let (cpu0, t0) = (workers.cpu_s(), Instant::now());
    let w = load.window(n, opts.seconds, pid, far)?;
    let (cpu1, elapsed) = (workers.cpu_s(), t0.elapsed().as_secs_f64());
    let drops1 = udp_drops_by_port();
    let rss_end = vm_rss_kib(pid).unwrap_or(0);
    report(&mut fig, &w, rss_before, rss_end);
    fig.workers_cpu_pct = cpu1.iter().zip(&cpu0).map(|(b, a)| 100.0 * (b - a) / elapsed.max(1e-9)).collect();
    println!(
        "  event-loop threads over warm-up + window + settle: {}",
        workers
            .threads
            .iter()
            .zip(&fig.workers_cpu_pct)
            .map(|((name, _), c)| format!("{name} {c:.1} %"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(q) = &quotas {
        println!(
            "  throttled (periods, time held back): {}",
            q.throttled().iter().map(|(k, t)| format!("{k}, {t:.2} s")).collect::<Vec<_>>().join("; ")
        );
    }
    println!("  kernel receive drops in the window: {}", drops_report(&drops0, &drops1, far.rtp.port()));
    // e. Latency at shares of one core, from this step's CPU per call-second.
    let per_call = w.gw_cpu_s / w.seconds.max(1e-9) / w.active.max(1) as f64;
    let up = fig.established.saturating_sub(fig.dropped);
    for &pct in &opts.levels {
        let want = ((f64::from(pct) / 100.0 / per_call.max(1e-9)).round() as usize).max(1);
        let active = want.min(up);
        let lw = load.window(active, opts.seconds, pid, far)?;
        let mut lf = Figures::default();
        report(&mut lf, &lw, rss_end, rss_end);
        let level = Level {
            n,
            pct,
            active,
            loss_pct: lf.loss_pct,
            hop_p50_ms: lf.hop_p50_ms,
            hop_p99_ms: lf.hop_p99_ms,
            gw_cpu_pct: lf.gw_cpu_pct,
            client_cpu_pct: lf.client_cpu_pct,
        };
        println!(
            "  level {pct} % of a core: {active} calls sending{}; gateway CPU {:.1} %, added per hop p50 {:.3} / p99 {:.3} ms",
            if want > up { format!(" ({want} wanted, {up} up)") } else { String::new() },
            level.gw_cpu_pct,
            level.hop_p50_ms,
            level.hop_p99_ms
        );
        fig.levels.push(level);
    }
    if opts.hold > 0 {
        println!("  holding the calls {} s more (pid {pid})", opts.hold);
        let _ = load.window(n, opts.hold as f64, pid, far)?;
    }
    drop(quotas);
    Ok(fig)
}

/// Fills `fig` from the window and prints it.
fn report(fig: &mut Figures, w: &Window, rss_before: u64, rss_end: u64) {
    let calls = w.active.max(1) as f64;
    fig.loss_pct = w.loss_pct();
    fig.hop_p50_ms = w.added_ms(50.0);
    fig.hop_p99_ms = w.added_ms(99.0);
    fig.gw_cpu_pct = 100.0 * w.gw_cpu_s / w.seconds;
    fig.us_per_call_s = w.gw_cpu_s * 1e6 / (w.seconds * calls);
    fig.kib_per_call = (rss_end as f64 - rss_before as f64) / fig.established.max(1) as f64;
    fig.client_cpu_pct = 100.0 * w.client_cpu_s / w.seconds;
    fig.dropped = w.dropped.len();
    println!(
        "window {:.1} s, {} calls sending: {} packets sent, {} echoed, {} back: loss {:.3} %; load client slips {}",
        w.seconds, w.active, w.calls.sent, w.echoed, w.calls.received, fig.loss_pct, w.calls.slips
    );
    println!(
        "  per hop: out p50 {:.2} / p99 {:.2} ms, back p50 {:.2} / p99 {:.2} ms; baseline out {:.2} / {:.2}, back {:.2} / {:.2}; added p50 {:.2}, p99 {:.2} ms",
        pct_ms(&w.calls.out_us, 50.0),
        pct_ms(&w.calls.out_us, 99.0),
        pct_ms(&w.calls.back_us, 50.0),
        pct_ms(&w.calls.back_us, 99.0),
        pct_ms(&w.probe.out_us, 50.0),
        pct_ms(&w.probe.out_us, 99.0),
        pct_ms(&w.probe.back_us, 50.0),
        pct_ms(&w.probe.back_us, 99.0),
        fig.hop_p50_ms,
        fig.hop_p99_ms
    );
    println!("  {}", w.waits_line());
    println!(
        "  gateway CPU {:.1} % of a core = {:.0} µs per call-second ({:.0} in userspace); VmRSS {rss_before} → {rss_end} KiB = {:.1} KiB per call; load client {:.0} % of a core",
        fig.gw_cpu_pct, fig.us_per_call_s, w.gw_user_s * 1e6 / (w.seconds * calls), fig.kib_per_call, fig.client_cpu_pct
    );
    if let Some(first) = w.dropped.first() {
        println!("  !! {} calls ended during the window; first: {first}", w.dropped.len());
    }
}

/// Datagrams the kernel dropped per local UDP port (the `drops` column of /proc/net/udp, every
/// socket of the namespace).
fn udp_drops_by_port() -> HashMap<u16, u64> {
    let mut out = HashMap::new();
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    for l in table.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (Some(local), Some(drops)) = (f.get(1), f.last().and_then(|d| d.parse::<u64>().ok())) else { continue };
        let Some((_, port)) = local.split_once(':') else { continue };
        if let Ok(port) = u16::from_str_radix(port, 16) {
            *out.entry(port).or_insert(0) += drops;
        }
    }
    out
}

/// Where the kernel dropped datagrams between two [`udp_drops_by_port`] snapshots.
fn drops_report(before: &HashMap<u16, u64>, after: &HashMap<u16, u64>, echo: u16) -> String {
    let (mut rtp, mut far, mut other) = (0, 0, 0);
    for (&port, &d) in after {
        let d = d.saturating_sub(before.get(&port).copied().unwrap_or(0));
        match port {
            20000..=29999 => rtp += d,
            p if p == echo || p == echo + 1 => far += d,
            _ => other += d,
        }
    }
    format!("gateway RTP sockets {rtp}, far-end echo {far}, others (WebRTC socket, browsers) {other}")
}
