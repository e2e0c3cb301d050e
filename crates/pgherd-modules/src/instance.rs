//! `pgherd.cluster.instance`: one PostgreSQL + Patroni node on the target
//! host.

use pgherd_ansible::{Failure, Kind, OptionSpec, Outcome, Spec, Task};
use std::time::Duration;

use crate::options::{manifest, InstanceOptions};
use pgherd_core::lifecycle::{apply_state, DesiredState};
use serde_json::{json, Value};

use crate::{changes_outcome, load_settings, settings_option};

pub const STATES: [&str; 5] = ["started", "stopped", "restarted", "absent", "present"];

fn credentials(what: &'static str) -> Spec {
    Spec::new(vec![
        OptionSpec::new("username", Kind::Str).doc(what),
        OptionSpec::new("password", Kind::Str)
            .no_log()
            .doc("Its password."),
    ])
    .required_together(&["username", "password"])
}

/// The member's tags, as Patroni names them.
fn tags_spec() -> Spec {
    Spec::new(vec![
        OptionSpec::new("nofailover", Kind::Bool).doc(
            "Never promote this member (the C(patroni) module's switchover and failover refuse it as target).",
        ),
        OptionSpec::new("failover_priority", Kind::Int).doc(
            "Patroni 3.2 and later: among members equally ahead, a failover promotes the highest priority; 0 never promotes. \
             Given with I(nofailover), the two must agree.",
        ),
        OptionSpec::new("noloadbalance", Kind::Bool)
            .doc("The REST API's C(/replica) answers 503: load balancers send no reads here."),
        OptionSpec::new("nosync", Kind::Bool).doc("Never a synchronous standby."),
        OptionSpec::new("clonefrom", Kind::Bool)
            .doc("New replicas may clone from this member rather than from the leader."),
        OptionSpec::new("replicatefrom", Kind::Str).doc(
            "Stream from this member (cascading replication) instead of the leader; Patroni falls back to the leader \
             while that member does not run. Refused when it names this node, a cycle, or (on a member already in the \
             cluster) a name the DCS does not list.",
        ),
        OptionSpec::new("nostream", Kind::Bool).doc(
            "Patroni 4 and later: no streaming replication, WAL only from the archive (C(restore_command)).",
        ),
    ])
}

