//! Patroni's tags as instance options on a real 3-node cluster: a
//! cascade (pg3 streams from pg2, seen in pg2's pg_stat_replication), its
//! fallback to the leader while pg2 is down, `noloadbalance` answered by
//! the REST API, a tag changed on a running member published before the
//! task returns (so the switchover that follows refuses it), `pgherd
//! status` showing the tree, and the refusals (itself, a cycle, a member
//! the DCS does not know, contradicting tags) changing nothing. Then a
//! member leaves the running cluster (`absent`): the leader refused, the
//! member's key gone from the DCS and the others' view when the task
//! returns.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use pgherd_e2e::{
    create_three_nodes, http_get, local_instance_args, local_nodes_test, local_settings,
    pgherd_bin, psql, run_module, wait_for, with_options, EtcdCluster,
};
use serde_json::{json, Value};

const CLUSTER: &str = "reports";

/// Who streams from the local node whose root is `node_root`.
fn downstream(node_root: &Path) -> Vec<String> {
    psql(
        &node_root.join("run"),
        "select application_name from pg_stat_replication where state = 'streaming' order by 1",
    )
    .map(|s| s.lines().map(str::to_string).collect())
    .unwrap_or_default()
}

fn wait_downstream(root: &Path, node: &str, expected: &[&str]) {
    let at = root.join(node);
    wait_for(
        &format!("{node} to stream WAL to exactly {expected:?}"),
        Duration::from_secs(60),
        || (downstream(&at) == expected).then_some(()),
        || format!("{:?}", downstream(&at)),
    );
}

fn status_code(addr: &str, path: &str) -> Option<u16> {
    http_get(addr, path).map(|(code, _)| code)
}

