//! A secured cluster end to end: etcd over TLS with client certificates and
//! role-based access, the REST API over TLS with `verify_client: required`,
//! basic authentication and an allowlist, replication over SSL. Checks what
//! must work, what must be refused, and that no password leaks anywhere
//! but the 0600 files, with Ansible at -vvv and --diff.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use pgherd_e2e::pki::Pki;
use pgherd_e2e::{
    ansible_playbook, curl_status, local_nodes_test, one_task_playbook, pgherd_bin, psql,
    repo_root, snapshot, wait_for, Etcd, PlaybookRun, TestDir,
};
use serde_json::{json, Value};

const SCOPE: &str = "secure";
const ETCD_PORT: u16 = 24_779;
const SUROLE: &str = "Sec-Su-7QhX2";
const REPLROLE: &str = "Sec-Repl-4LmZ9";
const REWIND: &str = "Sec-Rew-8PkT3";
const API_PASSWORD: &str = "Sec-Api-2VbN6";
const ETCD_PASSWORD: &str = "Sec-Etcd-5WcR1";
const ETCD_ROOT: &str = "Sec-Root-9JdF4";
/// A secret in the site settings themselves: the settings file holding it
/// must be 0600 and never shown.
const CIPHER_PASS: &str = "Sec-Cipher-1HsD8";
/// A DCS namespace of the site's own (Patroni's default is /service/).
const NAMESPACE: &str = "/pgherd-sec/";
const SECRETS: [&str; 7] = [
    SUROLE,
    REPLROLE,
    REWIND,
    API_PASSWORD,
    ETCD_PASSWORD,
    ETCD_ROOT,
    CIPHER_PASS,
];

struct Secure {
    dir: TestDir,
    root: PathBuf,
    pki: Pki,
    etcd: Etcd,
    /// Everything every playbook printed, for the leak check.
    transcripts: std::cell::RefCell<Vec<String>>,
    runs: std::cell::Cell<u32>,
}

impl Secure {
    fn extra_vars(&self) -> String {
        let p = &self.pki;
        json!({
            "pgherd_local_root": self.root,
            "pgherd_etcd_hosts": [self.etcd.client_addr],
            "pg_cluster": SCOPE,
            "pg_surole_password": SUROLE,
            "pg_replrole_password": REPLROLE,
            "pg_rewind_password": REWIND,
            "patroni_restapi_auth": {"username": "patroni", "password": API_PASSWORD},
            "patroni_etcd_auth": {"username": "patroni", "password": ETCD_PASSWORD},
            "pg_parameters": {"ssl": "on", "ssl_cert_file": p.server_cert, "ssl_key_file": p.server_key,
                              "ssl_ca_file": p.ca},
            "pgherd_settings_extra": {
                "pgbackrest": {"global_options": {"repo1-cipher-pass": CIPHER_PASS}},
                "postgresql": {"client_ssl": {"sslmode": "verify-ca", "sslrootcert": p.ca}},
                "patroni": {
                    "etcd": {"protocol": "https", "cacert": p.ca, "cert": p.client_cert, "key": p.client_key,
                             "namespace": NAMESPACE},
                    "restapi": {"cafile": p.ca, "certfile": p.server_cert, "keyfile": p.server_key,
                                "verify_client": "required", "allowlist": ["127.0.0.1"],
                                "allowlist_include_members": true},
                    "ctl": {"certfile": p.client_cert, "keyfile": p.client_key, "cacert": p.ca}
                }
            }
        })
        .to_string()
    }

    fn record(&self, run: PlaybookRun) -> PlaybookRun {
        let mut all = run.transcript();
        for e in &run.events {
            all.push_str(&e.result.to_string());
        }
        self.transcripts.borrow_mut().push(all);
        run
    }

    fn playbook(&self, name: &str, extra: &[&str]) -> PlaybookRun {
        let vars = self.extra_vars();
        let mut args = vec!["-e", &vars, "-vvv", "--diff"];
        args.extend_from_slice(extra);
        self.record(ansible_playbook(
            &self.dir.path,
            &repo_root().join("playbooks").join(name),
            &repo_root().join("playbooks/inventories/local"),
            &args,
        ))
    }

