//! HAProxy deployed by the collection's haproxy role on a lab host, with
//! real client traffic: writes through its read-write port reach only the
//! leader, across a switchover (its unavailability measured); reads through
//! its read-only port reach only replicas, never one lagging more than the
//! limit (a replica cut from the leader's WAL is taken out, then back); a
//! port taken by another program and a lag that is not a size are refused
//! before anything changes.

use std::time::Duration;

use pgherd_e2e::{lab_sql, lab_sql_port, lab_story, wait_for, Lab, TestDir};

const HOSTS: [&str; 3] = ["lab1", "lab2", "lab3"];
/// Not the role's defaults.
const RW_PORT: u16 = 5010;
const RO_PORT: u16 = 5011;
const STATS_PORT: u16 = 8410;

fn story() -> String {
    lab_story(
        &HOSTS,
        "curl -s http://$(hostname -I | cut -d' ' -f1):8008/patroni; echo; \
         curl -s 'http://127.0.0.1:8410/stats;csv' 2>/dev/null | cut -d, -f1,2,18 | grep -v '^#'",
    )
}

/// How [`through`] names `host`, a standby or not: `10.231.0.12|true`.
fn server(host: &str, standby: bool) -> String {
    format!("{}|{standby}", Lab::addr(host))
}

/// The server a new connection through `port` (of HAProxy, on lab1)
/// reaches, and whether it is a standby: as [`server`] names it.
fn through(port: u16) -> Option<String> {
    lab_sql_port(
        &format!("host={}", Lab::addr("lab1")),
        port,
        false,
        "SELECT host(inet_server_addr()) || '|' || pg_is_in_recovery()",
    )
}

fn role_playbook(dir: &TestDir, name: &str, host: &str, more: &[&str]) -> std::path::PathBuf {
    let mut vars = vec![
        format!("haproxy_primary_port: {RW_PORT}"),
        format!("haproxy_replica_port: {RO_PORT}"),
        format!("haproxy_stats_port: {STATS_PORT}"),
    ];
    vars.extend(more.iter().map(|v| v.to_string()));
    Lab::role_playbook(&dir.path, name, host, "pgherd.cluster.haproxy", &vars)
}

#[test]
fn haproxy_sends_writes_to_the_leader_and_reads_to_replicas_within_the_lag() {
    let dir = TestDir::new("lab-haproxy");
    let lab = Lab::deployed(&dir.path, story);

    // Refused before anything changes: a lag that is not a size; a port
    // another program listens on.
    let bad = role_playbook(&dir, "bad.yml", "lab2", &["haproxy_replica_max_lag: lots"]);
    lab.playbook(&dir.path, &bad, &[])
        .assert_refused(&["(given: lots)"]);
    lab.hold_port("lab2", RO_PORT);
    let taken = role_playbook(&dir, "taken.yml", "lab2", &[]);
    lab.playbook(&dir.path, &taken, &[])
        .assert_refused(&[&format!(":{RO_PORT}"), "python3"]);
    assert!(
        !lab.installed("lab2", "haproxy"),
        "the refusals installed nothing"
    );
    lab.release_ports("lab2");

    // Check mode, the run, the run again.
    let proxy = role_playbook(
        &dir,
        "haproxy.yml",
        "lab1",
        &["haproxy_replica_max_lag: 1MB"],
    );
    lab.role_three_ways(&dir.path, &proxy, "lab1", "haproxy");

    // Writes reach the leader, reads the replicas.
    assert_eq!(through(RW_PORT), Some(server("lab1", false)));
    let mut replicas = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let r = through(RO_PORT).expect("a read through HAProxy");
        assert!(r.ends_with("|true"), "{r}");
        replicas.insert(r);
    }
    assert_eq!(replicas.len(), 2, "both replicas take reads: {replicas:?}");

    // A reload (another connection limit) while clients connect to the
    // read-write port: the new process starts from the members' saved
    // states, and no connection reaches a replica.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let connecting = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(r) = through(RW_PORT) {
                    seen.lock().unwrap().push(r);
                }
            }
        })
    };
    let reload = role_playbook(
        &dir,
        "haproxy-reload.yml",
        "lab1",
        &["haproxy_replica_max_lag: 1MB", "haproxy_maxconn: 1200"],
    );
    let reloaded = lab.playbook(&dir.path, &reload, &[]);
    reloaded.assert_ok("the role with another connection limit");
    assert!(
        !reloaded.changed_tasks().is_empty(),
        "{}",
        reloaded.transcript()
    );
    // Ten more connections through the new process, then stop.
    let at_return = seen.lock().unwrap().len();
    wait_for(
        "ten connections through HAProxy after the reload",
        Duration::from_secs(30),
        || (seen.lock().unwrap().len() >= at_return + 10).then_some(()),
        story,
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    connecting.join().unwrap();
    let seen = seen.lock().unwrap().clone();
    let leader = server("lab1", false);
    let elsewhere: Vec<&String> = seen.iter().filter(|r| **r != leader).collect();
    assert!(
        seen.len() > 10 && elsewhere.is_empty(),
        "{} connections through the reload, these not to the leader: {elsewhere:?}",
        seen.len()
    );

    // lab3 cut from the leader's WAL (its REST API still answers): once it
    // lags more than 1 MB it takes no read; back when it catches up.
    let leader_host = format!("host={}", Lab::addr("lab1"));
    lab_sql(
        &leader_host,
        true,
        "CREATE TABLE filler (id bigint, pad text)",
    )
    .unwrap();
    lab.ssh(
        "lab3",
        &format!(
            "sudo nft add table inet walcut && \
             sudo nft add chain inet walcut out '{{ type filter hook output priority 0; }}' && \
             sudo nft add rule inet walcut out ip daddr {} tcp dport 5432 drop",
            Lab::addr("lab1")
        ),
    )
    .unwrap();
    lab_sql(
        &leader_host,
        true,
        "INSERT INTO filler SELECT g, repeat('x', 1000) FROM generate_series(1, 4000) g",
    )
    .unwrap();
    wait_for(
        "lab3 to be taken out of the reads",
        Duration::from_secs(60),
        || {
            let reads: Vec<String> = (0..6).filter_map(|_| through(RO_PORT)).collect();
            (reads.len() == 6 && reads.iter().all(|r| *r == server("lab2", true))).then_some(())
        },
        story,
    );
    for _ in 0..10 {
        assert_eq!(through(RO_PORT), Some(server("lab2", true)));
    }
    lab.ssh("lab3", "sudo nft delete table inet walcut")
        .unwrap();
    wait_for(
        "lab3 to take reads again",
        Duration::from_secs(60),
        || {
            (0..6)
                .filter_map(|_| through(RO_PORT))
                .any(|r| r == server("lab3", true))
                .then_some(())
        },
        story,
    );

    // A switchover under writes through the read-write port: every write
    // on the leader of its time, the unavailability measured.
    lab.switchover_through(
        &dir.path,
        "HAProxy",
        (&Lab::addr("lab1"), RW_PORT),
        "lab2",
        story,
    );
    assert_eq!(through(RW_PORT), Some(server("lab2", false)));
}
