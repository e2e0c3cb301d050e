//! The settings' cross-field rules, the files they name, their warnings,
//! duplicate keys, and the placeholders of their path patterns.

use super::*;

impl Settings {
    /// Cross-field rules that types alone cannot say.
    pub fn validate(&self) -> Result<()> {
        let mut problems: Vec<String> = Vec::new();
        self.check_etcd(&mut problems);
        self.check_restapi_and_timing(&mut problems);
        self.check_postgresql(&mut problems);
        if self.sysuser.is_empty() {
            problems.push("sysuser must not be empty".into());
        }
        self.check_pgbackrest(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidSettings(problems))
        }
    }

    /// etcd: hosts, TLS files against the protocol, login, namespace.
    fn check_etcd(&self, problems: &mut Vec<String>) {
        let etcd = &self.patroni.etcd;
        if etcd.hosts.is_empty() {
            problems.push("patroni.etcd.hosts is empty: give at least one host:port".into());
        }
        for host in &etcd.hosts {
            if let Err(e) = crate::names::parse_host_port(host) {
                problems.push(format!("patroni.etcd.hosts: {e}"));
            }
        }
        if etcd.protocol == Protocol::Http {
            for (key, set) in [
                ("cacert", etcd.cacert.is_some()),
                ("cert", etcd.cert.is_some()),
            ] {
                if set {
                    problems.push(format!(
                        "patroni.etcd.{key} is set but patroni.etcd.protocol is http: \
                         set protocol: https, or remove {key}"
                    ));
                }
            }
        }
        match (&etcd.cert, &etcd.key) {
            (Some(_), None) => {
                problems.push("patroni.etcd.cert is set without patroni.etcd.key: give both".into())
            }
            (None, Some(_)) => {
                problems.push("patroni.etcd.key is set without patroni.etcd.cert: give both".into())
            }
            _ => {}
        }
        if etcd.username.is_some() && etcd.password.is_none() {
            problems.push(
                "patroni.etcd.username is set without patroni.etcd.password: give both".into(),
            );
        }
        if etcd.password.is_some() && etcd.username.is_none() {
            problems.push(
                "patroni.etcd.password is set without patroni.etcd.username: give both".into(),
            );
        }
        if !etcd.namespace.starts_with('/') {
            problems.push(format!(
                "patroni.etcd.namespace must start with '/', got {:?}",
                etcd.namespace
            ));
        }
    }

    /// The REST API and patronictl TLS, and Patroni's timings.
    fn check_restapi_and_timing(&self, problems: &mut Vec<String>) {
        let p = &self.patroni;
        let api = &p.restapi;
        if let Some(v) = api.verify_client {
            if api.certfile.is_none() {
                problems.push(format!(
                    "patroni.restapi.verify_client is {} but patroni.restapi.certfile is not set: \
                     client verification needs the REST API to serve TLS",
                    verify_client_name(v)
                ));
            }
            if v == VerifyClient::Required {
                let ctl_ok = p
                    .ctl
                    .as_ref()
                    .is_some_and(|c| c.certfile.is_some() && c.keyfile.is_some());
                if !ctl_ok {
                    problems.push(
                        "patroni.restapi.verify_client is required but patroni.ctl.certfile and \
                         patroni.ctl.keyfile are not both set: Patroni and pgherd need a client \
                         certificate to call the REST API"
                            .into(),
                    );
                }
            }
        }
        if api.keyfile.is_some() && api.certfile.is_none() {
            problems.push(
                "patroni.restapi.keyfile is set without patroni.restapi.certfile: give both".into(),
            );
        }
        if api.certfile.is_some() && api.keyfile.is_none() {
            problems.push(
                "patroni.restapi.certfile is set without patroni.restapi.keyfile: give both".into(),
            );
        }
        if let Some(ctl) = &p.ctl {
            if ctl.certfile.is_some() != ctl.keyfile.is_some() {
                problems.push("patroni.ctl.certfile and patroni.ctl.keyfile go together".into());
            }
        }
        if p.ttl < 20 {
            problems.push(format!(
                "patroni.ttl is {} but Patroni refuses a ttl below 20",
                p.ttl
            ));
        }
        if p.loop_wait == 0 || p.retry_timeout == 0 {
            problems.push("patroni.loop_wait and patroni.retry_timeout must be positive".into());
        }
        if u64::from(p.loop_wait) + 2 * u64::from(p.retry_timeout) > u64::from(p.ttl) {
            problems.push(format!(
                "patroni.loop_wait + 2 * patroni.retry_timeout ({} + 2 * {} = {}) is above \
                 patroni.ttl ({}): a leader could lose its lock during a slow DCS call; \
                 raise ttl or lower the others",
                p.loop_wait,
                p.retry_timeout,
                u64::from(p.loop_wait) + 2 * u64::from(p.retry_timeout),
                p.ttl
            ));
        }
        if p.create_replica_methods.is_empty() {
            problems.push("patroni.create_replica_methods is empty".into());
        }
    }

    /// PostgreSQL: path patterns, version, role names, authentication methods, client TLS.
    fn check_postgresql(&self, problems: &mut Vec<String>) {
        let p = &self.patroni;
        let pg = &self.postgresql;
        for (key, pattern) in [
            ("postgresql.bindir", Some(&pg.bindir)),
            ("postgresql.datadir", Some(&pg.datadir)),
            ("postgresql.waldir", pg.waldir.as_ref()),
            ("postgresql.confdir", pg.confdir.as_ref()),
            ("postgresql.socket_directory", Some(&pg.socket_directory)),
            ("postgresql.logdir", Some(&pg.logdir)),
            ("postgresql.passfile", Some(&pg.passfile)),
            ("patroni.configpath", Some(&p.configpath)),
            ("patroni.logdir", Some(&p.logdir)),
            ("patroni.piddir", Some(&p.piddir)),
            ("patroni.pgpass", Some(&p.pgpass)),
        ] {
            let Some(pattern) = pattern else { continue };
            if let Err(e) = check_pattern(pattern) {
                problems.push(format!("{key}: {e}"));
            } else if !pattern.starts_with('/') {
                problems.push(format!("{key} must be an absolute path, got {pattern:?}"));
            }
        }
        if let Err(e) = crate::names::PgVersion::parse(&pg.default_version) {
            problems.push(format!("postgresql.default_version: {e}"));
        }
        for (key, role) in [
            ("postgresql.superuser", &pg.superuser),
            ("postgresql.replication_role", &pg.replication_role),
            ("postgresql.rewind_role", &pg.rewind_role),
        ] {
            if let Err(e) = crate::names::check_role_name(role) {
                problems.push(format!("{key}: {e}"));
            }
        }
        for (key, method) in [
            ("postgresql.auth_method", &pg.auth_method),
            ("postgresql.local_auth_method", &pg.local_auth_method),
        ] {
            if !crate::names::AUTH_METHODS.contains(&method.as_str()) {
                problems.push(format!(
                    "{key}: {method:?} is not an authentication method; known ones are {}",
                    crate::names::AUTH_METHODS.join(", ")
                ));
            }
        }
        if let Some(ssl) = &pg.client_ssl {
            if ssl.sslcert.is_some() != ssl.sslkey.is_some() {
                problems.push(
                    "postgresql.client_ssl.sslcert and postgresql.client_ssl.sslkey go together"
                        .into(),
                );
            }
            if matches!(ssl.sslmode, Some(SslMode::VerifyCa | SslMode::VerifyFull))
                && ssl.sslrootcert.is_none()
            {
                problems.push(
                    "postgresql.client_ssl.sslmode verifies the server but \
                     postgresql.client_ssl.sslrootcert is not set"
                        .into(),
                );
            }
        }
    }

    /// pgBackRest: path patterns, programs, retention, global options.
    fn check_pgbackrest(&self, problems: &mut Vec<String>) {
        let b = &self.pgbackrest;
        for (key, pattern) in [
            ("pgbackrest.configpath", &b.configpath),
            ("pgbackrest.repository.path", &b.repository.path),
            ("pgbackrest.logpath", &b.logpath),
            ("pgbackrest.lockpath", &b.lockpath),
        ] {
            if let Err(e) = check_pattern(pattern) {
                problems.push(format!("{key}: {e}"));
            } else if !pattern.starts_with('/') {
                problems.push(format!("{key} must be an absolute path, got {pattern:?}"));
            }
        }
        if !b.execpath.is_absolute() {
            problems.push(format!(
                "pgbackrest.execpath must be an absolute path, got {:?}",
                b.execpath.display().to_string()
            ));
        }
        if b.repository.retention_full == 0 {
            problems.push("pgbackrest.repository.retention_full must be at least 1".into());
        }
        if let Some(h) = &b.repository.host {
            let name_ok = !h.name.is_empty()
                && h.name.parse::<std::net::IpAddr>().is_err()
                && h.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if !name_ok {
                problems.push(format!(
                    "pgbackrest.repository.host.name: {:?} is not a host name: pgBackRest \
                     checks the repository host's certificate against the name it connects to, \
                     never an address, so give the name its certificate carries (and that \
                     resolves on every member)",
                    h.name
                ));
            }
            if h.port == 0 {
                problems.push("pgbackrest.repository.host.port must be 1-65535".into());
            }
            for (key, path) in [
                ("cafile", &h.cafile),
                ("certfile", &h.certfile),
                ("keyfile", &h.keyfile),
            ] {
                if !path.is_absolute() {
                    problems.push(format!(
                        "pgbackrest.repository.host.{key} must be an absolute path, got {:?}",
                        path.display().to_string()
                    ));
                }
            }
        }
        for (key, value) in &b.global_options {
            if PGBACKREST_OWN_OPTIONS.contains(&key.as_str())
                || key.starts_with("pg1-")
                || key == "stanza"
            {
                problems.push(format!(
                    "pgbackrest.global_options.{key} is written by pgherd itself: remove it"
                ));
            } else if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                problems.push(format!(
                    "pgbackrest.global_options: {key:?} is not a pgBackRest option name \
                     (lowercase letters, digits and -)"
                ));
            }
            if value.contains('\n') || value.contains('\r') {
                problems.push(format!("pgbackrest.global_options.{key} must be one line"));
            }
        }
    }
}

