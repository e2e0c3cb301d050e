//! A real 3-node cluster deployed by playbooks/site.yml on 127.0.0.11-13,
//! with a real etcd, driven through ansible-playbook as a user would, and
//! checked against what the cluster really is (REST API, SQL), not against
//! what the module says it did. One test: the steps share the cluster.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pgherd_e2e::{
    ansible_playbook, assert_reaped_by_pgherd, http_get, local_nodes_test, pids_mentioning,
    port_open, psql, repo_root, snapshot, wait_for, Etcd, PlaybookRun, TestDir,
};
use serde_json::Value;

const NODES: [(&str, &str); 3] = [
    ("pg1", "127.0.0.11"),
    ("pg2", "127.0.0.12"),
    ("pg3", "127.0.0.13"),
];
const ETCD_PORT: u16 = 24_379;

struct Cluster {
    dir: TestDir,
    root: PathBuf,
    etcd_hosts: String,
}

impl Cluster {
    fn playbook(&self, name: &str, extra: &[&str]) -> PlaybookRun {
        let inventory = repo_root().join("playbooks/inventories/local");
        let root = format!("pgherd_local_root={}", self.root.display());
        let mut args = vec!["-e", &root, "-e", &self.etcd_hosts];
        args.extend_from_slice(extra);
        ansible_playbook(
            &self.dir.path,
            &repo_root().join("playbooks").join(name),
            &inventory,
            &args,
        )
    }

    fn socket(&self, node: &str) -> PathBuf {
        self.root.join(node).join("run")
    }

    fn config_dirs(&self) -> Vec<PathBuf> {
        NODES
            .iter()
            .map(|(n, _)| self.root.join(n).join("etc"))
            .collect()
    }
}

fn rest_cluster() -> Option<Value> {
    let (_, body) = http_get("127.0.0.11:8008", "/cluster")
        .or_else(|| http_get("127.0.0.12:8008", "/cluster"))
        .or_else(|| http_get("127.0.0.13:8008", "/cluster"))?;
    serde_json::from_str(&body).ok()
}

/// One leader and two streaming replicas on one timeline, as /cluster says.
fn cluster_is_whole(c: &Value) -> bool {
    let members = c["members"].as_array().cloned().unwrap_or_default();
    let leaders = members
        .iter()
        .filter(|m| m["role"] == "leader" && m["state"] == "running")
        .count();
    let streaming = members
        .iter()
        .filter(|m| m["role"] == "replica" && m["state"] == "streaming")
        .count();
    members.len() == 3 && leaders == 1 && streaming == 2
}

fn wait_whole(what: &str) -> Value {
    wait_for(
        what,
        Duration::from_secs(60),
        || rest_cluster().filter(cluster_is_whole),
        || format!("{:?}", rest_cluster()),
    )
}

