//! Restores of a node: rebuilt from the pgBackRest repository, when it is
//! to become the leader of a restored cluster, or copied again from the
//! leader. Every condition is checked before anything changes, and a
//! failure halfway says what was done.

use std::os::unix::process::CommandExt;
use std::process::Child;

use super::*;
use crate::action::Action;
use crate::cluster::{self, Operations, Target};
use crate::fs::create_dir;
use crate::manifest::{RecoveryTarget, RestoreSource};
use crate::pgbackrest::{PgBackRest, RECOVERY_SETTINGS};

/// A restore, checked: its steps up to the start of Patroni, and the full
/// backup to take once the node leads, when its timeline needs one.
pub(super) struct RestoreSteps {
    pub steps: Vec<Action>,
    pub fresh_backup: Option<Action>,
}

impl Node<'_> {
    /// The cluster as the `patroni` module would address it.
    pub(super) fn cluster_target(&self) -> Target {
        Target {
            scope: self.m.cluster.to_string(),
            settings: self.settings.clone(),
            restapi: None,
            restapi_auth: self.m.restapi_auth.clone(),
            etcd_auth: self.m.etcd_auth.clone(),
            timeout: self.timeout,
        }
    }
}

/// Checks a restore and plans its steps; changes nothing. `foresee`
/// (check mode): what other hosts' tasks change first (members stopped,
/// the leader restored) is not there yet, so those conditions are warned
/// about instead.
pub(super) fn plan(
    node: &Node<'_>,
    source: &RestoreSource,
    running: bool,
    foresee: bool,
    warnings: &mut Vec<String>,
) -> Result<RestoreSteps> {
    let mut refusals = Refusals { foresee, warnings };
    let keys = node.read_cluster()?;
    let mut steps = Vec::new();
    if running {
        steps.push(Action::StopPatroni { node: node.name() });
    }
    let fresh_backup = match source {
        RestoreSource::Backup { set, target } => from_backup(
            node,
            set.as_deref(),
            target,
            &keys,
            &mut refusals,
            &mut steps,
        )?,
        RestoreSource::Leader => {
            from_leader(node, &keys, &mut refusals, &mut steps)?;
            None
        }
    };
    Ok(RestoreSteps {
        steps,
        fresh_backup,
    })
}

/// The steps of a restore from the repository: checked against the DCS
/// (no live member, the same cluster); the full backup to take after it,
/// when its timeline needs one.
fn from_backup(
    node: &Node<'_>,
    set: Option<&str>,
    target: &RecoveryTarget,
    keys: &ClusterKeys,
    refusals: &mut Refusals<'_>,
    steps: &mut Vec<Action>,
) -> Result<Option<Action>> {
    let me = node.m.node.to_string();
    let scope = node.m.cluster.as_str();
    let mut fresh_backup = None;
    let b = node
        .pgbackrest()
        .ok_or_else(|| Error::Other("restore.from: backup needs the pgbackrest option".into()))?;
    // Before the first run writes pgBackRest's configuration (check
    // mode), the repository cannot be read yet.
    let mut newest = None;
    let chosen = if b.config.exists() {
        let info = b.info(node.timeout)?;
        let chosen = crate::pgbackrest::choose_backup(&b.stanza, &info.backups, set, target)
            .map_err(|e| Error::Other(format!("{e}; nothing was changed")))?;
        newest = info.backups.last().map(|n| n.label.clone());
        if let (Some(init), Some(sysid)) = (&keys.initialize, &chosen.system_identifier) {
            if init != sysid {
                return Err(Error::Other(format!(
                    "backup {} of stanza {} was taken from the cluster with system \
                         identifier {sysid}, but the DCS holds cluster {scope} as {init}: \
                         nothing was changed; restore a backup of this cluster, or remove \
                         the other cluster from the DCS first",
                    chosen.label, b.stanza
                )));
            }
        }
        Some(chosen)
    } else {
        None
    };
    let others: Vec<String> =
        cluster::live_members(node.settings, keys, node.m.restapi_auth.as_ref())
            .into_iter()
            .filter(|n| *n != me)
            .collect();
    if !others.is_empty() {
        refusals.refuse(format!(
            "cluster {scope} still has live members ({}): stop every member first \
                 (instance state: stopped), then restore; nothing was changed",
            others.join(", ")
        ))?;
    }
    steps.push(Action::RestoreBackup {
        data_dir: node.paths.data_dir.clone(),
        set: chosen.as_ref().map(|c| c.label.clone()),
        stanza: b.stanza.clone(),
        target: target.clone(),
    });
    if !keys.is_empty() {
        steps.push(Action::RemoveClusterState {
            scope: scope.to_string(),
            keys: keys.all_keys.len(),
            prefix: keys.prefix.clone(),
            initialize: keys.initialize.clone(),
            keep_config: false,
        });
    }
    // Recovery that stops before the newest backup's end branches
    // off a new timeline there: the newer backups belong to the
    // abandoned one, and a replica built from the newest would
    // never follow the restored leader.
    if let Some(set) = chosen.as_ref().filter(|c| {
        *target != RecoveryTarget::Latest && newest.as_deref() != Some(c.label.as_str())
    }) {
        fresh_backup = Some(Action::FreshBackup {
            node: node.name(),
            stanza: b.stanza.clone(),
            restored: set.label.clone(),
        });
    }
    Ok(fresh_backup)
}

