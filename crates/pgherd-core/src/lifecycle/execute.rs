//! How each action of an instance's plan is carried out on its host and
//! confirmed; [`crate::action::execute`] runs them in order.

use super::*;
use crate::action::{Action, Confirming, Executor, Failure, Outcome, UpgradeStep};
use crate::pgbackrest::BackupKind;

/// A real run of an instance's plan: the node, and what the actions leave
/// for the run's report and for the actions after them.
pub(super) struct NodeRun<'n, 'a> {
    pub node: &'n Node<'a>,
    pub warnings: Vec<String>,
    /// The node's status and the cluster's as the last wait for it to
    /// lead or stream saw them, while no action acted since: the stanza
    /// check and the run's facts need not ask again.
    pub seen: Option<(NodeStatus, ClusterStatus)>,
    /// The node's status as the run's observation read it, until an action
    /// other than a check: a confirmation that comes first, and the facts
    /// of a run that did nothing else, need not ask it again.
    pub observed: Option<NodeStatus>,
    /// The old major's instance, during a major upgrade.
    pub old: Option<&'n Node<'a>>,
    /// The upgrade passed its point of no return (the new cluster may
    /// have started).
    pub committed: bool,
    /// On a running leader with a stanza: its backups and archiving, as
    /// the stanza's check read them.
    pub backups: Option<BackupFacts>,
}

impl<'n, 'a> NodeRun<'n, 'a> {
    pub fn new(node: &'n Node<'a>) -> Self {
        NodeRun {
            node,
            warnings: Vec::new(),
            seen: None,
            observed: None,
            old: None,
            committed: false,
            backups: None,
        }
    }

    /// Waits until the node leads or streams; `observed`, when nothing
    /// acted since it was read, is its first look at the node.
    fn healthy(&mut self, observed: Option<NodeStatus>) -> Result<()> {
        self.seen = Some(self.node.wait_healthy_from(observed)?);
        Ok(())
    }
}

type Step = std::result::Result<Outcome, Failure>;

impl Executor for NodeRun<'_, '_> {
    fn apply(&mut self, action: &Action) -> Step {
        let node = self.node;
        // Checks leave the statuses read as they were; anything else may
        // change what the node would answer.
        let mut observed = None;
        if !matches!(
            action,
            Action::ConfirmHba { .. } | Action::EnsureStanza { .. }
        ) {
            self.seen = None;
            observed = self.observed.take();
        }
        match action {
            Action::File(f) => f.change.apply()?,
            Action::ReloadPatroni {
                moved,
                postgres_affected,
                ..
            } => Reload {
                postgres_affected: *postgres_affected,
                moved: moved.clone(),
            }
            .apply(node, &mut self.warnings)?,
            Action::StartPatroni { .. } => return self.start(),
            Action::StopPatroni { .. } | Action::StopPostmaster { .. } => {
                self.warnings.extend(node.service.stop(node.timeout)?);
            }
            Action::RestartPostgres { minor, .. } => {
                node.rest(node.timeout)?.restart()?;
                self.healthy(None).confirming()?;
                if let (Some((_, installed)), Some((status, _))) = (minor, &self.seen) {
                    outdated::confirm_postgres_version(&node.name(), status, installed)
                        .confirming()?;
                }
            }
            Action::RestartPatroni { installed, .. } => {
                self.seen = Some(node.restart_patroni(installed, &mut self.warnings)?);
            }
            Action::ConfirmHealthy { .. } => self.healthy(observed)?,
            Action::ConfirmHba { .. } => node.check_hba_accepted(&mut self.warnings)?,
            Action::RestoreBackup { set, target, .. } => {
                node.restore_backup(set.as_deref(), target)?
            }
            Action::WipeData { .. } => node.wipe_data()?,
            Action::RemoveClusterState {
                initialize,
                keep_config,
                ..
            } => node.remove_cluster_state(initialize.clone(), *keep_config)?,
            Action::Upgrade(step) => return self.upgrade_step(step),
            Action::CreateStanza { archiving, .. } => node.create_stanza(*archiving)?,
            Action::EnsureStanza { .. } => {
                let case = StanzaCase::Running(self.seen.as_ref().map(|(s, _)| s));
                let seen = node.look_at_stanza(case, &mut self.warnings)?;
                self.backups = seen.backups;
                return match seen.create {
                    Some(create) => {
                        self.apply(&create)?;
                        Ok(Outcome::DoneAs(create.lines()))
                    }
                    None => Ok(Outcome::Nothing),
                };
            }
            Action::FreshBackup { .. } => {
                if let Some(b) = node.pgbackrest() {
                    b.backup(BackupKind::Full, node.timeout)?;
                }
            }
            Action::RemoveService => node.service.remove()?,
            Action::ForgetMember { key, .. } => node.forget_member(key)?,
            Action::RemovePath(path) => remove_path(path)?,
            Action::RemoveEmptyDir(dir) => return Ok(self.remove_empty_dir(dir)?),
            cluster_wide => {
                return Err(Error::Other(format!(
                    "internal error: {:?} is not planned for an instance",
                    cluster_wide.lines()
                ))
                .into())
            }
        }
        Ok(Outcome::Done)
    }
}

