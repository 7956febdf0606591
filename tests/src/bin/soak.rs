//! Soak: churn against kamailio and sipp for a given time, printing the gateway's RSS, open fds
//! and the core's tables over time, then a verdict (prints figures and exits 1 on a failed
//! verdict; it is run briefly by `tests/tests/soak_short.rs`, and for 30 minutes by hand, see
//! README).
//!
//! `soak [--duration SECS] [--warmup SECS] [--interval SECS] [--threads K] [--pause MS]
//! [--bin NAME] [--gw-threads N] [--rss-tolerance PCT]` (defaults: 60 s, 10 % of the duration
//! (at least 10 s), a row every 10 s, K = 2 churn threads each pausing 200 ms between rounds,
//! `sylkgw-mio` (`sylkgw` with `--gw-threads` workers), 5 %). Without the pause the rounds run
//! as fast as loopback allows (about 80 per second on a 2-core VM), which is a stress test of
//! kamailio (its 32 MB of shared memory run out and it answers `500 No error`) more than a soak.
//!
//! Runs itself again inside a private network namespace (root, `unshare`, `ip`); there it starts
//! kamailio, two sipp UASes and the gateway (`sylkgw_tests::churn::Scene`, the release build
//! when there is one, else the debug build; `$SYLKGW_BIN_DIR` overrides) with `--stats-interval
//! 1`. K threads each cycle through every kind of churn round (`churn::Round`: connect, register,
//! call, hang up, close; or vanish mid-call, while ringing, mid-registration, on an incoming
//! call) with their own pair of accounts, until the duration is over. Every `--interval` a row
//! shows elapsed time, rounds done, RSS, fds and the tables. Then the churn stops, the tables are
//! given up to 45 s to drain, and the verdict checks:
//!
//! 1. RSS: every sample after the warm-up stays within `--rss-tolerance` % of the RSS at the end
//!    of the warm-up;
//! 2. leaks: connections, accounts, registrations, transactions, flows, RTP pairs, calls and SIP
//!    legs back to 0, timers and fds back to (at most) their values before the churn, and
//!    kamailio's location table empty;
//! 3. no round failed.

use serde_json::Value;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use sylkgw_tests::churn::{at_baseline, Round, Scene, StatsTail, AT_MOST_BASELINE, MUST_EMPTY, USERS};
use sylkgw_tests::netns::{assert_isolated, reexec_self};
use sylkgw_tests::TempDir;

const ENV_INSIDE: &str = "SYLKGW_SOAK_INSIDE";
/// How long the tables may take to drain after the churn (transactions linger up to 32 s).
const SETTLE: Duration = Duration::from_secs(45);

#[derive(Debug, Clone)]
struct Opts {
    duration: Duration,
    warmup: Option<Duration>,
    interval: Duration,
    threads: usize,
    pause: Duration,
    bin: String,
    gw_threads: usize,
    rss_tolerance: f64,
}

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        duration: Duration::from_secs(60),
        warmup: None,
        interval: Duration::from_secs(10),
        threads: 2,
        pause: Duration::from_millis(200),
        bin: "sylkgw-mio".into(),
        gw_threads: 1,
        rss_tolerance: 5.0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let secs = |v: String| v.parse::<u64>().map(Duration::from_secs).map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--duration" => o.duration = secs(value()?)?,
            "--warmup" => o.warmup = Some(secs(value()?)?),
            "--interval" => o.interval = secs(value()?)?,
            "--threads" => o.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--pause" => o.pause = Duration::from_millis(value()?.parse().map_err(|e| format!("--pause: {e}"))?),
            "--bin" => o.bin = value()?,
            "--gw-threads" => o.gw_threads = value()?.parse().map_err(|e| format!("--gw-threads: {e}"))?,
            "--rss-tolerance" => o.rss_tolerance = value()?.parse().map_err(|e| format!("--rss-tolerance: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.threads == 0 || o.threads > USERS.len() {
        return Err(format!("--threads must be 1..={}", USERS.len()));
    }
    Ok(o)
}

