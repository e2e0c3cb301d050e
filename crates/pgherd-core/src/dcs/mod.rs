//! The cluster's keys in etcd (v3 API), read the way Patroni writes them:
//! `/<namespace>/<scope>/leader` (a member name), `members/<name>` (JSON),
//! `config` (JSON), `initialize` (the system identifier), `sync` (JSON),
//! `failover` (JSON), `history` (a JSON list), `status` (JSON).

use std::time::Duration;

use crate::error::{Error, Result};
use crate::manifest::Login;
use crate::settings::{EtcdSettings, Protocol};
use crate::wait::POLL_INTERVAL;

mod keys;
pub use keys::*;

/// Errors that go away by themselves: a leader election, a member that
/// went down while the client still had it in its pool.
fn is_transient(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            matches!(
                s.code() as i32,
                tonic_code::UNAVAILABLE | tonic_code::DEADLINE_EXCEEDED
            ) || s.message().contains("leader changed")
        }
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

/// An etcd client error as one readable line: gRPC's status and message,
/// and the innermost cause (a refused connection, a certificate rejected),
/// without the library's debug dump.
pub fn describe_error(e: &etcd_client::Error) -> String {
    let root = {
        let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
        let mut last = None;
        while let Some(c) = cause {
            last = Some(c.to_string());
            cause = c.source();
        }
        last
    };
    let head = match e {
        etcd_client::Error::GRpcStatus(s) => {
            let message = s.message().trim();
            if message.is_empty() {
                format!("{:?}", s.code()).to_lowercase()
            } else {
                message.to_string()
            }
        }
        etcd_client::Error::TransportError(_) => "transport error".to_string(),
        other => other.to_string(),
    };
    match root {
        Some(r) if !head.contains(&r) => format!("{head}: {r}"),
        _ => head,
    }
}

/// `msg`, followed by `note` (the TLS files used) when it tells of a
/// failed TLS handshake, or of a transport error over TLS: a server that
/// rejects the client certificate often only closes the connection, which
/// gRPC may report as a cancelled call or a reset connection.
fn with_tls_note(msg: String, note: &str) -> String {
    let lower = msg.to_ascii_lowercase();
    if !note.is_empty()
        && [
            "certificate",
            "handshake",
            "tls",
            "unknownissuer",
            "transport error",
            "operation was canceled",
            "connection reset",
            "broken pipe",
        ]
        .iter()
        .any(|w| lower.contains(w))
    {
        format!("{msg}{note}")
    } else {
        msg
    }
}

/// The gRPC codes used above, named as the gRPC specification numbers them.
mod tonic_code {
    pub const UNAVAILABLE: i32 = 14;
    pub const DEADLINE_EXCEEDED: i32 = 4;
}

/// How the client connects: a short connect timeout; keep-alives for a
/// watching client (no per-request timeout: a watch waits as long as it
/// must), a per-request timeout otherwise; the CA and client certificate
/// with TLS. The login is not part of the connection: made there, it goes
/// to whichever member the balancer picks, and a member that is down fails
/// the connection; it is made afterwards as a call, retried like every
/// call until a live member answers.
/// How often a watching connection pings etcd. etcd answers pings more
/// frequent than its `--grpc-keepalive-min-time` (5 s by default) with a
/// GOAWAY ("too many pings") after a few: the watch then broke every few
/// seconds.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(6);

fn connect_options(
    etcd: &EtcdSettings,
    timeout: Duration,
    keep_alive: bool,
) -> Result<etcd_client::ConnectOptions> {
    let mut options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(timeout.min(Duration::from_secs(3)));
    options = if keep_alive {
        options
            .with_keep_alive(KEEP_ALIVE_INTERVAL, timeout)
            .with_keep_alive_while_idle(true)
    } else {
        options.with_timeout(timeout)
    };
    if etcd.protocol == Protocol::Https {
        let mut tls = etcd_client::TlsOptions::new();
        if let Some(ca) = &etcd.cacert {
            let pem =
                std::fs::read(ca).map_err(|e| Error::io(ca, "reading the etcd CA file", e))?;
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(pem));
        }
        if let (Some(cert), Some(key)) = (&etcd.cert, &etcd.key) {
            let c = std::fs::read(cert)
                .map_err(|e| Error::io(cert, "reading the etcd client certificate", e))?;
            let k =
                std::fs::read(key).map_err(|e| Error::io(key, "reading the etcd client key", e))?;
            tls = tls.identity(etcd_client::Identity::from_pem(c, k));
        }
        options = options.with_tls(tls);
    }
    Ok(options)
}

