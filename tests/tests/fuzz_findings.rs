//! Inputs that fuzzing found, replayed by name with a guard that turns a hang into a failure.
//! Each fixed finding also sits in `fuzz/corpus/<target>/`, where `fuzz_corpus.rs` replays it.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;
use sylkgw_kit as kit;

/// Runs `body` on the corpus file `name` of `target` on its own thread; fails if it panics or
/// has not finished after `guard` (a hang guard far above the input's normal run time of a few
/// milliseconds, not a performance assertion).
fn finishes(target: &str, name: &str, body: fn(&[u8]), guard: Duration) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target).join(name);
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let ok = std::panic::catch_unwind(|| body(&data)).is_ok();
        let _ = tx.send(ok);
    });
    match rx.recv_timeout(guard) {
        Ok(ok) => assert!(ok, "{target}/{name} crashes"),
        Err(_) => panic!("{target}/{name} has not finished after {guard:?}: a drain loop spins"),
    }
}

/// A call timer drained a browser leg whose str0m `poll_output` never reached `Timeout`
/// (campaign at 0c08407): the event loop spun.
#[test]
fn gateway_ops_drain_spin() {
    finishes("gateway_ops", "drain-spin", kit::fuzz_gateway_ops, Duration::from_secs(60));
}