/// The steps of a copy again from the leader, which must run and be
/// another member.
fn from_leader(
    node: &Node<'_>,
    keys: &ClusterKeys,
    refusals: &mut Refusals<'_>,
    steps: &mut Vec<Action>,
) -> Result<()> {
    let me = node.m.node.to_string();
    let scope = node.m.cluster.as_str();
    let leader = keys.leader.clone();
    match &leader {
        None => refusals.refuse(format!(
            "cluster {scope} has no leader to copy {me} from: restore the leader first \
                 (restore.from: backup on the chosen node); nothing was changed"
        ))?,
        Some(l) if *l == me => refusals.refuse(format!(
            "{me} leads cluster {scope}: restoring it from the leader would discard \
                 the cluster's own data; nothing was changed"
        ))?,
        Some(l) => {
            let live = cluster::live_members(node.settings, keys, node.m.restapi_auth.as_ref());
            if !live.contains(l) {
                refusals.refuse(format!(
                    "the leader {l} of cluster {scope} does not answer: start it first; \
                         nothing was changed"
                ))?;
            }
        }
    }
    steps.push(Action::WipeData {
        node: node.name(),
        data_dir: node.paths.data_dir.clone(),
        leader,
    });
    Ok(())
}

impl Node<'_> {
    /// Refuses a restore step while a PostgreSQL runs on the data
    /// directory without Patroni.
    fn refuse_running_postmaster(&self) -> Result<()> {
        match self.service.postmaster_pid() {
            Some(pid) => Err(Error::Other(format!(
                "a PostgreSQL (pid {pid}) runs on {} without Patroni: stop it (instance state: \
                 stopped), then restore",
                self.paths.data_dir.display()
            ))),
            None => Ok(()),
        }
    }

    /// Rebuilds the data directory from a backup, runs its recovery to the
    /// end and stops it.
    pub(super) fn restore_backup(&self, set: Option<&str>, target: &RecoveryTarget) -> Result<()> {
        self.refuse_running_postmaster()?;
        let b = self.pgbackrest().ok_or_else(|| {
            Error::Other("restore.from: backup needs the pgbackrest option".into())
        })?;
        b.restore(set, target, self.timeout)?;
        finish_recovery(self, &b)
    }

    /// Removes the cluster's state from the DCS, with the same guard as the
    /// patroni module's removal, which reads it again: no live member, and
    /// still the initialize key the plan checked against the backup.
    pub(super) fn remove_cluster_state(
        &self,
        initialize: Option<String>,
        keep_config: bool,
    ) -> Result<()> {
        cluster::run(
            &self.cluster_target(),
            &Operations {
                remove: true,
                system_identifier: initialize,
                keep_config,
                ..Operations::default()
            },
            false,
        )
        .map(|_| ())
    }

    /// Empties the data directory for Patroni to copy it from the leader.
    pub(super) fn wipe_data(&self) -> Result<()> {
        self.refuse_running_postmaster()?;
        remove_path(&self.paths.data_dir)?;
        if let Some(wal) = &self.paths.wal_dir {
            remove_path(wal)?;
        }
        // Empty and 0700, as initdb, pg_basebackup and pgBackRest all
        // accept it.
        create_dir(
            &self.paths.data_dir,
            0o700,
            self.run_as.as_ref().map(|a| a.owner),
        )
    }
}

