//! How each cluster-wide action is carried out through Patroni's REST API
//! (or etcd) and confirmed on the cluster; [`crate::action::execute`] runs
//! them in order.

use super::sync::{self, sync_ready, SyncWanted};
use super::*;
use crate::action::{execute_onto, Action, Confirming, Executor, Failure, Outcome};

/// A real run of a `patroni` task's actions.
pub(super) struct ClusterRun<'c, 'a> {
    pub target: &'a Target,
    /// The members; `None` for what needs only etcd (a removal).
    pub conn: Option<&'c Conn<'a>>,
    pub warnings: Vec<String>,
    /// The backup taken, as the repository lists it.
    pub backup: Option<crate::pgbackrest::BackupSet>,
    /// An action of this run changed the cluster since the read the
    /// current plan comes from (its caller resets it when it reads again).
    pub acted: bool,
}

type Step = std::result::Result<Outcome, Failure>;

impl<'c, 'a> ClusterRun<'c, 'a> {
    fn conn(&self) -> Result<&'c Conn<'a>> {
        self.conn.ok_or_else(|| {
            Error::Other("internal error: a member's action planned without its members".into())
        })
    }
}

impl Executor for ClusterRun<'_, '_> {
    fn apply(&mut self, action: &Action) -> Step {
        let step = self.apply_one(action);
        if matches!(step, Ok(Outcome::Done | Outcome::DoneAs(_))) {
            self.acted = true;
        }
        step
    }
}

impl ClusterRun<'_, '_> {
    fn apply_one(&mut self, action: &Action) -> Step {
        match action {
            Action::SetPause { paused, .. } => set_pause(self.conn()?, *paused)?,
            Action::PromoteStandbyCluster { leader, .. } => {
                promote_standby_cluster(self.conn()?, leader)?
            }
            Action::PatchConfig {
                patch,
                wanted,
                streaming,
                ..
            } => patch_config(self.conn()?, patch, wanted, *streaming)?,
            Action::ReloadMember { name } => self
                .conn()?
                .member_client(name)?
                .reload()
                .map_err(|e| Error::Other(format!("reload of {name}: {e}")))?,
            Action::Switchover { .. } => return self.switchover(action),
            Action::Failover { to, former } => self.failover(to, former.as_deref())?,
            Action::RestartMember { name } => restart_member(self.conn()?, name)?,
            Action::ConfirmRestarts {
                by_switchover,
                maximum_lag,
            } => return self.confirm_restarts(*by_switchover, *maximum_lag),
            Action::ReinitMember { name } => reinit_member(self.conn()?, name)?,
            Action::DeleteClusterKeys { prefix, .. } => delete_keys(self.target, prefix)?,
            Action::Backup {
                leader,
                kind,
                stanza,
                repository_host,
                ..
            } => self.backup(leader, *kind, stanza, repository_host.is_some())?,
            for_a_host => {
                return Err(Error::Other(format!(
                    "internal error: {:?} is not planned for a cluster",
                    for_a_host.lines()
                ))
                .into())
            }
        }
        Ok(Outcome::Done)
    }

    /// Takes a backup with the leader's pgBackRest on this host, or the
    /// repository host's.
    fn backup(
        &mut self,
        leader: &str,
        kind: crate::pgbackrest::BackupKind,
        stanza: &str,
        on_repository_host: bool,
    ) -> Result<()> {
        let t = self.target;
        let found = match (on_repository_host, &t.settings.pgbackrest.repository.host) {
            (true, Some(h)) => crate::pgbackrest::on_repository_host(&t.settings, h, &[stanza])?,
            _ => crate::pgbackrest::local_member(&t.settings, &t.scope, leader)?,
        };
        let Some(b) = found else {
            return Err(Error::Other(format!(
                "the leader {leader} of cluster {} no longer runs on this host: nothing was \
                 backed up",
                t.scope
            )));
        };
        b.backup(kind, t.timeout)?;
        self.backup = b.info(t.timeout)?.backups.last().cloned();
        Ok(())
    }

