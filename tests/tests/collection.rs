//! The collection as users get it: ansible-doc lists and shows both modules
//! from the generated docs, a task with a misspelled option fails on the
//! controller before anything reaches the host, and the tarball built by
//! ansible-galaxy installs into a fresh path and runs a playbook from there.

use std::process::Command;

use pgherd_e2e::{
    ansible_playbook, ansible_playbook_env, ansible_playbook_from, assert_collection_is_fresh,
    collections_path, local_nodes_test, repo_root, venv_bin, Etcd, TestDir,
};
use serde_json::json;
use serde_json::Value;

fn ansible_doc(collections: &std::path::Path, module: &str) -> Value {
    let out = Command::new(venv_bin("ansible-doc"))
        .args(["--json", module])
        .env("ANSIBLE_COLLECTIONS_PATH", collections)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ansible-doc {module}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v[module].clone()
}

/// `ansible-doc -l` of the collection found under `collections`: its
/// standard output and error.
fn ansible_doc_list(collections: &std::path::Path) -> (String, String) {
    let out = Command::new(venv_bin("ansible-doc"))
        .args(["-l", "pgherd.cluster"])
        .env("ANSIBLE_COLLECTIONS_PATH", collections)
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_lists_both_modules(collections: &std::path::Path) {
    let (listed, warnings) = ansible_doc_list(collections);
    for line in [
        "pgherd.cluster.instance A PostgreSQL instance managed by Patroni",
        "pgherd.cluster.patroni  Cluster-wide operations on a Patroni cluster",
    ] {
        assert!(
            listed.contains(line),
            "{line:?} not listed:\n{listed}{warnings}"
        );
    }
    assert!(
        !warnings.contains("WARNING"),
        "ansible-doc -l warns: {warnings}"
    );
}

#[test]
fn ansible_doc_lists_the_modules() {
    assert_collection_is_fresh();
    assert_lists_both_modules(&collections_path());
}

#[test]
fn misspelled_options_fail_on_the_controller_before_any_transfer() {
    assert_collection_is_fresh();
    let dir = TestDir::new("controller-check");
    // A host nothing answers for: a task that reached it would come back
    // unreachable, not failed with the option named.
    let inventory = dir.join("inventory.yml");
    std::fs::write(
        &inventory,
        "all:\n  hosts:\n    db7:\n      ansible_host: 127.0.0.1\n      ansible_port: 1\n      \
         ansible_user: nobody\n      ansible_connection: ssh\n",
    )
    .unwrap();
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "instance",
            json!({"name": "main", "surole_pasword": "Ctl-Secret-1x"}),
            vec!["unsupported option surole_pasword", "surole_password"],
        ),
        (
            "instance",
            json!({"name": "main", "port": "not-a-port"}),
            vec!["'port'"],
        ),
        (
            "instance",
            json!({"name": "main", "state": "running"}),
            vec!["state"],
        ),
        ("instance", json!({"port": 5433}), vec!["name"]),
        (
            "instance",
            json!({"name": "main", "patroni": {"restapi": {"lisen": "h:1"}}}),
            vec!["unsupported option patroni.restapi.lisen in 'patroni.restapi'"],
        ),
        (
            "instance",
            json!({"name": "main", "restore": {"set": "x"}}),
            vec!["from"],
        ),
        (
            "patroni",
            json!({"cluster": "c", "leader": "pg2", "failover_to": "pg3"}),
            vec!["leader", "failover_to"],
        ),
        (
            "patroni",
            json!({"cluster": "c", "restapi_username": "u"}),
            vec!["restapi_password"],
        ),
        (
            "patroni",
            json!({"cluster": "c", "wait_timeout": "soon"}),
            vec!["wait_timeout"],
        ),
    ];
    for (i, (module, args, named)) in cases.iter().enumerate() {
        let playbook = pgherd_e2e::one_task_playbook(
            &dir.path,
            &format!("case{i}"),
            "db7",
            &format!("pgherd.cluster.{module}"),
            args,
        );
        let run = ansible_playbook(&dir.path, &playbook, &inventory, &[]);
        let failed = run.failed_tasks();
        assert_eq!(failed.len(), 1, "case {i}: {}", run.transcript());
        assert_eq!(failed[0].status, "failed", "case {i}: {}", run.transcript());
        let msg = failed[0].result["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains("checked on the controller: nothing was sent to db7"),
            "case {i}: {msg}"
        );
        for n in named {
            assert!(msg.contains(n), "case {i}: {n:?} not named: {msg}");
        }
        assert!(!run.transcript().contains("Ctl-Secret-1x"), "case {i}");
        // The module itself, on a host, refuses the same task naming the
        // same option: one spec.
        let direct = pgherd_e2e::run_module(&dir.path, module, args);
        assert!(
            direct.failed(),
            "case {i}: the module accepts it: {direct:?}"
        );
        for n in named {
            assert!(
                direct.msg().contains(n.trim_matches('\'')),
                "case {i}: the module does not name {n:?}: {}",
                direct.msg()
            );
        }
    }
}

