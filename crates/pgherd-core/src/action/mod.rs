//! What a run does, as data. Every operation reads what there is, then
//! plans: a list of [`Action`]s, computed without writing anything. Check
//! mode describes that list; a real run hands the same list to [`execute`],
//! which carries the actions out in order, each confirmed before the next,
//! stops at the first failure and reports everything done before it, in
//! the words check mode used.

use std::path::PathBuf;

use serde_json::{json, Map, Value};

use crate::manifest::RecoveryTarget;
use crate::pgbackrest::BackupKind;
use crate::plan::Change;

mod execute;
mod upgrade;

pub use execute::{carry_out, execute, execute_onto, Confirming, Executor, Failure, Outcome};
pub use upgrade::UpgradeStep;

/// The REST API of a running Patroni answers at `from`; its configuration
/// puts it at `to` (it moves there when Patroni reloads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiMove {
    pub from: String,
    pub to: String,
}

impl ApiMove {
    pub fn describe(&self) -> String {
        format!("its REST API moves from {} to {}", self.from, self.to)
    }
}

/// What an action holds while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// Nothing of pgherd's: it only reads, Patroni serialises it (its
    /// configuration), pgBackRest's own lock does (a backup), or a guard
    /// checked just before it protects it.
    None,
    /// The instance's run lock, on its host.
    Instance,
    /// The cluster's lease lock, in etcd.
    Cluster,
}

/// One thing a run does to a host or a cluster.
///
/// `node` fields name the instance as messages do: `15-main (pg1)`.
#[derive(Clone)]
pub enum Action {
    /// A file or directory of the host brought to what it should be, with
    /// its line and diff entry (rendered where it is planned, so that what
    /// never plans files does not carry their rendering).
    File(Box<FileStep>),
    /// The running Patroni asked to reload where it answers now.
    ReloadPatroni {
        node: String,
        /// Its REST API moves with this reload.
        moved: Option<ApiMove>,
        /// PostgreSQL's part of the configuration changed.
        postgres_affected: bool,
    },
    /// Patroni started by its service; the node then leads or streams.
    StartPatroni { node: String },
    /// Patroni and its PostgreSQL stopped.
    StopPatroni { node: String },
    /// A PostgreSQL that runs without its Patroni, stopped.
    StopPostmaster { node: String },
    /// PostgreSQL restarted through Patroni; the node then leads or streams.
    RestartPostgres {
        node: String,
        /// A minor upgrade: the version that runs and the one installed,
        /// which runs after.
        minor: Option<(String, String)>,
    },
    /// Patroni alone restarted for the version installed (the cluster
    /// paused: PostgreSQL keeps running); the node then leads or streams.
    RestartPatroni {
        node: String,
        running: String,
        installed: String,
    },
    /// Not a change: the running node leads or streams.
    ConfirmHealthy { node: String },
    /// Not a change: PostgreSQL accepts every line of its pg_hba.conf.
    ConfirmHba { node: String },
    /// The data directory rebuilt from a pgBackRest backup, its recovery
    /// run to the end and the result promoted, with Patroni stopped.
    RestoreBackup {
        data_dir: PathBuf,
        /// The backup chosen; `None`: the newest (its repository could not
        /// be read yet, in check mode before the first run).
        set: Option<String>,
        stanza: String,
        target: RecoveryTarget,
    },
    /// The data directory emptied, for Patroni to copy it from the leader.
    WipeData {
        node: String,
        data_dir: PathBuf,
        leader: Option<String>,
    },
    /// A cluster's keys removed from the DCS, guarded as the patroni
    /// module's removal is: no live member, and still this initialize key.
    RemoveClusterState {
        scope: String,
        keys: usize,
        prefix: String,
        initialize: Option<String>,
        /// Its dynamic configuration stays (a major upgrade).
        keep_config: bool,
    },
    /// A step of a major upgrade on this host.
    Upgrade(UpgradeStep),
    /// The pgBackRest stanza created on the leader (and archiving checked).
    CreateStanza {
        stanza: String,
        repository: PathBuf,
        archiving: bool,
    },
    /// Once the node runs, its stanza created if it leads and the
    /// repository lacks it; `predicted`: what check mode expects.
    EnsureStanza {
        node: String,
        predicted: Option<Box<Action>>,
    },
    /// A full backup taken once a restored node leads on its new timeline.
    FreshBackup {
        node: String,
        stanza: String,
        restored: String,
    },
    /// The service's own files (a systemd unit's drop-in) removed; not
    /// reported on its own.
    RemoveService,
    /// A stopped member's key removed from the DCS of a cluster that
    /// keeps running, until the DCS and the other members no longer list it.
    ForgetMember {
        node: String,
        cluster: String,
        key: String,
    },
    /// A path of the instance removed (a directory with what it holds).
    RemovePath(PathBuf),
    /// A directory of the instance's own, left empty, removed.
    RemoveEmptyDir(PathBuf),
    /// Maintenance mode switched on or off, as every member then reports.
    SetPause { cluster: String, paused: bool },
    /// A standby cluster's `standby_cluster` removed from its dynamic
    /// configuration: its standby leader promotes.
    PromoteStandbyCluster {
        cluster: String,
        leader: String,
        /// What it followed, for the description.
        following: String,
    },
    /// What differs from the wanted dynamic configuration, patched.
    PatchConfig {
        /// The keys the patch sets (or deletes).
        patch: Value,
        before: Value,
        after: Value,
        /// The task's wanted configuration, to confirm against.
        wanted: Map<String, Value>,
        /// A replica streams: a synchronous standby is waited for when
        /// synchronous mode goes on.
        streaming: bool,
    },
    /// A member's Patroni asked to reload its configuration.
    ReloadMember { name: String },
    /// The leader hands over to `to` (at a time, when scheduled).
    Switchover {
        from: String,
        to: String,
        at: Option<String>,
        maximum_lag: Option<u64>,
    },
    /// `to` promoted without a healthy leader (or forced).
    Failover {
        to: String,
        /// The leader that runs still (forced): it comes back as a replica.
        former: Option<String>,
    },
    /// A member's PostgreSQL restarted through its Patroni.
    RestartMember { name: String },
    /// After restarts: no member still waits for one; those whose pending
    /// restart Patroni published late are restarted in a second round.
    ConfirmRestarts {
        by_switchover: bool,
        maximum_lag: Option<u64>,
    },
    /// A replica's data copied again from the leader.
    ReinitMember { name: String },
    /// A cluster's keys deleted from the DCS.
    DeleteClusterKeys { prefix: String, keys: Vec<String> },
    /// A backup of the cluster taken on its leader, which runs on this host.
    Backup {
        cluster: String,
        leader: String,
        stanza: String,
        kind: BackupKind,
    },
}

