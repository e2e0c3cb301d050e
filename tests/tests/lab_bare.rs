//! Lab hosts that are not the deployed cluster's: an older Debian where
//! the static module binaries run, and bare hosts (the OS alone, apt
//! through the lab's proxy) taken by the collection's roles to their
//! packages, to a secured etcd whose certificates are rotated without a
//! failed write, and by playbooks/bootstrap.yml to a secured cluster.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgherd_e2e::pki::served_serial;
use pgherd_e2e::{repo_root, Lab, TestDir};
use serde_json::{json, Value};

/// The module binaries on a host older than the machine that built them
/// (Debian bullseye, glibc 2.31: the static builds need none): the etcd
/// module reads the lab's etcd from there, and the instance module answers
/// with its refusal of a host without PostgreSQL (no postgres user), both over SSH
/// with become, as on any host.
#[test]
fn the_modules_run_on_an_older_debian_host() {
    let dir = TestDir::new("lab-old");
    let lab = Lab::up_with_old(1);
    let glibc = lab.ssh("lab2", "ldd --version | head -1").unwrap();
    assert!(glibc.contains("2.31"), "{glibc}");
    let inventory = Lab::inventory_of(&dir.path, &["lab2"]);
    let playbook = dir.join("old.yml");
    std::fs::write(
        &playbook,
        format!(
            "- hosts: lab2\n  gather_facts: false\n  tasks:\n\
             \x20   - name: read etcd\n      pgherd.cluster.etcd: {{hosts: ['{}:2379']}}\n\
             \x20   - name: an instance on a host without PostgreSQL\n\
             \x20     pgherd.cluster.instance: {{name: main, state: present}}\n\
             \x20     ignore_errors: true\n",
            Lab::addr("lab1")
        ),
    )
    .unwrap();
    let run = pgherd_e2e::ansible_playbook(&dir.path, &playbook, &inventory, &[]);
    let read = run
        .events
        .iter()
        .find(|e| e.task == "read etcd")
        .expect("the etcd task ran");
    assert_ne!(read.result["failed"], true, "{}", run.transcript());
    assert_eq!(read.result["changed"], false, "{}", run.transcript());
    let members = read.result["etcd"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{}", read.result);
    assert_eq!(members[0]["healthy"], true, "{}", read.result);
    assert_eq!(
        read.result["ansible_facts"]["pgherd_host_architecture"],
        "x86_64"
    );
    let refused = run
        .events
        .iter()
        .find(|e| e.task == "an instance on a host without PostgreSQL")
        .expect("the instance task ran");
    let msg = refused.result["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("operating-system user \"postgres\": does not exist on this host"),
        "{}",
        refused.result
    );
}

