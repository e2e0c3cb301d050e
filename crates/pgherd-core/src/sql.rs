//! Queries to the local PostgreSQL through its own `psql`, over the unix
//! socket, as the instance's OS user: what Patroni reports is checked
//! against what PostgreSQL itself says.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fs::Account;
use crate::manifest::InstanceManifest;
use crate::paths::InstancePaths;
use crate::settings::Settings;

/// Separates fields in psql's unaligned output.
const FIELD_SEPARATOR: char = '\u{1f}';

/// How long one statement may take: pgherd's are catalog reads and small
/// settings changes; one that does not end (a lock, a server that stopped
/// answering) is an error, not a hung run.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

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

/// The port and first socket directory of the postmaster running on
/// `data_dir`, from its `postmaster.pid` (lines 4 and 5).
fn running_address(data_dir: &std::path::Path) -> Option<(u16, PathBuf)> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let pid: i32 = lines.first()?.trim().parse().ok()?;
    if !crate::service::process_alive(pid) {
        return None;
    }
    let port = lines.get(3)?.trim().parse().ok()?;
    let socket = lines.get(4)?.trim();
    (!socket.is_empty()).then(|| (port, PathBuf::from(socket)))
}

impl Psql {
    pub fn for_instance(
        settings: &Settings,
        m: &InstanceManifest,
        paths: &InstancePaths,
        run_as: Option<Account>,
    ) -> Psql {
        // A running PostgreSQL is reached where it listens, which is not
        // where the configuration says until it restarts.
        let (port, socket_dir) =
            running_address(&paths.data_dir).unwrap_or_else(|| (m.port, paths.socket_dir.clone()));
        Psql {
            psql: paths.bin_dir.join("psql"),
            socket_dir,
            port,
            user: settings.postgresql.superuser.clone(),
            passfile: paths.passfile.exists().then(|| paths.passfile.clone()),
            run_as,
        }
    }

    /// Runs one statement; rows of fields.
    pub fn query(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        let mut cmd = crate::process::command(&self.psql, self.run_as.as_ref());
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
        .env("PGAPPNAME", "pgherd");
        if let Some(p) = &self.passfile {
            cmd.env("PGPASSFILE", p);
        }
        let out = crate::process::run(
            &mut cmd,
            &format!("psql on {}:{}", self.socket_dir.display(), self.port),
            QUERY_TIMEOUT,
            String::new,
        )?;
        if !out.status.success() {
            return Err(Error::Other(format!(
                "psql on {}:{}: {}",
                self.socket_dir.display(),
                self.port,
                out.stderr.trim()
            )));
        }
        Ok(out
            .stdout
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

    /// The lines of pg_hba.conf, as on disk now, that PostgreSQL rejects:
    /// `line N: error`. While there are any, PostgreSQL keeps the rules it
    /// loaded before.
    pub fn hba_file_errors(&self) -> Result<Vec<String>> {
        Ok(self
            .query(
                "select line_number, error from pg_hba_file_rules \
                 where error is not null order by line_number",
            )?
            .into_iter()
            .map(|r| format!("line {}: {}", r[0], r.get(1).cloned().unwrap_or_default()))
            .collect())
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
