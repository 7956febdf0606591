#![no_main]
//! Shim: the body is `sylkgw_kit::fuzz_ws_stream`, which `cargo test` also runs on the corpus.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sylkgw_kit::fuzz_ws_stream(data));
