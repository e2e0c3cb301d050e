//! Patroni's REST API: one method per endpoint, typed responses, a timeout
//! on every call, and errors that say which URL and what came back.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::manifest::Login;
use crate::settings::Settings;

mod http;
mod status;
pub use http::{install_crypto_provider, ClientTls};
pub use status::*;

/// How to reach one member's REST API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`.
    pub address: String,
    /// `None` for plain http.
    pub tls: Option<ClientTls>,
    pub auth: Option<Login>,
}

impl Endpoint {
    /// Any member's endpoint, with this site's TLS settings.
    pub fn for_address(settings: &Settings, address: &str, auth: Option<Login>) -> Endpoint {
        let api = &settings.patroni.restapi;
        let ctl = settings.patroni.ctl.clone().unwrap_or_default();
        let tls = api.certfile.as_ref().map(|_| ClientTls {
            cafile: ctl.cacert.clone().or_else(|| api.cafile.clone()),
            certfile: ctl.certfile.clone(),
            keyfile: ctl.keyfile.clone(),
        });
        Endpoint {
            address: address.to_string(),
            tls,
            auth,
        }
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.address)
    }
}

/// A synchronous client of one member's REST API.
pub struct RestClient {
    endpoint: Endpoint,
    client: http::HttpClient,
    timeout: Duration,
}

/// What an HTTP client is built from: the TLS material and the connect
/// timeout (a request's own timeout is set on the request).
type ClientKey = (Option<ClientTls>, Duration);

/// The HTTP clients this process built: a wait polling every 100 ms reads
/// no certificate again and builds no TLS configuration again. None keeps
/// a connection between requests, so a member that restarted is never
/// reached through a stale one.
static CLIENTS: std::sync::Mutex<Vec<(ClientKey, http::HttpClient)>> =
    std::sync::Mutex::new(Vec::new());

/// The HTTP client for `tls` and `connect_timeout`, built once.
fn http_client(tls: Option<&ClientTls>, connect_timeout: Duration) -> Result<http::HttpClient> {
    let key = (tls.cloned(), connect_timeout);
    let mut built = CLIENTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, client)) = built.iter().find(|(k, _)| *k == key) {
        return Ok(client.clone());
    }
    let client = http::HttpClient::new(tls, connect_timeout)?;
    built.push((key, client.clone()));
    Ok(client)
}

impl RestClient {
    /// The member's base URL, for messages.
    pub fn base_url(&self) -> String {
        self.endpoint.url("")
    }