/// The argument spec of the `instance` module.
pub fn spec() -> Spec {
    let restapi = Spec::new(vec![
        OptionSpec::new("listen", Kind::Str)
            .doc("C(host:port) the REST API binds to. Defaults to I(connect_address)."),
        OptionSpec::new("connect_address", Kind::Str).doc(
            "C(host:port) other members and clients use to reach the REST API. \
             Defaults to I(patroni.postgresql.connect_host) on port 8008.",
        ),
        OptionSpec::new("authentication", Kind::Dict)
            .suboptions(credentials(
                "User for basic authentication on the REST API's unsafe endpoints.",
            ))
            .doc("Basic authentication of the REST API."),
    ]);
    let postgresql = Spec::new(vec![
        OptionSpec::new("connect_host", Kind::Str)
            .doc("Host other members use to reach this PostgreSQL. Defaults to the host name."),
        OptionSpec::new("listen", Kind::Str).doc(
            "Addresses PostgreSQL listens on, comma separated, without port. \
             Defaults to I(connect_host).",
        ),
    ]);
    let patroni = Spec::new(vec![
        OptionSpec::new("cluster", Kind::Str)
            .doc("The cluster (Patroni's C(scope)) this node belongs to. Defaults to I(name)."),
        OptionSpec::new("node", Kind::Str)
            .doc("This member's name in the cluster. Defaults to the short host name."),
        OptionSpec::new("restapi", Kind::Dict)
            .suboptions(restapi)
            .doc("Patroni's REST API on this node."),
        OptionSpec::new("postgresql", Kind::Dict)
            .suboptions(postgresql)
            .doc("How PostgreSQL is reached."),
        OptionSpec::new("etcd", Kind::Dict)
            .suboptions(credentials("etcd user of this node's Patroni."))
            .doc("etcd credentials; they take precedence over the settings' ones."),
        OptionSpec::new("tags", Kind::Dict)
            .suboptions(tags_spec())
            .doc("Patroni's tags of this member. Changed on a running node, Patroni reloads and the task returns once its REST API \
                  and the DCS publish them. A tag not given keeps Patroni's default."),
    ]);
    Spec::new(vec![
        OptionSpec::new("name", Kind::Str)
            .required()
            .doc("Instance name: letters, digits, C(-) and C(_)."),
        OptionSpec::new("version", Kind::Str)
            .doc("PostgreSQL major version. Defaults to the settings' C(postgresql.default_version)."),
        OptionSpec::new("port", Kind::Int)
            .default(5432)
            .doc("TCP port of PostgreSQL."),
        OptionSpec::new("state", Kind::Str)
            .default("started")
            .choices(STATES)
            .doc("C(present) writes the configuration without starting anything; C(started) also starts \
                  Patroni and waits until the node leads or streams; C(stopped) stops Patroni and PostgreSQL; \
                  C(restarted) restarts PostgreSQL through Patroni (or starts it); C(absent) stops and removes \
                  the configuration, logs and data, and, when the cluster keeps other members, the member's key in the DCS \
                  (refused for the leader of other members: see I(force))."),
        settings_option(),
        OptionSpec::new("settings_file", Kind::Path)
            .doc("Also keep the settings given inline (I(settings) as a mapping) in this file, mode 0600, for what reads them \
                  from a file: the C(pgherd) command, and tasks whose I(settings) names it. Written like the node's other files \
                  (check mode and diff, secrets masked); no service is reloaded for it; I(state=absent) leaves it."),
        OptionSpec::new("patroni", Kind::Dict)
            .suboptions(patroni)
            .doc("Patroni options of this node."),
        OptionSpec::new("surole_password", Kind::Str)
            .no_log()
            .doc("Password of the PostgreSQL superuser."),
        OptionSpec::new("replrole_password", Kind::Str)
            .no_log()
            .doc("Password of the replication role."),
        OptionSpec::new("rewind_password", Kind::Str)
            .no_log()
            .doc("Password of the pg_rewind role."),
        OptionSpec::new("parameters", Kind::Dict)
            .doc("PostgreSQL parameters of this node (Patroni's local C(postgresql.parameters))."),
        OptionSpec::new("pg_hba", Kind::List)
            .elements(Kind::Str)
            .doc("Extra pg_hba.conf lines, placed before the generated remote entries."),
        OptionSpec::new("member_addresses", Kind::List)
            .elements(Kind::Str)
            .doc("Where the cluster's members connect from: IP addresses, CIDR blocks or host names. The replication and \
                  pg_rewind roles are let in from these only (the built-in pg_hba template; a custom one gets them as \
                  C(member_addresses)). Not given, from anywhere. On one machine, members connect from 127.0.0.1."),
        OptionSpec::new("conf_settings", Kind::Dict)
            .doc("Mapping merged last into the Patroni configuration file; a null value deletes the key."),
        OptionSpec::new("force", Kind::Bool)
            .default(false)
            .doc("With I(state=absent): remove a member that leads the cluster's other members (they fail over once its \
                  leader key expires), or the synchronous standby no other member can replace. Without it, both are refused \
                  before anything is changed: switch over first."),
        OptionSpec::new("wait_timeout", Kind::Int)
            .default(300)
            .doc("Seconds to wait for the node to run (leader, or replica streaming) or to stop. \
                  On timeout the task fails with the last Patroni state seen and the last lines of the logs."),
        OptionSpec::new("dynamic_conf_settings", Kind::Dict)
            .doc("Mapping merged into C(bootstrap.dcs), the dynamic configuration a new cluster starts with; null deletes."),
        OptionSpec::new("standby_cluster", Kind::Dict)
            .suboptions(Spec::new(vec![
                OptionSpec::new("host", Kind::Str)
                    .doc("The primary cluster's hosts (comma-separated; a read-write one is chosen). Not this node's own address."),
                OptionSpec::new("port", Kind::Int).doc("Their PostgreSQL port (5432)."),
                OptionSpec::new("primary_slot_name", Kind::Str)
                    .doc("A permanent physical slot of the primary cluster (its dynamic configuration's C(slots)) this cluster streams through."),
                OptionSpec::new("restore_command", Kind::Str)
                    .doc("How WAL that cannot be streamed is fetched (C(pgbackrest --stanza=S archive-get %f \"%p\")); alone, the cluster follows the repository only."),
                OptionSpec::new("create_replica_methods", Kind::List)
                    .elements(Kind::Str)
                    .doc("How the standby leader is built: C(basebackup) from the primary (the default), or C(pgbackrest) from the repository."),
            ]))
            .doc("Make a new cluster a standby cluster (disaster recovery): its leader, the standby leader, follows this primary \
                  cluster, and its members follow the standby leader. Written into C(bootstrap.dcs): it shapes a cluster that does \
                  not exist yet; a running cluster keeps what its dynamic configuration says (the C(patroni) module's \
                  I(promote) ends it). The primary cluster lets the replication role in from this cluster's addresses (its \
                  I(member_addresses)). Refused: neither I(host) nor I(restore_command), this node's own address, an invalid \
                  slot name, and C(standby_cluster) also in I(dynamic_conf_settings)."),
        OptionSpec::new("pgbackrest", Kind::Dict)
            .suboptions(Spec::new(vec![
                OptionSpec::new("stanza", Kind::Str)
                    .required()
                    .doc("The stanza: the cluster's backups and WAL archive in the repository. Every member of a cluster names the same one."),
                OptionSpec::new("new_repository", Kind::Bool)
                    .default(false)
                    .doc("Accept that the stanza's repository changes to the settings' C(pgbackrest.repository.path). Without it, an instance that archives \
                          to another repository is refused, naming both paths: a new repository starts a new stanza, and the old one's backups and \
                          WAL are no longer used."),
            ]))
            .doc("Backups with pgBackRest, in the repository the settings' C(pgbackrest) names. The module writes the instance's pgBackRest configuration, \
                  archives WAL (C(archive_mode), C(archive_command)), fetches missing WAL from the repository (C(restore_command)), \
                  builds replicas from the newest backup before C(basebackup), and creates the stanza on the leader, then checks archiving."),
        OptionSpec::new("restore", Kind::Dict)
            .suboptions(Spec::new(vec![
                OptionSpec::new("from", Kind::Str)
                    .required()
                    .choices(["backup", "leader"])
                    .doc("C(backup): this node is rebuilt from the repository and leads the restored cluster; every other member must be stopped, \
                          and the cluster's state is removed from the DCS (guarded by the backup's system identifier). \
                          C(leader): this node's data is removed and copied again from the running leader."),
                OptionSpec::new("set", Kind::Str)
                    .doc("The backup to restore (its label); the newest when not given."),
                OptionSpec::new("target", Kind::Str).doc(
                    "How far archived WAL is replayed: C(latest) (the default), C(immediate) (the end of the backup), \
                     or an ISO 8601 time with offset (point-in-time recovery).",
                ),
            ]))
            .doc("Restore this node, with I(state=started). An operation: it restores at every run, so keep it out of the playbooks that deploy; \
                  C(playbooks/restore.yml) runs the whole sequence on a cluster."),
        OptionSpec::new("restart_outdated", Kind::List)
            .elements(Kind::Str)
            .choices(["patroni", "postgresql"])
            .default(json!([]))
            .doc("A minor upgrade on a running node: restart the programs named here that run another version than the one installed \
                  (new packages). C(patroni): Patroni alone, PostgreSQL kept running; refused unless the cluster is paused (the C(patroni) \
                  module's I(paused)), since an unpaused Patroni stops PostgreSQL with it. C(postgresql): PostgreSQL restarted through Patroni; \
                  on the leader that is a short outage, so switch over first. Each restart is confirmed: Patroni answers with the installed \
                  version, the node leads or streams, and Patroni reports the installed PostgreSQL running. A node that runs what is installed \
                  changes nothing; the facts' C(versions) and C(outdated) show what runs. C(playbooks/rolling-upgrade.yml) runs the whole sequence."),
        OptionSpec::new("upgrade", Kind::Dict)
            .suboptions(Spec::new(vec![
                OptionSpec::new("from", Kind::Str)
                    .required()
                    .doc("The major the instance runs now (older than I(version)): its instance of the same I(name) on this host is upgraded."),
                OptionSpec::new("leader", Kind::Str)
                    .required()
                    .doc("The member upgraded in place with C(pg_upgrade --link) (the cluster's leader); the other members are copied again from it once it runs."),
            ]))
            .doc("A major upgrade to I(version), with I(state=started). On the leader: checks first (both majors' programs, the leader leads, no other member runs, \
                  no pending restart, one filesystem with room, C(pg_upgrade --check) against the running instance), then the old instance stopped, \
                  a new data directory made by the new major's initdb, C(pg_upgrade --link), the cluster's state in the DCS replaced (its dynamic \
                  configuration kept), Patroni started on the new major, statistics rebuilt, the old instance removed. A failure before the new \
                  cluster's first start brings the old instance back; after it, a new run resumes. On the others: the old instance removed and a new \
                  copy of the upgraded leader made. Once done, a run changes nothing. C(playbooks/upgrade.yml) runs the whole sequence."),
    ])
}

