//! Site settings: where things live on a host and the cluster-wide defaults
//! for Patroni, etcd and the REST API, with cross-field validation.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod validate;

pub use validate::{duplicate_keys, expand};

/// The file read when a task names no settings.
pub const DEFAULT_SETTINGS_PATH: &str = "/etc/pgherd/settings.yaml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The operating-system user that owns PostgreSQL's files and runs
    /// Patroni (PostgreSQL refuses to run as root).
    pub sysuser: String,
    /// Its group; the user's primary group when unset.
    pub sysgroup: Option<String>,
    pub postgresql: PostgresqlSettings,
    pub patroni: PatroniSettings,
    /// pgBackRest, for instances given the `pgbackrest` option.
    pub pgbackrest: PgBackRestSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sysuser: "postgres".into(),
            sysgroup: None,
            postgresql: PostgresqlSettings::default(),
            patroni: PatroniSettings::default(),
            pgbackrest: PgBackRestSettings::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresqlSettings {
    /// The version used when a task gives none.
    pub default_version: String,
    pub bindir: String,
    pub datadir: String,
    /// A separate WAL directory (`initdb --waldir`); none by default.
    pub waldir: Option<String>,
    /// PostgreSQL's configuration directory (Patroni's `config_dir`),
    /// outside the data directory: Debian's `/etc/postgresql/{version}/{name}`
    /// makes the instance a cluster of postgresql-common's. None by default
    /// (the data directory).
    pub confdir: Option<String>,
    pub socket_directory: String,
    /// PostgreSQL's own log directory (logging_collector).
    pub logdir: String,
    /// The instance's client password file (superuser and replication
    /// entries), for the DBA's tools and pgherd's own checks.
    pub passfile: String,
    pub superuser: String,
    pub replication_role: String,
    pub rewind_role: String,
    /// Authentication method of the generated `host` pg_hba entries.
    pub auth_method: String,
    /// Authentication method of the generated `local` pg_hba entries.
    pub local_auth_method: String,
    /// A tera template for pg_hba.conf; the built-in one when unset.
    pub pg_hba_template: Option<PathBuf>,
    pub initdb: InitdbSettings,
    /// SSL of the replication and rewind connections between members.
    pub client_ssl: Option<ClientSsl>,
}

