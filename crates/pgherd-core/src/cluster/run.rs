//! The operations a task asks for, in a safe order: resume, dynamic configuration, reload, switchover or failover, restarts, reinits, pause.

use super::*;

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
pub(super) fn describe_moves(ops: &Operations) -> String {
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
pub(super) fn whole(
    report: &mut Report,
    step: impl FnOnce(&mut Report) -> Result<()>,
) -> Result<()> {
    let before = report.changes.len();
    let result = step(report);
    if result.is_err() {
        report.changes.truncate(before);
    }
    result
}

/// The operations, in order. Steps over several members report each
/// member once it is done, so that a failure halfway says what was done.
pub(super) fn run_steps(
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

pub(super) fn dynamic_config(
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

pub(super) fn set_pause(
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
