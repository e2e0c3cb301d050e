//! The states of an instance: present, started, stopped, restarted, absent.
//! A run observes the node, refuses what cannot be done, and plans the
//! actions (files, service, restore, stanza) that bring it to the state;
//! check mode describes the plan, a real run carries it out, each action
//! confirmed (the node leads or streams, with a deadline).

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
mod execute;
mod facts;
mod outdated;
mod planner;
mod reload;
mod remove;
mod restore;
mod retire;
mod stanza;
mod upgrade;
mod wait;

use crate::action::{describe, diff, execute, Action};
use execute::NodeRun;
pub use facts::{InstanceFacts, MemberFacts};
use planner::Observed;
use reload::{postgres_sections_differ, Reload};
pub use stanza::BackupFacts;
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
        let known = crate::pg_parameters::known_parameters(&self.paths.bin_dir)?;
        let version = self.m.version.as_str();
        let mut out = crate::pg_parameters::unknown_parameters(
            "parameters",
            self.m.parameters.keys(),
            &known,
            version,
        );
        out.extend(crate::pg_parameters::unknown_parameters(
            "dynamic_conf_settings.postgresql.parameters",
            &bootstrap,
            &known,
            version,
        ));
        Ok(out)
    }
}

impl<'a> Node<'a> {
    fn new(settings: &'a Settings, m: &'a InstanceManifest, timeout: Duration) -> Result<Self> {
        let run_as = run_as_account(settings)?;
        let paths = InstancePaths::new(settings, m);
        Ok(Node {
            settings,
            m,
            service: Service::new(settings, m, &paths, run_as.clone()),
            paths,
            run_as,
            timeout,
        })
    }

    /// One run at a time changes an instance; check mode only reads.
    fn lock(&self) -> Result<RunLock> {
        RunLock::acquire(
            &self.paths.lock_file(),
            &format!("instance {}", self.name()),
            self.timeout,
            0o750,
            self.run_as.as_ref().map(|a| a.owner),
        )
    }

    /// What is on disk and running now, for a run to `state`. `made`
    /// lists directories this run made a moment ago (for its lock): they
    /// are planned as if missing, so reported as check mode reported them.
    fn observe(&self, state: DesiredState, made: &[PathBuf]) -> Result<Observed> {
        let running = self.service.is_running()?;
        let owner = self.run_as.as_ref().map(|a| a.owner);
        let mut files = desired_files(self.settings, self.m, &self.paths, owner)?;
        files.extend(self.service.unit_files());
        let mut plan =
            Plan::compute_as_if_missing(&desired_dirs(&self.paths, owner), &files, made)?;
        // The pid file is written by the start, not planned: a run killed
        // while writing it leaves its temporary file to this one.
        plan.changes.extend(
            crate::fs::leftover_temps(&self.paths.pid_file)
                .into_iter()
                .map(|path| Change::RemoveLeftover { path }),
        );
        let config_change = plan.changes.iter().find_map(|c| match c {
            Change::WriteFile {
                path,
                before: Some(_),
                content,
                ..
            } if *path == self.paths.config => {
                let old = std::fs::read_to_string(&self.paths.config).unwrap_or_default();
                Some(postgres_sections_differ(
                    &old,
                    &String::from_utf8_lossy(&content.0),
                ))
            }
            _ => None,
        });
        // Where Patroni is asked to reload: where it answers now.
        let keeps_running = matches!(
            state,
            DesiredState::Present | DesiredState::Started | DesiredState::Restarted
        ) && self.m.restore.is_none();
        let (status, moved) = if running && keeps_running {
            self.locate_api()
        } else {
            (None, None)
        };
        Ok(Observed {
            node: self.name(),
            running,
            orphan_postmaster: state == DesiredState::Stopped
                && !running
                && self.service.postmaster_pid().is_some(),
            files: plan.changes,
            config_change,
            status,
            moved,
            custom_hba: self.has_custom_hba(),
            ..Observed::default()
        })
    }

    /// Checks and plans the restore the task asks for (state: started).
    fn plan_restore(
        &self,
        o: &mut Observed,
        state: DesiredState,
        foresee: bool,
        warnings: &mut Vec<String>,
    ) -> Result<()> {
        if let (Some(source), DesiredState::Started) = (&self.m.restore, state) {
            let r = restore::plan(self, source, o.running, foresee, warnings)?;
            o.restore = Some(r.steps);
            o.fresh_backup = r.fresh_backup;
        }
        Ok(())
    }

