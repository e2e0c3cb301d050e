//! The programs a major upgrade runs: the new major's initdb,
//! pg_upgrade (its checks, and the upgrade), vacuumdb, and the undoing of
//! an upgrade not started yet.

use std::path::{Path, PathBuf};

use super::super::*;
use super::{control_moved, linked_marker};

/// The ports pg_upgrade runs its servers on (its own default): no client
/// of the instance's port reaches them.
const UPGRADE_PORT: u16 = 50432;

/// Runs `cmd` (`what`, for messages) to its end; its output, or what it
/// said when it failed.
pub(super) fn succeeded(
    cmd: &mut std::process::Command,
    what: &str,
    timeout: std::time::Duration,
) -> Result<crate::process::Finished> {
    let out = crate::process::run(cmd, what, timeout, String::new)?;
    if out.status.success() {
        return Ok(out);
    }
    Err(Error::Other(format!(
        "{what} failed ({}): {}",
        out.status,
        out.stderr.trim()
    )))
}

impl Node<'_> {
    /// A work directory of the upgrade's programs (pg_upgrade writes its
    /// scripts where it runs), owned by the instance's account; removed
    /// by the caller.
    pub(super) fn upgrade_work_dir(&self) -> Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!(
            "pgherd-upgrade-{}-{}",
            self.m.qualified_name(),
            std::process::id()
        ));
        remove_path(&dir)?;
        crate::fs::create_dir(&dir, 0o700, self.run_as.as_ref().map(|a| a.owner))?;
        Ok(dir)
    }

    /// Runs the new major's initdb into `dir`, with the cluster's encoding
    /// and locale and the old data directory's checksums.
    pub(in crate::lifecycle) fn initdb(&self, dir: &Path, checksums: bool) -> Result<()> {
        let initdb = &self.settings.postgresql.initdb;
        let program = self.paths.bin_dir.join("initdb");
        let mut cmd = crate::process::command(&program, self.run_as.as_ref());
        cmd.arg("-D")
            .arg(dir)
            .arg("-U")
            .arg(&self.settings.postgresql.superuser)
            .arg("--encoding")
            .arg(&initdb.encoding)
            .arg("--locale")
            .arg(&initdb.locale)
            .arg("--auth=peer")
            .arg("--auth-host=scram-sha-256");
        if checksums {
            cmd.arg("--data-checksums");
        }
        succeeded(
            &mut cmd,
            &format!("initdb -D {}", dir.display()),
            self.timeout,
        )
        .map(|_| ())
    }

    /// `pg_upgrade --link` from `old`'s data directory into `new_data`;
    /// with `check`, only its checks (`live`: the old instance runs).
    pub(in crate::lifecycle) fn pg_upgrade(
        &self,
        old: &Node<'_>,
        new_data: &Path,
        check: bool,
        live: bool,
    ) -> Result<()> {
        let work = self.upgrade_work_dir()?;
        let program = self.paths.bin_dir.join("pg_upgrade");
        let mut cmd = crate::process::command(&program, self.run_as.as_ref());
        // The old configuration where it is (Debian's layout keeps it
        // apart): pg_upgrade asks postgres for the data directory.
        let old_dir = old.paths.conf_dir.as_ref().unwrap_or(&old.paths.data_dir);
        let old_port = if live { old.m.port } else { UPGRADE_PORT };
        cmd.current_dir(&work)
            .arg("--link")
            .arg("-b")
            .arg(&old.paths.bin_dir)
            .arg("-B")
            .arg(&self.paths.bin_dir)
            .arg("-d")
            .arg(old_dir)
            .arg("-D")
            .arg(new_data)
            .arg("-p")
            .arg(old_port.to_string())
            .arg("-P")
            .arg(UPGRADE_PORT.to_string())
            .arg("-s")
            .arg(&self.paths.socket_dir)
            .arg("-U")
            .arg(&self.settings.postgresql.superuser);
        if let Some(conf) = &old.paths.conf_dir {
            cmd.arg("-o").arg(format!(
                "-c config_file={}",
                conf.join("postgresql.conf").display()
            ));
        }
        if check {
            cmd.arg("--check");
        }
        let what = if check {
            "pg_upgrade --check"
        } else {
            "pg_upgrade --link"
        };
        let out = crate::process::run(&mut cmd, what, self.timeout, String::new);
        let report = match &out {
            Ok(f) if f.status.success() => None,
            Ok(f) => Some(failure_report(f, new_data, &work)),
            Err(_) => None,
        };
        let _ = remove_path(&work);
        let out = out?;
        match report {
            None if out.status.success() => Ok(()),
            report => Err(Error::Other(format!(
                "{what} from {} (PostgreSQL {}) to PostgreSQL {} refused: {}{}",
                old.paths.data_dir.display(),
                old.m.version,
                self.m.version,
                report.unwrap_or_default(),
                if check { "; nothing was changed" } else { "" }
            ))),
        }
    }

    /// vacuumdb --all --analyze-in-stages on the running new instance.
    pub(in crate::lifecycle) fn analyze(&self) -> Result<()> {
        let program = self.paths.bin_dir.join("vacuumdb");
        let psql = self.psql();
        let mut cmd = crate::process::command(&program, self.run_as.as_ref());
        cmd.arg("--all")
            .arg("--analyze-in-stages")
            .arg("-h")
            .arg(&psql.socket_dir)
            .arg("-p")
            .arg(psql.port.to_string())
            .arg("-U")
            .arg(&self.settings.postgresql.superuser);
        if self.paths.passfile.exists() {
            cmd.env("PGPASSFILE", &self.paths.passfile);
        }
        let what = format!("vacuumdb --all --analyze-in-stages on {}", self.name());
        succeeded(&mut cmd, &what, self.timeout).map(|_| ())
    }

    /// Undoes an upgrade not started yet: what a killed pg_upgrade left
    /// running stopped, the new data directory removed, the old one's
    /// control file back where pg_upgrade took it from.
    pub(in crate::lifecycle) fn unwind_upgrade(&self, old: &Node<'_>) -> Result<Vec<String>> {
        let mut warnings = self.service.stop(self.timeout)?;
        // The old instance's Patroni may still run (a failure before its
        // stop): only what runs without it is stopped.
        if !old.service.is_running()? {
            warnings.extend(old.service.stop(self.timeout)?);
        }
        let old_data = &old.paths.data_dir;
        let moved = control_moved(old_data);
        if moved.exists() {
            let back = old_data.join("global/pg_control");
            std::fs::rename(&moved, &back).map_err(|e| Error::io(&moved, "renaming back", e))?;
        }
        remove_path(&self.paths.data_dir)?;
        remove_path(&linked_marker(old_data))?;
        Ok(warnings)
    }

    /// Runs pg_upgrade for real and marks the old data directory linked.
    pub(in crate::lifecycle) fn link(&self, old: &Node<'_>) -> Result<()> {
        self.pg_upgrade(old, &self.paths.data_dir, false, false)?;
        crate::fs::write_atomic(
            &linked_marker(&old.paths.data_dir),
            b"linked into the new major's data directory; not started yet\n",
            0o600,
            self.run_as.as_ref().map(|a| a.owner),
        )
    }
}

