//! The bad-input corpus: wrong types, out-of-range values, unknown and
//! missing options, impossible combinations, broken settings, unreachable
//! or wrong endpoints, through the real module binaries next to a running
//! node. Every case must fail with `failed: true`, exit 1, a message naming
//! the problem, no panic, no password in its output (stdout and stderr) nor
//! in any log, and must leave the node's files (content, mode, owner and
//! mtime), its processes and the cluster's keys in etcd exactly as they
//! were.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use pgherd_e2e::{
    local_instance_args, local_nodes_test, local_settings, module_bin, pids_mentioning, run_module,
    Etcd, ModuleRun,
};
use serde_json::{json, Value};

const CLUSTER: &str = "badinput";
const SURO: &str = "corpus-superuser-pw";
/// Every password the cases give, none of which may be printed or logged.
const PASSWORDS: [&str; 4] = [
    SURO,
    "local-replication-pw",
    "local-rewind-pw",
    "corpus-etcd-pw",
];

/// How a case calls the module.
enum Input {
    /// Options, written as the arguments file.
    Args(Value),
    /// The arguments file's raw text.
    RawFile(&'static str),
    /// An arguments file path that does not exist.
    MissingFile,
    /// No argument at all.
    NoArgument,
}

struct Case {
    name: String,
    module: &'static str,
    input: Input,
    /// Each must appear in the message (case-insensitive).
    expect: Vec<&'static str>,
}

/// `base` with the value at each JSON pointer replaced (`None` removes).
fn patched(base: &Value, patches: &[(&str, Option<Value>)]) -> Value {
    let mut v = base.clone();
    for (pointer, value) in patches {
        let (parent, key) = pointer.rsplit_once('/').expect("a JSON pointer");
        // Walk to the parent, making missing (or non-mapping) steps mappings.
        let mut cur = &mut v;
        for part in parent.split('/').skip(1) {
            if !cur.get(part).is_some_and(Value::is_object) {
                cur[part] = json!({});
            }
            cur = &mut cur[part];
        }
        let map = cur.as_object_mut().expect("parent is a mapping");
        match value {
            Some(val) => map.insert(key.to_string(), val.clone()),
            None => map.remove(key),
        };
    }
    v
}

/// A hash of every file and directory a module may write under `root`:
/// the node's configuration, password files, run directory, and the
/// configuration files in the data directory. Logs and the data files
/// PostgreSQL itself changes are left out.
fn files_state(root: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, u64>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        let text = rel.display().to_string();
        if text.contains("/log/") {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (meta.mode(), meta.uid(), meta.gid()).hash(&mut h);
        // Inside the data directory, PostgreSQL's own files change all the
        // time: only their names' directories and the .conf files count.
        let in_data_dir = text.contains("/data/15/main");
        // Elsewhere a rewrite with the same bytes, or a temporary file made
        // and removed, shows in the mtimes.
        if !in_data_dir {
            (meta.mtime(), meta.mtime_nsec()).hash(&mut h);
        }
        if meta.is_dir() {
            out.insert(rel, h.finish());
            if !in_data_dir {
                walk(root, &path, out);
            }
        } else if !in_data_dir || text.ends_with(".conf") {
            std::fs::read(&path).unwrap_or_default().hash(&mut h);
            out.insert(rel, h.finish());
        }
    }
}

/// The cluster's keys in etcd: every key's name, and the value of those
/// Patroni only changes when asked (config, leader, initialize, failover,
/// sync, history). Members change with every loop; the status key comes
/// and goes with Patroni's own bookkeeping.
fn dcs_state(etcd: &Etcd) -> BTreeMap<String, String> {
    let out = etcd
        .etcdctl(None, &["get", "--prefix", &format!("/service/{CLUSTER}/")])
        .expect("read the cluster's keys");
    let lines: Vec<&str> = out.lines().collect();
    let mut keys = BTreeMap::new();
    for pair in lines.chunks(2) {
        let key = pair[0].to_string();
        let value = pair.get(1).copied().unwrap_or_default();
        // Patroni writes its status (last WAL position) when it likes.
        if key.ends_with("/status") || key.ends_with("/optime/leader") {
            continue;
        }
        let volatile = key.contains("/members/");
        keys.insert(
            key,
            if volatile {
                String::new()
            } else {
                value.to_string()
            },
        );
    }
    keys
}

fn run_case(dir: &Path, case: &Case) -> ModuleRun {
    let file = match &case.input {
        Input::Args(v) => return run_module(dir, case.module, v),
        Input::RawFile(text) => {
            let p = dir.join(format!("raw-{}.json", case.name.replace(' ', "-")));
            std::fs::write(&p, text).unwrap();
            Some(p)
        }
        Input::MissingFile => Some(dir.join("no-such-args.json")),
        Input::NoArgument => None,
    };
    ModuleRun::from_output(
        Command::new(module_bin(case.module))
            .args(file)
            .output()
            .expect("run the module"),
    )
}

#[test]
fn bad_inputs_fail_clearly_and_change_nothing() {
    let (dir, root, _reaper) = local_nodes_test("bad-inputs", &["127.0.0.11", "127.0.0.12"]);
    let etcd = Etcd::start(&dir.path, 25_079, 25_080);
    let hosts = vec![etcd.client_addr.clone()];
    let settings = local_settings(&root.join("pg1"), &hosts);
    let mut base = local_instance_args(1, CLUSTER, &settings);
    base["surole_password"] = json!(SURO);
    let up = run_module(&dir.path, "instance", &base);
    assert!(!up.failed(), "{up:?}");
    assert_eq!(up.result["instance"]["role"], json!("primary"), "{up:?}");

    // Settings files for the settings cases.
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let invalid_yaml = write("invalid.yaml", "patroni: [unclosed\n  ttl: 30\n");
    let list_yaml = write("list.yaml", "- patroni\n- postgresql\n");
    let unknown_key = write("unknown.yaml", "postgresql:\n  datadir_typo: /x\n");
    let own_pgbackrest_option = write(
        "pgbackrest-own.yaml",
        "pgbackrest:\n  global_options:\n    repo1-path: /elsewhere\n",
    );
    let wrong_type = write("wrongtype.yaml", "patroni:\n  ttl: thirty\n");
    let unreadable = dir.path.display().to_string();
    let garbage_ca = write("garbage-ca.pem", "this is not a certificate\n");

    let inst = |patches: &[(&str, Option<Value>)]| Input::Args(patched(&base, patches));
    let set = |p: &'static str, v: Value| (p, Some(v));
    let pat_base = json!({
        "cluster": CLUSTER,
        "settings": settings,
        "state": "info",
    });
    let pat = |patches: &[(&str, Option<Value>)]| Input::Args(patched(&pat_base, patches));
    let long_name = "n".repeat(300);

    let mut cases: Vec<Case> = Vec::new();
    let mut add = |name: &str, module: &'static str, input: Input, expect: &[&'static str]| {
        cases.push(Case {
            name: name.to_string(),
            module,
            input,
            expect: expect.to_vec(),
        })
    };

