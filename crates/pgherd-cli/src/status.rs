//! `pgherd status`: the cluster as a table for people, or JSON for scripts.

use pgherd_core::cluster::{ClusterInfo, MemberInfo};

/// A member's role as people say it.
pub fn role_label(role: &str) -> String {
    match role {
        "leader" | "primary" | "master" => "Leader".into(),
        "standby_leader" => "Standby Leader".into(),
        "sync_standby" => "Sync Standby".into(),
        "quorum_standby" => "Quorum Standby".into(),
        "replica" => "Replica".into(),
        other => other.to_string(),
    }
}

/// Bytes as people read them: exact below 1 kB, else one decimal.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn host_of(m: &MemberInfo) -> String {
    match m.port {
        Some(p) => format!("{}:{p}", m.host),
        None => m.host.clone(),
    }
}

/// The members in replication order: each leader, then the members that
/// stream from it, each followed by those that cascade from it (its
/// depth one more). A member streams from its `replicatefrom` when that
/// member runs, else from the leader (as Patroni decides).
pub fn topology(info: &ClusterInfo) -> Vec<(usize, &MemberInfo)> {
    let leads = |m: &MemberInfo| pgherd_core::rest::leads(&m.role);
    let runs = |m: &MemberInfo| matches!(m.state.as_str(), "running" | "streaming");
    let find = |name: &str| info.members.iter().find(|m| m.name == name);
    let leader = info
        .members
        .iter()
        .find(|m| leads(m))
        .map(|l| l.name.as_str());
    let upstream: Vec<Option<&str>> = info
        .members
        .iter()
        .map(|m| {
            if leads(m) {
                return None;
            }
            let from = m.tags.get("replicatefrom").and_then(|v| v.as_str());
            match from.and_then(find) {
                Some(u) if u.name != m.name && runs(u) => Some(u.name.as_str()),
                _ => leader,
            }
        })
        .collect();
    let mut out = Vec::new();
    let mut placed = vec![false; info.members.len()];
    // Depth first from each member nobody streams to it from: the
    // leaders, members without a leader; then any cycle left, flat.
    let roots: Vec<usize> = (0..info.members.len())
        .filter(|i| upstream[*i].is_none())
        .chain(0..info.members.len())
        .collect();
    for root in roots {
        let mut stack = vec![(root, 0)];
        while let Some((i, depth)) = stack.pop() {
            if placed[i] {
                continue;
            }
            placed[i] = true;
            out.push((depth, &info.members[i]));
            let name = info.members[i].name.as_str();
            let children =
                (0..info.members.len()).filter(|c| upstream[*c] == Some(name) && !placed[*c]);
            let children: Vec<usize> = children.collect();
            stack.extend(children.into_iter().rev().map(|c| (c, depth + 1)));
        }
    }
    out
}

