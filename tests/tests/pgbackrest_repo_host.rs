//! A cluster whose pgBackRest repository is on a repository host reached
//! over TLS (pgBackRest's own server, client certificates), deployed by the
//! playbooks: the stanza made from the leader and its archiving checked
//! through the repository host, a full backup taken there (where pgBackRest
//! takes the backups of a remote repository, reaching the members' own
//! servers), the replicas built from it through the repository host, and
//! the `patroni` module refusing to back up on a member.
//!
//! The repository host is this machine's loopback under the name
//! `localhost` (pgBackRest checks the name a certificate carries, never an
//! address), its server and each member's on a port of their own.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pgherd_e2e::pki::Pki;
use pgherd_e2e::{local_nodes_test, psql, uid_of, wait_for, wait_kept_rows, Etcd, LocalRun};
use serde_json::json;

const STANZA: &str = "tills";
const REPO_PORT: u16 = 26_532;
/// Each member's own pgBackRest server: pgN's on 26_532 + N.
fn member_port(node: &str) -> u16 {
    26_532 + node[2..].parse::<u16>().unwrap()
}
const NODES: [&str; 3] = ["pg1", "pg2", "pg3"];

/// postgres's user and group.
fn postgres() -> (u32, u32) {
    let out = Command::new("id")
        .args(["-g", "postgres"])
        .output()
        .unwrap();
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (uid_of("postgres"), gid)
}

/// Gives `path` to postgres.
fn give(path: &Path) {
    let (uid, gid) = postgres();
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

/// A directory postgres owns.
fn postgres_dir(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path).unwrap();
    give(path);
    path.to_path_buf()
}

/// `pgbackrest --config=CONFIG ARGS` as postgres.
fn pgbackrest(config: &Path) -> Command {
    let (uid, gid) = postgres();
    let mut cmd = Command::new("pgbackrest");
    cmd.arg(format!("--config={}", config.display()))
        .uid(uid)
        .gid(gid)
        .env("HOME", "/var/lib/postgresql")
        .stdin(Stdio::null());
    cmd
}

/// A pgBackRest server with `config`, listening once `port` accepts.
fn serve(config: &Path, port: u16) -> Child {
    let child = pgbackrest(config)
        .arg("server")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pgbackrest server");
    wait_for(
        &format!("pgBackRest's server on port {port}"),
        Duration::from_secs(20),
        || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
        || std::fs::read_to_string(config).unwrap_or_default(),
    );
    child
}

/// The repository host, on this machine under the name `localhost`: its
/// repository, its server authorizing each member's certificate for the
/// stanza, and the stanza's members it backs up; beside it each member's
/// own server, which it reaches for backups.
struct RepositoryHost {
    root: PathBuf,
    /// Its node root: its configuration directory too.
    host: PathBuf,
    repository: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    servers: Vec<Child>,
}

impl RepositoryHost {
    /// Every member's certificate and server, then the repository host's
    /// server listing pg1 alone.
    fn start(root: &Path, pki: &Pki) -> RepositoryHost {
        let (cert, key) = pki.named("backup-host", "localhost");
        let host = postgres_dir(&root.join("backup-host"));
        let repository = postgres_dir(&host.join("repository"));
        postgres_dir(&host.join("log"));
        postgres_dir(&host.join("lock"));
        let mut servers: Vec<Child> = NODES.iter().map(|n| member_server(root, pki, n)).collect();
        let repo = RepositoryHost {
            root: root.to_path_buf(),
            host,
            repository,
            ca: pki.ca.clone(),
            cert,
            key,
            servers: Vec::new(),
        };
        repo.list_members(&["pg1"]);
        servers.push(serve(&repo.conf(), REPO_PORT));
        RepositoryHost { servers, ..repo }
    }

    fn conf(&self) -> PathBuf {
        self.host.join("pgbackrest.conf")
    }

