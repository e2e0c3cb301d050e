//! Files and directories on the host: atomic writes, modes, owners, and the
//! operating-system user that owns PostgreSQL's files.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The uid and gid files are given to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// An operating-system user that processes run as.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Account {
    pub name: String,
    pub owner: Owner,
    pub home: PathBuf,
}

/// Looks up `user` (and `group`, else the user's primary group).
pub fn lookup_owner(user: &str, group: Option<&str>) -> Result<Owner> {
    lookup_account(user, group).map(|a| a.owner)
}

/// Looks up `user`, its home, and `group` (else its primary group).
pub fn lookup_account(user: &str, group: Option<&str>) -> Result<Account> {
    let err = |msg: String| Error::User {
        user: user.to_string(),
        msg,
    };
    let c_user = CString::new(user).map_err(|_| err("contains a NUL byte".into()))?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: passwd is plain data; getpwnam_r fills it with pointers into
    // `buf`, which outlives every use below.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe {
        libc::getpwnam_r(
            c_user.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return Err(err(
            "does not exist on this host: create it (PostgreSQL must not run as root)".into(),
        ));
    }
    let uid = pwd.pw_uid;
    let mut gid = pwd.pw_gid;
    let home = if pwd.pw_dir.is_null() {
        PathBuf::from("/")
    } else {
        // SAFETY: pw_dir points to a NUL-terminated string inside `buf`.
        let dir = unsafe { std::ffi::CStr::from_ptr(pwd.pw_dir) };
        PathBuf::from(dir.to_string_lossy().into_owned())
    };
    if let Some(group) = group {
        let c_group = CString::new(group).map_err(|_| err("group contains a NUL byte".into()))?;
        // SAFETY: as above, for group.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut gfound: *mut libc::group = std::ptr::null_mut();
        let rc = unsafe {
            libc::getgrnam_r(
                c_group.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut gfound,
            )
        };
        if rc != 0 || gfound.is_null() {
            return Err(err(format!("group {group:?} does not exist on this host")));
        }
        gid = grp.gr_gid;
    }
    Ok(Account {
        name: user.to_string(),
        owner: Owner { uid, gid },
        home,
    })
}

pub fn running_as_root() -> bool {
    current_uid() == 0
}

pub fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Removes a file or a whole directory tree; a missing path is fine.
/// The bytes free for unprivileged users on the filesystem of `path`.
pub fn free_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Other(format!("{} holds a NUL byte", path.display())))?;
    // SAFETY: statvfs(3) fills the zeroed struct for a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(Error::io(
            path,
            "reading its filesystem's free space",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

pub fn remove_path(path: &Path) -> Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(|e| Error::io(path, "removing", e))
}

/// What is on disk at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub content: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A path that should hold a file, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Missing,
    File(Observed),
    /// A symbolic link, never followed: whoever may write in the directory
    /// could point it at any file, whose content must not end up in a
    /// diff, and whose mode must not be changed.
    Link(PathBuf),
}

/// What is at a path meant to hold a file, without following a link.
pub fn observe_path(path: &Path) -> Result<Found> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            let target = fs::read_link(path).map_err(|e| Error::io(path, "reading link", e))?;
            Ok(Found::Link(target))
        }
        Ok(_) => Ok(observe_file(path)?.map_or(Found::Missing, Found::File)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Found::Missing),
        Err(e) => Err(Error::io(path, "reading metadata", e)),
    }
}

/// Reads a file, `None` when it does not exist.
pub fn observe_file(path: &Path) -> Result<Option<Observed>> {
    match fs::read(path) {
        Ok(content) => {
            let meta = fs::metadata(path).map_err(|e| Error::io(path, "reading metadata", e))?;
            Ok(Some(Observed {
                content,
                mode: meta.permissions().mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
            }))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, "reading", e)),
    }
}

/// The directories that `create_dir_all(path)` would create, outermost
/// first.
pub fn missing_dirs(path: &Path) -> Vec<PathBuf> {
    missing_dirs_besides(path, &[])
}

/// [`missing_dirs`], counting the directories `made` as not there yet.
pub fn missing_dirs_besides(path: &Path, made: &[PathBuf]) -> Vec<PathBuf> {
    let mut missing = Vec::new();
    let mut cur = Some(path);
    while let Some(p) = cur {
        if p.as_os_str().is_empty() || (p.exists() && !made.iter().any(|m| m == p)) {
            break;
        }
        missing.push(p.to_path_buf());
        cur = p.parent();
    }
    missing.reverse();
    missing
}

