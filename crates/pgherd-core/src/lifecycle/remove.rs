//! `absent`: stop the node and remove what it had on this host (its
//! configuration, password files, data, logs, and the directories made for
//! it alone once they are empty). A member of a cluster that keeps other
//! members leaves it too (see `retire`): its key goes from the DCS.

use std::path::{Path, PathBuf};

use super::{Node, NodeRun, Report};
use crate::action::{carry_out, diff, Action};
use crate::error::Result;
use crate::paths::InstancePaths;

/// Patroni's log file in its log directory, and its rotated copies
/// (`patroni.log.1`, ...).
fn is_patroni_log(name: &str) -> bool {
    name == "patroni.log"
        || name
            .strip_prefix("patroni.log.")
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// The files of `dir` whose names `keep` selects, sorted.
fn files_in(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(&keep))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// What `absent` removes: the instance's own files and directories, and
/// its logs; warnings for logs it cannot tell apart from others'.
fn removable_paths(node: &Node<'_>) -> (Vec<PathBuf>, Vec<String>) {
    let p = &node.paths;
    let s = node.settings;
    let mut warnings = Vec::new();
    let mut out = vec![
        p.config.clone(),
        p.passfile.clone(),
        p.patroni_pgpass.clone(),
        p.pid_file.clone(),
        p.data_dir.clone(),
    ];
    out.extend(p.wal_dir.clone());
    out.extend(p.conf_dir.clone());
    // The repository is the cluster's, often shared: it stays.
    out.extend(p.pgbackrest.as_ref().map(|b| b.config.clone()));
    // A log directory of this instance alone goes whole; in a shared one,
    // only this instance's files.
    if s.postgresql.logdir.contains("{name}") {
        out.push(p.pg_log_dir.clone());
    } else if node.m.parameters.contains_key("log_filename") {
        warnings.push(format!(
            "PostgreSQL's logs in {} were left: the instance's parameters set log_filename, so \
             its files cannot be told from other instances' there",
            p.pg_log_dir.display()
        ));
    } else {
        let prefix = crate::paths::shared_log_prefix(node.m.version.as_str(), node.m.name.as_str());
        out.extend(files_in(&p.pg_log_dir, |n| n.starts_with(&prefix)));
    }
    if s.patroni.logdir.contains("{name}") {
        out.push(p.patroni_log_dir.clone());
    } else {
        out.push(p.patroni_console_log());
        out.extend(files_in(&p.patroni_log_dir, is_patroni_log));
    }
    out.retain(|path| path.symlink_metadata().is_ok());
    out.dedup();
    (out, warnings)
}

/// Of the instance's own directories (deepest first), those that removing
/// `removed` leaves empty, deepest first.
fn left_empty(own: &[PathBuf], removed: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for dir in own {
        if removed.contains(dir) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let empties = entries.flatten().all(|e| {
            let p = e.path();
            removed.contains(&p) || out.contains(&p)
        });
        if empties {
            out.push(dir.clone());
        }
    }
    out
}

/// The actions of `absent`: stop what runs, remove the service's own
/// files, the instance's paths, and its directories left empty.
pub(super) fn plan(
    node: &Node<'_>,
    running: bool,
    forget: Option<Action>,
    warnings: &mut Vec<String>,
) -> Vec<Action> {
    let mut out = Vec::new();
    if running || node.service.postmaster_pid().is_some() {
        out.push(Action::StopPatroni { node: node.name() });
    }
    out.extend(forget);
    out.push(Action::RemoveService);
    let (existing, found) = removable_paths(node);
    warnings.extend(found);
    let emptied = left_empty(&InstancePaths::own_dirs(node.settings, node.m), &existing);
    out.extend(existing.into_iter().map(Action::RemovePath));
    out.extend(emptied.into_iter().map(Action::RemoveEmptyDir));
    out
}

pub(super) fn remove(node: &Node<'_>, check_mode: bool) -> Result<Report> {
    // Without its directory no run holds the lock, and absent must not
    // make the directory of a node that was never deployed.
    let lockable = node.paths.lock_file().parent().is_some_and(Path::exists);
    let held = if check_mode || !lockable {
        None
    } else {
        Some(node.lock()?)
    };
    let running = node.service.is_running()?;
    let mut warnings = Vec::new();
    let forget = node.retiring(running, node.m.force, &mut warnings)?;
    let actions = plan(node, running, forget, &mut warnings);
    let facts = node.facts(false, None, None, &mut warnings);
    let mut run = NodeRun::new(node);
    run.warnings = warnings;
    let changes = carry_out(&actions, check_mode, &mut run)?;
    if let Some(held) = held {
        held.remove_file()?;
    }
    Ok(Report {
        changes,
        diff: diff(&actions),
        warnings: run.warnings,
        facts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patroni_logs_and_their_rotations_are_told_apart() {
        for yes in ["patroni.log", "patroni.log.1", "patroni.log.12"] {
            assert!(is_patroni_log(yes), "{yes}");
        }
        for no in [
            "patroni.log.",
            "patroni.log.old",
            "patroni.console.log",
            "x",
        ] {
            assert!(!is_patroni_log(no), "{no}");
        }
    }

    #[test]
    fn directories_left_empty_are_found_deepest_first() {
        let d = std::env::temp_dir().join(format!("pgherd-remove-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("data/15/main")).unwrap();
        std::fs::create_dir_all(d.join("log/15")).unwrap();
        std::fs::write(d.join("log/15/other.log"), b"").unwrap();
        std::fs::write(d.join("log/15/mine.log"), b"").unwrap();
        let own = vec![d.join("data/15/main"), d.join("data/15"), d.join("log/15")];
        let removed = vec![d.join("data/15/main"), d.join("log/15/mine.log")];
        assert_eq!(left_empty(&own, &removed), vec![d.join("data/15")]);
        std::fs::remove_dir_all(&d).ok();
    }
}
