//! Bare lab hosts (the OS alone, apt through the lab's proxy) taken by
//! playbooks/bootstrap.yml to a secured cluster, whose CA and certificates
//! are then rotated without a failed connection.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod membership;

use membership::{a_member_retires_and_joins_again, etcd_members};
use pgherd_e2e::pki::served_serial;
use pgherd_e2e::{repo_root, Lab, PlaybookRun, TestDir};
use serde_json::Value;

const ETCD_ROOT_PW: &str = "Lab-Etcd-Root-5v";
const ETCD_PATRONI_PW: &str = "Lab-Etcd-Ptr-8k";
const SUPERUSER_PW: &str = "lab-superuser-pw";
const HOSTS: [&str; 3] = ["lab1", "lab2", "lab3"];

/// Runs `command` without input: its errors when it fails.
fn ran(command: &mut Command) -> Result<(), String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// A put through all three members, as Patroni's user with the client
/// certificate of the controller's PKI: whether it was acknowledged.
fn etcd_put(pki: &Path, key: &str, n: u32) -> Result<(), String> {
    let endpoints: Vec<String> = HOSTS
        .iter()
        .map(|h| format!("https://{}:2379", Lab::addr(h)))
        .collect();
    ran(Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg(format!("--cacert={}", pki.join("ca.pem").display()))
        .arg(format!(
            "--cert={}",
            pki.join("client-patroni.pem").display()
        ))
        .arg(format!(
            "--key={}",
            pki.join("client-patroni.key").display()
        ))
        .arg(format!("--user=patroni:{ETCD_PATRONI_PW}"))
        .args(["--dial-timeout=2s", "--command-timeout=5s", "put", key])
        .arg(n.to_string()))
}

/// A new connection to `host`'s PostgreSQL over SSL, its certificate
/// verified against the controller's CA bundle and its name: whether it
/// answered.
fn pg_connects(pki: &Path, host: &str) -> Result<(), String> {
    ran(Command::new("timeout")
        .args([
            "6",
            "/usr/lib/postgresql/15/bin/psql",
            "-XAtq",
            "-c",
            "select 1",
        ])
        .arg(format!(
            "host={} port=5432 user=postgres dbname=postgres connect_timeout=3 \
             sslmode=verify-full sslrootcert={}",
            Lab::addr(host),
            pki.join("ca.pem").display()
        ))
        .env("PGPASSWORD", SUPERUSER_PW))
}

/// curl's options for the REST API: the controller's CA and client
/// certificate.
fn rest_options(pki: &Path) -> Vec<String> {
    let s = |f: &str| pki.join(f).display().to_string();
    vec![
        "--cacert".into(),
        s("ca.pem"),
        "--cert".into(),
        s("client-patroni.pem"),
        "--key".into(),
        s("client-patroni.key"),
    ]
}

/// `host`'s REST API with the controller's client certificate and CA.
fn rest_answers(pki: &Path, host: &str) -> bool {
    let options = rest_options(pki);
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    pgherd_e2e::curl_status(
        "GET",
        &format!("https://{}:8008/patroni", Lab::addr(host)),
        &options,
    ) == Some(200)
}

/// `path` of `host`'s REST API, as JSON, with the controller's client
/// certificate (asked again for up to 2 s while Patroni re-opens its
/// socket for a new certificate).
fn rest_get(pki: &Path, host: &str, path: &str) -> Value {
    let started = Instant::now();
    loop {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "5"])
            .args(rest_options(pki))
            .arg(format!("https://{}:8008{path}", Lab::addr(host)))
            .output()
            .unwrap();
        match serde_json::from_slice(&out.stdout) {
            Ok(v) => return v,
            Err(_) if started.elapsed() < Duration::from_secs(2) => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(_) => return Value::Null,
        }
    }
}

/// What clients saw while certificates changed: new connections to every
/// host's PostgreSQL and REST API, and etcd writes, one round after another.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    pg_ok: u32,
    pg_failed: u32,
    etcd_ok: u32,
    /// Refused by a member that is starting (etcd answers on its port
    /// before its gRPC service is up: "missing content-type field", which
    /// etcdctl does not try on another endpoint), written when asked again
    /// within 1 s, as Patroni's client does.
    etcd_retried: u32,
    etcd_failed: u32,
    rest_ok: u32,
    /// Refused while Patroni re-opens its listening socket for a new
    /// certificate (it does at each), answered when asked again within 1 s,
    /// as a load balancer's health check does.
    rest_retried: u32,
    rest_failed: u32,
}

