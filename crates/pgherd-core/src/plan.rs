//! Plans: what differs between the files on disk and the files wanted, as a
//! list of changes with masked before/after. Check mode reports the plan; a
//! real run applies it and reports the same plan.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::Result;
use crate::fs::{
    create_dir, leftover_temps, missing_dirs_besides, observe_path, remove_path, set_mode_owner,
    write_atomic, Found, Owner,
};

/// What a file holds, which says how to mask its secrets in diffs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// YAML where every key ending in `password` is a secret.
    Yaml,
    /// A libpq password file: the last field of each entry is a secret.
    Pgpass,
    /// An INI file (pgBackRest's): options naming a pass, a secret or a
    /// key are secrets.
    Ini,
    /// pgherd's settings as YAML: keys naming a password, and hyphenated
    /// pgBackRest options with a pass, a secret or a key in them, are
    /// secrets.
    Settings,
    /// Nothing secret in it.
    Plain,
}

/// File content that must not end up in logs through `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Content(pub Vec<u8>);

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Content({} bytes)", self.0.len())
    }
}

/// A file as it should be.
#[derive(Debug, Clone)]
pub struct DesiredFile {
    pub path: PathBuf,
    pub content: Content,
    pub mode: u32,
    pub kind: FileKind,
    /// Given to this owner when set; else left to whoever writes it.
    pub owner: Option<Owner>,
}

/// A directory that must exist.
#[derive(Debug, Clone)]
pub struct DesiredDir {
    pub path: PathBuf,
    pub mode: u32,
    pub owner: Option<Owner>,
}

#[derive(Debug, Clone)]
pub enum Change {
    CreateDir {
        path: PathBuf,
        mode: u32,
        owner: Option<Owner>,
    },
    WriteFile {
        path: PathBuf,
        kind: FileKind,
        /// Masked text of the file on disk; `None` when there is none.
        before: Option<String>,
        /// Masked text of the new file.
        after: String,
        content: Content,
        mode: u32,
        owner: Option<Owner>,
    },
    /// Same bytes, wrong mode or owner.
    FixFile {
        path: PathBuf,
        mode_before: u32,
        mode: u32,
        owner: Option<Owner>,
    },
    /// A temporary file left by a run killed while writing.
    RemoveLeftover { path: PathBuf },
    /// A symbolic link where a file belongs: removed, not followed, and
    /// the file written in its place.
    RemoveLink { path: PathBuf, target: PathBuf },
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
}

/// Masks secrets in a file's text for a diff.
pub fn mask_secrets(text: &str, kind: FileKind) -> String {
    if kind == FileKind::Settings {
        return mask_settings(text);
    }
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, newline) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        let masked = match kind {
            FileKind::Yaml => mask_yaml_line(body),
            FileKind::Pgpass => mask_pgpass_line(body),
            FileKind::Ini => mask_ini_line(body),
            FileKind::Plain | FileKind::Settings => body.to_string(),
        };
        out.push_str(&masked);
        out.push_str(newline);
    }
    out
}

/// A YAML line's key as written (with its indentation), the key bare (no
/// list dash, no quotes), and the value after the colon.
fn yaml_key(line: &str) -> Option<(&str, &str, &str)> {
    let (key, value) = line.split_once(':')?;
    let bare = key
        .trim()
        .trim_start_matches("- ")
        .trim_matches(|c| c == '"' || c == '\'');
    Some((key, bare, value))
}

fn mask_yaml_line(line: &str) -> String {
    match yaml_key(line) {
        Some((key, bare, value))
            if bare.to_ascii_lowercase().ends_with("password") && !value.trim().is_empty() =>
        {
            format!("{key}: {}", crate::MASK)
        }
        _ => line.to_string(),
    }
}

/// Whether a settings key names a secret: `password` at its end, or a
/// pass, a secret or a key in a hyphenated option name as pgBackRest
/// names them (`repo1-cipher-pass`, `repo1-s3-key-secret`); a plain `key`
/// or `keyfile` (the path of a key file) is not.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.ends_with("password")
        || (key.contains('-') && ["pass", "secret", "key"].iter().any(|w| key.contains(w)))
}

