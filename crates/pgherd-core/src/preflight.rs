//! What can refuse an instance run before anything is written: the
//! programs the settings name, and whether each directory the run, Patroni
//! and PostgreSQL write into can be made and written by whoever writes it.
//! Each problem names the setting, the path, and its owner and mode.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::fs::{current_uid, Account};
use crate::manifest::InstanceManifest;
use crate::paths::InstancePaths;
use crate::settings::{Settings, WatchdogMode};

/// Who a check is for: a uid and every group it is in.
#[derive(Debug, Clone)]
pub struct Who {
    pub name: String,
    pub uid: u32,
    pub gids: Vec<u32>,
}

impl Who {
    /// The account Patroni and PostgreSQL run as (`None`: this process's
    /// own user, when pgherd does not run as root).
    pub fn of(account: Option<&Account>) -> Who {
        match account {
            Some(a) => Who {
                name: a.name.clone(),
                uid: a.owner.uid,
                gids: groups_of(&a.name, a.owner.gid),
            },
            None => Who::this_process(),
        }
    }

    pub fn this_process() -> Who {
        // SAFETY: getegid has no preconditions; getgroups writes at most
        // `len` gids into a buffer of that size.
        let mut gids = vec![unsafe { libc::getegid() }];
        let len = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        if len > 0 {
            let mut buf = vec![0 as libc::gid_t; len as usize];
            let got = unsafe { libc::getgroups(len, buf.as_mut_ptr()) };
            gids.extend(buf.into_iter().take(got.max(0) as usize));
        }
        Who {
            name: user_name(current_uid()),
            uid: current_uid(),
            gids,
        }
    }

    /// Whether the permission bits of `meta` grant `bits` (4 read, 2
    /// write, 1 search/execute) to this user. ACLs are not read.
    pub fn may(&self, meta: &std::fs::Metadata, bits: u32) -> bool {
        if self.uid == 0 {
            return true;
        }
        let mode = meta.mode();
        let granted = if meta.uid() == self.uid {
            mode >> 6
        } else if self.gids.contains(&meta.gid()) {
            mode >> 3
        } else {
            mode
        };
        granted & bits == bits
    }
}

/// The groups of `user`, its primary group `gid` first.
fn groups_of(user: &str, gid: u32) -> Vec<u32> {
    let Ok(name) = std::ffi::CString::new(user) else {
        return vec![gid];
    };
    let mut n: libc::c_int = 64;
    loop {
        let mut buf = vec![0 as libc::gid_t; n as usize];
        let mut count = n;
        // SAFETY: `buf` holds `count` gids; getgrouplist writes at most that
        // many and sets `count` to how many there are.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, buf.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            buf.truncate(count.max(0) as usize);
            return buf;
        }
        if count <= n || n > 65536 {
            return vec![gid];
        }
        n = count;
    }
}

/// `owner:group mode` of a path, for messages.
pub fn describe_owner_mode(meta: &std::fs::Metadata) -> String {
    format!(
        "{}:{} mode {:04o}",
        user_name(meta.uid()),
        group_name(meta.gid()),
        meta.mode() & 0o7777
    )
}

fn user_name(uid: u32) -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; the
    // name is copied out at once.
    let pw = unsafe { libc::getpwuid(uid) };
    if pw.is_null() {
        return uid.to_string();
    }
    unsafe { std::ffi::CStr::from_ptr((*pw).pw_name) }
        .to_string_lossy()
        .into_owned()
}

fn group_name(gid: u32) -> String {
    // SAFETY: as in user_name, for groups.
    let gr = unsafe { libc::getgrgid(gid) };
    if gr.is_null() {
        return gid.to_string();
    }
    unsafe { std::ffi::CStr::from_ptr((*gr).gr_name) }
        .to_string_lossy()
        .into_owned()
}

/// The nearest existing ancestor of `path` (itself when it exists), with
/// its metadata (symbolic links followed, as the kernel does when it
/// resolves a path).
fn nearest_existing(path: &Path) -> Option<(PathBuf, std::fs::Metadata)> {
    let mut cur = Some(path);
    while let Some(p) = cur {
        if let Ok(meta) = std::fs::metadata(p) {
            return Some((p.to_path_buf(), meta));
        }
        cur = p.parent();
    }
    None
}

/// The first ancestor of `path` that `who` cannot pass through (search
/// permission), with why.
fn blocked_ancestor(path: &Path, who: &Who) -> Option<String> {
    let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
    ancestors.reverse();
    for a in ancestors {
        let Ok(meta) = std::fs::metadata(a) else {
            return None;
        };
        if !meta.is_dir() {
            return Some(format!("{} is not a directory", a.display()));
        }
        if !who.may(&meta, 0o1) {
            return Some(format!(
                "{} cannot pass through {} ({})",
                who.name,
                a.display(),
                describe_owner_mode(&meta)
            ));
        }
    }
    None
}

