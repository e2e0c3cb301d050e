//! pgBackRest for an instance: its configuration file, the commands Patroni
//! runs with it (WAL archiving, WAL fetching, building a replica from a
//! backup), and what pgherd runs itself: stanza creation, backups and
//! restores, each as the instance's OS user and with a deadline.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::{ClusterInfo, Target};
use crate::error::{Error, Result};
use crate::fs::Account;
use crate::logs::{last_lines, tail_note};
use crate::manifest::{InstanceManifest, RecoveryTarget};
use crate::paths::{InstancePaths, PgBackRestPaths};
use crate::settings::Settings;

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
    /// The instance's configuration file (`--config`).
    pub config: PathBuf,
    pub stanza: String,
    pub data_dir: PathBuf,
    pub repository: PathBuf,
    pub log_dir: PathBuf,
    /// Run as this account when pgherd runs as root.
    pub run_as: Option<Account>,
    /// The configuration's text, for runs before its file is written
    /// (check mode): they read a private copy, removed after.
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

/// A backup in the repository, as `pgbackrest info` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BackupSet {
    pub label: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix times.
    pub start: i64,
    pub stop: i64,
    /// Bytes of the database, and of the set in the repository.
    pub size: u64,
    pub repository_size: u64,
    /// The system identifier of the cluster it was taken from.
    pub system_identifier: Option<String>,
}

/// What the repository holds for a stanza.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StanzaInfo {
    /// Whether the stanza was created.
    pub exists: bool,
    /// The system identifiers of the clusters it holds (the last is current).
    pub system_identifiers: Vec<String>,
    /// Oldest first.
    pub backups: Vec<BackupSet>,
    /// pgBackRest's status line (`ok`, `no valid backups`, ...).
    pub status: String,
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

/// The system identifier as text: pgBackRest writes it as a JSON number
/// above 2^53, which must not pass through a float.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => n.as_u64().map(|u| u.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// Reads `pgbackrest info --output=json` for one stanza.
pub fn parse_info(json: &str, stanza: &str) -> Result<StanzaInfo> {
    let doc: Value = serde_json::from_str(json)
        .map_err(|e| Error::Other(format!("pgbackrest info printed no JSON ({e}): {json}")))?;
    let entry = doc
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == stanza))
        .ok_or_else(|| Error::Other(format!("pgbackrest info does not list stanza {stanza}")))?;
    let code = entry["status"]["code"].as_i64().unwrap_or(99);
    let status = entry["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // 1: missing stanza path, 3: missing stanza data.
    let exists = !matches!(code, 1 | 3);
    let mut ids = std::collections::BTreeMap::new();
    for db in entry["db"].as_array().into_iter().flatten() {
        if let (Some(id), Some(sysid)) = (db["id"].as_i64(), id_text(&db["system-id"])) {
            ids.insert(id, sysid);
        }
    }
    let backups = entry["backup"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["error"] != Value::Bool(true))
        .map(|b| BackupSet {
            label: b["label"].as_str().unwrap_or_default().to_string(),
            kind: b["type"].as_str().unwrap_or_default().to_string(),
            start: b["timestamp"]["start"].as_i64().unwrap_or_default(),
            stop: b["timestamp"]["stop"].as_i64().unwrap_or_default(),
            size: b["info"]["size"].as_u64().unwrap_or_default(),
            repository_size: b["info"]["repository"]["size"].as_u64().unwrap_or_default(),
            system_identifier: b["database"]["id"]
                .as_i64()
                .and_then(|id| ids.get(&id).cloned()),
        })
        .collect();
    Ok(StanzaInfo {
        exists,
        system_identifiers: ids.into_values().collect(),
        backups,
        status,
    })
}

