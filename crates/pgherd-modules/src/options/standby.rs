//! The `standby_cluster` option: what a new cluster follows when it is a
//! standby cluster.

use pgherd_core::names::check_port;
use pgherd_core::standby::StandbyCluster;
use serde::Deserialize;

use super::InstanceOptions;

#[derive(Debug, Clone, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct StandbyClusterOptions {
    pub host: Option<String>,
    pub port: Option<i64>,
    pub primary_slot_name: Option<String>,
    pub restore_command: Option<String>,
    pub create_replica_methods: Option<Vec<String>>,
}

/// What a standby cluster follows, checked: a host that is not the node's
/// own, a valid port and slot name; given once (not also in
/// `dynamic_conf_settings`).
pub(super) fn standby_cluster(
    opts: &InstanceOptions,
    own_hosts: &[&str],
    problems: &mut Vec<String>,
) -> Option<StandbyCluster> {
    let given = opts.standby_cluster.as_ref()?;
    if opts
        .dynamic_conf_settings
        .as_ref()
        .is_some_and(|d| d.contains_key("standby_cluster"))
    {
        problems.push(
            "standby_cluster is given both as an option and in dynamic_conf_settings: keep the \
             option"
                .into(),
        );
    }
    let port = given
        .port
        .and_then(|p| match check_port("standby_cluster.port", p) {
            Ok(p) => Some(p),
            Err(e) => {
                problems.push(e);
                None
            }
        });
    let out = StandbyCluster {
        hosts: StandbyCluster::hosts_of(given.host.as_deref().unwrap_or_default()),
        port,
        primary_slot_name: given.primary_slot_name.clone(),
        restore_command: given.restore_command.clone(),
        create_replica_methods: given.create_replica_methods.clone().unwrap_or_default(),
    };
    problems.extend(out.problems(own_hosts));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::problems;
    use serde_json::json;

    #[test]
    fn a_standby_cluster_following_this_node_or_given_twice_is_refused() {
        let own = json!({"name": "m", "patroni": {"postgresql": {"connect_host": "10.0.0.9"}},
                         "standby_cluster": {"host": "10.0.0.1,10.0.0.9", "port": 70000}});
        let text = problems(own).join("\n");
        assert!(
            text.contains("10.0.0.9 is this node's own address"),
            "{text}"
        );
        assert!(text.contains("standby_cluster.port"), "{text}");
        let twice = json!({"name": "m", "standby_cluster": {"host": "10.0.0.1"},
                           "dynamic_conf_settings": {"standby_cluster": {"host": "10.0.0.2"}}});
        assert_eq!(
            problems(twice),
            vec![
                "standby_cluster is given both as an option and in dynamic_conf_settings: keep \
                  the option"
            ]
        );
        assert!(problems(json!({"name": "m", "standby_cluster": {"host": "10.0.0.1"}})).is_empty());
    }
}