/// Runs one `instance` task.
pub fn run_task(task: &Task) -> Result<Outcome, Failure> {
    let options: InstanceOptions = serde_json::from_value(Value::Object(task.params.clone()))
        .map_err(|e| Failure::new(format!("instance options: {e}")))?;
    let settings = load_settings(&options.settings)?;
    let m = manifest(&options, &settings)?;
    let state: DesiredState = options.state.as_deref().unwrap_or("started").parse()?;
    let timeout = match options.wait_timeout {
        Some(t) if t > 0 => Duration::from_secs(t as u64),
        _ => {
            return Err(Failure::new(
                "option 'wait_timeout' must be a positive number of seconds",
            ))
        }
    };
    let mut report =
        apply_state(&settings, &m, state, task.check_mode, timeout).map_err(crate::failure)?;
    report
        .warnings
        .extend(settings.warnings(m.etcd_auth.is_some()));
    Ok(changes_outcome(
        &format!("instance {}", m.qualified_name()),
        report.changes,
        report.diff,
        report.warnings,
        "instance",
        json!(report.facts),
    ))
}

/// The documentation of the `instance` module, beside its spec.
pub fn docs() -> pgherd_ansible::docs::ModuleDoc {
    use pgherd_ansible::docs::{ModuleDoc, ReturnDoc};
    ModuleDoc {
        module: "pgherd.cluster.instance",
        short_description: "A PostgreSQL instance managed by Patroni on the target host",
        description: vec![
            "Writes the Patroni configuration of one node from the site settings and the task's options, and brings the node to the requested state.",
            "With C(state=started), Patroni bootstraps the cluster or clones the node from the leader, as the DCS says, and the task waits until the node leads or streams.",
            "A configuration change on a running node reloads Patroni and reports the parameters that wait for a restart.",
        ],
        version_added: "0.1.0",
        notes: vec![
            "Runs as root (Patroni and PostgreSQL then run as the settings' C(sysuser)) or as that user through become.",
            "The site settings (option I(settings)): every key, its default and the C({version}) and C({name}) placeholders of paths are described in the collection's C(docs/settings.md).",
            "Before anything is written, the module checks the programs the settings name (Patroni, PostgreSQL's bin directory, pgBackRest) and that every directory can be made and written by whoever writes it, and fails naming the setting and the path.",
            "The module is a native executable built for the controller's architecture; see the collection README to build for other targets.",
        ],
        requirements: vec![
            "PostgreSQL's server programs for the instance's version (Debian: C(postgresql-VERSION)).",
            "Patroni with etcd3 support (Debian: C(patroni) and C(python3-etcd3), or a virtualenv with C(patroni[etcd3])).",
            "An etcd cluster (v3 API) reachable from the host.",
            "pgBackRest, for I(pgbackrest) and I(restore).",
        ],
        seealso: vec![
            json!({"module": "pgherd.cluster.patroni"}),
            json!({"name": "Patroni's YAML configuration", "link": "https://patroni.readthedocs.io/en/latest/yaml_configuration.html",
                   "description": "What the module writes, and what conf_settings can override."}),
        ],
        examples: EXAMPLES,
        returns: vec![
            ReturnDoc::new("changes", "list", "What the task changed, or would change in check mode.")
                .always()
                .elements("str")
                .sample(json!(["create /etc/patroni/15-main.yaml", "start Patroni (15-main (pg1))"])),
            ReturnDoc::new("instance", "dict", "The node: where it lives and what Patroni says of it.")
                .sample(json!({"name": "main", "version": "15", "role": "primary", "state": "running"}))
                .contains(vec![
                ReturnDoc::new("name", "str", "Instance name.").sample(json!("main")),
                ReturnDoc::new("version", "str", "PostgreSQL major version.").sample(json!("15")),
                ReturnDoc::new("port", "int", "PostgreSQL port.").sample(json!(5432)),
                ReturnDoc::new("cluster", "str", "Patroni scope.").sample(json!("main")),
                ReturnDoc::new("node", "str", "Member name.").sample(json!("pg1")),
                ReturnDoc::new("data_dir", "str", "Data directory.").sample(json!("/var/lib/postgresql/15/main")),
                ReturnDoc::new("config", "str", "Path of the Patroni configuration.").sample(json!("/etc/patroni/15-main.yaml")),
                ReturnDoc::new("passfile", "str", "Path of the client password file, when passwords are given.").sample(json!("/etc/patroni/15-main.pgpass")),
                ReturnDoc::new("pgbackrest_config", "str", "Path of the instance's pgBackRest configuration, with a stanza (what a repository host's C(pgN-host-config) names).").sample(json!("/etc/pgbackrest/15-main.conf")),
                ReturnDoc::new("restapi", "str", "host:port of the REST API.").sample(json!("10.0.0.11:8008")),
                ReturnDoc::new("running", "bool", "Whether Patroni runs.").sample(json!(true)),
                ReturnDoc::new("role", "str", "primary or replica, when running.").sample(json!("replica")),
                ReturnDoc::new("state", "str", "Patroni's state of PostgreSQL, when running.").sample(json!("streaming")),
                ReturnDoc::new("replication_state", "str", "A replica's replication state (C(streaming) once it streams from its upstream).").sample(json!("streaming")),
                ReturnDoc::new("timeline", "int", "Current timeline, when running.").sample(json!(3)),
                ReturnDoc::new("pending_restart", "bool", "Whether parameters wait for a restart, as Patroni and the DCS report it (the task waits until they agree with PostgreSQL).").sample(json!(true)),
                ReturnDoc::new("pending_restart_parameters", "list", "Those parameters.").elements("str").sample(json!(["shared_buffers"])),
                ReturnDoc::new("versions", "dict", "PostgreSQL's and Patroni's versions, C(running) (as Patroni reports them) and C(installed) (the programs on the host), when Patroni answers.")
                    .sample(json!({"postgresql": {"running": "15.18", "installed": "15.20"}, "patroni": {"running": "4.0.11", "installed": "4.1.5"}})),
                ReturnDoc::new("outdated", "list", "The programs (C(patroni), C(postgresql)) that run another version than the one installed.").elements("str")
                    .sample(json!(["patroni", "postgresql"])),
                ReturnDoc::new("backups", "dict", "On the leader, with I(pgbackrest): what a monitoring check compares with the backup schedule.")
                    .sample(json!({"stanza": "main", "newest_backup_age": 3600, "last_archived_wal": "000000010000000000000009", "last_archived_age": 12, "archiving_fails": false}))
                    .contains(vec![
                        ReturnDoc::new("stanza", "str", "The stanza.").sample(json!("main")),
                        ReturnDoc::new("newest_backup", "dict", "The newest backup (C(label), C(type), C(start), C(stop), C(size), C(repository_size), C(system_identifier)), or null.").sample(json!({"label": "20261205-010000F", "type": "full"})),
                        ReturnDoc::new("newest_backup_age", "int", "Seconds since the newest backup ended, or null.").sample(json!(3600)),
                        ReturnDoc::new("last_archived_wal", "str", "The newest WAL segment archived (pg_stat_archiver), or null.").sample(json!("000000010000000000000009")),
                        ReturnDoc::new("last_archived_age", "int", "Seconds since it was archived, or null.").sample(json!(12)),
                        ReturnDoc::new("archiving_fails", "bool", "The last attempt to archive failed, and none succeeded since (a warning says more).").sample(json!(false)),
                    ]),
                ReturnDoc::new("members", "list", "Cluster members: name, role, state, host, timeline, lag.").elements("dict")
                    .sample(json!([{"name": "pg1", "role": "leader", "state": "running", "host": "10.0.0.11", "timeline": 3, "lag": null}])),
            ]),
        ],
    }
}

