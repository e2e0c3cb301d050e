//! What Patroni's REST API answers about a member (`GET /patroni`) and a
//! cluster (`GET /cluster`), in the words of the newest Patroni whatever
//! the version that answered.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `GET /patroni`: this member's own view of itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeStatus {
    pub state: String,
    pub role: String,
    pub timeline: Option<u64>,
    pub pending_restart: bool,
    pub pending_restart_reason: BTreeMap<String, Value>,
    pub replication_state: Option<String>,
    pub pause: bool,
    pub database_system_identifier: Option<String>,
    pub patroni: PatroniIdentity,
    pub postmaster_start_time: Option<String>,
    /// Unix time of Patroni's last successful exchange with the DCS.
    pub dcs_last_seen: Option<u64>,
    /// No member holds the leader key (during a bootstrap, until
    /// post_bootstrap has made the roles and Patroni has taken the key).
    pub cluster_unlocked: bool,
    /// WAL positions; a replica's `received_location` is there once its
    /// WAL receiver got WAL from its upstream.
    pub xlog: Option<Value>,
    /// The member's tags as Patroni publishes them (false ones left out).
    pub tags: BTreeMap<String, Value>,
    /// PostgreSQL's version number (`170010` for 17.10).
    pub server_version: Option<u64>,
}

/// Whether a Patroni version tells a streaming replica apart ("streaming",
/// "in archive recovery"), which Patroni does from 3.0.4 on; before, every
/// healthy replica is "running" (Debian bookworm ships 3.0.2).
pub fn reports_replication_state(version: &str) -> bool {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let v = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    version.is_empty() || v >= (3, 0, 4)
}

/// Whether the Patroni of the cluster this process talks to tells
/// streaming replicas apart, as the first `/patroni` read said.
pub(super) static REPORTS_REPLICATION_STATE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

impl NodeStatus {
    /// An older Patroni's healthy replica, in the newer ones' words: a
    /// replica that runs and has received WAL streams.
    pub(super) fn normalise(&mut self) {
        let reports = reports_replication_state(&self.patroni.version);
        let _ = REPORTS_REPLICATION_STATE.set(reports);
        let received = self
            .xlog
            .as_ref()
            .is_some_and(|x| !x["received_location"].is_null());
        if !reports
            && self.replication_state.is_none()
            && self.role == "replica"
            && self.state == "running"
            && received
        {
            self.replication_state = Some("streaming".into());
        }
    }
}

/// Records the Patroni versions of a cluster's members as the DCS lists
/// them, so that no `/patroni` is asked for them: replicas are told apart
/// the older way when any member runs an older Patroni.
pub fn note_patroni_versions<'a>(versions: impl IntoIterator<Item = &'a str>) {
    let mut seen = false;
    let mut all_report = true;
    for v in versions {
        seen = true;
        all_report &= reports_replication_state(v);
    }
    if seen {
        let _ = REPORTS_REPLICATION_STATE.set(all_report);
    }
}

impl ClusterStatus {
    /// `normalise` with what this process knows of the cluster's Patroni
    /// version (the newer words when nothing is known).
    pub fn normalise_by_version(&mut self) {
        self.normalise(REPORTS_REPLICATION_STATE.get().copied().unwrap_or(true));
    }