    /// Switches over; planned again from the cluster as it is now when this
    /// run changed it since the plan (replicas restarted before their
    /// leader hands over).
    fn switchover(&mut self, planned: &Action) -> Step {
        let Action::Switchover {
            to,
            at,
            maximum_lag,
            ..
        } = planned
        else {
            return Ok(Outcome::Nothing);
        };
        let (to, at) = (to.as_str(), at.as_deref());
        let conn = self.conn()?;
        let replanned;
        let action = if self.acted {
            replanned = planner::plan_switchover(&conn.observe()?, to, at, *maximum_lag)?;
            match &replanned {
                Some(a) => a,
                None => return Ok(Outcome::Nothing),
            }
        } else {
            planned
        };
        let Action::Switchover { from: leader, .. } = action else {
            return Ok(Outcome::Nothing);
        };
        let client = conn.operation_client(leader)?;
        let sync = SyncWanted::of(&client);
        let (status, answer) = client.switchover(leader, to, at)?;
        match status {
            200 => {}
            202 => return Ok(Outcome::DoneAs(action.lines())),
            503 => self.warnings.push(format!(
                "Patroni answered 503 ({}): the outcome was checked on the cluster",
                snippet(&answer)
            )),
            412 => {
                return Err(Error::Other(format!(
                    "Patroni refused the switchover to {to} (HTTP 412): {}",
                    snippet(&answer)
                ))
                .into())
            }
            other => {
                return Err(Error::Other(format!(
                    "switchover to {to}: HTTP {other} from {leader}: {}",
                    snippet(&answer)
                ))
                .into())
            }
        }
        let confirmed = conn
            .wait_cluster(
                &format!(
                    "{to} to lead and {leader} to stream from it{}",
                    sync::awaited(sync)
                ),
                |s| {
                    member_runs_as(s, to, &["leader"], &["running"])
                        && member_runs_as(s, leader, &REPLICA_ROLES, &["streaming"])
                        && sync_ready(s, sync)
                },
            )
            .and_then(|_| confirm_writable(conn, to));
        // Done, though not confirmed: reported with the failure.
        match confirmed {
            Ok(()) => Ok(Outcome::DoneAs(action.lines())),
            Err(error) => Err(error.after(action.lines()).into()),
        }
    }

    fn failover(&mut self, to: &str, former: Option<&str>) -> std::result::Result<(), Failure> {
        let conn = self.conn()?;
        let client = conn.operation_client(to)?;
        let sync = SyncWanted::of(&client);
        let (status, answer) = client.failover(to)?;
        match status {
            200 => {}
            503 => self.warnings.push(format!(
                "Patroni answered 503 ({}): the outcome was checked on the cluster",
                snippet(&answer)
            )),
            other => {
                return Err(Error::Other(format!(
                    "failover to {to}: HTTP {other}: {}",
                    snippet(&answer)
                ))
                .into())
            }
        }
        // A forced failover from a healthy leader: it must come back as a
        // replica, as after a switchover.
        conn.wait_cluster(&format!("{to} to lead{}", sync::awaited(sync)), |s| {
            member_runs_as(s, to, &["leader"], &["running"])
                && former.is_none_or(|f| member_runs_as(s, f, &REPLICA_ROLES, &["streaming"]))
                && sync_ready(s, sync)
        })
        .and_then(|_| confirm_writable(conn, to))
        .confirming()
    }

