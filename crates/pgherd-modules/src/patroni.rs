//! `pgherd.cluster.patroni`: cluster-wide operations, from any member or
//! from the controller given a member's REST API.

use std::time::Duration;

use pgherd_ansible::{Failure, Kind, OptionSpec, Outcome, Spec, Task};
use pgherd_core::cluster::{self, Operations, RestartMode, Target};
use pgherd_core::manifest::Login;
use pgherd_core::names::{parse_host_port, Name};
use pgherd_core::pgbackrest::BackupKind;
use serde_json::{json, Map, Value};

use crate::{changes_outcome, load_settings, settings_option};

/// The argument spec of the `patroni` module.
pub fn spec() -> Spec {
    Spec::new(vec![
        OptionSpec::new("cluster", Kind::Str)
            .required()
            .aliases(&["scope"])
            .doc("The cluster (Patroni's C(scope))."),
        OptionSpec::new("state", Kind::Str)
            .default("present")
            .choices(["present", "info", "absent"])
            .doc(
                "C(present) applies the operations given; C(info) only reads the cluster; \
                  C(absent) removes the cluster's keys from the DCS (see I(system_identifier)).",
            ),
        settings_option(),
        OptionSpec::new("restapi", Kind::Str)
            .doc("C(host:port) of a member's REST API. Without it, members are found in the DCS."),
        OptionSpec::new("restapi_username", Kind::Str)
            .doc("Basic authentication user of the REST API."),
        OptionSpec::new("restapi_password", Kind::Str)
            .no_log()
            .doc("Its password."),
        OptionSpec::new("etcd_username", Kind::Str)
            .doc("etcd user; defaults to the settings' C(patroni.etcd.username)."),
        OptionSpec::new("etcd_password", Kind::Str)
            .no_log()
            .doc("Its password."),
        OptionSpec::new("dynamic_config", Kind::Dict).doc(
            "Wanted dynamic configuration (nested; null deletes a key). Only what differs from \
             C(GET /config) is sent with C(PATCH /config).",
        ),
        OptionSpec::new("leader", Kind::Str).doc(
            "Switch over so that this member leads. Refused when it is not a streaming replica, \
             lags more than I(maximum_lag), the cluster is paused, or (synchronous mode) it is \
             not a synchronous standby.",
        ),
        OptionSpec::new("scheduled_at", Kind::Str)
            .doc("Schedule the switchover at this ISO 8601 time instead of now."),
        OptionSpec::new("maximum_lag", Kind::Int).doc(
            "Largest replication lag, in bytes, of a switchover candidate. Defaults to the \
             cluster's C(maximum_lag_on_failover).",
        ),
        OptionSpec::new("failover_to", Kind::Str).doc(
            "Fail over to this member; only when there is no healthy leader, unless I(force).",
        ),
        OptionSpec::new("promote", Kind::Bool).default(false).doc(
            "Promote a standby cluster (the disaster-recovery failover): its dynamic configuration's \
             C(standby_cluster) removed, its standby leader leads a primary cluster, and the task returns \
             once it runs as a primary holding the leader key. Refused while the primary it follows \
             answers (a TCP connection to C(standby_cluster)'s host and port), or when it follows a \
             repository only, unless I(force). Nothing to do on a cluster that is no standby cluster.",
        ),
        OptionSpec::new("force", Kind::Bool).default(false).doc(
            "Allow I(failover_to) while a healthy leader runs, and I(promote) while the primary cluster \
             answers or cannot be asked.",
        ),
        OptionSpec::new("paused", Kind::Bool)
            .doc("Maintenance mode: pause or resume Patroni's automatic failover."),
        OptionSpec::new("restart", Kind::Str)
            .choices(["pending", "all"])
            .doc(
                "Restart members with a pending restart (or all), replicas first, the leader last.",
            ),
        OptionSpec::new("restart_leader_by_switchover", Kind::Bool)
            .default(false)
            .doc("Switch over to the least lagging replica before restarting the leader."),
        OptionSpec::new("reload", Kind::Bool)
            .default(false)
            .doc("Ask every member to reload its configuration."),
        OptionSpec::new("reinit", Kind::List)
            .elements(Kind::Str)
            .doc("Replicas to re-clone from the leader."),
        OptionSpec::new("backup", Kind::Str)
            .choices(["full", "diff", "incr"])
            .doc(
                "Take a pgBackRest backup of this type of the leader. Only one host takes it: the leader's (its \
                 instance has the I(pgbackrest) option) or, when the settings name a C(pgbackrest.repository.host), \
                 the repository host (the host holding a pgBackRest configuration in its C(config_path) that lists \
                 the cluster's members, and running none); on the others the task is skipped. Run it on every host \
                 of the cluster (and the repository host) to back up wherever the leader is. I(wait_timeout) bounds \
                 the backup's duration.",
            ),
        OptionSpec::new("system_identifier", Kind::Str).doc(
            "With C(state: absent): the cluster's system identifier, which must match the DCS's \
             C(initialize) key.",
        ),
        OptionSpec::new("wait_timeout", Kind::Int).default(120).doc(
            "Seconds to wait for each confirmation (new leader, members streaming, pause seen).",
        ),
    ])
    .mutually_exclusive(&["leader", "failover_to", "promote"])
    .required_together(&["restapi_username", "restapi_password"])
    .required_together(&["etcd_username", "etcd_password"])
}

