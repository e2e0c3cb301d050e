//! The `pgherd` command on a real 3-node cluster: status, switchover,
//! maintenance mode, restarts, clear errors; and `pgherd proxy` keeping a
//! real PgBouncer pointed at the leader through switchovers and a lost etcd.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pgherd_e2e::{
    create_three_nodes, local_instance_args, local_nodes_test, local_settings, pgherd_bin,
    repo_root, run_module, wait_for, with_options, Etcd, Killed,
};
use serde_json::{json, Value};

const PGBOUNCER_PORT: u16 = 26_432;

fn pgherd(args: &[&str]) -> Output {
    Command::new(pgherd_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run pgherd (scripts/build-collection.sh builds it)")
}

/// `pgherd ARGS` running, its output's lines as they come.
fn watch(args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = Command::new(pgherd_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run pgherd");
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The server a client reaches through PgBouncer, and whether it is a
/// standby.
fn through_pgbouncer() -> Result<String, String> {
    let out = Command::new("/usr/lib/postgresql/15/bin/psql")
        .arg(format!(
            "host=127.0.0.1 port={PGBOUNCER_PORT} dbname=postgres user=app connect_timeout=3"
        ))
        .args(["-Atc", "select inet_server_addr(), pg_is_in_recovery()"])
        .env("PGPASSWORD", "unused")
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(text(&out.stdout).trim().to_string())
    } else {
        Err(text(&out.stderr))
    }
}

/// Waits until a client through PgBouncer lands on `host`, a server not in
/// recovery; `context` adds to a timeout's message.
fn wait_pgbouncer_reaches(host: &str, context: impl Fn() -> String) {
    let want = format!("{host}|f");
    wait_for(
        &format!("PgBouncer to reach the leader at {host}"),
        Duration::from_secs(20),
        || through_pgbouncer().ok().filter(|r| *r == want),
        || format!("{:?}\n{}", through_pgbouncer(), context()),
    );
}

fn switchover(dir: &Path, hosts: &[String], to: &str) {
    let r = run_module(
        dir,
        "patroni",
        &json!({
            "cluster": "cli", "leader": to,
            "settings": {"patroni": {"etcd": {"hosts": hosts}}},
        }),
    );
    assert!(!r.failed() && r.changed(), "{r:?}");
}

#[test]
fn the_cli_operates_the_cluster_and_the_proxy_follows_the_leader() {
    let (dir, root, _reaper) = local_nodes_test("cli", &["127.0.0.11", "127.0.0.12", "127.0.0.13"]);
    let mut etcd = Etcd::start(&dir.path, 25_379, 25_380);
    let hosts = vec![etcd.client_addr.clone()];
    let args_of = |n: u8| {
        with_options(
            local_instance_args(
                n,
                "cli",
                &local_settings(&root.join(format!("pg{n}")), &hosts),
            ),
            // PgBouncer connects from the loopback network.
            json!({"pg_hba": ["host all all 127.0.0.0/8 scram-sha-256"]}),
        )
    };
    create_three_nodes(&dir.path, args_of);
    let settings = dir.join("settings.yaml");
    std::fs::write(
        &settings,
        serde_json::to_string(&local_settings(&root.join("pg1"), &hosts)).unwrap(),
    )
    .unwrap();
    let s = settings.to_str().unwrap();

    // status: a table for people, JSON for scripts, the same from an
    // instance's Patroni configuration. Members publish their state in
    // etcd on their next HA loop.
    let table = wait_for(
        "both replicas to show as streaming",
        Duration::from_secs(20),
        || {
            let out = pgherd(&["-s", s, "-c", "cli", "status"]);
            let t = text(&out.stdout);
            (out.status.success() && t.matches("streaming").count() == 2).then_some(t)
        },
        || text(&pgherd(&["-s", s, "-c", "cli", "status"]).stdout),
    );
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("Cluster cli (system identifier "),
        "{table}"
    );
    assert!(lines[1].starts_with("Member  Host"), "{table}");
    assert!(
        lines[2].starts_with("pg1     127.0.0.11:5432  Leader")
            && lines[3].contains("Replica  streaming")
            && lines[4].contains("Replica  streaming"),
        "{table}"
    );
    let out = pgherd(&["-s", s, "-c", "cli", "status", "--json"]);
    let info: Value = serde_json::from_slice(&out.stdout).expect("status --json prints JSON");
    assert_eq!(info["leader"], "pg1");
    assert_eq!(info["members"].as_array().map(Vec::len), Some(3));
    let config = root.join("pg2/etc/15-main.yaml");
    let out = pgherd(&["-p", config.to_str().unwrap(), "status", "--json"]);
    let same: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(same["system_identifier"], info["system_identifier"]);

    // Clear errors, exit 1: etcd unreachable, no cluster named, a cluster
    // etcd does not know, a member whose REST API does not answer, a
    // Patroni configuration that is not there.
    etcd.etcdctl(
        None,
        &[
            "put",
            "/service/ghost/members/pg1",
            r#"{"conn_url":"postgres://127.0.0.11:5432/postgres","api_url":"http://127.0.0.1:9/patroni","state":"running"}"#,
        ],
    )
    .unwrap();
    let nowhere = dir.join("nowhere.yaml");
    std::fs::write(&nowhere, "patroni:\n  etcd:\n    hosts: ['127.0.0.1:1']\n").unwrap();
    for (args, says) in [
        (
            vec!["-s", nowhere.to_str().unwrap(), "-c", "cli", "status"],
            "127.0.0.1:1",
        ),
        (vec!["-s", s, "status"], "which cluster?"),
        (
            vec!["-s", s, "-c", "nope", "status"],
            "cluster nope has no member",
        ),
        (
            vec!["-p", "/nonexistent.yaml", "status"],
            "/nonexistent.yaml",
        ),
    ] {
        let out = pgherd(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("pgherd: ") && err.contains(says),
            "{args:?}: {err}"
        );
    }

    // status --watch follows what comes next: one JSON object a line for
    // scripts, a time line and the table for people.
    let (json_watch, json_lines) = watch(&["-s", s, "-c", "cli", "status", "--watch", "--json"]);
    let (table_watch, table_lines) = watch(&["-s", s, "-c", "cli", "status", "--watch"]);
    let watchers = (Killed(json_watch), Killed(table_watch));
    let first: Value = serde_json::from_str(
        &json_lines
            .recv_timeout(Duration::from_secs(10))
            .expect("status --watch prints the cluster at once"),
    )
    .unwrap();
    assert_eq!(first["events"], json!(["watching (started)"]), "{first}");
    assert_eq!(first["cluster"]["leader"], "pg1", "{first}");
    // What the watchers told, in words, until `want` (and, with `leader`,
    // the leader key's move to it: from pg1, or from none, as it may go).
    let told = |want: &[&str], leader: Option<&str>| {
        for (lines, json) in [(&json_lines, true), (&table_lines, false)] {
            let mut seen: Vec<String> = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let told_all = |seen: &[String]| {
                want.iter().all(|w| seen.iter().any(|s| s == w))
                    && leader.is_none_or(|l| {
                        seen.iter()
                            .any(|s| s.starts_with("leader: ") && s.ends_with(&format!(" -> {l}")))
                    })
            };
            while !told_all(&seen) {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let Ok(line) = lines.recv_timeout(left) else {
                    panic!("status --watch did not tell {want:?}; it told {seen:?}");
                };
                if json {
                    let v: Value = serde_json::from_str(&line).expect("one JSON object a line");
                    assert!(v["cluster"]["members"].is_array(), "{v}");
                    seen.extend(
                        v["events"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|e| e.as_str().unwrap().to_string()),
                    );
                } else if let Some((_, said)) = line.split_once(' ').filter(|(t, _)| t.len() == 8) {
                    seen.extend(said.split("; ").map(str::to_string));
                }
            }
        }
    };

    // Operations, through the patroni module's own functions.
    let out = pgherd(&["-s", s, "-c", "cli", "switchover", "--to", "pg2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("done: switchover from pg1 to pg2\n"));
    // Not a terminal: no progress line on stderr.
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    told(
        &["pg1: Leader -> Replica", "pg2: Replica -> Leader"],
        Some("pg2"),
    );
    let out = pgherd(&["-s", s, "-c", "cli", "pause"]);
    assert!(out.status.success() && text(&out.stdout).contains("maintenance mode: paused"));
    told(&["paused"], None);
    let out = pgherd(&["-s", s, "-c", "cli", "pause"]);
    assert!(
        text(&out.stdout).starts_with("Nothing to do"),
        "{}",
        text(&out.stdout)
    );
    let out = pgherd(&["-s", s, "-c", "cli", "resume"]);
    assert!(out.status.success() && !text(&out.stdout).contains("paused"));
    told(&["resumed"], None);
    drop(watchers);
    let out = pgherd(&["-s", s, "-c", "cli", "restart", "--pending"]);
    assert!(out.status.success() && text(&out.stdout).starts_with("Nothing to do"));

    // The proxy, with a real PgBouncer run by the postgres user.
    let pgb = dir.join("pgbouncer");
    std::fs::create_dir_all(&pgb).unwrap();
    let owner = pgherd_core::fs::lookup_owner("postgres", None)
        .expect("the postgres user exists (scripts/setup.sh)");
    let postgres = owner.uid;
    std::os::unix::fs::chown(&pgb, Some(postgres), None).unwrap();
    let template = dir.join("pgbouncer.ini.tera");
    std::fs::write(
        &template,
        format!(
            "[databases]\n\
             * = host={{{{ leader.host }}}} port={{{{ leader.port }}}} user=postgres password={{{{ vars.password }}}}\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {PGBOUNCER_PORT}\n\
             unix_socket_dir = {d}\npidfile = {d}/pgbouncer.pid\nlogfile = {d}/pgbouncer.log\n\
             auth_type = any\nserver_reset_query = DISCARD ALL\n",
            d = pgb.display()
        ),
    )
    .unwrap();
    let target = pgb.join("pgbouncer.ini");
    let proxy_config = dir.join("proxy.yaml");
    std::fs::write(
        &proxy_config,
        serde_json::to_string(&json!({
            "cluster": "cli", "settings": s, "template": template, "target": target,
            "reload_command": format!("kill -HUP $(cat {}/pgbouncer.pid)", pgb.display()),
            "vars": {"password": "local-superuser-pw"},
        }))
        .unwrap(),
    )
    .unwrap();
    let pc = proxy_config.to_str().unwrap();
    let once = pgherd(&["proxy", "--config", pc, "--once"]);
    assert!(once.status.success(), "{}", text(&once.stderr));
    assert!(std::fs::read_to_string(&target)
        .unwrap()
        .contains("host=127.0.0.12 port=5432"));
    assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o640);
    // PgBouncer reads it as postgres: the proxy keeps that owner.
    std::os::unix::fs::chown(&target, Some(postgres), None).unwrap();
    let again = pgherd(&["proxy", "--config", pc, "--once"]);
    assert!(
        text(&again.stderr).contains("unchanged"),
        "{}",
        text(&again.stderr)
    );

    let _pgbouncer = Killed(
        Command::new("/usr/sbin/pgbouncer")
            .arg(&target)
            .uid(postgres)
            .gid(owner.gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer (scripts/setup.sh installs it)"),
    );
    wait_pgbouncer_reaches("127.0.0.12", String::new);
    let pgbouncer_pid = std::fs::read_to_string(pgb.join("pgbouncer.pid")).unwrap();

    let log = dir.join("proxy.log");
    let _proxy = Killed(
        Command::new(pgherd_bin())
            .args(["proxy", "--config", pc, "--verbose"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for(
        "the proxy to start",
        Duration::from_secs(10),
        || log_text().contains("started: leader pg2").then_some(()),
        log_text,
    );

    // An unrelated key changes nothing. A fake member written after it
    // (a relevant key, but not in this template) marks when the watch has
    // seen both: the unrelated key caused no pass, the file stayed.
    let prefix = "/service/cli/";
    let inode = std::fs::metadata(&target).unwrap().ino();
    etcd.etcdctl(None, &["put", &format!("{prefix}unrelated"), "x"])
        .unwrap();
    etcd.etcdctl(
        None,
        &[
            "put",
            &format!("{prefix}members/zz-marker"),
            r#"{"conn_url":"postgres://127.0.0.99:5432/postgres","state":"stopped"}"#,
        ],
    )
    .unwrap();
    wait_for(
        "the proxy to see the marker",
        Duration::from_secs(10),
        || {
            log_text()
                .contains("members/zz-marker changed")
                .then_some(())
        },
        log_text,
    );
    assert!(!log_text().contains("unrelated"), "{}", log_text());
    assert_eq!(
        std::fs::metadata(&target).unwrap().ino(),
        inode,
        "the file was rewritten"
    );
    etcd.etcdctl(None, &["del", &format!("{prefix}members/zz-marker")])
        .unwrap();

    // A switchover through the patroni module: PgBouncer, reloaded, sends
    // new clients to the new leader; it was not restarted.
    switchover(&dir.path, &hosts, "pg3");
    wait_pgbouncer_reaches("127.0.0.13", log_text);
    assert_eq!(
        std::fs::read_to_string(pgb.join("pgbouncer.pid")).unwrap(),
        pgbouncer_pid,
        "PgBouncer was restarted"
    );
    assert_eq!(std::fs::metadata(&target).unwrap().uid(), postgres);

    // etcd lost and back: the proxy watches again and follows the next
    // switchover.
    etcd.kill();
    wait_for(
        "the proxy to notice etcd is gone",
        Duration::from_secs(20),
        || log_text().contains("trying again").then_some(()),
        log_text,
    );
    etcd.restart();
    etcd.wait_healthy();
    wait_for(
        "the proxy to reach etcd again",
        Duration::from_secs(30),
        || log_text().contains("etcd reached again").then_some(()),
        log_text,
    );
    wait_for(
        "pg1 to stream again after the etcd outage",
        Duration::from_secs(60),
        || {
            let out = pgherd(&["-s", s, "-c", "cli", "status", "--json"]);
            let info: Value = serde_json::from_slice(&out.stdout).ok()?;
            let members = info["members"].as_array()?.clone();
            // A running leader and two streaming replicas (an empty list
            // would pass an "all"; a replica still reconnecting is
            // "running", and a switchover to it is refused).
            let leads = members
                .iter()
                .filter(|m| m["role"] == "leader" && m["state"] == "running")
                .count();
            let streams = members.iter().filter(|m| m["state"] == "streaming").count();
            (members.len() == 3 && leads == 1 && streams == 2).then_some(())
        },
        || text(&pgherd(&["-s", s, "-c", "cli", "status"]).stdout),
    );
    switchover(&dir.path, &hosts, "pg1");
    wait_pgbouncer_reaches("127.0.0.11", log_text);

    // On a terminal, a wait shows what it waits for as it goes (script(1)
    // gives the command a pseudo-terminal).
    let on_tty = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "{} -s {s} -c cli switchover --to pg2",
            pgherd_bin().display()
        ))
        .arg("/dev/null")
        .stdin(Stdio::null())
        .output()
        .expect("script(1), from util-linux");
    let shown = text(&on_tty.stdout);
    assert!(on_tty.status.success(), "{shown}");
    assert!(
        shown.contains("waiting for") && shown.contains("\x1b[2K"),
        "no progress line: {shown:?}"
    );
    assert!(
        shown.contains("done: switchover from pg1 to pg2"),
        "{shown}"
    );

    // The shipped samples render on this cluster; HAProxy accepts its own.
    let examples = repo_root().join("examples/proxy");
    // PgBouncer's directory belongs to its user: a new file there is
    // created for that user too, not root's.
    let pgb_dir = dir.join("pgb");
    std::fs::create_dir_all(&pgb_dir).unwrap();
    let postgres = pgherd_e2e::uid_of("postgres");
    std::os::unix::fs::chown(&pgb_dir, Some(postgres), Some(postgres)).unwrap();
    for (sample, out, vars) in [
        ("haproxy.cfg.tera", "haproxy.cfg", json!({})),
        ("pgbouncer.ini.tera", "pgb/sample.ini", json!({})),
        (
            "pgbouncer.ini.tera",
            "tls.ini",
            json!({"server_tls_sslmode": "verify-full", "server_tls_ca_file": "/etc/ca.pem"}),
        ),
    ] {
        let config = dir.join(&format!("{}.yaml", out.replace('/', "-")));
        std::fs::write(
            &config,
            serde_json::to_string(&json!({
                "cluster": "cli", "settings": s, "vars": vars,
                "template": examples.join(sample), "target": dir.join(out),
            }))
            .unwrap(),
        )
        .unwrap();
        let r = pgherd(&["proxy", "--config", config.to_str().unwrap(), "--once"]);
        assert!(r.status.success(), "{sample}: {}", text(&r.stderr));
    }
    let rendered: PathBuf = dir.join("haproxy.cfg");
    let haproxy = std::fs::read_to_string(&rendered).unwrap();
    assert!(haproxy.contains("server pg2 127.0.0.12:5432"), "{haproxy}");
    assert!(
        haproxy.contains("server pg1 127.0.0.11:5432")
            && haproxy.contains("server pg3 127.0.0.13:5432")
    );
    let check = Command::new("/usr/sbin/haproxy")
        .args(["-c", "-f"])
        .arg(&rendered)
        .output()
        .expect("haproxy (scripts/setup.sh installs it)");
    assert!(
        check.status.success(),
        "{}{}",
        text(&check.stdout),
        text(&check.stderr)
    );
    let ini = std::fs::read_to_string(pgb_dir.join("sample.ini")).unwrap();
    assert!(ini.contains("* = host=127.0.0.12 port=5432"), "{ini}");
    assert!(ini.contains("server_login_retry = 1"), "{ini}");
    assert!(!ini.contains("server_tls_sslmode"), "{ini}");
    let owner = std::fs::metadata(pgb_dir.join("sample.ini")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&owner),
        postgres,
        "a new file is given its directory's owner"
    );
    let tls = std::fs::read_to_string(dir.join("tls.ini")).unwrap();
    assert!(
        tls.contains("server_tls_sslmode = verify-full")
            && tls.contains("server_tls_ca_file = /etc/ca.pem"),
        "{tls}"
    );
}

/// `pgherd vip` refuses a configuration it cannot follow, naming the
/// field, before it touches an address; an unreachable etcd is named.
#[test]
fn pgherd_vip_refuses_bad_configurations_and_names_an_unreachable_etcd() {
    let dir = pgherd_e2e::TestDir::new("cli-vip");
    let settings = dir.path.join("settings.yaml");
    std::fs::write(&settings, "patroni:\n  etcd:\n    hosts: [127.0.0.1:9]\n").unwrap();
    // A documentation network this machine is not on.
    let addrs = text(
        &Command::new("ip")
            .args(["-4", "-o", "addr"])
            .output()
            .unwrap()
            .stdout,
    );
    let elsewhere = ["198.51.100", "203.0.113", "192.0.2"]
        .into_iter()
        .find(|net| !addrs.contains(&format!(" {net}.")))
        .expect("a documentation network this machine is not on");
    let no_network = format!("address: {elsewhere}.77/24\n");
    let not_held = format!("no interface of this host is on a network that holds {elsewhere}.77");
    let table = [
        ("address: 10.1.2\n", "address"),
        ("address: 10.1.2.3/40\n", "prefix length"),
        (no_network.as_str(), not_held.as_str()),
        ("address: 127.0.0.250/8\ninterval_ms: 20\n", "interval_ms"),
        (
            "address: 127.0.0.250/8\nrelease_after_ms: 1000\n",
            "release_after_ms",
        ),
        ("address: 127.0.0.250/8\ncolour: red\n", "colour"),
        ("address: 127.0.0.250/8\n", "127.0.0.1:9"),
    ];
    for (i, (extra, named)) in table.iter().enumerate() {
        let config = dir.path.join(format!("vip-{i}.yaml"));
        std::fs::write(
            &config,
            format!(
                "cluster: cli\nnode: pg1\nsettings: {}\n{extra}",
                settings.display()
            ),
        )
        .unwrap();
        let r = pgherd(&["vip", "--config", config.to_str().unwrap(), "--verify"]);
        assert!(!r.status.success(), "{extra}");
        let err = text(&r.stderr);
        assert!(err.contains(named), "{extra}: {err}");
    }
}
