//! Two sites of real hosts: three Debian hosts (lab1-3, cluster `books`)
//! and two (lab4-5, cluster `books-dr`), each site its own etcd cluster,
//! the second site's cluster a standby of the first, both deployed by one
//! run of site.yml over SSH. Then the first site lost whole (its three
//! hosts crashed) while a client writes to it: the promotion of the second
//! site, with every row it had received and writes accepted; then the
//! first site's hosts booted again, where their old primary comes back,
//! and the way back: the old site removed and rebuilt as the standby of
//! the promoted one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgherd_e2e::{
    ansible_playbook, cluster_view_from, lab_ids, lab_rest, lab_sh, lab_sql, lab_story,
    member_roles, one_task_playbook, repo_root, wait_for, Lab, PlaybookRun, TestDir, Writer,
};
use serde_json::json;
use serde_yaml::Value as Yaml;

const EAST: [&str; 3] = ["lab1", "lab2", "lab3"];
const WEST: [&str; 2] = ["lab4", "lab5"];

/// The site's addresses, comma-separated.
fn addresses(site: &[&str]) -> String {
    site.iter()
        .map(|h| Lab::addr(h))
        .collect::<Vec<_>>()
        .join(",")
}

/// libpq's target of a site: any of its hosts.
fn target(site: &[&str]) -> String {
    format!("host={}", addresses(site))
}

fn yaml(text: &str) -> Yaml {
    serde_yaml::from_str(text).expect("YAML")
}

/// Both sites in one inventory, each site's variables in its
/// group_vars/SITE.yml: its cluster's name and its own etcd cluster (the
/// lab inventory's settings, the etcd hosts replaced); east the primary
/// cluster and west its standby, or, `way_back`, west the primary
/// (promoted) and east its standby.
fn inventory(dir: &Path, way_back: bool) -> PathBuf {
    let inventory = dir.join(if way_back { "back" } else { "inventory" });
    let group_vars = inventory.join("group_vars");
    std::fs::create_dir_all(&group_vars).expect("inventory directory");
    let all = Lab::inventory().join("group_vars/all.yml");
    std::fs::copy(&all, group_vars.join("all.yml")).expect("copy the lab's variables");
    let all = yaml(&std::fs::read_to_string(all).expect("the lab's variables"));
    let site_vars = |site: &[&str], cluster: &str, extra: &str| {
        let mut vars = yaml(&format!("pg_cluster: {cluster}\n{extra}"));
        let mut settings = all["pgherd_settings"].clone();
        settings["patroni"]["etcd"]["hosts"] = site
            .iter()
            .map(|h| Yaml::from(format!("{}:2379", Lab::addr(h))))
            .collect();
        vars["pgherd_settings"] = settings;
        serde_yaml::to_string(&vars).expect("YAML")
    };
    let follow = |site: &[&str], slot: &str| {
        format!(
            "patroni_standby_cluster: {{host: '{}', port: 5432, primary_slot_name: {slot}}}",
            addresses(site)
        )
    };
    let slot =
        |name: &str| format!("patroni_bootstrap_dcs: {{slots: {{{name}: {{type: physical}}}}}}");
    let (east, west) = if way_back {
        (follow(&WEST, "books"), String::new())
    } else {
        (slot("books_dr"), follow(&EAST, "books_dr"))
    };
    for (name, text) in [
        ("east", site_vars(&EAST, "books", &east)),
        ("west", site_vars(&WEST, "books-dr", &west)),
    ] {
        std::fs::write(group_vars.join(format!("{name}.yml")), text).expect("site variables");
    }
    let hosts = |site: &[&str]| -> String {
        site.iter()
            .map(|h| format!("        {h}: {{ansible_host: {}}}\n", Lab::addr(h)))
            .collect()
    };
    std::fs::write(
        inventory.join("hosts.yml"),
        format!(
            "all:\n  children:\n    east:\n      hosts:\n{}    west:\n      hosts:\n{}    \
             primary:\n      hosts: {{lab1: {{}}, lab4: {{}}}}\n    replica:\n      \
             hosts: {{lab2: {{}}, lab3: {{}}, lab5: {{}}}}\n",
            hosts(&EAST),
            hosts(&WEST)
        ),
    )
    .expect("write the inventory");
    inventory
}

