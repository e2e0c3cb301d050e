//! The `pgherd.cluster.instance` module binary.

fn main() {
    // Started again as Patroni's reaper (without systemd), it is only that.
    pgherd_core::service::offer_reaper();
    let args: Vec<String> = std::env::args().skip(1).collect();
    pgherd_ansible::run(
        "instance",
        &pgherd_modules::instance::spec(),
        &args,
        pgherd_modules::instance::run_task,
    )
}
