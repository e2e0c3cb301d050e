//! What an action says of itself: its `changes` lines and diff entries
//! (check mode's words, and the real run's), the lock it holds, and how its
//! outcome is confirmed.

use super::*;

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
                .service_line()
                .or_else(|| one.data_line())
                .or_else(|| one.cluster_line())
                .into_iter()
                .collect(),
        }
    }

    /// The line of an action on the instance's running programs.
    fn service_line(&self) -> Option<String> {
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
            _ => return None,
        })
    }

    /// The line of an action on the instance's data, files or state.
    fn data_line(&self) -> Option<String> {
        Some(match self {
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
                repository_host: None,
            } => format!(
                "take a {} backup of cluster {cluster} on its leader {leader} (stanza {stanza})",
                kind.as_str()
            ),
            Action::Backup {
                cluster,
                leader,
                stanza,
                kind,
                repository_host: Some(host),
            } => format!(
                "take a {} backup of cluster {cluster} on the repository host {host}, from \
                 its leader {leader} (stanza {stanza})",
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
