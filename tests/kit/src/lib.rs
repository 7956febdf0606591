//! sylkgw's test kit: what the fuzz targets (`fuzz/`) and the test crate (`tests/`) share, kept
//! out of the product crate so no shipped binary carries it.
//!
//! - [`fuzz`]: the bodies of the fuzz targets, so they compile and run under plain `cargo test`
//!   (the corpus replay in `tests/tests/fuzz_corpus.rs`); the shims in `fuzz/` only call them.
//! - [`ops`]: the stateful target `gateway_ops`, a byte-driven harness around one whole
//!   [`sylkgw_core::Gateway`] that checks invariants after every step.
//! - [`wire`]: small helpers for tests that speak to the core directly (drain, upgrade, frames).
//!
//! Everything here uses the core's public API and its `#[doc(hidden)]` test hooks only.
//! The real clock is read only to get an epoch: every time fed to the core is an offset from it,
//! so runs stay deterministic.

pub mod fuzz;
pub mod ops;
pub mod wire;

pub use fuzz::{
    fuzz_capture, fuzz_rtp_rtcp, fuzz_sip_message, fuzz_sip_sdp, fuzz_sip_stream, fuzz_sylkrtc_request, fuzz_ws_stream,
};
pub use ops::{fuzz_gateway_ops, fuzz_gateway_ops_with};
pub use wire::{
    client_text_frame, drain, drain_outputs, release_rtp_pair_for_test, request_rtp_pair_for_test, UPGRADE_V2,
};
