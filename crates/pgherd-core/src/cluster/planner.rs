//! The actions of a `patroni` task, decided from the cluster as read: no
//! I/O. A run goes in phases, each planned from the cluster as the phase
//! before left it (a new leader, a parameter now pending a restart); check
//! mode and the refusals plan every phase from the cluster as it is now.

use super::*;
use crate::action::Action;
use promote::{plan_promotion, refuse_in_a_standby_cluster};

/// The parts of a run, in their order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Resume, dynamic configuration, reload.
    Configure,
    /// Switchover or failover.
    Lead,
    /// Restarts, reinits, pause.
    Restart,
    /// A backup on the leader.
    Backup,
}

pub const PHASES: [Phase; 4] = [Phase::Configure, Phase::Lead, Phase::Restart, Phase::Backup];

/// Where an asked-for backup is taken, as this host sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum BackupHere {
    /// Here: the leader's instance runs on this host (`repository_host`
    /// None), or this is the repository host, whose configuration lists
    /// the members.
    Takes {
        stanza: String,
        repository_host: Option<String>,
    },
    /// On that host: the leader's, or the repository host.
    Elsewhere(Elsewhere),
}

/// What was read besides the cluster (only what the asked-for operations
/// need).
#[derive(Debug, Clone, Default)]
pub struct Here {
    /// With a backup asked for: where it is taken.
    pub backup: Option<BackupHere>,
    /// With a promotion asked for: the addresses of the primary the
    /// standby cluster follows that accepted a connection.
    pub standby_primary_answering: Vec<String>,
}

/// Every phase planned from `info`: what check mode reports, and what a
/// real run refuses before it changes anything.
pub fn plan(info: &ClusterInfo, here: &Here, ops: &Operations) -> Result<Vec<Action>> {
    let mut out = Vec::new();
    for phase in PHASES {
        out.extend(plan_phase(info, here, ops, phase)?);
    }
    Ok(out)
}

/// One phase's actions, from the cluster as read.
pub fn plan_phase(
    info: &ClusterInfo,
    here: &Here,
    ops: &Operations,
    phase: Phase,
) -> Result<Vec<Action>> {
    let mut out = Vec::new();
    match phase {
        Phase::Configure => {
            if ops.paused == Some(false) && info.paused {
                out.push(Action::SetPause {
                    cluster: info.name.clone(),
                    paused: false,
                });
            }
            if let Some(wanted) = &ops.dynamic_config {
                out.extend(plan_config(info, wanted));
            }
            if ops.reload {
                out.extend(info.members.iter().map(|m| Action::ReloadMember {
                    name: m.name.clone(),
                }));
            }
        }
        Phase::Lead => {
            if let Some(candidate) = &ops.leader {
                out.extend(plan_switchover(
                    info,
                    candidate,
                    ops.scheduled_at.as_deref(),
                    ops.maximum_lag,
                )?);
            } else if let Some(candidate) = &ops.failover_to {
                out.extend(plan_failover(info, candidate, ops.force)?);
            } else if ops.promote {
                out.extend(plan_promotion(info, here, ops.force)?);
            }
        }
        Phase::Restart => {
            if let Some(mode) = ops.restart {
                out.extend(plan_restart_round(
                    info,
                    mode,
                    ops.restart_leader_by_switchover,
                    ops.maximum_lag,
                )?);
                out.push(Action::ConfirmRestarts {
                    by_switchover: ops.restart_leader_by_switchover,
                    maximum_lag: ops.maximum_lag,
                });
            }
            if !ops.reinit.is_empty() {
                out.extend(plan_reinit(info, &ops.reinit)?);
            }
            if ops.paused == Some(true) && !info.paused {
                out.push(Action::SetPause {
                    cluster: info.name.clone(),
                    paused: true,
                });
            }
        }
        Phase::Backup => {
            if let Some(kind) = ops.backup {
                let leader = info.running_leader().ok_or_else(|| {
                    Error::Other(format!(
                        "cluster {} has no running leader to back up",
                        info.name
                    ))
                })?;
                // Elsewhere, the leader's host or the repository host takes it.
                if let Some(BackupHere::Takes {
                    stanza,
                    repository_host,
                }) = &here.backup
                {
                    out.push(Action::Backup {
                        cluster: info.name.clone(),
                        leader: leader.name.clone(),
                        stanza: stanza.clone(),
                        kind,
                        repository_host: repository_host.clone(),
                    });
                }
            }
        }
    }
    Ok(out)
}

fn plan_config(info: &ClusterInfo, wanted: &Map<String, Value>) -> Option<Action> {
    let (patch, before, after) = config_patch(&info.config, wanted)?;
    Some(Action::PatchConfig {
        patch,
        before,
        after,
        wanted: wanted.clone(),
        streaming: info
            .members
            .iter()
            .any(|m| is_replica_role(&m.role) && m.state == "streaming"),
    })
}

