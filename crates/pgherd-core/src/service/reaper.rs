//! Without systemd, Patroni runs under a reaper of pgherd's: the module's
//! own binary, started again as a child subreaper, which starts Patroni
//! and collects at once every process that ends below it. Patroni starts
//! the postmaster detached, so that it outlives Patroni; the postmaster,
//! orphaned, is then the reaper's. When PostgreSQL stops (a switchover's
//! demotion, a node's stop), Patroni waits until the postmaster is gone,
//! looking once a second: an init that collects its orphans late (a
//! container's PID 1) keeps it a zombie for that second, which every
//! switchover paid twice over. systemd collects at once: the units need no
//! reaper.

use std::io::{BufRead, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fs::Account;

/// The environment variable that makes a pgherd binary the reaper: what
/// to start, as JSON.
const REAPER: &str = "PGHERD_REAPER";

/// Set once the binary's `main` has offered to be the reaper.
static OFFERED: AtomicBool = AtomicBool::new(false);

/// What the reaper starts: Patroni with its configuration, as `run_as`.
#[derive(Debug, Serialize, Deserialize)]
struct Start {
    program: PathBuf,
    config: PathBuf,
    run_as: Option<Account>,
}

/// Called first by the `main` of a binary that starts Patroni: when this
/// process was started as the reaper, it is one until Patroni ends, and
/// then exits; otherwise it returns, and later starts use the reaper.
pub fn run_if_asked() {
    if let Some(start) = std::env::var_os(REAPER) {
        std::process::exit(reap(&start.to_string_lossy()));
    }
    OFFERED.store(true, Ordering::SeqCst);
}

/// Whether this binary can be its own reaper.
pub(super) fn offered() -> bool {
    OFFERED.load(Ordering::SeqCst)
}

/// Starts the reaper, which starts Patroni: its pid. `prepare` gives the
/// reaper's command what a detached Patroni's gets (its session, its log
/// as standard error, no inherited descriptors).
pub(super) fn start(
    program: &Path,
    config: &Path,
    run_as: Option<&Account>,
    prepare: impl FnOnce(&mut Command),
) -> Result<i32> {
    let spec = serde_json::to_string(&Start {
        program: program.to_path_buf(),
        config: config.to_path_buf(),
        run_as: run_as.cloned(),
    })
    .map_err(|e| Error::Other(format!("describing Patroni's start to its reaper: {e}")))?;
    // Started as the user pgherd runs as: the binary may sit where only
    // that user reads (Ansible's temporary directory); the reaper starts
    // Patroni as `run_as`, then drops to that user itself.
    let mut cmd = crate::process::command(Path::new("/proc/self/exe"), None);
    cmd.arg0("pgherd-reaper")
        .env(REAPER, spec)
        .stdout(Stdio::piped());
    prepare(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Other(format!("starting Patroni's reaper: {e}")))?;
    let mut line = String::new();
    let read = child
        .stdout
        .take()
        .map(|out| std::io::BufReader::new(out).read_line(&mut line));
    match (read, line.trim().parse::<i32>()) {
        (Some(Ok(_)), Ok(pid)) if pid > 0 => Ok(pid),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            Err(Error::Other(format!(
                "starting Patroni through its reaper: {}",
                line.trim().strip_prefix("error: ").unwrap_or("no answer")
            )))
        }
    }
}

/// The reaper: becomes a child subreaper, starts Patroni, says its pid on
/// standard output, and collects every process that ends below it until
/// Patroni has ended. Its exit code is Patroni's.
fn reap(spec: &str) -> i32 {
    let mut out = std::io::stdout();
    let started = serde_json::from_str::<Start>(spec)
        .map_err(|e| format!("an unreadable start: {e}"))
        .and_then(|s| {
            // SAFETY: prctl(2) with an integer argument, on this process.
            if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
                return Err(format!(
                    "cannot become a subreaper: {}",
                    std::io::Error::last_os_error()
                ));
            }
            let log = std::io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("duplicating the log: {e}"))?;
            let child = crate::process::command(&s.program, s.run_as.as_ref())
                .arg(&s.config)
                .stdout(Stdio::from(log))
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", s.program.display()))?;
            Ok((child.id() as i32, s.run_as.map(|a| a.owner)))
        });
    let (patroni, owner) = match started {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            return 1;
        }
    };
    if writeln!(out, "{patroni}")
        .and_then(|()| out.flush())
        .is_err()
    {
        return 1;
    }
    // Nothing more to say: the starter's pipe closes, and the reaper
    // holds no privilege it does not need.
    // SAFETY: close(2) of standard output, unused from here on; setgid
    // and setuid to the account Patroni runs as.
    unsafe {
        libc::close(1);
        if let Some(o) = owner {
            if libc::geteuid() == 0 {
                libc::setgroups(0, std::ptr::null());
                libc::setgid(o.gid);
                libc::setuid(o.uid);
            }
        }
    }
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) for any child, into a local status.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid == patroni {
            return if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
        }
        if pid < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 1;
        }
    }
}
