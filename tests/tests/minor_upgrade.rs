//! A rolling minor upgrade of a 3-node cluster on the local machine with
//! playbooks/rolling-upgrade.yml (names, ports and paths other than the
//! local inventory's): the cluster runs the older of two PostgreSQL 15
//! releases and Patroni 4.0.11 (both from scripts/setup.sh, under
//! .work/minors), then the paths the settings name are pointed at the
//! newer ones, as new packages would be installed. Patroni is refused a
//! restart alone while the cluster is not paused; check mode foresees the
//! restarts and changes nothing; the playbook restarts Patroni alone (its
//! PostgreSQL keeps running), the replicas' PostgreSQL one at a time, then
//! switches over (to the synchronous standby: the cluster is in
//! synchronous mode) and restarts the former leader, while a client writes
//! (PostgreSQL's own logs count its starts: one a node, none for
//! Patroni's restarts):
//! every acknowledged write is on every member, and a second run changes
//! nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pgherd_e2e::{
    ansible_playbook, cluster_view_from, http_get, local_inventory_with, local_nodes_test,
    member_roles, pg_version_num, psql_at, repo_root, wait_for, Etcd, Writer,
};

const NODES: [(&str, &str); 3] = [
    ("mu1", "127.0.0.11"),
    ("mu2", "127.0.0.12"),
    ("mu3", "127.0.0.13"),
];
const CLUSTER: &str = "tills";
const INSTANCE: &str = "shop";
const PG_PORT: u16 = 5436;
const API_PORT: u16 = 8038;
const OLD_PATRONI: &str = "4.0.11";
const NEW_PATRONI: &str = "4.1.5";

fn api(node: &str) -> String {
    let addr = NODES.iter().find(|(n, _)| *n == node).unwrap().1;
    format!("{addr}:{API_PORT}")
}

/// `name: role/state` of each member, as the first that answers lists them.
fn roles() -> Vec<String> {
    let view = cluster_view_from(NODES.iter().map(|(n, _)| api(n)));
    member_roles(view.as_ref(), true)
}

/// What a member's Patroni says of itself: (Patroni's version,
/// PostgreSQL's version number, the postmaster's start time).
fn running(node: &str) -> (String, u64, String) {
    let (_, body) = http_get(&api(node), "/patroni").expect("Patroni answers");
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    (
        s["patroni"]["version"].as_str().unwrap_or_default().into(),
        s["server_version"].as_u64().unwrap_or_default(),
        s["postmaster_start_time"]
            .as_str()
            .unwrap_or_default()
            .into(),
    )
}

/// The two releases of PostgreSQL 15 setup.sh unpacked, older first: their
/// version and the directory holding bin/ and lib/.
fn postgres_releases() -> [(String, PathBuf); 2] {
    let minors = repo_root().join(".work/minors");
    let mut found: Vec<(Vec<u64>, String, PathBuf)> = std::fs::read_dir(&minors)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix("postgresql-")?.to_string();
            let key = version.split('.').map(|p| p.parse().unwrap_or(0)).collect();
            Some((key, version, e.path().join("usr/lib/postgresql/15")))
        })
        .collect();
    found.sort();
    assert!(
        found.len() >= 2,
        "two releases of PostgreSQL 15 under {} (scripts/setup.sh unpacks them): {found:?}",
        minors.display()
    );
    let newer = found.pop().unwrap();
    let older = found.pop().unwrap();
    [(older.1, older.2), (newer.1, newer.2)]
}

