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

pub mod arp;
mod lab;
pub mod pki;

pub use lab::*;

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
    let aarch64 = collections_path().join("ansible_collections/pgherd/cluster/bin/aarch64");
    for bin in ["instance", "patroni", "etcd"]
        .iter()
        .flat_map(|m| [modules.join(m), aarch64.join(m)])
        .chain([pgherd_bin()])
    {
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

/// The start of every test on local nodes: the collection is fresh, the
/// nodes' addresses are free; a test directory, the nodes' root in it
/// (`local/`), and a reaper of every process mentioning that root when the
/// test ends (keep it bound: `_reaper`, not `_`).
pub fn local_nodes_test(tag: &str, addresses: &[&str]) -> (TestDir, PathBuf, ProcessReaper) {
    assert_collection_is_fresh();
    assert_node_ports_free(addresses);
    let dir = TestDir::new(tag);
    let root = dir.join("local");
    let reaper = ProcessReaper {
        needle: root.display().to_string(),
    };
    (dir, root, reaper)
}

/// Creates pg1 with the `instance` module, then pg2 and pg3 at once (as
/// site.yml does), each from `args_of(n)`; fails the test if one fails.
pub fn create_three_nodes(dir: &Path, args_of: impl Fn(u8) -> Value) {
    let pg1 = run_module(dir, "instance", &args_of(1));
    assert!(!pg1.failed(), "{pg1:?}");
    let replicas: Vec<_> = [2, 3]
        .iter()
        .map(|n| {
            spawn_module(
                "instance",
                &write_args_file(dir, &format!("pg{n}"), &args_of(*n)),
            )
        })
        .collect();
    for r in replicas {
        let r = finish_module(r);
        assert!(!r.failed(), "{r:?}");
    }
}

/// The `pgherd` command, as scripts/build-collection.sh builds it.
pub fn pgherd_bin() -> PathBuf {
    repo_root().join("target/bin/pgherd")
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
    child: Option<Child>,
    /// The command line, to start the member again after [`Etcd::kill`].
    args: Vec<String>,
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
        let cluster = format!("e2e-{client_port}=http://127.0.0.1:{peer_port}");
        let etcd = Etcd::spawn(dir, client_port, peer_port, pki, &cluster);
        etcd.wait_healthy();
        etcd
    }

    /// Starts a member that joins a running cluster (added to it first,
    /// as `member add` does) and waits until it is healthy.
    pub fn join(
        dir: &Path,
        client_port: u16,
        peer_port: u16,
        pki: Option<&pki::Pki>,
        initial_cluster: &str,
    ) -> Etcd {
        let etcd = Etcd::spawn_with_state(
            dir,
            (client_port, peer_port),
            pki,
            initial_cluster,
            "existing",
        );
        etcd.wait_healthy();
        etcd
    }

    fn spawn(
        dir: &Path,
        client_port: u16,
        peer_port: u16,
        pki: Option<&pki::Pki>,
        initial_cluster: &str,
    ) -> Etcd {
        Etcd::spawn_with_state(dir, (client_port, peer_port), pki, initial_cluster, "new")
    }

    /// Starts a member of `initial_cluster` without waiting for it: the
    /// members of a cluster only become healthy together.
    fn spawn_with_state(
        dir: &Path,
        (client_port, peer_port): (u16, u16),
        pki: Option<&pki::Pki>,
        initial_cluster: &str,
        state: &str,
    ) -> Etcd {
        let data = dir.join(format!("etcd-{client_port}"));
        let log = dir.join(format!("etcd-{client_port}.log"));
        let scheme = if pki.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut args: Vec<String> = vec![
            "--name".into(),
            format!("e2e-{client_port}"),
            "--data-dir".into(),
            data.display().to_string(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer,
            "--initial-cluster".into(),
            initial_cluster.into(),
            "--initial-cluster-state".into(),
            state.into(),
        ];
        let mut tls_args = Vec::new();
        if let Some(p) = pki {
            args.extend([
                "--cert-file".into(),
                p.server_cert.display().to_string(),
                "--key-file".into(),
                p.server_key.display().to_string(),
                "--trusted-ca-file".into(),
                p.ca.display().to_string(),
                "--client-cert-auth".into(),
            ]);
            tls_args = vec![
                format!("--cacert={}", p.ca.display()),
                format!("--cert={}", p.client_cert.display()),
                format!("--key={}", p.client_key.display()),
            ];
        }
        let mut etcd = Etcd {
            child: None,
            args,
            client_addr: format!("127.0.0.1:{client_port}"),
            scheme,
            tls_args,
            log,
        };
        etcd.launch();
        etcd
    }

    fn launch(&mut self) {
        let append = |p: PathBuf| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .expect("etcd log")
        };
        let child = Command::new("etcd")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(append(self.log.clone()))
            .stderr(append(self.log.with_extension("err")))
            .spawn()
            .expect("start etcd (is etcd-server installed? scripts/setup.sh)");
        self.child = Some(child);
    }

    pub fn wait_healthy(&self) {
        wait_for(
            "etcd to report healthy",
            Duration::from_secs(20),
            || self.etcdctl(None, &["endpoint", "health"]).ok().map(|_| ()),
            || tail(&self.log.with_extension("err"), 5),
        );
    }

    /// Kills the member (SIGKILL): a crash, not a clean stop.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a killed member again on its data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
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
        self.kill();
    }
}