impl Settings {
    /// The TLS files the settings name that do not exist on this host,
    /// each with its key; an instance is not configured to use them.
    pub fn missing_files(&self) -> Vec<String> {
        let p = &self.patroni;
        let ctl = p.ctl.clone().unwrap_or_default();
        let ssl = self.postgresql.client_ssl.clone().unwrap_or_default();
        let named: [(&str, &Option<PathBuf>); 13] = [
            ("patroni.etcd.cacert", &p.etcd.cacert),
            ("patroni.etcd.cert", &p.etcd.cert),
            ("patroni.etcd.key", &p.etcd.key),
            ("patroni.restapi.cafile", &p.restapi.cafile),
            ("patroni.restapi.certfile", &p.restapi.certfile),
            ("patroni.restapi.keyfile", &p.restapi.keyfile),
            ("patroni.ctl.certfile", &ctl.certfile),
            ("patroni.ctl.keyfile", &ctl.keyfile),
            ("patroni.ctl.cacert", &ctl.cacert),
            ("postgresql.client_ssl.sslrootcert", &ssl.sslrootcert),
            ("postgresql.client_ssl.sslcert", &ssl.sslcert),
            ("postgresql.client_ssl.sslkey", &ssl.sslkey),
            (
                "postgresql.pg_hba_template",
                &self.postgresql.pg_hba_template,
            ),
        ];
        let repository = self.pgbackrest.repository.host.as_ref();
        let repository: Vec<(&str, Option<&PathBuf>)> = vec![
            (
                "pgbackrest.repository.host.cafile",
                repository.map(|h| &h.cafile),
            ),
            (
                "pgbackrest.repository.host.certfile",
                repository.map(|h| &h.certfile),
            ),
            (
                "pgbackrest.repository.host.keyfile",
                repository.map(|h| &h.keyfile),
            ),
        ];
        named
            .iter()
            .map(|(key, path)| (*key, path.as_ref()))
            .chain(repository)
            .filter_map(|(key, path)| {
                let path = path?;
                (!path.exists()).then(|| format!("{key}: {} does not exist", path.display()))
            })
            .collect()
    }

