//! A major upgrade of a node: on the member upgraded in place (the
//! leader), the old major stopped, a new data directory made with the new
//! major's initdb, `pg_upgrade --link` from the old one, the cluster's
//! state in the DCS replaced (its dynamic configuration kept) and Patroni
//! started on the result; on the other members, the old instance removed
//! and a new copy made from the upgraded leader. Everything `pg_upgrade
//! --check` and the cluster can refuse is checked before anything stops;
//! up to the new cluster's first start (the point of no return of
//! `--link`), a failure brings the old instance back.

use std::path::{Path, PathBuf};

use super::*;
use crate::action::{Action, UpgradeStep};
use crate::manifest::MajorUpgrade;

/// The ports pg_upgrade runs its servers on (its own default): no client
/// of the instance's port reaches them.
const UPGRADE_PORT: u16 = 50432;

/// Free room the upgrade wants on the data directories' filesystem: a
/// floor, plus a tenth of the old data directory (the new catalogs and
/// WAL; the relations themselves are linked, not copied).
const ROOM_FLOOR: u64 = 256 << 20;

/// How far behind the leader a replica may be when the upgrade is
/// checked: one WAL segment.
const MAXIMUM_LAG: u64 = 16 << 20;

/// The major of the data directory `dir` (its `PG_VERSION`), if any.
pub(super) fn data_version(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("PG_VERSION"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The file pg_upgrade renames in the old data directory before it links
/// the relations: there, the old cluster no longer starts as it is.
fn control_moved(old_data: &Path) -> PathBuf {
    old_data.join("global/pg_control.old")
}

/// Written into the old data directory once pg_upgrade has linked it into
/// the new one, removed just before the new cluster's first start (the
/// point of no return): while it is there, the upgrade can be undone.
pub(super) fn linked_marker(old_data: &Path) -> PathBuf {
    old_data.join("pgherd_upgrade_linked")
}

/// Where the upgrade stands on this host, as its files say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Stage {
    /// The old major's data directory, nothing of the new one's.
    Before,
    /// A new data directory that pg_upgrade did not finish (or that holds
    /// nothing): removed, and the old one made whole, before starting
    /// over.
    Unfinished,
    /// pg_upgrade finished; the new cluster never started.
    Linked,
    /// The new major's data directory alone, or beside an old one kept.
    Upgraded,
    /// Neither: nothing of the old major to upgrade here.
    #[default]
    Nothing,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Before => "before",
            Stage::Unfinished => "unfinished",
            Stage::Linked => "linked",
            Stage::Upgraded => "upgraded",
            Stage::Nothing => "nothing",
        }
    }
}

/// The upgrade's steps on this host, checked.
#[derive(Debug, Clone, Default)]
pub(super) struct UpgradeSteps {
    /// Up to the start of the new instance.
    pub before: Vec<Action>,
    /// Once it runs: statistics, the old instance's removal.
    pub after: Vec<Action>,
    /// The steps up to the start can be undone (no new cluster started
    /// yet): a failure among them brings the old instance back.
    pub undoable: bool,
    /// Where the upgrade stood.
    pub stage: Stage,
}

/// Reads where the upgrade stands: `new_data`, the new major's data
/// directory, `old_data` the old one's.
pub(super) fn stage(new_data: &Path, old_data: &Path, from: &str, to: &str) -> Stage {
    let new_version = data_version(new_data);
    let old_version = data_version(old_data);
    let unfinished = new_data.join("pg_upgrade_output.d").exists();
    match (new_version.as_deref(), old_version.as_deref()) {
        (Some(v), _) if v == to && !unfinished => {
            if linked_marker(old_data).exists() {
                Stage::Linked
            } else {
                Stage::Upgraded
            }
        }
        (_, Some(v)) if v == from => {
            if new_data.exists() {
                Stage::Unfinished
            } else {
                Stage::Before
            }
        }
        _ => Stage::Nothing,
    }
}

/// A condition other hosts' tasks may meet first: refused in a real run,
/// a warning when foreseeing (check mode).
fn refuse_or_warn(foresee: bool, warnings: &mut Vec<String>, e: String) -> Result<()> {
    if foresee {
        warnings.push(format!("in a real run: {e}"));
        Ok(())
    } else {
        Err(Error::Other(e))
    }
}