struct Clients {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Seen>,
}

impl Clients {
    fn start(pki: &Path, key: &'static str) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let (stopped, pki) = (stop.clone(), pki.to_path_buf());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let at = || format!("{:.1} s", started.elapsed().as_secs_f64());
            let mut seen = Seen::default();
            let mut n = 0;
            while !stopped.load(Ordering::Relaxed) {
                for host in HOSTS {
                    match pg_connects(&pki, host) {
                        Ok(()) => seen.pg_ok += 1,
                        Err(e) => {
                            seen.pg_failed += 1;
                            eprintln!(
                                "lab: {}: a connection to {host}'s PostgreSQL failed: {e}",
                                at()
                            );
                        }
                    }
                    if rest_answers(&pki, host) {
                        seen.rest_ok += 1;
                    } else if (0..5).any(|_| {
                        std::thread::sleep(Duration::from_millis(200));
                        rest_answers(&pki, host)
                    }) {
                        seen.rest_retried += 1;
                    } else {
                        seen.rest_failed += 1;
                        eprintln!("lab: {}: {host}'s REST API did not answer for 1 s", at());
                    }
                }
                n += 1;
                match etcd_put(&pki, key, n) {
                    Ok(()) => seen.etcd_ok += 1,
                    Err(e) => {
                        let again = (0..5).any(|_| {
                            std::thread::sleep(Duration::from_millis(200));
                            etcd_put(&pki, key, n).is_ok()
                        });
                        if again {
                            seen.etcd_retried += 1;
                        } else {
                            seen.etcd_failed += 1;
                        }
                        eprintln!(
                            "lab: {}: an etcd write failed ({}): {e}",
                            at(),
                            if again {
                                "written when asked again"
                            } else {
                                "also when asked again for 1 s"
                            }
                        );
                    }
                }
            }
            seen
        });
        Clients { stop, thread }
    }

    fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// The serials the hosts present: REST API, PostgreSQL, etcd.
fn served(host: &str) -> [String; 3] {
    let a = Lab::addr(host);
    [
        served_serial(&format!("{a}:8008"), false),
        served_serial(&format!("{a}:5432"), true),
        served_serial(&format!("{a}:2379"), false),
    ]
}

/// The CA rotated, one step per run of the bootstrap (`run`), while
/// clients connect: each step restarts every etcd member and has every
/// server present a new certificate. What the clients saw.
fn rotate_the_ca_under_clients(pki: &Path, run: &dyn Fn(&[&str]) -> PlaybookRun) -> Seen {
    // --- The CA rotated, one step per run, while clients connect.
    let clients_since = Instant::now();
    let clients = Clients::start(pki, "/service/lab/probe");
    for step in ["begin", "sign", "finish"] {
        let before: Vec<[String; 3]> = HOSTS.iter().map(|h| served(h)).collect();
        let started = Instant::now();
        let rotated = run(&["-e", &format!("pki_ca_rotation={step}")]);
        rotated.assert_ok(&format!("CA rotation: {step}"));
        eprintln!(
            "lab: CA rotation, {step}: {:.1} s, ended at {:.1} s",
            started.elapsed().as_secs_f64(),
            clients_since.elapsed().as_secs_f64()
        );
        let restarts = rotated
            .events
            .iter()
            .filter(|e| e.task.contains("Restart of "))
            .count();
        assert_eq!(restarts, 3, "{step}: {}", rotated.transcript());
        // The cluster held in maintenance mode while etcd restarted, and
        // resumed after: every member reports it running unpaused.
        for held in ["held in maintenance mode", "The clusters held, resumed"] {
            assert!(
                rotated
                    .changed_tasks()
                    .iter()
                    .any(|e| e.task.contains(held)),
                "{step}: no change by a task \"{held}\": {}",
                rotated.transcript()
            );
        }
        for host in HOSTS {
            let patroni = rest_get(pki, host, "/patroni");
            assert!(
                patroni.get("pause").is_none() && patroni["state"] == "running",
                "{step}: {host}: {patroni}"
            );
        }
        for (host, old) in HOSTS.iter().zip(&before) {
            let now = served(host);
            for (what, (n, o)) in ["REST API", "PostgreSQL", "etcd"]
                .iter()
                .zip(now.iter().zip(old))
            {
                assert!(
                    !n.is_empty() && n != o,
                    "{step}: {host}'s {what} serves {n} (was {o})"
                );
            }
        }
    }
    clients.finish()
}