/// Masks the values of secret keys in settings YAML, with the lines of a
/// secret's block (a literal string) that follow its key.
fn mask_settings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // The indentation of a masked key whose deeper lines are dropped.
    let mut masked_at: Option<usize> = None;
    for line in text.split_inclusive('\n') {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(level) = masked_at {
            if line.trim().is_empty() || indent > level {
                continue;
            }
            masked_at = None;
        }
        let body = line.trim_end_matches('\n');
        let secret = yaml_key(body).and_then(|(key, bare, value)| {
            (is_secret_key(bare) && !matches!(value.trim(), "" | "null" | "~")).then_some(key)
        });
        match secret {
            Some(key) => {
                out.push_str(&format!("{key}: {}", crate::MASK));
                out.push_str(&line[body.len()..]);
                masked_at = Some(indent);
            }
            None => out.push_str(line),
        }
    }
    out
}

fn mask_ini_line(line: &str) -> String {
    match line.split_once('=') {
        Some((key, value))
            if !value.is_empty()
                && ["pass", "secret", "key"]
                    .iter()
                    .any(|w| key.to_ascii_lowercase().contains(w)) =>
        {
            format!("{key}={}", crate::MASK)
        }
        _ => line.to_string(),
    }
}

fn mask_pgpass_line(line: &str) -> String {
    if line.trim_start().starts_with('#') || line.trim().is_empty() {
        return line.to_string();
    }
    // Fields are separated by unescaped ':'; the fifth is the password.
    let mut fields = 0;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            ':' => {
                fields += 1;
                if fields == 4 {
                    return format!("{}{}", &line[..=i], crate::MASK);
                }
            }
            _ => {}
        }
    }
    crate::MASK.to_string()
}

impl Plan {
    /// Compares the wanted directories and files with the disk.
    pub fn compute(dirs: &[DesiredDir], files: &[DesiredFile]) -> Result<Plan> {
        Plan::compute_as_if_missing(dirs, files, &[])
    }

