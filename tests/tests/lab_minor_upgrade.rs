//! A rolling minor upgrade on real hosts, with real packages: three bare
//! Debian hosts get PostgreSQL 15 at the older of the two releases their
//! archive holds (bookworm's and bookworm-security's) and Patroni 4.0.11 in
//! a virtualenv from the packages role, run a cluster, then
//! playbooks/rolling-upgrade.yml installs the newer PostgreSQL and Patroni
//! 4.1.5 and restarts what runs older, under a client writing through
//! libpq's host list: every acknowledged write on every member, each member
//! on the new versions, the leadership handed over once, and a second run
//! changing nothing.

use std::time::Duration;

use pgherd_e2e::{
    lab_ids, lab_rest, lab_roles, lab_story, lab_wait_whole, repo_root, wait_for, Lab, TestDir,
    Writer,
};

const HOSTS: [&str; 3] = ["lab1", "lab2", "lab3"];
/// Not the packages role's default (/opt/patroni).
const VENV: &str = "/srv/pgherd/patroni-venv";
const OLD_PATRONI: &str = "4.0.11";
const NEW_PATRONI: &str = "4.1.5";

fn story() -> String {
    lab_story(
        &HOSTS,
        "curl -s http://$(hostname -I | cut -d' ' -f1):8008/patroni; echo",
    )
}

/// Each host's (Patroni's version, PostgreSQL's version number).
fn running() -> Vec<(String, u64)> {
    HOSTS
        .iter()
        .map(|h| {
            let s = lab_rest(h, "/patroni").unwrap_or_default();
            (
                s["patroni"]["version"].as_str().unwrap_or_default().into(),
                s["server_version"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn a_rolling_minor_upgrade_installs_and_restarts_with_one_switchover() {
    let dir = TestDir::new("lab-minor");
    let lab = Lab::up_bare(3);
    // The security archive beside the release's, as on any Debian host:
    // two releases of PostgreSQL 15 to choose from.
    let mut versions = Vec::new();
    for host in HOSTS {
        let madison = lab
            .ssh(
                host,
                "echo 'deb http://deb.debian.org/debian-security bookworm-security main' \
                 | sudo tee /etc/apt/sources.list.d/security.list >/dev/null && \
                 sudo apt-get update -qq && apt-cache madison postgresql-15",
            )
            .unwrap();
        versions = madison
            .lines()
            .filter_map(|l| l.split('|').nth(1).map(|v| v.trim().to_string()))
            .collect::<Vec<_>>();
    }
    versions.sort_by_key(|v| pgherd_e2e::pg_version_num(v));
    versions.dedup();
    assert!(
        versions.len() >= 2,
        "two releases of postgresql-15: {versions:?}"
    );
    let (older, newer) = (
        versions[versions.len() - 2].clone(),
        versions[versions.len() - 1].clone(),
    );

    // Names and paths other than the lab inventory's.
    let vars = Lab::inventory_vars()
        .replace(
            "execpath: /opt/patroni/bin/patroni",
            &format!("execpath: {VENV}/bin/patroni"),
        )
        .replace("pg_cluster: lab\n", "pg_cluster: tills-east\n")
        .replace("pg_instance: main\n", "pg_instance: books\n");
    assert!(
        vars.contains(VENV) && vars.contains("tills-east") && vars.contains("books"),
        "{vars}"
    );
    let inventory = Lab::inventory_with_vars(
        &dir.path,
        &format!(
            "{vars}\npackages_patroni_from: pip\npackages_patroni_venv: {VENV}\n\
             packages_pip_options: [--no-index, --find-links, \"{}\", --trusted-host, \"{}\"]\n",
            Lab::wheelhouse(),
            Lab::machine_addr()
        ),
    );
    let deploy = dir.join("deploy.yml");
    std::fs::write(
        &deploy,
        format!(
            "- hosts: primary:replica:etcd\n  gather_facts: false\n  roles:\n\
             \x20   - role: pgherd.cluster.packages\n\
             - hosts: etcd\n  gather_facts: false\n  roles:\n\
             \x20   - role: pgherd.cluster.etcd_member\n\
             - name: The cluster\n  ansible.builtin.import_playbook: {}\n",
            repo_root().join("playbooks/site.yml").display()
        ),
    )
    .unwrap();
    let old = [
        "-e".to_string(),
        format!(
            "packages_postgresql_package_version={older} packages_patroni_version={OLD_PATRONI}"
        ),
    ];
    let old: Vec<&str> = old.iter().map(String::as_str).collect();
    pgherd_e2e::ansible_playbook(&dir.path, &deploy, &inventory, &old)
        .assert_ok("the cluster on the older releases");
    lab_wait_whole(
        &HOSTS,
        "lab1",
        "the cluster whole on the older releases",
        story,
    );
    assert_eq!(
        running(),
        vec![(OLD_PATRONI.to_string(), pgherd_e2e::pg_version_num(&older)); 3]
    );

    let all = format!(
        "host={}",
        HOSTS
            .iter()
            .map(|h| Lab::addr(h))
            .collect::<Vec<_>>()
            .join(",")
    );
    pgherd_e2e::lab_sql(&all, true, "CREATE TABLE written (id bigint PRIMARY KEY)")
        .expect("the table");
    let writer = Writer::start(&all, "written", story);
    writer.wait_progress(20, "before the upgrade");

    let rolling = repo_root().join("playbooks/rolling-upgrade.yml");
    let new = [
        "-e".to_string(),
        format!(
            "packages_postgresql_package_version={newer} packages_patroni_version={NEW_PATRONI}"
        ),
    ];
    let new: Vec<&str> = new.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let run = pgherd_e2e::ansible_playbook(&dir.path, &rolling, &inventory, &new);
    let took = started.elapsed();
    run.assert_ok("rolling-upgrade.yml");
    writer.wait_progress(20, "after the upgrade");
    let acked = writer.finish_timed();
    let gap = Writer::longest_gap(&acked);
    eprintln!(
        "rolling-upgrade.yml: {:.1} s; {} writes acknowledged, the longest time between two {:.2} s",
        took.as_secs_f64(),
        acked.len(),
        gap.as_secs_f64()
    );

    let r = lab_roles(&HOSTS);
    assert_eq!(r.len(), 3, "{r:?}");
    assert!(
        !r.contains(&"lab1: leader/running".to_string())
            && r.iter()
                .filter(|m| m.ends_with("replica/streaming"))
                .count()
                == 2,
        "the leadership handed over, the others streaming: {r:?}"
    );
    assert_eq!(
        running(),
        vec![(NEW_PATRONI.to_string(), pgherd_e2e::pg_version_num(&newer)); 3]
    );
    for host in HOSTS {
        let installed = lab
            .ssh(host, "dpkg-query -W -f '${Version}' postgresql-15")
            .unwrap();
        assert_eq!(installed.trim(), newer, "{host}");
    }
    let last = acked.last().unwrap().0;
    for host in HOSTS {
        let target = format!("host={}", Lab::addr(host));
        wait_for(
            &format!("{host} to hold write {last}"),
            Duration::from_secs(30),
            || lab_ids(&target, "written").contains(&last).then_some(()),
            story,
        );
        let ids = lab_ids(&target, "written");
        let lost: Vec<_> = acked.iter().filter(|(id, _)| !ids.contains(id)).collect();
        assert!(lost.is_empty(), "{host} lacks acknowledged writes {lost:?}");
    }

    let again = pgherd_e2e::ansible_playbook(&dir.path, &rolling, &inventory, &new);
    again.assert_unchanged("rolling-upgrade.yml again");
}
