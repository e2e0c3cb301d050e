//! The `instance` return value: where the node lives and what Patroni says of it.

use super::*;

/// A member of the cluster, as the instance facts show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemberFacts {
    pub name: String,
    pub role: String,
    pub state: String,
    pub host: String,
    pub timeline: Option<u64>,
    pub lag: Option<Value>,
}

/// The `instance` return value.
#[derive(Debug, Clone, Serialize, Default)]
pub struct InstanceFacts {
    pub name: String,
    pub version: String,
    pub port: u16,
    pub cluster: String,
    pub node: String,
    pub data_dir: String,
    pub config: String,
    pub passfile: Option<String>,
    /// The instance's pgBackRest configuration, with a stanza (what a
    /// repository host names in `pgN-host-config`).
    pub pgbackrest_config: Option<String>,
    pub restapi: String,
    /// Whether Patroni runs.
    pub running: bool,
    pub role: Option<String>,
    pub state: Option<String>,
    /// A replica's replication state (`streaming`, `in archive recovery`).
    pub replication_state: Option<String>,
    pub timeline: Option<u64>,
    pub pending_restart: bool,
    pub pending_restart_parameters: Vec<String>,
    pub members: Vec<MemberFacts>,
    /// With a major upgrade: where it stood when the run began
    /// (`before`, `unfinished`, `linked`, `upgraded`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_stage: Option<String>,
    /// PostgreSQL's and Patroni's versions, running and installed (when
    /// Patroni answers).
    pub versions: Option<crate::versions::Versions>,
    /// The programs that run another version than the one installed
    /// (restarted by `restart_outdated`).
    pub outdated: Vec<crate::versions::Program>,
    /// On the leader with a stanza: its backups and archiving.
    pub backups: Option<BackupFacts>,
}

pub(super) fn member_facts(c: &ClusterStatus) -> Vec<MemberFacts> {
    c.members
        .iter()
        .map(|m| MemberFacts {
            name: m.name.clone(),
            role: m.role.clone(),
            state: m.state.clone(),
            host: m.host.clone(),
            timeline: m.timeline,
            lag: m.lag.clone(),
        })
        .collect()
}

impl Node<'_> {
    /// Facts, with the live state when Patroni answers: as `seen` a
    /// moment ago when given, else asked (the member's own view only when
    /// `known` does not hold it from this run's observation, which nothing
    /// has changed since).
    pub(super) fn facts(
        &self,
        running: bool,
        seen: Option<(NodeStatus, ClusterStatus)>,
        known: Option<NodeStatus>,
        warnings: &mut Vec<String>,
    ) -> InstanceFacts {
        let mut f = InstanceFacts {
            name: self.m.name.to_string(),
            version: self.m.version.to_string(),
            port: self.m.port,
            cluster: self.m.cluster.to_string(),
            node: self.m.node.to_string(),
            data_dir: self.paths.data_dir.display().to_string(),
            config: self.paths.config.display().to_string(),
            passfile: has_passfile(self.m).then(|| self.paths.passfile.display().to_string()),
            pgbackrest_config: match (&self.m.pgbackrest_stanza, &self.paths.pgbackrest) {
                (Some(_), Some(files)) => Some(files.config.display().to_string()),
                _ => None,
            },
            restapi: self.m.restapi_connect_address.clone(),
            running,
            ..InstanceFacts::default()
        };
        if !running {
            return f;
        }
        // The installed PostgreSQL's version is asked while Patroni is.
        let installed = crate::versions::PendingVersion::start(&self.paths.bin_dir);
        let (status, cluster) = match seen {
            Some((s, c)) => (Ok(s), Ok(c)),
            None => match self.rest(POLL_REQUEST_TIMEOUT) {
                Ok(rest) => rest.patroni_and_cluster(known),
                Err(e) => {
                    warnings.push(e.to_string());
                    return f;
                }
            },
        };
        match status {
            Ok(s) => {
                let versions = self.versions_with(Some(&s), installed.finish());
                f.outdated = versions.outdated();
                f.versions = Some(versions);
                f.role = Some(s.role.clone());
                f.state = Some(s.state.clone());
                f.replication_state = s.replication_state.clone();
                f.timeline = s.timeline;
                f.pending_restart = s.pending_restart;
                f.pending_restart_parameters = s.pending_restart_reason.keys().cloned().collect();
            }
            Err(e) => warnings.push(e.to_string()),
        }
        match cluster {
            Ok(c) => f.members = member_facts(&c),
            Err(e) => warnings.push(e.to_string()),
        }
        f
    }
}
