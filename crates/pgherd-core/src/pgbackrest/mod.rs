//! pgBackRest for an instance: its configuration file, the commands Patroni
//! runs with it (WAL archiving, WAL fetching, building a replica from a
//! backup), and what pgherd runs itself: stanza creation, backups and
//! restores, each as the instance's OS user and with a deadline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::fs::Account;
use crate::logs::{last_lines, tail_note};
use crate::manifest::{InstanceManifest, RecoveryTarget};
use crate::paths::{InstancePaths, PgBackRestPaths};
use crate::settings::Settings;

mod find;
mod repo;

pub use find::{global_option, local_instance, local_member, on_repository_host};
pub use repo::{choose_backup, iso_utc, parse_info, BackupSet, StanzaInfo};

/// The kinds of backup pgBackRest takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupKind {
    Full,
    Diff,
    Incr,
}

impl BackupKind {
    pub fn parse(s: &str) -> Option<BackupKind> {
        match s {
            "full" => Some(BackupKind::Full),
            "diff" => Some(BackupKind::Diff),
            "incr" => Some(BackupKind::Incr),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Diff => "diff",
            BackupKind::Incr => "incr",
        }
    }
}

/// One instance's stanza and how to run pgBackRest for it.
#[derive(Debug, Clone)]
pub struct PgBackRest {
    pub execpath: PathBuf,
    /// The instance's configuration file (`--config`), or the repository
    /// host's configuration directory (`--config-path`, `config_dir`).
    pub config: PathBuf,
    pub config_dir: bool,
    pub stanza: String,
    pub data_dir: PathBuf,
    pub repository: PathBuf,
    pub log_dir: PathBuf,
    pub lock_dir: PathBuf,
    /// Run as this account when pgherd runs as root.
    pub run_as: Option<Account>,
    /// The configuration's text when its file does not hold it yet (check
    /// mode): commands read a private copy, removed after.
    pub unwritten_config: Option<String>,
}

/// A private copy of a configuration not written yet, removed on drop.
struct TempConfig(PathBuf);

