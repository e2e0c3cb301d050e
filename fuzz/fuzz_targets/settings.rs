#![no_main]
//! Fuzz target: see pgherd_modules::fuzzing::settings.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pgherd_modules::fuzzing::settings(data);
});