    /// [`Plan::compute`], counting the directories `new` as not there yet:
    /// this run made them a moment ago (for its lock) and must report them
    /// as its own changes, as check mode did.
    pub fn compute_as_if_missing(
        dirs: &[DesiredDir],
        files: &[DesiredFile],
        new: &[PathBuf],
    ) -> Result<Plan> {
        let mut changes = Vec::new();
        let mut planned: Vec<PathBuf> = Vec::new();
        let mut want_dir =
            |path: &Path, mode: u32, owner: Option<Owner>, changes: &mut Vec<Change>| {
                // Directories made by this run count as missing too.
                for missing in missing_dirs_besides(path, new) {
                    if !planned.contains(&missing) {
                        planned.push(missing.clone());
                        changes.push(Change::CreateDir {
                            path: missing,
                            mode,
                            owner,
                        });
                    }
                }
            };
        for d in dirs {
            want_dir(&d.path, d.mode, d.owner, &mut changes);
        }
        for f in files {
            for path in leftover_temps(&f.path) {
                changes.push(Change::RemoveLeftover { path });
            }
            let owner = f.owner;
            if let Some(parent) = f.path.parent() {
                want_dir(parent, 0o750, owner, &mut changes);
            }
            let seen = match observe_path(&f.path)? {
                Found::Link(target) => {
                    changes.push(Change::RemoveLink {
                        path: f.path.clone(),
                        target,
                    });
                    None
                }
                Found::Missing => None,
                Found::File(seen) => Some(seen),
            };
            match seen {
                None => changes.push(Change::WriteFile {
                    path: f.path.clone(),
                    kind: f.kind,
                    before: None,
                    after: mask_secrets(&String::from_utf8_lossy(&f.content.0), f.kind),
                    content: f.content.clone(),
                    mode: f.mode,
                    owner,
                }),
                Some(seen) if seen.content != f.content.0 => changes.push(Change::WriteFile {
                    path: f.path.clone(),
                    kind: f.kind,
                    before: Some(mask_secrets(
                        &String::from_utf8_lossy(&seen.content),
                        f.kind,
                    )),
                    after: mask_secrets(&String::from_utf8_lossy(&f.content.0), f.kind),
                    content: f.content.clone(),
                    mode: f.mode,
                    owner,
                }),
                Some(seen) => {
                    let owner_differs =
                        owner.is_some_and(|o| o.uid != seen.uid || o.gid != seen.gid);
                    if seen.mode != f.mode || owner_differs {
                        changes.push(Change::FixFile {
                            path: f.path.clone(),
                            mode_before: seen.mode,
                            mode: f.mode,
                            owner,
                        });
                    }
                }
            }
        }
        Ok(Plan { changes })
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Ansible diff entries, secrets masked.
    pub fn diff(&self) -> Vec<Value> {
        self.changes.iter().map(Change::diff).collect()
    }

    /// One line per change, for `msg` and the `changes` return value.
    pub fn summary(&self) -> Vec<String> {
        self.changes.iter().map(Change::summary).collect()
    }

    /// Carries the plan out, in order. A failure halfway is reported with
    /// the changes made before it ([`crate::error::Error::AfterChanges`]).
    pub fn apply(&self) -> Result<()> {
        let summary = self.summary();
        for (i, c) in self.changes.iter().enumerate() {
            c.apply().map_err(|e| e.after(summary[..i].to_vec()))?;
        }
        Ok(())
    }
}

impl Change {
    /// The Ansible diff entry, secrets masked.
    pub fn diff(&self) -> Value {
        match self {
            Change::CreateDir { path, mode, .. } => json!({
                "before_header": path,
                "after_header": path,
                "before": {"path": path, "state": "absent"},
                "after": {"path": path, "state": "directory", "mode": format!("{mode:04o}")},
            }),
            Change::WriteFile {
                path,
                before,
                after,
                ..
            } => json!({
                "before_header": if before.is_some() { path.display().to_string() } else { format!("{} (absent)", path.display()) },
                "after_header": path,
                "before": before.clone().unwrap_or_default(),
                "after": after,
            }),
            Change::FixFile {
                path,
                mode_before,
                mode,
                ..
            } => json!({
                "before_header": path,
                "after_header": path,
                "before": {"path": path, "mode": format!("{mode_before:04o}")},
                "after": {"path": path, "mode": format!("{mode:04o}")},
            }),
            Change::RemoveLeftover { path } => json!({
                "before_header": path,
                "after_header": path,
                "before": {"path": path, "state": "present"},
                "after": {"path": path, "state": "absent"},
            }),
            Change::RemoveLink { path, target } => json!({
                "before_header": path,
                "after_header": path,
                "before": {"path": path, "state": "link", "src": target},
                "after": {"path": path, "state": "absent"},
            }),
        }
    }

    /// One line, for `msg` and the `changes` return value.
    pub fn summary(&self) -> String {
        match self {
            Change::CreateDir { path, .. } => format!("create directory {}", path.display()),
            Change::WriteFile {
                path, before: None, ..
            } => format!("create {}", path.display()),
            Change::WriteFile { path, .. } => format!("update {}", path.display()),
            Change::FixFile { path, .. } => {
                format!("fix mode and owner of {}", path.display())
            }
            Change::RemoveLeftover { path } => {
                format!("remove {} left by an interrupted run", path.display())
            }
            Change::RemoveLink { path, target } => format!(
                "remove the symbolic link {} (to {}, not followed)",
                path.display(),
                target.display()
            ),
        }
    }

