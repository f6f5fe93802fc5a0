#![no_main]
//! Fuzz target: see `credvend::fuzz::http_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| credvend::fuzz::http_request(data));
