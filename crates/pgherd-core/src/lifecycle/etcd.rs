//! What etcd says before a start or a change: reachable, and recently reached by the running Patroni.

use super::*;

/// How long etcd has to answer before a start.
pub(super) const DCS_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

impl Node<'_> {
    /// Refuses to start or change a node whose cluster cannot be managed
    /// because etcd does not answer: when Patroni runs, by its own account
    /// (`dcs_last_seen` older than the ttl); when it does not, or when its
    /// configuration changes, by asking the etcd of the settings.
    /// The cluster's keys when they were read for the check.
    pub(super) fn check_dcs(
        &self,
        running: bool,
        seen: Option<&NodeStatus>,
        config_changes: bool,
    ) -> Result<Option<ClusterKeys>> {
        if running {
            // Patroni not answering yet is for the wait to report.
            let status = match seen {
                Some(s) => Ok(s.clone()),
                None => self.rest(POLL_REQUEST_TIMEOUT)?.patroni(),
            };
            if let Ok(status) = status {
                if let Err(stale) = self.check_dcs_last_seen(&status) {
                    // A Patroni busy with a long step (demoting after a
                    // partition, stopping) stops reaching etcd too: when
                    // etcd answers, its loop comes back; wait for it.
                    if self.read_cluster().is_err() {
                        return Err(stale);
                    }
                    self.wait_dcs_contact()?;
                }
            }
            // The running Patroni is fine; a new configuration may name
            // other etcd endpoints: those must answer too.
            if !config_changes {
                return Ok(None);
            }
        }
        self.read_cluster_as_patroni().map(Some).map_err(|e| {
            let msg = e.to_string();
            if msg.contains("permission denied") {
                return Error::Other(format!(
                    "{msg}; Patroni of instance {} logs in to etcd as {} and must read and \
                     write everything under {}: grant that user a role with readwrite on that \
                     prefix (pgherd.cluster.etcd does it); nothing was changed",
                    self.name(),
                    self.etcd_login_name().unwrap_or_else(|| "nobody".into()),
                    self.cluster_prefix()
                ));
            }
            Error::Other(format!(
                "{msg}; Patroni cannot run instance {} without etcd, so nothing was changed: \
                 bring etcd back (or fix patroni.etcd in the settings), then run again",
                self.name()
            ))
        })
    }

    fn cluster_prefix(&self) -> String {
        crate::dcs::cluster_prefix(
            &self.settings.patroni.etcd.namespace,
            self.m.cluster.as_str(),
        )
    }

    fn etcd_login_name(&self) -> Option<String> {
        let etcd = &self.settings.patroni.etcd;
        crate::dcs::effective_login(self.m.etcd_auth.as_ref(), etcd).map(|l| l.username)
    }

    /// The cluster's keys, read as Patroni will read them, and with a
    /// login, whether Patroni may write there too.
    fn read_cluster_as_patroni(&self) -> Result<ClusterKeys> {
        let etcd = &self.settings.patroni.etcd;
        let mut dcs = self.connect_dcs()?;
        let keys = dcs.read_cluster(&etcd.namespace, self.m.cluster.as_str())?;
        if self.etcd_login_name().is_some() {
            dcs.check_write(&self.cluster_prefix())?;
        }
        Ok(keys)
    }

    /// A connection to etcd with the instance's etcd login.
    pub(super) fn connect_dcs(&self) -> Result<Dcs> {
        let etcd = &self.settings.patroni.etcd;
        let login = crate::dcs::effective_login(self.m.etcd_auth.as_ref(), etcd);
        Dcs::connect(etcd, login.as_ref(), DCS_PROBE_TIMEOUT)
    }

    /// The cluster's keys in etcd.
    pub(super) fn read_cluster(&self) -> Result<ClusterKeys> {
        let etcd = &self.settings.patroni.etcd;
        self.connect_dcs()?
            .read_cluster(&etcd.namespace, self.m.cluster.as_str())
    }

    /// Waits until the running Patroni reaches etcd again (etcd answers).
    fn wait_dcs_contact(&self) -> Result<()> {
        let rest = self.rest(POLL_REQUEST_TIMEOUT)?;
        wait_until(
            &format!(
                "Patroni of instance {} to reach etcd again (etcd answers)",
                self.name()
            ),
            self.timeout,
            || match rest.patroni() {
                Ok(s) => match self.check_dcs_last_seen(&s) {
                    Ok(()) => Probe::Ready(()),
                    Err(_) => Probe::Waiting(format!("Patroni reports {}", s.describe())),
                },
                Err(e) => Probe::Waiting(e.to_string()),
            },
            || instance_log_tails(&self.paths),
        )
    }

    /// Fails when Patroni last reached etcd longer than the ttl ago.
    pub(super) fn check_dcs_last_seen(&self, status: &NodeStatus) -> Result<()> {
        let now = crate::names::unix_now();
        let ttl = u64::from(self.settings.patroni.ttl);
        match status.dcs_last_seen {
            Some(seen) if seen > 0 && now.saturating_sub(seen) > ttl => Err(Error::Dcs {
                endpoints: self.settings.patroni.etcd.hosts.join(", "),
                msg: format!(
                    "Patroni of instance {} last reached etcd {} s ago (ttl {ttl} s), so the \
                     cluster cannot be managed from this node ({}); nothing was changed: \
                     bring etcd back, then run again",
                    self.name(),
                    now.saturating_sub(seen),
                    status.describe()
                ),
            }),
            _ => Ok(()),
        }
    }
}
