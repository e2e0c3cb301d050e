//! The last lines of an instance's Patroni and PostgreSQL logs, for the
//! messages of failed waits.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::paths::InstancePaths;

/// Lines shown from each log.
pub const TAIL_LINES: usize = 15;

/// The last `n` lines of a file, reading at most its last 64 kB.
pub fn tail(path: &Path, n: usize) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(64 * 1024);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    Some(last_lines(&String::from_utf8_lossy(&buf), n))
}

/// The last `n` lines of a text.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `; last lines of PATH:` and the last `n` lines of the file, to end a
/// message with; nothing when the file cannot be read.
pub fn tail_note(path: &Path, n: usize) -> String {
    tail(path, n).map_or(String::new(), |t| {
        format!("; last lines of {}:\n{t}", path.display())
    })
}

/// The most recently modified file of a directory.
pub fn newest_file(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file().then(|| (meta.modified().ok(), e.path()))
        })
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p)
}

/// Patroni's log, its console output, and PostgreSQL's newest log.
pub fn instance_log_tails(paths: &InstancePaths) -> String {
    let mut files = vec![
        paths.patroni_log_dir.join("patroni.log"),
        paths.patroni_console_log(),
    ];
    if let Some(pg) = newest_file(&paths.pg_log_dir) {
        files.push(pg);
    }
    let mut out = Vec::new();
    let errors = program_errors(paths);
    if !errors.is_empty() {
        out.push(format!("errors reported: {}", errors.join("; ")));
    }
    for f in files {
        if let Some(t) = tail(&f, TAIL_LINES).filter(|t| !t.trim().is_empty()) {
            out.push(format!("last lines of {}:\n{t}", f.display()));
        }
    }
    if out.is_empty() {
        format!(
            "no log lines in {} or {}",
            paths.patroni_log_dir.display(),
            paths.pg_log_dir.display()
        )
    } else {
        out.join("\n")
    }
}

/// The errors the programs Patroni runs printed (initdb, pg_basebackup,
/// pg_ctl, pg_rewind, PostgreSQL's FATAL and PANIC lines), newest last,
/// from Patroni's console output and log: what a failed start is about,
/// stated before the log tails.
pub fn program_errors(paths: &InstancePaths) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in [
        paths.patroni_console_log(),
        paths.patroni_log_dir.join("patroni.log"),
    ] {
        let Some(text) = tail(&f, 200) else { continue };
        for line in text.lines() {
            let line = line.trim();
            let found = [
                "initdb: error:",
                "pg_basebackup: error:",
                "pg_ctl: ",
                "pg_rewind: error:",
                "FATAL:",
                "PANIC:",
            ]
            .iter()
            .find_map(|m| line.find(m).map(|i| &line[i..]));
            if let Some(e) = found {
                if !out.iter().any(|o| o == e) {
                    out.push(e.to_string());
                }
            }
        }
    }
    let skip = out.len().saturating_sub(3);
    out.split_off(skip)
}

/// Whether a standby's PostgreSQL log (its last lines) says that its last
/// attempt to stream failed because the primary has no replication slot of
/// its name yet. PostgreSQL then waits `wal_retrieve_retry_interval` (5 s
/// by default) before it asks again, unless something wakes it; Patroni
/// creates a member's slot on the leader's next HA loop, which may come
/// after a fast clone has already started the standby.
pub fn standby_waits_for_missing_slot(log_tail: &str) -> bool {
    log_tail
        .lines()
        .rev()
        .find_map(|line| {
            if line.contains("started streaming WAL") {
                Some(false)
            } else if line.contains("could not start WAL streaming")
                && line.contains("replication slot")
                && line.contains("does not exist")
            {
                Some(true)
            } else {
                None
            }
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_slot_is_told_by_the_last_streaming_attempt() {
        let missing = "2026-11-22 08:47:31.190 UTC [4871] LOG:  database system is ready to accept read-only connections\n\
             2026-11-22 08:47:31.202 UTC [4889] FATAL:  could not start WAL streaming: ERROR:  replication slot \"pg2\" does not exist\n\
             2026-11-22 08:47:31.215 UTC [4876] LOG:  waiting for WAL to become available at 0/4000018";
        assert!(standby_waits_for_missing_slot(missing));
        let streaming = format!(
            "{missing}\n2026-11-22 08:47:36.214 UTC [4909] LOG:  started streaming WAL from primary at 0/4000000 on timeline 1"
        );
        assert!(!standby_waits_for_missing_slot(&streaming));
        assert!(!standby_waits_for_missing_slot(
            "FATAL:  could not connect to the primary server: connection refused"
        ));
        assert!(!standby_waits_for_missing_slot(""));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let d = std::env::temp_dir().join(format!("pgherd-logs-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("a.log");
        let text: String = (1..=40).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&f, text).unwrap();
        assert_eq!(tail(&f, 2).unwrap(), "line 39\nline 40");
        assert_eq!(newest_file(&d), Some(f));
        assert!(tail(&d.join("missing"), 3).is_none());
        std::fs::remove_dir_all(&d).ok();
    }
}
