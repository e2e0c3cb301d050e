//! What refuses a major upgrade before anything stops: programs, the
//! cluster's state, room, and pg_upgrade's (and pgBackRest's) own checks
//! on a trial cluster.

use std::path::{Path, PathBuf};

use super::super::*;
use super::programs::succeeded;

/// Free room the upgrade wants on the data directories' filesystem: a
/// floor, plus a tenth of the old data directory (the new catalogs and
/// WAL; the relations themselves are linked, not copied).
const ROOM_FLOOR: u64 = 256 << 20;

/// How far behind the leader a replica may be when the upgrade is
/// checked: one WAL segment.
const MAXIMUM_LAG: u64 = 16 << 20;

/// The new major's programs are on the host, and on the leader the old
/// one's too.
pub(super) fn binaries(node: &Node<'_>, old: &Node<'_>, leads: bool) -> Result<()> {
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
pub(super) fn leader_runs_major(node: &Node<'_>, leader: &str, to: &str) -> bool {
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
pub(super) fn cluster(
    node: &Node<'_>,
    old: &Node<'_>,
    keys: &ClusterKeys,
    old_running: bool,
    refusals: &mut Refusals<'_>,
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
        if refusals.foresee {
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
        refusals.refuse(format!(
            "cluster {scope} still has members running besides its leader ({}): stop them first \
             (instance state: stopped); they are copied again from the upgraded leader; nothing \
             was changed",
            live.join(", ")
        ))?;
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
pub(super) fn room(old_data: &Path, new_data: &Path) -> Result<()> {
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
pub(super) fn data_checksums(old: &Node<'_>) -> Result<bool> {
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
pub(super) fn with_pg_upgrade(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trial_cluster_lives_beside_the_old_data_directory() {
        assert_eq!(
            trial_dir(Path::new("/var/lib/postgresql/15/main"), "17"),
            Path::new("/var/lib/postgresql/15/.main.pgherd-upgrade-check-17")
        );
    }
}