/// A file change as planned.
#[derive(Clone)]
pub struct FileStep {
    pub change: Change,
    pub line: String,
    pub diff: Value,
}

impl Action {
    pub fn file(change: Change) -> Action {
        Action::File(Box::new(FileStep {
            line: change.summary(),
            diff: change.diff(),
            change,
        }))
    }
}

/// An action shows as its lines (confirmations as their kind).
impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.lines().as_slice() {
            [] => f.write_str(self.confirmation()),
            lines => f.debug_list().entries(lines).finish(),
        }
    }
}

fn describe_target(t: &RecoveryTarget) -> String {
    match t {
        RecoveryTarget::Latest => "replaying every archived WAL segment".into(),
        RecoveryTarget::Immediate => "up to the end of the backup".into(),
        RecoveryTarget::Time(t) => format!("up to {t}"),
    }
}

fn removal_diff(path: &std::path::Path) -> Value {
    json!({
        "before_header": path, "after_header": path,
        "before": {"path": path, "state": "present"},
        "after": {"path": path, "state": "absent"},
    })
}

impl Action {
    /// Its lines of `changes` (check mode's and the real run's); none for
    /// what changes nothing on its own (confirmations).
    pub fn lines(&self) -> Vec<String> {
        match self {
            Action::File(f) => vec![f.line.clone()],
            Action::EnsureStanza { predicted, .. } => {
                predicted.as_ref().map(|a| a.lines()).unwrap_or_default()
            }
            Action::DeleteClusterKeys { keys, .. } => {
                keys.iter().map(|k| format!("delete {k}")).collect()
            }
            Action::Upgrade(UpgradeStep::Old(inner)) => inner.lines(),
            one => one
                .host_line()
                .or_else(|| one.cluster_line())
                .into_iter()
                .collect(),
        }
    }

