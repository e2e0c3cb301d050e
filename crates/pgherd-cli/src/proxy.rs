//! `pgherd proxy`: keeps a proxy's configuration (PgBouncer, HAProxy, ...)
//! pointed at the cluster. It watches the cluster's keys in etcd, renders
//! a tera template with the leader and the members whenever the leader,
//! a member or the synchronous standbys change, writes the target file
//! atomically only when its bytes change, and then runs a reload command.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use pgherd_core::dcs::{cluster_prefix, parse_cluster_keys, ClusterKeys, Dcs};
use pgherd_core::error::{Error, Result};
use pgherd_core::fs::{running_as_root, write_atomic, Owner};
use pgherd_core::manifest::Login;
use pgherd_core::settings::{Settings, SettingsSource};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The proxy's configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// The cluster (Patroni scope).
    pub cluster: String,
    /// pgherd site settings for etcd's endpoints, TLS and namespace: a
    /// path; when absent, the default settings file or built-in defaults.
    #[serde(default)]
    pub settings: Option<PathBuf>,
    /// The tera template.
    pub template: PathBuf,
    /// The file the template renders to.
    pub target: PathBuf,
    /// Mode of the target file, octal (default 0640).
    #[serde(default)]
    pub mode: Option<String>,
    /// Owner (user, then its primary group unless `group` is given) of the
    /// target file. By default an existing file keeps its owner and a new
    /// one gets the owner of its directory, so that the proxy reading it
    /// (PgBouncer, HAProxy, running as another user) can.
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    /// Run after the target changed: a string for `/bin/sh -c`, or a list
    /// (program and arguments, no shell).
    #[serde(default)]
    pub reload_command: Option<ReloadCommand>,
    /// Values handed to the template as `vars`.
    #[serde(default)]
    pub vars: BTreeMap<String, Value>,
    /// Render even when no member holds the leader key (during a failover).
    /// By default the file is left as it is until a leader is known.
    #[serde(default)]
    pub render_without_leader: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ReloadCommand {
    Shell(String),
    Argv(Vec<String>),
}

impl ProxyConfig {
    pub fn load(path: &Path) -> Result<ProxyConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(path, "reading the proxy configuration", e))?;
        let config: ProxyConfig = serde_yaml::from_str(&text).map_err(|e| Error::Settings {
            origin: path.display().to_string(),
            msg: e.to_string(),
        })?;
        config.check(path)?;
        Ok(config)
    }

    fn check(&self, path: &Path) -> Result<()> {
        let bad = |msg: String| Error::Settings {
            origin: path.display().to_string(),
            msg,
        };
        pgherd_core::names::Name::parse("cluster", &self.cluster).map_err(bad)?;
        self.mode().map_err(|e| bad(format!("mode: {e}")))?;
        if self.group.is_some() && self.owner.is_none() {
            return Err(bad("group is set without owner: give both".into()));
        }
        match &self.reload_command {
            Some(ReloadCommand::Argv(argv)) if argv.is_empty() => {
                Err(bad("reload_command: an empty list runs nothing".into()))
            }
            Some(ReloadCommand::Shell(s)) if s.trim().is_empty() => {
                Err(bad("reload_command: an empty command runs nothing".into()))
            }
            _ => Ok(()),
        }
    }

    pub fn mode(&self) -> std::result::Result<u32, String> {
        match &self.mode {
            None => Ok(0o640),
            Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| format!("{m:?} is not an octal file mode such as \"0640\"")),
        }
    }
}

/// One member as templates see it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProxyMember {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// `leader`, `sync_standby` or `replica`.
    pub role: String,
    /// Patroni's state: `running`, `streaming`, `stopped`, ...
    pub state: String,
    /// Bytes of WAL behind the leader, when both positions are known.
    pub lag: Option<u64>,
    pub timeline: Option<u64>,
    pub tags: BTreeMap<String, Value>,
}

/// What a template renders from.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProxyView {
    pub cluster: String,
    pub leader: Option<ProxyMember>,
    /// Every member with an address, leader included, by name.
    pub members: Vec<ProxyMember>,
    /// The members other than the leader that replicate (`running` or
    /// `streaming`), by name.
    pub replicas: Vec<ProxyMember>,
    pub vars: BTreeMap<String, Value>,
}

