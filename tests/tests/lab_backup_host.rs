//! Backups that survive the loss of the database hosts: bare lab hosts
//! taken by playbooks/bootstrap.yml to a secured two-member cluster whose
//! pgBackRest repository is on a host of its own (lab4, over TLS with
//! client certificates), etcd on three other hosts (lab3-5). Backups on
//! the repository host's schedule (its timers' services) and through
//! backup.yml; archiving to a stopped repository host warned about on the
//! next run; then both database hosts lost at once, and the cluster
//! restored to a point in time onto two hosts that never ran it, every
//! row checked.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgherd_e2e::{lab_ids, lab_sh, lab_sql, repo_root, wait_for, Lab, PlaybookRun, TestDir};

const ETCD_ROOT_PW: &str = "Lab-Etcd-Root-7q";
const ETCD_PATRONI_PW: &str = "Lab-Etcd-Ptr-3w";
const STANZA: &str = "orders";
const REPO_HOST: &str = "lab4";
/// The repository host's server, on a port of its own (the members' stay
/// on 8432).
const REPO_PORT: u16 = 8433;

/// The inventory's hosts: `primary` and `replica` the database members,
/// etcd on lab3-5, the repository host lab4.
fn hosts_yml(primary: &str, replica: &str) -> String {
    let host = |h: &str| format!("        {h}:\n          ansible_host: {}\n", Lab::addr(h));
    format!(
        "all:\n  children:\n    primary:\n      hosts:\n{}    replica:\n      hosts:\n{}\
         \x20   etcd:\n      hosts:\n{}{}{}    pgbackrest_repo:\n      hosts:\n{}",
        host(primary),
        host(replica),
        host("lab3"),
        host("lab4"),
        host("lab5"),
        host(REPO_HOST),
    )
}

/// `SELECT` on `host` over the lab's network, or "" when it does not
/// answer.
fn sql(host: &str, statement: &str) -> String {
    lab_sql(&format!("host={}", Lab::addr(host)), false, statement).unwrap_or_default()
}