/// A switchover to `candidate`, or nothing when it leads already (or the
/// same switchover is scheduled); refused when it may not take over.
pub fn plan_switchover(
    info: &ClusterInfo,
    candidate: &str,
    at: Option<&str>,
    maximum_lag: Option<u64>,
) -> Result<Option<Action>> {
    refuse_in_a_standby_cluster(info, &format!("switchover to {candidate}"))?;
    let Some(leader) = info.running_leader().map(|m| m.name.clone()) else {
        return Err(Error::Other(format!(
            "cluster {} has no running leader to switch over from: use failover_to",
            info.name
        )));
    };
    if leader == candidate {
        return Ok(None);
    }
    if let Some(scheduled) = &info.scheduled_switchover {
        let to = scheduled["to"].as_str().unwrap_or_default();
        let when = scheduled["at"].as_str().unwrap_or_default();
        if to == candidate && at.is_some_and(|want| same_time(want, when)) {
            return Ok(None);
        }
        return Err(Error::Other(format!(
            "switchover to {candidate} refused: a switchover to {to} is already scheduled at \
             {when}"
        )));
    }
    if let Some(why) = switchover_refusal(info, candidate, maximum_lag) {
        return Err(Error::Other(format!(
            "switchover to {candidate} refused: {why}"
        )));
    }
    Ok(Some(Action::Switchover {
        from: leader,
        to: candidate.to_string(),
        at: at.map(str::to_string),
        maximum_lag,
    }))
}

/// A failover to `candidate`, or nothing when it leads already; refused
/// while a healthy leader runs (unless forced) or when it does not run.
pub fn plan_failover(info: &ClusterInfo, candidate: &str, force: bool) -> Result<Option<Action>> {
    refuse_in_a_standby_cluster(info, &format!("failover to {candidate}"))?;
    let Some(m) = info.member(candidate) else {
        return Err(Error::Other(format!(
            "failover to {candidate} refused: it is not a member of cluster {}",
            info.name
        )));
    };
    let leader = info.running_leader().map(|l| l.name.clone());
    if leader.as_deref() == Some(candidate) {
        return Ok(None);
    }
    if let (Some(l), false) = (&leader, force) {
        return Err(Error::Other(format!(
            "failover to {candidate} refused: {l} is a healthy leader; use leader: {candidate} \
             for a switchover, or force: true"
        )));
    }
    if let Some(why) = super::decide::not_promotable(m) {
        return Err(Error::Other(format!(
            "failover to {candidate} refused: {why}"
        )));
    }
    if !matches!(m.state.as_str(), "running" | "streaming") {
        return Err(Error::Other(format!(
            "failover to {candidate} refused: it is not running (state {})",
            m.state
        )));
    }
    Ok(Some(Action::Failover {
        to: candidate.to_string(),
        former: leader,
    }))
}

/// Refuses when one of `names` did not answer on its REST API when the
/// cluster was read: acting on the others would leave the cluster halfway.
fn refuse_unreachable(info: &ClusterInfo, names: &[String], action: &str) -> Result<()> {
    match names
        .iter()
        .find(|n| info.member(n).is_some_and(|m| !m.reachable))
    {
        Some(name) => Err(Error::Other(format!(
            "member {name} does not answer on its REST API, so no member was {action}: bring \
             its Patroni back (or wait until it leaves the cluster), then run again"
        ))),
        None => Ok(()),
    }
}

/// One pass of restarts, replicas first, the leader last (handing over to
/// the least lagging streaming replica first when asked to).
pub fn plan_restart_round(
    info: &ClusterInfo,
    mode: RestartMode,
    by_switchover: bool,
    maximum_lag: Option<u64>,
) -> Result<Vec<Action>> {
    let order = restart_order(info, mode);
    refuse_unreachable(info, &order, "restarted")?;
    let mut out = Vec::new();
    for name in &order {
        if by_switchover && info.leader.as_deref() == Some(name.as_str()) {
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
            out.extend(plan_switchover(info, &candidate, None, maximum_lag)?);
        }
        out.push(Action::RestartMember { name: name.clone() });
    }
    Ok(out)
}

/// Reinits of replicas; refused as a whole when one is not a member, is
/// the leader, or does not answer.
pub fn plan_reinit(info: &ClusterInfo, names: &[String]) -> Result<Vec<Action>> {
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
    refuse_unreachable(info, names, "reinitialised")?;
    Ok(names
        .iter()
        .map(|n| Action::ReinitMember { name: n.clone() })
        .collect())
}

#[cfg(test)]
pub(super) mod tests;
