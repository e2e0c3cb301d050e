//! A Patroni configuration file as pgherd reads it back (written by pgherd
//! or by hand): only the keys pgherd needs, typed; whatever else the file
//! holds is left alone. Scalars where text is expected (a numeric password)
//! read as text, as Patroni reads them; a key holding the wrong kind of
//! value is an error naming it.

use std::path::PathBuf;

use serde_yaml::Value;

use crate::manifest::Login;

// Read by hand from the parsed document rather than derived: the derived
// readers of these few keys weighed about 60 KB in every module binary.

#[derive(Debug, Default)]
pub struct PatroniFile {
    pub scope: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub restapi: Option<RestApiSection>,
    pub ctl: Option<CtlSection>,
    pub etcd3: Option<Etcd3Section>,
    pub postgresql: PostgresqlSection,
}

#[derive(Debug, Default)]
pub struct RestApiSection {
    pub connect_address: Option<String>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub cafile: Option<PathBuf>,
    pub authentication: Option<Credentials>,
}

#[derive(Debug, Default)]
pub struct CtlSection {
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub cacert: Option<PathBuf>,
}

#[derive(Debug, Default)]
pub struct Credentials {
    pub username: Option<String>,
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

#[derive(Debug, Default)]
pub struct Etcd3Section {
    /// `hosts`, a list or one comma-separated string.
    pub hosts: Option<Vec<String>>,
    pub host: Option<String>,
    pub protocol: Option<String>,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub credentials: Credentials,
}

impl Etcd3Section {
    /// The endpoints, from `hosts`, else `host`.
    pub fn endpoints(&self) -> Vec<String> {
        match &self.hosts {
            Some(hosts) => hosts.clone(),
            None => self.host.iter().cloned().collect(),
        }
    }
}

#[derive(Debug, Default)]
pub struct PostgresqlSection {
    pub data_dir: Option<PathBuf>,
    /// `parameters.archive_command`
    pub archive_command: Option<String>,
    /// `recovery_conf.restore_command`
    pub restore_command: Option<String>,
}

/// A key of the file that holds the wrong kind of value.
#[derive(Debug)]
pub struct WrongKey(pub String);

impl std::fmt::Display for WrongKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PatroniFile {
    pub fn parse(text: &str) -> Result<PatroniFile, WrongKey> {
        let doc: Value = serde_yaml::from_str(text).map_err(|e| WrongKey(e.to_string()))?;
        let doc = Section::new(&doc, "")?;
        let restapi = doc.section("restapi")?;
        let etcd3 = doc.section("etcd3")?;
        let postgresql = doc.section("postgresql")?;
        Ok(PatroniFile {
            scope: doc.text("scope")?,
            namespace: doc.text("namespace")?,
            name: doc.text("name")?,
            restapi: match restapi {
                None => None,
                Some(api) => Some(RestApiSection {
                    connect_address: api.text("connect_address")?,
                    certfile: api.path("certfile")?,
                    keyfile: api.path("keyfile")?,
                    cafile: api.path("cafile")?,
                    authentication: match api.section("authentication")? {
                        None => None,
                        Some(a) => Some(a.credentials()?),
                    },
                }),
            },
            ctl: match doc.section("ctl")? {
                None => None,
                Some(ctl) => Some(CtlSection {
                    certfile: ctl.path("certfile")?,
                    keyfile: ctl.path("keyfile")?,
                    cacert: ctl.path("cacert")?,
                }),
            },
            etcd3: match etcd3 {
                None => None,
                Some(e) => Some(Etcd3Section {
                    hosts: e.hosts()?,
                    host: e.text("host")?,
                    protocol: e.text("protocol")?,
                    cacert: e.path("cacert")?,
                    cert: e.path("cert")?,
                    key: e.path("key")?,
                    credentials: e.credentials()?,
                }),
            },
            postgresql: match postgresql {
                None => PostgresqlSection::default(),
                Some(pg) => PostgresqlSection {
                    data_dir: pg.path("data_dir")?,
                    archive_command: match pg.section("parameters")? {
                        Some(p) => p.text("archive_command")?,
                        None => None,
                    },
                    restore_command: match pg.section("recovery_conf")? {
                        Some(r) => r.text("restore_command")?,
                        None => None,
                    },
                },
            },
        })
    }
}

/// A mapping of the document, with where it is for messages.
struct Section<'a> {
    map: Option<&'a serde_yaml::Mapping>,
    at: String,
}

impl<'a> Section<'a> {
    fn new(v: &'a Value, at: &str) -> Result<Section<'a>, WrongKey> {
        match v {
            Value::Mapping(m) => Ok(Section {
                map: Some(m),
                at: at.to_string(),
            }),
            Value::Null => Ok(Section {
                map: None,
                at: at.to_string(),
            }),
            _ => Err(WrongKey(format!(
                "{}: expected a mapping",
                at.trim_end_matches('.')
            ))),
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map?.get(key).filter(|v| !v.is_null())
    }

    fn section(&self, key: &str) -> Result<Option<Section<'a>>, WrongKey> {
        self.get(key)
            .map(|v| Section::new(v, &format!("{}{key}.", self.at)))
            .transpose()
    }

    /// A scalar as text (a numeric password reads as Patroni reads it).
    fn text(&self, key: &str) -> Result<Option<String>, WrongKey> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(WrongKey(format!("{}{key}: expected text", self.at))),
        }
    }

    fn path(&self, key: &str) -> Result<Option<PathBuf>, WrongKey> {
        Ok(self.text(key)?.map(PathBuf::from))
    }

    fn credentials(&self) -> Result<Credentials, WrongKey> {
        Ok(Credentials {
            username: self.text("username")?,
            password: self.text("password")?,
        })
    }

    /// `hosts`: a list of texts, or one comma-separated text.
    fn hosts(&self) -> Result<Option<Vec<String>>, WrongKey> {
        match self.get("hosts") {
            Some(Value::Sequence(items)) => items
                .iter()
                .map(|h| match h {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(WrongKey(format!(
                        "{}hosts: expected host:port texts",
                        self.at
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Ok(self.text("hosts")?.map(|hosts| {
                hosts
                    .split(',')
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
                    .collect()
            })),
            None => Ok(None),
        }
    }
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
        assert_eq!(
            f.postgresql.archive_command.as_deref(),
            Some("x --config=/c")
        );
        assert_eq!(f.postgresql.restore_command.as_deref(), Some("y"));
        let list = PatroniFile::parse("etcd3: {hosts: [a:1], host: z:9}").unwrap();
        assert_eq!(list.etcd3.unwrap().endpoints(), ["a:1"]);
        let one = PatroniFile::parse("etcd3: {host: z:9}").unwrap();
        assert_eq!(one.etcd3.unwrap().endpoints(), ["z:9"]);
        let wrong = PatroniFile::parse("scope: x\netcd3: {hosts: [1]}").unwrap_err();
        assert_eq!(wrong.to_string(), "etcd3.hosts: expected host:port texts");
        assert_eq!(
            PatroniFile::parse("scope: [a]").unwrap_err().to_string(),
            "scope: expected text"
        );
        assert!(PatroniFile::parse("- a").is_err());
        assert!(PatroniFile::parse("").is_ok());
    }
}
