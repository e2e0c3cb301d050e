//! `pgherd.cluster.instance` with `state: present`, driven through
//! ansible-playbook: it writes the configuration once, changes nothing the
//! second time, predicts in check mode, and names an unknown option.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use pgherd_e2e::{
    ansible_playbook, assert_collection_is_fresh, repo_root, snapshot, uid_of, PlaybookRun, TestDir,
};

const SUROLE_PASSWORD: &str = "Su-e2e-9fK2";
const REPL_PASSWORD: &str = "Re-e2e-3xQ7";

fn inventory(dir: &TestDir, parameters: &str) -> std::path::PathBuf {
    let root = dir.join("node");
    let r = root.display();
    let text = format!(
        r#"all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: /usr/bin/python3
    surole_password: {SUROLE_PASSWORD}
    replrole_password: {REPL_PASSWORD}
    pg_parameters: {parameters}
  hosts:
    pg1:
      ansible_host: 127.0.0.11
      pgherd_settings:
        postgresql:
          datadir: {r}/data/{{version}}/{{name}}
          socket_directory: {r}/run
          logdir: {r}/log/postgresql
          passfile: {r}/etc/{{version}}-{{name}}.pgpass
        patroni:
          execpath: {venv}/bin/patroni
          configpath: {r}/etc/{{version}}-{{name}}.yaml
          logdir: {r}/log/patroni
          piddir: {r}/run
          pgpass: {r}/data/{{version}}-{{name}}.pgpass
          ttl: 20
          loop_wait: 2
          retry_timeout: 5
"#,
        venv = repo_root().join(".venv").display()
    );
    let path = dir.join(&format!("inventory-{}.yml", parameters.len()));
    std::fs::write(&path, text).unwrap();
    path
}

fn playbook(name: &str) -> std::path::PathBuf {
    repo_root().join("tests/playbooks").join(name)
}

fn recap_changed(run: &PlaybookRun) -> usize {
    run.changed_tasks().len()
}

fn assert_no_secret(run: &PlaybookRun) {
    let all = run.transcript();
    for secret in [SUROLE_PASSWORD, REPL_PASSWORD] {
        assert!(
            !all.contains(secret),
            "a password leaked into the output:\n{all}"
        );
        for e in &run.events {
            assert!(
                !e.result.to_string().contains(secret),
                "a password leaked: {e:?}"
            );
        }
    }
}

