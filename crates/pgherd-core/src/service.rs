//! Running Patroni: under systemd's template unit `patroni@<version>-<name>`
//! when systemd is the init system, otherwise as a detached process with a
//! pid file. Stopping always ends with no Patroni and no postmaster left.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fs::{remove_path, write_atomic, Account};
use crate::logs::instance_log_tails;
use crate::manifest::InstanceManifest;
use crate::paths::InstancePaths;
use crate::plan::{Content, DesiredFile, FileKind};
use crate::settings::{ServiceManager, Settings};
use crate::wait::{wait_until, Probe};

/// Where systemd units written by pgherd go.
pub const SYSTEMD_UNIT_DIR: &str = "/etc/systemd/system";

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Systemd,
    Process,
}

/// systemd is the init system when this directory exists (sd_booted).
pub fn detect_backend(settings: &Settings) -> Backend {
    match settings.patroni.service {
        ServiceManager::Systemd => Backend::Systemd,
        ServiceManager::Process => Backend::Process,
        ServiceManager::Auto => {
            if Path::new("/run/systemd/system").is_dir() {
                Backend::Systemd
            } else {
                Backend::Process
            }
        }
    }
}

/// Whether a process exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself
    // hold parentheses: take the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    match state {
        Some('Z') | Some('X') => {
            // Reap it if it is our child (a Patroni this run started).
            // SAFETY: waitpid with WNOHANG on a pid has no other effect.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
            false
        }
        Some(_) => true,
        None => false,
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions; errors (no such
    // process) are fine here.
    unsafe { libc::kill(pid, sig) };
}

/// Whether process `pid` is a Patroni run with configuration `config`:
/// its command line ends with the configuration's path and names patroni.
fn runs_patroni_with(pid: i32, config: &Path) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = raw.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
    let config = config.as_os_str().as_encoded_bytes();
    args.last() == Some(&config)
        && args[..args.len() - 1]
            .iter()
            .any(|a| a.windows(7).any(|w| w == b"patroni"))
}

/// A live Patroni run with `config`, found among all processes.
fn find_patroni_with(config: &Path) -> Option<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .find(|pid| runs_patroni_with(*pid, config) && process_alive(*pid))
}

/// Whether `pid` runs in the control group of systemd's `unit`.
fn in_unit_cgroup(pid: i32, unit: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|text| {
        text.lines().any(|l| {
            l.rsplit(':')
                .next()
                .is_some_and(|path| path.ends_with(&format!("/{unit}")))
        })
    })
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Patroni of one instance, and the postmaster it runs.
pub struct Service {
    pub backend: Backend,
    pub unit: String,
    pub paths: InstancePaths,
    pub execpath: PathBuf,
    /// Who Patroni runs as; `Some` when pgherd runs as root.
    pub run_as: Option<Account>,
    /// The OS user named by the settings.
    pub sysuser: String,
}

impl Service {
    pub fn new(
        settings: &Settings,
        m: &InstanceManifest,
        paths: &InstancePaths,
        run_as: Option<Account>,
    ) -> Service {
        Service {
            backend: detect_backend(settings),
            unit: format!("patroni@{}.service", m.qualified_name()),
            paths: paths.clone(),
            execpath: settings.patroni.execpath.clone(),
            run_as,
            sysuser: settings.sysuser.clone(),
        }
    }

    /// The pid of this instance's running Patroni, if any.
    pub fn patroni_pid(&self) -> Result<Option<i32>> {
        match self.backend {
            Backend::Process => {
                // Guard against a recycled pid: it must be Patroni with
                // this instance's configuration.
                if let Some(pid) = read_pid(&self.paths.pid_file) {
                    if runs_patroni_with(pid, &self.paths.config) && process_alive(pid) {
                        return Ok(Some(pid));
                    }
                }
                // No pid file, or a stale one: a run killed between
                // starting Patroni and writing its pid leaves Patroni
                // running all the same. Find it rather than start a second.
                Ok(find_patroni_with(&self.paths.config))
            }
            Backend::Systemd => {
                // Patroni with this configuration in the unit's control
                // group: read from /proc, without systemctl's 100 ms.
                if let Some(pid) = find_patroni_with(&self.paths.config)
                    .filter(|pid| in_unit_cgroup(*pid, &self.unit))
                {
                    return Ok(Some(pid));
                }
                let out = systemctl(&["show", "-p", "MainPID", "--value", &self.unit])?;
                let pid: i32 = out.trim().parse().unwrap_or(0);
                Ok((pid > 0 && process_alive(pid)).then_some(pid))
            }
        }
    }

    pub fn is_running(&self) -> Result<bool> {
        Ok(self.patroni_pid()?.is_some())
    }

