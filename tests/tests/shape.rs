//! A running cluster's shape changed through site.yml, on an inventory of
//! other names than the local one: a host added to the inventory joins
//! (cloned from the replica whose tags say `clonefrom`, while the members
//! already let its address in), a member removed with `absent` leaves the
//! DCS, and dropped from the inventory it is shut out of the others'
//! pg_hba on the next run. A host lost with its data is rebuilt under its
//! name, or replaced by a new host.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgherd_e2e::{
    ansible_playbook, http_get, local_inventory_with, local_nodes_test, lose_node, psql, repo_root,
    wait_for, Etcd, PlaybookRun,
};

const ADDRESSES: [&str; 4] = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"];

/// An inventory of the local one's variables with these hosts: db1 the
/// primary, the others replicas; db2 may be cloned from.
fn inventory(dir: &Path, replicas: &[&str]) -> PathBuf {
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
    local_inventory_with(dir, &hosts)
}

/// The cluster as the first member that answers lists it.
fn cluster_view() -> Option<serde_json::Value> {
    ADDRESSES.iter().find_map(|a| {
        http_get(&format!("{a}:8008"), "/cluster")
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
    })
}

/// The streaming members and the leader, as a member lists them.
fn members() -> Vec<String> {
    cluster_view()
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

/// site.yml's extra vars for this test's cluster, etcd and node root.
fn site_vars(cluster: &str, root: &Path, etcd: &Etcd) -> Vec<String> {
    vec![
        "-e".to_string(),
        format!("pgherd_repo={}", repo_root().display()),
        "-e".to_string(),
        format!("pg_cluster={cluster} pg_instance=core"),
        "-e".to_string(),
        format!("pgherd_local_root={}", root.display()),
        "-e".to_string(),
        format!("{{\"pgherd_etcd_hosts\": [\"{}\"]}}", etcd.client_addr),
    ]
}

/// The rows of the table the test writes before a loss, read on `node`.
fn rows_on(root: &Path, node: &str) -> String {
    psql(
        &root.join(format!("{node}/run")),
        "select count(*) || ':' || sum(n) from kept",
    )
    .unwrap_or_else(|e| e)
}

/// The system identifier of `node`'s data.
fn identifier(root: &Path, node: &str) -> String {
    psql(
        &root.join(format!("{node}/run")),
        "select system_identifier from pg_control_system()",
    )
    .unwrap_or_else(|e| e)
}

/// site.yml run on `inventory` (it must succeed), its time printed as
/// what it did.
fn site_run(dir: &Path, inventory: &Path, vars: &[&str], what: &str) -> PlaybookRun {
    let started = Instant::now();
    let run = ansible_playbook(
        dir,
        &repo_root().join("playbooks/site.yml"),
        inventory,
        vars,
    );
    ok(&run, what);
    eprintln!("shape: {what} in {:.1} s", started.elapsed().as_secs_f64());
    run
}

/// `node` back as a streaming member of the cluster `cluster_id` names,
/// with every row written before the loss.
fn streams_whole(root: &Path, node: &str, cluster_id: &str) {
    wait_for(
        &format!("{node} streaming"),
        Duration::from_secs(30),
        || members().contains(&node.to_string()).then_some(()),
        || format!("{:?}", cluster_view()),
    );
    assert_eq!(identifier(root, node), cluster_id);
    assert_eq!(rows_on(root, node), "1000:500500");
}

/// db1, db2 and db3 deployed, a leader and two streaming replicas: their
/// inventory.
fn deploy_three(dir: &Path, vars: &[&str]) -> PathBuf {
    let three = inventory(dir, &["db2", "db3"]);
    site_run(dir, &three, vars, "the deployment of three");
    wait_for(
        "a leader and two streaming replicas",
        Duration::from_secs(60),
        || (members().len() == 3).then_some(()),
        || format!("{:?}", members()),
    );
    three
}

/// The leader's name, as a member lists it.
fn leader_name() -> Option<String> {
    cluster_view().and_then(|v| {
        v["members"].as_array().and_then(|m| {
            m.iter()
                .find(|m| m["role"] == "leader")
                .and_then(|m| m["name"].as_str().map(str::to_string))
        })
    })
}

#[test]
fn a_node_added_cloned_from_a_replica_and_one_removed_through_site_yml() {
    let (dir, root, _reaper) = local_nodes_test("shape", &ADDRESSES);
    let etcd = Etcd::start(&dir.path, 25_379, 25_380);
    let site = repo_root().join("playbooks/site.yml");
    let vars = site_vars("orders", &root, &etcd);
    let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
    deploy_three(&dir.path, &vars);

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
        "127.0.0.1,127.0.0.11,127.0.0.12,127.0.0.13,127.0.0.14,::1"
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
        "127.0.0.1,127.0.0.11,127.0.0.12,127.0.0.14,::1"
    );
    assert_eq!(members().len(), 3, "{:?}", members());
}

