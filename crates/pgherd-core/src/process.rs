//! Processes pgherd starts for an instance (Patroni, pgBackRest, a
//! PostgreSQL run alone): a clean environment, the instance's OS user, logs
//! appended to a file, and waits for their end with a deadline.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fs::{current_uid, lookup_account, running_as_root, Account};
use crate::settings::Settings;
use crate::wait::{wait_blocking, Probe};

/// Who Patroni and psql run as: the settings' user when pgherd runs as
/// root; nobody else when pgherd already runs as that user.
pub fn run_as_account(settings: &Settings) -> Result<Option<Account>> {
    let account = lookup_account(&settings.sysuser, settings.sysgroup.as_deref())?;
    if running_as_root() {
        return Ok(Some(account));
    }
    if account.owner.uid != current_uid() {
        return Err(Error::User {
            user: settings.sysuser.clone(),
            msg: format!(
                "owns the instance but the module runs as uid {}: run it as root \
                 (become: true) or as {} (become_user)",
                current_uid(),
                settings.sysuser
            ),
        });
    }
    Ok(None)
}

/// `program` in `/`, with only PATH, LANG and the account's identity in its
/// environment (Ansible's is not its business), no standard input, and run
/// as `run_as` when given (pgherd then runs as root).
pub fn command(program: &Path, run_as: Option<&Account>) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir("/")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null());
    match run_as {
        Some(a) => {
            cmd.uid(a.owner.uid)
                .gid(a.owner.gid)
                .env("HOME", &a.home)
                .env("USER", &a.name)
                .env("LOGNAME", &a.name);
        }
        None => {
            if let Some(home) = std::env::var_os("HOME") {
                cmd.env("HOME", home);
            }
        }
    }
    cmd
}

/// A log file opened for appending (0640, given to `run_as`), twice: for a
/// child's standard output and its standard error.
pub fn append_log(path: &Path, run_as: Option<&Account>) -> Result<(File, File)> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| Error::io(path, "opening the log", e))?;
    if let Some(a) = run_as {
        std::os::unix::fs::chown(path, Some(a.owner.uid), Some(a.owner.gid))
            .map_err(|e| Error::io(path, "changing owner", e))?;
    }
    let err = log
        .try_clone()
        .map_err(|e| Error::io(path, "duplicating the log descriptor", e))?;
    Ok((log, err))
}

/// Waits until `child` exits, within `timeout`; `context` adds what the
/// timeout message should show (a log's tail). The exit is noticed the
/// moment it happens, not at the next look of a poll: most children run
/// for milliseconds.
pub fn wait_exit(
    what: &str,
    child: &mut Child,
    timeout: Duration,
    context: impl Fn() -> String,
) -> Result<ExitStatus> {
    let watch = ExitWatch::new(child);
    wait_blocking(
        what,
        timeout,
        |look| match watch.exit_within(child, look) {
            Ok(Some(status)) => Probe::Ready(status),
            Ok(None) => Probe::Waiting("it still runs".into()),
            Err(e) => Probe::Failed(Error::Other(format!("waiting for {what}: {e}"))),
        },
        context,
    )
}

/// A process's exit, awaited without polling where the kernel can tell it
/// (a pidfd, Linux 5.3 on, becomes readable when the process exits);
/// elsewhere by looks a few milliseconds apart.
pub struct ExitWatch(Option<std::os::fd::OwnedFd>);

impl ExitWatch {
    pub fn new(child: &Child) -> ExitWatch {
        ExitWatch::of_pid(child.id() as i32)
    }

    /// Any process's: Patroni, a postmaster. Whether it still runs is for
    /// the caller to look at after [`ExitWatch::block`].
    pub fn of_pid(pid: i32) -> ExitWatch {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open(2) on a pid; a descriptor it returns is ours
        // to own. A pid reused before the call is watched in its stead:
        // callers look at the process itself after each wake.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        ExitWatch(
            i32::try_from(fd)
                .ok()
                .filter(|fd| *fd >= 0)
                .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }),
        )
    }

    /// Blocks until the process exits or `limit` passes; without a pidfd,
    /// sleeps `limit.min(step)`.
    pub fn block(&self, limit: Duration, step: Duration) {
        use std::os::fd::AsRawFd;
        match &self.0 {
            Some(fd) => {
                let mut watched = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = i32::try_from(limit.as_millis().max(1)).unwrap_or(i32::MAX);
                // SAFETY: poll(2) on one pollfd that lives through the
                // call; an interruption only means looking again.
                unsafe { libc::poll(&mut watched, 1, ms) };
            }
            None => std::thread::sleep(limit.min(step)),
        }
    }

    /// The child's exit status once it exits, if it does within `limit`.
    pub fn exit_within(
        &self,
        child: &mut Child,
        limit: Duration,
    ) -> std::io::Result<Option<ExitStatus>> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.block(left, Duration::from_millis(2));
        }
    }
}