/// A directory someone must be able to write into, or create: `key` is
/// the setting it comes from.
pub struct WritableDir<'a> {
    pub key: &'a str,
    pub path: &'a Path,
    /// Who writes into it (Patroni and PostgreSQL's user, or pgherd).
    pub who: &'a Who,
    /// The directory itself is made by a program run as `who` (initdb,
    /// pg_basebackup), so its parent must be writable by `who`, and the
    /// directory, when it exists, must be owned by `who`.
    pub made_by_who: bool,
}

/// Problems with one directory, checked without writing anything. A
/// directory that does not exist yet is made by pgherd (as root, for
/// `who`) unless `made_by_who`.
pub fn check_dir(d: &WritableDir<'_>, runner: &Who) -> Vec<String> {
    let mut problems = Vec::new();
    let shown = d.path.display();
    if let Some(why) = blocked_ancestor(d.path, d.who) {
        problems.push(format!("{}: {shown}: {why}", d.key));
        return problems;
    }
    match std::fs::metadata(d.path) {
        Ok(meta) if !meta.is_dir() => {
            problems.push(format!("{}: {shown} exists and is not a directory", d.key));
        }
        Ok(meta) if d.made_by_who && meta.uid() != d.who.uid && d.who.uid != 0 => {
            problems.push(format!(
                "{}: {shown} exists and belongs to {}, not to {}: give it to {} (chown) or \
                 remove it",
                d.key,
                describe_owner_mode(&meta),
                d.who.name,
                d.who.name
            ));
        }
        Ok(meta) if !d.who.may(&meta, 0o3) => {
            problems.push(format!(
                "{}: {} cannot write into {shown} ({}): give it to {} (chown) or choose \
                 another path",
                d.key,
                d.who.name,
                describe_owner_mode(&meta),
                d.who.name
            ));
        }
        Ok(_) => {}
        Err(_) => {
            let Some((existing, meta)) = nearest_existing(d.path) else {
                return problems;
            };
            if !meta.is_dir() {
                problems.push(format!(
                    "{}: {shown} cannot be created: {} is not a directory",
                    d.key,
                    existing.display()
                ));
                return problems;
            }
            // The direct parent made by initdb's own user must be writable
            // by it; anything pgherd makes, it gives to that user.
            let parent_exists = d.path.parent() == Some(existing.as_path());
            let (maker, what) = if d.made_by_who && parent_exists {
                (d.who, format!("{} creates {shown} itself", d.who.name))
            } else {
                (runner, format!("{shown} is created by pgherd"))
            };
            if !maker.may(&meta, 0o3) {
                problems.push(format!(
                    "{}: {what}, but cannot write into {} ({}): give {} to {} (chown) or \
                     choose another path",
                    d.key,
                    existing.display(),
                    describe_owner_mode(&meta),
                    existing.display(),
                    maker.name
                ));
            }
        }
    }
    problems
}

/// A program the settings name: it must be an executable file `who` can
/// run.
pub fn check_program(key: &str, path: &Path, who: &Who, hint: &str) -> Option<String> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Err(_) => Some(format!("{key}: {shown} does not exist{hint}")),
        Ok(meta) if !meta.is_file() => Some(format!("{key}: {shown} is not a file{hint}")),
        Ok(meta) if !who.may(&meta, 0o1) || meta.mode() & 0o111 == 0 => Some(format!(
            "{key}: {shown} is not executable by {} ({})",
            who.name,
            describe_owner_mode(&meta)
        )),
        Ok(_) => blocked_ancestor(path, who).map(|why| format!("{key}: {shown}: {why}")),
    }
}

/// A repository other than the one the instance's pgBackRest
/// configuration names: a decision the user must state, since a new
/// repository starts a new stanza and leaves the old backups and WAL out
/// of reach.
fn repository_change(
    b: &crate::paths::PgBackRestPaths,
    host: Option<&str>,
    accepted: bool,
) -> Option<String> {
    let text = std::fs::read_to_string(&b.config).ok()?;
    let current = crate::pgbackrest::global_option(&text, "repo1-path")?;
    let current_host = crate::pgbackrest::global_option(&text, "repo1-host");
    let at = |host: Option<&str>, path: &str| match host {
        Some(h) => format!("{path} on the repository host {h}"),
        None => path.to_string(),
    };
    let wanted = b.repository.display().to_string();
    if accepted || (current == wanted && current_host.as_deref() == host) {
        return None;
    }
    let (before, after) = (at(current_host.as_deref(), &current), at(host, &wanted));
    Some(format!(
        "pgbackrest.repository: the instance archives to the repository {before} \
         (pgBackRest configuration {}), and the settings now name {after}: a new repository \
         starts a new stanza and leaves the backups and WAL of {before} out of reach; set it \
         back, or give pgbackrest.new_repository: true to move to {after}",
        b.config.display(),
    ))
}

