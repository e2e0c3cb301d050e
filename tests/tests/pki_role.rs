//! The collection's pki role, on the controller: a CA and certificates for
//! hosts and clients that verify, with the right names and 0600 keys;
//! check mode on nothing predicts and writes nothing; a second run makes
//! nothing; a host whose addresses change gets a new certificate and the
//! others keep theirs; and pgherd's own check of a node's certificates
//! accepts them. Then a CA rotated in its three steps.

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
    assert_eq!(check.changed_tasks().len(), 1, "{}", check.transcript());
    for name in [
        "the CA",
        "db1.pem",
        "db2.pem",
        "client-patroni.pem",
        "client-ctl.pem",
    ] {
        assert!(
            check.transcript().contains(&format!("would make {name}")),
            "{name}: {}",
            check.transcript()
        );
    }
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
    // The key pair that signs etcd's tokens: the public half is the key's.
    let token = pki.join("etcd-token.key");
    assert_eq!(
        std::fs::metadata(&token).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        openssl(&["pkey", "-pubout", "-in", &token.display().to_string()]),
        std::fs::read_to_string(pki.join("etcd-token.pub")).unwrap()
    );
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
    rotation(
        &dir,
        &pki,
        &inventory,
        &playbook(json!([{"name": "db1", "sans": ["db1"]}])),
    );

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

/// The certificates in a PEM file.
fn certs_in(path: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.split_inclusive("-----END CERTIFICATE-----\n")
        .filter(|c| c.contains("BEGIN CERTIFICATE"))
        .map(str::to_string)
        .collect()
}

/// Whether `cert` verifies against the CA certificate `ca` (PEM text).
fn signed_by(dir: &TestDir, cert: &std::path::Path, ca: &str) -> bool {
    let ca_file = dir.join("one-ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&ca_file)
        .arg(cert)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A CA rotated in three runs: begin (a new CA trusted beside the old, every
/// certificate made again so that services reload the bundle), sign (every
/// certificate signed by the new CA), finish (the old CA trusted no more).
/// Steps out of order are refused before anything is written; each step run
/// again changes nothing; check mode predicts and writes nothing.
fn rotation(
    dir: &TestDir,
    pki: &std::path::Path,
    inventory: &std::path::Path,
    playbook: &std::path::Path,
) {
    let step = |name: &str, extra: &[&str]| {
        let mut args = vec!["-e", &*format!("pki_ca_rotation={name}")]
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ansible_playbook(&dir.path, playbook, inventory, &args)
    };
    let ca_pem = pki.join("ca.pem");
    let db1 = pki.join("db1.pem");
    let old_ca = certs_in(&ca_pem);
    assert_eq!(old_ca.len(), 1);
    let refused = step("sign", &[]);
    assert!(!refused.succeeded(), "{}", refused.transcript());
    assert!(
        refused.transcript().contains("begin it first"),
        "{}",
        refused.transcript()
    );
    assert_eq!(certs_in(&ca_pem), old_ca, "a refused step writes nothing");

    let check = step("begin", &["--check"]);
    assert!(check.succeeded(), "{}", check.transcript());
    assert!(!check.changed_tasks().is_empty(), "{}", check.transcript());
    assert!(
        check.transcript().contains("would make db1.pem"),
        "{}",
        check.transcript()
    );
    assert_eq!(certs_in(&ca_pem), old_ca, "check mode writes nothing");
    assert!(!pki.join("ca-next.pem").exists());

    let before = serial(&db1);
    let begun = step("begin", &[]);
    assert!(begun.succeeded(), "{}", begun.transcript());
    let bundle = certs_in(&ca_pem);
    assert_eq!(bundle.len(), 2, "the old CA and the next");
    assert_eq!(bundle[0], old_ca[0]);
    assert_ne!(serial(&db1), before, "made again under the new bundle");
    assert!(
        signed_by(dir, &db1, &old_ca[0]),
        "still signed by the old CA"
    );
    let again = step("begin", &[]);
    assert!(again.changed_tasks().is_empty(), "{}", again.transcript());
    let refused = step("finish", &[]);
    assert!(
        refused.transcript().contains("sign with it first"),
        "{}",
        refused.transcript()
    );
    assert_eq!(certs_in(&ca_pem), bundle, "a refused step writes nothing");

    let signed = step("sign", &[]);
    assert!(signed.succeeded(), "{}", signed.transcript());
    let new_ca = bundle[1].clone();
    assert_eq!(certs_in(&ca_pem), vec![new_ca.clone(), old_ca[0].clone()]);
    for name in ["db1", "client-patroni", "client-ctl"] {
        let cert = pki.join(format!("{name}.pem"));
        assert!(
            signed_by(dir, &cert, &new_ca),
            "{name} signed by the new CA"
        );
        assert!(!signed_by(dir, &cert, &old_ca[0]), "{name}");
    }
    assert!(step("sign", &[]).changed_tasks().is_empty());
    let refused = step("begin", &[]);
    assert!(
        refused.transcript().contains("finish it first"),
        "{}",
        refused.transcript()
    );

    let signed_serial = serial(&db1);
    let finished = step("finish", &[]);
    assert!(finished.succeeded(), "{}", finished.transcript());
    assert_eq!(certs_in(&ca_pem), vec![new_ca.clone()]);
    assert_ne!(
        serial(&db1),
        signed_serial,
        "made again under the new bundle"
    );
    assert!(signed_by(dir, &db1, &new_ca));
    assert!(!pki.join("ca-retired.key").exists() && !pki.join("ca-next.key").exists());
    assert!(step("finish", &[]).changed_tasks().is_empty());
    let plain = ansible_playbook(&dir.path, playbook, inventory, &[]);
    assert!(plain.changed_tasks().is_empty(), "{}", plain.transcript());
}
