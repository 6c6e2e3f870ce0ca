//! Fuzz target `control_requests`: the fuzzer's bytes into `headway::fuzzing::control_requests` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| headway::fuzzing::control_requests(data));
