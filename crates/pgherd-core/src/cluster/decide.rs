//! Pure decisions over an observed cluster: the configuration patch, switchover refusals, restart order. Unit-tested as tables.

use super::*;

/// The roles Patroni gives a member that replicates from the leader.
pub(super) const REPLICA_ROLES: [&str; 3] = ["replica", "sync_standby", "quorum_standby"];

pub(super) fn is_replica_role(role: &str) -> bool {
    REPLICA_ROLES.contains(&role)
}

/// Scalars compare by value, and by text when their JSON types differ
/// ("100" and 100 are the same setting to Patroni).
pub(super) fn same_setting(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    matches!((text(a), text(b)), (Some(x), Some(y)) if x == y)
}

/// The PATCH that brings `current` to `desired` (nested mappings merge,
/// null deletes), with the before and after of the keys it touches; `None`
/// when nothing differs.
pub fn config_patch(
    current: &Value,
    desired: &Map<String, Value>,
) -> Option<(Value, Value, Value)> {
    let mut patch = Map::new();
    let mut before = Map::new();
    let mut after = Map::new();
    for (key, want) in desired {
        let have = current.get(key);
        match (want, have) {
            (Value::Null, None) => {}
            (Value::Null, Some(h)) => {
                patch.insert(key.clone(), Value::Null);
                before.insert(key.clone(), h.clone());
                after.insert(key.clone(), Value::Null);
            }
            (Value::Object(w), Some(h @ Value::Object(_))) => {
                if let Some((p, b, a)) = config_patch(h, w) {
                    patch.insert(key.clone(), p);
                    before.insert(key.clone(), b);
                    after.insert(key.clone(), a);
                }
            }
            (w, Some(h)) if same_setting(w, h) => {}
            (w, h) => {
                let mut fresh = w.clone();
                strip_nulls(&mut fresh);
                patch.insert(key.clone(), fresh.clone());
                before.insert(key.clone(), h.cloned().unwrap_or(Value::Null));
                after.insert(key.clone(), fresh);
            }
        }
    }
    (!patch.is_empty()).then_some({
        (
            Value::Object(patch),
            Value::Object(before),
            Value::Object(after),
        )
    })
}

pub(super) fn strip_nulls(v: &mut Value) {
    if let Value::Object(m) = v {
        m.retain(|_, x| !x.is_null());
        m.values_mut().for_each(strip_nulls);
    }
}

/// Two ISO 8601 times written alike, `Z` and `+00:00` being the same.
pub(super) fn same_time(a: &str, b: &str) -> bool {
    let norm = |t: &str| t.trim().replace('Z', "+00:00").replace(' ', "T");
    norm(a) == norm(b)
}

/// Why `candidate` cannot take over by switchover, if it cannot.
pub fn switchover_refusal(
    info: &ClusterInfo,
    candidate: &str,
    maximum_lag: Option<u64>,
) -> Option<String> {
    let names = || {
        info.members
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(m) = info.member(candidate) else {
        return Some(format!(
            "{candidate} is not a member of cluster {}; members: {}",
            info.name,
            names()
        ));
    };
    if info.paused {
        return Some(format!(
            "cluster {} is paused (maintenance mode): resume it first (paused: false)",
            info.name
        ));
    }
    if let Some(why) = not_promotable(m) {
        return Some(why);
    }
    if !is_replica_role(&m.role) || !matches!(m.state.as_str(), "streaming" | "running") {
        return Some(format!(
            "{candidate} is not a running replica (role {}, state {})",
            m.role, m.state
        ));
    }
    if m.state != "streaming" {
        return Some(format!(
            "{candidate} is not streaming from the leader (state {})",
            m.state
        ));
    }
    let bound = maximum_lag.unwrap_or_else(|| info.maximum_lag_on_failover());
    match m.lag {
        None => {
            return Some(format!(
                "the replication lag of {candidate} is unknown: it cannot be checked against {bound} bytes"
            ))
        }
        Some(lag) if lag > bound => {
            return Some(format!(
                "{candidate} lags {lag} bytes behind the leader, above the bound of {bound} bytes \
                 (maximum_lag, or the cluster's maximum_lag_on_failover)"
            ))
        }
        _ => {}
    }
    if info.synchronous_mode() && m.role != "sync_standby" {
        return Some(format!(
            "cluster {} is in synchronous mode and {candidate} is not a synchronous standby \
             (sync standbys: {})",
            info.name,
            if info.sync_standbys.is_empty() {
                "none".to_string()
            } else {
                info.sync_standbys.join(", ")
            }
        ));
    }
    None
}

/// Why a member's tags forbid promoting it, if they do.
pub(super) fn not_promotable(m: &MemberInfo) -> Option<String> {
    if crate::tags::may_be_promoted(&m.tags) {
        return None;
    }
    let shown = ["nofailover", "failover_priority"]
        .iter()
        .filter_map(|k| m.tags.get(*k).map(|v| format!("{k}: {v}")))
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "{} may not be promoted (tags {shown}): choose another member, or change its tags \
         (instance module, patroni.tags) first",
        m.name
    ))
}

