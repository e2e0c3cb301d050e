//! A standby cluster: a Patroni cluster whose leader (the standby leader)
//! follows another cluster's primary, by streaming from it or by replaying
//! WAL from a repository, until it is promoted (the disaster-recovery
//! failover). Patroni keeps it as `standby_cluster` in the dynamic
//! configuration: written at bootstrap from the instance's option, removed
//! from it by a promotion.

use serde_json::{json, Map, Value};

use crate::names::check_host;

/// What a standby cluster follows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StandbyCluster {
    /// The primary cluster's hosts (libpq tries them in turn; Patroni then
    /// asks for a read-write one).
    pub hosts: Vec<String>,
    pub port: Option<u16>,
    /// The primary's permanent slot this cluster streams through.
    pub primary_slot_name: Option<String>,
    /// How the standby leader fetches WAL it cannot stream (pgBackRest's
    /// `archive-get`).
    pub restore_command: Option<String>,
    /// How the standby leader is built: `basebackup` from the primary, or
    /// a method of the instance's configuration (pgBackRest's restore).
    pub create_replica_methods: Vec<String>,
}

impl StandbyCluster {
    /// From `standby_cluster` of a dynamic configuration, if it has one.
    pub fn from_config(config: &Value) -> Option<StandbyCluster> {
        let s = config.get("standby_cluster")?.as_object()?;
        let text = |k: &str| s.get(k).and_then(Value::as_str).map(str::to_string);
        Some(StandbyCluster {
            hosts: Self::hosts_of(&text("host").unwrap_or_default()),
            port: s
                .get("port")
                .and_then(|p| p.as_u64().or_else(|| p.as_str()?.parse().ok()))
                .and_then(|p| u16::try_from(p).ok()),
            primary_slot_name: text("primary_slot_name"),
            restore_command: text("restore_command"),
            create_replica_methods: s
                .get("create_replica_methods")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// The hosts of a `host` value: comma-separated, blanks dropped.
    pub fn hosts_of(host: &str) -> Vec<String> {
        host.split(',')
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .collect()
    }

    /// As Patroni's dynamic configuration spells it.
    pub fn to_config(&self) -> Value {
        let mut out = Map::new();
        if !self.hosts.is_empty() {
            out.insert("host".into(), json!(self.hosts.join(",")));
        }
        if let Some(p) = self.port {
            out.insert("port".into(), json!(p));
        }
        if let Some(s) = &self.primary_slot_name {
            out.insert("primary_slot_name".into(), json!(s));
        }
        if let Some(c) = &self.restore_command {
            out.insert("restore_command".into(), json!(c));
        }
        if !self.create_replica_methods.is_empty() {
            out.insert(
                "create_replica_methods".into(),
                json!(self.create_replica_methods),
            );
        }
        Value::Object(out)
    }

    /// `host:port` of each primary host (PostgreSQL's 5432 when no port is
    /// given).
    pub fn primary_addresses(&self) -> Vec<String> {
        let port = self.port.unwrap_or(5432);
        self.hosts
            .iter()
            .map(|h| {
                if h.contains(':') {
                    format!("[{h}]:{port}")
                } else {
                    format!("{h}:{port}")
                }
            })
            .collect()
    }

    /// One line naming what it follows, for messages.
    pub fn describe(&self) -> String {
        match (self.hosts.is_empty(), &self.restore_command) {
            (false, _) => self.primary_addresses().join(","),
            (true, Some(c)) => format!("restore_command {c:?}"),
            (true, None) => "nothing".into(),
        }
    }

    /// What is wrong with it, for an instance whose PostgreSQL other
    /// members reach at `own_hosts`: each a sentence naming the option.
    pub fn problems(&self, own_hosts: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        if self.hosts.is_empty() && self.restore_command.is_none() {
            out.push(
                "standby_cluster needs host (the primary cluster's) or restore_command (WAL from a \
                 repository), or both"
                    .into(),
            );
        }
        for h in &self.hosts {
            if let Err(e) = check_host("standby_cluster.host", h) {
                out.push(e);
            } else if own_hosts.iter().any(|o| o.eq_ignore_ascii_case(h)) {
                out.push(format!(
                    "standby_cluster.host {h} is this node's own address: a standby cluster \
                     follows another cluster's primary"
                ));
            }
        }
        if let Some(s) = &self.primary_slot_name {
            let valid = !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid {
                out.push(format!(
                    "standby_cluster.primary_slot_name {s:?} is not a replication slot name \
                     (lower-case letters, digits and _, at most 63)"
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(v: Value) -> StandbyCluster {
        StandbyCluster::from_config(&json!({ "standby_cluster": v })).unwrap()
    }

    #[test]
    fn read_from_and_written_as_patronis_dynamic_configuration() {
        let s = of(json!({"host": "10.0.0.1, 10.0.0.2", "port": "5433",
                          "primary_slot_name": "dr", "create_replica_methods": ["basebackup"]}));
        assert_eq!(s.hosts, ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(s.port, Some(5433));
        assert_eq!(s.primary_addresses(), ["10.0.0.1:5433", "10.0.0.2:5433"]);
        assert_eq!(
            s.to_config(),
            json!({"host": "10.0.0.1,10.0.0.2", "port": 5433, "primary_slot_name": "dr",
                   "create_replica_methods": ["basebackup"]})
        );
        assert_eq!(StandbyCluster::from_config(&json!({"ttl": 30})), None);
        assert_eq!(
            StandbyCluster::from_config(&json!({"standby_cluster": null})),
            None
        );
        assert_eq!(of(json!({"host": "db"})).primary_addresses(), ["db:5432"]);
    }

    #[test]
    fn problems_name_the_option() {
        let table: &[(Value, &str)] = &[
            (json!({"host": "10.0.0.1"}), ""),
            (
                json!({"restore_command": "pgbackrest archive-get %f %p"}),
                "",
            ),
            (json!({}), "needs host"),
            (json!({"host": "10.0.0.9"}), "own address"),
            (json!({"host": "bad host"}), "standby_cluster.host"),
            (
                json!({"host": "10.0.0.1", "primary_slot_name": "DR-site"}),
                "primary_slot_name",
            ),
        ];
        for (given, expected) in table {
            let problems = of(given.clone()).problems(&["10.0.0.9", "db9"]);
            if expected.is_empty() {
                assert!(problems.is_empty(), "{given}: {problems:?}");
            } else {
                assert!(
                    problems.iter().any(|p| p.contains(expected)),
                    "{given}: {problems:?}"
                );
            }
        }
    }
}
