//! The cluster a task addresses, read from an instance's Patroni configuration.

use super::*;
use crate::patroni_file::PatroniFile;

impl Target {
    /// The cluster an instance's Patroni configuration belongs to: its
    /// scope and namespace, its etcd endpoints, TLS and user, its REST
    /// API's TLS (with the `ctl` client certificate) and user.
    pub fn from_patroni_config(path: &std::path::Path, timeout: Duration) -> Result<Target> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(path, "reading the Patroni configuration", e))?;
        target_from_patroni_text(&text, &origin, timeout)
    }
}

pub(super) fn target_from_patroni_text(
    text: &str,
    origin: &str,
    timeout: Duration,
) -> Result<Target> {
    let bad = |msg: &str| Error::Settings {
        origin: origin.to_string(),
        msg: msg.to_string(),
    };
    let doc = PatroniFile::parse(text).map_err(|e| bad(&e.to_string()))?;
    let scope = doc
        .scope
        .ok_or_else(|| bad("no scope: is this a Patroni configuration?"))?;
    let etcd = doc
        .etcd3
        .ok_or_else(|| bad("no etcd3 section: pgherd talks to etcd through its v3 API"))?;
    let mut settings = Settings::default();
    let e = &mut settings.patroni.etcd;
    e.hosts = etcd.endpoints();
    if e.hosts.is_empty() {
        return Err(bad("etcd3 names no hosts"));
    }
    if etcd.protocol.as_deref() == Some("https") {
        e.protocol = crate::settings::Protocol::Https;
    }
    e.cacert = etcd.cacert.clone();
    e.cert = etcd.cert.clone();
    e.key = etcd.key.clone();
    if let Some(ns) = doc.namespace {
        e.namespace = ns;
    }
    let restapi_auth = doc
        .restapi
        .as_ref()
        .and_then(|a| a.authentication.as_ref())
        .and_then(|c| c.login());
    if let Some(api) = doc.restapi {
        settings.patroni.restapi.certfile = api.certfile;
        settings.patroni.restapi.keyfile = api.keyfile;
        settings.patroni.restapi.cafile = api.cafile;
    }
    settings.patroni.ctl = doc.ctl.map(|ctl| crate::settings::CtlSettings {
        certfile: ctl.certfile,
        keyfile: ctl.keyfile,
        cacert: ctl.cacert,
    });
    Ok(Target {
        scope,
        settings,
        restapi: None,
        restapi_auth,
        etcd_auth: etcd.credentials.login(),
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patroni_configuration_names_the_cluster_and_how_to_reach_it() {
        let doc = "scope: main\nnamespace: /pg/\nname: pg1\n\
             etcd3:\n  hosts: [10.0.0.1:2379, 10.0.0.2:2379]\n  protocol: https\n  \
             cacert: /etc/ca.pem\n  username: pg1\n  password: s3cret\n\
             restapi:\n  listen: 0.0.0.0:8008\n  certfile: /etc/api.pem\n  \
             authentication: {username: admin, password: pw}\n\
             ctl: {certfile: /etc/ctl.pem, keyfile: /etc/ctl.key}\n";
        let t = target_from_patroni_text(doc, "p.yaml", Duration::from_secs(9)).unwrap();
        assert_eq!(t.scope, "main");
        let e = &t.settings.patroni.etcd;
        assert_eq!(e.hosts, ["10.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(e.protocol, crate::settings::Protocol::Https);
        assert_eq!(e.namespace, "/pg/");
        assert_eq!(
            t.etcd_auth.as_ref().map(|l| l.username.as_str()),
            Some("pg1")
        );
        assert_eq!(
            t.restapi_auth.as_ref().map(|l| l.password.as_str()),
            Some("pw")
        );
        assert!(t.settings.patroni.restapi.certfile.is_some());
        assert_eq!(
            t.settings
                .patroni
                .ctl
                .as_ref()
                .and_then(|c| c.keyfile.clone()),
            Some("/etc/ctl.key".into())
        );
        let one = "scope: x\netcd3: {hosts: 'a:1, b:2'}";
        let t = target_from_patroni_text(one, "p", Duration::from_secs(1)).unwrap();
        assert_eq!(t.settings.patroni.etcd.hosts, ["a:1", "b:2"]);
        assert!(t.etcd_auth.is_none() && t.restapi_auth.is_none());
        for bad in [
            "name: x",
            "scope: x",
            "scope: x\netcd3: {}",
            "scope: x\netcd: {host: a:1}",
            "scope: [x]\netcd3: {host: a:1}",
        ] {
            assert!(
                target_from_patroni_text(bad, "p", Duration::from_secs(1)).is_err(),
                "{bad}"
            );
        }
    }
}
