//! Settings that move where a running node is reached: its REST API
//! (address or port) and PostgreSQL's port. The module reaches Patroni where
//! it answers now, waits until it answers where configured and the DCS
//! publishes it, and predicts that in check mode; a node an earlier run
//! left answering at its old address is found and moved too.

use pgherd_e2e::{
    http_get, local_instance_args, local_nodes_test, local_settings, port_open, run_module,
    with_options, Etcd, ModuleRun,
};
use serde_json::{json, Value};

fn with_api(args: &Value, address: &str) -> Value {
    let mut a = args.clone();
    a["patroni"]["restapi"] = json!({"listen": address, "connect_address": address});
    a
}

fn member_api(dir: &std::path::Path, etcd: &str) -> String {
    let info = run_module(
        dir,
        "patroni",
        &json!({"cluster": "moves", "state": "info",
                "settings": {"patroni": {"etcd": {"hosts": [etcd]}}}}),
    );
    assert!(!info.failed(), "{info:?}");
    info.result["cluster"]["members"][0]["restapi"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn changes(run: &ModuleRun) -> String {
    run.result["changes"].to_string()
}

#[test]
fn a_moved_rest_api_and_port_are_reached_where_they_are() {
    let (dir, root, _reaper) = local_nodes_test("moves", &["127.0.0.11"]);
    let etcd = Etcd::start(&dir.path, 25_079, 25_080);
    let settings = local_settings(&root.join("pg1"), std::slice::from_ref(&etcd.client_addr));
    let base = local_instance_args(1, "moves", &settings);
    let up = run_module(&dir.path, "instance", &base);
    assert!(!up.failed(), "{up:?}");

    // The REST API moves to another port: predicted, then done.
    let moved = with_api(&base, "127.0.0.11:8010");
    let check = run_module(
        &dir.path,
        "instance",
        &with_options(moved.clone(), json!({"_ansible_check_mode": true})),
    );
    assert!(!check.failed(), "{check:?}");
    assert!(
        changes(&check).contains("its REST API moves from 127.0.0.11:8008 to 127.0.0.11:8010"),
        "{check:?}"
    );
    let run = run_module(&dir.path, "instance", &moved);
    assert!(!run.failed(), "{run:?}");
    assert_eq!(check.result["changes"], run.result["changes"]);
    assert_eq!(run.result["instance"]["role"], "primary", "{run:?}");
    assert!(http_get("127.0.0.11:8010", "/patroni").is_some_and(|(s, _)| s == 200));
    assert!(
        !port_open("127.0.0.11:8008"),
        "the old address still answers"
    );
    assert_eq!(member_api(&dir.path, &etcd.client_addr), "127.0.0.11:8010");
    let again = run_module(&dir.path, "instance", &moved);
    assert!(!again.failed() && !again.changed(), "{again:?}");

    // An earlier run wrote the next address and could not reload: the
    // file already says 8012, Patroni still answers at 8010.
    let config = root.join("pg1/etc/15-main.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("127.0.0.11:8010", "127.0.0.11:8012")).unwrap();
    let stuck = with_api(&base, "127.0.0.11:8012");
    let healed = run_module(&dir.path, "instance", &stuck);
    assert!(!healed.failed(), "{healed:?}");
    let c = changes(&healed);
    assert!(!c.contains("update"), "the file was already right: {c}");
    assert!(
        c.contains("its REST API moves from 127.0.0.11:8010 to 127.0.0.11:8012"),
        "{c}"
    );
    assert_eq!(member_api(&dir.path, &etcd.client_addr), "127.0.0.11:8012");

    // A move and a restart in one task.
    let restarted = run_module(
        &dir.path,
        "instance",
        &with_options(
            with_api(&base, "127.0.0.11:8014"),
            json!({"state": "restarted"}),
        ),
    );
    assert!(!restarted.failed(), "{restarted:?}");
    assert!(changes(&restarted).contains("restart PostgreSQL"));
    assert!(http_get("127.0.0.11:8014", "/patroni").is_some_and(|(s, _)| s == 200));

    // PostgreSQL's port: pending until a restart, PostgreSQL read where it
    // still listens meanwhile.
    let final_api = with_api(&base, "127.0.0.11:8014");
    let port = with_options(final_api.clone(), json!({"port": 5433}));
    let pending = run_module(&dir.path, "instance", &port);
    assert!(!pending.failed(), "{pending:?}");
    assert!(
        pending.warnings_text().is_empty(),
        "PostgreSQL is read where it listens: {pending:?}"
    );
    assert_eq!(
        pending.result["instance"]["pending_restart"], true,
        "{pending:?}"
    );
    assert!(pending.result["instance"]["pending_restart_parameters"]
        .to_string()
        .contains("port"));
    let restart = run_module(
        &dir.path,
        "instance",
        &with_options(port, json!({"state": "restarted"})),
    );
    assert!(!restart.failed(), "{restart:?}");
    assert!(port_open("127.0.0.11:5433"));
    let socket = root.join("pg1/run");
    let on_5433 = std::process::Command::new("/usr/lib/postgresql/15/bin/pg_isready")
        .args(["-h", &socket.display().to_string(), "-p", "5433"])
        .status()
        .unwrap();
    assert!(on_5433.success());
}