/// Checks the upgrade and plans its steps on this host; changes nothing
/// (`pg_upgrade --check` works in a directory of its own, removed after).
pub(super) fn plan(
    node: &Node<'_>,
    old: &Node<'_>,
    up: &MajorUpgrade,
    running: bool,
    foresee: bool,
    warnings: &mut Vec<String>,
) -> Result<UpgradeSteps> {
    let (from, to) = (up.from.as_str(), node.m.version.as_str());
    let new_data = &node.paths.data_dir;
    let old_data = &old.paths.data_dir;
    let old_running = old.service.is_running()?;
    let stage = stage(new_data, old_data, from, to);
    let leads = up.leader == node.m.node;
    let mut steps = UpgradeSteps {
        stage,
        ..UpgradeSteps::default()
    };
    // The old instance's files go once the new one runs (its data, linked
    // into the new data directory, is then the new cluster's).
    let remove_old = |steps: &mut UpgradeSteps, warnings: &mut Vec<String>| {
        steps.after.extend(
            super::remove::plan(old, old_running, None, warnings)
                .into_iter()
                .map(|a| Action::Upgrade(UpgradeStep::Old(Box::new(a)))),
        );
    };
    if running {
        steps.stage = Stage::Upgraded;
    }
    if running || stage == Stage::Upgraded {
        if old_data.exists() || old_running {
            remove_old(&mut steps, warnings);
        }
        return Ok(steps);
    }
    if stage == Stage::Nothing && leads {
        return Err(Error::Other(format!(
            "upgrade.from: {from}: {} holds no PostgreSQL {from} data directory to upgrade and {} \
             none of PostgreSQL {to}; nothing was changed",
            old_data.display(),
            new_data.display()
        )));
    }
    check_binaries(node, old, leads)?;
    if !leads {
        // A new copy of the upgraded leader: its old instance goes first.
        let leader_runs_new = leader_runs_major(node, up.leader.as_str(), to);
        if !leader_runs_new {
            refuse_or_warn(
                foresee,
                warnings,
                format!(
                    "{} is not upgraded yet: its leader {} does not run PostgreSQL {to}; upgrade \
                     the leader first (playbooks/upgrade.yml does); nothing was changed",
                    node.name(),
                    up.leader
                ),
            )?;
        }
        if stage != Stage::Nothing {
            steps.before.extend(
                super::remove::plan(old, old_running, None, warnings)
                    .into_iter()
                    .map(|a| Action::Upgrade(UpgradeStep::Old(Box::new(a)))),
            );
        }
        if new_data.exists() {
            steps.before.push(Action::RemovePath(new_data.clone()));
        }
        return Ok(steps);
    }
    // The leader, upgraded in place: up to pg_upgrade's end unless a run
    // got that far already.
    let keys = node.read_cluster()?;
    if stage != Stage::Linked {
        check_cluster(node, old, &keys, old_running, foresee, warnings)?;
        check_room(old_data, new_data)?;
        let checksums = data_checksums(old)?;
        check_with_pg_upgrade(node, old, old_running, checksums)?;
        if stage == Stage::Unfinished {
            steps.before.push(Action::Upgrade(UpgradeStep::Unwind {
                data_dir: new_data.clone(),
                old_data_dir: old_data.clone(),
            }));
        }
        // The new data directory is made while the old instance still
        // runs: the writes stop for the stop, pg_upgrade and the start only.
        steps.before.push(Action::Upgrade(UpgradeStep::InitNew {
            data_dir: new_data.clone(),
            version: to.to_string(),
            checksums,
        }));
        if old_running {
            steps
                .before
                .push(Action::Upgrade(UpgradeStep::StopOld { node: old.name() }));
        }
        steps.before.push(Action::Upgrade(UpgradeStep::Link {
            from: from.to_string(),
            to: to.to_string(),
            old_data_dir: old_data.clone(),
            data_dir: new_data.clone(),
        }));
    }
    steps.undoable = true;
    steps.before.extend(state_replaced(node, &keys));
    // Last before the point of no return: the old instance archives into
    // the stanza no longer once it is upgraded.
    steps.before.extend(stanza_upgraded(node));
    steps.before.push(Action::Upgrade(UpgradeStep::Commit {
        old_data_dir: old_data.clone(),
    }));
    finish(node, &mut steps);
    remove_old(&mut steps, warnings);
    Ok(steps)
}

