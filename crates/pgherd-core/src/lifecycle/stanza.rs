//! The pgBackRest stanza of a leader: created when the repository lacks
//! it, refused when it holds another cluster, and WAL archiving watched.

use super::*;
use crate::action::Action;
use crate::pgbackrest::PgBackRest;

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
    /// running leader whose stanza exists, a warning when archiving fails.
    /// Refuses a stanza that holds another cluster.
    pub(super) fn stanza_to_create(
        &self,
        case: StanzaCase<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<Option<Action>> {
        let Some(b) = self.pgbackrest() else {
            return Ok(None);
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
                        Err(_) => return Ok(None),
                    },
                };
                if !(status.is_primary() && status.state == "running") {
                    return Ok(None);
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
            if running {
                warnings.extend(self.archiving_failure(&b));
            }
            return Ok(None);
        }
        // archive_mode waits for a restart when pgBackRest was added to a
        // running node: archiving can be checked only after it.
        let archiving = !running
            || self
                .psql()
                .value("SELECT setting FROM pg_settings WHERE name = 'archive_mode'")
                .is_ok_and(|v| v == "on");
        Ok(Some(Action::CreateStanza {
            stanza: b.stanza.clone(),
            repository: b.repository.clone(),
            archiving,
        }))
    }

    /// Creates the instance's stanza (and checks archiving when it runs).
    pub(super) fn create_stanza(&self, archiving: bool) -> Result<()> {
        match self.pgbackrest() {
            Some(b) => b.create_stanza(archiving, self.timeout),
            None => Ok(()),
        }
    }

    /// A warning when the leader's last attempt to archive WAL failed
    /// (and none succeeded since), as pg_stat_archiver says: backups and
    /// replicas built from them would miss that WAL.
    fn archiving_failure(&self, b: &PgBackRest) -> Option<String> {
        let rows = self
            .psql()
            .query(
                "SELECT last_failed_wal, last_failed_time, coalesce(last_archived_wal, 'none') \
                 FROM pg_stat_archiver \
                 WHERE last_failed_time > coalesce(last_archived_time, '-infinity')",
            )
            .ok()?;
        let row = rows.first()?;
        Some(format!(
            "WAL archiving of {} to pgBackRest stanza {} fails: segment {} last failed at {} \
             (last archived: {}); PostgreSQL keeps the WAL and retries, see pgBackRest's log in {}",
            self.name(),
            b.stanza,
            row.first().map_or("?", String::as_str),
            row.get(1).map_or("?", String::as_str),
            row.get(2).map_or("?", String::as_str),
            b.log_dir.display()
        ))
    }
}