/// A member's tags that say something: the true ones and the valued ones.
pub fn tags_label(m: &MemberInfo) -> String {
    m.tags
        .iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::Bool(true) => Some(k.clone()),
            serde_json::Value::Bool(false) | serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(format!("{k}: {s}")),
            other => Some(format!("{k}: {other}")),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table: a title line, then one row per member, in replication
/// order; cascading members indented under their upstream, and a Tags
/// column when a member has some.
/// `rows` (the header first) as columns two spaces apart, each as wide
/// as its widest cell.
pub fn columns(rows: &[Vec<String>]) -> String {
    let count = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..count)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub fn render_table(info: &ClusterInfo) -> String {
    let mut out = format!("Cluster {}", info.name);
    if let Some(id) = &info.system_identifier {
        out.push_str(&format!(" (system identifier {id})"));
    }
    if info.paused {
        out.push_str(" - maintenance mode: paused");
    }
    if let Some(s) = info.standby() {
        out.push_str(&format!(" - standby cluster following {}", s.describe()));
    }
    out.push('\n');
    let order = topology(info);
    let cascades = order.iter().any(|(d, _)| *d > 1);
    let with_tags = info.members.iter().any(|m| !tags_label(m).is_empty());
    let mut header = vec![
        "Member",
        "Host",
        "Role",
        "State",
        "TL",
        "Lag",
        "Pending restart",
    ];
    if with_tags {
        header.push("Tags");
    }
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for (depth, m) in order {
        let is_leader = pgherd_core::rest::leads(&m.role);
        let name = if cascades && depth > 0 {
            format!("{}+ {}", "  ".repeat(depth - 1), m.name)
        } else {
            m.name.clone()
        };
        let mut row = vec![
            name,
            host_of(m),
            role_label(&m.role),
            if m.reachable {
                m.state.clone()
            } else {
                format!("unreachable (last: {})", m.state)
            },
            m.timeline.map(|t| t.to_string()).unwrap_or_default(),
            match (is_leader, m.lag) {
                (true, _) => String::new(),
                (false, Some(l)) => human_bytes(l),
                (false, None) => "unknown".into(),
            },
            if m.pending_restart {
                "*".into()
            } else {
                String::new()
            },
        ];
        if with_tags {
            row.push(tags_label(m));
        }
        rows.push(row);
    }
    out.push_str(&columns(&rows));
    if info.members.is_empty() {
        out.push_str("(no member registered in etcd)\n");
    }
    if let Some(s) = &info.scheduled_switchover {
        out.push_str(&format!("Switchover scheduled: {s}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn member(name: &str, role: &str, state: &str, lag: Option<u64>, pending: bool) -> MemberInfo {
        MemberInfo {
            name: name.into(),
            role: role.into(),
            state: state.into(),
            host: format!("127.0.0.1{}", &name[2..]),
            port: Some(5432),
            timeline: Some(3),
            lag,
            pending_restart: pending,
            tags: BTreeMap::new(),
            restapi: None,
            reachable: true,
        }
    }

    #[test]
    fn the_table_shows_roles_states_lag_and_pending_restarts() {
        let info = ClusterInfo {
            name: "main".into(),
            system_identifier: Some("7710914764009116298".into()),
            leader: Some("pg1".into()),
            paused: true,
            members: vec![
                member("pg1", "leader", "running", None, false),
                member("pg2", "sync_standby", "streaming", Some(0), true),
                member(
                    "pg3",
                    "replica",
                    "streaming",
                    Some(3 * 1024 * 1024 + 1),
                    false,
                ),
            ],
            ..ClusterInfo::default()
        };
        let t = render_table(&info);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "Cluster main (system identifier 7710914764009116298) - maintenance mode: paused"
        );
        assert_eq!(
            lines[1],
            "Member  Host             Role          State      TL  Lag     Pending restart"
        );
        assert_eq!(
            lines[2],
            "pg1     127.0.0.11:5432  Leader        running    3"
        );
        assert_eq!(
            lines[3],
            "pg2     127.0.0.12:5432  Sync Standby  streaming  3   0 B     *"
        );
        assert_eq!(
            lines[4],
            "pg3     127.0.0.13:5432  Replica       streaming  3   3.0 MB"
        );
    }

    #[test]
    fn a_standby_cluster_says_what_it_follows() {
        let info = ClusterInfo {
            name: "books-dr".into(),
            leader: Some("dr1".into()),
            members: vec![
                member("dr1", "standby_leader", "streaming", None, false),
                member("dr2", "replica", "streaming", Some(0), false),
            ],
            config: json!({"standby_cluster": {"host": "10.1.0.11,10.1.0.12", "port": 5433}}),
            ..ClusterInfo::default()
        };
        let table = render_table(&info);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "Cluster books-dr - standby cluster following 10.1.0.11:5433,10.1.0.12:5433"
        );
        assert!(lines[2].contains("Standby Leader"), "{table}");
        assert!(lines[3].starts_with("dr2"), "{table}");
    }

    #[test]
    fn a_member_whose_rest_api_does_not_answer_is_shown_unreachable() {
        let mut dead = member("pg1", "leader", "running", None, false);
        dead.reachable = false;
        let info = ClusterInfo {
            name: "main".into(),
            members: vec![dead],
            ..ClusterInfo::default()
        };
        let t = render_table(&info);
        assert!(
            t.lines()
                .nth(2)
                .is_some_and(|l| l.contains("Leader  unreachable (last: running)")),
            "{t}"
        );
    }

    #[test]
    fn cascades_are_shown_under_their_upstream_with_tags() {
        let tagged = |name: &str, tags: serde_json::Value| {
            let mut m = member(name, "replica", "streaming", Some(0), false);
            m.tags = serde_json::from_value(tags).unwrap();
            m
        };
        let info = ClusterInfo {
            name: "main".into(),
            leader: Some("pg2".into()),
            members: vec![
                tagged("pg1", json!({"replicatefrom": "pg4"})),
                member("pg2", "leader", "running", None, false),
                tagged("pg3", json!({"nofailover": true, "noloadbalance": false})),
                tagged("pg4", json!({"replicatefrom": "pg3"})),
                // Its upstream does not run: it streams from the leader.
                tagged("pg5", json!({"replicatefrom": "pg6"})),
                // Its upstream runs.
                {
                    let mut m = member("pg6", "replica", "stopped", None, false);
                    m.tags.insert("replicatefrom".into(), json!("pg5"));
                    m
                },
            ],
            ..ClusterInfo::default()
        };
        let t = render_table(&info);
        let names: Vec<&str> = t
            .lines()
            .skip(2)
            .map(|l| l.split("  127").next().unwrap().trim_end())
            .collect();
        assert_eq!(
            names,
            ["pg2", "+ pg3", "  + pg4", "    + pg1", "+ pg5", "  + pg6"],
            "{t}"
        );
        assert!(
            t.lines().nth(1).unwrap().ends_with("Pending restart  Tags"),
            "{t}"
        );
        assert!(t.lines().nth(3).unwrap().ends_with("nofailover"), "{t}");
        assert!(
            t.lines().nth(4).unwrap().ends_with("replicatefrom: pg3"),
            "{t}"
        );
    }

    #[test]
    fn bytes_read_like_people_say_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 kB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GB");
    }
}
