//! Cluster-wide operations through Patroni's REST API and the DCS: read the
//! cluster, change its dynamic configuration, switch over, fail over, pause,
//! restart, reload, reinitialise, remove. Each observes, plans (check mode
//! stops there), applies, and confirms on the real cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::dcs::{api_address, ClusterKeys, Dcs};
use crate::error::{Error, Result};
use crate::manifest::Login;
use crate::rest::{snippet, ClusterStatus, Endpoint, Member, RestClient};
use crate::settings::Settings;
use crate::wait::{wait_until, Probe};

/// Timeout of one REST call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Timeout of the probe that tells whether a member's REST API answers.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the cluster is and how to talk to it.
#[derive(Debug, Clone)]
pub struct Target {
    pub scope: String,
    pub settings: Settings,
    /// A member's REST API (`host:port`); else found through the DCS.
    pub restapi: Option<String>,
    pub restapi_auth: Option<Login>,
    pub etcd_auth: Option<Login>,
    /// Deadline of every wait.
    pub timeout: Duration,
}

impl Target {
    /// The cluster an instance's Patroni configuration belongs to: its
    /// scope and namespace, its etcd endpoints, TLS and user, its REST
    /// API's TLS (with the `ctl` client certificate) and user.
    pub fn from_patroni_config(path: &std::path::Path, timeout: Duration) -> Result<Target> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(path, "reading the Patroni configuration", e))?;
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| Error::Settings {
            origin: origin.clone(),
            msg: e.to_string(),
        })?;
        target_from_patroni_doc(&doc, &origin, timeout)
    }
}

fn target_from_patroni_doc(
    doc: &serde_yaml::Value,
    origin: &str,
    timeout: Duration,
) -> Result<Target> {
    let bad = |msg: &str| Error::Settings {
        origin: origin.to_string(),
        msg: msg.to_string(),
    };
    let text =
        |v: &serde_yaml::Value, key: &str| v.get(key).and_then(|x| x.as_str()).map(str::to_string);
    let path = |v: &serde_yaml::Value, key: &str| text(v, key).map(std::path::PathBuf::from);
    let scope =
        text(doc, "scope").ok_or_else(|| bad("no scope: is this a Patroni configuration?"))?;
    let etcd = doc
        .get("etcd3")
        .ok_or_else(|| bad("no etcd3 section: pgherd talks to etcd through its v3 API"))?;
    let mut settings = Settings::default();
    let e = &mut settings.patroni.etcd;
    e.hosts = match etcd.get("hosts") {
        Some(serde_yaml::Value::Sequence(hosts)) => hosts
            .iter()
            .filter_map(|h| h.as_str().map(str::to_string))
            .collect(),
        Some(serde_yaml::Value::String(hosts)) => hosts
            .split(',')
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .collect(),
        _ => text(etcd, "host").into_iter().collect(),
    };
    if e.hosts.is_empty() {
        return Err(bad("etcd3 names no hosts"));
    }
    if text(etcd, "protocol").as_deref() == Some("https") {
        e.protocol = crate::settings::Protocol::Https;
    }
    e.cacert = path(etcd, "cacert");
    e.cert = path(etcd, "cert");
    e.key = path(etcd, "key");
    if let Some(ns) = text(doc, "namespace") {
        e.namespace = ns;
    }
    let login = |v: Option<&serde_yaml::Value>| {
        let v = v?;
        Some(Login {
            username: text(v, "username")?,
            password: text(v, "password")?,
        })
    };
    let etcd_auth = login(Some(etcd));
    let restapi = doc.get("restapi");
    if let Some(api) = restapi {
        settings.patroni.restapi.certfile = path(api, "certfile");
        settings.patroni.restapi.keyfile = path(api, "keyfile");
        settings.patroni.restapi.cafile = path(api, "cafile");
    }
    if let Some(ctl) = doc.get("ctl") {
        settings.patroni.ctl = Some(crate::settings::CtlSettings {
            certfile: path(ctl, "certfile"),
            keyfile: path(ctl, "keyfile"),
            cacert: path(ctl, "cacert"),
        });
    }
    Ok(Target {
        scope,
        settings,
        restapi: None,
        restapi_auth: login(restapi.and_then(|a| a.get("authentication"))),
        etcd_auth,
        timeout,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartMode {
    Pending,
    All,
}

/// What a task asks for; everything optional.
#[derive(Debug, Clone, Default)]
pub struct Operations {
    pub dynamic_config: Option<Map<String, Value>>,
    pub leader: Option<String>,
    pub scheduled_at: Option<String>,
    pub maximum_lag: Option<u64>,
    pub failover_to: Option<String>,
    pub force: bool,
    pub paused: Option<bool>,
    pub restart: Option<RestartMode>,
    pub restart_leader_by_switchover: bool,
    pub reload: bool,
    pub reinit: Vec<String>,
    pub remove: bool,
    pub system_identifier: Option<String>,
}

/// One member as the `cluster` return value shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemberInfo {
    pub name: String,
    pub role: String,
    pub state: String,
    pub host: String,
    pub port: Option<u16>,
    pub timeline: Option<u64>,
    /// Bytes behind the leader; null for the leader or when unknown.
    pub lag: Option<u64>,
    pub pending_restart: bool,
    pub tags: BTreeMap<String, Value>,
    pub restapi: Option<String>,
    /// Whether its REST API answered when the cluster was read. When it
    /// did not, role and state are the last ones it published in the DCS
    /// (a dead leader keeps its key for up to a ttl).
    pub reachable: bool,
}

/// The `cluster` return value.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ClusterInfo {
    pub name: String,
    pub system_identifier: Option<String>,
    pub leader: Option<String>,
    pub sync_standbys: Vec<String>,
    pub paused: bool,
    pub members: Vec<MemberInfo>,
    pub config: Value,
    pub history: Value,
    /// `{at, from, to}` of a switchover waiting for its time.
    pub scheduled_switchover: Option<Value>,
}

impl ClusterInfo {
    fn member(&self, name: &str) -> Option<&MemberInfo> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The leader, if it runs.
    pub fn running_leader(&self) -> Option<&MemberInfo> {
        self.members
            .iter()
            .find(|m| m.role == "leader" && m.state == "running")
    }

    fn synchronous_mode(&self) -> bool {
        matches!(self.config.get("synchronous_mode"), Some(Value::Bool(true)))
            || self.config.get("synchronous_mode").and_then(Value::as_str) == Some("on")
    }

    fn maximum_lag_on_failover(&self) -> u64 {
        self.config
            .get("maximum_lag_on_failover")
            .and_then(Value::as_u64)
            .unwrap_or(1024 * 1024)
    }
}

/// What a task did or, in check mode, would do.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub changes: Vec<String>,
    pub diff: Vec<Value>,
    pub warnings: Vec<String>,
    pub info: ClusterInfo,
}

/// The roles Patroni gives a member that replicates from the leader.
const REPLICA_ROLES: [&str; 3] = ["replica", "sync_standby", "quorum_standby"];

