//! Minor upgrades on a node (`restart_outdated`): the programs that run
//! another version than the one installed, restarted. Patroni alone, while
//! the cluster is paused, so that PostgreSQL keeps running; PostgreSQL
//! through Patroni.

use super::*;
use crate::versions::{self, Program, ProgramVersion, Versions};

/// The restarts a run does for `restart_outdated`.
#[derive(Debug, Clone, Default)]
pub(super) struct MinorRestarts {
    /// Patroni's (running, installed) versions, when it is restarted.
    pub patroni: Option<(String, String)>,
    /// PostgreSQL's, likewise.
    pub postgres: Option<(String, String)>,
}

fn pair(v: &ProgramVersion) -> Option<(String, String)> {
    Some((v.running.clone()?, v.installed.clone()?))
}

impl Node<'_> {
    /// The node's programs' versions: running as `status` reports them,
    /// installed as the programs' files say.
    pub(super) fn versions(&self, status: Option<&NodeStatus>) -> Versions {
        self.versions_with(status, versions::installed_postgres(&self.paths.bin_dir))
    }

    /// The same, with PostgreSQL's installed version already read.
    pub(super) fn versions_with(
        &self,
        status: Option<&NodeStatus>,
        postgres_installed: Option<String>,
    ) -> Versions {
        Versions {
            postgresql: ProgramVersion {
                running: status
                    .and_then(|s| s.server_version)
                    .map(versions::from_version_num),
                installed: postgres_installed,
            },
            patroni: ProgramVersion {
                running: status
                    .map(|s| s.patroni.version.clone())
                    .filter(|v| !v.is_empty()),
                installed: versions::installed_patroni(&self.settings.patroni.execpath),
            },
        }
    }

    /// The restarts `restart_outdated` asks for on a running node, checked
    /// before anything is written: Patroni alone only while the cluster is
    /// paused (unpaused, its stop would stop PostgreSQL, and a leader's
    /// would hand the leadership to another member). Check mode, which
    /// runs before the pause that a playbook's earlier task makes, warns
    /// instead.
    pub(super) fn plan_minor_restarts(
        &self,
        o: &mut Observed,
        state: DesiredState,
        foresee: bool,
        warnings: &mut Vec<String>,
    ) -> Result<()> {
        let wanted = &self.m.restart_outdated;
        o.minor = MinorRestarts::default();
        if wanted.is_empty() {
            return Ok(());
        }
        if matches!(state, DesiredState::Stopped | DesiredState::Absent) {
            return Err(Error::InvalidManifest(vec![format!(
                "restart_outdated goes with state started, present or restarted (the node runs \
                 at the end), not {}; nothing was changed",
                state.as_str()
            )]));
        }
        // A node that starts runs what is installed; a restore or a major
        // upgrade starts it anew.
        if !o.running || o.restore.is_some() || o.upgrade.is_some() {
            return Ok(());
        }
        let Some(status) = &o.status else {
            return Err(Error::Other(format!(
                "restart_outdated: Patroni of instance {} runs but its REST API does not answer \
                 at {}, so the versions that run cannot be read; start it again or fix its \
                 restapi address, then run again; nothing was changed",
                self.name(),
                self.m.restapi_connect_address
            )));
        };
        let v = self.versions(Some(status));
        for p in wanted {
            let pv = v.of(*p);
            if pv.running.is_none() || pv.installed.is_none() {
                warnings.push(format!(
                    "restart_outdated: {} (its version could not be read: not restarted)",
                    v.describe(*p)
                ));
            }
        }
        if wanted.contains(&Program::Patroni) && v.patroni.differs() {
            if !status.pause {
                Refusals { foresee, warnings }.refuse(format!(
                    "restart_outdated: {} on {}: Patroni is restarted alone only while the \
                     cluster is paused (PostgreSQL keeps running then); pause it first (patroni \
                     module, paused: true; playbooks/rolling-upgrade.yml does), or restart the \
                     node's service yourself; nothing was changed",
                    v.describe(Program::Patroni),
                    self.name()
                ))?;
            }
            o.minor.patroni = pair(&v.patroni);
        }
        if wanted.contains(&Program::Postgresql) && v.postgresql.differs() {
            o.minor.postgres = pair(&v.postgresql);
        }
        Ok(())
    }

    /// Patroni restarted alone: stopped (the cluster paused, it leaves
    /// PostgreSQL running), started, and waited for until it answers with
    /// the installed version and the node leads or streams again.
    pub(super) fn restart_patroni(
        &self,
        installed: &str,
        warnings: &mut Vec<String>,
    ) -> Result<(NodeStatus, ClusterStatus)> {
        let before = self.rest(POLL_REQUEST_TIMEOUT)?.patroni()?;
        self.service.stop_patroni_alone(self.timeout)?;
        self.service.start()?;
        let rest = self.rest(POLL_REQUEST_TIMEOUT)?;
        wait_until(
            &format!("Patroni {installed} of instance {} to answer", self.name()),
            self.timeout,
            || {
                if let Err(e) = self.patroni_still_runs() {
                    return Probe::Failed(e);
                }
                match rest.patroni() {
                    Ok(s) if s.patroni.version == installed => Probe::Ready(()),
                    Ok(s) => Probe::Waiting(format!(
                        "Patroni {} answers, {}",
                        s.patroni.version,
                        s.describe()
                    )),
                    Err(e) => Probe::Waiting(e.to_string()),
                }
            },
            || instance_log_tails(&self.paths),
        )?;
        let seen = self.wait_healthy()?;
        if seen.0.postmaster_start_time != before.postmaster_start_time {
            warnings.push(format!(
                "PostgreSQL of instance {} restarted with Patroni (started {}, before {}): was \
                 the cluster's pause lifted meanwhile?",
                self.name(),
                seen.0.postmaster_start_time.as_deref().unwrap_or("?"),
                before.postmaster_start_time.as_deref().unwrap_or("?")
            ));
        }
        Ok(seen)
    }
}

/// After a restart for a minor upgrade: PostgreSQL runs the installed
/// version, as Patroni reports it.
pub(super) fn confirm_postgres_version(
    node: &str,
    status: &NodeStatus,
    installed: &str,
) -> Result<()> {
    let running = status.server_version.map(versions::from_version_num);
    if running.as_deref() == Some(installed) {
        return Ok(());
    }
    Err(Error::Other(format!(
        "PostgreSQL of instance {node} was restarted but Patroni reports version {} running, not \
         the installed {installed}",
        running.as_deref().unwrap_or("(none)")
    )))
}
