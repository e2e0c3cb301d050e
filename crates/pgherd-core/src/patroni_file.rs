//! A Patroni configuration file as pgherd reads it back (written by pgherd
//! or by hand): only the keys pgherd needs, typed; whatever else the file
//! holds is left alone. Scalars where text is expected (a numeric password)
//! read as text, as Patroni reads them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use crate::manifest::Login;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PatroniFile {
    #[serde(deserialize_with = "text")]
    pub scope: Option<String>,
    #[serde(deserialize_with = "text")]
    pub namespace: Option<String>,
    #[serde(deserialize_with = "text")]
    pub name: Option<String>,
    pub restapi: Option<RestApiSection>,
    pub ctl: Option<CtlSection>,
    pub etcd3: Option<Etcd3Section>,
    pub postgresql: PostgresqlSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RestApiSection {
    #[serde(deserialize_with = "text")]
    pub connect_address: Option<String>,
    #[serde(deserialize_with = "path")]
    pub certfile: Option<PathBuf>,
    #[serde(deserialize_with = "path")]
    pub keyfile: Option<PathBuf>,
    #[serde(deserialize_with = "path")]
    pub cafile: Option<PathBuf>,
    pub authentication: Option<Credentials>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CtlSection {
    #[serde(deserialize_with = "path")]
    pub certfile: Option<PathBuf>,
    #[serde(deserialize_with = "path")]
    pub keyfile: Option<PathBuf>,
    #[serde(deserialize_with = "path")]
    pub cacert: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Credentials {
    #[serde(deserialize_with = "text")]
    pub username: Option<String>,
    #[serde(deserialize_with = "text")]
    pub password: Option<String>,
}

impl Credentials {
    /// A login when both the user and the password are there.
    pub fn login(&self) -> Option<Login> {
        Some(Login {
            username: self.username.clone()?,
            password: self.password.clone()?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Etcd3Section {
    pub hosts: Option<Hosts>,
    #[serde(deserialize_with = "text")]
    pub host: Option<String>,
    #[serde(deserialize_with = "text")]
    pub protocol: Option<String>,
    #[serde(deserialize_with = "path")]
    pub cacert: Option<PathBuf>,
    #[serde(deserialize_with = "path")]
    pub cert: Option<PathBuf>,
    #[serde(deserialize_with = "path")]
    pub key: Option<PathBuf>,
    #[serde(flatten)]
    pub credentials: Credentials,
}

/// Patroni takes `hosts` as a list or as one comma-separated string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Hosts {
    List(Vec<String>),
    Text(String),
}

impl Etcd3Section {
    /// The endpoints, from `hosts` (a list or a comma-separated string),
    /// else `host`.
    pub fn endpoints(&self) -> Vec<String> {
        match &self.hosts {
            Some(Hosts::List(hosts)) => hosts.clone(),
            Some(Hosts::Text(hosts)) => hosts
                .split(',')
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect(),
            None => self.host.iter().cloned().collect(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PostgresqlSection {
    #[serde(deserialize_with = "path")]
    pub data_dir: Option<PathBuf>,
    pub parameters: BTreeMap<String, serde_yaml::Value>,
    pub recovery_conf: BTreeMap<String, serde_yaml::Value>,
}

impl PatroniFile {
    pub fn parse(text: &str) -> Result<PatroniFile, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }
}

/// A scalar as text; null as nothing.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde::de::Error;
    match serde_yaml::Value::deserialize(d)? {
        serde_yaml::Value::Null => Ok(None),
        serde_yaml::Value::String(s) => Ok(Some(s)),
        serde_yaml::Value::Number(n) => Ok(Some(n.to_string())),
        serde_yaml::Value::Bool(b) => Ok(Some(b.to_string())),
        other => Err(D::Error::custom(format!(
            "expected text, found {}",
            match other {
                serde_yaml::Value::Sequence(_) => "a list",
                serde_yaml::Value::Mapping(_) => "a mapping",
                _ => "a tagged value",
            }
        ))),
    }
}

fn path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(text(d)?.map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_reads_back_what_pgherd_needs_and_ignores_the_rest() {
        let f = PatroniFile::parse(
            "scope: main\nname: pg1\nlog: {level: INFO}\n\
             restapi: {connect_address: '10.0.0.1:8008', authentication: {username: a, password: 1234}}\n\
             etcd3: {hosts: 'a:1, b:2', username: u, password: p, protocol: https}\n\
             postgresql:\n  data_dir: /d\n  parameters: {archive_command: 'x --config=/c'}\n  \
             recovery_conf: {restore_command: y}\n  authentication: {superuser: {username: s}}\n",
        )
        .unwrap();
        assert_eq!(f.scope.as_deref(), Some("main"));
        let api = f.restapi.as_ref().unwrap();
        assert_eq!(api.connect_address.as_deref(), Some("10.0.0.1:8008"));
        let login = api.authentication.as_ref().and_then(Credentials::login);
        assert_eq!(login.map(|l| l.password), Some("1234".to_string()));
        let etcd = f.etcd3.as_ref().unwrap();
        assert_eq!(etcd.endpoints(), ["a:1", "b:2"]);
        assert_eq!(
            etcd.credentials.login().map(|l| l.username),
            Some("u".into())
        );
        assert_eq!(f.postgresql.data_dir, Some(PathBuf::from("/d")));
        assert!(f.postgresql.parameters.contains_key("archive_command"));
        let list = PatroniFile::parse("etcd3: {hosts: [a:1], host: z:9}").unwrap();
        assert_eq!(list.etcd3.unwrap().endpoints(), ["a:1"]);
        let one = PatroniFile::parse("etcd3: {host: z:9}").unwrap();
        assert_eq!(one.etcd3.unwrap().endpoints(), ["z:9"]);
        assert!(PatroniFile::parse("scope: [a]").is_err());
        assert!(PatroniFile::parse("").is_ok());
    }
}