/// With backups: the stanza upgraded to the new data directory.
fn stanza_upgraded(node: &Node<'_>) -> Option<Action> {
    node.m.pgbackrest_stanza.as_ref().map(|s| {
        Action::Upgrade(UpgradeStep::StanzaUpgrade {
            stanza: s.to_string(),
        })
    })
}

/// Once the upgraded leader runs: statistics, and with backups a full
/// backup of the new major for the other members to be built from.
fn finish(node: &Node<'_>, steps: &mut UpgradeSteps) {
    steps
        .after
        .push(Action::Upgrade(UpgradeStep::Analyze { node: node.name() }));
    if let Some(stanza) = &node.m.pgbackrest_stanza {
        steps.after.push(Action::Upgrade(UpgradeStep::Backup {
            node: node.name(),
            stanza: stanza.to_string(),
        }));
    }
}

/// The cluster's keys removed but its dynamic configuration: the
/// upgraded leader's Patroni then writes the new system identifier and
/// leads.
fn state_replaced(node: &Node<'_>, keys: &ClusterKeys) -> Option<Action> {
    (!keys.is_empty()).then(|| Action::RemoveClusterState {
        scope: node.m.cluster.to_string(),
        keys: keys.all_keys.len(),
        prefix: keys.prefix.clone(),
        initialize: keys.initialize.clone(),
        keep_config: true,
    })
}

