//! `pgherd.cluster.patroni` on a real 3-node cluster: each operation's
//! effect on the cluster, its second run changing nothing (no write to the
//! DCS), check mode changing nothing, and its refusals failing before any
//! action with the reason.

use std::path::PathBuf;
use std::time::Duration;

use pgherd_e2e::{
    ansible_playbook, http_get, http_request, local_nodes_test, one_task_playbook, pids_mentioning,
    psql, repo_root, wait_for, Etcd, PlaybookRun, TestDir,
};
use serde_json::{json, Value};

const ETCD_PORT: u16 = 24_679;
const SCOPE: &str = "ops";

struct Cluster {
    dir: TestDir,
    root: PathBuf,
    etcd: Etcd,
    runs: std::cell::Cell<u32>,
}

impl Cluster {
    fn vars(&self) -> Vec<String> {
        vec![
            "-e".into(),
            format!("pgherd_local_root={}", self.root.display()),
            "-e".into(),
            format!("{{\"pgherd_etcd_hosts\": [\"{}\"]}}", self.etcd.client_addr),
            "-e".into(),
            format!("pg_cluster={SCOPE}"),
        ]
    }

    fn playbook(&self, name: &str, extra: &[&str]) -> PlaybookRun {
        let vars = self.vars();
        let mut args: Vec<&str> = vars.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        ansible_playbook(
            &self.dir.path,
            &repo_root().join("playbooks").join(name),
            &repo_root().join("playbooks/inventories/local"),
            &args,
        )
    }

    /// One `pgherd.cluster.patroni` task on pg1, with `args` (JSON is YAML).
    fn patroni(&self, args: Value, extra: &[&str]) -> PlaybookRun {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let mut args = args;
        args["cluster"] = json!(SCOPE);
        if args.get("settings").is_none() {
            args["settings"] = json!("{{ pgherd_settings_file }}");
        }
        let path = one_task_playbook(
            &self.dir.path,
            &format!("patroni-{n}"),
            "pg1",
            "pgherd.cluster.patroni",
            &args,
        );
        let vars = self.vars();
        let mut all: Vec<&str> = vars.iter().map(String::as_str).collect();
        all.extend_from_slice(extra);
        ansible_playbook(
            &self.dir.path,
            &path,
            &repo_root().join("playbooks/inventories/local"),
            &all,
        )
    }

    fn socket(&self, node: &str) -> PathBuf {
        self.root.join(node).join("run")
    }

    /// The mod_revision of a DCS key: unchanged means never written.
    fn key_revision(&self, key: &str) -> i64 {
        let out = self
            .etcd
            .etcdctl(
                None,
                &["get", "-w", "json", &format!("/service/{SCOPE}/{key}")],
            )
            .unwrap_or_default();
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        v["kvs"][0]["mod_revision"].as_i64().unwrap_or(-1)
    }

    fn keys(&self) -> Vec<String> {
        self.etcd
            .etcdctl(
                None,
                &[
                    "get",
                    "--prefix",
                    "--keys-only",
                    &format!("/service/{SCOPE}/"),
                ],
            )
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }
}

fn result(run: &PlaybookRun) -> &Value {
    &run.events.last().expect("a task result").result
}

fn ok(run: &PlaybookRun, what: &str) -> Value {
    assert!(run.succeeded(), "{what} failed:\n{}", run.transcript());
    result(run).clone()
}

fn refused(run: &PlaybookRun, what: &str, reason: &str) {
    assert!(
        !run.succeeded(),
        "{what} should have been refused:\n{}",
        run.transcript()
    );
    let msg = result(run)["msg"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains(reason), "{what}: {reason:?} not in {msg:?}");
}

/// Whether a playbook run that must succeed changed something.
fn ok_playbook(run: &PlaybookRun, what: &str) -> bool {
    assert!(run.succeeded(), "{what} failed:\n{}", run.transcript());
    !run.changed_tasks().is_empty()
}

fn rest(addr: &str, path: &str) -> Option<Value> {
    http_get(addr, path).and_then(|(_, b)| serde_json::from_str(&b).ok())
}

fn members() -> Vec<Value> {
    ["127.0.0.11:8008", "127.0.0.12:8008", "127.0.0.13:8008"]
        .iter()
        .find_map(|a| rest(a, "/cluster"))
        .and_then(|c| c["members"].as_array().cloned())
        .unwrap_or_default()
}