fn main() -> ExitCode {
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    if std::env::var_os(ENV_INSIDE).is_none() {
        return reexec_self("soak", ENV_INSIDE, opts.duration + Duration::from_secs(300));
    }
    assert_isolated();
    if run(&opts) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One sample of the gateway, for the table and the verdict.
struct Sample {
    at: Duration,
    rounds: usize,
    stats: Value,
}

const COLUMNS: [(&str, &str); 10] = [
    ("rss_kib", "rss KiB"),
    ("fds", "fds"),
    ("connections", "conns"),
    ("accounts", "accts"),
    ("sip_registrations", "regs"),
    ("sip_transactions", "trans"),
    ("calls", "calls"),
    ("sip_legs", "legs"),
    ("rtp_pairs", "rtp"),
    ("timers", "timers"),
];

fn header() -> String {
    let mut h = format!("{:>8} {:>7}", "elapsed", "rounds");
    for (_, name) in COLUMNS {
        h += &format!(" {name:>8}");
    }
    h
}

fn row(s: &Sample) -> String {
    let mut r = format!("{:>7}s {:>7}", s.at.as_secs(), s.rounds);
    for (key, _) in COLUMNS {
        r += &format!(" {:>8}", s.stats[key].as_u64().map_or("-".into(), |v| v.to_string()));
    }
    r
}

fn run(o: &Opts) -> bool {
    let bin = sylkgw_tests::bench::locate(&o.bin);
    let warmup = o.warmup.unwrap_or((o.duration / 10).max(Duration::from_secs(10)));
    println!(
        "soak: {} for {:?} (warm-up {warmup:?}), {} churn thread(s) pausing {:?} between rounds, row every {:?}",
        bin.display(),
        o.duration,
        o.threads,
        o.pause,
        o.interval
    );
    let work = TempDir::new("soak");
    let gw_threads = o.gw_threads.to_string();
    let extra: Vec<&str> = if o.bin == "sylkgw" { vec!["--threads", &gw_threads] } else { Vec::new() };
    let scene = Arc::new(Scene::start(work.path(), &bin, &extra, o.duration + Duration::from_secs(120)));
    let baseline = match scene.wait_stats(Duration::from_secs(10), |s| s["connections"] == 0) {
        Ok(b) => b,
        Err(last) => {
            println!("FAIL: no idle stats line from the gateway (last {last:?})");
            return false;
        }
    };
    println!("baseline: {baseline}");
    println!("{}", header());

    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let start = Instant::now();
    let workers: Vec<_> = (0..o.threads)
        .map(|k| {
            let (scene, stop, rounds, failures) =
                (Arc::clone(&scene), Arc::clone(&stop), Arc::clone(&rounds), Arc::clone(&failures));
            let pause = o.pause;
            std::thread::spawn(move || {
                let mut i = k; // threads start at different kinds
                while !stop.load(Ordering::Relaxed) {
                    let round = Round::ALL[i % Round::ALL.len()];
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scene.round(round, USERS[k])));
                    if let Err(e) = r {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        failures.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{round:?}: {msg}"));
                    }
                    rounds.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                    std::thread::sleep(pause);
                }
            })
        })
        .collect();

    // The table: the gateway's log is read incrementally.
    let mut tail = StatsTail::default();
    let mut samples: Vec<Sample> = Vec::new();
    let mut next_row = start + o.interval;
    let sample = |tail: &mut StatsTail| tail.update(&scene.gw);
    while start.elapsed() < o.duration {
        std::thread::sleep(Duration::from_millis(200).min(o.duration.saturating_sub(start.elapsed())));
        if Instant::now() >= next_row {
            next_row += o.interval;
            if let Some(stats) = sample(&mut tail) {
                let s = Sample { at: start.elapsed(), rounds: rounds.load(Ordering::Relaxed), stats };
                println!("{}", row(&s));
                let _ = std::io::stdout().flush();
                samples.push(s);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let total_rounds = rounds.load(Ordering::Relaxed);
    let churn_time = start.elapsed();
    println!("churn stopped: {total_rounds} rounds in {:.0} s", churn_time.as_secs_f64());

    // Drain, then the verdict.
    let settled = scene.wait_stats(SETTLE, |s| at_baseline(s, &baseline));
    let end = match &settled {
        Ok(s) | Err(Some(s)) => Some(s.clone()),
        Err(None) => None,
    };
    if let Some(s) = &end {
        let last = Sample { at: start.elapsed(), rounds: total_rounds, stats: s.clone() };
        println!("{}   (after draining)", row(&last));
    }
    let mut ok = true;

    let rss = |s: &Sample| s.stats["rss_kib"].as_u64();
    let reference = samples.iter().filter(|s| s.at >= warmup).find_map(rss);
    match reference {
        Some(r0) => {
            let after: Vec<u64> = samples.iter().filter(|s| s.at >= warmup).filter_map(rss).collect();
            let (lo, hi) = (after.iter().min().copied().unwrap_or(r0), after.iter().max().copied().unwrap_or(r0));
            let dev = |v: u64| (v as f64 - r0 as f64) / r0 as f64 * 100.0;
            let within = dev(hi) <= o.rss_tolerance && dev(lo) >= -o.rss_tolerance;
            println!(
                "RSS: {r0} KiB after the warm-up; after it min {lo} KiB ({:+.1} %), max {hi} KiB ({:+.1} %): {} (tolerance {} %)",
                dev(lo),
                dev(hi),
                if within { "PASS" } else { "FAIL" },
                o.rss_tolerance
            );
            ok &= within;
        }
        None => {
            println!("RSS: FAIL: no sample after the warm-up");
            ok = false;
        }
    }
    match settled {
        Ok(s) => {
            let vs = |v: &Value| AT_MOST_BASELINE.map(|k| format!("{k} {}", v[k])).join(", ");
            println!("leaks: PASS: {} tables back to 0, {} (baseline {})", MUST_EMPTY.len(), vs(&s), vs(&baseline));
        }
        Err(last) => {
            println!("leaks: FAIL: not back to the baseline {baseline} within {SETTLE:?}: {last:?}");
            ok = false;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut bindings = scene.bindings();
    while !bindings.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        bindings = scene.bindings();
    }
    if bindings.is_empty() {
        println!("kamailio: PASS: location table empty");
    } else {
        println!("kamailio: FAIL: {} binding(s) left: {bindings:?}", bindings.len());
        ok = false;
    }
    let failures = failures.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if failures.is_empty() {
        println!("rounds: PASS: {total_rounds} rounds, none failed");
    } else {
        println!(
            "rounds: FAIL: {} of {total_rounds} failed; first: {:#?}",
            failures.len(),
            &failures[..failures.len().min(3)]
        );
        ok = false;
    }
    println!("verdict: {}", if ok { "PASS" } else { "FAIL" });
    if let Ok(scene) = Arc::try_unwrap(scene) {
        scene.stop();
    }
    ok
}
