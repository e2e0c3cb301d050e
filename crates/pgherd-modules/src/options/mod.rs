//! The options of an `instance` task, typed as Ansible passes them (the
//! module's contract), and their conversion into core's
//! [`InstanceManifest`]: names, addresses and credentials checked, every
//! problem reported at once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pgherd_core::error::{Error, Result};
use pgherd_core::manifest::{local_hostname, InstanceManifest, SettingsCopy, DEFAULT_RESTAPI_PORT};
use pgherd_core::names::{check_port, Name, PgVersion};
use pgherd_core::plan::Content;
use pgherd_core::settings::Settings;
use serde::Deserialize;
use serde_json::Value;

mod backup;
mod node;
mod standby;
mod upgrade;

use backup::backup_and_restore;
pub use backup::{restore_source, PgBackRestOptions, RestoreOptions};
use node::{addresses, login, tags, Addresses};
pub use node::{Credentials, NodePatroniOptions, PostgresqlOptions, RestApiOptions, TagsOptions};
use standby::standby_cluster;
pub use standby::StandbyClusterOptions;
pub use upgrade::UpgradeOptions;
use upgrade::{major_upgrade, restart_outdated};

/// The options of an `instance` task as the module receives them (after
/// argument validation): every option of the spec, none other.
#[derive(Debug, Clone, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct InstanceOptions {
    pub state: Option<String>,
    pub settings: Value,
    pub wait_timeout: Option<i64>,
    pub name: String,
    pub version: Option<String>,
    pub port: Option<i64>,
    pub patroni: Option<NodePatroniOptions>,
    pub surole_password: Option<String>,
    pub replrole_password: Option<String>,
    pub rewind_password: Option<String>,
    pub parameters: Option<serde_json::Map<String, Value>>,
    pub pg_hba: Option<Vec<String>>,
    pub member_addresses: Option<Vec<String>>,
    pub force: Option<bool>,
    pub conf_settings: Option<serde_json::Map<String, Value>>,
    pub dynamic_conf_settings: Option<serde_json::Map<String, Value>>,
    pub standby_cluster: Option<StandbyClusterOptions>,
    pub pgbackrest: Option<PgBackRestOptions>,
    pub restore: Option<RestoreOptions>,
    pub upgrade: Option<UpgradeOptions>,
    pub restart_outdated: Option<Vec<String>>,
    pub settings_file: Option<String>,
}

/// Types and checks the options; every problem is reported at once.
pub fn manifest(opts: &InstanceOptions, settings: &Settings) -> Result<InstanceManifest> {
    let mut problems = Vec::new();
    let mut name_of = |what: &str, s: &str| match Name::parse(what, s) {
        Ok(n) => Some(n),
        Err(e) => {
            problems.push(e);
            None
        }
    };
    let name = name_of("name", &opts.name);
    let patroni = opts.patroni.clone().unwrap_or_default();
    let hostname = local_hostname();
    // A host name with dots is not a node name: keep its first label.
    let short_host = hostname
        .split('.')
        .next()
        .unwrap_or("localhost")
        .to_string();
    let cluster = match &patroni.cluster {
        Some(c) => name_of("patroni.cluster", c),
        None => name.clone(),
    };
    let node = name_of(
        "patroni.node",
        patroni.node.as_deref().unwrap_or(short_host.as_str()),
    );

    let (version, port) = version_and_port(opts, settings, &mut problems);

    let Addresses {
        pg_connect_host,
        pg_listen,
        restapi_connect_address,
        restapi_listen,
    } = addresses(&patroni, &hostname, &mut problems);
    let restapi_auth = login(
        "patroni.restapi.authentication",
        patroni
            .restapi
            .as_ref()
            .and_then(|a| a.authentication.as_ref()),
        &mut problems,
    );
    let etcd_auth = login("patroni.etcd", patroni.etcd.as_ref(), &mut problems);
    let tags = tags(patroni.tags.as_ref(), node.as_ref(), &mut problems);

    let pg_hba = checked_pg_hba(opts, &mut problems);
    let member_addresses = member_addresses(opts, &mut problems);
    let parameters = checked_parameters(opts, &mut problems);

    let (pgbackrest_stanza, restore) = backup_and_restore(opts, &mut problems);
    let settings_copy = settings_copy(opts, &mut problems);
    let standby_cluster = standby_cluster(opts, &[&pg_connect_host, &pg_listen], &mut problems);
    let upgrade = major_upgrade(opts, version.as_ref(), &mut problems);
    let restart_outdated = restart_outdated(opts, &mut problems);

    match (name, cluster, node, version) {
        (Some(name), Some(cluster), Some(node), Some(version)) if problems.is_empty() => {
            Ok(InstanceManifest {
                name,
                version,
                port,
                cluster,
                node,
                restapi_listen,
                restapi_connect_address,
                restapi_auth,
                pg_listen,
                pg_connect_host,
                etcd_auth,
                surole_password: opts.surole_password.clone(),
                replrole_password: opts.replrole_password.clone(),
                rewind_password: opts.rewind_password.clone(),
                parameters,
                pg_hba,
                conf_settings: opts.conf_settings.clone().unwrap_or_default(),
                dynamic_conf_settings: opts.dynamic_conf_settings.clone().unwrap_or_default(),
                standby_cluster,
                pgbackrest_stanza,
                pgbackrest_new_repository: opts
                    .pgbackrest
                    .as_ref()
                    .and_then(|b| b.new_repository)
                    .unwrap_or(false),
                restore,
                upgrade,
                settings_copy,
                tags,
                member_addresses,
                force: opts.force.unwrap_or(false),
                restart_outdated,
            })
        }
        _ => Err(Error::InvalidManifest(problems)),
    }
}

