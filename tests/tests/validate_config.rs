//! The golden Patroni configurations pass Patroni's own validator.

use pgherd_e2e::{repo_root, venv_bin, Etcd, TestDir};
use std::process::Command;

#[test]
fn golden_configs_pass_patroni_validate_config() {
    let dir = TestDir::new("validate");
    // The validator checks that etcd answers and that the listen ports are
    // free: point the files at this test's etcd and at unused addresses.
    let etcd = Etcd::start(&dir.path, 23_790, 23_800);
    let golden = repo_root().join("crates/pgherd-modules/tests/golden");
    let mut checked = 0;
    for entry in std::fs::read_dir(&golden).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".patroni.yaml") {
            continue;
        }
        let mut text = std::fs::read_to_string(&path).unwrap();
        for port in ["2379", "2479", "2579"] {
            text = text.replace(&format!("127.0.0.1:{port}"), &etcd.client_addr);
        }
        for n in 11..=13 {
            text = text.replace(&format!("127.0.0.{n}"), &format!("127.0.9.{n}"));
        }
        let file = dir.join(&name);
        std::fs::write(&file, text).unwrap();
        let out = Command::new(venv_bin("patroni"))
            .arg("--validate-config")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "patroni --validate-config {name} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert_eq!(
        checked, 4,
        "expected the plain, tls, overrides and pgbackrest golden files"
    );
}

#[test]
fn validator_rejects_a_broken_config() {
    // The check above is only worth something if the validator can say no.
    let dir = TestDir::new("validate-broken");
    let etcd = Etcd::start(&dir.path, 23_791, 23_801);
    let file = dir.join("broken.yaml");
    std::fs::write(
        &file,
        format!("scope: x\nname: n\netcd3:\n  hosts: [{}]\nrestapi:\n  listen: 127.0.9.20:8008\n  connect_address: 127.0.9.20:8008\npostgresql:\n  listen: 127.0.9.20:5432\n  connect_address: 127.0.9.20:5432\n  data_dir: /tmp/x\n  bin_dir: /nonexistent/bin\n  authentication: {{}}\n", etcd.client_addr),
    )
    .unwrap();
    let out = Command::new(venv_bin("patroni"))
        .arg("--validate-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
}
