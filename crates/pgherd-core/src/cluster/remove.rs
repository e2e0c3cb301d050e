//! Removing a cluster's state from the DCS, once no member is live and under its system identifier.

use super::*;

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

pub(super) fn remove(target: &Target, ops: &Operations, check_mode: bool) -> Result<Report> {
    let mut dcs = connect_dcs(target)?;
    let keys = dcs.read_cluster(&target.settings.patroni.etcd.namespace, &target.scope)?;
    let mut report = Report {
        info: ClusterInfo {
            name: target.scope.clone(),
            system_identifier: keys.initialize.clone(),
            ..ClusterInfo::default()
        },
        ..Report::default()
    };
    if keys.is_empty() {
        return Ok(report);
    }
    let live = live_members(&target.settings, &keys, target.restapi_auth.as_ref());
    if !live.is_empty() {
        return Err(Error::Other(format!(
            "cluster {} still has live members ({}): stop them (instance state: stopped or \
             absent) before removing the cluster",
            target.scope,
            live.join(", ")
        )));
    }
    if let Some(api) = &target.restapi {
        let client = RestClient::new(
            Endpoint::for_address(&target.settings, api, target.restapi_auth.clone()),
            REQUEST_TIMEOUT,
        )?;
        if client.patroni().is_ok() {
            return Err(Error::Other(format!(
                "the REST API at {api} still answers: stop that member before removing the cluster"
            )));
        }
    }
    match (&ops.system_identifier, &keys.initialize) {
        (None, Some(found)) => {
            return Err(Error::Other(format!(
                "removing cluster {} from the DCS needs its system identifier as a guard: give \
                 system_identifier: \"{found}\"",
                target.scope
            )))
        }
        (Some(given), Some(found)) if given != found => {
            return Err(Error::Other(format!(
                "system_identifier {given} does not match cluster {}'s ({found}): nothing removed",
                target.scope
            )))
        }
        (Some(given), None) => {
            return Err(Error::Other(format!(
                "cluster {} has no initialize key to check system_identifier {given} against: \
                 nothing removed",
                target.scope
            )))
        }
        _ => {}
    }
    for k in &keys.all_keys {
        report.changes.push(format!("delete {k}"));
    }
    report.diff.push(json!({
        "before_header": keys.prefix, "after_header": keys.prefix,
        "before": keys.all_keys.join("\n") + "\n",
        "after": "",
    }));
    if check_mode {
        return Ok(report);
    }
    dcs.delete_prefix(&keys.prefix)?;
    let left = dcs.read_cluster(&target.settings.patroni.etcd.namespace, &target.scope)?;
    if !left.is_empty() {
        return Err(Error::Other(format!(
            "keys left under {} after the removal: {}",
            keys.prefix,
            left.all_keys.join(", ")
        )));
    }
    Ok(report)
}
