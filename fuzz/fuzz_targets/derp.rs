//! Fuzz target `derp`: the fuzzer's bytes into `headway::fuzzing::derp` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| headway::fuzzing::derp(data));
