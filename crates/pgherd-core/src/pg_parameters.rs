//! PostgreSQL's own list of parameters, and the names given that are not
//! on it (with the closest one), checked before anything is written.

use std::path::Path;
use std::time::Duration;

/// The parameters PostgreSQL of `bin_dir` knows, as its own
/// `postgres --describe-config` lists them (root may run it).
pub fn known_parameters(bin_dir: &Path) -> crate::error::Result<Vec<String>> {
    let postgres = bin_dir.join("postgres");
    let out = crate::process::run(
        crate::process::command(&postgres, None).arg("--describe-config"),
        "postgres --describe-config",
        Duration::from_secs(30),
        String::new,
    )?;
    if !out.status.success() {
        return Err(crate::error::Error::Other(format!(
            "{} --describe-config failed: {}",
            postgres.display(),
            out.stderr.trim()
        )));
    }
    let mut names: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|l| l.split('\t').next())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    names.sort();
    Ok(names)
}

/// Edit distance, for suggestions.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Each of `names` that is not a parameter of `known` (custom ones, with
/// a `.`, are for extensions and pass), with the closest known name.
/// `key` names where they come from (`parameters`).
pub fn unknown_parameters<'a>(
    key: &str,
    names: impl IntoIterator<Item = &'a String>,
    known: &[String],
    version: &str,
) -> Vec<String> {
    names
        .into_iter()
        .filter(|n| !n.contains('.') && !known.contains(n))
        .map(|n| {
            let near = known
                .iter()
                .map(|k| (distance(n, k), k))
                .min()
                .filter(|(d, _)| *d <= 3);
            match near {
                Some((_, k)) => format!(
                    "{key}.{n} is not a parameter of PostgreSQL {version}: did you mean {k}?"
                ),
                None => format!("{key}.{n} is not a parameter of PostgreSQL {version}"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_parameters_are_named_with_the_closest_known_one() {
        let known: Vec<String> = ["shared_buffers", "work_mem", "wal_level"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let given: Vec<String> = [
            "work_mme",
            "pg_stat_statements.max",
            "wal_level",
            "zzzzzzzzzz",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            unknown_parameters("parameters", &given, &known, "15"),
            vec![
                "parameters.work_mme is not a parameter of PostgreSQL 15: did you mean work_mem?",
                "parameters.zzzzzzzzzz is not a parameter of PostgreSQL 15",
            ]
        );
    }
}
