//! The `pgherd.cluster.etcd` module binary.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    pgherd_ansible::run(
        "etcd",
        &pgherd_modules::etcd::spec(),
        &args,
        pgherd_modules::etcd::run_task,
    )
}