/// The new major's programs are on the host, and on the leader the old
/// one's too.
fn check_binaries(node: &Node<'_>, old: &Node<'_>, leads: bool) -> Result<()> {
    let mut missing = Vec::new();
    let new: &[&str] = if leads {
        &["initdb", "pg_upgrade", "postgres", "vacuumdb"]
    } else {
        &["postgres"]
    };
    let old_programs: &[&str] = if leads {
        &["postgres", "pg_controldata"]
    } else {
        &[]
    };
    for (n, programs) in [(node, new), (old, old_programs)] {
        for p in programs {
            let path = n.paths.bin_dir.join(p);
            if !path.exists() {
                missing.push(path.display().to_string());
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Other(format!(
        "the upgrade needs {}: install PostgreSQL {}'s server packages on every member first; \
         nothing was changed",
        missing.join(", "),
        node.m.version
    )))
}

/// Whether `leader`'s Patroni reports a PostgreSQL of major `to`.
fn leader_runs_major(node: &Node<'_>, leader: &str, to: &str) -> bool {
    let Ok(keys) = node.read_cluster() else {
        return false;
    };
    if keys.leader.as_deref() != Some(leader) {
        return false;
    }
    let addresses: std::collections::BTreeMap<String, String> =
        keys.member_api_addresses().into_iter().collect();
    addresses
        .get(leader)
        .and_then(|a| node.rest_at(a, POLL_REQUEST_TIMEOUT).ok())
        .and_then(|c| c.patroni().ok())
        .and_then(|s| s.server_version)
        .is_some_and(|v| (v / 10000).to_string() == to)
}

/// The cluster the leader's upgrade starts from: this node leads it, and
/// no other member runs (the others stop first: their copies are made
/// again after).
fn check_cluster(
    node: &Node<'_>,
    old: &Node<'_>,
    keys: &ClusterKeys,
    old_running: bool,
    foresee: bool,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let me = node.m.node.as_str();
    let scope = node.m.cluster.as_str();
    if old_running {
        if keys.leader.as_deref() != Some(me) {
            return Err(Error::Other(format!(
                "{} does not lead cluster {scope} ({}): the upgrade runs pg_upgrade on the \
                 leader; name it in upgrade.leader (or switch over first); nothing was changed",
                old.name(),
                keys.leader
                    .as_deref()
                    .map_or("it has no leader".to_string(), |l| format!("{l} leads it"))
            )));
        }
        let client = old.rest(POLL_REQUEST_TIMEOUT)?;
        let status = client.patroni()?;
        // Before the replicas stop (the checks of the whole cluster, in
        // check mode): each streams, caught up. Stopped before the leader,
        // they keep the old major's data as it was, a way back.
        if foresee {
            let view = client.cluster()?;
            let behind: Vec<String> = view
                .members
                .iter()
                .filter(|m| m.name != me)
                .filter_map(|m| {
                    let healthy = matches!(m.state.as_str(), "streaming" | "running");
                    match (healthy, m.lag.as_ref().and_then(serde_json::Value::as_u64)) {
                        (true, Some(lag)) if lag <= MAXIMUM_LAG => None,
                        (true, Some(lag)) => Some(format!("{} lags {lag} bytes", m.name)),
                        _ => Some(format!("{} is {}", m.name, m.state)),
                    }
                })
                .collect();
            if !behind.is_empty() {
                return Err(Error::Other(format!(
                    "every replica of cluster {scope} must stream, caught up, before the \
                     upgrade: {}; wait, or reinitialise it (the patroni module's reinit); \
                     nothing was changed",
                    behind.join(", ")
                )));
            }
        }
        if status.pending_restart {
            return Err(Error::Other(format!(
                "{} has a pending restart: restart it first (the patroni module's restart: \
                 pending), so that the upgrade starts from the configuration it runs with; \
                 nothing was changed",
                old.name()
            )));
        }
    }
    let live: Vec<String> =
        crate::cluster::live_members(node.settings, keys, node.m.restapi_auth.as_ref())
            .into_iter()
            .filter(|n| n != me)
            .collect();
    if !live.is_empty() {
        refuse_or_warn(
            foresee,
            warnings,
            format!(
                "cluster {scope} still has members running besides its leader ({}): stop them \
                 first (instance state: stopped); they are copied again from the upgraded \
                 leader; nothing was changed",
                live.join(", ")
            ),
        )?;
    }
    Ok(())
}

/// The device of `path`, or of its nearest existing ancestor.
fn device_of(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    path.ancestors()
        .find_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.dev())
}

/// The bytes of the files under `dir`.
fn size_of(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.size(),
                Err(_) => {}
            }
        }
    }
    total
}

/// `pg_upgrade --link` needs both data directories on one filesystem,
/// and room there for the new catalogs.
fn check_room(old_data: &Path, new_data: &Path) -> Result<()> {
    if device_of(old_data) != device_of(new_data) {
        return Err(Error::Other(format!(
            "{} and {} are on different filesystems: pg_upgrade --link makes hard links from \
             one to the other; put the new major's data directory on the old one's filesystem; \
             nothing was changed",
            old_data.display(),
            new_data.display()
        )));
    }
    let want = ROOM_FLOOR + size_of(old_data) / 10;
    let free = crate::fs::free_bytes(old_data)?;
    if free < want {
        return Err(Error::Other(format!(
            "{} has {} MiB free, the upgrade wants {} MiB (the new catalogs and WAL, 256 MiB \
             and a tenth of the old data directory); nothing was changed",
            old_data.display(),
            free >> 20,
            want >> 20
        )));
    }
    Ok(())
}

/// Whether the old data directory has data checksums (pg_controldata): the
/// new one must match.
fn data_checksums(old: &Node<'_>) -> Result<bool> {
    let program = old.paths.bin_dir.join("pg_controldata");
    let mut cmd = crate::process::command(&program, old.run_as.as_ref());
    cmd.arg("-D").arg(&old.paths.data_dir);
    let what = format!("pg_controldata -D {}", old.paths.data_dir.display());
    let out = succeeded(&mut cmd, &what, old.timeout)?;
    Ok(out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Data page checksum version:"))
        .is_some_and(|v| v.trim() != "0"))
}