/// `postgres://host:port/db` -> (host, port).
fn conn_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit('@').next()?;
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse().ok()?),
        _ => (host_port, 5432),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// The leader's WAL position: Patroni's `status` key (Patroni 3 and
/// later), else its `optime/leader` key, else the leader's own report.
fn leader_position(keys: &ClusterKeys, kvs: &[(String, String)]) -> Option<u64> {
    if let Some(p) = keys.status.as_ref().and_then(|s| s["optime"].as_u64()) {
        return Some(p);
    }
    let optime_key = format!("{}optime/leader", keys.prefix);
    kvs.iter()
        .find(|(k, _)| *k == optime_key)
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// Whether a member's key says it runs as the leader: Patroni's role
/// `primary` (`master` before Patroni 4), or `standby_leader` in a
/// standby cluster.
fn runs_as_leader(member: &Value) -> bool {
    matches!(
        member["role"].as_str(),
        Some("primary" | "master" | "standby_leader")
    )
}

/// The view of the cluster's keys that templates see.
pub fn view(
    keys: &ClusterKeys,
    kvs: &[(String, String)],
    cluster: &str,
    vars: &BTreeMap<String, Value>,
) -> ProxyView {
    let sync: Vec<String> = keys
        .sync
        .as_ref()
        .and_then(|s| s["sync_standby"].as_str())
        .map(|s| s.split(',').map(|n| n.trim().to_string()).collect())
        .unwrap_or_default();
    // The leader once it runs as one: between taking the leader key and
    // the end of its promotion (a second or so) the member still recovers,
    // and a pooler connecting then keeps what it saw (PgBouncer caches
    // in_hot_standby=on for the pool, and clients asking for a read-write
    // session are refused until the next change of server).
    let leader_name = keys
        .leader
        .clone()
        .filter(|l| keys.members.get(l).is_some_and(runs_as_leader));
    let leader_pos = leader_position(keys, kvs).or_else(|| {
        let l = keys.members.get(leader_name.as_deref()?)?;
        l["xlog_location"].as_u64()
    });
    let mut members: Vec<ProxyMember> = keys
        .members
        .iter()
        .filter_map(|(name, v)| {
            let (host, port) = conn_host_port(v["conn_url"].as_str()?)?;
            let is_leader = leader_name.as_deref() == Some(name.as_str());
            let role = if is_leader {
                "leader"
            } else if sync.iter().any(|s| s == name) {
                "sync_standby"
            } else {
                "replica"
            };
            let lag = if is_leader {
                Some(0)
            } else {
                match (leader_pos, v["xlog_location"].as_u64()) {
                    (Some(l), Some(m)) => Some(l.saturating_sub(m)),
                    _ => None,
                }
            };
            Some(ProxyMember {
                name: name.clone(),
                host,
                port,
                role: role.into(),
                state: v["state"].as_str().unwrap_or("unknown").into(),
                lag,
                timeline: v["timeline"].as_u64(),
                tags: v["tags"]
                    .as_object()
                    .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
            })
        })
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let leader = members.iter().find(|m| m.role == "leader").cloned();
    let replicas = members
        .iter()
        .filter(|m| m.role != "leader" && matches!(m.state.as_str(), "running" | "streaming"))
        .cloned()
        .collect();
    ProxyView {
        cluster: cluster.to_string(),
        leader,
        members,
        replicas,
        vars: vars.clone(),
    }
}

/// Whether a change of `key` can change what templates see.
pub fn is_relevant(prefix: &str, key: &str) -> bool {
    match key.strip_prefix(prefix) {
        Some("leader") | Some("sync") => true,
        Some(rest) => rest.starts_with("members/"),
        None => false,
    }
}

/// Renders the template with `view`.
pub fn render(template: &str, origin: &Path, view: &ProxyView) -> Result<String> {
    let context = tera::Context::from_serialize(view).map_err(|e| Error::Template {
        origin: origin.display().to_string(),
        msg: e.to_string(),
    })?;
    tera::Tera::one_off(template, &context, false).map_err(|e| Error::Template {
        origin: origin.display().to_string(),
        msg: template_error(&e),
    })
}

/// tera's error with its causes, which say what was wrong.
fn template_error(e: &tera::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// What one pass did to the target.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Written,
    /// No leader is known and the configuration does not render without.
    NoLeader,
}

/// The watcher: the configuration, its template, and what was last seen.
pub struct Proxy {
    pub config: ProxyConfig,
    template: String,
    settings: Settings,
    login: Option<Login>,
    prefix: String,
    mode: u32,
    /// The configured owner of the target file.
    owner: Option<Owner>,
    /// Also tell of passes that changed nothing.
    pub verbose: bool,
}

fn log(msg: &str) {
    eprintln!("pgherd proxy: {msg}");
}

impl Proxy {
    pub fn new(config: ProxyConfig, login: Option<Login>) -> Result<Proxy> {
        let settings =
            Settings::load(&SettingsSource::file_or_default(config.settings.as_deref()))?;
        let template = std::fs::read_to_string(&config.template)
            .map_err(|e| Error::io(&config.template, "reading the template", e))?;
        let prefix = cluster_prefix(&settings.patroni.etcd.namespace, &config.cluster);
        let mode = config.mode().map_err(Error::Other)?;
        let owner = match &config.owner {
            Some(user) => Some(pgherd_core::fs::lookup_owner(
                user,
                config.group.as_deref(),
            )?),
            None => None,
        };
        let login = pgherd_core::dcs::effective_login(login.as_ref(), &settings.patroni.etcd);
        Ok(Proxy {
            config,
            template,
            settings,
            login,
            prefix,
            mode,
            owner,
            verbose: false,
        })
    }

    /// Renders from the cluster's keys and writes the target when its
    /// bytes change.
    fn apply(&self, keys: &ClusterKeys, kvs: &[(String, String)]) -> Result<Outcome> {
        let view = view(keys, kvs, &self.config.cluster, &self.config.vars);
        if view.leader.is_none() && !self.config.render_without_leader {
            return Ok(Outcome::NoLeader);
        }
        let text = render(&self.template, &self.config.template, &view)?;
        let target = &self.config.target;
        if std::fs::read(target).ok().as_deref() == Some(text.as_bytes()) {
            return Ok(Outcome::Unchanged);
        }
        // The proxy reading the file (pgbouncer, haproxy) runs as another
        // user: the configured owner, else the file's own, else its
        // directory's.
        let owner_of = |p: &Path| {
            std::fs::metadata(p).ok().map(|m| Owner {
                uid: m.uid(),
                gid: m.gid(),
            })
        };
        let owner = self.owner.or_else(|| {
            running_as_root()
                .then(|| owner_of(target).or_else(|| target.parent().and_then(owner_of)))
                .flatten()
        });
        write_atomic(target, text.as_bytes(), self.mode, owner)?;
        Ok(Outcome::Written)
    }

    /// Starts the reload command; a thread reports how it ended, which
    /// the returned handle waits for.
    fn reload(&self) -> Option<std::thread::JoinHandle<()>> {
        let command = self.config.reload_command.as_ref()?;
        let (mut cmd, shown) = match command {
            ReloadCommand::Shell(s) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(s);
                (c, s.clone())
            }
            ReloadCommand::Argv(argv) => {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                (c, argv.join(" "))
            }
        };
        match cmd.stdin(std::process::Stdio::null()).spawn() {
            Ok(mut child) => Some(std::thread::spawn(move || match child.wait() {
                Ok(s) if s.success() => {}
                Ok(s) => log(&format!("reload command `{shown}` failed: {s}")),
                Err(e) => log(&format!("reload command `{shown}`: {e}")),
            })),
            Err(e) => {
                log(&format!("cannot run the reload command `{shown}`: {e}"));
                None
            }
        }
    }

    /// Logs a pass; one that changed nothing only when `always` (the first
    /// pass, a single render) or verbose.
    fn report(&self, outcome: &Outcome, why: &str, keys: &ClusterKeys, always: bool) {
        if *outcome == Outcome::Unchanged && !(always || self.verbose) {
            return;
        }
        let leader = keys.leader.as_deref().unwrap_or("none");
        let target = self.config.target.display();
        let what = match outcome {
            Outcome::Unchanged => format!("{target} unchanged"),
            Outcome::Written => match self.config.reload_command {
                Some(_) => format!("{target} written, reload started"),
                None => format!("{target} written"),
            },
            Outcome::NoLeader if keys.leader.is_some() => {
                format!("{leader} not yet running as the leader: {target} left as it is")
            }
            Outcome::NoLeader => format!("no leader: {target} left as it is"),
        };
        log(&format!(
            "{why}: leader {leader}, {} members: {what}",
            keys.members.len()
        ));
    }

    /// One render from the current keys, then return.
    pub fn once(&self) -> Result<Outcome> {
        let mut dcs = Dcs::connect_watching(
            &self.settings.patroni.etcd,
            self.login.as_ref(),
            crate::follow::ETCD_TIMEOUT,
        )?;
        let (kvs, _) = dcs.get_prefix_at(&self.prefix)?;
        let keys = parse_cluster_keys(&self.prefix, &kvs);
        let outcome = self.apply(&keys, &kvs)?;
        self.report(&outcome, "rendered once", &keys, true);
        if outcome == Outcome::Written {
            if let Some(done) = self.reload() {
                let _ = done.join();
            }
        }
        Ok(outcome)
    }

    /// Watches until the process is stopped (see [`crate::follow`]); a
    /// template that fails to render is reported and the file left as it
    /// is.
    pub fn run(&self) -> ! {
        crate::follow::follow(
            &self.settings.patroni.etcd,
            self.login.as_ref(),
            &self.prefix,
            is_relevant,
            log,
            &mut |why, kvs, first| self.pass(why, kvs, first),
        )
    }

    fn pass(&self, why: &str, kvs: &[(String, String)], always: bool) {
        let keys = parse_cluster_keys(&self.prefix, kvs);
        match self.apply(&keys, kvs) {
            Ok(outcome) => {
                if outcome == Outcome::Written {
                    self.reload();
                }
                self.report(&outcome, why, &keys, always);
            }
            Err(e) => log(&format!(
                "{why}: {e}; {} left as it is",
                self.config.target.display()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PREFIX: &str = "/service/main/";

    fn kvs(leader: Option<&str>) -> Vec<(String, String)> {
        kvs_with(leader, "primary")
    }

    /// The leader key naming `leader`, whose member key has `role`.
    fn kvs_with(leader: Option<&str>, role: &str) -> Vec<(String, String)> {
        let member = |n: u8, state: &str, pos: u64| {
            let name = format!("pg{n}");
            (
                format!("{PREFIX}members/{name}"),
                json!({
                    "conn_url": format!("postgres://127.0.0.1{n}:5432/postgres"),
                    "api_url": format!("http://127.0.0.1{n}:8008/patroni"),
                    "state": state,
                    "role": if leader == Some(name.as_str()) { role } else { "replica" },
                    "timeline": 2,
                    "xlog_location": pos, "tags": {"nofailover": n == 3},
                })
                .to_string(),
            )
        };
        let mut out = vec![
            member(2, "streaming", 900),
            member(1, "running", 1000),
            member(3, "stopped", 100),
            (
                format!("{PREFIX}status"),
                json!({"optime": 1000}).to_string(),
            ),
            (
                format!("{PREFIX}sync"),
                json!({"leader": "pg1", "sync_standby": "pg2"}).to_string(),
            ),
        ];
        if let Some(l) = leader {
            out.push((format!("{PREFIX}leader"), l.to_string()));
        }
        out
    }

    #[test]
    fn the_view_has_the_leader_roles_and_lag() {
        let kvs = kvs(Some("pg1"));
        let keys = parse_cluster_keys(PREFIX, &kvs);
        let vars = BTreeMap::from([("pool_mode".to_string(), json!("session"))]);
        let v = view(&keys, &kvs, "main", &vars);
        let leader = v.leader.as_ref().unwrap();
        assert_eq!(
            (leader.name.as_str(), leader.host.as_str(), leader.port),
            ("pg1", "127.0.0.11", 5432)
        );
        let roles: Vec<(&str, &str, Option<u64>)> = v
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.role.as_str(), m.lag))
            .collect();
        assert_eq!(
            roles,
            [
                ("pg1", "leader", Some(0)),
                ("pg2", "sync_standby", Some(100)),
                ("pg3", "replica", Some(900))
            ]
        );
        // A stopped member is no replica to send reads to.
        let replicas: Vec<&str> = v.replicas.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(replicas, ["pg2"]);
        assert_eq!(v.members[2].tags["nofailover"], json!(true));
        assert_eq!(v.vars["pool_mode"], json!("session"));
    }

    #[test]
    fn the_leader_counts_once_it_runs_as_one() {
        for (role, leads) in [
            ("primary", true),
            ("master", true),
            ("standby_leader", true),
            ("replica", false),
            ("demoted", false),
        ] {
            let kvs = kvs_with(Some("pg1"), role);
            let keys = parse_cluster_keys(PREFIX, &kvs);
            let v = view(&keys, &kvs, "main", &BTreeMap::new());
            assert_eq!(v.leader.is_some(), leads, "{role}");
            assert_eq!(
                v.members.iter().any(|m| m.role == "leader"),
                leads,
                "{role}"
            );
        }
    }

    #[test]
    fn without_a_leader_key_there_is_no_leader() {
        let kvs = kvs(None);
        let keys = parse_cluster_keys(PREFIX, &kvs);
        let v = view(&keys, &kvs, "main", &BTreeMap::new());
        assert!(v.leader.is_none());
        assert!(v.members.iter().all(|m| m.role != "leader"));
    }

    #[test]
    fn only_the_leader_members_and_sync_keys_matter() {
        assert!(is_relevant(PREFIX, "/service/main/leader"));
        assert!(is_relevant(PREFIX, "/service/main/members/pg2"));
        assert!(is_relevant(PREFIX, "/service/main/sync"));
        for k in [
            "status",
            "config",
            "history",
            "initialize",
            "failover",
            "optime/leader",
            "pgherd-operation",
        ] {
            assert!(!is_relevant(PREFIX, &format!("{PREFIX}{k}")), "{k}");
        }
        assert!(!is_relevant(PREFIX, "/service/other/leader"));
    }

    #[test]
    fn connection_urls_give_host_and_port() {
        assert_eq!(
            conn_host_port("postgres://127.0.0.12:5433/postgres"),
            Some(("127.0.0.12".into(), 5433))
        );
        assert_eq!(
            conn_host_port("postgres://db.example:6432/postgres"),
            Some(("db.example".into(), 6432))
        );
        assert_eq!(
            conn_host_port("postgres://[::1]:5432/postgres"),
            Some(("::1".into(), 5432))
        );
        assert_eq!(
            conn_host_port("postgres://u@h/postgres"),
            Some(("h".into(), 5432))
        );
        assert_eq!(conn_host_port("nonsense"), None);
    }

    #[test]
    fn templates_render_and_errors_name_the_template() {
        let kvs = kvs(Some("pg1"));
        let keys = parse_cluster_keys(PREFIX, &kvs);
        let v = view(&keys, &kvs, "main", &BTreeMap::new());
        let out = render(
            "[databases]\n* = host={{ leader.host }} port={{ leader.port }}\n{% for r in replicas %}# {{ r.name }}\n{% endfor %}",
            Path::new("t.tera"),
            &v,
        )
        .unwrap();
        assert_eq!(out, "[databases]\n* = host=127.0.0.11 port=5432\n# pg2\n");
        let err = render("{{ nope.host }}", Path::new("t.tera"), &v)
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.tera") && err.contains("nope"), "{err}");
    }

    #[test]
    fn configurations_are_checked() {
        let parse = |y: &str| -> Result<ProxyConfig> {
            let c: ProxyConfig =
                serde_yaml::from_str(y).map_err(|e| Error::Other(e.to_string()))?;
            c.check(Path::new("proxy.yaml")).map(|_| c)
        };
        let base = "cluster: main\ntemplate: t\ntarget: out\n";
        let c = parse(base).unwrap();
        assert_eq!(c.mode(), Ok(0o640));
        assert_eq!(
            parse(&format!("{base}reload_command: [kill, -HUP, '1']\n"))
                .unwrap()
                .reload_command,
            Some(ReloadCommand::Argv(vec![
                "kill".into(),
                "-HUP".into(),
                "1".into()
            ]))
        );
        for bad in [
            format!("{base}mode: '0999'\n"),
            format!("{base}reload_command: []\n"),
            format!("{base}reload_command: ' '\n"),
            format!("{base}colour: blue\n"),
            format!("{base}group: postgres\n"),
            "cluster: ../x\ntemplate: t\ntarget: out\n".to_string(),
            "template: t\ntarget: out\n".to_string(),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
    }
}
