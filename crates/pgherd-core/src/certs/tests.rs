use super::*;
use std::process::Command;

/// A directory of certificates made by openssl for one test.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("pgherd-certs-{tag}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        Pki { dir }
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn key(&self, name: &str, kind: &str) {
        let out = format!("{name}.key");
        match kind {
            "rsa" => self.openssl(&["genrsa", "-out", &out, "2048"]),
            _ => self.openssl(&[
                "genpkey",
                "-algorithm",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &out,
            ]),
        }
    }

    fn ca(&self, name: &str) {
        self.key(name, "ec");
        self.openssl(&[
            "req",
            "-x509",
            "-key",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "3650",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }

    /// A certificate signed by `ca`, valid `days` (negative: expired).
    fn cert(&self, ca: &str, name: &str, eku: &str, days: &str, kind: &str) {
        self.key(name, kind);
        self.openssl(&[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        std::fs::write(
            self.dir.join(format!("{name}.ext")),
            format!("extendedKeyUsage={eku}\nsubjectAltName=IP:127.0.0.1\n"),
        )
        .unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            days,
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }

    /// A Patroni configuration naming the REST API's certificate and key,
    /// patronictl's, and the CA files.
    fn doc(&self, api: (&str, &str), ctl: (&str, &str), ca: &str) -> Value {
        serde_yaml::from_str(&format!(
            "restapi:\n  certfile: {}\n  keyfile: {}\n  cafile: {}\nctl:\n  certfile: {}\n  \
             keyfile: {}\n  cacert: {}\npostgresql:\n  data_dir: {}\n",
            self.path(api.0),
            self.path(api.1),
            self.path(ca),
            self.path(ctl.0),
            self.path(ctl.1),
            self.path(ca),
            self.dir.display()
        ))
        .unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn one_problem(f: &Findings) -> &str {
    assert_eq!(f.problems.len(), 1, "{f:?}");
    &f.problems[0]
}

#[test]
fn certificates_that_match_their_keys_and_ca_pass_in_silence() {
    let pki = Pki::new("good");
    pki.ca("ca");
    pki.cert("ca", "api", "serverAuth", "400", "ec");
    pki.cert("ca", "ctl", "clientAuth", "400", "rsa");
    let doc = pki.doc(("api.pem", "api.key"), ("ctl.pem", "ctl.key"), "ca.pem");
    assert_eq!(check_config(&doc), Findings::default());
}

#[test]
fn a_key_of_another_certificate_is_refused_naming_both_files() {
    let pki = Pki::new("mismatch");
    pki.ca("ca");
    pki.cert("ca", "api", "serverAuth", "400", "ec");
    pki.cert("ca", "ctl", "clientAuth", "400", "rsa");
    let doc = pki.doc(("api.pem", "ctl.key"), ("ctl.pem", "api.key"), "ca.pem");
    let f = check_config(&doc);
    assert_eq!(f.problems.len(), 2, "{f:?}");
    assert!(
        f.problems[0].starts_with(&format!(
            "restapi.keyfile: {} is not the key of the certificate restapi.certfile: {}",
            pki.path("ctl.key"),
            pki.path("api.pem")
        )),
        "{f:?}"
    );
    assert!(f.problems[1].starts_with("ctl.keyfile: "), "{f:?}");
}

#[test]
fn a_certificate_another_ca_signed_is_refused_and_a_bundle_with_its_ca_is_not() {
    let pki = Pki::new("otherca");
    pki.ca("ca");
    pki.ca("other");
    pki.cert("other", "api", "serverAuth", "400", "ec");
    pki.cert("ca", "ctl", "clientAuth", "400", "ec");
    let doc = pki.doc(("api.pem", "api.key"), ("ctl.pem", "ctl.key"), "ca.pem");
    let p = one_problem(&check_config(&doc)).to_string();
    assert!(
        p.starts_with(&format!(
            "restapi.certfile: {} is not signed by the CA in {} (ctl.cacert)",
            pki.path("api.pem"),
            pki.path("ca.pem")
        )),
        "{p}"
    );
    // Both CAs in one file, as while certificates are being replaced.
    let bundle = [
        std::fs::read(pki.dir.join("ca.pem")).unwrap(),
        std::fs::read(pki.dir.join("other.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(pki.dir.join("bundle.pem"), bundle).unwrap();
    let doc = pki.doc(("api.pem", "api.key"), ("ctl.pem", "ctl.key"), "bundle.pem");
    assert_eq!(check_config(&doc), Findings::default());
}

#[test]
fn an_expired_certificate_is_refused_and_one_expiring_soon_is_a_warning() {
    let pki = Pki::new("expired");
    pki.ca("ca");
    pki.cert("ca", "api", "serverAuth", "-1", "ec");
    pki.cert("ca", "ctl", "clientAuth", "10", "ec");
    let doc = pki.doc(("api.pem", "api.key"), ("ctl.pem", "ctl.key"), "ca.pem");
    let f = check_config(&doc);
    let p = one_problem(&f);
    assert!(
        p.starts_with(&format!(
            "restapi.certfile: {}: the REST API's certificate expired on ",
            pki.path("api.pem")
        )),
        "{p}"
    );
    assert_eq!(f.warnings.len(), 1, "{f:?}");
    assert!(
        f.warnings[0].contains("patronictl's client certificate expires on"),
        "{f:?}"
    );
    // Ten years on, the CA itself has expired too.
    let later = SystemTime::now() + Duration::from_secs(3651 * 24 * 3600);
    let f = check_config_at(&doc, later);
    assert!(
        f.problems
            .iter()
            .any(|p| p.contains("every CA certificate in it has expired")),
        "{f:?}"
    );
}

#[test]
fn a_client_only_certificate_serving_the_rest_api_is_refused() {
    let pki = Pki::new("eku");
    pki.ca("ca");
    pki.cert("ca", "api", "clientAuth", "400", "ec");
    pki.cert("ca", "ctl", "clientAuth", "400", "ec");
    let doc = pki.doc(("api.pem", "api.key"), ("ctl.pem", "ctl.key"), "ca.pem");
    let p = one_problem(&check_config(&doc)).to_string();
    assert!(p.contains("does not allow server authentication"), "{p}");
}

#[test]
fn postgresql_files_are_read_from_the_data_directory_and_checked_against_the_replicas_ca() {
    let pki = Pki::new("postgres");
    pki.ca("ca");
    pki.ca("other");
    pki.cert("other", "server", "serverAuth", "400", "ec");
    let doc: Value = serde_yaml::from_str(&format!(
        "postgresql:\n  data_dir: {}\n  parameters:\n    ssl_cert_file: server.pem\n    \
         ssl_key_file: server.key\n  authentication:\n    replication:\n      sslrootcert: {}\n",
        pki.dir.display(),
        pki.path("ca.pem")
    ))
    .unwrap();
    let p = one_problem(&check_config(&doc)).to_string();
    assert!(
        p.starts_with(&format!(
            "postgresql.parameters.ssl_cert_file: {} is not signed by the CA in {} \
             (postgresql.authentication.replication.sslrootcert)",
            pki.path("server.pem"),
            pki.path("ca.pem")
        )),
        "{p}"
    );
}

#[test]
fn files_that_are_not_pem_are_named() {
    let pki = Pki::new("notpem");
    std::fs::write(pki.dir.join("junk"), "not a certificate\n").unwrap();
    let doc: Value = serde_yaml::from_str(&format!(
        "etcd3:\n  cacert: {0}\n  cert: {0}\n",
        pki.path("junk")
    ))
    .unwrap();
    let f = check_config(&doc);
    assert_eq!(
        f.problems,
        vec![
            format!(
                "etcd3.cert: {} holds no certificate in PEM form (-----BEGIN CERTIFICATE-----)",
                pki.path("junk")
            ),
            format!(
                "etcd3.cacert: {} holds no certificate in PEM form (-----BEGIN CERTIFICATE-----)",
                pki.path("junk")
            ),
        ]
    );
    // Files that cannot be read here are left to the check that they exist.
    let missing: Value = serde_yaml::from_str("restapi:\n  certfile: /nonexistent.pem\n").unwrap();
    assert_eq!(check_config(&missing), Findings::default());
}

#[test]
fn validity_dates_read_from_der_match_openssl() {
    let pki = Pki::new("dates");
    pki.ca("ca");
    let bytes = std::fs::read(pki.dir.join("ca.pem")).unwrap();
    let cert = &certificates(&bytes)[0];
    let v = validity(cert).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in"])
        .arg(pki.dir.join("ca.pem"))
        .output()
        .unwrap();
    // notAfter=2036-12-01 00:05:15Z
    let text = String::from_utf8_lossy(&out.stdout);
    let iso = text.trim().trim_start_matches("notAfter=");
    assert_eq!(
        format!("{}Z", &date(v.not_after)[..16]),
        format!("{}Z", &iso[..16])
    );
    assert_eq!(v.not_after - v.not_before, 3650 * 86_400);
}

#[test]
fn dates_convert_both_ways() {
    assert_eq!(date(0), "1970-01-01 00:00 UTC");
    assert_eq!(date(951_782_400), "2000-02-29 00:00 UTC");
    for days in [-1, 0, 59, 10_957, 20_000, 2_932_896] {
        let (y, m, d) = civil_from_days(days);
        assert_eq!(days_from_civil(y, m, d), days);
    }
    assert_eq!(asn1_time(0x17, b"491231235959Z"), Some(2_524_607_999));
    assert_eq!(asn1_time(0x17, b"500101000000Z"), None, "before 1970");
    assert_eq!(asn1_time(0x18, b"20261203000000Z"), Some(1_796_256_000));
    assert_eq!(asn1_time(0x18, b"2026120300000Z"), None);
    assert_eq!(asn1_time(0x17, b"261203000000"), None);
}
