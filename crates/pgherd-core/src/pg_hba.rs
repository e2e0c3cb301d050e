//! pg_hba entries for Patroni's `postgresql.pg_hba`, rendered from a tera
//! template with the role names and authentication methods.

use serde::Serialize;
use tera::{Context, Tera};

use crate::error::{Error, Result};
use crate::settings::Settings;

/// The built-in template: local connections by `local_auth_method`, the
/// task's own entries, then the replication role from this host (Patroni
/// 4 reads its own timeline over a replication connection to `localhost`
/// when PostgreSQL listens on every address; without it, a former leader
/// back from a partition stays unstreamed, its timeline unknown), then the
/// replication and rewind roles (members clone and rewind over TCP) from
/// the members' addresses when the task names them, else from anywhere,
/// all with `auth_method`.
pub const DEFAULT_TEMPLATE: &str = "\
# TYPE  DATABASE     USER  ADDRESS  METHOD
local   all          all            {{ local_auth_method }}
local   replication  all            {{ local_auth_method }}
{% for entry in entries %}{{ entry }}
{% endfor %}\
host    all          all                   127.0.0.1/32  {{ auth_method }}
host    all          all                   ::1/128       {{ auth_method }}
host    replication  {{ replication_role }}  127.0.0.1/32  {{ auth_method }}
host    replication  {{ replication_role }}  ::1/128       {{ auth_method }}
{% if member_addresses %}\
{% for a in member_addresses %}host    replication  {{ replication_role }}  {{ a }}  {{ auth_method }}
{% endfor %}\
{% for a in member_addresses %}host    all          {{ rewind_role }}  {{ a }}  {{ auth_method }}
{% endfor %}\
{% else %}\
host    replication  {{ replication_role }}  0.0.0.0/0     {{ auth_method }}
host    replication  {{ replication_role }}  ::/0          {{ auth_method }}
host    all          {{ rewind_role }}  0.0.0.0/0     {{ auth_method }}
host    all          {{ rewind_role }}  ::/0          {{ auth_method }}
{% endif %}";

/// A member's address as pg_hba.conf takes it: an IP address becomes its
/// /32 or /128 block; a CIDR block and a host name stay as they are.
pub fn member_address(entry: &str) -> Result<String, String> {
    let e = entry.trim();
    if let Ok(ip) = e.parse::<std::net::IpAddr>() {
        if ip.is_unspecified() {
            return Err(format!("{entry:?} is not one member's address"));
        }
        return Ok(format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 }));
    }
    if let Some((ip, bits)) = e.split_once('/') {
        let max = match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) => 32,
            Ok(std::net::IpAddr::V6(_)) => 128,
            Err(_) => {
                return Err(format!(
                    "{entry:?} is not an IP address, CIDR block or host name"
                ))
            }
        };
        return match bits.parse::<u8>() {
            Ok(b) if b <= max => Ok(e.to_string()),
            _ => Err(format!("{entry:?}: a CIDR block's length is 0 to {max}")),
        };
    }
    crate::names::check_host("member address", e)?;
    if e == "*" || e.starts_with('[') {
        return Err(format!(
            "{entry:?} is not one member's address (IPv6 without brackets)"
        ));
    }
    Ok(e.to_string())
}

#[derive(Serialize)]
struct HbaContext<'a> {
    superuser: &'a str,
    replication_role: &'a str,
    rewind_role: &'a str,
    auth_method: &'a str,
    local_auth_method: &'a str,
    entries: &'a [String],
    member_addresses: &'a [String],
}

