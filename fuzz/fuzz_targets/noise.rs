//! Fuzz target `noise`: the fuzzer's bytes into `headway::fuzzing::noise` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| headway::fuzzing::noise(data));
