//! Prometheus (Debian's package, by the collection's prometheus role on a
//! lab host) scraping Patroni's /metrics on every member of a secured
//! cluster, whose REST API requires client certificates: every member
//! scraped, the leader series showing the leader, and the change after a
//! switchover. Refused before anything changes: a port another program
//! holds, a TLS file that is not there.

use std::process::Command;
use std::time::Duration;

use pgherd_e2e::{ansible_playbook, curl_status, repo_root, Lab, TestDir};
use serde_json::Value;

const ETCD_ROOT_PW: &str = "Prom-Etcd-Root-3q";
const ETCD_PATRONI_PW: &str = "Prom-Etcd-Ptr-7w";
const HOSTS: [&str; 3] = ["lab1", "lab2", "lab3"];
/// Not the role's default; Prometheus runs on lab3.
const PORT: u16 = 9091;
const TLS: &str = "/etc/pgherd/tls";

/// `patroni_primary` of each member as Prometheus last scraped it, by
/// host, in host order.
fn primaries() -> Vec<(String, String)> {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "-G",
            &format!("http://{}:{PORT}/api/v1/query", Lab::addr("lab3")),
            "--data-urlencode",
            "query=patroni_primary{cluster=\"lab\"}",
        ])
        .output()
        .expect("curl");
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let mut seen: Vec<(String, String)> = answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|r| {
            let instance = r["metric"]["instance"].as_str()?;
            let host = HOSTS
                .iter()
                .find(|h| instance == format!("{}:8008", Lab::addr(h)))?;
            Some((host.to_string(), r["value"][1].as_str()?.to_string()))
        })
        .collect();
    seen.sort();
    seen
}

fn leading(leader: &str) -> Vec<(String, String)> {
    HOSTS
        .iter()
        .map(|h| {
            (
                h.to_string(),
                if *h == leader { "1" } else { "0" }.to_string(),
            )
        })
        .collect()
}

fn wait_leading(leader: &str, what: &str) {
    pgherd_e2e::wait_for(
        what,
        Duration::from_secs(60),
        || (primaries() == leading(leader)).then_some(()),
        || format!("Prometheus sees {:?}", primaries()),
    );
}

#[test]
fn prometheus_scrapes_every_member_with_a_client_certificate_and_sees_the_leader_change() {
    let dir = TestDir::new("lab-prometheus");
    let lab = Lab::up_bare(3);
    let inventory = Lab::secured_inventory(&dir.path, ETCD_PATRONI_PW, ETCD_ROOT_PW);
    let run = |playbook: &std::path::Path, extra: &[&str]| {
        ansible_playbook(&dir.path, playbook, &inventory, extra)
    };
    run(&repo_root().join("playbooks/bootstrap.yml"), &[]).assert_ok("the secured cluster");

    // The REST API answers no client without a certificate.
    let metrics = format!("https://{}:8008/metrics", Lab::addr("lab1"));
    let ca = dir.path.join("pki/ca.pem");
    assert_eq!(
        curl_status("GET", &metrics, &["--cacert", ca.to_str().unwrap()]),
        None,
        "the REST API requires a client certificate"
    );

    let role = Lab::role_playbook(
        &dir.path,
        "prometheus.yml",
        "lab3",
        "pgherd.cluster.prometheus",
        &[
            format!("prometheus_port: {PORT}"),
            "prometheus_scrape_interval: 1s".into(),
            format!("prometheus_restapi_cafile: {TLS}/ca.pem"),
            format!("prometheus_restapi_certfile: {TLS}/client.pem"),
            format!("prometheus_restapi_keyfile: {TLS}/client.key"),
        ],
    );

    // Refused before anything changes: the port held, a file missing.
    lab.hold_port("lab3", PORT);
    run(&role, &[]).assert_refused(&[&format!("port {PORT}"), "python3"]);
    lab.release_ports("lab3");
    run(
        &role,
        &[
            "-e",
            &format!("prometheus_restapi_cafile={TLS}/nowhere.pem"),
        ],
    )
    .assert_refused(&[&format!("no such file: {TLS}/nowhere.pem")]);
    assert!(!lab.installed("lab3", "prometheus"));

    // Check mode installs nothing; the run; the run again changes nothing.
    let check = run(&role, &["--check"]);
    check.assert_ok("the role in check mode");
    assert!(!check.changed_tasks().is_empty(), "{}", check.transcript());
    assert!(
        !lab.installed("lab3", "prometheus"),
        "check mode installs nothing"
    );
    run(&role, &[]).assert_ok("the role");
    run(&role, &[]).assert_unchanged("the role again");
    let key = lab
        .ssh(
            "lab3",
            "sudo stat -c '%a %U' /etc/prometheus/patroni-client.key",
        )
        .unwrap();
    assert_eq!(key.trim(), "600 prometheus");

    // Every member scraped over TLS with the client certificate: the
    // leader series names lab1, then lab2 after a switchover.
    wait_leading("lab1", "Prometheus to see lab1 lead");
    run(
        &repo_root().join("playbooks/switchover.yml"),
        &["-e", "new_leader=lab2"],
    )
    .assert_ok("the switchover");
    wait_leading("lab2", "Prometheus to see lab2 lead after the switchover");
}
