//! Fingerprints of the TLS files a node's Patroni and PostgreSQL read,
//! written into Patroni's configuration: a certificate, key or CA replaced
//! at the same path changes the file, so the node reloads and picks it up
//! (Patroni reloads its REST API certificate and PostgreSQL its SSL files
//! on a reload).

use std::path::{Path, PathBuf};

use serde_yaml::Value;

/// The line that carries the fingerprint of PostgreSQL's SSL files.
pub const POSTGRES_LINE: &str = "# TLS files of PostgreSQL (fingerprint): ";
/// The line that carries the fingerprint of Patroni's own TLS files.
pub const PATRONI_LINE: &str = "# TLS files of Patroni (fingerprint): ";

/// PostgreSQL's parameters that name a file it reads at a reload.
const POSTGRES_SSL_FILES: [&str; 4] = [
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_ca_file",
    "ssl_crl_file",
];

/// The header lines for a Patroni configuration `doc` (as it will be
/// written): one per program that reads TLS files, none when neither does.
pub fn header(doc: &Value) -> String {
    let text = |v: &Value| v.as_str().map(str::to_string);
    let patroni: Vec<PathBuf> = [
        &doc["restapi"]["certfile"],
        &doc["restapi"]["keyfile"],
        &doc["restapi"]["cafile"],
    ]
    .into_iter()
    .filter_map(text)
    .map(PathBuf::from)
    .collect();
    let data_dir = text(&doc["postgresql"]["data_dir"]).map(PathBuf::from);
    let postgres: Vec<PathBuf> = POSTGRES_SSL_FILES
        .iter()
        .filter_map(|k| text(&doc["postgresql"]["parameters"][*k]))
        .filter(|p| !p.is_empty())
        .map(|p| match &data_dir {
            // PostgreSQL reads relative paths from its data directory.
            Some(dir) if Path::new(&p).is_relative() => dir.join(p),
            _ => PathBuf::from(p),
        })
        .collect();
    let mut out = String::new();
    for (line, files) in [(PATRONI_LINE, patroni), (POSTGRES_LINE, postgres)] {
        if !files.is_empty() {
            out.push_str(line);
            out.push_str(&fingerprint(&files));
            out.push('\n');
        }
    }
    out
}

/// The fingerprint line of PostgreSQL's SSL files in a configuration's
/// text, if any.
pub fn postgres_line(text: &str) -> Option<&str> {
    text.lines().find(|l| l.starts_with(POSTGRES_LINE))
}

/// A digest of the files' paths and contents (a file that cannot be read
/// counts as the reason why): 16 hex digits of SHA-256.
fn fingerprint(files: &[PathBuf]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for f in files {
        ctx.update(f.as_os_str().as_encoded_bytes());
        ctx.update(b"\0");
        match std::fs::read(f) {
            Ok(bytes) => ctx.update(&bytes),
            Err(e) => ctx.update(format!("unreadable: {:?}", e.kind()).as_bytes()),
        }
        ctx.update(b"\0");
    }
    ctx.finish()
        .as_ref()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_replaced_at_the_same_path_changes_its_programs_line_only() {
        let dir = std::env::temp_dir().join(format!("pgherd-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("api.pem");
        std::fs::write(&cert, "first").unwrap();
        std::fs::write(dir.join("server.crt"), "pg").unwrap();
        let doc: Value = serde_yaml::from_str(&format!(
            "restapi: {{certfile: {}}}\npostgresql:\n  data_dir: {}\n  parameters: {{ssl: 'on', ssl_cert_file: server.crt}}\n",
            cert.display(),
            dir.display()
        ))
        .unwrap();
        let before = header(&doc);
        assert_eq!(before.lines().count(), 2, "{before}");
        assert_eq!(header(&doc), before, "the same files, the same lines");
        std::fs::write(&cert, "second").unwrap();
        let after = header(&doc);
        assert_ne!(after.lines().next(), before.lines().next());
        assert_eq!(postgres_line(&after), postgres_line(&before));
        // PostgreSQL's relative path is read from the data directory.
        std::fs::write(dir.join("server.crt"), "pg2").unwrap();
        assert_ne!(postgres_line(&header(&doc)), postgres_line(&after));
        assert_eq!(header(&serde_yaml::from_str("scope: x\n").unwrap()), "");
        std::fs::remove_dir_all(&dir).ok();
    }
}
