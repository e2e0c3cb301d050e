//! The lab of Debian hosts booted by `scripts/lab.sh`: up for a test,
//! reached over SSH, its inventory, and curl for its TLS endpoints.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// The Patroni the lab's cluster image holds in /opt/patroni (the lab
/// inventory's execpath; scripts/lab.py's PATRONI_PIP).
pub const LAB_PATRONI: &str = "4.0.11";

/// The lab of Debian hosts (`scripts/lab.sh`), up for the life of a test
/// and taken down after it (unless `PGHERD_KEEP_LAB` is set).
pub struct Lab {
    pub hosts: Vec<String>,
}

/// Runs `scripts/lab.sh` with `args`; its output, or the test fails.
pub fn lab_sh(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/lab.sh"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/lab.sh");
    assert!(
        out.status.success(),
        "scripts/lab.sh {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Lab {
    /// Boots `n` hosts (lab1..labN), the image built or restored first.
    pub fn up(n: u8) -> Lab {
        assert_collection_is_fresh();
        lab_sh(&["down"]);
        lab_sh(&["up", "--hosts", &n.to_string()]);
        Lab {
            hosts: (1..=n).map(|i| format!("lab{i}")).collect(),
        }
    }

    /// Boots two sites of `a` and `b` hosts (lab1..labA, then the next
    /// `b`), each site its own etcd cluster.
    pub fn up_sites(a: u8, b: u8) -> Lab {
        assert_collection_is_fresh();
        lab_sh(&["down"]);
        lab_sh(&["up", "--sites", &format!("{a},{b}")]);
        Lab {
            hosts: (1..=a + b).map(|i| format!("lab{i}")).collect(),
        }
    }

    /// Boots `n` hosts with the cluster's packages and one more,
    /// lab(n+1), from an older Debian holding only the OS.
    pub fn up_with_old(n: u8) -> Lab {
        assert_collection_is_fresh();
        lab_sh(&["down"]);
        lab_sh(&["up", "--hosts", &n.to_string(), "--old"]);
        Lab {
            hosts: (1..=n + 1).map(|i| format!("lab{i}")).collect(),
        }
    }

    /// Boots `n` hosts with only the OS (no etcd member), apt reaching
    /// Debian's archive through the machine's proxy.
    pub fn up_bare(n: u8) -> Lab {
        assert_collection_is_fresh();
        lab_sh(&["down"]);
        lab_sh(&["up", "--hosts", &n.to_string(), "--bare"]);
        Lab {
            hosts: (1..=n).map(|i| format!("lab{i}")).collect(),
        }
    }

    /// An inventory in `dir` of these `hosts` only, with the lab
    /// inventory's variables (user, become, key); the hosts are also the
    /// `etcd` group.
    /// An inventory in `dir`: the lab's hosts (hosts.yml) and `vars` as
    /// its group_vars/all.yml.
    pub fn inventory_with_vars(dir: &Path, vars: &str) -> PathBuf {
        let inventory = dir.join("inventory");
        std::fs::create_dir_all(inventory.join("group_vars")).unwrap();
        std::fs::copy(
            Lab::inventory().join("hosts.yml"),
            inventory.join("hosts.yml"),
        )
        .unwrap();
        std::fs::write(inventory.join("group_vars/all.yml"), vars).unwrap();
        inventory
    }

    /// The lab's inventory in `dir` with what inventories/example secures:
    /// TLS for etcd, the REST API (client certificates required) and
    /// PostgreSQL (replication verified against the CA), etcd
    /// authentication (Patroni's and root's passwords), the PKI made in
    /// `dir`/pki. Certificates and keys on the hosts in /etc/pgherd/tls.
    pub fn secured_inventory(dir: &Path, etcd_patroni_pw: &str, etcd_root_pw: &str) -> PathBuf {
        use serde_json::{json, Value};
        let lab_vars: serde_yaml::Value = serde_yaml::from_str(&Lab::inventory_vars()).unwrap();
        let mut vars: Value = serde_json::to_value(&lab_vars).unwrap();
        let tls = "/etc/pgherd/tls";
        let settings = &mut vars["pgherd_settings"];
        settings["postgresql"]["client_ssl"] =
            json!({"sslmode": "verify-ca", "sslrootcert": format!("{tls}/ca.pem")});
        for (k, v) in [
            ("protocol", json!("https")),
            ("cacert", json!(format!("{tls}/ca.pem"))),
            ("cert", json!(format!("{tls}/client.pem"))),
            ("key", json!(format!("{tls}/client.key"))),
        ] {
            settings["patroni"]["etcd"][k] = v;
        }
        settings["patroni"]["restapi"] = json!({
            "cafile": format!("{tls}/ca.pem"), "certfile": format!("{tls}/server.pem"),
            "keyfile": format!("{tls}/server.key"), "verify_client": "required",
        });
        settings["patroni"]["ctl"] = json!({
            "certfile": format!("{tls}/client.pem"), "keyfile": format!("{tls}/client.key"),
            "cacert": format!("{tls}/ca.pem"),
        });
        vars["pg_parameters"] = json!({
            "ssl": "on", "ssl_cert_file": format!("{tls}/server.pem"),
            "ssl_key_file": format!("{tls}/server.key"), "ssl_ca_file": format!("{tls}/ca.pem"),
        });
        vars["patroni_etcd_auth"] = json!({"username": "patroni", "password": etcd_patroni_pw});
        vars["pgherd_etcd_root_password"] = json!(etcd_root_pw);
        vars["pgherd_pki_dir"] = json!(dir.join("pki"));
        // The packages role (bootstrap.yml) on bare hosts: Patroni into the
        // virtualenv the lab inventory's execpath names, from the
        // wheelhouse (bookworm's package is refused for new members).
        vars["packages_patroni_from"] = json!("pip");
        vars["packages_patroni_version"] = json!(LAB_PATRONI);
        vars["packages_pip_options"] = json!([
            "--no-index",
            "--find-links",
            Lab::wheelhouse(),
            "--trusted-host",
            Lab::machine_addr()
        ]);
        Lab::inventory_with_vars(dir, &serde_yaml::to_string(&vars).unwrap())
    }

    /// The lab inventory's variables (group_vars/all.yml), as text.
    pub fn inventory_vars() -> String {
        std::fs::read_to_string(Lab::inventory().join("group_vars/all.yml")).unwrap()
    }

    pub fn inventory_of(dir: &Path, hosts: &[&str]) -> PathBuf {
        let inventory = dir.join("inventory");
        std::fs::create_dir_all(inventory.join("group_vars")).expect("inventory directory");
        std::fs::copy(
            Lab::inventory().join("group_vars/all.yml"),
            inventory.join("group_vars/all.yml"),
        )
        .expect("copy the lab's variables");
        let listed: String = hosts
            .iter()
            .map(|h| format!("    {h}:\n      ansible_host: {}\n", Lab::addr(h)))
            .collect();
        let members: String = hosts.iter().map(|h| format!("        {h}:\n")).collect();
        std::fs::write(
            inventory.join("hosts.yml"),
            format!("all:\n  hosts:\n{listed}  children:\n    etcd:\n      hosts:\n{members}"),
        )
        .expect("write the inventory");
        inventory
    }

    /// Which lab the tests use: `PGHERD_LAB_ID` (scripts/lab.py), 0 unless
    /// set.
    pub fn id() -> u8 {
        std::env::var("PGHERD_LAB_ID")
            .ok()
            .filter(|v| !v.is_empty())
            .map_or(0, |v| v.parse().expect("PGHERD_LAB_ID is a number"))
    }

    /// The first three parts of the lab's addresses (scripts/lab.py's NET):
    /// `PGHERD_LAB_NET`, else 10.(231 + id).0.
    pub fn net() -> String {
        std::env::var("PGHERD_LAB_NET")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| format!("10.{}.0", 231 + u32::from(Lab::id())))
    }

    /// The lab's address of a host.
    pub fn addr(host: &str) -> String {
        format!(
            "{}.{}",
            Lab::net(),
            10 + host[3..].parse::<u32>().expect("labN")
        )
    }

    /// The machine's address on the lab's bridge.
    pub fn machine_addr() -> String {
        format!("{}.1", Lab::net())
    }

    /// An address of the lab's network no host has (`last` its last part).
    pub fn spare_addr(last: u8) -> String {
        format!("{}.{last}", Lab::net())
    }

    /// The lab's bridge on the machine.
    pub fn bridge() -> String {
        format!("pgherdlab{}", Lab::id())
    }

    /// The lab's SSH key (scripts/lab.py's STATE).
    pub fn key() -> PathBuf {
        let dir = std::env::var("PGHERD_LAB_DIR")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| match Lab::id() {
                0 => "/var/lib/pgherd-lab".to_string(),
                id => format!("/var/lib/pgherd-lab{id}"),
            });
        PathBuf::from(dir).join("id_ed25519")
    }

    /// `host=` of the three first hosts, for a client trying each in turn.
    pub fn all_three() -> String {
        format!(
            "host={},{},{}",
            Lab::addr("lab1"),
            Lab::addr("lab2"),
            Lab::addr("lab3")
        )
    }

    /// The wheelhouse of Patroni that `up --bare` serves on the bridge, for
    /// pip's `--find-links`.
    pub fn wheelhouse() -> String {
        format!("http://{}:3143/", Lab::machine_addr())
    }

    pub fn inventory() -> PathBuf {
        repo_root().join("playbooks/inventories/lab")
    }

    /// A command on a host over SSH, as the lab's user: its output, or
    /// what it printed when it failed.
    pub fn ssh(&self, host: &str, command: &str) -> Result<String, String> {
        lab_ssh(host, command)
    }

    /// An ansible-playbook run on the lab's inventory.
    pub fn playbook(&self, dir: &Path, playbook: &Path, extra: &[&str]) -> PlaybookRun {
        ansible_playbook(dir, playbook, &Lab::inventory(), extra)
    }

    /// A playbook in `dir` (file `name`) applying `role` to `host` with
    /// `vars` (`key: value` lines).
    pub fn role_playbook(
        dir: &Path,
        name: &str,
        host: &str,
        role: &str,
        vars: &[String],
    ) -> PathBuf {
        let path = dir.join(name);
        let vars: String = vars.iter().map(|v| format!("      {v}\n")).collect();
        std::fs::write(
            &path,
            format!("- hosts: {host}\n  gather_facts: false\n  roles:\n    - role: {role}\n{vars}"),
        )
        .unwrap();
        path
    }

    /// playbooks/switchover.yml to `to`, which must succeed.
    pub fn switchover(&self, dir: &Path, to: &str) {
        self.playbook(
            dir,
            &repo_root().join("playbooks/switchover.yml"),
            &["-e", &format!("new_leader={to}")],
        )
        .assert_ok("the switchover");
    }

    /// A switchover to `to` while a client writes through a proxy (`via`,
    /// at `host`:`port`) into a new table: every acknowledged write is on
    /// `to` after; the longest time between two acknowledged writes is
    /// printed and returned.
    pub fn switchover_through(
        &self,
        dir: &Path,
        via: &str,
        (host, port): (&str, u16),
        to: &str,
        story: fn() -> String,
    ) -> Duration {
        let all = Lab::all_three();
        lab_sql(&all, true, "CREATE TABLE written (id bigint PRIMARY KEY)").expect("the table");
        let writer = Writer::through(host, port, "written", story);
        writer.wait_progress(20, &format!("through {via} before the switchover"));
        self.switchover(dir, to);
        writer.wait_progress(20, &format!("through {via} after the switchover"));
        let acked = writer.finish_timed();
        let gap = Writer::longest_gap(&acked);
        eprintln!(
            "{via}: {} writes acknowledged, the longest time between two {:.2} s",
            acked.len(),
            gap.as_secs_f64()
        );
        let on_leader = lab_ids(&format!("host={}", Lab::addr(to)), "written");
        let lost: Vec<_> = acked
            .iter()
            .filter(|(id, _)| !on_leader.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "acknowledged writes missing on {to}: {lost:?}"
        );
        gap
    }

    /// Three hosts running the lab's cluster (site.yml), lab1 leading.
    pub fn deployed(dir: &Path, story: fn() -> String) -> Lab {
        let lab = Lab::up(3);
        lab.playbook(dir, &repo_root().join("playbooks/site.yml"), &[])
            .assert_ok("site.yml");
        lab_wait_whole(
            &["lab1", "lab2", "lab3"],
            "lab1",
            "the cluster whole",
            story,
        );
        lab
    }

    /// Whether dpkg has `package` installed on `host`.
    pub fn installed(&self, host: &str, package: &str) -> bool {
        self.ssh(
            host,
            &format!("dpkg-query -W -f '${{db:Status-Status}}' {package}"),
        )
        .is_ok_and(|s| s.trim() == "installed")
    }

    /// Another program (a Python HTTP server) listening on `port` of
    /// `host`, until [`Lab::release_ports`].
    pub fn hold_port(&self, host: &str, port: u16) {
        self.ssh(
            host,
            &format!(
                "nohup python3 -m http.server {port} --bind 0.0.0.0 >/dev/null 2>&1 & \
                 for i in $(seq 50); do ss -Hltn 'sport = :{port}' | grep -q . && break; sleep 0.1; done"
            ),
        )
        .unwrap();
    }

    pub fn release_ports(&self, host: &str) {
        self.ssh(host, "pkill -f '[h]ttp.server' || true").unwrap();
    }

    /// A role's playbook on `host` that installs `package`: check mode
    /// changes something and installs nothing, the run succeeds, the run
    /// again changes nothing.
    pub fn role_three_ways(&self, dir: &Path, playbook: &Path, host: &str, package: &str) {
        let check = self.playbook(dir, playbook, &["--check"]);
        check.assert_ok("the role in check mode");
        assert!(!check.changed_tasks().is_empty(), "{}", check.transcript());
        assert!(
            !self.installed(host, package),
            "check mode installs nothing"
        );
        self.playbook(dir, playbook, &[]).assert_ok("the role");
        assert!(self.installed(host, package));
        self.playbook(dir, playbook, &[])
            .assert_unchanged("the role again");
    }
}