    /// Carries the change out.
    pub fn apply(&self) -> Result<()> {
        match self {
            Change::CreateDir { path, mode, owner } => create_dir(path, *mode, *owner),
            Change::WriteFile {
                path,
                content,
                mode,
                owner,
                ..
            } => write_atomic(path, &content.0, *mode, *owner),
            Change::FixFile {
                path, mode, owner, ..
            } => set_mode_owner(path, *mode, *owner),
            Change::RemoveLeftover { path } | Change::RemoveLink { path, .. } => remove_path(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_made_for_the_lock_are_still_reported() {
        let base = std::env::temp_dir().join(format!("pgherd-plan-made-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let node = base.join("node");
        let dir = |p: PathBuf| DesiredDir {
            path: p,
            mode: 0o750,
            owner: None,
        };
        let dirs = vec![
            dir(node.join("data/15")),
            dir(node.join("run")),
            dir(node.join("log/pg")),
        ];
        let before = Plan::compute(&dirs, &[]).unwrap().summary();
        // The lock made node/ and node/run/ in between.
        std::fs::create_dir_all(node.join("run")).unwrap();
        let made = vec![node.clone(), node.join("run")];
        let after = Plan::compute_as_if_missing(&dirs, &[], &made)
            .unwrap()
            .summary();
        assert_eq!(before, after);
        assert_eq!(before.len(), 6, "{before:?}");
        std::fs::remove_dir_all(&base).ok();
    }

    #[test]
    fn yaml_passwords_are_masked_whatever_their_nesting() {
        let text = "a: 1\n  password: s3cret\nkeyfile_password: 'x'\nusername: u\n  - password: y\npasswords_file: /x\n";
        let masked = mask_secrets(text, FileKind::Yaml);
        assert_eq!(
            masked,
            "a: 1\n  password: ********\nkeyfile_password: ********\nusername: u\n  - password: ********\npasswords_file: /x\n"
        );
    }

    #[test]
    fn ini_secrets_are_masked() {
        let text = "[global]\nrepo1-path=/r\nrepo1-cipher-pass=s3cr3t\nrepo1-s3-key-secret=x\n";
        let masked = mask_secrets(text, FileKind::Ini);
        assert_eq!(
            masked,
            "[global]\nrepo1-path=/r\nrepo1-cipher-pass=********\nrepo1-s3-key-secret=********\n"
        );
    }

    #[test]
    fn pgpass_passwords_are_masked_with_escapes() {
        let text = "# comment\n*:5432:*:postgres:pa\\:ss\nh\\:x:1:db:user:pw\n";
        assert_eq!(
            mask_secrets(text, FileKind::Pgpass),
            "# comment\n*:5432:*:postgres:********\nh\\:x:1:db:user:********\n"
        );
    }

    #[test]
    fn content_debug_never_shows_bytes() {
        assert_eq!(
            format!("{:?}", Content(b"secret".to_vec())),
            "Content(6 bytes)"
        );
    }

    #[test]
    fn plan_is_empty_once_applied() {
        let d = std::env::temp_dir().join(format!("pgherd-plan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let files = vec![DesiredFile {
            path: d.join("etc/x.yaml"),
            content: Content(b"password: abc\n".to_vec()),
            mode: 0o600,
            kind: FileKind::Yaml,
            owner: None,
        }];
        let dirs = vec![DesiredDir {
            path: d.join("log"),
            mode: 0o750,
            owner: None,
        }];
        let plan = Plan::compute(&dirs, &files).unwrap();
        assert_eq!(
            plan.summary(),
            vec![
                format!("create directory {}", d.display()),
                format!("create directory {}", d.join("log").display()),
                format!("create directory {}", d.join("etc").display()),
                format!("create {}", d.join("etc/x.yaml").display()),
            ]
        );
        let diff = serde_json::to_string(&plan.diff()).unwrap();
        assert!(!diff.contains("abc"), "{diff}");
        plan.apply().unwrap();
        assert!(Plan::compute(&dirs, &files).unwrap().is_empty());
        std::fs::set_permissions(
            d.join("etc/x.yaml"),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        let fix = Plan::compute(&dirs, &files).unwrap();
        assert_eq!(
            fix.summary(),
            vec![format!(
                "fix mode and owner of {}",
                d.join("etc/x.yaml").display()
            )]
        );
        fix.apply().unwrap();
        assert!(Plan::compute(&dirs, &files).unwrap().is_empty());
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_failure_halfway_reports_what_was_written_before_it() {
        let d = std::env::temp_dir().join(format!("pgherd-plan-half-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        // A regular file where the second file's directory belongs.
        std::fs::write(d.join("blocked"), b"").unwrap();
        let file = |p: PathBuf| DesiredFile {
            path: p,
            content: Content(b"x: 1\n".to_vec()),
            mode: 0o600,
            kind: FileKind::Yaml,
            owner: None,
        };
        let plan = Plan {
            changes: Plan::compute(&[], &[file(d.join("etc/a.yaml"))])
                .unwrap()
                .changes
                .into_iter()
                .chain([Change::CreateDir {
                    path: d.join("blocked/sub"),
                    mode: 0o750,
                    owner: None,
                }])
                .collect(),
        };
        let err = plan.apply().unwrap_err();
        match &err {
            crate::error::Error::AfterChanges { done, .. } => assert_eq!(
                done,
                &vec![
                    format!("create directory {}", d.join("etc").display()),
                    format!("create {}", d.join("etc/a.yaml").display()),
                ]
            ),
            other => panic!("not reported as after changes: {other}"),
        }
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_symbolic_link_where_a_file_belongs_is_replaced_never_read() {
        let d = std::env::temp_dir().join(format!("pgherd-plan-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let secret = d.join("secret");
        std::fs::write(&secret, b"root-only-content\n").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let conf = d.join("conf.yaml");
        std::os::unix::fs::symlink(&secret, &conf).unwrap();
        let files = vec![DesiredFile {
            path: conf.clone(),
            content: Content(b"a: 1\n".to_vec()),
            mode: 0o640,
            kind: FileKind::Yaml,
            owner: None,
        }];
        let plan = Plan::compute(&[], &files).unwrap();
        assert_eq!(
            plan.summary(),
            vec![
                format!(
                    "remove the symbolic link {} (to {}, not followed)",
                    conf.display(),
                    secret.display()
                ),
                format!("create {}", conf.display()),
            ]
        );
        let diff = serde_json::to_string(&plan.diff()).unwrap();
        assert!(!diff.contains("root-only-content"), "{diff}");
        plan.apply().unwrap();
        // The target is untouched: same bytes, same mode.
        assert_eq!(std::fs::read(&secret).unwrap(), b"root-only-content\n");
        let mode = std::fs::metadata(&secret).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert!(!std::fs::symlink_metadata(&conf)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(Plan::compute(&[], &files).unwrap().is_empty());
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn settings_secrets_are_masked_with_their_blocks() {
        let text = "etcd:\n  username: pg\n  password: \"s3:cr#t\"\n\
                    pgbackrest:\n  global_options:\n    repo1-cipher-pass: abc\n    \
                    repo1-s3-key-secret: |\n      line one\n      line two\n    \
                    repo1-s3-bucket: b\n  keyfile: /etc/k.pem\n  key: /etc/k2.pem\n\
                    patroni:\n  restapi:\n    password: null\n  superuser_password: ~\n";
        let masked = mask_secrets(text, FileKind::Settings);
        let m = crate::MASK;
        assert_eq!(
            masked,
            format!(
                "etcd:\n  username: pg\n  password: {m}\npgbackrest:\n  global_options:\n    \
                 repo1-cipher-pass: {m}\n    repo1-s3-key-secret: {m}\n    \
                 repo1-s3-bucket: b\n  keyfile: /etc/k.pem\n  key: /etc/k2.pem\npatroni:\n  \
                 restapi:\n    password: null\n  superuser_password: ~\n"
            )
        );
        for word in ["s3:cr", "abc", "line one", "line two"] {
            assert!(!masked.contains(word), "{word} in {masked}");
        }
    }
}