#[test]
fn ansible_doc_shows_every_option_and_return_value() {
    let instance = ansible_doc(&collections_path(), "pgherd.cluster.instance");
    let options = instance["doc"]["options"].as_object().unwrap();
    for o in [
        "name",
        "state",
        "patroni",
        "surole_password",
        "wait_timeout",
        "settings",
    ] {
        assert!(options.contains_key(o), "instance option {o} undocumented");
    }
    assert_eq!(
        options["state"]["choices"].as_array().map(Vec::len),
        Some(5)
    );
    assert!(instance["return"]["instance"]["contains"]["pending_restart"].is_object());
    assert!(instance["examples"]
        .as_str()
        .is_some_and(|e| e.contains("pgherd.cluster.instance:")));
    let patroni = ansible_doc(&collections_path(), "pgherd.cluster.patroni");
    for o in [
        "cluster",
        "dynamic_config",
        "leader",
        "failover_to",
        "paused",
        "restart",
        "reinit",
        "system_identifier",
    ] {
        assert!(
            patroni["doc"]["options"][o].is_object(),
            "patroni option {o} undocumented"
        );
    }
}

#[test]
fn the_built_tarball_installs_and_runs() {
    assert_collection_is_fresh();
    let dir = TestDir::new("galaxy");
    let build = Command::new(venv_bin("ansible-galaxy"))
        .args(["collection", "build", "--output-path"])
        .arg(&dir.path)
        .arg(collections_path().join("ansible_collections/pgherd/cluster"))
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let tarball = dir.join("pgherd-cluster-0.1.0.tar.gz");
    let installed = dir.join("installed");
    let install = Command::new(venv_bin("ansible-galaxy"))
        .args(["collection", "install", "-p"])
        .arg(&installed)
        .arg(&tarball)
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let modules = installed.join("ansible_collections/pgherd/cluster/plugins/modules");
    for m in ["instance", "patroni", "instance.py", "patroni.py"] {
        assert!(
            modules.join(m).exists(),
            "{m} missing from the installed collection"
        );
    }
    assert!(
        ansible_doc(&installed, "pgherd.cluster.patroni")["doc"]["options"]["leader"].is_object()
    );
    assert_lists_both_modules(&installed);
    assert!(installed
        .join("ansible_collections/pgherd/cluster/docs/settings.md")
        .exists());

    // A playbook runs the installed modules.
    let node = dir.join("node");
    let inventory = dir.join("inventory.yml");
    std::fs::write(
        &inventory,
        format!(
            "all:\n  hosts:\n    pg1:\n      ansible_connection: local\n      ansible_python_interpreter: /usr/bin/python3\n      \
             ansible_host: 127.0.0.11\n      surole_password: Gal-Su-1x\n      replrole_password: Gal-Re-2y\n      pg_parameters: {{}}\n      \
             pgherd_settings:\n        postgresql: {{datadir: '{n}/data/{{version}}/{{name}}', socket_directory: '{n}/run', \
             logdir: '{n}/log/pg', passfile: '{n}/etc/{{version}}-{{name}}.pgpass'}}\n        \
             patroni: {{execpath: '{patroni}', configpath: '{n}/etc/{{version}}-{{name}}.yaml', logdir: '{n}/log/patroni', \
             piddir: '{n}/run', pgpass: '{n}/data/{{version}}-{{name}}.pgpass', ttl: 20, loop_wait: 2, retry_timeout: 5}}\n",
            n = node.display(),
            patroni = venv_bin("patroni").display()
        ),
    )
    .unwrap();
    let run = ansible_playbook_from(
        &installed,
        &dir.path,
        &repo_root().join("tests/playbooks/instance_present.yml"),
        &inventory,
        &[],
    );
    assert!(run.succeeded(), "{}", run.transcript());
    assert_eq!(run.changed_tasks().len(), 1);
    assert!(node.join("etc/15-main.yaml").exists());
}