impl NodeRun<'_, '_> {
    /// One step of a major upgrade.
    fn upgrade_step(&mut self, step: &UpgradeStep) -> Step {
        let node = self.node;
        let old = self.old.ok_or_else(|| {
            Error::Other("internal error: an upgrade step without the old instance".into())
        })?;
        match step {
            UpgradeStep::StopOld { .. } => {
                // A checkpoint first, while writes still run: the shutdown's
                // own checkpoint, inside the downtime, then has little to do.
                let _ = old.psql().query("CHECKPOINT");
                self.warnings.extend(old.service.stop(node.timeout)?)
            }
            UpgradeStep::Unwind { .. } => self.warnings.extend(node.unwind_upgrade(old)?),
            UpgradeStep::InitNew {
                data_dir,
                checksums,
                ..
            } => node.initdb(data_dir, *checksums)?,
            UpgradeStep::Link { .. } => node.link(old)?,
            UpgradeStep::Commit { old_data_dir } => {
                self.committed = true;
                remove_path(&upgrade::linked_marker(old_data_dir))?;
            }
            UpgradeStep::Analyze { .. } => node.analyze()?,
            UpgradeStep::StanzaUpgrade { .. } => {
                if let Some(b) = node.pgbackrest() {
                    b.stanza_upgrade(node.timeout)?;
                }
            }
            UpgradeStep::Backup { .. } => {
                if let Some(b) = node.pgbackrest() {
                    b.backup(BackupKind::Full, node.timeout)?;
                }
            }
            UpgradeStep::Old(inner) => {
                let mut on_old = NodeRun::new(old);
                let outcome = on_old.apply(inner);
                self.warnings.append(&mut on_old.warnings);
                return outcome;
            }
        }
        Ok(Outcome::Done)
    }

    /// Starts Patroni and waits for the node to lead or stream. A Patroni
    /// that can only wait (nobody to clone from) is stopped again, so that
    /// the cluster's stale state can be removed: then nothing was done.
    fn start(&mut self) -> Step {
        let node = self.node;
        node.service.start()?;
        match node.wait_healthy() {
            Ok(seen) => {
                self.seen = Some(seen);
                Ok(Outcome::Done)
            }
            Err(e @ Error::NoOneToClone(_)) => {
                self.warnings
                    .extend(node.service.stop(node.timeout).confirming()?);
                Err(e.into())
            }
            Err(e) => Err(e).confirming(),
        }
    }

    /// Removes a directory left empty; one that files appeared in meanwhile
    /// stays, with a warning.
    fn remove_empty_dir(&mut self, dir: &Path) -> Result<Outcome> {
        match std::fs::remove_dir(dir) {
            Ok(()) => Ok(Outcome::Done),
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                self.warnings.push(format!(
                    "{} was left: files appeared in it during the removal",
                    dir.display()
                ));
                Ok(Outcome::Nothing)
            }
            Err(e) => Err(Error::io(dir, "removing directory", e)),
        }
    }
}