    /// The line of an action on the instance's host.
    fn host_line(&self) -> Option<String> {
        Some(match self {
            Action::ReloadPatroni {
                node,
                moved: Some(m),
                ..
            } => format!("reload Patroni ({node}; {})", m.describe()),
            Action::ReloadPatroni { node, .. } => format!("reload Patroni ({node})"),
            Action::StartPatroni { node } => format!("start Patroni ({node})"),
            Action::StopPatroni { node } => format!("stop Patroni and PostgreSQL ({node})"),
            Action::StopPostmaster { node } => {
                format!("stop the postmaster left without Patroni ({node})")
            }
            Action::RestartPostgres { node, minor: None } => {
                format!("restart PostgreSQL through Patroni ({node})")
            }
            Action::RestartPostgres {
                node,
                minor: Some((running, installed)),
            } => format!(
                "restart PostgreSQL through Patroni for the version installed ({node}: {running} \
                 runs, {installed} is installed)"
            ),
            Action::RestartPatroni {
                node,
                running,
                installed,
            } => format!(
                "restart Patroni alone for the version installed, PostgreSQL kept running \
                 ({node}: {running} runs, {installed} is installed)"
            ),
            Action::RestoreBackup {
                data_dir,
                set,
                stanza,
                target,
            } => format!(
                "restore {} from backup {} of stanza {stanza}, {}, and promote it",
                data_dir.display(),
                set.as_deref().unwrap_or("(the newest)"),
                describe_target(target)
            ),
            Action::WipeData {
                node,
                data_dir,
                leader,
            } => format!(
                "remove the data of {node} ({}) to copy it again from the leader{}",
                data_dir.display(),
                leader.as_ref().map(|l| format!(" {l}")).unwrap_or_default()
            ),
            Action::RemoveClusterState {
                scope,
                keys,
                prefix,
                keep_config,
                ..
            } => format!(
                "remove cluster {scope}'s state from the DCS ({keys} keys under {prefix}{})",
                if *keep_config {
                    ", its dynamic configuration kept"
                } else {
                    ""
                }
            ),
            Action::Upgrade(step) => step.line(),
            Action::CreateStanza {
                stanza,
                repository,
                archiving,
            } => format!(
                "create pgBackRest stanza {stanza} in {}{}",
                repository.display(),
                if *archiving {
                    " and check WAL archiving"
                } else {
                    " (archiving starts when archive_mode is on, after a restart)"
                }
            ),
            Action::FreshBackup {
                node,
                stanza,
                restored,
            } => format!(
                "take a full backup of stanza {stanza} once {node} leads: the backups after \
                 {restored} belong to the timeline the restore abandons, and replicas are built \
                 from the newest"
            ),
            Action::RemovePath(p) => format!("remove {}", p.display()),
            Action::RemoveEmptyDir(p) => format!("remove empty directory {}", p.display()),
            Action::ForgetMember { node, cluster, key } => {
                format!("remove member {node} from cluster {cluster} in the DCS ({key})")
            }
            _ => return None,
        })
    }

