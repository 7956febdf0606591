//! The drive contract, checked directly: a handled timeout always moves the deadline forward,
//! even when nothing is scheduled (found by the `gateway_ops` fuzz target).

#![allow(clippy::disallowed_methods)] // Instant::now is only the epoch

use std::time::{Duration, Instant};
use sylkgw_core::{Config, Gateway, Input};
use sylkgw_kit::drain;

#[test]
fn idle_deadline_moves_forward_after_a_timeout() {
    let t0 = Instant::now();
    let mut gw = Gateway::new(Config::default(), [1; 32], t0, Duration::ZERO).unwrap();
    let mut deadline = drain(&mut gw);
    for _ in 0..3 {
        gw.handle_input(deadline, Input::Timeout);
        let next = drain(&mut gw);
        assert!(next > deadline, "a handled timeout left the deadline at {:?}", next - t0);
        deadline = next;
    }
}
