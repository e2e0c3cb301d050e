//! The pgBackRest stanza of a leader: created when the repository lacks
//! it, refused when it holds another cluster, and WAL archiving watched.

use super::*;
use crate::action::Action;
use crate::pgbackrest::PgBackRest;

/// What the stanza's check found: the stanza to create, or the backups
/// and archiving of an existing one.
#[derive(Default)]
pub(super) struct StanzaSeen {
    pub create: Option<Action>,
    pub backups: Option<BackupFacts>,
}

/// The node whose stanza is looked at.
pub(super) enum StanzaCase<'a> {
    /// It runs; its status when this run has just waited for it.
    Running(Option<&'a NodeStatus>),
    /// It will bootstrap the cluster when it starts (check mode).
    Bootstrapping,
}

impl Node<'_> {
    /// On the leader, whether the instance's pgBackRest stanza is to be
    /// created (the repository lacks it), for a running leader or for a
    /// node about to bootstrap the cluster (check mode foresees it); for a
    /// running leader whose stanza exists, its backups and archiving (the
    /// facts' `backups`), and a warning when archiving fails. Refuses a
    /// stanza that holds another cluster.
    pub(super) fn look_at_stanza(
        &self,
        case: StanzaCase<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<StanzaSeen> {
        let Some(b) = self.pgbackrest() else {
            return Ok(StanzaSeen::default());
        };
        let running = matches!(case, StanzaCase::Running(_));
        let ours = match case {
            StanzaCase::Running(known) => {
                let fetched;
                let status = match known {
                    Some(s) => s,
                    None => match self.rest(POLL_REQUEST_TIMEOUT)?.patroni() {
                        Ok(s) => {
                            fetched = s;
                            &fetched
                        }
                        Err(_) => return Ok(StanzaSeen::default()),
                    },
                };
                if !(status.is_primary() && status.state == "running") {
                    return Ok(StanzaSeen::default());
                }
                status.database_system_identifier.clone()
            }
            StanzaCase::Bootstrapping => None,
        };
        let info = b.info(self.timeout)?;
        if info.exists {
            if let (Some(held), Some(ours)) = (info.system_identifiers.last(), ours.as_ref()) {
                if held != ours {
                    return Err(Error::Other(format!(
                        "pgBackRest stanza {} in {} holds the cluster with system identifier \
                         {held}, not this one ({ours}): give this cluster another stanza, or \
                         delete the old one (pgbackrest stanza-delete) if its backups are no \
                         longer wanted",
                        b.stanza,
                        b.repository.display()
                    )));
                }
            }
            let mut seen = StanzaSeen::default();
            if running {
                let archiver = self.archiver();
                warnings.extend(
                    archiver
                        .as_ref()
                        .and_then(|a| archiving_failure(self, &b, a)),
                );
                seen.backups = Some(BackupFacts::new(&b.stanza, &info, archiver.as_ref()));
            }
            return Ok(seen);
        }
        // archive_mode waits for a restart when pgBackRest was added to a
        // running node: archiving can be checked only after it.
        let archiving = !running
            || self
                .psql()
                .value("SELECT setting FROM pg_settings WHERE name = 'archive_mode'")
                .is_ok_and(|v| v == "on");
        Ok(StanzaSeen {
            backups: None,
            create: Some(Action::CreateStanza {
                stanza: b.stanza.clone(),
                repository: b.repository.clone(),
                archiving,
            }),
        })
    }

    /// Creates the instance's stanza (and checks archiving when it runs).
    pub(super) fn create_stanza(&self, archiving: bool) -> Result<()> {
        match self.pgbackrest() {
            Some(b) => b.create_stanza(archiving, self.timeout),
            None => Ok(()),
        }
    }

    /// What pg_stat_archiver says of the leader's archiving.
    fn archiver(&self) -> Option<Archiver> {
        let rows = self
            .psql()
            .query(
                "SELECT coalesce(last_archived_wal, ''), \
                 coalesce(extract(epoch FROM now() - last_archived_time)::bigint::text, ''), \
                 coalesce(last_failed_wal, ''), coalesce(last_failed_time::text, ''), \
                 (last_failed_time > coalesce(last_archived_time, '-infinity'))::text \
                 FROM pg_stat_archiver",
            )
            .ok()?;
        let row = rows.first()?;
        let col = |i: usize| row.get(i).cloned().filter(|v| !v.is_empty());
        Some(Archiver {
            last_archived_wal: col(0),
            last_archived_age: col(1).and_then(|v| v.parse().ok()),
            last_failed_wal: col(2),
            last_failed_time: col(3),
            failing: col(4).as_deref() == Some("true"),
        })
    }
}

/// The leader's archiving, as pg_stat_archiver says.
pub(super) struct Archiver {
    last_archived_wal: Option<String>,
    /// Seconds since.
    last_archived_age: Option<i64>,
    last_failed_wal: Option<String>,
    last_failed_time: Option<String>,
    /// The last attempt failed, and none succeeded since.
    failing: bool,
}

/// A warning when the leader's last attempt to archive WAL failed (and
/// none succeeded since): backups and replicas built from them would miss
/// that WAL.
fn archiving_failure(node: &Node<'_>, b: &PgBackRest, a: &Archiver) -> Option<String> {
    a.failing.then(|| {
        format!(
            "WAL archiving of {} to pgBackRest stanza {} fails: segment {} last failed at {} \
             (last archived: {}); PostgreSQL keeps the WAL and retries, see pgBackRest's log in {}",
            node.name(),
            b.stanza,
            a.last_failed_wal.as_deref().unwrap_or("?"),
            a.last_failed_time.as_deref().unwrap_or("?"),
            a.last_archived_wal.as_deref().unwrap_or("none"),
            b.log_dir.display()
        )
    })
}

/// A leader's backups and archiving, in the instance's facts: what a
/// monitoring check compares with the schedule.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BackupFacts {
    pub stanza: String,
    /// The newest backup, and seconds since it ended.
    pub newest_backup: Option<crate::pgbackrest::BackupSet>,
    pub newest_backup_age: Option<i64>,
    /// The newest WAL segment archived, and seconds since.
    pub last_archived_wal: Option<String>,
    pub last_archived_age: Option<i64>,
    /// The last attempt to archive failed, and none succeeded since.
    pub archiving_fails: bool,
}

impl BackupFacts {
    fn new(
        stanza: &str,
        info: &crate::pgbackrest::StanzaInfo,
        archiver: Option<&Archiver>,
    ) -> BackupFacts {
        let now = crate::names::unix_now() as i64;
        let newest = info.backups.last().cloned();
        BackupFacts {
            stanza: stanza.to_string(),
            newest_backup_age: newest.as_ref().map(|b| (now - b.stop).max(0)),
            newest_backup: newest,
            last_archived_wal: archiver.and_then(|a| a.last_archived_wal.clone()),
            last_archived_age: archiver.and_then(|a| a.last_archived_age),
            archiving_fails: archiver.is_some_and(|a| a.failing),
        }
    }
}