    /// Its configuration, the stanza listing `members`: a backup fails
    /// while one it lists has no configuration yet (pgBackRest 2.45: its
    /// local process meets the member's server closing the connection),
    /// so the members are listed as they are deployed.
    fn list_members(&self, members: &[&str]) {
        let tls = |prefix: &str| {
            format!(
                "{prefix}-ca-file={}\n{prefix}-cert-file={}\n{prefix}-key-file={}\n",
                self.ca.display(),
                self.cert.display(),
                self.key.display()
            )
        };
        let mut text = format!(
            "[global]\nrepo1-path={}\nrepo1-retention-full=2\nlog-path={}\nlock-path={}\n\
             tls-server-address=127.0.0.1\ntls-server-port={REPO_PORT}\n{}{}\n[{STANZA}]\n",
            self.repository.display(),
            self.host.join("log").display(),
            self.host.join("lock").display(),
            tls("tls-server"),
            NODES
                .iter()
                .map(|node| format!("tls-server-auth={node}={STANZA}\n"))
                .collect::<String>(),
        );
        for (i, node) in members.iter().enumerate() {
            let n = i + 1;
            let node_root = self.root.join(node);
            text.push_str(&format!(
                "pg{n}-host=localhost\npg{n}-host-type=tls\npg{n}-host-port={}\n\
                 pg{n}-host-config={}\n{}pg{n}-path={}\n",
                member_port(node),
                node_root.join("etc/pgbackrest-15-main.conf").display(),
                tls(&format!("pg{n}-host")),
                node_root.join("data/15/main").display(),
            ));
        }
        std::fs::write(self.conf(), text).unwrap();
        give(&self.conf());
    }

    /// The members' settings that reach it: their certificates under
    /// their node roots; its configuration directory, read on it, its own
    /// node root (as its inventory gives it).
    fn members_settings(&self) -> serde_json::Value {
        json!({"pgbackrest": {"repository": {
            "path": self.repository,
            "host": {
                "name": "localhost",
                "port": REPO_PORT,
                "cafile": self.ca,
                "certfile": "{{ pgherd_node_root }}/tls/member.pem",
                "keyfile": "{{ pgherd_node_root }}/tls/member.key",
                "config_path": "{{ pgherd_node_root }}",
            },
        }}})
    }

    /// An inventory in `dir` holding it in the pgbackrest_repo group, its
    /// node root its own directory (where no member runs): its path.
    fn inventory(&self, dir: &Path) -> String {
        let path = dir.join("repository-host.yml");
        std::fs::write(
            &path,
            format!(
                "all:\n  children:\n    pgbackrest_repo:\n      hosts:\n        backup-host:\n\
                 \x20         ansible_host: 127.0.0.1\n          pgherd_node_root: {}\n",
                self.host.display()
            ),
        )
        .unwrap();
        path.display().to_string()
    }

    /// A settings file of its own for `pgherd` on it (etcd at `etcd`).
    fn settings_file(&self, etcd: &str) -> PathBuf {
        let path = self.host.join("settings.yaml");
        std::fs::write(
            &path,
            json!({
                "patroni": {
                    "configpath": self.host.join("etc/{version}-{name}.yaml"),
                    "etcd": {"hosts": [etcd]},
                },
                "pgbackrest": {"repository": {
                    "path": self.repository,
                    "host": {"name": "localhost", "port": REPO_PORT, "cafile": self.ca,
                             "certfile": "/unused", "keyfile": "/unused",
                             "config_path": self.host},
                }},
            })
            .to_string(),
        )
        .unwrap();
        path
    }

    /// The backups in the repository (their labels), as its files say.
    fn backups(&self) -> Vec<String> {
        let mut labels: Vec<String> =
            std::fs::read_dir(self.repository.join("backup").join(STANZA))
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with('F') || n.ends_with('I') || n.ends_with('D'))
                .collect();
        labels.sort();
        labels
    }
}

/// A member's certificate where its settings name it, and its own
/// pgBackRest server authorizing the repository host's certificate.
fn member_server(root: &Path, pki: &Pki, node: &str) -> Child {
    let node_root = root.join(node);
    let (cert, key) = pki.named(node, "localhost");
    let tls = postgres_dir(&node_root.join("tls"));
    for (from, to) in [(&cert, "member.pem"), (&key, "member.key")] {
        std::fs::copy(from, tls.join(to)).unwrap();
        give(&tls.join(to));
    }
    let server_dir = postgres_dir(&node_root.join("pgbackrest-server"));
    let server_conf = server_dir.join("server.conf");
    std::fs::write(
        &server_conf,
        format!(
            "[global]\nlog-path={}\ntls-server-address=127.0.0.1\ntls-server-port={}\n\
             tls-server-ca-file={}\ntls-server-cert-file={}\ntls-server-key-file={}\n\
             tls-server-auth=backup-host={STANZA}\n",
            server_dir.display(),
            member_port(node),
            pki.ca.display(),
            tls.join("member.pem").display(),
            tls.join("member.key").display(),
        ),
    )
    .unwrap();
    serve(&server_conf, member_port(node))
}