#[test]
fn tags_cascade_fall_back_refuse_reach_the_dcs_and_a_member_leaves_the_running_cluster() {
    let nodes = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];
    let (dir, root, _reaper) = local_nodes_test("tags", &nodes);
    let etcd = EtcdCluster::start(&dir.path, 25_279);
    let hosts = etcd.client_addrs();
    let args_of = |n: u8, tags: Value| {
        let settings = local_settings(&root.join(format!("pg{n}")), &hosts);
        let mut args = with_options(
            local_instance_args(n, CLUSTER, &settings),
            json!({"name": "ledger"}),
        );
        if !tags.is_null() {
            args["patroni"]["tags"] = tags;
        }
        args
    };
    let pg3_tags = json!({"replicatefrom": "pg2", "noloadbalance": true});
    create_three_nodes(&dir.path, |n| {
        args_of(
            n,
            if n == 3 {
                pg3_tags.clone()
            } else {
                Value::Null
            },
        )
    });
    let config = |n: u8| root.join(format!("pg{n}/etc/15-ledger.yaml"));
    let patroni = |args: Value| {
        let mut args = args;
        args["cluster"] = json!(CLUSTER);
        args["settings"] = json!({"patroni": {"etcd": {"hosts": hosts}}});
        run_module(&dir.path, "patroni", &args)
    };

    // The cascade: pg3 streams from pg2, not from the leader.
    wait_downstream(&root, "pg2", &["pg3"]);
    wait_downstream(&root, "pg1", &["pg2"]);
    assert_eq!(
        status_code("127.0.0.13:8008", "/replica"),
        Some(503),
        "noloadbalance"
    );
    assert_eq!(status_code("127.0.0.12:8008", "/replica"), Some(200));
    let info = patroni(json!({"state": "info"}));
    assert!(!info.failed(), "{info:?}");
    let pg3 = info.result["cluster"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "pg3")
        .cloned()
        .unwrap();
    assert_eq!(pg3["tags"], pg3_tags, "{pg3}");
    let status = Command::new(pgherd_bin())
        .args(["-p", config(1).to_str().unwrap(), "status"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&status.stdout);
    let names: Vec<&str> = shown
        .lines()
        .skip(2)
        .map(|l| l.split("  127.").next().unwrap_or_default().trim_end())
        .collect();
    assert_eq!(names, ["pg1", "+ pg2", "  + pg3"], "{shown}");
    assert!(
        shown.contains("noloadbalance, replicatefrom: pg2"),
        "{shown}"
    );

    // The upstream stopped: pg3 streams from the leader; back again, from pg2.
    let stop2 = run_module(
        &dir.path,
        "instance",
        &with_options(args_of(2, Value::Null), json!({"state": "stopped"})),
    );
    assert!(!stop2.failed(), "{stop2:?}");
    wait_downstream(&root, "pg1", &["pg3"]);
    let start2 = run_module(&dir.path, "instance", &args_of(2, Value::Null));
    assert!(!start2.failed(), "{start2:?}");
    wait_downstream(&root, "pg2", &["pg3"]);

    // Refusals, each before anything is written.
    let before = std::fs::read(config(3)).unwrap();
    let refusals = [
        (
            3,
            json!({"replicatefrom": "pg3"}),
            "names this node (pg3) itself",
        ),
        (
            3,
            json!({"replicatefrom": "pg9"}),
            "pg9 is not a member of cluster reports",
        ),
        (
            3,
            json!({"nofailover": true, "failover_priority": 2}),
            "contradict each other",
        ),
        (
            3,
            json!({"failover_priority": -1}),
            "0 (never promoted) or more",
        ),
    ];
    for (n, tags, reason) in refusals {
        let run = run_module(&dir.path, "instance", &args_of(n, tags.clone()));
        assert!(run.failed(), "{tags} should be refused: {run:?}");
        assert!(
            run.msg().contains(reason),
            "{tags}: {reason:?} not in {:?}",
            run.msg()
        );
        assert_eq!(
            std::fs::read(config(n)).unwrap(),
            before,
            "{tags} wrote pg3's configuration"
        );
    }
    let config2 = std::fs::read(config(2)).unwrap();
    let cycle = run_module(
        &dir.path,
        "instance",
        &args_of(2, json!({"replicatefrom": "pg3"})),
    );
    assert!(cycle.failed(), "{cycle:?}");
    assert!(cycle.msg().contains("pg2 -> pg3 -> pg2"), "{}", cycle.msg());
    assert_eq!(
        std::fs::read(config(2)).unwrap(),
        config2,
        "the cycle wrote pg2's configuration"
    );

    // A tag changed on a running member: check mode predicts it and
    // writes nothing; the run returns once the DCS publishes it, so the
    // switchover right after is refused by the tag, not by chance.
    let kept = json!({"replicatefrom": "pg2", "noloadbalance": true, "nofailover": true});
    let check = run_module(
        &dir.path,
        "instance",
        &with_options(
            args_of(3, kept.clone()),
            json!({"_ansible_check_mode": true}),
        ),
    );
    assert!(!check.failed() && check.changed(), "{check:?}");
    assert_eq!(
        std::fs::read(config(3)).unwrap(),
        before,
        "check mode wrote the configuration"
    );
    let changed = run_module(&dir.path, "instance", &args_of(3, kept.clone()));
    assert!(!changed.failed() && changed.changed(), "{changed:?}");
    let refused = patroni(json!({"leader": "pg3"}));
    assert!(refused.failed(), "{refused:?}");
    assert!(
        refused
            .msg()
            .contains("pg3 may not be promoted (tags nofailover: true)"),
        "{}",
        refused.msg()
    );
    let again = run_module(&dir.path, "instance", &args_of(3, kept));
    assert!(
        !again.failed() && !again.changed(),
        "a second run changed: {again:?}"
    );

    // A priority of 0 instead: nofailover is left out of the file (the two
    // would contradict each other), and pg3 still may not be promoted.
    let priority = run_module(
        &dir.path,
        "instance",
        &args_of(3, json!({"replicatefrom": "pg2", "failover_priority": 0})),
    );
    assert!(!priority.failed() && priority.changed(), "{priority:?}");
    let written: serde_yaml::Value =
        serde_yaml::from_slice(&std::fs::read(config(3)).unwrap()).unwrap();
    assert!(
        written["tags"].get("nofailover").is_none(),
        "{:?}",
        written["tags"]
    );
    let refused = patroni(json!({"leader": "pg3"}));
    assert!(
        refused.msg().contains("tags failover_priority: 0"),
        "{}",
        refused.msg()
    );
    // pg2 may: the switchover goes there, and pg3 follows it (now the leader).
    let switched = patroni(json!({"leader": "pg2"}));
    assert!(!switched.failed(), "{switched:?}");
    wait_downstream(&root, "pg2", &["pg1", "pg3"]);

    // A member leaves the running cluster: the leader may not (switch
    // over first); check mode foresees the member's key going and changes
    // nothing; the run returns once neither the DCS nor the others list
    // it (Patroni would show it stopped until its key's lease ends).
    let absent = |n: u8, extra: Value| {
        let args = with_options(args_of(n, Value::Null), json!({"state": "absent"}));
        run_module(&dir.path, "instance", &with_options(args, extra))
    };
    let leader_out = absent(2, json!({}));
    assert!(leader_out.failed(), "{leader_out:?}");
    assert!(
        leader_out
            .msg()
            .contains("pg2 leads the cluster's other members (pg1, pg3): switch over first"),
        "{}",
        leader_out.msg()
    );
    assert!(
        config(2).exists(),
        "the refused removal removed pg2's configuration"
    );
    let foreseen = absent(3, json!({"_ansible_check_mode": true}));
    assert!(!foreseen.failed() && foreseen.changed(), "{foreseen:?}");
    assert!(
        foreseen.result["changes"]
            .to_string()
            .contains("remove member pg3 from cluster reports in the DCS"),
        "{foreseen:?}"
    );
    assert!(config(3).exists());
    let listed = |api: &str| {
        http_get(api, "/cluster")
            .map(|(_, body)| {
                body.contains("\"name\": \"pg3\"") || body.contains("\"name\":\"pg3\"")
            })
            .unwrap_or(true)
    };
    assert!(listed("127.0.0.12:8008"));
    let gone = absent(3, json!({}));
    assert!(!gone.failed() && gone.changed(), "{gone:?}");
    assert!(!config(3).exists());
    for api in ["127.0.0.11:8008", "127.0.0.12:8008"] {
        assert!(!listed(api), "{api} still lists pg3 after the run returned");
    }
    let info = patroni(json!({"state": "info"}));
    let names: Vec<&str> = info.result["cluster"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, ["pg1", "pg2"], "{info:?}");
}
