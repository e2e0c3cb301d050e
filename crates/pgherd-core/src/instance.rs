//! One PostgreSQL + Patroni node on this host: its wanted files, the plan
//! that gets them there, and what the module reports about it.

use crate::error::Result;
use crate::fs::{lookup_owner, running_as_root, Owner};
use crate::manifest::InstanceManifest;
use crate::paths::InstancePaths;
use crate::patroni_config::render_patroni_config;
use crate::pgbackrest::PgBackRest;
use crate::plan::{Content, DesiredDir, DesiredFile, FileKind, Plan};
use crate::settings::Settings;

/// Escapes a pgpass field (`\` and `:`).
fn pgpass_field(s: &str) -> String {
    s.replace('\\', "\\\\").replace(':', "\\:")
}

/// The instance's client password file: superuser and replication entries
/// for this instance's port. `None` when no password is given.
/// Whether the instance has a client password file: a password is given.
pub fn has_passfile(m: &InstanceManifest) -> bool {
    m.surole_password.is_some() || m.replrole_password.is_some()
}

pub fn render_passfile(settings: &Settings, m: &InstanceManifest) -> Option<String> {
    let pg = &settings.postgresql;
    let mut lines = Vec::new();
    if let Some(pw) = &m.surole_password {
        lines.push(format!(
            "*:{}:*:{}:{}",
            m.port,
            pgpass_field(&pg.superuser),
            pgpass_field(pw)
        ));
    }
    if let Some(pw) = &m.replrole_password {
        lines.push(format!(
            "*:{}:replication:{}:{}",
            m.port,
            pgpass_field(&pg.replication_role),
            pgpass_field(pw)
        ));
    }
    if lines.is_empty() {
        return None;
    }
    Some(format!(
        "# pgpass of {} (cluster {}), written by pgherd\n{}\n",
        m.qualified_name(),
        m.cluster,
        lines.join("\n")
    ))
}

/// The directories an instance needs before Patroni starts.
pub fn desired_dirs(paths: &InstancePaths, owner: Option<Owner>) -> Vec<DesiredDir> {
    let mut dirs = Vec::new();
    let mut add = |p: &std::path::Path, mode| {
        dirs.push(DesiredDir {
            path: p.to_path_buf(),
            mode,
            owner,
        })
    };
    // initdb and pg_basebackup create the data and WAL directories
    // themselves, empty and 0700: only their parents are ours.
    if let Some(parent) = paths.data_dir.parent() {
        add(parent, 0o750);
    }
    if let Some(parent) = paths.wal_dir.as_ref().and_then(|w| w.parent()) {
        add(parent, 0o750);
    }
    // Patroni writes PostgreSQL's configuration there.
    if let Some(conf) = &paths.conf_dir {
        add(conf, 0o755);
    }
    // Clients of other OS users connect through the socket directory.
    add(&paths.socket_dir, 0o755);
    add(&paths.pg_log_dir, 0o750);
    add(&paths.patroni_log_dir, 0o750);
    if let Some(parent) = paths.patroni_pgpass.parent() {
        add(parent, 0o750);
    }
    if let Some(parent) = paths.pid_file.parent() {
        add(parent, 0o750);
    }
    if let Some(b) = &paths.pgbackrest {
        if b.local_repository {
            add(&b.repository, 0o750);
        }
        add(&b.log_dir, 0o750);
        add(&b.lock_dir, 0o750);
        if let Some(parent) = b.config.parent() {
            add(parent, 0o750);
        }
    }
    dirs
}

/// The files pgherd writes for an instance, with their modes.
pub fn desired_files(
    settings: &Settings,
    m: &InstanceManifest,
    paths: &InstancePaths,
    owner: Option<Owner>,
) -> Result<Vec<DesiredFile>> {
    let mut files = vec![DesiredFile {
        path: paths.config.clone(),
        content: Content(render_patroni_config(settings, m, paths)?.into_bytes()),
        mode: 0o600,
        kind: FileKind::Yaml,
        owner,
    }];
    if let Some(text) = render_passfile(settings, m) {
        files.push(DesiredFile {
            path: paths.passfile.clone(),
            content: Content(text.into_bytes()),
            mode: 0o600,
            kind: FileKind::Pgpass,
            owner,
        });
    }
    // A configuration directory of postgresql-common's layout: the data
    // directory for pg_lsclusters and pg_ctlcluster (Patroni's own
    // postgresql.conf includes this base file), and start.conf saying that
    // no postgresql@ unit starts the instance: Patroni does.
    if let Some(conf) = &paths.conf_dir {
        let plain = |name: &str, text: String| DesiredFile {
            path: conf.join(name),
            content: Content(text.into_bytes()),
            mode: 0o644,
            kind: FileKind::Plain,
            owner,
        };
        files.push(plain(
            "postgresql.base.conf",
            format!(
                "# Written by pgherd: Patroni's postgresql.conf includes this file.\n\
                 data_directory = '{}'\n",
                paths.data_dir.display().to_string().replace('\'', "''")
            ),
        ));
        files.push(plain(
            "start.conf",
            "# Written by pgherd: Patroni starts and stops this instance.\nmanual\n".into(),
        ));
    }
    if let Some(b) = PgBackRest::for_instance(settings, m, paths, None) {
        files.push(DesiredFile {
            path: b.config.clone(),
            content: Content(b.render_config(settings, m, paths).into_bytes()),
            mode: 0o600,
            kind: FileKind::Ini,
            owner,
        });
    }
    // Read by whoever runs pgherd (the module, the `pgherd` command), not
    // by Patroni: it stays with the writer, and no service reloads for it.
    if let Some(copy) = &m.settings_copy {
        files.push(DesiredFile {
            path: copy.path.clone(),
            content: copy.content.clone(),
            mode: 0o600,
            kind: FileKind::Settings,
            owner: None,
        });
    }
    Ok(files)
}

/// Who files are given to: the settings' OS user when running as root;
/// otherwise files belong to whoever runs the module.
pub fn file_owner(settings: &Settings) -> Result<Option<Owner>> {
    if running_as_root() {
        lookup_owner(&settings.sysuser, settings.sysgroup.as_deref()).map(Some)
    } else {
        Ok(None)
    }
}

/// The plan that brings the instance's directories and files to what the
/// settings and manifest say.
pub fn plan_configuration(
    settings: &Settings,
    m: &InstanceManifest,
) -> Result<(Plan, InstancePaths)> {
    let paths = InstancePaths::new(settings, m);
    let owner = file_owner(settings)?;
    let files = desired_files(settings, m, &paths, owner)?;
    let plan = Plan::compute(&desired_dirs(&paths, owner), &files)?;
    Ok((plan, paths))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passfile_escapes_and_lists_both_roles() {
        let m = InstanceManifest {
            port: 5433,
            surole_password: Some("a:b\\c".into()),
            replrole_password: Some("r".into()),
            ..InstanceManifest::example()
        };
        let text = render_passfile(&Settings::default(), &m).unwrap();
        assert!(text.contains("\n*:5433:*:postgres:a\\:b\\\\c\n"), "{text}");
        assert!(
            text.ends_with("*:5433:replication:replication:r\n"),
            "{text}"
        );
    }

    #[test]
    fn no_password_means_no_passfile() {
        let m = InstanceManifest::example();
        assert!(render_passfile(&Settings::default(), &m).is_none());
    }
}
