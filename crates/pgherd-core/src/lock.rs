//! One run at a time per instance: an exclusive `flock` on a file beside
//! the pid file. A second run waits for it, with a deadline, and then fails
//! naming the process that holds it. The lock dies with its process, so a
//! killed run never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fs::{create_dir, missing_dirs, Owner};
use crate::wait::{wait_until, Probe};

/// Calls `attempt` every poll interval until it takes a lock (`Ok(Ok)`)
/// or `timeout` passes; `Ok(Err(holder))` says who holds it. The timeout
/// error names `what` and the last holder seen, and says nothing was done.
pub fn wait_for_turn<T>(
    what: &str,
    timeout: Duration,
    mut attempt: impl FnMut() -> Result<std::result::Result<T, String>>,
) -> Result<T> {
    wait_until(
        &format!("the lock of {what}"),
        timeout,
        || match attempt() {
            Ok(Ok(held)) => Probe::Ready(held),
            Ok(Err(holder)) => Probe::Waiting(format!("held by {holder}")),
            Err(e) => Probe::Failed(e),
        },
        String::new,
    )
    .map_err(|e| match e {
        Error::Timeout {
            waited_secs,
            last_seen,
            ..
        } => Error::Other(format!(
            "{what} is being changed by another pgherd run ({last_seen}); waited {waited_secs}s \
             for it to finish and did nothing: let it end (or stop it), then run again"
        )),
        other => other,
    })
}

/// A held lock; dropping it releases it.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
    /// Directories made to hold the lock file, outermost first.
    pub created_dirs: Vec<PathBuf>,
    /// Another run held it first: what was seen before may have changed.
    pub waited: bool,
}

enum Attempt {
    Held(File),
    Busy(String),
}

fn try_lock(path: &Path) -> Result<Attempt> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, "opening the lock file", e))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::WouldBlock {
            return Err(Error::io(path, "locking", err));
        }
        let holder = file
            .metadata()
            .ok()
            .and_then(|m| flock_holder(m.ino()))
            .map(describe_process)
            .unwrap_or_default();
        return Ok(Attempt::Busy(holder));
    }
    // The holder before us may have removed the file (state: absent) after
    // we opened it: then our lock is on a name nobody else will open.
    let same = match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    };
    if !same {
        return Ok(Attempt::Busy("a run that just finished".into()));
    }
    Ok(Attempt::Held(file))
}

impl RunLock {
    /// Takes the lock at `path` for `what`, waiting up to `timeout` for the
    /// run that holds it. Missing parent directories are created with
    /// `dir_mode` and `owner`.
    pub fn acquire(
        path: &Path,
        what: &str,
        timeout: Duration,
        dir_mode: u32,
        owner: Option<Owner>,
    ) -> Result<RunLock> {
        let created_dirs = path.parent().map(missing_dirs).unwrap_or_default();
        for d in &created_dirs {
            create_dir(d, dir_mode, owner)?;
        }
        let waited = std::cell::Cell::new(false);
        let file = wait_for_turn(what, timeout, || {
            Ok(match try_lock(path)? {
                Attempt::Held(f) => Ok(f),
                Attempt::Busy(holder) => {
                    waited.set(true);
                    Err(if holder.is_empty() {
                        "another pgherd run".into()
                    } else {
                        holder
                    })
                }
            })
        })?;
        // A new lock file belongs to the instance's owner, like its
        // directory; it is never written: the holder is read from the
        // kernel's lock table, so a run that changes nothing touches nothing.
        if let Some(o) = owner {
            if file
                .metadata()
                .is_ok_and(|m| m.uid() != o.uid || m.gid() != o.gid)
            {
                std::os::unix::fs::fchown(&file, Some(o.uid), Some(o.gid))
                    .map_err(|e| Error::io(path, "changing owner", e))?;
            }
        }
        Ok(RunLock {
            file,
            path: path.to_path_buf(),
            created_dirs,
            waited: waited.get(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the lock file while still holding it: later runs open a new
    /// file, and a run already waiting on this one sees it gone and retries.
    pub fn remove_file(&self) -> Result<()> {
        crate::fs::remove_path(&self.path)
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Closing the descriptor releases the lock; say so explicitly.
        // SAFETY: as in try_lock.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// The pid holding a `flock` on the file with inode `ino`, from the
/// kernel's table of locks (`/proc/locks`: `1: FLOCK ADVISORY WRITE <pid>
/// <major>:<minor>:<inode> 0 EOF`).
pub fn flock_holder(ino: u64) -> Option<i32> {
    let table = std::fs::read_to_string("/proc/locks").ok()?;
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let kind = fields.get(1)?;
        let inode = fields.get(5)?.rsplit(':').next()?;
        (*kind == "FLOCK" && inode.parse::<u64>().ok()? == ino)
            .then(|| fields.get(4)?.parse().ok())
            .flatten()
    })
}

/// `pid N (command line)`, for messages.
fn describe_process(pid: i32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    let cmdline = cmdline.trim();
    if cmdline.is_empty() {
        format!("pid {pid}")
    } else {
        format!("pid {pid} ({cmdline})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pgherd-lock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_second_holder_waits_then_fails_naming_the_first() {
        let d = dir("busy");
        let path = d.join("run/x.lock");
        let first =
            RunLock::acquire(&path, "instance 15-x", Duration::from_secs(1), 0o750, None).unwrap();
        // flock locks belong to open file descriptions: a second open in
        // the same process conflicts like another process would.
        let err = RunLock::acquire(
            &path,
            "instance 15-x",
            Duration::from_millis(300),
            0o750,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("instance 15-x is being changed by another pgherd run"),
            "{err}"
        );
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        let again = RunLock::acquire(&path, "instance 15-x", Duration::from_secs(1), 0o750, None);
        assert!(again.is_ok());
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_removed_lock_file_is_not_trusted() {
        let d = dir("removed");
        let path = d.join("x.lock");
        let first = RunLock::acquire(&path, "i", Duration::from_secs(1), 0o750, None).unwrap();
        let waiter = std::thread::spawn({
            let path = path.clone();
            move || {
                RunLock::acquire(&path, "i", Duration::from_secs(5), 0o750, None)
                    .map(|l| l.path().to_path_buf())
            }
        });
        std::thread::sleep(Duration::from_millis(250));
        first.remove_file().unwrap();
        drop(first);
        let got = waiter.join().unwrap().unwrap();
        assert_eq!(got, path);
        assert!(path.exists(), "the waiter took a lock on a fresh file");
        std::fs::remove_dir_all(&d).ok();
    }
}
