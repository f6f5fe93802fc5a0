#![no_main]
//! Fuzz target: see `credvend::fuzz::aws_config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| credvend::fuzz::aws_config(data));
