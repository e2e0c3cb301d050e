//! A member's Patroni tags: what the node may become (`nofailover`,
//! `failover_priority`), whom it serves (`noloadbalance`, `nosync`), whom
//! it clones and streams from (`clonefrom`, `replicatefrom`, `nostream`).
//! Checked alone here, against the cluster's members once the DCS is read,
//! and compared with what Patroni publishes once it reloaded them.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::names::Name;

/// The tags a task gives a node; what it does not give keeps Patroni's
/// default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeTags {
    pub nofailover: Option<bool>,
    pub failover_priority: Option<i64>,
    pub noloadbalance: Option<bool>,
    pub nosync: Option<bool>,
    pub clonefrom: Option<bool>,
    pub replicatefrom: Option<Name>,
    pub nostream: Option<bool>,
}

impl NodeTags {
    /// What is wrong with the tags of `node`, each naming its option.
    pub fn problems(&self, node: &Name) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(p) = self.failover_priority {
            if p < 0 {
                out.push(format!(
                    "patroni.tags.failover_priority must be 0 (never promoted) or more, got {p}"
                ));
            }
            // Patroni keeps nofailover and ignores the priority when they
            // disagree: a warning in its log nobody reads.
            match self.nofailover {
                Some(true) if p > 0 => out.push(format!(
                    "patroni.tags.nofailover: true and failover_priority: {p} contradict each \
                     other (nofailover never promotes the node, a priority above 0 does): give one"
                )),
                Some(false) if p <= 0 => out.push(format!(
                    "patroni.tags.nofailover: false and failover_priority: {p} contradict each \
                     other (a priority of 0 never promotes the node): give one"
                )),
                _ => {}
            }
        }
        if let Some(from) = &self.replicatefrom {
            if from == node {
                out.push(format!(
                    "patroni.tags.replicatefrom names this node ({node}) itself: name another \
                     member, or leave it out to stream from the leader"
                ));
            }
            if self.nostream == Some(true) {
                out.push(format!(
                    "patroni.tags.replicatefrom ({from}) and nostream: true contradict each other: \
                     a node without streaming replication streams from nobody"
                ));
            }
        }
        out
    }

    /// Where `node`'s `replicatefrom` goes wrong among the cluster's
    /// members (each member's published data, with its tags): a cycle is
    /// refused; a member unknown is refused once `node` is itself a member
    /// (a new node's upstream may be deployed with it: the warning says
    /// it streams from the leader meanwhile).
    pub fn upstream_check(
        &self,
        node: &Name,
        cluster: &str,
        members: &BTreeMap<String, Value>,
    ) -> Upstream {
        let Some(from) = &self.replicatefrom else {
            return Upstream::Fine;
        };
        if !members.contains_key(from.as_str()) {
            let known = members.keys().cloned().collect::<Vec<_>>().join(", ");
            let known = if known.is_empty() {
                "none".into()
            } else {
                known
            };
            if members.contains_key(node.as_str()) {
                return Upstream::Refused(format!(
                    "patroni.tags.replicatefrom: {from} is not a member of cluster {cluster} \
                     (members: {known}); name one of them"
                ));
            }
            return Upstream::Warn(format!(
                "patroni.tags.replicatefrom: {from} is not a member of cluster {cluster} yet \
                 (members: {known}); {node} streams from the leader until it is"
            ));
        }
        // Follow the chain of upstreams from `from`: back to `node` is a
        // cycle (Patroni would have each wait for the other).
        let mut chain = vec![node.to_string(), from.to_string()];
        let mut at = from.to_string();
        while let Some(next) = members
            .get(&at)
            .and_then(|m| m["tags"]["replicatefrom"].as_str())
        {
            if next == node.as_str() {
                chain.push(next.to_string());
                return Upstream::Refused(format!(
                    "patroni.tags.replicatefrom: {} would be a cycle of replication in cluster \
                     {cluster}; one of them must stream from the leader",
                    chain.join(" -> ")
                ));
            }
            if chain.iter().any(|c| c == next) {
                break; // Someone else's cycle: not this node's to judge.
            }
            chain.push(next.to_string());
            at = next.to_string();
        }
        Upstream::Fine
    }
}

/// What the members say of a node's `replicatefrom`.
#[derive(Debug, PartialEq)]
pub enum Upstream {
    Fine,
    Warn(String),
    Refused(String),
}

/// Whether a member with these published tags may be promoted, by
/// Patroni's rule: `nofailover` when given, else a `failover_priority`
/// above 0 (or none).
pub fn may_be_promoted(tags: &BTreeMap<String, Value>) -> bool {
    if let Some(v) = tags.get("nofailover").filter(|v| !v.is_null()) {
        return !truthy(v);
    }
    match tags.get("failover_priority").and_then(as_int) {
        Some(p) => p > 0,
        None => true,
    }
}

