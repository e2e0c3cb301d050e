//! The keys Patroni keeps for one cluster, sorted into their layout.

use std::collections::BTreeMap;

use serde_json::Value;

/// What Patroni keeps in the DCS for one cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterKeys {
    /// The key prefix, ending in '/'.
    pub prefix: String,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Value>,
    pub config: Option<Value>,
    pub initialize: Option<String>,
    pub sync: Option<Value>,
    pub failover: Option<Value>,
    pub history: Option<Value>,
    pub status: Option<Value>,
    /// Every key found, in order, for check mode and removal reports.
    pub all_keys: Vec<String>,
}

impl ClusterKeys {
    pub fn is_empty(&self) -> bool {
        self.all_keys.is_empty()
    }

    /// `host:port` of each member's REST API, from its `api_url`.
    pub fn member_api_addresses(&self) -> Vec<(String, String)> {
        self.members
            .iter()
            .filter_map(|(name, v)| {
                let url = v["api_url"].as_str()?;
                Some((name.clone(), api_address(url)?))
            })
            .collect()
    }
}

/// `http://h:8008/patroni` -> `h:8008`.
pub fn api_address(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host_port = rest.split('/').next()?;
    (!host_port.is_empty()).then(|| host_port.to_string())
}

/// The key prefix of a cluster: Patroni joins the namespace and the scope.
pub fn cluster_prefix(namespace: &str, scope: &str) -> String {
    format!("{}/{}/", namespace.trim_end_matches('/'), scope)
}

/// Sorts raw key/values into Patroni's layout; unparsable JSON is kept as
/// a string rather than lost.
pub fn parse_cluster_keys(prefix: &str, kvs: &[(String, String)]) -> ClusterKeys {
    let json =
        |v: &str| serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.to_string()));
    let mut keys = ClusterKeys {
        prefix: prefix.to_string(),
        ..ClusterKeys::default()
    };
    for (key, value) in kvs {
        keys.all_keys.push(key.clone());
        let Some(rest) = key.strip_prefix(prefix) else {
            continue;
        };
        match rest {
            "leader" => keys.leader = Some(value.clone()),
            "config" => keys.config = Some(json(value)),
            "initialize" => keys.initialize = Some(value.clone()),
            "sync" => keys.sync = Some(json(value)),
            "failover" => keys.failover = Some(json(value)),
            "history" => keys.history = Some(json(value)),
            "status" => keys.status = Some(json(value)),
            other => {
                if let Some(name) = other.strip_prefix("members/") {
                    keys.members.insert(name.to_string(), json(value));
                }
            }
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_joins_namespace_and_scope_with_one_slash() {
        assert_eq!(cluster_prefix("/service/", "main"), "/service/main/");
        assert_eq!(cluster_prefix("/service", "main"), "/service/main/");
    }

    #[test]
    fn keys_are_sorted_into_patroni_layout() {
        let p = "/service/c/";
        let kvs = vec![
            (format!("{p}config"), r#"{"ttl": 20}"#.to_string()),
            (format!("{p}initialize"), "7710".to_string()),
            (format!("{p}leader"), "pg1".to_string()),
            (
                format!("{p}members/pg1"),
                r#"{"api_url": "http://127.0.0.11:8008/patroni", "role": "primary"}"#.to_string(),
            ),
            (format!("{p}members/pg2"), "not json".to_string()),
            (
                format!("{p}history"),
                "[[1, 100, \"no recovery target\"]]".to_string(),
            ),
        ];
        let k = parse_cluster_keys(p, &kvs);
        assert_eq!(k.leader.as_deref(), Some("pg1"));
        assert_eq!(k.initialize.as_deref(), Some("7710"));
        assert_eq!(k.config.unwrap()["ttl"], 20);
        assert_eq!(k.members.len(), 2);
        assert_eq!(k.members["pg2"], Value::String("not json".into()));
        assert_eq!(k.all_keys.len(), 6);
        let k = parse_cluster_keys(p, &kvs);
        assert_eq!(
            k.member_api_addresses(),
            vec![("pg1".to_string(), "127.0.0.11:8008".to_string())]
        );
    }

    #[test]
    fn api_addresses_come_from_urls() {
        assert_eq!(
            api_address("https://h:8008/patroni").as_deref(),
            Some("h:8008")
        );
        assert_eq!(api_address("h:8008").as_deref(), Some("h:8008"));
        assert_eq!(api_address("http:///x"), None);
    }
}