/// The options of a `patroni` task, once validated against [`spec`]
/// (every declared option present, null when not given). Read by
/// [`PatroniOptions::from_params`], which refuses unknown options.
#[cfg_attr(test, derive(serde::Serialize))]
pub struct PatroniOptions {
    pub cluster: String,
    pub state: String,
    pub settings: Value,
    pub restapi: Option<String>,
    pub restapi_username: Option<String>,
    pub restapi_password: Option<String>,
    pub etcd_username: Option<String>,
    pub etcd_password: Option<String>,
    pub dynamic_config: Option<Map<String, Value>>,
    pub leader: Option<String>,
    pub scheduled_at: Option<String>,
    pub maximum_lag: Option<i64>,
    pub failover_to: Option<String>,
    pub promote: bool,
    pub force: bool,
    pub paused: Option<bool>,
    pub restart: Option<String>,
    pub restart_leader_by_switchover: bool,
    pub reload: bool,
    pub reinit: Option<Vec<String>>,
    pub backup: Option<String>,
    pub system_identifier: Option<String>,
    pub wait_timeout: i64,
}

impl PatroniOptions {
    /// The typed options from validated parameters; an option this struct
    /// does not know is refused, never dropped.
    pub fn from_params(p: &Map<String, Value>) -> Result<Self, String> {
        let p = crate::Params::of(&spec(), p)?;
        Ok(PatroniOptions {
            cluster: p.text("cluster").unwrap_or_default(),
            state: p.text("state").unwrap_or_else(|| "present".into()),
            settings: p.raw("settings"),
            restapi: p.text("restapi"),
            restapi_username: p.text("restapi_username"),
            restapi_password: p.text("restapi_password"),
            etcd_username: p.text("etcd_username"),
            etcd_password: p.text("etcd_password"),
            dynamic_config: p.object("dynamic_config"),
            leader: p.text("leader"),
            scheduled_at: p.text("scheduled_at"),
            maximum_lag: p.int("maximum_lag"),
            failover_to: p.text("failover_to"),
            promote: p.flag("promote").unwrap_or(false),
            force: p.flag("force").unwrap_or(false),
            paused: p.flag("paused"),
            restart: p.text("restart"),
            restart_leader_by_switchover: p.flag("restart_leader_by_switchover").unwrap_or(false),
            reload: p.flag("reload").unwrap_or(false),
            reinit: p.strings("reinit"),
            backup: p.text("backup"),
            system_identifier: p.text("system_identifier"),
            wait_timeout: p.int("wait_timeout").unwrap_or(120),
        })
    }

    /// The operations given, by option name (for `state: info` and
    /// `absent`, which take none).
    fn operations_given(&self) -> Vec<&'static str> {
        let given = [
            ("backup", self.backup.is_some()),
            ("dynamic_config", self.dynamic_config.is_some()),
            ("leader", self.leader.is_some()),
            ("failover_to", self.failover_to.is_some()),
            ("promote", self.promote),
            ("paused", self.paused.is_some()),
            ("restart", self.restart.is_some()),
            ("reload", self.reload),
            ("reinit", self.reinit.is_some()),
            ("scheduled_at", self.scheduled_at.is_some()),
        ];
        given
            .into_iter()
            .filter_map(|(name, is)| is.then_some(name))
            .collect()
    }
}

fn login(user: &Option<String>, password: &Option<String>) -> Option<Login> {
    Some(Login {
        username: user.clone()?,
        password: password.clone()?,
    })
}

