#![no_main]
//! Fuzz target: see `credvend::fuzz::daemon_config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| credvend::fuzz::daemon_config(data));
