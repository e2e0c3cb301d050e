//! The lab's Prometheus on the repository host (the collection's
//! prometheus role): Patroni's /metrics of every member, scraped with a
//! client certificate, and node exporter's pgBackRest series.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pgherd_e2e::{curl_status, repo_root, wait_for, Lab, PlaybookRun};
use serde_json::Value;

use super::{wait_streaming, MEMBERS, REPO_HOST, STANZA, TLS};

/// Prometheus, on the repository host, on a port that is not the role's
/// default.
const PROMETHEUS_PORT: u16 = 9091;

/// The answer of the lab's Prometheus to `query`: each series' labels and
/// value.
fn prometheus(query: &str) -> Vec<(Value, String)> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-G"])
        .arg(format!(
            "http://{}:{PROMETHEUS_PORT}/api/v1/query",
            Lab::addr(REPO_HOST)
        ))
        .args(["--data-urlencode", &format!("query={query}")])
        .output()
        .expect("curl");
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            let value = r["value"][1].as_str().unwrap_or_default().to_string();
            (r["metric"].clone(), value)
        })
        .collect()
}

/// Waits until Prometheus's last scrape of every member says `leader`
/// leads (`patroni_primary` 1 there, 0 on the others).
fn wait_leading(leader: &str, what: &str) {
    let primaries = || {
        let mut seen: Vec<(String, String)> = prometheus("patroni_primary{cluster=\"lab\"}")
            .into_iter()
            .filter_map(|(labels, value)| {
                let instance = labels["instance"].as_str()?.to_string();
                let host = MEMBERS
                    .iter()
                    .find(|h| instance == format!("{}:8008", Lab::addr(h)))?;
                Some((host.to_string(), value))
            })
            .collect();
        seen.sort();
        seen
    };
    let leading: Vec<(String, String)> = MEMBERS
        .iter()
        .map(|h| (h.to_string(), if *h == leader { "1" } else { "0" }.into()))
        .collect();
    wait_for(
        what,
        Duration::from_secs(60),
        || (primaries() == leading).then_some(()),
        || format!("Prometheus sees {:?}", primaries()),
    );
}

/// The lab's Prometheus on the repository host, by the collection's role:
/// refused before anything changes (a port another program holds, a TLS
/// file that is not there), check mode installing nothing, then Patroni's
/// /metrics of every member scraped with a client certificate (the REST
/// API answers no client without one) and the backups' metrics from node
/// exporter; the leader series following a switchover to lab2.
pub(super) fn prometheus_scrapes_the_members_and_the_backups(
    lab: &Lab,
    dir: &Path,
    run: &dyn Fn(&Path, &[&str]) -> PlaybookRun,
) {
    let metrics = format!("https://{}:8008/metrics", Lab::addr("lab1"));
    let ca = dir.join("pki/ca.pem");
    assert_eq!(
        curl_status("GET", &metrics, &["--cacert", ca.to_str().unwrap()]),
        None,
        "the REST API requires a client certificate"
    );
    let role = Lab::role_playbook(
        dir,
        "prometheus.yml",
        REPO_HOST,
        "pgherd.cluster.prometheus",
        &[
            format!("prometheus_port: {PROMETHEUS_PORT}"),
            "prometheus_scrape_interval: 1s".into(),
            format!("prometheus_restapi_cafile: {TLS}/ca.pem"),
            format!("prometheus_restapi_certfile: {TLS}/client.pem"),
            format!("prometheus_restapi_keyfile: {TLS}/client.key"),
            "prometheus_extra_scrape_configs: \
             [{job_name: pgbackrest, static_configs: [{targets: ['localhost:9100']}]}]"
                .into(),
        ],
    );

    lab.hold_port(REPO_HOST, PROMETHEUS_PORT);
    run(&role, &[]).assert_refused(&[&format!("port {PROMETHEUS_PORT}"), "python3"]);
    lab.release_ports(REPO_HOST);
    run(
        &role,
        &[
            "-e",
            &format!("prometheus_restapi_cafile={TLS}/nowhere.pem"),
        ],
    )
    .assert_refused(&[&format!("no such file: {TLS}/nowhere.pem")]);
    assert!(!lab.installed(REPO_HOST, "prometheus"));
    let check = run(&role, &["--check"]);
    check.assert_ok("the role in check mode");
    assert!(!check.changed_tasks().is_empty(), "{}", check.transcript());
    assert!(
        !lab.installed(REPO_HOST, "prometheus"),
        "check mode installs nothing"
    );
    run(&role, &[]).assert_ok("the role");
    run(&role, &[]).assert_unchanged("the role again");
    let key = lab
        .ssh(
            REPO_HOST,
            "sudo stat -c '%a %U' /etc/prometheus/patroni-client.key",
        )
        .unwrap();
    assert_eq!(key.trim(), "600 prometheus");

    wait_leading("lab1", "Prometheus to see lab1 lead");
    // From the role's job: Debian's package first starts Prometheus with
    // its own configuration, whose job "node" scrapes node exporter on
    // the same port until the role's replaces it (its samples stay
    // visible a while after the restart).
    for (query, value) in [
        (
            format!(
                "pgbackrest_backup_last_end_timestamp_seconds{{job=\"pgbackrest\",stanza=\"{STANZA}\",type=\"full\"}}"
            ),
            None,
        ),
        (
            format!("pgbackrest_wal_archive_last_timestamp_seconds{{job=\"pgbackrest\",stanza=\"{STANZA}\"}}"),
            None,
        ),
        (
            format!("pgbackrest_stanza_status_code{{job=\"pgbackrest\",stanza=\"{STANZA}\"}}"),
            Some("0"),
        ),
    ] {
        wait_for(
            &format!("Prometheus to hold {query}"),
            Duration::from_secs(60),
            || match prometheus(&query).as_slice() {
                [(_, v)] if value.is_none_or(|want| want == v) => Some(()),
                _ => None,
            },
            || format!("{:?}", prometheus("{__name__=~\"pgbackrest_.*\"}")),
        );
    }
    run(
        &repo_root().join("playbooks/switchover.yml"),
        &["-e", "new_leader=lab2"],
    )
    .assert_ok("the switchover");
    wait_leading("lab2", "Prometheus to see lab2 lead after the switchover");
    wait_streaming("lab2", "lab1", "lab1 streaming from lab2");
}