/// Runs one `patroni` task.
pub fn run_task(task: &Task) -> Result<Outcome, Failure> {
    let o = PatroniOptions::from_params(&task.params).map_err(Failure::new)?;
    let (timeout, maximum_lag) = checked(&o)?;
    let scope = o.cluster.as_str();
    let target = Target {
        scope: scope.to_string(),
        settings: load_settings(&o.settings)?,
        restapi: o.restapi.clone(),
        restapi_auth: login(&o.restapi_username, &o.restapi_password),
        etcd_auth: login(&o.etcd_username, &o.etcd_password),
        timeout,
    };
    let mut report = if o.state == "info" {
        cluster::Report {
            info: cluster::info(&target)?,
            ..cluster::Report::default()
        }
    } else {
        cluster::run(&target, &operations(&o, maximum_lag), task.check_mode)
            .map_err(crate::failure)?
    };
    report
        .warnings
        .extend(target.settings.warnings(target.etcd_auth.is_some()));
    if o.state == "info"
        && report.info.members.is_empty()
        && report.info.system_identifier.is_none()
    {
        report.warnings.push(format!(
            "etcd holds nothing of cluster {scope} under {}: it was never deployed or has been \
             removed; if it runs, check the options cluster and the settings' \
             patroni.etcd.namespace",
            pgherd_core::dcs::cluster_prefix(&target.settings.patroni.etcd.namespace, scope)
        ));
    }
    Ok(outcome(report, scope))
}

/// The checks of the options that need more than their types, before
/// anything is read: the wait's deadline and the lag bound.
fn checked(o: &PatroniOptions) -> Result<(Duration, Option<u64>), Failure> {
    let state = o.state.as_str();
    Name::parse("cluster", &o.cluster).map_err(Failure::new)?;
    if state != "present" {
        let given = o.operations_given();
        if !given.is_empty() {
            return Err(Failure::new(format!(
                "state: {state} takes no operation, but {} {} given",
                given.join(", "),
                if given.len() == 1 { "is" } else { "are" }
            )));
        }
    }
    if let Some(at) = &o.scheduled_at {
        pgherd_core::names::check_timestamp_with_offset(at)
            .map_err(|e| Failure::new(format!("option 'scheduled_at': {e}")))?;
    }
    if let Some(api) = &o.restapi {
        parse_host_port(api).map_err(|e| Failure::new(format!("option 'restapi': {e}")))?;
    }
    let timeout = match o.wait_timeout {
        t if t > 0 => Duration::from_secs(t as u64),
        _ => {
            return Err(Failure::new(
                "option 'wait_timeout' must be a positive number of seconds",
            ))
        }
    };
    let maximum_lag = match o.maximum_lag {
        Some(l) if l < 0 => return Err(Failure::new("option 'maximum_lag' must not be negative")),
        other => other.map(|l| l as u64),
    };
    Ok((timeout, maximum_lag))
}

/// What the task asks of the cluster.
fn operations(o: &PatroniOptions, maximum_lag: Option<u64>) -> Operations {
    Operations {
        dynamic_config: o.dynamic_config.clone(),
        leader: o.leader.clone(),
        scheduled_at: o.scheduled_at.clone(),
        maximum_lag,
        failover_to: o.failover_to.clone(),
        force: o.force,
        paused: o.paused,
        restart: match o.restart.as_deref() {
            Some("pending") => Some(RestartMode::Pending),
            Some("all") => Some(RestartMode::All),
            _ => None,
        },
        restart_leader_by_switchover: o.restart_leader_by_switchover,
        reload: o.reload,
        reinit: o.reinit.clone().unwrap_or_default(),
        remove: o.state == "absent",
        system_identifier: o.system_identifier.clone(),
        keep_config: false,
        backup: o.backup.as_deref().and_then(BackupKind::parse),
        promote: o.promote,
    }
}

/// The task's result: the changes and the cluster, with the backup taken,
/// or skipped when the leader runs on another host.
fn outcome(mut report: cluster::Report, scope: &str) -> Outcome {
    let backup = report.backup.take();
    let elsewhere = report.backup_elsewhere.take();
    let mut outcome = changes_outcome(
        &format!("cluster {scope}"),
        report.changes,
        report.diff,
        report.warnings,
        "cluster",
        json!(report.info),
    );
    if let Some(b) = backup {
        outcome.values.insert("backup".into(), json!(b));
    }
    if let Some(host) = elsewhere {
        let msg = format!("cluster {scope}: {host}, which takes no backup");
        if !outcome.changed {
            outcome.values.insert("skipped".into(), Value::Bool(true));
            outcome.msg = Some(msg);
        } else {
            outcome.warnings.push(msg);
        }
    }
    outcome
}

