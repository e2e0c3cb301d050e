//! Real hosts: three Debian hosts of the lab (systemd as PID 1, SSH as a
//! non-root user with sudo, Debian's PostgreSQL, Patroni and etcd), deployed
//! with site.yml over SSH in Debian's layout, then the faults only hosts
//! have, each with writes running and every acknowledged write checked:
//! the leader's host partitioned, a replica's host (and its etcd member)
//! partitioned, the leader's host crashed and booted again, and a rolling
//! reboot of every host. Then the instance module's systemd mode: restart,
//! stop, start, absent.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pgherd_e2e::{
    http_get, lab_ids, lab_rest, lab_sh, lab_sql, lab_story, one_task_playbook, pgherd_bin,
    repo_root, wait_for, Lab, PlaybookRun, TestDir, Writer,
};
use serde_json::{json, Value};

/// What each host's Patroni last logged and what etcd holds for the
/// cluster's leader and sync keys: printed with a timeout or an anomaly,
/// so that a failure in CI says why.
fn hosts_story() -> String {
    lab_story(
        &["lab1", "lab2", "lab3"],
        "sudo grep -v 'no action' /var/log/patroni/15-main/patroni.log | tail -n 12; \
                 sudo tail -n 2 /var/log/patroni/15-main/patroni.log; \
                 echo '- postgresql:'; sudo tail -n 8 /var/log/postgresql/postgresql-15-main.log; \
                 sudo -u postgres psql -XAtc 'SELECT status, sender_host, received_tli, \
                 latest_end_lsn FROM pg_stat_wal_receiver' 2>&1; \
                 for k in leader sync; do ETCDCTL_API=3 timeout 3 etcdctl \
                 --endpoints=http://127.0.0.1:2379 get /service/lab/$k; done",
    )
}

/// Each host's view of the cluster and of itself, then `hosts_story`.
fn writer_story() -> String {
    let views: Vec<String> = ["lab1", "lab2", "lab3"]
        .iter()
        .map(|h| {
            format!(
                "{h}: cluster {:?}\n{h}: patroni {:?}",
                cluster_from(h),
                patroni_of(h)
            )
        })
        .collect();
    format!("{}\n{}", views.join("\n"), hosts_story())
}

fn cluster_from(host: &str) -> Option<Value> {
    lab_rest(host, "/cluster")
}

fn patroni_of(host: &str) -> Option<Value> {
    lab_rest(host, "/patroni")
}

fn leader(view: &Value) -> Option<String> {
    view["members"].as_array()?.iter().find_map(|m| {
        (m["role"] == "leader" && m["state"] == "running")
            .then(|| m["name"].as_str().unwrap().to_string())
    })
}