/// What Patroni and etcd logged on every host since `since` (seconds
/// since the epoch), their routine lines left out: why a client failed.
fn what_patroni_and_etcd_said(lab: &Lab, since: &str) -> String {
    HOSTS
        .iter()
        .map(|host| {
            let said = lab
                .ssh(
                    host,
                    &format!(
                        "{{ sudo journalctl --no-pager -o short-precise --since @{since} \
                           -u 'patroni*' -u 'postgresql*' \
                           | grep -v -e 'no action' -e 'Lock owner' -e ssl -e 'File \"' \
                                     -e Traceback -e 'Exception in thread' -e 'self\\.' \
                           | tail -n 40; \
                           sudo journalctl --no-pager -o short-precise --since @{since} -u etcd \
                           | grep -i -e elected -e 'lost leader' -e became -e 'too long' \
                                     -e fail -e error -e 'timed out' -e stopping -e 'ready to serve' \
                           | tail -n 40; }} | sort -k3"
                    ),
                )
                .unwrap_or_else(|e| e);
            format!("--- {host}:\n{said}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Check mode on bare hosts: the steps that need what is not installed
/// yet say what they would do; nothing is written anywhere.
fn check_mode_predicts_on_bare_hosts(
    lab: &Lab,
    dir: &TestDir,
    run: &dyn Fn(&[&str]) -> PlaybookRun,
) {
    let check = run(&["--check"]);
    check.assert_ok("check mode on bare hosts");
    let predicted: Vec<&str> = check
        .changed_tasks()
        .iter()
        .map(|e| e.task.as_str())
        .collect();
    for task in [
        "The CA and the certificates",
        "A role and a user per cluster (check mode, etcd not serving yet)",
        "The node (check mode, packages not installed yet)",
    ] {
        assert!(
            predicted.iter().any(|t| t.ends_with(task)),
            "{task}: {}",
            check.transcript()
        );
    }
    assert!(!dir.join("pki").exists(), "check mode makes no PKI");
    for host in HOSTS {
        let left = lab
            .ssh(
                host,
                "ls /opt/patroni /usr/bin/etcd /etc/pgherd 2>/dev/null | wc -l",
            )
            .unwrap();
        assert_eq!(left.trim(), "0", "{host}: check mode installed something");
    }
}

/// Bare hosts (the OS alone) to a secured cluster with one playbook,
/// playbooks/bootstrap.yml, on an inventory like inventories/example: the
/// controller's PKI, the packages, etcd with TLS for clients and peers and
/// authentication, Patroni's REST API with TLS and client certificates,
/// replication over verified SSL. Check mode first predicts and changes
/// nothing; the cluster forms; a second run changes nothing. Then the CA
/// is rotated in its three steps, each a run of the bootstrap, every
/// certificate made again at each, while clients connect: no PostgreSQL
/// connection and no etcd write fails.
#[test]
fn bare_hosts_to_a_secured_cluster_with_one_playbook() {
    let dir = TestDir::new("lab-bootstrap");
    let lab = Lab::up_bare(3);
    let inventory = Lab::secured_inventory(&dir.path, ETCD_PATRONI_PW, ETCD_ROOT_PW);
    let bootstrap = repo_root().join("playbooks/bootstrap.yml");
    let run =
        |extra: &[&str]| pgherd_e2e::ansible_playbook(&dir.path, &bootstrap, &inventory, extra);

    check_mode_predicts_on_bare_hosts(&lab, &dir, &run);

    let started = Instant::now();
    let first = run(&[]);
    first.assert_ok("bare hosts to a secured cluster");
    eprintln!(
        "lab: bare hosts to a secured cluster in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let again = run(&[]);
    again.assert_ok("the bootstrap again");
    eprintln!(
        "lab: bootstrap re-run in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(again.changed_tasks().len(), 0, "{}", again.transcript());
    let check = run(&["--check"]);
    check.assert_ok("check mode on the running cluster");
    assert_eq!(check.changed_tasks().len(), 0, "{}", check.transcript());

    let members = etcd_members(&lab, "lab1");
    assert_eq!(
        members.lines().filter(|l| l.contains("started")).count(),
        3,
        "{members}"
    );

    // The REST API answers only with a client certificate of the CA.
    let pki = dir.join("pki");
    let url = format!("https://{}:8008/cluster", Lab::addr("lab1"));
    let ca = pki.join("ca.pem").display().to_string();
    let cert = pki.join("client-patroni.pem").display().to_string();
    let key = pki.join("client-patroni.key").display().to_string();
    assert_eq!(
        pgherd_e2e::curl_status(
            "GET",
            &url,
            &["--cacert", &ca, "--cert", &cert, "--key", &key]
        ),
        Some(200)
    );
    assert_eq!(
        pgherd_e2e::curl_status("GET", &url, &["--cacert", &ca]),
        None
    );
    let view = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "--cacert",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            &url,
        ])
        .output()
        .expect("curl");
    let view = String::from_utf8_lossy(&view.stdout).into_owned();
    let view: Value = serde_json::from_str(&view).unwrap_or(Value::Null);
    let members = view["members"].as_array().cloned().unwrap_or_default();
    assert_eq!(members.len(), 3, "{view}");
    // Debian's Patroni 3.0 says "running" of a streaming replica: the
    // replication itself is checked on the leader below.
    assert_eq!(
        members.iter().filter(|m| m["role"] == "replica").count(),
        2,
        "{view}"
    );
    // Both replicas stream, over SSL, checked against the CA.
    let replication_over_ssl = || {
        lab.ssh(
            "lab1",
            "sudo -u postgres psql -Atc \"select count(*) from pg_stat_ssl s join pg_stat_replication r using (pid) where s.ssl\"",
        )
        .unwrap()
    };
    assert_eq!(replication_over_ssl().trim(), "2");

    let old_ca = std::fs::read_to_string(pki.join("ca.pem")).unwrap();
    let rotation_began = lab.ssh("lab1", "date +%s").unwrap();
    let seen = rotate_the_ca_under_clients(&pki, &run);
    eprintln!("lab: clients through the CA rotation: {seen:?}");
    assert_eq!(
        (seen.pg_failed, seen.etcd_failed, seen.rest_failed),
        (0, 0, 0),
        "{seen:?}\n{}",
        what_patroni_and_etcd_said(&lab, rotation_began.trim())
    );
    assert!(
        seen.pg_ok > 30 && seen.etcd_ok > 10 && seen.rest_ok > 30,
        "{seen:?}"
    );
    // Signed by the new CA only: a client that trusts the old one alone
    // refuses every server now.
    let old_ca_file = dir.join("old-ca.pem");
    std::fs::write(&old_ca_file, &old_ca).unwrap();
    let old = old_ca_file.display().to_string();
    assert_eq!(
        pgherd_e2e::curl_status(
            "GET",
            &url,
            &["--cacert", &old, "--cert", &cert, "--key", &key]
        ),
        None
    );
    assert_eq!(replication_over_ssl().trim(), "2");
    a_member_retires_and_joins_again(&lab, &inventory, &run);
    let settled = run(&[]);
    settled.assert_ok("the bootstrap after the rotation and the member's return");
    assert_eq!(settled.changed_tasks().len(), 0, "{}", settled.transcript());

    // A step while a host does not hold what the PKI directory does (a
    // previous run stopped halfway): refused before anything is written.
    lab.ssh(
        "lab2",
        "echo | sudo tee -a /etc/pgherd/tls/ca.pem >/dev/null",
    )
    .unwrap();
    let bundle = std::fs::read_to_string(pki.join("ca.pem")).unwrap();
    let refused = run(&["-e", "pki_ca_rotation=begin"]);
    assert!(!refused.succeeded(), "{}", refused.transcript());
    assert!(
        refused.transcript().contains("lab2 does not hold what")
            && refused.transcript().contains("/etc/pgherd/tls/ca.pem"),
        "{}",
        refused.transcript()
    );
    assert_eq!(std::fs::read_to_string(pki.join("ca.pem")).unwrap(), bundle);
    assert!(!pki.join("ca-next.pem").exists(), "nothing written");
}