/// The documentation of the `patroni` module, beside its spec.
pub fn docs() -> pgherd_ansible::docs::ModuleDoc {
    use pgherd_ansible::docs::{ModuleDoc, ReturnDoc};
    ModuleDoc {
        module: "pgherd.cluster.patroni",
        short_description: "Cluster-wide operations on a Patroni cluster",
        description: vec![
            "Reads a Patroni cluster, changes its dynamic configuration, switches over, fails over, pauses, restarts, reloads, reinitialises members and removes the cluster from the DCS.",
            "Every operation checks before it acts and confirms on the cluster after; nothing differs, nothing is sent.",
            "Runs on any member (the others are found in etcd) or from the controller given a member's REST API with I(restapi).",
        ],
        version_added: "0.1.0",
        notes: vec![
            "Operations given together run in this order: resume, dynamic configuration, reload, switchover or failover, restarts, reinitialisations, pause.",
            "The site settings (option I(settings)) are described in the collection's C(docs/settings.md).",
        ],
        requirements: vec![
            "An etcd cluster (v3 API) holding the cluster's keys, reachable from the host the task runs on, unless I(restapi) is given.",
            "Patroni's REST API of the members, reachable from that host.",
            "pgBackRest on the leader's host (or the repository host), for I(backup).",
        ],
        seealso: vec![
            json!({"module": "pgherd.cluster.instance"}),
            json!({"name": "Patroni's REST API", "link": "https://patroni.readthedocs.io/en/latest/rest_api.html",
                   "description": "The endpoints the module calls."}),
        ],
        examples: EXAMPLES,
        returns: vec![
            ReturnDoc::new("changes", "list", "What the task changed, or would change in check mode.")
                .always()
                .elements("str")
                .sample(json!(["switchover from pg1 to pg2"])),
            ReturnDoc::new("cluster", "dict", "The cluster after the task (before it, in check mode).")
                .sample(json!({"name": "main", "leader": "pg1", "paused": false}))
                .contains(vec![
                ReturnDoc::new("name", "str", "Patroni scope.").sample(json!("main")),
                ReturnDoc::new("system_identifier", "str", "PostgreSQL system identifier; null for a cluster with no member.")
                    .sample(json!("7441223371234567890")),
                ReturnDoc::new("leader", "str", "Leader's name.").sample(json!("pg1")),
                ReturnDoc::new("sync_standbys", "list", "Synchronous standbys.").elements("str").sample(json!(["pg2"])),
                ReturnDoc::new("paused", "bool", "Maintenance mode.").sample(json!(false)),
                ReturnDoc::new("members", "list", "Members: name, role, state, host, port, timeline, lag (bytes), pending_restart, tags, restapi, \
                    and reachable (false when its REST API did not answer: role and state are then the last ones it published in the DCS).")
                    .elements("dict")
                    .sample(json!([{"name": "pg1", "role": "leader", "state": "running", "host": "10.0.0.11", "port": 5432,
                                    "timeline": 3, "lag": null, "pending_restart": false, "tags": {}, "restapi": "10.0.0.11:8008",
                                    "reachable": true}])),
                ReturnDoc::new("config", "dict", "Dynamic configuration.").sample(json!({"ttl": 30, "loop_wait": 10})),
                ReturnDoc::new("history", "list", "Timeline history: timeline, LSN, reason, time, new leader.")
                    .sample(json!([[1, 50331808, "no recovery target specified", "2026-12-01T10:00:00+00:00", "pg2"]])),
                ReturnDoc::new("scheduled_switchover", "dict", "A switchover waiting for its time: at, from, to.")
                    .sample(json!({"at": "2026-12-01T22:00:00+00:00", "from": "pg1", "to": "pg2"})),
            ]),
            ReturnDoc::new("backup", "dict", "The backup taken, on the host that took it (I(backup)).")
                .sample(json!({"label": "20261201-220000F", "type": "full"}))
                .contains(vec![
                ReturnDoc::new("label", "str", "pgBackRest's label of the backup.").sample(json!("20261201-220000F")),
                ReturnDoc::new("type", "str", "full, diff or incr.").sample(json!("full")),
                ReturnDoc::new("start", "int", "Start, in Unix time.").sample(json!(1_796_162_400)),
                ReturnDoc::new("stop", "int", "End, in Unix time.").sample(json!(1_796_162_404)),
                ReturnDoc::new("size", "int", "Bytes of the database.").sample(json!(23_000_000)),
                ReturnDoc::new("repository_size", "int", "Bytes it takes in the repository.").sample(json!(3_100_000)),
                ReturnDoc::new("system_identifier", "str", "System identifier of the cluster backed up.").sample(json!("7441223371234567890")),
            ]),
        ],
    }
}

