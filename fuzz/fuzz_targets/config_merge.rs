#![no_main]
//! Fuzz target: see pgherd_modules::fuzzing::config_merge.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pgherd_modules::fuzzing::config_merge(data);
});