/// Whether Patroni publishes the tags a configuration gives: the same
/// values, a false boolean and an absent one being alike (Patroni leaves
/// out the false ones).
pub fn published_as_given(
    given: &BTreeMap<String, Value>,
    published: &BTreeMap<String, Value>,
) -> bool {
    let norm = |m: &BTreeMap<String, Value>| -> BTreeMap<String, Value> {
        m.iter()
            .filter(|(_, v)| !matches!(v, Value::Null | Value::Bool(false)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    norm(given) == norm(published)
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "true" | "yes" | "on" | "1"),
        Value::Number(n) => n.as_i64() != Some(0),
        _ => false,
    }
}

fn as_int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn name(s: &str) -> Name {
        Name::parse("node", s).unwrap()
    }

    fn tags(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn problems_of_tags_alone() {
        let table: Vec<(&str, NodeTags, &[&str])> = vec![
            ("none given", NodeTags::default(), &[]),
            (
                "priority alone",
                NodeTags {
                    failover_priority: Some(0),
                    ..NodeTags::default()
                },
                &[],
            ),
            (
                "negative priority",
                NodeTags {
                    failover_priority: Some(-1),
                    ..NodeTags::default()
                },
                &["0 (never promoted) or more"],
            ),
            (
                "nofailover with a priority",
                NodeTags {
                    nofailover: Some(true),
                    failover_priority: Some(2),
                    ..NodeTags::default()
                },
                &["nofailover: true and failover_priority: 2 contradict"],
            ),
            (
                "failover allowed with priority 0",
                NodeTags {
                    nofailover: Some(false),
                    failover_priority: Some(0),
                    ..NodeTags::default()
                },
                &["nofailover: false and failover_priority: 0 contradict"],
            ),
            (
                "agreeing",
                NodeTags {
                    nofailover: Some(false),
                    failover_priority: Some(3),
                    ..NodeTags::default()
                },
                &[],
            ),
            (
                "itself",
                NodeTags {
                    replicatefrom: Some(name("pg2")),
                    ..NodeTags::default()
                },
                &["names this node (pg2) itself"],
            ),
            (
                "upstream without streaming",
                NodeTags {
                    replicatefrom: Some(name("pg1")),
                    nostream: Some(true),
                    ..NodeTags::default()
                },
                &["nostream: true contradict"],
            ),
        ];
        for (case, t, want) in table {
            let got = t.problems(&name("pg2"));
            assert_eq!(got.len(), want.len(), "{case}: {got:?}");
            for (g, w) in got.iter().zip(want) {
                assert!(g.contains(w), "{case}: {g}");
            }
        }
    }

    #[test]
    fn upstreams_among_members() {
        let members = tags(json!({
            "a": {"tags": {}},
            "b": {"tags": {"replicatefrom": "c"}},
            "c": {"tags": {"replicatefrom": "a"}},
            "d": {"tags": {"replicatefrom": "e"}},
            "e": {"tags": {"replicatefrom": "d"}},
        }));
        let from = |s: &str| NodeTags {
            replicatefrom: Some(name(s)),
            ..NodeTags::default()
        };
        let check = |node: &str, t: NodeTags| t.upstream_check(&name(node), "main", &members);
        assert_eq!(check("a", NodeTags::default()), Upstream::Fine);
        assert_eq!(check("b", from("a")), Upstream::Fine, "b leaves c for a");
        match check("c", from("b")) {
            Upstream::Refused(m) => assert!(m.contains("c -> b -> c"), "{m}"),
            other => panic!("{other:?}"),
        }
        match check("a", from("b")) {
            Upstream::Refused(m) => assert!(m.contains("a -> b -> c -> a"), "{m}"),
            other => panic!("{other:?}"),
        }
        match check("a", from("zz")) {
            Upstream::Refused(m) => assert!(
                m.contains("zz is not a member") && m.contains("a, b, c, d, e"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        match check("new", from("zz")) {
            Upstream::Warn(m) => assert!(m.contains("new streams from the leader"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            check("a", from("d")),
            Upstream::Fine,
            "d and e loop among themselves"
        );
    }

    #[test]
    fn promotion_follows_patronis_rule() {
        let table = [
            (json!({}), true),
            (json!({"nofailover": true}), false),
            (json!({"nofailover": false, "failover_priority": 0}), true),
            (json!({"failover_priority": 0}), false),
            (json!({"failover_priority": "3"}), true),
            (json!({"nofailover": "true"}), false),
        ];
        for (t, want) in table {
            assert_eq!(may_be_promoted(&tags(t.clone())), want, "{t}");
        }
    }

    #[test]
    fn published_tags_leave_out_false_ones() {
        let given = tags(
            json!({"nofailover": false, "noloadbalance": true, "clonefrom": false, "nosync": false}),
        );
        assert!(published_as_given(
            &given,
            &tags(json!({"noloadbalance": true}))
        ));
        assert!(!published_as_given(&given, &tags(json!({}))));
        assert!(!published_as_given(
            &tags(json!({"replicatefrom": "b"})),
            &tags(json!({"replicatefrom": "c"}))
        ));
    }
}
