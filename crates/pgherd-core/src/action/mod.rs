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

mod describe;
mod execute;
mod upgrade;

pub use describe::{describe, diff};
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
    /// A backup of the cluster taken on this host: its leader's, or the
    /// repository host (`repository_host`), which backs up the leader
    /// through the member's pgBackRest server.
    Backup {
        cluster: String,
        leader: String,
        stanza: String,
        kind: BackupKind,
        repository_host: Option<String>,
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
