//! pg_hba entries for Patroni's `postgresql.pg_hba`, rendered from a tera
//! template with the role names and authentication methods.

use serde::Serialize;
use tera::{Context, Tera};

use crate::error::{Error, Result};
use crate::settings::Settings;

/// The built-in template: local connections by `local_auth_method`, the
/// task's own entries, then the replication and rewind roles from anywhere
/// (members clone and rewind over TCP), all with `auth_method`.
pub const DEFAULT_TEMPLATE: &str = "\
# TYPE  DATABASE     USER  ADDRESS  METHOD
local   all          all            {{ local_auth_method }}
local   replication  all            {{ local_auth_method }}
{% for entry in entries %}{{ entry }}
{% endfor %}\
host    all          all                   127.0.0.1/32  {{ auth_method }}
host    all          all                   ::1/128       {{ auth_method }}
host    replication  {{ replication_role }}  0.0.0.0/0     {{ auth_method }}
host    replication  {{ replication_role }}  ::/0          {{ auth_method }}
host    all          {{ rewind_role }}  0.0.0.0/0     {{ auth_method }}
host    all          {{ rewind_role }}  ::/0          {{ auth_method }}
";

#[derive(Serialize)]
struct HbaContext<'a> {
    superuser: &'a str,
    replication_role: &'a str,
    rewind_role: &'a str,
    auth_method: &'a str,
    local_auth_method: &'a str,
    entries: &'a [String],
}

/// Renders the pg_hba lines: comments and blank lines dropped, spacing kept.
pub fn render_pg_hba(settings: &Settings, entries: &[String]) -> Result<Vec<String>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_template_puts_task_entries_before_the_remote_ones() {
        let lines = render_pg_hba(
            &Settings::default(),
            &["host all app 10.0.0.0/8 scram-sha-256".to_string()],
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
        let lines = render_pg_hba(&s, &["host x y z md5".into()]).unwrap();
        assert_eq!(lines, ["local all postgres trust", "host x y z md5"]);
        std::fs::write(&path, "{% for %}").unwrap();
        let err = render_pg_hba(&s, &[]).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("pg_hba template {}", path.display())),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