/// What a process run to its end printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to its end within `timeout`, in a process group of its own,
/// its output captured. Past the deadline the whole group (with the helpers
/// it forked) gets SIGTERM and the error says `what` and what `context`
/// shows (a log's tail).
pub fn run(
    cmd: &mut Command,
    what: &str,
    timeout: Duration,
    context: impl Fn() -> String,
) -> Result<Finished> {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let program = PathBuf::from(cmd.get_program());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Other(format!("{what}: cannot run {}: {e}", program.display())))?;
    let pid = child.id() as i32;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = match wait_exit(what, &mut child, timeout, context) {
        Ok(s) => s,
        Err(e) => {
            // SAFETY: kill(2) on the process group this run started.
            unsafe {
                libc::kill(-pid, libc::SIGTERM);
            }
            let _ = child.wait();
            return Err(e);
        }
    };
    Ok(Finished {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// A child's pipe read to its end on a thread of its own, so that a full
/// pipe never blocks the child while its end is awaited.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut text);
        }
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait::wait_until;

    #[test]
    fn an_exit_is_watched_until_it_happens_or_the_limit_passes() {
        let mut quick = command(Path::new("/bin/sh"), None)
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        let watch = ExitWatch::new(&quick);
        assert!(watch.0.is_some(), "no pidfd on this kernel");
        let status = watch
            .exit_within(&mut quick, Duration::from_secs(30))
            .unwrap();
        assert_eq!(status.and_then(|s| s.code()), Some(3));
        let mut slow = command(Path::new("/bin/sleep"), None)
            .arg("30")
            .spawn()
            .unwrap();
        let watch = ExitWatch::new(&slow);
        assert_eq!(
            watch
                .exit_within(&mut slow, Duration::from_millis(20))
                .unwrap(),
            None
        );
        slow.kill().unwrap();
        assert!(watch
            .exit_within(&mut slow, Duration::from_secs(30))
            .unwrap()
            .is_some());
    }

    #[test]
    fn the_environment_is_clean_and_the_exit_is_awaited() {
        std::env::set_var("PGHERD_PROCESS_TEST", "leaks");
        let mut child = command(Path::new("/bin/sh"), None)
            .args([
                "-c",
                "test -z \"$PGHERD_PROCESS_TEST\" && test \"$PWD\" = / && exit 3",
            ])
            .spawn()
            .unwrap();
        let status = wait_exit("sh", &mut child, Duration::from_secs(10), String::new).unwrap();
        assert_eq!(status.code(), Some(3));
    }

    #[test]
    fn a_run_captures_output_and_a_late_one_is_ended_with_its_helpers() {
        let done = run(
            command(Path::new("/bin/sh"), None).args(["-c", "echo out; echo err >&2; exit 2"]),
            "sh",
            Duration::from_secs(10),
            String::new,
        )
        .unwrap();
        assert_eq!(
            (
                done.status.code(),
                done.stdout.as_str(),
                done.stderr.as_str()
            ),
            (Some(2), "out\n", "err\n")
        );
        let pid_file = std::env::temp_dir().join(format!("pgherd-run-{}", std::process::id()));
        let err = run(
            command(Path::new("/bin/sh"), None).args([
                "-c",
                &format!("sleep 30 & echo $! > {}; sleep 30", pid_file.display()),
            ]),
            "the sleeper",
            Duration::from_millis(300),
            || "; its log".into(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("the sleeper") && err.contains("its log"),
            "{err}"
        );
        // The helper it forked is ended too: polled until gone (a zombie
        // left to an init that does not reap counts as gone).
        let helper = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .to_string();
        std::fs::remove_file(&pid_file).ok();
        let alive = || {
            std::fs::read_to_string(format!("/proc/{helper}/stat"))
                .is_ok_and(|stat| !stat.split(") ").nth(1).unwrap_or("").starts_with('Z'))
        };
        wait_until(
            "the forked helper to end",
            Duration::from_secs(10),
            || {
                if alive() {
                    Probe::Waiting(format!("pid {helper} runs"))
                } else {
                    Probe::Ready(())
                }
            },
            String::new,
        )
        .expect("the helper outlived the deadline");
    }

    #[test]
    fn a_child_past_its_deadline_is_reported() {
        let mut child = command(Path::new("/bin/sleep"), None)
            .arg("5")
            .spawn()
            .unwrap();
        let err = wait_exit("sleep", &mut child, Duration::from_millis(200), || {
            "; context".into()
        })
        .unwrap_err()
        .to_string();
        let _ = child.kill();
        let _ = child.wait();
        assert!(err.contains("sleep") && err.contains("context"), "{err}");
    }
}
