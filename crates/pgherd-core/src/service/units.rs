//! The systemd units of Patroni's instances: the distribution's
//! `patroni@.service` (Debian's) as it is when it already runs an
//! instance's configuration as its user, else a drop-in over it, else
//! pgherd's own template and a drop-in.

use std::path::Path;

use crate::plan::{Content, DesiredFile, FileKind};

use super::SYSTEMD_UNIT_DIR;

/// Where distributions install units: Debian's `patroni@.service` is used
/// as it is when there is one.
const DISTRIBUTION_UNIT_DIRS: [&str; 2] = ["/lib/systemd/system", "/usr/lib/systemd/system"];

/// The distribution's `patroni@.service`, if there is one.
fn distribution_template() -> Option<String> {
    DISTRIBUTION_UNIT_DIRS
        .iter()
        .find_map(|d| std::fs::read_to_string(Path::new(d).join("patroni@.service")).ok())
}

/// The last value of `key=` in a unit's text, `%i` expanded to `instance`.
fn unit_value(text: &str, key: &str, instance: &str) -> Option<String> {
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().replace("%i", instance))
}

/// Whether a template unit runs `execpath config` as `user` (and has no
/// condition on another configuration file): then it needs no drop-in.
fn template_runs(text: &str, instance: &str, user: &str, execpath: &Path, config: &Path) -> bool {
    let exec = format!("{} {}", execpath.display(), config.display());
    let condition_ok = unit_value(text, "ConditionPathExists", instance)
        .is_none_or(|c| c == config.display().to_string());
    unit_value(text, "ExecStart", instance).as_deref() == Some(exec.as_str())
        && unit_value(text, "User", instance).as_deref() == Some(user)
        && condition_ok
}

/// The unit files of instance `unit` (`patroni@15-main.service`): none
/// when the distribution's template runs `execpath config` as `user`, a
/// drop-in naming them when it does not, pgherd's template and the
/// drop-in when there is no template.
pub(super) fn unit_files(
    unit: &str,
    user: &str,
    execpath: &Path,
    config: &Path,
) -> Vec<DesiredFile> {
    let unit_dir = Path::new(SYSTEMD_UNIT_DIR);
    let instance = unit
        .trim_start_matches("patroni@")
        .trim_end_matches(".service");
    let plain = |path: std::path::PathBuf, text: String| DesiredFile {
        path,
        content: Content(text.into_bytes()),
        mode: 0o644,
        kind: FileKind::Plain,
        owner: None,
    };
    let dropin = plain(
        unit_dir.join(format!("{unit}.d/pgherd.conf")),
        render_dropin(user, execpath, config),
    );
    match distribution_template() {
        Some(text) if template_runs(&text, instance, user, execpath, config) => Vec::new(),
        Some(_) => vec![dropin],
        None => vec![
            plain(unit_dir.join("patroni@.service"), render_template_unit()),
            dropin,
        ],
    }
}

/// The template unit: generic; each instance's drop-in says who and what.
pub fn render_template_unit() -> String {
    "\
# Patroni for a PostgreSQL instance <version>-<name>, written by pgherd.
# Each instance's drop-in (patroni@<version>-<name>.service.d/pgherd.conf)
# sets the user and the configuration file.
[Unit]
Description=Patroni for PostgreSQL instance %i
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecReload=/bin/kill -s HUP $MAINPID
# Patroni stops PostgreSQL itself: never let systemd kill the postmaster.
KillMode=process
TimeoutStopSec=120
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
"
    .to_string()
}

/// A drop-in over a template unit: who runs Patroni and on which
/// configuration. The empty assignments reset what a distribution's
/// template sets (its own ExecStart, a condition on its own path).
pub fn render_dropin(user: &str, execpath: &Path, config: &Path) -> String {
    format!(
        "# Written by pgherd.\n[Unit]\nConditionPathExists=\nConditionPathExists={config}\n\n\
         [Service]\nUser={user}\nGroup=\nExecStart=\nExecStart={} {config}\n",
        execpath.display(),
        config = config.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dropin_names_user_and_config() {
        let d = render_dropin(
            "postgres",
            Path::new("/usr/bin/patroni"),
            Path::new("/etc/patroni/15-main.yaml"),
        );
        assert_eq!(
            d,
            "# Written by pgherd.\n[Unit]\nConditionPathExists=\n\
             ConditionPathExists=/etc/patroni/15-main.yaml\n\n[Service]\nUser=postgres\nGroup=\n\
             ExecStart=\nExecStart=/usr/bin/patroni /etc/patroni/15-main.yaml\n"
        );
        assert!(render_template_unit().contains("KillMode=process"));
    }

    #[test]
    fn debians_template_is_used_as_it_is_when_it_runs_the_configuration() {
        let debian = "[Unit]\nConditionPathExists=/etc/patroni/%i.yml\n[Service]\nUser=postgres\n\
                      Group=postgres\nExecStart=/usr/bin/patroni /etc/patroni/%i.yml\n";
        let runs = |user: &str, exec: &str, config: &str| {
            template_runs(debian, "15-main", user, Path::new(exec), Path::new(config))
        };
        assert!(runs(
            "postgres",
            "/usr/bin/patroni",
            "/etc/patroni/15-main.yml"
        ));
        assert!(!runs(
            "postgres",
            "/usr/bin/patroni",
            "/etc/patroni/15-main.yaml"
        ));
        assert!(!runs("pg", "/usr/bin/patroni", "/etc/patroni/15-main.yml"));
        assert!(!runs(
            "postgres",
            "/opt/venv/bin/patroni",
            "/etc/patroni/15-main.yml"
        ));
    }
}
