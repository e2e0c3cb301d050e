//! A major upgrade of a node: on the member upgraded in place (the
//! leader), the old major stopped, a new data directory made with the new
//! major's initdb, `pg_upgrade --link` from the old one, the cluster's
//! state in the DCS replaced (its dynamic configuration kept) and Patroni
//! started on the result; on the other members, the old instance removed
//! and a new copy made from the upgraded leader. Everything `pg_upgrade
//! --check` and the cluster can refuse is checked before anything stops;
//! up to the new cluster's first start (the point of no return of
//! `--link`), a failure brings the old instance back.

use std::path::{Path, PathBuf};

use super::planner::Observed;
use super::*;
use crate::action::{Action, UpgradeStep};
use crate::manifest::MajorUpgrade;

mod checks;
mod programs;

/// The major of the data directory `dir` (its `PG_VERSION`), if any.
fn data_version(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("PG_VERSION"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The file pg_upgrade renames in the old data directory before it links
/// the relations: there, the old cluster no longer starts as it is.
pub(super) fn control_moved(old_data: &Path) -> PathBuf {
    old_data.join("global/pg_control.old")
}

/// Written into the old data directory once pg_upgrade has linked it into
/// the new one, removed just before the new cluster's first start (the
/// point of no return): while it is there, the upgrade can be undone.
pub(super) fn linked_marker(old_data: &Path) -> PathBuf {
    old_data.join("pgherd_upgrade_linked")
}

/// Where the upgrade stands on this host, as its files say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Stage {
    /// The old major's data directory, nothing of the new one's.
    Before,
    /// A new data directory that pg_upgrade did not finish (or that holds
    /// nothing): removed, and the old one made whole, before starting
    /// over.
    Unfinished,
    /// pg_upgrade finished; the new cluster never started.
    Linked,
    /// The new major's data directory alone, or beside an old one kept.
    Upgraded,
    /// Neither: nothing of the old major to upgrade here.
    #[default]
    Nothing,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Before => "before",
            Stage::Unfinished => "unfinished",
            Stage::Linked => "linked",
            Stage::Upgraded => "upgraded",
            Stage::Nothing => "nothing",
        }
    }
}

/// The upgrade's steps on this host, checked.
#[derive(Debug, Clone, Default)]
pub(super) struct UpgradeSteps {
    /// Up to the start of the new instance.
    pub before: Vec<Action>,
    /// Once it runs: statistics, the old instance's removal.
    pub after: Vec<Action>,
    /// The steps up to the start can be undone (no new cluster started
    /// yet): a failure among them brings the old instance back.
    pub undoable: bool,
    /// Where the upgrade stood.
    pub stage: Stage,
}

/// Reads where the upgrade stands: `new_data`, the new major's data
/// directory, `old_data` the old one's.
pub(super) fn stage(new_data: &Path, old_data: &Path, from: &str, to: &str) -> Stage {
    let new_version = data_version(new_data);
    let old_version = data_version(old_data);
    let unfinished = new_data.join("pg_upgrade_output.d").exists();
    match (new_version.as_deref(), old_version.as_deref()) {
        (Some(v), _) if v == to && !unfinished => {
            if linked_marker(old_data).exists() {
                Stage::Linked
            } else {
                Stage::Upgraded
            }
        }
        (_, Some(v)) if v == from => {
            if new_data.exists() {
                Stage::Unfinished
            } else {
                Stage::Before
            }
        }
        _ => Stage::Nothing,
    }
}

