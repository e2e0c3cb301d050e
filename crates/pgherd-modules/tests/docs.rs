//! The modules' sidecar documentation in the collection is generated from
//! their argument specs; this test fails when the two drift apart.
//! `PGHERD_BLESS=1 cargo test -p pgherd-modules --test docs` regenerates.

use std::path::PathBuf;

use pgherd_core::merge::json_to_yaml;
use pgherd_core::yaml::to_yaml_string;

fn sidecar_path(module: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../ansible_collection/ansible_collections/pgherd/cluster/plugins/modules")
        .join(format!("{module}.yml"))
}

fn check(module: &str, doc: pgherd_ansible::docs::ModuleDoc, spec: pgherd_ansible::Spec) {
    let rendered = format!(
        "# Generated from the module's argument spec (crates/pgherd-modules); do not edit.\n{}",
        to_yaml_string(&json_to_yaml(&pgherd_ansible::docs::sidecar(&doc, &spec)))
    );
    let path = sidecar_path(module);
    if std::env::var_os("PGHERD_BLESS").is_some() {
        std::fs::write(&path, &rendered).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (PGHERD_BLESS=1 generates it)", path.display()));
    assert_eq!(
        rendered,
        on_disk,
        "{} is out of date: PGHERD_BLESS=1 cargo test -p pgherd-modules --test docs",
        path.display()
    );
    let examples: serde_yaml::Value = serde_yaml::from_str(doc.examples).unwrap();
    assert!(
        examples.as_sequence().is_some_and(|s| !s.is_empty()),
        "EXAMPLES of {module} is not a task list"
    );
}

#[test]
fn instance_docs_match_the_spec() {
    check(
        "instance",
        pgherd_modules::instance::docs(),
        pgherd_modules::instance::spec(),
    );
}

#[test]
fn patroni_docs_match_the_spec() {
    check(
        "patroni",
        pgherd_modules::patroni::docs(),
        pgherd_modules::patroni::spec(),
    );
}
