//! A running cluster's shape changed through site.yml, on an inventory of
//! other names than the local one: a host added to the inventory joins
//! (cloned from the replica whose tags say `clonefrom`, while the members
//! already let its address in), a member removed with `absent` leaves the
//! DCS, and dropped from the inventory it is shut out of the others'
//! pg_hba on the next run.

use std::path::Path;
use std::time::{Duration, Instant};

use pgherd_e2e::{
    ansible_playbook, http_get, local_nodes_test, psql, repo_root, wait_for, Etcd, PlaybookRun,
};

const ADDRESSES: [&str; 4] = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"];

/// An inventory of the local one's variables with these hosts: db1 the
/// primary, the others replicas; db2 may be cloned from.
fn inventory(dir: &Path, replicas: &[&str]) -> std::path::PathBuf {
    let inv = dir.join("inventory");
    std::fs::create_dir_all(inv.join("group_vars")).unwrap();
    std::fs::copy(
        repo_root().join("playbooks/inventories/local/group_vars/all.yml"),
        inv.join("group_vars/all.yml"),
    )
    .unwrap();
    let mut hosts = String::from(
        "all:\n  children:\n    primary:\n      hosts:\n        db1:\n          ansible_host: 127.0.0.11\n    replica:\n      hosts:\n",
    );
    for r in replicas {
        let n: usize = r[2..].parse().unwrap();
        hosts.push_str(&format!(
            "        {r}:\n          ansible_host: {}\n",
            ADDRESSES[n - 1]
        ));
        if *r == "db2" {
            hosts.push_str("          patroni_tags: {clonefrom: true}\n");
        }
    }
    std::fs::write(inv.join("hosts.yml"), hosts).unwrap();
    inv
}

fn members() -> Vec<String> {
    http_get("127.0.0.11:8008", "/cluster")
        .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v["members"].as_array().map(|m| {
                m.iter()
                    .filter(|m| m["state"] == "streaming" || m["role"] == "leader")
                    .filter_map(|m| m["name"].as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default()
}

fn replication_from(root: &Path) -> String {
    psql(
        &root.join("db1/run"),
        "select string_agg(distinct address, ',' order by address) from pg_hba_file_rules \
         where 'replication' = any(database)",
    )
    .unwrap_or_default()
}

fn ok(run: &PlaybookRun, what: &str) {
    assert!(run.succeeded(), "{what} failed:\n{}", run.transcript());
}

#[test]
fn a_node_added_cloned_from_a_replica_and_one_removed_through_site_yml() {
    let (dir, root, _reaper) = local_nodes_test("shape", &ADDRESSES);
    let etcd = Etcd::start(&dir.path, 25_379, 25_380);
    let site = repo_root().join("playbooks/site.yml");
    let vars = [
        "-e".to_string(),
        format!("pgherd_repo={}", repo_root().display()),
        "-e".to_string(),
        "pg_cluster=orders pg_instance=core".to_string(),
        "-e".to_string(),
        format!("pgherd_local_root={}", root.display()),
        "-e".to_string(),
        format!("{{\"pgherd_etcd_hosts\": [\"{}\"]}}", etcd.client_addr),
    ];
    let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
    let three = inventory(&dir.path, &["db2", "db3"]);
    ok(
        &ansible_playbook(&dir.path, &site, &three, &vars),
        "the deployment of three",
    );
    wait_for(
        "a leader and two streaming replicas",
        Duration::from_secs(60),
        || (members().len() == 3).then_some(()),
        || format!("{:?}", members()),
    );

    // db4 added to the inventory: the members let it in, it clones from
    // db2 (clonefrom), and streams.
    let four = inventory(&dir.path, &["db2", "db3", "db4"]);
    let started = Instant::now();
    let add = ansible_playbook(&dir.path, &site, &four, &vars);
    ok(&add, "adding db4");
    eprintln!(
        "shape: db4 added in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        add.changed("PostgreSQL instance managed by Patroni"),
        "{}",
        add.transcript()
    );
    assert_eq!(
        replication_from(&root),
        "127.0.0.1,127.0.0.11,127.0.0.12,127.0.0.13,127.0.0.14"
    );
    let log = std::fs::read_to_string(root.join("db4/log/patroni-15-core/patroni.log"))
        .unwrap_or_default();
    assert!(
        log.contains("from replica 'db2'"),
        "db4 was not cloned from db2:\n{log}"
    );
    wait_for(
        "db4 streaming",
        Duration::from_secs(30),
        || members().contains(&"db4".to_string()).then_some(()),
        || format!("{:?}", members()),
    );
    let again = ansible_playbook(&dir.path, &site, &four, &vars);
    ok(&again, "the run after the addition");
    assert!(again.changed_tasks().is_empty(), "{}", again.transcript());

    // db3 removed: absent leaves the DCS, then the inventory without it
    // shuts its address out of the others' pg_hba.
    let started = Instant::now();
    let mut absent = vars.clone();
    absent.extend(["-l", "db3", "-e", "pg_state=absent"]);
    ok(
        &ansible_playbook(&dir.path, &site, &four, &absent),
        "db3 absent",
    );
    eprintln!(
        "shape: db3 removed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let listed = http_get("127.0.0.11:8008", "/cluster")
        .map(|(_, b)| b)
        .unwrap_or_default();
    assert!(
        !listed.contains("\"db3\""),
        "the leader still lists db3: {listed}"
    );
    let without = inventory(&dir.path, &["db2", "db4"]);
    let shut = ansible_playbook(&dir.path, &site, &without, &vars);
    ok(&shut, "the run without db3");
    assert_eq!(
        replication_from(&root),
        "127.0.0.1,127.0.0.11,127.0.0.12,127.0.0.14"
    );
    assert_eq!(members().len(), 3, "{:?}", members());
}