/// The PostgreSQL programs Patroni and pgherd run from the bin directory.
fn postgres_programs(settings: &Settings) -> Vec<&'static str> {
    let mut out = vec![
        "postgres",
        "pg_ctl",
        "initdb",
        "pg_controldata",
        "pg_basebackup",
        "psql",
    ];
    if settings.patroni.use_pg_rewind {
        out.push("pg_rewind");
    }
    out
}

/// Everything a run that writes an instance's files and starts it needs,
/// checked before the first write. `run_as`: who Patroni runs as.
pub fn check_instance(
    settings: &Settings,
    m: &InstanceManifest,
    paths: &InstancePaths,
    run_as: Option<&Account>,
) -> Vec<String> {
    let pg = Who::of(run_as);
    let me = Who::this_process();
    let mut problems = programs(settings, m, paths, &pg);
    if let Some(b) = &paths.pgbackrest {
        let host = settings.pgbackrest.repository.host.as_ref();
        problems.extend(repository_change(
            b,
            host.map(|h| h.name.as_str()),
            m.pgbackrest_new_repository,
        ));
        problems.extend(check_program(
            "pgbackrest.execpath",
            &settings.pgbackrest.execpath,
            &pg,
            ": install pgBackRest or set pgbackrest.execpath",
        ));
        // A repository host's path is there, and object storage's in it,
        // not here.
        let repository = b
            .local_repository
            .then_some(("pgbackrest.repository.path", &b.repository));
        for (key, path) in repository.into_iter().chain([
            ("pgbackrest.logpath", &b.log_dir),
            ("pgbackrest.lockpath", &b.lock_dir),
        ]) {
            let dir = WritableDir {
                key,
                path,
                who: &pg,
                made_by_who: false,
            };
            problems.extend(check_dir(&dir, &me));
        }
    }
    problems.extend(instance_dirs(paths, &pg, &me));
    if let Err(refusal) = watchdog(settings, &pg) {
        problems.push(refusal);
    }
    if let Err(refusal) = patroni_version(settings, &paths.data_dir) {
        problems.push(refusal);
    }
    if let Some(copy) = &m.settings_copy {
        problems.extend(settings_copy(&copy.path, &me));
    }
    problems.dedup();
    problems
}

/// Where Patroni looks for a watchdog when the settings name none.
pub const DEFAULT_WATCHDOG_DEVICE: &str = "/dev/watchdog";

/// The watchdog the settings ask for, on this host: `Ok` with a warning
/// when Patroni will run without the one `automatic` asks for (it does),
/// a refusal when `required` cannot be met (Patroni would not start).
pub fn watchdog(settings: &Settings, pg: &Who) -> Result<Option<String>, String> {
    let Some(w) = &settings.patroni.watchdog else {
        return Ok(None);
    };
    if w.mode == WatchdogMode::Off {
        return Ok(None);
    }
    let device = w
        .device
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_WATCHDOG_DEVICE));
    let shown = device.display();
    let missing = match std::fs::metadata(&device) {
        Err(_) => format!("there is no watchdog device at {shown} on this host"),
        Ok(meta) if !pg.may(&meta, 0o2) => format!(
            "{} cannot write to the watchdog device {shown} ({})",
            pg.name,
            describe_owner_mode(&meta)
        ),
        Ok(_) => return Ok(None),
    };
    match w.mode {
        WatchdogMode::Required => Err(format!(
            "patroni.watchdog.mode: required, but {missing}, so Patroni would not start: load \
             a watchdog driver (softdog: modprobe softdog) and give the device to {}, or set \
             patroni.watchdog.mode to automatic (Patroni then runs without a watchdog) or off",
            pg.name
        )),
        _ => Ok(Some(format!(
            "patroni.watchdog.mode: automatic, but {missing}: Patroni runs without a watchdog"
        ))),
    }
}