/// Members to restart, replicas first (by name), the leader (a standby
/// cluster's standby leader) last.
pub fn restart_order(info: &ClusterInfo, mode: RestartMode) -> Vec<String> {
    let wanted = |m: &&MemberInfo| mode == RestartMode::All || m.pending_restart;
    let leads = |m: &&MemberInfo| crate::rest::leads(&m.role);
    let mut replicas: Vec<&MemberInfo> = info
        .members
        .iter()
        .filter(wanted)
        .filter(|m| !leads(m))
        .collect();
    replicas.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out: Vec<String> = replicas.iter().map(|m| m.name.clone()).collect();
    out.extend(
        info.members
            .iter()
            .filter(wanted)
            .filter(leads)
            .map(|m| m.name.clone()),
    );
    out
}

/// The role synchronous standbys get under a `synchronous_mode` value;
/// `None` when it turns synchronous replication off.
pub(super) fn sync_role(mode: &Value) -> Option<&'static str> {
    match mode {
        Value::Bool(true) => Some("sync_standby"),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" => Some("sync_standby"),
            "quorum" => Some("quorum_standby"),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn identical_config_needs_no_patch() {
        let current = json!({"ttl": 20, "postgresql": {"parameters": {"max_connections": 100}}});
        assert!(config_patch(
            &current,
            &obj(json!({"ttl": "20", "postgresql": {"parameters": {"max_connections": "100"}}}))
        )
        .is_none());
        assert!(config_patch(&current, &obj(json!({"gone": null}))).is_none());
    }

    #[test]
    fn the_patch_holds_only_what_differs() {
        let current = json!({"ttl": 20, "loop_wait": 2, "postgresql": {"parameters": {"a": "1", "b": "2"}, "use_pg_rewind": true}});
        let desired = obj(
            json!({"ttl": 30, "loop_wait": 2, "postgresql": {"parameters": {"a": "1", "b": null, "c": "3"}}, "synchronous_mode": true}),
        );
        let (patch, before, after) = config_patch(&current, &desired).unwrap();
        assert_eq!(
            patch,
            json!({"ttl": 30, "postgresql": {"parameters": {"b": null, "c": "3"}}, "synchronous_mode": true})
        );
        assert_eq!(
            before,
            json!({"ttl": 20, "postgresql": {"parameters": {"b": "2", "c": null}}, "synchronous_mode": null})
        );
        assert_eq!(
            after,
            json!({"ttl": 30, "postgresql": {"parameters": {"b": null, "c": "3"}}, "synchronous_mode": true})
        );
    }

    /// A member of a cluster read in a test (the planners' too).
    pub(in crate::cluster) fn member(
        name: &str,
        role: &str,
        state: &str,
        lag: Option<u64>,
    ) -> MemberInfo {
        MemberInfo {
            name: name.into(),
            role: role.into(),
            state: state.into(),
            host: "h".into(),
            port: Some(5432),
            timeline: Some(1),
            lag,
            pending_restart: false,
            tags: BTreeMap::new(),
            restapi: None,
            reachable: true,
        }
    }

    fn cluster(members: Vec<MemberInfo>) -> ClusterInfo {
        ClusterInfo {
            name: "c".into(),
            members,
            config: json!({"maximum_lag_on_failover": 1000}),
            ..ClusterInfo::default()
        }
    }

    #[test]
    fn switchover_refuses_a_member_its_tags_keep_from_promotion() {
        let mut b = member("b", "replica", "streaming", Some(0));
        b.tags.insert("nofailover".into(), json!(true));
        let mut c = member("c", "replica", "streaming", Some(0));
        c.tags.insert("failover_priority".into(), json!(0));
        let mut d = member("d", "replica", "streaming", Some(0));
        d.tags.insert("failover_priority".into(), json!(2));
        let info = cluster(vec![member("a", "leader", "running", None), b, c, d]);
        let why = switchover_refusal(&info, "b", None).unwrap();
        assert!(
            why.contains("b may not be promoted (tags nofailover: true)"),
            "{why}"
        );
        let why = switchover_refusal(&info, "c", None).unwrap();
        assert!(why.contains("tags failover_priority: 0"), "{why}");
        assert_eq!(switchover_refusal(&info, "d", None), None);
    }

    #[test]
    fn switchover_refuses_unknown_candidate() {
        let c = cluster(vec![member("pg1", "leader", "running", None)]);
        let why = switchover_refusal(&c, "pg9", None).unwrap();
        assert_eq!(why, "pg9 is not a member of cluster c; members: pg1");
    }

    #[test]
    fn switchover_refuses_lagging_candidate() {
        let c = cluster(vec![
            member("pg1", "leader", "running", None),
            member("pg2", "replica", "streaming", Some(5000)),
        ]);
        let why = switchover_refusal(&c, "pg2", None).unwrap();
        assert!(why.contains("lags 5000 bytes"), "{why}");
        assert!(switchover_refusal(&c, "pg2", Some(10_000)).is_none());
    }

    #[test]
    fn switchover_refuses_stopped_or_unknown_lag_candidate() {
        let c = cluster(vec![
            member("pg1", "leader", "running", None),
            member("pg2", "replica", "stopped", None),
            member("pg3", "replica", "streaming", None),
        ]);
        assert!(switchover_refusal(&c, "pg2", None)
            .unwrap()
            .contains("not a running replica"));
        assert!(switchover_refusal(&c, "pg3", None)
            .unwrap()
            .contains("unknown"));
    }

    #[test]
    fn switchover_refuses_in_a_paused_cluster() {
        let mut c = cluster(vec![
            member("pg1", "leader", "running", None),
            member("pg2", "replica", "streaming", Some(0)),
        ]);
        c.paused = true;
        assert!(switchover_refusal(&c, "pg2", None)
            .unwrap()
            .contains("paused"));
    }

    #[test]
    fn switchover_in_sync_mode_needs_a_sync_standby() {
        let mut c = cluster(vec![
            member("pg1", "leader", "running", None),
            member("pg2", "sync_standby", "streaming", Some(0)),
            member("pg3", "replica", "streaming", Some(0)),
        ]);
        c.config = json!({"synchronous_mode": true});
        c.sync_standbys = vec!["pg2".into()];
        assert!(switchover_refusal(&c, "pg2", None).is_none());
        let why = switchover_refusal(&c, "pg3", None).unwrap();
        assert!(
            why.contains("not a synchronous standby (sync standbys: pg2)"),
            "{why}"
        );
    }

    #[test]
    fn scheduled_times_compare_across_notations() {
        assert!(same_time(
            "2026-11-22T04:34:07Z",
            "2026-11-22T04:34:07+00:00"
        ));
        assert!(!same_time(
            "2026-11-22T04:34:07Z",
            "2026-11-22T05:34:07+00:00"
        ));
    }

    #[test]
    fn restarts_go_replicas_first_leader_last() {
        let mut c = cluster(vec![
            member("pg1", "leader", "running", None),
            member("pg3", "replica", "streaming", Some(0)),
            member("pg2", "replica", "streaming", Some(0)),
        ]);
        assert_eq!(restart_order(&c, RestartMode::All), ["pg2", "pg3", "pg1"]);
        assert!(restart_order(&c, RestartMode::Pending).is_empty());
        c.members[0].pending_restart = true;
        c.members[1].pending_restart = true;
        assert_eq!(restart_order(&c, RestartMode::Pending), ["pg3", "pg1"]);
        // A standby cluster's standby leader goes last as well.
        let standby = cluster(vec![
            member("dr1", "standby_leader", "streaming", None),
            member("dr2", "replica", "streaming", Some(0)),
        ]);
        assert_eq!(restart_order(&standby, RestartMode::All), ["dr2", "dr1"]);
    }

    #[test]
    fn synchronous_modes_name_their_standbys_role() {
        assert_eq!(sync_role(&json!(true)), Some("sync_standby"));
        assert_eq!(sync_role(&json!("on")), Some("sync_standby"));
        assert_eq!(sync_role(&json!("quorum")), Some("quorum_standby"));
        assert_eq!(sync_role(&json!(false)), None);
        assert_eq!(sync_role(&json!("off")), None);
    }
}
