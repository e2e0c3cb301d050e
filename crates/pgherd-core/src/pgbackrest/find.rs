//! Where a host's pgBackRest configuration is: read from the Patroni
//! configuration of the cluster's member on this host (its archive_command).

use super::*;
use crate::patroni_file::PatroniFile;

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
pub(super) fn stanza_of(config: &str) -> Option<String> {
    config
        .lines()
        .filter_map(|l| l.trim().strip_prefix('[')?.strip_suffix(']'))
        .find(|section| *section != "global")
        .map(str::to_string)
}

/// The words of a command as a POSIX shell splits them (single and double
/// quotes, backslashes), enough for the commands pgherd writes.
pub(super) fn shell_words(cmd: &str) -> Vec<String> {
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
pub(super) fn pgbackrest_config_of(doc: &PatroniFile) -> Option<PathBuf> {
    let pg = &doc.postgresql;
    [&pg.archive_command, &pg.restore_command]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .flat_map(shell_words)
        .find_map(|w| w.strip_prefix("--config=").map(PathBuf::from))
}

/// This host's instance of the member `leader` of cluster `scope`, found
/// among the Patroni configurations the settings' `patroni.configpath`
/// names (a pattern or a literal path), with the pgBackRest configuration
/// its archiving uses.
pub fn local_member(settings: &Settings, scope: &str, leader: &str) -> Result<Option<PgBackRest>> {
    local_instance(settings, scope, Some(leader))
}

/// This host's instance of cluster `scope` (of the member `member` when
/// given, else the first found), with its pgBackRest configuration.
pub fn local_instance(
    settings: &Settings,
    scope: &str,
    member: Option<&str>,
) -> Result<Option<PgBackRest>> {
    for path in crate::paths::local_patroni_configs(settings) {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(doc) = PatroniFile::parse(&text) else {
            continue;
        };
        if doc.scope.as_deref() != Some(scope)
            || member.is_some_and(|m| doc.name.as_deref() != Some(m))
        {
            continue;
        }
        let name = doc.name.clone().unwrap_or_default();
        let no_config = || {
            Error::Other(format!(
                "the member {name} of cluster {scope} runs on this host ({}), but it archives \
                 through no pgBackRest configuration of pgherd's: give the instance the \
                 pgbackrest option",
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
        let data_dir = doc.postgresql.data_dir.clone().unwrap_or_default();
        let run_as = crate::process::run_as_account(settings)?;
        return Ok(Some(PgBackRest::new(
            settings, &files, stanza, data_dir, run_as,
        )));
    }
    Ok(None)
}