/// Waits until `ready` finds what it needs among `/cluster`'s members.
fn wait_members<T>(what: &str, ready: impl Fn(&[Value]) -> Option<T>) -> T {
    wait_for(
        what,
        Duration::from_secs(30),
        || ready(&members()),
        || format!("{:?}", members()),
    )
}

fn role_of(name: &str) -> (String, String) {
    members()
        .iter()
        .find(|m| m["name"] == name)
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default().to_string(),
                m["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .unwrap_or_default()
}

fn node_api(name: &str) -> &'static str {
    match name {
        "pg1" => "127.0.0.11:8008",
        "pg2" => "127.0.0.12:8008",
        _ => "127.0.0.13:8008",
    }
}

/// The WAL receiver of the instance whose data directory is `data`.
fn walreceiver_pid(data: &std::path::Path) -> i32 {
    pids_mentioning("walreceiver")
        .into_iter()
        .find(|p| std::fs::read_link(format!("/proc/{p}/cwd")).ok().as_deref() == Some(data))
        .unwrap_or_else(|| panic!("no WAL receiver for {}", data.display()))
}

fn wait_show(c: &Cluster, setting: &str, expected: &str) {
    for node in ["pg1", "pg2", "pg3"] {
        let socket = c.socket(node);
        wait_for(
            &format!("{setting} = {expected} on {node}"),
            Duration::from_secs(30),
            || {
                (psql(&socket, &format!("show {setting}")).ok().as_deref() == Some(expected))
                    .then_some(())
            },
            || format!("{:?}", psql(&socket, &format!("show {setting}"))),
        );
    }
}

