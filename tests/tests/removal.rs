//! `state: absent` removes what the node had on its host, logs and the
//! directories made for it included, on a layout whose log directories are
//! shared; and on a node never deployed it changes and creates nothing.

use pgherd_e2e::{
    local_instance_args, local_nodes_test, local_settings, pids_mentioning, run_module, snapshot,
    with_options, Etcd,
};
use serde_json::json;

#[test]
fn absent_removes_logs_and_the_directories_made_for_the_node() {
    let (dir, root, _reaper) = local_nodes_test("absent-logs", &["127.0.0.12"]);
    let etcd = Etcd::start(&dir.path, 24_979, 24_980);
    let node = root.join("site");
    let r = node.display();
    // Another shape than the local inventory's: instance "billing", log
    // directories shared by every instance of the host (no {name}), data
    // under a directory per version.
    let mut settings = local_settings(&node, std::slice::from_ref(&etcd.client_addr));
    settings["postgresql"]["logdir"] = json!(format!("{r}/log/postgresql"));
    settings["postgresql"]["datadir"] = json!(format!("{r}/pg/{{version}}/{{name}}"));
    settings["patroni"]["logdir"] = json!(format!("{r}/log/patroni"));
    let args = with_options(
        local_instance_args(2, "ledger", &settings),
        json!({"name": "billing"}),
    );
    let up = run_module(&dir.path, "instance", &args);
    assert!(!up.failed(), "{up:?}");
    let pg_logs = node.join("log/postgresql");
    let names: Vec<String> = std::fs::read_dir(&pg_logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.is_empty()
            && names
                .iter()
                .all(|n| n.starts_with("postgresql-15-billing.")),
        "PostgreSQL's logs carry the instance's name in a shared directory: {names:?}"
    );
    assert!(node.join("log/patroni/patroni.log").exists());
    // Another instance's log in the shared directory stays.
    let other = pg_logs.join("postgresql-15-billing2.2026-12-01_000000.log");
    std::fs::write(&other, "another instance\n").unwrap();

    let check = run_module(
        &dir.path,
        "instance",
        &with_options(
            args.clone(),
            json!({"state": "absent", "_ansible_check_mode": true}),
        ),
    );
    assert!(!check.failed() && check.changed(), "{check:?}");
    let gone = run_module(
        &dir.path,
        "instance",
        &with_options(args.clone(), json!({"state": "absent"})),
    );
    assert!(!gone.failed() && gone.changed(), "{gone:?}");
    assert_eq!(
        check.result["changes"], gone.result["changes"],
        "check mode predicts the removal"
    );
    let changes = gone.result["changes"].to_string();
    assert!(
        changes.contains(&format!("remove empty directory {r}/pg/15")),
        "{changes}"
    );
    assert!(pids_mentioning(&r.to_string()).is_empty());
    // Left: the other instance's log and the site's shared directories.
    let mut left: Vec<String> = snapshot(&node)
        .into_iter()
        .map(|f| f.0.strip_prefix(&node).unwrap().display().to_string())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "data",
            "etc",
            "log",
            "log/patroni",
            "log/postgresql",
            "log/postgresql/postgresql-15-billing2.2026-12-01_000000.log",
            "pg",
            "run",
        ],
        "what absent left"
    );
    let again = run_module(
        &dir.path,
        "instance",
        &with_options(args, json!({"state": "absent"})),
    );
    assert!(!again.failed() && !again.changed(), "{again:?}");
}

#[test]
fn absent_on_a_node_never_deployed_creates_nothing() {
    let (dir, root, _reaper) = local_nodes_test("absent-never", &["127.0.0.13"]);
    std::fs::create_dir_all(&root).unwrap();
    let settings = local_settings(&root.join("nowhere"), &["127.0.0.1:1".to_string()]);
    let args = with_options(
        local_instance_args(3, "never", &settings),
        json!({"state": "absent"}),
    );
    let before = snapshot(&root);
    let run = run_module(&dir.path, "instance", &args);
    assert!(!run.failed() && !run.changed(), "{run:?}");
    assert_eq!(snapshot(&root), before, "absent created something");
}