/// Runs `cmd` (`what`, for messages) to its end; its output, or what it
/// said when it failed.
fn succeeded(
    cmd: &mut std::process::Command,
    what: &str,
    timeout: std::time::Duration,
) -> Result<crate::process::Finished> {
    let out = crate::process::run(cmd, what, timeout, String::new)?;
    if out.status.success() {
        return Ok(out);
    }
    Err(Error::Other(format!(
        "{what} failed ({}): {}",
        out.status,
        out.stderr.trim()
    )))
}

/// The directory `pg_upgrade --check` makes its trial cluster in: beside
/// the old data directory (one filesystem, for the hard-link check).
fn trial_dir(old_data: &Path, to: &str) -> PathBuf {
    let name = old_data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    old_data.with_file_name(format!(".{name}.pgherd-upgrade-check-{to}"))
}

/// Runs `pg_upgrade --check` against the old instance (running: a live
/// check) and a trial cluster of the new major, removed after; its report
/// (the incompatibilities it lists, with the files naming them) refuses
/// the upgrade.
fn check_with_pg_upgrade(
    node: &Node<'_>,
    old: &Node<'_>,
    old_running: bool,
    checksums: bool,
) -> Result<()> {
    let trial = trial_dir(&old.paths.data_dir, node.m.version.as_str());
    remove_path(&trial)?;
    let result = (|| {
        node.initdb(&trial, checksums)?;
        node.pg_upgrade(old, &trial, true, old_running)?;
        // Backups: pgBackRest must know the new major (its stanza is
        // upgraded just before the point of no return).
        match node.pgbackrest() {
            Some(b) => {
                let scratch = node.upgrade_work_dir()?;
                let supported = b.supports(&trial, &scratch, node.timeout);
                let _ = remove_path(&scratch);
                supported.map_err(|e| Error::Other(format!("{e}; nothing was changed")))
            }
            None => Ok(()),
        }
    })();
    let _ = remove_path(&trial);
    result
}

