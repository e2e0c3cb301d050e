//! A member removed (`absent`) from a cluster that keeps running: refused
//! while it leads the other members (switch over first) or is the
//! synchronous standby no other member can replace, unless forced; once
//! stopped, its member key is removed from the DCS, and the run returns
//! when neither the DCS nor the other members' REST API list it (Patroni
//! would otherwise show it, stopped, until its key's lease ends).

use super::*;

/// Why `me` may not leave its cluster, from what the cluster says: a
/// table of cases, tested as one.
pub(super) fn refusal(cluster: &ClusterStatus, config: &Value, me: &str) -> Option<String> {
    let others: Vec<&crate::rest::Member> =
        cluster.members.iter().filter(|m| m.name != me).collect();
    let mine = cluster.members.iter().find(|m| m.name == me)?;
    if others.is_empty() {
        return None;
    }
    let names = others
        .iter()
        .map(|m| m.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if matches!(
        mine.role.as_str(),
        "leader" | "primary" | "master" | "standby_leader"
    ) {
        let to = others
            .iter()
            .find(|m| crate::tags::may_be_promoted(&m.tags))
            .map_or("ANOTHER", |m| m.name.as_str());
        return Some(format!(
            "{me} leads the cluster's other members ({names}): switch over first \
             (pgherd.cluster.patroni with leader: {to}), or give force: true to remove it \
             anyway (the others then fail over, after the ttl)"
        ));
    }
    let synchronous = match &config["synchronous_mode"] {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(s.as_str(), "on" | "true" | "quorum"),
        _ => false,
    };
    let standby = |m: &crate::rest::Member| {
        matches!(
            m.role.as_str(),
            "replica" | "sync_standby" | "quorum_standby"
        ) && matches!(m.state.as_str(), "streaming" | "running")
            && m.tags.get("nosync") != Some(&Value::Bool(true))
    };
    if synchronous
        && matches!(mine.role.as_str(), "sync_standby" | "quorum_standby")
        && !others.iter().any(|m| standby(m))
    {
        return Some(format!(
            "{me} is the synchronous standby of a cluster in synchronous mode and no other \
             member can take its place: writes would wait for a standby (synchronous_mode_strict) \
             or no longer be synchronous; add a replica first, turn synchronous_mode off, or \
             give force: true"
        ));
    }
    None
}

impl Node<'_> {
    /// The member's key to remove once it is stopped, when its cluster
    /// keeps other members; refused as [`refusal`] says unless `force`.
    /// What cannot be read (Patroni not answering, etcd away) is warned
    /// about, and the member's key is then left to its lease.
    pub(super) fn retiring(
        &self,
        running: bool,
        force: bool,
        warnings: &mut Vec<String>,
    ) -> Result<Option<Action>> {
        let me = self.m.node.as_str();
        if running {
            if let Ok(rest) = self.rest(POLL_REQUEST_TIMEOUT) {
                if let (Ok(cluster), Ok(config)) = (rest.cluster(), rest.config()) {
                    if let Some(why) = refusal(&cluster, &config, me) {
                        if !force {
                            return Err(Error::Other(format!(
                                "instance {} is not removed: {why}; nothing was changed",
                                self.name()
                            )));
                        }
                        warnings.push(format!("removed with force: true although {why}"));
                    }
                }
            }
        }
        let keys = match self.read_cluster() {
            Ok(k) => k,
            Err(e) => {
                warnings.push(format!(
                    "the DCS could not be read ({e}): member {me}'s key, if any, is left to \
                     expire with its lease"
                ));
                return Ok(None);
            }
        };
        if !keys.members.contains_key(me) || keys.members.len() < 2 {
            return Ok(None);
        }
        Ok(Some(Action::ForgetMember {
            node: me.to_string(),
            cluster: self.m.cluster.to_string(),
            key: format!("{}members/{me}", keys.prefix),
        }))
    }

    /// Removes the stopped member's key and waits until the DCS and the
    /// other members' REST API no longer list it.
    pub(super) fn forget_member(&self, key: &str) -> Result<()> {
        let me = self.m.node.as_str();
        self.connect_dcs()?.delete_key(key)?;
        let others: Vec<RestClient> = self
            .read_cluster()?
            .member_api_addresses()
            .into_iter()
            .filter(|(name, _)| name != me)
            .filter_map(|(_, address)| self.rest_at(&address, POLL_REQUEST_TIMEOUT).ok())
            .collect();
        wait_until(
            &format!(
                "the DCS and the other members' REST API to no longer list {}",
                self.name()
            ),
            self.timeout,
            || {
                match self.read_cluster() {
                    Ok(k) if k.members.contains_key(me) => {
                        return Probe::Waiting(format!("the DCS still holds {key}"))
                    }
                    Err(e) => return Probe::Waiting(e.to_string()),
                    Ok(_) => {}
                }
                for rest in &others {
                    match rest.cluster() {
                        Ok(c) if c.member(me).is_some() => {
                            return Probe::Waiting(format!("{} still lists {me}", rest.base_url()))
                        }
                        // A member that does not answer does not list it.
                        _ => {}
                    }
                }
                Probe::Ready(())
            },
            String::new,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster(members: Value) -> ClusterStatus {
        serde_json::from_value(json!({ "members": members })).unwrap()
    }

    #[test]
    fn who_may_leave_a_running_cluster() {
        let three = cluster(json!([
            {"name": "a", "role": "leader", "state": "running"},
            {"name": "b", "role": "sync_standby", "state": "streaming"},
            {"name": "c", "role": "replica", "state": "streaming", "tags": {"nosync": true}},
        ]));
        let sync = json!({"synchronous_mode": true});
        let table: Vec<(&str, &ClusterStatus, Value, &str, Option<&str>)> = vec![
            ("a replica", &three, json!({}), "c", None),
            (
                "the leader",
                &three,
                json!({}),
                "a",
                Some("switch over first (pgherd.cluster.patroni with leader: b)"),
            ),
            (
                "the only possible sync standby",
                &three,
                sync.clone(),
                "b",
                Some("no other member can take its place"),
            ),
            (
                "a sync standby without sync mode",
                &three,
                json!({}),
                "b",
                None,
            ),
            ("not a member", &three, json!({}), "z", None),
        ];
        for (case, c, config, me, want) in table {
            let got = refusal(c, &config, me);
            match (want, &got) {
                (None, None) => {}
                (Some(w), Some(g)) => assert!(g.contains(w), "{case}: {g}"),
                _ => panic!("{case}: {got:?}"),
            }
        }
        let alone = cluster(json!([{"name": "a", "role": "leader", "state": "running"}]));
        assert_eq!(refusal(&alone, &json!({}), "a"), None, "the last member");
        let two_sync = cluster(json!([
            {"name": "a", "role": "leader", "state": "running"},
            {"name": "b", "role": "sync_standby", "state": "streaming"},
            {"name": "c", "role": "replica", "state": "streaming"},
        ]));
        assert_eq!(refusal(&two_sync, &sync, "b"), None, "c can take b's place");
    }
}
