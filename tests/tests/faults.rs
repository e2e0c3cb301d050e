//! Faults on a real 3-node cluster with a 3-member etcd: the leader killed
//! with SIGKILL while it commits, etcd members lost, a member's REST API
//! gone during restarts and reinits, and switchovers asked for at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgherd_e2e::{
    create_three_nodes, finish_module, http_get, local_instance_args, local_nodes_test,
    local_settings, psql, read_pid, run_module, signal, spawn_module, wait_for, with_options,
    write_args_file, EtcdCluster,
};
use serde_json::{json, Value};

const CLUSTER: &str = "faults";

/// `/cluster` from the first of `nodes` that answers.
fn cluster_view(nodes: &[u8]) -> Option<Value> {
    nodes.iter().find_map(|n| {
        let (status, body) = http_get(&format!("127.0.0.1{n}:8008"), "/cluster")?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    })
}

fn leader_of(view: &Value) -> Option<String> {
    view["members"].as_array()?.iter().find_map(|m| {
        (m["role"] == json!("leader") && m["state"] == json!("running"))
            .then(|| m["name"].as_str().unwrap_or_default().to_string())
    })
}

fn streaming(view: &Value) -> usize {
    view["members"].as_array().map_or(0, |ms| {
        ms.iter()
            .filter(|m| m["state"] == json!("streaming"))
            .count()
    })
}

/// When a node's Patroni says it last reached etcd (seconds since the epoch).
fn dcs_seen_at(node: u8) -> Option<u64> {
    let (_, body) = http_get(&format!("127.0.0.1{node}:8008"), "/patroni")?;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["dcs_last_seen"].as_u64()
}

/// How long ago a node's Patroni says it last reached etcd.
fn dcs_unseen_for(node: u8) -> Option<u64> {
    let seen = dcs_seen_at(node)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(now.saturating_sub(seen))
}

fn postmaster_start(node: u8) -> Option<String> {
    let (_, body) = http_get(&format!("127.0.0.1{node}:8008"), "/patroni")?;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["postmaster_start_time"].as_str().map(str::to_string)
}

