//! Fuzz target `grpc`: the fuzzer's bytes into `headway::fuzzing::grpc` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| headway::fuzzing::grpc(data));
