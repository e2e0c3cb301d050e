//! A virtual IP that follows the leader: the collection's vip role on every
//! member of the lab's cluster (PostgreSQL listening on every address), and
//! a client on the bridge writing through the address across a switchover
//! and a partition of the leader's host. From the machine, arping watches
//! who answers for the address all along: one host at a time, the leader.
//! An address on no member's network is refused before anything changes.

use std::time::Duration;

use pgherd_e2e::arp::{handovers, holders_in_turn, two_holders, ArpWatch};
use pgherd_e2e::{lab_sh, lab_sql_port, lab_story, lab_wait_whole, repo_root, Lab, TestDir};

const HOSTS: [&str; 3] = ["lab1", "lab2", "lab3"];
/// On the lab's network.
fn vip() -> String {
    Lab::spare_addr(100)
}

/// The address with its prefix; not the role's defaults for the intervals
/// either.
fn vip_vars() -> Vec<String> {
    vec![
        format!("vip_address: {}/24", vip()),
        "vip_interval_ms: 500".into(),
        "vip_release_after_ms: 2000".into(),
    ]
}

fn story() -> String {
    lab_story(
        &HOSTS,
        "curl -s http://$(hostname -I | cut -d' ' -f1):8008/patroni; echo; \
         ip -4 -o addr show dev host0; \
         sudo journalctl -u 'pgherd-vip@*' --no-pager -n 8 2>/dev/null",
    )
}

/// The hosts whose interface has the address, from each host itself.
fn holders(lab: &Lab) -> Vec<String> {
    HOSTS
        .iter()
        .filter(|h| {
            lab.ssh(h, "ip -4 -o addr show dev host0")
                .is_ok_and(|out| out.contains(&format!(" {}/", vip())))
        })
        .map(|h| h.to_string())
        .collect()
}

fn wait_holder(lab: &Lab, host: &str, what: &str) {
    pgherd_e2e::wait_for(
        what,
        Duration::from_secs(90),
        || (holders(lab) == [host]).then_some(()),
        || format!("holders {:?}\n{}", holders(lab), story()),
    );
}

fn role_playbook(dir: &TestDir, name: &str, vars: &[String]) -> std::path::PathBuf {
    Lab::role_playbook(
        &dir.path,
        name,
        "primary:replica",
        "pgherd.cluster.vip",
        vars,
    )
}

/// Whether a new connection through the address reaches a primary.
fn reaches_primary() -> bool {
    lab_sql_port(
        &format!("host={}", vip()),
        5432,
        false,
        "SELECT pg_is_in_recovery()",
    )
    .as_deref()
        == Some("f")
}

#[test]
fn the_vip_follows_the_leader_through_a_switchover_and_a_partition_on_one_host_at_a_time() {
    let dir = TestDir::new("lab-vip");
    let lab = Lab::up(3);
    lab.playbook(
        &dir.path,
        &repo_root().join("playbooks/site.yml"),
        &["-e", "pg_listen=*"],
    )
    .assert_ok("site.yml, PostgreSQL on every address");
    lab_wait_whole(&HOSTS, "lab1", "the cluster whole", story);

    // An address on no member's network: refused, nothing written.
    let refused = lab.playbook(
        &dir.path,
        &role_playbook(
            &dir,
            "vip-elsewhere.yml",
            &["vip_address: 192.168.77.10/24".to_string()],
        ),
        &[],
    );
    refused.assert_refused(&["192.168.77.10/24 is on no network", &Lab::machine_addr()]);
    for host in HOSTS {
        assert!(
            lab.ssh(host, "test ! -e /etc/pgherd/vip-lab.yaml && test ! -e /etc/systemd/system/pgherd-vip@.service")
                .is_ok(),
            "{host}: the refused run wrote nothing"
        );
    }

    // Check mode changes nothing; the run; the run again changes nothing.
    let role = role_playbook(&dir, "vip.yml", &vip_vars());
    let check = lab.playbook(&dir.path, &role, &["--check"]);
    check.assert_ok("the role in check mode");
    assert!(!check.changed_tasks().is_empty(), "{}", check.transcript());
    assert!(holders(&lab).is_empty(), "check mode placed the address");
    lab.playbook(&dir.path, &role, &[]).assert_ok("the role");
    assert_eq!(holders(&lab), ["lab1"]);
    lab.playbook(&dir.path, &role, &[])
        .assert_unchanged("the role again");
    let files = lab
        .ssh(
            "lab2",
            "sudo stat -c '%a %U %n' /etc/pgherd/vip-lab.settings.yaml; \
             systemctl is-enabled pgherd-vip@lab",
        )
        .unwrap();
    assert!(
        files.contains("600 root /etc/pgherd/vip-lab.settings.yaml") && files.contains("enabled"),
        "{files}"
    );
    assert!(reaches_primary(), "{}", story());

    let macs: Vec<String> = HOSTS
        .iter()
        .map(|h| {
            lab.ssh(h, "cat /sys/class/net/host0/address")
                .unwrap()
                .trim()
                .to_ascii_lowercase()
        })
        .collect();
    let vip = vip();
    let arp = ArpWatch::start(&vip);

    // A switchover under writes through the address.
    lab.switchover_through(&dir.path, "the VIP", (&vip, 5432), "lab2", story);
    wait_holder(&lab, "lab2", "the address on the new leader's host");
    assert!(reaches_primary(), "{}", story());

    // The leader's host cut off from its peers: it lets the address go,
    // and the member elected in its place takes it.
    lab_sh(&["partition", "lab2"]);
    pgherd_e2e::wait_for(
        "lab2 to let the address go",
        Duration::from_secs(30),
        || (!holders(&lab).contains(&"lab2".to_string())).then_some(()),
        story,
    );
    let next = pgherd_e2e::wait_for(
        "a new leader's host to hold the address",
        Duration::from_secs(120),
        || match holders(&lab).as_slice() {
            [one] if one != "lab2" => Some(one.clone()),
            _ => None,
        },
        || format!("holders {:?}\n{}", holders(&lab), story()),
    );
    pgherd_e2e::wait_for(
        "a primary through the address",
        Duration::from_secs(60),
        || reaches_primary().then_some(()),
        story,
    );
    lab_sh(&["heal", "lab2"]);
    lab_wait_whole(&HOSTS, &next, "the cluster whole again", story);
    assert_eq!(holders(&lab), std::slice::from_ref(&next));

    // One holder at a time all along, as the network saw it: lab1, lab2,
    // then the new leader.
    let replies = arp.finish();
    for (from, to, silent) in handovers(&replies) {
        eprintln!(
            "the VIP: {from} to {to}, nobody answering for {:.2} s",
            silent.as_secs_f64()
        );
    }
    let both = two_holders(&replies, Duration::from_millis(50));
    assert!(both.is_empty(), "two hosts answered for {vip}: {both:?}");
    let mac_of = |h: &str| macs[HOSTS.iter().position(|x| *x == h).unwrap()].clone();
    assert_eq!(
        holders_in_turn(&replies),
        [mac_of("lab1"), mac_of("lab2"), mac_of(&next)],
        "who answered for {vip}, in turn ({} replies)",
        replies.len()
    );
}
