//! The end-to-end harness: real etcd, real Patroni, real ansible-playbook,
//! on loopback addresses, in throwaway directories. Tests assert on what the
//! host and the cluster really are.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

pub mod pki;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// A program of the project's virtualenv (made by `scripts/setup.sh`).
pub fn venv_bin(name: &str) -> PathBuf {
    let path = repo_root().join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh first",
        path.display()
    );
    path
}

/// The directory holding `ansible_collections/pgherd/cluster`.
pub fn collections_path() -> PathBuf {
    repo_root().join("ansible_collection")
}

fn newest_mtime(dir: &Path, newest: &mut SystemTime) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            newest_mtime(&p, newest);
        } else if p.extension().is_some_and(|x| x == "rs" || x == "toml") {
            if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                *newest = (*newest).max(m);
            }
        }
    }
}

/// Fails unless the collection holds module binaries built after the last
/// change of the sources: the tests must never run yesterday's modules.
pub fn assert_collection_is_fresh() {
    let modules = collections_path().join("ansible_collections/pgherd/cluster/plugins/modules");
    let mut newest = SystemTime::UNIX_EPOCH;
    newest_mtime(&repo_root().join("crates"), &mut newest);
    for name in ["Cargo.lock", "Cargo.toml"] {
        if let Ok(m) = std::fs::metadata(repo_root().join(name)).and_then(|m| m.modified()) {
            newest = newest.max(m);
        }
    }
    for m in ["instance", "patroni"] {
        let bin = modules.join(m);
        let built = std::fs::metadata(&bin)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| {
                panic!(
                    "{} is missing: run scripts/build-collection.sh",
                    bin.display()
                )
            });
        assert!(
            built >= newest,
            "{} is older than the sources: run scripts/build-collection.sh",
            bin.display()
        );
    }
}