/// Renders the pg_hba lines: comments and blank lines dropped, spacing
/// kept. `member_addresses` (as [`member_address`] makes them) limit where
/// the replication and rewind roles come from; empty, from anywhere.
pub fn render_pg_hba(
    settings: &Settings,
    entries: &[String],
    member_addresses: &[String],
) -> Result<Vec<String>> {
    let pg = &settings.postgresql;
    let (template, origin) = match &pg.pg_hba_template {
        Some(path) => (
            std::fs::read_to_string(path)
                .map_err(|e| Error::io(path, "reading the pg_hba template", e))?,
            path.display().to_string(),
        ),
        None => (DEFAULT_TEMPLATE.to_string(), "(built-in)".to_string()),
    };
    let ctx = HbaContext {
        superuser: &pg.superuser,
        replication_role: &pg.replication_role,
        rewind_role: &pg.rewind_role,
        auth_method: &pg.auth_method,
        local_auth_method: &pg.local_auth_method,
        entries,
        member_addresses,
    };
    let context = Context::from_serialize(&ctx).map_err(|e| Error::Template {
        origin: origin.clone(),
        msg: e.to_string(),
    })?;
    let text = Tera::one_off(&template, &context, false).map_err(|e| Error::Template {
        origin,
        msg: format!("{e:?}"),
    })?;
    Ok(text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// Connection types of a pg_hba.conf line.
const TYPES: [&str; 6] = [
    "local",
    "host",
    "hostssl",
    "hostnossl",
    "hostgssenc",
    "hostnogssenc",
];

/// The fields of a pg_hba.conf line: whitespace separates them, double
/// quotes keep one together; a `#` outside quotes starts a comment.
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            '#' if !quoted => break,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// An IPv4 address as PostgreSQL's numeric parsing takes it (also
/// shortened: `10`, `0`), or an IPv6 address; its family's mask length.
fn ip_max_len(addr: &str) -> Option<u32> {
    if addr.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some(128);
    }
    let parts: Vec<&str> = addr.split('.').collect();
    let ipv4 = parts.len() <= 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.chars().all(|c| c.is_ascii_digit()));
    ipv4.then_some(32)
}

