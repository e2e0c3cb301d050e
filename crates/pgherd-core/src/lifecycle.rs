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
mod etcd;
mod facts;
mod reload;
mod remove;
mod restore;
mod stanza;
mod wait;

pub use facts::{InstanceFacts, MemberFacts};
use reload::{postgres_sections_differ, Reload};
use stanza::StanzaCase;

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
    fn states_parse() {
        assert_eq!(
            "started".parse::<DesiredState>().unwrap(),
            DesiredState::Started
        );
        assert!("running".parse::<DesiredState>().is_err());
    }
}