impl TempConfig {
    fn write(text: &str, run_as: Option<&Account>) -> Result<TempConfig> {
        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "pgherd-pgbackrest-{}-{}.conf",
            std::process::id(),
            COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        crate::fs::write_atomic(&path, text.as_bytes(), 0o600, run_as.map(|a| a.owner))?;
        Ok(TempConfig(path))
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Quotes a word for a shell (PostgreSQL runs archive_command and
/// restore_command through one) and for Patroni's shlex.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

impl PgBackRest {
    /// The instance's pgBackRest, when it has a stanza.
    pub fn for_instance(
        settings: &Settings,
        m: &InstanceManifest,
        paths: &InstancePaths,
        run_as: Option<Account>,
    ) -> Option<PgBackRest> {
        let stanza = m.pgbackrest_stanza.as_ref()?;
        let files = paths.pgbackrest.as_ref()?;
        let mut b = PgBackRest::new(
            settings,
            files,
            stanza.to_string(),
            paths.data_dir.clone(),
            run_as,
        );
        // Before this run writes the configuration (check mode), commands
        // read the configuration to be, not an older one.
        let wanted = b.render_config(settings, m, paths);
        if std::fs::read_to_string(&b.config).ok().as_deref() != Some(wanted.as_str()) {
            b.unwritten_config = Some(wanted);
        }
        Some(b)
    }

    fn new(
        settings: &Settings,
        files: &PgBackRestPaths,
        stanza: String,
        data_dir: PathBuf,
        run_as: Option<Account>,
    ) -> PgBackRest {
        PgBackRest {
            execpath: settings.pgbackrest.execpath.clone(),
            config: files.config.clone(),
            config_dir: false,
            stanza,
            data_dir,
            repository: files.repository.clone(),
            log_dir: files.log_dir.clone(),
            lock_dir: files.lock_dir.clone(),
            run_as,
            unwritten_config: None,
        }
    }

    /// `pgbackrest --config=... --stanza=...`, quoted for a shell.
    fn command_line(&self) -> String {
        format!(
            "{} --config={} --stanza={}",
            shell_word(&self.execpath.display().to_string()),
            shell_word(&self.config.display().to_string()),
            shell_word(&self.stanza)
        )
    }

    /// PostgreSQL's `archive_command`.
    pub fn archive_command(&self) -> String {
        format!("{} archive-push \"%p\"", self.command_line())
    }

    /// PostgreSQL's `restore_command`, for replicas and recoveries.
    pub fn restore_command(&self) -> String {
        format!("{} archive-get %f \"%p\"", self.command_line())
    }

    /// The command Patroni runs to build a replica from the last backup:
    /// a delta restore into the data directory, as a standby.
    pub fn replica_command(&self) -> String {
        format!(
            "{} --pg1-path={} --delta --type=standby restore",
            self.command_line(),
            shell_word(&self.data_dir.display().to_string())
        )
    }

    /// The instance's configuration file.
    pub fn render_config(
        &self,
        settings: &Settings,
        m: &InstanceManifest,
        paths: &InstancePaths,
    ) -> String {
        let b = &settings.pgbackrest;
        let mut out = format!(
            "# pgBackRest configuration of {} (stanza {}), written by pgherd.\n\
             # Changes made here are replaced by the next run: set them in the settings.\n\
             [global]\n\
             repo1-path={}\n\
             repo1-retention-full={}\n\
             log-path={}\n\
             lock-path={}\n",
            m.qualified_name(),
            self.stanza,
            self.repository.display(),
            b.repository.retention_full,
            self.log_dir.display(),
            self.lock_dir.display(),
        );
        if let Some(h) = &b.repository.host {
            out.push_str(&format!(
                "repo1-host={}\n\
                 repo1-host-type=tls\n\
                 repo1-host-port={}\n\
                 repo1-host-ca-file={}\n\
                 repo1-host-cert-file={}\n\
                 repo1-host-key-file={}\n",
                h.name,
                h.port,
                h.cafile.display(),
                h.certfile.display(),
                h.keyfile.display()
            ));
        }
        for (key, value) in &b.global_options {
            out.push_str(&format!("{key}={value}\n"));
        }
        out.push_str(&format!(
            "\n[{}]\npg1-path={}\npg1-port={}\npg1-socket-path={}\npg1-user={}\n",
            self.stanza,
            paths.data_dir.display(),
            m.port,
            paths.socket_dir.display(),
            settings.postgresql.superuser
        ));
        out
    }

    /// Runs pgBackRest with `args` after `--config` and `--stanza`, within
    /// `timeout`; its standard output on success.
    fn run(&self, args: &[String], what: &str, timeout: Duration) -> Result<String> {
        let copy = match &self.unwritten_config {
            Some(text) => Some(TempConfig::write(text, self.run_as.as_ref())?),
            None => None,
        };
        let config = copy.as_ref().map_or(&self.config, |c| &c.0);
        let option = if self.config_dir {
            "config-path"
        } else {
            "config"
        };
        let mut cmd = crate::process::command(&self.execpath, self.run_as.as_ref());
        cmd.arg(format!("--{option}={}", config.display()))
            .arg(format!("--stanza={}", self.stanza))
            .args(args);
        let crate::process::Finished {
            status,
            stdout,
            stderr,
        } = crate::process::run(
            &mut cmd,
            &format!("pgbackrest {what} (stanza {})", self.stanza),
            timeout,
            || self.log_tail(args),
        )?;
        if status.success() {
            return Ok(stdout);
        }
        let said = last_lines(format!("{}\n{}", stdout.trim(), stderr.trim()).trim(), 6);
        Err(Error::Other(format!(
            "pgbackrest {what} (stanza {}, configuration {}) failed ({status}): {said}",
            self.stanza,
            self.config.display()
        )))
    }

    /// The last lines of the log of the command `args` ends with.
    fn log_tail(&self, args: &[String]) -> String {
        let command = args.last().map(String::as_str).unwrap_or_default();
        tail_note(
            &self.log_dir.join(format!("{}-{command}.log", self.stanza)),
            8,
        )
    }

    /// What the repository holds for the stanza.
    pub fn info(&self, timeout: Duration) -> Result<StanzaInfo> {
        let out = self.run(&["--output=json".into(), "info".into()], "info", timeout)?;
        parse_info(&out, &self.stanza)
    }

    /// Creates the stanza (the instance must be the primary), then checks
    /// that WAL archiving reaches the repository.
    pub fn create_stanza(&self, check_archiving: bool, timeout: Duration) -> Result<()> {
        self.run(&["stanza-create".into()], "stanza-create", timeout)?;
        if check_archiving {
            self.run(&["check".into()], "check", timeout)?;
        }
        Ok(())
    }

    /// Whether this pgBackRest can back up the data directory `data_dir`
    /// (a new major's, stopped): a stanza made for it alone in a
    /// repository of its own under `scratch`, which the caller removes.
    /// Refused with what pgBackRest said (a major it does not know).
    pub fn supports(&self, data_dir: &Path, scratch: &Path, timeout: Duration) -> Result<()> {
        let repo = scratch.join("repository");
        crate::fs::create_dir(&repo, 0o700, self.run_as.as_ref().map(|a| a.owner))?;
        let mut cmd = crate::process::command(&self.execpath, self.run_as.as_ref());
        cmd.arg("--config=/dev/null")
            .arg("--stanza=pgherd-check")
            .arg(format!("--pg1-path={}", data_dir.display()))
            .arg(format!("--repo1-path={}", repo.display()))
            .arg(format!("--lock-path={}", scratch.display()))
            .arg(format!("--log-path={}", scratch.display()))
            .args([
                "--log-level-file=off",
                "--log-level-console=error",
                "--no-online",
            ])
            .arg("stanza-create");
        let out = crate::process::run(&mut cmd, "pgbackrest stanza-create", timeout, String::new)?;
        if out.status.success() {
            return Ok(());
        }
        Err(Error::Other(format!(
            "pgBackRest ({}) cannot back up the new major's data directory: {}",
            self.execpath.display(),
            last_lines(
                format!("{}\n{}", out.stdout.trim(), out.stderr.trim()).trim(),
                4
            )
        )))
    }

    /// Upgrades the stanza to the data directory of the configuration (a
    /// new major, PostgreSQL stopped, after pg_upgrade).
    pub fn stanza_upgrade(&self, timeout: Duration) -> Result<()> {
        self.run(
            &["--no-online".into(), "stanza-upgrade".into()],
            "stanza-upgrade",
            timeout,
        )
        .map(|_| ())
    }

    /// Takes a backup of the primary.
    pub fn backup(&self, kind: BackupKind, timeout: Duration) -> Result<()> {
        self.run(
            &[format!("--type={}", kind.as_str()), "backup".into()],
            "backup",
            timeout,
        )
        .map(|_| ())
    }

    /// Restores the data directory (PostgreSQL stopped) from `set`, or the
    /// newest backup, with recovery up to `target`, then promotion.
    pub fn restore(
        &self,
        set: Option<&str>,
        target: &RecoveryTarget,
        timeout: Duration,
    ) -> Result<()> {
        let mut args = vec![
            format!("--pg1-path={}", self.data_dir.display()),
            "--delta".to_string(),
        ];
        if let Some(set) = set {
            args.push(format!("--set={set}"));
        }
        match target {
            RecoveryTarget::Latest => {}
            RecoveryTarget::Immediate => {
                args.push("--type=immediate".into());
                args.push("--target-action=promote".into());
            }
            RecoveryTarget::Time(t) => {
                args.push("--type=time".into());
                args.push(format!("--target={t}"));
                args.push("--target-action=promote".into());
            }
        }
        args.push("restore".into());
        self.run(&args, "restore", timeout).map(|_| ())
    }
}

/// Recovery settings a pgBackRest restore writes into
/// `postgresql.auto.conf`: reset once the restored node is promoted, so
/// that they do not reach its replicas' copies.
pub const RECOVERY_SETTINGS: [&str; 9] = [
    "restore_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_inclusive",
    "recovery_target_action",
    "recovery_target_timeline",
];

#[cfg(test)]
mod tests;
