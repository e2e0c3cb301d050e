//! The plan of an instance's run, decided from what was observed: no I/O,
//! so that the decisions are a table, tested as one.

use crate::action::{Action, ApiMove};
use crate::plan::Change;
use crate::rest::NodeStatus;

use super::DesiredState;

/// What a run found on the host, and what the observations that read
/// further (the restore's checks, the stanza) decided.
#[derive(Debug, Clone, Default)]
pub(super) struct Observed {
    /// The instance as messages name it: `15-main (pg1)`.
    pub node: String,
    /// Patroni runs.
    pub running: bool,
    /// A PostgreSQL runs on the data directory without Patroni.
    pub orphan_postmaster: bool,
    /// The files and directories to bring to what they should be.
    pub files: Vec<Change>,
    /// Patroni's configuration file changes; `Some(true)` when PostgreSQL's
    /// part of it does.
    pub config_change: Option<bool>,
    /// What the running Patroni answered at the configured address.
    pub status: Option<NodeStatus>,
    /// The running Patroni answers elsewhere than configured.
    pub moved: Option<ApiMove>,
    /// The task names pg_hba lines of the user's.
    pub custom_hba: bool,
    /// A restore's steps up to the start, checked (state: started).
    pub restore: Option<Vec<Action>>,
    /// After a restore: the full backup once the node leads.
    pub fresh_backup: Option<Action>,
    /// The stanza's creation foreseen (check mode), if any.
    pub stanza: Option<Action>,
    /// A major upgrade's steps, checked (state: started).
    pub upgrade: Option<super::upgrade::UpgradeSteps>,
    /// The restarts of a minor upgrade (`restart_outdated`), checked.
    pub minor: super::outdated::MinorRestarts,
}