/// libpq SSL options of the connections members make to each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSsl {
    pub sslmode: Option<SslMode>,
    pub sslrootcert: Option<PathBuf>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Default for PostgresqlSettings {
    fn default() -> Self {
        PostgresqlSettings {
            default_version: "15".into(),
            bindir: "/usr/lib/postgresql/{version}/bin".into(),
            datadir: "/var/lib/postgresql/{version}/{name}".into(),
            waldir: None,
            confdir: None,
            socket_directory: "/run/postgresql".into(),
            logdir: "/var/log/postgresql/{version}-{name}".into(),
            passfile: "/etc/patroni/{version}-{name}.pgpass".into(),
            superuser: "postgres".into(),
            replication_role: "replication".into(),
            rewind_role: "rewind".into(),
            auth_method: "scram-sha-256".into(),
            local_auth_method: "peer".into(),
            pg_hba_template: None,
            initdb: InitdbSettings::default(),
            client_ssl: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InitdbSettings {
    pub encoding: String,
    pub locale: String,
    pub data_checksums: bool,
}

impl Default for InitdbSettings {
    fn default() -> Self {
        InitdbSettings {
            encoding: "UTF8".into(),
            locale: "C.UTF-8".into(),
            data_checksums: true,
        }
    }
}

/// How Patroni is run on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ServiceManager {
    /// systemd when it is the init system, else a supervised process.
    #[default]
    Auto,
    Systemd,
    Process,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatroniSettings {
    pub execpath: PathBuf,
    pub configpath: String,
    /// Patroni's own log directory (`log.dir`).
    pub logdir: String,
    /// Pid files of Patroni processes started without systemd.
    pub piddir: String,
    /// The password file Patroni itself writes before pg_basebackup and
    /// pg_rewind (`postgresql.pgpass`).
    pub pgpass: String,
    pub service: ServiceManager,
    pub use_pg_rewind: bool,
    pub ttl: u32,
    pub loop_wait: u32,
    pub retry_timeout: u32,
    pub maximum_lag_on_failover: u64,
    pub create_replica_methods: Vec<String>,
    pub etcd: EtcdSettings,
    pub restapi: RestApiSettings,
    pub ctl: Option<CtlSettings>,
    pub watchdog: Option<WatchdogSettings>,
    /// Free-form Patroni configuration merged over the generated one
    /// (before each instance's own `conf_settings`); null deletes a key.
    pub overrides: serde_yaml::Mapping,
}

impl Default for PatroniSettings {
    fn default() -> Self {
        PatroniSettings {
            execpath: PathBuf::from("/usr/bin/patroni"),
            configpath: "/etc/patroni/{version}-{name}.yaml".into(),
            logdir: "/var/log/patroni/{version}-{name}".into(),
            piddir: "/run/patroni".into(),
            pgpass: "/var/lib/postgresql/{version}-{name}.pgpass".into(),
            service: ServiceManager::Auto,
            use_pg_rewind: true,
            ttl: 30,
            loop_wait: 10,
            retry_timeout: 10,
            maximum_lag_on_failover: 1024 * 1024,
            create_replica_methods: vec!["basebackup".into()],
            etcd: EtcdSettings::default(),
            restapi: RestApiSettings::default(),
            ctl: None,
            watchdog: None,
            overrides: serde_yaml::Mapping::new(),
        }
    }
}

/// Where pgBackRest is and the repository its stanzas live in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PgBackRestSettings {
    pub execpath: PathBuf,
    /// The configuration file of each instance (`--config`): one per
    /// instance, since instances sharing a host may share a stanza.
    pub configpath: String,
    pub repository: RepositorySettings,
    /// pgBackRest's log directory (`log-path`).
    pub logpath: String,
    /// pgBackRest's lock directory (`lock-path`), made for the instance's
    /// user when missing.
    pub lockpath: String,
    /// More `[global]` options, as pgBackRest names them
    /// (`compress-type`, `process-max`, ...).
    pub global_options: std::collections::BTreeMap<String, String>,
}

impl PgBackRestSettings {
    /// Whether the repository is a directory the members reach (a local
    /// path or a shared mount), rather than on a repository host or in
    /// object storage (`repo1-type` s3, gcs, azure in `global_options`).
    pub fn repository_is_local(&self) -> bool {
        self.repository.host.is_none()
            && self
                .global_options
                .get("repo1-type")
                .is_none_or(|t| t == "posix" || t == "cifs")
    }
}

impl Default for PgBackRestSettings {
    fn default() -> Self {
        PgBackRestSettings {
            execpath: PathBuf::from("/usr/bin/pgbackrest"),
            configpath: "/etc/pgbackrest/{version}-{name}.conf".into(),
            repository: RepositorySettings::default(),
            logpath: "/var/log/pgbackrest".into(),
            lockpath: "/tmp/pgbackrest".into(),
            global_options: std::collections::BTreeMap::new(),
        }
    }
}

/// The repository: a path every member reaches (local, or a shared mount),
/// or that path on a repository host reached over TLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepositorySettings {
    pub path: String,
    /// Full backups kept (`repo1-retention-full`).
    pub retention_full: u32,
    /// A repository host running pgBackRest's TLS server: `path` is then
    /// its path there, and members reach it through `repo1-host-*`.
    pub host: Option<RepositoryHost>,
}

impl Default for RepositorySettings {
    fn default() -> Self {
        RepositorySettings {
            path: "/var/lib/pgbackrest".into(),
            retention_full: 2,
            host: None,
        }
    }
}

/// The repository host as a member reaches it: by the name its server
/// certificate carries (pgBackRest checks the name, never an address),
/// with this member's certificate, whose CN the repository host's
/// `tls-server-auth` authorizes for the stanza.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryHost {
    pub name: String,
    #[serde(default = "default_repository_port")]
    pub port: u16,
    pub cafile: PathBuf,
    pub certfile: PathBuf,
    pub keyfile: PathBuf,
    /// The repository host's own pgBackRest configuration directory
    /// (`--config-path`: `pgbackrest.conf` and `conf.d/`), which lists the
    /// members: read where backups run, on the repository host.
    #[serde(default = "default_repository_config_path")]
    pub config_path: PathBuf,
}