const EXAMPLES: &str = "\
- name: PostgreSQL 15 node managed by Patroni, started (bootstraps or clones)
  pgherd.cluster.instance:
    name: main
    version: \"15\"
    surole_password: \"{{ vault_surole_password }}\"
    replrole_password: \"{{ vault_replrole_password }}\"
    rewind_password: \"{{ vault_rewind_password }}\"
    patroni:
      cluster: main
      node: \"{{ inventory_hostname }}\"
      restapi:
        connect_address: \"{{ ansible_host }}:8008\"
      postgresql:
        connect_host: \"{{ ansible_host }}\"
  register: node

- name: Change parameters; node.instance.pending_restart says if a restart is due
  pgherd.cluster.instance:
    name: main
    parameters:
      work_mem: 16MB
      shared_buffers: 256MB
    surole_password: \"{{ vault_surole_password }}\"
    replrole_password: \"{{ vault_replrole_password }}\"
    rewind_password: \"{{ vault_rewind_password }}\"
    patroni:
      cluster: main
      node: \"{{ inventory_hostname }}\"
      restapi:
        connect_address: \"{{ ansible_host }}:8008\"
      postgresql:
        connect_host: \"{{ ansible_host }}\"
  register: node

- name: After new packages, restart what runs an older version (Patroni alone needs the cluster paused)
  pgherd.cluster.instance:
    name: main
    restart_outdated: [patroni, postgresql]
    surole_password: \"{{ vault_surole_password }}\"
    replrole_password: \"{{ vault_replrole_password }}\"
    rewind_password: \"{{ vault_rewind_password }}\"
    patroni:
      cluster: main
      node: \"{{ inventory_hostname }}\"
      restapi:
        connect_address: \"{{ ansible_host }}:8008\"
      postgresql:
        connect_host: \"{{ ansible_host }}\"

