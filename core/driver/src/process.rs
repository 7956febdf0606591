//! The process around a core: logging, fatal errors, the lines tests look for, the OS seed and
//! the wall clock.

#![allow(clippy::disallowed_methods)] // this module is where the real clock is read

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a stopping process waits for WebSockets to finish their close handshake.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How long a connection the core closed (`Output::StreamClose`) may take to accept its last
/// bytes before its socket is dropped.
pub const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// How long to wait before accepting again after a resource error (EMFILE, ENOBUFS, ...).
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The `--stats-interval` log line: `stats {json}` with every [`Stats`](sylkgw_core::Stats) field,
/// `worker` (when given), and the process's `rss_kib` (VmRSS) and `fds` (entries of
/// /proc/self/fd), both process-wide; `null` where /proc cannot be read.
pub fn stats_line(worker: Option<usize>, stats: &sylkgw_core::Stats) -> String {
    let mut v = serde_json::to_value(stats).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        if let Some(w) = worker {
            obj.insert("worker".into(), w.into());
        }
        obj.insert("rss_kib".into(), vm_rss_kib().into());
        obj.insert("fds".into(), std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count()).into());
    }
    format!("stats {v}")
}

/// This process's resident set size in KiB (`VmRSS` of /proc/self/status).
pub(crate) fn vm_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()
}

/// Starts logging to stderr: info by default, debug with `-v`, trace with `-vv`; `RUST_LOG`
/// overrides. tungstenite never logs below debug, whatever is asked: at trace it prints every
/// message it receives, `account-add` passwords included.
pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .filter_module("tungstenite", log::LevelFilter::Debug)
        .format_timestamp_millis()
        .init();
}

/// Prints `sylkgw: MSG` to stderr and exits the process with `code` (2: bad command line,
/// configuration or files; 1: failed while running).
pub fn fatal(code: i32, msg: impl std::fmt::Display) -> ! {
    eprintln!("sylkgw: {msg}");
    std::process::exit(code)
}

/// The line logged once the web listener is bound: `listening on ws://ADDR/webrtcgateway/ws`
/// (`wss://` with TLS). Tests and scripts look for it to learn the bound address.
pub fn listening_line(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "wss" } else { "ws" };
    format!("listening on {scheme}://{addr}/webrtcgateway/ws")
}

/// 32 bytes from the operating system's CSPRNG (through rustls' aws-lc-rs provider).
pub fn os_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut seed)
        .expect("the OS random number generator failed");
    seed
}

/// Wall-clock time as a duration since the Unix epoch.
pub fn unix_time() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening() {
        let addr: SocketAddr = "127.0.0.1:4321".parse().unwrap();
        assert_eq!(listening_line(addr, false), "listening on ws://127.0.0.1:4321/webrtcgateway/ws");
        let addr: SocketAddr = "[::1]:99".parse().unwrap();
        assert_eq!(listening_line(addr, true), "listening on wss://[::1]:99/webrtcgateway/ws");
    }

    #[test]
    fn stats_line_has_every_table_and_the_process_figures() {
        let stats = sylkgw_core::Stats { calls: 2, sip_legs: 3, ..sylkgw_core::Stats::default() };
        let line = stats_line(Some(1), &stats);
        let json: serde_json::Value = serde_json::from_str(line.strip_prefix("stats ").expect("prefix")).unwrap();
        assert_eq!(
            (json["calls"].as_u64(), json["sip_legs"].as_u64(), json["worker"].as_u64()),
            (Some(2), Some(3), Some(1))
        );
        for key in ["connections", "websockets", "accounts", "timers", "sip_transactions", "sip_registrations"] {
            assert_eq!(json[key].as_u64(), Some(0), "{key} in {line}");
        }
        assert!(json["rss_kib"].as_u64().is_some_and(|k| k > 0), "{line}");
        assert!(json["fds"].as_u64().is_some_and(|n| n >= 3), "{line}");
        assert!(!stats_line(None, &stats).contains("worker"));
    }
}
