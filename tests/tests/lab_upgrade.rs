//! A major upgrade on real hosts: the lab's three Debian hosts (Debian's
//! layout: the configuration in /etc/postgresql, Debian's patroni@ units)
//! upgraded from 15 to 17 by playbooks/upgrade.yml over SSH, with a client
//! writing through libpq's list of hosts the whole time: every write
//! acknowledged before, during and after is on every member; the new
//! major's unit runs and is enabled, the old one's is gone with its files;
//! the write gap is measured; a second run changes nothing.

use std::process::Command;
use std::time::{Duration, Instant};

use pgherd_e2e::{lab_ids, lab_sql, lab_story, repo_root, wait_for, Lab, TestDir, Writer};

/// Each host's Patroni log's last lines and its units.
fn hosts_story() -> String {
    lab_story(
        &["lab1", "lab2", "lab3"],
        "sudo tail -n 8 /var/log/patroni/*-main/patroni.log; \
         systemctl is-active patroni@15-main patroni@17-main",
    )
}

/// The machine's PostgreSQL 17 (scripts/setup.sh) copied to a host, where
/// Debian's packages would put it.
fn install_17(host: &str) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "tar -C /usr/lib/postgresql -cf - 17 | bash {} ssh {host} \
             'sudo tar -C /usr/lib/postgresql -xf - && /usr/lib/postgresql/17/bin/postgres --version'",
            repo_root().join("scripts/lab.sh").display()
        ))
        .output()
        .expect("copy PostgreSQL 17");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("17."),
        "PostgreSQL 17 on {host}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_cluster_of_real_hosts_is_upgraded_from_15_to_17_under_writes() {
    let lab = Lab::up(3);
    let dir = TestDir::new("lab-upgrade");
    let site = repo_root().join("playbooks/site.yml");
    let upgrade = repo_root().join("playbooks/upgrade.yml");
    lab.playbook(&dir.path, &site, &[]).assert_ok("site.yml");
    for host in ["lab1", "lab2", "lab3"] {
        install_17(host);
    }
    let all = Lab::all_three();
    wait_for(
        "a leader taking writes",
        Duration::from_secs(60),
        || lab_sql(&all, true, "CREATE TABLE acked (id bigint PRIMARY KEY)"),
        hosts_story,
    );
    let writer = Writer::start(&all, "acked", hosts_story);
    writer.wait_progress(20, "before the upgrade");

    let asked = ["-e", "upgrade_cluster=lab", "-e", "upgrade_to=17"];
    let started = Instant::now();
    let upgraded = lab.playbook(&dir.path, &upgrade, &asked);
    let took = started.elapsed();
    upgraded.assert_ok("the upgrade");
    writer.wait_progress(20, "after the upgrade");
    let acked = writer.finish_timed();
    let gap = Writer::longest_gap(&acked);
    eprintln!(
        "lab-upgrade: 15 to 17 of 3 hosts in {:.1} s; the longest write gap {:.1} s ({} writes \
         acknowledged)",
        took.as_secs_f64(),
        gap.as_secs_f64(),
        acked.len()
    );

    // Every acknowledged write on every member, each on 17, one system
    // identifier, the DCS's.
    let ids: std::collections::BTreeSet<u64> = acked.iter().map(|(id, _)| *id).collect();
    let initialize = lab
        .ssh(
            "lab1",
            "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 get /service/lab/initialize \
             --print-value-only",
        )
        .unwrap();
    for host in ["lab1", "lab2", "lab3"] {
        let target = format!("host={}", Lab::addr(host));
        wait_for(
            &format!("every acknowledged write on {host}"),
            Duration::from_secs(30),
            || lab_ids(&target, "acked").is_superset(&ids).then_some(()),
            || format!("{} of {}", lab_ids(&target, "acked").len(), ids.len()),
        );
        assert_eq!(
            lab_sql(
                &target,
                false,
                "SELECT current_setting('server_version_num')::int / 10000"
            )
            .as_deref(),
            Some("17"),
            "{host}"
        );
        assert_eq!(
            lab_sql(
                &target,
                false,
                "SELECT system_identifier FROM pg_control_system()"
            )
            .as_deref(),
            Some(initialize.trim()),
            "{host}"
        );
        // Debian's layout: the new major's unit runs and starts at boot;
        // the old one's and its files are gone.
        let units = lab
            .ssh(
                host,
                "systemctl is-active patroni@17-main; systemctl is-enabled patroni@17-main; \
                 systemctl is-enabled patroni@15-main 2>&1; \
                 sudo sh -c 'ls -d /etc/patroni/*-main.yml /etc/postgresql/*/main \
                 /var/lib/postgresql/*/main' 2>&1; true",
            )
            .unwrap();
        assert!(
            units.starts_with("active\nenabled\n")
                && !units.contains("\nenabled\nenabled")
                && units.contains("/etc/patroni/17-main.yml")
                && !units.contains("/etc/patroni/15-main.yml")
                && units.contains("/var/lib/postgresql/17/main")
                && !units.contains("/var/lib/postgresql/15/main")
                && units.contains("/etc/postgresql/17/main"),
            "{host}: {units}"
        );
    }

    lab.playbook(&dir.path, &upgrade, &asked)
        .assert_unchanged("the upgrade again");
    lab.playbook(&dir.path, &site, &["-e", "pg_version=17"])
        .assert_unchanged("site.yml on 17");
}
