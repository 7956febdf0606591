//! Replays every committed capture in `tests/captures/` against a fresh core and compares the
//! core's own record of the run with the file, byte for byte. A mismatch prints a unified diff;
//! `BLESS=1 cargo test -p sylkgw-tests --test replay` rewrites the files with what the core does
//! now (review the diff before committing).

#![allow(clippy::disallowed_methods)] // Instant::now is only the replay's epoch

use std::path::PathBuf;
use std::time::Instant;
use sylkgw_core::capture;

fn captures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("captures")
}

/// Replays `text`; `Err(diff)` when the core's record differs from it.
fn replay_text(text: &str) -> Result<(), String> {
    let cap = capture::parse(text).map_err(|e| format!("capture does not parse: {e}"))?;
    let got = capture::replay(&cap, Instant::now())?;
    // str0m's random SDP parts (SSRCs, fingerprint, …) are masked on both sides.
    let (want, got) = (capture::mask_media(text), capture::mask_media(&got));
    if got == want {
        Ok(())
    } else {
        Err(unified_diff(&want, &got))
    }
}

fn check(name: &str) {
    let path = captures_dir().join(format!("{name}.cap"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if std::env::var_os("BLESS").is_some() {
        let cap = capture::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let got = capture::replay(&cap, Instant::now()).expect("replay");
        std::fs::write(&path, got).expect("write blessed capture");
        return;
    }
    if let Err(diff) = replay_text(&text) {
        panic!(
            "{name}: the core no longer does what {} records\n(--- capture, +++ core now; BLESS=1 rewrites)\n{diff}",
            path.display()
        );
    }
}

macro_rules! replay {
    ($($name:ident),* $(,)?) => {
        $( #[test] fn $name() { check(stringify!($name)); } )*

        /// Every capture file has a test above.
        #[test]
        fn every_capture_is_replayed() {
            let listed = [$(stringify!($name)),*];
            for entry in std::fs::read_dir(captures_dir()).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "cap") {
                    let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
                    assert!(listed.contains(&stem.as_str()), "{stem}.cap has no replay test");
                }
            }
        }
    };
}

replay!(
    ready_v2,
    ready_v1,
    // sylkRTC-1 as SylkServer 3.1–4.1 served it (docs/sylkrtc1-audit.md); the v1_call_* are
    // recorded by `tests/call_sim_v1.rs` (`WRITE_CAPTURES=1` rewrites them).
    v1_requests,
    v1_ws_ping_pong,
    v1_sip_register_dns,
    v1_call_outgoing,
    v1_call_early_media,
    v1_call_incoming,
    v1_call_incoming_missed,
    v1_call_incoming_declined,
    // Recorded by `tests/conference_sim_v1.rs` (`WRITE_CAPTURES=1` rewrites it).
    v1_conference_signalling,
    ping,
    account_add_remove,
    validation_errors,
    unknown_request,
    malformed_json,
    not_supported_yet,
    msg_outgoing_accepted,
    msg_incoming,
    msg_markers,
    msg_offline_stored,
    reject_406,
    reject_403,
    reject_404,
    ws_ping_pong,
    ws_oversized,
    shutdown,
    sip_register_ok,
    sip_register_401,
    sip_register_wrong_password,
    sip_register_timeout,
    sip_register_423,
    sip_register_refresh,
    sip_register_dns,
    sip_register_failover,
    sip_register_dns_cached,
    sip_incoming,
    web_phone_page,
    sip_register_large_tcp,
    media_sockets,
    limit_accounts,
    limit_requests,
    limit_connections_per_ip,
    limit_sip_transactions,
    limit_sessions,
    // Calls, recorded by `tests/call_sim.rs` (`WRITE_CAPTURES=1` rewrites them); media left out.
    call_outgoing_local_bye,
    call_407_then_ok,
    call_busy,
    call_cancel,
    call_remote_bye,
    call_early_media_then_200,
    call_reinvite_remote_hold,
    call_reinvite_local_hold,
    call_info_dtmf,
    call_media_timeout,
    call_incoming_answered,
    call_incoming_missed,
    call_incoming_declined,
    call_websocket_gone,
    call_sdes_srtp,
    call_browser_never_connects,
    call_outgoing_video,
    call_info_dtmf_too_many,
    call_session_message,
    call_incoming_busy_missed,
    // Carrier SIP (#15), recorded by `tests/call_sim.rs` too.
    call_outgoing_reliable_183,
    call_incoming_reliable_180,
    call_incoming_late_offer,
    call_sip_info_dtmf_to_browser,
    call_incoming_telephone_event_48000,
    call_incoming_video_nack_rtx,
    // SIGHUP as an input (`gateway reload`), `trusted_proxies` reloaded.
    reload_trusted_proxies,
    // Storage outcomes replay; requests (`< storage store`) will be recorded once the messaging
    // machine asks (the line format is unit-tested in `core/src/capture.rs`).
    storage_outcomes,
    // The addressbook and the history endpoint on SQLite, recorded by `tests/addressbook_sim.rs`
    // (`WRITE_CAPTURES=1` rewrites them).
    addressbook,
    history_http,
    api_token,
    // Conferences (#13), recorded by `tests/conference_sim.rs` (`WRITE_CAPTURES=1`); no media ran.
    conference_signalling,
    conference_workers_home,
    conference_workers_origin,
);

/// A changed expectation fails, and the failure shows what changed.
#[test]
fn changed_expectation_fails_with_readable_diff() {
    let text = std::fs::read_to_string(captures_dir().join("ping.cap")).unwrap();
    let changed = text.replacen(r#"{"sylkrtc":"ack","transaction":"1"}"#, r#"{"sylkrtc":"ack","transaction":"X"}"#, 1);
    assert_ne!(changed, text, "ping.cap must contain the ack being changed");
    let diff = replay_text(&changed).unwrap_err();
    assert!(diff.contains(r#"-"#) && diff.contains(r#""transaction":"X""#), "{diff}");
    assert!(diff.contains(r#"+"#) && diff.contains(r#""transaction":"1""#), "{diff}");
}

/// Line diff (longest common subsequence) with three lines of context.
fn unified_diff(a: &str, b: &str) -> String {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let mut ops = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i], i + 1));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            ops.push(('+', b[j], j + 1));
            j += 1;
        } else {
            ops.push(('-', a[i], i + 1));
            i += 1;
        }
    }
    let changed: Vec<usize> = ops.iter().enumerate().filter(|(_, o)| o.0 != ' ').map(|(k, _)| k).collect();
    let mut out = String::new();
    let mut last = None;
    for (k, (tag, line, no)) in ops.iter().enumerate() {
        if changed.iter().any(|&c| c.abs_diff(k) <= 3) {
            if last.is_some_and(|l| l + 1 != k) {
                out.push_str("@@ …\n");
            }
            out.push_str(&format!("{tag}{no:>5} {line}\n"));
            last = Some(k);
        }
    }
    out
}
