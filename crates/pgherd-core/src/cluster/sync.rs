//! Synchronous replication as the patroni module waits for it: the
//! standbys a leader chooses, as the dynamic configuration asks, after a
//! change of that configuration and after a change of leader.

use super::*;
use crate::rest::RestClient;

/// The synchronous standbys a leader chooses: their role (`sync_standby`,
/// or `quorum_standby` in quorum mode) and `synchronous_node_count`.
#[derive(Debug, Clone, Copy)]
pub(super) struct SyncWanted {
    role: &'static str,
    count: Option<u64>,
}

impl SyncWanted {
    pub fn new(role: &'static str, count: Option<u64>) -> SyncWanted {
        SyncWanted { role, count }
    }

    /// As a dynamic configuration asks; `None` outside synchronous mode.
    pub fn from_config(config: &Value) -> Option<SyncWanted> {
        let role = sync_role(config.get("synchronous_mode").unwrap_or(&Value::Null))?;
        let count = config.get("synchronous_node_count").and_then(Value::as_u64);
        Some(SyncWanted::new(role, count))
    }

    /// As the cluster's configuration says through `client`; `None` also
    /// when it cannot be read.
    pub fn of(client: &RestClient) -> Option<SyncWanted> {
        SyncWanted::from_config(&client.config().ok()?)
    }

    /// What is waited for, in words.
    pub fn awaited(self) -> String {
        match self.count {
            Some(n) if n > 1 && self.role == "sync_standby" => format!(
                "{n} members (or every replica that may be one) to become a {}",
                self.role
            ),
            _ => format!("a member to become a {}", self.role),
        }
    }

    /// Whether the leader chose its synchronous standbys: with
    /// `synchronous_mode: on`, `synchronous_node_count` of them, or every
    /// streaming replica without `nosync` when fewer stream (Patroni picks
    /// no more); in quorum mode, one.
    pub fn chosen(self, s: &ClusterStatus) -> bool {
        let chosen = s.members.iter().filter(|m| m.role == self.role).count();
        if self.role != "sync_standby" {
            return chosen >= 1;
        }
        let wanted = usize::try_from(self.count.unwrap_or(1)).unwrap_or(usize::MAX);
        chosen >= wanted.min(eligible(s)).max(1)
    }
}

/// `, and …` after what a change of leader waits for, in synchronous mode.
pub(super) fn awaited(sync: Option<SyncWanted>) -> String {
    sync.map(|w| format!(", and {}", w.awaited()))
        .unwrap_or_default()
}

/// After a change of leader (what the next switchover needs): in
/// synchronous mode, the new leader chose its synchronous standbys, unless
/// no replica may be one.
pub(super) fn sync_ready(s: &ClusterStatus, sync: Option<SyncWanted>) -> bool {
    sync.is_none_or(|w| eligible(s) == 0 || w.chosen(s))
}

/// The streaming replicas that may be synchronous standbys (no `nosync`).
fn eligible(s: &ClusterStatus) -> usize {
    s.members
        .iter()
        .filter(|m| is_replica_role(&m.role) && m.state == "streaming")
        .filter(|m| m.tags.get("nosync") != Some(&Value::Bool(true)))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::Member;

    fn member(name: &str, role: &str, state: &str, nosync: bool) -> Member {
        let mut m = Member {
            name: name.into(),
            role: role.into(),
            state: state.into(),
            ..Member::default()
        };
        if nosync {
            m.tags.insert("nosync".into(), Value::Bool(true));
        }
        m
    }

    #[test]
    fn synchronous_standbys_are_awaited_up_to_what_patroni_can_choose() {
        let leader = member("a", "leader", "running", false);
        let cases: [(&str, Vec<Member>, Option<u64>, bool); 8] = [
            (
                "one wanted, one chosen",
                vec![
                    member("b", "sync_standby", "streaming", false),
                    member("c", "replica", "streaming", false),
                ],
                None,
                true,
            ),
            (
                "one wanted, none yet",
                vec![
                    member("b", "replica", "streaming", false),
                    member("c", "replica", "streaming", false),
                ],
                Some(1),
                false,
            ),
            (
                "two wanted, one chosen",
                vec![
                    member("b", "sync_standby", "streaming", false),
                    member("c", "replica", "streaming", false),
                ],
                Some(2),
                false,
            ),
            (
                "two wanted, two chosen",
                vec![
                    member("b", "sync_standby", "streaming", false),
                    member("c", "sync_standby", "streaming", false),
                ],
                Some(2),
                true,
            ),
            (
                "two wanted, the other replica stopped",
                vec![
                    member("b", "sync_standby", "streaming", false),
                    member("c", "replica", "stopped", false),
                ],
                Some(2),
                true,
            ),
            (
                "two wanted, the other replica nosync",
                vec![
                    member("b", "sync_standby", "streaming", false),
                    member("c", "replica", "streaming", true),
                ],
                Some(2),
                true,
            ),
            (
                "three wanted of two replicas",
                vec![
                    member("b", "sync_standby", "streaming", false),
                    member("c", "sync_standby", "streaming", false),
                ],
                Some(3),
                true,
            ),
            (
                "none streams yet",
                vec![member("b", "replica", "stopped", false)],
                Some(2),
                false,
            ),
        ];
        for (what, replicas, count, ready) in cases {
            let mut members = vec![leader.clone()];
            members.extend(replicas);
            let s = ClusterStatus {
                members,
                ..ClusterStatus::default()
            };
            assert_eq!(
                SyncWanted::new("sync_standby", count).chosen(&s),
                ready,
                "{what}"
            );
            // After a change of leader: the same, except that with no
            // replica streaming there is nothing to wait for.
            let after_switchover = ready || eligible(&s) == 0;
            assert_eq!(
                sync_ready(&s, Some(SyncWanted::new("sync_standby", count))),
                after_switchover,
                "{what}"
            );
            assert!(sync_ready(&s, None), "{what}: not in synchronous mode");
        }
        let quorum = ClusterStatus {
            members: vec![leader, member("b", "quorum_standby", "streaming", false)],
            ..ClusterStatus::default()
        };
        assert!(SyncWanted::new("quorum_standby", Some(2)).chosen(&quorum));
        assert_eq!(
            SyncWanted::new("sync_standby", None).awaited(),
            "a member to become a sync_standby"
        );
        assert!(SyncWanted::new("sync_standby", Some(2))
            .awaited()
            .starts_with("2 members"));
    }
}