#[test]
fn a_lost_host_is_rebuilt_under_its_name_or_replaced_by_a_new_one() {
    let (dir, root, _reaper) = local_nodes_test("replace", &ADDRESSES);
    let etcd = Etcd::start(&dir.path, 25_389, 25_390);
    let site = repo_root().join("playbooks/site.yml");
    let vars = site_vars("ledger", &root, &etcd);
    let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
    let three = deploy_three(&dir.path, &vars);
    psql(
        &root.join("db1/run"),
        "create table kept (n int); insert into kept select generate_series(1, 1000)",
    )
    .unwrap();
    let cluster_id = identifier(&root, "db1");

    // db3's host lost with its data, then the same inventory run again:
    // db3 is rebuilt from the others under its name and streams, with
    // everything written before the loss.
    lose_node(&root, "db3", "127.0.0.13");
    let rebuilt = site_run(&dir.path, &three, &vars, "db3 rebuilt under its name");
    let instance_changed: Vec<&str> = rebuilt
        .events_of("PostgreSQL instance managed by Patroni")
        .iter()
        .filter(|e| e.changed())
        .map(|e| e.host.as_str())
        .collect();
    assert_eq!(instance_changed, ["db3"], "{}", rebuilt.transcript());
    streams_whole(&root, "db3", &cluster_id);
    let again = ansible_playbook(&dir.path, &site, &three, &vars);
    ok(&again, "the run after the rebuild");
    assert!(again.changed_tasks().is_empty(), "{}", again.transcript());

    // db3 lost again, and replaced by db4 (a new host, a new name): db4
    // joins, db3's address leaves the others' pg_hba, and db3's member
    // key goes when its lease ends (no process renews it).
    lose_node(&root, "db3", "127.0.0.13");
    let with_db4 = inventory(&dir.path, &["db2", "db4"]);
    site_run(&dir.path, &with_db4, &vars, "db4 replaced db3");
    streams_whole(&root, "db4", &cluster_id);
    assert_eq!(
        replication_from(&root),
        "127.0.0.1,127.0.0.11,127.0.0.12,127.0.0.14,::1"
    );
    // The inventory's ttl (20 s) and a loop of Patroni's.
    let listed = |name: &str| {
        cluster_view().is_some_and(|v| {
            v["members"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["name"] == name))
        })
    };
    wait_for(
        "db3's member key gone",
        Duration::from_secs(40),
        || (!listed("db3") && listed("db1")).then_some(()),
        || format!("{:?}", cluster_view()),
    );
    assert_eq!(members().len(), 3, "{:?}", members());

    // The leader's host lost: Patroni fails over; the same inventory run
    // again rebuilds db1 (still the inventory's primary) as a replica of
    // the new leader.
    lose_node(&root, "db1", "127.0.0.11");
    let leader = wait_for(
        "a new leader",
        Duration::from_secs(60),
        || leader_name().filter(|l| l != "db1"),
        || format!("{:?}", cluster_view()),
    );
    site_run(
        &dir.path,
        &with_db4,
        &vars,
        &format!("db1 (the lost leader) rebuilt as a replica of {leader}"),
    );
    streams_whole(&root, "db1", &cluster_id);
    assert_eq!(
        leader_name(),
        Some(leader),
        "the rebuild moved the leadership"
    );
}
