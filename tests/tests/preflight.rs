//! What can refuse an instance run does so before the first write: the
//! programs the settings name, directories that whoever writes them cannot
//! make or write; and a failure after writing reports what was written.

use std::os::unix::fs::PermissionsExt;

use pgherd_e2e::pki::Pki;
use pgherd_e2e::{
    local_instance_args, local_nodes_test, local_settings, pids_mentioning, run_module,
    run_module_as, snapshot, uid_of, with_options, Etcd,
};
use serde_json::{json, Value};

/// `settings` with the keys of `changes` (`section.key`) replaced.
fn set_settings(mut settings: Value, changes: &[(&str, Value)]) -> Value {
    for (path, value) in changes {
        let (section, key) = path.split_once('.').expect("section.key");
        settings[section][key] = value.clone();
    }
    settings
}

#[test]
fn a_data_directory_whose_parent_belongs_to_root_is_refused_before_writing() {
    let (dir, root, _reaper) = local_nodes_test("preflight-datadir", &["127.0.0.11"]);
    let etcd = Etcd::start(&dir.path, 24_779, 24_780);
    let node = root.join("pg1");
    // A parent made by root, as for a settings file, holding the data
    // directory; the pattern has no placeholder at all.
    let srv = node.join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    std::fs::set_permissions(&srv, std::fs::Permissions::from_mode(0o755)).unwrap();
    let settings = set_settings(
        local_settings(&node, std::slice::from_ref(&etcd.client_addr)),
        &[(
            "postgresql.datadir",
            json!(srv.join("pgdata").display().to_string()),
        )],
    );
    let args = local_instance_args(1, "preflight", &settings);
    let before = snapshot(&root);
    for check_mode in [true, false] {
        let run = run_module(
            &dir.path,
            "instance",
            &with_options(args.clone(), json!({"_ansible_check_mode": check_mode})),
        );
        assert!(run.failed() && run.code == Some(1), "{run:?}");
        let msg = run.msg();
        assert!(
            msg.contains(&format!(
                "postgresql.datadir: postgres creates {}/pgdata itself, but cannot write into {} \
                 (root:root mode 0755)",
                srv.display(),
                srv.display()
            )),
            "{msg}"
        );
        assert!(msg.contains("nothing was changed"), "{msg}");
        assert_eq!(run.result["changed"], false, "{run:?}");
        assert_eq!(snapshot(&root), before, "nothing may be written");
    }
    assert!(pids_mentioning(&node.display().to_string()).is_empty());

    // Given to postgres, as the message says, the same task converges.
    let postgres = uid_of("postgres");
    std::os::unix::fs::chown(&srv, Some(postgres), Some(postgres)).unwrap();
    let run = run_module(&dir.path, "instance", &args);
    assert!(!run.failed(), "{run:?}");
    assert!(srv.join("pgdata/PG_VERSION").exists());
}

#[test]
fn missing_programs_are_named_with_their_setting_before_writing() {
    let (dir, root, _reaper) = local_nodes_test("preflight-programs", &["127.0.0.12"]);
    let node = root.join("n2");
    let settings = set_settings(
        local_settings(&node, &["127.0.0.1:1".to_string()]),
        &[
            ("patroni.execpath", json!("/opt/nowhere/bin/patroni")),
            (
                "postgresql.bindir",
                json!("/usr/lib/postgresql/{version}/bin"),
            ),
        ],
    );
    // Version 16 is not installed here (15 is, and 17 for the upgrade's
    // tests): every program of its bin dir is missing, and Patroni too.
    let args = with_options(
        local_instance_args(2, "programs", &settings),
        json!({"version": "16", "state": "present"}),
    );
    let before = snapshot(&dir.path);
    for check_mode in [true, false] {
        let run = run_module(
            &dir.path,
            "instance",
            &with_options(args.clone(), json!({"_ansible_check_mode": check_mode})),
        );
        assert!(run.failed(), "{run:?}");
        let msg = run.msg();
        assert!(
            msg.contains("patroni.execpath: /opt/nowhere/bin/patroni does not exist"),
            "{msg}"
        );
        assert!(
            msg.contains("postgresql.bindir: /usr/lib/postgresql/16/bin/initdb does not exist")
                && msg.contains("postgresql-16"),
            "{msg}"
        );
        assert_eq!(run.result["changed"], false, "{run:?}");
        let after = snapshot(&dir.path);
        let written: Vec<_> = after
            .iter()
            .filter(|f| !f.0.to_string_lossy().contains("/args-"))
            .filter(|f| !before.contains(f))
            .collect();
        assert!(written.is_empty(), "written: {written:?}");
    }
}

