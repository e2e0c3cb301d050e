//! A `patroni` task's run: the cluster read, every phase planned (the
//! refusals, and what check mode reports), the cluster's lock taken when
//! an action moves roles, then each phase planned again from the cluster
//! as the previous one left it and carried out.

use super::*;
use crate::action::{describe, diff, execute_onto, Lock};
use execute::ClusterRun;
use planner::{BackupHere, Here, Phase, PHASES};

/// Where an asked-for backup is taken. With a repository host, there:
/// pgBackRest takes the backups of a remote repository on the repository
/// host only, reaching the leader's pgBackRest server; a member's host
/// leaves it to the repository host. Else on the leader's host.
fn backup_here(target: &Target, info: &ClusterInfo) -> Result<Option<BackupHere>> {
    let Some(leader) = info.running_leader() else {
        return Ok(None);
    };
    let settings = &target.settings;
    let Some(h) = &settings.pgbackrest.repository.host else {
        return Ok(Some(
            match crate::pgbackrest::local_member(settings, &target.scope, &leader.name)? {
                Some(b) => BackupHere::Takes {
                    stanza: b.stanza,
                    repository_host: None,
                },
                None => BackupHere::Elsewhere(Elsewhere::Leader(leader.name.clone())),
            },
        ));
    };
    if crate::pgbackrest::local_instance(settings, &target.scope, None)?.is_some() {
        return Ok(Some(BackupHere::Elsewhere(Elsewhere::RepositoryHost(
            h.name.clone(),
        ))));
    }
    // The stanza whose members are the cluster's (or its name).
    let mut names = vec![target.scope.as_str()];
    names.extend(info.members.iter().map(|m| m.name.as_str()));
    names.extend(info.members.iter().map(|m| m.host.as_str()));
    Ok(Some(
        match crate::pgbackrest::on_repository_host(settings, h, &names)? {
            Some(b) => BackupHere::Takes {
                stanza: b.stanza,
                repository_host: Some(h.name.clone()),
            },
            None => BackupHere::Elsewhere(Elsewhere::RepositoryHost(h.name.clone())),
        },
    ))
}

/// What a run reads on this host besides the cluster: where a backup runs.
fn look_here(target: &Target, info: &ClusterInfo, ops: &Operations) -> Result<Here> {
    let backup = match ops.backup {
        Some(_) => backup_here(target, info)?,
        None => None,
    };
    // Whether the primary a standby cluster follows still answers: a
    // promotion while it does makes two primaries. Every address probed at
    // once: a lost site's hosts each take the whole probe timeout.
    let standby_primary_answering = match (ops.promote, info.standby()) {
        (true, Some(s)) => {
            let addresses = s.primary_addresses();
            std::thread::scope(|scope| {
                let probes: Vec<_> = addresses
                    .iter()
                    .map(|a| scope.spawn(move || answers(a)))
                    .collect();
                addresses
                    .iter()
                    .zip(probes)
                    .filter_map(|(a, p)| p.join().unwrap_or(false).then(|| a.clone()))
                    .collect()
            })
        }
        _ => Vec::new(),
    };
    Ok(Here {
        backup,
        standby_primary_answering,
    })
}

/// Whether something accepts a TCP connection at `address` (`host:port`)
/// within two seconds.
fn answers(address: &str) -> bool {
    use std::net::ToSocketAddrs;
    address.to_socket_addrs().is_ok_and(|mut all| {
        all.any(|a| std::net::TcpStream::connect_timeout(&a, PROBE_TIMEOUT).is_ok())
    })
}

/// The host that takes an asked-for backup when this one does not: the
/// leader's, or the repository host.
fn backup_elsewhere(here: &Here) -> Option<Elsewhere> {
    match &here.backup {
        Some(BackupHere::Elsewhere(host)) => Some(host.clone()),
        _ => None,
    }
}

/// Runs the requested operations in a safe order: resume, dynamic config,
/// reload, switchover or failover, restarts, reinits, pause.
pub fn run(target: &Target, ops: &Operations, check_mode: bool) -> Result<Report> {
    if ops.remove {
        return remove(target, ops, check_mode);
    }
    // Who leads and who restarts is changed by one run at a time, and what
    // a run asking for it plans depends on the state read once the lock is
    // held (the leader it asks for may be leaving already). Without the DCS
    // (restapi given), Patroni's own failover key is the only guard.
    let (held, conn) = if !check_mode && ops.moves_roles() && target.restapi.is_none() {
        let (lock, keys) = lock_operations(target, &describe_moves(ops))?;
        (Some(lock), connect(target, Some(keys))?)
    } else {
        (None, connect(target, None)?)
    };
    let mut info = conn.observe()?;
    let here = look_here(target, &info, ops)?;
    let whole = planner::plan(&info, &here, ops)?;
    if check_mode {
        return Ok(Report {
            changes: describe(&whole),
            diff: diff(&whole),
            backup_elsewhere: backup_elsewhere(&here),
            info,
            ..Report::default()
        });
    }
    debug_assert!(
        held.is_some()
            || target.restapi.is_some()
            || whole.iter().all(|a| a.lock() != Lock::Cluster),
        "an action that needs the operation key planned without it"
    );
    let mut run = ClusterRun {
        target,
        conn: Some(&conn),
        warnings: Vec::new(),
        backup: None,
        acted: false,
    };
    let mut done = Vec::new();
    let mut diffs = Vec::new();
    let mut seen = 0;
    let mut here = here;
    for phase in PHASES {
        // What an earlier phase changed is read before planning the next.
        if done.len() > seen {
            info = conn.observe().map_err(|e| e.after(done.clone()))?;
            seen = done.len();
            run.acted = false;
            if phase == Phase::Backup {
                here = look_here(target, &info, ops).map_err(|e| e.after(done.clone()))?;
            }
        }
        let actions =
            planner::plan_phase(&info, &here, ops, phase).map_err(|e| e.after(done.clone()))?;
        diffs.extend(diff(&actions));
        execute_onto(&actions, &mut run, &mut done)?;
    }
    let backup_elsewhere = backup_elsewhere(&here);
    let info = conn.observe().map_err(|e| e.after(done.clone()))?;
    Ok(Report {
        changes: done,
        diff: diffs,
        warnings: run.warnings,
        info,
        backup: run.backup,
        backup_elsewhere,
    })
}

impl Operations {
    /// Whether the task asks to change who leads or to restart members:
    /// what the cluster's operation key serialises.
    pub fn moves_roles(&self) -> bool {
        self.leader.is_some()
            || self.failover_to.is_some()
            || self.restart.is_some()
            || !self.reinit.is_empty()
            || self.promote
    }
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
    if ops.promote {
        what.push("promotion of the standby cluster".to_string());
    }
    what.join(", ")
}
