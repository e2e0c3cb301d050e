//! Operations that change who leads or restart members: switchover, failover, restarts, reinits, each confirmed on the cluster.

use super::*;

pub(super) fn switchover(
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
pub(super) fn confirm_writable(conn: &Conn<'_>, name: &str) -> Result<()> {
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

pub(super) fn failover(
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

pub(super) fn restart_member(conn: &Conn<'_>, name: &str) -> Result<()> {
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
pub(super) const RESTART_ROUNDS: usize = 2;

pub(super) fn restart(
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
pub(super) fn restart_round(
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

pub(super) fn reinit(
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
