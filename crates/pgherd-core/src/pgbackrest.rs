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

/// A Unix time as `2026-12-01T22:46:44+00:00`, for messages.
pub fn iso_utc(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil from days (the inverse of days_from_civil).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The backup a restore starts from: the one named, else the newest; with
/// a target time, one that ended before it (the newest that did, when none
/// is named): a backup is consistent only from its end on.
pub fn choose_backup(
    stanza: &str,
    backups: &[BackupSet],
    set: Option<&str>,
    target: &RecoveryTarget,
) -> std::result::Result<BackupSet, String> {
    let labels = || {
        if backups.is_empty() {
            "none".to_string()
        } else {
            backups
                .iter()
                .map(|b| format!("{} (ended {})", b.label, iso_utc(b.stop)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let time = match target {
        RecoveryTarget::Time(t) => Some((t, crate::names::parse_timestamp_with_offset(t)?)),
        _ => None,
    };
    match (set, time) {
        (Some(label), time) => {
            let chosen = backups.iter().find(|b| b.label == label).ok_or_else(|| {
                format!(
                    "stanza {stanza} has no backup {label}; it has: {}",
                    labels()
                )
            })?;
            if let Some((t, at)) = time {
                if chosen.stop > at {
                    return Err(format!(
                        "backup {label} ended at {}, after the target {t}: it cannot restore to \
                         a time before its own end; choose an older backup, or give no set and \
                         the newest backup that ended before the target is used",
                        iso_utc(chosen.stop)
                    ));
                }
            }
            Ok(chosen.clone())
        }
        (None, Some((t, at))) => backups
            .iter()
            .rev()
            .find(|b| b.stop <= at)
            .cloned()
            .ok_or_else(|| match backups.first() {
                Some(oldest) => format!(
                    "the target {t} is before the end of the oldest backup of stanza {stanza}, \
                     {} ({}): no backup can restore to it",
                    oldest.label,
                    iso_utc(oldest.stop)
                ),
                None => format!(
                    "stanza {stanza} has no backup to restore: take one first (patroni module, \
                     backup: full)"
                ),
            }),
        (None, None) => backups.last().cloned().ok_or_else(|| {
            format!(
                "stanza {stanza} has no backup to restore: take one first (patroni module, \
                 backup: full)"
            )
        }),
    }
}

/// An option of the `[global]` section of a pgBackRest configuration.
pub fn global_option(config: &str, key: &str) -> Option<String> {
    let mut in_global = false;
    for line in config.lines().map(str::trim) {
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_global = section == "global";
        } else if in_global {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == key {
                    return Some(v.trim().to_string());
                }
            }
        }
    }
    None
}

/// The stanza a pgBackRest configuration written by pgherd is for.
fn stanza_of(config: &str) -> Option<String> {
    config
        .lines()
        .filter_map(|l| l.trim().strip_prefix('[')?.strip_suffix(']'))
        .find(|section| *section != "global")
        .map(str::to_string)
}

/// The words of a command as a POSIX shell splits them (single and double
/// quotes, backslashes), enough for the commands pgherd writes.
fn shell_words(cmd: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    let mut chars = cmd.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = cur.get_or_insert_with(String::new);
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    w.push(q);
                }
            }
            '"' => {
                let w = cur.get_or_insert_with(String::new);
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        q => w.push(q),
                    }
                }
            }
            '\\' => cur.get_or_insert_with(String::new).extend(chars.next()),
            c if c.is_whitespace() => out.extend(cur.take()),
            c => cur.get_or_insert_with(String::new).push(c),
        }
    }
    out.extend(cur);
    out
}

/// The pgBackRest configuration a Patroni configuration's archiving uses:
/// the `--config=` of its `archive_command` (or `restore_command`).
fn pgbackrest_config_of(doc: &serde_yaml::Value) -> Option<PathBuf> {
    let pg = &doc["postgresql"];
    [
        &pg["parameters"]["archive_command"],
        &pg["recovery_conf"]["restore_command"],
    ]
    .iter()
    .filter_map(|c| c.as_str())
    .flat_map(shell_words)
    .find_map(|w| w.strip_prefix("--config=").map(PathBuf::from))
}

