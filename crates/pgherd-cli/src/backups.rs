//! `pgherd backup --list`: the backups a cluster's repository holds, the
//! oldest point in time they can restore, and how old the newest is.

use pgherd_core::pgbackrest::{iso_utc, BackupSet, StanzaInfo};
use serde::Serialize;

use crate::status::{columns, human_bytes};

/// What `--json` prints.
#[derive(Debug, Serialize, PartialEq)]
pub struct BackupList {
    pub stanza: String,
    /// pgBackRest's status of the stanza (`ok`, `no valid backups`, ...).
    pub status: String,
    /// Oldest first.
    pub backups: Vec<BackupSet>,
    /// The oldest backup's end: the earliest time a restore can reach.
    pub restorable_from: Option<String>,
    /// Seconds since the newest backup ended.
    pub newest_backup_age: Option<i64>,
    /// The oldest and the newest WAL segment in the repository.
    pub wal_oldest: Option<String>,
    pub wal_newest: Option<String>,
}

impl BackupList {
    pub fn new(stanza: &str, info: StanzaInfo, now: i64) -> BackupList {
        let (wal_oldest, wal_newest) = info.wal.clone().unzip();
        BackupList {
            stanza: stanza.to_string(),
            status: info.status,
            restorable_from: info.backups.first().map(|b| iso_utc(b.stop)),
            newest_backup_age: info.backups.last().map(|b| (now - b.stop).max(0)),
            backups: info.backups,
            wal_oldest,
            wal_newest,
        }
    }
}

/// A duration in words: `42 s`, `5 min 3 s`, `2 h 7 min`, `3 d 4 h`.
pub fn human_duration(secs: i64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, _) => format!("{m} min {s} s"),
        (0, _, _) => format!("{h} h {m} min"),
        _ => format!("{d} d {h} h"),
    }
}

/// The list as a table, then what it means for a restore.
pub fn render(list: &BackupList) -> String {
    let mut out = format!("stanza {}: {}\n", list.stanza, list.status);
    if list.backups.is_empty() {
        out.push_str("no backup yet: nothing can be restored\n");
        return out;
    }
    let head = ["LABEL", "TYPE", "STARTED", "TOOK", "SIZE", "IN REPOSITORY"];
    let mut rows = vec![head.map(String::from).to_vec()];
    rows.extend(list.backups.iter().map(|b| {
        vec![
            b.label.clone(),
            b.kind.clone(),
            iso_utc(b.start),
            human_duration((b.stop - b.start).max(0)),
            human_bytes(b.size),
            human_bytes(b.repository_size),
        ]
    }));
    out.push_str(&columns(&rows));
    if let Some(from) = &list.restorable_from {
        out.push_str(&format!(
            "restorable from {from} (the oldest backup's end) on{}\n",
            match &list.wal_newest {
                Some(w) => format!(", through the newest WAL archived: {w}"),
                None => String::new(),
            }
        ));
    }
    if let Some(age) = list.newest_backup_age {
        out.push_str(&format!(
            "the newest backup ended {} ago\n",
            human_duration(age)
        ));
    }
    out
}

/// One line under `pgherd status --backups`.
pub fn summary(list: &BackupList) -> String {
    let newest = match (list.backups.last(), list.newest_backup_age) {
        (Some(b), Some(age)) => format!(
            "newest {} {} ended {} ago",
            b.kind,
            b.label,
            human_duration(age)
        ),
        _ => "no backup yet".to_string(),
    };
    let wal = match &list.wal_newest {
        Some(w) => format!("; newest WAL in the repository {w}"),
        None => String::new(),
    };
    format!(
        "backups (stanza {}, {}): {newest}{wal}",
        list.stanza, list.status
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(label: &str, kind: &str, start: i64, stop: i64) -> BackupSet {
        BackupSet {
            label: label.into(),
            kind: kind.into(),
            start,
            stop,
            size: 23_000_748,
            repository_size: 3_043_988,
            system_identifier: None,
        }
    }

    #[test]
    fn durations_read_in_words() {
        for (secs, words) in [
            (0, "0 s"),
            (42, "42 s"),
            (303, "5 min 3 s"),
            (7_620, "2 h 7 min"),
            (273_600, "3 d 4 h"),
        ] {
            assert_eq!(human_duration(secs), words);
        }
    }

    #[test]
    fn the_list_says_from_when_a_restore_can_start_and_how_old_the_newest_is() {
        let info = StanzaInfo {
            exists: true,
            status: "ok".into(),
            backups: vec![
                set("20261201-214644F", "full", 1_796_161_604, 1_796_161_607),
                set(
                    "20261201-214644F_20261201-220000I",
                    "incr",
                    1_796_162_400,
                    1_796_162_402,
                ),
            ],
            wal: Some((
                "0000000100000000000000A1".into(),
                "0000000100000000000000B7".into(),
            )),
            ..StanzaInfo::default()
        };
        let list = BackupList::new("main", info, 1_796_162_402 + 7_620);
        assert_eq!(
            list.restorable_from.as_deref(),
            Some("2026-12-01T21:46:47+00:00")
        );
        assert_eq!(list.newest_backup_age, Some(7_620));
        let text = render(&list);
        assert!(text.starts_with("stanza main: ok\nLABEL"), "{text}");
        assert!(
            text.contains(
                "20261201-214644F_20261201-220000I  incr  2026-12-01T22:00:00+00:00  2 s"
            ),
            "{text}"
        );
        assert!(
            text.contains("through the newest WAL archived: 0000000100000000000000B7"),
            "{text}"
        );
        assert!(
            text.contains("the newest backup ended 2 h 7 min ago"),
            "{text}"
        );
        assert_eq!(
            summary(&list),
            "backups (stanza main, ok): newest incr 20261201-214644F_20261201-220000I ended \
             2 h 7 min ago; newest WAL in the repository 0000000100000000000000B7"
        );
        let empty = BackupList::new("main", StanzaInfo::default(), 0);
        assert!(render(&empty).contains("no backup yet"));
        assert!(
            summary(&empty).ends_with(": no backup yet"),
            "{}",
            summary(&empty)
        );
        assert_eq!(empty.restorable_from, None);
    }
}