    /// Confirmed on the cluster: no member may still wait for a restart.
    /// Members whose pending restart Patroni published after the first
    /// round was planned are restarted in a second one.
    fn confirm_restarts(&mut self, by_switchover: bool, maximum_lag: Option<u64>) -> Step {
        let conn = self.conn()?;
        let mut lines = Vec::new();
        for round in 1..=RESTART_ROUNDS {
            let after = conn
                .observe()
                .map_err(|e| Failure::from(e.after(lines.clone())))?;
            let still = restart_order(&after, RestartMode::Pending);
            if still.is_empty() {
                break;
            }
            if round == RESTART_ROUNDS {
                return Err(Failure::from(
                    Error::Other(format!(
                        "after restarting, {} still report a pending restart ({}): Patroni may \
                         not apply a parameter that needs a restart; see the members' \
                         pending_restart_reason",
                        still.join(", "),
                        after
                            .members
                            .iter()
                            .filter(|m| m.pending_restart)
                            .map(|m| format!("{} {} {}", m.name, m.role, m.state))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                    .after(lines),
                ));
            }
            let again = planner::plan_restart_round(
                &after,
                RestartMode::Pending,
                by_switchover,
                maximum_lag,
            )
            .map_err(|e| Failure::from(e.after(lines.clone())))?;
            self.acted = false;
            execute_onto(&again, self, &mut lines)?;
        }
        Ok(if lines.is_empty() {
            Outcome::Nothing
        } else {
            Outcome::DoneAs(lines)
        })
    }
}

/// Ends a standby cluster (its dynamic configuration's `standby_cluster`
/// removed), and waits until what the next task reads shows a primary:
/// the configuration Patroni wrote, the former standby leader's own view,
/// and the DCS's.
fn promote_standby_cluster(conn: &Conn<'_>, leader: &str) -> std::result::Result<(), Failure> {
    let (_, client) = conn.cluster_status()?;
    let applied = client.patch_config(&json!({ "standby_cluster": null }))?;
    if crate::standby::StandbyCluster::from_config(&applied).is_some() {
        return Err(Error::Other(
            "Patroni accepted the change but its configuration still holds standby_cluster".into(),
        ))
        .confirming();
    }
    let member = conn.member_client(leader).confirming()?;
    wait_member_healthy(conn, &member, leader, |s| {
        s.is_primary() && !s.cluster_unlocked
    })
    .confirming()?;
    conn.wait_cluster(&format!("the DCS to show {leader} as the leader"), |s| {
        member_runs_as(s, leader, &["leader"], &["running"])
    })
    .map(|_| ())
    .confirming()
}

/// Switches maintenance mode, and waits until every member applied it (on
/// its next cycle).
fn set_pause(conn: &Conn<'_>, paused: bool) -> std::result::Result<(), Failure> {
    let (status, client) = conn.cluster_status()?;
    client.patch_config(&json!({ "pause": paused }))?;
    let clients: Vec<(String, RestClient)> = status
        .members
        .iter()
        .map(|m| conn.member_client(&m.name).map(|c| (m.name.clone(), c)))
        .collect::<Result<_>>()
        .confirming()?;
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
    .confirming()
}

/// Patches the dynamic configuration, checks that Patroni holds what was
/// asked, and waits until the leader chose (or dropped) synchronous
/// standbys, as the next task reads.
fn patch_config(
    conn: &Conn<'_>,
    patch: &Value,
    wanted: &Map<String, Value>,
    streaming: bool,
) -> std::result::Result<(), Failure> {
    let (_, client) = conn.cluster_status()?;
    let applied = client.patch_config(patch)?;
    if let Some((still, _, _)) = config_patch(&applied, wanted) {
        return Err(Error::Other(format!(
            "Patroni accepted the change but its configuration still differs in: {still}"
        )))
        .confirming();
    }
    if patch.get("synchronous_mode").is_none() && patch.get("synchronous_node_count").is_none() {
        return Ok(());
    }
    match SyncWanted::from_config(&applied) {
        Some(wanted) if streaming => conn
            .wait_cluster(&wanted.awaited(), |s| wanted.chosen(s))
            .map(|_| ())
            .confirming(),
        Some(_) => Ok(()),
        None => conn
            .wait_cluster("no member to remain a synchronous standby", |s| {
                s.members
                    .iter()
                    .all(|m| !matches!(m.role.as_str(), "sync_standby" | "quorum_standby"))
            })
            .map(|_| ())
            .confirming(),
    }
}

/// Deletes the keys under `prefix` and checks that none is left.
fn delete_keys(target: &Target, prefix: &str) -> Result<()> {
    let mut dcs = connect_dcs(target)?;
    dcs.delete_prefix(prefix)?;
    let left = dcs.read_cluster(&target.settings.patroni.etcd.namespace, &target.scope)?;
    if !left.is_empty() {
        return Err(Error::Other(format!(
            "keys left under {prefix} after the removal: {}",
            left.all_keys.join(", ")
        )));
    }
    Ok(())
}
