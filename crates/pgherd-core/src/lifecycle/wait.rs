//! Waiting for a node to lead or stream: what it says, what the DCS shows, a replica woken when its slot was missing, a node without data that nobody can clone from.

use super::*;

/// How often the wait of a node without data reads the cluster from etcd.
pub(super) const ORPHAN_LOOK_INTERVAL: Duration = Duration::from_secs(1);

/// Since when a node without data has seen no one to clone from, and the
/// etcd connection its looks share.
#[derive(Default)]
pub(super) struct Orphaned {
    since: Option<Instant>,
    last_look: Option<Instant>,
    dcs: Option<Dcs>,
}

/// The system identifier of a cluster etcd holds as initialized, when it
/// has no leader and no member other than `me`: nobody to clone from.
pub(super) fn leaderless_initialized(keys: &ClusterKeys, me: &str) -> Option<String> {
    let alone = keys.members.keys().all(|name| name == me);
    match (&keys.initialize, &keys.leader) {
        (Some(sysid), None) if alone => Some(sysid.clone()),
        _ => None,
    }
}

/// How often a standby waiting for its replication slot is woken.
pub(super) const SLOT_RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// Whether the cluster's view (the DCS, through `/cluster`) shows `name`
/// as a running leader, a standby cluster's leader, or a streaming
/// replica.
pub(super) fn listed_as_healthy(c: &ClusterStatus, name: &str, primary: bool) -> bool {
    c.member(name).is_some_and(|m| {
        if primary {
            m.role == "leader" && m.state == "running"
        } else if m.role == "standby_leader" {
            matches!(m.state.as_str(), "running" | "streaming")
        } else {
            m.role != "leader" && m.state == "streaming"
        }
    })
}

