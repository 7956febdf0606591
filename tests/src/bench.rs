//! Helpers the benchmark binaries share.

use crate::peers::Kamailio;
use crate::RawWs;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `$SYLKGW_BIN_DIR/sylkgw-mio`, else `target/release/sylkgw-mio`, else the debug build.
pub fn locate_binary() -> PathBuf {
    locate("sylkgw-mio")
}

/// `$SYLKGW_BIN_DIR/NAME`, else `target/release/NAME`, else the debug build (with a warning).
pub fn locate(name: &str) -> PathBuf {
    if std::env::var_os("SYLKGW_BIN_DIR").is_some() {
        return crate::binary(name);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().expect("target/PROFILE");
    let target = profile_dir.parent().expect("target");
    let release = target.join("release").join(name);
    if release.is_file() {
        return release;
    }
    let debug = target.join("debug").join(name);
    if debug.is_file() {
        eprintln!("warning: {} is missing; measuring the DEBUG build {}", release.display(), debug.display());
        return debug;
    }
    panic!("{name} is missing: build the binaries first: cargo build --release --workspace");
}

/// How long a benchmark's outer process lets the run inside its namespace take:
/// `SYLKGW_BENCH_TIMEOUT_SECS` when set to a number, else `default`.
pub fn timeout_from_env(default: Duration) -> Duration {
    std::env::var("SYLKGW_BENCH_TIMEOUT_SECS").ok().and_then(|s| s.parse().ok()).map_or(default, Duration::from_secs)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (inherited by the server).
pub fn raise_nofile() -> (u64, u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write/read the struct we pass and nothing else.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            panic!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            } else {
                eprintln!("warning: setrlimit: {}", std::io::Error::last_os_error());
            }
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}

/// Puts `alice1`…`aliceN` (with `password`) into kamailio's `users` table (`htable.sets`, one kamcmd session fed
/// on stdin) and checks the last one is there.
pub fn add_kamailio_users(kam: &Kamailio, n: usize, password: &str) -> Result<(), String> {
    let kamcmd = crate::netns::find_program("kamcmd").ok_or("kamcmd is not installed")?;
    let mut child = Command::new(kamcmd)
        .arg("-s")
        .arg(format!("unix:{}", kam.ctl_path.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning kamcmd: {e}"))?;
    let mut script = String::new();
    for i in 1..=n {
        script.push_str(&format!("htable.sets users alice{i} {password}\n"));
    }
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("kamcmd did not finish within 120 s".into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for kamcmd: {e}")),
        }
    };
    let _ = writer.join();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        return Err(format!("kamcmd exited with {status}: {err}"));
    }
    let last = format!("alice{n}");
    let got = kam.try_rpc(&["htable.get", "users", &last])?;
    if got.contains(password) {
        Ok(())
    } else {
        Err(format!("htable.get users {last}: {got}"))
    }
}

/// CPU time of these processes so far, in ms (first field of /proc/PID/schedstat, in ns).
pub fn cpu_ms(pids: &[u32]) -> f64 {
    let ns: u64 = pids
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .sum();
    ns as f64 / 1e6
}

/// What one connection's thread saw during the registrations.
#[derive(Debug, Default)]
pub struct Registered {
    /// When each of its accounts reached `registered`.
    pub at: Vec<Instant>,
    /// `failed` states, with the reason.
    pub failed: Vec<String>,
    /// Why the thread stopped early.
    pub error: Option<String>,
}

/// Opens a `sylkRTC-2` WebSocket to `addr` and adds the accounts `aliceI@REALM` for each I
/// in `mine` (password: the HA1 of `password`), waiting for the acks.
pub fn sylkrtc_add_accounts(
    addr: std::net::SocketAddr,
    mine: &[usize],
    realm: &str,
    password: &str,
    read_timeout: Duration,
) -> std::io::Result<RawWs> {
    let (mut ws, _) = RawWs::connect(addr, "sylkRTC-2")?;
    ws.stream.set_read_timeout(Some(read_timeout))?;
    let ready = ws.recv_text()?;
    if ready != r#"{"sylkrtc":"ready-event"}"# {
        return Err(std::io::Error::other(format!("expected the ready-event, got {ready}")));
    }
    for &i in mine {
        let ha1 = sylkgw_core::sip::digest::Algorithm::Md5.hash_hex(format!("alice{i}:{realm}:{password}").as_bytes());
        let add = format!(
            r#"{{"sylkrtc":"account-add","transaction":"a{i}","account":"alice{i}@{realm}","password":"{ha1}"}}"#
        );
        ws.send_text(&add)?;
    }
    for _ in mine {
        let reply = ws.recv_text()?;
        if !reply.starts_with(r#"{"sylkrtc":"ack""#) {
            return Err(std::io::Error::other(format!("account-add: {reply}")));
        }
    }
    Ok(ws)
}

/// Sends `account-register` for every account of `mine` at once, then records when each
/// reached `registered` (or `failed`) in `res`.
pub fn sylkrtc_register(ws: &mut RawWs, mine: &[usize], realm: &str, res: &mut Registered) -> std::io::Result<()> {
    for &i in mine {
        let reg = format!(r#"{{"sylkrtc":"account-register","transaction":"r{i}","account":"alice{i}@{realm}"}}"#);
        ws.send_text(&reg)?;
    }
    while res.at.len() + res.failed.len() < mine.len() {
        let text = ws.recv_text()?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(std::io::Error::other)?;
        if v["sylkrtc"] == "error" {
            return Err(std::io::Error::other(format!("error reply: {text}")));
        }
        if v["event"] != "registration-state" {
            continue;
        }
        match v["state"].as_str() {
            Some("registered") => res.at.push(Instant::now()),
            Some("failed") => res.failed.push(text),
            _ => {}
        }
    }
    Ok(())
}

/// Datagrams the kernel dropped (full receive buffers) on the UDP sockets bound to `port` in
/// this network namespace so far: the `drops` column of /proc/net/udp.
pub fn udp_drops(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let local = l.split_whitespace().nth(1).unwrap_or("");
            local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port)
        })
        .filter_map(|l| l.split_whitespace().last().and_then(|d| d.parse::<u64>().ok()))
        .sum()
}
