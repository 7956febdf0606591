//! End-to-end registration benchmark: `sylkgw-mio` against kamailio (prints figures; not a test).
//!
//! `bench_register_e2e [N [K]]` (default N = 1000 accounts over K = 100 WebSockets). The
//! process re-executes itself in a fresh network namespace
//! (`unshare -n sh -c 'ip link set lo up && exec "$0" "$@"'`, marked with
//! `SYLKGW_BENCH_E2E_INSIDE=1`; needs root, `unshare` and `ip`) so that kamailio can take
//! 127.0.0.1:5060. Inside:
//!
//! 1. kamailio starts (`tests/peers/kamailio/kamailio.cfg`; users `alice1`…`aliceN` with the
//!    password `secret`, realm 127.0.0.1, are put in its `users` table with `htable.sets`), then
//!    `target/release/sylkgw-mio` (the debug build, with a warning, when there is no release
//!    build; `$SYLKGW_BIN_DIR` overrides) with
//!    `--sip-listen 127.0.0.1:5080 --outbound-proxy 127.0.0.1:5060`.
//! 2. K threads each open one WebSocket (`sylkRTC-2`) and add their share of the N accounts
//!    (`aliceI@127.0.0.1`, password the HA1), waiting for the acks.
//! 3. At one instant every thread sends all its `account-register` requests; the time until the
//!    last account reached `registered` gives registrations/s. Printed too: latency percentiles,
//!    the CPU time of the gateway and of kamailio, kamailio's location table (`ul.dump` through
//!    the JSON-RPC FIFO, and usrloc's counters), the REGISTERs kamailio logged (2 per
//!    registration without retransmissions), the datagrams the kernel dropped on each SIP socket
//!    (/proc/net/udp), and the gateway's VmRSS delta per registered account.
//! 4. Every thread closes its WebSocket (close 1000); the gateway unregisters the accounts, and
//!    the time until kamailio's table is empty is printed.
//!
//! Everything is stopped by PID at the end (the gateway with SIGTERM, kamailio through
//! [`Kamailio::stop`]); the outer process bounds the inner one (`SYLKGW_BENCH_TIMEOUT_SECS`,
//! default 600) and kills it and its descendants by PID when it overruns.

use serde_json::Value;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use sylkgw_tests::bench::{sylkrtc_add_accounts, sylkrtc_register, Registered};
use sylkgw_tests::netns::{self, assert_isolated};
use sylkgw_tests::peers::{Kamailio, KamailioOpts};
use sylkgw_tests::{opcode, vm_rss_kib, Server, TempDir};

/// Set in the environment of the re-executed benchmark inside the namespace.
const ENV_INSIDE: &str = "SYLKGW_BENCH_E2E_INSIDE";
const REALM: &str = "127.0.0.1";
const PASSWORD: &str = "secret";
/// How long one read may block before a connection gives up.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long kamailio's table may take to empty after the WebSockets closed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    if std::env::var_os(ENV_INSIDE).is_none() {
        return reexec();
    }
    assert_isolated();
    let mut argv = std::env::args().skip(1);
    let n: usize = argv.next().map(|a| a.parse().expect("N: a number of accounts")).unwrap_or(1000);
    let k: usize = argv.next().map(|a| a.parse().expect("K: a number of WebSockets")).unwrap_or(100);
    assert!(n > 0 && k > 0, "N and K must be at least 1");
    run(n, k.min(n))
}

/// Runs this program again inside a fresh network namespace (bounded by
/// `SYLKGW_BENCH_TIMEOUT_SECS`, default 600); returns its outcome.
fn reexec() -> ExitCode {
    let timeout = sylkgw_tests::bench::timeout_from_env(Duration::from_secs(600));
    netns::reexec_self("bench_register_e2e", ENV_INSIDE, timeout)
}

