//! Fuzz target `dns`: the fuzzer's bytes into `headway::fuzzing::dns` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| headway::fuzzing::dns(data));