fn story() -> String {
    ["lab1", "lab2", "lab3", "lab5"]
        .iter()
        .map(|h| {
            format!(
                "{h}: in recovery {:?}",
                sql(h, "SELECT pg_is_in_recovery()")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Waits until `leader` takes writes and `replica` streams from it.
fn wait_streaming(leader: &str, replica: &str, what: &str) {
    wait_for(
        what,
        Duration::from_secs(90),
        || {
            (sql(
                leader,
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            ) == "1"
                && sql(replica, "SELECT pg_is_in_recovery()") == "t")
                .then_some(())
        },
        story,
    );
}

/// Waits until the leader's current WAL segment, switched, is archived.
fn archive_now(leader: &str) {
    let segment = sql(leader, "SELECT pg_walfile_name(pg_switch_wal())");
    assert!(!segment.is_empty(), "a WAL switch on {leader}");
    wait_for(
        &format!("segment {segment} archived from {leader}"),
        Duration::from_secs(60),
        || {
            let last = sql(
                leader,
                "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
            );
            (last.as_str() >= segment.as_str()).then_some(())
        },
        || sql(leader, "SELECT * FROM pg_stat_archiver"),
    );
}

/// `pgbackrest info` of the stanza on the repository host, as JSON.
fn repository_info(lab: &Lab) -> serde_json::Value {
    let out = lab
        .ssh(
            REPO_HOST,
            &format!("sudo -u postgres pgbackrest --stanza={STANZA} --output=json info"),
        )
        .unwrap();
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

fn backup_types(lab: &Lab) -> Vec<String> {
    repository_info(lab)["backup"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|b| b["type"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A write on `host` (read-write), which must succeed.
fn write(host: &str, statement: &str) {
    lab_sql(&format!("host={}", Lab::addr(host)), true, statement)
        .unwrap_or_else(|| panic!("{statement} on {host}"));
}

/// A playbook of the repository on the test's inventory.
type Playbook<'a> = &'a dyn Fn(&str, &[&str]) -> PlaybookRun;

/// The secured inventory in `dir`, with the repository host on a port of
/// its own, the stanza, an operator's schedule and retention, metrics on.
fn inventory(dir: &Path) -> PathBuf {
    let inventory = Lab::secured_inventory(dir, ETCD_PATRONI_PW, ETCD_ROOT_PW);
    let vars_path = inventory.join("group_vars/all.yml");
    let mut vars: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&vars_path).unwrap()).unwrap();
    let tls = "/etc/pgherd/tls";
    vars["pgherd_settings"]["pgbackrest"] = serde_yaml::from_str(&format!(
        "repository:\n  path: /srv/backups\n  host:\n    name: {REPO_HOST}\n    port: {REPO_PORT}\n    \
         cafile: {tls}/ca.pem\n    certfile: {tls}/server.pem\n    keyfile: {tls}/server.key\n\
         global_options:\n  io-timeout: '10'\n"
    ))
    .unwrap();
    vars["pgbackrest_stanza"] = STANZA.into();
    // A schedule of the operator's own: weekly full, daily differential,
    // and expiry apart.
    vars["pgbackrest_repo_schedule"] = serde_yaml::from_str(
        "full: 'Sat *-*-* 02:30:00'\ndiff: 'Sun,Mon..Fri *-*-* 02:30:00'\nincr: ''\n",
    )
    .unwrap();
    vars["pgbackrest_repo_retention_full"] = 3.into();
    vars["pgbackrest_repo_metrics"] = true.into();
    std::fs::write(&vars_path, serde_yaml::to_string(&vars).unwrap()).unwrap();
    std::fs::write(inventory.join("hosts.yml"), hosts_yml("lab1", "lab2")).unwrap();
    inventory
}

/// The repository host's timers, each with its next run (none for the
/// emptied schedule), and what the full backup's timer starts, started
/// now; its metrics then, from node exporter over the lab's network (as a
/// Prometheus scrapes them).
fn a_scheduled_backup(lab: &Lab) {
    let timers = lab
        .ssh(
            REPO_HOST,
            "systemctl list-timers --all --no-legend 'pgbackrest-*'",
        )
        .unwrap();
    for kind in ["full", "diff", "expire"] {
        assert!(
            timers
                .lines()
                .any(|l| l.contains(&format!("pgbackrest-{STANZA}-{kind}.timer"))
                    && !l.trim_start().starts_with("n/a")),
            "{kind}: {timers}"
        );
    }
    assert!(!timers.contains("-incr.timer"), "{timers}");
    lab.ssh(
        REPO_HOST,
        &format!("sudo systemctl start pgbackrest-{STANZA}-full.service"),
    )
    .unwrap();
    assert_eq!(backup_types(lab), ["full"]);
    let metrics = std::process::Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!("http://{}:9100/metrics", Lab::addr(REPO_HOST)))
        .output()
        .expect("curl");
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    for want in [
        format!(
            "pgbackrest_backup_last_end_timestamp_seconds{{stanza=\"{STANZA}\",type=\"full\"}}"
        ),
        format!("pgbackrest_wal_archive_last_timestamp_seconds{{stanza=\"{STANZA}\"}}"),
        format!("pgbackrest_stanza_status_code{{stanza=\"{STANZA}\"}} 0"),
    ] {
        assert!(
            metrics.contains(&want),
            "{want}: {}",
            metrics
                .lines()
                .filter(|l| l.contains("pgbackrest"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Rows before a target time (an incremental backup through backup.yml
/// among them, taken by the repository host alone), rows added and
/// deleted after it, the WAL archived: the target.
fn rows_around_a_target(lab: &Lab, playbook: Playbook<'_>) -> String {
    write(
        "lab1",
        "CREATE TABLE kept (id bigint PRIMARY KEY); \
         INSERT INTO kept SELECT generate_series(1, 500)",
    );
    let incr = playbook("backup.yml", &["-e", "backup_type=incr"]);
    incr.assert_ok("backup.yml");
    let took: Vec<&str> = incr
        .changed_tasks()
        .iter()
        .map(|e| e.host.as_str())
        .collect();
    assert_eq!(took, [REPO_HOST], "{}", incr.transcript());
    assert_eq!(backup_types(lab), ["full", "incr"]);
    write("lab1", "INSERT INTO kept SELECT generate_series(501, 700)");
    let target = sql(
        "lab1",
        "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')",
    );
    wait_for(
        "a second past the target",
        Duration::from_secs(5),
        || {
            (sql(
                "lab1",
                &format!("SELECT now() > '{target}'::timestamptz + interval '1 second'"),
            ) == "t")
                .then_some(())
        },
        String::new,
    );
    write(
        "lab1",
        "INSERT INTO kept SELECT generate_series(701, 800); DELETE FROM kept WHERE id <= 100",
    );
    archive_now("lab1");
    target
}

/// The repository host's server stopped: archiving fails, and the next
/// run on the leader says so; started again by site.yml, the archive
/// catches up.
fn archiving_to_a_stopped_repository_host(lab: &Lab, playbook: Playbook<'_>) {
    lab.ssh(REPO_HOST, "sudo systemctl stop pgbackrest")
        .unwrap();
    write(
        "lab1",
        "INSERT INTO kept VALUES (800001); SELECT pg_switch_wal()",
    );
    wait_for(
        "an archiving failure on lab1",
        // pgBackRest tries the repository host for io-timeout (10 s here).
        Duration::from_secs(90),
        || (sql("lab1", "SELECT failed_count > 0 FROM pg_stat_archiver") == "t").then_some(()),
        || sql("lab1", "SELECT * FROM pg_stat_archiver"),
    );
    let warned = playbook("site.yml", &["--limit", "lab1"]);
    warned.assert_ok("site.yml while archiving fails");
    let warnings = warned.events_of("PostgreSQL instance managed by Patroni")[0].result["warnings"]
        .to_string();
    assert!(warnings.contains("archiv"), "{}", warned.transcript());
    let restarted = playbook("site.yml", &["--limit", REPO_HOST]);
    restarted.assert_ok("site.yml starting the repository host's server again");
    archive_now("lab1");
}

/// New hosts in the lost ones' place (lab3 and lab5, etcd's): deployed
/// stopped, the repository host letting them in, then the restore to the
/// target; both hold exactly the rows as of the target.
fn restore_onto_new_hosts(inventory: &Path, target: &str, playbook: Playbook<'_>) {
    std::fs::write(inventory.join("hosts.yml"), hosts_yml("lab3", "lab5")).unwrap();
    let started = Instant::now();
    playbook("bootstrap.yml", &["-e", "pg_state=stopped"]).assert_ok("the new hosts, stopped");
    let restore = playbook(
        "restore.yml",
        &[
            "-e",
            "restore_from=lab3",
            "-e",
            &format!("restore_target={target}"),
        ],
    );
    restore.assert_ok("the restore onto the new hosts");
    eprintln!(
        "lab: new hosts deployed and the cluster restored onto them in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    wait_streaming("lab3", "lab5", "lab5 streaming from the restored lab3");
    let want: std::collections::BTreeSet<u64> = (1..=700).collect();
    for host in ["lab3", "lab5"] {
        wait_for(
            &format!("the rows as of the target on {host}"),
            Duration::from_secs(30),
            || (lab_ids(&format!("host={}", Lab::addr(host)), "kept") == want).then_some(()),
            story,
        );
    }
}

#[test]
fn backups_on_a_repository_host_restore_the_cluster_onto_new_hosts() {
    let dir = TestDir::new("lab-backup-host");
    let lab = Lab::up_bare(5);
    let inventory = inventory(&dir.path);
    let playbook = |name: &str, extra: &[&str]| -> PlaybookRun {
        pgherd_e2e::ansible_playbook(
            &dir.path,
            &repo_root().join("playbooks").join(name),
            &inventory,
            extra,
        )
    };

    let started = Instant::now();
    playbook("bootstrap.yml", &[]).assert_ok("bare hosts to a cluster with a repository host");
    eprintln!(
        "lab: bare hosts to a cluster with a repository host in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    wait_streaming("lab1", "lab2", "lab2 streaming from lab1");
    a_scheduled_backup(&lab);
    let target = rows_around_a_target(&lab, &playbook);
    archiving_to_a_stopped_repository_host(&lab, &playbook);

    // Both database hosts lost at once, the cluster restored elsewhere.
    lab_sh(&["crash", "lab1", "lab2"]);
    restore_onto_new_hosts(&inventory, &target, &playbook);

    // The restored cluster takes writes, and the repository host backs it
    // up on its new timeline.
    write("lab3", "INSERT INTO kept VALUES (9001)");
    playbook("backup.yml", &["-e", "backup_type=incr"])
        .assert_ok("a backup of the restored cluster");
    assert_eq!(
        backup_types(&lab),
        ["full", "incr", "incr"],
        "the repository holds the restored cluster's backup"
    );
    // Nothing left to do, as check mode and a run both say.
    for extra in [&["--check"][..], &[]] {
        let settled = playbook("site.yml", extra);
        settled.assert_ok("site.yml on the restored cluster");
        assert_eq!(settled.changed_tasks().len(), 0, "{}", settled.transcript());
    }
    drop(lab);
}