/// A directory for one test, readable by the postgres user, removed at
/// the end unless `PGHERD_KEEP` is set.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        let base = std::env::temp_dir().join("pgherd-e2e");
        std::fs::create_dir_all(&base).expect("create the e2e base directory");
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).ok();
        let path = base.join(format!("{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the test directory");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).ok();
        TestDir { path }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var_os("PGHERD_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Polls `probe` every 50 ms until it returns `Some`, or panics after
/// `deadline` with what `describe` says was last seen.
pub fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut probe: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if start.elapsed() > deadline {
            panic!(
                "timed out after {:?} waiting for {what}; last seen: {}",
                deadline,
                describe()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain HTTP GET on loopback: status and body.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_request("GET", addr, path)
}

/// A plain HTTP request without body on loopback: status and body.
pub fn http_request(method: &str, addr: &str, path: &str) -> Option<(u16, String)> {
    let sock: SocketAddr = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// One etcd member on 127.0.0.1, killed when dropped.
pub struct Etcd {
    child: Child,
    pub client_addr: String,
    /// `https` when started with TLS.
    pub scheme: &'static str,
    /// etcdctl's TLS options (empty without TLS).
    tls_args: Vec<String>,
    log: PathBuf,
}

impl Etcd {
    pub fn start(dir: &Path, client_port: u16, peer_port: u16) -> Etcd {
        Etcd::start_with(dir, client_port, peer_port, None)
    }

    /// With `pki`: clients must use TLS and present a certificate signed by
    /// the test CA (`--client-cert-auth`).
    pub fn start_with(
        dir: &Path,
        client_port: u16,
        peer_port: u16,
        pki: Option<&pki::Pki>,
    ) -> Etcd {
        let data = dir.join(format!("etcd-{client_port}"));
        let log = dir.join(format!("etcd-{client_port}.log"));
        let scheme = if pki.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(format!("e2e-{client_port}"))
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .arg("--initial-cluster")
            .arg(format!("e2e-{client_port}={peer}"));
        let mut tls_args = Vec::new();
        if let Some(p) = pki {
            cmd.arg("--cert-file")
                .arg(&p.server_cert)
                .arg("--key-file")
                .arg(&p.server_key)
                .arg("--trusted-ca-file")
                .arg(&p.ca)
                .arg("--client-cert-auth");
            tls_args = vec![
                format!("--cacert={}", p.ca.display()),
                format!("--cert={}", p.client_cert.display()),
                format!("--key={}", p.client_key.display()),
            ];
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("etcd log"))
            .stderr(std::fs::File::create(log.with_extension("err")).expect("etcd log"))
            .spawn()
            .expect("start etcd (is etcd-server installed? scripts/setup.sh)");
        let etcd = Etcd {
            child,
            client_addr: format!("127.0.0.1:{client_port}"),
            scheme,
            tls_args,
            log,
        };
        wait_for(
            "etcd to report healthy",
            Duration::from_secs(20),
            || etcd.etcdctl(None, &["endpoint", "health"]).ok().map(|_| ()),
            || tail(&etcd.log.with_extension("err"), 5),
        );
        etcd
    }

    /// Runs etcdctl against this member, as `user` (`name:password`).
    pub fn etcdctl(&self, user: Option<&str>, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new("etcdctl");
        cmd.arg(format!(
            "--endpoints={}://{}",
            self.scheme, self.client_addr
        ))
        .arg("--dial-timeout=2s")
        .args(&self.tls_args)
        .args(user.map(|u| format!("--user={u}")))
        .args(args)
        .env("ETCDCTL_API", "3");
        let out = cmd.output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Turns on etcd's role-based access: a root user, and `user` with
    /// read/write on `prefix` only.
    pub fn enable_auth(&self, root_password: &str, user: &str, password: &str, prefix: &str) {
        let root = format!("root:{root_password}");
        let steps: Vec<Vec<String>> = vec![
            vec!["user".into(), "add".into(), root.clone()],
            vec!["role".into(), "add".into(), user.into()],
            vec![
                "role".into(),
                "grant-permission".into(),
                user.into(),
                "--prefix=true".into(),
                "readwrite".into(),
                prefix.into(),
            ],
            vec!["user".into(), "add".into(), format!("{user}:{password}")],
            vec!["user".into(), "grant-role".into(), user.into(), user.into()],
            vec!["auth".into(), "enable".into()],
        ];
        for step in steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            if let Err(e) = self.etcdctl(None, &args) {
                panic!("etcdctl {}: {e}", args.first().unwrap_or(&""));
            }
        }
        self.etcdctl(Some(&root), &["auth", "status"])
            .expect("root can log in");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One task result, as the `pgherd_events` callback recorded it.
#[derive(Debug, Clone)]
pub struct TaskEvent {
    pub host: String,
    pub task: String,
    pub status: String,
    pub result: Value,
}

impl TaskEvent {
    pub fn changed(&self) -> bool {
        self.result["changed"].as_bool().unwrap_or(false)
    }
}

/// What an `ansible-playbook` run did.
#[derive(Debug)]
pub struct PlaybookRun {
    pub output: Output,
    pub events: Vec<TaskEvent>,
}

impl PlaybookRun {
    pub fn succeeded(&self) -> bool {
        self.output.status.success()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// Everything the run printed, for assertion messages.
    pub fn transcript(&self) -> String {
        format!(
            "{}\n--- stderr ---\n{}",
            self.stdout(),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }

    pub fn changed_tasks(&self) -> Vec<&TaskEvent> {
        self.events.iter().filter(|e| e.changed()).collect()
    }

    pub fn failed_tasks(&self) -> Vec<&TaskEvent> {
        self.events
            .iter()
            .filter(|e| e.status == "failed" || e.status == "unreachable")
            .collect()
    }
}

/// Runs `ansible-playbook` from the project's virtualenv with the
/// repository's collection, recording every task result.
pub fn ansible_playbook(
    dir: &Path,
    playbook: &Path,
    inventory: &Path,
    extra: &[&str],
) -> PlaybookRun {
    ansible_playbook_from(&collections_path(), dir, playbook, inventory, extra)
}

/// As [`ansible_playbook`], with the collection found under `collections`.
pub fn ansible_playbook_from(
    collections: &Path,
    dir: &Path,
    playbook: &Path,
    inventory: &Path,
    extra: &[&str],
) -> PlaybookRun {
    let events = dir.join(format!(
        "events-{}.jsonl",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let venv = repo_root().join(".venv/bin");
    let path = format!(
        "{}:{}",
        venv.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let tmp = dir.join("ansible-tmp");
    let output = Command::new(venv_bin("ansible-playbook"))
        .arg("-i")
        .arg(inventory)
        .arg(playbook)
        .args(extra)
        .current_dir(dir)
        .env("PATH", path)
        .env("ANSIBLE_COLLECTIONS_PATH", collections)
        .env(
            "ANSIBLE_CALLBACK_PLUGINS",
            repo_root().join("tests/ansible/callback_plugins"),
        )
        .env("ANSIBLE_CALLBACKS_ENABLED", "pgherd_events")
        .env("PGHERD_EVENTS_FILE", &events)
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .env("ANSIBLE_LOCAL_TEMP", tmp.join("local"))
        .env("ANSIBLE_REMOTE_TMP", tmp.join("remote"))
        .env("ANSIBLE_HOME", tmp.join("home"))
        .stdin(Stdio::null())
        .output()
        .expect("run ansible-playbook");
    let events = std::fs::read_to_string(&events)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| TaskEvent {
            host: v["host"].as_str().unwrap_or_default().to_string(),
            task: v["task"].as_str().unwrap_or_default().to_string(),
            status: v["status"].as_str().unwrap_or_default().to_string(),
            result: v["result"].clone(),
        })
        .collect();
    PlaybookRun { output, events }
}

/// Content hash, mode, owner and mtime of every file under `dir`, to show
/// that a run touched nothing.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, u32, u32, SystemTime)> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p.clone());
            }
            let mut h = std::collections::hash_map::DefaultHasher::new();
            if meta.is_file() {
                std::fs::read(&p).unwrap_or_default().hash(&mut h);
            }
            out.push((
                p,
                h.finish(),
                meta.mode(),
                meta.uid(),
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            ));
        }
    }
    out.sort();
    out
}

/// The uid of a user, for ownership checks.
pub fn uid_of(user: &str) -> u32 {
    let out = Command::new("id")
        .args(["-u", user])
        .output()
        .expect("run id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("user {user} does not exist: run scripts/setup.sh"))
}

/// Runs SQL on a local node through its socket directory, as postgres,
/// with the same psql runner pgherd uses.
pub fn psql(socket_dir: &Path, sql: &str) -> Result<String, String> {
    let runner = pgherd_core::sql::Psql {
        psql: PathBuf::from("/usr/lib/postgresql/15/bin/psql"),
        socket_dir: socket_dir.to_path_buf(),
        port: 5432,
        user: "postgres".into(),
        passfile: None,
        run_as: Some(
            pgherd_core::fs::lookup_account("postgres", None)
                .expect("the postgres user exists (scripts/setup.sh)"),
        ),
    };
    let rows = runner.query(sql).map_err(|e| e.to_string())?;
    Ok(rows
        .iter()
        .map(|r| r.join("|"))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Fails unless nothing listens on the nodes' PostgreSQL and REST ports.
pub fn assert_node_ports_free(addrs: &[&str]) {
    for addr in addrs {
        for port in [5432, 8008] {
            assert!(
                !port_open(&format!("{addr}:{port}")),
                "{addr}:{port} is in use: stop the demo first (scripts/demo.sh down)"
            );
        }
    }
}

/// Whether something accepts TCP connections at `addr`.
pub fn port_open(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .ok()
        .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_millis(300)).ok())
        .is_some()
}

/// Pids of processes whose command line mentions `needle`.
pub fn pids_mentioning(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) && pid != std::process::id() as i32 {
            pids.push(pid);
        }
    }
    pids
}

/// Kills, when dropped, every process whose command line mentions the
/// directory: a failed test leaves no Patroni or postmaster behind.
pub struct ProcessReaper {
    pub needle: String,
}

impl Drop for ProcessReaper {
    fn drop(&mut self) {
        for pid in pids_mentioning(&self.needle) {
            // SAFETY: plain kill(2) of a pid we found; errors are ignored.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Writes a playbook of one task: `module` with `args` (JSON is YAML),
/// on `host`; returns its path.
pub fn one_task_playbook(
    dir: &Path,
    name: &str,
    host: &str,
    module: &str,
    args: &Value,
) -> PathBuf {
    let path = dir.join(format!("{name}.yml"));
    std::fs::write(
        &path,
        format!("- hosts: {host}\n  gather_facts: false\n  tasks:\n    - name: {name}\n      {module}: {args}\n"),
    )
    .expect("write the playbook");
    path
}
