//! HAProxy deployed by the collection's haproxy role on a lab host, with
//! real client traffic: writes through its read-write port reach only the
//! leader, across a switchover (its unavailability measured); reads through
//! its read-only port reach only replicas, never one lagging more than the
//! limit (a replica cut from the leader's WAL is taken out, then back); a
//! port taken by another program and a lag that is not a size are refused
//! before anything changes.

use std::time::Duration;

use pgherd_e2e::{
    lab_ids, lab_sql, lab_sql_port, lab_story, lab_wait_whole, repo_root, wait_for, Lab, TestDir,
    Writer,
};

const HOSTS: [&str; 3] = ["lab1", "lab2", "lab3"];
/// Not the role's defaults.
const RW_PORT: u16 = 5010;
const RO_PORT: u16 = 5011;
const STATS_PORT: u16 = 8410;
/// HAProxy runs on lab1.
const PROXY: &str = "10.231.0.11";

fn story() -> String {
    lab_story(
        &HOSTS,
        "curl -s http://$(hostname -I | cut -d' ' -f1):8008/patroni; echo; \
         curl -s 'http://127.0.0.1:8410/stats;csv' 2>/dev/null | cut -d, -f1,2,18 | grep -v '^#'",
    )
}

/// The server a new connection through `port` reaches, and whether it is
/// a standby: `10.231.0.12|true`.
fn through(port: u16) -> Option<String> {
    lab_sql_port(
        &format!("host={PROXY}"),
        port,
        false,
        "SELECT host(inet_server_addr()) || '|' || pg_is_in_recovery()",
    )
}

fn role_playbook(dir: &TestDir, name: &str, host: &str, vars: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "- hosts: {host}\n  gather_facts: false\n  roles:\n\
             \x20   - role: pgherd.cluster.haproxy\n\
             \x20     haproxy_primary_port: {RW_PORT}\n\
             \x20     haproxy_replica_port: {RO_PORT}\n\
             \x20     haproxy_stats_port: {STATS_PORT}\n{vars}"
        ),
    )
    .unwrap();
    path
}