/// Reads a child's output to its end, beside the wait for the child.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut text);
        }
        text
    })
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
        if !b.config.exists() {
            b.unwritten_config = Some(b.render_config(settings, m, paths));
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
            stanza,
            data_dir,
            repository: files.repository.clone(),
            log_dir: files.log_dir.clone(),
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
             log-path={}\n",
            m.qualified_name(),
            self.stanza,
            self.repository.display(),
            b.repository.retention_full,
            self.log_dir.display(),
        );
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
            Some(text) if !self.config.exists() => {
                Some(TempConfig::write(text, self.run_as.as_ref())?)
            }
            _ => None,
        };
        let config = copy.as_ref().map_or(&self.config, |c| &c.0);
        let mut cmd = crate::process::command(&self.execpath, self.run_as.as_ref());
        cmd.arg(format!("--config={}", config.display()))
            .arg(format!("--stanza={}", self.stanza))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a timeout ends the helpers it forks.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io(&self.execpath, "running pgbackrest", e))?;
        let pid = child.id() as i32;
        let out = drain(child.stdout.take());
        let err = drain(child.stderr.take());
        let waited = crate::process::wait_exit(
            &format!("pgbackrest {what} (stanza {})", self.stanza),
            &mut child,
            timeout,
            || self.log_tail(args),
        );
        let status = match waited {
            Ok(s) => s,
            Err(e) => {
                // SAFETY: kill(2) on the process group this run started.
                unsafe {
                    libc::kill(-pid, libc::SIGTERM);
                }
                let _ = child.wait();
                return Err(e);
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
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

/// What a backup task did, or in check mode would do.
#[derive(Debug, Clone)]
pub enum BackupOutcome {
    /// On this host, where the leader runs; the newest backup after it.
    Taken {
        change: String,
        backup: Option<BackupSet>,
    },
    /// The leader runs on another host, which takes the backup.
    Elsewhere { leader: String },
}

/// The stanza a pgBackRest configuration written by pgherd is for.
fn stanza_of(config: &str) -> Option<String> {
    config
        .lines()
        .filter_map(|l| l.trim().strip_prefix('[')?.strip_suffix(']'))
        .find(|section| *section != "global")
        .map(str::to_string)
}

/// This host's instance of the member `leader` of cluster `scope`, found
/// among the Patroni configurations the settings' pattern names.
fn local_member(settings: &Settings, scope: &str, leader: &str) -> Result<Option<PgBackRest>> {
    for (version, name, path) in crate::paths::local_instances(settings) {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(&text) else {
            continue;
        };
        if doc["scope"].as_str() != Some(scope) || doc["name"].as_str() != Some(leader) {
            continue;
        }
        let files = PgBackRestPaths::new(settings, &version, &name);
        let stanza = std::fs::read_to_string(&files.config)
            .ok()
            .and_then(|c| stanza_of(&c))
            .ok_or_else(|| {
                Error::Other(format!(
                    "the leader {leader} is instance {version}-{name} of this host, but it has \
                     no pgBackRest configuration ({}): give the instance the pgbackrest option",
                    files.config.display()
                ))
            })?;
        let data_dir = PathBuf::from(doc["postgresql"]["data_dir"].as_str().unwrap_or_default());
        let run_as = crate::lifecycle::run_as_account(settings)?;
        return Ok(Some(PgBackRest::new(
            settings, &files, stanza, data_dir, run_as,
        )));
    }
    Ok(None)
}

/// Takes a backup of the cluster on its leader when the leader runs on
/// this host; says where it runs otherwise. `info`: the cluster as the
/// caller has just read it.
pub fn backup_on_leader(
    target: &Target,
    info: &ClusterInfo,
    kind: BackupKind,
    check_mode: bool,
) -> Result<BackupOutcome> {
    let leader = info
        .running_leader()
        .map(|m| m.name.clone())
        .ok_or_else(|| {
            Error::Other(format!(
                "cluster {} has no running leader to back up",
                target.scope
            ))
        })?;
    let Some(b) = local_member(&target.settings, &target.scope, &leader)? else {
        return Ok(BackupOutcome::Elsewhere { leader });
    };
    let change = format!(
        "take a {} backup of cluster {} on its leader {leader} (stanza {})",
        kind.as_str(),
        target.scope,
        b.stanza
    );
    if check_mode {
        return Ok(BackupOutcome::Taken {
            change,
            backup: None,
        });
    }
    b.backup(kind, target.timeout)?;
    let after = b.info(target.timeout)?;
    Ok(BackupOutcome::Taken {
        change,
        backup: after.backups.last().cloned(),
    })
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
mod tests {
    use super::*;

    const INFO: &str = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000010000000000000003","min":"000000010000000000000001"}],
      "backup":[{"archive":{"start":"000000010000000000000003","stop":"000000010000000000000003"},"backrest":{"format":5,"version":"2.45"},
        "database":{"id":1,"repo-key":1},"error":false,"info":{"delta":23000748,"repository":{"delta":3043988,"size":3043988},"size":23000748},
        "label":"20261201-214644F","lsn":{"start":"0/3000028","stop":"0/3000100"},"prior":null,"reference":null,
        "timestamp":{"start":1796161604,"stop":1796161607},"type":"full"}],
      "cipher":"none","db":[{"id":1,"repo-key":1,"system-id":7714455322992979790,"version":"15"}],"name":"st",
      "repo":[{"cipher":"none","key":1,"status":{"code":0,"message":"ok"}}],"status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]"#;

    #[test]
    fn info_lists_backups_with_exact_system_identifiers() {
        let info = parse_info(INFO, "st").unwrap();
        assert!(info.exists);
        assert_eq!(info.system_identifiers, vec!["7714455322992979790"]);
        assert_eq!(info.backups.len(), 1);
        let b = &info.backups[0];
        assert_eq!(b.label, "20261201-214644F");
        assert_eq!(b.kind, "full");
        assert_eq!(b.size, 23000748);
        assert_eq!(b.system_identifier.as_deref(), Some("7714455322992979790"));
    }

    #[test]
    fn a_missing_stanza_is_told() {
        let json = r#"[{"archive":[],"backup":[],"cipher":"none","db":[],"name":"st","repo":[{"cipher":"none","key":1,"status":{"code":1,"message":"missing stanza path"}}],"status":{"code":1,"lock":{"backup":{"held":false}},"message":"missing stanza path"}}]"#;
        let info = parse_info(json, "st").unwrap();
        assert!(!info.exists);
        assert_eq!(info.status, "missing stanza path");
        assert!(parse_info(json, "other").is_err());
    }

    #[test]
    fn the_stanza_is_the_section_besides_global() {
        assert_eq!(
            stanza_of("# x\n[global]\nrepo1-path=/r\n\n[main]\npg1-path=/d\n").as_deref(),
            Some("main")
        );
        assert_eq!(stanza_of("[global]\n"), None);
    }

    #[test]
    fn words_with_shell_characters_are_quoted() {
        assert_eq!(shell_word("/usr/bin/pgbackrest"), "/usr/bin/pgbackrest");
        assert_eq!(shell_word("/data/my dir"), "'/data/my dir'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
