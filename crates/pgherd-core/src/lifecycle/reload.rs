//! A reload of a running node once its configuration is written: Patroni
//! asked where it answers now, the REST API followed to where it moves,
//! PostgreSQL's reload awaited, and the run returns only once Patroni (its
//! REST API and the DCS, which the next task reads) reports the pending
//! restart PostgreSQL itself reports.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::{Node, POLL_REQUEST_TIMEOUT};
use crate::action::{ApiMove, Confirming, Failure};
use crate::error::Result;
use crate::rest::NodeStatus;
use crate::tags::published_as_given;
use crate::wait::{wait_until, Probe};

/// What, in a Patroni configuration's `postgresql` section, PostgreSQL
/// reads: when one of these changes, Patroni's reload reaches PostgreSQL.
const POSTGRES_KEYS: [&str; 4] = ["parameters", "pg_hba", "pg_ident", "listen"];

/// Whether two Patroni configurations differ in what PostgreSQL reads:
/// its section, or the SSL files it names (their fingerprint line).
pub fn postgres_sections_differ(old: &str, new: &str) -> bool {
    let parse = |t: &str| serde_yaml::from_str::<serde_yaml::Value>(t).unwrap_or_default();
    let (a, b) = (parse(old), parse(new));
    POSTGRES_KEYS
        .iter()
        .any(|k| a["postgresql"].get(k) != b["postgresql"].get(k))
        || crate::tls_files::postgres_line(old) != crate::tls_files::postgres_line(new)
}

/// A reload of the running Patroni, once its configuration is written.
pub(super) struct Reload {
    /// PostgreSQL's part of the configuration changed.
    pub postgres_affected: bool,
    /// Patroni answers elsewhere until it reloads.
    pub moved: Option<ApiMove>,
}

impl Reload {
    /// Reloads, follows a moved REST API, and waits until PostgreSQL and
    /// Patroni's views agree.
    pub fn apply(
        &self,
        node: &Node<'_>,
        warnings: &mut Vec<String>,
    ) -> std::result::Result<(), Failure> {
        let at = self
            .moved
            .as_ref()
            .map_or(node.m.restapi_connect_address.as_str(), |m| m.from.as_str());
        let psql = node.psql();
        let loaded_before = if self.postgres_affected {
            match psql.conf_load_time() {
                Ok(t) => Some(t),
                Err(e) => {
                    warnings.push(format!(
                        "cannot tell when PostgreSQL reloads its configuration: {e}"
                    ));
                    None
                }
            }
        } else {
            None
        };
        node.rest_at(at, POLL_REQUEST_TIMEOUT)?.reload()?;
        if let Some(m) = &self.moved {
            node.wait_api_moved(m).confirming()?;
        }
        node.wait_tags_published().confirming()?;
        let Some(before) = loaded_before else {
            return Ok(());
        };
        // Patroni applies a reload on its next cycle.
        let cycle = Duration::from_secs(2 * u64::from(node.settings.patroni.loop_wait) + 10);
        let waited = wait_until(
            "PostgreSQL to load the new configuration",
            node.timeout.min(cycle),
            || match psql.conf_load_time() {
                Ok(t) if t != before => Probe::Ready(()),
                Ok(t) => Probe::Waiting(format!("configuration last loaded at {t}")),
                Err(e) => Probe::Waiting(e.to_string()),
            },
            String::new,
        );
        if let Err(e) = waited {
            warnings.push(format!(
                "Patroni was asked to reload but PostgreSQL has not reloaded yet: {e}"
            ));
            return Ok(());
        }
        node.check_hba_accepted(warnings).confirming()?;
        match psql.pending_restart_parameters() {
            Ok(pending) => node.wait_pending_restart_reported(&pending).confirming(),
            Err(e) => {
                warnings.push(format!(
                    "cannot tell from PostgreSQL which parameters wait for a restart: {e}"
                ));
                Ok(())
            }
        }
    }
}

