//! Fuzz target `stun`: the fuzzer's bytes into `headway::fuzzing::stun` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| headway::fuzzing::stun(data));