    /// A `patroni` task with the credentials, plus `args`.
    fn patroni(&self, args: Value) -> PlaybookRun {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let mut all = json!({
            "cluster": SCOPE,
            "settings": "{{ pgherd_settings_file }}",
            "restapi_username": "patroni", "restapi_password": API_PASSWORD,
            "etcd_username": "patroni", "etcd_password": ETCD_PASSWORD,
        });
        for (k, v) in args.as_object().unwrap() {
            all[k] = v.clone();
        }
        let path = one_task_playbook(
            &self.dir.path,
            &format!("secure-{n}"),
            "pg1",
            "pgherd.cluster.patroni",
            &all,
        );
        let vars = self.extra_vars();
        self.record(ansible_playbook(
            &self.dir.path,
            &path,
            &repo_root().join("playbooks/inventories/local"),
            &["-e", &vars, "-vvv", "--diff"],
        ))
    }

    /// curl against a member's REST API; the HTTP status, or None when no
    /// HTTP exchange happened (TLS refused).
    fn curl(&self, method: &str, url: &str, options: &[&str]) -> Option<u16> {
        curl_status(method, url, options)
    }

    fn tls(&self) -> Vec<String> {
        vec![
            "--cacert".into(),
            self.pki.ca.display().to_string(),
            "--cert".into(),
            self.pki.client_cert.display().to_string(),
            "--key".into(),
            self.pki.client_key.display().to_string(),
        ]
    }

    fn cluster(&self) -> Value {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "5"])
            .args(self.tls())
            .arg("https://127.0.0.11:8008/cluster")
            .output()
            .expect("run curl");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn config_revision(&self) -> i64 {
        let out = self
            .etcd
            .etcdctl(
                Some(&format!("root:{ETCD_ROOT}")),
                &["get", "-w", "json", &format!("{NAMESPACE}{SCOPE}/config")],
            )
            .unwrap_or_default();
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        v["kvs"][0]["mod_revision"].as_i64().unwrap_or(-1)
    }
}

fn ok(run: &PlaybookRun, what: &str) -> Value {
    assert!(run.succeeded(), "{what} failed:\n{}", run.transcript());
    run.events
        .last()
        .map(|e| e.result.clone())
        .unwrap_or_default()
}

fn refused(run: &PlaybookRun, what: &str, reasons: &[&str]) {
    assert!(
        !run.succeeded(),
        "{what} should have failed:\n{}",
        run.transcript()
    );
    let msg = run
        .failed_tasks()
        .first()
        .map(|e| e.result["msg"].to_string())
        .unwrap_or_default();
    for r in reasons {
        assert!(msg.contains(r), "{what}: {r:?} not in {msg}");
    }
}

fn streaming_replicas(c: &Value) -> usize {
    c["members"]
        .as_array()
        .map(|m| m.iter().filter(|m| m["state"] == "streaming").count())
        .unwrap_or(0)
}

/// Files under `dir` holding a secret, with their modes.
fn files_with_secrets(dir: &Path) -> Vec<(PathBuf, u32, &'static str)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            for s in SECRETS {
                if text.contains(s) {
                    found.push((p.clone(), meta.permissions().mode() & 0o777, s));
                }
            }
        }
    }
    found
}