/// `name: role` of each member of a site's cluster, as the first of its
/// hosts that answers lists it.
fn roles(site: &[&str]) -> Vec<String> {
    let view = cluster_view_from(site.iter().map(|h| format!("{}:8008", Lab::addr(h))));
    member_roles(view.as_ref(), false)
}

/// The members that stream from `host`, as its Patroni reports its
/// walsenders.
fn streams_to(host: &str) -> Vec<String> {
    let mut out: Vec<String> = lab_rest(host, "/patroni")
        .and_then(|p| {
            p["replication"].as_array().map(|r| {
                r.iter()
                    .filter(|w| w["state"] == "streaming")
                    .filter_map(|w| w["application_name"].as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Both sites as their hosts see them, and what each Patroni last logged.
fn sites_story() -> String {
    let hosts: Vec<&str> = EAST.iter().chain(&WEST).copied().collect();
    let views: Vec<String> = hosts
        .iter()
        .map(|h| {
            format!(
                "{h}: cluster {:?}",
                lab_rest(h, "/cluster").map(|v| v["members"].clone())
            )
        })
        .collect();
    format!(
        "{}\n{}",
        views.join("\n"),
        lab_story(
            &hosts,
            "sudo grep -v 'no action' /var/log/patroni/15-main/patroni.log | tail -n 6",
        )
    )
}

fn ok(run: &PlaybookRun, what: &str) {
    assert!(
        run.succeeded(),
        "{what} failed:\n{}\n{}",
        run.transcript(),
        sites_story()
    );
}

/// Waits until the sites show these roles and walsenders.
fn wait_shape(what: &str, east: &[&str], west: &[&str], streams: &[(&str, &[&str])]) {
    wait_for(
        what,
        Duration::from_secs(90),
        || {
            (roles(&EAST) == east
                && roles(&WEST) == west
                && streams.iter().all(|(h, to)| streams_to(h) == *to))
            .then_some(())
        },
        || {
            format!(
                "east {:?}, west {:?}, {:?}\n{}",
                roles(&EAST),
                roles(&WEST),
                streams
                    .iter()
                    .map(|(h, _)| (h, streams_to(h)))
                    .collect::<Vec<_>>(),
                sites_story()
            )
        },
    );
}

#[test]
fn a_standby_site_of_real_hosts_takes_over_when_the_first_is_lost_and_the_way_back() {
    let began = Instant::now();
    let step = |what: &str| eprintln!("sites: {:5.1} s: {what}", began.elapsed().as_secs_f64());
    let lab = Lab::up_sites(3, 2);
    step("the lab up");
    let dir = TestDir::new("lab-sites");
    let site = repo_root().join("playbooks/site.yml");
    let promote = repo_root().join("playbooks/promote.yml");
    let inv = inventory(&dir.path, false);

    // Both sites from nothing, in one run: east's leader first, then
    // west's standby leader cloned from it, then the replicas of both.
    let started = Instant::now();
    ok(
        &ansible_playbook(&dir.path, &site, &inv, &[]),
        "both sites deployed",
    );
    eprintln!(
        "sites: both sites (3 + 2 hosts) deployed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    wait_shape(
        "east led by lab1, west's standby leader lab4 streaming from it",
        &["lab1: leader", "lab2: replica", "lab3: replica"],
        &["lab4: standby_leader", "lab5: replica"],
        &[("lab1", &["lab2", "lab3", "lab4"]), ("lab4", &["lab5"])],
    );
    step("both sites running");
    // Each site's cluster in its own etcd only.
    for (host, other) in [("lab1", "books-dr"), ("lab4", "books")] {
        let keys = lab
            .ssh(
                host,
                &format!(
                    "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 get --prefix \
                     --keys-only /service/{other}/"
                ),
            )
            .unwrap();
        assert!(
            keys.trim().is_empty(),
            "{host}'s etcd holds {other}: {keys}"
        );
    }
    // The permanent slot west streams through, on east's leader.
    assert_eq!(
        lab_sql(
            &format!("host={}", Lab::addr("lab1")),
            false,
            "SELECT active FROM pg_replication_slots WHERE slot_name = 'books_dr'"
        )
        .as_deref(),
        Some("t")
    );
    ansible_playbook(&dir.path, &site, &inv, &[]).assert_unchanged("site.yml again");

    step("site.yml again");
    // Writes on the primary site, reaching the standby site's replica.
    lab_sql(
        &target(&EAST),
        true,
        "CREATE TABLE orders (id bigint PRIMARY KEY)",
    )
    .expect("create the table");
    let writer = Writer::start(&target(&EAST), "orders", sites_story);
    writer.wait_progress(20, "on the primary site");
    let lab5 = format!("host={}", Lab::addr("lab5"));
    wait_for(
        "rows on lab5, through west's standby leader",
        Duration::from_secs(30),
        || (lab_ids(&lab5, "orders").len() >= 10).then_some(()),
        || format!("{} rows on lab5", lab_ids(&lab5, "orders").len()),
    );

    step("writes replicated to lab5");
    // A promotion while the primary site answers: refused, naming it,
    // nothing changed.
    let named = ["-e", "promote_cluster=books-dr"];
    let refused = ansible_playbook(&dir.path, &promote, &inv, &named);
    assert!(!refused.succeeded(), "{}", refused.transcript());
    assert!(
        refused
            .transcript()
            .contains(&format!("{}:5432", Lab::addr("lab1")))
            && refused.transcript().contains("two primaries"),
        "{}",
        refused.transcript()
    );
    assert_eq!(roles(&WEST), ["lab4: standby_leader", "lab5: replica"]);

    step("the refusal");
    // The primary site lost: its three hosts crash at once (a power cut
    // of the site), the client writing until then.
    let lab4 = format!("host={}", Lab::addr("lab4"));
    let before_the_cut = lab_ids(&lab4, "orders");
    lab_sh(&["crash", EAST[0], EAST[1], EAST[2]]);
    let acked = writer.finish();
    step("the primary site crashed");
    let ordered = Instant::now();
    let promoted = ansible_playbook(&dir.path, &promote, &inv, &named);
    ok(&promoted, "the promotion");
    let returned = ordered.elapsed().as_secs_f64();
    wait_for(
        "a write accepted on the promoted site",
        Duration::from_secs(30),
        || lab_sql(&target(&WEST), true, "INSERT INTO orders VALUES (1000000)"),
        sites_story,
    );
    eprintln!(
        "sites: promotion ordered to a write accepted on west: {:.1} s (the playbook returned \
         after {returned:.1} s)",
        ordered.elapsed().as_secs_f64()
    );
    assert_eq!(
        promoted
            .changed_tasks()
            .iter()
            .map(|e| e.host.as_str())
            .collect::<Vec<_>>(),
        ["lab4"],
        "the promotion ran once, on the first of west's hosts"
    );
    // Every row west had received before the cut is there, without a gap;
    // nothing west has was not written by the client.
    let present = lab_ids(&lab4, "orders");
    let received: Vec<u64> = present.iter().copied().filter(|i| *i < 1_000_000).collect();
    let last = received.last().copied().unwrap_or(0);
    eprintln!(
        "sites: {} rows acknowledged on the primary site, {} on the promoted one ({} seen there \
         before the cut)",
        acked.len(),
        received.len(),
        before_the_cut.len()
    );
    assert!(
        before_the_cut.iter().all(|i| present.contains(i)),
        "rows received before the cut are missing"
    );
    assert_eq!(
        received,
        (1..=last).collect::<Vec<_>>(),
        "a gap in what west received"
    );
    assert!(
        last <= acked.last().copied().unwrap_or(0) + 1,
        "rows nobody wrote"
    );
    wait_shape(
        "lab4 the leader of books-dr, lab5 streaming from it",
        &[],
        &["lab4: leader", "lab5: replica"],
        &[("lab4", &["lab5"])],
    );
    ansible_playbook(&dir.path, &promote, &inv, &named).assert_unchanged("the promotion again");

    step("the promotion checked");
    // The first site's hosts come back with their disks: systemd starts
    // etcd and Patroni, and books runs again as a primary cluster beside
    // the promoted one (the operator's to stop before its clients return).
    lab_sh(&["boot", EAST[0], EAST[1], EAST[2]]);
    wait_for(
        "books taking writes again on the booted site",
        Duration::from_secs(90),
        || lab_sql(&target(&EAST), true, "INSERT INTO orders VALUES (2000000)"),
        sites_story,
    );

    step("the old site booted, taking writes again");
    // The way back: the old site's nodes removed (teardown.yml, limited to
    // it), their cluster's keys removed (the patroni module's state:
    // absent, guarded by the system identifier), a permanent slot for them
    // on the promoted cluster, then site.yml with the sites' parts swapped.
    let back = inventory(&dir.path, true);
    let started = Instant::now();
    ok(
        &ansible_playbook(
            &dir.path,
            &repo_root().join("playbooks/teardown.yml"),
            &back,
            &["-l", "east"],
        ),
        "the old site's nodes removed",
    );
    let sysid = lab
        .ssh(
            "lab1",
            "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 get \
             /service/books/initialize --print-value-only",
        )
        .unwrap();
    let forget = one_task_playbook(
        &dir.path,
        "forget-books",
        "lab1",
        "pgherd.cluster.patroni",
        &json!({"cluster": "books", "state": "absent", "system_identifier": sysid.trim(),
                "settings": "/etc/pgherd/settings.yaml"}),
    );
    ok(
        &ansible_playbook(&dir.path, &forget, &back, &[]),
        "the old site's cluster removed from its DCS",
    );
    let slot = one_task_playbook(
        &dir.path,
        "slot-for-books",
        "lab4",
        "pgherd.cluster.patroni",
        &json!({"cluster": "books-dr", "settings": "/etc/pgherd/settings.yaml",
                "dynamic_config": {"slots": {"books": {"type": "physical"}}}}),
    );
    ok(
        &ansible_playbook(&dir.path, &slot, &back, &[]),
        "a permanent slot on the promoted cluster",
    );
    ok(
        &ansible_playbook(&dir.path, &site, &back, &[]),
        "the old site rebuilt as a standby",
    );
    eprintln!(
        "sites: the old site removed and rebuilt as a standby of the promoted one in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    wait_shape(
        "lab1 a standby leader following west, lab2 and lab3 streaming from it",
        &["lab1: standby_leader", "lab2: replica", "lab3: replica"],
        &["lab4: leader", "lab5: replica"],
        &[("lab4", &["lab1", "lab5"]), ("lab1", &["lab2", "lab3"])],
    );
    step("the way back: both sites running");
    lab_sql(&target(&WEST), true, "INSERT INTO orders VALUES (1000001)").expect("a write on west");
    let lab3 = format!("host={}", Lab::addr("lab3"));
    wait_for(
        "every row of the promoted site on lab3",
        Duration::from_secs(30),
        || (lab_ids(&lab3, "orders") == lab_ids(&lab4, "orders")).then_some(()),
        || {
            format!(
                "lab3 {:?}\n{}",
                lab_ids(&lab3, "orders").len(),
                sites_story()
            )
        },
    );
    assert!(
        !lab_ids(&lab3, "orders").contains(&2_000_000),
        "a row the old site took after it came back survived its rebuilding"
    );
    step("the way back: every row on lab3");
    ansible_playbook(&dir.path, &site, &back, &[])
        .assert_unchanged("site.yml again after the way back");
    step("site.yml again after the way back");
}
