//! Lab hosts that are not the deployed cluster's: an older Debian where
//! the static module binaries run, and a bare host (the OS alone, apt
//! through the lab's proxy, pip to its wheelhouse) taken by the packages
//! role to its packages and to a running node.
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
/// etcd and pgBackRest from the packages role through the lab's apt proxy,
/// and Patroni from pip at a pinned version (the lab's wheelhouse holds a
/// newer one too), as for a distribution whose package is old: check mode
/// first predicts and installs nothing, the run installs and makes no
/// PostgreSQL cluster (Patroni makes it), the next run changes nothing.
/// The node then runs under that Patroni, with pgherd's own unit (the
/// distribution's package, and its unit, are not there). A version that is
/// not a major version is refused.
#[test]
fn a_bare_host_gets_pinned_packages_and_patroni_from_pip_and_runs_a_node() {
    const PATRONI: &str = "4.0.11";
    // Not the role's default (/opt/patroni).
    const VENV: &str = "/srv/patroni-4.0";
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
    let inventory = node_inventory(&dir, VENV);
    let playbook = dir.join("packages.yml");
    std::fs::write(
        &playbook,
        format!(
            "- hosts: lab1\n  gather_facts: false\n  roles:\n\
             \x20   - role: pgherd.cluster.packages\n\
             \x20     packages_postgresql_package_version: \"{candidate}\"\n\
             \x20     packages_etcd: true\n\
             \x20     packages_pgbackrest: true\n\
             \x20     packages_patroni_from: pip\n\
             \x20     packages_patroni_version: \"{PATRONI}\"\n\
             \x20     packages_patroni_venv: {VENV}\n\
             \x20     packages_pip_options: [--no-index, --find-links, \"{}\", --trusted-host, \"{}\"]\n\
             \x20 post_tasks:\n\
             \x20   - name: paths\n      ansible.builtin.debug:\n\
             \x20       msg: \"{{{{ packages_postgresql_bindir }}}} {{{{ packages_patroni_execpath }}}}\"\n",
            Lab::wheelhouse(),
            Lab::machine_addr()
        ),
    )
    .unwrap();
    let installed = |package: &str| {
        lab.ssh(
            "lab1",
            &format!("dpkg-query -W -f '${{Version}} ${{db:Status-Status}}' {package}"),
        )
        .ok()
        .and_then(|v| v.strip_suffix(" installed").map(str::to_string))
    };

    let check = pgherd_e2e::ansible_playbook(&dir.path, &playbook, &inventory, &["--check"]);
    check.assert_ok("check mode on a bare host");
    assert!(
        check.changed("Patroni in a virtualenv, at its version (check mode)"),
        "{}",
        check.transcript()
    );
    assert_eq!(
        installed("postgresql-15"),
        None,
        "check mode installs nothing"
    );
    assert!(lab.ssh("lab1", &format!("test -e {VENV}")).is_err());

    let run = pgherd_e2e::ansible_playbook(&dir.path, &playbook, &inventory, &[]);
    run.assert_ok("the packages");
    assert_eq!(
        installed("postgresql-15").as_deref(),
        Some(candidate.as_str())
    );
    for package in ["etcd-server", "pgbackrest", "python3-venv"] {
        assert!(installed(package).is_some(), "{package} is not installed");
    }
    for package in ["patroni", "python3-psycopg2"] {
        assert_eq!(installed(package), None, "{package} from apt");
    }
    let clusters = lab.ssh("lab1", "pg_lsclusters -h").unwrap();
    assert_eq!(clusters.trim(), "", "no cluster made by the packages");
    let paths = run.events.iter().find(|e| e.task == "paths").unwrap();
    assert_eq!(
        paths.result["msg"],
        format!("/usr/lib/postgresql/15/bin {VENV}/bin/patroni")
    );
    let version = lab
        .ssh(
            "lab1",
            &format!(
                "/usr/lib/postgresql/15/bin/postgres --version && sudo -u postgres {VENV}/bin/patroni --version"
            ),
        )
        .expect("the programs run, Patroni as postgres");
    assert!(version.contains(&format!("patroni {PATRONI}")), "{version}");

    let again = pgherd_e2e::ansible_playbook(&dir.path, &playbook, &inventory, &[]);
    again.assert_ok("the packages again");
    assert_eq!(again.changed_tasks().len(), 0, "{}", again.transcript());

    // The node: an etcd member, then site.yml with the settings' execpath
    // at the virtualenv's Patroni.
    let node = dir.join("node.yml");
    std::fs::write(
        &node,
        format!(
            "- hosts: etcd\n  gather_facts: false\n  roles:\n\
             \x20   - role: pgherd.cluster.etcd_member\n\
             - name: The node\n  ansible.builtin.import_playbook: {}\n",
            pgherd_e2e::repo_root().join("playbooks/site.yml").display()
        ),
    )
    .unwrap();
    let deployed = pgherd_e2e::ansible_playbook(&dir.path, &node, &inventory, &[]);
    deployed.assert_ok("a node under the virtualenv's Patroni");
    let running = lab
        .ssh(
            "lab1",
            "pgrep -u postgres -af 'bin/patroni'; test -e /etc/systemd/system/patroni@.service && echo own-unit; \
             systemctl is-active patroni@15-main; sudo -u postgres psql -XAtc 'select pg_is_in_recovery()'",
        )
        .unwrap_or_else(|e| e);
    assert!(
        running.contains(&format!("{VENV}/bin/patroni /etc/patroni/15-main.yml"))
            && running.contains("own-unit")
            && running.contains("active")
            && running.trim_end().ends_with('f'),
        "{running}"
    );
    let settled = pgherd_e2e::ansible_playbook(&dir.path, &node, &inventory, &[]);
    settled.assert_ok("the node again");
    assert_eq!(settled.changed_tasks().len(), 0, "{}", settled.transcript());

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

/// The lab's inventory for lab1 alone, primary and etcd member, Patroni
/// taken from the virtualenv `venv` the packages role makes.
fn node_inventory(dir: &TestDir, venv: &str) -> std::path::PathBuf {
    let inventory = dir.join("inventory");
    std::fs::create_dir_all(inventory.join("group_vars")).unwrap();
    let vars = std::fs::read_to_string(Lab::inventory().join("group_vars/all.yml"))
        .unwrap()
        .replace(
            "execpath: /opt/patroni/bin/patroni",
            &format!("execpath: {venv}/bin/patroni"),
        );
    assert!(vars.contains(&format!("{venv}/bin/patroni")), "{vars}");
    std::fs::write(inventory.join("group_vars/all.yml"), vars).unwrap();
    std::fs::write(
        inventory.join("hosts.yml"),
        format!(
            "all:\n  children:\n    primary:\n      hosts:\n        lab1:\n          ansible_host: {}\n\
             \x20   replica:\n      hosts: {{}}\n    etcd:\n      hosts:\n        lab1:\n",
            Lab::addr("lab1")
        ),
    )
    .unwrap();
    inventory
}
