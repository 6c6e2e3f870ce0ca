//! Fuzz target `config`: the fuzzer's bytes into `headway::fuzzing::config` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| headway::fuzzing::config(data));