/// A host with only the OS gets PostgreSQL (its package version pinned),
/// Patroni and etcd from the packages role, through the lab's apt proxy:
/// check mode first predicts and installs nothing, the run installs and
/// makes no PostgreSQL cluster (Patroni makes it), the next run changes
/// nothing, and a version that is not a major version is refused.
#[test]
fn bare_hosts_get_pinned_packages_and_no_cluster() {
    let dir = TestDir::new("lab-bare");
    let lab = Lab::up_bare(1);
    let candidate = lab
        .ssh(
            "lab1",
            "sudo apt-get update -qq && apt-cache policy postgresql-15 | awk '/Candidate/ {print $2}'",
        )
        .unwrap()
        .trim()
        .to_string();
    assert!(candidate.starts_with("15."), "{candidate}");
    let inventory = Lab::inventory_of(&dir.path, &["lab1"]);
    let playbook = dir.join("packages.yml");
    std::fs::write(
        &playbook,
        format!(
            "- hosts: lab1\n  gather_facts: false\n  roles:\n\
             \x20   - role: pgherd.cluster.packages\n\
             \x20     packages_postgresql_package_version: \"{candidate}\"\n\
             \x20     packages_etcd: true\n\
             \x20     packages_pgbackrest: true\n\
             \x20 post_tasks:\n\
             \x20   - name: paths\n      ansible.builtin.debug:\n\
             \x20       msg: \"{{{{ packages_postgresql_bindir }}}} {{{{ packages_patroni_execpath }}}}\"\n"
        ),
    )
    .unwrap();
    let installed = |package: &str| {
        lab.ssh(
            "lab1",
            &format!("dpkg-query -W -f '${{Version}}' {package}"),
        )
        .ok()
    };

    let check = pgherd_e2e::ansible_playbook(&dir.path, &playbook, &inventory, &["--check"]);
    check.assert_ok("check mode on a bare host");
    assert!(check.changed_tasks().len() >= 2, "{}", check.transcript());
    assert_eq!(
        installed("postgresql-15"),
        None,
        "check mode installs nothing"
    );

    let run = pgherd_e2e::ansible_playbook(&dir.path, &playbook, &inventory, &[]);
    run.assert_ok("the packages");
    assert_eq!(
        installed("postgresql-15").as_deref(),
        Some(candidate.as_str())
    );
    for package in ["patroni", "etcd-server", "pgbackrest", "python3-psycopg2"] {
        assert!(installed(package).is_some(), "{package} is not installed");
    }
    let clusters = lab.ssh("lab1", "pg_lsclusters -h").unwrap();
    assert_eq!(clusters.trim(), "", "no cluster made by the packages");
    let paths = run.events.iter().find(|e| e.task == "paths").unwrap();
    assert_eq!(
        paths.result["msg"],
        "/usr/lib/postgresql/15/bin /usr/bin/patroni"
    );
    lab.ssh(
        "lab1",
        "/usr/lib/postgresql/15/bin/postgres --version && /usr/bin/patroni --version",
    )
    .expect("the programs run");

    let again = pgherd_e2e::ansible_playbook(&dir.path, &playbook, &inventory, &[]);
    again.assert_ok("the packages again");
    assert_eq!(again.changed_tasks().len(), 0, "{}", again.transcript());

    let refused = pgherd_e2e::ansible_playbook(
        &dir.path,
        &playbook,
        &inventory,
        &["-e", "packages_postgresql_version=fifteen"],
    );
    assert!(!refused.succeeded());
    let msg = refused.failed_tasks()[0].result["msg"].to_string();
    assert!(
        msg.contains("is a major version in digits (given: fifteen)"),
        "{msg}"
    );
}

const ETCD_ROOT_PW: &str = "Lab-Etcd-Root-5v";
const ETCD_PATRONI_PW: &str = "Lab-Etcd-Ptr-8k";