fn run(n: usize, k: usize) -> ExitCode {
    println!("==== bench_register_e2e: N = {n} accounts over K = {k} WebSockets (sylkgw-mio <-> kamailio, UDP) ====");
    let (soft, _) = sylkgw_tests::bench::raise_nofile();
    if (soft as usize) < k + 64 {
        eprintln!("warning: {soft} file descriptors are too few for {k} connections");
    }
    let work = TempDir::new("bre");
    // The users go in by RPC once kamailio runs: as config lines (`KamailioOpts::users`) a
    // thousand of them overflow the 4 MB of private memory `Kamailio::start` gives kamailio.
    let opts = KamailioOpts { ..KamailioOpts::default() };
    let t = Instant::now();
    let kam = Kamailio::start(work.path(), opts);
    let fifo = work.path().join("kamailio/run/kamailio_rpc.fifo");
    println!("kamailio {} ready in {:.2} s (pid {})", kam.addr(), t.elapsed().as_secs_f64(), kam.pid());
    let t = Instant::now();
    if let Err(e) = sylkgw_tests::bench::add_kamailio_users(&kam, n, PASSWORD) {
        println!("  !! adding the users to kamailio: {e}");
        return ExitCode::FAILURE;
    }
    println!("kamailio: users alice1..alice{n} (password {PASSWORD:?}) added in {:.2} s", t.elapsed().as_secs_f64());

    let bin = sylkgw_tests::bench::locate_binary();
    let args = ["--sip-listen", "127.0.0.1:5080", "--outbound-proxy", "127.0.0.1:5060"];
    let mut server = Server::start(&bin, &args);
    let pid = server.pid();
    println!("gateway: {} {} (pid {pid}) on {}", bin.display(), args.join(" "), server.url());
    std::thread::sleep(Duration::from_millis(200));
    let rss_idle = vm_rss_kib(pid).expect("VmRSS of the gateway");

    // Accounts of connection c: c+1, c+1+k, c+1+2k, …
    let accounts = |c: usize| (c + 1..=n).step_by(k).collect::<Vec<usize>>();
    let (ready_tx, ready_rx) = mpsc::channel::<(usize, Option<String>)>();
    let (done_tx, done_rx) = mpsc::channel::<(usize, Registered)>();
    let addr = server.addr;
    let mut ok = true;
    // A thread waits for each phase on its own channel; if this thread panics, the senders go
    // and every connection thread ends (no thread is left waiting).
    std::thread::scope(|s| {
        let mut go_register = Vec::with_capacity(k);
        let mut go_close = Vec::with_capacity(k);
        let t = Instant::now();
        for c in 0..k {
            let (reg_tx, reg_rx) = mpsc::channel::<()>();
            let (close_tx, close_rx) = mpsc::channel::<()>();
            go_register.push(reg_tx);
            go_close.push(close_tx);
            let (ready_tx, done_tx) = (ready_tx.clone(), done_tx.clone());
            let mine = accounts(c);
            s.spawn(move || connection(c, addr, &mine, ready_tx, reg_rx, done_tx, close_rx));
        }
        drop((ready_tx, done_tx));

        // Connections open and accounts added.
        for _ in 0..k {
            match ready_rx.recv_timeout(READ_TIMEOUT) {
                Ok((_, None)) => {}
                Ok((c, Some(e))) => {
                    ok = false;
                    println!("  !! connection {c}: {e}");
                }
                Err(e) => {
                    ok = false;
                    println!("  !! connections not ready: {e}");
                    break;
                }
            }
        }
        let setup = t.elapsed();
        std::thread::sleep(Duration::from_millis(300));
        let rss_added = vm_rss_kib(pid).unwrap_or(0);
        println!("{k} WebSockets opened and {n} accounts added in {:.2} s", setup.as_secs_f64());
        let kam_registers_before = count_lines(&kam.log_text(), "REQ REGISTER");
        let kam_pids = kam.pids();
        let cpu0 = (sylkgw_tests::bench::cpu_ms(&[pid]), sylkgw_tests::bench::cpu_ms(&kam_pids));

        // Registrations.
        let t0 = Instant::now();
        for tx in &go_register {
            let _ = tx.send(());
        }
        let mut results = Vec::with_capacity(k);
        for _ in 0..k {
            match done_rx.recv() {
                Ok(r) => results.push(r),
                Err(_) => break,
            }
        }
        let mut lat: Vec<Duration> = results.iter().flat_map(|(_, r)| r.at.iter().map(|at| *at - t0)).collect();
        lat.sort_unstable();
        let registered = lat.len();
        let failed: Vec<&String> = results.iter().flat_map(|(_, r)| &r.failed).collect();
        for (c, r) in &results {
            if let Some(e) = &r.error {
                println!("  !! connection {c}: {e}");
            }
        }
        let all = lat.last().copied().unwrap_or_default();
        println!(
            "registered {registered}/{n} in {:.3} s = {:.0} registrations/s (send -> `registered`: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms)",
            all.as_secs_f64(),
            registered as f64 / all.as_secs_f64(),
            pct(&lat, 50),
            pct(&lat, 90),
            pct(&lat, 99),
            all.as_millis()
        );
        if !failed.is_empty() {
            println!("  !! {} `failed` states, first: {}", failed.len(), failed[0]);
        }
        let cpu1 = (sylkgw_tests::bench::cpu_ms(&[pid]), sylkgw_tests::bench::cpu_ms(&kam_pids));
        println!(
            "CPU time while registering: gateway {:.0} ms ({:.0} µs per registration), kamailio {:.0} ms (all its processes)",
            cpu1.0 - cpu0.0,
            (cpu1.0 - cpu0.0) * 1e3 / n as f64,
            cpu1.1 - cpu0.1
        );
        ok &= registered == n && failed.is_empty();

        std::thread::sleep(Duration::from_millis(500));
        let rss_reg = vm_rss_kib(pid).unwrap_or(0);
        println!(
            "gateway VmRSS: {rss_idle} KiB idle, {rss_added} KiB with the accounts added, {rss_reg} KiB registered: \
             {:.2} KiB per registered account ({:.2} KiB for the registration alone)",
            (rss_reg as f64 - rss_idle as f64) / n as f64,
            (rss_reg as f64 - rss_added as f64) / n as f64
        );
        match ul_dump(&fifo) {
            Ok(contacts) => {
                let ours = contacts.iter().filter(|(_, address)| address.contains("@127.0.0.1:5080")).count();
                let mut aors: Vec<&str> = contacts.iter().map(|(aor, _)| aor.as_str()).collect();
                aors.sort_unstable();
                aors.dedup();
                println!(
                    "kamailio ul.dump: {} contacts ({ours} of the gateway) for {} AoRs; usrloc stats: {}",
                    contacts.len(),
                    aors.len(),
                    usrloc_stats(&kam)
                );
                ok &= ours == n;
            }
            Err(e) => {
                ok = false;
                println!("  !! ul.dump: {e}; usrloc stats: {}", usrloc_stats(&kam));
            }
        }
        println!("UDP drops so far: {}", udp_drops());
        let log = kam.log_text();
        let kam_registers = count_lines(&log, "REQ REGISTER") - kam_registers_before;
        println!(
            "kamailio received {kam_registers} REGISTERs for {n} registrations ({:.2} each; 2 = challenge + credentials, more = retransmissions)",
            kam_registers as f64 / n as f64
        );

        // Close every WebSocket: the gateway unregisters.
        let cpu2 = (sylkgw_tests::bench::cpu_ms(&[pid]), sylkgw_tests::bench::cpu_ms(&kam_pids));
        let t1 = Instant::now();
        for tx in &go_close {
            let _ = tx.send(());
        }
        let mut last = usize::MAX;
        let mut samples = Vec::new();
        let mut poll_error = None;
        let emptied = loop {
            let count = match location_contacts(&kam) {
                Ok(count) => count,
                Err(e) => {
                    poll_error.get_or_insert(e);
                    std::thread::sleep(Duration::from_millis(20));
                    if t1.elapsed() > DRAIN_TIMEOUT {
                        break None;
                    }
                    continue;
                }
            };
            if count != last {
                samples.push(format!("{:.2}s:{count}", t1.elapsed().as_secs_f64()));
                last = count;
            }
            if count == 0 {
                break Some(t1.elapsed());
            }
            if t1.elapsed() > DRAIN_TIMEOUT {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        match emptied {
            Some(d) => println!(
                "closed {k} WebSockets: kamailio's location table empty after {:.3} s = {:.0} unregistrations/s (contacts left over time: {})",
                d.as_secs_f64(),
                n as f64 / d.as_secs_f64(),
                samples.join(" ")
            ),
            None => {
                ok = false;
                println!(
                    "  !! kamailio still has {last} contacts {DRAIN_TIMEOUT:?} after the WebSockets closed ({}; first polling error: {poll_error:?})",
                    samples.join(" ")
                );
            }
        }
        let cpu3 = (sylkgw_tests::bench::cpu_ms(&[pid]), sylkgw_tests::bench::cpu_ms(&kam_pids));
        println!("CPU time while unregistering: gateway {:.0} ms, kamailio {:.0} ms", cpu3.0 - cpu2.0, cpu3.1 - cpu2.1);
        let log = kam.log_text();
        println!(
            "kamailio received {} REGISTERs while unregistering; UDP drops so far: {}",
            count_lines(&log, "REQ REGISTER") - kam_registers_before - kam_registers,
            udp_drops()
        );
        match ul_dump(&fifo) {
            Ok(contacts) => println!("kamailio ul.dump at the end: {} contacts", contacts.len()),
            Err(e) => println!("  !! ul.dump: {e}"),
        }
    });

    std::thread::sleep(Duration::from_millis(300));
    println!("gateway VmRSS after the WebSockets closed: {} KiB", vm_rss_kib(pid).unwrap_or(0));
    let stderr = server.stderr_text();
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
    println!("gateway log: {} lines, {} warnings/errors", stderr.lines().count(), warnings.len());
    for w in warnings.iter().take(5) {
        println!("  {w}");
    }
    server.sigterm();
    let exit = server.wait_exit(Duration::from_secs(15));
    println!("gateway exited with {exit:?}");
    kam.stop();
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One WebSocket: adds `mine` and says so on `ready`; on `go_register` registers them all at
/// once and reports on `done`; on `go_close` closes. Ends early when a channel is gone.
fn connection(
    c: usize,
    addr: std::net::SocketAddr,
    mine: &[usize],
    ready: mpsc::Sender<(usize, Option<String>)>,
    go_register: mpsc::Receiver<()>,
    done: mpsc::Sender<(usize, Registered)>,
    go_close: mpsc::Receiver<()>,
) {
    let mut res = Registered::default();
    let mut ws = match sylkrtc_add_accounts(addr, mine, REALM, PASSWORD, READ_TIMEOUT) {
        Ok(ws) => {
            let _ = ready.send((c, None));
            Some(ws)
        }
        Err(e) => {
            let _ = ready.send((c, Some(format!("setup: {e}"))));
            None
        }
    };
    if go_register.recv().is_err() {
        return;
    }
    if let Some(w) = ws.as_mut() {
        if let Err(e) = sylkrtc_register(w, mine, REALM, &mut res) {
            res.error = Some(format!("registering: {e}"));
        }
    }
    let _ = done.send((c, res));
    if go_close.recv().is_err() {
        return;
    }
    if let Some(mut w) = ws {
        let _ = w.send_frame(opcode::CLOSE, &1000u16.to_be_bytes());
        let _ = w.stream.set_read_timeout(Some(Duration::from_secs(5)));
        while let Ok(Some(f)) = w.read_frame() {
            if f.opcode == opcode::CLOSE {
                break;
            }
        }
    }
}

fn pct(sorted: &[Duration], p: usize) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)].as_millis()
}