/// Three etcd members on 127.0.0.1, client ports `base`, `base + 2`,
/// `base + 4` (peers one above each).
pub struct EtcdCluster {
    pub members: Vec<Etcd>,
}

impl EtcdCluster {
    pub fn start(dir: &Path, base: u16) -> EtcdCluster {
        EtcdCluster::start_with(dir, base, None)
    }

    /// With `pki`: clients must use TLS and present a certificate signed
    /// by the test CA.
    pub fn start_with(dir: &Path, base: u16, pki: Option<&pki::Pki>) -> EtcdCluster {
        let ports: Vec<(u16, u16)> = (0..3).map(|i| (base + 2 * i, base + 2 * i + 1)).collect();
        let initial = ports
            .iter()
            .map(|(c, p)| format!("e2e-{c}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let members: Vec<Etcd> = ports
            .iter()
            .map(|(c, p)| Etcd::spawn(dir, *c, *p, pki, &initial))
            .collect();
        for m in &members {
            m.wait_healthy();
        }
        EtcdCluster { members }
    }

    /// `host:port` of every member's client URL.
    pub fn client_addrs(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_addr.clone()).collect()
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
    ansible_playbook_env(collections, dir, playbook, inventory, extra, &[])
}

/// As [`ansible_playbook_from`], with these environment variables set too.
pub fn ansible_playbook_env(
    collections: &Path,
    dir: &Path,
    playbook: &Path,
    inventory: &Path,
    extra: &[&str],
    env: &[(&str, &Path)],
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
        .envs(env.iter().map(|(k, v)| (*k, *v)))
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
    psql_at(socket_dir, 5432, sql)
}

/// PostgreSQL's version number (`server_version_num`) of a release as
/// packages name it: `15.20` and `15.20-0+deb12u1` are 150020.
pub fn pg_version_num(release: &str) -> u64 {
    let upstream = release.split('-').next().unwrap_or(release);
    let (major, minor) = upstream.split_once('.').unwrap_or((upstream, "0"));
    major.parse::<u64>().unwrap_or(0) * 10_000 + minor.parse::<u64>().unwrap_or(0)
}

/// As [`psql`], for a node on another port.
pub fn psql_at(socket_dir: &Path, port: u16, sql: &str) -> Result<String, String> {
    let runner = pgherd_core::sql::Psql {
        psql: PathBuf::from("/usr/lib/postgresql/15/bin/psql"),
        socket_dir: socket_dir.to_path_buf(),
        port,
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

/// `node` lost as a host is, with its data: its processes killed
/// (SIGKILL: no shutdown, no key released), its files gone.
pub fn lose_node(root: &Path, node: &str, address: &str) {
    let needle = format!("{}/{node}/", root.display());
    for pid in pids_mentioning(&needle) {
        signal(pid, libc::SIGKILL);
    }
    wait_for(
        &format!("{node}'s processes gone"),
        Duration::from_secs(20),
        || {
            (pids_mentioning(&needle).is_empty()
                && !port_open(&format!("{address}:5432"))
                && !port_open(&format!("{address}:8008")))
            .then_some(())
        },
        || format!("{:?}", pids_mentioning(&needle)),
    );
    std::fs::remove_dir_all(root.join(node)).unwrap();
}

/// An inventory directory under `dir` with the local inventory's
/// variables (group_vars/all.yml) and `hosts` as its hosts.yml.
pub fn local_inventory_with(dir: &Path, hosts: &str) -> PathBuf {
    let inv = dir.join("inventory");
    std::fs::create_dir_all(inv.join("group_vars")).unwrap();
    std::fs::copy(
        repo_root().join("playbooks/inventories/local/group_vars/all.yml"),
        inv.join("group_vars/all.yml"),
    )
    .unwrap();
    std::fs::write(inv.join("hosts.yml"), hosts).unwrap();
    inv
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

/// The remote ports of the established TCP connections of process `pid`
/// to 127.0.0.1 (from its descriptors and /proc/net/tcp).
pub fn loopback_peer_ports(pid: i32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let target = std::fs::read_link(e.path()).ok()?;
                    let t = target.to_string_lossy();
                    Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let mut ports: Vec<u16> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // remote address, state 01 (established), inode
            let (remote, state, inode) = (f.get(2)?, f.get(3)?, f.get(9)?);
            if *state != "01" || !inodes.iter().any(|i| i == inode) {
                return None;
            }
            let (addr, port) = remote.split_once(':')?;
            (addr == "0100007F").then(|| u16::from_str_radix(port, 16).ok())?
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
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

/// Playbooks of the repository run on the local inventory with `vars`
/// (JSON extra vars) before any others a call adds.
pub struct LocalRun<'a> {
    pub dir: &'a Path,
    pub vars: String,
}

impl LocalRun<'_> {
    pub fn playbook(&self, path: &Path, extra: &[&str]) -> PlaybookRun {
        let mut args = vec!["-e", self.vars.as_str()];
        args.extend_from_slice(extra);
        ansible_playbook(
            self.dir,
            path,
            &repo_root().join("playbooks/inventories/local"),
            &args,
        )
    }

    /// `playbooks/NAME`.
    pub fn repo_playbook(&self, name: &str, extra: &[&str]) -> PlaybookRun {
        self.playbook(&repo_root().join("playbooks").join(name), extra)
    }
}

/// A leader's first deployment with a stanza: it succeeded, its changes
/// say the stanza was made and archiving checked, and `repository` holds
/// the stanza's archive.
pub fn assert_stanza_made(leader: &PlaybookRun, repository: &Path, stanza: &str) {
    leader.assert_ok("deploying the leader with a stanza");
    let changes =
        leader.events_of("PostgreSQL instance managed by Patroni")[0].result["changes"].to_string();
    assert!(
        changes.contains(&format!("create pgBackRest stanza {stanza}"))
            && changes.contains("check WAL archiving"),
        "{changes}"
    );
    assert!(
        repository
            .join("archive")
            .join(stanza)
            .join("archive.info")
            .exists(),
        "no archive of stanza {stanza} in {}",
        repository.display()
    );
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

/// A module binary of the built collection.
pub fn module_bin(module: &str) -> PathBuf {
    collections_path()
        .join("ansible_collections/pgherd/cluster/plugins/modules")
        .join(module)
}

/// One direct run of a module binary, the way Ansible runs a binary module:
/// the path of a JSON arguments file as its only argument.
#[derive(Debug)]
pub struct ModuleRun {
    pub code: Option<i32>,
    /// The one JSON object printed (`Null` when stdout held none).
    pub result: Value,
    pub stdout: String,
    pub stderr: String,
}

impl ModuleRun {
    /// Parses a finished module process's output.
    pub fn from_output(out: Output) -> ModuleRun {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        ModuleRun {
            code: out.status.code(),
            result: serde_json::from_str(stdout.trim()).unwrap_or(Value::Null),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn failed(&self) -> bool {
        self.result["failed"] == Value::Bool(true)
    }
    pub fn changed(&self) -> bool {
        self.result["changed"] == Value::Bool(true)
    }
    pub fn msg(&self) -> String {
        self.result["msg"].as_str().unwrap_or_default().to_string()
    }
    /// The warnings the module returned, one per line.
    pub fn warnings_text(&self) -> String {
        self.result["warnings"]
            .as_array()
            .map(|w| {
                w.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }
}

/// Writes `args` (the task's options) as an arguments file in `dir`: a
/// JSON object of the options, which is what Ansible gives binary modules.
pub fn write_args_file(dir: &Path, tag: &str, args: &Value) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("args-{tag}-{n}.json"));
    std::fs::write(&path, args.to_string()).expect("write the arguments file");
    path
}

/// Starts a module binary on an arguments file, without waiting.
pub fn spawn_module(module: &str, args_file: &Path) -> Child {
    Command::new(module_bin(module))
        .arg(args_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the module binary (run scripts/build-collection.sh)")
}

/// Runs a module binary as another user (`uid`, `gid`), as `become_user`
/// does, and waits for it.
pub fn run_module_as(dir: &Path, module: &str, args: &Value, uid: u32, gid: u32) -> ModuleRun {
    use std::os::unix::process::CommandExt;
    let file = write_args_file(dir, module, args);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).ok();
    let out = Command::new(module_bin(module))
        .arg(&file)
        .uid(uid)
        .gid(gid)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("start the module binary (run scripts/build-collection.sh)");
    ModuleRun::from_output(out)
}

/// Waits for a module started by [`spawn_module`] and parses its output.
pub fn finish_module(child: Child) -> ModuleRun {
    ModuleRun::from_output(child.wait_with_output().expect("wait for the module"))
}

/// Runs a module binary on `args` (written into the arguments file format
/// Ansible uses, under `dir`) and waits for it.
pub fn run_module(dir: &Path, module: &str, args: &Value) -> ModuleRun {
    let file = write_args_file(dir, module, args);
    finish_module(spawn_module(module, &file))
}

/// The settings of one local node under `node_root`, as the local
/// inventory writes them, with these etcd endpoints.
pub fn local_settings(node_root: &Path, etcd_hosts: &[String]) -> Value {
    let r = node_root.display();
    serde_json::json!({
        "postgresql": {
            "datadir": format!("{r}/data/{{version}}/{{name}}"),
            "socket_directory": format!("{r}/run"),
            "logdir": format!("{r}/log/postgresql-{{version}}-{{name}}"),
            "passfile": format!("{r}/etc/{{version}}-{{name}}.pgpass"),
        },
        "patroni": {
            "execpath": venv_bin("patroni").display().to_string(),
            "configpath": format!("{r}/etc/{{version}}-{{name}}.yaml"),
            "logdir": format!("{r}/log/patroni-{{version}}-{{name}}"),
            "piddir": format!("{r}/run"),
            "pgpass": format!("{r}/data/{{version}}-{{name}}.patroni.pgpass"),
            "ttl": 20,
            "loop_wait": 2,
            "retry_timeout": 5,
            "etcd": { "hosts": etcd_hosts },
        },
    })
}

/// The `instance` options of local node `node` (pgN on 127.0.0.1N) of
/// `cluster`, with its settings inline.
pub fn local_instance_args(node: u8, cluster: &str, settings: &Value) -> Value {
    let host = format!("127.0.0.1{node}");
    serde_json::json!({
        "name": "main",
        "version": "15",
        "port": 5432,
        "settings": settings,
        "surole_password": "local-superuser-pw",
        "replrole_password": "local-replication-pw",
        "rewind_password": "local-rewind-pw",
        "patroni": {
            "cluster": cluster,
            "node": format!("pg{node}"),
            "restapi": {
                "connect_address": format!("{host}:8008"),
                "listen": format!("{host}:8008"),
            },
            "postgresql": { "connect_host": host, "listen": host },
        },
    })
}

/// `args` with the top-level options of `extra` set (replaced or added).
pub fn with_options(mut args: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().expect("extra options are a mapping") {
        args[k] = v.clone();
    }
    args
}

/// Sends `sig` to `pid` (a process of the test's own cluster or module).
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) };
}

/// The pid on the first line of a pid file (Patroni's, postmaster.pid).
pub fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("{} holds no pid", path.display()))
}

/// `pid`'s parent and owner, from `/proc/PID/status`.
fn parent_and_owner(pid: i32) -> (i32, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("PPid:").parse().unwrap(), field("Uid:"))
}

/// Without systemd, Patroni and the postmaster it started detached are
/// children of pgherd's reaper, which runs as their user (`node`: a local
/// node's root, its instance `version`-`name`).
pub fn assert_reaped_by_pgherd(node: &Path, version: &str, name: &str) {
    let patroni = read_pid(&node.join(format!("run/patroni-{version}-{name}.pid")));
    let postmaster = read_pid(&node.join(format!("data/{version}/{name}/postmaster.pid")));
    let (reaper, patroni_uid) = parent_and_owner(patroni);
    let (postmaster_parent, _) = parent_and_owner(postmaster);
    let cmdline = std::fs::read(format!("/proc/{reaper}/cmdline")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&cmdline),
        "pgherd-reaper\0",
        "Patroni's parent"
    );
    assert_eq!(postmaster_parent, reaper, "the postmaster's parent");
    assert_eq!(parent_and_owner(reaper).1, patroni_uid, "the reaper's user");
}

