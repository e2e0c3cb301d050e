//! Lab hosts that are not the deployed cluster's: an older Debian where
//! the static module binaries run, and a bare host (the OS alone, apt
//! through the lab's proxy) taken by the packages role to its packages.
//! lab_bootstrap.rs takes bare hosts to a secured cluster.

use pgherd_e2e::{Lab, TestDir};

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