/// The actions that bring the instance from `o` to `state` (not absent,
/// which removes: see `remove`).
pub(super) fn plan(o: &Observed, state: DesiredState) -> Vec<Action> {
    let node = || o.node.clone();
    let mut out: Vec<Action> = o.files.iter().cloned().map(Action::file).collect();
    let keeps_running = matches!(
        state,
        DesiredState::Present | DesiredState::Started | DesiredState::Restarted
    );
    let reload = o.running
        && keeps_running
        && o.restore.is_none()
        && (o.config_change.is_some() || o.moved.is_some());
    if reload {
        out.push(Action::ReloadPatroni {
            node: node(),
            moved: o.moved.clone(),
            postgres_affected: o.config_change == Some(true),
        });
    }
    if let Some((running, installed)) = &o.minor.patroni {
        out.push(Action::RestartPatroni {
            node: node(),
            running: running.clone(),
            installed: installed.clone(),
        });
    }
    if state != DesiredState::Restarted && o.minor.postgres.is_some() {
        out.push(Action::RestartPostgres {
            node: node(),
            minor: o.minor.postgres.clone(),
        });
    }
    let runs_after = match (state, &o.restore) {
        (DesiredState::Started, _) if o.upgrade.is_some() && !o.running => {
            out.extend(o.upgrade.iter().flat_map(|u| u.before.iter().cloned()));
            out.push(Action::StartPatroni { node: node() });
            true
        }
        (DesiredState::Started, Some(steps)) => {
            out.extend(steps.iter().cloned());
            out.push(Action::StartPatroni { node: node() });
            true
        }
        (DesiredState::Present, _) => o.running,
        (DesiredState::Started, None) if o.running => {
            out.push(Action::ConfirmHealthy { node: node() });
            true
        }
        (DesiredState::Restarted, _) if o.running => {
            out.push(Action::RestartPostgres {
                node: node(),
                minor: o.minor.postgres.clone(),
            });
            true
        }
        (DesiredState::Started | DesiredState::Restarted, _) => {
            out.push(Action::StartPatroni { node: node() });
            true
        }
        (DesiredState::Stopped, _) => {
            if o.running {
                out.push(Action::StopPatroni { node: node() });
            } else if o.orphan_postmaster {
                out.push(Action::StopPostmaster { node: node() });
            }
            false
        }
        (DesiredState::Absent, _) => unreachable!("absent is planned by remove"),
    };
    if !runs_after {
        return out;
    }
    // A reload that reached PostgreSQL checked pg_hba.conf; otherwise,
    // lines of the user's that PostgreSQL rejected earlier still count.
    let reload_checked_hba = reload && o.config_change == Some(true);
    if o.custom_hba && !reload_checked_hba {
        out.push(Action::ConfirmHba { node: node() });
    }
    out.push(Action::EnsureStanza {
        node: node(),
        predicted: o.stanza.clone().map(Box::new),
    });
    out.extend(o.fresh_backup.clone());
    out.extend(o.upgrade.iter().flat_map(|u| u.after.iter().cloned()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::describe;
    use crate::manifest::RecoveryTarget;
    use DesiredState::*;

    fn file() -> Change {
        Change::RemoveLeftover {
            path: "/etc/x.yml.tmp".into(),
        }
    }

    /// The planned actions, each as a short word, for the table.
    fn words(actions: &[Action]) -> Vec<&'static str> {
        actions
            .iter()
            .map(|a| match a {
                Action::File(_) => "file",
                Action::ReloadPatroni {
                    postgres_affected: true,
                    ..
                } => "reload+pg",
                Action::ReloadPatroni { moved: Some(_), .. } => "reload+move",
                Action::ReloadPatroni { .. } => "reload",
                Action::StartPatroni { .. } => "start",
                Action::StopPatroni { .. } => "stop",
                Action::StopPostmaster { .. } => "stop-orphan",
                Action::RestartPostgres { .. } => "restart",
                Action::RestartPatroni { .. } => "restart-patroni",
                Action::ConfirmHealthy { .. } => "healthy?",
                Action::ConfirmHba { .. } => "hba?",
                Action::EnsureStanza { .. } => "stanza?",
                Action::RestoreBackup { .. } => "restore",
                Action::FreshBackup { .. } => "backup",
                Action::Upgrade(_) => "upgrade",
                Action::RemoveClusterState { .. } => "dcs",
                _ => "other",
            })
            .collect()
    }

    #[derive(Clone, Copy)]
    enum Seen {
        Down,
        DownOrphan,
        Running,
        RunningNewConfig,
        RunningNewPgConfig,
        RunningMoved,
        RunningNewFilesOnly,
    }

    fn observed(seen: Seen) -> Observed {
        let mut o = Observed {
            node: "15-main (pg1)".into(),
            ..Observed::default()
        };
        match seen {
            Seen::Down => {}
            Seen::DownOrphan => o.orphan_postmaster = true,
            Seen::Running => o.running = true,
            Seen::RunningNewConfig => {
                o.running = true;
                o.files = vec![file()];
                o.config_change = Some(false);
            }
            Seen::RunningNewPgConfig => {
                o.running = true;
                o.files = vec![file()];
                o.config_change = Some(true);
            }
            Seen::RunningMoved => {
                o.running = true;
                o.moved = Some(ApiMove {
                    from: "10.0.0.1:8008".into(),
                    to: "10.0.0.1:8009".into(),
                });
            }
            Seen::RunningNewFilesOnly => {
                o.running = true;
                o.files = vec![file()];
            }
        }
        o
    }

    #[test]
    fn the_states_decision_table() {
        use Seen::*;
        let table: &[(Seen, DesiredState, &[&str])] = &[
            (Down, Present, &[]),
            (Down, Started, &["start", "stanza?"]),
            (Down, Restarted, &["start", "stanza?"]),
            (Down, Stopped, &[]),
            (DownOrphan, Stopped, &["stop-orphan"]),
            (DownOrphan, Started, &["start", "stanza?"]),
            (Running, Present, &["stanza?"]),
            (Running, Started, &["healthy?", "stanza?"]),
            (Running, Restarted, &["restart", "stanza?"]),
            (Running, Stopped, &["stop"]),
            (RunningNewConfig, Present, &["file", "reload", "stanza?"]),
            (
                RunningNewConfig,
                Started,
                &["file", "reload", "healthy?", "stanza?"],
            ),
            (
                RunningNewPgConfig,
                Restarted,
                &["file", "reload+pg", "restart", "stanza?"],
            ),
            // Stopping needs no reload of what it stops.
            (RunningNewPgConfig, Stopped, &["file", "stop"]),
            (
                RunningMoved,
                Started,
                &["reload+move", "healthy?", "stanza?"],
            ),
            // Other files (a password file) need no reload.
            (
                RunningNewFilesOnly,
                Started,
                &["file", "healthy?", "stanza?"],
            ),
        ];
        for (seen, state, want) in table {
            let got = plan(&observed(*seen), *state);
            assert_eq!(words(&got), *want, "{:?} from {:?}", state, observed(*seen));
        }
    }

    #[test]
    fn user_hba_lines_are_confirmed_unless_a_reload_checked_them() {
        let table: &[(Seen, DesiredState, bool)] = &[
            (Seen::Running, Started, true),
            (Seen::RunningNewConfig, Started, true),
            (Seen::RunningNewPgConfig, Started, false),
            (Seen::Down, Started, true),
            (Seen::Down, Present, false),
            (Seen::Running, Stopped, false),
        ];
        for (seen, state, confirmed) in table {
            let mut o = observed(*seen);
            o.custom_hba = true;
            let got = words(&plan(&o, *state));
            assert_eq!(got.contains(&"hba?"), *confirmed, "{state:?}: {got:?}");
        }
    }

    #[test]
    fn a_restore_stops_restores_starts_and_backs_up_in_that_order() {
        let restore = Action::RestoreBackup {
            data_dir: "/d".into(),
            set: Some("20261203-101010F".into()),
            stanza: "s".into(),
            target: RecoveryTarget::Immediate,
        };
        let mut o = observed(Seen::RunningNewPgConfig);
        o.restore = Some(vec![
            Action::StopPatroni {
                node: o.node.clone(),
            },
            restore,
        ]);
        o.fresh_backup = Some(Action::FreshBackup {
            node: o.node.clone(),
            stanza: "s".into(),
            restored: "20261203-101010F".into(),
        });
        let got = plan(&o, Started);
        // No reload: the node restarts with the new files.
        assert_eq!(
            words(&got),
            ["file", "stop", "restore", "start", "stanza?", "backup"]
        );
        assert_eq!(
            describe(&got)[1..4],
            [
                "stop Patroni and PostgreSQL (15-main (pg1))",
                "restore /d from backup 20261203-101010F of stanza s, up to the end of the \
                 backup, and promote it",
                "start Patroni (15-main (pg1))"
            ]
        );
    }

    #[test]
    fn an_upgrade_runs_its_steps_then_starts_then_finishes() {
        use crate::action::UpgradeStep;
        let step = |node: &str| {
            Action::Upgrade(UpgradeStep::Analyze {
                node: node.to_string(),
            })
        };
        let steps = super::super::upgrade::UpgradeSteps {
            before: vec![
                Action::Upgrade(UpgradeStep::StopOld { node: "15".into() }),
                Action::RemoveClusterState {
                    scope: "main".into(),
                    keys: 4,
                    prefix: "/service/main/".into(),
                    initialize: Some("1".into()),
                    keep_config: true,
                },
            ],
            after: vec![step("17")],
            ..Default::default()
        };
        let mut o = observed(Seen::Down);
        o.files = vec![file()];
        o.upgrade = Some(steps.clone());
        assert_eq!(
            words(&plan(&o, Started)),
            ["file", "upgrade", "dcs", "start", "stanza?", "upgrade"]
        );
        // Running on the new major already: only what is left after.
        let mut o = observed(Seen::Running);
        o.upgrade = Some(super::super::upgrade::UpgradeSteps {
            before: Vec::new(),
            ..steps
        });
        assert_eq!(
            words(&plan(&o, Started)),
            ["healthy?", "stanza?", "upgrade"]
        );
    }

    #[test]
    fn a_minor_upgrade_restarts_patroni_then_postgres_once_after_the_reload() {
        let mut o = observed(Seen::RunningNewPgConfig);
        o.minor = super::super::outdated::MinorRestarts {
            patroni: Some(("4.0.11".into(), "4.1.5".into())),
            postgres: Some(("15.18".into(), "15.20".into())),
        };
        let table: &[(DesiredState, &[&str])] = &[
            (
                Started,
                &[
                    "file",
                    "reload+pg",
                    "restart-patroni",
                    "restart",
                    "healthy?",
                    "stanza?",
                ],
            ),
            (
                Present,
                &["file", "reload+pg", "restart-patroni", "restart", "stanza?"],
            ),
            // The restart asked for is the minor upgrade's: one restart.
            (
                Restarted,
                &["file", "reload+pg", "restart-patroni", "restart", "stanza?"],
            ),
        ];
        for (state, want) in table {
            assert_eq!(words(&plan(&o, *state)), *want, "{state:?}");
        }
        assert_eq!(
            describe(&plan(&o, Restarted))[2..],
            [
                "restart Patroni alone for the version installed, PostgreSQL kept running \
                 (15-main (pg1): 4.0.11 runs, 4.1.5 is installed)",
                "restart PostgreSQL through Patroni for the version installed (15-main (pg1): \
                 15.18 runs, 15.20 is installed)"
            ]
        );
    }

    #[test]
    fn check_mode_lines_name_the_node_and_the_move() {
        let mut o = observed(Seen::RunningMoved);
        o.stanza = Some(Action::CreateStanza {
            stanza: "main".into(),
            repository: "/repo".into(),
            archiving: false,
        });
        assert_eq!(
            describe(&plan(&o, Restarted)),
            [
                "reload Patroni (15-main (pg1); its REST API moves from 10.0.0.1:8008 to \
                 10.0.0.1:8009)",
                "restart PostgreSQL through Patroni (15-main (pg1))",
                "create pgBackRest stanza main in /repo (archiving starts when archive_mode is \
                 on, after a restart)"
            ]
        );
    }
}