    // The arguments file itself.
    add("no argument", "instance", Input::NoArgument, &["usage"]);
    add(
        "missing args file",
        "instance",
        Input::MissingFile,
        &["cannot read the arguments file"],
    );
    add(
        "args file not JSON",
        "instance",
        Input::RawFile("name: main"),
        &["not valid JSON"],
    );
    add(
        "args file a JSON list",
        "patroni",
        Input::RawFile("[1, 2]"),
        &["must hold a JSON object"],
    );

    // instance: names.
    add(
        "name missing",
        "instance",
        inst(&[("/name", None)]),
        &["missing required", "name"],
    );
    add(
        "name ../x",
        "instance",
        inst(&[set("/name", json!("../x"))]),
        &["name"],
    );
    add(
        "name a/b",
        "instance",
        inst(&[set("/name", json!("a/b"))]),
        &["name"],
    );
    add(
        "name empty",
        "instance",
        inst(&[set("/name", json!(""))]),
        &["name"],
    );
    add(
        "name with spaces",
        "instance",
        inst(&[set("/name", json!("my db"))]),
        &["name"],
    );
    add(
        "name too long",
        "instance",
        inst(&[set("/name", json!(long_name))]),
        &["name"],
    );
    add(
        "name a list",
        "instance",
        inst(&[set("/name", json!(["main"]))]),
        &["name"],
    );
    add(
        "cluster with a slash",
        "instance",
        inst(&[set("/patroni/cluster", json!("bad/cluster"))]),
        &["cluster"],
    );
    add(
        "node with a space",
        "instance",
        inst(&[set("/patroni/node", json!("pg 1"))]),
        &["node"],
    );
    add(
        "node ..",
        "instance",
        inst(&[set("/patroni/node", json!(".."))]),
        &["node"],
    );
    // instance: types and ranges.
    add(
        "port a word",
        "instance",
        inst(&[set("/port", json!("abc"))]),
        &["port"],
    );
    add(
        "port 0",
        "instance",
        inst(&[set("/port", json!(0))]),
        &["port"],
    );
    add(
        "port 70000",
        "instance",
        inst(&[set("/port", json!(70000))]),
        &["port"],
    );
    add(
        "port negative",
        "instance",
        inst(&[set("/port", json!(-1))]),
        &["port"],
    );
    add(
        "port a fraction",
        "instance",
        inst(&[set("/port", json!(5432.5))]),
        &["port"],
    );
    add(
        "state unknown",
        "instance",
        inst(&[set("/state", json!("running"))]),
        &["state", "started"],
    );
    add(
        "state a list",
        "instance",
        inst(&[set("/state", json!(["started"]))]),
        &["state"],
    );
    // pgBackRest and restores.
    add(
        "pgbackrest without stanza",
        "instance",
        inst(&[set("/pgbackrest", json!({}))]),
        &["stanza"],
    );
    add(
        "pgbackrest stanza with a space",
        "instance",
        inst(&[set("/pgbackrest", json!({"stanza": "my stanza"}))]),
        &["pgbackrest.stanza"],
    );
    add(
        "restore from backup without pgbackrest",
        "instance",
        inst(&[set("/restore", json!({"from": "backup"}))]),
        &["restore.from: backup needs the pgbackrest option"],
    );
    add(
        "restore to a vague target",
        "instance",
        inst(&[
            set("/pgbackrest", json!({"stanza": "s"})),
            set("/restore", json!({"from": "backup", "target": "yesterday"})),
        ]),
        &["restore.target", "latest, immediate or a time"],
    );
    add(
        "restore from nowhere",
        "instance",
        inst(&[set("/restore", json!({"from": "nowhere"}))]),
        &["from", "backup", "leader"],
    );
    add(
        "restore of a stopped node",
        "instance",
        inst(&[
            set("/state", json!("stopped")),
            set("/restore", json!({"from": "leader"})),
        ]),
        &["restore goes with state: started"],
    );
    add(
        "restore of the leader from the leader",
        "instance",
        inst(&[set("/restore", json!({"from": "leader"}))]),
        &["leads cluster", "nothing was changed"],
    );
    add(
        "backup with state info",
        "patroni",
        pat(&[set("/backup", json!("full"))]),
        &["state: info takes no operation", "backup"],
    );
    add(
        "backup of an unknown type",
        "patroni",
        pat(&[
            set("/state", json!("present")),
            set("/backup", json!("weekly")),
        ]),
        &["backup", "full"],
    );
    add(
        "settings setting pgherd's own pgbackrest option",
        "instance",
        inst(&[set("/settings", json!(own_pgbackrest_option))]),
        &["pgbackrest.global_options.repo1-path is written by pgherd itself"],
    );
    add(
        "version a word",
        "instance",
        inst(&[set("/version", json!("fifteen"))]),
        &["version"],
    );
    add(
        "wait_timeout a word",
        "instance",
        inst(&[set("/wait_timeout", json!("soon"))]),
        &["wait_timeout"],
    );
    add(
        "wait_timeout 0",
        "instance",
        inst(&[set("/wait_timeout", json!(0))]),
        &["wait_timeout"],
    );
    add(
        "wait_timeout negative",
        "instance",
        inst(&[set("/wait_timeout", json!(-5))]),
        &["wait_timeout"],
    );
    add(
        "parameters a list",
        "instance",
        inst(&[set("/parameters", json!(["work_mem=4MB"]))]),
        &["parameters"],
    );
    add(
        "pg_hba a mapping",
        "instance",
        inst(&[set("/pg_hba", json!({"host": "all"}))]),
        &["pg_hba"],
    );
    add(
        "patroni a word",
        "instance",
        inst(&[set("/patroni", json!("x"))]),
        &["patroni"],
    );
    add(
        "conf_settings a list",
        "instance",
        inst(&[set("/conf_settings", json!([1]))]),
        &["conf_settings"],
    );
    // instance: unknown and incomplete options.
    add(
        "unknown option",
        "instance",
        inst(&[set("/bogus", json!(1))]),
        &["bogus"],
    );
    add(
        "unknown nested option",
        "instance",
        inst(&[set("/patroni/bogus", json!(1))]),
        &["bogus"],
    );
    add(
        "unknown doubly nested option",
        "instance",
        inst(&[set("/patroni/restapi/bogus", json!(1))]),
        &["bogus"],
    );
    add(
        "REST auth without password",
        "instance",
        inst(&[set(
            "/patroni/restapi/authentication",
            json!({"username": "u"}),
        )]),
        &["username", "password"],
    );
    add(
        "etcd auth without password",
        "instance",
        inst(&[set("/patroni/etcd", json!({"username": "u"}))]),
        &["username", "password"],
    );
    add(
        "REST listen without port",
        "instance",
        inst(&[set("/patroni/restapi/listen", json!("127.0.0.11"))]),
        &["listen"],
    );
    add(
        "REST connect port out of range",
        "instance",
        inst(&[set(
            "/patroni/restapi/connect_address",
            json!("127.0.0.11:99999"),
        )]),
        &["connect_address"],
    );
    // instance: settings.
    add(
        "settings a number",
        "instance",
        inst(&[set("/settings", json!(5))]),
        &["settings"],
    );
    add(
        "settings file missing",
        "instance",
        inst(&[set("/settings", json!("/nonexistent/pgherd.yaml"))]),
        &["/nonexistent/pgherd.yaml", "cannot read"],
    );
    add(
        "settings file a directory",
        "instance",
        inst(&[set("/settings", json!(unreadable))]),
        &["settings", "cannot read"],
    );
    add(
        "settings file invalid YAML",
        "instance",
        inst(&[set("/settings", json!(invalid_yaml))]),
        &["invalid.yaml"],
    );
    add(
        "settings file a list",
        "instance",
        inst(&[set("/settings", json!(list_yaml))]),
        &["list.yaml"],
    );
    add(
        "settings unknown key",
        "instance",
        inst(&[set("/settings", json!(unknown_key))]),
        &["datadir_typo"],
    );
    add(
        "settings wrong type",
        "instance",
        inst(&[set("/settings", json!(wrong_type))]),
        &["ttl"],
    );
    add(
        "settings ttl below 20",
        "instance",
        inst(&[set("/settings/patroni/ttl", json!(10))]),
        &["ttl"],
    );
    add(
        "settings loop_wait too long for ttl",
        "instance",
        inst(&[set("/settings/patroni/loop_wait", json!(15))]),
        &["loop_wait"],
    );
    add(
        "settings no etcd host",
        "instance",
        inst(&[set("/settings/patroni/etcd/hosts", json!([]))]),
        &["patroni.etcd.hosts"],
    );
    add(
        "settings etcd host without port",
        "instance",
        inst(&[set("/settings/patroni/etcd/hosts", json!(["127.0.0.1"]))]),
        &["patroni.etcd.hosts"],
    );
    add(
        "settings relative datadir",
        "instance",
        inst(&[set("/settings/postgresql/datadir", json!("data/{name}"))]),
        &["postgresql.datadir", "absolute"],
    );
    add(
        "settings unknown placeholder",
        "instance",
        inst(&[set(
            "/settings/postgresql/datadir",
            json!("/srv/{cluster}/{name}"),
        )]),
        &["postgresql.datadir"],
    );
    // instance: TLS that cannot work.
    add(
        "etcd CA with http",
        "instance",
        inst(&[set("/settings/patroni/etcd/cacert", json!(garbage_ca))]),
        &["patroni.etcd.cacert", "https"],
    );
    add(
        "etcd cert without key",
        "instance",
        inst(&[
            set("/settings/patroni/etcd/protocol", json!("https")),
            set("/settings/patroni/etcd/cert", json!(garbage_ca)),
        ]),
        &["patroni.etcd.key"],
    );
    add(
        "etcd CA file missing",
        "instance",
        inst(&[
            set("/settings/patroni/etcd/protocol", json!("https")),
            set(
                "/settings/patroni/etcd/cacert",
                json!("/nonexistent/ca.pem"),
            ),
        ]),
        &["/nonexistent/ca.pem"],
    );
    add(
        "etcd CA not a certificate",
        "instance",
        inst(&[
            set("/settings/patroni/etcd/protocol", json!("https")),
            set("/settings/patroni/etcd/cacert", json!(garbage_ca)),
        ]),
        &["etcd"],
    );
    add(
        "REST verify_client without TLS",
        "instance",
        inst(&[set(
            "/settings/patroni/restapi/verify_client",
            json!("required"),
        )]),
        &["verify_client", "certfile"],
    );
    add(
        "REST certfile without keyfile",
        "instance",
        inst(&[set("/settings/patroni/restapi/certfile", json!(garbage_ca))]),
        &["keyfile"],
    );
    add(
        "etcd password without user",
        "instance",
        inst(&[set(
            "/settings/patroni/etcd/password",
            json!("corpus-etcd-pw"),
        )]),
        &["patroni.etcd.username"],
    );
    // instance: etcd that does not answer.
    add(
        "etcd unreachable for the running node",
        "instance",
        inst(&[set("/settings/patroni/etcd/hosts", json!(["127.0.0.1:1"]))]),
        &["127.0.0.1:1", "nothing was changed"],
    );
    add(
        "etcd unreachable for a new node",
        "instance",
        Input::Args(patched(
            &local_instance_args(
                2,
                CLUSTER,
                &local_settings(&root.join("pg2"), &["127.0.0.1:1".into()]),
            ),
            &[],
        )),
        &["127.0.0.1:1", "nothing was changed"],
    );
    add(
        "etcd unreachable in check mode",
        "instance",
        inst(&[
            set("/settings/patroni/etcd/hosts", json!(["127.0.0.1:1"])),
            set("/_ansible_check_mode", json!(true)),
        ]),
        &["127.0.0.1:1"],
    );

