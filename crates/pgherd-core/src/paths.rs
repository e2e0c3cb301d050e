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
    /// PostgreSQL's configuration directory, when not the data directory.
    pub conf_dir: Option<PathBuf>,
    pub bin_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub pg_log_dir: PathBuf,
    pub patroni_log_dir: PathBuf,
    /// The pid file of a Patroni started without systemd.
    pub pid_file: PathBuf,
    /// pgBackRest's files, when the instance has a stanza.
    pub pgbackrest: Option<PgBackRestPaths>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBackRestPaths {
    /// The instance's pgBackRest configuration (`--config`).
    pub config: PathBuf,
    pub repository: PathBuf,
    /// Whether the repository is a directory of this host (or a shared
    /// mount): not on a repository host, not in object storage.
    pub local_repository: bool,
    pub log_dir: PathBuf,
    pub lock_dir: PathBuf,
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
            conf_dir: pg.confdir.as_deref().map(path),
            bin_dir: path(&pg.bindir),
            socket_dir: path(&pg.socket_directory),
            pg_log_dir: path(&pg.logdir),
            patroni_log_dir: path(&p.logdir),
            pid_file: path(&p.piddir).join(format!("patroni-{}.pid", m.qualified_name())),
            pgbackrest: m
                .pgbackrest_stanza
                .as_ref()
                .map(|_| PgBackRestPaths::new(settings, v, n)),
        }
    }
}

impl PgBackRestPaths {
    /// pgBackRest's files of the instance `name` of PostgreSQL `version`.
    pub fn new(settings: &Settings, version: &str, name: &str) -> PgBackRestPaths {
        let b = &settings.pgbackrest;
        let path = |pattern: &str| PathBuf::from(expand(pattern, version, name));
        PgBackRestPaths {
            config: path(&b.configpath),
            repository: path(&b.repository.path),
            local_repository: b.repository_is_local(),
            log_dir: path(&b.logpath),
            lock_dir: path(&b.lockpath),
        }
    }
}

/// The directory holding the literal start of a pattern, before its first
/// placeholder: shared by every instance. `None` for a pattern without
/// placeholders.
fn literal_dir(pattern: &str) -> Option<PathBuf> {
    let start = pattern.find('{')?;
    let literal = &pattern[..start];
    let cut = literal.rfind('/')?;
    Some(PathBuf::from(if cut == 0 { "/" } else { &literal[..cut] }))
}

/// The directories a pattern makes for one instance: those of its
/// expansion below the pattern's literal part (`/var/lib/postgresql/15`
/// for `/var/lib/postgresql/{version}/{name}`), deepest first. `is_dir`:
/// the pattern names a directory, which counts too.
pub fn own_dirs(pattern: &str, version: &str, name: &str, is_dir: bool) -> Vec<PathBuf> {
    let Some(shared) = literal_dir(pattern) else {
        return Vec::new();
    };
    let expanded = PathBuf::from(expand(pattern, version, name));
    expanded
        .ancestors()
        .skip(usize::from(!is_dir))
        .take_while(|a| a.starts_with(&shared) && *a != shared)
        .map(PathBuf::from)
        .collect()
}

/// The file PostgreSQL's logs of an instance go to when its log directory
/// is shared (no `{name}` in the pattern), as Debian names it: a `.` ends
/// the instance's part, since names never hold one. Rotation is left to
/// logrotate (Debian's postgresql-common rotates `/var/log/postgresql`).
pub fn shared_log_filename(version: &str, name: &str) -> String {
    format!("postgresql-{version}-{name}.log")
}

/// The start of the names of an instance's log files in a shared
/// directory (the file and its rotations: `.log`, `.log.1`).
pub fn shared_log_prefix(version: &str, name: &str) -> String {
    format!("postgresql-{version}-{name}.")
}