- name: Stop the node (Patroni and PostgreSQL)
  pgherd.cluster.instance:
    name: main
    state: stopped
    parameters:
      work_mem: 16MB
      shared_buffers: 256MB
    surole_password: \"{{ vault_surole_password }}\"
    replrole_password: \"{{ vault_replrole_password }}\"
    rewind_password: \"{{ vault_rewind_password }}\"
    patroni:
      cluster: main
      node: \"{{ inventory_hostname }}\"
      restapi:
        connect_address: \"{{ ansible_host }}:8008\"
      postgresql:
        connect_host: \"{{ ansible_host }}\"

- name: Remove the node, its configuration and data (the DCS is left alone)
  pgherd.cluster.instance:
    name: main
    state: absent
    patroni:
      cluster: main
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{keys_of, sample_params};
    use std::collections::BTreeSet;

    #[test]
    fn the_options_struct_has_exactly_the_specs_options() {
        let params = sample_params(&spec());
        let parsed: InstanceOptions =
            serde_json::from_value(Value::Object(params.clone())).expect("every spec option");
        assert_eq!(
            keys_of(&parsed),
            params.keys().cloned().collect::<BTreeSet<_>>()
        );
        let mut extra = params;
        extra.insert("parameter".into(), json!({}));
        assert!(serde_json::from_value::<InstanceOptions>(Value::Object(extra)).is_err());
    }

    #[test]
    fn every_documented_return_key_is_serialised() {
        let doc = docs();
        let instance = doc
            .returns
            .iter()
            .find(|r| r.name == "instance")
            .expect("instance is documented");
        let documented: BTreeSet<String> = instance
            .contains
            .iter()
            .map(|r| r.name.to_string())
            .collect();
        assert_eq!(
            documented,
            keys_of(&pgherd_core::lifecycle::InstanceFacts::default())
        );
    }
}