#[test]
fn members_archive_to_and_are_built_from_a_repository_host_over_tls() {
    let (dir, root, _reaper) =
        local_nodes_test("pgbr-host", &["127.0.0.11", "127.0.0.12", "127.0.0.13"]);
    let etcd = Etcd::start(&dir.path, 26_379, 26_380);
    let pki = Pki::create(&dir.join("pki"));
    let repo = RepositoryHost::start(&root, &pki);
    let (host, repository) = (&repo.host, &repo.repository);

    let settings = repo.members_settings();
    let run = LocalRun {
        dir: &dir.path,
        vars: json!({
            "pgherd_local_root": root,
            "pgherd_etcd_hosts": [etcd.client_addr],
            "pgbackrest_stanza": STANZA,
            "pgherd_settings_extra": settings.clone(),
        })
        .to_string(),
    };

    // The leader: the stanza made and archiving checked through the
    // repository host.
    let leader = run.repo_playbook("site.yml", &["--limit", "pg1"]);
    pgherd_e2e::assert_stanza_made(&leader, repository, STANZA);
    let member_conf =
        std::fs::read_to_string(root.join("pg1/etc/pgbackrest-15-main.conf")).unwrap();
    assert!(
        member_conf.contains("repo1-host=localhost\nrepo1-host-type=tls\n"),
        "{member_conf}"
    );
    psql(
        &root.join("pg1/run"),
        "CREATE TABLE kept(x int); INSERT INTO kept VALUES (1), (2), (3)",
    )
    .unwrap();

    // A member does not back up a remote repository: the module says where.
    let refused = run.repo_playbook("backup.yml", &["--limit", "pg1"]);
    assert!(!refused.succeeded(), "{}", refused.transcript());
    let msg = refused.events_of("Back up on the leader")[0].result["msg"].to_string();
    assert!(
        msg.contains("the repository host localhost takes the backups"),
        "{msg}"
    );
    assert_eq!(repo.backups(), Vec::<String>::new(), "no backup taken");

    // The repository host in the inventory (its own node root, where no
    // member runs; its pgBackRest configuration in `config_path`): the
    // backup is taken there, reaching pg1's server, every member skipped.
    let repo_inventory = repo.inventory(&dir.path);
    let full = run.repo_playbook("backup.yml", &["-i", &repo_inventory]);
    full.assert_ok("backup.yml with the repository host");
    let took: Vec<&str> = full
        .changed_tasks()
        .iter()
        .map(|e| e.host.as_str())
        .collect();
    assert_eq!(took, ["backup-host"], "{}", full.transcript());
    let taken = &full
        .events_of("Back up on the leader")
        .into_iter()
        .find(|e| e.host == "backup-host")
        .unwrap()
        .result;
    assert_eq!(taken["backup"]["type"], "full", "{taken}");
    assert_eq!(
        repo.backups(),
        [taken["backup"]["label"].as_str().unwrap()],
        "the repository holds the backup the task reports"
    );

    // The replicas are built from it, through the repository host.
    let whole = run.repo_playbook("site.yml", &[]);
    whole.assert_ok("deploying the replicas");
    for node in ["pg2", "pg3"] {
        let log = std::fs::read_to_string(root.join(node).join("log/patroni-15-main/patroni.log"))
            .unwrap_or_default();
        assert!(
            log.contains("replica has been created using pgbackrest"),
            "{node}'s Patroni log:\n{log}"
        );
        wait_kept_rows(&root, node, "1,2,3");
    }
    // Every member listed: the next backup finds the leader among them,
    // `pgherd backup` on the repository host (settings of its own).
    repo.list_members(&NODES);
    let host_settings = repo.settings_file(&etcd.client_addr);
    let incr = pgherd(&host_settings, &["backup", "--type", "incr"]);
    assert!(
        incr.status.success()
            && String::from_utf8_lossy(&incr.stdout).contains("on the repository host localhost"),
        "{}{}",
        String::from_utf8_lossy(&incr.stdout),
        String::from_utf8_lossy(&incr.stderr)
    );
    let held = repo.backups();
    assert!(
        held.len() == 2 && held[1].ends_with('I'),
        "the repository holds the full and the incremental backup: {held:?}"
    );
    let again = run.repo_playbook("site.yml", &[]);
    again.assert_ok("the second deployment");
    assert!(
        again.changed_tasks().is_empty(),
        "a second run changed: {:?}",
        again.changed_tasks()
    );
    assert_the_leader_reports_the_backups(&again);

    // `pgherd status --backups` there: the members, then the newest backup.
    let status = pgherd(&host_settings, &["status", "--backups"]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success()
            && shown.contains("pg1")
            && shown.contains(&format!("backups (stanza {STANZA}, ok): newest incr ")),
        "{shown}{}",
        String::from_utf8_lossy(&status.stderr)
    );

    // The repository host's metrics script (role pgbackrest_repo), on it.
    assert_metrics_say_the_backups_are_recent(&dir.join("pgbackrest.prom"), host, repository);

    // What a member's host reads of the repository host: the backup.
    let listed = pgherd(
        &root.join("pg2/settings.yaml"),
        &["backup", "--list", "--json"],
    );
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(
        text.contains("\"full\"") && text.contains("\"incr\""),
        "{text}"
    );
    drop(repo.servers);
}