fn count_lines(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// usrloc's own counters, when kamailio answers them.
fn usrloc_stats(kam: &Kamailio) -> String {
    match kam.try_rpc(&["stats.get_statistics", "usrloc:"]) {
        Ok(text) => {
            let wanted = ["location_users", "location_contacts", "registered_users"];
            let found: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| wanted.iter().any(|w| l.contains(w)))
                .map(|l| l.trim_matches('"').trim_start_matches("usrloc:").to_string())
                .collect();
            found.join(", ")
        }
        Err(e) => format!("unavailable: {}", e.lines().next().unwrap_or("")),
    }
}

/// usrloc's `location_contacts` counter (a small reply, cheap to poll).
fn location_contacts(kam: &Kamailio) -> Result<usize, String> {
    let text = kam.try_rpc(&["stats.get_statistics", "location_contacts"])?;
    text.lines()
        .find_map(|l| l.split_once('='))
        .and_then(|(_, v)| v.trim().trim_matches('"').trim().parse().ok())
        .ok_or_else(|| format!("unexpected reply {text:?}"))
}

/// `ul.dump` through kamailio's JSON-RPC FIFO (kamcmd refuses replies over 64 KiB): every
/// contact as `(AoR, Address)`.
fn ul_dump(fifo: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    let reply = jsonrpc_fifo(fifo, "ul.dump", Duration::from_secs(10))?;
    let v: Value = serde_json::from_str(&reply).map_err(|e| format!("JSON reply: {e}"))?;
    if let Some(err) = v.get("error") {
        return Err(format!("error reply: {err}"));
    }
    let mut out = Vec::new();
    let domains = v["result"]["Domains"].as_array().cloned().unwrap_or_default();
    for d in &domains {
        for aor in d["Domain"]["AoRs"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let info = &aor["Info"];
            let name = info["AoR"].as_str().unwrap_or_default();
            for c in info["Contacts"].as_array().map(Vec::as_slice).unwrap_or_default() {
                out.push((name.to_string(), c["Contact"]["Address"].as_str().unwrap_or_default().to_string()));
            }
        }
    }
    Ok(out)
}