/// Checks the upgrade and plans its steps on this host; changes nothing
/// (`pg_upgrade --check` works in a directory of its own, removed after).
/// `foresee` (check mode): what other hosts' tasks do first is not done
/// yet, so those conditions are warned about.
pub(super) fn plan(
    node: &Node<'_>,
    old: &Node<'_>,
    up: &MajorUpgrade,
    running: bool,
    foresee: bool,
    warnings: &mut Vec<String>,
) -> Result<UpgradeSteps> {
    let (from, to) = (up.from.as_str(), node.m.version.as_str());
    let (new_data, old_data) = (&node.paths.data_dir, &old.paths.data_dir);
    let old_running = old.service.is_running()?;
    let stage = match running {
        true => Stage::Upgraded,
        false => stage(new_data, old_data, from, to),
    };
    let leads = up.leader == node.m.node;
    let mut steps = UpgradeSteps {
        stage,
        ..UpgradeSteps::default()
    };
    if stage == Stage::Upgraded {
        // Its old instance's files go once the new one runs (the data,
        // linked into the new data directory, is then the new cluster's).
        if old_data.exists() || old_running {
            steps.after = old_removed(old, old_running, warnings);
        }
        return Ok(steps);
    }
    if stage == Stage::Nothing && leads {
        return Err(Error::Other(format!(
            "upgrade.from: {from}: {} holds no PostgreSQL {from} data directory to upgrade and {} \
             none of PostgreSQL {to}; nothing was changed",
            old_data.display(),
            new_data.display()
        )));
    }
    checks::binaries(node, old, leads)?;
    let mut refusals = Refusals { foresee, warnings };
    if leads {
        in_place(node, old, old_running, &mut steps, &mut refusals)?;
    } else {
        copied(node, old, up, old_running, &mut steps, &mut refusals)?;
    }
    Ok(steps)
}

/// A member other than the leader: its old instance removed, then a new
/// copy of the upgraded leader (the start that follows makes it).
fn copied(
    node: &Node<'_>,
    old: &Node<'_>,
    up: &MajorUpgrade,
    old_running: bool,
    steps: &mut UpgradeSteps,
    refusals: &mut Refusals<'_>,
) -> Result<()> {
    let to = node.m.version.as_str();
    if !checks::leader_runs_major(node, up.leader.as_str(), to) {
        refusals.refuse(format!(
            "{} is not upgraded yet: its leader {} does not run PostgreSQL {to}; upgrade the \
             leader first (playbooks/upgrade.yml does); nothing was changed",
            node.name(),
            up.leader
        ))?;
    }
    if steps.stage != Stage::Nothing {
        steps.before = old_removed(old, old_running, refusals.warnings);
    }
    if node.paths.data_dir.exists() {
        steps
            .before
            .push(Action::RemovePath(node.paths.data_dir.clone()));
    }
    Ok(())
}

/// The leader, upgraded in place: checked, then up to pg_upgrade's end
/// (unless a run got that far already), the DCS state replaced, the point
/// of no return, and what follows once it runs.
fn in_place(
    node: &Node<'_>,
    old: &Node<'_>,
    old_running: bool,
    steps: &mut UpgradeSteps,
    refusals: &mut Refusals<'_>,
) -> Result<()> {
    let (new_data, old_data) = (&node.paths.data_dir, &old.paths.data_dir);
    let keys = node.read_cluster()?;
    if steps.stage != Stage::Linked {
        checks::cluster(node, old, &keys, old_running, refusals)?;
        checks::room(old_data, new_data)?;
        let checksums = checks::data_checksums(old)?;
        checks::with_pg_upgrade(node, old, old_running, checksums)?;
        let step = Action::Upgrade;
        if steps.stage == Stage::Unfinished {
            steps.before.push(step(UpgradeStep::Unwind {
                data_dir: new_data.clone(),
                old_data_dir: old_data.clone(),
            }));
        }
        // The new data directory is made while the old instance still
        // runs: the writes stop for the stop, pg_upgrade and the start only.
        steps.before.push(step(UpgradeStep::InitNew {
            data_dir: new_data.clone(),
            version: node.m.version.to_string(),
            checksums,
        }));
        if old_running {
            steps
                .before
                .push(step(UpgradeStep::StopOld { node: old.name() }));
        }
        steps.before.push(step(UpgradeStep::Link {
            from: old.m.version.to_string(),
            to: node.m.version.to_string(),
            old_data_dir: old_data.clone(),
            data_dir: new_data.clone(),
        }));
    }
    steps.undoable = true;
    steps.before.extend(state_replaced(node, &keys));
    // Last before the point of no return: the old instance archives into
    // the stanza no longer once it is upgraded.
    steps.before.extend(stanza_upgraded(node));
    steps.before.push(Action::Upgrade(UpgradeStep::Commit {
        old_data_dir: old_data.clone(),
    }));
    finish(node, steps);
    steps
        .after
        .extend(old_removed(old, old_running, refusals.warnings));
    Ok(())
}

