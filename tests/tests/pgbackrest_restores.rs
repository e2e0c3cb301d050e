//! Restores to points in time around the backups: before every backup
//! (refused before any member stops), between two backups (the older one
//! is used, and the replicas, built again, follow the restored timeline),
//! a repository changed under a stanza (refused, naming both paths), and a
//! backup found on its leader's host when the settings name literal paths.

use std::path::Path;
use std::time::Duration;

use pgherd_e2e::{
    ansible_playbook, local_instance_args, local_nodes_test, local_settings, postmaster_start,
    psql, repo_root, run_module, wait_for, wait_kept_rows as wait_rows, with_options, Etcd,
};
use serde_json::json;

const STANZA: &str = "ledger-archive";

/// Now, as PostgreSQL tells it, in ISO 8601 with an offset.
fn now(socket: &Path) -> String {
    psql(
        socket,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00:00'",
    )
    .unwrap()
}

/// Switches to a new WAL segment and waits until it is archived.
fn archive_now(socket: &Path) {
    let segment = psql(socket, "SELECT pg_walfile_name(pg_switch_wal())").unwrap();
    wait_for(
        "the WAL to reach the repository",
        Duration::from_secs(30),
        || {
            psql(socket, "SELECT last_archived_wal FROM pg_stat_archiver")
                .ok()
                .filter(|last| *last >= segment)
        },
        || format!("{:?}", psql(socket, "SELECT * FROM pg_stat_archiver")),
    );
}

#[test]
fn restores_before_between_and_after_backups() {
    let nodes = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];
    let (dir, root, _reaper) = local_nodes_test("pgbackrest-pitr", &nodes);
    let etcd = Etcd::start(&dir.path, 25_579, 25_580);
    let vars = json!({
        "pgherd_local_root": root,
        "pgherd_etcd_hosts": [etcd.client_addr],
        "pgbackrest_stanza": STANZA,
        "pg_cluster": "ledger",
    })
    .to_string();
    let inventory = repo_root().join("playbooks/inventories/local");
    let play = |name: &str, extra: &[&str]| {
        let mut args = vec!["-e", vars.as_str()];
        args.extend_from_slice(extra);
        ansible_playbook(
            &dir.path,
            &repo_root().join("playbooks").join(name),
            &inventory,
            &args,
        )
    };
    let pg1 = root.join("pg1/run");

    play("site.yml", &["--limit", "pg1"]).assert_ok("deploying pg1");
    psql(
        &pg1,
        "CREATE TABLE kept(x int); INSERT INTO kept VALUES (1)",
    )
    .unwrap();
    let before_all = now(&pg1);
    play("backup.yml", &["--limit", "pg1"]).assert_ok("backup B1");
    play("site.yml", &[]).assert_ok("deploying the replicas");
    psql(&pg1, "INSERT INTO kept VALUES (2)").unwrap();
    let between = now(&pg1);
    psql(&pg1, "INSERT INTO kept VALUES (3)").unwrap();
    play("backup.yml", &[]).assert_ok("backup B2");
    psql(&pg1, "INSERT INTO kept VALUES (4)").unwrap();
    archive_now(&pg1);
    wait_rows(&root, "pg3", "1,2,3,4");

    // Before every backup: refused by the check the playbook runs first,
    // naming the oldest backup; no member was stopped.
    let starts: Vec<Option<String>> = nodes
        .iter()
        .map(|n| postmaster_start(&format!("{n}:8008")))
        .collect();
    assert!(starts.iter().all(Option::is_some), "{starts:?}");
    let target = format!("restore_target={before_all}");
    let refused = play("restore.yml", &["-e", "restore_from=pg3", "-e", &target]);
    assert!(!refused.succeeded(), "{}", refused.transcript());
    let failed = refused.failed_tasks();
    let msg = failed[0].result["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("is before the end of the oldest backup of stanza ledger-archive"),
        "{msg}"
    );
    assert!(
        refused
            .events_of("PostgreSQL instance managed by Patroni")
            .iter()
            .all(|e| !e.changed()),
        "{}",
        refused.transcript()
    );
    let after: Vec<Option<String>> = nodes
        .iter()
        .map(|n| postmaster_start(&format!("{n}:8008")))
        .collect();
    assert_eq!(starts, after, "a member was stopped");
    wait_rows(&root, "pg2", "1,2,3,4");

    // Between the two backups: the older backup is restored, a backup is
    // taken on the new timeline, and the replicas built again follow it.
    let target = format!("restore_target={between}");
    let restored = play("restore.yml", &["-e", "restore_from=pg3", "-e", &target]);
    restored.assert_ok("the restore between the backups");
    let chosen: String = restored
        .events
        .iter()
        .filter(|e| e.host == "pg3" && e.changed())
        .map(|e| e.result["changes"].to_string())
        .collect();
    assert!(
        chosen.contains("take a full backup of stanza ledger-archive once 15-main (pg3) leads"),
        "{chosen}"
    );
    for node in ["pg1", "pg2", "pg3"] {
        wait_rows(&root, node, "1,2");
    }
    let info = restored.events_of("Read the restored cluster")[0].result["cluster"].clone();
    let streaming = info["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["state"] == "streaming")
        .count();
    assert_eq!(
        (info["leader"].as_str(), streaming),
        (Some("pg3"), 2),
        "{info}"
    );

    // The repository moved under the stanza: refused, naming both paths.
    let moved = json!({"pgherd_settings_extra": {"pgbackrest": {"repository": {"path": root.join("elsewhere")}}}})
        .to_string();
    let config = std::fs::read(root.join("pg3/etc/15-main.yaml")).unwrap();
    let refused = play("site.yml", &["--limit", "pg3", "-e", &moved]);
    assert!(!refused.succeeded(), "{}", refused.transcript());
    let msg = refused.failed_tasks()[0].result["msg"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains(&format!(
            "the instance archives to the repository {}",
            root.join("pgbackrest").display()
        )) && msg.contains(&root.join("elsewhere").display().to_string())
            && msg.contains("new_repository"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(root.join("pg3/etc/15-main.yaml")).unwrap(),
        config
    );
    assert!(!root.join("elsewhere").exists());
}

#[test]
fn a_backup_finds_its_leader_when_the_settings_name_literal_paths() {
    let (dir, root, _reaper) = local_nodes_test("pgbackrest-literal", &["127.0.0.12"]);
    let etcd = Etcd::start(&dir.path, 25_679, 25_680);
    let node = root.join("db");
    let r = node.display();
    let mut settings = local_settings(&node, std::slice::from_ref(&etcd.client_addr));
    settings["patroni"]["configpath"] = json!(format!("{r}/etc/patroni.yml"));
    settings["postgresql"]["datadir"] = json!(format!("{r}/pgdata"));
    settings["pgbackrest"] = json!({
        "configpath": format!("{r}/etc/pgbackrest.conf"),
        "logpath": format!("{r}/log/pgbackrest"),
        "repository": {"path": format!("{r}/repo")},
    });
    let args = with_options(
        local_instance_args(2, "solo", &settings),
        json!({"pgbackrest": {"stanza": "solo"}}),
    );
    let up = run_module(&dir.path, "instance", &args);
    assert!(!up.failed(), "{up:?}");
    let backup = run_module(
        &dir.path,
        "patroni",
        &json!({"cluster": "solo", "settings": settings, "backup": "full"}),
    );
    assert!(!backup.failed() && backup.changed(), "{backup:?}");
    assert_eq!(backup.result["backup"]["type"], "full", "{backup:?}");
}