/// One JSON-RPC request through jsonrpcs' FIFO; the reply comes back on a FIFO of ours in /tmp
/// (jsonrpcs' `fifo_reply_dir`). Bounded by `timeout` (a stuck exchange leaves one thread
/// blocked until the process ends).
fn jsonrpc_fifo(fifo: &std::path::Path, method: &str, timeout: Duration) -> Result<String, String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    // jsonrpcs refuses reply names with `.` or `/`.
    let name = format!("sylkgw_bre_{}_{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
    let reply_path = std::path::Path::new("/tmp").join(&name);
    let _ = std::fs::remove_file(&reply_path);
    let c_path = std::ffi::CString::new(reply_path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: mkfifo reads the NUL-terminated path and nothing else.
    if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
        return Err(format!("mkfifo {}: {}", reply_path.display(), std::io::Error::last_os_error()));
    }
    let request = format!("{{\"jsonrpc\":\"2.0\",\"method\":\"{method}\",\"reply_name\":\"{name}\",\"id\":1}}\n");
    let (tx, rx) = mpsc::channel();
    let (fifo, path) = (fifo.to_path_buf(), reply_path.clone());
    std::thread::spawn(move || {
        let result = (|| -> std::io::Result<String> {
            std::fs::OpenOptions::new().write(true).open(&fifo)?.write_all(request.as_bytes())?;
            let mut reply = String::new();
            std::fs::File::open(&path)?.read_to_string(&mut reply)?;
            Ok(reply)
        })();
        let _ = tx.send(result);
    });
    let result = match rx.recv_timeout(timeout) {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(format!("JSON-RPC FIFO: {e}")),
        Err(_) => Err(format!("no JSON-RPC reply within {timeout:?}")),
    };
    let _ = std::fs::remove_file(&reply_path);
    result
}

/// Datagrams the kernel dropped on the SIP sockets so far.
fn udp_drops() -> String {
    use sylkgw_tests::bench::udp_drops as drops;
    format!("kamailio :5060 {}, gateway :5080 {}", drops(5060), drops(5080))
}
