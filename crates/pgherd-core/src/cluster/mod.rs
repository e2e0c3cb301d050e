//! Cluster-wide operations through Patroni's REST API and the DCS: read the
//! cluster, change its dynamic configuration, switch over, fail over, pause,
//! restart, reload, reinitialise, remove. Each observes, plans (check mode
//! stops there; see `planner`), applies, and confirms on the real cluster
//! (see `execute`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::dcs::{api_address, ClusterKeys, Dcs};
use crate::error::{Error, Result};
use crate::manifest::Login;
use crate::pgbackrest::{BackupKind, BackupSet};
use crate::rest::{snippet, ClusterStatus, Endpoint, Member, RestClient};
use crate::settings::Settings;
use crate::wait::{wait_until, Probe};

mod conn;
mod decide;
mod execute;
mod info;
mod lock;
pub mod planner;
mod promote;
mod remove;
mod roles;
mod run;
mod sync;
mod target;

use conn::*;
pub use decide::*;
pub use info::*;
pub use lock::*;
pub use remove::*;
use roles::*;
pub use run::*;

/// Timeout of one REST call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Timeout of the probe that tells whether a member's REST API answers.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the cluster is and how to talk to it.
#[derive(Debug, Clone)]
pub struct Target {
    pub scope: String,
    pub settings: Settings,
    /// A member's REST API (`host:port`); else found through the DCS.
    pub restapi: Option<String>,
    pub restapi_auth: Option<Login>,
    pub etcd_auth: Option<Login>,
    /// Deadline of every wait.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartMode {
    Pending,
    All,
}

/// What a task asks for; everything optional.
#[derive(Debug, Clone, Default)]
pub struct Operations {
    pub dynamic_config: Option<Map<String, Value>>,
    pub leader: Option<String>,
    pub scheduled_at: Option<String>,
    pub maximum_lag: Option<u64>,
    pub failover_to: Option<String>,
    pub force: bool,
    pub paused: Option<bool>,
    pub restart: Option<RestartMode>,
    pub restart_leader_by_switchover: bool,
    pub reload: bool,
    pub reinit: Vec<String>,
    pub remove: bool,
    pub system_identifier: Option<String>,
    /// The removal keeps the cluster's dynamic configuration (a major
    /// upgrade replaces the rest of its state).
    pub keep_config: bool,
    /// A backup on the leader, when it runs on this host.
    pub backup: Option<BackupKind>,
    /// A standby cluster promoted: its standby leader leads a primary
    /// cluster (the disaster-recovery failover).
    pub promote: bool,
}

/// One member as the `cluster` return value shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemberInfo {
    pub name: String,
    pub role: String,
    pub state: String,
    pub host: String,
    pub port: Option<u16>,
    pub timeline: Option<u64>,
    /// Bytes behind the leader; null for the leader or when unknown.
    pub lag: Option<u64>,
    pub pending_restart: bool,
    pub tags: BTreeMap<String, Value>,
    pub restapi: Option<String>,
    /// Whether its REST API answered when the cluster was read. When it
    /// did not, role and state are the last ones it published in the DCS
    /// (a dead leader keeps its key for up to a ttl).
    pub reachable: bool,
}

/// The `cluster` return value.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ClusterInfo {
    pub name: String,
    pub system_identifier: Option<String>,
    pub leader: Option<String>,
    pub sync_standbys: Vec<String>,
    pub paused: bool,
    pub members: Vec<MemberInfo>,
    pub config: Value,
    pub history: Value,
    /// `{at, from, to}` of a switchover waiting for its time.
    pub scheduled_switchover: Option<Value>,
}

impl ClusterInfo {
    fn member(&self, name: &str) -> Option<&MemberInfo> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The leader, if it runs.
    pub fn running_leader(&self) -> Option<&MemberInfo> {
        self.members
            .iter()
            .find(|m| m.role == "leader" && m.state == "running")
    }

    /// A standby cluster's standby leader, if it runs (streaming from the
    /// primary cluster, or replaying WAL it cannot stream).
    pub fn running_standby_leader(&self) -> Option<&MemberInfo> {
        self.members.iter().find(|m| {
            m.role == "standby_leader" && matches!(m.state.as_str(), "running" | "streaming")
        })
    }

    /// What the cluster follows, when it is a standby cluster.
    pub fn standby(&self) -> Option<crate::standby::StandbyCluster> {
        crate::standby::StandbyCluster::from_config(&self.config)
    }

    fn synchronous_mode(&self) -> bool {
        matches!(self.config.get("synchronous_mode"), Some(Value::Bool(true)))
            || self.config.get("synchronous_mode").and_then(Value::as_str) == Some("on")
    }

    fn maximum_lag_on_failover(&self) -> u64 {
        self.config
            .get("maximum_lag_on_failover")
            .and_then(Value::as_u64)
            .unwrap_or(1024 * 1024)
    }
}

/// What a task did or, in check mode, would do.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub changes: Vec<String>,
    pub diff: Vec<Value>,
    pub warnings: Vec<String>,
    pub info: ClusterInfo,
    /// The backup taken, as the repository lists it.
    pub backup: Option<BackupSet>,
    /// A backup was asked for, and another host takes it.
    pub backup_elsewhere: Option<Elsewhere>,
}

/// The host that takes a backup this one does not.
#[derive(Debug, Clone, PartialEq)]
pub enum Elsewhere {
    /// The leader's (a member's name).
    Leader(String),
    /// The repository host (its name).
    RepositoryHost(String),
}

impl std::fmt::Display for Elsewhere {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Elsewhere::Leader(name) => write!(f, "the leader {name} does not run on this host"),
            Elsewhere::RepositoryHost(name) => write!(
                f,
                "the repository host {name} takes the backups (pgBackRest backs up a remote \
                 repository there only), and this host is not it"
            ),
        }
    }
}
