//! `pgherd.cluster.instance`: one PostgreSQL + Patroni node on the target
//! host.

use pgherd_ansible::{Failure, Kind, OptionSpec, Outcome, Spec, Task};
use pgherd_core::instance::configure;
use pgherd_core::manifest::{InstanceManifest, InstanceOptions};
use serde_json::{json, Map, Value};

use crate::{load_settings, settings_option};

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
            .doc("C(present) writes the configuration without starting anything."),
        settings_option(),
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
        OptionSpec::new("conf_settings", Kind::Dict)
            .doc("Mapping merged last into the Patroni configuration file; a null value deletes the key."),
        OptionSpec::new("dynamic_conf_settings", Kind::Dict)
            .doc("Mapping merged into C(bootstrap.dcs), the dynamic configuration a new cluster starts with; null deletes."),
    ])
}

/// Runs one `instance` task.
pub fn run_task(task: &Task) -> Result<Outcome, Failure> {
    let p = &task.params;
    let state = p["state"].as_str().unwrap_or("started");
    let settings = load_settings(&p["settings"])?;
    let options: InstanceOptions = serde_json::from_value(Value::Object(p.clone()))
        .map_err(|e| Failure::new(format!("instance options: {e}")))?;
    let manifest = InstanceManifest::from_options(&options, &settings)?;
    match state {
        "present" => {
            let done = configure(&settings, &manifest, task.check_mode)?;
            let changes = done.plan.summary();
            let mut values = Map::new();
            values.insert("instance".into(), json!(done.facts));
            values.insert("changes".into(), json!(changes));
            Ok(Outcome {
                changed: !done.plan.is_empty(),
                msg: Some(if changes.is_empty() {
                    format!("instance {} is configured", manifest.qualified_name())
                } else {
                    format!(
                        "instance {}: {}",
                        manifest.qualified_name(),
                        changes.join("; ")
                    )
                }),
                diff: done.plan.diff(),
                warnings: Vec::new(),
                values,
            })
        }
        other => Err(Failure::new(format!(
            "state '{other}' of instance {} is not implemented yet; use state: present to write \
             its configuration without starting it",
            manifest.qualified_name()
        ))),
    }
}