/// What a failed pg_upgrade said: the lines of its output that name a
/// problem, and the files it wrote the details into (the libraries or
/// objects in the way).
fn failure_report(f: &crate::process::Finished, new_data: &Path, work: &Path) -> String {
    let mut lines: Vec<String> = f
        .stdout
        .lines()
        .chain(f.stderr.lines())
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.ends_with("ok")
                && !l.starts_with("Performing")
                && !l.starts_with("---")
                && !l.starts_with("Checking")
        })
        .map(str::to_string)
        .collect();
    // Details files (loadable_libraries.txt and the like), in the work
    // directory or under the new data directory's output directory.
    let mut details = Vec::new();
    let mut stack = vec![work.to_path_buf(), new_data.join("pg_upgrade_output.d")];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "log") {
                // The logs of the programs pg_upgrade ran: their errors.
                if let Ok(text) = std::fs::read_to_string(&p) {
                    let errors: Vec<&str> = text
                        .lines()
                        .filter(|l| {
                            let l = l.to_ascii_lowercase();
                            l.contains("error") || l.contains("fatal") || l.contains("failed")
                        })
                        .collect();
                    if !errors.is_empty() {
                        details.push(format!(
                            "{}: {}",
                            p.file_name().unwrap_or_default().to_string_lossy(),
                            errors[errors.len().saturating_sub(3)..].join(" / ")
                        ));
                    }
                }
            } else if p.extension().is_some_and(|x| x == "txt") {
                if let Ok(text) = std::fs::read_to_string(&p) {
                    let text: Vec<&str> = text.lines().take(20).collect();
                    details.push(format!(
                        "{}: {}",
                        p.file_name().unwrap_or_default().to_string_lossy(),
                        text.join(" / ")
                    ));
                }
            }
        }
    }
    lines.extend(details);
    lines.truncate(30);
    lines.join("; ")
}

#[cfg(test)]
mod tests {
    use super::super::tests::dir;
    use super::*;

    #[test]
    fn a_refusal_quotes_what_pg_upgrade_found_and_where() {
        use std::os::unix::process::ExitStatusExt;
        let d = dir("report");
        let out = d.join("new/pg_upgrade_output.d/20261204T172650.123");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(
            out.join("loadable_libraries.txt"),
            "could not load library \"$libdir/uuid-ossp\": ERROR:  could not access file\n\
             In database: books\n",
        )
        .unwrap();
        let f = crate::process::Finished {
            status: std::process::ExitStatus::from_raw(256),
            stdout: "Performing Consistency Checks\n-----------------------------\n\
                     Checking cluster versions                                     ok\n\
                     Checking for presence of required libraries                   fatal\n\n\
                     Your installation references loadable libraries that are missing from the\n"
                .into(),
            stderr: String::new(),
        };
        let report = failure_report(&f, &d.join("new"), &d.join("work"));
        assert!(!report.contains("Checking cluster versions"), "{report}");
        assert!(report.contains("Your installation references"), "{report}");
        assert!(
            report.contains("loadable_libraries.txt: could not load library \"$libdir/uuid-ossp\"")
                && report.contains("In database: books"),
            "{report}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
