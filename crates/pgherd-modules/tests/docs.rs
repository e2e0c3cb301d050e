//! The modules' documentation files in the collection are generated from
//! their argument specs; this test fails when the two drift apart.
//! `PGHERD_BLESS=1 cargo test -p pgherd-modules --test docs` regenerates
//! (never set in CI: there, a stale file fails).

use std::path::PathBuf;

fn doc_file_path(module: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../ansible_collection/ansible_collections/pgherd/cluster/plugins/modules")
        .join(format!("{module}.py"))
}

fn check(module: &str, doc: pgherd_ansible::docs::ModuleDoc, spec: pgherd_ansible::Spec) {
    let rendered = pgherd_modules::collection_doc_file(&doc, &spec);
    let path = doc_file_path(module);
    let blessing = std::env::var_os("PGHERD_BLESS").is_some();
    assert!(
        !(blessing && std::env::var_os("CI").is_some()),
        "PGHERD_BLESS must not be set in CI: it would hide a stale file"
    );
    if blessing {
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
    let unsampled = pgherd_ansible::docs::returns_without_sample(&doc);
    assert!(
        unsampled.is_empty(),
        "return values of {module} without a sample: {unsampled:?}"
    );
    assert!(!doc.requirements.is_empty() && !doc.seealso.is_empty());
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

#[test]
fn etcd_docs_match_the_spec() {
    check(
        "etcd",
        pgherd_modules::etcd::docs(),
        pgherd_modules::etcd::spec(),
    );
}