fn is_replica_role(role: &str) -> bool {
    REPLICA_ROLES.contains(&role)
}

fn member_info(m: &Member) -> MemberInfo {
    MemberInfo {
        name: m.name.clone(),
        role: m.role.clone(),
        state: m.state.clone(),
        host: m.host.clone(),
        port: m.port,
        timeline: m.timeline,
        lag: m.lag.as_ref().and_then(Value::as_u64),
        pending_restart: m.pending_restart,
        tags: m.tags.clone(),
        restapi: m.api_url.as_deref().and_then(api_address),
        reachable: true,
    }
}

// ---------------------------------------------------------------------
// Pure decisions, unit-tested below.

/// Scalars compare by value, and by text when their JSON types differ
/// ("100" and 100 are the same setting to Patroni).
fn same_setting(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    matches!((text(a), text(b)), (Some(x), Some(y)) if x == y)
}

/// The PATCH that brings `current` to `desired` (nested mappings merge,
/// null deletes), with the before and after of the keys it touches; `None`
/// when nothing differs.
pub fn config_patch(
    current: &Value,
    desired: &Map<String, Value>,
) -> Option<(Value, Value, Value)> {
    let mut patch = Map::new();
    let mut before = Map::new();
    let mut after = Map::new();
    for (key, want) in desired {
        let have = current.get(key);
        match (want, have) {
            (Value::Null, None) => {}
            (Value::Null, Some(h)) => {
                patch.insert(key.clone(), Value::Null);
                before.insert(key.clone(), h.clone());
                after.insert(key.clone(), Value::Null);
            }
            (Value::Object(w), Some(h @ Value::Object(_))) => {
                if let Some((p, b, a)) = config_patch(h, w) {
                    patch.insert(key.clone(), p);
                    before.insert(key.clone(), b);
                    after.insert(key.clone(), a);
                }
            }
            (w, Some(h)) if same_setting(w, h) => {}
            (w, h) => {
                let mut fresh = w.clone();
                strip_nulls(&mut fresh);
                patch.insert(key.clone(), fresh.clone());
                before.insert(key.clone(), h.cloned().unwrap_or(Value::Null));
                after.insert(key.clone(), fresh);
            }
        }
    }
    (!patch.is_empty()).then_some({
        (
            Value::Object(patch),
            Value::Object(before),
            Value::Object(after),
        )
    })
}

fn strip_nulls(v: &mut Value) {
    if let Value::Object(m) = v {
        m.retain(|_, x| !x.is_null());
        m.values_mut().for_each(strip_nulls);
    }
}

/// Two ISO 8601 times written alike, `Z` and `+00:00` being the same.
fn same_time(a: &str, b: &str) -> bool {
    let norm = |t: &str| t.trim().replace('Z', "+00:00").replace(' ', "T");
    norm(a) == norm(b)
}

/// Why `candidate` cannot take over by switchover, if it cannot.
pub fn switchover_refusal(
    info: &ClusterInfo,
    candidate: &str,
    maximum_lag: Option<u64>,
) -> Option<String> {
    let names = || {
        info.members
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(m) = info.member(candidate) else {
        return Some(format!(
            "{candidate} is not a member of cluster {}; members: {}",
            info.name,
            names()
        ));
    };
    if info.paused {
        return Some(format!(
            "cluster {} is paused (maintenance mode): resume it first (paused: false)",
            info.name
        ));
    }
    if !is_replica_role(&m.role) || !matches!(m.state.as_str(), "streaming" | "running") {
        return Some(format!(
            "{candidate} is not a running replica (role {}, state {})",
            m.role, m.state
        ));
    }
    if m.state != "streaming" {
        return Some(format!(
            "{candidate} is not streaming from the leader (state {})",
            m.state
        ));
    }
    let bound = maximum_lag.unwrap_or_else(|| info.maximum_lag_on_failover());
    match m.lag {
        None => {
            return Some(format!(
                "the replication lag of {candidate} is unknown: it cannot be checked against {bound} bytes"
            ))
        }
        Some(lag) if lag > bound => {
            return Some(format!(
                "{candidate} lags {lag} bytes behind the leader, above the bound of {bound} bytes \
                 (maximum_lag, or the cluster's maximum_lag_on_failover)"
            ))
        }
        _ => {}
    }
    if info.synchronous_mode() && m.role != "sync_standby" {
        return Some(format!(
            "cluster {} is in synchronous mode and {candidate} is not a synchronous standby \
             (sync standbys: {})",
            info.name,
            if info.sync_standbys.is_empty() {
                "none".to_string()
            } else {
                info.sync_standbys.join(", ")
            }
        ));
    }
    None
}

/// Members to restart, replicas first (by name), the leader last.
pub fn restart_order(info: &ClusterInfo, mode: RestartMode) -> Vec<String> {
    let wanted = |m: &&MemberInfo| mode == RestartMode::All || m.pending_restart;
    let mut replicas: Vec<&MemberInfo> = info
        .members
        .iter()
        .filter(wanted)
        .filter(|m| m.role != "leader")
        .collect();
    replicas.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out: Vec<String> = replicas.iter().map(|m| m.name.clone()).collect();
    out.extend(
        info.members
            .iter()
            .filter(wanted)
            .filter(|m| m.role == "leader")
            .map(|m| m.name.clone()),
    );
    out
}

// ---------------------------------------------------------------------
// Talking to the cluster.

struct Conn<'a> {
    target: &'a Target,
    /// Members' REST addresses, by name; learnt again at every observe.
    apis: std::cell::RefCell<BTreeMap<String, String>>,
    /// The address that last answered `/cluster`: asked first next time,
    /// so that a member that does not answer costs one timeout, not one
    /// per look.
    answered: std::cell::RefCell<Option<String>>,
}

impl<'a> Conn<'a> {
    fn client(&self, address: &str) -> Result<RestClient> {
        self.client_with_timeout(address, REQUEST_TIMEOUT)
    }

    fn client_with_timeout(&self, address: &str, timeout: Duration) -> Result<RestClient> {
        RestClient::new(
            Endpoint::for_address(
                &self.target.settings,
                address,
                self.target.restapi_auth.clone(),
            ),
            timeout,
        )
    }

