//! The `pgbackrest` and `restore` options: the stanza an instance archives
//! to, and the restore a run does, checked together.

use pgherd_core::manifest::{RecoveryTarget, RestoreSource};
use pgherd_core::names::Name;
use serde::Deserialize;

use super::InstanceOptions;

#[derive(Debug, Clone, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct PgBackRestOptions {
    pub stanza: Option<String>,
    /// The stanza's repository may change to the settings' path.
    pub new_repository: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct RestoreOptions {
    pub from: Option<String>,
    pub set: Option<String>,
    pub target: Option<String>,
}

/// Parses and checks the `restore` option.
pub fn restore_source(o: &RestoreOptions) -> std::result::Result<RestoreSource, Vec<String>> {
    let mut problems = Vec::new();
    let source = match o.from.as_deref() {
        Some("backup") => {
            if let Some(set) = &o.set {
                if set.is_empty()
                    || !set.chars().all(|c| {
                        c.is_ascii_digit() || c.is_ascii_uppercase() || c == '-' || c == '_'
                    })
                {
                    problems.push(format!(
                        "restore.set {set:?} is not a pgBackRest backup label \
                         (like 20261201-214644F)"
                    ));
                }
            }
            let target = match o.target.as_deref() {
                None | Some("latest") => RecoveryTarget::Latest,
                Some("immediate") => RecoveryTarget::Immediate,
                Some(t) => match pgherd_core::names::check_timestamp_with_offset(t) {
                    Ok(()) => RecoveryTarget::Time(t.to_string()),
                    Err(e) => {
                        problems.push(format!(
                            "restore.target must be latest, immediate or a time: {e}"
                        ));
                        RecoveryTarget::Latest
                    }
                },
            };
            RestoreSource::Backup {
                set: o.set.clone(),
                target,
            }
        }
        Some("leader") => {
            for (key, given) in [("set", o.set.is_some()), ("target", o.target.is_some())] {
                if given {
                    problems.push(format!(
                        "restore.{key} goes with restore.from: backup; a node restored from \
                         the leader copies it as it is"
                    ));
                }
            }
            RestoreSource::Leader
        }
        Some(other) => {
            problems.push(format!(
                "restore.from must be backup or leader, got {other:?}"
            ));
            RestoreSource::Leader
        }
        None => {
            problems.push("restore.from is required: backup or leader".into());
            RestoreSource::Leader
        }
    };
    if problems.is_empty() {
        Ok(source)
    } else {
        Err(problems)
    }
}

/// The pgBackRest stanza, and the restore asked for, checked together.
pub(super) fn backup_and_restore(
    opts: &InstanceOptions,
    problems: &mut Vec<String>,
) -> (Option<Name>, Option<RestoreSource>) {
    let pgbackrest_stanza = opts
        .pgbackrest
        .as_ref()
        .and_then(|b| match b.stanza.as_deref() {
            Some(stanza) => match Name::parse("pgbackrest.stanza", stanza) {
                Ok(n) => Some(n),
                Err(e) => {
                    problems.push(e);
                    None
                }
            },
            None => {
                problems.push("pgbackrest.stanza is required".into());
                None
            }
        });
    let restore = opts.restore.as_ref().and_then(|r| match restore_source(r) {
        Ok(source) => Some(source),
        Err(p) => {
            problems.extend(p);
            None
        }
    });
    let from_backup = opts.restore.as_ref().and_then(|r| r.from.as_deref()) == Some("backup");
    if from_backup && opts.pgbackrest.is_none() {
        problems.push(
            "restore.from: backup needs the pgbackrest option (the stanza to restore from)".into(),
        );
    }
    (pgbackrest_stanza, restore)
}

#[cfg(test)]
mod tests {
    use super::super::manifest;
    use super::super::tests::{opts, problems};
    use super::{RecoveryTarget, RestoreSource};
    use pgherd_core::settings::Settings;
    use serde_json::json;

    #[test]
    fn restore_options_are_checked_together() {
        let p =
            problems(json!({"name": "m", "restore": {"from": "backup", "target": "yesterday"}}));
        let text = p.join("\n");
        assert!(
            text.contains("restore.target must be latest, immediate or a time"),
            "{text}"
        );
        assert!(text.contains("needs the pgbackrest option"), "{text}");
        let p = problems(
            json!({"name": "m", "restore": {"from": "leader", "set": "20261201-214644F"}}),
        );
        assert_eq!(
            p,
            vec![
                "restore.set goes with restore.from: backup; a node restored from the leader \
                  copies it as it is"
            ]
        );
        let p = problems(json!({"name": "m", "pgbackrest": {}, "restore": {}}));
        assert_eq!(
            p,
            vec![
                "pgbackrest.stanza is required",
                "restore.from is required: backup or leader"
            ]
        );
        let m = manifest(
            &opts(json!({"name": "m", "pgbackrest": {"stanza": "main"},
                "restore": {"from": "backup", "set": "20261201-214644F",
                            "target": "2026-12-01T22:00:00+00:00"}})),
            &Settings::default(),
        )
        .unwrap();
        assert_eq!(
            m.restore,
            Some(RestoreSource::Backup {
                set: Some("20261201-214644F".into()),
                target: RecoveryTarget::Time("2026-12-01T22:00:00+00:00".into())
            })
        );
    }
}