/// `link` made (or replaced at once) to point at `target`.
fn point(link: &Path, target: &Path) {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

/// The cluster of the test: its directory, the links the settings name,
/// the inventory and the variables every playbook is given.
struct Shape {
    dir: pgherd_e2e::TestDir,
    root: PathBuf,
    pg_link: PathBuf,
    patroni_link: PathBuf,
    inv: PathBuf,
    vars: Vec<String>,
    _etcd: Etcd,
    _reaper: pgherd_e2e::ProcessReaper,
}

impl Shape {
    fn vars(&self) -> Vec<&str> {
        self.vars.iter().map(String::as_str).collect()
    }

    fn sockets(&self, node: &str) -> PathBuf {
        self.root.join(format!("{node}/run"))
    }

    fn playbook(&self, playbook: &Path, more: &[&str]) -> pgherd_e2e::PlaybookRun {
        let mut vars = self.vars();
        vars.extend(more);
        ansible_playbook(&self.dir.path, playbook, &self.inv, &vars)
    }

    /// The new releases installed: the links pointed at them.
    fn install(&self, tree: &Path, patroni: &str) {
        point(&self.pg_link, tree);
        point(
            &self.patroni_link,
            &repo_root().join(format!(".work/minors/patroni-{patroni}")),
        );
    }

    /// The lines of the nodes' PostgreSQL logs matching `pattern` (for a
    /// failure's message).
    fn postgres_log_lines(&self, pattern: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -HE '{pattern}' {}/*/log/postgresql-15-{INSTANCE}/* | tail -40",
                self.root.display()
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// How often each node's PostgreSQL started, as its logs say.
    fn postgres_starts(&self) -> Vec<usize> {
        NODES
            .iter()
            .map(|(node, _)| {
                let logs = self
                    .root
                    .join(format!("{node}/log/postgresql-15-{INSTANCE}"));
                std::fs::read_dir(&logs)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|f| std::fs::read_to_string(f.path()).unwrap_or_default())
                    .map(|text| text.matches("LOG:  starting PostgreSQL").count())
                    .sum()
            })
            .collect()
    }
}

/// The cluster deployed by site.yml on the older releases (names, ports,
/// paths other than the local inventory's; synchronous mode).
fn deploy_on(tree: &Path) -> Shape {
    let addresses: Vec<&str> = NODES.iter().map(|(_, a)| *a).collect();
    let (dir, root, reaper) = local_nodes_test("minor-upgrade", &addresses);
    std::fs::create_dir_all(&root).unwrap();
    let etcd = Etcd::start(&dir.path, 25_519, 25_520);
    // What the settings name: PostgreSQL's programs and Patroni's, through
    // links that the "package upgrade" points elsewhere.
    let shape = Shape {
        pg_link: root.join("postgresql-15"),
        patroni_link: root.join("patroni"),
        inv: local_inventory_with(
            &dir.path,
            &format!(
                "all:\n  children:\n    primary:\n      hosts:\n        {}: {{ansible_host: {}}}\n    \
                 replica:\n      hosts:\n        {}: {{ansible_host: {}}}\n        {}: {{ansible_host: {}}}\n",
                NODES[0].0, NODES[0].1, NODES[1].0, NODES[1].1, NODES[2].0, NODES[2].1
            ),
        ),
        vars: Vec::new(),
        dir,
        root,
        _etcd: etcd,
        _reaper: reaper,
    };
    shape.install(tree, OLD_PATRONI);
    let extra = serde_json::json!({
        "pgherd_etcd_hosts": [shape._etcd.client_addr],
        "patroni_bootstrap_dcs": {"synchronous_mode": true},
        "pgherd_settings_extra": {
            "postgresql": {"bindir": format!("{}/bin", shape.pg_link.display())},
            "patroni": {"execpath": format!("{}/bin/patroni", shape.patroni_link.display())},
        },
    });
    let vars = vec![
        "-e".to_string(),
        format!("pgherd_repo={}", repo_root().display()),
        "-e".to_string(),
        format!(
            "pg_cluster={CLUSTER} pg_instance={INSTANCE} pg_port={PG_PORT} \
             patroni_restapi_port={API_PORT} rolling_packages=false"
        ),
        "-e".to_string(),
        format!("pgherd_local_root={}", shape.root.display()),
        "-e".to_string(),
        extra.to_string(),
    ];
    let shape = Shape { vars, ..shape };
    shape
        .playbook(&repo_root().join("playbooks/site.yml"), &[])
        .assert_ok("site.yml");
    shape
}

/// Waits until one member leads and two stream, one of them the
/// synchronous standby; the roles then.
fn whole(what: &str) -> Vec<String> {
    wait_for(
        what,
        Duration::from_secs(60),
        || {
            let r = roles();
            (r.iter().filter(|m| m.ends_with("leader/running")).count() == 1
                && r.iter().filter(|m| m.ends_with("/streaming")).count() == 2
                && r.iter().any(|m| m.contains("sync_standby/")))
            .then_some(r)
        },
        || format!("{:?}", roles()),
    )
}

/// A client writing one row at a time into `written` on whichever member
/// takes writes (libpq's list of the nodes' sockets).
fn writer(shape: &Shape) -> Writer {
    let hosts_list = NODES
        .iter()
        .map(|(n, _)| shape.sockets(n).display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let target = format!(
        "host={hosts_list} port={PG_PORT} dbname=postgres connect_timeout=2 \
         target_session_attrs=read-write"
    );
    Writer::start_with(
        move |id| {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--", "timeout", "5"])
                .arg("/usr/lib/postgresql/15/bin/psql")
                .args(["-XAtq", &target, "-c"])
                .arg(format!("insert into written values ({id})"))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        },
        || format!("{:?}", roles()),
    )
}

/// Every acknowledged write is on every member.
fn every_write_everywhere(shape: &Shape, acked: &[(u64, std::time::Instant)]) {
    let last = acked.last().unwrap().0;
    for (node, _) in NODES {
        wait_for(
            &format!("{node} to hold write {last}"),
            Duration::from_secs(30),
            || {
                psql_at(
                    &shape.sockets(node),
                    PG_PORT,
                    &format!("select 1 from written where id = {last}"),
                )
                .ok()
                .filter(|r| r == "1")
            },
            String::new,
        );
        let ids: std::collections::BTreeSet<u64> =
            psql_at(&shape.sockets(node), PG_PORT, "select id from written")
                .unwrap()
                .lines()
                .filter_map(|l| l.parse().ok())
                .collect();
        let lost: Vec<_> = acked.iter().filter(|(id, _)| !ids.contains(id)).collect();
        assert!(lost.is_empty(), "{node} lacks acknowledged writes {lost:?}");
    }
}

/// Patroni alone, unpaused, on mu2: refused before anything is done.
fn patroni_alone_is_refused_unpaused(shape: &Shape) {
    let one = shape.dir.join("one.yml");
    std::fs::write(
        &one,
        format!(
            "- hosts: mu2\n  gather_facts: false\n  tasks:\n\
             \x20   - ansible.builtin.import_tasks: {}\n      vars:\n        pg_restart_outdated: [patroni]\n",
            repo_root().join("playbooks/tasks/instance.yml").display()
        ),
    )
    .unwrap();
    let refused = shape.playbook(&one, &[]);
    assert!(!refused.succeeded(), "{}", refused.transcript());
    let msg = refused.failed_tasks()[0].result["msg"].to_string();
    assert!(
        msg.contains(&format!(
            "Patroni {OLD_PATRONI} runs, {NEW_PATRONI} is installed"
        )) && msg.contains("paused")
            && msg.contains("nothing was changed"),
        "{msg}"
    );
}

#[test]
fn a_rolling_minor_upgrade_restarts_patroni_paused_then_each_postgres_with_one_switchover() {
    let [(old_pg, old_tree), (new_pg, new_tree)] = postgres_releases();
    let shape = deploy_on(&old_tree);
    let rolling = repo_root().join("playbooks/rolling-upgrade.yml");
    whole("the cluster on the older releases");
    for (node, _) in NODES {
        let (patroni, server, _) = running(node);
        assert_eq!(
            (patroni.as_str(), server),
            (OLD_PATRONI, pg_version_num(&old_pg))
        );
    }
    psql_at(
        &shape.sockets("mu1"),
        PG_PORT,
        "create table written (id bigint primary key)",
    )
    .unwrap();
    let writer = writer(&shape);
    writer.wait_progress(20, "before the upgrade");

    // The new releases installed: the running programs are now outdated.
    shape.install(&new_tree, NEW_PATRONI);
    let before: Vec<_> = NODES.iter().map(|(n, _)| running(n)).collect();
    let starts_before = shape.postgres_starts();
    patroni_alone_is_refused_unpaused(&shape);

    // Check mode: the restarts foreseen, nothing done.
    let check = shape.playbook(&rolling, &["--check"]);
    check.assert_ok("rolling-upgrade.yml in check mode");
    let foreseen: Vec<String> = check
        .events
        .iter()
        .flat_map(|e| e.result["changes"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    for line in [
        format!("restart Patroni alone for the version installed, PostgreSQL kept running ({}-{INSTANCE} (mu2): {OLD_PATRONI} runs, {NEW_PATRONI} is installed)", 15),
        format!("restart PostgreSQL through Patroni for the version installed (15-{INSTANCE} (mu3): {old_pg} runs, {new_pg} is installed)"),
    ] {
        assert!(foreseen.contains(&line), "{line} in {foreseen:?}");
    }
    let after_check: Vec<_> = NODES.iter().map(|(n, _)| running(n)).collect();
    assert_eq!(after_check, before, "check mode restarted nothing");
    assert_eq!(roles()[0], "mu1: leader/running");

    // The rolling upgrade.
    let run = shape.playbook(&rolling, &[]);
    run.assert_ok("rolling-upgrade.yml");
    let r = whole("the cluster after the rolling upgrade");
    assert!(
        !r.contains(&"mu1: leader/running".to_string()),
        "the leader was handed over: {r:?}"
    );
    for (i, (node, _)) in NODES.iter().enumerate() {
        let (patroni, server, started) = running(node);
        assert_eq!(
            (patroni.as_str(), server),
            (NEW_PATRONI, pg_version_num(&new_pg)),
            "{node}"
        );
        assert_ne!(started, before[i].2, "{node}'s PostgreSQL restarted");
    }
    // Patroni restarted alone: its PostgreSQL kept running. Each node's
    // PostgreSQL started once: the replicas' minor restarts, and the former
    // leader's demotion in the switchover (which already starts the
    // installed release: nothing left to restart there); none for
    // Patroni's restarts.
    let starts: Vec<usize> = shape
        .postgres_starts()
        .iter()
        .zip(&starts_before)
        .map(|(after, before)| after - before)
        .collect();
    assert_eq!(
        starts,
        [1, 1, 1],
        "PostgreSQL starts of mu1, mu2, mu3 (now {r:?}); their logs:\n{}",
        shape.postgres_log_lines("starting PostgreSQL|shutting down|received .* shutdown|promot")
    );
    let restarts: Vec<_> = run
        .events
        .iter()
        .filter(|e| e.task.contains("Patroni restarted alone where outdated"))
        .collect();
    assert_eq!(restarts.len(), 3, "{}", run.transcript());
    for e in restarts {
        assert_eq!(e.result["changed"], true, "{}", e.result);
        assert!(e.result["warnings"].is_null(), "{}", e.result);
        assert_eq!(
            e.result["instance"]["outdated"],
            serde_json::json!(["postgresql"])
        );
    }
    let view = cluster_view_from(NODES.iter().map(|(n, _)| api(n))).unwrap();
    assert!(view["pause"].is_null() || view["pause"] == false, "{view}");

    writer.wait_progress(20, "after the upgrade");
    let acked = writer.finish_timed();
    eprintln!(
        "{} writes acknowledged; the longest time between two: {:.2} s",
        acked.len(),
        Writer::longest_gap(&acked).as_secs_f64()
    );
    every_write_everywhere(&shape, &acked);

    // Nothing left to do: no pause, no restart, no change.
    let again = shape.playbook(&rolling, &[]);
    again.assert_unchanged("rolling-upgrade.yml again");
    let facts = again
        .events
        .iter()
        .find(|e| e.task.contains("what runs, read in check mode"))
        .expect("the read ran");
    assert_eq!(
        facts.result["instance"]["versions"],
        serde_json::json!({
            "postgresql": {"running": new_pg, "installed": new_pg},
            "patroni": {"running": NEW_PATRONI, "installed": NEW_PATRONI},
        })
    );
    assert_eq!(facts.result["instance"]["outdated"], serde_json::json!([]));
}
