//! The little HTTP/1.1 a REST API client needs, blocking, over a plain or
//! TLS socket: one request per connection (Patroni's server closes after
//! each answer anyway), a deadline on the whole exchange, and failures
//! sorted into what they mean to the operator.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::error::{Error, Result};
use crate::manifest::Login;

/// TLS material of a REST API client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA that signed the server certificate; the only one trusted.
    pub cafile: Option<PathBuf>,
    /// Client certificate and key, presented to a `verify_client` server.
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
}

/// Installs ring as the process's TLS provider (once).
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only when a provider is already installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Why an exchange failed, for the caller's message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// No connection: refused, unreachable, no such host.
    Connect(String),
    /// The TLS handshake failed (certificate refused, or ours missing).
    Tls(String),
    /// The deadline passed.
    Timeout,
    /// The connection broke, or the answer is not HTTP.
    Broken(String),
}

/// One request.
pub(super) struct Request<'a> {
    pub method: &'a str,
    /// `host:port`.
    pub address: &'a str,
    pub path: &'a str,
    pub auth: Option<&'a Login>,
    /// JSON.
    pub body: Option<Vec<u8>>,
}

/// A client: the TLS configuration (`None` for plain HTTP) and how long a
/// connection may take to open.
#[derive(Clone)]
pub(super) struct HttpClient {
    tls: Option<Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
}

fn read_pem(path: &Path, what: &'static str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, what, e))
}

fn tls_config(tls: &ClientTls) -> Result<rustls::ClientConfig> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &tls.cafile {
        let pem = read_pem(ca, "reading the REST API CA file")?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Other(format!("{}: not a PEM CA bundle: {e}", ca.display())))?;
        if certs.is_empty() {
            return Err(Error::Other(format!(
                "{}: not a PEM CA bundle: no certificate in it",
                ca.display()
            )));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| {
                Error::Other(format!(
                    "{}: a certificate rustls refuses: {e}",
                    ca.display()
                ))
            })?;
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    match (&tls.certfile, &tls.keyfile) {
        (Some(cert), Some(key)) => {
            let unusable = |e: &dyn std::fmt::Display| {
                Error::Other(format!(
                    "{} / {}: not a usable PEM certificate and key: {e}",
                    cert.display(),
                    key.display()
                ))
            };
            let chain = CertificateDer::pem_slice_iter(&read_pem(
                cert,
                "reading the REST API client certificate",
            )?)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| unusable(&e))?;
            let key =
                PrivateKeyDer::from_pem_slice(&read_pem(key, "reading the REST API client key")?)
                    .map_err(|e| unusable(&e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| unusable(&e))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

impl HttpClient {
    pub(super) fn new(tls: Option<&ClientTls>, connect_timeout: Duration) -> Result<HttpClient> {
        Ok(HttpClient {
            tls: tls.map(tls_config).transpose()?.map(Arc::new),
            connect_timeout,
        })
    }

    /// Sends `req` and reads the answer to its end, all within `timeout`:
    /// the status and the body.
    pub(super) fn send(
        &self,
        req: &Request<'_>,
        timeout: Duration,
    ) -> std::result::Result<(u16, Vec<u8>), Failure> {
        let deadline = Instant::now() + timeout;
        let tcp = self.connect(req.address, deadline)?;
        let head = request_head(req);
        match &self.tls {
            None => exchange(tcp, &head, req.body.as_deref(), deadline),
            Some(config) => {
                let host = req
                    .address
                    .rsplit_once(':')
                    .map_or(req.address, |(h, _)| h)
                    .trim_matches(|c| c == '[' || c == ']');
                let name = ServerName::try_from(host.to_string())
                    .map_err(|e| Failure::Tls(format!("{host} is no server name: {e}")))?;
                let conn = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|e| Failure::Tls(e.to_string()))?;
                let mut stream = rustls::StreamOwned::new(conn, tcp);
                while stream.conn.is_handshaking() {
                    set_deadline(&stream.sock, deadline)?;
                    stream
                        .conn
                        .complete_io(&mut stream.sock)
                        .map_err(|e| match e.kind() {
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                                Failure::Timeout
                            }
                            _ => Failure::Tls(e.to_string()),
                        })?;
                }
                exchange(stream, &head, req.body.as_deref(), deadline)
            }
        }
    }

    fn connect(&self, address: &str, deadline: Instant) -> std::result::Result<TcpStream, Failure> {
        let addrs: Vec<_> = address
            .to_socket_addrs()
            .map_err(|e| Failure::Connect(e.to_string()))?
            .collect();
        let mut last = Failure::Connect(format!("{address} resolves to no address"));
        for a in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Failure::Timeout);
            }
            match TcpStream::connect_timeout(&a, self.connect_timeout.min(left)) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => last = Failure::Timeout,
                Err(e) => last = Failure::Connect(e.to_string()),
            }
        }
        Err(last)
    }
}

/// The request line and headers; the connection closes after the answer.
fn request_head(req: &Request<'_>) -> Vec<u8> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\nConnection: close\r\n",
        req.method, req.path, req.address
    );
    if let Some(login) = req.auth {
        head.push_str("Authorization: Basic ");
        head.push_str(&base64(
            format!("{}:{}", login.username, login.password).as_bytes(),
        ));
        head.push_str("\r\n");
    }
    if let Some(body) = &req.body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Socket timeouts so that no read or write outlives `deadline`.