fn chown(path: &Path, owner: Owner) -> Result<()> {
    std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid))
        .map_err(|e| Error::io(path, "changing owner", e))
}

/// Creates one directory with `mode` and `owner`.
pub fn create_dir(path: &Path, mode: u32, owner: Option<Owner>) -> Result<()> {
    match fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(Error::io(path, "creating directory", e)),
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(path, "setting mode", e))?;
    if let Some(o) = owner {
        chown(path, o)?;
    }
    Ok(())
}

/// The temporary file [`write_atomic`] writes `path` through, for process
/// `pid`.
fn temp_path(dir: &Path, file_name: &std::ffi::OsStr, pid: u32) -> PathBuf {
    dir.join(format!(".{}.pgherd-{pid}.tmp", file_name.to_string_lossy()))
}

/// Temporary files of [`write_atomic`] for `path` left by processes that
/// no longer exist (a run killed while writing).
pub fn leftover_temps(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let prefix = format!(".{}.pgherd-", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| {
            let file = e.ok()?.file_name();
            let pid: u32 = file
                .to_str()?
                .strip_prefix(&prefix)?
                .strip_suffix(".tmp")?
                .parse()
                .ok()?;
            let gone = pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists();
            gone.then(|| temp_path(dir, name, pid))
        })
        .collect();
    out.sort();
    out
}

/// Writes `content` to `path` atomically: a temporary file in the same
/// directory, fsync, rename over the target, fsync of the directory. A
/// reader sees the old bytes or the new ones, never a half-written file.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32, owner: Option<Owner>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Other(format!("{} is not a file path", path.display())))?;
    let tmp = temp_path(dir, file_name, std::process::id());
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, "creating", e))?;
        // The mode given to open() is filtered by the umask: set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(&tmp, "setting mode", e))?;
        if let Some(o) = owner {
            chown(&tmp, o)?;
        }
        f.write_all(content)
            .map_err(|e| Error::io(&tmp, "writing", e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, "syncing", e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io(path, "renaming into place", e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, "syncing directory", e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Sets the mode and owner of an existing file.
pub fn set_mode_owner(path: &Path, mode: u32, owner: Option<Owner>) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(path, "setting mode", e))?;
    if let Some(o) = owner {
        chown(path, o)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temps_of_dead_writers_are_found_and_ours_are_not() {
        let d = tempdir("leftover");
        let target = d.join("conf.yaml");
        // pid 1 always exists; i32::MAX never does.
        let dead = temp_path(&d, target.file_name().unwrap(), i32::MAX as u32);
        let alive = temp_path(&d, target.file_name().unwrap(), 1);
        let ours = temp_path(&d, target.file_name().unwrap(), std::process::id());
        for p in [&dead, &alive, &ours] {
            fs::write(p, b"half").unwrap();
        }
        fs::write(d.join(".other.yaml.pgherd-2147483647.tmp"), b"x").unwrap();
        assert_eq!(leftover_temps(&target), vec![dead]);
        fs::remove_dir_all(&d).ok();
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pgherd-fs-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn atomic_write_sets_exact_mode_and_leaves_no_temp_file() {
        let d = tempdir("write");
        let f = d.join("conf.yaml");
        write_atomic(&f, b"a: 1\n", 0o600, None).unwrap();
        let o = observe_file(&f).unwrap().unwrap();
        assert_eq!(o.content, b"a: 1\n");
        assert_eq!(o.mode, 0o600);
        write_atomic(&f, b"a: 2\n", 0o640, None).unwrap();
        let o = observe_file(&f).unwrap().unwrap();
        assert_eq!((o.content.as_slice(), o.mode), (&b"a: 2\n"[..], 0o640));
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("conf.yaml")]);
        fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn missing_dirs_lists_outermost_first() {
        let d = tempdir("dirs");
        let deep = d.join("a/b/c");
        assert_eq!(
            missing_dirs(&deep),
            vec![d.join("a"), d.join("a/b"), deep.clone()]
        );
        for m in missing_dirs(&deep) {
            create_dir(&m, 0o750, None).unwrap();
        }
        assert!(missing_dirs(&deep).is_empty());
        let mode = fs::metadata(&deep).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o750);
        fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn unknown_users_are_named() {
        let err = lookup_owner("pgherd-no-such-user", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"pgherd-no-such-user\": does not exist"),
            "{err}"
        );
        assert!(lookup_owner("root", None).is_ok());
    }
}
