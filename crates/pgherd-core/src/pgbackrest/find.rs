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

/// The sections of a pgBackRest configuration other than `[global]`,
/// each with the values of its `pgN-host` options.
fn stanzas_of(config: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in config.lines().map(str::trim) {
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if section != "global" && !section.contains(':') {
                out.push((section.to_string(), Vec::new()));
            }
        } else if let (Some((_, hosts)), Some((k, v))) = (out.last_mut(), line.split_once('=')) {
            let k = k.trim();
            let pg_host = k
                .strip_prefix("pg")
                .and_then(|r| r.strip_suffix("-host"))
                .is_some_and(|n| n.parse::<u16>().is_ok());
            if pg_host {
                hosts.push(v.trim().to_string());
            }
        }
    }
    out
}

/// On the repository host: the stanza its pgBackRest configuration
/// directory (the settings' `repository.host.config_path`:
/// `pgbackrest.conf` and `conf.d/*.conf`) holds for the cluster: the only
/// one, or the one named in `names` or listing a member host among them.
/// None when the directory holds no `pgbackrest.conf` (not the repository
/// host).
pub fn on_repository_host(
    settings: &Settings,
    host: &crate::settings::RepositoryHost,
    names: &[&str],
) -> Result<Option<PgBackRest>> {
    let dir = &host.config_path;
    let main = dir.join("pgbackrest.conf");
    let Ok(text) = std::fs::read_to_string(&main) else {
        return Ok(None);
    };
    let mut included: Vec<PathBuf> = std::fs::read_dir(dir.join("conf.d"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect()
        })
        .unwrap_or_default();
    included.sort();
    let mut stanzas = stanzas_of(&text);
    for path in &included {
        stanzas.extend(stanzas_of(
            &std::fs::read_to_string(path).unwrap_or_default(),
        ));
    }
    let ours: Vec<&(String, Vec<String>)> = if stanzas.len() == 1 {
        stanzas.iter().collect()
    } else {
        stanzas
            .iter()
            .filter(|(s, hosts)| {
                names.contains(&s.as_str()) || hosts.iter().any(|h| names.contains(&h.as_str()))
            })
            .collect()
    };
    let stanza = match ours.as_slice() {
        [(stanza, _)] => stanza.clone(),
        _ => {
            let all: Vec<&str> = stanzas.iter().map(|(s, _)| s.as_str()).collect();
            return Err(Error::Other(format!(
                "the repository host's pgBackRest configuration ({}, conf.d/*.conf) holds the \
                 stanzas [{}], and {} for this cluster (named after it, or listing one of its \
                 members in pgN-host): list the cluster's members in its stanza's section",
                main.display(),
                all.join(", "),
                if ours.is_empty() {
                    "none"
                } else {
                    "more than one"
                }
            )));
        }
    };
    let option = |key: &str| global_option(&text, key).map(PathBuf::from);
    let files = PgBackRestPaths {
        repository: option("repo1-path")
            .unwrap_or_else(|| settings.pgbackrest.repository.path.clone().into()),
        local_repository: true,
        log_dir: option("log-path").unwrap_or_else(|| "/var/log/pgbackrest".into()),
        lock_dir: option("lock-path").unwrap_or_else(|| "/tmp/pgbackrest".into()),
        config: dir.clone(),
    };
    let run_as = crate::process::run_as_account(settings)?;
    let mut b = PgBackRest::new(settings, &files, stanza, PathBuf::new(), run_as);
    b.config_dir = true;
    Ok(Some(b))
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
            local_repository: settings.pgbackrest.repository_is_local(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_host_backs_up_the_stanza_listing_the_cluster() {
        let dir = std::env::temp_dir().join(format!("pgherd-repohost-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        let settings = Settings {
            sysuser: "root".into(),
            sysgroup: None,
            ..Settings::default()
        };
        let host = crate::settings::RepositoryHost {
            config_path: dir.clone(),
            ..crate::settings::RepositoryHost::example("backup1")
        };
        let found = |names: &[&str]| {
            on_repository_host(&settings, &host, names)
                .map(|b| b.map(|b| (b.stanza, b.repository, b.config_dir)))
                .map_err(|e| e.to_string())
        };
        // No pgbackrest.conf: not the repository host.
        assert_eq!(found(&["main"]), Ok(None));
        std::fs::write(
            dir.join("pgbackrest.conf"),
            "[global]\nrepo1-path=/srv/repo\ntls-server-auth=db1=main\n",
        )
        .unwrap();
        let none = found(&["main"]).unwrap_err();
        assert!(none.contains("holds the stanzas [], and none"), "{none}");
        std::fs::write(
            dir.join("conf.d/main.conf"),
            "[main]\npg1-host=db1\npg1-path=/d\npg2-host=db2\npg2-host-port=8432\n",
        )
        .unwrap();
        // The only stanza, whatever the names.
        let only = Ok(Some(("main".to_string(), PathBuf::from("/srv/repo"), true)));
        assert_eq!(found(&["other"]), only);
        std::fs::write(dir.join("conf.d/sales.conf"), "[sales]\npg1-host=db7\n").unwrap();
        std::fs::write(dir.join("conf.d/notes.txt"), "[notes]\n").unwrap();
        // Several: by a member host, or by the stanza's name.
        assert_eq!(found(&["pgcluster", "pg-a", "db2"]), only);
        assert_eq!(found(&["sales"]).unwrap().unwrap().0, "sales".to_string());
        let neither = found(&["db9"]).unwrap_err();
        assert!(neither.contains("[main, sales], and none"), "{neither}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