fn leader_name(c: &Value) -> String {
    c["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["role"] == "leader"))
        .and_then(|m| m["name"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn instance_results(run: &PlaybookRun) -> Vec<&pgherd_e2e::TaskEvent> {
    run.events
        .iter()
        .filter(|e| e.task == "PostgreSQL instance managed by Patroni")
        .collect()
}

fn assert_ok(run: &PlaybookRun, step: &str) {
    assert!(run.succeeded(), "{step} failed:\n{}", run.transcript());
}

/// Waits until `sql` returns `expected` on a node (replication is async).
fn wait_sql(cluster: &Cluster, node: &str, sql: &str, expected: &str) {
    let socket = cluster.socket(node);
    wait_for(
        &format!("{sql:?} to return {expected:?} on {node}"),
        Duration::from_secs(30),
        || (psql(&socket, sql).ok().as_deref() == Some(expected)).then_some(()),
        || format!("{:?}", psql(&socket, sql)),
    );
}

fn step(start: Instant, name: &str) {
    eprintln!("[{:>6.1}s] {name}", start.elapsed().as_secs_f64());
}

#[test]
fn three_node_cluster_lifecycle() {
    let (dir, root, _reaper) = local_nodes_test("cluster", &NODES.map(|(_, addr)| addr));
    let etcd = Etcd::start(&dir.path, ETCD_PORT, ETCD_PORT + 1);
    let cluster = Cluster {
        etcd_hosts: format!("{{\"pgherd_etcd_hosts\": [\"{}\"]}}", etcd.client_addr),
        root,
        dir,
    };
    let start = Instant::now();

    // Deploy: the first node bootstraps, the others clone.
    let deploy = cluster.playbook("site.yml", &[]);
    assert_ok(&deploy, "site.yml");
    step(start, "deployed");
    let c = wait_whole("one leader and two streaming replicas after site.yml");
    assert_eq!(leader_name(&c), "pg1", "{c}");
    assert_reaped_by_pgherd(&cluster.root.join("pg2"), "15", "main");
    let results = instance_results(&deploy);
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|e| e.changed()));

    // A row written on the leader is read on both replicas.
    psql(
        &cluster.socket("pg1"),
        "create table e2e(id int primary key); insert into e2e values (1)",
    )
    .unwrap();
    for node in ["pg2", "pg3"] {
        wait_sql(&cluster, node, "select count(*) from e2e", "1");
    }
    step(start, "row replicated");

    // A second run changes nothing and rewrites no file.
    let before: Vec<_> = cluster.config_dirs().iter().map(|d| snapshot(d)).collect();
    let again = cluster.playbook("site.yml", &[]);
    assert_ok(&again, "second site.yml");
    let changed: Vec<_> = again
        .changed_tasks()
        .iter()
        .map(|e| format!("{} {}", e.host, e.task))
        .collect();
    assert!(changed.is_empty(), "second run changed: {changed:?}");
    let after: Vec<_> = cluster.config_dirs().iter().map(|d| snapshot(d)).collect();
    assert_eq!(before, after, "the second run touched configuration files");
    step(start, "second run: changed=0");

    // The site settings each node keeps (settings_file) are 0600. A change
    // to them, a secret among them, is foreseen with the secret masked,
    // then written, and reloads nothing: nothing but the file changes.
    let settings_file = |node: &str| cluster.root.join(node).join("settings.yaml");
    let mode = |path: &PathBuf| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    };
    let kept = std::fs::read(settings_file("pg1")).unwrap();
    assert_eq!(mode(&settings_file("pg1")), 0o600);
    let cipher = "Cl-Ci-6Tq-secret";
    let secret = format!(
        r#"{{"pgherd_settings_extra": {{"pgbackrest": {{"global_options": {{"repo1-cipher-pass": "{cipher}"}}}}}}}}"#
    );
    let only_the_settings_file = |run: &PlaybookRun| {
        for e in instance_results(run) {
            let file = settings_file(&e.host);
            assert_eq!(
                e.result["changes"],
                serde_json::json!([format!("update {}", file.display())]),
                "{}",
                e.host
            );
        }
    };
    let check = cluster.playbook("site.yml", &["-e", &secret, "--check", "--diff"]);
    assert_ok(&check, "site.yml --check with a secret in the settings");
    only_the_settings_file(&check);
    assert!(
        check.stdout().contains("+    repo1-cipher-pass: ********")
            && !check.transcript().contains(cipher),
        "{}",
        check.transcript()
    );
    assert_eq!(std::fs::read(settings_file("pg1")).unwrap(), kept);
    let apply = cluster.playbook("site.yml", &["-e", &secret]);
    assert_ok(&apply, "site.yml with a secret in the settings");
    only_the_settings_file(&apply);
    let text = std::fs::read_to_string(settings_file("pg3")).unwrap();
    assert!(text.contains(cipher) && mode(&settings_file("pg3")) == 0o600);
    let back = cluster.playbook("site.yml", &[]);
    assert_ok(&back, "site.yml without the secret");
    only_the_settings_file(&back);
    assert_eq!(std::fs::read(settings_file("pg1")).unwrap(), kept);
    step(start, "settings file: masked, written, nothing reloaded");

    // --check with a new parameter predicts the change and touches nothing.
    let params = r#"{"pg_parameters": {"work_mem": "8MB", "shared_buffers": "64MB"}}"#;
    let check = cluster.playbook("site.yml", &["-e", params, "--check", "--diff"]);
    assert_ok(&check, "site.yml --check");
    let predicted = instance_results(&check);
    assert!(
        predicted.len() == 3 && predicted.iter().all(|e| e.changed()),
        "{}",
        check.transcript()
    );
    assert!(
        check.stdout().contains("+    work_mem: \"8MB\""),
        "{}",
        check.transcript()
    );
    let after_check: Vec<_> = cluster.config_dirs().iter().map(|d| snapshot(d)).collect();
    assert_eq!(
        before, after_check,
        "check mode touched configuration files"
    );
    assert_eq!(
        psql(&cluster.socket("pg1"), "show work_mem").unwrap(),
        "4MB"
    );
    step(start, "check mode predicted, wrote nothing");

    // Applied: work_mem reaches PostgreSQL by a reload; shared_buffers
    // waits for a restart, and the module says so.
    let apply = cluster.playbook("site.yml", &["-e", params]);
    assert_ok(&apply, "site.yml with parameters");
    for node in ["pg1", "pg2", "pg3"] {
        assert_eq!(
            psql(&cluster.socket(node), "show work_mem").unwrap(),
            "8MB",
            "{node}"
        );
        assert_eq!(
            psql(
                &cluster.socket(node),
                "select pending_restart from pg_settings where name = 'shared_buffers'"
            )
            .unwrap(),
            "t",
            "{node}"
        );
    }
    for e in instance_results(&apply) {
        let inst = &e.result["instance"];
        assert_eq!(inst["pending_restart"], true, "{}: {inst}", e.host);
        assert!(
            inst["pending_restart_parameters"]
                .as_array()
                .unwrap()
                .contains(&Value::from("shared_buffers")),
            "{}: {inst}",
            e.host
        );
    }
    step(start, "parameters reloaded, pending restart reported");

    // stopped, then started, on a replica: it rejoins and catches up.
    let stop = cluster.playbook(
        "site.yml",
        &["-e", params, "-l", "pg2", "-e", "pg_state=stopped"],
    );
    assert_ok(&stop, "pg2 stopped");
    assert!(
        !port_open("127.0.0.12:8008"),
        "pg2's REST API still answers"
    );
    assert!(
        !port_open("127.0.0.12:5432"),
        "pg2's PostgreSQL still listens"
    );
    assert!(!cluster
        .root
        .join("pg2/data/15/main/postmaster.pid")
        .exists());
    assert!(
        pids_mentioning(&format!("{}/pg2/", cluster.root.display())).is_empty(),
        "pg2 left a process"
    );
    psql(&cluster.socket("pg1"), "insert into e2e values (2)").unwrap();
    let restart_pg2 = cluster.playbook("site.yml", &["-e", params, "-l", "pg2"]);
    assert_ok(&restart_pg2, "pg2 started");
    wait_whole("pg2 streaming again");
    wait_sql(&cluster, "pg2", "select count(*) from e2e", "2");
    step(start, "replica stopped and started");

    // restarted on the leader: PostgreSQL restarts, the restart-pending
    // parameter applies, the cluster is whole again.
    let restart = cluster.playbook(
        "site.yml",
        &["-e", params, "-l", "pg1", "-e", "pg_state=restarted"],
    );
    assert_ok(&restart, "pg1 restarted");
    assert!(instance_results(&restart)[0].changed());
    wait_whole("the cluster whole after restarting the leader");
    assert_eq!(
        psql(&cluster.socket("pg1"), "show shared_buffers").unwrap(),
        "64MB"
    );
    step(start, "leader restarted");

    // absent on a replica removes its data; started again re-clones it.
    let remove = cluster.playbook(
        "site.yml",
        &["-e", params, "-l", "pg3", "-e", "pg_state=absent"],
    );
    assert_ok(&remove, "pg3 absent");
    assert!(
        !cluster.root.join("pg3/data/15/main").exists(),
        "pg3's data survived absent"
    );
    assert!(!cluster.root.join("pg3/etc/15-main.yaml").exists());
    assert!(!port_open("127.0.0.13:5432"));
    let reclone = cluster.playbook("site.yml", &["-e", params, "-l", "pg3"]);
    assert_ok(&reclone, "pg3 started again");
    wait_whole("pg3 re-cloned and streaming");
    wait_sql(&cluster, "pg3", "select count(*) from e2e", "2");
    step(start, "replica removed and re-cloned");

    // Teardown leaves no process and no listening port.
    let down = cluster.playbook("teardown.yml", &[]);
    assert_ok(&down, "teardown.yml");
    for (name, addr) in NODES {
        for port in [5432, 8008] {
            assert!(
                !port_open(&format!("{addr}:{port}")),
                "{name} still listens on {addr}:{port}"
            );
        }
    }
    assert!(
        pids_mentioning(&cluster.root.display().to_string()).is_empty(),
        "teardown left processes"
    );
    drop(etcd);
    assert!(
        !port_open(&format!("127.0.0.1:{ETCD_PORT}")),
        "etcd still listens"
    );
    step(start, "torn down");
}
