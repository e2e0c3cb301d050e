//! Talking to a cluster: its members' REST APIs found through the DCS, `/cluster` from the first that answers, and waits on what it shows.

use super::*;

pub(super) struct Conn<'a> {
    pub(super) target: &'a Target,
    /// Members' REST addresses, by name; learnt again at every observe.
    pub(super) apis: std::cell::RefCell<BTreeMap<String, String>>,
    /// The address that last answered `/cluster`: asked first next time,
    /// so that a member that does not answer costs one timeout, not one
    /// per look.
    pub(super) answered: std::cell::RefCell<Option<String>>,
    /// The cluster's keys, when the connection was made from the DCS: the
    /// first look takes what they hold rather than asking a member again.
    pub(super) keys: std::cell::RefCell<Option<ClusterKeys>>,
}

/// One round of `/cluster` asked of every member.
struct Round {
    /// The answer kept, and the client of the member that gave it.
    status: ClusterStatus,
    client: RestClient,
    /// Whether each REST address asked answered.
    answered: BTreeMap<String, bool>,
}

/// One member's answer to `/cluster`, with the client that asked it.
type Answer = std::result::Result<(ClusterStatus, RestClient), String>;

impl<'a> Conn<'a> {
    pub(super) fn client(&self, address: &str) -> Result<RestClient> {
        self.client_with_timeout(address, REQUEST_TIMEOUT)
    }

    pub(super) fn client_with_timeout(
        &self,
        address: &str,
        timeout: Duration,
    ) -> Result<RestClient> {
        RestClient::new(
            Endpoint::for_address(
                &self.target.settings,
                address,
                self.target.restapi_auth.clone(),
            ),
            timeout,
        )
    }