fn set_deadline(sock: &TcpStream, deadline: Instant) -> std::result::Result<(), Failure> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Failure::Timeout);
    }
    sock.set_read_timeout(Some(left))
        .and_then(|()| sock.set_write_timeout(Some(left)))
        .map_err(|e| Failure::Broken(e.to_string()))
}

trait Socket: Read + Write {
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Socket for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// What a failed read or write means. A TLS error counts as the
/// handshake's even after it: a server refusing the client's certificate
/// says so in an alert once the client's side of the handshake is done.
fn io_failure(e: std::io::Error) -> Failure {
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return Failure::Tls(tls.to_string());
    }
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Broken(e.to_string()),
    }
}

/// Writes the request, reads the answer until its length is complete or
/// the server closes.
fn exchange(
    mut sock: impl Socket,
    head: &[u8],
    body: Option<&[u8]>,
    deadline: Instant,
) -> std::result::Result<(u16, Vec<u8>), Failure> {
    set_deadline(sock.tcp(), deadline)?;
    let mut out = head.to_vec();
    out.extend_from_slice(body.unwrap_or_default());
    sock.write_all(&out).map_err(io_failure)?;
    sock.flush().map_err(io_failure)?;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(answer) = parse_answer(&got, false)? {
            return Ok(answer);
        }
        set_deadline(sock.tcp(), deadline)?;
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A TLS server that closes without saying so: the answer is
            // whatever came, judged below.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(io_failure(e)),
        }
    }
    parse_answer(&got, true)?
        .ok_or_else(|| Failure::Broken("the connection closed before the answer ended".into()))
}

/// The status and body of `raw` once complete: `None` while more is to
/// come. `closed`: the server closed the connection, which ends a body of
/// no stated length.
fn parse_answer(raw: &[u8], closed: bool) -> std::result::Result<Option<(u16, Vec<u8>)>, Failure> {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return match closed {
            false => Ok(None),
            true if raw.is_empty() => Err(Failure::Broken(
                "the server closed without answering".into(),
            )),
            true => Err(Failure::Broken("not an HTTP answer".into())),
        };
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .filter(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| Failure::Broken("not an HTTP answer".into()))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let body = &raw[end + 4..];
    if chunked {
        return match dechunk(body) {
            Some(b) => Ok(Some((status, b))),
            None if closed => Err(Failure::Broken("the answer's chunks end early".into())),
            None => Ok(None),
        };
    }
    match length {
        Some(n) if body.len() >= n => Ok(Some((status, body[..n].to_vec()))),
        Some(_) if closed => Err(Failure::Broken(
            "the connection closed before the answer ended".into(),
        )),
        Some(_) => Ok(None),
        None if closed => Ok(Some((status, body.to_vec()))),
        None => Ok(None),
    }
}

/// A chunked body decoded, once its last chunk came.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if body.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// Standard base64, for a basic authorisation header.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_authorisation_is_standard_base64() {
        let table = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("patroni:s3cr+t/?", "cGF0cm9uaTpzM2NyK3QvPw=="),
        ];
        for (plain, encoded) in table {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
    }

    #[test]
    fn answers_end_by_length_by_chunks_or_by_the_close() {
        let patroni = b"HTTP/1.0 200 OK\r\nServer: BaseHTTP/0.6\r\nContent-Length: 4\r\n\r\n{\"a\"";
        assert_eq!(parse_answer(&patroni[..30], false), Ok(None));
        assert_eq!(parse_answer(&patroni[..patroni.len() - 1], false), Ok(None));
        assert_eq!(
            parse_answer(patroni, false),
            Ok(Some((200, b"{\"a\"".to_vec())))
        );
        let chunked = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_answer(&chunked[..70], false), Ok(None));
        assert_eq!(
            parse_answer(chunked, false),
            Ok(Some((503, b"abcde".to_vec())))
        );
        let unsized_answer = b"HTTP/1.0 200 OK\r\n\r\n[]";
        assert_eq!(parse_answer(unsized_answer, false), Ok(None));
        assert_eq!(
            parse_answer(unsized_answer, true),
            Ok(Some((200, b"[]".to_vec())))
        );
        assert!(matches!(
            parse_answer(&patroni[..patroni.len() - 1], true),
            Err(Failure::Broken(_))
        ));
        assert!(matches!(
            parse_answer(b"SSH-2.0-OpenSSH\r\n\r\n", true),
            Err(Failure::Broken(m)) if m == "not an HTTP answer"
        ));
        assert!(matches!(parse_answer(b"", true), Err(Failure::Broken(_))));
    }

    #[test]
    fn the_request_closes_and_carries_its_body() {
        let login = Login {
            username: "u".into(),
            password: "p".into(),
        };
        let head = String::from_utf8(request_head(&Request {
            method: "PATCH",
            address: "10.0.0.1:8008",
            path: "/config",
            auth: Some(&login),
            body: Some(b"{}".to_vec()),
        }))
        .unwrap();
        assert_eq!(
            head,
            "PATCH /config HTTP/1.1\r\nHost: 10.0.0.1:8008\r\nAccept: */*\r\nConnection: \
             close\r\nAuthorization: Basic dTpw\r\nContent-Type: application/json\r\n\
             Content-Length: 2\r\n\r\n"
        );
    }
}