    /// A client whose every request ends after `timeout`.
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Result<RestClient> {
        let client = http_client(endpoint.tls.as_ref(), timeout.min(Duration::from_secs(3)))?;
        Ok(RestClient {
            endpoint,
            client,
            timeout,
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn rest_error(&self, method: &str, path: &str, msg: String) -> Error {
        Error::Rest {
            method: method.to_string(),
            url: self.endpoint.url(path),
            msg,
        }
    }

    /// What a failed exchange means, and what to check.
    fn describe_failure(&self, failure: http::Failure) -> String {
        let tls_files = || {
            self.endpoint
                .tls
                .as_ref()
                .map(|t| crate::tls_files_note(t.certfile.as_deref(), t.cafile.as_deref()))
                .unwrap_or_default()
        };
        match failure {
            http::Failure::Timeout => "no answer before the timeout".into(),
            http::Failure::Connect(e) => format!("cannot connect (is Patroni running there?): {e}"),
            http::Failure::Tls(e) => format!("TLS handshake failed{}: {e}", tls_files()),
            http::Failure::Broken(e) => format!("request failed: {e}"),
        }
    }

    /// Sends one request; returns the status and the body text.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, String)> {
        let request = http::Request {
            method,
            address: &self.endpoint.address,
            path,
            auth: self.endpoint.auth.as_ref(),
            body: body.map(|b| b.to_string().into_bytes()),
        };
        let (status, body) = self
            .client
            .send(&request, self.timeout)
            .map_err(|f| self.rest_error(method, path, self.describe_failure(f)))?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    fn get_json<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T> {
        let (status, text) = self.request("GET", path, None)?;
        if status == 401 || status == 403 {
            return Err(self.rest_error("GET", path, format!("HTTP {status}: {}", text.trim())));
        }
        serde_json::from_str(&text).map_err(|e| {
            self.rest_error(
                "GET",
                path,
                format!(
                    "HTTP {status}, not the expected JSON ({e}): {}",
                    snippet(&text)
                ),
            )
        })
    }

    /// `GET /patroni`. Patroni answers 503 with the same JSON when
    /// PostgreSQL is not running: that is a status, not an error.
    pub fn patroni(&self) -> Result<NodeStatus> {
        let mut s: NodeStatus = self.get_json("/patroni")?;
        s.normalise();
        Ok(s)
    }

    /// `GET /cluster`, with the states of an older Patroni's replicas in
    /// the newer ones' words.
    pub fn cluster(&self) -> Result<ClusterStatus> {
        if REPORTS_REPLICATION_STATE.get().is_none() {
            // Its answer records the version (a failure: the newer words).
            let _ = self.patroni();
        }
        let mut c = self.cluster_as_answered()?;
        c.normalise_by_version();
        Ok(c)
    }

    /// The member's own view (`known` when the caller read it a moment ago
    /// and nothing acted since) and `/cluster`, asked at once; the
    /// cluster's words follow the version the member's view gives.
    pub fn patroni_and_cluster(
        &self,
        known: Option<NodeStatus>,
    ) -> (Result<NodeStatus>, Result<ClusterStatus>) {
        std::thread::scope(|scope| {
            let cluster = scope.spawn(|| self.cluster_as_answered());
            let status = known.map_or_else(|| self.patroni(), Ok);
            let cluster = joined(cluster.join(), "/cluster").map(|mut c| {
                c.normalise_by_version();
                c
            });
            (status, cluster)
        })
    }

    /// `GET /cluster` as the member answered, without asking its version:
    /// for the caller to normalise (`ClusterStatus::normalise_by_version`)
    /// once the version is known.
    pub fn cluster_as_answered(&self) -> Result<ClusterStatus> {
        self.get_json("/cluster")
    }

    fn post_expect(&self, path: &str, body: Option<&Value>, ok: &[u16]) -> Result<(u16, String)> {
        let (status, text) = self.request("POST", path, body)?;
        if ok.contains(&status) {
            Ok((status, text))
        } else {
            Err(self.rest_error("POST", path, format!("HTTP {status}: {}", snippet(&text))))
        }
    }

    /// `POST /reload`: Patroni rereads its configuration on its next cycle.
    pub fn reload(&self) -> Result<()> {
        self.post_expect("/reload", None, &[200, 202]).map(|_| ())
    }

    /// `POST /restart`: Patroni restarts PostgreSQL and answers when done.
    pub fn restart(&self) -> Result<()> {
        self.post_expect("/restart", Some(&serde_json::json!({})), &[200])
            .map(|_| ())
    }

    /// `GET /config`: the cluster's dynamic configuration.
    pub fn config(&self) -> Result<Value> {
        self.get_json("/config")
    }

    /// `PATCH /config`: merges `changes` (null deletes); returns the new
    /// configuration as Patroni answers it.
    pub fn patch_config(&self, changes: &Value) -> Result<Value> {
        let (status, text) = self.request("PATCH", "/config", Some(changes))?;
        if status != 200 {
            return Err(self.rest_error(
                "PATCH",
                "/config",
                format!("HTTP {status}: {}", snippet(&text)),
            ));
        }
        serde_json::from_str(&text).map_err(|e| {
            self.rest_error(
                "PATCH",
                "/config",
                format!("HTTP {status}, not JSON ({e}): {}", snippet(&text)),
            )
        })
    }

    /// `GET /history`: the timelines, as Patroni lists them.
    pub fn history(&self) -> Result<Value> {
        self.get_json("/history")
    }

    /// Status of a health endpoint such as `/primary` or `/replica`.
    pub fn health(&self, path: &str) -> Result<u16> {
        self.request("GET", path, None).map(|(status, _)| status)
    }

    /// `POST /switchover`; the status and Patroni's answer, for the caller
    /// to interpret (200 done, 202 scheduled, 412 refused, 503 unknown).
    pub fn switchover(
        &self,
        leader: &str,
        candidate: &str,
        scheduled_at: Option<&str>,
    ) -> Result<(u16, String)> {
        let mut body = serde_json::json!({"leader": leader, "candidate": candidate});
        if let Some(at) = scheduled_at {
            body["scheduled_at"] = Value::String(at.to_string());
        }
        self.request("POST", "/switchover", Some(&body))
    }

    /// `POST /failover` to `candidate`; status and answer as for switchover.
    pub fn failover(&self, candidate: &str) -> Result<(u16, String)> {
        self.request(
            "POST",
            "/failover",
            Some(&serde_json::json!({"candidate": candidate})),
        )
    }

    /// `POST /reinitialize`: this member re-clones from the leader.
    pub fn reinitialize(&self) -> Result<()> {
        self.post_expect(
            "/reinitialize",
            Some(&serde_json::json!({"force": true})),
            &[200],
        )
        .map(|_| ())
    }
}

/// The answer of a request made on a thread of its own, once joined: an
/// error saying so when the thread stopped on a panic.
pub fn joined<T>(answer: std::thread::Result<Result<T>>, path: &str) -> Result<T> {
    answer.unwrap_or_else(|_| {
        Err(Error::Other(format!(
            "the request for {path} stopped on an internal error"
        )))
    })
}

/// The start of an answer, for messages.
pub fn snippet(text: &str) -> String {
    let t = text.trim();
    if t.chars().count() > 200 {
        format!("{}...", t.chars().take(200).collect::<String>())
    } else {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn endpoints_use_https_when_the_api_serves_tls() {
        let mut s = Settings::default();
        let plain = Endpoint::for_address(&s, "h:8008", None);
        assert_eq!(plain.url("/patroni"), "http://h:8008/patroni");
        s.patroni.restapi.certfile = Some("/c".into());
        s.patroni.restapi.cafile = Some("/ca".into());
        let tls = Endpoint::for_address(&s, "h:8008", None);
        assert_eq!(tls.url("/patroni"), "https://h:8008/patroni");
        assert_eq!(tls.tls.unwrap().cafile, Some(PathBuf::from("/ca")));
    }

    #[test]
    fn an_unreachable_api_is_named_in_the_error() {
        let ep = Endpoint {
            address: "127.0.0.1:9".into(),
            tls: None,
            auth: None,
        };
        let c = RestClient::new(ep, Duration::from_secs(2)).unwrap();
        let err = c.patroni().unwrap_err().to_string();
        assert!(
            err.starts_with("GET http://127.0.0.1:9/patroni: cannot connect"),
            "{err}"
        );
    }
}