    pub(super) fn member_address(&self, name: &str) -> Result<String> {
        self.apis
            .borrow()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Other(format!("no REST API address known for member {name}")))
    }

    pub(super) fn member_client(&self, name: &str) -> Result<RestClient> {
        self.client(&self.member_address(name)?)
    }

    /// For Patroni's synchronous operations (switchover, failover, restart,
    /// reinitialize), which answer only once done: the task's deadline.
    pub(super) fn operation_client(&self, name: &str) -> Result<RestClient> {
        self.client_with_timeout(&self.member_address(name)?, self.target.timeout)
    }

    /// `/cluster` from the first member that answers: the one that
    /// answered last time alone, and the others all at once, so that a
    /// member that does not answer (frozen, partitioned) costs nothing when
    /// another does.
    pub(super) fn cluster_status(&self) -> Result<(ClusterStatus, RestClient)> {
        let mut errors = Vec::new();
        let mut addresses: Vec<String> = self.apis.borrow().values().cloned().collect();
        let first = self.answered.borrow().clone();
        if let Some(first) = first.filter(|f| addresses.contains(f)) {
            addresses.retain(|a| *a != first);
            match self.ask_cluster(&first) {
                Ok(found) => return Ok(found),
                Err(e) => errors.push(e.to_string()),
            }
        }
        let (rx, asked) = self.ask_at_once(&addresses, RestClient::cluster)?;
        for (address, answer) in rx.iter().take(asked) {
            match answer {
                Ok(found) => {
                    *self.answered.borrow_mut() = Some(address);
                    return Ok(found);
                }
                Err(e) => errors.push(e),
            }
        }
        Err(self.no_member_answers(&errors))
    }

    /// `ask` of every address at once, each on a thread of its own: the
    /// answers as they come, and how many to expect.
    fn ask_at_once(
        &self,
        addresses: &[String],
        ask: fn(&RestClient) -> Result<ClusterStatus>,
    ) -> Result<(std::sync::mpsc::Receiver<(String, Answer)>, usize)> {
        // A client that cannot be built (a certificate file missing) fails
        // the same way for every member: say it once.
        let clients = addresses
            .iter()
            .map(|a| Ok((a.clone(), self.client(a)?)))
            .collect::<Result<Vec<_>>>()?;
        let (tx, rx) = std::sync::mpsc::channel();
        let asked = clients.len();
        for (address, client) in clients {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let answer = ask(&client).map_err(|e| e.to_string());
                let _ = tx.send((address, answer.map(|s| (s, client))));
            });
        }
        Ok((rx, asked))
    }

    fn no_member_answers(&self, errors: &[String]) -> Error {
        Error::NoMemberAnswers(format!(
            "no member of cluster {} answers on its REST API: {}",
            self.target.scope,
            errors.join("; ")
        ))
    }

    fn ask_cluster(&self, address: &str) -> Result<(ClusterStatus, RestClient)> {
        let client = self.client(address)?;
        let status = client.cluster()?;
        Ok((status, client))
    }

    /// Every known member asked for `/cluster` at once: one request each,
    /// which is also the probe of whether it answers. The answer kept is
    /// the one of the member that answered last time if it does, else the
    /// first; a member still silent `PROBE_TIMEOUT` into the round (and
    /// after the first answer) counts as not answering.
    fn ask_every_member(&self) -> Result<Round> {
        let addresses: Vec<String> = self.apis.borrow().values().cloned().collect();
        let preferred = self.answered.borrow().clone();
        let started = std::time::Instant::now();
        let (rx, asked) = self.ask_at_once(&addresses, RestClient::cluster_as_answered)?;
        let mut answered = BTreeMap::new();
        let mut kept: Option<(String, ClusterStatus, RestClient)> = None;
        let mut errors = Vec::new();
        for _ in 0..asked {
            let next = match &kept {
                None => rx.recv().ok(),
                Some(_) => rx
                    .recv_timeout(
                        (started + PROBE_TIMEOUT)
                            .saturating_duration_since(std::time::Instant::now()),
                    )
                    .ok(),
            };
            let Some((address, answer)) = next else { break };
            answered.insert(address.clone(), answer.is_ok());
            match answer {
                Ok((status, client)) => {
                    if kept.is_none() || preferred.as_ref() == Some(&address) {
                        kept = Some((address, status, client));
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        let Some((address, status, client)) = kept else {
            return Err(self.no_member_answers(&errors));
        };
        *self.answered.borrow_mut() = Some(address);
        Ok(Round {
            status,
            client,
            answered,
        })
    }

    /// The cluster as its members' REST APIs show it. The first look of a
    /// connection made from the DCS takes the system identifier, the
    /// configuration and the history from the keys it read; a later look
    /// asks the member that answered, the three at once.
    pub(super) fn observe(&self) -> Result<ClusterInfo> {
        let keys = self.keys.borrow_mut().take();
        let Round {
            mut status,
            client,
            answered,
        } = self.ask_every_member()?;
        if !status.scope.is_empty() && status.scope != self.target.scope {
            return Err(Error::Other(format!(
                "the member at {} belongs to cluster {}, not to cluster {}: check the options \
                 cluster and restapi",
                client.base_url(),
                status.scope,
                self.target.scope
            )));
        }
        let from_keys = keys.and_then(|k| {
            // Patroni answers an empty list before the first failover.
            let history = k.history.unwrap_or_else(|| json!([]));
            Some((k.initialize, k.config?, history))
        });
        let (system_identifier, config, history) = match from_keys {
            Some(read) => read,
            None => std::thread::scope(|s| {
                let node = s.spawn(|| client.patroni());
                let history = s.spawn(|| client.history());
                let config = client.config();
                let node = crate::rest::joined(node.join(), "/patroni");
                let history = crate::rest::joined(history.join(), "/history");
                Ok::<_, Error>((
                    node.ok().and_then(|p| p.database_system_identifier),
                    config?,
                    history.unwrap_or(Value::Null),
                ))
            })?,
        };
        status.normalise_by_version();
        {
            let mut apis = self.apis.borrow_mut();
            for m in &status.members {
                if let Some(a) = m.api_url.as_deref().and_then(api_address) {
                    apis.insert(m.name.clone(), a);
                }
            }
        }
        let mut members: Vec<MemberInfo> = status.members.iter().map(member_info).collect();
        self.mark_unreachable(&mut members, &answered);
        Ok(ClusterInfo {
            name: if status.scope.is_empty() {
                self.target.scope.clone()
            } else {
                status.scope.clone()
            },
            system_identifier,
            leader: status.leader().map(|m| m.name.clone()),
            sync_standbys: members
                .iter()
                .filter(|m| m.role == "sync_standby")
                .map(|m| m.name.clone())
                .collect(),
            paused: status.pause,
            members,
            config,
            history,
            scheduled_switchover: status.scheduled_switchover.clone(),
        })
    }

    /// Marks the members that did not answer the round unreachable,
    /// whatever the DCS still says of them; one the round did not ask (a
    /// connection made from one given REST API) is asked for its own view,
    /// all at once, with a short timeout.
    pub(super) fn mark_unreachable(
        &self,
        members: &mut [MemberInfo],
        answered: &BTreeMap<String, bool>,
    ) {
        std::thread::scope(|scope| {
            let looks: Vec<_> = members
                .iter()
                .map(|m| match m.restapi.as_ref() {
                    None => Ok(true),
                    Some(a) => match answered.get(a) {
                        Some(known) => Ok(*known),
                        None => {
                            let client = self.client_with_timeout(a, PROBE_TIMEOUT);
                            Err(scope.spawn(move || client.is_ok_and(|c| c.patroni().is_ok())))
                        }
                    },
                })
                .collect();
            for (m, look) in members.iter_mut().zip(looks) {
                m.reachable = look.unwrap_or_else(|probe| probe.join().unwrap_or(false));
            }
        });
    }

    /// Waits until `/cluster` satisfies `ready`, saying what it last saw.
    pub(super) fn wait_cluster(
        &self,
        what: &str,
        ready: impl Fn(&ClusterStatus) -> bool,
    ) -> Result<ClusterStatus> {
        wait_until(
            what,
            self.target.timeout,
            || match self.cluster_status() {
                Ok((s, _)) if ready(&s) => Probe::Ready(s),
                Ok((s, _)) => Probe::Waiting(describe_cluster(&s)),
                Err(e) => Probe::Waiting(e.to_string()),
            },
            String::new,
        )
    }
}

/// Waits, through `client`, until a member runs as leader or streams and
/// `also` holds.
pub(super) fn wait_member_healthy(
    conn: &Conn<'_>,
    client: &RestClient,
    name: &str,
    also: impl Fn(&crate::rest::NodeStatus) -> bool,
) -> Result<()> {
    wait_until(
        &format!("{name} to run as leader or streaming replica"),
        conn.target.timeout,
        || match client.patroni() {
            Ok(s) if s.is_healthy() && also(&s) => Probe::Ready(()),
            Ok(s) => Probe::Waiting(format!("{name}: {}", s.describe())),
            Err(e) => Probe::Waiting(e.to_string()),
        },
        String::new,
    )
}

pub(super) fn describe_cluster(s: &ClusterStatus) -> String {
    s.members
        .iter()
        .map(|m| format!("{} {} {}", m.name, m.role, m.state))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn member_runs_as(
    s: &ClusterStatus,
    name: &str,
    roles: &[&str],
    states: &[&str],
) -> bool {
    s.member(name)
        .is_some_and(|m| roles.contains(&m.role.as_str()) && states.contains(&m.state.as_str()))
}

pub(super) fn connect_dcs(target: &Target) -> Result<Dcs> {
    let auth =
        crate::dcs::effective_login(target.etcd_auth.as_ref(), &target.settings.patroni.etcd);
    Dcs::connect(
        &target.settings.patroni.etcd,
        auth.as_ref(),
        REQUEST_TIMEOUT,
    )
}

pub(super) fn read_keys(target: &Target) -> Result<ClusterKeys> {
    connect_dcs(target)?.read_cluster(&target.settings.patroni.etcd.namespace, &target.scope)
}

/// The cluster's keys, with what to do when etcd cannot be read.
pub(super) fn dcs_keys(target: &Target) -> Result<ClusterKeys> {
    read_keys(target).map_err(|e| {
        let text = e.to_string();
        let hint = if text.contains("authentication failed") {
            "check etcd_username and etcd_password (or patroni.etcd in the settings)"
        } else {
            "give the REST API of a member (option restapi) to work without the DCS"
        };
        Error::Other(format!("{text}; {hint}"))
    })
}

/// Finds the members to talk to: the given REST API, or the members in the
/// DCS (`keys` when the caller has just read them).
pub(super) fn connect(target: &Target, keys: Option<ClusterKeys>) -> Result<Conn<'_>> {
    let mut apis = BTreeMap::new();
    let mut read = None;
    if let Some(a) = &target.restapi {
        apis.insert("(given)".to_string(), a.clone());
    } else {
        let keys = keys.map_or_else(|| dcs_keys(target), Ok)?;
        apis.extend(keys.member_api_addresses());
        if apis.is_empty() {
            return Err(Error::Other(format!(
                "cluster {} has no member in the DCS under {}: is it running, and are scope and \
                 namespace right?",
                target.scope, keys.prefix
            )));
        }
        crate::rest::note_patroni_versions(
            keys.members.values().filter_map(|m| m["version"].as_str()),
        );
        read = Some(keys);
    }
    Ok(Conn {
        target,
        apis: std::cell::RefCell::new(apis),
        answered: std::cell::RefCell::new(None),
        keys: std::cell::RefCell::new(read),
    })
}