    fn member_address(&self, name: &str) -> Result<String> {
        self.apis
            .borrow()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Other(format!("no REST API address known for member {name}")))
    }

    fn member_client(&self, name: &str) -> Result<RestClient> {
        self.client(&self.member_address(name)?)
    }

    /// For Patroni's synchronous operations (switchover, failover, restart,
    /// reinitialize), which answer only once done: the task's deadline.
    fn operation_client(&self, name: &str) -> Result<RestClient> {
        self.client_with_timeout(&self.member_address(name)?, self.target.timeout)
    }

    /// `/cluster` from the first member that answers.
    fn cluster_status(&self) -> Result<(ClusterStatus, RestClient)> {
        let mut errors = Vec::new();
        let mut addresses: Vec<String> = self.apis.borrow().values().cloned().collect();
        if let Some(first) = self.answered.borrow().as_ref() {
            addresses.sort_by_key(|a| a != first);
        }
        for address in &addresses {
            // A client that cannot be built (a certificate file missing)
            // fails the same way for every member: say it once.
            let client = self.client(address)?;
            match client.cluster() {
                Ok(status) => {
                    *self.answered.borrow_mut() = Some(address.clone());
                    return Ok((status, client));
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(Error::NoMemberAnswers(format!(
            "no member of cluster {} answers on its REST API: {}",
            self.target.scope,
            errors.join("; ")
        )))
    }

    fn observe(&self) -> Result<ClusterInfo> {
        let (status, client) = self.cluster_status()?;
        if !status.scope.is_empty() && status.scope != self.target.scope {
            return Err(Error::Other(format!(
                "the member at {} belongs to cluster {}, not to cluster {}: check the options \
                 cluster and restapi",
                client.base_url(),
                status.scope,
                self.target.scope
            )));
        }
        {
            let mut apis = self.apis.borrow_mut();
            for m in &status.members {
                if let Some(a) = m.api_url.as_deref().and_then(api_address) {
                    apis.insert(m.name.clone(), a);
                }
            }
        }
        let mut members: Vec<MemberInfo> = status.members.iter().map(member_info).collect();
        self.mark_unreachable(&mut members, &client);
        let system_identifier = client
            .patroni()
            .ok()
            .and_then(|p| p.database_system_identifier);
        Ok(ClusterInfo {
            name: if status.scope.is_empty() {
                self.target.scope.clone()
            } else {
                status.scope.clone()
            },
            system_identifier,
            leader: status.leader().map(|m| m.name.clone()),
            sync_standbys: members
                .iter()
                .filter(|m| m.role == "sync_standby")
                .map(|m| m.name.clone())
                .collect(),
            paused: status.pause,
            members,
            config: client.config()?,
            history: client.history().unwrap_or(Value::Null),
            scheduled_switchover: status.scheduled_switchover.clone(),
        })
    }

    /// Asks every member but the one that answered `/cluster` for its own
    /// view, at once, with a short timeout: one that does not answer is
    /// marked unreachable, whatever the DCS still says of it.
    fn mark_unreachable(&self, members: &mut [MemberInfo], answered: &RestClient) {
        let probes: Vec<_> = members
            .iter()
            .map(|m| {
                let address = m.restapi.clone();
                let asked_already = address
                    .as_deref()
                    .is_some_and(|a| answered.base_url().contains(a));
                let client = address
                    .filter(|_| !asked_already)
                    .map(|a| self.client_with_timeout(&a, PROBE_TIMEOUT));
                std::thread::spawn(move || match client {
                    None => true,
                    Some(Ok(c)) => c.patroni().is_ok(),
                    Some(Err(_)) => false,
                })
            })
            .collect();
        for (m, probe) in members.iter_mut().zip(probes) {
            m.reachable = probe.join().unwrap_or(false);
        }
    }

    /// Waits until `/cluster` satisfies `ready`, saying what it last saw.
    fn wait_cluster(
        &self,
        what: &str,
        ready: impl Fn(&ClusterStatus) -> bool,
    ) -> Result<ClusterStatus> {
        wait_until(
            what,
            self.target.timeout,
            || match self.cluster_status() {
                Ok((s, _)) if ready(&s) => Probe::Ready(s),
                Ok((s, _)) => Probe::Waiting(describe_cluster(&s)),
                Err(e) => Probe::Waiting(e.to_string()),
            },
            String::new,
        )
    }
}

/// Waits, through `client`, until a member runs as leader or streams and
/// `also` holds.
fn wait_member_healthy(
    conn: &Conn<'_>,
    client: &RestClient,
    name: &str,
    also: impl Fn(&crate::rest::NodeStatus) -> bool,
) -> Result<()> {
    wait_until(
        &format!("{name} to run as leader or streaming replica"),
        conn.target.timeout,
        || match client.patroni() {
            Ok(s) if s.is_healthy() && also(&s) => Probe::Ready(()),
            Ok(s) => Probe::Waiting(format!("{name}: {}", s.describe())),
            Err(e) => Probe::Waiting(e.to_string()),
        },
        String::new,
    )
}

fn describe_cluster(s: &ClusterStatus) -> String {
    s.members
        .iter()
        .map(|m| format!("{} {} {}", m.name, m.role, m.state))
        .collect::<Vec<_>>()
        .join(", ")
}

fn member_runs_as(s: &ClusterStatus, name: &str, roles: &[&str], states: &[&str]) -> bool {
    s.member(name)
        .is_some_and(|m| roles.contains(&m.role.as_str()) && states.contains(&m.state.as_str()))
}

fn connect_dcs(target: &Target) -> Result<Dcs> {
    let auth =
        crate::dcs::effective_login(target.etcd_auth.as_ref(), &target.settings.patroni.etcd);
    Dcs::connect(
        &target.settings.patroni.etcd,
        auth.as_ref(),
        REQUEST_TIMEOUT,
    )
}

fn read_keys(target: &Target) -> Result<ClusterKeys> {
    connect_dcs(target)?.read_cluster(&target.settings.patroni.etcd.namespace, &target.scope)
}

/// The cluster's keys, with what to do when etcd cannot be read.
fn dcs_keys(target: &Target) -> Result<ClusterKeys> {
    read_keys(target).map_err(|e| {
        let text = e.to_string();
        let hint = if text.contains("authentication failed") {
            "check etcd_username and etcd_password (or patroni.etcd in the settings)"
        } else {
            "give the REST API of a member (option restapi) to work without the DCS"
        };
        Error::Other(format!("{text}; {hint}"))
    })
}

/// Finds the members to talk to: the given REST API, or the members in the
/// DCS (`keys` when the caller has just read them).
fn connect(target: &Target, keys: Option<ClusterKeys>) -> Result<Conn<'_>> {
    let mut apis = BTreeMap::new();
    if let Some(a) = &target.restapi {
        apis.insert("(given)".to_string(), a.clone());
    } else {
        let keys = keys.map_or_else(|| dcs_keys(target), Ok)?;
        apis.extend(keys.member_api_addresses());
        if apis.is_empty() {
            return Err(Error::Other(format!(
                "cluster {} has no member in the DCS under {}: is it running, and are scope and \
                 namespace right?",
                target.scope, keys.prefix
            )));
        }
    }
    Ok(Conn {
        target,
        apis: std::cell::RefCell::new(apis),
        answered: std::cell::RefCell::new(None),
    })
}

// ---------------------------------------------------------------------
// The operations.

/// Reads the cluster; changes nothing. A cluster with no member in the
/// DCS (never deployed, or every member gone) reads as an empty cluster,
/// with the system identifier its keys still hold, if any.
pub fn info(target: &Target) -> Result<ClusterInfo> {
    if target.restapi.is_some() {
        return connect(target, None)?.observe();
    }
    let keys = dcs_keys(target)?;
    if keys.member_api_addresses().is_empty() {
        return Ok(info_from_keys(target, &keys));
    }
    match connect(target, Some(keys.clone()))?.observe() {
        // Every member down (their keys outlive them by up to a ttl): what
        // the DCS last heard, each member marked unreachable.
        Err(Error::NoMemberAnswers(_)) => Ok(info_from_keys(target, &keys)),
        other => other,
    }
}

/// `host` and `port` of a member's `conn_url` (`postgres://h:5432/postgres`).
fn conn_host_port(url: &str) -> Option<(String, Option<u16>)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?.rsplit('@').next()?;
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => Some((
            h.trim_matches(|c| c == '[' || c == ']').to_string(),
            p.parse().ok(),
        )),
        _ => Some((authority.to_string(), None)),
    }
}