/// A put through all three members, as Patroni's user with its client
/// certificate: whether it was acknowledged.
fn etcd_put(pki: &std::path::Path, n: u32) -> bool {
    let endpoints: Vec<String> = ["lab1", "lab2", "lab3"]
        .iter()
        .map(|h| format!("https://{}:2379", Lab::addr(h)))
        .collect();
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg(format!("--cacert={}", pki.join("ca.pem").display()))
        .arg(format!(
            "--cert={}",
            pki.join("client-patroni.pem").display()
        ))
        .arg(format!(
            "--key={}",
            pki.join("client-patroni.key").display()
        ))
        .arg(format!("--user=patroni-main:{ETCD_PATRONI_PW}"))
        .args([
            "--dial-timeout=2s",
            "--command-timeout=5s",
            "put",
            "/service/main/probe",
        ])
        .arg(n.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Bare hosts to a secured etcd: the controller's CA and certificates
/// (pki role), the packages, three members with TLS for clients and peers
/// (etcd_member role), Patroni's user limited to its prefix and
/// authentication on (etcd module); a second run changes nothing. Then
/// every certificate made again and the members restarted one at a time
/// while a client writes through them: no write fails, and each member
/// serves its new certificate.
#[test]
fn a_secured_etcd_from_bare_hosts_rotates_its_certificates_without_a_failed_write() {
    let dir = TestDir::new("lab-etcd");
    let lab = Lab::up_bare(3);
    let inventory = Lab::inventory_of(&dir.path, &["lab1", "lab2", "lab3"]);
    let pki = dir.join("pki");
    let endpoints: Vec<String> = ["lab1", "lab2", "lab3"]
        .iter()
        .map(|h| format!("{}:2379", Lab::addr(h)))
        .collect();
    let playbook = dir.join("etcd.yml");
    let plays = json!([
        {"name": "The site's PKI", "hosts": "localhost", "connection": "local", "gather_facts": false,
         "become": false,
         "roles": [{"role": "pgherd.cluster.pki", "pki_dir": pki, "pki_clients": ["patroni"]}]},
        {"name": "etcd", "hosts": "etcd", "gather_facts": false,
         "roles": [{"role": "pgherd.cluster.packages", "packages_etcd": true},
                   {"role": "pgherd.cluster.etcd_member", "etcd_member_pki_dir": pki}]},
        {"name": "etcd's users", "hosts": "etcd[0]", "gather_facts": false,
         "tasks": [{"name": "Patroni's user and authentication", "pgherd.cluster.etcd": {
             "hosts": endpoints, "protocol": "https", "cacert": "/etc/etcd/pki/ca.pem",
             "cert": "/etc/etcd/pki/member.pem", "key": "/etc/etcd/pki/member.key",
             "login_password": ETCD_ROOT_PW, "auth": true,
             "roles": [{"name": "patroni-main", "permissions": [{"key": "/service/main/"}]}],
             "users": [{"name": "patroni-main", "password": ETCD_PATRONI_PW, "roles": ["patroni-main"]}]}}]},
    ]);
    std::fs::write(&playbook, plays.to_string()).unwrap();
    let started = Instant::now();
    let first = pgherd_e2e::ansible_playbook(&dir.path, &playbook, &inventory, &[]);
    first.assert_ok("bare hosts to a secured etcd");
    eprintln!(
        "lab: secured etcd from bare hosts in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let members = lab
        .ssh(
            "lab1",
            &format!(
                "sudo ETCDCTL_API=3 etcdctl --endpoints=https://{}:2379 --cacert=/etc/etcd/pki/ca.pem \
                 --cert=/etc/etcd/pki/member.pem --key=/etc/etcd/pki/member.key \
                 --user=root:{ETCD_ROOT_PW} member list",
                Lab::addr("lab1")
            ),
        )
        .unwrap();
    assert_eq!(
        members.lines().filter(|l| l.contains("started")).count(),
        3,
        "{members}"
    );
    assert!(etcd_put(&pki, 0), "Patroni's user writes under its prefix");
    let again = pgherd_e2e::ansible_playbook(&dir.path, &playbook, &inventory, &[]);
    again.assert_ok("the same again");
    assert_eq!(again.changed_tasks().len(), 0, "{}", again.transcript());

    // Every certificate made again (all are within 900 days of their end),
    // the members restarted one at a time while a client writes.
    let before: Vec<String> = endpoints.iter().map(|e| served_serial(e, false)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, pki) = (stop.clone(), pki.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(Ordering::Relaxed) {
                if etcd_put(&pki, ok + failed) {
                    ok += 1;
                } else {
                    failed += 1;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (ok, failed)
        })
    };
    let rotated = pgherd_e2e::ansible_playbook(
        &dir.path,
        &playbook,
        &inventory,
        &["-e", "pki_renew_days=900"],
    );
    stop.store(true, Ordering::Relaxed);
    let (acknowledged, failed) = writer.join().unwrap();
    rotated.assert_ok("the rotation");
    eprintln!("lab: etcd rotation: {acknowledged} writes acknowledged, {failed} failed");
    assert!(acknowledged > 10, "{acknowledged}");
    assert_eq!(failed, 0, "{}", rotated.transcript());
    let restarts: Vec<&str> = rotated
        .events
        .iter()
        .filter(|e| e.task.contains("Restart of "))
        .map(|e| e.task.as_str())
        .collect();
    assert_eq!(restarts.len(), 3, "{}", rotated.transcript());
    for (endpoint, old) in endpoints.iter().zip(&before) {
        let now = served_serial(endpoint, false);
        assert!(
            !now.is_empty() && now != *old,
            "{endpoint} serves {now} (was {old})"
        );
    }
}

/// Bare hosts (the OS alone) to a secured cluster with one playbook,
/// playbooks/bootstrap.yml, on an inventory like inventories/example: the
/// controller's PKI, the packages, etcd with TLS and authentication,
/// Patroni's REST API with TLS and client certificates, replication over
/// verified SSL. The cluster forms; a second run changes nothing.
#[test]
fn bare_hosts_to_a_secured_cluster_with_one_playbook() {
    let dir = TestDir::new("lab-bootstrap");
    let lab = Lab::up_bare(3);
    let inventory = dir.join("inventory");
    std::fs::create_dir_all(inventory.join("group_vars")).unwrap();
    std::fs::copy(
        Lab::inventory().join("hosts.yml"),
        inventory.join("hosts.yml"),
    )
    .unwrap();
    let lab_vars: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(Lab::inventory().join("group_vars/all.yml")).unwrap(),
    )
    .unwrap();
    let mut vars: Value = serde_json::to_value(&lab_vars).unwrap();
    let tls = "/etc/pgherd/tls";
    let settings = &mut vars["pgherd_settings"];
    settings["postgresql"]["client_ssl"] =
        json!({"sslmode": "verify-ca", "sslrootcert": format!("{tls}/ca.pem")});
    for (k, v) in [
        ("protocol", json!("https")),
        ("cacert", json!(format!("{tls}/ca.pem"))),
        ("cert", json!(format!("{tls}/client.pem"))),
        ("key", json!(format!("{tls}/client.key"))),
    ] {
        settings["patroni"]["etcd"][k] = v;
    }
    settings["patroni"]["restapi"] = json!({
        "cafile": format!("{tls}/ca.pem"), "certfile": format!("{tls}/server.pem"),
        "keyfile": format!("{tls}/server.key"), "verify_client": "required",
    });
    settings["patroni"]["ctl"] = json!({
        "certfile": format!("{tls}/client.pem"), "keyfile": format!("{tls}/client.key"),
        "cacert": format!("{tls}/ca.pem"),
    });
    vars["pg_parameters"] = json!({
        "ssl": "on", "ssl_cert_file": format!("{tls}/server.pem"),
        "ssl_key_file": format!("{tls}/server.key"), "ssl_ca_file": format!("{tls}/ca.pem"),
    });
    vars["patroni_etcd_auth"] = json!({"username": "patroni", "password": ETCD_PATRONI_PW});
    vars["pgherd_etcd_root_password"] = json!(ETCD_ROOT_PW);
    vars["pgherd_pki_dir"] = json!(dir.join("pki"));
    std::fs::write(
        inventory.join("group_vars/all.yml"),
        serde_yaml::to_string(&vars).unwrap(),
    )
    .unwrap();
    let bootstrap = repo_root().join("playbooks/bootstrap.yml");

    let started = Instant::now();
    let first = pgherd_e2e::ansible_playbook(&dir.path, &bootstrap, &inventory, &[]);
    first.assert_ok("bare hosts to a secured cluster");
    eprintln!(
        "lab: bare hosts to a secured cluster in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let again = pgherd_e2e::ansible_playbook(&dir.path, &bootstrap, &inventory, &[]);
    again.assert_ok("the bootstrap again");
    eprintln!(
        "lab: bootstrap re-run in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(again.changed_tasks().len(), 0, "{}", again.transcript());

    // The REST API answers only with a client certificate of the CA.
    let pki = dir.join("pki");
    let url = format!("https://{}:8008/cluster", Lab::addr("lab1"));
    let ca = pki.join("ca.pem").display().to_string();
    let cert = pki.join("client-patroni.pem").display().to_string();
    let key = pki.join("client-patroni.key").display().to_string();
    assert_eq!(
        pgherd_e2e::curl_status(
            "GET",
            &url,
            &["--cacert", &ca, "--cert", &cert, "--key", &key]
        ),
        Some(200)
    );
    assert_eq!(
        pgherd_e2e::curl_status("GET", &url, &["--cacert", &ca]),
        None
    );
    let view = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "--cacert",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            &url,
        ])
        .output()
        .expect("curl");
    let view = String::from_utf8_lossy(&view.stdout).into_owned();
    let view: Value = serde_json::from_str(&view).unwrap_or(Value::Null);
    let members = view["members"].as_array().cloned().unwrap_or_default();
    assert_eq!(members.len(), 3, "{view}");
    // Debian's Patroni 3.0 says "running" of a streaming replica: the
    // replication itself is checked on the leader below.
    assert_eq!(
        members.iter().filter(|m| m["role"] == "replica").count(),
        2,
        "{view}"
    );
    // Both replicas stream, over SSL, checked against the CA.
    let ssl = lab
        .ssh(
            "lab1",
            "sudo -u postgres psql -Atc \"select count(*) from pg_stat_ssl s join pg_stat_replication r using (pid) where s.ssl\"",
        )
        .unwrap();
    assert_eq!(ssl.trim(), "2", "{ssl}");
}