    /// The line of an action on the cluster.
    fn cluster_line(&self) -> Option<String> {
        Some(match self {
            Action::SetPause {
                cluster,
                paused: true,
            } => format!("pause cluster {cluster} (maintenance mode)"),
            Action::SetPause { cluster, .. } => format!("resume cluster {cluster}"),
            Action::PromoteStandbyCluster {
                cluster,
                leader,
                following,
            } => format!(
                "promote standby cluster {cluster}: {leader} leads it as a primary, no longer \
                 following {following}"
            ),
            Action::PatchConfig { patch, .. } => format!(
                "update the dynamic configuration: {}",
                patch
                    .as_object()
                    .map(|m| m.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            ),
            Action::ReloadMember { name } => format!("reload {name}"),
            Action::Switchover {
                from,
                to,
                at: Some(at),
                ..
            } => format!("switchover from {from} to {to} scheduled at {at}"),
            Action::Switchover { from, to, .. } => format!("switchover from {from} to {to}"),
            Action::Failover { to, .. } => format!("failover to {to}"),
            Action::RestartMember { name } => format!("restart {name}"),
            Action::ReinitMember { name } => format!("reinitialise {name} from the leader"),
            Action::Backup {
                cluster,
                leader,
                stanza,
                kind,
            } => format!(
                "take a {} backup of cluster {cluster} on its leader {leader} (stanza {stanza})",
                kind.as_str()
            ),
            _ => return None,
        })
    }

    /// The Ansible diff entry, for what changes files.
    pub fn diff(&self) -> Option<Value> {
        match self {
            Action::File(f) => Some(f.diff.clone()),
            Action::RemovePath(p) | Action::RemoveEmptyDir(p) => Some(removal_diff(p)),
            Action::Upgrade(UpgradeStep::Old(inner)) => inner.diff(),
            Action::PatchConfig { before, after, .. } => Some(json!({
                "before_header": "dynamic configuration",
                "after_header": "dynamic configuration",
                "before": before,
                "after": after,
            })),
            Action::DeleteClusterKeys { prefix, keys } => Some(json!({
                "before_header": prefix, "after_header": prefix,
                "before": keys.join("\n") + "\n",
                "after": "",
            })),
            _ => None,
        }
    }

    /// What the action holds while it runs.
    pub fn lock(&self) -> Lock {
        match self {
            Action::ConfirmHealthy { .. }
            | Action::ConfirmHba { .. }
            | Action::SetPause { .. }
            | Action::PatchConfig { .. }
            | Action::ReloadMember { .. }
            | Action::DeleteClusterKeys { .. }
            | Action::Backup { .. } => Lock::None,
            Action::Switchover { .. }
            | Action::Failover { .. }
            | Action::RestartMember { .. }
            | Action::ConfirmRestarts { .. }
            | Action::ReinitMember { .. }
            | Action::PromoteStandbyCluster { .. } => Lock::Cluster,
            _ => Lock::Instance,
        }
    }

    /// How its outcome is confirmed before the next action starts.
    pub fn confirmation(&self) -> &'static str {
        match self {
            Action::File(_) => "written to a temporary file, synced and renamed into place",
            Action::ReloadPatroni { .. } => {
                "Patroni answers where configured; when PostgreSQL's part changed, PostgreSQL \
                 reloaded, accepts its pg_hba.conf, and Patroni and the DCS report the pending \
                 restart PostgreSQL reports"
            }
            Action::StartPatroni { .. }
            | Action::RestartPostgres { minor: None, .. }
            | Action::ConfirmHealthy { .. } => {
                "the node leads or streams, in its REST API and in the DCS"
            }
            Action::RestartPostgres { minor: Some(_), .. } => {
                "the node leads or streams, in its REST API and in the DCS, and Patroni reports \
                 the installed version running"
            }
            Action::RestartPatroni { .. } => {
                "Patroni answers with the installed version, the node leads or streams in its \
                 REST API and in the DCS, and PostgreSQL's start time is the one before (else a \
                 warning)"
            }
            Action::StopPatroni { .. } | Action::StopPostmaster { .. } => {
                "no Patroni and no postmaster left"
            }
            Action::ConfirmHba { .. } => "pg_hba_file_rules shows no error",
            Action::RestoreBackup { .. } => {
                "the restored PostgreSQL ended its recovery and stopped cleanly"
            }
            Action::WipeData { .. } => "an empty data directory of mode 0700",
            Action::RemoveClusterState { .. } => "the keys are gone from etcd",
            Action::Upgrade(step) => step.confirmation(),
            Action::CreateStanza { .. } | Action::EnsureStanza { .. } => {
                "pgBackRest's check archives a WAL segment into the stanza"
            }
            Action::FreshBackup { .. } => "pgBackRest's backup ends successfully",
            Action::RemoveService | Action::RemovePath(_) | Action::RemoveEmptyDir(_) => {
                "the path is gone"
            }
            Action::ForgetMember { .. } => {
                "neither the DCS nor the other members' REST API list the member"
            }
            Action::SetPause { .. } => "every member reports the cluster paused (or resumed)",
            Action::PatchConfig { .. } => {
                "Patroni's configuration holds what was asked; synchronous standbys chosen or \
                 dropped, as /cluster shows"
            }
            Action::ReloadMember { .. } => "Patroni accepts the reload",
            Action::Switchover { .. } | Action::Failover { .. } => {
                "/cluster shows the new leader running and the former one streaming from it \
                 (in synchronous mode, the new leader's synchronous standbys chosen), and the new \
                 leader's /primary answers 200 (a scheduled switchover: Patroni accepted it)"
            }
            Action::RestartMember { .. } | Action::ReinitMember { .. } => {
                "the member's postmaster started anew, it leads or streams, and /cluster shows \
                 it running"
            }
            Action::ConfirmRestarts { .. } => "/cluster shows no member with a pending restart",
            Action::PromoteStandbyCluster { .. } => {
                "the dynamic configuration holds no standby_cluster, the former standby leader \
                 reports itself a running primary holding the leader key, and /cluster shows it \
                 the leader"
            }
            Action::DeleteClusterKeys { .. } => "etcd holds no key under the prefix",
            Action::Backup { .. } => "pgBackRest's backup ends successfully and its info lists it",
        }
    }
}

/// The `changes` lines of a plan: what check mode reports.
pub fn describe(actions: &[Action]) -> Vec<String> {
    actions.iter().flat_map(Action::lines).collect()
}

/// The diff entries of a plan.
pub fn diff(actions: &[Action]) -> Vec<Value> {
    actions.iter().filter_map(Action::diff).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmations_are_not_changes_and_every_action_says_how_it_is_confirmed() {
        let plan = vec![
            Action::ConfirmHealthy { node: "n".into() },
            Action::ConfirmHba { node: "n".into() },
            Action::RemoveService,
            Action::EnsureStanza {
                node: "n".into(),
                predicted: None,
            },
        ];
        assert!(describe(&plan).is_empty());
        assert!(plan.iter().all(|a| !a.confirmation().is_empty()));
        let predicted = Action::EnsureStanza {
            node: "n".into(),
            predicted: Some(Box::new(Action::CreateStanza {
                stanza: "s".into(),
                repository: "/r".into(),
                archiving: true,
            })),
        };
        assert_eq!(
            predicted.lines(),
            ["create pgBackRest stanza s in /r and check WAL archiving"]
        );
        assert_eq!(Action::ConfirmHba { node: "n".into() }.lock(), Lock::None);
    }
}
