//! What pgherd knows about PostgreSQL, Patroni and etcd: site settings, the
//! instance manifest, Patroni's configuration, and the plans that bring a
//! host's files to what they should be.

pub mod action;
pub mod certs;
pub mod cluster;
pub mod dcs;
pub mod error;
pub mod etcd_admin;
pub mod fs;
pub mod instance;
pub mod lifecycle;
pub mod lock;
pub mod logs;
pub mod manifest;
pub mod merge;
pub mod names;
pub mod paths;
pub mod patroni_config;
pub mod patroni_file;
pub mod pg_hba;
pub mod pg_parameters;
pub mod pgbackrest;
pub mod plan;
pub mod preflight;
pub mod process;
pub mod rest;
pub mod runtime;
pub mod service;
pub mod settings;
pub mod sql;
pub mod standby;
pub mod tags;
pub mod tls_files;
pub mod versions;
pub mod wait;
pub mod yaml;

pub use error::{Error, Result};

/// Shown in place of a secret in diffs.
pub const MASK: &str = "********";

/// What to check after a TLS handshake failed: the client certificate and
/// CA files used, and the usual cause with an intermediate CA.
pub fn tls_files_note(cert: Option<&std::path::Path>, ca: Option<&std::path::Path>) -> String {
    let shown =
        |p: Option<&std::path::Path>| p.map_or("none".to_string(), |p| p.display().to_string());
    format!(
        " (client certificate {}, CA file {}: a certificate signed by an intermediate CA needs \
         the intermediate after it in the certificate file, or in the CA file of the side that \
         checks it)",
        shown(cert),
        shown(ca)
    )
}
