//! Fuzz target `policy`: the fuzzer's bytes into `headway::fuzzing::policy` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| headway::fuzzing::policy(data));
