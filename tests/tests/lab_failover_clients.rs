//! Clients through a failover: a cluster in synchronous mode, HAProxy and
//! PgBouncer on lab3 (the collection's roles), the VIP on every member,
//! and a client writing through each; then the leader's host cut off from
//! its peers. Through every path, writes are acknowledged again by the
//! member elected in its place, and every write acknowledged before or
//! after is on it (synchronous mode: the cut-off leader acknowledges
//! nothing its standby lacks).

use std::time::Duration;

use pgherd_e2e::{
    lab_ids, lab_roles, lab_sh, lab_sql, lab_story, lab_wait_whole, repo_root, Lab, TestDir,
    Writer, LAB_SUPERUSER_PW,
};

const HOSTS: [&str; 3] = ["lab1", "lab2", "lab3"];

fn story() -> String {
    lab_story(
        &HOSTS,
        "curl -s http://$(hostname -I | cut -d' ' -f1):8008/patroni; echo; \
         ip -4 -o addr show dev host0; \
         sudo journalctl -u 'pgherd-vip@*' -u 'pgherd-proxy@*' --no-pager -n 5 2>/dev/null",
    )
}

#[test]
fn writes_through_haproxy_pgbouncer_and_the_vip_reach_the_member_elected_after_a_partition() {
    let dir = TestDir::new("lab-failover-clients");
    let vip = Lab::spare_addr(100);
    let lab = Lab::up(3);
    lab.playbook(
        &dir.path,
        &repo_root().join("playbooks/site.yml"),
        &[
            "-e",
            "pg_listen=*",
            "-e",
            r#"{"patroni_bootstrap_dcs": {"synchronous_mode": true}}"#,
        ],
    )
    .assert_ok("site.yml in synchronous mode, PostgreSQL on every address");
    lab_wait_whole(&HOSTS, "lab1", "the cluster whole", story);

    let roles = dir.path.join("clients.yml");
    std::fs::write(
        &roles,
        format!(
            "- hosts: lab3\n  gather_facts: false\n  roles:\n\
             \x20   - role: pgherd.cluster.haproxy\n\
             \x20   - role: pgherd.cluster.pgbouncer\n\
             \x20     pgbouncer_users: [{{name: postgres, password: {LAB_SUPERUSER_PW}}}]\n\
             - hosts: primary:replica\n  gather_facts: false\n  roles:\n\
             \x20   - role: pgherd.cluster.vip\n\
             \x20     vip_address: {vip}/24\n"
        ),
    )
    .unwrap();
    lab.playbook(&dir.path, &roles, &[])
        .assert_ok("HAProxy, PgBouncer and the VIP");

    let all = Lab::all_three();
    let proxies = Lab::addr("lab3");
    let paths = [
        ("HAProxy", proxies.as_str(), 5000, "via_haproxy"),
        ("PgBouncer", proxies.as_str(), 6432, "via_pgbouncer"),
        ("the VIP", vip.as_str(), 5432, "via_vip"),
    ];
    for (_, _, _, table) in paths {
        lab_sql(
            &all,
            true,
            &format!("CREATE TABLE {table} (id bigint PRIMARY KEY)"),
        )
        .expect("the table");
    }
    let writers: Vec<(&str, &str, Writer)> = paths
        .iter()
        .map(|(via, host, port, table)| (*via, *table, Writer::through(host, *port, table, story)))
        .collect();
    for (via, _, w) in &writers {
        w.wait_progress(20, &format!("writes through {via} before the partition"));
    }

    lab_sh(&["partition", "lab1"]);
    let elected = pgherd_e2e::wait_for(
        "a member elected in lab1's place",
        Duration::from_secs(120),
        || {
            lab_roles(&["lab2", "lab3"])
                .iter()
                .find(|r| r.ends_with(": leader/running") && !r.starts_with("lab1"))
                .map(|r| r.split(':').next().unwrap().to_string())
        },
        || format!("{:?}\n{}", lab_roles(&["lab2", "lab3"]), story()),
    );
    for (via, _, w) in &writers {
        w.wait_progress(20, &format!("writes through {via} after the failover"));
    }
    let on_elected = format!("host={}", Lab::addr(&elected));
    for (via, table, w) in writers {
        let acked = w.finish_timed();
        let gap = Writer::longest_gap(&acked);
        eprintln!(
            "{via}: {} writes acknowledged, the longest time between two {:.2} s",
            acked.len(),
            gap.as_secs_f64()
        );
        let there = lab_ids(&on_elected, table);
        let lost: Vec<u64> = acked
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !there.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "{via}: acknowledged writes missing on {elected}: {lost:?}"
        );
    }
    lab_sh(&["heal", "lab1"]);
}
