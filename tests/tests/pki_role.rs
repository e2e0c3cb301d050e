//! The collection's pki role, on the controller: a CA and certificates for
//! hosts and clients that verify, with the right names and 0600 keys;
//! check mode on nothing predicts and writes nothing; a second run makes
//! nothing; a host whose addresses change gets a new certificate and the
//! others keep theirs; and pgherd's own check of a node's certificates
//! accepts them.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use pgherd_e2e::{ansible_playbook, pki::serial, TestDir};
use serde_json::json;

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn certificates_are_made_once_and_again_only_when_their_names_change() {
    // No module binary runs here: the role and its filters are Python.
    let dir = TestDir::new("pki-role");
    let pki = dir.join("site-pki");
    let inventory = dir.join("inventory.yml");
    std::fs::write(
        &inventory,
        "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n      ansible_python_interpreter: /usr/bin/python3\n",
    )
    .unwrap();
    let playbook = |hosts: serde_json::Value| {
        let path = dir.join("pki.yml");
        let play = json!([{
            "hosts": "localhost", "gather_facts": false,
            "roles": [{"role": "pgherd.cluster.pki", "pki_dir": pki, "pki_hosts": hosts,
                       "pki_clients": ["patroni", "ctl"]}],
        }]);
        std::fs::write(&path, play.to_string()).unwrap();
        path
    };
    let two = json!([
        {"name": "db1", "sans": ["db1", "127.0.0.11"]},
        {"name": "db2", "sans": ["db2", "127.0.0.12"]},
    ]);
    let check = ansible_playbook(&dir.path, &playbook(two.clone()), &inventory, &["--check"]);
    assert!(check.succeeded(), "{}", check.transcript());
    assert!(check.changed_tasks().len() >= 5, "{}", check.transcript());
    assert!(!pki.exists(), "check mode writes nothing");

    let run = ansible_playbook(&dir.path, &playbook(two.clone()), &inventory, &[]);
    assert!(run.succeeded(), "{}", run.transcript());
    let ca = pki.join("ca.pem").display().to_string();
    for name in ["db1", "db2", "client-patroni", "client-ctl"] {
        let cert = pki.join(format!("{name}.pem")).display().to_string();
        let verified = openssl(&["verify", "-CAfile", &ca, &cert]);
        assert!(verified.contains(": OK"), "{verified}");
        let key = std::fs::metadata(pki.join(format!("{name}.key"))).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600, "{name}.key");
    }
    assert_eq!(
        std::fs::metadata(pki.join("ca.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let db1 = openssl(&[
        "x509",
        "-noout",
        "-text",
        "-in",
        &pki.join("db1.pem").display().to_string(),
    ]);
    assert!(db1.contains("DNS:db1, IP Address:127.0.0.11"), "{db1}");
    assert!(
        db1.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{db1}"
    );
    let client = openssl(&[
        "x509",
        "-noout",
        "-subject",
        "-in",
        &pki.join("client-patroni.pem").display().to_string(),
    ]);
    assert!(!client.contains("CN"), "no CommonName: {client}");

    let again = ansible_playbook(&dir.path, &playbook(two), &inventory, &[]);
    assert!(again.succeeded(), "{}", again.transcript());
    assert!(again.changed_tasks().is_empty(), "{}", again.transcript());

    // db2 moves: its certificate is made again, db1's is kept.
    let (db1_serial, db2_serial) = (serial(&pki.join("db1.pem")), serial(&pki.join("db2.pem")));
    let moved = json!([
        {"name": "db1", "sans": ["db1", "127.0.0.11"]},
        {"name": "db2", "sans": ["db2", "127.0.0.13"]},
    ]);
    let run = ansible_playbook(&dir.path, &playbook(moved), &inventory, &[]);
    assert!(run.succeeded(), "{}", run.transcript());
    assert_eq!(serial(&pki.join("db1.pem")), db1_serial);
    assert_ne!(serial(&pki.join("db2.pem")), db2_serial);
    let db2 = openssl(&[
        "x509",
        "-noout",
        "-ext",
        "subjectAltName",
        "-in",
        &pki.join("db2.pem").display().to_string(),
    ]);
    assert!(db2.contains("IP Address:127.0.0.13"), "{db2}");

    // pgherd's own check before a run accepts them as a node's files.
    let doc: serde_yaml::Value = serde_yaml::from_str(&format!(
        "restapi:\n  certfile: {0}/db1.pem\n  keyfile: {0}/db1.key\n  cafile: {0}/ca.pem\n\
         ctl:\n  certfile: {0}/client-ctl.pem\n  keyfile: {0}/client-ctl.key\n  cacert: {0}/ca.pem\n\
         etcd3:\n  cacert: {0}/ca.pem\n  cert: {0}/client-patroni.pem\n  key: {0}/client-patroni.key\n",
        pki.display()
    ))
    .unwrap();
    let found = pgherd_core::certs::check_config(&doc);
    assert!(
        found.problems.is_empty() && found.warnings.is_empty(),
        "{found:?}"
    );
}