/// The etcd credentials in force: a node's or a task's own, else the
/// settings' site-wide ones.
pub fn effective_login(own: Option<&Login>, etcd: &EtcdSettings) -> Option<Login> {
    own.cloned()
        .or_else(|| match (&etcd.username, &etcd.password) {
            (Some(u), Some(p)) => Some(Login {
                username: u.clone(),
                password: p.clone(),
            }),
            _ => None,
        })
}

/// Keys a watch saw change, each with its new value (`None`: deleted).
pub type Changes = Vec<(String, Option<String>)>;

/// A watch opened by [`Dcs::watch_prefix`].
pub struct Watch {
    stream: etcd_client::WatchStream,
    prefix: String,
}

/// A connection to etcd with the site's endpoints, TLS and credentials.
pub struct Dcs {
    client: etcd_client::Client,
    runtime: &'static tokio::runtime::Runtime,
    endpoints: Vec<String>,
    timeout: Duration,
    /// The TLS files used, named when a handshake fails.
    tls_note: String,
}

impl Dcs {
    pub fn connect(etcd: &EtcdSettings, auth: Option<&Login>, timeout: Duration) -> Result<Dcs> {
        Dcs::connect_with(etcd, auth, timeout, false)
    }

    /// A connection for a long-lived watch: HTTP/2 pings every second find
    /// a dead or frozen etcd within about `timeout`, so the watch breaks
    /// instead of waiting forever.
    pub fn connect_watching(
        etcd: &EtcdSettings,
        auth: Option<&Login>,
        timeout: Duration,
    ) -> Result<Dcs> {
        Dcs::connect_with(etcd, auth, timeout, true)
    }

    fn connect_with(
        etcd: &EtcdSettings,
        auth: Option<&Login>,
        timeout: Duration,
        keep_alive: bool,
    ) -> Result<Dcs> {
        let scheme = match etcd.protocol {
            Protocol::Http => "http",
            Protocol::Https => "https",
        };
        let endpoints: Vec<String> = etcd
            .hosts
            .iter()
            .map(|h| format!("{scheme}://{h}"))
            .collect();
        let options = connect_options(etcd, timeout, keep_alive)?;
        crate::rest::install_crypto_provider();
        let runtime = crate::runtime::runtime()?;
        let described = endpoints.join(", ");
        let tls_note = if etcd.protocol == Protocol::Https {
            crate::tls_files_note(etcd.cert.as_deref(), etcd.cacert.as_deref())
        } else {
            String::new()
        };
        let client = runtime
            .block_on(async {
                tokio::time::timeout(
                    timeout,
                    etcd_client::Client::connect(&endpoints, Some(options)),
                )
                .await
            })
            .map_err(|_| Error::Dcs {
                endpoints: described.clone(),
                msg: "no answer before the timeout".into(),
            })?
            .map_err(|e| Error::Dcs {
                endpoints: described.clone(),
                msg: with_tls_note(describe_error(&e), &tls_note),
            })?;
        let dcs = Dcs {
            client,
            runtime,
            endpoints,
            timeout,
            tls_note,
        };
        if let Some(login) = auth {
            let user = Some((login.username.clone(), login.password.clone()));
            let client = dcs.client.clone();
            dcs.call(&format!("logging in as {}", login.username), || {
                let mut client = client.clone();
                let user = user.clone();
                async move { client.update_user(user).await }
            })?;
        }
        Ok(dcs)
    }

    /// The client, for calls made through [`Dcs::call`] elsewhere in the
    /// core (etcd's own administration).
    pub(crate) fn client(&self) -> &etcd_client::Client {
        &self.client
    }

    fn error(&self, what: &str, e: &etcd_client::Error) -> Error {
        self.error_text(what, &describe_error(e))
    }

    fn error_text(&self, what: &str, e: &str) -> Error {
        Error::Dcs {
            endpoints: self.endpoints.join(", "),
            msg: with_tls_note(format!("{what}: {e}"), &self.tls_note),
        }
    }

