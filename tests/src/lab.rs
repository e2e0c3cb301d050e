//! The lab of Debian hosts booted by `scripts/lab.sh`: up for a test,
//! reached over SSH, its inventory, and curl for its TLS endpoints.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// The lab of Debian hosts (`scripts/lab.sh`), up for the life of a test
/// and taken down after it (unless `PGHERD_KEEP_LAB` is set).
pub struct Lab {
    pub hosts: Vec<String>,
}

/// Runs `scripts/lab.sh` with `args`; its output, or the test fails.
pub fn lab_sh(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/lab.sh"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/lab.sh");
    assert!(
        out.status.success(),
        "scripts/lab.sh {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Lab {
    /// Boots `n` hosts (lab1..labN), the image built or restored first.
    pub fn up(n: u8) -> Lab {
        assert_collection_is_fresh();
        lab_sh(&["down"]);
        lab_sh(&["up", "--hosts", &n.to_string()]);
        Lab {
            hosts: (1..=n).map(|i| format!("lab{i}")).collect(),
        }
    }

    /// Boots `n` hosts with the cluster's packages and one more,
    /// lab(n+1), from an older Debian holding only the OS.
    pub fn up_with_old(n: u8) -> Lab {
        assert_collection_is_fresh();
        lab_sh(&["down"]);
        lab_sh(&["up", "--hosts", &n.to_string(), "--old"]);
        Lab {
            hosts: (1..=n + 1).map(|i| format!("lab{i}")).collect(),
        }
    }

    /// Boots `n` hosts with only the OS (no etcd member), apt reaching
    /// Debian's archive through the machine's proxy.
    pub fn up_bare(n: u8) -> Lab {
        assert_collection_is_fresh();
        lab_sh(&["down"]);
        lab_sh(&["up", "--hosts", &n.to_string(), "--bare"]);
        Lab {
            hosts: (1..=n).map(|i| format!("lab{i}")).collect(),
        }
    }

    /// An inventory in `dir` of these `hosts` only, with the lab
    /// inventory's variables (user, become, key); the hosts are also the
    /// `etcd` group.
    pub fn inventory_of(dir: &Path, hosts: &[&str]) -> PathBuf {
        let inventory = dir.join("inventory");
        std::fs::create_dir_all(inventory.join("group_vars")).expect("inventory directory");
        std::fs::copy(
            Lab::inventory().join("group_vars/all.yml"),
            inventory.join("group_vars/all.yml"),
        )
        .expect("copy the lab's variables");
        let listed: String = hosts
            .iter()
            .map(|h| format!("    {h}:\n      ansible_host: {}\n", Lab::addr(h)))
            .collect();
        let members: String = hosts.iter().map(|h| format!("        {h}:\n")).collect();
        std::fs::write(
            inventory.join("hosts.yml"),
            format!("all:\n  hosts:\n{listed}  children:\n    etcd:\n      hosts:\n{members}"),
        )
        .expect("write the inventory");
        inventory
    }

    /// The lab's address of a host.
    pub fn addr(host: &str) -> String {
        format!("10.231.0.{}", 10 + host[3..].parse::<u32>().expect("labN"))
    }

    /// The wheelhouse of Patroni that `up --bare` serves on the bridge, for
    /// pip's `--find-links`.
    pub fn wheelhouse() -> String {
        "http://10.231.0.1:3143/".to_string()
    }

    pub fn inventory() -> PathBuf {
        repo_root().join("playbooks/inventories/lab")
    }

    /// A command on a host over SSH, as the lab's user: its output, or
    /// what it printed when it failed.
    pub fn ssh(&self, host: &str, command: &str) -> Result<String, String> {
        lab_ssh(host, command)
    }

    /// An ansible-playbook run on the lab's inventory.
    pub fn playbook(&self, dir: &Path, playbook: &Path, extra: &[&str]) -> PlaybookRun {
        ansible_playbook(dir, playbook, &Lab::inventory(), extra)
    }
}

/// `curl -X method url` with `options` (TLS files, credentials): the HTTP
/// status, or None when no HTTP exchange happened (TLS refused, nothing
/// listening).
pub fn curl_status(method: &str, url: &str, options: &[&str]) -> Option<u16> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .args(["-X", method])
        .args(options)
        .arg(url)
        .output()
        .expect("run curl");
    let code: u16 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (out.status.success() && code != 0).then_some(code)
}

/// `command` run on a lab host over SSH (as its user): its output, or its
/// output and errors when it failed. For code that holds no [`Lab`] (a
/// diagnostic printed while a test fails).
pub fn lab_ssh(host: &str, command: &str) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/lab.sh"))
        .args(["ssh", host, command])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run scripts/lab.sh ssh: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::env::var_os("PGHERD_KEEP_LAB").is_none() {
            let _ = Command::new("bash")
                .arg(repo_root().join("scripts/lab.sh"))
                .arg("down")
                .stdin(Stdio::null())
                .output();
        }
    }
}
