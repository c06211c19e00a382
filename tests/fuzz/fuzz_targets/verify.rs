#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookd::fuzz_api::verify(data));