/// The PostgreSQL version (the settings' default when not given) and port.
fn version_and_port(
    opts: &InstanceOptions,
    settings: &Settings,
    problems: &mut Vec<String>,
) -> (Option<PgVersion>, u16) {
    let version_text = opts
        .version
        .clone()
        .unwrap_or_else(|| settings.postgresql.default_version.clone());
    let version = match PgVersion::parse(&version_text) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(format!("version: {e}"));
            None
        }
    };
    let port = match check_port("port", opts.port.unwrap_or(5432)) {
        Ok(p) => p,
        Err(e) => {
            problems.push(e);
            5432
        }
    };
    (version, port)
}

/// The task's pg_hba lines, each one line PostgreSQL would accept.
fn checked_pg_hba(opts: &InstanceOptions, problems: &mut Vec<String>) -> Vec<String> {
    let pg_hba = opts.pg_hba.clone().unwrap_or_default();
    for (i, entry) in pg_hba.iter().enumerate() {
        if entry.contains('\n') || entry.trim().is_empty() {
            problems.push(format!(
                "pg_hba[{i}] must be one non-empty pg_hba.conf line"
            ));
        } else if let Err(e) = pgherd_core::pg_hba::check_entry(entry) {
            problems.push(format!("pg_hba[{i}] ({entry:?}): {e}"));
        }
    }
    pg_hba
}

/// The members' addresses as pg_hba.conf takes them.
fn member_addresses(opts: &InstanceOptions, problems: &mut Vec<String>) -> Vec<String> {
    let Some(given) = &opts.member_addresses else {
        return Vec::new();
    };
    if given.is_empty() {
        problems.push(
            "member_addresses is empty: no member could replicate; name the members' addresses, \
             or leave the option out to let the replication role in from anywhere"
                .into(),
        );
    }
    let mut out = Vec::new();
    for (i, a) in given.iter().enumerate() {
        match pgherd_core::pg_hba::member_address(a) {
            Ok(a) if !out.contains(&a) => out.push(a),
            Ok(_) => {}
            Err(e) => problems.push(format!("member_addresses[{i}]: {e}")),
        }
    }
    out
}

/// The parameters, each a scalar.
fn checked_parameters(
    opts: &InstanceOptions,
    problems: &mut Vec<String>,
) -> BTreeMap<String, Value> {
    let parameters: BTreeMap<String, Value> = opts
        .parameters
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    for (key, value) in &parameters {
        if matches!(value, Value::Object(_) | Value::Array(_)) {
            problems.push(format!(
                "parameters.{key} must be a string, number or boolean"
            ));
        }
    }
    parameters
}