#[cfg(test)]
impl RepositoryHost {
    /// A repository host named `name` for tests: the default port and
    /// configuration directory, certificate files under /tls.
    pub fn example(name: &str) -> RepositoryHost {
        RepositoryHost {
            name: name.into(),
            port: default_repository_port(),
            cafile: "/tls/ca.pem".into(),
            certfile: "/tls/pg1.pem".into(),
            keyfile: "/tls/pg1.key".into(),
            config_path: default_repository_config_path(),
        }
    }
}

fn default_repository_port() -> u16 {
    8432
}

fn default_repository_config_path() -> PathBuf {
    "/etc/pgbackrest".into()
}

/// Options pgherd writes itself into a pgBackRest configuration, besides
/// the stanza's `pg1-*`.
pub const PGBACKREST_OWN_OPTIONS: [&str; 10] = [
    "repo1-path",
    "repo1-retention-full",
    "log-path",
    "lock-path",
    "repo1-host",
    "repo1-host-type",
    "repo1-host-port",
    "repo1-host-ca-file",
    "repo1-host-cert-file",
    "repo1-host-key-file",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Http,
    Https,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdSettings {
    /// `host:port` of each etcd member.
    pub hosts: Vec<String>,
    pub protocol: Protocol,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Patroni's `namespace`: the key prefix of all clusters.
    pub namespace: String,
    /// Site-wide etcd credentials; an instance's own take precedence.
    pub username: Option<String>,
    pub password: Option<String>,
}

impl Default for EtcdSettings {
    fn default() -> Self {
        EtcdSettings {
            hosts: vec!["127.0.0.1:2379".into()],
            protocol: Protocol::Http,
            cacert: None,
            cert: None,
            key: None,
            namespace: "/service/".into(),
            username: None,
            password: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyClient {
    None,
    Optional,
    Required,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RestApiSettings {
    pub cafile: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub verify_client: Option<VerifyClient>,
    pub allowlist: Vec<String>,
    pub allowlist_include_members: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CtlSettings {
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub cacert: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WatchdogMode {
    #[default]
    Off,
    Automatic,
    Required,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WatchdogSettings {
    pub mode: WatchdogMode,
    pub device: Option<PathBuf>,
    pub safety_margin: Option<i64>,
}

/// Where a task's settings come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SettingsSource {
    /// The default file, or built-in defaults when it does not exist.
    Default,
    File(PathBuf),
    /// A mapping given in the task itself.
    Inline(serde_json::Value),
}

impl SettingsSource {
    /// A settings file when one is named, else the default.
    pub fn file_or_default(path: Option<&Path>) -> SettingsSource {
        path.map_or(SettingsSource::Default, |p| {
            SettingsSource::File(p.to_path_buf())
        })
    }
}

impl Settings {
    /// Loads and validates the settings from `source`.
    pub fn load(source: &SettingsSource) -> Result<Settings> {
        let settings = match source {
            SettingsSource::Default => {
                let path = Path::new(DEFAULT_SETTINGS_PATH);
                if path.exists() {
                    Settings::from_file(path)?
                } else {
                    Settings::default()
                }
            }
            SettingsSource::File(path) => Settings::from_file(path)?,
            SettingsSource::Inline(value) => {
                // Through YAML, so errors carry the same key paths as a file.
                let text = serde_yaml::to_string(value).map_err(|e| Error::Settings {
                    origin: "the inline settings".into(),
                    msg: e.to_string(),
                })?;
                Settings::from_yaml(&text, "the inline settings")?
            }
        };
        settings.validate()?;
        Ok(settings)
    }

    fn from_file(path: &Path) -> Result<Settings> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Settings {
            origin: path.display().to_string(),
            msg: format!("cannot read it: {e}"),
        })?;
        Settings::from_yaml(&text, &path.display().to_string())
    }

    /// Parses settings YAML; an empty document means all defaults.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Settings> {
        if text.trim().is_empty() {
            return Ok(Settings::default());
        }
        // The YAML parser places a duplicate at the first occurrence of its
        // mapping: say where both are.
        let twice = duplicate_keys(text);
        if !twice.is_empty() {
            return Err(Error::Settings {
                origin: origin.to_string(),
                msg: twice.join("; "),
            });
        }
        serde_yaml::from_str(text).map_err(|e| Error::Settings {
            origin: origin.to_string(),
            msg: e.to_string(),
        })
    }
}