impl Node<'_> {
    /// Whether pg_hba.conf holds lines of the user's (the task's entries,
    /// or the settings' template): the generated ones are always valid.
    pub(super) fn has_custom_hba(&self) -> bool {
        !self.m.pg_hba.is_empty() || self.settings.postgresql.pg_hba_template.is_some()
    }

    /// Fails when PostgreSQL rejects lines of its pg_hba.conf: it then
    /// keeps the rules it loaded before, the valid new lines included.
    pub(super) fn check_hba_accepted(&self, warnings: &mut Vec<String>) -> Result<()> {
        match self.psql().hba_file_errors() {
            Ok(errors) if !errors.is_empty() => Err(crate::error::Error::Other(format!(
                "PostgreSQL rejects the pg_hba.conf of {} and keeps its previous rules: {}; fix \
                 the pg_hba lines (or the settings' pg_hba_template) and run again",
                self.name(),
                errors.join("; ")
            ))),
            Ok(_) => Ok(()),
            Err(e) => {
                warnings.push(format!(
                    "cannot read PostgreSQL's view of pg_hba.conf (pg_hba_file_rules): {e}"
                ));
                Ok(())
            }
        }
    }

    /// Waits until Patroni's REST API and the DCS publish the tags of the
    /// configuration written: the switchovers, load balancers and
    /// cascades that follow read them there.
    fn wait_tags_published(&self) -> Result<()> {
        let written = std::fs::read_to_string(&self.paths.config).unwrap_or_default();
        let doc: serde_yaml::Value = serde_yaml::from_str(&written).unwrap_or_default();
        let given: BTreeMap<String, Value> = serde_json::to_value(&doc["tags"])
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let shown = |t: &BTreeMap<String, Value>| serde_json::to_string(t).unwrap_or_default();
        self.wait_own_and_published(
            &format!(
                "Patroni and the DCS to publish the tags of {} ({})",
                self.name(),
                shown(&given)
            ),
            |s| s.tags.clone(),
            |m| m.tags.clone(),
            |own, published| {
                published.is_some_and(|p| {
                    published_as_given(&given, own) && published_as_given(&given, p)
                })
            },
            |own, published| {
                format!(
                    "Patroni says tags {}, the DCS {}",
                    shown(own),
                    published.map_or("no member key".to_string(), shown)
                )
            },
        )
    }

    /// Waits until Patroni's own view and the DCS's say, as PostgreSQL
    /// does, whether a restart is pending: they follow a loop later, and
    /// the next task (a restart of the pending members) reads them.
    fn wait_pending_restart_reported(&self, pending: &[String]) -> Result<()> {
        let want = !pending.is_empty();
        let said = if want {
            format!("a pending restart ({})", pending.join(", "))
        } else {
            "no pending restart".to_string()
        };
        self.wait_own_and_published(
            &format!(
                "Patroni and the DCS to report {said} for {}, as PostgreSQL does",
                self.name()
            ),
            |s| s.pending_restart,
            |m| m.pending_restart,
            |own, published| *own == want && published == Some(&want),
            |own, published| {
                format!(
                    "Patroni says pending restart {own}, the DCS {}",
                    published.map_or("no member key".to_string(), |p| p.to_string())
                )
            },
        )
    }

    /// Waits until what this node's Patroni says of itself (`/patroni`)
    /// and what the DCS holds of it (`/cluster`, its member key) are
    /// `agree`d on; `seen` says them when they are not.
    fn wait_own_and_published<T>(
        &self,
        what: &str,
        own_of: impl Fn(&NodeStatus) -> T,
        member_of: impl Fn(&crate::rest::Member) -> T,
        agree: impl Fn(&T, Option<&T>) -> bool,
        seen: impl Fn(&T, Option<&T>) -> String,
    ) -> Result<()> {
        let rest = self.rest(POLL_REQUEST_TIMEOUT)?;
        let node = self.m.node.as_str();
        wait_until(
            what,
            self.timeout,
            || {
                let own = match rest.patroni() {
                    Ok(s) => own_of(&s),
                    Err(e) => return Probe::Waiting(e.to_string()),
                };
                let published = match rest.cluster() {
                    Ok(c) => c.member(node).map(&member_of),
                    Err(e) => return Probe::Waiting(e.to_string()),
                };
                if agree(&own, published.as_ref()) {
                    Probe::Ready(())
                } else {
                    Probe::Waiting(seen(&own, published.as_ref()))
                }
            },
            String::new,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_sections_are_told_apart() {
        let a = "postgresql:\n  parameters:\n    a: 1\n  pg_hba: [x]\n  listen: h:5432\nlog:\n  level: INFO\n";
        let b = "postgresql:\n  parameters:\n    a: 2\n  pg_hba: [x]\n  listen: h:5432\nlog:\n  level: INFO\n";
        let c = "postgresql:\n  parameters:\n    a: 1\n  pg_hba: [x]\n  listen: h:5432\nlog:\n  level: DEBUG\n";
        let d = "postgresql:\n  parameters:\n    a: 1\n  pg_hba: [x]\n  listen: h:5433\nlog:\n  level: INFO\n";
        assert!(postgres_sections_differ(a, b));
        assert!(!postgres_sections_differ(a, c));
        assert!(postgres_sections_differ(a, d));
    }
}