#[test]
fn the_example_inventory_parses_and_site_yml_checks() {
    let inventory = repo_root().join("playbooks/inventories/example");
    let out = Command::new(venv_bin("ansible-inventory"))
        .arg("-i")
        .arg(&inventory)
        .arg("--list")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["primary"]["hosts"], serde_json::json!(["pg1"]));
    assert_eq!(v["replica"]["hosts"], serde_json::json!(["pg2", "pg3"]));
    for playbook in [
        "bootstrap.yml",
        "site.yml",
        "switchover.yml",
        "maintenance.yml",
        "teardown.yml",
    ] {
        let check = Command::new(venv_bin("ansible-playbook"))
            .args(["--syntax-check", "-i"])
            .arg(&inventory)
            .arg(repo_root().join("playbooks").join(playbook))
            .env("ANSIBLE_COLLECTIONS_PATH", collections_path())
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{playbook}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

/// The tasks of a module's EXAMPLES, as ansible-doc shows them.
fn examples(module: &str) -> Vec<Value> {
    let text = ansible_doc(&collections_path(), module)["examples"]
        .as_str()
        .expect("EXAMPLES")
        .to_string();
    let tasks: Vec<Value> = serde_yaml::from_str(&text).expect("EXAMPLES is a YAML task list");
    assert!(!tasks.is_empty());
    tasks
}

#[test]
fn module_examples_run_on_a_real_cluster() {
    let (dir, root, _reaper) =
        local_nodes_test("examples", &["127.0.0.11", "127.0.0.12", "127.0.0.13"]);
    let etcd = Etcd::start(&dir.path, 24_879, 24_880);
    let instance = examples("pgherd.cluster.instance");
    let patroni = examples("pgherd.cluster.patroni");
    let etcd_tasks = examples("pgherd.cluster.etcd");
    assert_eq!(
        (instance.len(), patroni.len(), etcd_tasks.len()),
        (5, 8, 3),
        "the lifecycle below expects these examples"
    );

    // The examples as a user would run them, with the local settings as
    // module defaults (inline), in the order of a cluster's life.
    let defaults = json!({
        "pgherd.cluster.instance": {"settings": "{{ pgherd_settings }}"},
        "pgherd.cluster.patroni": {"settings": "{{ pgherd_settings }}"},
        "pgherd.cluster.etcd": {"settings": "{{ pgherd_settings }}"},
    });
    let play = |name: &str, hosts: &str, tasks: Vec<Value>| json!({"name": name, "hosts": hosts, "gather_facts": false, "module_defaults": defaults, "tasks": tasks});
    let members_gone = json!({
        "name": "Wait until no member key is left",
        "ansible.builtin.command": format!(
            "etcdctl --endpoints=http://{} get --prefix --keys-only /service/main/members/",
            etcd.client_addr
        ),
        "register": "members", "until": "members.stdout == ''", "retries": 60, "delay": 1,
        "changed_when": false,
    });
    let playbook = json!([
        play("Start the primary", "primary", vec![instance[0].clone()]),
        play("Start the replicas", "replica", vec![instance[0].clone()]),
        play("Change parameters", "all", vec![instance[1].clone()]),
        // Nothing runs another release than the one installed here.
        play("Minor upgrade", "all", vec![instance[2].clone()]),
        play("Operate the cluster", "pg1", patroni[..6].to_vec()),
        play(
            "Stop and remove the nodes",
            "all",
            vec![instance[3].clone(), instance[4].clone()]
        ),
        // patroni[6], the backup, needs pgBackRest: tests/pgbackrest.rs.
        play(
            "Remove the cluster from etcd",
            "pg1",
            vec![members_gone, patroni[7].clone()]
        ),
        // Last: authentication on would lock the plays above out.
        play("Secure etcd", "pg1", etcd_tasks.clone()),
    ]);
    let path = dir.join("examples.yml");
    std::fs::write(&path, playbook.to_string()).unwrap();
    let vars = json!({
        "pgherd_local_root": root,
        "pgherd_etcd_hosts": [etcd.client_addr],
        "vault_surole_password": "Ex-Su-3k",
        "vault_replrole_password": "Ex-Re-4m",
        "vault_rewind_password": "Ex-Rw-5n",
        "etcd_root_password": "Ex-Et-6p",
        "patroni_etcd_password": "Ex-Pe-7q",
        "etcd_members": [{"name": "e2e-24879", "peer_urls": ["http://127.0.0.1:24880"]}],
    })
    .to_string();
    let run = ansible_playbook(
        &dir.path,
        &path,
        &repo_root().join("playbooks/inventories/local"),
        &["-e", &vars],
    );
    assert!(run.succeeded(), "{}", run.transcript());
    let changed = |task: &str| {
        run.events
            .iter()
            .filter(|e| e.task == task)
            .map(|e| e.changed())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        changed("Switch over to pg2, checked before and confirmed after"),
        [true]
    );
    // (Its options drop the parameters the example before set: a
    // reload, no restart.)
    let minor: Vec<&Value> = run
        .events
        .iter()
        .filter(|e| e.task.starts_with("After new packages, restart what runs"))
        .map(|e| &e.result)
        .collect();
    assert_eq!(minor.len(), 3);
    for r in minor {
        assert_eq!(r["instance"]["outdated"], json!([]), "{r}");
        assert!(!r["changes"].to_string().contains("restart"), "{r}");
    }
    assert_eq!(
        changed("Remove a stopped cluster from etcd, guarded by its system identifier"),
        [true]
    );
    let param = run
        .events
        .iter()
        .find(|e| e.host == "pg1" && e.task.starts_with("Change parameters"))
        .unwrap();
    assert_eq!(
        param.result["instance"]["pending_restart"], true,
        "{}",
        param.result
    );
    assert_eq!(
        changed("A role and a user for the Patroni cluster main, then authentication on"),
        [true]
    );
    assert_eq!(
        changed("The membership (a list of name and peer_urls); one missing member is added"),
        [false]
    );
    let read = run.events.iter().find(|e| e.task == "Read etcd").unwrap();
    assert_eq!(
        read.result["etcd"]["authentication"], "enabled",
        "{}",
        read.result
    );
    assert_eq!(
        read.result["etcd"]["users"]["patroni-main"],
        json!(["patroni-main"])
    );
    let left = etcd
        .etcdctl(
            Some("root:Ex-Et-6p"),
            &["get", "--prefix", "--keys-only", "/service/main/"],
        )
        .unwrap();
    assert!(left.trim().is_empty(), "keys left: {left}");
    assert!(!root.join("pg1/data/15/main").exists());
}

#[test]
fn a_binary_for_another_architecture_fails_clearly() {
    let dir = TestDir::new("arch");
    // A copy of the collection whose instance module is an aarch64 ELF
    // header: the kernel refuses to run it, as on a host of another kind.
    let copy = dir.join("collections/ansible_collections/pgherd/cluster");
    let source = collections_path().join("ansible_collections/pgherd/cluster");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .arg(&source)
        .arg(copy.parent().unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let mut elf = b"\x7fELF\x02\x01\x01\x00".to_vec();
    elf.extend([0u8; 8]);
    elf.extend([2, 0, 183, 0, 1, 0, 0, 0]);
    elf.resize(64, 0);
    let binary = copy.join("plugins/modules/instance");
    std::fs::write(&binary, elf).unwrap();
    std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let playbook = pgherd_e2e::one_task_playbook(
        &dir.path,
        "arch",
        "localhost",
        "pgherd.cluster.instance",
        &json!({"name": "main", "state": "present"}),
    );
    let inventory = dir.join("inventory.yml");
    std::fs::write(&inventory, "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n      ansible_python_interpreter: /usr/bin/python3\n").unwrap();
    let run = ansible_playbook_from(
        &dir.join("collections"),
        &dir.path,
        &playbook,
        &inventory,
        &[],
    );
    assert!(!run.succeeded());
    let msg = run.failed_tasks()[0].result["msg"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let machine =
        String::from_utf8(Command::new("uname").arg("-m").output().unwrap().stdout).unwrap();
    assert!(msg.contains("built for aarch64"), "{msg}");
    assert!(
        msg.contains(&format!("runs on {}", machine.trim())),
        "{msg}"
    );
    assert!(msg.contains("Building and installing"), "{msg}");
    // Asked once with uname -m, kept as a fact for the next tasks.
    assert_eq!(
        run.failed_tasks()[0].result["ansible_facts"]["pgherd_host_architecture"],
        machine.trim()
    );

    // A host of an architecture no build exists for: refused on the
    // controller, nothing sent.
    let run = ansible_playbook_from(
        &dir.join("collections"),
        &dir.path,
        &playbook,
        &inventory,
        &["-e", "pgherd_host_architecture=riscv64"],
    );
    assert!(!run.succeeded());
    let msg = run.failed_tasks()[0].result["msg"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains(
            "localhost runs on riscv64, and this collection holds builds for aarch64, x86_64 only"
        ),
        "{msg}"
    );
    assert!(msg.contains("nothing was sent to localhost"), "{msg}");
}

#[test]
fn the_host_keeps_the_builds_and_a_newer_one_replaces_the_older() {
    let dir = TestDir::new("build-cache");
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let inventory = dir.join("inventory.yml");
    std::fs::write(&inventory, "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n      ansible_python_interpreter: /usr/bin/python3\n").unwrap();
    // etcd nowhere: the module runs, and fails naming it.
    let playbook = pgherd_e2e::one_task_playbook(
        &dir.path,
        "info",
        "localhost",
        "pgherd.cluster.patroni",
        &json!({"cluster": "main", "state": "info",
                "settings": {"patroni": {"etcd": {"hosts": ["127.0.0.1:9"]}}}}),
    );
    let run = || {
        let run = ansible_playbook_env(
            &collections_path(),
            &dir.path,
            &playbook,
            &inventory,
            &[],
            &[("HOME", &home)],
        );
        let msg = run
            .failed_tasks()
            .first()
            .map(|t| t.result["msg"].to_string())
            .unwrap_or_default();
        assert!(
            msg.contains("etcd at http://127.0.0.1:9"),
            "the module did not run: {}",
            run.transcript()
        );
    };
    let build =
        collections_path().join("ansible_collections/pgherd/cluster/plugins/modules/patroni");
    let sum = Command::new("sha256sum").arg(&build).output().unwrap();
    let digest = String::from_utf8(sum.stdout).unwrap()[..20].to_string();
    let cache = home.join(".cache/pgherd");
    let kept = cache.join(format!("patroni-{digest}"));
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(&cache)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };

    run();
    assert_eq!(listing(), [format!("patroni-{digest}")]);
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        std::fs::read(&build).unwrap()
    );
    let meta = std::fs::metadata(&kept).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o700
    );
    let dir_meta = std::fs::metadata(&cache).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&dir_meta.permissions()) & 0o777,
        0o700
    );
    // Not sent again.
    let sent = meta.modified().unwrap();
    run();
    assert_eq!(std::fs::metadata(&kept).unwrap().modified().unwrap(), sent);
    // An older build kept, this one not: sent, and the older removed.
    std::fs::remove_file(&kept).unwrap();
    std::fs::write(
        cache.join("patroni-00000000000000000000"),
        "#!/bin/sh\nexit 3\n",
    )
    .unwrap();
    std::fs::write(
        cache.join("instance-00000000000000000000"),
        "kept: another module",
    )
    .unwrap();
    run();
    assert_eq!(
        listing(),
        [
            "instance-00000000000000000000".to_string(),
            format!("patroni-{digest}")
        ]
    );
}

