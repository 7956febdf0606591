//! Replays every committed fuzz corpus through the same bodies the fuzz targets run, so plain
//! `cargo test` (stable, no nightly) keeps the corpus green.

use std::path::PathBuf;
use sylkgw_kit as kit;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

fn run(target: &str, body: fn(&[u8])) {
    for (path, data) in corpus(target) {
        let result = std::panic::catch_unwind(|| body(&data));
        assert!(result.is_ok(), "{target}: {} crashes", path.display());
    }
}

#[test]
fn sylkrtc_request() {
    run("sylkrtc_request", kit::fuzz_sylkrtc_request);
}

#[test]
fn ws_stream() {
    run("ws_stream", kit::fuzz_ws_stream);
}

#[test]
fn capture_replay() {
    run("capture_replay", kit::fuzz_capture);
}

#[test]
fn sip_message() {
    run("sip_message", kit::fuzz_sip_message);
}

#[test]
fn sip_stream() {
    run("sip_stream", kit::fuzz_sip_stream);
}

#[test]
fn sdp_sip() {
    run("sdp_sip", kit::fuzz_sip_sdp);
}

#[test]
fn rtp_rtcp() {
    run("rtp_rtcp", kit::fuzz_rtp_rtcp);
}

#[test]
fn gateway_ops() {
    run("gateway_ops", kit::fuzz_gateway_ops);
}

/// The replay sees a panic in a call's media, which containment turns into `terminated`
/// `500 Internal error` outside `cfg(fuzzing)`: a seed with an answered call, its session's media
/// armed to panic (the `fault-injection` hook), fails invariant (i).
#[test]
fn gateway_ops_fails_on_a_contained_media_panic() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/gateway_ops/flood_dtmf_1000_in_call_then_time");
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    kit::fuzz_gateway_ops(&data);
    let result = std::panic::catch_unwind(|| kit::fuzz_gateway_ops_with(&data, &mut |gw| gw.inject_media_panic("s0")));
    let payload = result.expect_err("the run passed although the call's media panicked");
    let text = payload.downcast_ref::<String>().map(String::as_str).unwrap_or_default();
    assert!(text.contains("invariant (i)"), "{text}");
}
