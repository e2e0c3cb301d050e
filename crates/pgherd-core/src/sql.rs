//! Queries to the local PostgreSQL through its own `psql`, over the unix
//! socket, as the instance's OS user: what Patroni reports is checked
//! against what PostgreSQL itself says.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::fs::Account;
use crate::manifest::InstanceManifest;
use crate::paths::InstancePaths;
use crate::settings::Settings;

/// Separates fields in psql's unaligned output.
const FIELD_SEPARATOR: char = '\u{1f}';

#[derive(Debug, Clone)]
pub struct Psql {
    pub psql: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    pub user: String,
    pub passfile: Option<PathBuf>,
    /// Run as this account when pgherd runs as root.
    pub run_as: Option<Account>,
}

impl Psql {
    pub fn for_instance(
        settings: &Settings,
        m: &InstanceManifest,
        paths: &InstancePaths,
        run_as: Option<Account>,
    ) -> Psql {
        Psql {
            psql: paths.bin_dir.join("psql"),
            socket_dir: paths.socket_dir.clone(),
            port: m.port,
            user: settings.postgresql.superuser.clone(),
            passfile: paths.passfile.exists().then(|| paths.passfile.clone()),
            run_as,
        }
    }

    /// Runs one statement; rows of fields.
    pub fn query(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        let mut cmd = Command::new(&self.psql);
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            "postgres",
        ])
        .arg("-F")
        .arg(FIELD_SEPARATOR.to_string())
        .arg("-c")
        .arg(sql)
        .env("PGHOST", &self.socket_dir)
        .env("PGPORT", self.port.to_string())
        .env("PGUSER", &self.user)
        .env("PGCONNECT_TIMEOUT", "5")
        .env("PGAPPNAME", "pgherd")
        .stdin(Stdio::null());
        match &self.passfile {
            Some(p) => cmd.env("PGPASSFILE", p),
            None => cmd.env_remove("PGPASSFILE"),
        };
        if let Some(a) = &self.run_as {
            cmd.uid(a.owner.uid).gid(a.owner.gid).env("HOME", &a.home);
        }
        let out = cmd
            .output()
            .map_err(|e| Error::io(&self.psql, "running psql", e))?;
        if !out.status.success() {
            return Err(Error::Other(format!(
                "psql on {}:{}: {}",
                self.socket_dir.display(),
                self.port,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split(FIELD_SEPARATOR).map(str::to_string).collect())
            .collect())
    }

    /// The one value of a one-row, one-column query.
    pub fn value(&self, sql: &str) -> Result<String> {
        self.query(sql)?
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next())
            .ok_or_else(|| Error::Other(format!("psql: no row returned by {sql:?}")))
    }

    /// When PostgreSQL last read its configuration files.
    pub fn conf_load_time(&self) -> Result<String> {
        self.value("select pg_conf_load_time()")
    }

    /// Parameters changed in the files that wait for a restart.
    pub fn pending_restart_parameters(&self) -> Result<Vec<String>> {
        Ok(self
            .query("select name from pg_settings where pending_restart order by name")?
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .collect())
    }
}