    /// Combinations that work but may not do what the reader expects.
    /// `etcd_login` says whether the instance or task gives etcd credentials.
    pub fn warnings(&self, etcd_login: bool) -> Vec<String> {
        let etcd = &self.patroni.etcd;
        let mut out = Vec::new();
        if (etcd_login || etcd.username.is_some()) && etcd.cert.is_some() {
            out.push(
                "etcd gets both a password and a client certificate: etcd authenticates the \
                 user by the password, the certificate only secures the connection; etcd 3.4 \
                 then refuses Patroni's requests (through its gRPC gateway) when the \
                 certificate has a CommonName, so use a client certificate without one"
                    .to_string(),
            );
        }
        out
    }
}

fn verify_client_name(v: VerifyClient) -> &'static str {
    match v {
        VerifyClient::None => "none",
        VerifyClient::Optional => "optional",
        VerifyClient::Required => "required",
    }
}

/// Keys given twice in the same block mapping of a YAML text, as
/// `patroni.ttl is given twice, on lines 4 and 13`. Flow mappings
/// (`{a: 1}`) are left to the parser.
pub fn duplicate_keys(text: &str) -> Vec<String> {
    struct Level {
        indent: usize,
        path: String,
        seen: std::collections::BTreeMap<String, usize>,
    }
    let mut out = Vec::new();
    let mut stack = vec![Level {
        indent: 0,
        path: String::new(),
        seen: Default::default(),
    }];
    let mut last_key = String::new();
    // Inside a block scalar (`|`, `>`): lines indented past this are text.
    let mut scalar_above: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let body = raw.trim_start_matches(' ');
        let mut indent = raw.len() - body.len();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        if let Some(above) = scalar_above {
            if indent > above {
                continue;
            }
            scalar_above = None;
        }
        let mut content = body;
        while let Some(item) = content.strip_prefix("- ") {
            // A sequence item opens a mapping of its own.
            indent += 2;
            stack.retain(|l| l.indent < indent);
            let path = format!("{}[]", stack.last().map_or("", |l| l.path.as_str()));
            stack.push(Level {
                indent,
                path,
                seen: Default::default(),
            });
            content = item.trim_start_matches(' ');
            indent += item.len() - content.len();
        }
        stack.retain(|l| l.indent <= indent);
        if stack.last().is_some_and(|l| l.indent < indent) {
            stack.push(Level {
                indent,
                path: last_key.clone(),
                seen: Default::default(),
            });
        }
        let Some((key, value)) = content.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if !(value.is_empty() || content[key.len() + 1..].starts_with([' ', '\t'])) {
            continue;
        }
        let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
        if key.is_empty() || key.contains(['{', '[', '#']) {
            continue;
        }
        let Some(level) = stack.last_mut() else {
            continue;
        };
        let path = if level.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", level.path)
        };
        if let Some(first) = level.seen.insert(key.to_string(), line_no) {
            out.push(format!(
                "{path} is given twice, on lines {first} and {line_no}: keep one"
            ));
        }
        if value.starts_with('|') || value.starts_with('>') {
            scalar_above = Some(indent);
        }
        last_key = path;
    }
    out
}

