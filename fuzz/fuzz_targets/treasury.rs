#![no_main]
// The body is shared with the replay test (adapters/tests/fuzz_replay.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| snodo_adapters::fuzzing::treasury(data));