impl Node<'_> {
    /// A work directory of the upgrade's programs (pg_upgrade writes its
    /// scripts where it runs), owned by the instance's account; removed
    /// by the caller.
    fn upgrade_work_dir(&self) -> Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!(
            "pgherd-upgrade-{}-{}",
            self.m.qualified_name(),
            std::process::id()
        ));
        remove_path(&dir)?;
        crate::fs::create_dir(&dir, 0o700, self.run_as.as_ref().map(|a| a.owner))?;
        Ok(dir)
    }

    /// Runs the new major's initdb into `dir`, with the cluster's encoding
    /// and locale and the old data directory's checksums.
    pub(super) fn initdb(&self, dir: &Path, checksums: bool) -> Result<()> {
        let initdb = &self.settings.postgresql.initdb;
        let program = self.paths.bin_dir.join("initdb");
        let mut cmd = crate::process::command(&program, self.run_as.as_ref());
        cmd.arg("-D")
            .arg(dir)
            .arg("-U")
            .arg(&self.settings.postgresql.superuser)
            .arg("--encoding")
            .arg(&initdb.encoding)
            .arg("--locale")
            .arg(&initdb.locale)
            .arg("--auth=peer")
            .arg("--auth-host=scram-sha-256");
        if checksums {
            cmd.arg("--data-checksums");
        }
        succeeded(
            &mut cmd,
            &format!("initdb -D {}", dir.display()),
            self.timeout,
        )
        .map(|_| ())
    }

    /// `pg_upgrade --link` from `old`'s data directory into `new_data`;
    /// with `check`, only its checks (`live`: the old instance runs).
    pub(super) fn pg_upgrade(
        &self,
        old: &Node<'_>,
        new_data: &Path,
        check: bool,
        live: bool,
    ) -> Result<()> {
        let work = self.upgrade_work_dir()?;
        let program = self.paths.bin_dir.join("pg_upgrade");
        let mut cmd = crate::process::command(&program, self.run_as.as_ref());
        // The old configuration where it is (Debian's layout keeps it
        // apart): pg_upgrade asks postgres for the data directory.
        let old_dir = old.paths.conf_dir.as_ref().unwrap_or(&old.paths.data_dir);
        let old_port = if live { old.m.port } else { UPGRADE_PORT };
        cmd.current_dir(&work)
            .arg("--link")
            .arg("-b")
            .arg(&old.paths.bin_dir)
            .arg("-B")
            .arg(&self.paths.bin_dir)
            .arg("-d")
            .arg(old_dir)
            .arg("-D")
            .arg(new_data)
            .arg("-p")
            .arg(old_port.to_string())
            .arg("-P")
            .arg(UPGRADE_PORT.to_string())
            .arg("-s")
            .arg(&self.paths.socket_dir)
            .arg("-U")
            .arg(&self.settings.postgresql.superuser);
        if let Some(conf) = &old.paths.conf_dir {
            cmd.arg("-o").arg(format!(
                "-c config_file={}",
                conf.join("postgresql.conf").display()
            ));
        }
        if check {
            cmd.arg("--check");
        }
        let what = if check {
            "pg_upgrade --check"
        } else {
            "pg_upgrade --link"
        };
        let out = crate::process::run(&mut cmd, what, self.timeout, String::new);
        let report = match &out {
            Ok(f) if f.status.success() => None,
            Ok(f) => Some(failure_report(f, new_data, &work)),
            Err(_) => None,
        };
        let _ = remove_path(&work);
        let out = out?;
        match report {
            None if out.status.success() => Ok(()),
            report => Err(Error::Other(format!(
                "{what} from {} (PostgreSQL {}) to PostgreSQL {} refused: {}{}",
                old.paths.data_dir.display(),
                old.m.version,
                self.m.version,
                report.unwrap_or_default(),
                if check { "; nothing was changed" } else { "" }
            ))),
        }
    }

    /// vacuumdb --all --analyze-in-stages on the running new instance.
    pub(super) fn analyze(&self) -> Result<()> {
        let program = self.paths.bin_dir.join("vacuumdb");
        let psql = self.psql();
        let mut cmd = crate::process::command(&program, self.run_as.as_ref());
        cmd.arg("--all")
            .arg("--analyze-in-stages")
            .arg("-h")
            .arg(&psql.socket_dir)
            .arg("-p")
            .arg(psql.port.to_string())
            .arg("-U")
            .arg(&self.settings.postgresql.superuser);
        if self.paths.passfile.exists() {
            cmd.env("PGPASSFILE", &self.paths.passfile);
        }
        let what = format!("vacuumdb --all --analyze-in-stages on {}", self.name());
        succeeded(&mut cmd, &what, self.timeout).map(|_| ())
    }

    /// Undoes an upgrade not started yet: what a killed pg_upgrade left
    /// running stopped, the new data directory removed, the old one's
    /// control file back where pg_upgrade took it from.
    pub(super) fn unwind_upgrade(&self, old: &Node<'_>) -> Result<Vec<String>> {
        let mut warnings = self.service.stop(self.timeout)?;
        // The old instance's Patroni may still run (a failure before its
        // stop): only what runs without it is stopped.
        if !old.service.is_running()? {
            warnings.extend(old.service.stop(self.timeout)?);
        }
        let old_data = &old.paths.data_dir;
        let moved = control_moved(old_data);
        if moved.exists() {
            let back = old_data.join("global/pg_control");
            std::fs::rename(&moved, &back).map_err(|e| Error::io(&moved, "renaming back", e))?;
        }
        remove_path(&self.paths.data_dir)?;
        remove_path(&linked_marker(old_data))?;
        Ok(warnings)
    }

    /// Runs pg_upgrade for real and marks the old data directory linked.
    pub(super) fn link(&self, old: &Node<'_>) -> Result<()> {
        self.pg_upgrade(old, &self.paths.data_dir, false, false)?;
        crate::fs::write_atomic(
            &linked_marker(&old.paths.data_dir),
            b"linked into the new major's data directory; not started yet\n",
            0o600,
            self.run_as.as_ref().map(|a| a.owner),
        )
    }
}

