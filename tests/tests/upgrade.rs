//! A major upgrade, 15 to 17, of a 3-node cluster on the local machine
//! with playbooks/upgrade.yml (names, instance and cluster other than the
//! local inventory's): refused before anything stops while an extension
//! the new major lacks is installed; undone when pg_upgrade is killed
//! midway (the old cluster back, whole, its replicas streaming again);
//! then done, with every object written before (a table, an index, a
//! sequence, a large object) on every member, the new system identifier
//! in the DCS and on every member, and a second run changing nothing.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgherd_e2e::{
    ansible_playbook, cluster_view_from, local_inventory_with, local_nodes_test, member_roles,
    psql_at, repo_root, wait_for, Etcd,
};

const NODES: [(&str, &str); 3] = [
    ("up1", "127.0.0.11"),
    ("up2", "127.0.0.12"),
    ("up3", "127.0.0.13"),
];
const CLUSTER: &str = "ledger";
/// Ports other than the local inventory's: pg_upgrade's live check
/// reaches the old instance on its own.
const PG_PORT: u16 = 5433;
const API_PORT: u16 = 8018;

fn sql(root: &Path, node: &str, query: &str) -> Result<String, String> {
    psql_at(&root.join(format!("{node}/run")), PG_PORT, query)
}

/// `name: role/state` of each member, as the first that answers lists them.
fn roles() -> Vec<String> {
    let view = cluster_view_from(NODES.iter().map(|(_, a)| format!("{a}:{API_PORT}")));
    member_roles(view.as_ref(), true)
}

const WHOLE: [&str; 3] = [
    "up1: leader/running",
    "up2: replica/streaming",
    "up3: replica/streaming",
];

fn wait_whole(what: &str) {
    wait_for(
        what,
        Duration::from_secs(60),
        || (roles() == WHOLE).then_some(()),
        || format!("{:?}", roles()),
    );
}

/// What the test wrote before the upgrade, as `node` holds it: rows, an
/// index lookup, the large object. (The sequence is read on the leader: a
/// replica shows what was logged ahead of it.)
fn contents(root: &Path, node: &str) -> String {
    sql(
        root,
        node,
        "select (select count(*) || ':' || sum(id) from orders) || ' ' || \
         (select count(*) from orders where note = md5('500')) || ' ' || \
         (select indexrelid::regclass::text from pg_index where indrelid = 'orders'::regclass \
          and not indisprimary) || ' ' || \
         (select convert_from(lo_get(loid), 'UTF8') from kept_lo)",
    )
    .unwrap_or_else(|e| e)
}

fn major(root: &Path, node: &str) -> String {
    sql(
        root,
        node,
        "select current_setting('server_version_num')::int / 10000",
    )
    .unwrap_or_else(|e| e)
}

fn identifier(root: &Path, node: &str) -> String {
    sql(
        root,
        node,
        "select system_identifier from pg_control_system()",
    )
    .unwrap_or_else(|e| e)
}