/// The cluster as its keys in the DCS describe it, when no member answers:
/// every member unreachable, with the role and state it last published.
fn info_from_keys(target: &Target, keys: &ClusterKeys) -> ClusterInfo {
    let members = keys
        .members
        .iter()
        .map(|(name, v)| {
            let (host, port) = v["conn_url"]
                .as_str()
                .and_then(conn_host_port)
                .unwrap_or_default();
            let role = if keys.leader.as_deref() == Some(name.as_str()) {
                "leader".to_string()
            } else {
                v["role"].as_str().unwrap_or("replica").to_string()
            };
            MemberInfo {
                name: name.clone(),
                role,
                state: v["state"].as_str().unwrap_or("unknown").to_string(),
                host,
                port,
                timeline: v["timeline"].as_u64(),
                lag: None,
                pending_restart: v["pending_restart"].as_bool().unwrap_or(false),
                tags: v["tags"]
                    .as_object()
                    .map(|t| t.clone().into_iter().collect())
                    .unwrap_or_default(),
                restapi: v["api_url"].as_str().and_then(api_address),
                reachable: false,
            }
        })
        .collect();
    ClusterInfo {
        name: target.scope.clone(),
        system_identifier: keys.initialize.clone(),
        leader: keys.leader.clone(),
        paused: keys
            .config
            .as_ref()
            .is_some_and(|c| c["pause"] == json!(true)),
        members,
        config: keys.config.clone().unwrap_or(Value::Null),
        history: keys.history.clone().unwrap_or(Value::Null),
        ..ClusterInfo::default()
    }
}

/// Runs the requested operations in a safe order: resume, dynamic config,
/// reload, switchover or failover, restarts, reinits, pause.
pub fn run(target: &Target, ops: &Operations, check_mode: bool) -> Result<Report> {
    if ops.remove {
        return remove(target, ops, check_mode);
    }
    // Who leads and who restarts is changed by one run at a time; the
    // state is read once the lock is held. Without the DCS (restapi given),
    // Patroni's own failover key is the only guard.
    let moves = ops.leader.is_some()
        || ops.failover_to.is_some()
        || ops.restart.is_some()
        || !ops.reinit.is_empty();
    let (_lock, keys) = if moves && !check_mode && target.restapi.is_none() {
        let (lock, keys) = lock_operations(target, &describe_moves(ops))?;
        (Some(lock), Some(keys))
    } else {
        (None, None)
    };
    let conn = connect(target, keys)?;
    let mut info = conn.observe()?;
    let mut report = Report::default();
    if let Err(e) = run_steps(&conn, &mut info, ops, check_mode, &mut report) {
        // What was already done must not go unreported.
        return Err(e.after(report.changes));
    }
    report.info = if check_mode { info } else { conn.observe()? };
    Ok(report)
}

/// What a run that moves roles does, for the holder of the lock.
fn describe_moves(ops: &Operations) -> String {
    let mut what = Vec::new();
    if let Some(c) = &ops.leader {
        what.push(format!("switchover to {c}"));
    }
    if let Some(c) = &ops.failover_to {
        what.push(format!("failover to {c}"));
    }
    if ops.restart.is_some() {
        what.push("restart".to_string());
    }
    if !ops.reinit.is_empty() {
        what.push(format!("reinit of {}", ops.reinit.join(", ")));
    }
    what.join(", ")
}

/// Runs one operation that is done or not done as a whole: when it fails,
/// the change it announced is taken back from the report.
fn whole(report: &mut Report, step: impl FnOnce(&mut Report) -> Result<()>) -> Result<()> {
    let before = report.changes.len();
    let result = step(report);
    if result.is_err() {
        report.changes.truncate(before);
    }
    result
}

/// The operations, in order. Steps over several members report each
/// member once it is done, so that a failure halfway says what was done.
fn run_steps(
    conn: &Conn<'_>,
    info: &mut ClusterInfo,
    ops: &Operations,
    check_mode: bool,
    report: &mut Report,
) -> Result<()> {
    if ops.paused == Some(false) {
        whole(report, |r| set_pause(conn, info, false, check_mode, r))?;
    }
    if let Some(desired) = &ops.dynamic_config {
        whole(report, |r| {
            dynamic_config(conn, info, desired, check_mode, r)
        })?;
    }
    if ops.reload {
        for name in info
            .members
            .iter()
            .map(|m| m.name.clone())
            .collect::<Vec<_>>()
        {
            if !check_mode {
                conn.member_client(&name)?
                    .reload()
                    .map_err(|e| Error::Other(format!("reload of {name}: {e}")))?;
            }
            report.changes.push(format!("reload {name}"));
        }
    }
    if !check_mode && !report.changes.is_empty() {
        *info = conn.observe()?;
    }
    if let Some(candidate) = &ops.leader {
        whole(report, |r| {
            switchover(conn, info, candidate, ops, check_mode, r)
        })?;
    } else if let Some(candidate) = &ops.failover_to {
        whole(report, |r| {
            failover(conn, info, candidate, ops.force, check_mode, r)
        })?;
    }
    if ops.restart.is_some() || !ops.reinit.is_empty() {
        if !check_mode {
            *info = conn.observe()?;
        }
        if let Some(mode) = ops.restart {
            restart(conn, info, mode, ops, check_mode, report)?;
        }
        if !ops.reinit.is_empty() {
            reinit(conn, info, &ops.reinit, check_mode, report)?;
        }
    }
    if ops.paused == Some(true) {
        whole(report, |r| set_pause(conn, info, true, check_mode, r))?;
    }
    Ok(())
}

/// The key, under the cluster's prefix, that a pgherd run holds while it
/// changes who leads or restarts members. Patroni ignores it.
pub const OPERATION_KEY: &str = "pgherd-operation";

/// Seconds the operation key outlives a run killed while holding it.
const OPERATION_LEASE_SECS: i64 = 15;

/// The cluster-wide lock of one run: a leased key in etcd, renewed by a
/// thread while held, revoked when dropped.
struct OperationLock {
    stop: Option<std::sync::mpsc::Sender<()>>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for OperationLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown host".into())
}

