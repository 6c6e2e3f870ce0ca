//! Fuzz target `cli_argv`: the fuzzer's bytes into `headway::fuzzing::cli_argv` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| headway::fuzzing::cli_argv(data));
