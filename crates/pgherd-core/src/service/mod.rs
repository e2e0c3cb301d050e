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
use crate::plan::DesiredFile;
use crate::process::ExitWatch;
use crate::settings::{ServiceManager, Settings};
use crate::wait::{wait_blocking, wait_until, Probe};

mod reaper;
mod units;

pub use reaper::run_if_asked as offer_reaper;
pub use units::{render_dropin, render_template_unit};

/// Where systemd units written by pgherd go.
pub const SYSTEMD_UNIT_DIR: &str = "/etc/systemd/system";

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

/// Has `cmd` run detached: in a session of its own, so that it outlives
/// the module, and without the descriptors the module inherited without
/// close-on-exec (a pipe of whatever started Ansible), which would keep
/// that pipe open for as long as Patroni runs. They are marked
/// close-on-exec rather than closed: the standard library reports a failed
/// exec through one of them. Best effort: kernels before 5.11 lack the
/// flag.
fn detach(cmd: &mut std::process::Command) {
    /// close_range's flag: mark close-on-exec rather than close.
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: setsid and close_range are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The system call itself: C libraries older than glibc 2.34,
            // and musl, have no wrapper for it.
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
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

    /// The systemd units pgherd manages for this instance ([`units`]).
    pub fn unit_files(&self) -> Vec<DesiredFile> {
        if self.backend != Backend::Systemd {
            return Vec::new();
        }
        units::unit_files(
            &self.unit,
            &self.sysuser,
            &self.execpath,
            &self.paths.config,
        )
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
        let console = self.paths.patroni_console_log();
        let (log, err_log) = crate::process::append_log(&console, self.run_as.as_ref())?;
        let pid = if reaper::offered() {
            reaper::start(
                &self.execpath,
                &self.paths.config,
                self.run_as.as_ref(),
                |cmd| {
                    cmd.stderr(err_log);
                    detach(cmd);
                },
            )?
        } else {
            let mut cmd = crate::process::command(&self.execpath, self.run_as.as_ref());
            cmd.arg(&self.paths.config).stdout(log).stderr(err_log);
            detach(&mut cmd);
            cmd.spawn()
                .map_err(|e| Error::io(&self.execpath, "starting Patroni", e))?
                .id() as i32
        };
        write_atomic(
            &self.paths.pid_file,
            format!("{pid}\n").as_bytes(),
            0o644,
            self.run_as.as_ref().map(|a| a.owner),
        )
    }

    /// Stops Patroni, which stops PostgreSQL, and waits until neither runs.
    /// Past `timeout`, kills both. Returns warnings worth reporting.
    pub fn stop(&self, timeout: Duration) -> Result<Vec<String>> {
        let mut warnings = Vec::new();
        if let Some(pid) = self.patroni_pid()? {
            self.ask_patroni_to_stop(pid)?;
            // Patroni stops PostgreSQL before it exits, except in
            // maintenance mode, where it leaves it running: that case is
            // handled below like any postmaster without Patroni.
            if let Err(e) = self.wait_patroni_gone(pid, timeout) {
                warnings.push(format!("{e}; killed Patroni"));
                signal(pid, libc::SIGKILL);
            }
        }
        // A postmaster without Patroni (maintenance mode, Patroni killed
        // alone, or the kill above): fast shutdown, then kill.
        if let Some(pm) = self.postmaster_pid() {
            signal(pm, libc::SIGINT);
            let watch = ExitWatch::of_pid(pm);
            let stopped = wait_blocking(
                "PostgreSQL to stop",
                timeout,
                |look| match self.postmaster_pid() {
                    None => Probe::Ready(()),
                    Some(p) => {
                        watch.block(look, look);
                        Probe::Waiting(format!("postmaster running (pid {p})"))
                    }
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
        self.forget_stopped(timeout)?;
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
        self.ask_patroni_to_stop(pid)?;
        self.wait_patroni_gone(pid, timeout)?;
        self.forget_stopped(timeout)
    }

    /// Patroni `pid` asked to stop: its unit stopped (not waited for by
    /// systemctl), or SIGTERM.
    fn ask_patroni_to_stop(&self, pid: i32) -> Result<()> {
        match self.backend {
            Backend::Systemd => systemctl(&["stop", "--no-block", &self.unit]).map(|_| ()),
            Backend::Process => {
                signal(pid, libc::SIGTERM);
                Ok(())
            }
        }
    }

    /// Waits until Patroni `pid` exited, telling what the postmaster does
    /// meanwhile.
    fn wait_patroni_gone(&self, pid: i32, timeout: Duration) -> Result<()> {
        let watch = ExitWatch::of_pid(pid);
        wait_blocking(
            "Patroni to stop",
            timeout,
            |look| {
                if process_alive(pid) {
                    watch.block(look, look);
                }
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
        )
    }

    /// Once Patroni is gone: its pid file removed, or its unit inactive.
    fn forget_stopped(&self, timeout: Duration) -> Result<()> {
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
}
