//! Churn against a running gateway, for leak checks: WebSockets that connect, add and register an
//! account, call and hang up, or vanish (TCP dropped without a close frame) mid-call,
//! mid-registration, while a call rings or while an incoming call is offered; and the gateway's
//! `--stats-interval` lines (`stats {json}`: the core's tables, RSS, open fds) read back from its
//! log. Used by `tests/tests/e2e_churn.rs` and the soak (`tests/src/bin/soak.rs`).
//!
//! The scene ([`Scene`]) inside a private network namespace: kamailio on 127.0.0.1:5060
//! (registrar and authenticating proxy, users [`USERS`] with password `secret`), the gateway with
//! `--outbound-proxy 127.0.0.1:5060`, a sipp UAS answering every call (`uas_rr.xml`,
//! [`ECHO_URI`]) and a sipp UAS that only rings and answers CANCEL with 487
//! (`uas_ring_cancel.xml`, [`RING_URI`]). Calls carry a real WebRTC offer (str0m, see
//! [`crate::webrtc_client`]); their media never connects (a round is over long before the
//! gateway's media timeout), so what is exercised is signalling and the allocation and release
//! of every per-call resource (SIP leg, browser leg, RTP/RTCP pair, timers).

use crate::peers::{Kamailio, KamailioOpts, Scenario, Sipp, SippProcess};
use crate::webrtc_client::{Video, WebRtcClient};
use crate::{ha1, Server, WsClient};
use serde_json::Value;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};
use tungstenite::Message;

/// kamailio users (password `secret`), in pairs: a churn thread uses one pair (the first as the
/// round's account, the second as the caller of [`Round::VanishIncoming`]), so that parallel
/// threads never reach each other's registrations (kamailio would fork an INVITE to them).
pub const USERS: [(&str, &str); 4] = [("alice", "bob"), ("carol", "dave"), ("erin", "frank"), ("grace", "heidi")];
/// The sipp UAS that answers (180, 200; BYE → 200).
pub const ECHO_URI: &str = "sip:echo@127.0.0.1:5076";
/// The sipp UAS that rings until cancelled (180; CANCEL → 200 and 487).
pub const RING_URI: &str = "sip:ring@127.0.0.1:5078";
/// How long one step of a round (an ack, a state) may take.
pub const STEP: Duration = Duration::from_secs(15);
/// The stats interval the scene's gateway runs with.
pub const STATS_INTERVAL_SECS: u64 = 1;

/// What one round does. Every kind starts with a fresh WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// add, register, call the answering UAS, `session-terminate` (BYE), close with a close
    /// frame (un-REGISTER).
    Full,
    /// add, register, call the answering UAS, then the socket vanishes: the gateway must BYE and
    /// un-REGISTER.
    VanishMidCall,
    /// add (no registration), call the ringing UAS, vanish at `ringing`: the gateway must CANCEL.
    VanishRinging,
    /// add, `account-register`, vanish as soon as it is acked (REGISTER in flight): the binding
    /// the registrar may then grant must be removed.
    VanishRegistering,
    /// A registers; B (another WebSocket) calls A through kamailio; A vanishes when its
    /// `incoming-session` arrives: the gateway must decline the INVITE (final response), B sees
    /// `terminated`, and A's binding goes.
    VanishIncoming,
}

impl Round {
    /// Every kind, in the order the churn cycles through them.
    pub const ALL: [Round; 5] =
        [Round::Full, Round::VanishMidCall, Round::VanishRinging, Round::VanishRegistering, Round::VanishIncoming];
}

/// The peers and the gateway of a churn run, each stopped by its PID when dropped.
pub struct Scene {
    /// The gateway.
    pub gw: Server,
    /// The registrar and proxy.
    pub kam: Kamailio,
    echo: SippProcess,
    ring: SippProcess,
}