/// The aarch64 builds, run under qemu as on an aarch64 host: the etcd
/// module reads a real etcd, the instance module plans a node in check
/// mode (reading etcd too), both answering in the module protocol.
#[test]
fn aarch64_builds_speak_the_module_protocol_under_emulation() {
    let (dir, root, _reaper) = local_nodes_test("aarch64", &["127.0.0.12"]);
    let etcd = Etcd::start(&dir.path, 26_279, 26_280);
    let aarch64 = collections_path().join("ansible_collections/pgherd/cluster/bin/aarch64");
    let machine = |binary: &std::path::Path| {
        let head = std::fs::read(binary).unwrap();
        u16::from_le_bytes([head[18], head[19]])
    };
    let run = |module: &str, args: &Value| {
        let binary = aarch64.join(module);
        assert_eq!(
            machine(&binary),
            183,
            "{} is an aarch64 ELF",
            binary.display()
        );
        let file = pgherd_e2e::write_args_file(&dir.path, module, args);
        let out = Command::new("qemu-aarch64-static")
            .arg(&binary)
            .arg(&file)
            .output()
            .expect("qemu-aarch64-static (scripts/setup.sh installs qemu-user-static)");
        pgherd_e2e::ModuleRun::from_output(out)
    };
    let read = run("etcd", &json!({"hosts": [etcd.client_addr]}));
    assert!(!read.failed() && !read.changed(), "{read:?}");
    let members = read.result["etcd"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{read:?}");
    assert_eq!(members[0]["healthy"], true, "{read:?}");

    let settings =
        pgherd_e2e::local_settings(&root.join("pg2"), std::slice::from_ref(&etcd.client_addr));
    let mut args = pgherd_e2e::local_instance_args(2, "emulated", &settings);
    args["_ansible_check_mode"] = json!(true);
    let plan = run("instance", &args);
    assert!(!plan.failed() && plan.changed(), "{plan:?}");
    assert!(
        plan.result["changes"].to_string().contains("start Patroni"),
        "{plan:?}"
    );
    assert!(!root.join("pg2").exists(), "check mode writes nothing");
    let refused = run("patroni", &json!({"cluster": "emulated", "unknown": 1}));
    assert!(refused.failed() && refused.code == Some(1), "{refused:?}");
}
