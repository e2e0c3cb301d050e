//! The states of an instance: present, started, stopped, restarted, absent.
//! Each computes what differs (files and service), reports it in check mode,
//! and otherwise applies it and waits for the node to be what was asked,
//! with a deadline.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::dcs::{ClusterKeys, Dcs};
use crate::error::{Error, Result};
use crate::fs::{remove_path, Account};
use crate::instance::{desired_dirs, desired_files, has_passfile};
use crate::lock::RunLock;
use crate::logs::{instance_log_tails, newest_file, standby_waits_for_missing_slot, tail};
use crate::manifest::InstanceManifest;
use crate::paths::InstancePaths;
use crate::pgbackrest::PgBackRest;
use crate::plan::{Change, Plan};
use crate::rest::{ClusterStatus, NodeStatus, RestClient};
use crate::service::Service;
use crate::settings::Settings;
use crate::sql::Psql;
use crate::wait::{wait_until, Probe};

mod api;
mod reload;
mod remove;
mod restore;
mod stanza;

use reload::{postgres_sections_differ, Reload};
use stanza::StanzaCase;

/// How long etcd has to answer before a start.
const DCS_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the wait of a node without data reads the cluster from etcd.
const ORPHAN_LOOK_INTERVAL: Duration = Duration::from_secs(1);

/// Since when a node without data has seen no one to clone from, and the
/// etcd connection its looks share.
#[derive(Default)]
struct Orphaned {
    since: Option<Instant>,
    last_look: Option<Instant>,
    dcs: Option<Dcs>,
}

/// The system identifier of a cluster etcd holds as initialized, when it
/// has no leader and no member other than `me`: nobody to clone from.
fn leaderless_initialized(keys: &ClusterKeys, me: &str) -> Option<String> {
    let alone = keys.members.keys().all(|name| name == me);
    match (&keys.initialize, &keys.leader) {
        (Some(sysid), None) if alone => Some(sysid.clone()),
        _ => None,
    }
}

/// How often a standby waiting for its replication slot is woken.
const SLOT_RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// Timeout of one REST call made while polling.
const POLL_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DesiredState {
    Present,
    Started,
    Stopped,
    Restarted,
    Absent,
}

impl FromStr for DesiredState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "present" => DesiredState::Present,
            "started" => DesiredState::Started,
            "stopped" => DesiredState::Stopped,
            "restarted" => DesiredState::Restarted,
            "absent" => DesiredState::Absent,
            other => {
                return Err(Error::Other(format!(
                "state must be one of present, started, stopped, restarted, absent; got {other:?}"
            )))
            }
        })
    }
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Present => "present",
            DesiredState::Started => "started",
            DesiredState::Stopped => "stopped",
            DesiredState::Restarted => "restarted",
            DesiredState::Absent => "absent",
        }
    }
}

/// A member of the cluster, as the instance facts show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemberFacts {
    pub name: String,
    pub role: String,
    pub state: String,
    pub host: String,
    pub timeline: Option<u64>,
    pub lag: Option<Value>,
}

/// The `instance` return value.
#[derive(Debug, Clone, Serialize, Default)]
pub struct InstanceFacts {
    pub name: String,
    pub version: String,
    pub port: u16,
    pub cluster: String,
    pub node: String,
    pub data_dir: String,
    pub config: String,
    pub passfile: Option<String>,
    pub restapi: String,
    /// Whether Patroni runs.
    pub running: bool,
    pub role: Option<String>,
    pub state: Option<String>,
    /// A replica's replication state (`streaming`, `in archive recovery`).
    pub replication_state: Option<String>,
    pub timeline: Option<u64>,
    pub pending_restart: bool,
    pub pending_restart_parameters: Vec<String>,
    pub members: Vec<MemberFacts>,
}

/// What a run did, or in check mode would do.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub changes: Vec<String>,
    pub diff: Vec<Value>,
    pub warnings: Vec<String>,
    pub facts: InstanceFacts,
}

impl Report {
    pub fn changed(&self) -> bool {
        !self.changes.is_empty()
    }
}

pub use crate::process::run_as_account;