/// The ground truth behind the DCS's view (which lags, and in which an old
/// Patroni's demoting leader reads like a replica): the members of `view`
/// other than `leader` that the leader's walsenders do not stream to, or
/// that do not say they are running replicas. `None` when the leader does
/// not answer.
fn left_behind(leader: &str, view: &Value) -> Option<Vec<String>> {
    let on_leader = patroni_of(leader)?;
    let streamed: BTreeSet<&str> = on_leader["replication"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter(|w| w["state"] == "streaming")
                .filter_map(|w| w["application_name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    Some(
        view["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["name"].as_str())
            .filter(|name| *name != leader)
            .filter(|name| {
                !(streamed.contains(name)
                    && patroni_of(name)
                        .is_some_and(|p| p["role"] == "replica" && p["state"] == "running"))
            })
            .map(str::to_string)
            .collect(),
    )
}

/// Waits until, seen from `hosts`, a leader runs (other than `not`) and
/// streams to every other member of `members`; returns the leader.
///
/// A member the DCS says streams, but the leader's walsenders have not
/// streamed to for 60 s (a member rewinding after a heal reads as a
/// running replica meanwhile), is reported with every host's logs and
/// reinitialised with the patroni module, as an operator does: after a
/// partition or a crash, Debian's Patroni 3.0.2 has been seen leaving a
/// member of a new timeline behind while it says "following a leader".
fn wait_whole(
    lab: &Lab,
    dir: &Path,
    hosts: &[&str],
    members: usize,
    not: Option<&str>,
    what: &str,
) -> String {
    let (leader, behind) = wait_whole_as(hosts, members, not, what, false);
    if behind.is_empty() {
        return leader;
    }
    let reinit = one_task_playbook(
        dir,
        "reinit",
        &leader,
        "pgherd.cluster.patroni",
        &json!({"cluster": "lab", "settings": "/etc/pgherd/settings.yaml", "reinit": behind}),
    );
    ok(
        &lab.playbook(dir, &reinit, &[]),
        &format!("the reinit of {behind:?} after {what}"),
    );
    wait_whole_as(hosts, members, not, what, true).0
}

/// `wait_whole` without the reinit: the leader, and the members left
/// behind after 60 s of disagreement (none with `walsenders`, which waits
/// for the leader's walsenders until the deadline).
fn wait_whole_as(
    hosts: &[&str],
    members: usize,
    not: Option<&str>,
    what: &str,
    walsenders: bool,
) -> (String, Vec<String>) {
    // Every host's view, until one names a leader whose own walsenders
    // stream to every other member: a host just back from a partition may
    // show an old view for a while, which must neither pass nor stall it.
    let views = || -> Vec<(String, Value)> {
        hosts
            .iter()
            .filter_map(|h| cluster_from(h).map(|v| (h.to_string(), v)))
            .collect()
    };
    let mut agreed_since: Option<Instant> = None;
    wait_for(
        what,
        Duration::from_secs(180),
        || {
            let dcs_says: Vec<(String, Value)> = views()
                .into_iter()
                .filter_map(|(_, v)| {
                    let l = leader(&v).filter(|l| Some(l.as_str()) != not)?;
                    // Patroni before 3.0.4 (Debian's) says "running" of a
                    // streaming replica: lag known is the sign there.
                    let streaming = v["members"]
                        .as_array()?
                        .iter()
                        .filter(|m| {
                            m["role"] != "leader"
                                && (m["state"] == "streaming"
                                    || (m["state"] == "running" && m["lag"].is_number()))
                        })
                        .count();
                    (streaming == members - 1).then_some((l, v))
                })
                .collect();
            let mut behind = None;
            for (l, v) in &dcs_says {
                match left_behind(l, v) {
                    Some(b) if b.is_empty() => return Some((l.clone(), b)),
                    Some(b) if behind.is_none() => behind = Some((l.clone(), b)),
                    _ => {}
                }
            }
            let Some((l, behind)) = behind else {
                agreed_since = None;
                return None;
            };
            let since = *agreed_since.get_or_insert_with(Instant::now);
            if walsenders || since.elapsed() < Duration::from_secs(60) {
                return None;
            }
            eprintln!(
                "lab: ANOMALY after {what}: for 60 s the DCS says {l} leads and every member \
                 streams, but its walsenders do not stream to {behind:?}: {:?}\n{}",
                patroni_of(&l).map(|p| p["replication"].clone()),
                hosts_story()
            );
            Some((l, behind))
        },
        || {
            views()
                .iter()
                .map(|(h, v)| {
                    let leader_says = leader(v)
                        .and_then(|l| patroni_of(&l))
                        .map(|p| format!("{} {}: {}", p["role"], p["state"], p["replication"]));
                    format!("{h} sees {v}; its leader says {leader_says:?}")
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n"
                + &hosts_story()
        },
    )
}

fn ok(run: &PlaybookRun, what: &str) {
    assert!(run.succeeded(), "{what}:\n{}", run.transcript());
}

fn changed_count(run: &PlaybookRun) -> usize {
    run.changed_tasks().len()
}

#[test]
fn a_cluster_of_real_hosts_over_ssh_survives_partitions_crashes_and_reboots() {
    let dir = TestDir::new("lab");
    let lab = Lab::up(3);
    let site = repo_root().join("playbooks/site.yml");

    // --- Debian bookworm's own Patroni (3.0.2, which can take the leader
    // key back from a new leader) is refused for new members before
    // anything is written; the lab's hosts run Patroni 4.0 from a
    // virtualenv.
    let debian = dir.join("debian-patroni");
    std::fs::create_dir_all(&debian).unwrap();
    let vars = Lab::inventory_vars().replace(
        "execpath: /opt/patroni/bin/patroni",
        "execpath: /usr/bin/patroni",
    );
    assert!(vars.contains("execpath: /usr/bin/patroni"), "{vars}");
    let refused = pgherd_e2e::ansible_playbook(
        &debian,
        &site,
        &Lab::inventory_with_vars(&debian, &vars),
        &[],
    );
    assert!(!refused.succeeded(), "{}", refused.transcript());
    let failed = refused.failed_tasks();
    assert!(
        !failed.is_empty()
            && failed.iter().all(|t| {
                let msg = t.result["msg"].to_string();
                msg.contains("/usr/bin/patroni is Patroni 3.0.2") && msg.contains("nothing")
            }),
        "{}",
        refused.transcript()
    );
    for host in &lab.hosts {
        let left = lab
            .ssh(
                host,
                "for p in /etc/patroni/15-main.yml /var/lib/postgresql/15/main \
                 /etc/systemd/system/patroni@15-main.service.d /etc/pgherd/settings.yaml; \
                 do test -e $p && echo $p; done; true",
            )
            .unwrap();
        assert_eq!(left.trim(), "", "{host}: written before the refusal");
    }

    // --- Deploy over SSH, as root through sudo, in Debian's layout.
    let started = Instant::now();
    let first = lab.playbook(&dir.path, &site, &[]);
    ok(&first, "the first deployment");
    eprintln!("lab: deployed in {:.1} s", started.elapsed().as_secs_f64());
    assert!(changed_count(&first) >= 3, "{}", first.transcript());
    let again = lab.playbook(&dir.path, &site, &[]);
    ok(&again, "the second deployment");
    assert_eq!(changed_count(&again), 0, "{}", again.transcript());
    let (l0, _) = wait_whole_as(
        &["lab1", "lab2", "lab3"],
        3,
        None,
        "the deployed cluster",
        true,
    );
    assert_eq!(l0, "lab1");
    // The replication role comes in from the members only: lab2 may,
    // this machine (on the bridge, not a member) may not.
    let identify = format!(
        "PGPASSWORD=lab-replication-pw /usr/lib/postgresql/15/bin/psql -XAt \
         'host={} user=replication dbname=postgres replication=true \
         connect_timeout=3' -c IDENTIFY_SYSTEM 2>&1",
        Lab::addr("lab1")
    );
    let identify = identify.as_str();
    let from_member = lab.ssh("lab2", identify).unwrap_or_else(|e| e);
    assert!(
        from_member
            .trim()
            .split('|')
            .next()
            .is_some_and(|id| id.len() > 10 && id.chars().all(|c| c.is_ascii_digit())),
        "lab2 could not replicate from lab1: {from_member}"
    );
    let from_here = Command::new("sh").args(["-c", identify]).output().unwrap();
    let said = String::from_utf8_lossy(&from_here.stdout);
    assert!(
        !from_here.status.success()
            && said.contains("no pg_hba.conf entry for replication connection"),
        "this machine, not a member, got a replication connection: {said}"
    );
    for host in &lab.hosts {
        let facts = lab
            .ssh(
                host,
                "test -f /etc/patroni/15-main.yml && echo config; \
                 systemctl is-enabled patroni@15-main; systemctl is-active patroni@15-main; \
                 ps -o user= -C patroni | sort -u; pg_lsclusters -h; \
                 test -s /var/log/postgresql/postgresql-15-main.log && echo log; \
                 sudo cat /etc/postgresql/15/main/start.conf | grep -v '^#'; \
                 test -e /etc/systemd/system/patroni@.service && echo own-unit || echo debian-unit; \
                 sudo stat -c 'settings %a %U' /etc/pgherd/settings.yaml",
            )
            .unwrap();
        let lines: Vec<&str> = facts.lines().map(str::trim).collect();
        assert_eq!(
            lines[..4],
            ["config", "enabled", "active", "postgres"],
            "{host}: {facts}"
        );
        let cluster: Vec<&str> = lines
            .iter()
            .find(|l| l.starts_with("15 "))
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        assert!(
            cluster.len() == 7
                && cluster[..4] == ["15", "main", "5432", "online"]
                && cluster[5] == "/var/lib/postgresql/15/main"
                && cluster[6] == "/var/log/postgresql/postgresql-15-main.log",
            "{host}: pg_lsclusters: {facts}"
        );
        assert!(
            lines.contains(&"log")
                && lines.contains(&"manual")
                && lines.contains(&"debian-unit")
                && lines.contains(&"settings 600 root"),
            "{host}: {facts}"
        );
    }

    // pg_ctlcluster is not fooled: the cluster runs, under Patroni. Under
    // systemd, Debian's pg_ctlcluster hands `start` to postgresql@15-main,
    // whose start finds the running postmaster and fails: no second server,
    // the same postmaster before and after.
    let pid = "sudo head -1 /var/lib/postgresql/15/main/postmaster.pid";
    let ctl = lab
        .ssh(
            "lab1",
            &format!(
                "{pid}; sudo pg_ctlcluster 15 main start 2>&1; echo rc=$?; \
                 sudo pg_ctlcluster 15 main status | head -1; {pid}; \
                 sudo systemctl reset-failed postgresql@15-main 2>/dev/null; true"
            ),
        )
        .unwrap();
    let ctl_lines: Vec<&str> = ctl.lines().map(str::trim).collect();
    assert!(
        ctl.contains("server is running")
            && !ctl.contains("rc=0")
            && ctl_lines.first().is_some_and(|p| p.parse::<u32>().is_ok())
            && ctl_lines.first() == ctl_lines.last(),
        "{ctl}"
    );

    // A parameter change reloads every node through Debian's unit.
    let change = ["-e", r#"{"pg_parameters": {"work_mem": "12MB"}}"#];
    let reloaded = lab.playbook(&dir.path, &site, &change);
    ok(&reloaded, "a parameter change");
    let instance_runs: Vec<_> = reloaded
        .events
        .iter()
        .filter(|e| e.task == "PostgreSQL instance managed by Patroni")
        .collect();
    assert_eq!(instance_runs.len(), 3, "{}", reloaded.transcript());
    for e in &instance_runs {
        assert!(
            e.changed() && e.result["changes"].to_string().contains("reload Patroni"),
            "{}: {}",
            e.host,
            e.result
        );
        assert_eq!(
            e.result["instance"]["pending_restart"], false,
            "{}",
            e.result
        );
    }
    for host in &lab.hosts {
        let shown = lab
            .ssh(host, "sudo -u postgres psql -XAtc 'show work_mem'")
            .unwrap();
        assert_eq!(shown.trim(), "12MB", "{host}");
    }
    let unchanged = lab.playbook(&dir.path, &site, &change);
    ok(&unchanged, "the same change again");
    assert_eq!(changed_count(&unchanged), 0, "{}", unchanged.transcript());
    ok(&lab.playbook(&dir.path, &site, &[]), "the parameter back");

    // --- Synchronous replication and a writer through libpq's multi-host
    // connection string, which follows the leader. Every replica is a
    // synchronous standby: with one of two, Patroni (before its quorum mode)
    // refuses to fail over when the asynchronous replica received more WAL
    // than the synchronous one at the leader's crash ("Wal position of ...
    // is ahead of my wal position"), and the cluster stays without a leader.
    let sync = one_task_playbook(
        &dir.path,
        "sync",
        "lab1",
        "pgherd.cluster.patroni",
        &json!({"cluster": "lab", "settings": "/etc/pgherd/settings.yaml",
                "dynamic_config": {"synchronous_mode": true, "synchronous_node_count": 2}}),
    );
    ok(&lab.playbook(&dir.path, &sync, &[]), "synchronous mode");
    // The task returned once the leader chose both, as the DCS shows.
    let view = cluster_from("lab1").expect("lab1's REST API");
    let syncs = view["members"]
        .as_array()
        .map(|ms| ms.iter().filter(|m| m["role"] == "sync_standby").count());
    assert_eq!(syncs, Some(2), "{view}");
    let all = Lab::all_three();
    lab_sql(&all, true, "CREATE TABLE acked (id bigint PRIMARY KEY)").expect("create the table");
    let writer = Writer::start(&all, "acked", writer_story);
    writer.wait_progress(20, "before the faults");

    // --- The leader's host cut off from its peers.
    let cut = Instant::now();
    lab_sh(&["partition", "lab1"]);
    let l1 = wait_for(
        "a new leader on the majority side",
        Duration::from_secs(120),
        || {
            cluster_from("lab2")
                .and_then(|v| leader(&v))
                .filter(|l| l != "lab1")
        },
        || format!("{:?}\n{}", cluster_from("lab2"), hosts_story()),
    );
    eprintln!(
        "lab: {l1} leads {:.1} s after the leader's host was cut off",
        cut.elapsed().as_secs_f64()
    );
    writer.wait_progress(10, "on the new leader");
    // What a surviving host says: pgherd status there tells the truth.
    let scp = Command::new("scp")
        .args([
            "-q",
            "-i",
            &Lab::key().display().to_string(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(pgherd_bin())
        .arg(format!("ops@{}:/tmp/pgherd", Lab::addr("lab2")))
        .status()
        .unwrap();
    assert!(scp.success());
    let status = lab
        .ssh(
            "lab2",
            "sudo /tmp/pgherd -s /etc/pgherd/settings.yaml -c lab status",
        )
        .unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with(&l1) && l.contains("Leader")),
        "{status}"
    );
    assert!(
        !status
            .lines()
            .any(|l| l.starts_with("lab1") && l.contains("Leader") && l.contains("running")),
        "the cut-off former leader shown leading and answering:\n{status}"
    );
    // The patroni module on the majority side works.
    let info = one_task_playbook(
        &dir.path,
        "info",
        "lab2",
        "pgherd.cluster.patroni",
        &json!({"cluster": "lab", "settings": "/etc/pgherd/settings.yaml", "state": "info"}),
    );
    let read = lab.playbook(&dir.path, &info, &[]);
    ok(&read, "patroni info during the partition");
    assert_eq!(read.events[0].result["cluster"]["leader"], json!(l1));
    lab_sh(&["heal", "lab1"]);
    wait_whole(
        &lab,
        &dir.path,
        &["lab2", "lab3"],
        3,
        None,
        "lab1 to rejoin after the partition",
    );
    let log = lab
        .ssh("lab1", "sudo cat /var/log/patroni/15-main/patroni.log")
        .unwrap_or_default();
    eprintln!(
        "lab: lab1 rejoined {}",
        if log.contains("pg_rewind") {
            "with pg_rewind"
        } else {
            "without a rewind"
        }
    );
    if log.contains("diverged") {
        assert!(
            log.contains("pg_rewind"),
            "lab1 diverged and was not rewound:\n{log}"
        );
    }
    let after = lab.playbook(&dir.path, &site, &[]);
    ok(&after, "site.yml after the partition");
    assert_eq!(changed_count(&after), 0, "{}", after.transcript());

    // --- A replica's host and its etcd member cut off: two members go on.
    let view = cluster_from("lab2").unwrap();
    let current = leader(&view).unwrap();
    let replica = ["lab1", "lab2", "lab3"]
        .into_iter()
        .find(|h| *h != current)
        .unwrap();
    lab_sh(&["partition", replica]);
    writer.wait_progress(20, &format!("with {replica} cut off"));
    let on_leader = one_task_playbook(
        &dir.path,
        "info-leader",
        &current,
        "pgherd.cluster.patroni",
        &json!({"cluster": "lab", "settings": "/etc/pgherd/settings.yaml", "state": "info"}),
    );
    ok(
        &lab.playbook(&dir.path, &on_leader, &[]),
        "patroni info with a replica cut off",
    );
    lab_sh(&["heal", replica]);
    let current = wait_whole(
        &lab,
        &dir.path,
        &["lab1", "lab2", "lab3"],
        3,
        None,
        "the replica to stream again",
    );

    // --- The leader's host crashed, then booted: systemd starts Patroni,
    // and the node rejoins without Ansible.
    lab_sh(&["crash", &current]);
    let others: Vec<&str> = ["lab1", "lab2", "lab3"]
        .into_iter()
        .filter(|h| *h != current)
        .collect();
    wait_for(
        "a new leader after the crash",
        Duration::from_secs(120),
        || {
            others
                .iter()
                .find_map(|h| cluster_from(h))
                .and_then(|v| leader(&v))
                .filter(|l| *l != current)
        },
        || {
            format!(
                "{:?}\n{}",
                others.iter().find_map(|h| cluster_from(h)),
                hosts_story()
            )
        },
    );
    writer.wait_progress(10, "after the crash");
    lab_sh(&["boot", &current]);
    wait_whole(
        &lab,
        &dir.path,
        &others,
        3,
        None,
        "the crashed host's member to rejoin",
    );

    // --- A rolling reboot of every host, the leader last.
    let rolling = lab.playbook(
        &dir.path,
        &repo_root().join("playbooks/rolling-reboot.yml"),
        &[],
    );
    ok(&rolling, "the rolling reboot");
    wait_whole(
        &lab,
        &dir.path,
        &["lab1", "lab2", "lab3"],
        3,
        None,
        "the cluster after the rolling reboot",
    );
    writer.wait_progress(10, "after the rolling reboot");

    // --- No acknowledged write lost, on any member.
    let acked = writer.finish();
    eprintln!(
        "lab: {} writes acknowledged through the faults",
        acked.len()
    );
    let view = cluster_from("lab1").unwrap();
    let final_leader = leader(&view).unwrap();
    let rows =
        |host: &str| -> BTreeSet<u64> { lab_ids(&format!("host={}", Lab::addr(host)), "acked") };
    let on_leader = rows(&final_leader);
    let lost: Vec<&u64> = acked.iter().filter(|id| !on_leader.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    for host in ["lab1", "lab2", "lab3"] {
        wait_for(
            &format!("{host} to hold every acknowledged write"),
            Duration::from_secs(60),
            || acked.iter().all(|id| rows(host).contains(id)).then_some(()),
            || format!("{} rows on {host}", rows(host).len()),
        );
    }

    // --- The instance module's systemd mode on a replica: restart, stop,
    // start, absent, and deployed again.
    let replica = ["lab1", "lab2", "lab3"]
        .into_iter()
        .find(|h| *h != final_leader)
        .unwrap();
    let with_state = |state: &str| -> Vec<String> {
        vec![
            "-l".into(),
            replica.into(),
            "-e".into(),
            format!("pg_state={state}"),
        ]
    };
    let run_state = |state: &str| {
        let args = with_state(state);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = lab.playbook(&dir.path, &site, &args);
        ok(&run, &format!("state {state} on {replica}"));
    };
    let start_time = || {
        http_get(&format!("{}:8008", Lab::addr(replica)), "/patroni")
            .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
            .and_then(|v| v["postmaster_start_time"].as_str().map(str::to_string))
    };
    let before = start_time();
    run_state("restarted");
    assert_ne!(start_time(), before, "PostgreSQL was not restarted");
    run_state("stopped");
    let unit = lab
        .ssh(
            replica,
            "systemctl is-active patroni@15-main; pgrep -c -u postgres postgres || true",
        )
        .unwrap_or_default();
    assert!(
        unit.starts_with("inactive") && unit.trim_end().ends_with('0'),
        "{replica}: {unit}"
    );
    run_state("started");
    run_state("absent");
    let gone = lab
        .ssh(replica, "ls /etc/patroni/ /var/lib/postgresql/15 /etc/postgresql/15 2>&1; systemctl is-enabled patroni@15-main || true")
        .unwrap_or_default();
    assert!(
        !gone.contains("15-main.yml") && gone.contains("disabled"),
        "{replica}: {gone}"
    );
    ok(
        &lab.playbook(&dir.path, &site, &["-l", replica]),
        "the replica deployed again",
    );
    wait_whole(
        &lab,
        &dir.path,
        &["lab1", "lab2", "lab3"],
        3,
        None,
        "the replica deployed again to stream",
    );
}
