#![no_main]
//! Shim: the body is `sylkgw_kit::fuzz_sylkrtc_request`, which `cargo test` also runs on the corpus.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sylkgw_kit::fuzz_sylkrtc_request(data));
