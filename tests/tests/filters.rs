//! The collection's filter and test plugins (Python, run by Ansible on the
//! controller) that decide which files a run writes and which etcd members
//! join, retire or lead: their table tests, run with the project's Python.

use std::process::Command;

use pgherd_e2e::repo_root;

#[test]
fn the_collection_filters_decide_as_their_tables_say() {
    let python = repo_root().join(".venv/bin/python");
    let out = Command::new(&python)
        .arg(repo_root().join("tests/python/test_filters.py"))
        .arg("-v")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Ran ") && text.contains("OK"), "{text}");
}
