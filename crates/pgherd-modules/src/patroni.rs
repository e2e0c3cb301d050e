//! `pgherd.cluster.patroni`: cluster-wide operations. It speaks the module
//! protocol already; its operations are not built yet.

use pgherd_ansible::{Failure, Kind, OptionSpec, Outcome, Spec, Task};

use crate::settings_option;

/// The argument spec of the `patroni` module.
pub fn spec() -> Spec {
    Spec::new(vec![
        OptionSpec::new("cluster", Kind::Str).doc("The cluster (Patroni's C(scope))."),
        OptionSpec::new("state", Kind::Str)
            .default("info")
            .choices(["present", "info", "absent"])
            .doc("C(info) reads the cluster's state."),
        OptionSpec::new("dynamic_config", Kind::Dict)
            .doc("The cluster's dynamic configuration; null deletes a key."),
        settings_option(),
    ])
}

/// Runs one `patroni` task.
pub fn run_task(task: &Task) -> Result<Outcome, Failure> {
    let state = task.params["state"].as_str().unwrap_or("info");
    Err(Failure::new(format!(
        "the patroni module is not implemented yet (state: {state}); nothing was done"
    )))
}
