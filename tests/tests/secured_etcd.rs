//! One etcd member lost from a secured etcd (TLS, client certificates,
//! authentication): the two others keep quorum, so every pgherd client
//! (both modules, `pgherd status`, `pgherd proxy`) keeps working, and the
//! proxy, whose watch was on the lost member, follows the next switchover
//! at once.

use std::process::{Command, Stdio};
use std::time::Duration;

use pgherd_e2e::pki::Pki;
use pgherd_e2e::{
    create_three_nodes, local_instance_args, local_nodes_test, local_settings, loopback_peer_ports,
    pgherd_bin, run_module, wait_for, with_options, EtcdCluster, Killed,
};
use serde_json::{json, Value};

const SCOPE: &str = "vault";
const ETCD_USER: &str = "vault-patroni";
const ETCD_PASSWORD: &str = "Vlt-Etcd-3Rq8";
const ETCD_ROOT: &str = "Vlt-Root-6Kz1";

fn etcd_tls(pki: &Pki) -> Value {
    json!({"protocol": "https", "cacert": pki.ca, "cert": pki.client_cert, "key": pki.client_key})
}

#[test]
fn a_lost_etcd_member_with_authentication_cuts_no_client_off() {
    let nodes = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];
    let (dir, root, _reaper) = local_nodes_test("secured-etcd", &nodes);
    let pki = Pki::create(&dir.join("pki"));
    let mut etcd = EtcdCluster::start_with(&dir.path, 25_279, Some(&pki));
    // Patroni's user may touch its cluster's keys only (the trailing
    // slash keeps other clusters whose names start alike out).
    etcd.members[0].enable_auth(
        ETCD_ROOT,
        ETCD_USER,
        ETCD_PASSWORD,
        &format!("/service/{SCOPE}/"),
    );
    let hosts = etcd.client_addrs();
    let settings_of = |n: u8| {
        let mut s = local_settings(&root.join(format!("pg{n}")), &hosts);
        for (k, v) in etcd_tls(&pki).as_object().unwrap() {
            s["patroni"]["etcd"][k] = v.clone();
        }
        s
    };
    let args_of = |n: u8| {
        let mut a = local_instance_args(n, SCOPE, &settings_of(n));
        a["patroni"]["etcd"] = json!({"username": ETCD_USER, "password": ETCD_PASSWORD});
        a
    };
    create_three_nodes(&dir.path, args_of);
    let patroni = |extra: Value| {
        let mut a = json!({
            "cluster": SCOPE, "settings": settings_of(1),
            "etcd_username": ETCD_USER, "etcd_password": ETCD_PASSWORD,
        });
        for (k, v) in extra.as_object().unwrap() {
            a[k] = v.clone();
        }
        a
    };

    // pgherd proxy, watching the cluster with the same login.
    let settings_file = dir.join("settings.yaml");
    std::fs::write(
        &settings_file,
        serde_json::to_string(&settings_of(1)).unwrap(),
    )
    .unwrap();
    let template = dir.join("leader.tera");
    std::fs::write(&template, "leader={{ leader.name }}\n").unwrap();
    let target = dir.join("leader.txt");
    let config = dir.join("proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "cluster: {SCOPE}\nsettings: {}\ntemplate: {}\ntarget: {}\n",
            settings_file.display(),
            template.display(),
            target.display()
        ),
    )
    .unwrap();
    let log = dir.join("proxy.log");
    let proxy = Killed(
        Command::new(pgherd_bin())
            .args(["proxy", "--config", config.to_str().unwrap(), "--verbose"])
            .env("PGHERD_ETCD_USERNAME", ETCD_USER)
            .env("PGHERD_ETCD_PASSWORD", ETCD_PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let rendered = || std::fs::read_to_string(&target).unwrap_or_default();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for(
        "the proxy to render the leader",
        Duration::from_secs(15),
        || (rendered() == "leader=pg1\n").then_some(()),
        log_text,
    );

    // The member the proxy's watch is on goes down.
    let ports: Vec<u16> = etcd
        .members
        .iter()
        .map(|m| m.client_addr.rsplit_once(':').unwrap().1.parse().unwrap())
        .collect();
    let watched = wait_for(
        "the proxy's connection to an etcd member",
        Duration::from_secs(10),
        || {
            loopback_peer_ports(proxy.0.id() as i32)
                .into_iter()
                .find_map(|p| ports.iter().position(|q| *q == p))
        },
        || format!("{:?}", loopback_peer_ports(proxy.0.id() as i32)),
    );
    etcd.members[watched].kill();

    // Every client logs in through a live member, each time (a login sent
    // to the dead member used to fail the whole connection).
    for round in 0..4 {
        let info = run_module(&dir.path, "patroni", &patroni(json!({"state": "info"})));
        assert!(!info.failed(), "info, round {round}: {info:?}");
        assert_eq!(info.result["cluster"]["leader"], "pg1", "{info:?}");
        let noop = run_module(&dir.path, "instance", &args_of(2));
        assert!(!noop.failed() && !noop.changed(), "round {round}: {noop:?}");
        let status = Command::new(pgherd_bin())
            .args(["-s", settings_file.to_str().unwrap(), "-c", SCOPE, "status"])
            .env("PGHERD_ETCD_USERNAME", ETCD_USER)
            .env("PGHERD_ETCD_PASSWORD", ETCD_PASSWORD)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "status, round {round}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    }
    let patch = run_module(
        &dir.path,
        "patroni",
        &patroni(json!({"dynamic_config": {"maximum_lag_on_failover": 3_145_728}})),
    );
    assert!(!patch.failed() && patch.changed(), "{patch:?}");
    let param = run_module(
        &dir.path,
        "instance",
        &with_options(args_of(3), json!({"parameters": {"work_mem": "5MB"}})),
    );
    assert!(!param.failed() && param.changed(), "{param:?}");

    // The proxy moved its watch to a live member: it follows a switchover
    // as soon as the switchover is done, not after the lost member's
    // connection times out.
    let switch = run_module(&dir.path, "patroni", &patroni(json!({"leader": "pg2"})));
    assert!(!switch.failed() && switch.changed(), "{switch:?}");
    wait_for(
        "the proxy to render the new leader",
        Duration::from_secs(4),
        || (rendered() == "leader=pg2\n").then_some(()),
        || format!("{}; proxy log:\n{}", rendered(), log_text()),
    );
    let secrets_seen = log_text();
    assert!(
        !secrets_seen.contains(ETCD_PASSWORD),
        "the proxy logged a password"
    );
    etcd.members[watched].restart();
}