/// Checks one pg_hba.conf line before it is written: its type, the
/// address (a CIDR mask within its family's length), the method, and the
/// options after it. What passes here, PostgreSQL checks again
/// (`pg_hba_file_rules`) once it reads the file.
pub fn check_entry(line: &str) -> std::result::Result<(), String> {
    let f = fields(line);
    let Some(kind) = f.first() else {
        return Err("the line is empty".into());
    };
    if !TYPES.contains(&kind.as_str()) {
        return Err(format!(
            "{kind:?} is not a connection type; known ones are {}",
            TYPES.join(", ")
        ));
    }
    let mut method_at = 3;
    if kind != "local" {
        let Some(address) = f.get(3) else {
            return Err(format!(
                "a {kind} line needs a database, a user, an address and a method"
            ));
        };
        match address.split_once('/') {
            Some((ip, len)) => {
                let max = ip_max_len(ip)
                    .ok_or_else(|| format!("{address}: {ip} is not an IP address"))?;
                match len.parse::<u32>() {
                    Ok(n) if n <= max => {}
                    _ => {
                        return Err(format!(
                            "{address}: the mask length must be 0 to {max} for this address"
                        ))
                    }
                }
                method_at = 4;
            }
            None if ip_max_len(address).is_some() => {
                // An address followed by its netmask.
                let mask = f.get(4).ok_or_else(|| {
                    format!("{address} needs a CIDR length (/24) or a netmask after it")
                })?;
                if ip_max_len(mask).is_none() {
                    return Err(format!(
                        "{address} needs a CIDR length (/24) or a netmask after it, not {mask:?}"
                    ));
                }
                method_at = 5;
            }
            // A host name, all, samehost, samenet, or .domain.
            None => method_at = 4,
        }
    }
    let Some(method) = f.get(method_at) else {
        return Err("the line has no authentication method".into());
    };
    if !crate::names::AUTH_METHODS.contains(&method.as_str()) {
        return Err(format!(
            "{method:?} is not an authentication method; known ones are {}",
            crate::names::AUTH_METHODS.join(", ")
        ));
    }
    if let Some(bad) = f[method_at + 1..].iter().find(|o| !o.contains('=')) {
        return Err(format!(
            "{bad:?} after the method is not an option (name=value)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_checked_as_postgresql_reads_them() {
        for good in [
            "host all app 10.0.0.0/8 scram-sha-256",
            "hostssl \"my db\" app ::1/128 cert clientcert=verify-full",
            "host all all 0/0 md5",
            "host all all 192.168.1.0 255.255.255.0 md5",
            "host all all db.example.com md5",
            "host all all samenet trust # a comment",
            "local all postgres peer map=admins",
            "host x y z md5",
        ] {
            assert_eq!(check_entry(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            (
                "host all all 10.0.0.0/99 md5",
                "mask length must be 0 to 32",
            ),
            ("host all all ::/200 md5", "0 to 128"),
            (
                "host all all 10.0.0.0/8 scram",
                "not an authentication method",
            ),
            ("hots all all 10.0.0.0/8 md5", "not a connection type"),
            ("host all all 10.0.0.1 md5", "netmask"),
            ("local all all", "no authentication method"),
            ("host all all 10.0.0.0/8 md5 extra", "not an option"),
            ("host all all", "needs a database"),
        ] {
            let e = check_entry(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn default_template_puts_task_entries_before_the_remote_ones() {
        let lines = render_pg_hba(
            &Settings::default(),
            &["host all app 10.0.0.0/8 scram-sha-256".to_string()],
            &[],
        )
        .unwrap();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["local", "all", "all", "peer"]
        );
        assert_eq!(lines[2], "host all app 10.0.0.0/8 scram-sha-256");
        assert!(lines
            .iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "host",
                    "replication",
                    "replication",
                    "0.0.0.0/0",
                    "scram-sha-256"
                ]));
        assert!(lines.iter().all(|l| !l.starts_with('#')));
    }

    #[test]
    fn members_alone_may_replicate_and_rewind_when_named() {
        let members: Vec<String> = ["10.0.0.11", "fd00::12", "10.0.1.0/24", "db3.example"]
            .iter()
            .map(|a| member_address(a).unwrap())
            .collect();
        assert_eq!(
            members,
            ["10.0.0.11/32", "fd00::12/128", "10.0.1.0/24", "db3.example"]
        );
        let lines = render_pg_hba(&Settings::default(), &[], &members).unwrap();
        let remote: Vec<Vec<&str>> = lines
            .iter()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|w| w[0] == "host" && w[2] != "all")
            .collect();
        // This host's own replication connections (Patroni's), then the
        // members'.
        let (own, remote) = remote.split_at(2);
        assert_eq!(
            own,
            [
                [
                    "host",
                    "replication",
                    "replication",
                    "127.0.0.1/32",
                    "scram-sha-256"
                ],
                [
                    "host",
                    "replication",
                    "replication",
                    "::1/128",
                    "scram-sha-256"
                ],
            ],
            "{lines:?}"
        );
        assert_eq!(remote.len(), 8, "{lines:?}");
        assert!(remote[..4]
            .iter()
            .all(|w| w[1] == "replication" && w[2] == "replication"));
        assert!(remote[4..]
            .iter()
            .all(|w| w[1] == "all" && w[2] == "rewind"));
        assert_eq!(remote[3][3], "db3.example");
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("0.0.0.0/0") || l.contains("::/0")),
            "{lines:?}"
        );
        for l in &lines {
            check_entry(l).unwrap();
        }
        for (bad, why) in [
            ("10.0.0.0/33", "0 to 32"),
            ("fd00::/129", "0 to 128"),
            ("0.0.0.0", "not one member's address"),
            ("db 3", "not a host name"),
            ("x/8", "not an IP address"),
        ] {
            let e = member_address(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_custom_template_is_read_from_its_file() {
        let dir = std::env::temp_dir().join(format!("pgherd-hba-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hba.j2");
        std::fs::write(
            &path,
            "local all {{ superuser }} trust\n{% for e in entries %}{{ e }}\n{% endfor %}",
        )
        .unwrap();
        let mut s = Settings::default();
        s.postgresql.pg_hba_template = Some(path.clone());
        let lines = render_pg_hba(&s, &["host x y z md5".into()], &[]).unwrap();
        assert_eq!(lines, ["local all postgres trust", "host x y z md5"]);
        std::fs::write(&path, "{% for %}").unwrap();
        let err = render_pg_hba(&s, &[], &[]).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("pg_hba template {}", path.display())),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
