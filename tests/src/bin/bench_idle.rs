//! Idle-connection benchmark for `sylkgw-mio` (prints figures; not a test).
//!
//! `bench_idle [N [M]]`: starts `target/release/sylkgw-mio` (the debug build, with a warning,
//! when there is no release build; `$SYLKGW_BIN_DIR` overrides) on 127.0.0.1:0, opens N
//! (default 10000) plain WebSockets offering `sylkRTC-2`, waiting for each `ready-event`, and
//! reports the server's resident memory per connection (target: at most 16 KiB). Then, with all
//! connections open, it sends M (default 20000) sylkRTC pings round-robin, one at a time, and
//! reports the ping→ack latency (target: p99 at most 1 ms). Finally it sends SIGTERM, answers
//! the 1001 closes and reports how the server exited.
//!
//! The gateway gets a config file with `max_connections_per_ip` set to N + 16 (every connection
//! comes from 127.0.0.1; the default 100 would refuse connection 101). It is stopped on every
//! exit path: errors return through `main` and a panic unwinds, both dropping the [`Server`]
//! (which kills it by PID when it still runs).

use std::process::ExitCode;
use std::time::{Duration, Instant};
use sylkgw_tests::{close_code, config_file, opcode, vm_rss_kib, RawWs, Server};

const RSS_TARGET_KIB: f64 = 16.0;
const P99_TARGET_US: u64 = 1000;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bench_idle: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The benchmark; an `Err` is reported by `main` after the server was dropped (stopped).
fn run() -> Result<ExitCode, String> {
    let mut argv = std::env::args().skip(1);
    let n: usize = argv.next().map(|a| a.parse().expect("N: a number of connections")).unwrap_or(10_000);
    let m: usize = argv.next().map(|a| a.parse().expect("M: a number of pings")).unwrap_or(20_000);
    assert!(n > 0, "N must be at least 1");

    let (soft, hard) = sylkgw_tests::bench::raise_nofile();
    println!("RLIMIT_NOFILE: soft {soft}, hard {hard}");
    if (soft as usize) < n + 64 {
        eprintln!("warning: {soft} file descriptors are too few for {n} connections");
    }

    let bin = sylkgw_tests::bench::locate_binary();
    println!("server: {}", bin.display());
    let (_cfg_dir, cfg) = config_file(&format!("max_connections_per_ip = {}\n", n + 16));
    let cfg = cfg.to_string_lossy().into_owned();
    let mut server = Server::start(&bin, &["--config", cfg.as_str()]);
    let pid = server.pid();
    println!("listening on {} (pid {pid})", server.url());
    std::thread::sleep(Duration::from_millis(200));
    let rss_before = vm_rss_kib(pid).expect("VmRSS of the server");

    // Open the connections.
    let t0 = Instant::now();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let (mut c, _) = RawWs::connect(server.addr, "sylkRTC-2")
            .map_err(|e| failure(&server, format!("connection {i}: upgrade failed: {e}")))?;
        let ready = c.recv_text().map_err(|e| failure(&server, format!("connection {i}: no ready-event: {e}")))?;
        if ready != r#"{"sylkrtc":"ready-event"}"# {
            return Err(failure(&server, format!("connection {i}: expected the ready-event, got {ready}")));
        }
        conns.push(c);
    }
    let open_time = t0.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = vm_rss_kib(pid).expect("VmRSS of the server");
    let per_conn = (rss_after as f64 - rss_before as f64) / n as f64;
    println!(
        "opened {n} connections in {:.2} s ({:.0} µs each)",
        open_time.as_secs_f64(),
        open_time.as_secs_f64() * 1e6 / n as f64
    );
    println!("server VmRSS: {rss_before} KiB before, {rss_after} KiB with {n} connections open");
    println!(
        "RSS per connection: {per_conn:.2} KiB (target <= {RSS_TARGET_KIB} KiB: {})",
        verdict(per_conn <= RSS_TARGET_KIB)
    );
    if let Some(own) = vm_rss_kib(std::process::id()) {
        println!("(bench client VmRSS: {own} KiB)");
    }

    // Pings round-robin, one at a time.
    let mut lat_ns: Vec<u64> = Vec::with_capacity(m);
    let t0 = Instant::now();
    for i in 0..m {
        let c = &mut conns[i % n];
        let request = format!(r#"{{"sylkrtc":"ping","transaction":"{i}"}}"#);
        let expected = format!(r#"{{"sylkrtc":"ack","transaction":"{i}"}}"#);
        let sent = Instant::now();
        c.send_text(&request).map_err(|e| failure(&server, format!("ping {i}: send failed: {e}")))?;
        let reply = c.recv_text().map_err(|e| failure(&server, format!("ping {i}: no ack: {e}")))?;
        let took = sent.elapsed();
        if reply != expected {
            return Err(failure(&server, format!("ping {i}: expected {expected}, got {reply}")));
        }
        lat_ns.push(took.as_nanos() as u64);
    }
    let ping_time = t0.elapsed();
    lat_ns.sort_unstable();
    let pct = |p: usize| lat_ns[((lat_ns.len() * p) / 100).min(lat_ns.len() - 1)] / 1000;
    let (p50, p99, max) = (pct(50), pct(99), lat_ns[lat_ns.len() - 1] / 1000);
    println!(
        "{m} pings over {n} connections in {:.2} s: ping→ack p50 {p50} µs, p99 {p99} µs, max {max} µs (target p99 <= {P99_TARGET_US} µs: {})",
        ping_time.as_secs_f64(),
        verdict(p99 <= P99_TARGET_US)
    );
    if let Some(rss) = vm_rss_kib(pid) {
        println!("server VmRSS after the pings: {rss} KiB");
    }

    // Shutdown.
    let t0 = Instant::now();
    server.sigterm();
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for c in &mut conns {
        let _ = c.stream.set_read_timeout(Some(Duration::from_secs(5)));
        let key = loop {
            match c.read_frame() {
                Ok(Some(f)) if f.opcode == opcode::CLOSE => {
                    let _ = c.send_frame(opcode::CLOSE, &f.payload[..f.payload.len().min(2)]);
                    break close_code(&f.payload).map_or("close without code".to_string(), |c| format!("close {c}"));
                }
                Ok(Some(f)) if f.opcode == opcode::PING => {
                    let _ = c.send_frame(opcode::PONG, &f.payload);
                }
                Ok(Some(_)) => {}
                Ok(None) => break "TCP closed without a close frame".to_string(),
                Err(e) => break format!("error: {}", e.kind()),
            }
        };
        *codes.entry(key).or_default() += 1;
    }
    let exit = server.wait_exit(Duration::from_secs(15));
    println!("SIGTERM: {codes:?}; server exited with {exit:?} after {:.2} s", t0.elapsed().as_secs_f64());
    drop(conns);
    Ok(if exit == Some(0) && codes.get("close 1001") == Some(&n) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// `what`, followed by the server's stderr so far.
fn failure(server: &Server, what: String) -> String {
    format!("{what}\n---- server stderr ----\n{}", server.stderr_text())
}