#[test]
fn a_password_file_directory_its_user_cannot_write_is_refused_before_writing() {
    let (dir, root, _reaper) = local_nodes_test("preflight-passfile", &["127.0.0.13"]);
    let node = root.join("n3");
    let postgres = uid_of("postgres");
    std::fs::create_dir_all(node.join("locked")).unwrap();
    for d in [&root, &node] {
        std::os::unix::fs::chown(d, Some(postgres), Some(postgres)).unwrap();
    }
    // The module runs as postgres (become_user); the passfile's directory
    // belongs to root.
    std::fs::set_permissions(node.join("locked"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let settings = set_settings(
        local_settings(&node, &["127.0.0.1:1".to_string()]),
        &[(
            "postgresql.passfile",
            json!(node.join("locked/{name}.pgpass").display().to_string()),
        )],
    );
    let args = with_options(
        local_instance_args(3, "passfile", &settings),
        json!({"state": "present"}),
    );
    let before = snapshot(&root);
    let run = run_module_as(&dir.path, "instance", &args, postgres, postgres);
    assert!(run.failed() && run.code == Some(1), "{run:?}");
    let msg = run.msg();
    assert!(
        msg.contains(&format!(
            "postgresql.passfile: postgres cannot write into {}/locked (root:root mode 0755)",
            node.display()
        )),
        "{msg}"
    );
    assert_eq!(run.result["changed"], false, "{run:?}");
    assert_eq!(snapshot(&root), before, "nothing may be written");
}

#[test]
fn a_failed_bootstrap_states_initdbs_own_error_and_what_was_written() {
    let (dir, root, _reaper) = local_nodes_test("preflight-initdb", &["127.0.0.11"]);
    let etcd = Etcd::start(&dir.path, 24_879, 24_880);
    let node = root.join("pg1");
    let mut settings = local_settings(&node, std::slice::from_ref(&etcd.client_addr));
    settings["postgresql"]["initdb"] = json!({"locale": "xx_XX.UTF-8"});
    let args = with_options(
        local_instance_args(1, "initdb", &settings),
        json!({"wait_timeout": 60}),
    );
    let run = run_module(&dir.path, "instance", &args);
    assert!(run.failed(), "{run:?}");
    let msg = run.msg();
    assert!(
        msg.contains("initdb: error: invalid locale name \"xx_XX.UTF-8\""),
        "initdb's own error is stated: {msg}"
    );
    assert!(
        msg.contains("exited; errors reported: initdb: error:"),
        "before the log tails: {msg}"
    );
    assert_eq!(run.result["changed"], true, "{run:?}");
    let changes = run.result["changes"].to_string();
    assert!(changes.contains("15-main.yaml"), "{changes}");
}

#[test]
fn a_watchdog_the_host_lacks_is_refused_when_required_and_warned_when_automatic() {
    let (dir, root, _reaper) = local_nodes_test("preflight-watchdog", &["127.0.0.13"]);
    let etcd = Etcd::start(&dir.path, 25_779, 25_780);
    let node = root.join("wd3");
    let missing = node.join("dev/watchdog-none");
    let watchdog = |mode: &str| {
        set_settings(
            local_settings(&node, std::slice::from_ref(&etcd.client_addr)),
            &[(
                "patroni.watchdog",
                json!({"mode": mode, "device": missing.display().to_string()}),
            )],
        )
    };
    let required = local_instance_args(3, "watchdog", &watchdog("required"));
    let before = snapshot(&root);
    for check_mode in [true, false] {
        let run = run_module(
            &dir.path,
            "instance",
            &with_options(required.clone(), json!({"_ansible_check_mode": check_mode})),
        );
        assert!(run.failed(), "{run:?}");
        let msg = run.msg();
        assert!(
            msg.contains(&format!(
                "patroni.watchdog.mode: required, but there is no watchdog device at {}",
                missing.display()
            )) && msg.contains("set patroni.watchdog.mode to automatic"),
            "{msg}"
        );
        assert_eq!(run.result["changed"], false, "{run:?}");
        assert_eq!(snapshot(&root), before, "nothing may be written");
    }

    // automatic: the node runs, without a watchdog, and the task says so.
    let automatic = local_instance_args(3, "watchdog", &watchdog("automatic"));
    let run = run_module(&dir.path, "instance", &automatic);
    assert!(!run.failed(), "{run:?}");
    let warnings = run.result["warnings"].to_string();
    assert!(
        warnings.contains("patroni.watchdog.mode: automatic, but there is no watchdog device")
            && warnings.contains("Patroni runs without a watchdog"),
        "{warnings}"
    );
    assert_eq!(run.result["instance"]["role"], "primary", "{run:?}");
    let config =
        std::fs::read_to_string(node.join("etc/15-main.yaml")).expect("Patroni's configuration");
    assert!(config.contains("mode: automatic"), "{config}");
}

/// A certificate and its key given at the wrong places: each refused with
/// the file named, in check mode and in a real run, nothing written; the
/// right files then converge.
#[test]
fn certificates_that_cannot_work_are_refused_before_writing() {
    let (dir, root, _reaper) = local_nodes_test("preflight-certs", &["127.0.0.13"]);
    let pki = Pki::create(&dir.join("pki"));
    let (expired_cert, expired_key) = pki.expired_server();
    let etcd = Etcd::start(&dir.path, 24_781, 24_782);
    let node = root.join("pg3");
    let mut good = local_settings(&node, std::slice::from_ref(&etcd.client_addr));
    good["patroni"]["restapi"]["certfile"] = json!(pki.server_cert);
    good["patroni"]["restapi"]["keyfile"] = json!(pki.server_key);
    good["patroni"]["restapi"]["cafile"] = json!(pki.ca);
    good["patroni"]["ctl"] =
        json!({"certfile": pki.client_cert, "keyfile": pki.client_key, "cacert": pki.ca});
    let show = |p: &std::path::Path| p.display().to_string();
    let cases = [
        (
            set_settings(
                good.clone(),
                &[(
                    "patroni.restapi",
                    json!({
                        "certfile": pki.server_cert, "keyfile": pki.client_key, "cafile": pki.ca,
                    }),
                )],
            ),
            format!(
                "restapi.keyfile: {} is not the key of the certificate restapi.certfile: {}",
                show(&pki.client_key),
                show(&pki.server_cert)
            ),
        ),
        (
            set_settings(
                good.clone(),
                &[(
                    "patroni.ctl",
                    json!({
                        "certfile": pki.rogue_cert, "keyfile": pki.rogue_key, "cacert": pki.ca,
                    }),
                )],
            ),
            format!(
                "ctl.certfile: {} is not signed by the CA in {} (restapi.cafile)",
                show(&pki.rogue_cert),
                show(&pki.ca)
            ),
        ),
        (
            set_settings(
                good.clone(),
                &[(
                    "patroni.restapi",
                    json!({
                        "certfile": expired_cert, "keyfile": expired_key, "cafile": pki.ca,
                    }),
                )],
            ),
            format!(
                "restapi.certfile: {}: the REST API's certificate expired on ",
                show(&expired_cert)
            ),
        ),
    ];
    let before = snapshot(&root);
    for (settings, expected) in &cases {
        let args = local_instance_args(3, "certs", settings);
        for check_mode in [true, false] {
            let run = run_module(
                &dir.path,
                "instance",
                &with_options(args.clone(), json!({"_ansible_check_mode": check_mode})),
            );
            assert!(run.failed() && run.code == Some(1), "{run:?}");
            let msg = run.msg();
            assert!(msg.contains(expected.as_str()), "{expected}\n{msg}");
            assert!(msg.contains("nothing was changed"), "{msg}");
            assert_eq!(run.result["changed"], false, "{run:?}");
            assert_eq!(snapshot(&root), before, "nothing may be written");
        }
    }
    assert!(pids_mentioning(&node.display().to_string()).is_empty());

    // The right files: the same task converges, without a warning.
    let run = run_module(
        &dir.path,
        "instance",
        &local_instance_args(3, "certs", &good),
    );
    assert!(!run.failed(), "{run:?}");
    assert_eq!(run.warnings_text(), "", "{run:?}");
}

/// Patroni's etcd user that may not read, or only read, its cluster's
/// prefix: refused before writing, naming the user and the prefix.
#[test]
fn an_etcd_user_without_its_prefix_is_refused_before_writing() {
    let (dir, root, _reaper) = local_nodes_test("preflight-etcd-user", &["127.0.0.12"]);
    let etcd = Etcd::start(&dir.path, 24_783, 24_784);
    etcd.enable_auth("Pf-Root-1a", "elsewhere", "Pf-Else-2b", "/service/other/");
    let root_login = Some("root:Pf-Root-1a");
    for step in [
        vec!["role", "add", "reader"],
        vec![
            "role",
            "grant-permission",
            "reader",
            "--prefix=true",
            "read",
            "/service/ledger/",
        ],
        vec!["user", "add", "reader:Pf-Read-3c"],
        vec!["user", "grant-role", "reader", "reader"],
    ] {
        etcd.etcdctl(root_login, &step).expect("etcdctl");
    }
    let node = root.join("pg2");
    let settings = local_settings(&node, std::slice::from_ref(&etcd.client_addr));
    let before = snapshot(&root);
    for (user, password) in [("elsewhere", "Pf-Else-2b"), ("reader", "Pf-Read-3c")] {
        let mut args = local_instance_args(2, "ledger", &settings);
        args["patroni"]["etcd"] = json!({"username": user, "password": password});
        let run = run_module(&dir.path, "instance", &args);
        assert!(run.failed() && !run.changed(), "{run:?}");
        let msg = run.msg();
        assert!(msg.contains("permission denied"), "{msg}");
        assert!(
            msg.contains(&format!(
                "logs in to etcd as {user} and must read and write everything under \
                 /service/ledger/: grant that user a role with readwrite on that prefix"
            )),
            "{msg}"
        );
        assert!(!msg.contains(password), "{msg}");
        assert_eq!(snapshot(&root), before, "nothing may be written");
    }
}