#[test]
fn haproxy_sends_writes_to_the_leader_and_reads_to_replicas_within_the_lag() {
    let dir = TestDir::new("lab-haproxy");
    let lab = Lab::up(3);
    lab.playbook(&dir.path, &repo_root().join("playbooks/site.yml"), &[])
        .assert_ok("site.yml");
    lab_wait_whole(&HOSTS, "lab1", "the cluster whole", story);
    let installed = |host: &str| {
        lab.ssh(host, "dpkg-query -W -f '${db:Status-Status}' haproxy")
            .is_ok_and(|s| s.trim() == "installed")
    };

    // Refused before anything changes: a lag that is not a size; a port
    // another program listens on.
    let bad = role_playbook(
        &dir,
        "bad.yml",
        "lab2",
        "      haproxy_replica_max_lag: lots\n",
    );
    let refused = lab.playbook(&dir.path, &bad, &[]);
    assert!(!refused.succeeded(), "{}", refused.transcript());
    let msg = refused.failed_tasks()[0].result["msg"].to_string();
    assert!(
        msg.contains("(given: lots)") && msg.contains("nothing was changed"),
        "{msg}"
    );
    lab.ssh(
        "lab2",
        &format!(
            "nohup python3 -m http.server {RO_PORT} --bind 0.0.0.0 >/dev/null 2>&1 & \
             for i in $(seq 50); do ss -Hltn 'sport = :{RO_PORT}' | grep -q . && break; sleep 0.1; done"
        ),
    )
    .unwrap();
    let taken = role_playbook(&dir, "taken.yml", "lab2", "");
    let refused = lab.playbook(&dir.path, &taken, &[]);
    assert!(!refused.succeeded(), "{}", refused.transcript());
    let msg = refused.failed_tasks()[0].result["msg"].to_string();
    assert!(
        msg.contains(&format!(":{RO_PORT}"))
            && msg.contains("python3")
            && msg.contains("nothing was changed"),
        "{msg}"
    );
    assert!(!installed("lab2"), "the refusals installed nothing");
    lab.ssh("lab2", "pkill -f '[h]ttp.server' || true").unwrap();

    // Check mode, the run, the run again.
    let proxy = role_playbook(
        &dir,
        "haproxy.yml",
        "lab1",
        "      haproxy_replica_max_lag: 1MB\n",
    );
    let check = lab.playbook(&dir.path, &proxy, &["--check"]);
    check.assert_ok("the role in check mode");
    assert!(!check.changed_tasks().is_empty(), "{}", check.transcript());
    assert!(!installed("lab1"), "check mode installs nothing");
    lab.playbook(&dir.path, &proxy, &[]).assert_ok("the role");
    assert!(installed("lab1"));
    lab.playbook(&dir.path, &proxy, &[])
        .assert_unchanged("the role again");

    // Writes reach the leader, reads the replicas.
    assert_eq!(through(RW_PORT).as_deref(), Some("10.231.0.11|false"));
    let mut replicas = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let r = through(RO_PORT).expect("a read through HAProxy");
        assert!(r.ends_with("|true"), "{r}");
        replicas.insert(r);
    }
    assert_eq!(replicas.len(), 2, "both replicas take reads: {replicas:?}");

    // lab3 cut from the leader's WAL (its REST API still answers): once it
    // lags more than 1 MB it takes no read; back when it catches up.
    lab_sql(
        "host=10.231.0.11",
        true,
        "CREATE TABLE filler (id bigint, pad text)",
    )
    .unwrap();
    lab.ssh(
        "lab3",
        "sudo nft add table inet walcut && \
         sudo nft add chain inet walcut out '{ type filter hook output priority 0; }' && \
         sudo nft add rule inet walcut out ip daddr 10.231.0.11 tcp dport 5432 drop",
    )
    .unwrap();
    lab_sql(
        "host=10.231.0.11",
        true,
        "INSERT INTO filler SELECT g, repeat('x', 1000) FROM generate_series(1, 4000) g",
    )
    .unwrap();
    wait_for(
        "lab3 to be taken out of the reads",
        Duration::from_secs(60),
        || {
            let reads: Vec<String> = (0..6).filter_map(|_| through(RO_PORT)).collect();
            (reads.len() == 6 && reads.iter().all(|r| r == "10.231.0.12|true")).then_some(())
        },
        story,
    );
    for _ in 0..10 {
        assert_eq!(through(RO_PORT).as_deref(), Some("10.231.0.12|true"));
    }
    lab.ssh("lab3", "sudo nft delete table inet walcut")
        .unwrap();
    wait_for(
        "lab3 to take reads again",
        Duration::from_secs(60),
        || {
            (0..6)
                .filter_map(|_| through(RO_PORT))
                .any(|r| r == "10.231.0.13|true")
                .then_some(())
        },
        story,
    );

    // A switchover under writes through the read-write port: every write
    // on the leader of its time, the unavailability measured.
    lab_sql(
        "host=10.231.0.11",
        true,
        "CREATE TABLE written (id bigint PRIMARY KEY)",
    )
    .unwrap();
    let writer = Writer::start_with(
        |id| {
            lab_sql_port(
                &format!("host={PROXY}"),
                RW_PORT,
                false,
                &format!("INSERT INTO written VALUES ({id})"),
            )
            .is_some()
        },
        story,
    );
    writer.wait_progress(20, "through HAProxy before the switchover");
    lab.playbook(
        &dir.path,
        &repo_root().join("playbooks/switchover.yml"),
        &["-e", "new_leader=lab2"],
    )
    .assert_ok("the switchover");
    writer.wait_progress(20, "through HAProxy after the switchover");
    let acked = writer.finish_timed();
    eprintln!(
        "HAProxy: {} writes acknowledged, the longest time between two {:.2} s",
        acked.len(),
        Writer::longest_gap(&acked).as_secs_f64()
    );
    assert_eq!(through(RW_PORT).as_deref(), Some("10.231.0.12|false"));
    let on_leader = lab_ids("host=10.231.0.12", "written");
    let lost: Vec<_> = acked
        .iter()
        .filter(|(id, _)| !on_leader.contains(id))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes missing: {lost:?}");
}