/// Runs the restored PostgreSQL alone (no Patroni, no network, this node's
/// port, socket and archive command) until its recovery ends with a
/// promotion, resets the recovery settings the restore wrote, and stops
/// it cleanly: Patroni then finds a stopped primary to lead with.
fn finish_recovery(node: &Node<'_>, b: &PgBackRest) -> Result<()> {
    let paths = &node.paths;
    let log_path = paths.pg_log_dir.join("pgherd-restore.log");
    let (log, err_log) = crate::process::append_log(&log_path, node.run_as.as_ref())?;
    let data = &paths.data_dir;
    let settings = [
        "listen_addresses=".to_string(),
        format!("port={}", node.m.port),
        format!("unix_socket_directories={}", paths.socket_dir.display()),
        format!("hba_file={}", data.join("pg_hba.conf").display()),
        format!("ident_file={}", data.join("pg_ident.conf").display()),
        "logging_collector=off".to_string(),
        format!("archive_command={}", b.archive_command()),
        format!("restore_command={}", b.restore_command()),
    ];
    let postgres = paths.bin_dir.join("postgres");
    let mut cmd = crate::process::command(&postgres, node.run_as.as_ref());
    cmd.arg("-D").arg(data);
    for s in &settings {
        cmd.arg("-c").arg(s);
    }
    cmd.stdout(log).stderr(err_log).process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io(&postgres, "starting PostgreSQL", e))?;
    let log_tail = || crate::logs::tail_note(&log_path, 10);
    let psql = node.psql();
    let promoted = wait_until(
        &format!(
            "the restored PostgreSQL of {} to end its recovery",
            node.name()
        ),
        node.timeout,
        || match child.try_wait() {
            Ok(Some(status)) => Probe::Failed(Error::Other(format!(
                "the restored PostgreSQL of {} exited ({status}) before its recovery ended{}",
                node.name(),
                log_tail()
            ))),
            _ => match psql.value("SELECT pg_is_in_recovery()") {
                Ok(v) if v == "f" => Probe::Ready(()),
                Ok(_) => Probe::Waiting("PostgreSQL is still in recovery".into()),
                Err(e) => Probe::Waiting(e.to_string()),
            },
        },
        log_tail,
    );
    let reset = promoted.and_then(|()| {
        for setting in RECOVERY_SETTINGS {
            psql.query(&format!("ALTER SYSTEM RESET {setting}"))?;
        }
        Ok(())
    });
    let stopped = stop_postgres(node, &mut child, &log_tail);
    reset?;
    stopped
}

/// Stops a PostgreSQL this run started: a fast shutdown, then an
/// immediate one past the deadline.
fn stop_postgres(node: &Node<'_>, child: &mut Child, log_tail: &dyn Fn() -> String) -> Result<()> {
    let pid = child.id() as i32;
    for (signal, mode) in [(libc::SIGINT, "fast"), (libc::SIGQUIT, "immediate")] {
        // SAFETY: kill(2) on the postmaster this run started.
        unsafe {
            libc::kill(pid, signal);
        }
        let stopped = crate::process::wait_exit(
            &format!(
                "the restored PostgreSQL of {} to stop ({mode} shutdown)",
                node.name()
            ),
            child,
            node.timeout,
            log_tail,
        )
        .map(|_| ());
        if stopped.is_ok() || signal == libc::SIGQUIT {
            return stopped;
        }
    }
    Ok(())
}
