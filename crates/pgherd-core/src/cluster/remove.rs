//! Removing a cluster's state from the DCS, once no member is live and under its system identifier.

use super::*;
use crate::action::{carry_out, diff, Action};
use execute::ClusterRun;

/// The members in `keys` that are live. A stopped Patroni leaves its
/// member key until the ttl expires: a member is live when its REST API
/// answers, or when it cannot be told.
pub fn live_members(settings: &Settings, keys: &ClusterKeys, auth: Option<&Login>) -> Vec<String> {
    let addresses: BTreeMap<String, String> = keys.member_api_addresses().into_iter().collect();
    keys.members
        .keys()
        .filter(|name| match addresses.get(*name) {
            None => true,
            Some(address) => RestClient::new(
                Endpoint::for_address(settings, address, auth.cloned()),
                REQUEST_TIMEOUT,
            )
            .is_ok_and(|c| c.patroni().is_ok()),
        })
        .cloned()
        .collect()
}

/// The removal of a cluster's keys from the DCS, decided from what was
/// read: `live`, its members whose REST API answers; `given_answers`, the
/// REST API the task names answers. Refused while a member lives, and
/// without the matching system identifier as a guard.
pub fn plan_removal(
    scope: &str,
    keys: &ClusterKeys,
    live: &[String],
    given: Option<(&str, bool)>,
    system_identifier: Option<&str>,
    keep_config: bool,
) -> Result<Vec<Action>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    if !live.is_empty() {
        return Err(Error::Other(format!(
            "cluster {scope} still has live members ({}): stop them (instance state: stopped or \
             absent) before removing the cluster",
            live.join(", ")
        )));
    }
    if let Some((api, true)) = given {
        return Err(Error::Other(format!(
            "the REST API at {api} still answers: stop that member before removing the cluster"
        )));
    }
    match (system_identifier, &keys.initialize) {
        (None, Some(found)) => {
            return Err(Error::Other(format!(
                "removing cluster {scope} from the DCS needs its system identifier as a guard: \
                 give system_identifier: \"{found}\""
            )))
        }
        (Some(given), Some(found)) if given != found => {
            return Err(Error::Other(format!(
                "system_identifier {given} does not match cluster {scope}'s ({found}): nothing \
                 removed"
            )))
        }
        (Some(given), None) => {
            return Err(Error::Other(format!(
                "cluster {scope} has no initialize key to check system_identifier {given} \
                 against: nothing removed"
            )))
        }
        _ => {}
    }
    let config = format!("{}config", keys.prefix);
    let deleted: Vec<String> = keys
        .all_keys
        .iter()
        .filter(|k| !(keep_config && **k == config))
        .cloned()
        .collect();
    if deleted.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![Action::DeleteClusterKeys {
        prefix: keys.prefix.clone(),
        keys: deleted,
    }])
}

pub(super) fn remove(target: &Target, ops: &Operations, check_mode: bool) -> Result<Report> {
    let keys = connect_dcs(target)?
        .read_cluster(&target.settings.patroni.etcd.namespace, &target.scope)?;
    let live = if keys.is_empty() {
        Vec::new()
    } else {
        live_members(&target.settings, &keys, target.restapi_auth.as_ref())
    };
    let given = match &target.restapi {
        Some(api) if !keys.is_empty() && live.is_empty() => {
            let client = RestClient::new(
                Endpoint::for_address(&target.settings, api, target.restapi_auth.clone()),
                REQUEST_TIMEOUT,
            )?;
            Some((api.as_str(), client.patroni().is_ok()))
        }
        _ => None,
    };
    let actions = plan_removal(
        &target.scope,
        &keys,
        &live,
        given,
        ops.system_identifier.as_deref(),
        ops.keep_config,
    )?;
    let mut run = ClusterRun {
        target,
        conn: None,
        warnings: Vec::new(),
        backup: None,
        acted: false,
    };
    let changes = carry_out(&actions, check_mode, &mut run)?;
    Ok(Report {
        changes,
        diff: diff(&actions),
        warnings: run.warnings,
        info: ClusterInfo {
            name: target.scope.clone(),
            system_identifier: keys.initialize.clone(),
            ..ClusterInfo::default()
        },
        ..Report::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys, live members, the given REST API (answers?), the system
    /// identifier given, and the lines planned (or a part of the refusal).
    type Row<'a> = (
        &'a ClusterKeys,
        &'a [String],
        Option<(&'a str, bool)>,
        Option<&'a str>,
        std::result::Result<usize, &'a str>,
    );

    #[test]
    fn the_removal_decision_table() {
        let empty = ClusterKeys {
            prefix: "/service/main/".into(),
            ..ClusterKeys::default()
        };
        let held = ClusterKeys {
            initialize: Some("7714".into()),
            all_keys: vec![
                "/service/main/config".into(),
                "/service/main/initialize".into(),
            ],
            ..empty.clone()
        };
        let uninitialized = ClusterKeys {
            all_keys: vec!["/service/main/config".into()],
            ..empty.clone()
        };
        let live = vec!["pg1".to_string()];
        let table: Vec<Row> = vec![
            (&empty, &[], None, None, Ok(0)),
            (&held, &[], None, Some("7714"), Ok(2)),
            (
                &held,
                &live,
                None,
                Some("7714"),
                Err("still has live members (pg1)"),
            ),
            (
                &held,
                &[],
                Some(("h:8008", true)),
                Some("7714"),
                Err("still answers"),
            ),
            (&held, &[], Some(("h:8008", false)), Some("7714"), Ok(2)),
            (
                &held,
                &[],
                None,
                None,
                Err("give system_identifier: \"7714\""),
            ),
            (&held, &[], None, Some("1"), Err("does not match")),
            (
                &uninitialized,
                &[],
                None,
                Some("1"),
                Err("no initialize key"),
            ),
            (&uninitialized, &[], None, None, Ok(1)),
        ];
        for (keys, live, given, sysid, want) in table {
            let got = plan_removal("main", keys, live, given, sysid, false)
                .map(|a| crate::action::describe(&a).len())
                .map_err(|e| e.to_string());
            match (&got, &want) {
                (Ok(n), Ok(w)) => assert_eq!(n, w),
                (Err(e), Err(part)) => assert!(e.contains(part), "{e}"),
                _ => panic!("got {got:?}, want {want:?}"),
            }
        }
    }
}
