//! The instance module outside the happy path of site.yml: run as the
//! postgres user through `become`, a wait that runs out, and a new node
//! facing the stale state of a removed cluster.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use pgherd_e2e::{
    ansible_playbook, assert_reaped_by_pgherd, http_get, local_instance_args, local_nodes_test,
    local_settings, pids_mentioning, repo_root, run_module, uid_of, wait_for, with_options, Etcd,
};
use serde_json::json;

#[test]
fn runs_as_the_postgres_user_through_become() {
    let (dir, root, _reaper) = local_nodes_test("as-postgres", &["127.0.0.11", "127.0.0.12"]);
    let etcd = Etcd::start(&dir.path, 24_479, 24_480);
    // As postgres, the module can only write where postgres may.
    let node_root = root.join("pg1");
    std::fs::create_dir_all(&node_root).unwrap();
    let postgres = uid_of("postgres");
    for d in [&root, &node_root] {
        std::os::unix::fs::chown(d, Some(postgres), Some(postgres)).unwrap();
    }
    let inventory = repo_root().join("playbooks/inventories/local");
    let playbook = repo_root().join("tests/playbooks/instance_as_postgres.yml");
    let vars = [
        "-e".to_string(),
        format!("pgherd_local_root={}", root.display()),
        "-e".to_string(),
        format!("{{\"pgherd_etcd_hosts\": [\"{}\"]}}", etcd.client_addr),
        "-l".to_string(),
        "pg1".to_string(),
    ];
    let args: Vec<&str> = vars.iter().map(String::as_str).collect();

    let run = ansible_playbook(&dir.path, &playbook, &inventory, &args);
    assert!(run.succeeded(), "{}", run.transcript());
    let (status, body) = http_get("127.0.0.11:8008", "/patroni").expect("pg1's REST API answers");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"role\": \"primary\""), "{body}");
    // Patroni and the files belong to postgres.
    let pid: i32 = std::fs::read_to_string(node_root.join("run/patroni-15-main.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let proc_uid = std::fs::metadata(format!("/proc/{pid}")).unwrap().uid();
    assert_eq!(proc_uid, postgres, "Patroni does not run as postgres");
    // The module itself runs as postgres: so does the reaper it starts.
    assert_reaped_by_pgherd(&node_root, "15", "main");
    let config = std::fs::metadata(node_root.join("etc/15-main.yaml")).unwrap();
    assert_eq!(config.uid(), postgres);

    let again = ansible_playbook(&dir.path, &playbook, &inventory, &args);
    assert!(again.succeeded(), "{}", again.transcript());
    assert!(again.changed_tasks().is_empty(), "{}", again.transcript());

    let mut absent = args.clone();
    absent.extend(["-e", "pg_state=absent"]);
    let removed = ansible_playbook(&dir.path, &playbook, &inventory, &absent);
    assert!(removed.succeeded(), "{}", removed.transcript());
    assert!(!node_root.join("data/15/main").exists());
    assert!(pids_mentioning(&root.display().to_string()).is_empty());
}

#[test]
fn a_wait_that_runs_out_says_what_it_saw() {
    let (dir, root, _reaper) = local_nodes_test("timeout", &["127.0.0.11", "127.0.0.12"]);
    let etcd = Etcd::start(&dir.path, 24_579, 24_580);
    let inventory = repo_root().join("playbooks/inventories/local");
    let site = repo_root().join("playbooks/site.yml");
    let common = [
        "-e".to_string(),
        format!("pgherd_local_root={}", root.display()),
        "-e".to_string(),
        format!("{{\"pgherd_etcd_hosts\": [\"{}\"]}}", etcd.client_addr),
        "-e".to_string(),
        "pg_cluster=timeout".to_string(),
    ];
    let run = |extra: &[&str]| {
        let mut args: Vec<&str> = common.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        ansible_playbook(&dir.path, &site, &inventory, &args)
    };

    // A one-node cluster, then its only member stopped: the cluster is
    // initialised in etcd but has no leader to clone from.
    let boot = run(&["-l", "pg1"]);
    assert!(boot.succeeded(), "{}", boot.transcript());
    let stop = run(&["-l", "pg1", "-e", "pg_state=stopped"]);
    assert!(stop.succeeded(), "{}", stop.transcript());

    let stuck = run(&["-l", "pg2", "-e", "pg_wait_timeout=6"]);
    assert!(
        !stuck.succeeded(),
        "pg2 cannot clone without a leader:\n{}",
        stuck.transcript()
    );
    let failed = stuck.failed_tasks();
    assert_eq!(failed.len(), 1, "{}", stuck.transcript());
    let msg = failed[0].result["msg"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("timed out after 6s waiting for instance 15-main (pg2)"),
        "{msg}"
    );
    assert!(
        msg.contains("last seen: Patroni reports role"),
        "the last Patroni state: {msg}"
    );
    assert!(
        msg.contains("patroni.log:"),
        "a tail of Patroni's log: {msg}"
    );
    assert!(msg.contains("leader"), "the log says why: {msg}");
    // Files were written and Patroni started before the wait ran out: the
    // task says so (changed and failed) instead of hiding it.
    assert_eq!(failed[0].result["changed"], true, "{}", stuck.transcript());
    let changes = failed[0].result["changes"].to_string();
    assert!(
        changes.contains("start Patroni (15-main (pg2))") && changes.contains("15-main.yaml"),
        "{changes}"
    );
    assert!(msg.contains("Done before this failure: "), "{msg}");

    // The leader comes back: the same task now converges.
    let back = run(&["-l", "pg1"]);
    assert!(back.succeeded(), "{}", back.transcript());
    let joined = run(&["-l", "pg2"]);
    assert!(joined.succeeded(), "{}", joined.transcript());
    wait_for(
        "pg2 streaming",
        Duration::from_secs(30),
        || {
            http_get("127.0.0.12:8008", "/patroni")
                .filter(|(_, b)| b.contains("\"streaming\""))
                .map(|_| ())
        },
        || format!("{:?}", http_get("127.0.0.12:8008", "/patroni")),
    );
    let down = ansible_playbook(
        &dir.path,
        &repo_root().join("playbooks/teardown.yml"),
        &inventory,
        &{
            let mut a: Vec<&str> = common.iter().map(String::as_str).collect();
            a.extend(["-l", "pg1,pg2"]);
            a
        },
    );
    assert!(down.succeeded(), "{}", down.transcript());
}

#[test]
fn a_new_node_facing_a_removed_clusters_state_fails_early_and_says_how_to_clear_it() {
    let (dir, root, _reaper) = local_nodes_test("orphan", &["127.0.0.11"]);
    let etcd = Etcd::start(&dir.path, 24_679, 24_680);
    let hosts = vec![etcd.client_addr.clone()];
    // What a cluster whose nodes were deleted leaves behind: its initialize
    // and config keys (members and leader expire with their leases).
    let sysid = "7710914764009116298";
    etcd.etcdctl(None, &["put", "/service/orphan/initialize", sysid])
        .unwrap();
    etcd.etcdctl(None, &["put", "/service/orphan/config", "{}"])
        .unwrap();
    let args = with_options(
        local_instance_args(1, "orphan", &local_settings(&root.join("pg1"), &hosts)),
        json!({"wait_timeout": 240}),
    );

    // Patroni would wait "for leader to bootstrap" until the deadline; the
    // module gives up after a ttl (20 s) and says why and what to do.
    let stuck = run_module(&dir.path, "instance", &args);
    assert!(stuck.failed() && stuck.code == Some(1), "{stuck:?}");
    let msg = stuck.msg();
    assert!(!msg.starts_with("timed out"), "{msg}");
    assert!(
        msg.contains("no leader and no other member")
            && msg.contains(&format!("system_identifier: {sysid}")),
        "{msg}"
    );
    // The files it wrote are reported; the Patroni it started is stopped
    // again, so that the state can be removed.
    assert_eq!(stuck.result["changed"], true, "{stuck:?}");
    assert!(
        !stuck.result["changes"]
            .to_string()
            .contains("start Patroni"),
        "{stuck:?}"
    );
    assert!(pids_mentioning(&root.join("pg1/etc").display().to_string()).is_empty());

    // The remedy the message names works: remove the state, run again.
    let removed = run_module(
        &dir.path,
        "patroni",
        &json!({
            "cluster": "orphan", "state": "absent", "system_identifier": sysid,
            "settings": {"patroni": {"etcd": {"hosts": hosts}}},
        }),
    );
    assert!(!removed.failed() && removed.changed(), "{removed:?}");
    // A cluster with nothing left reads as empty, so that a teardown that
    // reads it first can run again.
    let empty = run_module(
        &dir.path,
        "patroni",
        &json!({"cluster": "orphan", "state": "info",
                "settings": {"patroni": {"etcd": {"hosts": hosts}}}}),
    );
    assert!(!empty.failed(), "{empty:?}");
    assert_eq!(empty.result["cluster"]["members"], json!([]), "{empty:?}");
    assert_eq!(empty.result["cluster"]["system_identifier"], json!(null));
    assert!(
        empty
            .warnings_text()
            .contains("etcd holds nothing of cluster orphan"),
        "{empty:?}"
    );
    let leader = run_module(&dir.path, "instance", &args);
    assert!(!leader.failed(), "{leader:?}");
    assert_eq!(leader.result["instance"]["role"], "primary", "{leader:?}");
}
