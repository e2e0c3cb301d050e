//! What runs against what is installed: PostgreSQL's and Patroni's
//! versions, for minor upgrades (new packages installed, the running
//! programs restarted one member at a time).

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

/// The programs of a node a minor upgrade restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Program {
    Patroni,
    Postgresql,
}

impl Program {
    pub fn parse(s: &str) -> Option<Program> {
        match s {
            "patroni" => Some(Program::Patroni),
            "postgresql" => Some(Program::Postgresql),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Program::Patroni => "patroni",
            Program::Postgresql => "postgresql",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Program::Patroni => "Patroni",
            Program::Postgresql => "PostgreSQL",
        }
    }
}

/// One program's version as it runs and as it is installed; `None` where
/// it could not be read (not running, or a program that does not say).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ProgramVersion {
    pub running: Option<String>,
    pub installed: Option<String>,
}

impl ProgramVersion {
    /// Both known and different: the running program is not the one
    /// installed (older after a package upgrade, newer after a downgrade).
    pub fn differs(&self) -> bool {
        match (&self.running, &self.installed) {
            (Some(r), Some(i)) => compare(r, i) != Ordering::Equal,
            _ => false,
        }
    }
}

/// The node's programs' versions.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Versions {
    pub postgresql: ProgramVersion,
    pub patroni: ProgramVersion,
}

impl Versions {
    pub fn of(&self, p: Program) -> &ProgramVersion {
        match p {
            Program::Patroni => &self.patroni,
            Program::Postgresql => &self.postgresql,
        }
    }

    /// The programs that run another version than the one installed.
    pub fn outdated(&self) -> Vec<Program> {
        [Program::Patroni, Program::Postgresql]
            .into_iter()
            .filter(|p| self.of(*p).differs())
            .collect()
    }

    /// `PostgreSQL 15.18 runs, 15.20 is installed`.
    pub fn describe(&self, p: Program) -> String {
        let v = self.of(p);
        format!(
            "{} {} runs, {} is installed",
            p.title(),
            v.running.as_deref().unwrap_or("?"),
            v.installed.as_deref().unwrap_or("?")
        )
    }
}

/// Versions compared number by number (`4.1.5` > `4.0.11`, `15.20` >
/// `15.9`); a suffix such as `rc1` counts as further numbers.
pub fn compare(a: &str, b: &str) -> Ordering {
    let numbers = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().unwrap_or(u64::MAX))
            .collect()
    };
    numbers(a).cmp(&numbers(b))
}

/// PostgreSQL's `server_version_num` as a version: 150018 is `15.18`
/// (two numbers from PostgreSQL 10 on, three before).
pub fn from_version_num(n: u64) -> String {
    if n >= 100_000 {
        format!("{}.{}", n / 10_000, n % 10_000)
    } else {
        format!("{}.{}.{}", n / 10_000, n / 100 % 100, n % 100)
    }
}

/// The version in a PostgreSQL program's `--version` line: `pg_ctl
/// (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)` is `15.20`.
pub fn parse_postgres_version(line: &str) -> Option<String> {
    let rest = line.trim().split_once(')')?.1;
    let v = rest.split_whitespace().next()?;
    v.starts_with(|c: char| c.is_ascii_digit())
        .then(|| v.to_string())
}

/// The version of the PostgreSQL programs in `bin_dir`.
pub fn installed_postgres(bin_dir: &Path) -> Option<String> {
    PendingVersion::start(bin_dir).finish()
}

/// `pg_ctl --version` started, read later: it runs while the caller asks
/// Patroni for the rest, so that a run's facts wait for neither. pg_ctl,
/// built with the server and printing its version, starts in about a
/// millisecond and 2 MB; `postgres --version` took 13 ms and 14 MB (its
/// libraries), which every no-op run paid.
pub struct PendingVersion(Option<std::process::Child>);

