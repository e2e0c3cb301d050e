//! The cluster a task addresses, read from an instance's Patroni configuration.

use super::*;

impl Target {
    /// The cluster an instance's Patroni configuration belongs to: its
    /// scope and namespace, its etcd endpoints, TLS and user, its REST
    /// API's TLS (with the `ctl` client certificate) and user.
    pub fn from_patroni_config(path: &std::path::Path, timeout: Duration) -> Result<Target> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(path, "reading the Patroni configuration", e))?;
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| Error::Settings {
            origin: origin.clone(),
            msg: e.to_string(),
        })?;
        target_from_patroni_doc(&doc, &origin, timeout)
    }
}

pub(super) fn target_from_patroni_doc(
    doc: &serde_yaml::Value,
    origin: &str,
    timeout: Duration,
) -> Result<Target> {
    let bad = |msg: &str| Error::Settings {
        origin: origin.to_string(),
        msg: msg.to_string(),
    };
    let text =
        |v: &serde_yaml::Value, key: &str| v.get(key).and_then(|x| x.as_str()).map(str::to_string);
    let path = |v: &serde_yaml::Value, key: &str| text(v, key).map(std::path::PathBuf::from);
    let scope =
        text(doc, "scope").ok_or_else(|| bad("no scope: is this a Patroni configuration?"))?;
    let etcd = doc
        .get("etcd3")
        .ok_or_else(|| bad("no etcd3 section: pgherd talks to etcd through its v3 API"))?;
    let mut settings = Settings::default();
    let e = &mut settings.patroni.etcd;
    e.hosts = match etcd.get("hosts") {
        Some(serde_yaml::Value::Sequence(hosts)) => hosts
            .iter()
            .filter_map(|h| h.as_str().map(str::to_string))
            .collect(),
        Some(serde_yaml::Value::String(hosts)) => hosts
            .split(',')
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .collect(),
        _ => text(etcd, "host").into_iter().collect(),
    };
    if e.hosts.is_empty() {
        return Err(bad("etcd3 names no hosts"));
    }
    if text(etcd, "protocol").as_deref() == Some("https") {
        e.protocol = crate::settings::Protocol::Https;
    }
    e.cacert = path(etcd, "cacert");
    e.cert = path(etcd, "cert");
    e.key = path(etcd, "key");
    if let Some(ns) = text(doc, "namespace") {
        e.namespace = ns;
    }
    let login = |v: Option<&serde_yaml::Value>| {
        let v = v?;
        Some(Login {
            username: text(v, "username")?,
            password: text(v, "password")?,
        })
    };
    let etcd_auth = login(Some(etcd));
    let restapi = doc.get("restapi");
    if let Some(api) = restapi {
        settings.patroni.restapi.certfile = path(api, "certfile");
        settings.patroni.restapi.keyfile = path(api, "keyfile");
        settings.patroni.restapi.cafile = path(api, "cafile");
    }
    if let Some(ctl) = doc.get("ctl") {
        settings.patroni.ctl = Some(crate::settings::CtlSettings {
            certfile: path(ctl, "certfile"),
            keyfile: path(ctl, "keyfile"),
            cacert: path(ctl, "cacert"),
        });
    }
    Ok(Target {
        scope,
        settings,
        restapi: None,
        restapi_auth: login(restapi.and_then(|a| a.get("authentication"))),
        etcd_auth,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patroni_configuration_names_the_cluster_and_how_to_reach_it() {
        let doc: serde_yaml::Value = serde_yaml::from_str(
            "scope: main\nnamespace: /pg/\nname: pg1\n\
             etcd3:\n  hosts: [10.0.0.1:2379, 10.0.0.2:2379]\n  protocol: https\n  \
             cacert: /etc/ca.pem\n  username: pg1\n  password: s3cret\n\
             restapi:\n  listen: 0.0.0.0:8008\n  certfile: /etc/api.pem\n  \
             authentication: {username: admin, password: pw}\n\
             ctl: {certfile: /etc/ctl.pem, keyfile: /etc/ctl.key}\n",
        )
        .unwrap();
        let t = target_from_patroni_doc(&doc, "p.yaml", Duration::from_secs(9)).unwrap();
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
        let one: serde_yaml::Value =
            serde_yaml::from_str("scope: x\netcd3: {hosts: 'a:1, b:2'}").unwrap();
        let t = target_from_patroni_doc(&one, "p", Duration::from_secs(1)).unwrap();
        assert_eq!(t.settings.patroni.etcd.hosts, ["a:1", "b:2"]);
        assert!(t.etcd_auth.is_none() && t.restapi_auth.is_none());
        for bad in [
            "name: x",
            "scope: x",
            "scope: x\netcd3: {}",
            "scope: x\netcd: {host: a:1}",
        ] {
            let doc: serde_yaml::Value = serde_yaml::from_str(bad).unwrap();
            assert!(
                target_from_patroni_doc(&doc, "p", Duration::from_secs(1)).is_err(),
                "{bad}"
            );
        }
    }
}
