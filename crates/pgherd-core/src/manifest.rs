//! The instance manifest: one host's PostgreSQL + Patroni node, typed and
//! checked (the `instance` module builds it from its options).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::names::{Name, PgVersion};
use crate::plan::Content;

/// Where a restored node's data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreSource {
    /// The pgBackRest repository: this node becomes the new leader.
    Backup {
        set: Option<String>,
        target: RecoveryTarget,
    },
    /// A new copy from the (restored) leader.
    Leader,
}

/// How far a restore replays the archived WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Every archived WAL segment.
    Latest,
    /// Only until the backup is consistent.
    Immediate,
    /// Until this time (ISO 8601, with offset).
    Time(String),
}

/// A major upgrade of the cluster this node belongs to, from the
/// instance of an older major on this host (`pg_upgrade --link` on the
/// leader, a new copy of it on the others).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MajorUpgrade {
    /// The major the instance runs now.
    pub from: PgVersion,
    /// The member upgraded in place; the others copy it again.
    pub leader: Name,
}

/// A username with its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    pub password: String,
}

/// The task's inline settings, also kept in a file on the host for what
/// reads them from one (the `pgherd` command, tasks naming the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsCopy {
    pub path: PathBuf,
    /// The settings as YAML.
    pub content: Content,
}

/// The default port of Patroni's REST API.
pub const DEFAULT_RESTAPI_PORT: u16 = 8008;

/// The instance, typed and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceManifest {
    pub name: Name,
    pub version: PgVersion,
    pub port: u16,
    pub cluster: Name,
    pub node: Name,
    /// `host:port` the REST API binds to.
    pub restapi_listen: String,
    /// `host:port` other members and clients use to reach the REST API.
    pub restapi_connect_address: String,
    pub restapi_auth: Option<Login>,
    /// Addresses PostgreSQL listens on (`listen_addresses`), without port.
    pub pg_listen: String,
    /// The host other members use to reach PostgreSQL.
    pub pg_connect_host: String,
    pub etcd_auth: Option<Login>,
    pub surole_password: Option<String>,
    pub replrole_password: Option<String>,
    pub rewind_password: Option<String>,
    pub parameters: BTreeMap<String, Value>,
    pub pg_hba: Vec<String>,
    pub conf_settings: serde_json::Map<String, Value>,
    pub dynamic_conf_settings: serde_json::Map<String, Value>,
    /// What the cluster follows when it is a standby cluster (written into
    /// `bootstrap.dcs`: a new cluster only).
    pub standby_cluster: Option<crate::standby::StandbyCluster>,
    /// The pgBackRest stanza, when the instance archives to and is
    /// restored from pgBackRest.
    pub pgbackrest_stanza: Option<Name>,
    /// The user states that the stanza's repository changes: without it, a
    /// repository other than the one the instance archives to is refused.
    pub pgbackrest_new_repository: bool,
    /// A restore this run does.
    pub restore: Option<RestoreSource>,
    /// A major upgrade this run does (or resumes, or finds done).
    pub upgrade: Option<MajorUpgrade>,
    /// Where the run keeps a copy of the task's inline settings.
    pub settings_copy: Option<SettingsCopy>,
    /// Patroni's tags of this member.
    pub tags: crate::tags::NodeTags,
    /// Where the cluster's members connect from (pg_hba.conf's form): the
    /// replication and rewind roles are let in from there only; empty,
    /// from anywhere.
    pub member_addresses: Vec<String>,
    /// `absent` removes the member even when it leads the others or is
    /// the synchronous standby none can replace.
    pub force: bool,
    /// The programs restarted when they run another version than the one
    /// installed (a minor upgrade).
    pub restart_outdated: Vec<crate::versions::Program>,
}

/// The host name of this machine, the default node name and connect host.
pub fn local_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes and we stop at the first NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl InstanceManifest {
    /// `<version>-<name>`: the Debian naming of configs and services.
    pub fn qualified_name(&self) -> String {
        format!("{}-{}", self.version, self.name)
    }

    /// The same instance of the major `upgrade.from`: what a major upgrade
    /// finds on the host and replaces.
    pub fn before_upgrade(&self) -> Option<InstanceManifest> {
        let up = self.upgrade.as_ref()?;
        Some(InstanceManifest {
            version: up.from.clone(),
            upgrade: None,
            ..self.clone()
        })
    }
}

#[cfg(test)]
impl InstanceManifest {
    /// Instance `main` of PostgreSQL 15 on port 5432, node pg1 of cluster
    /// main on 127.0.0.1, with no password: for tests.
    pub(crate) fn example() -> InstanceManifest {
        let name = |what: &str, s: &str| Name::parse(what, s).unwrap();
        InstanceManifest {
            name: name("name", "main"),
            version: PgVersion::parse("15").unwrap(),
            port: 5432,
            cluster: name("cluster", "main"),
            node: name("node", "pg1"),
            restapi_listen: "127.0.0.1:8008".into(),
            restapi_connect_address: "127.0.0.1:8008".into(),
            restapi_auth: None,
            pg_listen: "127.0.0.1".into(),
            pg_connect_host: "127.0.0.1".into(),
            etcd_auth: None,
            surole_password: None,
            replrole_password: None,
            rewind_password: None,
            parameters: BTreeMap::new(),
            pg_hba: Vec::new(),
            conf_settings: serde_json::Map::new(),
            dynamic_conf_settings: serde_json::Map::new(),
            standby_cluster: None,
            pgbackrest_stanza: None,
            pgbackrest_new_repository: false,
            restore: None,
            upgrade: None,
            settings_copy: None,
            tags: Default::default(),
            member_addresses: Vec::new(),
            force: false,
            restart_outdated: Vec::new(),
        }
    }
}
