//! Reading a cluster: its members, leader, configuration and history, as the REST API shows them, or as the DCS keys do when no member answers.

use super::*;

pub(super) fn member_info(m: &Member) -> MemberInfo {
    MemberInfo {
        name: m.name.clone(),
        role: m.role.clone(),
        state: m.state.clone(),
        host: m.host.clone(),
        port: m.port,
        timeline: m.timeline,
        lag: m.lag.as_ref().and_then(Value::as_u64),
        pending_restart: m.pending_restart,
        tags: m.tags.clone(),
        restapi: m.api_url.as_deref().and_then(api_address),
        reachable: true,
    }
}

/// Reads the cluster; changes nothing. A cluster with no member in the
/// DCS (never deployed, or every member gone) reads as an empty cluster,
/// with the system identifier its keys still hold, if any.
pub fn info(target: &Target) -> Result<ClusterInfo> {
    if target.restapi.is_some() {
        return connect(target, None)?.observe();
    }
    info_with_keys(target, dcs_keys(target)?)
}

/// The same from the cluster's keys as the caller read them from the DCS
/// (a watch holds them already): its members' REST APIs are asked, the
/// DCS is not read again.
pub fn info_with_keys(target: &Target, keys: ClusterKeys) -> Result<ClusterInfo> {
    if keys.member_api_addresses().is_empty() {
        return Ok(info_from_keys(target, &keys));
    }
    match connect(target, Some(keys.clone()))?.observe() {
        // Every member down (their keys outlive them by up to a ttl): what
        // the DCS last heard, each member marked unreachable.
        Err(Error::NoMemberAnswers(_)) => Ok(info_from_keys(target, &keys)),
        other => other,
    }
}

/// `host` and `port` of a member's `conn_url` (`postgres://h:5432/postgres`).
pub(super) fn conn_host_port(url: &str) -> Option<(String, Option<u16>)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?.rsplit('@').next()?;
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => Some((
            h.trim_matches(|c| c == '[' || c == ']').to_string(),
            p.parse().ok(),
        )),
        _ => Some((authority.to_string(), None)),
    }
}

/// The cluster as its keys in the DCS describe it, when no member answers:
/// every member unreachable, with the role and state it last published.
pub(super) fn info_from_keys(target: &Target, keys: &ClusterKeys) -> ClusterInfo {
    let members = keys
        .members
        .iter()
        .map(|(name, v)| {
            let (host, port) = v["conn_url"]
                .as_str()
                .and_then(conn_host_port)
                .unwrap_or_default();
            let role = if keys.leader.as_deref() == Some(name.as_str()) {
                "leader".to_string()
            } else {
                v["role"].as_str().unwrap_or("replica").to_string()
            };
            MemberInfo {
                name: name.clone(),
                role,
                state: v["state"].as_str().unwrap_or("unknown").to_string(),
                host,
                port,
                timeline: v["timeline"].as_u64(),
                lag: None,
                pending_restart: v["pending_restart"].as_bool().unwrap_or(false),
                tags: v["tags"]
                    .as_object()
                    .map(|t| t.clone().into_iter().collect())
                    .unwrap_or_default(),
                restapi: v["api_url"].as_str().and_then(api_address),
                reachable: false,
            }
        })
        .collect();
    ClusterInfo {
        name: target.scope.clone(),
        system_identifier: keys.initialize.clone(),
        leader: keys.leader.clone(),
        paused: keys
            .config
            .as_ref()
            .is_some_and(|c| c["pause"] == json!(true)),
        members,
        config: keys.config.clone().unwrap_or(Value::Null),
        history: keys.history.clone().unwrap_or(Value::Null),
        ..ClusterInfo::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_nobody_answers_for_is_read_from_its_keys() {
        let keys = ClusterKeys {
            prefix: "/service/c/".into(),
            leader: Some("pg1".into()),
            initialize: Some("7710914764009116298".into()),
            members: [
                ("pg1".to_string(), json!({"conn_url": "postgres://10.0.0.1:5433/postgres",
                    "api_url": "http://10.0.0.1:8008/patroni", "state": "running", "role": "primary",
                    "timeline": 4})),
                ("pg2".to_string(), json!({"conn_url": "postgres://[::1]:5432/postgres",
                    "state": "streaming", "role": "replica"})),
            ]
            .into_iter()
            .collect(),
            ..ClusterKeys::default()
        };
        let target = Target {
            scope: "c".into(),
            settings: Settings::default(),
            restapi: None,
            restapi_auth: None,
            etcd_auth: None,
            timeout: Duration::from_secs(1),
        };
        let info = info_from_keys(&target, &keys);
        assert_eq!(
            info.system_identifier.as_deref(),
            Some("7710914764009116298")
        );
        let pg1 = &info.members[0];
        assert_eq!(
            (
                pg1.role.as_str(),
                pg1.state.as_str(),
                pg1.host.as_str(),
                pg1.port,
                pg1.reachable
            ),
            ("leader", "running", "10.0.0.1", Some(5433), false)
        );
        assert_eq!(pg1.restapi.as_deref(), Some("10.0.0.1:8008"));
        assert_eq!(info.members[1].host, "::1");
        let empty = info_from_keys(&target, &ClusterKeys::default());
        assert!(empty.members.is_empty() && empty.system_identifier.is_none());
    }
}
