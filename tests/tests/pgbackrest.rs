//! Backups with pgBackRest on a real 3-node cluster, deployed and operated
//! through the playbooks with a stanza and a repository under the test
//! directory: the stanza made on the leader, a replica built from a backup
//! (Patroni's log says so), a backup taken wherever the leader runs, and a
//! cluster restored to a time before a deletion, whole again afterwards.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::process::Command;

use pgherd_e2e::{
    local_nodes_test, pgherd_bin, psql, repo_root, wait_for, wait_kept_rows, Etcd, LocalRun,
    TaskEvent,
};
use serde_json::{json, Value};

const STANZA: &str = "pgherd-test";

fn patroni_log(root: &Path, node: &str) -> String {
    std::fs::read_to_string(root.join(node).join("log/patroni-15-main/patroni.log"))
        .unwrap_or_default()
}

/// The member Patroni's REST API calls leader, and how many stream.
fn leader_and_streaming(info: &Value) -> (String, usize) {
    let members = info["members"].as_array().cloned().unwrap_or_default();
    let leader = members
        .iter()
        .find(|m| m["role"] == "leader" && m["state"] == "running")
        .and_then(|m| m["name"].as_str())
        .unwrap_or_default()
        .to_string();
    let streaming = members.iter().filter(|m| m["state"] == "streaming").count();
    (leader, streaming)
}