    /// The stanza's creation that check mode foresees: for a running
    /// leader, or for a node that bootstraps the cluster when it starts
    /// (no cluster in the DCS).
    fn foresee_stanza(
        &self,
        o: &Observed,
        state: DesiredState,
        keys: Option<&ClusterKeys>,
        warnings: &mut Vec<String>,
    ) -> Result<Option<Action>> {
        let case = match state {
            DesiredState::Stopped | DesiredState::Absent => None,
            _ if o.restore.is_some() => None,
            _ if o.running => Some(StanzaCase::Running(None)),
            DesiredState::Started if keys.is_some_and(|k| k.initialize.is_none()) => {
                Some(StanzaCase::Bootstrapping)
            }
            _ => None,
        };
        match case {
            Some(case) => self.look_at_stanza(case, warnings).map(|seen| seen.create),
            None => Ok(None),
        }
    }

    /// Everything that can refuse the run before anything is written:
    /// files the configuration names and what its certificates say,
    /// programs and directories, the options' combination, parameter
    /// names, and etcd. The keys of the cluster when etcd was read for it.
    fn refusals(
        &self,
        state: DesiredState,
        first: &Observed,
        warnings: &mut Vec<String>,
    ) -> Result<Option<ClusterKeys>> {
        let missing = self.settings.missing_files();
        if !missing.is_empty() {
            return Err(Error::InvalidSettings(missing));
        }
        if state != DesiredState::Stopped {
            let mut problems = crate::preflight::check_instance(
                self.settings,
                self.m,
                &self.paths,
                self.run_as.as_ref(),
            );
            let doc =
                crate::patroni_config::patroni_config_doc(self.settings, self.m, &self.paths)?;
            let certificates = crate::certs::check_config(&doc);
            problems.extend(certificates.problems);
            if !problems.is_empty() {
                return Err(Error::Preflight(problems));
            }
            warnings.extend(certificates.warnings);
        }
        if self.m.upgrade.is_some() && state != DesiredState::Started {
            return Err(Error::InvalidManifest(vec![format!(
                "upgrade goes with state: started (the upgraded node runs at the end), not {}",
                state.as_str()
            )]));
        }
        if self.m.restore.is_some() && state != DesiredState::Started {
            return Err(Error::InvalidManifest(vec![format!(
                "restore goes with state: started (the restored node runs at the end), not {}",
                state.as_str()
            )]));
        }
        let writes_config = first
            .files
            .iter()
            .any(|c| matches!(c, Change::WriteFile { path, .. } if *path == self.paths.config));
        if writes_config {
            let unknown = self.unknown_parameters()?;
            if !unknown.is_empty() {
                return Err(Error::InvalidManifest(unknown));
            }
        }
        let needs_dcs = match state {
            DesiredState::Started | DesiredState::Restarted => true,
            DesiredState::Present => {
                first.running && !describe(&planner::plan(first, state)).is_empty()
            }
            DesiredState::Stopped | DesiredState::Absent => false,
        };
        if !needs_dcs {
            return Ok(None);
        }
        let keys = self.check_dcs(
            first.running,
            first.status.as_ref(),
            first.config_change.is_some(),
        )?;
        if let Some(keys) = &keys {
            use crate::tags::Upstream;
            match self
                .m
                .tags
                .upstream_check(&self.m.node, self.m.cluster.as_str(), &keys.members)
            {
                Upstream::Fine => {}
                Upstream::Warn(w) => warnings.push(w),
                Upstream::Refused(why) => {
                    return Err(Error::InvalidManifest(vec![format!(
                        "{why}; nothing was changed"
                    )]))
                }
            }
        }
        Ok(keys)
    }
}

/// A condition of a restore or an upgrade that other hosts' tasks may
/// meet first: a refusal in a real run, a warning when foreseeing (check
/// mode, where those tasks have not run yet).
pub(super) struct Refusals<'w> {
    pub foresee: bool,
    pub warnings: &'w mut Vec<String>,
}

impl Refusals<'_> {
    pub fn refuse(&mut self, e: String) -> Result<()> {
        if self.foresee {
            self.warnings.push(format!("in a real run: {e}"));
            Ok(())
        } else {
            Err(Error::Other(e))
        }
    }
}