/// A child process killed and reaped when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// When the postmaster a member's Patroni reports (at `api`, `host:port`)
/// started: it changes with every restart.
pub fn postmaster_start(api: &str) -> Option<String> {
    let (_, body) = http_get(api, "/patroni")?;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["postmaster_start_time"].as_str().map(str::to_string)
}

impl PlaybookRun {
    /// The results of the task named `task`, one per host.
    pub fn events_of(&self, task: &str) -> Vec<&TaskEvent> {
        self.events.iter().filter(|e| e.task == task).collect()
    }

    /// Whether a task named `task` (a role's task without its `role : `
    /// prefix) reported a change on some host.
    pub fn changed(&self, task: &str) -> bool {
        self.changed_tasks()
            .iter()
            .any(|e| e.task == task || e.task.ends_with(&format!(" : {task}")))
    }

    /// Fails the test unless the run succeeded, naming the step.
    pub fn assert_ok(&self, step: &str) {
        assert!(self.succeeded(), "{step} failed:\n{}", self.transcript());
    }

    /// Fails the test unless the run succeeded and changed nothing (a
    /// second run), naming the step.
    pub fn assert_unchanged(&self, step: &str) {
        self.assert_ok(step);
        let changed = self.changed_tasks();
        assert!(changed.is_empty(), "{step} changed: {changed:?}");
    }