/// The Patroni `patroni.execpath` starts, against the versions known to
/// lose acknowledged writes with etcd v3 (see
/// `versions::PATRONI_SAFE_LEADER_KEY`): a refusal for an instance not
/// made yet (`data_dir` holds no `PG_VERSION`), so that no new member runs
/// one; a warning for one that exists, which pgherd must go on operating
/// (to upgrade it, among others). `Ok(None)` when the version cannot be
/// read from its package (no Python is started for it).
pub fn patroni_version(settings: &Settings, data_dir: &Path) -> Result<Option<String>, String> {
    use crate::versions::{packaged_patroni, patroni_steals_leader_key, PATRONI_SAFE_LEADER_KEY};
    let execpath = &settings.patroni.execpath;
    let Some(version) = packaged_patroni(execpath).filter(|v| patroni_steals_leader_key(v)) else {
        return Ok(None);
    };
    let defect = format!(
        "patroni.execpath: {} is Patroni {version}, which with etcd v3 can take the leader key \
         back from the member elected after its own lease expired (a partition or a stall \
         longer than ttl): two primaries run, and the writes the new leader acknowledged are \
         lost when the old one rewinds it (fixed in Patroni {PATRONI_SAFE_LEADER_KEY}, \
         patroni/patroni#2693; Debian 12 ships 3.0.2)",
        execpath.display()
    );
    if data_dir.join("PG_VERSION").exists() {
        Ok(Some(format!(
            "{defect}: upgrade Patroni on every member (playbooks/rolling-upgrade.yml)"
        )))
    } else {
        Err(format!(
            "{defect}: install Patroni {PATRONI_SAFE_LEADER_KEY} or later (the packages role: \
             packages_patroni_from: pip and packages_patroni_version; or Debian 13's package) \
             and set patroni.execpath to it"
        ))
    }
}

/// The file the task's inline settings are kept in: not a directory, in a
/// directory this run can make or write into.
fn settings_copy(path: &Path, me: &Who) -> Vec<String> {
    if path.is_dir() {
        return vec![format!(
            "settings_file: {} is a directory: name the file the settings go to",
            path.display()
        )];
    }
    let Some(parent) = path.parent() else {
        return Vec::new();
    };
    let dir = WritableDir {
        key: "settings_file",
        path: parent,
        who: me,
        made_by_who: false,
    };
    check_dir(&dir, me)
}

/// Patroni and the PostgreSQL programs pgherd and Patroni run, as `pg`.
fn programs(
    settings: &Settings,
    m: &InstanceManifest,
    paths: &InstancePaths,
    pg: &Who,
) -> Vec<String> {
    let version = m.version.as_str();
    let mut problems: Vec<String> = check_program(
        "patroni.execpath",
        &settings.patroni.execpath,
        pg,
        ": install Patroni or set patroni.execpath to where it is",
    )
    .into_iter()
    .collect();
    for program in postgres_programs(settings) {
        problems.extend(check_program(
            "postgresql.bindir",
            &paths.bin_dir.join(program),
            pg,
            &format!(
                ": is PostgreSQL {version} installed (Debian: postgresql-{version})? Else set \
                 postgresql.bindir"
            ),
        ));
    }
    problems
}

/// The instance's directories: those PostgreSQL makes (data, WAL), those
/// it or Patroni writes in, the parents of the files pgherd writes, and
/// the way to Patroni's configuration, which Patroni reads as `pg`.
fn instance_dirs(paths: &InstancePaths, pg: &Who, me: &Who) -> Vec<String> {
    let mut problems = Vec::new();
    let made_by_postgres = [
        Some(("postgresql.datadir", &paths.data_dir)),
        paths.wal_dir.as_ref().map(|w| ("postgresql.waldir", w)),
    ];
    for (key, path) in made_by_postgres.into_iter().flatten() {
        let dir = WritableDir {
            key,
            path,
            who: pg,
            made_by_who: true,
        };
        problems.extend(check_dir(&dir, me));
    }
    let confdir = paths.conf_dir.as_deref().map(|c| ("postgresql.confdir", c));
    let written_by_postgres = [
        ("postgresql.socket_directory", paths.socket_dir.as_path()),
        ("postgresql.logdir", paths.pg_log_dir.as_path()),
        ("patroni.logdir", paths.patroni_log_dir.as_path()),
    ];
    let parents = [
        ("patroni.pgpass", paths.patroni_pgpass.parent(), pg),
        ("patroni.configpath", paths.config.parent(), me),
        ("postgresql.passfile", paths.passfile.parent(), me),
        ("patroni.piddir", paths.pid_file.parent(), me),
    ];
    let dirs = written_by_postgres
        .into_iter()
        .chain(confdir)
        .map(|(key, path)| (key, Some(path), pg))
        .chain(parents);
    for (key, path, who) in dirs {
        let Some(path) = path else { continue };
        let dir = WritableDir {
            key,
            path,
            who,
            made_by_who: false,
        };
        problems.extend(check_dir(&dir, me));
    }
    if let Some(why) = blocked_ancestor(&paths.config, pg) {
        problems.push(format!(
            "patroni.configpath: {}: {why}",
            paths.config.display()
        ));
    }
    problems
}

#[cfg(test)]
mod tests;
