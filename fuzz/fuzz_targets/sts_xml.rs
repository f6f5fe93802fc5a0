#![no_main]
//! Fuzz target: see `credvend::fuzz::sts_xml`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| credvend::fuzz::sts_xml(data));