    /// The pid of a live postmaster of this data directory.
    pub fn postmaster_pid(&self) -> Option<i32> {
        read_pid(&self.paths.data_dir.join("postmaster.pid")).filter(|p| process_alive(*p))
    }

    /// Sends SIGHUP to the postmaster: PostgreSQL rereads its (unchanged)
    /// configuration and a standby's startup process, woken, retries
    /// streaming at once instead of after `wal_retrieve_retry_interval`.
    /// Returns whether there was a postmaster to signal.
    pub fn wake_postmaster(&self) -> bool {
        match self.postmaster_pid() {
            Some(pid) => {
                signal(pid, libc::SIGHUP);
                true
            }
            None => false,
        }
    }

    /// The systemd units pgherd manages for this instance. The
    /// distribution's `patroni@.service` (Debian's) is used when there is
    /// one, as it is when it already runs this configuration as this user;
    /// otherwise pgherd's template. A drop-in names the user and the
    /// configuration when the template does not.
    pub fn unit_files(&self) -> Vec<DesiredFile> {
        if self.backend != Backend::Systemd {
            return Vec::new();
        }
        let unit_dir = Path::new(SYSTEMD_UNIT_DIR);
        let instance = self
            .unit
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
            unit_dir.join(format!("{}.d/pgherd.conf", self.unit)),
            render_dropin(&self.sysuser, &self.execpath, &self.paths.config),
        );
        match distribution_template() {
            Some(text)
                if template_runs(
                    &text,
                    instance,
                    &self.sysuser,
                    &self.execpath,
                    &self.paths.config,
                ) =>
            {
                Vec::new()
            }
            Some(_) => vec![dropin],
            None => vec![
                plain(unit_dir.join("patroni@.service"), render_template_unit()),
                dropin,
            ],
        }
    }

    /// Starts Patroni; returns once it is launched (callers wait for the
    /// state they need).
    pub fn start(&self) -> Result<()> {
        match self.backend {
            Backend::Systemd => {
                systemctl(&["daemon-reload"])?;
                systemctl(&["enable", "--now", &self.unit]).map(|_| ())
            }
            Backend::Process => self.spawn_detached(),
        }
    }

    fn spawn_detached(&self) -> Result<()> {
        /// close_range's flag: mark close-on-exec rather than close.
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        let console = self.paths.patroni_console_log();
        let (log, err_log) = crate::process::append_log(&console, self.run_as.as_ref())?;
        let mut cmd = crate::process::command(&self.execpath, self.run_as.as_ref());
        cmd.arg(&self.paths.config).stdout(log).stderr(err_log);
        // SAFETY: setsid and close_range are async-signal-safe. setsid
        // detaches Patroni from the module's session so that it outlives
        // the module; descriptors the module inherited without close-on-exec
        // (a pipe of whatever started Ansible) must not live on in Patroni,
        // where they would keep the pipe open for as long as Patroni runs.
        // They are marked close-on-exec rather than closed: the standard
        // library reports a failed exec through one of them. Best effort:
        // kernels before 5.11 lack the flag.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                // The system call itself: C libraries older than glibc
                // 2.34, and musl, have no wrapper for it.
                libc::syscall(
                    libc::SYS_close_range,
                    3 as libc::c_uint,
                    libc::c_uint::MAX,
                    CLOSE_RANGE_CLOEXEC,
                );
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(&self.execpath, "starting Patroni", e))?;
        write_atomic(
            &self.paths.pid_file,
            format!("{}\n", child.id()).as_bytes(),
            0o644,
            self.run_as.as_ref().map(|a| a.owner),
        )
    }

    /// Stops Patroni, which stops PostgreSQL, and waits until neither runs.
    /// Past `timeout`, kills both. Returns warnings worth reporting.
    pub fn stop(&self, timeout: Duration) -> Result<Vec<String>> {
        let mut warnings = Vec::new();
        if let Some(pid) = self.patroni_pid()? {
            match self.backend {
                Backend::Systemd => {
                    systemctl(&["stop", "--no-block", &self.unit])?;
                }
                Backend::Process => signal(pid, libc::SIGTERM),
            }
            // Patroni stops PostgreSQL before it exits, except in
            // maintenance mode, where it leaves it running: that case is
            // handled below like any postmaster without Patroni.
            let gone = wait_until(
                "Patroni to stop",
                timeout,
                || {
                    if process_alive(pid) {
                        Probe::Waiting(format!(
                            "Patroni running (pid {pid}), postmaster {}",
                            self.postmaster_pid()
                                .map_or("gone".to_string(), |p| format!("running (pid {p})"))
                        ))
                    } else {
                        Probe::Ready(())
                    }
                },
                || instance_log_tails(&self.paths),
            );
            if let Err(e) = gone {
                warnings.push(format!("{e}; killed Patroni"));
                signal(pid, libc::SIGKILL);
            }
        }
        // A postmaster without Patroni (maintenance mode, Patroni killed
        // alone, or the kill above): fast shutdown, then kill.
        if let Some(pm) = self.postmaster_pid() {
            signal(pm, libc::SIGINT);
            let stopped = wait_until(
                "PostgreSQL to stop",
                timeout,
                || match self.postmaster_pid() {
                    None => Probe::Ready(()),
                    Some(p) => Probe::Waiting(format!("postmaster running (pid {p})")),
                },
                || instance_log_tails(&self.paths),
            );
            if let Err(e) = stopped {
                signal(pm, libc::SIGKILL);
                warnings.push(format!("{e}; killed postmaster {pm}"));
                wait_until(
                    "the killed postmaster to exit",
                    Duration::from_secs(10),
                    || match self.postmaster_pid() {
                        None => Probe::Ready(()),
                        Some(p) => Probe::Waiting(format!("postmaster pid {p} still there")),
                    },
                    String::new,
                )?;
            }
        }
        match self.backend {
            Backend::Process => remove_path(&self.paths.pid_file)?,
            Backend::Systemd => self.wait_unit_inactive(timeout)?,
        }
        Ok(warnings)
    }

    /// Stops Patroni alone, for a restart: in maintenance mode it leaves
    /// PostgreSQL running (the units' `KillMode=process` signals Patroni
    /// only), and the Patroni started next takes it over. Nothing is killed:
    /// a Patroni that does not exit within `timeout` is an error.
    pub fn stop_patroni_alone(&self, timeout: Duration) -> Result<()> {
        let Some(pid) = self.patroni_pid()? else {
            return Ok(());
        };
        match self.backend {
            Backend::Systemd => {
                systemctl(&["stop", "--no-block", &self.unit])?;
            }
            Backend::Process => signal(pid, libc::SIGTERM),
        }
        wait_until(
            "Patroni to stop",
            timeout,
            || {
                if process_alive(pid) {
                    Probe::Waiting(format!("Patroni running (pid {pid})"))
                } else {
                    Probe::Ready(())
                }
            },
            || instance_log_tails(&self.paths),
        )?;
        match self.backend {
            Backend::Process => remove_path(&self.paths.pid_file),
            Backend::Systemd => self.wait_unit_inactive(timeout),
        }
    }

    /// The stop was not waited for by systemctl: the unit is inactive (or
    /// failed, after a kill) before the run says so.
    fn wait_unit_inactive(&self, timeout: Duration) -> Result<()> {
        wait_until(
            &format!("{} to be inactive", self.unit),
            timeout,
            || match systemctl(&["show", "-p", "ActiveState", "--value", &self.unit]) {
                Ok(state) if matches!(state.trim(), "inactive" | "failed") => Probe::Ready(()),
                Ok(state) => Probe::Waiting(format!("the unit is {}", state.trim())),
                Err(e) => Probe::Waiting(e.to_string()),
            },
            String::new,
        )
    }

    /// Forgets the service: disables the unit and removes its drop-in.
    pub fn remove(&self) -> Result<()> {
        if self.backend == Backend::Systemd {
            systemctl(&["disable", &self.unit])?;
            let dropin = Path::new(SYSTEMD_UNIT_DIR).join(format!("{}.d", self.unit));
            remove_path(&dropin)?;
            systemctl(&["daemon-reload"])?;
        }
        remove_path(&self.paths.pid_file)
    }
}

/// How long systemd has to answer one systemctl call.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(60);

/// systemctl, which pgherd never lets wait for a job it waits for itself
/// (a stop is `--no-block`, then awaited with the run's deadline); a
/// systemd that does not answer in a minute is an error.
fn systemctl(args: &[&str]) -> Result<String> {
    let what = format!("systemctl {}", args.join(" "));
    let mut cmd = crate::process::command(Path::new("systemctl"), None);
    cmd.args(args);
    let out = crate::process::run(&mut cmd, &what, SYSTEMCTL_TIMEOUT, String::new)?;
    // `show` and `is-active` report through stdout; others fail loudly.
    if !out.status.success() && args.first() != Some(&"show") {
        return Err(Error::Other(format!("{what}: {}", out.stderr.trim())));
    }
    Ok(out.stdout)
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
    fn our_own_process_is_alive_and_a_made_up_one_is_not() {
        assert!(process_alive(std::process::id() as i32));
        assert!(!process_alive(0));
        assert!(!process_alive(i32::MAX));
    }

    #[test]
    fn a_reaped_child_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        assert!(!process_alive(pid));
    }

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
