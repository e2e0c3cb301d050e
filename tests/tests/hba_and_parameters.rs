//! What PostgreSQL would drop or reject is refused: an invalid pg_hba line
//! or a misspelled parameter before anything is written; a line only
//! PostgreSQL itself rejects, after the reload, from what PostgreSQL says,
//! at this run and at the next ones.

use pgherd_e2e::{
    local_instance_args, local_nodes_test, local_settings, run_module, snapshot, with_options, Etcd,
};
use serde_json::json;

#[test]
fn invalid_pg_hba_lines_and_unknown_parameters_are_refused() {
    let (dir, root, _reaper) = local_nodes_test("hba-params", &["127.0.0.12"]);
    let etcd = Etcd::start(&dir.path, 25_379, 25_380);
    let node = root.join("ledger-a");
    let settings = local_settings(&node, std::slice::from_ref(&etcd.client_addr));
    let base = with_options(
        local_instance_args(2, "ledger", &settings),
        json!({"name": "books", "pg_hba": ["host all app 10.0.0.0/8 scram-sha-256"],
               "parameters": {"pgherd.flavour": "plain"}}),
    );
    let up = run_module(&dir.path, "instance", &base);
    assert!(!up.failed(), "{up:?}");

    // Refused before writing, in check mode as in a real run.
    let before = snapshot(&node.join("etc"));
    for (extra, named) in [
        (
            json!({"pg_hba": ["host all app 10.0.0.0/99 scram-sha-256", "host all app 10.1.0.0/16 md5"]}),
            "pg_hba[0] (\"host all app 10.0.0.0/99 scram-sha-256\"): 10.0.0.0/99: the mask length must be 0 to 32",
        ),
        (
            json!({"pg_hba": ["host all app 10.0.0.0/8 scram"]}),
            "\"scram\" is not an authentication method",
        ),
        (
            json!({"parameters": {"work_mme": "8MB"}}),
            "parameters.work_mme is not a parameter of PostgreSQL 15: did you mean work_mem?",
        ),
        (
            json!({"dynamic_conf_settings": {"postgresql": {"parameters": {"max_conections": 50}}}}),
            "dynamic_conf_settings.postgresql.parameters.max_conections is not a parameter",
        ),
    ] {
        for check_mode in [true, false] {
            let run = run_module(
                &dir.path,
                "instance",
                &with_options(
                    with_options(base.clone(), extra.clone()),
                    json!({"_ansible_check_mode": check_mode}),
                ),
            );
            assert!(run.failed() && !run.changed(), "{run:?}");
            assert!(run.msg().contains(named), "{named}: {}", run.msg());
        }
        assert_eq!(snapshot(&node.join("etc")), before, "{extra}: a file was written");
    }

    // A line only PostgreSQL rejects: the run says so from
    // pg_hba_file_rules, and so does the next one, with nothing to write.
    let ldap = with_options(
        base.clone(),
        json!({"pg_hba": ["host all app 10.0.0.0/8 ldap", "host all app 10.1.0.0/16 md5"]}),
    );
    for attempt in ["first", "second"] {
        let run = run_module(&dir.path, "instance", &ldap);
        assert!(run.failed(), "{attempt}: {run:?}");
        let msg = run.msg();
        assert!(
            msg.contains("PostgreSQL rejects the pg_hba.conf of 15-books (pg2)")
                && msg.contains("ldap"),
            "{attempt}: {msg}"
        );
        assert_eq!(
            run.result["changed"],
            attempt == "first",
            "{attempt}: {run:?}"
        );
    }
    let fixed = run_module(&dir.path, "instance", &base);
    assert!(!fixed.failed() && fixed.changed(), "{fixed:?}");
    let again = run_module(&dir.path, "instance", &base);
    assert!(!again.failed() && !again.changed(), "{again:?}");
}