    /// Replicas an older Patroni shows as "running" (with a lag) are
    /// streaming ones.
    pub(super) fn normalise(&mut self, reports_replication_state: bool) {
        if reports_replication_state {
            return;
        }
        for m in &mut self.members {
            let replica = matches!(
                m.role.as_str(),
                "replica" | "sync_standby" | "quorum_standby"
            );
            if replica && m.state == "running" && m.lag.as_ref().is_some_and(Value::is_number) {
                m.state = "streaming".into();
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PatroniIdentity {
    pub version: String,
    pub scope: String,
    pub name: String,
}

impl NodeStatus {
    pub fn is_primary(&self) -> bool {
        // "master" is the name before Patroni 3.
        matches!(self.role.as_str(), "primary" | "master")
    }

    /// A leader running with the leader key (a bootstrapping primary runs
    /// before its roles exist and before it holds the key), a standby
    /// cluster's leader holding the key (streaming from the primary
    /// cluster, or replaying WAL from a repository while the primary
    /// cannot be reached), or a replica streaming from its upstream.
    pub fn is_healthy(&self) -> bool {
        self.state == "running"
            && ((self.is_primary() && (!self.cluster_unlocked || self.pause))
                || (self.role == "standby_leader" && !self.cluster_unlocked)
                || (self.role == "replica"
                    && self.replication_state.as_deref() == Some("streaming")))
    }

    /// One line for messages: role, state, replication state, timeline.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "role {}, state {}",
            or_unknown(&self.role),
            or_unknown(&self.state)
        );
        if let Some(r) = &self.replication_state {
            s.push_str(&format!(", replication {r}"));
        }
        if let Some(t) = self.timeline {
            s.push_str(&format!(", timeline {t}"));
        }
        if self.cluster_unlocked {
            s.push_str(", no leader key");
        }
        if self.pause {
            s.push_str(", cluster paused");
        }
        s
    }
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "unknown"
    } else {
        s
    }
}

/// `GET /cluster`: every member as the DCS knows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterStatus {
    pub members: Vec<Member>,
    pub scope: String,
    pub pause: bool,
    /// `{at, from, to}` of a switchover waiting for its time.
    pub scheduled_switchover: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Member {
    pub name: String,
    pub role: String,
    pub state: String,
    pub host: String,
    pub port: Option<u16>,
    pub api_url: Option<String>,
    pub timeline: Option<u64>,
    /// Bytes behind the leader; Patroni says "unknown" when it cannot tell.
    pub lag: Option<Value>,
    pub pending_restart: bool,
    pub tags: BTreeMap<String, Value>,
}

/// Whether a member of this role (as `/cluster` names it) leads its
/// cluster: a primary cluster's leader, or a standby cluster's standby
/// leader.
pub fn leads(role: &str) -> bool {
    matches!(role, "leader" | "standby_leader")
}

impl ClusterStatus {
    pub fn leader(&self) -> Option<&Member> {
        self.members.iter().find(|m| leads(&m.role))
    }

    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn health_needs_a_streaming_replica_or_a_running_leader() {
        let leader: NodeStatus =
            serde_json::from_value(json!({"state": "running", "role": "primary", "timeline": 1}))
                .unwrap();
        assert!(leader.is_healthy());
        let catching_up: NodeStatus = serde_json::from_value(
            json!({"state": "running", "role": "replica", "replication_state": "in archive recovery"}),
        )
        .unwrap();
        assert!(!catching_up.is_healthy());
        let streaming: NodeStatus = serde_json::from_value(
            json!({"state": "running", "role": "replica", "replication_state": "streaming", "extra": 1}),
        )
        .unwrap();
        assert!(streaming.is_healthy());
        let starting: NodeStatus =
            serde_json::from_value(json!({"state": "starting", "role": "primary"})).unwrap();
        assert!(!starting.is_healthy());
        assert_eq!(starting.describe(), "role primary, state starting");
        // A bootstrapping primary runs before it holds the leader key.
        let bootstrapping: NodeStatus = serde_json::from_value(
            json!({"state": "running", "role": "primary", "cluster_unlocked": true}),
        )
        .unwrap();
        assert!(!bootstrapping.is_healthy());
        assert!(bootstrapping.describe().contains("no leader key"));
        let paused: NodeStatus = serde_json::from_value(
            json!({"state": "running", "role": "primary", "cluster_unlocked": true, "pause": true}),
        )
        .unwrap();
        assert!(paused.is_healthy());
    }

    #[test]
    fn cluster_members_parse_with_unknown_lag() {
        let c: ClusterStatus = serde_json::from_value(json!({"scope": "s", "members": [
            {"name": "a", "role": "leader", "state": "running", "host": "h", "port": 5432, "timeline": 2},
            {"name": "b", "role": "replica", "state": "streaming", "host": "h2", "port": 5432, "lag": "unknown"}
        ]}))
        .unwrap();
        assert_eq!(c.leader().map(|m| m.name.as_str()), Some("a"));
        assert_eq!(
            c.member("b").and_then(|m| m.lag.clone()),
            Some(json!("unknown"))
        );
    }

    #[test]
    fn an_older_patronis_streaming_replica_reads_as_streaming() {
        assert!(!reports_replication_state("3.0.2"));
        assert!(reports_replication_state("3.0.4"));
        assert!(reports_replication_state("4.1.5"));
        assert!(reports_replication_state(""));
        let mut old: NodeStatus = serde_json::from_value(json!({
            "state": "running", "role": "replica", "patroni": {"version": "3.0.2"},
            "xlog": {"received_location": 84194096, "replayed_location": 84194096}}))
        .unwrap();
        old.normalise();
        assert!(old.is_healthy(), "{old:?}");
        let mut no_wal: NodeStatus = serde_json::from_value(json!({
            "state": "running", "role": "replica", "patroni": {"version": "3.0.2"},
            "xlog": {"received_location": null}}))
        .unwrap();
        no_wal.normalise();
        assert!(!no_wal.is_healthy());
        let mut c: ClusterStatus = serde_json::from_value(json!({"members": [
            {"name": "a", "role": "leader", "state": "running"},
            {"name": "b", "role": "replica", "state": "running", "lag": 0},
            {"name": "c", "role": "replica", "state": "running"}]}))
        .unwrap();
        c.normalise(false);
        let states: Vec<&str> = c.members.iter().map(|m| m.state.as_str()).collect();
        assert_eq!(states, ["running", "streaming", "running"]);
    }
}
