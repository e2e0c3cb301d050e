//! The process's one I/O runtime: every etcd call blocks on it (the REST
//! API's are plain blocking ones, `rest/http.rs`). Single-threaded: calls are made one at a time per thread, and a
//! thread that blocks while another drives the I/O joins in (the cluster
//! lock's renewal, the members probed at once).

use std::sync::OnceLock;

use crate::error::{Error, Result};

static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();

/// The runtime, started at its first use.
pub fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Other(format!("cannot start the I/O runtime: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_share_the_runtime_and_all_finish() {
        let rt = runtime().unwrap();
        let handles: Vec<_> = (0..4u64)
            .map(|i| {
                std::thread::spawn(move || {
                    runtime().unwrap().block_on(async move {
                        tokio::time::sleep(std::time::Duration::from_millis(20 * i)).await;
                        i
                    })
                })
            })
            .collect();
        let main = rt.block_on(async { 7 });
        let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!((main, sum), (7, 6));
    }
}