impl Scene {
    /// Starts kamailio, the two sipp UASes (running for at most `lifetime`) and `bin` (a gateway
    /// binary path) with `--stats-interval` [`STATS_INTERVAL_SECS`], `--sip-listen
    /// 127.0.0.1:5080`, `--outbound-proxy 127.0.0.1:5060`, `--rtp-ports 40000-40999`,
    /// `--media-address 127.0.0.1` and `extra` arguments. Must run inside a namespace.
    pub fn start(workdir: &Path, bin: &Path, extra: &[&str], lifetime: Duration) -> Self {
        let users = USERS.iter().flat_map(|(a, b)| [a, b]).map(|u| (u.to_string(), "secret".to_string())).collect();
        let kam = Kamailio::start(workdir, KamailioOpts { users, ..KamailioOpts::default() });
        let ip = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let mut echo = Sipp::new(workdir, Scenario::peer_file("uas_rr.xml"))
            .local(ip(5076))
            .media_port(6000)
            .timeout(lifetime)
            .spawn();
        echo.wait_bound(STEP);
        let mut ring =
            Sipp::new(workdir, Scenario::peer_file("uas_ring_cancel.xml")).local(ip(5078)).timeout(lifetime).spawn();
        ring.wait_bound(STEP);
        let stats = STATS_INTERVAL_SECS.to_string();
        let proxy = kam.addr().to_string();
        let mut args = vec![
            "--stats-interval",
            &stats,
            "--sip-listen",
            "127.0.0.1:5080",
            "--outbound-proxy",
            &proxy,
            "--rtp-ports",
            "40000-40999",
            "--media-address",
            "127.0.0.1",
        ];
        args.extend(extra);
        let gw = Server::start(bin, &args);
        Self { gw, kam, echo, ring }
    }

    /// Runs one round as `(user, caller)` (a pair of [`USERS`]; `caller` calls `user` in
    /// [`Round::VanishIncoming`]). Panics with what went wrong.
    pub fn round(&self, round: Round, (user, caller): (&str, &str)) {
        let aor = format!("{user}@127.0.0.1");
        let password = ha1(user, "127.0.0.1", "secret");
        let mut ws = WsClient::ready(&self.gw);
        add_account(&mut ws, &aor, &password);
        match round {
            Round::Full => {
                register(&mut ws, &aor);
                let session = call(&mut ws, &aor, ECHO_URI, "accepted");
                hang_up(&mut ws, &session);
                ws.close();
            }
            Round::VanishMidCall => {
                register(&mut ws, &aor);
                call(&mut ws, &aor, ECHO_URI, "accepted");
                vanish(ws, true);
            }
            Round::VanishRinging => {
                call(&mut ws, &aor, RING_URI, "ringing");
                vanish(ws, false);
            }
            Round::VanishRegistering => {
                let reg = format!(r#"{{"sylkrtc":"account-register","transaction":"r","account":"{aor}"}}"#);
                expect_ack(&mut ws, &reg, "r");
                vanish(ws, true);
            }
            Round::VanishIncoming => {
                register(&mut ws, &aor);
                let caller_aor = format!("{caller}@127.0.0.1");
                let mut b = WsClient::ready(&self.gw);
                add_account(&mut b, &caller_aor, &ha1(caller, "127.0.0.1", "secret"));
                let session = start_call(&mut b, &caller_aor, &format!("sip:{aor}"));
                wait_for(&mut ws, "incoming-session", |e| e["event"] == "incoming-session");
                vanish(ws, false);
                let t =
                    wait_for(&mut b, "terminated", |e| e["session"] == session.as_str() && e["state"] == "terminated");
                let reason = t["reason"].as_str().unwrap_or_default();
                assert!(!reason.starts_with('2'), "the vanished callee must decline, caller saw {t}");
                b.close();
            }
        }
    }

    /// Waits (up to `timeout`) for stats, read from lines logged from now on, that satisfy `ok`
    /// twice in a row (so that, with several workers, no worker's older line makes it pass);
    /// returns them, or the last seen as the error.
    pub fn wait_stats(&self, timeout: Duration, ok: impl Fn(&Value) -> bool) -> Result<Value, Option<Value>> {
        let deadline = Instant::now() + timeout;
        let mut tail = StatsTail { pos: self.gw.stderr_line_count(), ..StatsTail::default() };
        let (mut last, mut passes) = (None, 0);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            let before = tail.lines_seen;
            let now = tail.update(&self.gw);
            if tail.lines_seen > before {
                passes = if now.as_ref().is_some_and(&ok) { passes + 1 } else { 0 };
                last = now;
                if passes >= 2 {
                    return Ok(last.expect("checked"));
                }
            }
        }
        Err(last)
    }