/// Whether the node runs once a run to `state` is done.
fn runs_after(state: DesiredState, running: bool) -> bool {
    match state {
        DesiredState::Present => running,
        DesiredState::Started | DesiredState::Restarted => true,
        DesiredState::Stopped | DesiredState::Absent => false,
    }
}

/// Brings the instance to `state`: observes it, refuses what cannot be
/// done before writing anything, plans, and in check mode describes the
/// plan; a real run takes the instance's lock, observes and plans again
/// (a run that held the lock may have changed what there is to do) and
/// carries the plan out.
pub fn apply_state(
    settings: &Settings,
    m: &InstanceManifest,
    state: DesiredState,
    check_mode: bool,
    timeout: Duration,
) -> Result<Report> {
    let node = Node::new(settings, m, timeout)?;
    if state == DesiredState::Absent {
        return remove::remove(&node, check_mode);
    }
    let old_m = m.before_upgrade();
    let old = old_m
        .as_ref()
        .map(|om| Node::new(settings, om, timeout))
        .transpose()?;
    let mut warnings = Vec::new();
    if state != DesiredState::Stopped {
        let pg = crate::preflight::Who::of(node.run_as.as_ref());
        warnings.extend(crate::preflight::watchdog(settings, &pg).ok().flatten());
        warnings.extend(
            crate::preflight::patroni_version(settings, &node.paths.data_dir)
                .ok()
                .flatten(),
        );
    }
    let mut first = node.observe(state, &[])?;
    let keys = node.refusals(state, &first, &mut warnings)?;
    node.plan_restore(&mut first, state, check_mode, &mut warnings)?;
    if state == DesiredState::Started {
        node.plan_upgrade(old.as_ref(), &mut first, check_mode, &mut warnings)?;
    }
    node.plan_minor_restarts(&mut first, state, check_mode, &mut warnings)?;
    if check_mode {
        first.stanza = node.foresee_stanza(&first, state, keys.as_ref(), &mut warnings)?;
        let actions = planner::plan(&first, state);
        let known = first.status.clone();
        let mut facts = node.facts(first.running, None, known, &mut warnings);
        facts.upgrade_stage = first.upgrade.as_ref().map(|u| u.stage.as_str().into());
        return Ok(Report {
            changes: describe(&actions),
            diff: diff(&actions),
            warnings,
            facts,
        });
    }
    let held = node.lock()?;
    // A run with nothing to write (a re-run) that took the lock at once
    // only confirms what it observed: nothing to observe again. Otherwise
    // another run may have changed what there is to do.
    let first_actions = planner::plan(&first, state);
    let writes = !describe(&first_actions).is_empty() || first.restore.is_some();
    let (o, actions) = if writes || held.waited || !held.created_dirs.is_empty() {
        let mut o = node.observe(state, &held.created_dirs)?;
        node.plan_restore(&mut o, state, false, &mut Vec::new())?;
        // The upgrade's checks ran a moment ago (pg_upgrade's among them):
        // its steps as planned then, unless another run moved it on.
        o.upgrade = match &first.upgrade {
            Some(_) if held.waited => {
                node.plan_upgrade(old.as_ref(), &mut o, false, &mut Vec::new())?;
                o.upgrade
            }
            planned => planned.clone(),
        };
        node.plan_minor_restarts(&mut o, state, false, &mut Vec::new())?;
        let actions = planner::plan(&o, state);
        (o, actions)
    } else {
        (first, first_actions)
    };
    let mut run = NodeRun::new(&node);
    run.observed = o.status.clone();
    run.warnings = warnings;
    run.old = old.as_ref();
    let undoable = o.upgrade.as_ref().is_some_and(|u| u.undoable);
    let changes = match execute(&actions, &mut run) {
        Ok(changes) => changes,
        Err(e) => match old.as_ref() {
            Some(old) if undoable && !run.committed => return Err(node.undo_upgrade(old, e)),
            _ => return Err(e),
        },
    };
    let mut warnings = run.warnings;
    let mut facts = node.facts(
        runs_after(state, o.running),
        run.seen,
        run.observed,
        &mut warnings,
    );
    facts.backups = run.backups;
    facts.upgrade_stage = o.upgrade.as_ref().map(|u| u.stage.as_str().into());
    Ok(Report {
        changes,
        diff: diff(&actions),
        warnings,
        facts,
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