#[test]
fn a_cluster_is_backed_up_and_restored_with_pgbackrest() {
    let (dir, root, _reaper) =
        local_nodes_test("pgbackrest", &["127.0.0.11", "127.0.0.12", "127.0.0.13"]);
    let etcd = Etcd::start(&dir.path, 25_479, 25_480);
    let run = LocalRun {
        dir: &dir.path,
        vars: json!({
            "pgherd_local_root": root,
            "pgherd_etcd_hosts": [etcd.client_addr],
            "pgbackrest_stanza": STANZA,
        })
        .to_string(),
    };
    let repository: PathBuf = root.join("pgbackrest");

    // Check mode predicts the stanza of the node that will bootstrap, and
    // makes nothing.
    let predicted = run.repo_playbook("site.yml", &["--limit", "pg1", "--check"]);
    predicted.assert_ok("deploying pg1 in check mode");
    let changes = predicted.events_of("PostgreSQL instance managed by Patroni")[0].result
        ["changes"]
        .to_string();
    assert!(
        changes.contains(&format!("create pgBackRest stanza {STANZA}")),
        "{changes}"
    );
    assert!(!repository.exists());
    // The settings file the task keeps is foreseen, not written.
    let settings_file = root.join("pg1/settings.yaml");
    assert!(
        changes.contains(&format!("create {}", settings_file.display())),
        "{changes}"
    );
    assert!(!settings_file.exists());

    // The leader alone: the stanza is made and archiving checked.
    let leader = run.repo_playbook("site.yml", &["--limit", "pg1"]);
    pgherd_e2e::assert_stanza_made(&leader, &repository, STANZA);
    psql(
        &root.join("pg1/run"),
        "CREATE TABLE kept(x int); INSERT INTO kept VALUES (1), (2), (3)",
    )
    .unwrap();

    // A backup while only pg1 runs; then the replicas are built from it.
    let first = run.repo_playbook("backup.yml", &["--limit", "pg1"]);
    first.assert_ok("the first backup");
    let taken = first.events_of("Back up on the leader")[0].result.clone();
    assert_eq!(taken["changed"], true, "{taken}");
    assert_eq!(taken["backup"]["type"], "full", "{taken}");
    let whole = run.repo_playbook("site.yml", &[]);
    whole.assert_ok("deploying the replicas");
    for node in ["pg2", "pg3"] {
        let log = patroni_log(&root, node);
        assert!(
            log.contains("replica has been created using pgbackrest"),
            "{node}'s Patroni log:\n{log}"
        );
        wait_kept_rows(&root, node, "1,2,3");
    }
    let again = run.repo_playbook("site.yml", &[]);
    again.assert_ok("the second deployment");
    assert!(
        again.changed_tasks().is_empty(),
        "a second run changed: {:?}",
        again.changed_tasks()
    );

    // Archiving that fails is reported by the next run on the leader, and
    // not once it works again.
    let archive = repository.join("archive").join(STANZA);
    let pg1 = root.join("pg1/run");
    // A new segment, then until pg_stat_archiver says whether the last
    // attempt failed ("t") or not ("f").
    let switch_until = |table: &str, failing: &str| {
        psql(
            &pg1,
            &format!("CREATE TABLE {table}(); SELECT pg_switch_wal()"),
        )
        .unwrap();
        let archiver = || {
            psql(
                &pg1,
                "SELECT last_failed_time > coalesce(last_archived_time, '-infinity') \
                 FROM pg_stat_archiver",
            )
        };
        wait_for(
            &format!("pg1's archiver to report failing = {failing}"),
            Duration::from_secs(30),
            || archiver().ok().filter(|r| r == failing),
            || format!("{:?}", archiver()),
        );
    };
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o000)).unwrap();
    switch_until("switch1", "t");
    let noticed = run.repo_playbook("site.yml", &["--limit", "pg1"]);
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o750)).unwrap();
    noticed.assert_ok("a run while archiving fails");
    let warned = noticed.events_of("PostgreSQL instance managed by Patroni")[0].result["warnings"]
        .to_string();
    assert!(
        warned.contains(&format!(
            "WAL archiving of 15-main (pg1) to pgBackRest stanza {STANZA} fails"
        )),
        "{}",
        noticed.transcript()
    );
    // A new segment wakes the archiver, which sends both.
    switch_until("switch2", "f");
    let quiet = run.repo_playbook("site.yml", &["--limit", "pg1"]);
    quiet.assert_ok("a run once archiving works");
    assert!(
        !quiet.events_of("PostgreSQL instance managed by Patroni")[0].result["warnings"]
            .to_string()
            .contains("WAL archiving"),
        "{}",
        quiet.transcript()
    );

    // The leader moves; the backup follows it: pg2's host takes it.
    run.repo_playbook("switchover.yml", &["-e", "new_leader=pg2"])
        .assert_ok("the switchover");
    let second = run.repo_playbook("backup.yml", &[]);
    second.assert_ok("the backup after the switchover");
    let by_host: Vec<(String, bool, bool)> = second
        .events_of("Back up on the leader")
        .iter()
        .map(|e| (e.host.clone(), e.changed(), e.status == "skipped"))
        .collect();
    let mut sorted = by_host.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![
            ("pg1".to_string(), false, true),
            ("pg2".to_string(), true, false),
            ("pg3".to_string(), false, true),
        ],
        "{}",
        second.transcript()
    );
    let label = second
        .events_of("Back up on the leader")
        .iter()
        .find(|e| e.host == "pg2")
        .map(|e| e.result["backup"]["label"].as_str().unwrap().to_string())
        .unwrap();

    // A row written after the backup stays; a row deleted after the target
    // time comes back.
    let pg2 = root.join("pg2/run");
    psql(&pg2, "INSERT INTO kept VALUES (4)").unwrap();
    let target = psql(
        &pg2,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00:00'",
    )
    .unwrap();
    psql(&pg2, "DELETE FROM kept WHERE x = 2").unwrap();
    let segment = psql(&pg2, "SELECT pg_walfile_name(pg_switch_wal())").unwrap();
    wait_for(
        "the deletion's WAL to reach the repository",
        Duration::from_secs(30),
        || {
            psql(&pg2, "SELECT last_archived_wal FROM pg_stat_archiver")
                .ok()
                .filter(|last| *last >= segment)
        },
        || format!("{:?}", psql(&pg2, "SELECT * FROM pg_stat_archiver")),
    );
    wait_kept_rows(&root, "pg3", "1,3,4");

    // A restore while members run is refused, and changes nothing.
    let early = dir.join("restore-early.yml");
    std::fs::write(
        &early,
        json!([{
            "name": "Restore one member alone", "hosts": "pg3", "gather_facts": false,
            "tasks": [{
                "ansible.builtin.import_tasks": repo_root().join("playbooks/tasks/instance.yml"),
                "vars": {"pg_restore": {"from": "backup"}},
            }],
        }])
        .to_string(),
    )
    .unwrap();
    let refused = run.playbook(&early, &[]);
    assert!(!refused.succeeded(), "{}", refused.transcript());
    let msg = refused.failed_tasks()[0].result["msg"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains("still has live members (pg1, pg2)") && msg.contains("nothing was changed"),
        "{msg}"
    );
    wait_kept_rows(&root, "pg3", "1,3,4");

    // Check mode predicts the restore and changes nothing.
    let target_var = format!("restore_target={target}");
    let restore_vars = [
        "-e",
        "restore_from=pg3",
        "-e",
        target_var.as_str(),
        "-e",
        &format!("restore_set={label}"),
    ];
    let mut checked_args = restore_vars.to_vec();
    checked_args.push("--check");
    let checked = run.repo_playbook("restore.yml", &checked_args);
    checked.assert_ok("the restore in check mode");
    let predicted: Vec<String> = checked
        .events
        .iter()
        .filter(|e| e.host == "pg3")
        .map(|e| e.result["changes"].to_string())
        .collect();
    assert!(
        predicted
            .iter()
            .any(|c| c.contains(&format!("from backup {label} of stanza {STANZA}"))),
        "{}",
        checked.transcript()
    );
    wait_kept_rows(&root, "pg3", "1,3,4");
    wait_kept_rows(&root, "pg1", "1,3,4");

    // The restore: pg3, which never took a backup, leads the restored
    // cluster; pg1 and pg2 are copied again from it.
    let restored = run.repo_playbook("restore.yml", &restore_vars);
    restored.assert_ok("the restore");
    let info = restored.events_of("Read the restored cluster")[0].result["cluster"].clone();
    assert_eq!(
        leader_and_streaming(&info),
        ("pg3".to_string(), 2),
        "{info}"
    );
    for node in ["pg1", "pg2", "pg3"] {
        wait_kept_rows(&root, node, "1,2,3,4");
    }
    for node in ["pg1", "pg2"] {
        let log = patroni_log(&root, node);
        assert_eq!(
            log.matches("replica has been created using pgbackrest")
                .count(),
            if node == "pg2" { 2 } else { 1 },
            "{node}'s Patroni log:\n{log}"
        );
    }
    // The restored cluster is a cluster like any other: it takes writes,
    // archives, and backs up.
    psql(&root.join("pg3/run"), "INSERT INTO kept VALUES (5)").unwrap();
    wait_kept_rows(&root, "pg1", "1,2,3,4,5");
    let after = run.repo_playbook("backup.yml", &["-e", "backup_type=incr"]);
    after.assert_ok("a backup of the restored cluster");
    let taken: Vec<&TaskEvent> = after
        .events_of("Back up on the leader")
        .into_iter()
        .filter(|e| e.changed())
        .collect();
    assert_eq!(taken.len(), 1, "{}", after.transcript());
    assert_eq!(taken[0].host, "pg3");
    assert_eq!(taken[0].result["backup"]["type"], "incr");

    // The pgherd command takes one too, on the leader's host only.
    let pgherd = |node: &str| {
        Command::new(pgherd_bin())
            .arg("-s")
            .arg(root.join(node).join("settings.yaml"))
            .args(["-c", "pgherd-local", "backup", "--type", "diff"])
            .output()
            .unwrap()
    };
    let on_leader = pgherd("pg3");
    let said = String::from_utf8_lossy(&on_leader.stdout);
    assert!(
        on_leader.status.success()
            && said.contains(&format!(
                "take a diff backup of cluster pgherd-local on its leader pg3 (stanza {STANZA})"
            ))
            && said.contains("(diff):"),
        "{on_leader:?}"
    );
    let elsewhere = pgherd("pg1");
    let said = String::from_utf8_lossy(&elsewhere.stderr);
    assert!(
        elsewhere.status.code() == Some(1)
            && said.contains("the leader pg3")
            && said.contains("run pgherd backup on its host"),
        "{elsewhere:?}"
    );

    // The backups listed from a replica's host: the diff just taken is the
    // newest, a restore can reach back to the oldest's end, and the newest
    // WAL archived is named.
    let diff_label = String::from_utf8_lossy(&on_leader.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("backup ")?
                .split(' ')
                .next()
                .map(str::to_string)
        })
        .expect("the diff backup's label");
    let list = |json: bool| {
        let mut c = Command::new(pgherd_bin());
        c.arg("-s")
            .arg(root.join("pg1").join("settings.yaml"))
            .args(["-c", "pgherd-local", "backup", "--list"]);
        if json {
            c.arg("--json");
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed: Value = serde_json::from_str(&list(true)).unwrap();
    let backups = listed["backups"].as_array().unwrap();
    let newest = backups.last().unwrap();
    assert!(
        backups.len() >= 4
            && newest["label"] == diff_label.as_str()
            && newest["type"] == "diff"
            && listed["stanza"] == STANZA
            && listed["newest_backup_age"]
                .as_i64()
                .is_some_and(|a| a < 600)
            && listed["restorable_from"].as_str().is_some()
            && listed["wal_newest"].as_str().is_some_and(|w| w.len() == 24),
        "{listed}"
    );
    let text = list(false);
    assert!(
        text.contains(&diff_label)
            && text.contains("restorable from")
            && text.contains("the newest backup ended"),
        "{text}"
    );
}