impl PendingVersion {
    pub fn start(bin_dir: &Path) -> PendingVersion {
        PendingVersion(
            Command::new(bin_dir.join("pg_ctl"))
                .arg("--version")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .ok(),
        )
    }

    /// The version it printed; `None` when it failed or took more than a
    /// few seconds (then it is killed). Its exit is noticed at once: it
    /// takes about a millisecond, and every run waits for it.
    pub fn finish(mut self) -> Option<String> {
        let mut child = self.0.take()?;
        let watch = crate::process::ExitWatch::new(&child);
        match watch.exit_within(&mut child, Duration::from_secs(10)) {
            Ok(Some(status)) if status.success() => {}
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
        let mut out = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
        parse_postgres_version(out.lines().next()?)
    }
}

impl Drop for PendingVersion {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `__version__ = '4.1.5'` in Patroni's `version.py`.
pub fn parse_patroni_version_py(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.trim().strip_prefix("__version__")?.trim_start();
        let v = v.strip_prefix('=')?.trim();
        let v = v.trim_matches(|c| c == '\'' || c == '"');
        (!v.is_empty()).then(|| v.to_string())
    })
}

/// Where the Python package of the Patroni that `execpath` starts lives:
/// its interpreter (the script's `#!` line) names the prefix (a
/// virtualenv's, or `/usr`), whose site- or dist-packages hold it.
fn patroni_version_files(execpath: &Path) -> Vec<PathBuf> {
    let Ok(head) = std::fs::read(execpath).map(|b| b.into_iter().take(256).collect::<Vec<_>>())
    else {
        return Vec::new();
    };
    let head = String::from_utf8_lossy(&head);
    let Some(interpreter) = head
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("#!"))
        .and_then(|l| l.split_whitespace().next())
    else {
        return Vec::new();
    };
    let Some(prefix) = Path::new(interpreter).parent().and_then(Path::parent) else {
        return Vec::new();
    };
    let mut out = vec![prefix.join("lib/python3/dist-packages/patroni/version.py")];
    for lib in ["lib", "local/lib"] {
        let Ok(entries) = std::fs::read_dir(prefix.join(lib)) else {
            continue;
        };
        let mut pythons: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
            .map(|e| e.path())
            .collect();
        pythons.sort();
        for p in pythons {
            for packages in ["site-packages", "dist-packages"] {
                out.push(p.join(packages).join("patroni/version.py"));
            }
        }
    }
    out
}

/// The version of the Patroni `execpath` starts, as its package's
/// `version.py` says (a file read, no Python started); `None` when the
/// package is not where its interpreter's prefix puts it.
pub fn packaged_patroni(execpath: &Path) -> Option<String> {
    patroni_version_files(execpath)
        .iter()
        .find_map(|f| std::fs::read_to_string(f).ok())
        .and_then(|t| parse_patroni_version_py(&t))
}

/// The first Patroni whose etcd v3 leader-key renewal is conditional.
/// Before it (2.0 to 3.0.2), a leader whose lease expired (a partition or
/// a stall longer than ttl) grants itself a new lease and, when the view
/// of the cluster it acts on still names it, puts the leader key
/// unconditionally: it takes the key back from the member elected
/// meanwhile, both run as primaries, and writes the new leader
/// acknowledged are lost when it is rewound (patroni/patroni#2693).
pub const PATRONI_SAFE_LEADER_KEY: &str = "3.0.3";

/// Whether Patroni `version` can overwrite another member's leader key.
pub fn patroni_steals_leader_key(version: &str) -> bool {
    compare(version, PATRONI_SAFE_LEADER_KEY) == Ordering::Less
}

/// The version of the Patroni `execpath` starts: read from its package
/// when it can be found, else asked (`patroni --version`, a Python start).
pub fn installed_patroni(execpath: &Path) -> Option<String> {
    packaged_patroni(execpath).or_else(|| {
        let out = run_version(execpath)?;
        // `patroni 4.1.5`
        out.split_whitespace().nth(1).map(str::to_string)
    })
}