#[test]
fn present_writes_once_then_changes_nothing() {
    assert_collection_is_fresh();
    let dir = TestDir::new("present");
    let inv = inventory(&dir, "{max_connections: 50}");
    let node = dir.join("node");

    // Check mode first: predicts the change, writes nothing.
    let check = ansible_playbook(
        &dir.path,
        &playbook("instance_present.yml"),
        &inv,
        &["--check", "--diff"],
    );
    assert!(check.succeeded(), "{}", check.transcript());
    assert_eq!(recap_changed(&check), 1, "{}", check.transcript());
    assert!(!node.exists(), "check mode created {}", node.display());
    assert!(
        check.stdout().contains("max_connections: 50"),
        "{}",
        check.transcript()
    );
    assert!(
        check.stdout().contains("password: ********"),
        "{}",
        check.transcript()
    );
    assert_no_secret(&check);

    // The real run writes what check mode predicted.
    let first = ansible_playbook(&dir.path, &playbook("instance_present.yml"), &inv, &[]);
    assert!(first.succeeded(), "{}", first.transcript());
    assert_eq!(recap_changed(&first), 1, "{}", first.transcript());
    assert_eq!(
        check.events[0].result["changes"], first.events[0].result["changes"],
        "check mode and the real run disagree"
    );
    assert_no_secret(&first);

    let config = node.join("etc/15-main.yaml");
    let passfile = node.join("etc/15-main.pgpass");
    let postgres = uid_of("postgres");
    for f in [&config, &passfile] {
        let meta = std::fs::metadata(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{}", f.display());
        assert_eq!(
            meta.uid(),
            postgres,
            "{} not owned by postgres",
            f.display()
        );
    }
    let etc = std::fs::metadata(node.join("etc")).unwrap();
    assert_eq!(etc.permissions().mode() & 0o777, 0o750);
    let text = std::fs::read_to_string(&config).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(doc["scope"], serde_yaml::Value::from("e2e"));
    assert_eq!(doc["name"], serde_yaml::Value::from("pg1"));
    assert_eq!(
        doc["postgresql"]["parameters"]["max_connections"],
        serde_yaml::Value::from(50)
    );
    assert_eq!(
        doc["postgresql"]["authentication"]["superuser"]["password"],
        serde_yaml::Value::from(SUROLE_PASSWORD)
    );
    let pgpass = std::fs::read_to_string(&passfile).unwrap();
    assert!(pgpass.contains(&format!("*:5432:*:postgres:{SUROLE_PASSWORD}")));

    // The second run changes nothing and touches nothing.
    let before = snapshot(&node);
    let second = ansible_playbook(&dir.path, &playbook("instance_present.yml"), &inv, &[]);
    assert!(second.succeeded(), "{}", second.transcript());
    assert_eq!(recap_changed(&second), 0, "{}", second.transcript());
    assert_eq!(before, snapshot(&node), "the second run touched files");

    // A changed parameter in check mode: predicted, masked, not written.
    let inv2 = inventory(&dir, "{max_connections: 80}");
    let predicted = ansible_playbook(
        &dir.path,
        &playbook("instance_present.yml"),
        &inv2,
        &["--check", "--diff"],
    );
    assert!(predicted.succeeded(), "{}", predicted.transcript());
    assert_eq!(recap_changed(&predicted), 1, "{}", predicted.transcript());
    let out = predicted.stdout();
    assert!(out.contains("-    max_connections: 50"), "{out}");
    assert!(out.contains("+    max_connections: 80"), "{out}");
    assert_no_secret(&predicted);
    assert_eq!(before, snapshot(&node), "check mode touched files");

    // Applied for real, the change lands; mode and owner stay.
    let applied = ansible_playbook(&dir.path, &playbook("instance_present.yml"), &inv2, &[]);
    assert!(applied.succeeded(), "{}", applied.transcript());
    assert_eq!(recap_changed(&applied), 1);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("max_connections: 80"));
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The configuration's directory belongs to postgres, which can plant a
    // link to a root-only file there: the diff never shows its content, and
    // the real run replaces the link, leaving the file as it was.
    let secret = dir.join("root-only");
    std::fs::write(&secret, "root-only: the-content-of-a-root-file\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink(&secret, &config).unwrap();
    let linked = ansible_playbook(
        &dir.path,
        &playbook("instance_present.yml"),
        &inv2,
        &["--check", "--diff"],
    );
    assert!(linked.succeeded(), "{}", linked.transcript());
    assert!(
        !linked.transcript().contains("the-content-of-a-root-file"),
        "{}",
        linked.transcript()
    );
    assert!(
        linked.events[0].result["changes"]
            .to_string()
            .contains("remove the symbolic link"),
        "{}",
        linked.transcript()
    );
    let replaced = ansible_playbook(&dir.path, &playbook("instance_present.yml"), &inv2, &[]);
    assert!(replaced.succeeded(), "{}", replaced.transcript());
    assert!(!std::fs::symlink_metadata(&config)
        .unwrap()
        .file_type()
        .is_symlink());
    let kept = std::fs::metadata(&secret).unwrap();
    assert_eq!((kept.uid(), kept.permissions().mode() & 0o777), (0, 0o600));
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "root-only: the-content-of-a-root-file\n"
    );
}

#[test]
fn unknown_option_fails_naming_it() {
    assert_collection_is_fresh();
    let dir = TestDir::new("unknown-option");
    let inv = inventory(&dir, "{}");
    let run = ansible_playbook(
        &dir.path,
        &playbook("instance_unknown_option.yml"),
        &inv,
        &[],
    );
    assert!(!run.succeeded(), "{}", run.transcript());
    let failed = run.failed_tasks();
    assert_eq!(failed.len(), 1, "{}", run.transcript());
    let msg = failed[0].result["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("unsupported option surole_pasword"), "{msg}");
    assert!(
        msg.contains("surole_password"),
        "the supported options are listed: {msg}"
    );
    assert!(!msg.contains(SUROLE_PASSWORD));
    assert!(
        !Path::new(&dir.join("node")).exists(),
        "a failed task wrote files"
    );
}