/// The old instance's removal (`absent`'s plan for it), as upgrade steps.
fn old_removed(old: &Node<'_>, running: bool, warnings: &mut Vec<String>) -> Vec<Action> {
    super::remove::plan(old, running, None, warnings)
        .into_iter()
        .map(|a| Action::Upgrade(UpgradeStep::Old(Box::new(a))))
        .collect()
}

/// With backups: the stanza upgraded to the new data directory.
fn stanza_upgraded(node: &Node<'_>) -> Option<Action> {
    node.m.pgbackrest_stanza.as_ref().map(|s| {
        Action::Upgrade(UpgradeStep::StanzaUpgrade {
            stanza: s.to_string(),
        })
    })
}

/// Once the upgraded leader runs: statistics, and with backups a full
/// backup of the new major for the other members to be built from.
fn finish(node: &Node<'_>, steps: &mut UpgradeSteps) {
    steps
        .after
        .push(Action::Upgrade(UpgradeStep::Analyze { node: node.name() }));
    if let Some(stanza) = &node.m.pgbackrest_stanza {
        steps.after.push(Action::Upgrade(UpgradeStep::Backup {
            node: node.name(),
            stanza: stanza.to_string(),
        }));
    }
}

/// The cluster's keys removed but its dynamic configuration: the
/// upgraded leader's Patroni then writes the new system identifier and
/// leads.
fn state_replaced(node: &Node<'_>, keys: &ClusterKeys) -> Option<Action> {
    (!keys.is_empty()).then(|| Action::RemoveClusterState {
        scope: node.m.cluster.to_string(),
        keys: keys.all_keys.len(),
        prefix: keys.prefix.clone(),
        initialize: keys.initialize.clone(),
        keep_config: true,
    })
}

impl Node<'_> {
    /// Checks and plans the major upgrade the task asks for (state:
    /// started); `old`, the instance it upgrades from.
    pub(super) fn plan_upgrade(
        &self,
        old: Option<&Node<'_>>,
        o: &mut Observed,
        foresee: bool,
        warnings: &mut Vec<String>,
    ) -> Result<()> {
        if let (Some(up), Some(old)) = (&self.m.upgrade, old) {
            o.upgrade = Some(plan(self, old, up, o.running, foresee, warnings)?);
        }
        Ok(())
    }

    /// Brings the old instance back after an upgrade failed before its
    /// point of no return: the new data directory removed, the old one
    /// whole, its Patroni started and confirmed. The error says both.
    pub(super) fn undo_upgrade(&self, old: &Node<'_>, failed: Error) -> Error {
        let undone = self
            .unwind_upgrade(old)
            .and_then(|_| match old.service.is_running()? {
                true => Ok(()),
                false => old.service.start(),
            })
            .and_then(|()| old.wait_healthy().map(|_| ()));
        match undone {
            Ok(()) => Error::Other(format!(
                "{failed}; the upgrade was undone: {} runs again, its data directory as it was \
                 (the other members: start them again, instance state: started)",
                old.name()
            )),
            Err(e) => Error::Other(format!(
                "{failed}; undoing the upgrade failed too: {e}. {} still holds the old data \
                 directory (its global/pg_control.old renamed back to pg_control makes it whole)",
                old.paths.data_dir.display()
            )),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(super) fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pgherd-upgrade-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_stage_is_read_from_the_data_directories() {
        let d = dir("stage");
        let (old, new) = (d.join("15/main"), d.join("17/main"));
        let write = |p: &Path, text: &str| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        let at = || stage(&new, &old, "15", "17");
        assert_eq!(at(), Stage::Nothing);
        write(&old.join("PG_VERSION"), "15\n");
        assert_eq!(at(), Stage::Before);
        std::fs::create_dir_all(new.join("pg_upgrade_output.d")).unwrap();
        write(&new.join("PG_VERSION"), "17\n");
        assert_eq!(at(), Stage::Unfinished, "pg_upgrade left its output");
        std::fs::remove_dir_all(new.join("pg_upgrade_output.d")).unwrap();
        write(&old.join("global/pg_control.old"), "");
        write(&linked_marker(&old), "");
        assert_eq!(at(), Stage::Linked);
        std::fs::remove_file(linked_marker(&old)).unwrap();
        assert_eq!(at(), Stage::Upgraded, "past the point of no return");
        std::fs::remove_dir_all(&old).unwrap();
        assert_eq!(at(), Stage::Upgraded);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
