//! What the certificates a node's configuration names say about
//! themselves, read before anything is written: a certificate that has
//! expired, a key that is not its certificate's, or a CA that did not sign
//! it is refused with the file's name, instead of being found later by a
//! failed handshake between members.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use serde_yaml::Value;

mod der;
#[cfg(test)]
use der::{asn1_time, civil_from_days, days_from_civil};
use der::{date, validity};

/// A certificate expiring sooner than this is worth a warning.
const SOON: Duration = Duration::from_secs(30 * 24 * 3600);

/// Which side of a connection a certificate speaks for: what its extended
/// key usage must allow, when it says.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    Server,
    Client,
}

/// A certificate, its key and the CA its peers check it with, as named by
/// the keys of a Patroni configuration.
struct Named {
    what: &'static str,
    cert: (String, PathBuf),
    key: Option<(String, PathBuf)>,
    ca: Option<(String, PathBuf)>,
    side: Side,
}

/// What was found: refusals, and warnings (expiring soon, or a file whose
/// form this check does not know).
#[derive(Debug, Default, PartialEq)]
pub struct Findings {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

/// Checks the TLS files of a Patroni configuration (as it will be
/// written), now.
pub fn check_config(doc: &Value) -> Findings {
    check_config_at(doc, SystemTime::now())
}

fn check_config_at(doc: &Value, now: SystemTime) -> Findings {
    let mut out = Findings::default();
    for named in named_files(doc) {
        check_named(&named, now, &mut out);
    }
    for (key, ca) in ca_files(doc) {
        check_ca_file(&key, &ca, now, &mut out);
    }
    out
}

fn path_at(doc: &Value, keys: &[&str]) -> Option<(String, PathBuf)> {
    let v = keys.iter().try_fold(doc, |v, k| v.get(*k))?;
    let p = v.as_str().filter(|p| !p.is_empty())?;
    Some((keys.join("."), PathBuf::from(p)))
}

/// The certificate/key pairs of the configuration, each with the CA its
/// peers check it with: the REST API's (checked by pgherd and patronictl
/// with `ctl.cacert`), patronictl's client certificate (checked by the REST
/// API with `restapi.cafile`), PostgreSQL's (checked by replicas with the
/// replication role's `sslrootcert`) and the replication client's (checked
/// by PostgreSQL with `ssl_ca_file`). etcd's client certificate is checked
/// by a CA of etcd's that the configuration does not name.
fn named_files(doc: &Value) -> Vec<Named> {
    let data_dir = doc["postgresql"]["data_dir"].as_str().map(PathBuf::from);
    // PostgreSQL reads relative paths from its data directory.
    let pg = |k: &str| {
        path_at(doc, &["postgresql", "parameters", k]).map(|(key, p)| match &data_dir {
            Some(dir) if p.is_relative() => (key, dir.join(p)),
            _ => (key, p),
        })
    };
    let role = |k: &str| path_at(doc, &["postgresql", "authentication", "replication", k]);
    let candidates = [
        (
            "the REST API's certificate",
            path_at(doc, &["restapi", "certfile"]),
            path_at(doc, &["restapi", "keyfile"]),
            path_at(doc, &["ctl", "cacert"]).or_else(|| path_at(doc, &["restapi", "cafile"])),
            Side::Server,
        ),
        (
            "patronictl's client certificate",
            path_at(doc, &["ctl", "certfile"]),
            path_at(doc, &["ctl", "keyfile"]),
            path_at(doc, &["restapi", "cafile"]),
            Side::Client,
        ),
        (
            "etcd's client certificate",
            path_at(doc, &["etcd3", "cert"]),
            path_at(doc, &["etcd3", "key"]),
            None,
            Side::Client,
        ),
        (
            "PostgreSQL's certificate",
            pg("ssl_cert_file"),
            pg("ssl_key_file"),
            role("sslrootcert"),
            Side::Server,
        ),
        (
            "the replication client's certificate",
            role("sslcert"),
            role("sslkey"),
            pg("ssl_ca_file"),
            Side::Client,
        ),
    ];
    candidates
        .into_iter()
        .filter_map(|(what, cert, key, ca, side)| {
            Some(Named {
                what,
                cert: cert?,
                key,
                ca,
                side,
            })
        })
        .collect()
}

/// CA files no pair above names as its CA, checked alone.
fn ca_files(doc: &Value) -> Vec<(String, PathBuf)> {
    [
        path_at(doc, &["etcd3", "cacert"]),
        path_at(doc, &["restapi", "cafile"]),
        path_at(doc, &["ctl", "cacert"]),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The file's bytes, or nothing when it cannot be read here (it does not
/// exist, which is said elsewhere, or only its owner may read it and this
/// run is not that user's).
fn read(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

fn certificates(bytes: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(bytes)
        .filter_map(|c| c.ok())
        .collect()
}

fn check_named(n: &Named, now: SystemTime, out: &mut Findings) {
    let (cert_key, cert_path) = &n.cert;
    let Some(bytes) = read(cert_path) else {
        return;
    };
    let chain = certificates(&bytes);
    let Some(leaf) = chain.first() else {
        out.problems.push(format!(
            "{cert_key}: {} holds no certificate in PEM form (-----BEGIN CERTIFICATE-----)",
            cert_path.display()
        ));
        return;
    };
    let shown = format!("{cert_key}: {}", cert_path.display());
    if !check_validity(&shown, n.what, leaf, now, out) {
        return;
    }
    if let Some((key_key, key_path)) = &n.key {
        check_key(&shown, leaf, key_key, key_path, out);
    }
    if let Some((ca_key, ca_path)) = &n.ca {
        check_signed(&shown, &chain, n.side, (ca_key, ca_path), now, out);
    }
}

/// Refuses a certificate out of its validity, warns of one that expires
/// soon; says whether it is valid now.
fn check_validity(
    shown: &str,
    what: &str,
    cert: &CertificateDer<'_>,
    now: SystemTime,
    out: &mut Findings,
) -> bool {
    let Some(v) = validity(cert) else {
        out.warnings.push(format!(
            "{shown}: its validity dates cannot be read here; not checked"
        ));
        return true;
    };
    let now_s = unix(now);
    if now_s > v.not_after {
        out.problems.push(format!(
            "{shown}: {what} expired on {}: replace it (same path) and run again",
            date(v.not_after)
        ));
        return false;
    }
    if now_s < v.not_before {
        out.problems.push(format!(
            "{shown}: {what} is not valid before {}: check the clock of this host or of the \
             host that made it",
            date(v.not_before)
        ));
        return false;
    }
    if v.not_after < now_s + SOON.as_secs() {
        out.warnings.push(format!(
            "{shown}: {what} expires on {}: replace it (same path) before then; pgherd reloads \
             the services that read it",
            date(v.not_after)
        ));
    }
    true
}

/// Signs with the key and verifies with the certificate's public key: true
/// whatever the way either encodes the key.
fn check_key(
    shown: &str,
    cert: &CertificateDer<'_>,
    key_key: &str,
    key_path: &Path,
    out: &mut Findings,
) {
    let Some(bytes) = read(key_path) else {
        return;
    };
    let key_shown = format!("{key_key}: {}", key_path.display());
    if String::from_utf8_lossy(&bytes).contains("ENCRYPTED") {
        return; // a passphrase the program is given another way
    }
    let Ok(key) = PrivateKeyDer::from_pem_slice(&bytes) else {
        out.problems.push(format!(
            "{key_shown} holds no private key in PEM form (-----BEGIN PRIVATE KEY-----)"
        ));
        return;
    };
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return;
    };
    let Ok(signing) = rustls::crypto::ring::sign::any_supported_type(&key) else {
        out.warnings.push(format!(
            "{key_shown}: a kind of key this check does not know; not compared with {shown}"
        ));
        return;
    };
    let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    let schemes: Vec<_> = algorithms.mapping.iter().map(|(s, _)| *s).collect();
    let Some(signer) = signing.choose_scheme(&schemes) else {
        return;
    };
    let message = b"pgherd: does this key belong to this certificate?";
    let Ok(signature) = signer.sign(message) else {
        return;
    };
    let verifiers = algorithms
        .mapping
        .iter()
        .find(|(s, _)| *s == signer.scheme())
        .map(|(_, v)| *v)
        .unwrap_or_default();
    if !verifiers
        .iter()
        .any(|v| ee.verify_signature(*v, message, &signature).is_ok())
    {
        out.problems.push(format!(
            "{key_shown} is not the key of the certificate {shown}: give the key the \
             certificate was made for"
        ));
    }
}

fn check_signed(
    shown: &str,
    chain: &[CertificateDer<'_>],
    side: Side,
    (ca_key, ca_path): (&str, &Path),
    now: SystemTime,
    out: &mut Findings,
) {
    let Some(ca_bytes) = read(ca_path) else {
        return;
    };
    let cas = certificates(&ca_bytes);
    let anchors: Vec<_> = cas
        .iter()
        .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
        .collect();
    if anchors.is_empty() {
        return; // said by the check of the CA file alone
    }
    let Ok(ee) = webpki::EndEntityCert::try_from(&chain[0]) else {
        return;
    };
    let usage = match side {
        Side::Server => webpki::KeyUsage::server_auth(),
        Side::Client => webpki::KeyUsage::client_auth(),
    };
    let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    let at = UnixTime::since_unix_epoch(Duration::from_secs(unix(now)));
    let result = ee.verify_for_usage(algorithms.all, &anchors, &chain[1..], at, usage, None, None);
    let ca_shown = format!("{} ({ca_key})", ca_path.display());
    let refusal = match result {
        Ok(_) => return,
        Err(webpki::Error::UnknownIssuer) | Err(webpki::Error::InvalidSignatureForPublicKey) => {
            format!(
                "{shown} is not signed by the CA in {ca_shown}, which its peers check it \
                 with: give a certificate that CA signed, or that CA (a CA file may hold \
                 several, old and new, while certificates are replaced); a certificate signed \
                 by an intermediate CA needs the intermediate after it in the certificate file"
            )
        }
        Err(webpki::Error::CertExpired { .. }) => format!(
            "{shown}: a certificate of its chain (an intermediate CA) has expired; checked \
             with {ca_shown}"
        ),
        Err(webpki::Error::RequiredEkuNotFoundContext(_)) => format!(
            "{shown}: its extended key usage does not allow {} authentication, which it is \
             used for",
            match side {
                Side::Server => "server",
                Side::Client => "client",
            }
        ),
        Err(e) => {
            out.warnings.push(format!(
                "{shown}: its chain to {ca_shown} could not be checked here ({e:?}); the \
                 programs that read it check it"
            ));
            return;
        }
    };
    out.problems.push(refusal);
}

/// A CA file must hold a certificate that is valid now; an expired one
/// beside valid ones (a bundle during a rotation) is only worth a warning.
fn check_ca_file(key: &str, path: &Path, now: SystemTime, out: &mut Findings) {
    let Some(bytes) = read(path) else {
        return;
    };
    let shown = format!("{key}: {}", path.display());
    let cas = certificates(&bytes);
    if cas.is_empty() {
        out.problems.push(format!(
            "{shown} holds no certificate in PEM form (-----BEGIN CERTIFICATE-----)"
        ));
        return;
    }
    let now_s = unix(now);
    let ends: Vec<u64> = cas
        .iter()
        .filter_map(validity)
        .map(|v| v.not_after)
        .collect();
    let expired: Vec<u64> = ends.iter().copied().filter(|end| *end < now_s).collect();
    if !ends.is_empty() && expired.len() == ends.len() {
        out.problems.push(format!(
            "{shown}: every CA certificate in it has expired (the last on {}): give the \
             current CA",
            date(expired.iter().copied().max().unwrap_or_default())
        ));
    } else {
        for end in expired {
            out.warnings.push(format!(
                "{shown}: one of its CA certificates expired on {}: remove it from the file",
                date(end)
            ));
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
