//! Messaging benchmark, end to end (prints figures; not a test): alice and bob, each on a
//! WebSocket to `sylkgw-mio`, kamailio between them (UDP). Alice sends N `account-message`s
//! keeping W of them unanswered (a burst beyond the store's queue of 256 per core is refused
//! with `storage unavailable`: counted as refused); printed: the time until bob has every `message` and alice every `accepted`
//! (messages per second end to end: journal on both sides, CPIM, digest-challenged MESSAGE through
//! kamailio, delivery to the other WebSocket, result back), and latency percentiles.
//!
//! `bench_messages [N [W]]` (default 2000 messages, at most W = 100 unanswered at a time). The process re-executes itself in a fresh network
//! namespace (needs root, `unshare`, `ip`). The gateway binary is the one next to this program
//! (`target/release` for a release build), or `$SYLKGW_BIN_DIR`'s; its store is SQLite in a
//! temporary directory (`BENCH_KAMAILIO_LOG=1` prints kamailio's log at the end). The per-account and per-connection rate limits are lifted for the run.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use sylkgw_tests::netns::{self, assert_isolated};
use sylkgw_tests::peers::{Kamailio, KamailioOpts};
use sylkgw_tests::{config_file, ha1, Server, TempDir, WsClient};

const ENV_INSIDE: &str = "SYLKGW_BENCH_MSG_INSIDE";

fn main() -> ExitCode {
    if std::env::var_os(ENV_INSIDE).is_none() {
        return netns::reexec_self("bench_messages", ENV_INSIDE, Duration::from_secs(600));
    }
    assert_isolated();
    let n: usize = std::env::args().nth(1).map(|a| a.parse().expect("N: a number of messages")).unwrap_or(2000);
    let window: usize = std::env::args().nth(2).map(|a| a.parse().expect("W: requests in flight")).unwrap_or(100);
    run(n.max(1), window.max(1));
    ExitCode::SUCCESS
}

fn gateway_binary() -> PathBuf {
    let dir = std::env::var_os("SYLKGW_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| {
        std::env::current_exe().unwrap().parent().expect("the benchmark lives in target/PROFILE").to_path_buf()
    });
    dir.join("sylkgw-mio")
}

fn registered(gw: &Server, account: &str) -> WsClient {
    let mut ws = WsClient::ready(gw);
    let user = account.split('@').next().unwrap();
    ws.add_and_register(account, &ha1(user, "127.0.0.1", "secret"));
    assert_eq!(ws.next_registration_state().0, "registered");
    ws.set_read_timeout(Duration::from_secs(60));
    ws
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

fn run(n: usize, window: usize) {
    let bin = gateway_binary();
    println!(
        "==== bench_messages: {n} messages alice -> bob, at most {window} in flight ({}) <-> kamailio (UDP) ====",
        bin.display()
    );
    let work = TempDir::new("bench-msg");
    // The burst keeps thousands of finished MESSAGE transactions (timer J) in kamailio.
    let kam = Kamailio::start(work.path(), KamailioOpts { shm_mb: 256, ..KamailioOpts::default() });
    let (_cfg_dir, cfg) = config_file(
        "max_messages_per_second = 1000000\nmax_requests_per_second = 1000000\nmax_journal_entries = 0\n\
         max_sip_requests_per_second_per_ip = 0\n",
    );
    let proxy = kam.addr().to_string();
    let cfg = cfg.display().to_string();
    let gw = Server::start(&bin, &["--sip-listen", "127.0.0.1:5080", "--outbound-proxy", &proxy, "--config", &cfg]);
    let mut alice = registered(&gw, "alice@127.0.0.1");
    let mut bob = registered(&gw, "bob@127.0.0.1");
    kam.wait_binding("bob", Duration::from_secs(10));
    // Bob reads until he has every message, or nothing came for 5 s (some were refused).
    let receiver = std::thread::spawn(move || {
        let mut got = BTreeMap::new();
        while got.len() < n {
            let Ok(Some(tungstenite::Message::Text(text))) = bob.next_before(Instant::now() + Duration::from_secs(5))
            else {
                break;
            };
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            if v["event"] == "message" {
                got.insert(v["message_id"].as_str().unwrap_or_default().to_string(), Instant::now());
            }
        }
        got
    });
    let t0 = Instant::now();
    let mut sent = BTreeMap::new();
    let (mut accepted, mut failed, mut refused) = (0, 0, 0);
    let mut results = Vec::with_capacity(n);
    while accepted + failed + refused < n {
        // Keep at most `window` requests in flight.
        while sent.len() < n && sent.len() - (accepted + failed + refused) < window {
            let i = sent.len();
            let req = serde_json::json!({"sylkrtc": "account-message", "transaction": format!("t{i}"),
                "account": "alice@127.0.0.1", "uri": "bob@127.0.0.1", "message_id": format!("b{i}"),
                "content": format!("message {i}"), "content_type": "text/plain", "timestamp": "2026-01-01T12:00:00Z"});
            alice.send_text(&req.to_string());
            sent.insert(format!("b{i}"), Instant::now());
        }
        let Ok(Some(tungstenite::Message::Text(text))) = alice.next_before(Instant::now() + Duration::from_secs(30))
        else {
            println!("alice: nothing for 30 s; giving up");
            break;
        };
        let v: Value = serde_json::from_str(text.as_str()).unwrap();
        if v["event"] == "disposition-notification" {
            match v["state"].as_str() {
                Some("accepted") => accepted += 1,
                _ => {
                    failed += 1;
                    if failed == 1 {
                        println!("first failure: {} {}", v["code"], v["reason"]);
                    }
                }
            }
            results.push((v["message_id"].as_str().unwrap_or_default().to_string(), Instant::now()));
        } else if v["sylkrtc"] == "error" {
            refused += 1;
            if refused == 1 {
                println!("first refusal: {}", v["error"]);
            }
        }
    }
    let all_results = t0.elapsed();
    let got = receiver.join().unwrap();
    let all = got.values().max().map_or(Duration::ZERO, |last| last.saturating_duration_since(t0));
    let mut delivery: Vec<Duration> =
        got.iter().filter_map(|(id, at)| sent.get(id).map(|s| at.saturating_duration_since(*s))).collect();
    delivery.sort();
    let mut result_latency: Vec<Duration> =
        results.iter().filter_map(|(id, at)| sent.get(id).map(|s| at.saturating_duration_since(*s))).collect();
    result_latency.sort();
    println!("accepted {accepted}, failed {failed}, refused (error) {refused}, delivered {}", got.len());
    println!(
        "all results in {:.2} s, all delivered in {:.2} s: {:.0} messages/s end to end",
        all_results.as_secs_f64(),
        all.as_secs_f64(),
        accepted as f64 / all.as_secs_f64()
    );
    for (name, lat) in [("delivery", &delivery), ("result", &result_latency)] {
        if !lat.is_empty() {
            println!(
                "{name} latency p50 {:?} p90 {:?} p99 {:?} max {:?}",
                percentile(lat, 50),
                percentile(lat, 90),
                percentile(lat, 99),
                lat[lat.len() - 1]
            );
        }
    }
    drop(alice);
    gw.sigterm();
    if std::env::var_os("BENCH_KAMAILIO_LOG").is_some() {
        eprintln!("==== kamailio log ====\n{}", kam.log_text());
    }
    kam.stop();
}