/// This host's instance of the member `leader` of cluster `scope`, found
/// among the Patroni configurations the settings' `patroni.configpath`
/// names (a pattern or a literal path), with the pgBackRest configuration
/// its archiving uses.
pub fn local_member(settings: &Settings, scope: &str, leader: &str) -> Result<Option<PgBackRest>> {
    for path in crate::paths::local_patroni_configs(settings) {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(&text) else {
            continue;
        };
        if doc["scope"].as_str() != Some(scope) || doc["name"].as_str() != Some(leader) {
            continue;
        }
        let no_config = || {
            Error::Other(format!(
                "the leader {leader} runs on this host ({}), but it archives through no \
                 pgBackRest configuration of pgherd's: give the instance the pgbackrest option",
                path.display()
            ))
        };
        let config = pgbackrest_config_of(&doc).ok_or_else(no_config)?;
        let text = std::fs::read_to_string(&config).map_err(|_| no_config())?;
        let stanza = stanza_of(&text).ok_or_else(no_config)?;
        let option = |key: &str| global_option(&text, key).map(PathBuf::from);
        let files = PgBackRestPaths {
            repository: option("repo1-path").ok_or_else(no_config)?,
            log_dir: option("log-path")
                .unwrap_or_else(|| settings.pgbackrest.logpath.clone().into()),
            lock_dir: option("lock-path")
                .unwrap_or_else(|| settings.pgbackrest.lockpath.clone().into()),
            config,
        };
        let data_dir = PathBuf::from(doc["postgresql"]["data_dir"].as_str().unwrap_or_default());
        let run_as = crate::process::run_as_account(settings)?;
        return Ok(Some(PgBackRest::new(
            settings, &files, stanza, data_dir, run_as,
        )));
    }
    Ok(None)
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

    #[test]
    fn the_pgbackrest_configuration_is_read_from_the_archive_command() {
        assert_eq!(
            shell_words(
                r#"/usr/bin/pgbackrest '--config=/etc/my conf.conf' '--stanza=it'\''s' archive-push "%p""#
            ),
            [
                "/usr/bin/pgbackrest",
                "--config=/etc/my conf.conf",
                "--stanza=it's",
                "archive-push",
                "%p"
            ]
        );
        let doc: serde_yaml::Value = serde_yaml::from_str(
            "postgresql:\n  parameters:\n    archive_command: pgbackrest --config=/etc/pgbackrest/pg.conf --stanza=main archive-push \"%p\"\n",
        )
        .unwrap();
        assert_eq!(
            pgbackrest_config_of(&doc),
            Some(PathBuf::from("/etc/pgbackrest/pg.conf"))
        );
        let none: serde_yaml::Value = serde_yaml::from_str("postgresql: {}\n").unwrap();
        assert_eq!(pgbackrest_config_of(&none), None);
    }

    fn set(label: &str, stop: i64) -> BackupSet {
        BackupSet {
            label: label.into(),
            kind: "full".into(),
            start: stop - 4,
            stop,
            size: 1,
            repository_size: 1,
            system_identifier: None,
        }
    }

    #[test]
    fn the_backup_of_a_restore_ended_before_its_target() {
        let t = |s: &str| RecoveryTarget::Time(s.into());
        // Two backups, ending 22:00:00 and 23:00:00 UTC on 2026-12-01.
        let b1 = set("B1", 1_796_162_400);
        let b2 = set("B2", 1_796_166_000);
        let both = vec![b1.clone(), b2.clone()];
        let pick = |s: Option<&str>, target: &RecoveryTarget| choose_backup("st", &both, s, target);
        assert_eq!(pick(None, &RecoveryTarget::Latest), Ok(b2.clone()));
        assert_eq!(pick(None, &RecoveryTarget::Immediate), Ok(b2.clone()));
        assert_eq!(pick(None, &t("2026-12-01T23:30:00Z")), Ok(b2.clone()));
        // Between the two: the older one.
        assert_eq!(pick(None, &t("2026-12-01T22:30:00Z")), Ok(b1.clone()));
        assert_eq!(pick(None, &t("2026-12-01T23:30:00+01:00")), Ok(b1.clone()));
        assert_eq!(pick(Some("B1"), &t("2026-12-01T22:30:00Z")), Ok(b1.clone()));
        // Before both, or a named set that ended after the target.
        let e = pick(None, &t("2026-12-01T21:00:00Z")).unwrap_err();
        assert!(
            e.contains(
                "before the end of the oldest backup of stanza st, B1 (2026-12-01T22:00:00+00:00)"
            ),
            "{e}"
        );
        let e = pick(Some("B2"), &t("2026-12-01T22:30:00Z")).unwrap_err();
        assert!(
            e.contains("B2 ended at 2026-12-01T23:00:00+00:00, after the target"),
            "{e}"
        );
        assert!(pick(Some("B9"), &RecoveryTarget::Latest)
            .unwrap_err()
            .contains("no backup B9"));
        assert!(choose_backup("st", &[], None, &RecoveryTarget::Latest)
            .unwrap_err()
            .contains("no backup to restore"));
    }
}
