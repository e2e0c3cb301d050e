//! What a pgBackRest repository holds for a stanza (`pgbackrest info`),
//! and the backup a restore starts from.

use super::*;

/// A backup in the repository, as `pgbackrest info` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BackupSet {
    pub label: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix times.
    pub start: i64,
    pub stop: i64,
    /// Bytes of the database, and of the set in the repository.
    pub size: u64,
    pub repository_size: u64,
    /// The system identifier of the cluster it was taken from.
    pub system_identifier: Option<String>,
}

/// What the repository holds for a stanza.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StanzaInfo {
    /// Whether the stanza was created.
    pub exists: bool,
    /// The system identifiers of the clusters it holds (the last is current).
    pub system_identifiers: Vec<String>,
    /// Oldest first.
    pub backups: Vec<BackupSet>,
    /// pgBackRest's status line (`ok`, `no valid backups`, ...).
    pub status: String,
    /// The oldest and the newest WAL segment in the repository, of the
    /// cluster the stanza holds now.
    pub wal: Option<(String, String)>,
}

/// The system identifier as text: pgBackRest writes it as a JSON number
/// above 2^53, which must not pass through a float.
pub(super) fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => n.as_u64().map(|u| u.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// Reads `pgbackrest info --output=json` for one stanza.
pub fn parse_info(json: &str, stanza: &str) -> Result<StanzaInfo> {
    let doc: Value = serde_json::from_str(json)
        .map_err(|e| Error::Other(format!("pgbackrest info printed no JSON ({e}): {json}")))?;
    let entry = doc
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == stanza))
        .ok_or_else(|| Error::Other(format!("pgbackrest info does not list stanza {stanza}")))?;
    let code = entry["status"]["code"].as_i64().unwrap_or(99);
    let status = entry["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // 1: missing stanza path, 3: missing stanza data.
    let exists = !matches!(code, 1 | 3);
    let mut ids = std::collections::BTreeMap::new();
    for db in entry["db"].as_array().into_iter().flatten() {
        if let (Some(id), Some(sysid)) = (db["id"].as_i64(), id_text(&db["system-id"])) {
            ids.insert(id, sysid);
        }
    }
    let backups = entry["backup"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["error"] != Value::Bool(true))
        .map(|b| BackupSet {
            label: b["label"].as_str().unwrap_or_default().to_string(),
            kind: b["type"].as_str().unwrap_or_default().to_string(),
            start: b["timestamp"]["start"].as_i64().unwrap_or_default(),
            stop: b["timestamp"]["stop"].as_i64().unwrap_or_default(),
            size: b["info"]["size"].as_u64().unwrap_or_default(),
            repository_size: b["info"]["repository"]["size"].as_u64().unwrap_or_default(),
            system_identifier: b["database"]["id"]
                .as_i64()
                .and_then(|id| ids.get(&id).cloned()),
        })
        .collect();
    let wal = entry["archive"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|a| {
            Some((
                a["min"].as_str()?.to_string(),
                a["max"].as_str()?.to_string(),
            ))
        });
    Ok(StanzaInfo {
        exists,
        system_identifiers: ids.into_values().collect(),
        backups,
        status,
        wal,
    })
}

/// A Unix time as `2026-12-01T22:46:44+00:00`, for messages.
pub fn iso_utc(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil from days (the inverse of days_from_civil).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The backup a restore starts from: the one named, else the newest; with
/// a target time, one that ended before it (the newest that did, when none
/// is named): a backup is consistent only from its end on.
pub fn choose_backup(
    stanza: &str,
    backups: &[BackupSet],
    set: Option<&str>,
    target: &RecoveryTarget,
) -> std::result::Result<BackupSet, String> {
    let labels = || {
        if backups.is_empty() {
            "none".to_string()
        } else {
            backups
                .iter()
                .map(|b| format!("{} (ended {})", b.label, iso_utc(b.stop)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let time = match target {
        RecoveryTarget::Time(t) => Some((t, crate::names::parse_timestamp_with_offset(t)?)),
        _ => None,
    };
    match (set, time) {
        (Some(label), time) => {
            let chosen = backups.iter().find(|b| b.label == label).ok_or_else(|| {
                format!(
                    "stanza {stanza} has no backup {label}; it has: {}",
                    labels()
                )
            })?;
            if let Some((t, at)) = time {
                if chosen.stop > at {
                    return Err(format!(
                        "backup {label} ended at {}, after the target {t}: it cannot restore to \
                         a time before its own end; choose an older backup, or give no set and \
                         the newest backup that ended before the target is used",
                        iso_utc(chosen.stop)
                    ));
                }
            }
            Ok(chosen.clone())
        }
        (None, Some((t, at))) => backups
            .iter()
            .rev()
            .find(|b| b.stop <= at)
            .cloned()
            .ok_or_else(|| match backups.first() {
                Some(oldest) => format!(
                    "the target {t} is before the end of the oldest backup of stanza {stanza}, \
                     {} ({}): no backup can restore to it",
                    oldest.label,
                    iso_utc(oldest.stop)
                ),
                None => format!(
                    "stanza {stanza} has no backup to restore: take one first (patroni module, \
                     backup: full)"
                ),
            }),
        (None, None) => backups.last().cloned().ok_or_else(|| {
            format!(
                "stanza {stanza} has no backup to restore: take one first (patroni module, \
                 backup: full)"
            )
        }),
    }
}
