//! A standby cluster in a `patroni` task: its promotion (the
//! disaster-recovery failover) planned, and the moves of leadership that
//! confirm a primary refused inside it.

use super::*;
use crate::action::Action;
use crate::cluster::planner::Here;

/// A standby cluster's promotion: refused while the primary it follows
/// answers, or when that cannot be asked (it follows a repository only),
/// unless forced; nothing for a cluster that is no standby cluster (any
/// more).
pub(super) fn plan_promotion(
    info: &ClusterInfo,
    here: &Here,
    force: bool,
) -> Result<Option<Action>> {
    let Some(standby) = info.standby() else {
        return Ok(None);
    };
    let following = standby.describe();
    if !force {
        if !here.standby_primary_answering.is_empty() {
            return Err(Error::Other(format!(
                "cluster {} follows the primary at {following}, and {} answers: promoting it now \
                 makes two primaries. Stop the primary cluster (or cut it off from its clients) \
                 first, or set force: true",
                info.name,
                here.standby_primary_answering.join(", ")
            )));
        }
        if standby.hosts.is_empty() {
            return Err(Error::Other(format!(
                "cluster {} follows WAL from a repository only ({following}): whether its \
                 primary still runs cannot be asked. Make sure it does not, then set force: true",
                info.name
            )));
        }
    }
    let leader = info.running_standby_leader().ok_or_else(|| {
        Error::Other(format!(
            "standby cluster {} has no running standby leader to promote",
            info.name
        ))
    })?;
    Ok(Some(Action::PromoteStandbyCluster {
        cluster: info.name.clone(),
        leader: leader.name.clone(),
        following,
    }))
}

/// Who leads a standby cluster is its standby leader, whose health and
/// writes are not a primary's: the switchover and failover here confirm a
/// primary, and are refused there.
pub(super) fn refuse_in_a_standby_cluster(info: &ClusterInfo, what: &str) -> Result<()> {
    match info.standby() {
        Some(s) => Err(Error::Other(format!(
            "{what} refused: cluster {} is a standby cluster (it follows {}); this module \
             moves the leadership of primary clusters only (patronictl switches over inside a \
             standby cluster; promote: true makes it a primary cluster)",
            info.name,
            s.describe()
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::describe;
    use crate::cluster::decide::tests::member;
    use crate::cluster::planner::plan;
    use crate::cluster::planner::tests::healthy;

    /// What is asked of which cluster, from what was seen here, forced or
    /// not: the lines planned, or a part of the refusal.
    type PromotionRow<'a> = (
        &'a str,
        &'a ClusterInfo,
        &'a Here,
        bool,
        std::result::Result<Vec<&'a str>, &'a str>,
    );

    #[test]
    fn a_standby_cluster_is_promoted_only_when_its_primary_is_gone_or_by_force() {
        let standby = ClusterInfo {
            name: "dr".into(),
            leader: Some("a".into()),
            members: vec![
                member("a", "standby_leader", "streaming", None),
                member("b", "replica", "streaming", Some(0)),
            ],
            config: json!({"standby_cluster": {"host": "10.0.0.1,10.0.0.2", "port": 5432}}),
            ..ClusterInfo::default()
        };
        let from_repository = ClusterInfo {
            config: json!({"standby_cluster": {"restore_command": "fetch %f %p"}}),
            ..standby.clone()
        };
        let mut no_standby_leader = standby.clone();
        no_standby_leader.members[0].state = "stopped".into();
        let answering = Here {
            standby_primary_answering: vec!["10.0.0.2:5432".into()],
            ..Here::default()
        };
        let promoted = "promote standby cluster dr: a leads it as a primary, no longer following \
             10.0.0.1:5432,10.0.0.2:5432";
        let table: &[PromotionRow] = &[
            (
                "primary gone",
                &standby,
                &Here::default(),
                false,
                Ok(vec![promoted]),
            ),
            (
                "primary answers",
                &standby,
                &answering,
                false,
                Err("10.0.0.2:5432 answers"),
            ),
            (
                "primary answers, forced",
                &standby,
                &answering,
                true,
                Ok(vec![promoted]),
            ),
            (
                "repository only",
                &from_repository,
                &Here::default(),
                false,
                Err("cannot be asked"),
            ),
            (
                "no standby leader",
                &no_standby_leader,
                &Here::default(),
                false,
                Err("no running standby leader"),
            ),
            (
                "a primary cluster",
                &healthy(),
                &Here::default(),
                false,
                Ok(vec![]),
            ),
        ];
        let switchover = Operations {
            leader: Some("b".into()),
            ..Operations::default()
        };
        assert!(
            plan(&standby, &Here::default(), &switchover).is_err_and(|e| e
                .to_string()
                .contains("dr is a standby cluster (it follows 10.0.0.1:5432"))
        );
        for (what, info, here, force, expected) in table {
            let ops = Operations {
                promote: true,
                force: *force,
                ..Operations::default()
            };
            let got = plan(info, here, &ops)
                .map(|p| describe(&p))
                .map_err(|e| e.to_string());
            match expected {
                Ok(lines) => assert_eq!(
                    got,
                    Ok(lines.iter().map(|l| l.to_string()).collect()),
                    "{what}"
                ),
                Err(part) => assert!(
                    got.as_ref().is_err_and(|e| e.contains(part)),
                    "{what}: {got:?}"
                ),
            }
        }
    }
}
