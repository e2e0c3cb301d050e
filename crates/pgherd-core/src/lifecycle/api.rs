//! Where the running Patroni of the instance answers. Its REST API moves
//! when `restapi` changes, but only once Patroni reloads: until then it
//! answers where the configuration it last read put it, which may be the
//! file before this run rewrites it, or an older one when an earlier run
//! wrote the file and could not reload.

use std::time::Duration;

use super::{Node, POLL_REQUEST_TIMEOUT};
use crate::action::ApiMove;
use crate::error::Result;
use crate::fs::{observe_path, Found};
use crate::rest::{Endpoint, NodeStatus, RestClient};
use crate::wait::{wait_until, Probe};

/// How long one probe of a candidate address may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `restapi.connect_address` of a Patroni configuration's text.
fn configured_address(config: &str) -> Option<String> {
    crate::patroni_file::PatroniFile::parse(config)
        .ok()?
        .restapi?
        .connect_address
}

impl Node<'_> {
    pub(super) fn rest_at(&self, address: &str, timeout: Duration) -> Result<RestClient> {
        RestClient::new(
            Endpoint::for_address(self.settings, address, self.m.restapi_auth.clone()),
            timeout,
        )
    }

    /// The status of this instance's Patroni when it answers at `address`.
    fn status_at(&self, address: &str) -> Option<NodeStatus> {
        self.rest_at(address, PROBE_TIMEOUT)
            .and_then(|c| c.patroni())
            .ok()
            .filter(|s| {
                s.patroni.name == self.m.node.as_str()
                    && (s.patroni.scope.is_empty() || s.patroni.scope == self.m.cluster.as_str())
            })
    }

    /// Whether this instance's Patroni answers at `address`.
    fn answers_at(&self, address: &str) -> bool {
        self.status_at(address).is_some()
    }

    /// Where the running Patroni answers: its status when at the
    /// configured address; else where it moved from, which is the address
    /// of the configuration file on disk (before this run rewrites it), or
    /// the one it publishes in the DCS. Neither when it answers nowhere.
    pub(super) fn locate_api(&self) -> (Option<NodeStatus>, Option<ApiMove>) {
        let to = self.m.restapi_connect_address.clone();
        if let Some(status) = self.status_at(&to) {
            return (Some(status), None);
        }
        let on_disk = match observe_path(&self.paths.config) {
            Ok(Found::File(f)) => configured_address(&String::from_utf8_lossy(&f.content)),
            _ => None,
        };
        let published = || {
            let keys = self.read_cluster().ok()?;
            keys.member_api_addresses()
                .into_iter()
                .find(|(name, _)| name == self.m.node.as_str())
                .map(|(_, address)| address)
        };
        let moved = on_disk
            .filter(|a| *a != to && self.answers_at(a))
            .or_else(|| published().filter(|a| *a != to && self.answers_at(a)))
            .map(|from| ApiMove { from, to });
        (None, moved)
    }

    /// After a reload that moves the REST API: waits until Patroni answers
    /// at the new address and the DCS, which the next task reads,
    /// publishes it.
    pub(super) fn wait_api_moved(&self, moved: &ApiMove) -> Result<()> {
        let node = self.m.node.as_str();
        let rest = self.rest_at(&moved.to, POLL_REQUEST_TIMEOUT)?;
        wait_until(
            &format!(
                "Patroni of instance {} to answer at {} and publish it",
                self.name(),
                moved.to
            ),
            self.timeout,
            || {
                if !self.answers_at(&moved.to) {
                    return Probe::Waiting(format!(
                        "nothing of {node} answers at {} yet",
                        moved.to
                    ));
                }
                match rest.cluster() {
                    Ok(c) => {
                        let published = c
                            .member(node)
                            .and_then(|m| m.api_url.as_deref())
                            .and_then(crate::dcs::api_address);
                        if published.as_deref() == Some(moved.to.as_str()) {
                            Probe::Ready(())
                        } else {
                            Probe::Waiting(format!(
                                "the DCS still publishes {node}'s REST API at {}",
                                published.unwrap_or_else(|| "no address".into())
                            ))
                        }
                    }
                    Err(e) => Probe::Waiting(e.to_string()),
                }
            },
            || super::instance_log_tails(&self.paths),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_address_is_read_from_the_file() {
        let text = "scope: x\nrestapi:\n  listen: 0.0.0.0:8009\n  connect_address: 10.0.0.1:8009\n";
        assert_eq!(configured_address(text).as_deref(), Some("10.0.0.1:8009"));
        assert_eq!(configured_address("scope: x\n"), None);
        assert_eq!(configured_address(": not yaml ["), None);
    }
}
