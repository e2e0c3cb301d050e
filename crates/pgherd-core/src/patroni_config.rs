//! Patroni's YAML configuration, built as typed data from the settings and
//! the manifest, merged with overrides, serialised with a stable key order:
//! the same inputs always give the same bytes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use serde_yaml::Value;

use crate::error::{Error, Result};
use crate::manifest::{InstanceManifest, Login};
use crate::merge::{json_to_yaml, merge};
use crate::paths::InstancePaths;
use crate::pg_hba::render_pg_hba;
use crate::pgbackrest::PgBackRest;
use crate::settings::{ClientSsl, Protocol, Settings, SslMode, VerifyClient, WatchdogMode};
use crate::yaml::to_yaml_string;

#[derive(Debug, Serialize)]
pub struct PatroniConfig {
    pub scope: String,
    pub namespace: String,
    pub name: String,
    pub log: LogConfig,
    pub restapi: RestApiConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctl: Option<CtlConfig>,
    pub etcd3: EtcdConfig,
    pub bootstrap: BootstrapConfig,
    pub postgresql: PostgresqlConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watchdog: Option<WatchdogConfig>,
    pub tags: Tags,
}

#[derive(Debug, Serialize)]
pub struct LogConfig {
    pub dir: PathBuf,
    pub level: String,
}

