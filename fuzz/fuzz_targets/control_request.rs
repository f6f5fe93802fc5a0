#![no_main]
//! Fuzz target: see `credvend::fuzz::control_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| credvend::fuzz::control_request(data));