/// `pgherd -s SETTINGS -c pgherd-local ARGS`.
fn pgherd(settings: &Path, args: &[&str]) -> std::process::Output {
    Command::new(pgherd_e2e::pgherd_bin())
        .arg("-s")
        .arg(settings)
        .args(["-c", "pgherd-local"])
        .args(args)
        .output()
        .unwrap()
}

/// The leader's `instance` task says how old the newest backup and the
/// newest archived WAL are; the replicas' say nothing of it.
fn assert_the_leader_reports_the_backups(run: &pgherd_e2e::PlaybookRun) {
    for event in run.events_of("PostgreSQL instance managed by Patroni") {
        let backups = &event.result["instance"]["backups"];
        if event.host != "pg1" {
            assert!(backups.is_null(), "{}: {backups}", event.host);
            continue;
        }
        assert_eq!(backups["stanza"], STANZA, "{backups}");
        assert_eq!(backups["newest_backup"]["type"], "incr", "{backups}");
        assert!(
            backups["newest_backup_age"]
                .as_i64()
                .is_some_and(|a| (0..600).contains(&a)),
            "{backups}"
        );
        assert!(
            backups["last_archived_wal"]
                .as_str()
                // A segment, or a backup's history file after it.
                .is_some_and(|w| w.len() >= 24 && w[..24].chars().all(|c| c.is_ascii_hexdigit())),
            "{backups}"
        );
        assert!(
            backups["last_archived_age"]
                .as_i64()
                .is_some_and(|a| (0..600).contains(&a)),
            "{backups}"
        );
        assert_eq!(backups["archiving_fails"], false, "{backups}");
    }
}

/// The repository host's metrics script (role pgbackrest_repo) writes
/// `prom` from the repository: the newest full and incremental backups
/// and WAL within the last 10 minutes, the stanza ok.
fn assert_metrics_say_the_backups_are_recent(prom: &Path, host: &Path, repository: &Path) {
    let script = pgherd_e2e::repo_root().join(
    "ansible_collection/ansible_collections/pgherd/cluster/roles/pgbackrest_repo/files/pgbackrest_metrics.py",
);
    let wrote = Command::new("python3")
        .arg(&script)
        .args([STANZA])
        .arg(host)
        .arg(repository)
        .arg("postgres")
        .arg(prom)
        .output()
        .unwrap();
    assert!(
        wrote.status.success(),
        "{}",
        String::from_utf8_lossy(&wrote.stderr)
    );
    let metrics = std::fs::read_to_string(prom).unwrap();
    let value = |name: &str| -> i64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in\n{metrics}"))
    };
    let now = pgherd_core::names::unix_now() as i64;
    for name in [
        "pgbackrest_backup_last_end_timestamp_seconds{stanza=\"tills\",type=\"full\"}",
        "pgbackrest_backup_last_end_timestamp_seconds{stanza=\"tills\",type=\"incr\"}",
        "pgbackrest_wal_archive_last_timestamp_seconds{stanza=\"tills\"}",
    ] {
        let at = value(name);
        assert!(now - 600 < at && at <= now, "{name} {at} (now {now})");
    }
    assert_eq!(value("pgbackrest_stanza_status_code{stanza=\"tills\"}"), 0);
    assert_eq!(value("pgbackrest_info_up{stanza=\"tills\"}"), 1);
}