#[test]
fn the_cluster_survives_crashes_and_lost_endpoints() {
    let (dir, root, _reaper) =
        local_nodes_test("faults", &["127.0.0.11", "127.0.0.12", "127.0.0.13"]);
    let mut etcd = EtcdCluster::start(&dir.path, 25_179);
    let hosts = etcd.client_addrs();
    let settings = |n: u8| local_settings(&root.join(format!("pg{n}")), &hosts);
    let args_of = |n: u8| local_instance_args(n, CLUSTER, &settings(n));
    let socket = |n: u8| root.join(format!("pg{n}/run"));
    let patroni = |extra: Value| {
        with_options(
            json!({"cluster": CLUSTER, "settings": settings(1), "wait_timeout": 60}),
            extra,
        )
    };

    // Three nodes, the replicas created at once.
    create_three_nodes(&dir.path, args_of);

    // Synchronous replication: a commit is acknowledged once a standby has
    // it, which is what makes "no acknowledged row is lost" a promise.
    let sync = run_module(
        &dir.path,
        "patroni",
        &patroni(json!({"dynamic_config": {"synchronous_mode": true}})),
    );
    assert!(!sync.failed(), "{sync:?}");
    // The task returns once the cluster shows the synchronous standby the
    // leader chose, as the next task reads it.
    let view = cluster_view(&[1, 2, 3]).unwrap();
    assert!(
        view["members"]
            .as_array()
            .is_some_and(|ms| ms.iter().any(|m| m["role"] == json!("sync_standby"))),
        "no synchronous standby yet: {view}"
    );
    psql(&socket(1), "CREATE TABLE acked (id int PRIMARY KEY)").unwrap();

    // --- kill -9 of the leader's Patroni and postmaster while it commits.
    let acked = Arc::new(Mutex::new(Vec::<i32>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, count, stop, sock) = (acked.clone(), count.clone(), stop.clone(), socket(1));
        std::thread::spawn(move || {
            let mut id = 0;
            while !stop.load(Ordering::SeqCst) {
                id += 1;
                if psql(&sock, &format!("INSERT INTO acked VALUES ({id})")).is_ok() {
                    acked.lock().unwrap().push(id);
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    wait_for(
        "40 acknowledged commits",
        Duration::from_secs(60),
        || (count.load(Ordering::SeqCst) >= 40).then_some(()),
        || format!("{} so far", count.load(Ordering::SeqCst)),
    );
    let patroni_pid = read_pid(&root.join("pg1/run/patroni-15-main.pid"));
    let postmaster_pid = read_pid(&root.join("pg1/data/15/main/postmaster.pid"));
    signal(patroni_pid, libc::SIGKILL);
    signal(postmaster_pid, libc::SIGKILL);
    let killed_at = Instant::now();
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let acked: Vec<i32> = acked.lock().unwrap().clone();

    // Until its key expires, the DCS still says pg1 leads: what pgherd
    // shows is what it saw, pg1 unreachable.
    let seen = run_module(&dir.path, "patroni", &patroni(json!({"state": "info"})));
    assert!(!seen.failed(), "{seen:?}");
    let pg1 = seen.result["cluster"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == json!("pg1"))
        .cloned()
        .expect("pg1's member key outlives it by up to a ttl");
    assert_eq!(pg1["reachable"], json!(false), "{seen:?}");
    let settings_file = dir.join("settings.json");
    std::fs::write(&settings_file, settings(1).to_string()).unwrap();
    let status = std::process::Command::new(pgherd_e2e::pgherd_bin())
        .arg("-s")
        .arg(&settings_file)
        .args(["-c", CLUSTER, "status"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.status.success(), "{status:?}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("pg1 ") && l.contains("unreachable (last: ")),
        "a dead member shown as answering:\n{table}"
    );

    let new_leader = wait_for(
        "a new leader after the kill",
        Duration::from_secs(90),
        || cluster_view(&[2, 3]).and_then(|v| leader_of(&v).filter(|l| l != "pg1")),
        || format!("{:?}", cluster_view(&[2, 3])),
    );
    eprintln!(
        "faults: {new_leader} leads {:.1}s after the kill; {} commits acknowledged",
        killed_at.elapsed().as_secs_f64(),
        acked.len()
    );
    let leader_node: u8 = new_leader[2..].parse().unwrap();
    let info = run_module(&dir.path, "patroni", &patroni(json!({"state": "info"})));
    assert!(!info.failed(), "{info:?}");
    let cluster = &info.result["cluster"];
    assert_eq!(cluster["leader"], json!(new_leader), "{cluster}");
    let pg1_runs = cluster["members"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == json!("pg1") && m["state"] == json!("running"));
    assert!(!pg1_runs, "pg1 is reported running: {cluster}");

    let rows_on = |node: u8| -> Vec<i32> {
        psql(&socket(node), "SELECT id FROM acked ORDER BY id")
            .unwrap()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let present = rows_on(leader_node);
    let lost: Vec<&i32> = acked.iter().filter(|id| !present.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");

    // The old leader rejoins when started again.
    let back = run_module(&dir.path, "instance", &args_of(1));
    assert!(!back.failed(), "{back:?}");
    assert_eq!(back.result["instance"]["role"], json!("replica"));
    assert_eq!(
        back.result["instance"]["replication_state"],
        json!("streaming")
    );
    let log = std::fs::read_dir(root.join("pg1/log/patroni-15-main"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    eprintln!(
        "faults: pg1 rejoined {} pg_rewind",
        if log.contains("pg_rewind") || log.contains("rewind") {
            "with"
        } else {
            "without"
        }
    );
    wait_for(
        "pg1 to replay every row",
        Duration::from_secs(30),
        || (rows_on(1) == rows_on(leader_node)).then_some(()),
        || format!("{} rows on pg1", rows_on(1).len()),
    );

    // --- etcd with one member down: everything still works.
    etcd.members[0].kill();
    let others: Vec<u8> = [1, 2, 3]
        .into_iter()
        .filter(|n| *n != leader_node)
        .collect();
    let noop = run_module(&dir.path, "instance", &args_of(others[0]));
    assert!(!noop.failed() && !noop.changed(), "{noop:?}");
    let info = run_module(&dir.path, "patroni", &patroni(json!({"state": "info"})));
    assert!(!info.failed(), "{info:?}");
    let patch = run_module(
        &dir.path,
        "patroni",
        &patroni(json!({"dynamic_config": {"maximum_lag_on_failover": 2_097_152}})),
    );
    assert!(!patch.failed() && patch.changed(), "{patch:?}");
    let param = run_module(
        &dir.path,
        "instance",
        &with_options(
            args_of(others[0]),
            json!({"parameters": {"work_mem": "6MB"}}),
        ),
    );
    assert!(!param.failed() && param.changed(), "{param:?}");
    etcd.members[0].restart();
    etcd.members[0].wait_healthy();

    // --- etcd entirely down: operations fail clearly and change nothing.
    for m in etcd.members.iter_mut() {
        m.kill();
    }
    let config = root.join(format!("pg{}/etc/15-main.yaml", others[1]));
    let before = std::fs::read(&config).unwrap();
    let refused = run_module(
        &dir.path,
        "instance",
        &with_options(
            args_of(others[1]),
            json!({"parameters": {"work_mem": "7MB"}}),
        ),
    );
    assert!(refused.failed() && refused.code == Some(1), "{refused:?}");
    assert!(
        refused.msg().contains(&hosts[0]) && refused.msg().contains("nothing was changed"),
        "{}",
        refused.msg()
    );
    assert_eq!(
        std::fs::read(&config).unwrap(),
        before,
        "the config changed"
    );
    let info = run_module(&dir.path, "patroni", &patroni(json!({"state": "info"})));
    assert!(info.failed(), "{info:?}");
    assert!(info.msg().contains(&hosts[1]), "{}", info.msg());
    let switch = run_module(
        &dir.path,
        "patroni",
        &patroni(json!({"leader": format!("pg{}", others[0])})),
    );
    assert!(switch.failed(), "{switch:?}");
    for m in etcd.members.iter_mut() {
        m.restart();
    }
    for m in &etcd.members {
        m.wait_healthy();
    }
    // Once etcd is back, the cluster heals and every node converges.
    let view = wait_for(
        "a leader and two streaming replicas",
        Duration::from_secs(90),
        || cluster_view(&[1, 2, 3]).filter(|v| leader_of(v).is_some() && streaming(v) == 2),
        || format!("{:?}", cluster_view(&[1, 2, 3])),
    );
    for n in [1, 2, 3] {
        let r = run_module(&dir.path, "instance", &args_of(n));
        assert!(!r.failed(), "pg{n} after etcd came back: {r:?}");
    }
    let leader = leader_of(&view).unwrap();
    let leader_node: u8 = leader[2..].parse().unwrap();
    let replicas: Vec<u8> = [1, 2, 3]
        .into_iter()
        .filter(|n| *n != leader_node)
        .collect();

    // --- a replica's Patroni busy for over a ttl while etcd is fine (its
    // loop stuck on a query, as a demote after a partition is stuck on
    // PostgreSQL's shutdown): the module waits for the loop to come back
    // rather than refusing with "etcd unreachable".
    let busy = replicas[1];
    let heartbeat: i32 = psql(
        &socket(busy),
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'Patroni heartbeat'",
    )
    .unwrap()
    .trim()
    .parse()
    .expect("the backend of Patroni's loop");
    signal(heartbeat, libc::SIGSTOP);
    wait_for(
        "Patroni to have missed etcd for over a ttl (20 s)",
        Duration::from_secs(90),
        || dcs_unseen_for(busy).filter(|secs| *secs > 22),
        || format!("{:?}", dcs_unseen_for(busy)),
    );
    let waiting = spawn_module(
        "instance",
        &write_args_file(&dir.path, "busy", &args_of(busy)),
    );
    // The loop comes back while the module runs.
    std::thread::sleep(Duration::from_secs(2));
    signal(heartbeat, libc::SIGCONT);
    let resumed = finish_module(waiting);
    assert!(
        !resumed.failed() && !resumed.changed(),
        "pg{busy} with its Patroni busy: {resumed:?}"
    );
    assert!(
        dcs_unseen_for(busy).is_some_and(|secs| secs <= 20),
        "the module returned before Patroni reached etcd again"
    );
    wait_for(
        &format!("pg{busy} to stream again"),
        Duration::from_secs(60),
        || cluster_view(&[1, 2, 3]).filter(|v| streaming(v) == 2),
        || format!("{:?}", cluster_view(&[1, 2, 3])),
    );

    // --- a member's REST API gone (Patroni stopped with SIGSTOP) during a
    // restart of all members and a reinit: refused up front, naming it.
    let frozen = replicas[0];
    let frozen_pid = read_pid(&root.join(format!("pg{frozen}/run/patroni-15-main.pid")));
    let starts: Vec<Option<String>> = [1, 2, 3].iter().map(|n| postmaster_start(*n)).collect();
    // Each stays frozen for less than the ttl, so that it is still a
    // member of the cluster in the DCS.
    let frozen_run = |extra: Value| {
        signal(frozen_pid, libc::SIGSTOP);
        let run = run_module(&dir.path, "patroni", &patroni(extra));
        signal(frozen_pid, libc::SIGCONT);
        // Its loop ran again (its member key renewed), not just the DCS
        // still showing what it wrote before the freeze.
        let thawed_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        wait_for(
            "the frozen member to stream again",
            Duration::from_secs(60),
            || {
                cluster_view(&[1, 2, 3]).filter(|v| {
                    streaming(v) == 2 && dcs_seen_at(frozen).is_some_and(|at| at > thawed_at)
                })
            },
            || format!("{:?}", cluster_view(&[1, 2, 3])),
        );
        run
    };
    let restart = frozen_run(json!({"restart": "all", "wait_timeout": 20}));
    let reinit = frozen_run(json!({"reinit": [format!("pg{frozen}")], "wait_timeout": 20}));
    for (what, run) in [("restart", &restart), ("reinit", &reinit)] {
        assert!(run.failed(), "{what}: {run:?}");
        let msg = run.msg();
        assert!(
            msg.contains(&format!("member pg{frozen} does not answer"))
                && msg.contains("no member was"),
            "{what}: {msg}"
        );
    }
    let after: Vec<Option<String>> = [1, 2, 3].iter().map(|n| postmaster_start(*n)).collect();
    assert_eq!(starts, after, "a member was restarted anyway");

    // --- the same switchover asked twice at once: one acts. Asynchronous
    // again, so that any streaming replica may take over.
    let unsync = run_module(
        &dir.path,
        "patroni",
        &patroni(json!({"dynamic_config": {"synchronous_mode": false}})),
    );
    assert!(!unsync.failed(), "{unsync:?}");
    wait_for(
        "no synchronous standby",
        Duration::from_secs(30),
        || {
            cluster_view(&[1, 2, 3]).filter(|v| {
                streaming(v) == 2
                    && v["members"]
                        .as_array()
                        .is_some_and(|ms| ms.iter().all(|m| m["role"] != json!("sync_standby")))
            })
        },
        || format!("{:?}", cluster_view(&[1, 2, 3])),
    );
    let target = format!("pg{}", replicas[1]);
    let runs: Vec<_> = (0..2)
        .map(|i| {
            spawn_module(
                "patroni",
                &write_args_file(
                    &dir.path,
                    &format!("switch{i}"),
                    &patroni(json!({"leader": target})),
                ),
            )
        })
        .collect();
    let results: Vec<_> = runs.into_iter().map(finish_module).collect();
    for r in &results {
        assert!(!r.failed(), "{r:?}");
    }
    let acted = results.iter().filter(|r| r.changed()).count();
    assert_eq!(acted, 1, "{results:?}");
    let view = cluster_view(&[1, 2, 3]).unwrap();
    assert_eq!(leader_of(&view), Some(target.clone()), "{view}");

    // A switchover asked while another holds the cluster waits, then gives
    // up with the holder's name when its deadline comes first.
    let next = format!("pg{}", leader_node);
    let first = spawn_module(
        "patroni",
        &write_args_file(&dir.path, "switch-a", &patroni(json!({"leader": next}))),
    );
    let key = format!("/service/{CLUSTER}/pgherd-operation");
    wait_for(
        "the first switchover to hold the operation key",
        Duration::from_secs(20),
        || {
            etcd.members[1]
                .etcdctl(None, &["get", &key, "--print-value-only"])
                .ok()
                .filter(|v| v.contains("switchover to"))
        },
        String::new,
    );
    let hasty = run_module(
        &dir.path,
        "patroni",
        &patroni(json!({"leader": target, "wait_timeout": 1})),
    );
    assert!(hasty.failed(), "{hasty:?}");
    assert!(
        hasty
            .msg()
            .contains("is being changed by another pgherd run")
            && hasty.msg().contains(&format!("switchover to {next}")),
        "{}",
        hasty.msg()
    );
    let first = finish_module(first);
    assert!(!first.failed() && first.changed(), "{first:?}");
    let view = cluster_view(&[1, 2, 3]).unwrap();
    assert_eq!(leader_of(&view), Some(next), "{view}");
    assert!(
        etcd.members[1]
            .etcdctl(None, &["get", &key, "--print-value-only"])
            .unwrap()
            .trim()
            .is_empty(),
        "the operation key outlived the run"
    );
    eprintln!(
        "faults: {} acknowledged rows checked on the new leader and on the rejoined node",
        acked.len()
    );
}