/// The placeholders a path pattern may hold.
const PLACEHOLDERS: [&str; 2] = ["{version}", "{name}"];

fn check_pattern(pattern: &str) -> std::result::Result<(), String> {
    let mut rest = pattern;
    while let Some(start) = rest.find('{') {
        let tail = &rest[start..];
        let Some(end) = tail.find('}') else {
            return Err(format!("unclosed '{{' in {pattern:?}"));
        };
        let placeholder = &tail[..=end];
        if !PLACEHOLDERS.contains(&placeholder) {
            return Err(format!(
                "unknown placeholder {placeholder} in {pattern:?}; known ones are {}",
                PLACEHOLDERS.join(", ")
            ));
        }
        rest = &tail[end + 1..];
    }
    Ok(())
}

/// Fills `{version}` and `{name}` in a settings pattern.
pub fn expand(pattern: &str, version: &str, name: &str) -> String {
    pattern
        .replace("{version}", version)
        .replace("{name}", name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        match Settings::from_yaml(yaml, "test").and_then(|s| s.validate().map(|_| s)) {
            Ok(_) => Vec::new(),
            Err(Error::InvalidSettings(p)) => p,
            Err(e) => vec![e.to_string()],
        }
    }

    fn assert_one(yaml: &str, needle: &str) {
        let p = problems(yaml);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains(needle), "{p:?} lacks {needle:?}");
    }

    #[test]
    fn a_repository_host_is_a_name_with_absolute_tls_files() {
        let host = |name: &str, extra: &str| {
            format!(
                "pgbackrest:\n  repository:\n    host:\n      name: {name}\n      \
                 cafile: /tls/ca.pem\n      certfile: /tls/m.pem\n      keyfile: /tls/m.key\n{extra}"
            )
        };
        assert_eq!(
            problems(&host("backup1.example.net", "")),
            Vec::<String>::new()
        );
        let s = Settings::from_yaml(&host("backup1", ""), "t").unwrap();
        assert_eq!(s.pgbackrest.repository.host.unwrap().port, 8432);
        assert_one(&host("10.0.0.9", ""), "never an address");
        assert_one(&host("backup_1", ""), "is not a host name");
        assert_one(&host("b", "      port: 0\n"), "port must be 1-65535");
        assert_one(
            &host("b", "").replace("/tls/m.key", "m.key"),
            "host.keyfile must be an absolute path",
        );
        // Every field but the port is needed.
        assert!(!problems(
            "pgbackrest:\n  repository:\n    host:\n      name: b\n      cafile: /c\n"
        )
        .is_empty());
        assert_one(
            "pgbackrest:\n  global_options:\n    repo1-host: b\n",
            "written by pgherd itself",
        );
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(problems(""), Vec::<String>::new());
        Settings::default().validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let p = problems("patroni:\n  etcd:\n    hots: [a]\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("patroni.etcd"), "{p:?}");
        assert!(p[0].contains("unknown field `hots`"), "{p:?}");
    }

    #[test]
    fn etcd_tls_files_need_https() {
        assert_one(
            "patroni:\n  etcd:\n    cacert: /ca.pem\n",
            "patroni.etcd.cacert is set but patroni.etcd.protocol is http",
        );
        let p = problems("patroni:\n  etcd:\n    cert: /c.pem\n    key: /k.pem\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("patroni.etcd.cert is set but"));
        assert!(problems(
            "patroni:\n  etcd:\n    protocol: https\n    cacert: /ca.pem\n    cert: /c\n    key: /k\n"
        )
        .is_empty());
    }

    #[test]
    fn etcd_cert_needs_key() {
        assert_one(
            "patroni:\n  etcd:\n    protocol: https\n    cert: /c.pem\n",
            "patroni.etcd.cert is set without patroni.etcd.key",
        );
        assert_one(
            "patroni:\n  etcd:\n    protocol: https\n    key: /k.pem\n",
            "patroni.etcd.key is set without patroni.etcd.cert",
        );
    }

    #[test]
    fn etcd_username_needs_password() {
        assert_one(
            "patroni:\n  etcd:\n    username: patroni\n",
            "patroni.etcd.username is set without patroni.etcd.password",
        );
    }

    #[test]
    fn verify_client_needs_restapi_certfile() {
        assert_one(
            "patroni:\n  restapi:\n    verify_client: optional\n",
            "patroni.restapi.verify_client is optional but patroni.restapi.certfile is not set",
        );
    }

    #[test]
    fn verify_client_required_needs_ctl_certs() {
        let tls = "patroni:\n  restapi:\n    certfile: /c\n    keyfile: /k\n    verify_client: required\n";
        assert_one(tls, "patroni.ctl.certfile and patroni.ctl.keyfile");
        let with_ctl = format!("{tls}  ctl:\n    certfile: /cc\n    keyfile: /ck\n");
        assert!(problems(&with_ctl).is_empty(), "{:?}", problems(&with_ctl));
    }

    #[test]
    fn ttl_below_twenty_is_refused() {
        assert_one(
            "patroni:\n  ttl: 15\n  loop_wait: 1\n  retry_timeout: 2\n",
            "patroni.ttl is 15",
        );
    }

    #[test]
    fn loop_wait_and_retries_must_fit_in_ttl() {
        assert_one(
            "patroni:\n  ttl: 20\n  loop_wait: 10\n  retry_timeout: 10\n",
            "(10 + 2 * 10 = 30) is above patroni.ttl (20)",
        );
        assert!(problems("patroni:\n  ttl: 20\n  loop_wait: 2\n  retry_timeout: 5\n").is_empty());
    }

    #[test]
    fn patterns_know_their_placeholders() {
        assert_one(
            "postgresql:\n  datadir: /pg/{version}/{cluster}\n",
            "postgresql.datadir: unknown placeholder {cluster}",
        );
        assert_one(
            "patroni:\n  configpath: etc/{name}.yaml\n",
            "patroni.configpath must be an absolute path",
        );
    }

    #[test]
    fn enums_name_their_choices() {
        let p = problems("patroni:\n  restapi:\n    verify_client: sometimes\n");
        assert!(p[0].contains("unknown variant `sometimes`"), "{p:?}");
        assert!(p[0].contains("optional"), "{p:?}");
    }

    #[test]
    fn duplicate_keys_are_named_with_both_lines() {
        let text = "postgresql:\n  datadir: /srv/x\npatroni:\n  ttl: 30\n  etcd:\n    hosts: [a:1]\n\
                    \n  # a comment\n  overrides:\n    log: |\n      ttl: 1\n      ttl: 2\n  ttl: 40\n";
        assert_eq!(
            duplicate_keys(text),
            vec!["patroni.ttl is given twice, on lines 4 and 13: keep one"]
        );
        let lists = "a:\n  - name: x\n    v: 1\n  - name: y\n    v: 2\nb: {c: 1, c: 2}\n";
        assert!(
            duplicate_keys(lists).is_empty(),
            "{:?}",
            duplicate_keys(lists)
        );
        let err = Settings::from_yaml("sysuser: a\nsysuser: b\n", "s.yaml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "settings from s.yaml: sysuser is given twice, on lines 1 and 2: keep one"
        );
    }

    #[test]
    fn authentication_methods_must_be_known() {
        assert_one(
            "postgresql:\n  auth_method: scram\n",
            "postgresql.auth_method: \"scram\" is not an authentication method",
        );
    }

    #[test]
    fn all_problems_are_reported_together() {
        let p = problems(
            "patroni:\n  ttl: 10\n  etcd:\n    cacert: /x\n    username: u\n  restapi:\n    verify_client: required\n",
        );
        assert!(p.len() >= 4, "{p:?}");
    }

    #[test]
    fn client_ssl_verification_needs_a_root_certificate() {
        assert_one(
            "postgresql:\n  client_ssl:\n    sslmode: verify-ca\n",
            "postgresql.client_ssl.sslrootcert is not set",
        );
        assert_one(
            "postgresql:\n  client_ssl:\n    sslmode: require\n    sslcert: /c\n",
            "sslcert and postgresql.client_ssl.sslkey go together",
        );
    }

    #[test]
    fn missing_tls_files_are_named_with_their_key() {
        let s = Settings::from_yaml(
            "patroni:\n  restapi:\n    certfile: /nonexistent/api.pem\n    keyfile: /etc/hostname\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            s.missing_files(),
            vec!["patroni.restapi.certfile: /nonexistent/api.pem does not exist"]
        );
        assert!(Settings::default().missing_files().is_empty());
    }

    #[test]
    fn password_and_certificate_for_etcd_warn() {
        let s = Settings::from_yaml(
            "patroni:\n  etcd:\n    protocol: https\n    cert: /c\n    key: /k\n",
            "t",
        )
        .unwrap();
        assert!(s.warnings(false).is_empty());
        assert_eq!(s.warnings(true).len(), 1);
        assert!(s.warnings(true)[0].contains("authenticates the user by the password"));
    }

    #[test]
    fn expand_fills_placeholders() {
        assert_eq!(
            expand("/var/lib/postgresql/{version}/{name}", "15", "main"),
            "/var/lib/postgresql/15/main"
        );
    }
}