    /// Every binding in kamailio's location table (AoR and contact).
    pub fn bindings(&self) -> Vec<(String, String)> {
        crate::peers::parse_ul_dump(&self.kam.ul_dump()).into_iter().map(|b| (b.aor, b.address)).collect()
    }

    /// Stops the sipp UASes and kamailio (by PID); the gateway is stopped when dropped.
    pub fn stop(self) {
        let _ = self.echo.stop();
        let _ = self.ring.stop();
        self.kam.stop();
    }
}

/// The tables that must be empty when no WebSocket is open and every call and registration has
/// ended (every field of the core's `Stats` but those of [`AT_MOST_BASELINE`]).
pub const MUST_EMPTY: [&str; 19] = [
    "connections",
    "websockets",
    "accounts",
    "sip_transactions",
    "sip_registrations",
    "sip_flows",
    "rtp_pairs",
    "calls",
    "sip_legs",
    "browser_candidates",
    "per_ip",
    "registration_owners",
    "sessions",
    "call_legs",
    "call_sockets",
    "demux_calls",
    "sip_dns_queries",
    "pending_registers",
    "sip_messages",
];

/// The counts an idle gateway has of its own (its timers), and the process's fds: after churn
/// they must be back to at most their baseline values.
pub const AT_MOST_BASELINE: [&str; 4] = ["timers", "sip_timers", "sip_timer_keys", "fds"];

/// Whether `stats` shows every table of [`MUST_EMPTY`] at 0 and those of [`AT_MOST_BASELINE`]
/// at most their `baseline` values.
pub fn at_baseline(stats: &Value, baseline: &Value) -> bool {
    MUST_EMPTY.iter().all(|k| stats[k].as_u64() == Some(0))
        && AT_MOST_BASELINE
            .iter()
            .all(|k| matches!((stats[k].as_u64(), baseline[k].as_u64()), (Some(a), Some(b)) if a <= b))
}

/// The last `stats {json}` line of a gateway log, summed over workers when the lines carry a
/// `worker` index (the last line of each; `rss_kib` and `fds` are process-wide and taken as they
/// are). `None` when there is none yet.
pub fn latest_stats(log: &str) -> Option<Value> {
    let mut per_worker: Vec<(u64, Value)> = Vec::new();
    for line in log.lines() {
        let Some(json) = line.split_once(" stats {").map(|(_, rest)| format!("{{{rest}")) else { continue };
        let Ok(v) = serde_json::from_str::<Value>(&json) else { continue };
        let w = v["worker"].as_u64().unwrap_or(0);
        match per_worker.iter_mut().find(|(k, _)| *k == w) {
            Some(slot) => slot.1 = v,
            None => per_worker.push((w, v)),
        }
    }
    let mut iter = per_worker.into_iter().map(|(_, v)| v);
    let mut sum = iter.next()?;
    for v in iter {
        for (k, x) in v.as_object().into_iter().flatten() {
            if matches!(k.as_str(), "worker" | "rss_kib" | "fds") {
                continue;
            }
            if let (Some(a), Some(b)) = (sum[k].as_u64(), x.as_u64()) {
                sum[k] = (a + b).into();
            }
        }
    }
    if let Some(o) = sum.as_object_mut() {
        o.remove("worker");
    }
    Some(sum)
}