impl Node<'_> {
    /// Patroni still runs, while a wait for it goes on: when it exited, the
    /// error says so with the logs' tails.
    pub(super) fn patroni_still_runs(&self) -> Result<()> {
        match self.service.patroni_pid()? {
            Some(_) => Ok(()),
            None => Err(Error::Other(format!(
                "Patroni of instance {} exited; {}",
                self.name(),
                instance_log_tails(&self.paths)
            ))),
        }
    }

    /// Waits until the node is a running leader or a streaming replica:
    /// what it says of itself, and the cluster as the DCS shows it then.
    pub(super) fn wait_healthy(&self) -> Result<(NodeStatus, ClusterStatus)> {
        self.wait_healthy_from(None)
    }

    /// The same, with the node's own view for the first look when the
    /// caller read it a moment ago and nothing acted since.
    pub(super) fn wait_healthy_from(
        &self,
        mut observed: Option<NodeStatus>,
    ) -> Result<(NodeStatus, ClusterStatus)> {
        let rest = self.rest(POLL_REQUEST_TIMEOUT)?;
        let mut last_wake = None;
        let mut orphaned = Orphaned::default();
        wait_until(
            &format!(
                "instance {} to run as leader or as a streaming replica",
                self.name()
            ),
            self.timeout,
            || {
                if let Err(e) = self.patroni_still_runs() {
                    return Probe::Failed(e);
                }
                match observed.take().map_or_else(|| rest.patroni(), Ok) {
                    // What the node says must also be what the DCS shows
                    // (it lags up to a loop), since that is what the next
                    // task, the patroni module or patronictl, reads.
                    Ok(s) if s.is_healthy() => match rest.cluster() {
                        Ok(c) if listed_as_healthy(&c, self.m.node.as_str(), s.is_primary()) => {
                            Probe::Ready((s, c))
                        }
                        Ok(c) => Probe::Waiting(format!(
                            "Patroni reports {}, the DCS still shows {}",
                            s.describe(),
                            c.member(self.m.node.as_str()).map_or(
                                "no member key".to_string(),
                                |m| format!("role {}, state {}", m.role, m.state)
                            )
                        )),
                        Err(e) => Probe::Waiting(e.to_string()),
                    },
                    Ok(s) => {
                        if s.role == "replica" {
                            self.wake_if_slot_was_missing(&mut last_wake);
                        }
                        if s.role == "uninitialized" && s.state == "stopped" {
                            if let Err(e) = self.check_not_orphaned(&mut orphaned) {
                                return Probe::Failed(e);
                            }
                        } else {
                            orphaned = Orphaned::default();
                        }
                        Probe::Waiting(format!("Patroni reports {}", s.describe()))
                    }
                    Err(e) => Probe::Waiting(e.to_string()),
                }
            },
            || instance_log_tails(&self.paths),
        )
    }

    /// A node without data waits for a leader to clone from; when etcd
    /// holds an initialized cluster with no leader and no other member, none
    /// will come (typically: the DCS state of a cluster whose nodes were
    /// removed). Fails once that has lasted a ttl, instead of waiting out
    /// the whole deadline; other members starting meanwhile reset it.
    pub(super) fn check_not_orphaned(&self, seen: &mut Orphaned) -> Result<()> {
        if seen
            .last_look
            .is_some_and(|t| t.elapsed() < ORPHAN_LOOK_INTERVAL)
        {
            return Ok(());
        }
        seen.last_look = Some(Instant::now());
        if seen.dcs.is_none() {
            seen.dcs = self.connect_dcs().ok();
        }
        let etcd = &self.settings.patroni.etcd;
        let Some(Ok(keys)) = seen
            .dcs
            .as_mut()
            .map(|dcs| dcs.read_cluster(&etcd.namespace, self.m.cluster.as_str()))
        else {
            // etcd not answering is for the deadline to report.
            seen.dcs = None;
            return Ok(());
        };
        let Some(sysid) = leaderless_initialized(&keys, self.m.node.as_str()) else {
            seen.since = None;
            return Ok(());
        };
        let since = *seen.since.get_or_insert_with(Instant::now);
        let ttl = u64::from(self.settings.patroni.ttl);
        if since.elapsed() < Duration::from_secs(ttl) {
            return Ok(());
        }
        let cluster = self.m.cluster.as_str();
        Err(Error::NoOneToClone(format!(
            "instance {} has no data and waits for a leader to clone from, but etcd holds \
             cluster {cluster} as initialized (system identifier {sysid}) with no leader and \
             no other member for {ttl} s; Patroni does not bootstrap over an initialized \
             cluster. If that cluster's nodes are gone, remove its state from etcd with the \
             patroni module (cluster: {cluster}, state: absent, system_identifier: {sysid}) \
             and run again; otherwise start one of its members that has data first",
            self.name()
        )))
    }

    /// A new replica often asks for its replication slot before the
    /// leader's next HA loop has created it; PostgreSQL would then wait
    /// `wal_retrieve_retry_interval` (5 s by default) before asking again.
    /// While its log says so, wake it every [`SLOT_RETRY_INTERVAL`] so that
    /// it streams as soon as the slot exists: replication itself keeps its
    /// slot and its settings.
    pub(super) fn wake_if_slot_was_missing(&self, last_wake: &mut Option<Instant>) {
        if last_wake.is_some_and(|t| t.elapsed() < SLOT_RETRY_INTERVAL) {
            return;
        }
        let Some(log) = newest_file(&self.paths.pg_log_dir) else {
            return;
        };
        let missing = tail(&log, 10).is_some_and(|t| standby_waits_for_missing_slot(&t));
        if missing && self.service.wake_postmaster() {
            *last_wake = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_initialized_cluster_without_leader_or_members_has_no_one_to_clone_from() {
        let keys = |init: Option<&str>, leader: Option<&str>, members: &[&str]| ClusterKeys {
            initialize: init.map(str::to_string),
            leader: leader.map(str::to_string),
            members: members
                .iter()
                .map(|m| (m.to_string(), serde_json::json!({})))
                .collect(),
            ..ClusterKeys::default()
        };
        let sysid = Some("7710914764009116298");
        assert_eq!(
            leaderless_initialized(&keys(sysid, None, &[]), "pg1").as_deref(),
            sysid
        );
        assert_eq!(
            leaderless_initialized(&keys(sysid, None, &["pg1"]), "pg1").as_deref(),
            sysid
        );
        // Another member may yet lead; a leader can be cloned; a cluster
        // not initialized is bootstrapped by this node.
        assert_eq!(
            leaderless_initialized(&keys(sysid, None, &["pg1", "pg2"]), "pg1"),
            None
        );
        assert_eq!(
            leaderless_initialized(&keys(sysid, Some("pg2"), &[]), "pg1"),
            None
        );
        assert_eq!(leaderless_initialized(&keys(None, None, &[]), "pg1"), None);
    }
}
