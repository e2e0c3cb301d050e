//! The upgrade options: `upgrade`, a major upgrade from the instance of
//! an older major on the host, checked against the instance's version;
//! `restart_outdated`, the programs a minor upgrade restarts.

use pgherd_core::manifest::MajorUpgrade;
use pgherd_core::names::{Name, PgVersion};
use pgherd_core::versions::Program;
use serde::Deserialize;

use super::InstanceOptions;

#[derive(Debug, Clone, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct UpgradeOptions {
    pub from: Option<String>,
    pub leader: Option<String>,
}

/// The major upgrade asked for, checked against the instance's version.
pub(super) fn major_upgrade(
    opts: &InstanceOptions,
    version: Option<&PgVersion>,
    problems: &mut Vec<String>,
) -> Option<MajorUpgrade> {
    let u = opts.upgrade.as_ref()?;
    let from = match u.from.as_deref().map(PgVersion::parse) {
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            problems.push(format!("upgrade.from: {e}"));
            None
        }
        None => {
            problems.push("upgrade.from is required: the major the instance runs now".into());
            None
        }
    };
    let leader = match u
        .leader
        .as_deref()
        .map(|l| Name::parse("upgrade.leader", l))
    {
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            problems.push(e);
            None
        }
        None => {
            problems.push("upgrade.leader is required: the member upgraded in place".into());
            None
        }
    };
    if let (Some(from), Some(to)) = (&from, version) {
        let (f, t): (u32, u32) = (
            from.as_str().parse().unwrap_or(0),
            to.as_str().parse().unwrap_or(0),
        );
        if f >= t {
            problems.push(format!(
                "upgrade.from ({from}) must be an older major than version ({to})"
            ));
        }
    }
    if opts.restore.is_some() {
        problems.push("upgrade and restore are two operations: give one of them".into());
    }
    Some(MajorUpgrade {
        from: from?,
        leader: leader?,
    })
}

/// The programs `restart_outdated` names (the spec allows only known
/// ones), each once, Patroni first.
pub(super) fn restart_outdated(opts: &InstanceOptions, problems: &mut Vec<String>) -> Vec<Program> {
    let mut out: Vec<Program> = Vec::new();
    for name in opts.restart_outdated.iter().flatten() {
        match Program::parse(name) {
            Some(p) => out.push(p),
            None => problems.push(format!(
                "restart_outdated: {name:?} is neither patroni nor postgresql"
            )),
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::{opts, problems};
    use super::super::*;
    use serde_json::json;

    #[test]
    fn an_upgrade_goes_to_a_newer_major_alone() {
        let table: &[(Value, &[&str])] = &[
            (
                json!({"name": "m", "version": "17", "upgrade": {"from": "15", "leader": "pg1"}}),
                &[],
            ),
            (
                json!({"name": "m", "version": "15", "upgrade": {"from": "15", "leader": "pg1"}}),
                &["upgrade.from (15) must be an older major than version (15)"],
            ),
            (
                json!({"name": "m", "version": "17", "upgrade": {"from": "sixteen", "leader": "pg1"}}),
                &["upgrade.from: PostgreSQL version must be a major version"],
            ),
            (
                json!({"name": "m", "version": "17", "upgrade": {"leader": "pg 1"}}),
                &["upgrade.from is required", "upgrade.leader"],
            ),
            (
                json!({"name": "m", "version": "17", "upgrade": {"from": "15", "leader": "pg1"},
                       "restore": {"from": "leader"}}),
                &["upgrade and restore are two operations"],
            ),
        ];
        for (options, want) in table {
            let got = problems(options.clone());
            assert_eq!(got.len(), want.len(), "{options}: {got:?}");
            for w in *want {
                assert!(
                    got.iter().any(|p| p.contains(w)),
                    "{options}: {got:?} lacks {w}"
                );
            }
        }
        let m = manifest(
            &opts(
                json!({"name": "m", "version": "17", "upgrade": {"from": "15", "leader": "pg1"}}),
            ),
            &Settings::default(),
        )
        .unwrap();
        let old = m.before_upgrade().unwrap();
        assert_eq!(
            (old.qualified_name(), old.upgrade),
            ("15-m".to_string(), None)
        );
    }
}