#[test]
fn patroni_module_operates_a_real_cluster() {
    let (dir, root, _reaper) =
        local_nodes_test("operations", &["127.0.0.11", "127.0.0.12", "127.0.0.13"]);
    let etcd = Etcd::start(&dir.path, ETCD_PORT, ETCD_PORT + 1);
    let c = Cluster {
        dir,
        root,
        etcd,
        runs: std::cell::Cell::new(0),
    };
    ok(&c.playbook("site.yml", &[]), "site.yml");
    // The replication role comes in from the members only (on one
    // machine, 127.0.0.1 is where they connect from), and from this host
    // itself (Patroni's own replication connections: 127.0.0.1 and ::1).
    let from = psql(
        &c.socket("pg1"),
        "select string_agg(distinct address, ',' order by address) from pg_hba_file_rules \
         where 'replication' = any(database)",
    )
    .unwrap();
    assert_eq!(from, "127.0.0.1,127.0.0.11,127.0.0.12,127.0.0.13,::1");

    // info: reads, never changes.
    let info = ok(&c.patroni(json!({"state": "info"}), &[]), "info");
    assert_eq!(info["changed"], false);
    let cl = &info["cluster"];
    assert_eq!(cl["leader"], "pg1", "{cl}");
    assert_eq!(cl["members"].as_array().map(Vec::len), Some(3), "{cl}");
    assert_eq!(cl["config"]["ttl"], 20, "{cl}");
    assert!(
        cl["system_identifier"]
            .as_str()
            .is_some_and(|s| s.len() > 10),
        "{cl}"
    );

    // From the controller: a member's REST API is enough, etcd is not
    // needed; without either, the error names etcd and says what to do.
    let no_etcd = json!({"patroni": {"etcd": {"hosts": ["127.0.0.1:9"]}}});
    let remote = ok(
        &c.patroni(
            json!({"state": "info", "restapi": "127.0.0.12:8008", "settings": no_etcd}),
            &[],
        ),
        "info through a given member",
    );
    assert_eq!(remote["cluster"]["leader"], "pg1");
    refused(
        &c.patroni(json!({"state": "info", "settings": no_etcd}), &[]),
        "info with etcd unreachable",
        "etcd at http://127.0.0.1:9",
    );

    // dynamic_config: only the difference is sent; SHOW sees it everywhere.
    let dynamic = json!({"dynamic_config": {"maximum_lag_on_failover": 2097152,
                                            "postgresql": {"parameters": {"work_mem": "16MB"}}}});
    let check = ok(
        &c.patroni(dynamic.clone(), &["--check", "--diff"]),
        "dynamic_config --check",
    );
    assert_eq!(check["changed"], true);
    assert_eq!(
        check["diff"]["before"]["postgresql"]["parameters"]["work_mem"],
        Value::Null,
        "{check}"
    );
    assert_eq!(
        check["diff"]["after"]["postgresql"]["parameters"]["work_mem"], "16MB",
        "{check}"
    );
    assert_eq!(
        psql(&c.socket("pg1"), "show work_mem").unwrap(),
        "4MB",
        "check mode changed the cluster"
    );
    let applied = ok(&c.patroni(dynamic.clone(), &[]), "dynamic_config");
    assert_eq!(applied["changed"], true);
    wait_show(&c, "work_mem", "16MB");
    let revision = c.key_revision("config");
    let again = ok(&c.patroni(dynamic.clone(), &[]), "dynamic_config again");
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(
        c.key_revision("config"),
        revision,
        "the second run wrote the DCS config"
    );

    // Maintenance mode through playbooks/maintenance.yml: every member
    // reports it; a switchover is refused while paused.
    assert!(
        ok_playbook(&c.playbook("maintenance.yml", &[]), "pause"),
        "pausing changed nothing"
    );
    for node in ["pg1", "pg2", "pg3"] {
        assert_eq!(
            rest(node_api(node), "/patroni").unwrap()["pause"],
            true,
            "{node} not paused"
        );
    }
    assert!(
        !ok_playbook(&c.playbook("maintenance.yml", &[]), "pause again"),
        "a second pause changed"
    );
    refused(
        &c.patroni(json!({"leader": "pg2"}), &[]),
        "switchover while paused",
        "is paused",
    );
    assert_eq!(role_of("pg1").0, "leader");
    assert!(ok_playbook(
        &c.playbook("maintenance.yml", &["-e", "paused=false"]),
        "resume"
    ));
    for node in ["pg1", "pg2", "pg3"] {
        assert_ne!(
            rest(node_api(node), "/patroni").unwrap()["pause"],
            true,
            "{node} still paused"
        );
    }

    // Switchover refusals, before any request.
    refused(
        &c.patroni(json!({"leader": "pg9"}), &[]),
        "unknown candidate",
        "pg9 is not a member",
    );
    refused(
        &c.patroni(json!({"failover_to": "pg2"}), &[]),
        "failover with a healthy leader",
        "healthy leader",
    );
    assert_eq!(role_of("pg1").0, "leader");

    // A lagging candidate, for real: pg3's WAL receiver frozen while the
    // leader writes (Patroni would undo a paused replay by itself).
    let receiver = walreceiver_pid(&c.root.join("pg3/data/15/main"));
    // SAFETY: plain kill(2) on the pid just found.
    unsafe { libc::kill(receiver, libc::SIGSTOP) };
    psql(&c.socket("pg1"), "create table lag(x text); insert into lag select repeat('x', 1000) from generate_series(1, 2000)").unwrap();
    wait_members("pg3's lag to show in /cluster", |m| {
        m.iter()
            .find(|m| m["name"] == "pg3")
            .and_then(|m| m["lag"].as_u64())
            .filter(|l| *l > 100_000)
    });
    let lagging = c.patroni(json!({"leader": "pg3"}), &[]);
    // SAFETY: as above.
    unsafe { libc::kill(receiver, libc::SIGCONT) };
    refused(&lagging, "lagging candidate", "lags");
    wait_members("pg3 to catch up", |m| {
        m.iter()
            .find(|m| m["name"] == "pg3")
            .and_then(|m| m["lag"].as_u64())
            .filter(|l| *l == 0)
    });
    assert_eq!(role_of("pg1").0, "leader");

    // Switchover to pg2: confirmed on the cluster; the new leader writes.
    let check = ok(
        &c.patroni(json!({"leader": "pg2"}), &["--check"]),
        "switchover --check",
    );
    assert_eq!(check["changed"], true);
    assert_eq!(role_of("pg1").0, "leader", "check mode switched over");
    assert!(ok_playbook(
        &c.playbook("switchover.yml", &["-e", "new_leader=pg2"]),
        "switchover.yml"
    ));
    assert_eq!(role_of("pg2"), ("leader".into(), "running".into()));
    assert_eq!(role_of("pg1"), ("replica".into(), "streaming".into()));
    psql(
        &c.socket("pg2"),
        "insert into lag values ('after switchover')",
    )
    .unwrap();
    assert_eq!(
        ok(
            &c.patroni(json!({"leader": "pg2"}), &[]),
            "switchover again"
        )["changed"],
        false
    );

    // A scheduled switchover: registered, not repeated, and in the way of
    // another one until cancelled.
    let at = "2099-01-01T00:00:00+00:00";
    let scheduled = ok(
        &c.patroni(json!({"leader": "pg3", "scheduled_at": at}), &[]),
        "scheduled switchover",
    );
    assert_eq!(scheduled["changed"], true);
    let pending = rest("127.0.0.11:8008", "/cluster").unwrap()["scheduled_switchover"].clone();
    assert_eq!(pending["to"], "pg3", "{pending}");
    assert_eq!(
        ok(
            &c.patroni(
                json!({"leader": "pg3", "scheduled_at": "2099-01-01T00:00:00Z"}),
                &[]
            ),
            "scheduled again"
        )["changed"],
        false
    );
    refused(
        &c.patroni(json!({"leader": "pg1"}), &[]),
        "switchover over a scheduled one",
        "already scheduled",
    );
    assert_eq!(
        http_request("DELETE", "127.0.0.12:8008", "/switchover").map(|r| r.0),
        Some(200)
    );
    assert_eq!(role_of("pg2").0, "leader");

    // Synchronous mode: only the synchronous standby may take over.
    ok(
        &c.patroni(json!({"dynamic_config": {"synchronous_mode": true}}), &[]),
        "synchronous mode",
    );
    let sync = wait_members("a synchronous standby", |m| {
        m.iter()
            .find(|m| m["role"] == "sync_standby")
            .and_then(|m| m["name"].as_str().map(str::to_string))
    });
    let not_sync = if sync == "pg1" { "pg3" } else { "pg1" };
    refused(
        &c.patroni(json!({"leader": not_sync}), &[]),
        "switchover to an asynchronous replica",
        "not a synchronous standby",
    );
    // Every replica synchronous: the task returns once the leader chose
    // both, as the next task reads the cluster.
    ok(
        &c.patroni(
            json!({"dynamic_config": {"synchronous_node_count": 2}}),
            &[],
        ),
        "two synchronous standbys",
    );
    let (_, body) = http_get("127.0.0.11:8008", "/cluster").expect("pg1's REST API");
    let view: Value = serde_json::from_str(&body).unwrap();
    let syncs = view["members"]
        .as_array()
        .map(|ms| ms.iter().filter(|m| m["role"] == "sync_standby").count());
    assert_eq!(syncs, Some(2), "{view}");
    ok(
        &c.patroni(
            json!({"dynamic_config": {"synchronous_mode": false, "synchronous_node_count": null}}),
            &[],
        ),
        "asynchronous again",
    );
    wait_members("no synchronous standby", |m| {
        (!m.iter().any(|m| m["role"] == "sync_standby")).then_some(())
    });

    // A restart-requiring parameter, then restart: pending, replicas first.
    ok(
        &c.patroni(
            json!({"dynamic_config": {"postgresql": {"parameters": {"max_connections": 120}}}}),
            &[],
        ),
        "restart-requiring parameter",
    );
    wait_members("every member to report a pending restart", |m| {
        (m.iter().filter(|m| m["pending_restart"] == true).count() == 3).then_some(())
    });
    let restart = c.playbook(
        "maintenance.yml",
        &["-e", "paused=false", "-e", "restart_pending=true"],
    );
    assert!(restart.succeeded(), "{}", restart.transcript());
    let restarted = restart
        .events
        .iter()
        .find(|e| e.task == "Restart members with pending restarts")
        .expect("the restart task ran");
    let changes: Vec<String> = restarted.result["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        changes,
        ["restart pg1", "restart pg3", "restart pg2"],
        "replicas first, leader last"
    );
    wait_show(&c, "max_connections", "120");
    assert!(
        members().iter().all(|m| m["pending_restart"] != true),
        "{:?}",
        members()
    );
    assert_eq!(
        ok(
            &c.patroni(json!({"restart": "pending"}), &[]),
            "restart again"
        )["changed"],
        false
    );

    // reinit: a replica is re-cloned; the leader is refused.
    refused(
        &c.patroni(json!({"reinit": ["pg2"]}), &[]),
        "reinit of the leader",
        "is the leader",
    );
    let before = rest(node_api("pg3"), "/patroni").unwrap()["postmaster_start_time"].clone();
    let reinit = ok(&c.patroni(json!({"reinit": ["pg3"]}), &[]), "reinit pg3");
    assert_eq!(reinit["changed"], true);
    let after = rest(node_api("pg3"), "/patroni").unwrap();
    assert_ne!(
        after["postmaster_start_time"], before,
        "pg3 was not re-cloned"
    );
    assert_eq!(after["replication_state"], "streaming");
    assert_eq!(
        psql(&c.socket("pg3"), "select count(*) from lag")
            .ok()
            .as_deref(),
        Some("2001")
    );

    // A forced failover while pg2 leads: pg1 takes over, pg2 streams.
    let forced = ok(
        &c.patroni(json!({"failover_to": "pg1", "force": true}), &[]),
        "forced failover",
    );
    assert_eq!(forced["changed"], true);
    assert_eq!(role_of("pg1"), ("leader".into(), "running".into()));
    assert_eq!(role_of("pg2"), ("replica".into(), "streaming".into()));
    psql(
        &c.socket("pg1"),
        "insert into lag values ('after failover')",
    )
    .unwrap();
    assert_eq!(
        ok(
            &c.patroni(json!({"failover_to": "pg1"}), &[]),
            "failover to the leader"
        )["changed"],
        false
    );

    // Restart all, the leader by switchover first: every postmaster is new
    // and the old leader no longer leads.
    let starts = |n: &str| rest(node_api(n), "/patroni").unwrap()["postmaster_start_time"].clone();
    let before: Vec<Value> = ["pg1", "pg2", "pg3"].iter().map(|n| starts(n)).collect();
    let all = ok(
        &c.patroni(
            json!({"restart": "all", "restart_leader_by_switchover": true}),
            &[],
        ),
        "restart all by switchover",
    );
    let changes = all["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 4, "{all}");
    assert!(
        changes[2]
            .as_str()
            .unwrap()
            .starts_with("switchover from pg1 to "),
        "{all}"
    );
    assert_eq!(changes[3], "restart pg1");
    for (i, n) in ["pg1", "pg2", "pg3"].iter().enumerate() {
        assert_ne!(starts(n), before[i], "{n} was not restarted");
    }
    assert_ne!(role_of("pg1").0, "leader");
    wait_members("two streaming replicas after restarting all", |m| {
        (m.iter().filter(|m| m["state"] == "streaming").count() == 2).then_some(())
    });

    // reload is an action: always a change.
    assert_eq!(
        ok(&c.patroni(json!({"reload": true}), &[]), "reload")["changed"],
        true
    );

    // Removal: refused while members live; guarded by the identifier.
    let sysid = info["cluster"]["system_identifier"]
        .as_str()
        .unwrap()
        .to_string();
    refused(
        &c.patroni(json!({"state": "absent", "system_identifier": sysid}), &[]),
        "removal of a running cluster",
        "live members",
    );
    // Stopped members leave their keys until the ttl expires; no member's
    // REST API answers any more, and that is what removal asks.
    ok(&c.playbook("teardown.yml", &[]), "teardown");
    let keys = c.keys();
    assert!(!keys.is_empty());
    refused(
        &c.patroni(json!({"state": "absent"}), &[]),
        "removal without identifier",
        &format!("system_identifier: \"{sysid}\""),
    );
    refused(
        &c.patroni(json!({"state": "absent", "system_identifier": "123"}), &[]),
        "removal with a wrong identifier",
        "does not match",
    );
    let check = ok(
        &c.patroni(
            json!({"state": "absent", "system_identifier": sysid}),
            &["--check"],
        ),
        "removal --check",
    );
    assert_eq!(
        check["changes"].as_array().map(Vec::len),
        Some(keys.len()),
        "{check}"
    );
    assert_eq!(c.keys(), keys, "check mode deleted keys");
    let removed = ok(
        &c.patroni(json!({"state": "absent", "system_identifier": sysid}), &[]),
        "removal",
    );
    assert_eq!(removed["changed"], true);
    assert!(c.keys().is_empty(), "keys left: {:?}", c.keys());
    assert_eq!(
        ok(
            &c.patroni(json!({"state": "absent", "system_identifier": sysid}), &[]),
            "removal again"
        )["changed"],
        false
    );
}
