//! `restart: pending` right after the change that caused it, in one play:
//! the instance tasks return only once Patroni and the DCS report the
//! pending restart PostgreSQL reports, so the restart finds every member,
//! restarts the replicas first and the leader last, and confirms that no
//! member is still pending.

use pgherd_e2e::{
    create_three_nodes, finish_module, http_get, local_instance_args, local_nodes_test,
    local_settings, postmaster_start, run_module, spawn_module, with_options, write_args_file,
    EtcdCluster,
};
use serde_json::{json, Value};

#[test]
fn restart_pending_right_after_the_change_restarts_every_member_leader_last() {
    let nodes = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];
    let (dir, root, _reaper) = local_nodes_test("restart-pending", &nodes);
    let etcd = EtcdCluster::start(&dir.path, 25_179);
    let hosts = etcd.client_addrs();
    let args_of = |n: u8, extra: Value| {
        let settings = local_settings(&root.join(format!("pg{n}")), &hosts);
        with_options(
            local_instance_args(n, "orders", &settings),
            with_options(json!({"name": "core"}), extra),
        )
    };
    create_three_nodes(&dir.path, |n| args_of(n, json!({})));
    let apis: Vec<String> = nodes.iter().map(|h| format!("{h}:8008")).collect();
    let started: Vec<Option<String>> = apis.iter().map(|a| postmaster_start(a)).collect();

    // All three at once, as a play's task on every host.
    let change = json!({"parameters": {"shared_buffers": "48MB"}});
    let runs: Vec<_> = (1..=3)
        .map(|n| {
            let file = write_args_file(&dir.path, &format!("sb{n}"), &args_of(n, change.clone()));
            spawn_module("instance", &file)
        })
        .collect();
    for r in runs {
        let r = finish_module(r);
        assert!(!r.failed(), "{r:?}");
        assert_eq!(r.result["instance"]["pending_restart"], true, "{r:?}");
        assert_eq!(
            r.result["instance"]["pending_restart_parameters"],
            json!(["shared_buffers"]),
            "{r:?}"
        );
    }

    let restart = run_module(
        &dir.path,
        "patroni",
        &json!({"cluster": "orders", "restart": "pending",
                "settings": {"patroni": {"etcd": {"hosts": hosts}}}}),
    );
    assert!(!restart.failed() && restart.changed(), "{restart:?}");
    let leader = restart.result["cluster"]["leader"]
        .as_str()
        .unwrap()
        .to_string();
    let order: Vec<String> = restart.result["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str()?.strip_prefix("restart ").map(str::to_string))
        .collect();
    assert_eq!(order.len(), 3, "every member restarted: {restart:?}");
    assert_eq!(order[2], leader, "the leader last: {order:?}");
    // What the cluster says, not what the module said.
    for (api, before) in apis.iter().zip(&started) {
        assert_ne!(&postmaster_start(api), before, "{api} was not restarted");
        assert!(before.is_some(), "{api} answered before the restart");
    }
    for m in restart.result["cluster"]["members"].as_array().unwrap() {
        assert_eq!(m["pending_restart"], false, "{m}");
    }
    let (_, body) = http_get("127.0.0.11:8008", "/patroni").unwrap();
    assert!(!body.contains("\"pending_restart\": true"), "{body}");
}
