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
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    Some(lines[lines.len().saturating_sub(n)..].join("\n"))
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

#[cfg(test)]
mod tests {
    use super::*;

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
