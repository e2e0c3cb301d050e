//! `pgherd status --watch`: the cluster again on every change of its keys
//! in etcd (an etcd watch, as the proxy's), with what changed said in
//! words: roles, states, timelines, pending restarts, the pause, tags,
//! members joining and leaving. For people a time line and the table; for
//! scripts one JSON object a line.

use std::collections::BTreeMap;
use std::io::Write;

use pgherd_core::cluster::{self, ClusterInfo, MemberInfo, Target};
use pgherd_core::dcs::{cluster_prefix, parse_cluster_keys, ClusterKeys};
use serde_json::json;

use crate::status::{render_table, role_label, tags_label};

/// What changed from `before` to `now`, in words, members in name order.
pub fn events(before: &ClusterInfo, now: &ClusterInfo) -> Vec<String> {
    let mut out = Vec::new();
    if before.leader != now.leader {
        out.push(format!(
            "leader: {} -> {}",
            before.leader.as_deref().unwrap_or("none"),
            now.leader.as_deref().unwrap_or("none")
        ));
    }
    if before.paused != now.paused {
        out.push(if now.paused { "paused" } else { "resumed" }.into());
    }
    let by_name = |info: &ClusterInfo| -> BTreeMap<String, MemberInfo> {
        info.members
            .iter()
            .map(|m| (m.name.clone(), m.clone()))
            .collect()
    };
    let (was, is) = (by_name(before), by_name(now));
    for (name, m) in &is {
        let Some(old) = was.get(name) else {
            out.push(format!(
                "{name} joined: {}, {}",
                role_label(&m.role),
                m.state
            ));
            continue;
        };
        if old.role != m.role {
            out.push(format!(
                "{name}: {} -> {}",
                role_label(&old.role),
                role_label(&m.role)
            ));
        }
        let state = |m: &MemberInfo| {
            if m.reachable {
                m.state.clone()
            } else {
                "unreachable".into()
            }
        };
        if state(old) != state(m) {
            out.push(format!("{name}: {} -> {}", state(old), state(m)));
        }
        if let (Some(a), Some(b)) = (old.timeline, m.timeline) {
            if a != b {
                out.push(format!("{name}: timeline {a} -> {b}"));
            }
        }
        if old.pending_restart != m.pending_restart {
            out.push(format!(
                "{name}: {}",
                if m.pending_restart {
                    "pending restart"
                } else {
                    "no pending restart"
                }
            ));
        }
        if tags_label(old) != tags_label(m) {
            let shown = tags_label(m);
            out.push(format!(
                "{name}: tags {}",
                if shown.is_empty() { "none" } else { &shown }
            ));
        }
    }
    for name in was.keys().filter(|n| !is.contains_key(*n)) {
        out.push(format!("{name} left"));
    }
    out
}

/// `HH:MM:SS` of now, in UTC.
fn clock() -> String {
    let secs = pgherd_core::names::unix_now();
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

/// One refresh: printed when the table (or, with `json`, the cluster)
/// differs from the last one printed.
struct Screen {
    json: bool,
    last: Option<(ClusterInfo, String)>,
}

impl Screen {
    /// `keys`: the cluster's keys as the watch holds them. The pause is as
    /// its configuration key says it (the members' REST APIs follow it a
    /// moment later).
    fn refresh(&mut self, target: &Target, why: &str, keys: ClusterKeys) {
        let paused = keys.config.as_ref().map(|c| c["pause"] == true);
        let info = match cluster::info_with_keys(target, keys) {
            Ok(mut info) => {
                info.paused = paused.unwrap_or(info.paused);
                info
            }
            Err(e) => {
                eprintln!("pgherd status: {}: {e}", clock());
                return;
            }
        };
        let shown = if self.json {
            serde_json::to_string(&info).unwrap_or_default()
        } else {
            render_table(&info)
        };
        if self.last.as_ref().is_some_and(|(_, s)| *s == shown) {
            return;
        }
        let happened = match &self.last {
            Some((before, _)) => events(before, &info),
            None => vec![format!("watching ({why})")],
        };
        let mut out = std::io::stdout().lock();
        let written = if self.json {
            writeln!(
                out,
                "{}",
                json!({"at": clock(), "events": happened, "cluster": info})
            )
        } else {
            let said = if happened.is_empty() {
                "lag".to_string()
            } else {
                happened.join("; ")
            };
            write!(out, "\n{} {said}\n{shown}", clock())
        };
        // A closed output (`| head`): nothing more to show anyone.
        if written.and_then(|_| out.flush()).is_err() {
            std::process::exit(0);
        }
        self.last = Some((info, shown));
    }
}

/// Follows the cluster until the process is stopped.
pub fn watch(target: &Target, json: bool) -> ! {
    let etcd = &target.settings.patroni.etcd;
    let prefix = cluster_prefix(&etcd.namespace, &target.scope);
    let login = pgherd_core::dcs::effective_login(target.etcd_auth.as_ref(), etcd);
    let mut screen = Screen { json, last: None };
    crate::follow::follow(
        etcd,
        login.as_ref(),
        &prefix,
        // Every key says something here: the pause is in config, the
        // leader's position (lag) in status.
        |_, _| true,
        |msg| eprintln!("pgherd status: {}: {msg}", clock()),
        &mut |why, kvs, _| screen.refresh(target, why, parse_cluster_keys(&prefix, kvs)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, role: &str, state: &str, timeline: u64) -> MemberInfo {
        MemberInfo {
            name: name.into(),
            role: role.into(),
            state: state.into(),
            host: "10.0.0.1".into(),
            port: Some(5432),
            timeline: Some(timeline),
            lag: Some(0),
            pending_restart: false,
            tags: BTreeMap::new(),
            restapi: None,
            reachable: true,
        }
    }

    fn cluster(leader: &str, members: Vec<MemberInfo>) -> ClusterInfo {
        ClusterInfo {
            name: "main".into(),
            leader: Some(leader.into()),
            members,
            ..ClusterInfo::default()
        }
    }

    #[test]
    fn what_changed_is_said_in_words() {
        let before = cluster(
            "pg1",
            vec![
                member("pg1", "leader", "running", 3),
                member("pg2", "sync_standby", "streaming", 3),
                member("pg3", "replica", "streaming", 3),
            ],
        );
        let mut pg3 = member("pg3", "replica", "streaming", 4);
        pg3.pending_restart = true;
        pg3.tags.insert("nofailover".into(), json!(true));
        let mut pg1 = member("pg1", "replica", "streaming", 4);
        pg1.reachable = false;
        let mut now = cluster(
            "pg2",
            vec![
                pg1,
                member("pg2", "leader", "running", 4),
                pg3,
                member("pg4", "replica", "starting", 4),
            ],
        );
        now.paused = true;
        assert_eq!(
            events(&before, &now),
            [
                "leader: pg1 -> pg2",
                "paused",
                "pg1: Leader -> Replica",
                "pg1: running -> unreachable",
                "pg1: timeline 3 -> 4",
                "pg2: Sync Standby -> Leader",
                "pg2: streaming -> running",
                "pg2: timeline 3 -> 4",
                "pg3: timeline 3 -> 4",
                "pg3: pending restart",
                "pg3: tags nofailover",
                "pg4 joined: Replica, starting",
            ]
        );
        let gone = cluster("pg2", vec![member("pg2", "leader", "running", 4)]);
        assert_eq!(
            events(&now, &gone),
            ["resumed", "pg1 left", "pg3 left", "pg4 left"]
        );
        assert!(events(&gone, &gone).is_empty());
    }
}
