//! The bootstrap test's etcd membership phase: a member retires from the
//! running cluster and joins it again (lab_bootstrap.rs).

use std::path::Path;

use pgherd_e2e::{Lab, PlaybookRun};

use super::ETCD_ROOT_PW;

/// `etcdctl member list` as `host`'s member answers it.
pub fn etcd_members(lab: &Lab, host: &str) -> String {
    lab.ssh(
        host,
        &format!(
            "sudo ETCDCTL_API=3 etcdctl --endpoints=https://{}:2379 --cacert=/etc/etcd/pki/ca.pem \
             --cert=/etc/etcd/pki/member.pem --key=/etc/etcd/pki/member.key \
             --user=root:{ETCD_ROOT_PW} member list",
            Lab::addr(host)
        ),
    )
    .unwrap()
}

/// lab1's etcd member retired (`etcd_member_state: absent` in its
/// host_vars, as an operator does, and a run limited to lab1) while the
/// cluster runs: the first of the etcd group, on the host Patroni deployed
/// its leader on. Then back in the group, it joins the running cluster
/// again. Check mode first predicts the retirement and changes nothing.
pub fn a_member_retires_and_joins_again(
    lab: &Lab,
    inventory: &Path,
    run: &dyn Fn(&[&str]) -> PlaybookRun,
) {
    let host_vars = inventory.join("host_vars");
    std::fs::create_dir_all(&host_vars).unwrap();
    std::fs::write(host_vars.join("lab1.yml"), "etcd_member_state: absent\n").unwrap();
    let started = |members: &str| members.lines().filter(|l| l.contains("started")).count();

    let check = run(&["--check"]);
    check.assert_ok("the retirement in check mode");
    assert!(
        check.changed("Retiring members removed from the cluster"),
        "{}",
        check.transcript()
    );
    assert_eq!(
        started(&etcd_members(lab, "lab2")),
        3,
        "check mode changed nothing"
    );

    // Run on lab1 alone: the members that stay are asked over SSH.
    let retired = run(&["-l", "lab1"]);
    retired.assert_ok("lab1's member retired");
    let members = etcd_members(lab, "lab2");
    assert!(
        started(&members) == 2 && !members.contains("lab1"),
        "{members}"
    );
    let left = lab
        .ssh(
            "lab1",
            "systemctl is-active etcd; systemctl is-enabled etcd; sudo test -d /var/lib/etcd/pgherd && echo data; true",
        )
        .unwrap();
    assert_eq!(
        left.split_whitespace().collect::<Vec<_>>(),
        ["inactive", "disabled"],
        "{left}"
    );
    // The whole bootstrap goes on with two members, Patroni's etcd user
    // checked from lab2 now; lab1's PostgreSQL answers.
    let without = run(&[]);
    without.assert_ok("the bootstrap with lab1's member retired");
    assert_eq!(without.changed_tasks().len(), 0, "{}", without.transcript());
    let answers = lab
        .ssh(
            "lab1",
            "sudo -u postgres psql -XAtc 'select pg_is_in_recovery()'",
        )
        .unwrap_or_default();
    assert!(["t", "f"].contains(&answers.trim()), "{answers}");

    std::fs::remove_file(host_vars.join("lab1.yml")).unwrap();
    let joined = run(&[]);
    joined.assert_ok("lab1's member joins again");
    assert!(
        joined.changed("Added to the cluster: lab1"),
        "{}",
        joined.transcript()
    );
    let members = etcd_members(lab, "lab1");
    assert!(
        started(&members) == 3 && members.contains("lab1"),
        "{members}"
    );
    let config = lab
        .ssh("lab1", "grep ^ETCD_INITIAL_CLUSTER_STATE /etc/default/etcd")
        .unwrap();
    assert_eq!(config.trim(), "ETCD_INITIAL_CLUSTER_STATE=existing");
}