/// Kills the first `pg_upgrade` that is not a `--check` run and works
/// under `root` (not another test's, nor a lab host's: their processes
/// show here too), once it has run for a moment: a pg_upgrade killed
/// midway (an operator's ^C, the OOM killer).
fn kill_pg_upgrade_midway(
    root: std::path::PathBuf,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<bool> {
    let root = root.display().to_string();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(300);
        while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
            for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                let args: Vec<String> = cmdline
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                let is_upgrade = args.first().is_some_and(|a| a.ends_with("/pg_upgrade"))
                    && args.iter().any(|a| a == "--link")
                    && !args.iter().any(|a| a == "--check")
                    && args.iter().any(|a| a.starts_with(&root));
                if is_upgrade {
                    std::thread::sleep(Duration::from_millis(400));
                    // SAFETY: kill(2) of the pg_upgrade found above.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    })
}

#[test]
fn a_cluster_is_upgraded_from_15_to_17_refused_undone_then_done() {
    let addresses: Vec<&str> = NODES.iter().map(|(_, a)| *a).collect();
    let (dir, root, _reaper) = local_nodes_test("upgrade", &addresses);
    let etcd = Etcd::start(&dir.path, 25_499, 25_500);
    let hosts = format!(
        "all:\n  children:\n    primary:\n      hosts:\n        {}: {{ansible_host: {}}}\n    \
         replica:\n      hosts:\n        {}: {{ansible_host: {}}}\n        {}: {{ansible_host: {}}}\n",
        NODES[0].0, NODES[0].1, NODES[1].0, NODES[1].1, NODES[2].0, NODES[2].1
    );
    let inv = local_inventory_with(&dir.path, &hosts);
    let vars = [
        "-e".to_string(),
        format!("pgherd_repo={}", repo_root().display()),
        "-e".to_string(),
        format!(
            "pg_cluster={CLUSTER} pg_instance=core pg_port={PG_PORT} \
             patroni_restapi_port={API_PORT}"
        ),
        "-e".to_string(),
        format!("pgherd_local_root={}", root.display()),
        "-e".to_string(),
        format!("{{\"pgherd_etcd_hosts\": [\"{}\"]}}", etcd.client_addr),
    ];
    let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
    let site = repo_root().join("playbooks/site.yml");
    let upgrade = repo_root().join("playbooks/upgrade.yml");
    let mut asked = vars.clone();
    asked.extend(["-e", "upgrade_cluster=ledger", "-e", "upgrade_to=17"]);

    ansible_playbook(&dir.path, &site, &inv, &vars).assert_ok("site.yml");
    wait_whole("the cluster on 15");
    for statement in [
        "create table orders (id bigserial primary key, note text)",
        "insert into orders (note) select md5(g::text) from generate_series(1, 1000) g",
        "create index orders_note on orders (note)",
        "create sequence invoice_no start 100",
        "select nextval('invoice_no'), nextval('invoice_no'), nextval('invoice_no')",
        "create table kept_lo (loid oid)",
        "insert into kept_lo select lo_from_bytea(0, convert_to('a large object', 'UTF8'))",
        "create extension \"uuid-ossp\"",
    ] {
        sql(&root, "up1", statement).unwrap();
    }
    let written = "1000:500500 1 orders_note a large object";
    let sequence = |root: &Path| sql(root, "up1", "select last_value from invoice_no");
    let old_id = identifier(&root, "up1");

    // An extension PostgreSQL 17 lacks here: refused by pg_upgrade's
    // check before anything stops, naming it.
    let refused = ansible_playbook(&dir.path, &upgrade, &inv, &asked);
    assert!(!refused.succeeded(), "{}", refused.transcript());
    assert!(
        refused.transcript().contains("uuid-ossp")
            && refused.transcript().contains("nothing was changed"),
        "{}",
        refused.transcript()
    );
    let changed: Vec<_> = refused
        .changed_tasks()
        .into_iter()
        .filter(|e| !e.task.contains("in check mode"))
        .collect();
    assert!(changed.is_empty(), "{changed:?}");
    assert_eq!(roles(), WHOLE, "the refusal stopped nothing");
    sql(&root, "up1", "drop extension \"uuid-ossp\"").unwrap();

    // Backups to a pgBackRest that does not know the new major (Debian
    // bookworm's 2.45 stops at 16): refused at the checks too.
    let mut with_stanza = asked.clone();
    with_stanza.extend(["-e", "pgbackrest_stanza=ledger"]);
    let refused = ansible_playbook(&dir.path, &upgrade, &inv, &with_stanza);
    assert!(!refused.succeeded(), "{}", refused.transcript());
    assert!(
        refused
            .transcript()
            .contains("cannot back up the new major's data directory")
            && refused.transcript().contains("nothing was changed"),
        "{}",
        refused.transcript()
    );
    assert_eq!(roles(), WHOLE, "the refusal stopped nothing");

    // Check mode: every member says what it would do; nothing changes.
    let mut check = asked.clone();
    check.push("--check");
    let predicted = ansible_playbook(&dir.path, &upgrade, &inv, &check);
    predicted.assert_ok("the upgrade in check mode");
    let leader_lines: Vec<String> = predicted
        .events
        .iter()
        .filter(|e| e.host == "up1" && e.task == "PostgreSQL instance managed by Patroni")
        .flat_map(|e| e.result["changes"].as_array().cloned().unwrap_or_default())
        .filter_map(|l| l.as_str().map(str::to_string))
        .collect();
    assert!(
        leader_lines.iter().any(|l| l.contains("pg_upgrade --link"))
            && leader_lines
                .iter()
                .any(|l| l.contains("point of no return")),
        "{leader_lines:?}\n{}",
        predicted.transcript()
    );
    assert_eq!(roles(), WHOLE, "check mode stopped nothing");
    assert_eq!(major(&root, "up1"), "15");

    // pg_upgrade killed midway: the leader's upgrade is undone, the
    // replicas are started again, the cluster is as it was.
    let done = Arc::new(AtomicBool::new(false));
    let killer = kill_pg_upgrade_midway(root.clone(), done.clone());
    let undone = ansible_playbook(&dir.path, &upgrade, &inv, &asked);
    done.store(true, Ordering::SeqCst);
    assert!(killer.join().unwrap(), "no pg_upgrade ran");
    assert!(!undone.succeeded(), "{}", undone.transcript());
    assert!(
        undone.transcript().contains("the upgrade was undone"),
        "{}",
        undone.transcript()
    );
    wait_whole("the cluster back on 15, whole");
    for (node, _) in NODES {
        assert_eq!(major(&root, node), "15", "{node}");
        assert_eq!(identifier(&root, node), old_id, "{node}");
        assert_eq!(contents(&root, node), written, "{node}");
    }
    assert_eq!(sequence(&root).as_deref(), Ok("102"));
    assert!(
        !root.join("up1/data/17/core").exists(),
        "the new data directory was removed"
    );

    // The upgrade, whole.
    let started = Instant::now();
    let upgraded = ansible_playbook(&dir.path, &upgrade, &inv, &asked);
    upgraded.assert_ok("the upgrade");
    eprintln!(
        "upgrade: 15 to 17 of 3 nodes in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    wait_whole("the cluster on 17, whole");
    let new_id = identifier(&root, "up1");
    assert_ne!(new_id, old_id, "a new system identifier");
    let initialize = etcd
        .etcdctl(
            None,
            &[
                "get",
                &format!("/service/{CLUSTER}/initialize"),
                "--print-value-only",
            ],
        )
        .unwrap();
    assert_eq!(
        initialize.trim(),
        new_id,
        "the DCS holds the new identifier"
    );
    for (node, _) in NODES {
        assert_eq!(major(&root, node), "17", "{node}");
        assert_eq!(identifier(&root, node), new_id, "{node}");
        assert_eq!(contents(&root, node), written, "{node}");
        assert!(
            !root.join(format!("{node}/data/15/core")).exists(),
            "{node}'s old data directory was removed"
        );
    }

    assert_eq!(sequence(&root).as_deref(), Ok("102"));
    assert_eq!(
        sql(&root, "up1", "select nextval('invoice_no')").as_deref(),
        Ok("103")
    );

    // Again: nothing to do. Then site.yml on the new major: nothing either.
    ansible_playbook(&dir.path, &upgrade, &inv, &asked).assert_unchanged("the upgrade again");
    let mut on_17 = vars.clone();
    on_17.extend(["-e", "pg_version=17"]);
    ansible_playbook(&dir.path, &site, &inv, &on_17).assert_unchanged("site.yml on 17");
}
