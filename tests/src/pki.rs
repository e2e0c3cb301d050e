//! A throwaway PKI made with openssl: a CA, one server certificate for
//! every service on the test addresses, a client certificate, and a rogue
//! CA with its own client certificate for the refusals.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::uid_of;

/// The addresses the server certificate is valid for.
pub const SERVER_IPS: [&str; 4] = ["127.0.0.1", "127.0.0.11", "127.0.0.12", "127.0.0.13"];

pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub rogue_ca: PathBuf,
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "400",
            "-subj",
            &format!("/CN=pgherd test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

fn make_cert(dir: &Path, ca: &str, name: &str, subject: &str, extensions: &str) {
    make_cert_for_days(dir, ca, name, subject, extensions, "400");
}

/// A certificate valid `days` from now (negative: expired that long ago).
fn make_cert_for_days(
    dir: &Path,
    ca: &str,
    name: &str,
    subject: &str,
    extensions: &str,
    days: &str,
) {
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), extensions).expect("write the extensions file");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ],
    );
    openssl(
        dir,
        &[
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
            &ext,
        ],
    );
}

/// A server certificate `name` (.pem, .key) for the test addresses, signed
/// by the CA in `dir`.
fn make_server_cert(dir: &Path, name: &str) {
    let sans: Vec<String> = SERVER_IPS.iter().map(|ip| format!("IP:{ip}")).collect();
    make_cert(
        dir,
        "ca",
        name,
        "/CN=127.0.0.1",
        &format!(
            "subjectAltName={}\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n",
            sans.join(",")
        ),
    );
}

/// Every file of `dir` readable by postgres, keys 0600.
fn give_to_postgres(dir: &Path) {
    let postgres = uid_of("postgres");
    for entry in std::fs::read_dir(dir)
        .expect("list the PKI directory")
        .flatten()
    {
        let p = entry.path();
        let key = p.extension().is_some_and(|e| e == "key");
        std::fs::set_permissions(
            &p,
            std::fs::Permissions::from_mode(if key { 0o600 } else { 0o644 }),
        )
        .expect("chmod");
        std::os::unix::fs::chown(&p, Some(postgres), Some(postgres)).expect("chown");
    }
}

impl Pki {
    /// A server certificate of the CA that expired yesterday, and its key.
    pub fn expired_server(&self) -> (PathBuf, PathBuf) {
        let dir = self.ca.parent().expect("the PKI directory");
        make_cert_for_days(
            dir,
            "ca",
            "expired",
            "/CN=127.0.0.1",
            "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
            "-1",
        );
        give_to_postgres(dir);
        (dir.join("expired.pem"), dir.join("expired.key"))
    }

    /// A certificate of the CA for both ends of a TLS connection: CommonName
    /// `cn` (what pgBackRest's `tls-server-auth` authorizes) and the DNS
    /// name `dns` (what a client checks); its .pem and .key, postgres's.
    pub fn named(&self, cn: &str, dns: &str) -> (PathBuf, PathBuf) {
        let dir = self.ca.parent().expect("the PKI directory");
        make_cert(
            dir,
            "ca",
            cn,
            &format!("/CN={cn}"),
            &format!(
                "subjectAltName=DNS:{dns}\nextendedKeyUsage=serverAuth,clientAuth\n\
                 basicConstraints=CA:FALSE\n"
            ),
        );
        give_to_postgres(dir);
        (dir.join(format!("{cn}.pem")), dir.join(format!("{cn}.key")))
    }

    /// A new server certificate and key from the same CA, written over
    /// the current ones at the same paths (a rotation); the new
    /// certificate's serial number.
    pub fn rotate_server(&self) -> String {
        let dir = self.ca.parent().expect("the PKI directory");
        make_server_cert(dir, "server-next");
        give_to_postgres(dir);
        std::fs::copy(dir.join("server-next.pem"), &self.server_cert)
            .expect("copy the certificate");
        std::fs::copy(dir.join("server-next.key"), &self.server_key).expect("copy the key");
        serial(&self.server_cert)
    }
}

/// The serial number of a certificate, as openssl prints it.
pub fn serial(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(cert)
        .output()
        .expect("run openssl");
    serial_of(&out.stdout)
}

/// The serial number of the certificate a server presents at `address`
/// (`starttls`: PostgreSQL's protocol), or an empty string.
pub fn served_serial(address: &str, starttls: bool) -> String {
    let starttls = if starttls { "-starttls postgres" } else { "" };
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client {starttls} -connect {address} </dev/null 2>/dev/null \
             | openssl x509 -noout -serial 2>/dev/null"
        ))
        .output()
        .expect("run openssl");
    serial_of(&out.stdout)
}

fn serial_of(openssl_output: &[u8]) -> String {
    String::from_utf8_lossy(openssl_output)
        .trim()
        .trim_start_matches("serial=")
        .to_string()
}

impl Pki {
    /// Creates the files in `dir`, readable by postgres (keys 0600).
    pub fn create(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("create the PKI directory");
        make_ca(dir, "ca");
        make_ca(dir, "rogue-ca");
        make_server_cert(dir, "server");
        // No CommonName: etcd 3.4 refuses requests through its gateway
        // (Patroni's way in) from a certificate with one once auth is on.
        let client_ext = "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\nsubjectAltName=DNS:pgherd-client\n";
        make_cert(dir, "ca", "client", "/O=pgherd test client", client_ext);
        make_cert(
            dir,
            "rogue-ca",
            "rogue",
            "/O=pgherd rogue client",
            client_ext,
        );
        give_to_postgres(dir);
        Pki {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            rogue_ca: dir.join("rogue-ca.pem"),
            rogue_cert: dir.join("rogue.pem"),
            rogue_key: dir.join("rogue.key"),
        }
    }
}
