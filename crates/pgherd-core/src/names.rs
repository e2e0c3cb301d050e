//! Validated names and addresses: what may become part of a path, a key in
//! etcd or a host:port, checked once at the edge.

use std::fmt;

/// A name that ends up in paths and DCS keys: instance, node, cluster.
/// Letters, digits, `-` and `_`; at most 63 characters; never `..` or `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    pub fn parse(what: &str, s: &str) -> Result<Name, String> {
        if s.is_empty() {
            return Err(format!("{what} must not be empty"));
        }
        if s.len() > 63 {
            return Err(format!(
                "{what} {:?} is {} characters long; at most 63 are allowed",
                truncate(s),
                s.len()
            ));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "{what} {s:?} contains {bad:?}; use only letters, digits, '-' and '_'"
            ));
        }
        Ok(Name(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(20).collect::<String>() + "..."
}

/// A PostgreSQL major version: "15", "16", ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgVersion(String);

impl PgVersion {
    pub fn parse(s: &str) -> Result<PgVersion, String> {
        let ok = !s.is_empty() && s.len() <= 3 && s.chars().all(|c| c.is_ascii_digit());
        match s.parse::<u32>() {
            Ok(n) if ok && (10..=99).contains(&n) => Ok(PgVersion(s.to_string())),
            _ => Err(format!(
                "PostgreSQL version must be a major version such as 15 or 16, got {s:?}"
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PgVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Authentication methods PostgreSQL knows.
pub const AUTH_METHODS: [&str; 14] = [
    "trust",
    "reject",
    "scram-sha-256",
    "md5",
    "password",
    "gss",
    "sspi",
    "ident",
    "peer",
    "ldap",
    "radius",
    "cert",
    "pam",
    "bsd",
];

/// A role name we generate SQL and pg_hba lines for: no quoting needed.
pub fn check_role_name(s: &str) -> Result<(), String> {
    let first_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok
        || s.len() > 63
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    {
        return Err(format!(
            "role name {s:?} must start with a letter or '_' and hold only letters, digits, \
             '_' and '$' (at most 63)"
        ));
    }
    Ok(())
}

/// A port number, 1 to 65535.
pub fn check_port(what: &str, port: i64) -> Result<u16, String> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{what} must be between 1 and 65535, got {port}"))
}

/// A host: a DNS name, an IPv4 address, or an IPv6 address in brackets.
pub fn check_host(what: &str, host: &str) -> Result<(), String> {
    let ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
            && !host.starts_with('-')
    };
    if ok || host == "*" || host == "0.0.0.0" {
        Ok(())
    } else {
        Err(format!(
            "{what} {host:?} is not a host name or IP address (IPv6 goes in brackets)"
        ))
    }
}

/// Splits and checks `host:port`.
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} is not host:port"));
    };
    check_host("host", host).map_err(|e| format!("{e} in {s:?}"))?;
    let port: i64 = port
        .parse()
        .map_err(|_| format!("{s:?} has no valid port after ':'"))?;
    let port = check_port("port", port).map_err(|e| format!("{e} in {s:?}"))?;
    Ok((host.to_string(), port))
}

/// Checks a time as Patroni takes it for a scheduled switchover: ISO 8601
/// date and time with a UTC offset (`2026-11-22T10:00:00+01:00`, `...Z`).
pub fn check_timestamp_with_offset(s: &str) -> Result<(), String> {
    parse_timestamp_with_offset(s).map(|_| ())
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Now, in Unix seconds (0 before 1970: a clock that wrong shows at once).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An ISO 8601 time with a UTC offset, as Unix seconds (a fraction of a
/// second is dropped).
pub fn parse_timestamp_with_offset(s: &str) -> Result<i64, String> {
    let bad = |why: &str| {
        Err(format!(
            "{s:?} is not an ISO 8601 time with a UTC offset ({why}); \
             write it like 2026-11-22T10:00:00+01:00"
        ))
    };
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 16 {
        return bad("too short");
    }
    let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return bad("the date must be YYYY-MM-DD");
    };
    if b[4] != b'-' || b[7] != b'-' || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return bad("the date must be YYYY-MM-DD");
    }
    if b[10] != b'T' && b[10] != b' ' {
        return bad("date and time are separated by T");
    }
    let (Some(hour), Some(minute)) = (digits(11..13), digits(14..16)) else {
        return bad("the time must be HH:MM[:SS]");
    };
    if b[13] != b':' || hour > 23 || minute > 59 {
        return bad("the time must be HH:MM[:SS]");
    }
    let mut rest = &s[16..];
    let mut second = 0;
    if let Some(r) = rest.strip_prefix(':') {
        let secs: String = r.chars().take_while(char::is_ascii_digit).collect();
        if secs.len() != 2 || secs.parse::<u32>().map_or(true, |v| v > 60) {
            return bad("seconds must be SS");
        }
        second = secs.parse::<u32>().unwrap_or(0);
        rest = &r[2..];
        if let Some(frac) = rest.strip_prefix('.') {
            let n = frac.chars().take_while(char::is_ascii_digit).count();
            if n == 0 {
                return bad("a fraction of a second needs digits");
            }
            rest = &frac[n..];
        }
    }
    let offset = match rest {
        "Z" | "z" => Some(0),
        o if o.starts_with('+') || o.starts_with('-') => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let o = &o[1..];
            let (h, m) = match o.len() {
                2 => (o, "00"),
                4 => (&o[..2], &o[2..]),
                5 if o.as_bytes()[2] == b':' => (&o[..2], &o[3..]),
                _ => ("x", "x"),
            };
            match (h.parse::<i64>(), m.parse::<i64>()) {
                (Ok(h), Ok(m)) if h <= 14 && m < 60 => Some(sign * (h * 3600 + m * 60)),
                _ => None,
            }
        }
        _ => None,
    };
    let Some(offset) = offset else {
        return bad("it must end with a UTC offset such as Z or +01:00");
    };
    let days = days_from_civil(i64::from(year), month, day);
    Ok(
        days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)
            - offset,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_what_could_escape_a_path() {
        for bad in ["", "../x", "a/b", "a b", "a\tb", ".", "..", "é", "a.b"] {
            assert!(Name::parse("name", bad).is_err(), "{bad:?} accepted");
        }
        let long = "x".repeat(64);
        let err = Name::parse("name", &long).unwrap_err();
        assert!(err.contains("64 characters"), "{err}");
        for good in ["main", "pg-1", "node_2", "A9"] {
            assert_eq!(Name::parse("name", good).unwrap().as_str(), good);
        }
        assert_eq!(
            Name::parse("instance name", "a/b").unwrap_err(),
            "instance name \"a/b\" contains '/'; use only letters, digits, '-' and '_'"
        );
    }

    #[test]
    fn versions_are_major_numbers() {
        assert!(PgVersion::parse("15").is_ok());
        for bad in ["", "15.2", "9", "x", "100", "-15"] {
            assert!(PgVersion::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ports_are_in_range() {
        assert_eq!(check_port("port", 5432), Ok(5432));
        assert!(check_port("port", 0).is_err());
        assert!(check_port("port", 65536).is_err());
        assert!(check_port("port", -1).is_err());
    }

    #[test]
    fn host_port_pairs_are_checked() {
        assert_eq!(
            parse_host_port("127.0.0.1:2379"),
            Ok(("127.0.0.1".into(), 2379))
        );
        assert_eq!(parse_host_port("[::1]:8008"), Ok(("[::1]".into(), 8008)));
        assert!(parse_host_port("etcd1").is_err());
        assert!(parse_host_port("etcd1:x").is_err());
        assert!(parse_host_port("bad host:1").is_err());
        assert!(parse_host_port("h:70000").is_err());
    }

    #[test]
    fn role_names_need_no_quoting() {
        assert!(check_role_name("replication").is_ok());
        assert!(check_role_name("1x").is_err());
        assert!(check_role_name("a b").is_err());
        assert!(check_role_name("a\"b").is_err());
    }

    #[test]
    fn timestamps_need_date_time_and_offset() {
        for ok in [
            "2026-11-22T10:00:00+01:00",
            "2026-11-22T10:00Z",
            "2026-11-22 10:00:00.123456-05:30",
            "2026-11-22T23:59:59+0100",
            "2026-11-22T10:00:00+02",
        ] {
            assert!(check_timestamp_with_offset(ok).is_ok(), "{ok}");
        }
        for bad in [
            "tomorrow",
            "2026-11-22",
            "2026-11-22T10:00:00",
            "2026-13-01T10:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T10:00:00+1",
            "2026-11-22T10:00:0Z",
            "2026-11-22T10:00:00.Z",
            "2026-11-22T10:00:00Zjunk",
            "２026-11-22T10:00:00Z",
        ] {
            assert!(check_timestamp_with_offset(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_with_offsets_are_unix_times() {
        assert_eq!(parse_timestamp_with_offset("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_timestamp_with_offset("2026-12-01T22:46:44+00:00"),
            Ok(1_796_165_204)
        );
        assert_eq!(
            parse_timestamp_with_offset("2026-12-01T23:46:44.25+01:00"),
            Ok(1_796_165_204)
        );
        assert_eq!(
            parse_timestamp_with_offset("2024-02-29 12:00-0130"),
            Ok(1_709_213_400)
        );
        assert!(parse_timestamp_with_offset("2026-12-01T22:46:44").is_err());
    }
}