#[derive(Debug, Serialize)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl From<&Login> for Credentials {
    fn from(l: &Login) -> Self {
        Credentials {
            username: l.username.clone(),
            password: l.password.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RestApiConfig {
    pub listen: String,
    pub connect_address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cafile: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certfile: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyfile: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_client: Option<VerifyClient>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Credentials>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowlist: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowlist_include_members: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct CtlConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certfile: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyfile: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cacert: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct EtcdConfig {
    pub hosts: Vec<String>,
    pub protocol: Protocol,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cacert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct BootstrapConfig {
    pub dcs: DcsConfig,
    /// `initdb` options: plain flags and `{option: value}` pairs.
    pub initdb: Vec<Value>,
}

#[derive(Debug, Serialize)]
pub struct DcsConfig {
    pub ttl: u32,
    pub loop_wait: u32,
    pub retry_timeout: u32,
    pub maximum_lag_on_failover: u64,
    pub postgresql: DcsPostgresql,
}

#[derive(Debug, Serialize)]
pub struct DcsPostgresql {
    pub use_pg_rewind: bool,
    pub use_slots: bool,
    pub parameters: BTreeMap<String, Value>,
}

#[derive(Debug, Serialize)]
pub struct PostgresqlConfig {
    pub listen: String,
    pub connect_address: String,
    pub data_dir: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_dir: Option<PathBuf>,
    pub bin_dir: PathBuf,
    pub pgpass: PathBuf,
    pub use_unix_socket: bool,
    pub use_unix_socket_repl: bool,
    pub authentication: PgAuthentication,
    pub parameters: BTreeMap<String, Value>,
    pub pg_hba: Vec<String>,
    pub use_pg_rewind: bool,
    pub create_replica_methods: Vec<String>,
    pub basebackup: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pgbackrest: Option<ReplicaMethod>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub recovery_conf: BTreeMap<String, Value>,
}

/// A custom replica creation method (`postgresql.<method>`).
#[derive(Debug, Serialize)]
pub struct ReplicaMethod {
    pub command: String,
    /// Patroni leaves the data directory for the command (a delta restore).
    pub keep_data: bool,
    /// Patroni adds no arguments of its own.
    pub no_params: bool,
}

#[derive(Debug, Serialize)]
pub struct PgAuthentication {
    pub superuser: Role,
    pub replication: Role,
    pub rewind: Role,
}

#[derive(Debug, Serialize)]
pub struct Role {
    pub username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sslmode: Option<SslMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sslrootcert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sslcert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sslkey: Option<PathBuf>,
}

impl Role {
    fn new(username: &str, password: Option<&String>, ssl: Option<&ClientSsl>) -> Role {
        Role {
            username: username.to_string(),
            password: password.cloned(),
            sslmode: ssl.and_then(|s| s.sslmode),
            sslrootcert: ssl.and_then(|s| s.sslrootcert.clone()),
            sslcert: ssl.and_then(|s| s.sslcert.clone()),
            sslkey: ssl.and_then(|s| s.sslkey.clone()),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct WatchdogConfig {
    pub mode: WatchdogMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safety_margin: Option<i64>,
}

/// The tags as written: the four booleans Patroni always knew, false
/// unless given (`nofailover` left out when only a `failover_priority` is
/// given: together they must agree), the others only when given.
#[derive(Debug, Serialize)]
pub struct Tags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nofailover: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover_priority: Option<i64>,
    pub noloadbalance: bool,
    pub clonefrom: bool,
    pub nosync: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicatefrom: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nostream: Option<bool>,
}

impl Tags {
    fn of(t: &crate::tags::NodeTags) -> Tags {
        Tags {
            nofailover: match (t.nofailover, t.failover_priority) {
                (None, Some(_)) => None,
                (given, _) => Some(given.unwrap_or(false)),
            },
            failover_priority: t.failover_priority,
            noloadbalance: t.noloadbalance.unwrap_or(false),
            clonefrom: t.clonefrom.unwrap_or(false),
            nosync: t.nosync.unwrap_or(false),
            replicatefrom: t.replicatefrom.as_ref().map(|n| n.to_string()),
            nostream: t.nostream,
        }
    }
}

fn single(key: &str, value: &str) -> Value {
    let mut m = serde_yaml::Mapping::new();
    m.insert(Value::from(key), Value::from(value));
    Value::Mapping(m)
}

/// Builds the typed configuration (before overrides).
pub fn build_patroni_config(
    settings: &Settings,
    m: &InstanceManifest,
    paths: &InstancePaths,
) -> Result<PatroniConfig> {
    let p = &settings.patroni;
    let etcd_login = crate::dcs::effective_login(m.etcd_auth.as_ref(), &p.etcd);
    Ok(PatroniConfig {
        scope: m.cluster.to_string(),
        namespace: p.etcd.namespace.clone(),
        name: m.node.to_string(),
        log: LogConfig {
            dir: paths.patroni_log_dir.clone(),
            level: "INFO".into(),
        },
        restapi: restapi_config(p, m),
        ctl: p.ctl.as_ref().map(|c| CtlConfig {
            certfile: c.certfile.clone(),
            keyfile: c.keyfile.clone(),
            cacert: c.cacert.clone(),
        }),
        etcd3: EtcdConfig {
            hosts: p.etcd.hosts.clone(),
            protocol: p.etcd.protocol,
            cacert: p.etcd.cacert.clone(),
            cert: p.etcd.cert.clone(),
            key: p.etcd.key.clone(),
            username: etcd_login.as_ref().map(|l| l.username.clone()),
            password: etcd_login.as_ref().map(|l| l.password.clone()),
        },
        bootstrap: BootstrapConfig {
            dcs: DcsConfig {
                ttl: p.ttl,
                loop_wait: p.loop_wait,
                retry_timeout: p.retry_timeout,
                maximum_lag_on_failover: p.maximum_lag_on_failover,
                postgresql: DcsPostgresql {
                    use_pg_rewind: p.use_pg_rewind,
                    use_slots: true,
                    parameters: BTreeMap::new(),
                },
            },
            initdb: initdb_options(settings, paths),
        },
        postgresql: postgresql_config(settings, m, paths)?,
        watchdog: p.watchdog.as_ref().map(|w| WatchdogConfig {
            mode: w.mode,
            device: w.device.clone(),
            safety_margin: w.safety_margin,
        }),
        tags: Tags::of(&m.tags),
    })
}

/// initdb's options: the settings' encoding, locale and checksums, and the
/// WAL directory when it is apart.
fn initdb_options(settings: &Settings, paths: &InstancePaths) -> Vec<Value> {
    let initdb = &settings.postgresql.initdb;
    let mut out = vec![
        single("encoding", &initdb.encoding),
        single("locale", &initdb.locale),
    ];
    if initdb.data_checksums {
        out.push(Value::from("data-checksums"));
    }
    if let Some(wal) = &paths.wal_dir {
        out.push(single("waldir", &wal.display().to_string()));
    }
    out
}

fn restapi_config(p: &crate::settings::PatroniSettings, m: &InstanceManifest) -> RestApiConfig {
    RestApiConfig {
        listen: m.restapi_listen.clone(),
        connect_address: m.restapi_connect_address.clone(),
        cafile: p.restapi.cafile.clone(),
        certfile: p.restapi.certfile.clone(),
        keyfile: p.restapi.keyfile.clone(),
        verify_client: p.restapi.verify_client,
        authentication: m.restapi_auth.as_ref().map(Credentials::from),
        allowlist: p.restapi.allowlist.clone(),
        allowlist_include_members: p.restapi.allowlist_include_members,
    }
}

/// The `postgresql` section: addresses, paths, roles, parameters, pg_hba,
/// and with pgBackRest, archiving, restore_command and replicas built from
/// the repository first.
fn postgresql_config(
    settings: &Settings,
    m: &InstanceManifest,
    paths: &InstancePaths,
) -> Result<PostgresqlConfig> {
    let (p, pg) = (&settings.patroni, &settings.postgresql);
    let pgbackrest = PgBackRest::for_instance(settings, m, paths, None);
    let mut create_replica_methods = p.create_replica_methods.clone();
    let mut recovery_conf = BTreeMap::new();
    if let Some(b) = &pgbackrest {
        recovery_conf.insert("restore_command".into(), Value::from(b.restore_command()));
        create_replica_methods.retain(|method| method != "pgbackrest");
        create_replica_methods.insert(0, "pgbackrest".into());
    }
    // Patroni takes several addresses with one port after the last one.
    let listen = format!(
        "{}:{}",
        m.pg_listen
            .split(',')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(","),
        m.port
    );
    Ok(PostgresqlConfig {
        listen,
        connect_address: format!("{}:{}", m.pg_connect_host, m.port),
        data_dir: paths.data_dir.clone(),
        config_dir: paths.conf_dir.clone(),
        bin_dir: paths.bin_dir.clone(),
        pgpass: paths.patroni_pgpass.clone(),
        use_unix_socket: true,
        use_unix_socket_repl: false,
        // The superuser connects through the socket; the others cross
        // the network between members, with the site's SSL options.
        authentication: PgAuthentication {
            superuser: Role::new(&pg.superuser, m.surole_password.as_ref(), None),
            replication: Role::new(
                &pg.replication_role,
                m.replrole_password.as_ref(),
                pg.client_ssl.as_ref(),
            ),
            rewind: Role::new(
                &pg.rewind_role,
                m.rewind_password.as_ref(),
                pg.client_ssl.as_ref(),
            ),
        },
        parameters: server_parameters(settings, m, paths, pgbackrest.as_ref()),
        pg_hba: render_pg_hba(settings, &m.pg_hba, &m.member_addresses)?,
        use_pg_rewind: p.use_pg_rewind,
        create_replica_methods,
        basebackup: vec![single("checkpoint", "fast")],
        pgbackrest: pgbackrest.as_ref().map(|b| ReplicaMethod {
            command: b.replica_command(),
            keep_data: true,
            no_params: true,
        }),
        recovery_conf,
    })
}

/// PostgreSQL's parameters: sockets and logs where the paths say, archiving
/// to pgBackRest's repository when it is configured, then the instance's
/// own parameters over them.
fn server_parameters(
    settings: &Settings,
    m: &InstanceManifest,
    paths: &InstancePaths,
    pgbackrest: Option<&PgBackRest>,
) -> BTreeMap<String, Value> {
    let mut parameters: BTreeMap<String, Value> = BTreeMap::new();
    parameters.insert(
        "unix_socket_directories".into(),
        Value::from(paths.socket_dir.display().to_string()),
    );
    parameters.insert("logging_collector".into(), Value::from("on"));
    parameters.insert(
        "log_directory".into(),
        Value::from(paths.pg_log_dir.display().to_string()),
    );
    // In a log directory instances share, each one's files carry its name,
    // so that they can be told apart and removed with it.
    if !settings.postgresql.logdir.contains("{name}") {
        parameters.insert(
            "log_filename".into(),
            Value::from(crate::paths::shared_log_filename(
                m.version.as_str(),
                m.name.as_str(),
            )),
        );
    }
    // With pgBackRest, every member archives when it leads.
    if let Some(b) = pgbackrest {
        parameters.insert("archive_mode".into(), Value::from("on"));
        parameters.insert("archive_command".into(), Value::from(b.archive_command()));
    }
    for (key, value) in &m.parameters {
        parameters.insert(key.clone(), json_to_yaml(value));
    }
    parameters
}

/// The configuration as it will be written: typed config, then the
/// settings' overrides, then the instance's `dynamic_conf_settings` (into
/// `bootstrap.dcs`) and `conf_settings` (into the whole), null deleting.
pub fn patroni_config_doc(
    settings: &Settings,
    m: &InstanceManifest,
    paths: &InstancePaths,
) -> Result<Value> {
    let typed = build_patroni_config(settings, m, paths)?;
    let mut doc = serde_yaml::to_value(&typed)
        .map_err(|e| Error::Other(format!("cannot serialise the Patroni configuration: {e}")))?;
    merge(
        &mut doc,
        &Value::Mapping(settings.patroni.overrides.clone()),
    );
    let mut dynamic = m.dynamic_conf_settings.clone();
    if let Some(standby) = &m.standby_cluster {
        dynamic
            .entry("standby_cluster")
            .or_insert_with(|| standby.to_config());
    }
    if !dynamic.is_empty() {
        let dynamic = json_to_yaml(&serde_json::Value::Object(dynamic));
        let mut wrapper = serde_yaml::Mapping::new();
        let mut bootstrap = serde_yaml::Mapping::new();
        bootstrap.insert(Value::from("dcs"), dynamic);
        wrapper.insert(Value::from("bootstrap"), Value::Mapping(bootstrap));
        merge(&mut doc, &Value::Mapping(wrapper));
    }
    merge(
        &mut doc,
        &json_to_yaml(&serde_json::Value::Object(m.conf_settings.clone())),
    );
    Ok(doc)
}

/// The configuration file's bytes: the document, under a header that names
/// the node and fingerprints the TLS files it reads.
pub fn render_patroni_config(
    settings: &Settings,
    m: &InstanceManifest,
    paths: &InstancePaths,
) -> Result<String> {
    let doc = patroni_config_doc(settings, m, paths)?;
    let body = to_yaml_string(&doc);
    Ok(format!(
        "# Patroni configuration of {} (cluster {}), written by pgherd.\n\
         # Changes made here are replaced by the next run: set them in the task.\n{}{body}",
        m.qualified_name(),
        m.cluster,
        crate::tls_files::header(&doc)
    ))
}

#[cfg(test)]
mod tests {
    use super::Tags;
    use crate::names::Name;
    use crate::tags::NodeTags;

    fn yaml(t: NodeTags) -> String {
        serde_yaml::to_string(&Tags::of(&t)).unwrap()
    }

    #[test]
    fn tags_as_written() {
        assert_eq!(
            yaml(NodeTags::default()),
            "nofailover: false\nnoloadbalance: false\nclonefrom: false\nnosync: false\n",
            "the four booleans of every configuration written so far"
        );
        // A priority alone: nofailover left out, or the two would disagree.
        assert_eq!(
            yaml(NodeTags {
                failover_priority: Some(0),
                noloadbalance: Some(true),
                replicatefrom: Some(Name::parse("node", "pg2").unwrap()),
                nostream: Some(false),
                ..NodeTags::default()
            }),
            "failover_priority: 0\nnoloadbalance: true\nclonefrom: false\nnosync: false\n\
             replicatefrom: pg2\nnostream: false\n"
        );
        assert!(yaml(NodeTags {
            nofailover: Some(true),
            failover_priority: Some(0),
            ..NodeTags::default()
        })
        .starts_with("nofailover: true\nfailover_priority: 0\n"));
    }
}