    /// Fails the test unless the run failed and its first failed task's
    /// message names each of `parts` and says that nothing was changed.
    pub fn assert_refused(&self, parts: &[&str]) {
        assert!(!self.succeeded(), "{}", self.transcript());
        let msg = self.failed_tasks()[0].result["msg"].to_string();
        assert!(
            parts.iter().all(|p| msg.contains(p)) && msg.contains("nothing was changed"),
            "{msg}"
        );
    }
}

/// The values of column `x` of table `kept` on a local node (its socket
/// under `root/NODE/run`), comma separated in order.
pub fn kept_rows(root: &Path, node: &str) -> Result<String, String> {
    psql(
        &root.join(node).join("run"),
        "SELECT string_agg(x::text, ',' ORDER BY x) FROM kept",
    )
}

/// Waits until table `kept` holds `expected` on a local node.
pub fn wait_kept_rows(root: &Path, node: &str, expected: &str) {
    wait_for(
        &format!("table kept to hold {expected} on {node}"),
        Duration::from_secs(60),
        || (kept_rows(root, node).ok().as_deref() == Some(expected)).then_some(()),
        || format!("{:?}", kept_rows(root, node)),
    );
}

/// `/cluster` as the first of these REST APIs (`host:port`) that answers
/// lists it.
pub fn cluster_view_from(apis: impl IntoIterator<Item = String>) -> Option<Value> {
    apis.into_iter().find_map(|api| {
        http_get(&api, "/cluster")
            .filter(|(status, _)| *status == 200)
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
    })
}

/// `name: role/state` (`with_state`) or `name: role` of each member a
/// `/cluster` view lists, sorted; empty without a view.
pub fn member_roles(view: Option<&Value>, with_state: bool) -> Vec<String> {
    let mut out: Vec<String> = view
        .and_then(|v| v["members"].as_array())
        .map(|members| {
            members
                .iter()
                .map(|m| {
                    let field = |k: &str| m[k].as_str().unwrap_or("?").to_string();
                    if with_state {
                        format!("{}: {}/{}", field("name"), field("role"), field("state"))
                    } else {
                        format!("{}: {}", field("name"), field("role"))
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}