/// The latest stats of `gw` once it has logged any (within `max`); panics with its log after.
pub fn first_stats(gw: &Server, max: Duration) -> Value {
    let deadline = Instant::now() + max;
    loop {
        if let Some(s) = latest_stats(&gw.stderr_text()) {
            return s;
        }
        assert!(Instant::now() < deadline, "no stats line within {max:?}:\n{}", gw.stderr_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the latest stats of `gw` are [`at_baseline`] (within `max`) and returns them;
/// panics with the last ones after.
pub fn wait_baseline(gw: &Server, baseline: &Value, max: Duration) -> Value {
    let deadline = Instant::now() + max;
    loop {
        let s = latest_stats(&gw.stderr_text()).expect("stats lines");
        if at_baseline(&s, baseline) {
            return s;
        }
        assert!(Instant::now() < deadline, "not back to the baseline {baseline} within {max:?}: {s}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Follows a gateway's stats lines without re-reading its whole log.
#[derive(Debug, Default)]
pub struct StatsTail {
    /// Log lines already read.
    pub pos: usize,
    /// Stats lines seen.
    pub lines_seen: usize,
    /// The latest stats lines (a few per worker).
    recent: Vec<String>,
}

impl StatsTail {
    /// Reads the lines logged since the last call; the latest stats ([`latest_stats`] of the
    /// recent lines), if any line was ever seen.
    pub fn update(&mut self, gw: &Server) -> Option<Value> {
        let new = gw.stderr_lines_since(self.pos);
        self.pos += new.len();
        for line in new.into_iter().filter(|l| l.contains(" stats {")) {
            self.lines_seen += 1;
            self.recent.push(line);
        }
        let excess = self.recent.len().saturating_sub(64);
        self.recent.drain(..excess);
        latest_stats(&self.recent.join("\n"))
    }
}

// ===== Steps of a round =====

fn add_account(ws: &mut WsClient, aor: &str, password: &str) {
    let add = format!(r#"{{"sylkrtc":"account-add","transaction":"a","account":"{aor}","password":"{password}"}}"#);
    expect_ack(ws, &add, "a");
}

/// `account-register`, acked, then `registered` (anything else fails).
fn register(ws: &mut WsClient, aor: &str) {
    let reg = format!(r#"{{"sylkrtc":"account-register","transaction":"r","account":"{aor}"}}"#);
    expect_ack(ws, &reg, "r");
    let e = wait_for(ws, "registered", |e| e["event"] == "registration-state" && e["state"] != "registering");
    assert_eq!(e["state"], "registered", "{aor}: {e}");
}

/// Sends `request` and waits for the `ack` of `transaction` (events before it are skipped).
fn expect_ack(ws: &mut WsClient, request: &str, transaction: &str) {
    ws.send_text(request);
    let e = wait_for(ws, "ack", |e| e["transaction"] == transaction);
    assert_eq!(e["sylkrtc"], "ack", "{request} → {e}");
}

/// `session-create` from `aor` to `uri` with a fresh WebRTC offer; returns the session id once
/// acked.
fn start_call(ws: &mut WsClient, aor: &str, uri: &str) -> String {
    let session = crate::peers::unique("churn");
    let now = Instant::now();
    let mut client = WebRtcClient::browser(now, SocketAddr::from(([127, 0, 0, 1], 9)), Video::None);
    let offer = client.offer(false).expect("a WebRTC offer");
    let req = serde_json::json!({"sylkrtc": "session-create", "transaction": "c", "account": aor,
        "session": session, "uri": uri, "sdp": offer});
    expect_ack(ws, &req.to_string(), "c");
    session
}

/// [`start_call`], then waits for `state` (`terminated` before it fails).
fn call(ws: &mut WsClient, aor: &str, uri: &str, state: &str) -> String {
    let session = start_call(ws, aor, uri);
    let e = wait_for(ws, state, |e| {
        e["session"] == session.as_str() && (e["state"] == state || e["state"] == "terminated")
    });
    assert_eq!(e["state"], state, "call {aor} → {uri}: {e}");
    session
}

/// `session-terminate`, acked, then `terminated`.
fn hang_up(ws: &mut WsClient, session: &str) {
    let req = format!(r#"{{"sylkrtc":"session-terminate","transaction":"t","session":"{session}"}}"#);
    expect_ack(ws, &req, "t");
    wait_for(ws, "terminated", |e| e["session"] == session && e["state"] == "terminated");
}

/// Drops the connection without a close frame: with `reset`, an RST (`SO_LINGER` 0), else a FIN.
pub fn vanish(ws: WsClient, reset: bool) {
    if reset {
        let tcp: &TcpStream = ws.ws.get_ref().tcp();
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: setsockopt on a socket we own, with a correctly sized `linger` value.
        unsafe {
            libc::setsockopt(
                tcp.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                std::ptr::addr_of!(linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }
    drop(ws);
}

/// Reads events until one satisfies `pred` (within [`STEP`]); panics naming `what` otherwise.
pub fn wait_for(ws: &mut WsClient, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for_within(ws, what, STEP, pred)
}

/// [`wait_for`] with its own bound.
pub fn wait_for_within(ws: &mut WsClient, what: &str, max: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + max;
    let mut seen = Vec::new();
    loop {
        match ws.next_before(deadline) {
            Ok(Some(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                if pred(&v) {
                    return v;
                }
                seen.push(t.as_str().to_string());
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("no {what} within {max:?}; saw {seen:#?}"),
            Err(e) => panic!("waiting for {what}: {e}; saw {seen:#?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table of the core's `Stats` is checked: must be empty, or at most its baseline.
    #[test]
    fn every_stats_field_is_checked() {
        let stats = serde_json::to_value(sylkgw_core::Stats::default()).unwrap();
        for k in stats.as_object().unwrap().keys() {
            assert!(MUST_EMPTY.contains(&k.as_str()) || AT_MOST_BASELINE.contains(&k.as_str()), "{k} is not checked");
        }
    }

    #[test]
    fn latest_stats_sums_the_last_line_of_each_worker() {
        let log = "[t INFO sylkgw] listening on ws://127.0.0.1:1/webrtcgateway/ws\n\
                   [t INFO sylkgw] stats {\"calls\":5,\"worker\":0,\"rss_kib\":100,\"fds\":20}\n\
                   [t INFO sylkgw] stats {\"calls\":1,\"worker\":1,\"rss_kib\":100,\"fds\":20}\n\
                   [t INFO sylkgw] stats {\"calls\":2,\"worker\":0,\"rss_kib\":120,\"fds\":21}\n";
        let s = latest_stats(log).unwrap();
        assert_eq!((s["calls"].as_u64(), s["rss_kib"].as_u64(), s["fds"].as_u64()), (Some(3), Some(120), Some(21)));
        assert!(s.get("worker").is_none());
        assert_eq!(latest_stats("no stats here"), None);
        let one = latest_stats(
            "x stats {\"calls\":0,\"rss_kib\":1,\"fds\":3,\"timers\":0,\"sip_timers\":2,\"sip_timer_keys\":4}",
        )
        .unwrap();
        let mut empty = serde_json::json!({"fds": 3, "timers": 0, "sip_timers": 2, "sip_timer_keys": 4});
        for k in MUST_EMPTY {
            empty[k] = 0.into();
        }
        assert!(at_baseline(&empty, &one));
        empty["rtp_pairs"] = 1.into();
        assert!(!at_baseline(&empty, &one), "an RTP pair left is a leak");
        empty["rtp_pairs"] = 0.into();
        empty["sip_dns_queries"] = 1.into();
        assert!(!at_baseline(&empty, &one), "a DNS query left is a leak");
        empty["sip_dns_queries"] = 0.into();
        empty["sip_timer_keys"] = 5.into();
        assert!(!at_baseline(&empty, &one), "a SIP timer key more than at the start is a leak");
    }
}