impl InstancePaths {
    /// Directories made for this instance only, deepest first: removed by
    /// `absent` once empty.
    pub fn own_dirs(settings: &Settings, m: &InstanceManifest) -> Vec<PathBuf> {
        let (v, n) = (m.version.as_str(), m.name.as_str());
        let pg = &settings.postgresql;
        let p = &settings.patroni;
        let b = &settings.pgbackrest;
        let mut patterns = vec![
            (pg.datadir.as_str(), true),
            (pg.socket_directory.as_str(), true),
            (pg.logdir.as_str(), true),
            (pg.passfile.as_str(), false),
            (p.configpath.as_str(), false),
            (p.logdir.as_str(), true),
            (p.piddir.as_str(), true),
            (p.pgpass.as_str(), false),
        ];
        patterns.extend(pg.waldir.as_deref().map(|w| (w, true)));
        patterns.extend(pg.confdir.as_deref().map(|c| (c, true)));
        if m.pgbackrest_stanza.is_some() {
            patterns.push((b.configpath.as_str(), false));
        }
        let mut out: Vec<PathBuf> = patterns
            .into_iter()
            .flat_map(|(pattern, is_dir)| own_dirs(pattern, v, n, is_dir))
            .collect();
        out.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        out.dedup();
        out
    }

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

/// One piece of a path component pattern.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Piece<'a> {
    Literal(&'a str),
    Version,
    Name,
}

fn pieces(component: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = component;
    while !rest.is_empty() {
        let next = [("{version}", Piece::Version), ("{name}", Piece::Name)]
            .into_iter()
            .filter_map(|(p, piece)| rest.find(p).map(|i| (i, p.len(), piece)))
            .min_by_key(|(i, _, _)| *i);
        match next {
            Some((i, len, piece)) => {
                if i > 0 {
                    out.push(Piece::Literal(&rest[..i]));
                }
                out.push(piece);
                rest = &rest[i + len..];
            }
            None => {
                out.push(Piece::Literal(rest));
                rest = "";
            }
        }
    }
    out
}

/// Matches a file name against pattern pieces, filling the captures.
fn match_pieces(
    p: &[Piece<'_>],
    s: &str,
    version: &mut Option<String>,
    name: &mut Option<String>,
) -> bool {
    let Some((first, rest)) = p.split_first() else {
        return s.is_empty();
    };
    match first {
        Piece::Literal(l) => s
            .strip_prefix(l)
            .is_some_and(|t| match_pieces(rest, t, version, name)),
        Piece::Version | Piece::Name => {
            let ok = |c: char| match first {
                Piece::Version => c.is_ascii_digit(),
                _ => c.is_ascii_alphanumeric() || c == '-' || c == '_',
            };
            let longest = s.find(|c| !ok(c)).unwrap_or(s.len());
            for end in (1..=longest).rev() {
                let captured = &s[..end];
                let (mut v, mut n) = (version.clone(), name.clone());
                let slot = if *first == Piece::Version {
                    &mut v
                } else {
                    &mut n
                };
                if slot.as_deref().is_some_and(|x| x != captured) {
                    continue;
                }
                *slot = Some(captured.to_string());
                if match_pieces(rest, &s[end..], &mut v, &mut n) {
                    *version = v;
                    *name = n;
                    return true;
                }
            }
            false
        }
    }
}

/// The Patroni configurations on this host that the settings'
/// `patroni.configpath` names: every file its pattern matches, or the one
/// file a pattern without placeholders names.
pub fn local_patroni_configs(settings: &Settings) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("/")];
    for component in settings
        .patroni
        .configpath
        .split('/')
        .filter(|c| !c.is_empty())
    {
        let ps = pieces(component);
        let mut next = Vec::new();
        for dir in found {
            if ps.iter().all(|p| matches!(p, Piece::Literal(_))) {
                next.push(dir.join(component));
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                if match_pieces(&ps, &file, &mut None, &mut None) {
                    next.push(dir.join(&file));
                }
            }
        }
        found = next;
    }
    let mut out: Vec<PathBuf> = found.into_iter().filter(|p| p.is_file()).collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_is_made_here_only_when_it_is_a_directory_here() {
        let host = crate::settings::RepositoryHost::example("backup1");
        for (repo_host, repo_type, local) in [
            (false, None, true),
            (false, Some("posix"), true),
            (false, Some("cifs"), true),
            (false, Some("s3"), false),
            (false, Some("azure"), false),
            (true, None, false),
        ] {
            let mut settings = Settings::default();
            if repo_host {
                settings.pgbackrest.repository.host = Some(host.clone());
            }
            if let Some(t) = repo_type {
                settings
                    .pgbackrest
                    .global_options
                    .insert("repo1-type".into(), t.into());
            }
            let paths = PgBackRestPaths::new(&settings, "15", "main");
            assert_eq!(paths.local_repository, local, "{repo_host} {repo_type:?}");
        }
    }

    #[test]
    fn file_names_match_patterns_with_placeholders() {
        let ps = pieces("{version}-{name}.yaml");
        let (mut v, mut n) = (None, None);
        assert!(match_pieces(&ps, "15-my-db.yaml", &mut v, &mut n));
        assert_eq!((v.as_deref(), n.as_deref()), (Some("15"), Some("my-db")));
        let (mut v, mut n) = (None, None);
        assert!(!match_pieces(&ps, "15-main.yml", &mut v, &mut n));
        assert!(!match_pieces(&ps, "x-main.yaml", &mut None, &mut None));
    }

    #[test]
    fn local_configurations_are_found_through_the_pattern_or_the_literal_path() {
        let dir = std::env::temp_dir().join(format!("pgherd-paths-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("16")).unwrap();
        std::fs::write(dir.join("16").join("main.yaml"), "scope: x\n").unwrap();
        std::fs::write(dir.join("16").join("notes.txt"), "").unwrap();
        std::fs::write(dir.join("patroni.yml"), "scope: y\n").unwrap();
        let mut settings = Settings::default();
        settings.patroni.configpath = format!("{}/{{version}}/{{name}}.yaml", dir.display());
        let found = local_patroni_configs(&settings);
        settings.patroni.configpath = format!("{}/patroni.yml", dir.display());
        let literal = local_patroni_configs(&settings);
        settings.patroni.configpath = format!("{}/absent.yml", dir.display());
        let absent = local_patroni_configs(&settings);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found, vec![dir.join("16").join("main.yaml")]);
        assert_eq!(literal, vec![dir.join("patroni.yml")]);
        assert!(absent.is_empty());
    }

    #[test]
    fn an_instance_owns_the_directories_below_its_patterns_literal_part() {
        assert_eq!(
            own_dirs("/var/lib/postgresql/{version}/{name}", "15", "main", true),
            vec![
                PathBuf::from("/var/lib/postgresql/15/main"),
                PathBuf::from("/var/lib/postgresql/15"),
            ]
        );
        assert_eq!(
            own_dirs("/var/lib/postgresql/{version}/{name}", "15", "main", false),
            vec![PathBuf::from("/var/lib/postgresql/15")]
        );
        assert!(own_dirs("/etc/patroni/{version}-{name}.yaml", "15", "main", false).is_empty());
        assert_eq!(
            own_dirs("/srv/log/pg-{name}", "15", "main", true),
            vec![PathBuf::from("/srv/log/pg-main")]
        );
        assert!(own_dirs("/srv/pgdata", "15", "main", true).is_empty());
        assert_eq!(
            own_dirs("/{name}/data", "15", "x", true),
            vec![PathBuf::from("/x/data"), PathBuf::from("/x")]
        );
    }
}