/// Takes the cluster's operation key, waiting for another run to release
/// it until the task's deadline.
/// Also returns the cluster's keys, read once the lock is held, through
/// the same connection.
fn lock_operations(target: &Target, what: &str) -> Result<(OperationLock, ClusterKeys)> {
    let mut dcs = connect_dcs(target)?;
    let key = format!(
        "{}{OPERATION_KEY}",
        crate::dcs::cluster_prefix(&target.settings.patroni.etcd.namespace, &target.scope)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let holder = format!(
        "{what}, by pgherd pid {} on {} since unix time {now}",
        std::process::id(),
        host_name()
    );
    let lease = crate::lock::wait_for_turn(
        &format!("cluster {} ({key})", target.scope),
        target.timeout,
        || dcs.create_leased(&key, &holder, OPERATION_LEASE_SECS),
    )?;
    let keys = dcs.read_cluster(&target.settings.patroni.etcd.namespace, &target.scope);
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let every = Duration::from_secs(OPERATION_LEASE_SECS as u64 / 3);
    let renewer = std::thread::spawn(move || {
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
            // A failed renewal leaves the key to expire: the next run then
            // may start; nothing better can be done from here.
            let _ = dcs.keep_alive(lease);
        }
        dcs.revoke(lease);
    });
    let lock = OperationLock {
        stop: Some(stop),
        renewer: Some(renewer),
    };
    Ok((lock, keys?))
}

/// Before acting on several members, each must answer on its REST API:
/// refuse up front rather than stop halfway.
fn all_answer(conn: &Conn<'_>, names: &[String], action: &str) -> Result<()> {
    for name in names {
        if let Err(e) = conn.member_client(name).and_then(|c| c.patroni()) {
            return Err(Error::Other(format!(
                "member {name} does not answer on its REST API ({e}), so no member was {action}: \
                 bring its Patroni back (or wait until it leaves the cluster), then run again"
            )));
        }
    }
    Ok(())
}

fn dynamic_config(
    conn: &Conn<'_>,
    info: &ClusterInfo,
    desired: &Map<String, Value>,
    check_mode: bool,
    report: &mut Report,
) -> Result<()> {
    let Some((patch, before, after)) = config_patch(&info.config, desired) else {
        return Ok(());
    };
    report.changes.push(format!(
        "update the dynamic configuration: {}",
        patch
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    ));
    report.diff.push(json!({
        "before_header": "dynamic configuration",
        "after_header": "dynamic configuration",
        "before": before,
        "after": after,
    }));
    if check_mode {
        return Ok(());
    }
    let (_, client) = conn.cluster_status()?;
    let applied = client.patch_config(&patch)?;
    if let Some((still, _, _)) = config_patch(&applied, desired) {
        return Err(Error::Other(format!(
            "Patroni accepted the change but its configuration still differs in: {still}"
        )));
    }
    // The leader chooses (or drops) synchronous standbys on its next loop:
    // the task returns once the cluster shows them, as the next one reads.
    if let Some(mode) = patch.get("synchronous_mode") {
        let role = sync_role(mode);
        let streaming = info
            .members
            .iter()
            .any(|m| is_replica_role(&m.role) && m.state == "streaming");
        match role {
            Some(role) if streaming => {
                conn.wait_cluster(&format!("a member to become a {role}"), |s| {
                    s.members.iter().any(|m| m.role == role)
                })?;
            }
            Some(_) => {}
            None => {
                conn.wait_cluster("no member to remain a synchronous standby", |s| {
                    s.members
                        .iter()
                        .all(|m| !matches!(m.role.as_str(), "sync_standby" | "quorum_standby"))
                })?;
            }
        }
    }
    Ok(())
}

/// The role synchronous standbys get under a `synchronous_mode` value;
/// `None` when it turns synchronous replication off.
fn sync_role(mode: &Value) -> Option<&'static str> {
    match mode {
        Value::Bool(true) => Some("sync_standby"),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" => Some("sync_standby"),
            "quorum" => Some("quorum_standby"),
            _ => None,
        },
        _ => None,
    }
}

fn set_pause(
    conn: &Conn<'_>,
    info: &ClusterInfo,
    paused: bool,
    check_mode: bool,
    report: &mut Report,
) -> Result<()> {
    if info.paused == paused {
        return Ok(());
    }
    report.changes.push(if paused {
        format!("pause cluster {} (maintenance mode)", info.name)
    } else {
        format!("resume cluster {}", info.name)
    });
    if check_mode {
        return Ok(());
    }
    let (_, client) = conn.cluster_status()?;
    client.patch_config(&json!({ "pause": paused }))?;
    // Every member applies it on its next cycle: wait until each says so.
    let names: Vec<String> = info.members.iter().map(|m| m.name.clone()).collect();
    let clients: Vec<(String, RestClient)> = names
        .iter()
        .map(|n| conn.member_client(n).map(|c| (n.clone(), c)))
        .collect::<Result<_>>()?;
    wait_until(
        &format!(
            "every member to report the cluster {}",
            if paused { "paused" } else { "resumed" }
        ),
        conn.target.timeout,
        || {
            let mut lagging = Vec::new();
            for (name, c) in &clients {
                match c.patroni() {
                    Ok(s) if s.pause == paused => {}
                    Ok(_) => lagging.push(name.clone()),
                    Err(e) => lagging.push(format!("{name} ({e})")),
                }
            }
            if lagging.is_empty() {
                Probe::Ready(())
            } else {
                Probe::Waiting(format!("not yet: {}", lagging.join(", ")))
            }
        },
        String::new,
    )
}

fn switchover(
    conn: &Conn<'_>,
    info: &ClusterInfo,
    candidate: &str,
    ops: &Operations,
    check_mode: bool,
    report: &mut Report,
) -> Result<()> {
    let Some(leader) = info.running_leader().map(|m| m.name.clone()) else {
        return Err(Error::Other(format!(
            "cluster {} has no running leader to switch over from: use failover_to",
            info.name
        )));
    };
    if leader == candidate {
        return Ok(());
    }
    if let Some(scheduled) = &info.scheduled_switchover {
        let to = scheduled["to"].as_str().unwrap_or_default();
        let at = scheduled["at"].as_str().unwrap_or_default();
        if to == candidate
            && ops
                .scheduled_at
                .as_deref()
                .is_some_and(|want| same_time(want, at))
        {
            return Ok(());
        }
        return Err(Error::Other(format!(
            "switchover to {candidate} refused: a switchover to {to} is already scheduled at {at}"
        )));
    }
    if let Some(why) = switchover_refusal(info, candidate, ops.maximum_lag) {
        return Err(Error::Other(format!(
            "switchover to {candidate} refused: {why}"
        )));
    }
    let what = match &ops.scheduled_at {
        Some(at) => format!("switchover from {leader} to {candidate} scheduled at {at}"),
        None => format!("switchover from {leader} to {candidate}"),
    };
    report.changes.push(what.clone());
    if check_mode {
        return Ok(());
    }
    let (status, answer) = conn.operation_client(&leader)?.switchover(
        &leader,
        candidate,
        ops.scheduled_at.as_deref(),
    )?;
    match status {
        200 => {}
        202 => return Ok(()),
        503 => report.warnings.push(format!(
            "Patroni answered 503 ({}): the outcome was checked on the cluster",
            snippet(&answer)
        )),
        412 => {
            return Err(Error::Other(format!(
                "Patroni refused the switchover to {candidate} (HTTP 412): {}",
                snippet(&answer)
            )))
        }
        other => {
            return Err(Error::Other(format!(
                "switchover to {candidate}: HTTP {other} from {leader}: {}",
                snippet(&answer)
            )))
        }
    }
    conn.wait_cluster(
        &format!("{candidate} to lead and {leader} to stream from it"),
        |s| {
            member_runs_as(s, candidate, &["leader"], &["running"])
                && member_runs_as(s, &leader, &REPLICA_ROLES, &["streaming"])
        },
    )?;
    confirm_writable(conn, candidate)
}

