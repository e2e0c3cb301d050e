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

/// The table: a title line, then one row per member.
pub fn render_table(info: &ClusterInfo) -> String {
    let mut out = format!("Cluster {}", info.name);
    if let Some(id) = &info.system_identifier {
        out.push_str(&format!(" (system identifier {id})"));
    }
    if info.paused {
        out.push_str(" - maintenance mode: paused");
    }
    out.push('\n');
    let header = [
        "Member",
        "Host",
        "Role",
        "State",
        "TL",
        "Lag",
        "Pending restart",
    ];
    let mut rows: Vec<[String; 7]> = vec![header.map(str::to_string)];
    for m in &info.members {
        let is_leader = m.role == "leader" || m.role == "standby_leader";
        rows.push([
            m.name.clone(),
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
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
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
    fn bytes_read_like_people_say_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 kB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GB");
    }
}