/// What a failed pg_upgrade said: the lines of its output that name a
/// problem, and the files it wrote the details into (the libraries or
/// objects in the way).
fn failure_report(f: &crate::process::Finished, new_data: &Path, work: &Path) -> String {
    let mut lines: Vec<String> = f
        .stdout
        .lines()
        .chain(f.stderr.lines())
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.ends_with("ok")
                && !l.starts_with("Performing")
                && !l.starts_with("---")
                && !l.starts_with("Checking")
        })
        .map(str::to_string)
        .collect();
    // Details files (loadable_libraries.txt and the like), in the work
    // directory or under the new data directory's output directory.
    let mut details = Vec::new();
    let mut stack = vec![work.to_path_buf(), new_data.join("pg_upgrade_output.d")];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "log") {
                // The logs of the programs pg_upgrade ran: their errors.
                if let Ok(text) = std::fs::read_to_string(&p) {
                    let errors: Vec<&str> = text
                        .lines()
                        .filter(|l| {
                            let l = l.to_ascii_lowercase();
                            l.contains("error") || l.contains("fatal") || l.contains("failed")
                        })
                        .collect();
                    if !errors.is_empty() {
                        details.push(format!(
                            "{}: {}",
                            p.file_name().unwrap_or_default().to_string_lossy(),
                            errors[errors.len().saturating_sub(3)..].join(" / ")
                        ));
                    }
                }
            } else if p.extension().is_some_and(|x| x == "txt") {
                if let Ok(text) = std::fs::read_to_string(&p) {
                    let text: Vec<&str> = text.lines().take(20).collect();
                    details.push(format!(
                        "{}: {}",
                        p.file_name().unwrap_or_default().to_string_lossy(),
                        text.join(" / ")
                    ));
                }
            }
        }
    }
    lines.extend(details);
    lines.truncate(30);
    lines.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pgherd-upgrade-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_stage_is_read_from_the_data_directories() {
        let d = dir("stage");
        let (old, new) = (d.join("15/main"), d.join("17/main"));
        let write = |p: &Path, text: &str| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        let at = || stage(&new, &old, "15", "17");
        assert_eq!(at(), Stage::Nothing);
        write(&old.join("PG_VERSION"), "15\n");
        assert_eq!(at(), Stage::Before);
        std::fs::create_dir_all(new.join("pg_upgrade_output.d")).unwrap();
        write(&new.join("PG_VERSION"), "17\n");
        assert_eq!(at(), Stage::Unfinished, "pg_upgrade left its output");
        std::fs::remove_dir_all(new.join("pg_upgrade_output.d")).unwrap();
        write(&old.join("global/pg_control.old"), "");
        write(&linked_marker(&old), "");
        assert_eq!(at(), Stage::Linked);
        std::fs::remove_file(linked_marker(&old)).unwrap();
        assert_eq!(at(), Stage::Upgraded, "past the point of no return");
        std::fs::remove_dir_all(&old).unwrap();
        assert_eq!(at(), Stage::Upgraded);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_refusal_quotes_what_pg_upgrade_found_and_where() {
        use std::os::unix::process::ExitStatusExt;
        let d = dir("report");
        let out = d.join("new/pg_upgrade_output.d/20261204T172650.123");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(
            out.join("loadable_libraries.txt"),
            "could not load library \"$libdir/uuid-ossp\": ERROR:  could not access file\n\
             In database: books\n",
        )
        .unwrap();
        let f = crate::process::Finished {
            status: std::process::ExitStatus::from_raw(256),
            stdout: "Performing Consistency Checks\n-----------------------------\n\
                     Checking cluster versions                                     ok\n\
                     Checking for presence of required libraries                   fatal\n\n\
                     Your installation references loadable libraries that are missing from the\n"
                .into(),
            stderr: String::new(),
        };
        let report = failure_report(&f, &d.join("new"), &d.join("work"));
        assert!(!report.contains("Checking cluster versions"), "{report}");
        assert!(report.contains("Your installation references"), "{report}");
        assert!(
            report.contains("loadable_libraries.txt: could not load library \"$libdir/uuid-ossp\"")
                && report.contains("In database: books"),
            "{report}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_trial_cluster_lives_beside_the_old_data_directory() {
        assert_eq!(
            trial_dir(Path::new("/var/lib/postgresql/15/main"), "17"),
            Path::new("/var/lib/postgresql/15/.main.pgherd-upgrade-check-17")
        );
    }
}