/// The new leader accepts writes: its `/primary` health check says 200.
fn confirm_writable(conn: &Conn<'_>, name: &str) -> Result<()> {
    let client = conn.member_client(name)?;
    wait_until(
        &format!("{name} to accept writes"),
        conn.target.timeout,
        || match client.health("/primary") {
            Ok(200) => Probe::Ready(()),
            Ok(s) => Probe::Waiting(format!("/primary answers {s}")),
            Err(e) => Probe::Waiting(e.to_string()),
        },
        String::new,
    )
}

fn failover(
    conn: &Conn<'_>,
    info: &ClusterInfo,
    candidate: &str,
    force: bool,
    check_mode: bool,
    report: &mut Report,
) -> Result<()> {
    let Some(m) = info.member(candidate) else {
        return Err(Error::Other(format!(
            "failover to {candidate} refused: it is not a member of cluster {}",
            info.name
        )));
    };
    let leader = info.running_leader().map(|l| l.name.clone());
    if leader.as_deref() == Some(candidate) {
        return Ok(());
    }
    if let (Some(l), false) = (&leader, force) {
        return Err(Error::Other(format!(
            "failover to {candidate} refused: {l} is a healthy leader; use leader: {candidate} \
             for a switchover, or force: true"
        )));
    }
    if !matches!(m.state.as_str(), "running" | "streaming") {
        return Err(Error::Other(format!(
            "failover to {candidate} refused: it is not running (state {})",
            m.state
        )));
    }
    report.changes.push(format!("failover to {candidate}"));
    if check_mode {
        return Ok(());
    }
    let (status, answer) = conn.operation_client(candidate)?.failover(candidate)?;
    match status {
        200 => {}
        503 => report.warnings.push(format!(
            "Patroni answered 503 ({}): the outcome was checked on the cluster",
            snippet(&answer)
        )),
        other => {
            return Err(Error::Other(format!(
                "failover to {candidate}: HTTP {other}: {}",
                snippet(&answer)
            )))
        }
    }
    // A forced failover from a healthy leader: it must come back as a
    // replica, as after a switchover.
    let former = leader.clone();
    conn.wait_cluster(&format!("{candidate} to lead"), |s| {
        member_runs_as(s, candidate, &["leader"], &["running"])
            && former
                .as_deref()
                .is_none_or(|f| member_runs_as(s, f, &REPLICA_ROLES, &["streaming"]))
    })?;
    confirm_writable(conn, candidate)
}

fn restart_member(conn: &Conn<'_>, name: &str) -> Result<()> {
    let attempt = || {
        let client = conn.member_client(name)?;
        let own = client.patroni()?;
        let (before, was_pending) = (own.postmaster_start_time, own.pending_restart);
        conn.operation_client(name)?.restart()?;
        wait_member_healthy(conn, &client, name, |s| s.postmaster_start_time != before)?;
        // The member's key in the DCS, which /cluster shows, follows on
        // Patroni's next loop: confirm there too, so that what the task
        // returns is what the cluster says.
        conn.wait_cluster(
            &format!("{name} to show as running after its restart"),
            |s| {
                s.member(name).is_some_and(|m| {
                    matches!(m.state.as_str(), "running" | "streaming")
                        && !(was_pending && m.pending_restart)
                })
            },
        )
        .map(|_| ())
    };
    attempt().map_err(|e| Error::Other(format!("restart of {name}: {e}")))
}

/// Rounds of `restart: pending`: a member whose pending restart Patroni
/// published only after the first round was observed is restarted in a
/// second one.
const RESTART_ROUNDS: usize = 2;

