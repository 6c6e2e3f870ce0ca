//! Fuzz target `websocket`: the fuzzer's bytes into `headway::fuzzing::websocket` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| headway::fuzzing::websocket(data));