/// `curl -X method url` with `options` (TLS files, credentials): the HTTP
/// status, or None when no HTTP exchange happened (TLS refused, nothing
/// listening).
pub fn curl_status(method: &str, url: &str, options: &[&str]) -> Option<u16> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .args(["-X", method])
        .args(options)
        .arg(url)
        .output()
        .expect("run curl");
    let code: u16 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (out.status.success() && code != 0).then_some(code)
}

/// `command` run on a lab host over SSH (as its user): its output, or its
/// output and errors when it failed. For code that holds no [`Lab`] (a
/// diagnostic printed while a test fails).
pub fn lab_ssh(host: &str, command: &str) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/lab.sh"))
        .args(["ssh", host, command])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run scripts/lab.sh ssh: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::env::var_os("PGHERD_KEEP_LAB").is_none() {
            let _ = Command::new("bash")
                .arg(repo_root().join("scripts/lab.sh"))
                .arg("down")
                .stdin(Stdio::null())
                .output();
        }
    }
}

/// What `command` prints on each of `hosts` (or why it could not run),
/// each under its host's name: what a test prints when the hosts do not
/// do what it waits for.
pub fn lab_story(hosts: &[&str], command: &str) -> String {
    hosts
        .iter()
        .map(|h| format!("--- {h}:\n{}", lab_ssh(h, command).unwrap_or_else(|e| e)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lab inventory's superuser password (group_vars/all.yml).
pub const LAB_SUPERUSER_PW: &str = "lab-superuser-pw";

/// A libpq query from the machine to `target` (`host=…`, libpq's list of
/// hosts), as the lab's superuser: its rows, one per line, or `None` when it
/// did not answer within 5 s. `read_write` asks for a member that takes
/// writes (a statement then may or may not have happened on `None`: never
/// count it as acknowledged).
pub fn lab_sql(target: &str, read_write: bool, statement: &str) -> Option<String> {
    lab_sql_port(target, 5432, read_write, statement)
}

/// The same on another port (a proxy's).
pub fn lab_sql_port(target: &str, port: u16, read_write: bool, statement: &str) -> Option<String> {
    let conninfo = format!(
        "{target} port={port} user=postgres dbname=postgres connect_timeout=2{}",
        if read_write {
            " target_session_attrs=read-write"
        } else {
            ""
        }
    );
    let out = Command::new("timeout")
        .args([
            "5",
            "/usr/lib/postgresql/15/bin/psql",
            "-X",
            "-A",
            "-t",
            "-q",
        ])
        .arg(&conninfo)
        .args(["-c", statement])
        .env("PGPASSWORD", LAB_SUPERUSER_PW)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `target`'s primary-key ids of `table` (`SELECT id`); empty when it does
/// not answer.
pub fn lab_ids(target: &str, table: &str) -> std::collections::BTreeSet<u64> {
    lab_sql(target, false, &format!("SELECT id FROM {table}"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// `name: role/state` of each member, as the first of `hosts` that
/// answers `/cluster` lists them.
pub fn lab_roles(hosts: &[&str]) -> Vec<String> {
    let view = hosts.iter().find_map(|h| lab_rest(h, "/cluster"));
    member_roles(view.as_ref(), true)
}

/// Waits until `leader` leads and every other host streams (or, under
/// Debian's Patroni 3.0.2, which does not tell streaming apart, runs as a
/// replica).
pub fn lab_wait_whole(hosts: &[&str], leader: &str, what: &str, story: fn() -> String) {
    let whole = |state: &str| -> Vec<String> {
        hosts
            .iter()
            .map(|h| {
                if *h == leader {
                    format!("{h}: leader/running")
                } else {
                    format!("{h}: replica/{state}")
                }
            })
            .collect()
    };
    wait_for(
        what,
        Duration::from_secs(60),
        || {
            let r = lab_roles(hosts);
            (r == whole("streaming") || r == whole("running")).then_some(())
        },
        || format!("{:?}\n{}", lab_roles(hosts), story()),
    );
}

/// A lab host's REST API, `GET path`, as JSON when it answers 200.
pub fn lab_rest(host: &str, path: &str) -> Option<serde_json::Value> {
    let (status, body) = http_get(&format!("{}:8008", Lab::addr(host)), path)?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

/// Inserts rows `1, 2, …` one by one into `table` (`id bigint`) through
/// `target` until finished; the ids acknowledged, and when.
pub struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::Mutex<Vec<(u64, std::time::Instant)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    story: fn() -> String,
}

impl Writer {
    /// `story` says what the hosts show when progress does not come.
    pub fn start(target: &str, table: &str, story: fn() -> String) -> Writer {
        let (target, table) = (target.to_string(), table.to_string());
        Writer::start_with(
            move |id| {
                lab_sql(&target, true, &format!("INSERT INTO {table} VALUES ({id})")).is_some()
            },
            story,
        )
    }

    /// Inserts into `table` through a proxy at `host`:`port`, asking for
    /// a read-write session as a client of the leader does (a proxy that
    /// hands out a server still recovering, or one that says so, is
    /// refused).
    pub fn through(host: &str, port: u16, table: &str, story: fn() -> String) -> Writer {
        let (target, table) = (format!("host={host}"), table.to_string());
        Writer::start_with(
            move |id| {
                lab_sql_port(
                    &target,
                    port,
                    true,
                    &format!("INSERT INTO {table} VALUES ({id})"),
                )
                .is_some()
            },
            story,
        )
    }

    /// Writes with `insert(id)`, which says whether the write was
    /// acknowledged.
    pub fn start_with(
        insert: impl Fn(u64) -> bool + Send + 'static,
        story: fn() -> String,
    ) -> Writer {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acked.clone());
        let thread = std::thread::spawn(move || {
            let mut id = 0u64;
            while !s.load(Ordering::SeqCst) {
                id += 1;
                if insert(id) {
                    a.lock().unwrap().push((id, std::time::Instant::now()));
                }
            }
        });
        Writer {
            stop,
            acked,
            thread: Some(thread),
            story,
        }
    }

    /// The longest time between two of the acknowledged writes `acked`.
    pub fn longest_gap(acked: &[(u64, std::time::Instant)]) -> Duration {
        acked
            .windows(2)
            .map(|w| w[1].1.duration_since(w[0].1))
            .max()
            .unwrap_or_default()
    }

    pub fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `more` writes more than now are acknowledged.
    pub fn wait_progress(&self, more: usize, what: &str) {
        let from = self.count();
        wait_for(
            &format!("{more} more acknowledged writes {what}"),
            Duration::from_secs(90),
            || (self.count() >= from + more).then_some(()),
            || format!("{} acknowledged so far\n{}", self.count(), (self.story)()),
        );
    }

    /// Stops writing; the ids acknowledged, in order.
    pub fn finish(self) -> Vec<u64> {
        self.finish_timed().into_iter().map(|(id, _)| id).collect()
    }

    /// Stops writing; the ids acknowledged with when, in order.
    pub fn finish_timed(mut self) -> Vec<(u64, std::time::Instant)> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.acked.lock().unwrap().clone()
    }
}