    // patroni: options.
    add(
        "cluster missing",
        "patroni",
        pat(&[("/cluster", None)]),
        &["cluster"],
    );
    add(
        "cluster a/b",
        "patroni",
        pat(&[set("/cluster", json!("a/b"))]),
        &["cluster"],
    );
    add(
        "cluster empty",
        "patroni",
        pat(&[set("/cluster", json!(""))]),
        &["cluster"],
    );
    add(
        "state unknown",
        "patroni",
        pat(&[set("/state", json!("bogus"))]),
        &["state"],
    );
    add(
        "unknown option",
        "patroni",
        pat(&[set("/bogus", json!(1))]),
        &["bogus"],
    );
    add(
        "leader and failover_to",
        "patroni",
        pat(&[
            set("/state", json!("present")),
            set("/leader", json!("pg1")),
            set("/failover_to", json!("pg1")),
        ]),
        &["leader", "failover_to"],
    );
    add(
        "REST user without password",
        "patroni",
        pat(&[set("/restapi_username", json!("u"))]),
        &["restapi_password"],
    );
    add(
        "etcd password without user",
        "patroni",
        pat(&[set("/etcd_password", json!("corpus-etcd-pw"))]),
        &["etcd_username"],
    );
    add(
        "restart unknown",
        "patroni",
        pat(&[
            set("/state", json!("present")),
            set("/restart", json!("some")),
        ]),
        &["restart"],
    );
    add(
        "reinit a mapping",
        "patroni",
        pat(&[
            set("/state", json!("present")),
            set("/reinit", json!({"a": 1})),
        ]),
        &["reinit"],
    );
    add(
        "paused not a boolean",
        "patroni",
        pat(&[
            set("/state", json!("present")),
            set("/paused", json!("maybe")),
        ]),
        &["paused"],
    );
    add(
        "wait_timeout 0",
        "patroni",
        pat(&[set("/wait_timeout", json!(0))]),
        &["wait_timeout"],
    );
    add(
        "maximum_lag a word",
        "patroni",
        pat(&[set("/maximum_lag", json!("x"))]),
        &["maximum_lag"],
    );
    add(
        "dynamic_config a word",
        "patroni",
        pat(&[
            set("/state", json!("present")),
            set("/dynamic_config", json!("x")),
        ]),
        &["dynamic_config"],
    );
    add(
        "scheduled_at not a time",
        "patroni",
        pat(&[
            set("/state", json!("present")),
            set("/leader", json!("pg1")),
            set("/scheduled_at", json!("tomorrow")),
        ]),
        &["scheduled_at"],
    );
    add(
        "info with an operation",
        "patroni",
        pat(&[set("/paused", json!(true))]),
        &["takes no operation", "paused"],
    );
    add(
        "absent without system_identifier",
        "patroni",
        pat(&[set("/state", json!("absent"))]),
        &["still has live members", "pg1"],
    );
    add(
        "absent with a wrong system_identifier",
        "patroni",
        pat(&[
            set("/state", json!("absent")),
            set("/system_identifier", json!("1234567890")),
        ]),
        &["still has live members", "pg1"],
    );
    // patroni: members that do not exist.
    add(
        "switchover to a missing member",
        "patroni",
        pat(&[
            set("/state", json!("present")),
            set("/leader", json!("pg9")),
        ]),
        &["pg9"],
    );
    add(
        "failover to a missing member",
        "patroni",
        pat(&[
            set("/state", json!("present")),
            set("/failover_to", json!("pg9")),
            set("/force", json!(true)),
        ]),
        &["pg9"],
    );
    add(
        "reinit of a missing member",
        "patroni",
        pat(&[
            set("/state", json!("present")),
            set("/reinit", json!(["pg9"])),
        ]),
        &["pg9"],
    );
    add(
        "reinit of the leader",
        "patroni",
        pat(&[
            set("/state", json!("present")),
            set("/reinit", json!(["pg1"])),
        ]),
        &["pg1", "leader"],
    );
    // patroni: endpoints.
    add(
        "REST API unreachable",
        "patroni",
        pat(&[set("/restapi", json!("127.0.0.1:1"))]),
        &["127.0.0.1:1"],
    );
    add(
        "REST API without port",
        "patroni",
        pat(&[set("/restapi", json!("127.0.0.11"))]),
        &["restapi"],
    );
    add(
        "REST API that is not Patroni",
        "patroni",
        pat(&[set("/restapi", json!(etcd.client_addr.clone()))]),
        &[etcd_addr_static(&etcd.client_addr)],
    );
    add(
        "REST API of another cluster",
        "patroni",
        pat(&[
            set("/cluster", json!("othercluster")),
            set("/restapi", json!("127.0.0.11:8008")),
        ]),
        &["othercluster", CLUSTER],
    );
    add(
        "etcd unreachable",
        "patroni",
        pat(&[set("/settings/patroni/etcd/hosts", json!(["127.0.0.1:1"]))]),
        &["127.0.0.1:1"],
    );
    add(
        "etcd unreachable for a switchover",
        "patroni",
        pat(&[
            set("/state", json!("present")),
            set("/leader", json!("pg1")),
            set("/settings/patroni/etcd/hosts", json!(["127.0.0.1:1"])),
        ]),
        &["127.0.0.1:1"],
    );
    add(
        "switchover in an unknown cluster",
        "patroni",
        pat(&[
            set("/cluster", json!("nosuchcluster")),
            set("/state", json!("present")),
            set("/leader", json!("pg2")),
        ]),
        &["nosuchcluster", "has no member"],
    );

    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let mut problems = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for case in &cases {
        assert!(
            names.insert((case.module, case.name.clone())),
            "duplicate case {}",
            case.name
        );
        let files_before = files_state(&root);
        let dcs_before = dcs_state(&etcd);
        let processes_before = pids_mentioning(&root.display().to_string());
        let run = run_case(&dir.path, case);
        let files_after = files_state(&root);
        let dcs_after = dcs_state(&etcd);
        let processes_after = pids_mentioning(&root.display().to_string());
        let msg = run.msg();
        let lower = msg.to_lowercase();
        let mut wrong = Vec::new();
        if run.code != Some(1) {
            wrong.push(format!("exit code {:?}", run.code));
        }
        if !run.failed() {
            wrong.push("not failed".to_string());
        }
        for e in &case.expect {
            if !lower.contains(&e.to_lowercase()) {
                wrong.push(format!("message lacks {e:?}"));
            }
        }
        if lower.contains("internal error") || run.stderr.contains("panicked") {
            wrong.push("panicked".into());
        }
        // A library's debug dump is no message.
        if ["Os {", "tonic::", "ConnectError(", "kind: "]
            .iter()
            .any(|d| msg.contains(d))
        {
            wrong.push("a debug dump in the message".into());
        }
        for pw in PASSWORDS {
            if run.stdout.contains(pw) || run.stderr.contains(pw) {
                wrong.push(format!("the password {pw:?} is in the output"));
            }
        }
        if processes_before != processes_after {
            wrong.push(format!(
                "processes changed: {processes_before:?} -> {processes_after:?}"
            ));
        }
        if run.stdout.trim().lines().count() != 1 {
            wrong.push("stdout is not one JSON line".into());
        }
        if files_before != files_after {
            let changed: Vec<String> = files_before
                .keys()
                .chain(files_after.keys())
                .filter(|k| files_before.get(*k) != files_after.get(*k))
                .map(|k| k.display().to_string())
                .collect();
            wrong.push(format!("files changed: {changed:?}"));
        }
        if dcs_before != dcs_after {
            wrong.push(format!("etcd changed: {dcs_before:?} -> {dcs_after:?}"));
        }
        if !wrong.is_empty() {
            problems.push(format!(
                "[{} / {}] {}\n    msg: {msg}\n    stdout: {}",
                case.module,
                case.name,
                wrong.join("; "),
                run.stdout.trim()
            ));
        }
    }
    // The node still runs as before, and no log holds a password.
    let after = run_module(&dir.path, "instance", &base);
    assert!(!after.failed() && !after.changed(), "{after:?}");
    let mut logs = Vec::new();
    collect_logs(&root, &mut logs);
    assert!(!logs.is_empty(), "no log found under {}", root.display());
    for log in &logs {
        let text = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
        for pw in PASSWORDS {
            assert!(!text.contains(pw), "{} holds {pw:?}", log.display());
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} cases went wrong:\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n")
    );
    eprintln!("bad inputs: {} cases, all refused cleanly", cases.len());
}

/// Every file under a `log` directory below `dir`.
fn collect_logs(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_logs(&p, out);
        } else if p.display().to_string().contains("/log/") {
            out.push(p);
        }
    }
}

/// The etcd address, leaked for the life of the test so a case can expect it.
fn etcd_addr_static(addr: &str) -> &'static str {
    Box::leak(addr.to_string().into_boxed_str())
}
