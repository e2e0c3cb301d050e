//! Who the node is to Patroni and the other members: its names,
//! addresses, the REST API's and etcd's credentials, and its tags, as the
//! task gives them, checked.

use serde::Deserialize;

use pgherd_core::manifest::Login;
use pgherd_core::names::{check_host, parse_host_port, Name};
use pgherd_core::tags::NodeTags;

use super::DEFAULT_RESTAPI_PORT;

#[derive(Debug, Clone, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct NodePatroniOptions {
    pub cluster: Option<String>,
    pub node: Option<String>,
    pub restapi: Option<RestApiOptions>,
    pub postgresql: Option<PostgresqlOptions>,
    pub etcd: Option<Credentials>,
    pub tags: Option<TagsOptions>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct TagsOptions {
    pub nofailover: Option<bool>,
    pub failover_priority: Option<i64>,
    pub noloadbalance: Option<bool>,
    pub nosync: Option<bool>,
    pub clonefrom: Option<bool>,
    pub replicatefrom: Option<String>,
    pub nostream: Option<bool>,
}

/// The node's tags, checked alone (against the members once the DCS is read).
pub(super) fn tags(
    t: Option<&TagsOptions>,
    node: Option<&Name>,
    problems: &mut Vec<String>,
) -> NodeTags {
    let Some(t) = t else {
        return NodeTags::default();
    };
    let replicatefrom = t.replicatefrom.as_deref().and_then(|s| {
        Name::parse("patroni.tags.replicatefrom", s)
            .map_err(|e| problems.push(e))
            .ok()
    });
    let out = NodeTags {
        nofailover: t.nofailover,
        failover_priority: t.failover_priority,
        noloadbalance: t.noloadbalance,
        nosync: t.nosync,
        clonefrom: t.clonefrom,
        replicatefrom,
        nostream: t.nostream,
    };
    if let Some(node) = node {
        problems.extend(out.problems(node));
    }
    out
}

#[derive(Debug, Clone, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct RestApiOptions {
    pub listen: Option<String>,
    pub connect_address: Option<String>,
    pub authentication: Option<Credentials>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct PostgresqlOptions {
    pub connect_host: Option<String>,
    pub listen: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
}

pub(super) fn login(
    what: &str,
    c: Option<&Credentials>,
    problems: &mut Vec<String>,
) -> Option<Login> {
    let c = c?;
    match (&c.username, &c.password) {
        (Some(u), Some(p)) => Some(Login {
            username: u.clone(),
            password: p.clone(),
        }),
        (None, None) => None,
        (Some(_), None) => {
            problems.push(format!("{what}.username is set without {what}.password"));
            None
        }
        (None, Some(_)) => {
            problems.push(format!("{what}.password is set without {what}.username"));
            None
        }
    }
}

/// Where PostgreSQL and the REST API listen and are reached.
pub(super) struct Addresses {
    pub pg_connect_host: String,
    pub pg_listen: String,
    pub restapi_connect_address: String,
    pub restapi_listen: String,
}

/// The addresses, each defaulting to the one before it (the connect host
/// to this host's name), checked.
pub(super) fn addresses(
    patroni: &NodePatroniOptions,
    hostname: &str,
    problems: &mut Vec<String>,
) -> Addresses {
    let pg = patroni.postgresql.clone().unwrap_or_default();
    let pg_connect_host = pg
        .connect_host
        .clone()
        .unwrap_or_else(|| hostname.to_string());
    if let Err(e) = check_host("patroni.postgresql.connect_host", &pg_connect_host) {
        problems.push(e);
    }
    let pg_listen = pg.listen.clone().unwrap_or_else(|| pg_connect_host.clone());
    for host in pg_listen.split(',') {
        if let Err(e) = check_host("patroni.postgresql.listen", host.trim()) {
            problems.push(e);
        }
    }

    let api = patroni.restapi.clone().unwrap_or_default();
    let restapi_connect_address = api
        .connect_address
        .clone()
        .unwrap_or_else(|| format!("{pg_connect_host}:{DEFAULT_RESTAPI_PORT}"));
    if let Err(e) = parse_host_port(&restapi_connect_address) {
        problems.push(format!("patroni.restapi.connect_address: {e}"));
    }
    let restapi_listen = api
        .listen
        .clone()
        .unwrap_or_else(|| restapi_connect_address.clone());
    if let Err(e) = parse_host_port(&restapi_listen) {
        problems.push(format!("patroni.restapi.listen: {e}"));
    }
    Addresses {
        pg_connect_host,
        pg_listen,
        restapi_connect_address,
        restapi_listen,
    }
}