fn restart(
    conn: &Conn<'_>,
    info: &ClusterInfo,
    mode: RestartMode,
    ops: &Operations,
    check_mode: bool,
    report: &mut Report,
) -> Result<()> {
    restart_round(conn, info, mode, ops, check_mode, report)?;
    if check_mode {
        return Ok(());
    }
    // Confirmed on the cluster: no member may still wait for a restart.
    for round in 1..=RESTART_ROUNDS {
        let after = conn.observe()?;
        let still = restart_order(&after, RestartMode::Pending);
        if still.is_empty() {
            return Ok(());
        }
        if round == RESTART_ROUNDS {
            return Err(Error::Other(format!(
                "after restarting, {} still report a pending restart ({}): Patroni may not \
                 apply a parameter that needs a restart; see the members' \
                 pending_restart_reason",
                still.join(", "),
                after
                    .members
                    .iter()
                    .filter(|m| m.pending_restart)
                    .map(|m| format!("{} {} {}", m.name, m.role, m.state))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        restart_round(conn, &after, RestartMode::Pending, ops, false, report)?;
    }
    Ok(())
}

/// One pass over the members to restart, replicas first, the leader last.
fn restart_round(
    conn: &Conn<'_>,
    info: &ClusterInfo,
    mode: RestartMode,
    ops: &Operations,
    check_mode: bool,
    report: &mut Report,
) -> Result<()> {
    let order = restart_order(info, mode);
    if !check_mode {
        all_answer(conn, &order, "restarted")?;
    }
    let leader = info.leader.clone();
    for name in &order {
        let is_leader = leader.as_deref() == Some(name.as_str());
        if is_leader && ops.restart_leader_by_switchover {
            // The least lagging streaming replica takes over first.
            let candidate = info
                .members
                .iter()
                .filter(|m| m.name != *name && m.state == "streaming")
                .min_by_key(|m| m.lag.unwrap_or(u64::MAX))
                .map(|m| m.name.clone())
                .ok_or_else(|| {
                    Error::Other(format!(
                        "cannot restart leader {name} by switchover: no streaming replica"
                    ))
                })?;
            let fresh = if check_mode {
                info.clone()
            } else {
                conn.observe()?
            };
            whole(report, |r| {
                switchover(conn, &fresh, &candidate, ops, check_mode, r)
            })?;
        }
        if !check_mode {
            restart_member(conn, name)?;
        }
        report.changes.push(format!("restart {name}"));
    }
    Ok(())
}

fn reinit(
    conn: &Conn<'_>,
    info: &ClusterInfo,
    names: &[String],
    check_mode: bool,
    report: &mut Report,
) -> Result<()> {
    // Refuse before acting on any of them.
    for name in names {
        match info.member(name) {
            None => {
                return Err(Error::Other(format!(
                    "reinit of {name} refused: it is not a member of cluster {}",
                    info.name
                )))
            }
            Some(m) if m.role == "leader" => {
                return Err(Error::Other(format!(
                    "reinit of {name} refused: it is the leader; switch over first"
                )))
            }
            Some(_) => {}
        }
    }
    if !check_mode {
        all_answer(conn, names, "reinitialised")?;
    }
    for name in names {
        if !check_mode {
            let attempt = || {
                let client = conn.member_client(name)?;
                let before = client.patroni()?.postmaster_start_time;
                conn.operation_client(name)?.reinitialize()?;
                wait_member_healthy(conn, &client, name, |s| s.postmaster_start_time != before)
            };
            attempt().map_err(|e| Error::Other(format!("reinit of {name}: {e}")))?;
        }
        report
            .changes
            .push(format!("reinitialise {name} from the leader"));
    }
    Ok(())
}

/// The members in `keys` that are live. A stopped Patroni leaves its
/// member key until the ttl expires: a member is live when its REST API
/// answers, or when it cannot be told.
pub fn live_members(settings: &Settings, keys: &ClusterKeys, auth: Option<&Login>) -> Vec<String> {
    let addresses: BTreeMap<String, String> = keys.member_api_addresses().into_iter().collect();
    keys.members
        .keys()
        .filter(|name| match addresses.get(*name) {
            None => true,
            Some(address) => RestClient::new(
                Endpoint::for_address(settings, address, auth.cloned()),
                REQUEST_TIMEOUT,
            )
            .is_ok_and(|c| c.patroni().is_ok()),
        })
        .cloned()
        .collect()
}

fn remove(target: &Target, ops: &Operations, check_mode: bool) -> Result<Report> {
    let mut dcs = connect_dcs(target)?;
    let keys = dcs.read_cluster(&target.settings.patroni.etcd.namespace, &target.scope)?;
    let mut report = Report {
        info: ClusterInfo {
            name: target.scope.clone(),
            system_identifier: keys.initialize.clone(),
            ..ClusterInfo::default()
        },
        ..Report::default()
    };
    if keys.is_empty() {
        return Ok(report);
    }
    let live = live_members(&target.settings, &keys, target.restapi_auth.as_ref());
    if !live.is_empty() {
        return Err(Error::Other(format!(
            "cluster {} still has live members ({}): stop them (instance state: stopped or \
             absent) before removing the cluster",
            target.scope,
            live.join(", ")
        )));
    }
    if let Some(api) = &target.restapi {
        let client = RestClient::new(
            Endpoint::for_address(&target.settings, api, target.restapi_auth.clone()),
            REQUEST_TIMEOUT,
        )?;
        if client.patroni().is_ok() {
            return Err(Error::Other(format!(
                "the REST API at {api} still answers: stop that member before removing the cluster"
            )));
        }
    }
    match (&ops.system_identifier, &keys.initialize) {
        (None, Some(found)) => {
            return Err(Error::Other(format!(
                "removing cluster {} from the DCS needs its system identifier as a guard: give \
                 system_identifier: \"{found}\"",
                target.scope
            )))
        }
        (Some(given), Some(found)) if given != found => {
            return Err(Error::Other(format!(
                "system_identifier {given} does not match cluster {}'s ({found}): nothing removed",
                target.scope
            )))
        }
        (Some(given), None) => {
            return Err(Error::Other(format!(
                "cluster {} has no initialize key to check system_identifier {given} against: \
                 nothing removed",
                target.scope
            )))
        }
        _ => {}
    }
    for k in &keys.all_keys {
        report.changes.push(format!("delete {k}"));
    }
    report.diff.push(json!({
        "before_header": keys.prefix, "after_header": keys.prefix,
        "before": keys.all_keys.join("\n") + "\n",
        "after": "",
    }));
    if check_mode {
        return Ok(report);
    }
    dcs.delete_prefix(&keys.prefix)?;
    let left = dcs.read_cluster(&target.settings.patroni.etcd.namespace, &target.scope)?;
    if !left.is_empty() {
        return Err(Error::Other(format!(
            "keys left under {} after the removal: {}",
            keys.prefix,
            left.all_keys.join(", ")
        )));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patroni_configuration_names_the_cluster_and_how_to_reach_it() {
        let doc: serde_yaml::Value = serde_yaml::from_str(
            "scope: main\nnamespace: /pg/\nname: pg1\n\
             etcd3:\n  hosts: [10.0.0.1:2379, 10.0.0.2:2379]\n  protocol: https\n  \
             cacert: /etc/ca.pem\n  username: pg1\n  password: s3cret\n\
             restapi:\n  listen: 0.0.0.0:8008\n  certfile: /etc/api.pem\n  \
             authentication: {username: admin, password: pw}\n\
             ctl: {certfile: /etc/ctl.pem, keyfile: /etc/ctl.key}\n",
        )
        .unwrap();
        let t = target_from_patroni_doc(&doc, "p.yaml", Duration::from_secs(9)).unwrap();
        assert_eq!(t.scope, "main");
        let e = &t.settings.patroni.etcd;
        assert_eq!(e.hosts, ["10.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(e.protocol, crate::settings::Protocol::Https);
        assert_eq!(e.namespace, "/pg/");
        assert_eq!(
            t.etcd_auth.as_ref().map(|l| l.username.as_str()),
            Some("pg1")
        );
        assert_eq!(
            t.restapi_auth.as_ref().map(|l| l.password.as_str()),
            Some("pw")
        );
        assert!(t.settings.patroni.restapi.certfile.is_some());
        assert_eq!(
            t.settings
                .patroni
                .ctl
                .as_ref()
                .and_then(|c| c.keyfile.clone()),
            Some("/etc/ctl.key".into())
        );
        let one: serde_yaml::Value =
            serde_yaml::from_str("scope: x\netcd3: {hosts: 'a:1, b:2'}").unwrap();
        let t = target_from_patroni_doc(&one, "p", Duration::from_secs(1)).unwrap();
        assert_eq!(t.settings.patroni.etcd.hosts, ["a:1", "b:2"]);
        assert!(t.etcd_auth.is_none() && t.restapi_auth.is_none());
        for bad in [
            "name: x",
            "scope: x",
            "scope: x\netcd3: {}",
            "scope: x\netcd: {host: a:1}",
        ] {
            let doc: serde_yaml::Value = serde_yaml::from_str(bad).unwrap();
            assert!(
                target_from_patroni_doc(&doc, "p", Duration::from_secs(1)).is_err(),
                "{bad}"
            );
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn identical_config_needs_no_patch() {
        let current = json!({"ttl": 20, "postgresql": {"parameters": {"max_connections": 100}}});
        assert!(config_patch(
            &current,
            &obj(json!({"ttl": "20", "postgresql": {"parameters": {"max_connections": "100"}}}))
        )
        .is_none());
        assert!(config_patch(&current, &obj(json!({"gone": null}))).is_none());
    }

    #[test]
    fn the_patch_holds_only_what_differs() {
        let current = json!({"ttl": 20, "loop_wait": 2, "postgresql": {"parameters": {"a": "1", "b": "2"}, "use_pg_rewind": true}});
        let desired = obj(
            json!({"ttl": 30, "loop_wait": 2, "postgresql": {"parameters": {"a": "1", "b": null, "c": "3"}}, "synchronous_mode": true}),
        );
        let (patch, before, after) = config_patch(&current, &desired).unwrap();
        assert_eq!(
            patch,
            json!({"ttl": 30, "postgresql": {"parameters": {"b": null, "c": "3"}}, "synchronous_mode": true})
        );
        assert_eq!(
            before,
            json!({"ttl": 20, "postgresql": {"parameters": {"b": "2", "c": null}}, "synchronous_mode": null})
        );
        assert_eq!(
            after,
            json!({"ttl": 30, "postgresql": {"parameters": {"b": null, "c": "3"}}, "synchronous_mode": true})
        );
    }

    fn member(name: &str, role: &str, state: &str, lag: Option<u64>) -> MemberInfo {
        MemberInfo {
            name: name.into(),
            role: role.into(),
            state: state.into(),
            host: "h".into(),
            port: Some(5432),
            timeline: Some(1),
            lag,
            pending_restart: false,
            tags: BTreeMap::new(),
            restapi: None,
            reachable: true,
        }
    }

    fn cluster(members: Vec<MemberInfo>) -> ClusterInfo {
        ClusterInfo {
            name: "c".into(),
            members,
            config: json!({"maximum_lag_on_failover": 1000}),
            ..ClusterInfo::default()
        }
    }

    #[test]
    fn switchover_refuses_unknown_candidate() {
        let c = cluster(vec![member("pg1", "leader", "running", None)]);
        let why = switchover_refusal(&c, "pg9", None).unwrap();
        assert_eq!(why, "pg9 is not a member of cluster c; members: pg1");
    }

    #[test]
    fn switchover_refuses_lagging_candidate() {
        let c = cluster(vec![
            member("pg1", "leader", "running", None),
            member("pg2", "replica", "streaming", Some(5000)),
        ]);
        let why = switchover_refusal(&c, "pg2", None).unwrap();
        assert!(why.contains("lags 5000 bytes"), "{why}");
        assert!(switchover_refusal(&c, "pg2", Some(10_000)).is_none());
    }

    #[test]
    fn switchover_refuses_stopped_or_unknown_lag_candidate() {
        let c = cluster(vec![
            member("pg1", "leader", "running", None),
            member("pg2", "replica", "stopped", None),
            member("pg3", "replica", "streaming", None),
        ]);
        assert!(switchover_refusal(&c, "pg2", None)
            .unwrap()
            .contains("not a running replica"));
        assert!(switchover_refusal(&c, "pg3", None)
            .unwrap()
            .contains("unknown"));
    }

    #[test]
    fn switchover_refuses_in_a_paused_cluster() {
        let mut c = cluster(vec![
            member("pg1", "leader", "running", None),
            member("pg2", "replica", "streaming", Some(0)),
        ]);
        c.paused = true;
        assert!(switchover_refusal(&c, "pg2", None)
            .unwrap()
            .contains("paused"));
    }

    #[test]
    fn switchover_in_sync_mode_needs_a_sync_standby() {
        let mut c = cluster(vec![
            member("pg1", "leader", "running", None),
            member("pg2", "sync_standby", "streaming", Some(0)),
            member("pg3", "replica", "streaming", Some(0)),
        ]);
        c.config = json!({"synchronous_mode": true});
        c.sync_standbys = vec!["pg2".into()];
        assert!(switchover_refusal(&c, "pg2", None).is_none());
        let why = switchover_refusal(&c, "pg3", None).unwrap();
        assert!(
            why.contains("not a synchronous standby (sync standbys: pg2)"),
            "{why}"
        );
    }

    #[test]
    fn scheduled_times_compare_across_notations() {
        assert!(same_time(
            "2026-11-22T04:34:07Z",
            "2026-11-22T04:34:07+00:00"
        ));
        assert!(!same_time(
            "2026-11-22T04:34:07Z",
            "2026-11-22T05:34:07+00:00"
        ));
    }

    #[test]
    fn restarts_go_replicas_first_leader_last() {
        let mut c = cluster(vec![
            member("pg1", "leader", "running", None),
            member("pg3", "replica", "streaming", Some(0)),
            member("pg2", "replica", "streaming", Some(0)),
        ]);
        assert_eq!(restart_order(&c, RestartMode::All), ["pg2", "pg3", "pg1"]);
        assert!(restart_order(&c, RestartMode::Pending).is_empty());
        c.members[0].pending_restart = true;
        c.members[1].pending_restart = true;
        assert_eq!(restart_order(&c, RestartMode::Pending), ["pg3", "pg1"]);
    }

    #[test]
    fn synchronous_modes_name_their_standbys_role() {
        assert_eq!(sync_role(&json!(true)), Some("sync_standby"));
        assert_eq!(sync_role(&json!("on")), Some("sync_standby"));
        assert_eq!(sync_role(&json!("quorum")), Some("quorum_standby"));
        assert_eq!(sync_role(&json!(false)), None);
        assert_eq!(sync_role(&json!("off")), None);
    }

    #[test]
    fn a_cluster_nobody_answers_for_is_read_from_its_keys() {
        let keys = ClusterKeys {
            prefix: "/service/c/".into(),
            leader: Some("pg1".into()),
            initialize: Some("7710914764009116298".into()),
            members: [
                ("pg1".to_string(), json!({"conn_url": "postgres://10.0.0.1:5433/postgres",
                    "api_url": "http://10.0.0.1:8008/patroni", "state": "running", "role": "primary",
                    "timeline": 4})),
                ("pg2".to_string(), json!({"conn_url": "postgres://[::1]:5432/postgres",
                    "state": "streaming", "role": "replica"})),
            ]
            .into_iter()
            .collect(),
            ..ClusterKeys::default()
        };
        let target = Target {
            scope: "c".into(),
            settings: Settings::default(),
            restapi: None,
            restapi_auth: None,
            etcd_auth: None,
            timeout: Duration::from_secs(1),
        };
        let info = info_from_keys(&target, &keys);
        assert_eq!(
            info.system_identifier.as_deref(),
            Some("7710914764009116298")
        );
        let pg1 = &info.members[0];
        assert_eq!(
            (
                pg1.role.as_str(),
                pg1.state.as_str(),
                pg1.host.as_str(),
                pg1.port,
                pg1.reachable
            ),
            ("leader", "running", "10.0.0.1", Some(5433), false)
        );
        assert_eq!(pg1.restapi.as_deref(), Some("10.0.0.1:8008"));
        assert_eq!(info.members[1].host, "::1");
        let empty = info_from_keys(&target, &ClusterKeys::default());
        assert!(empty.members.is_empty() && empty.system_identifier.is_none());
    }
}