/// Everything one run needs to know about the instance.
struct Node<'a> {
    settings: &'a Settings,
    m: &'a InstanceManifest,
    paths: InstancePaths,
    service: Service,
    run_as: Option<Account>,
    timeout: Duration,
}

impl Node<'_> {
    fn rest(&self, timeout: Duration) -> Result<RestClient> {
        self.rest_at(&self.m.restapi_connect_address, timeout)
    }

    /// The instance's pgBackRest, when it has a stanza.
    fn pgbackrest(&self) -> Option<PgBackRest> {
        PgBackRest::for_instance(self.settings, self.m, &self.paths, self.run_as.clone())
    }

    fn psql(&self) -> Psql {
        Psql::for_instance(self.settings, self.m, &self.paths, self.run_as.clone())
    }

    fn name(&self) -> String {
        format!("{} ({})", self.m.qualified_name(), self.m.node)
    }

    /// Waits until the node is a running leader or a streaming replica.
    fn wait_healthy(&self) -> Result<NodeStatus> {
        let rest = self.rest(POLL_REQUEST_TIMEOUT)?;
        let mut last_wake = None;
        let mut orphaned = Orphaned::default();
        wait_until(
            &format!(
                "instance {} to run as leader or as a streaming replica",
                self.name()
            ),
            self.timeout,
            || {
                match self.service.patroni_pid() {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return Probe::Failed(Error::Other(format!(
                            "Patroni of instance {} exited; {}",
                            self.name(),
                            instance_log_tails(&self.paths)
                        )))
                    }
                    Err(e) => return Probe::Failed(e),
                }
                match rest.patroni() {
                    // What the node says must also be what the DCS shows
                    // (it lags up to a loop), since that is what the next
                    // task, the patroni module or patronictl, reads.
                    Ok(s) if s.is_healthy() => match rest.cluster() {
                        Ok(c) if listed_as_healthy(&c, self.m.node.as_str(), s.is_primary()) => {
                            Probe::Ready(s)
                        }
                        Ok(c) => Probe::Waiting(format!(
                            "Patroni reports {}, the DCS still shows {}",
                            s.describe(),
                            c.member(self.m.node.as_str()).map_or(
                                "no member key".to_string(),
                                |m| format!("role {}, state {}", m.role, m.state)
                            )
                        )),
                        Err(e) => Probe::Waiting(e.to_string()),
                    },
                    Ok(s) => {
                        if s.role == "replica" {
                            self.wake_if_slot_was_missing(&mut last_wake);
                        }
                        if s.role == "uninitialized" && s.state == "stopped" {
                            if let Err(e) = self.check_not_orphaned(&mut orphaned) {
                                return Probe::Failed(e);
                            }
                        } else {
                            orphaned = Orphaned::default();
                        }
                        Probe::Waiting(format!("Patroni reports {}", s.describe()))
                    }
                    Err(e) => Probe::Waiting(e.to_string()),
                }
            },
            || instance_log_tails(&self.paths),
        )
    }

    /// A node without data waits for a leader to clone from; when etcd
    /// holds an initialized cluster with no leader and no other member, none
    /// will come (typically: the DCS state of a cluster whose nodes were
    /// removed). Fails once that has lasted a ttl, instead of waiting out
    /// the whole deadline; other members starting meanwhile reset it.
    fn check_not_orphaned(&self, seen: &mut Orphaned) -> Result<()> {
        if seen
            .last_look
            .is_some_and(|t| t.elapsed() < ORPHAN_LOOK_INTERVAL)
        {
            return Ok(());
        }
        seen.last_look = Some(Instant::now());
        if seen.dcs.is_none() {
            seen.dcs = self.connect_dcs().ok();
        }
        let etcd = &self.settings.patroni.etcd;
        let Some(Ok(keys)) = seen
            .dcs
            .as_mut()
            .map(|dcs| dcs.read_cluster(&etcd.namespace, self.m.cluster.as_str()))
        else {
            // etcd not answering is for the deadline to report.
            seen.dcs = None;
            return Ok(());
        };
        let Some(sysid) = leaderless_initialized(&keys, self.m.node.as_str()) else {
            seen.since = None;
            return Ok(());
        };
        let since = *seen.since.get_or_insert_with(Instant::now);
        let ttl = u64::from(self.settings.patroni.ttl);
        if since.elapsed() < Duration::from_secs(ttl) {
            return Ok(());
        }
        let cluster = self.m.cluster.as_str();
        Err(Error::NoOneToClone(format!(
            "instance {} has no data and waits for a leader to clone from, but etcd holds \
             cluster {cluster} as initialized (system identifier {sysid}) with no leader and \
             no other member for {ttl} s; Patroni does not bootstrap over an initialized \
             cluster. If that cluster's nodes are gone, remove its state from etcd with the \
             patroni module (cluster: {cluster}, state: absent, system_identifier: {sysid}) \
             and run again; otherwise start one of its members that has data first",
            self.name()
        )))
    }

    /// A new replica often asks for its replication slot before the
    /// leader's next HA loop has created it; PostgreSQL would then wait
    /// `wal_retrieve_retry_interval` (5 s by default) before asking again.
    /// While its log says so, wake it every [`SLOT_RETRY_INTERVAL`] so that
    /// it streams as soon as the slot exists: replication itself keeps its
    /// slot and its settings.
    fn wake_if_slot_was_missing(&self, last_wake: &mut Option<Instant>) {
        if last_wake.is_some_and(|t| t.elapsed() < SLOT_RETRY_INTERVAL) {
            return;
        }
        let Some(log) = newest_file(&self.paths.pg_log_dir) else {
            return;
        };
        let missing = tail(&log, 10).is_some_and(|t| standby_waits_for_missing_slot(&t));
        if missing && self.service.wake_postmaster() {
            *last_wake = Some(Instant::now());
        }
    }

    /// Refuses to start or change a node whose cluster cannot be managed
    /// because etcd does not answer: when Patroni runs, by its own account
    /// (`dcs_last_seen` older than the ttl); when it does not, or when its
    /// configuration changes, by asking the etcd of the settings.
    /// The cluster's keys when they were read for the check.
    fn check_dcs(&self, running: bool, config_changes: bool) -> Result<Option<ClusterKeys>> {
        if running {
            // Patroni not answering yet is for the wait to report.
            if let Ok(status) = self.rest(POLL_REQUEST_TIMEOUT)?.patroni() {
                self.check_dcs_last_seen(&status)?;
            }
            // The running Patroni is fine; a new configuration may name
            // other etcd endpoints: those must answer too.
            if !config_changes {
                return Ok(None);
            }
        }
        self.read_cluster().map(Some).map_err(|e| {
            Error::Other(format!(
                "{e}; Patroni cannot run instance {} without etcd, so nothing was changed: \
                 bring etcd back (or fix patroni.etcd in the settings), then run again",
                self.name()
            ))
        })
    }

    /// The instance's parameters (its own and those of the cluster it
    /// bootstraps) that its PostgreSQL does not know: Patroni would drop
    /// them without a word.
    fn unknown_parameters(&self) -> Result<Vec<String>> {
        let bootstrap: Vec<String> = self
            .m
            .dynamic_conf_settings
            .get("postgresql")
            .and_then(|p| p["parameters"].as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        if self.m.parameters.is_empty() && bootstrap.is_empty() {
            return Ok(Vec::new());
        }
        let known = crate::preflight::known_parameters(&self.paths.bin_dir)?;
        let version = self.m.version.as_str();
        let mut out = crate::preflight::unknown_parameters(
            "parameters",
            self.m.parameters.keys(),
            &known,
            version,
        );
        out.extend(crate::preflight::unknown_parameters(
            "dynamic_conf_settings.postgresql.parameters",
            &bootstrap,
            &known,
            version,
        ));
        Ok(out)
    }

    /// A connection to etcd with the instance's etcd login.
    fn connect_dcs(&self) -> Result<Dcs> {
        let etcd = &self.settings.patroni.etcd;
        let login = crate::dcs::effective_login(self.m.etcd_auth.as_ref(), etcd);
        Dcs::connect(etcd, login.as_ref(), DCS_PROBE_TIMEOUT)
    }

    /// The cluster's keys in etcd.
    fn read_cluster(&self) -> Result<ClusterKeys> {
        let etcd = &self.settings.patroni.etcd;
        self.connect_dcs()?
            .read_cluster(&etcd.namespace, self.m.cluster.as_str())
    }

    /// Fails when Patroni last reached etcd longer than the ttl ago.
    fn check_dcs_last_seen(&self, status: &NodeStatus) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let ttl = u64::from(self.settings.patroni.ttl);
        match status.dcs_last_seen {
            Some(seen) if seen > 0 && now.saturating_sub(seen) > ttl => Err(Error::Dcs {
                endpoints: self.settings.patroni.etcd.hosts.join(", "),
                msg: format!(
                    "Patroni of instance {} last reached etcd {} s ago (ttl {ttl} s), so the \
                     cluster cannot be managed from this node ({}); nothing was changed: \
                     bring etcd back, then run again",
                    self.name(),
                    now.saturating_sub(seen),
                    status.describe()
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Facts, with the live state when Patroni answers.
    fn facts(&self, running: bool, warnings: &mut Vec<String>) -> InstanceFacts {
        let mut f = InstanceFacts {
            name: self.m.name.to_string(),
            version: self.m.version.to_string(),
            port: self.m.port,
            cluster: self.m.cluster.to_string(),
            node: self.m.node.to_string(),
            data_dir: self.paths.data_dir.display().to_string(),
            config: self.paths.config.display().to_string(),
            passfile: has_passfile(self.m).then(|| self.paths.passfile.display().to_string()),
            restapi: self.m.restapi_connect_address.clone(),
            running,
            ..InstanceFacts::default()
        };
        if !running {
            return f;
        }
        let rest = match self.rest(POLL_REQUEST_TIMEOUT) {
            Ok(r) => r,
            Err(e) => {
                warnings.push(e.to_string());
                return f;
            }
        };
        match rest.patroni() {
            Ok(s) => {
                f.role = Some(s.role.clone());
                f.state = Some(s.state.clone());
                f.replication_state = s.replication_state.clone();
                f.timeline = s.timeline;
                f.pending_restart = s.pending_restart;
                f.pending_restart_parameters = s.pending_restart_reason.keys().cloned().collect();
            }
            Err(e) => warnings.push(e.to_string()),
        }
        match rest.cluster() {
            Ok(c) => f.members = member_facts(&c),
            Err(e) => warnings.push(e.to_string()),
        }
        f
    }
}

/// Whether the cluster's view (the DCS, through `/cluster`) shows `name`
/// as a running leader, or as a streaming replica.
fn listed_as_healthy(c: &ClusterStatus, name: &str, primary: bool) -> bool {
    c.member(name).is_some_and(|m| {
        if primary {
            m.role == "leader" && m.state == "running"
        } else {
            m.role != "leader" && m.state == "streaming"
        }
    })
}

fn member_facts(c: &ClusterStatus) -> Vec<MemberFacts> {
    c.members
        .iter()
        .map(|m| MemberFacts {
            name: m.name.clone(),
            role: m.role.clone(),
            state: m.state.clone(),
            host: m.host.clone(),
            timeline: m.timeline,
            lag: m.lag.clone(),
        })
        .collect()
}

/// What a run would do, from what is on disk and running now.
struct Assessment {
    running: bool,
    plan: Plan,
    /// The new configuration text, when the file exists and changes.
    config_change: Option<String>,
    old_config: String,
    /// The running Patroni answers elsewhere than configured.
    moved: Option<api::ApiMove>,
    report: Report,
}

impl Assessment {
    /// Whether the run writes the file at `path`.
    fn writes(&self, path: &Path) -> bool {
        self.plan
            .changes
            .iter()
            .any(|c| matches!(c, Change::WriteFile { path: p, .. } if p == path))
    }
}

/// `made` lists directories this run made a moment ago (for its lock):
/// they are reported as its changes, as check mode would.
fn assess(node: &Node<'_>, state: DesiredState, made: &[PathBuf]) -> Result<Assessment> {
    let running = node.service.is_running()?;
    let owner = node.run_as.as_ref().map(|a| a.owner);
    let mut files = desired_files(node.settings, node.m, &node.paths, owner)?;
    files.extend(node.service.unit_files());
    let plan = Plan::compute_as_if_missing(&desired_dirs(&node.paths, owner), &files, made)?;
    let config_change = plan.changes.iter().find_map(|c| match c {
        Change::WriteFile {
            path,
            before: Some(_),
            content,
            ..
        } if *path == node.paths.config => Some(String::from_utf8_lossy(&content.0).into_owned()),
        _ => None,
    });
    let old_config = match &config_change {
        Some(_) => std::fs::read_to_string(&node.paths.config).unwrap_or_default(),
        None => String::new(),
    };
    let mut report = Report {
        changes: plan.summary(),
        diff: plan.diff(),
        ..Report::default()
    };
    // Where Patroni is asked to reload: where it answers now.
    let keeps_running = matches!(
        state,
        DesiredState::Present | DesiredState::Started | DesiredState::Restarted
    ) && node.m.restore.is_none();
    let moved = if running && keeps_running {
        node.locate_moved_api()
    } else {
        None
    };
    let reload_needed = running && (config_change.is_some() || moved.is_some());
    let reload_action = match &moved {
        Some(m) => format!("reload Patroni ({}; {})", node.name(), m.describe()),
        None => format!("reload Patroni ({})", node.name()),
    };
    let actions: Vec<&str> = match state {
        // A restore stops and starts the node itself.
        DesiredState::Started if node.m.restore.is_some() => vec![],
        DesiredState::Present | DesiredState::Started if running => {
            if reload_needed {
                vec!["reload Patroni"]
            } else {
                vec![]
            }
        }
        DesiredState::Present => vec![],
        DesiredState::Started => vec!["start Patroni"],
        DesiredState::Stopped if running => vec!["stop Patroni and PostgreSQL"],
        DesiredState::Stopped => {
            if node.service.postmaster_pid().is_some() {
                vec!["stop the postmaster left without Patroni"]
            } else {
                vec![]
            }
        }
        DesiredState::Restarted if running => {
            let mut a = Vec::new();
            if reload_needed {
                a.push("reload Patroni");
            }
            a.push("restart PostgreSQL through Patroni");
            a
        }
        DesiredState::Restarted => vec!["start Patroni"],
        DesiredState::Absent => unreachable!("absent is assessed by remove()"),
    };
    report.changes.extend(actions.iter().map(|a| {
        if *a == "reload Patroni" {
            reload_action.clone()
        } else {
            format!("{a} ({})", node.name())
        }
    }));
    Ok(Assessment {
        running,
        plan,
        config_change,
        old_config,
        moved,
        report,
    })
}

/// Brings the instance to `state`. In check mode, only reports.
pub fn apply_state(
    settings: &Settings,
    m: &InstanceManifest,
    state: DesiredState,
    check_mode: bool,
    timeout: Duration,
) -> Result<Report> {
    let run_as = run_as_account(settings)?;
    let paths = InstancePaths::new(settings, m);
    let node = Node {
        settings,
        m,
        service: Service::new(settings, m, &paths, run_as.clone()),
        paths,
        run_as,
        timeout,
    };
    // One run at a time changes an instance; check mode only reads.
    let lock = |node: &Node<'_>| {
        RunLock::acquire(
            &node.paths.lock_file(),
            &format!("instance {}", node.name()),
            timeout,
            0o750,
            node.run_as.as_ref().map(|a| a.owner),
        )
    };
    if state == DesiredState::Absent {
        // Without its directory no run holds the lock, and absent must not
        // make the directory of a node that was never deployed.
        let lockable = node.paths.lock_file().parent().is_some_and(Path::exists);
        let held = if check_mode || !lockable {
            None
        } else {
            Some(lock(&node)?)
        };
        let running = node.service.is_running()?;
        let report = remove::remove(&node, running, check_mode)?;
        if let Some(held) = held {
            held.remove_file()?;
        }
        return Ok(report);
    }
    // Everything that can refuse the run does so before anything is
    // written: files the configuration names, and etcd.
    let missing = settings.missing_files();
    if !missing.is_empty() {
        return Err(Error::InvalidSettings(missing));
    }
    if state != DesiredState::Stopped {
        let problems =
            crate::preflight::check_instance(settings, m, &node.paths, node.run_as.as_ref());
        if !problems.is_empty() {
            return Err(Error::Preflight(problems));
        }
    }
    if m.restore.is_some() && state != DesiredState::Started {
        return Err(Error::InvalidManifest(vec![format!(
            "restore goes with state: started (the restored node runs at the end), not {}",
            state.as_str()
        )]));
    }
    let first = assess(&node, state, &[])?;
    if first.writes(&node.paths.config) {
        let unknown = node.unknown_parameters()?;
        if !unknown.is_empty() {
            return Err(Error::InvalidManifest(unknown));
        }
    }
    let needs_dcs = match state {
        DesiredState::Started | DesiredState::Restarted => true,
        DesiredState::Present => first.running && first.report.changed(),
        DesiredState::Stopped | DesiredState::Absent => false,
    };
    let keys = if needs_dcs {
        node.check_dcs(first.running, first.config_change.is_some())?
    } else {
        None
    };
    if check_mode {
        let mut report = first.report;
        if let Some(source) = &m.restore {
            let planned = restore::plan(&node, source, first.running, true, &mut report.warnings)?;
            report.changes.extend(planned.changes);
        } else {
            // A node that starts with no cluster in the DCS bootstraps it
            // (the check above read the keys of every node it starts).
            let case = if first.running {
                Some(StanzaCase::Running(None))
            } else if state == DesiredState::Started && keys.is_some_and(|k| k.initialize.is_none())
            {
                Some(StanzaCase::Bootstrapping)
            } else {
                None
            };
            if let Some(case) = case {
                if let Some(change) = node.ensure_stanza(case, true, &mut report.warnings)? {
                    report.changes.push(change);
                }
            }
        }
        report.facts = node.facts(first.running, &mut report.warnings);
        return Ok(report);
    }

    // Under the lock, look again: a run that held it may have changed
    // what there is to do.
    let held = lock(&node)?;
    let Assessment {
        running,
        plan,
        config_change,
        old_config,
        moved,
        mut report,
    } = assess(&node, state, &held.created_dirs)?;
    // A failure while writing reports what was written before it; from
    // here on, every failure reports what was already done.
    plan.apply()?;
    let mut done = plan.summary();
    let mut running = running;
    let mut reload = (running && (config_change.is_some() || moved.is_some())).then(|| Reload {
        postgres_affected: config_change
            .as_deref()
            .is_some_and(|new| postgres_sections_differ(&old_config, new)),
        moved,
    });
    let mut restored = None;
    if let Some(source) = &m.restore {
        let rp = restore::plan(&node, source, running, false, &mut report.warnings)
            .and_then(|rp| {
                restore::execute(&node, &rp, running, &mut report.warnings, &mut done)?;
                Ok(rp)
            })
            .map_err(|e| e.after(done.clone()))?;
        report.changes.extend(rp.changes.iter().cloned());
        restored = Some(rp);
        // The node is stopped now: what it reads at its start is current.
        running = false;
        reload = None;
    }
    let acted = act(
        &node,
        state,
        running,
        reload,
        &mut report.warnings,
        &mut done,
    )
    .map_err(|e| e.after(done.clone()))?;
    // A reload checked pg_hba.conf; without one, lines of the user's that
    // PostgreSQL rejected earlier are still reported.
    if acted.running && !acted.reloaded && state != DesiredState::Stopped && node.has_custom_hba() {
        node.check_hba_accepted(&mut report.warnings)
            .map_err(|e| e.after(done.clone()))?;
    }
    if acted.running && state != DesiredState::Stopped {
        if let Some(change) = node
            .ensure_stanza(
                StanzaCase::Running(acted.status.as_ref()),
                false,
                &mut report.warnings,
            )
            .map_err(|e| e.after(done.clone()))?
        {
            report.changes.push(change);
        }
    }
    if let Some(b) = restored.as_ref().and_then(|rp| rp.fresh_backup()) {
        b.backup(crate::pgbackrest::BackupKind::Full, node.timeout)
            .map_err(|e| e.after(done.clone()))?;
    }
    report.facts = node.facts(acted.running, &mut report.warnings);
    Ok(report)
}

/// Where the service side of a run left the node.
struct Acted {
    running: bool,
    /// PostgreSQL was made to reload (and its pg_hba.conf checked).
    reloaded: bool,
    /// The node's status, when the run waited for it to be healthy.
    status: Option<NodeStatus>,
}

/// The service side of a run, once its files are written: reload, start,
/// stop or restart, and the wait. `reload`: the running node's
/// configuration changed, and whether PostgreSQL's part did. Each completed
/// action is added to `done`.
fn act(
    node: &Node<'_>,
    state: DesiredState,
    running: bool,
    reload: Option<Reload>,
    warnings: &mut Vec<String>,
    done: &mut Vec<String>,
) -> Result<Acted> {
    let name = node.name();
    if let Some(r) = &reload {
        r.apply(node, warnings, done)?;
    }
    let reloaded = reload.as_ref().is_some_and(|r| r.postgres_affected);
    let mut now_running = running;
    let mut status = None;
    match state {
        DesiredState::Present => {}
        DesiredState::Started => {
            if !running {
                node.service.start()?;
                now_running = true;
                done.push(format!("start Patroni ({name})"));
            }
            match node.wait_healthy() {
                Ok(s) => status = Some(s),
                Err(e) => {
                    // A Patroni this run started, which can only wait:
                    // stopped again, so that the cluster's stale state can
                    // be removed.
                    if !running && matches!(e, Error::NoOneToClone(_)) {
                        warnings.extend(node.service.stop(node.timeout)?);
                        done.pop();
                    }
                    return Err(e);
                }
            }
        }
        DesiredState::Stopped => {
            warnings.extend(node.service.stop(node.timeout)?);
            now_running = false;
        }
        DesiredState::Restarted => {
            if running {
                node.rest(node.timeout)?.restart()?;
                done.push(format!("restart PostgreSQL through Patroni ({name})"));
            } else {
                node.service.start()?;
                now_running = true;
                done.push(format!("start Patroni ({name})"));
            }
            status = Some(node.wait_healthy()?);
        }
        DesiredState::Absent => unreachable!("handled by remove()"),
    }
    Ok(Acted {
        running: now_running,
        reloaded,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_initialized_cluster_without_leader_or_members_has_no_one_to_clone_from() {
        let keys = |init: Option<&str>, leader: Option<&str>, members: &[&str]| ClusterKeys {
            initialize: init.map(str::to_string),
            leader: leader.map(str::to_string),
            members: members
                .iter()
                .map(|m| (m.to_string(), serde_json::json!({})))
                .collect(),
            ..ClusterKeys::default()
        };
        let sysid = Some("7710914764009116298");
        assert_eq!(
            leaderless_initialized(&keys(sysid, None, &[]), "pg1").as_deref(),
            sysid
        );
        assert_eq!(
            leaderless_initialized(&keys(sysid, None, &["pg1"]), "pg1").as_deref(),
            sysid
        );
        // Another member may yet lead; a leader can be cloned; a cluster
        // not initialized is bootstrapped by this node.
        assert_eq!(
            leaderless_initialized(&keys(sysid, None, &["pg1", "pg2"]), "pg1"),
            None
        );
        assert_eq!(
            leaderless_initialized(&keys(sysid, Some("pg2"), &[]), "pg1"),
            None
        );
        assert_eq!(leaderless_initialized(&keys(None, None, &[]), "pg1"), None);
    }

    #[test]
    fn states_parse() {
        assert_eq!(
            "started".parse::<DesiredState>().unwrap(),
            DesiredState::Started
        );
        assert!("running".parse::<DesiredState>().is_err());
    }
}
