//! Where an instance's files live, from the settings' patterns: the one
//! place that knows it.

use std::path::PathBuf;

use crate::manifest::InstanceManifest;
use crate::settings::{expand, Settings};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancePaths {
    /// Patroni's configuration file.
    pub config: PathBuf,
    /// The instance's client password file (managed by pgherd).
    pub passfile: PathBuf,
    /// The password file Patroni writes for its own clones and rewinds.
    pub patroni_pgpass: PathBuf,
    pub data_dir: PathBuf,
    pub wal_dir: Option<PathBuf>,
    pub bin_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub pg_log_dir: PathBuf,
    pub patroni_log_dir: PathBuf,
    /// The pid file of a Patroni started without systemd.
    pub pid_file: PathBuf,
}

impl InstancePaths {
    pub fn new(settings: &Settings, m: &InstanceManifest) -> InstancePaths {
        let v = m.version.as_str();
        let n = m.name.as_str();
        let pg = &settings.postgresql;
        let p = &settings.patroni;
        let path = |pattern: &str| PathBuf::from(expand(pattern, v, n));
        InstancePaths {
            config: path(&p.configpath),
            passfile: path(&pg.passfile),
            patroni_pgpass: path(&p.pgpass),
            data_dir: path(&pg.datadir),
            wal_dir: pg.waldir.as_deref().map(path),
            bin_dir: path(&pg.bindir),
            socket_dir: path(&pg.socket_directory),
            pg_log_dir: path(&pg.logdir),
            patroni_log_dir: path(&p.logdir),
            pid_file: path(&p.piddir).join(format!("patroni-{}.pid", m.qualified_name())),
        }
    }
}

impl InstancePaths {
    /// Standard output and error of a Patroni started without systemd:
    /// what Patroni prints before its own log is set up.
    pub fn patroni_console_log(&self) -> PathBuf {
        self.patroni_log_dir.join("patroni.console.log")
    }

    /// The lock one run of pgherd holds while it changes the instance.
    pub fn lock_file(&self) -> PathBuf {
        self.pid_file.with_extension("lock")
    }
}