    /// Runs one etcd call with the timeout, naming `what` in any error.
    /// An etcd cluster that is electing a leader or a member that is down
    /// answers "unavailable": the call is made again until the timeout.
    pub(crate) fn call<T, F, Fut>(&self, what: &str, mut make: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let start = std::time::Instant::now();
        loop {
            let left = self.timeout.saturating_sub(start.elapsed());
            match self
                .runtime
                .block_on(async { tokio::time::timeout(left, make()).await })
            {
                Err(_) => return Err(self.error_text(what, "no answer before the timeout")),
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => {
                    if !is_transient(&e) || start.elapsed() + POLL_INTERVAL >= self.timeout {
                        return Err(self.error(what, &e));
                    }
                    std::thread::sleep(POLL_INTERVAL);
                }
            }
        }
    }

    /// Every key under `prefix` with its value.
    pub fn get_prefix(&mut self, prefix: &str) -> Result<Vec<(String, String)>> {
        Ok(self.get_prefix_at(prefix)?.0)
    }

    /// Every key under `prefix` with its value, and the store's revision
    /// they were read at (a watch from the next one misses nothing).
    pub fn get_prefix_at(&mut self, prefix: &str) -> Result<(Vec<(String, String)>, i64)> {
        let resp = self.call(&format!("reading {prefix}"), || {
            let mut kv = self.client.kv_client();
            let options = etcd_client::GetOptions::new().with_prefix();
            async move { kv.get(prefix, Some(options)).await }
        })?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let kvs = resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            })
            .collect();
        Ok((kvs, revision))
    }

    /// Watches every key under `prefix` from `revision` on.
    pub fn watch_prefix(&mut self, prefix: &str, revision: i64) -> Result<Watch> {
        let stream = self.call(&format!("watching {prefix}"), || {
            let mut client = self.client.watch_client();
            let options = etcd_client::WatchOptions::new()
                .with_prefix()
                .with_start_revision(revision);
            async move { client.watch(prefix, Some(options)).await }
        })?;
        Ok(Watch {
            stream,
            prefix: prefix.to_string(),
        })
    }

    /// Waits, without deadline, for the next changes the watch sees: each
    /// key with its new value, `None` when it was deleted. An error means
    /// the watch or the connection broke: connect again, read again, watch
    /// again.
    pub fn next_changes(&self, watch: &mut Watch) -> Result<Changes> {
        loop {
            if let Some(changes) = self.next_changes_within(watch, Duration::MAX)? {
                return Ok(changes);
            }
        }
    }

    /// As [`Dcs::next_changes`], but `None` when nothing changed within
    /// `quiet` (the watch stays usable).
    pub fn next_changes_within(
        &self,
        watch: &mut Watch,
        quiet: Duration,
    ) -> Result<Option<Changes>> {
        let what = format!("watching {}", watch.prefix);
        let until = tokio::time::Instant::now().checked_add(quiet);
        loop {
            let message = self.runtime.block_on(async {
                match until {
                    Some(until) => tokio::time::timeout_at(until, watch.stream.message())
                        .await
                        .ok(),
                    None => Some(watch.stream.message().await),
                }
            });
            let resp = match message {
                None => return Ok(None),
                Some(Ok(Some(resp))) => resp,
                Some(Ok(None)) => return Err(self.error_text(&what, "the watch ended")),
                Some(Err(e)) => return Err(self.error(&what, &e)),
            };
            if resp.canceled() {
                let reason = match resp.compact_revision() {
                    0 => resp.cancel_reason().to_string(),
                    r => format!("history compacted up to revision {r}"),
                };
                return Err(self.error_text(&what, &format!("cancelled: {reason}")));
            }
            let changes: Changes = resp
                .events()
                .iter()
                .filter_map(|e| {
                    let kv = e.kv()?;
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    let value = (e.event_type() == etcd_client::EventType::Put)
                        .then(|| String::from_utf8_lossy(kv.value()).into_owned());
                    Some((key, value))
                })
                .collect();
            // The first answer only confirms the watch.
            if !changes.is_empty() {
                return Ok(Some(changes));
            }
        }
    }

    /// Deletes every key under `prefix`; returns how many went.
    pub fn delete_prefix(&mut self, prefix: &str) -> Result<i64> {
        self.call(&format!("deleting {prefix}"), || {
            let mut kv = self.client.kv_client();
            let options = etcd_client::DeleteOptions::new().with_prefix();
            async move { kv.delete(prefix, Some(options)).await }
        })
        .map(|r| r.deleted())
    }

    /// Deletes `key` alone; returns whether it was there.
    pub fn delete_key(&mut self, key: &str) -> Result<bool> {
        self.call(&format!("deleting {key}"), || {
            let mut kv = self.client.kv_client();
            async move { kv.delete(key, None).await }
        })
        .map(|r| r.deleted() > 0)
    }

    /// Creates `key` holding `value`, attached to a new lease of
    /// `ttl_secs`, unless the key exists: then returns its value instead.
    /// A key already there costs one read, no lease.
    pub fn create_leased(
        &mut self,
        key: &str,
        value: &str,
        ttl_secs: i64,
    ) -> Result<std::result::Result<i64, String>> {
        if let Some((_, holder)) = self.get_prefix(key)?.into_iter().find(|(k, _)| k == key) {
            return Ok(Err(holder));
        }
        let id = self
            .call(&format!("granting a lease for {key}"), || {
                let mut lease = self.client.lease_client();
                async move { lease.grant(ttl_secs, None).await }
            })?
            .id();
        let txn = etcd_client::Txn::new()
            .when([etcd_client::Compare::create_revision(
                key,
                etcd_client::CompareOp::Equal,
                0,
            )])
            .and_then([etcd_client::TxnOp::put(
                key,
                value,
                Some(etcd_client::PutOptions::new().with_lease(id)),
            )])
            .or_else([etcd_client::TxnOp::get(key, None)]);
        let resp = self.call(&format!("creating {key}"), || {
            let mut kv = self.client.kv_client();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })?;
        if resp.succeeded() {
            return Ok(Ok(id));
        }
        let holder = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                etcd_client::TxnOpResponse::Get(g) => g
                    .kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                _ => None,
            })
            .unwrap_or_default();
        // A first attempt that succeeded unseen, then retried: it is ours.
        if holder == value {
            return Ok(Ok(id));
        }
        self.revoke(id);
        Ok(Err(holder))
    }

    /// Renews a lease once.
    pub fn keep_alive(&mut self, lease: i64) -> Result<()> {
        self.call("renewing a lease", || {
            let mut client = self.client.lease_client();
            async move {
                let (mut keeper, mut stream) = client.keep_alive(lease).await?;
                keeper.keep_alive().await?;
                stream.message().await.map(|_| ())
            }
        })
    }

    /// Revokes a lease, which deletes its keys; errors are left to the
    /// lease's expiry.
    pub fn revoke(&mut self, lease: i64) {
        let _ = self.call("revoking a lease", || {
            let mut client = self.client.lease_client();
            async move { client.revoke(lease).await }
        });
    }

    /// Whether the login may write under `prefix`, found without writing:
    /// a transaction whose condition can never hold, with a put in the
    /// branch it never takes; etcd checks the permissions of both branches
    /// before it evaluates the condition.
    pub fn check_write(&mut self, prefix: &str) -> Result<()> {
        let probe = format!("{prefix}pgherd-write-probe");
        let txn = etcd_client::Txn::new()
            .when([etcd_client::Compare::create_revision(
                probe.as_str(),
                etcd_client::CompareOp::Greater,
                i64::MAX,
            )])
            .and_then([etcd_client::TxnOp::put(probe.as_str(), "", None)]);
        self.call(&format!("checking write access to {prefix}"), || {
            let mut kv = self.client.kv_client();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .map(drop)
    }

    /// The cluster's keys, parsed.
    pub fn read_cluster(&mut self, namespace: &str, scope: &str) -> Result<ClusterKeys> {
        let prefix = cluster_prefix(namespace, scope);
        let kvs = self.get_prefix(&prefix)?;
        Ok(parse_cluster_keys(&prefix, &kvs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_torn_down_over_tls_names_the_tls_files() {
        let note = " (client certificate /c.pem, CA file /ca.pem)";
        for msg in [
            "logging in as patroni: operation was canceled",
            "transport error: connection reset by peer",
            "invalid peer certificate: UnknownIssuer",
        ] {
            assert!(with_tls_note(msg.into(), note).ends_with(note), "{msg}");
        }
        let plain = "logging in as patroni: authentication failed";
        assert_eq!(with_tls_note(plain.into(), note), plain);
        assert_eq!(
            with_tls_note("transport error".into(), ""),
            "transport error"
        );
    }
}