#[test]
fn a_secured_cluster_works_refuses_and_leaks_nothing() {
    let (dir, root, _reaper) =
        local_nodes_test("security", &["127.0.0.11", "127.0.0.12", "127.0.0.13"]);
    let pki = Pki::create(&dir.join("pki"));
    let etcd = Etcd::start_with(&dir.path, ETCD_PORT, ETCD_PORT + 1, Some(&pki));
    etcd.enable_auth(
        ETCD_ROOT,
        "patroni",
        ETCD_PASSWORD,
        &format!("{NAMESPACE}{SCOPE}/"),
    );
    let s = Secure {
        dir,
        root,
        pki,
        etcd,
        transcripts: Default::default(),
        runs: Default::default(),
    };

    // The secured cluster comes up and streams, replication over SSL.
    let deploy = s.playbook("site.yml", &[]);
    assert!(deploy.succeeded(), "{}", deploy.transcript());
    let c = wait_for(
        "two streaming replicas",
        std::time::Duration::from_secs(60),
        || Some(s.cluster()).filter(|c| streaming_replicas(c) == 2),
        || s.cluster().to_string(),
    );
    assert_eq!(c["members"].as_array().map(Vec::len), Some(3), "{c}");
    let ssl_senders = psql(
        &s.root.join("pg1/run"),
        "select count(*) from pg_stat_ssl join pg_stat_activity using (pid) \
         where backend_type = 'walsender' and ssl",
    )
    .unwrap();
    assert_eq!(ssl_senders, "2", "replication does not use SSL");
    let node = deploy
        .events
        .iter()
        .find(|e| e.host == "pg1" && e.task.contains("instance"))
        .unwrap();
    let warnings = node.result["warnings"].to_string();
    assert!(
        warnings.contains("authenticates the user by the password"),
        "{warnings}"
    );

    // The pgherd command over the same: everything from pg1's Patroni
    // configuration (etcd over TLS with a client certificate and a user,
    // the REST API over mTLS with basic auth).
    let config = s.root.join("pg1/etc/15-main.yaml");
    let status = Command::new(pgherd_bin())
        .args(["-p", config.to_str().unwrap(), "status", "--json"])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let seen: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(seen["leader"], "pg1", "{seen}");
    // The cluster lives under the site's namespace, nothing under Patroni's
    // default one.
    let root_login = format!("root:{ETCD_ROOT}");
    let keys = |prefix: &str| {
        s.etcd
            .etcdctl(
                Some(&root_login),
                &["get", prefix, "--prefix", "--keys-only"],
            )
            .unwrap_or_default()
    };
    assert!(
        keys(&format!("{NAMESPACE}{SCOPE}/leader")).contains("/leader"),
        "no leader key under {NAMESPACE}"
    );
    assert_eq!(keys("/service/").trim(), "", "keys under /service/");
    // patronictl with the generated configuration: etcd over TLS with the
    // user, the REST API with the ctl certificates.
    let ctl = Command::new(repo_root().join(".venv/bin/patronictl"))
        .args(["-c", config.to_str().unwrap(), "list", "-f", "json"])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&ctl.stdout).unwrap_or(Value::Null);
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(3),
        "patronictl list: {}{}",
        String::from_utf8_lossy(&ctl.stdout),
        String::from_utf8_lossy(&ctl.stderr)
    );
    // pgherd proxy: TLS from the site settings, the etcd user from the
    // environment; the etcd watch works through both.
    let template = s.dir.join("proxy.tera");
    std::fs::write(&template, "leader={{ leader.host }}:{{ leader.port }}\n").unwrap();
    let proxy_config = s.dir.join("proxy.yaml");
    std::fs::write(
        &proxy_config,
        json!({"cluster": SCOPE, "settings": s.root.join("pg1/settings.yaml"),
               "template": template, "target": s.dir.join("proxy.out")})
        .to_string(),
    )
    .unwrap();
    let once = Command::new(pgherd_bin())
        .args([
            "proxy",
            "--once",
            "--config",
            proxy_config.to_str().unwrap(),
        ])
        .env("PGHERD_ETCD_USERNAME", "patroni")
        .env("PGHERD_ETCD_PASSWORD", ETCD_PASSWORD)
        .output()
        .unwrap();
    assert!(
        once.status.success(),
        "{}",
        String::from_utf8_lossy(&once.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(s.dir.join("proxy.out")).unwrap(),
        "leader=127.0.0.11:5432\n"
    );
    for out in [&status.stdout, &status.stderr, &once.stdout, &once.stderr] {
        let out = String::from_utf8_lossy(out);
        for secret in SECRETS {
            assert!(!out.contains(secret), "pgherd printed a secret: {out}");
        }
    }

    // The patroni module over mTLS, basic auth and etcd credentials.
    let info = ok(&s.patroni(json!({"state": "info"})), "info over mTLS");
    assert_eq!(info["cluster"]["leader"], "pg1");
    let dynamic = json!({"dynamic_config": {"postgresql": {"parameters": {"work_mem": "12MB"}}}});
    assert_eq!(
        ok(&s.patroni(dynamic.clone()), "dynamic config over mTLS")["changed"],
        true
    );
    assert_eq!(
        ok(&s.patroni(dynamic), "dynamic config again")["changed"],
        false
    );
    // The example playbooks, with the credentials from the inventory.
    let pause = s.playbook("maintenance.yml", &[]);
    assert!(
        pause.succeeded() && !pause.changed_tasks().is_empty(),
        "{}",
        pause.transcript()
    );
    assert_eq!(s.cluster()["pause"], true);
    let resume = s.playbook("maintenance.yml", &["-e", "paused=false"]);
    assert!(
        resume.succeeded() && !resume.changed_tasks().is_empty(),
        "{}",
        resume.transcript()
    );
    let sw = s.playbook("switchover.yml", &["-e", "new_leader=pg2"]);
    assert!(
        sw.succeeded() && !sw.changed_tasks().is_empty(),
        "{}",
        sw.transcript()
    );
    let c = s.cluster();
    let leader = c["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "leader")
        .unwrap()["name"]
        .clone();
    assert_eq!(leader, "pg2", "{c}");

    // The REST API refuses what it must.
    let tls = s.tls();
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let url = "https://127.0.0.12:8008/reload";
    assert_eq!(
        s.curl("POST", url, &tls),
        Some(401),
        "unsafe request without credentials"
    );
    let mut auth = tls.clone();
    let creds = format!("patroni:{API_PASSWORD}");
    auth.extend(["-u", creds.as_str()]);
    assert_eq!(
        s.curl("POST", url, &auth),
        Some(202),
        "an allowed, authenticated reload"
    );
    let mut outside = auth.clone();
    outside.extend(["--interface", "127.0.0.99"]);
    assert_eq!(
        s.curl("POST", url, &outside),
        Some(403),
        "unsafe request from outside the allowlist"
    );
    let rogue = [
        "--cacert",
        s.pki.ca.to_str().unwrap(),
        "--cert",
        s.pki.rogue_cert.to_str().unwrap(),
        "--key",
        s.pki.rogue_key.to_str().unwrap(),
    ];
    assert_eq!(
        s.curl("GET", "https://127.0.0.12:8008/patroni", &rogue),
        None,
        "a rogue client certificate"
    );
    let no_cert = ["--cacert", s.pki.ca.to_str().unwrap()];
    assert_eq!(
        s.curl("GET", "https://127.0.0.12:8008/patroni", &no_cert),
        None,
        "no client certificate"
    );

    // etcd refuses a client without a certificate or with a wrong password.
    let bare = Command::new("etcdctl")
        .arg(format!("--endpoints=https://{}", s.etcd.client_addr))
        .arg(format!("--cacert={}", s.pki.ca.display()))
        .args([
            "--dial-timeout=2s",
            "--command-timeout=3s",
            "get",
            NAMESPACE,
            "--prefix",
            "--keys-only",
        ])
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    assert!(
        !bare.status.success(),
        "etcd served a client without certificate"
    );
    let wrong = s.etcd.etcdctl(
        Some("patroni:wrong"),
        &["get", &format!("{NAMESPACE}{SCOPE}/leader")],
    );
    assert!(
        wrong.is_err_and(|e| e.contains("authentication failed")),
        "etcd took a wrong password"
    );

    // The module fails clearly, and changes nothing, on bad TLS or secrets.
    let revision = s.config_revision();
    let change = json!({"postgresql": {"parameters": {"work_mem": "24MB"}}});
    let missing = json!({"patroni": {"restapi": {"certfile": s.pki.server_cert, "keyfile": s.pki.server_key},
                                     "ctl": {"certfile": "/nonexistent/ctl.pem", "keyfile": s.pki.client_key},
                                     "etcd": {"hosts": [s.etcd.client_addr], "protocol": "https", "cacert": s.pki.ca,
                                              "cert": s.pki.client_cert, "key": s.pki.client_key,
                                              "namespace": NAMESPACE}}});
    refused(
        &s.patroni(json!({"settings": missing, "dynamic_config": change})),
        "a missing certificate file",
        &["/nonexistent/ctl.pem"],
    );
    let untrusted = json!({"patroni": {"restapi": {"certfile": s.pki.server_cert, "keyfile": s.pki.server_key},
                                       "ctl": {"certfile": s.pki.client_cert, "keyfile": s.pki.client_key,
                                               "cacert": s.pki.rogue_ca},
                                       "etcd": {"hosts": [s.etcd.client_addr], "protocol": "https",
                                                "cacert": s.pki.ca, "cert": s.pki.client_cert, "key": s.pki.client_key,
                                                "namespace": NAMESPACE}}});
    let rogue_ca = s.pki.rogue_ca.display().to_string();
    refused(
        &s.patroni(json!({"settings": untrusted, "dynamic_config": change})),
        "an untrusted server certificate",
        &[
            "https://127.0.0.1",
            "certificate",
            &format!("CA file {rogue_ca}"),
        ],
    );
    // A client certificate etcd does not trust: the message names the
    // certificate file to fix.
    let rogue_client = json!({"patroni": {"etcd": {"hosts": [s.etcd.client_addr], "protocol": "https",
                                                   "cacert": s.pki.ca, "cert": s.pki.rogue_cert,
                                                   "key": s.pki.rogue_key, "namespace": NAMESPACE}}});
    let rogue_cert = s.pki.rogue_cert.display().to_string();
    refused(
        &s.patroni(json!({"settings": rogue_client, "state": "info"})),
        "a client certificate etcd does not trust",
        &[
            "etcd at https://",
            &format!("client certificate {rogue_cert}"),
        ],
    );
    refused(
        &s.patroni(json!({"restapi_password": "not-the-password", "dynamic_config": change})),
        "a wrong REST API password",
        &["PATCH https://", "401"],
    );
    refused(
        &s.patroni(json!({"etcd_password": "not-the-password", "state": "info"})),
        "a wrong etcd password",
        &["etcd at https://"],
    );
    assert_eq!(
        s.config_revision(),
        revision,
        "a refused task changed the dynamic configuration"
    );

    // The instance module refuses a settings file naming a certificate that
    // is not there, before touching the node.
    let before = snapshot(&s.root.join("pg1/etc"));
    let broken = json!({
        "name": "main",
        "state": "started",
        "settings": "{{ pgherd_settings | combine({'patroni': {'restapi': {'certfile': '/nonexistent/api.pem'}}}, recursive=True) }}",
        "patroni": {"cluster": SCOPE, "node": "pg1",
                    "restapi": {"connect_address": "127.0.0.11:8008"},
                    "postgresql": {"connect_host": "127.0.0.11"}},
    });
    let path = one_task_playbook(
        &s.dir.path,
        "broken-cert",
        "pg1",
        "pgherd.cluster.instance",
        &broken,
    );
    let vars = s.extra_vars();
    let run = s.record(ansible_playbook(
        &s.dir.path,
        &path,
        &repo_root().join("playbooks/inventories/local"),
        &["-e", &vars],
    ));
    refused(
        &run,
        "an instance naming a missing certificate",
        &["patroni.restapi.certfile: /nonexistent/api.pem does not exist"],
    );
    assert_eq!(
        before,
        snapshot(&s.root.join("pg1/etc")),
        "the refused task touched the node"
    );

    // Leaks: every file of the nodes holding a password is 0600; after the
    // teardown, nothing Ansible left behind and nothing any run printed
    // (at -vvv, with --diff) holds one.
    let holders = files_with_secrets(&s.root);
    assert!(
        holders
            .iter()
            .any(|(p, _, _)| p.ends_with("etc/15-main.yaml")),
        "the scan found no Patroni config: {holders:?}"
    );
    assert!(
        holders
            .iter()
            .any(|(p, _, s)| p.ends_with("pg1/settings.yaml") && *s == CIPHER_PASS),
        "the scan found no settings file: {holders:?}"
    );
    for (path, mode, secret) in &holders {
        assert_eq!(
            *mode,
            0o600,
            "{} holds {secret} with mode {mode:o}",
            path.display()
        );
    }
    let down = s.playbook("teardown.yml", &[]);
    assert!(down.succeeded(), "{}", down.transcript());
    let left = files_with_secrets(&s.dir.join("ansible-tmp"));
    assert!(
        left.is_empty(),
        "Ansible's temporary files kept a password: {left:?}"
    );
    for (i, t) in s.transcripts.borrow().iter().enumerate() {
        for secret in SECRETS {
            assert!(!t.contains(secret), "run {i} printed a password:\n{t}");
        }
    }
}
