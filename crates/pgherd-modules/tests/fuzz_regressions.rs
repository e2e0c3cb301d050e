//! Replays the fuzzers' seeds and every input they ever found failing
//! (`fuzz/seeds/<target>/`, `fuzz/regressions/<target>/`) through the same
//! entry points, so that a fixed bug stays fixed without a fuzzer.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut count = 0;
    for kind in ["seeds", "regressions"] {
        let dir = fuzz.join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let data = std::fs::read(e.path()).unwrap();
            run(&data);
            count += 1;
        }
    }
    count
}

#[test]
fn module_args_inputs() {
    assert!(replay("module_args", pgherd_modules::fuzzing::module_args) >= 3);
}

#[test]
fn settings_inputs() {
    assert!(replay("settings", pgherd_modules::fuzzing::settings) >= 2);
}

#[test]
fn config_merge_inputs() {
    assert!(replay("config_merge", pgherd_modules::fuzzing::config_merge) >= 1);
}