const EXAMPLES: &str = "\
- name: Read the cluster
  pgherd.cluster.patroni:
    cluster: main
    state: info
  register: main

- name: Dynamic configuration; only what differs is sent
  pgherd.cluster.patroni:
    cluster: main
    dynamic_config:
      maximum_lag_on_failover: 2097152
      postgresql:
        parameters:
          work_mem: 32MB
          max_wal_size: null

- name: Switch over to pg2, checked before and confirmed after
  pgherd.cluster.patroni:
    cluster: main
    leader: pg2

- name: Maintenance mode
  pgherd.cluster.patroni:
    cluster: main
    paused: true

- name: Back to automatic failover
  pgherd.cluster.patroni:
    cluster: main
    paused: false

- name: Restart members waiting for it, replicas first, the leader after a switchover
  pgherd.cluster.patroni:
    cluster: main
    restart: pending
    restart_leader_by_switchover: true

- name: Back up on the leader; run on every member's host, the leader's takes it
  pgherd.cluster.patroni:
    cluster: main
    backup: full
    wait_timeout: 3600

- name: Remove a stopped cluster from etcd, guarded by its system identifier
  pgherd.cluster.patroni:
    cluster: main
    state: absent
    system_identifier: \"{{ main.cluster.system_identifier }}\"
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{keys_of, sample_params};
    use std::collections::BTreeSet;

    #[test]
    fn the_options_struct_has_exactly_the_specs_options() {
        let params = sample_params(&spec());
        let parsed = PatroniOptions::from_params(&params).expect("every spec option");
        let fields = keys_of(&parsed);
        let names: BTreeSet<String> = params.keys().cloned().collect();
        assert_eq!(fields, names);
        // Each field is read from its own option.
        assert_eq!(
            serde_json::to_value(&parsed).unwrap(),
            Value::Object(params.clone())
        );
        // Unknown options are refused, not dropped.
        let mut extra = params;
        extra.insert("lader".into(), json!("pg2"));
        assert!(PatroniOptions::from_params(&extra).is_err_and(|e| e.contains("lader")));
    }

    /// The names a return value documents, and those its type serialises.
    fn names_of(docs: &[pgherd_ansible::docs::ReturnDoc]) -> BTreeSet<&'static str> {
        docs.iter().map(|r| r.name).collect()
    }

    #[test]
    fn every_documented_return_key_is_serialised() {
        let doc = docs();
        let find = |name: &str| {
            doc.returns
                .iter()
                .find(|r| r.name == name)
                .unwrap_or_else(|| panic!("{name} is not documented"))
        };
        let keys =
            |v: &Value| -> BTreeSet<String> { v.as_object().unwrap().keys().cloned().collect() };
        let cluster = json!(pgherd_core::cluster::ClusterInfo::default());
        let documented: BTreeSet<String> = names_of(&find("cluster").contains)
            .into_iter()
            .map(str::to_string)
            .collect();
        assert_eq!(documented, keys(&cluster));
        let members = find("cluster")
            .contains
            .iter()
            .find(|r| r.name == "members")
            .and_then(|r| r.sample.clone())
            .unwrap();
        let member = json!(pgherd_core::cluster::MemberInfo {
            name: "pg1".into(),
            role: "leader".into(),
            state: "running".into(),
            host: "h".into(),
            port: None,
            timeline: None,
            lag: None,
            pending_restart: false,
            tags: Default::default(),
            restapi: None,
            reachable: true,
        });
        assert_eq!(keys(&members[0]), keys(&member));
        let backup = json!(pgherd_core::pgbackrest::BackupSet {
            label: "l".into(),
            kind: "full".into(),
            start: 0,
            stop: 0,
            size: 0,
            repository_size: 0,
            system_identifier: None,
        });
        let serialised = keys(&backup);
        for name in names_of(&find("backup").contains) {
            assert!(
                serialised.contains(name),
                "backup.{name} is documented, not returned"
            );
        }
    }
}