/// `program --version`'s output, within a few seconds.
fn run_version(program: &Path) -> Option<String> {
    let mut cmd = Command::new(program);
    cmd.arg("--version");
    let done =
        crate::process::run(&mut cmd, "--version", Duration::from_secs(20), String::new).ok()?;
    done.status
        .success()
        .then_some(done.stdout)
        .filter(|s| !s.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_number_by_number() {
        let table = [
            ("4.1.5", "4.0.11", Ordering::Greater),
            ("15.20", "15.9", Ordering::Greater),
            ("15.18", "15.18", Ordering::Equal),
            ("3.0.2", "3.0.4", Ordering::Less),
            ("4.1.0", "4.1.0rc1", Ordering::Less),
        ];
        for (a, b, want) in table {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
        }
    }

    #[test]
    fn patroni_before_3_0_3_overwrites_the_leader_key() {
        let table = [
            ("3.0.2", true),
            ("2.1.7", true),
            ("3.0.0", true),
            ("3.0.3", false),
            ("3.3.0", false),
            ("4.0.7", false),
            ("4.1.5", false),
        ];
        for (v, steals) in table {
            assert_eq!(patroni_steals_leader_key(v), steals, "{v}");
        }
    }

    #[test]
    fn server_version_numbers_read_as_versions() {
        assert_eq!(from_version_num(150018), "15.18");
        assert_eq!(from_version_num(170010), "17.10");
        assert_eq!(from_version_num(90624), "9.6.24");
    }

    #[test]
    fn version_lines_are_read() {
        let table = [
            (
                "postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n",
                Some("15.20"),
            ),
            ("postgres (PostgreSQL) 17.10\n", Some("17.10")),
            (
                "pg_ctl (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n",
                Some("15.18"),
            ),
            ("postgres (PostgreSQL) 18beta1\n", Some("18beta1")),
            ("something else", None),
        ];
        for (line, want) in table {
            assert_eq!(parse_postgres_version(line).as_deref(), want, "{line}");
        }
        assert_eq!(
            parse_patroni_version_py("__version__ = '4.1.5'\n").as_deref(),
            Some("4.1.5")
        );
        assert_eq!(
            parse_patroni_version_py("# x\n__version__ = \"3.0.2\"\n").as_deref(),
            Some("3.0.2")
        );
    }

    #[test]
    fn only_known_and_different_versions_are_outdated() {
        let v = |r: Option<&str>, i: Option<&str>| ProgramVersion {
            running: r.map(str::to_string),
            installed: i.map(str::to_string),
        };
        let versions = Versions {
            postgresql: v(Some("15.18"), Some("15.20")),
            patroni: v(Some("4.1.5"), Some("4.1.5")),
        };
        assert_eq!(versions.outdated(), [Program::Postgresql]);
        assert_eq!(
            versions.describe(Program::Postgresql),
            "PostgreSQL 15.18 runs, 15.20 is installed"
        );
        let unknown = Versions {
            postgresql: v(None, Some("15.20")),
            patroni: v(Some("4.0.11"), Some("4.1.5")),
        };
        assert_eq!(unknown.outdated(), [Program::Patroni]);
    }

    #[test]
    fn patronis_version_is_found_from_its_interpreter() {
        let dir = std::env::temp_dir().join(format!("pgherd-versions-{}", std::process::id()));
        let site = dir.join("venv/lib/python3.11/site-packages/patroni");
        std::fs::create_dir_all(&site).unwrap();
        std::fs::create_dir_all(dir.join("venv/bin")).unwrap();
        std::fs::write(site.join("version.py"), "__version__ = '4.0.11'\n").unwrap();
        let exe = dir.join("venv/bin/patroni");
        std::fs::write(
            &exe,
            format!("#!{}/venv/bin/python3\nimport sys\n", dir.display()),
        )
        .unwrap();
        assert_eq!(installed_patroni(&exe).as_deref(), Some("4.0.11"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