/// The file the inline settings are kept in (`settings_file`); none for a
/// removal, which leaves the host's settings file as it is.
fn settings_copy(opts: &InstanceOptions, problems: &mut Vec<String>) -> Option<SettingsCopy> {
    let path = opts.settings_file.as_deref()?;
    let path = PathBuf::from(pgherd_ansible::validate::expand_path(path));
    if !path.is_absolute() {
        problems.push(format!(
            "option 'settings_file' must be an absolute path, not {:?}",
            path.display().to_string()
        ));
        return None;
    }
    let Value::Object(_) = &opts.settings else {
        problems.push(
            "option 'settings_file' keeps the settings given inline: give 'settings' as a \
             mapping, or leave 'settings_file' out when 'settings' names the file"
                .into(),
        );
        return None;
    };
    if opts.state.as_deref() == Some("absent") {
        return None;
    }
    let yaml = match serde_yaml::to_value(&opts.settings) {
        Ok(yaml) => yaml,
        Err(e) => {
            problems.push(format!("option 'settings': {e}"));
            return None;
        }
    };
    let text = format!(
        "# Written by pgherd from the instance task's settings: change them there.\n{}",
        pgherd_core::yaml::to_yaml_string(&yaml)
    );
    Some(SettingsCopy {
        path,
        content: Content(text.into_bytes()),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    pub(in crate::options) fn opts(v: Value) -> InstanceOptions {
        serde_json::from_value(v).unwrap()
    }

    pub(in crate::options) fn problems(v: Value) -> Vec<String> {
        match manifest(&opts(v), &Settings::default()) {
            Ok(_) => Vec::new(),
            Err(Error::InvalidManifest(p)) => p,
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn defaults_follow_the_connect_host() {
        let m = manifest(
            &opts(
                json!({"name": "main", "patroni": {"cluster": "pg", "node": "pg1",
                "postgresql": {"connect_host": "127.0.0.11"}}}),
            ),
            &Settings::default(),
        )
        .unwrap();
        assert_eq!(m.version.as_str(), "15");
        assert_eq!(m.port, 5432);
        assert_eq!(m.pg_listen, "127.0.0.11");
        assert_eq!(m.restapi_connect_address, "127.0.0.11:8008");
        assert_eq!(m.restapi_listen, "127.0.0.11:8008");
        assert_eq!(m.cluster.as_str(), "pg");
        assert_eq!(m.qualified_name(), "15-main");
    }

    #[test]
    fn cluster_defaults_to_the_instance_name() {
        let m = manifest(&opts(json!({"name": "main"})), &Settings::default()).unwrap();
        assert_eq!(m.cluster.as_str(), "main");
    }

    #[test]
    fn bad_names_and_addresses_are_all_reported() {
        let p = problems(json!({"name": "../x", "port": 70000, "version": "15.1",
            "patroni": {"cluster": "a b", "node": "", "restapi": {"listen": "nohostport"},
                         "postgresql": {"connect_host": "bad host"}}}));
        let text = p.join("\n");
        for needle in [
            "name \"../x\"",
            "port must be between 1 and 65535, got 70000",
            "version: PostgreSQL version",
            "patroni.cluster \"a b\"",
            "patroni.node must not be empty",
            "patroni.restapi.listen",
            "patroni.postgresql.connect_host",
        ] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
    }

    #[test]
    fn half_given_credentials_are_refused() {
        let p = problems(json!({"name": "m", "patroni": {"etcd": {"username": "u"}}}));
        assert_eq!(
            p,
            vec!["patroni.etcd.username is set without patroni.etcd.password"]
        );
    }

    #[test]
    fn pg_hba_entries_are_single_lines() {
        let p =
            problems(json!({"name": "m", "pg_hba": ["host all all 0/0 md5\nlocal all all trust"]}));
        assert_eq!(p, vec!["pg_hba[0] must be one non-empty pg_hba.conf line"]);
    }

    #[test]
    fn inline_settings_are_kept_as_yaml_that_reads_back_the_same() {
        let settings = json!({
            "postgresql": {"datadir": "/srv/pg/{version}/{name}", "bindir": "/usr/lib/postgresql/{version}/bin"},
            "patroni": {"ttl": 30, "etcd": {"hosts": ["10.0.0.1:2379", "10.0.0.2:2379"], "password": "on"}},
            "pgbackrest": {"global_options": {"repo1-cipher-pass": "yes: no\nmaybe"}},
        });
        let m = manifest(
            &opts(
                json!({"name": "m", "settings": settings, "settings_file": "/etc/pgherd/s.yaml"}),
            ),
            &Settings::default(),
        )
        .unwrap();
        let copy = m.settings_copy.unwrap();
        assert_eq!(copy.path, PathBuf::from("/etc/pgherd/s.yaml"));
        let text = String::from_utf8(copy.content.0).unwrap();
        let read: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(read, settings, "{text}");
    }

    #[test]
    fn settings_file_needs_inline_settings_and_an_absolute_path() {
        let p = problems(
            json!({"name": "m", "settings": "/etc/pgherd/a.yaml", "settings_file": "/etc/pgherd/b.yaml"}),
        );
        assert!(
            p.len() == 1 && p[0].contains("give 'settings' as a mapping"),
            "{p:?}"
        );
        let p = problems(json!({"name": "m", "settings_file": "/etc/pgherd/b.yaml"}));
        assert!(
            p.len() == 1 && p[0].contains("give 'settings' as a mapping"),
            "{p:?}"
        );
        let p = problems(json!({"name": "m", "settings": {}, "settings_file": "pgherd.yaml"}));
        assert!(p.len() == 1 && p[0].contains("absolute path"), "{p:?}");
        let removal =
            json!({"name": "m", "state": "absent", "settings": {}, "settings_file": "/s.yaml"});
        let m = manifest(&opts(removal), &Settings::default()).unwrap();
        assert!(m.settings_copy.is_none());
    }
}
