//! The `pgherd.cluster.patroni` module binary.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    pgherd_ansible::run(
        "patroni",
        &pgherd_modules::patroni::spec(),
        &args,
        pgherd_modules::patroni::run_task,
    )
}
