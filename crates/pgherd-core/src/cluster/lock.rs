//! The cluster-wide lock of one run: a leased key in etcd, renewed while held.

use super::*;

/// The key, under the cluster's prefix, that a pgherd run holds while it
/// changes who leads or restarts members. Patroni ignores it.
pub const OPERATION_KEY: &str = "pgherd-operation";

/// Seconds the operation key outlives a run killed while holding it.
pub(super) const OPERATION_LEASE_SECS: i64 = 15;

/// The cluster-wide lock of one run: a leased key in etcd, renewed by a
/// thread while held, revoked when dropped.
pub(super) struct OperationLock {
    stop: Option<std::sync::mpsc::Sender<()>>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for OperationLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
    }
}

pub(super) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown host".into())
}

/// Takes the cluster's operation key, waiting for another run to release
/// it until the task's deadline.
/// Also returns the cluster's keys, read once the lock is held, through
/// the same connection.
pub(super) fn lock_operations(target: &Target, what: &str) -> Result<(OperationLock, ClusterKeys)> {
    let mut dcs = connect_dcs(target)?;
    let key = format!(
        "{}{OPERATION_KEY}",
        crate::dcs::cluster_prefix(&target.settings.patroni.etcd.namespace, &target.scope)
    );
    let now = crate::names::unix_now();
    let holder = format!(
        "{what}, by pgherd pid {} on {} since unix time {now}",
        std::process::id(),
        host_name()
    );
    let lease = crate::lock::wait_for_turn(
        &format!("cluster {} ({key})", target.scope),
        target.timeout,
        || dcs.create_leased(&key, &holder, OPERATION_LEASE_SECS),
    )?;
    let keys = dcs.read_cluster(&target.settings.patroni.etcd.namespace, &target.scope);
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let every = Duration::from_secs(OPERATION_LEASE_SECS as u64 / 3);
    let renewer = std::thread::spawn(move || {
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
            // A failed renewal leaves the key to expire: the next run then
            // may start; nothing better can be done from here.
            let _ = dcs.keep_alive(lease);
        }
        dcs.revoke(lease);
    });
    let lock = OperationLock {
        stop: Some(stop),
        renewer: Some(renewer),
    };
    Ok((lock, keys?))
}
