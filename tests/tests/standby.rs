//! A standby cluster for disaster recovery, on the local machine: two
//! sites of two nodes in one inventory, the second site's cluster a
//! standby of the first (streaming through a permanent slot of the
//! primary), deployed by one run of site.yml; the promotion
//! refused while the primary site answers, then, the primary site lost
//! with a client writing to it, promoted with everything it had received
//! (no gap) and writes accepted; then the lost site rebuilt as a standby
//! of the promoted one.

use std::path::Path;
use std::time::{Duration, Instant};

use pgherd_e2e::{
    ansible_playbook, cluster_view_from, local_inventory_with, local_nodes_test, lose_node,
    member_roles, one_task_playbook, pgherd_bin, postmaster_start, psql, repo_root, wait_for, Etcd,
    PlaybookRun,
};
use serde_json::json;

/// The primary site (cluster books) and the standby site (books-dr).
const EAST: [(&str, &str); 2] = [("east1", "127.0.0.11"), ("east2", "127.0.0.12")];
const WEST: [(&str, &str); 2] = [("west1", "127.0.0.13"), ("west2", "127.0.0.14")];

/// Both sites: east the primary cluster, west its standby; `way_back`,
/// west the primary (promoted) and east its standby.
fn inventory(dir: &Path, way_back: bool) -> std::path::PathBuf {
    let (east, west) = if way_back {
        (
            "pg_cluster: books, patroni_standby_cluster: {host: '127.0.0.13,127.0.0.14'}",
            "pg_cluster: books-dr",
        )
    } else {
        (
            "pg_cluster: books, patroni_bootstrap_dcs: {slots: {books_dr: {type: physical}}}",
            "pg_cluster: books-dr, patroni_standby_cluster: {host: '127.0.0.11,127.0.0.12', \
             port: 5432, primary_slot_name: books_dr}",
        )
    };
    let host = |(name, address): (&str, &str), vars: &str| {
        format!("        {name}: {{ansible_host: {address}, {vars}}}\n")
    };
    let hosts = format!(
        "all:\n  children:\n    primary:\n      hosts:\n{}{}    replica:\n      hosts:\n{}{}",
        host(EAST[0], east),
        host(WEST[0], west),
        host(EAST[1], east),
        host(WEST[1], west),
    );
    local_inventory_with(dir, &hosts)
}

/// `name: role/state` of each member of a site's cluster.
fn roles(site: &[(&str, &str)]) -> Vec<String> {
    let view = cluster_view_from(site.iter().map(|(_, a)| format!("{a}:8008")));
    member_roles(view.as_ref(), true)
}

fn sql(root: &Path, node: &str, query: &str) -> Result<String, String> {
    psql(&root.join(format!("{node}/run")), query)
}

/// Waits until `node` holds `count` rows of the orders table.
fn wait_orders(root: &Path, node: &str, count: &str, what: &str) {
    let counted = || sql(root, node, "select count(*) from orders");
    wait_for(
        what,
        Duration::from_secs(30),
        || (counted().as_deref() == Ok(count)).then_some(()),
        || format!("{:?}", counted()),
    );
}

fn ok(run: &PlaybookRun, what: &str) {
    assert!(run.succeeded(), "{what} failed:\n{}", run.transcript());
}

#[test]
fn a_standby_site_follows_and_is_promoted_once_the_primary_site_is_lost() {
    let addresses: Vec<&str> = EAST.iter().chain(&WEST).map(|(_, a)| *a).collect();
    let (dir, root, _reaper) = local_nodes_test("standby", &addresses);
    let etcd = Etcd::start(&dir.path, 25_399, 25_400);
    let vars = [
        "-e".to_string(),
        format!("pgherd_repo={}", repo_root().display()),
        "-e".to_string(),
        "pg_instance=main".to_string(),
        "-e".to_string(),
        format!("pgherd_local_root={}", root.display()),
        "-e".to_string(),
        format!("{{\"pgherd_etcd_hosts\": [\"{}\"]}}", etcd.client_addr),
    ];
    let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
    let inv = inventory(&dir.path, false);
    let site = repo_root().join("playbooks/site.yml");
    let promote = repo_root().join("playbooks/promote.yml");

    // Both sites in one run: the standby leader clones from the primary
    // site once it runs.
    let started = Instant::now();
    ok(
        &ansible_playbook(&dir.path, &site, &inv, &vars),
        "both sites",
    );
    eprintln!(
        "standby: both sites deployed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let expected_west = [
        "west1: standby_leader/streaming",
        "west2: replica/streaming",
    ];
    wait_for(
        "west1 a streaming standby leader, west2 streaming from it",
        Duration::from_secs(60),
        || (roles(&WEST) == expected_west).then_some(()),
        || format!("{:?}", roles(&WEST)),
    );
    assert_eq!(
        roles(&EAST),
        ["east1: leader/running", "east2: replica/streaming"]
    );
    // The standby leader streams through the primary's permanent slot.
    let slot = sql(
        &root,
        "east1",
        "select active from pg_replication_slots where slot_name = 'books_dr'",
    );
    assert_eq!(slot.as_deref(), Ok("t"), "{slot:?}");
    let again = ansible_playbook(&dir.path, &site, &inv, &vars);
    ok(&again, "the second run");
    assert!(again.changed_tasks().is_empty(), "{}", again.transcript());

    // pgherd status says what the standby cluster follows.
    let status = std::process::Command::new(pgherd_bin())
        .args(["-s", root.join("west1/settings.yaml").to_str().unwrap()])
        .args(["-c", "books-dr", "status"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(
        table.lines().next().is_some_and(
            |l| l.ends_with("standby cluster following 127.0.0.11:5432,127.0.0.12:5432")
        ) && table.contains("Standby Leader"),
        "{table}{}",
        String::from_utf8_lossy(&status.stderr)
    );

    // Writes on the primary site reach both standby nodes.
    sql(
        &root,
        "east1",
        "create table orders (n int); insert into orders select generate_series(1, 500)",
    )
    .unwrap();
    for (node, _) in WEST {
        wait_orders(&root, node, "500", &format!("the rows on {node}"));
    }

    // Inside the standby cluster: a restart of every member, its replica
    // first, its standby leader last, each back to following after.
    let restart = one_task_playbook(
        &dir.path,
        "restart-west",
        "west1",
        "pgherd.cluster.patroni",
        &json!({"cluster": "books-dr", "restart": "all",
                "settings": root.join("west1/settings.yaml")}),
    );
    let started_at = || WEST.map(|(_, a)| postmaster_start(&format!("{a}:8008")));
    let before = started_at();
    let restarted = ansible_playbook(&dir.path, &restart, &inv, &vars);
    ok(&restarted, "the restart of the standby cluster");
    let changes = restarted.events_of("restart-west")[0].result["changes"].clone();
    assert_eq!(
        changes,
        json!(["restart west2", "restart west1"]),
        "{}",
        restarted.transcript()
    );
    // What the members say: both postmasters started anew, west2's first.
    let after = started_at();
    assert!(
        before
            .iter()
            .zip(&after)
            .all(|(b, a)| a.is_some() && a != b)
            && after[1] < after[0],
        "postmaster start times (west1, west2): before {before:?}, after {after:?}"
    );
    wait_for(
        "west1 streaming again after its restart",
        Duration::from_secs(30),
        || (roles(&WEST) == expected_west).then_some(()),
        || format!("{:?}", roles(&WEST)),
    );

    // A promotion while the primary site answers: refused, naming it;
    // without naming the cluster: refused.
    let mut named = vars.clone();
    named.extend(["-e", "promote_cluster=books-dr"]);
    let refused = ansible_playbook(&dir.path, &promote, &inv, &named);
    assert!(!refused.succeeded(), "{}", refused.transcript());
    assert!(
        refused.transcript().contains("127.0.0.11:5432")
            && refused.transcript().contains("two primaries"),
        "{}",
        refused.transcript()
    );
    let unnamed = ansible_playbook(&dir.path, &promote, &inv, &vars);
    assert!(!unnamed.succeeded(), "{}", unnamed.transcript());
    assert!(
        unnamed.transcript().contains("promote_cluster=NAME"),
        "{}",
        unnamed.transcript()
    );
    // (Roles only: a cascading replica's WAL receiver may be between two
    // connections at any moment.)
    let view = cluster_view_from(WEST.iter().map(|(_, a)| format!("{a}:8008")));
    assert_eq!(
        member_roles(view.as_ref(), false),
        ["west1: standby_leader", "west2: replica"],
        "a refusal changed nothing"
    );

    // The primary site lost. Check mode says what the promotion does and
    // changes nothing; the promotion then has west1 lead, with every row
    // and writes accepted.
    // Writes running on the primary site up to the cut: a client inserts
    // 1, 2, 3... one transaction each until the site is gone.
    sql(&root, "east1", "create table live (n int primary key)").unwrap();
    let writer = {
        let socket = root.join("east1/run");
        std::thread::spawn(move || {
            let mut n = 0;
            while psql(&socket, &format!("insert into live values ({})", n + 1)).is_ok() {
                n += 1;
            }
            n
        })
    };
    let replicated_before_the_cut = wait_for(
        "rows written and replicated to west1",
        Duration::from_secs(30),
        || {
            sql(&root, "west1", "select count(*) from live")
                .ok()
                .and_then(|c| c.parse::<u64>().ok())
                .filter(|c| *c >= 20)
        },
        || format!("{:?}", sql(&root, "west1", "select count(*) from live")),
    );
    for (node, address) in EAST {
        lose_node(&root, node, address);
    }
    let committed = writer.join().unwrap();
    let mut check = named.clone();
    check.push("--check");
    let predicted = ansible_playbook(&dir.path, &promote, &inv, &check);
    ok(&predicted, "the promotion in check mode");
    assert!(
        predicted.changed("Standby cluster promoted: books-dr"),
        "{}",
        predicted.transcript()
    );
    // (the standby leader no longer streams: nothing to stream from)
    assert!(
        roles(&WEST)[0].starts_with("west1: standby_leader/"),
        "check mode changed nothing: {:?}",
        roles(&WEST)
    );
    let ordered = Instant::now();
    let promoted = ansible_playbook(&dir.path, &promote, &inv, &named);
    ok(&promoted, "the promotion");
    let returned = ordered.elapsed().as_secs_f64();
    wait_for(
        "a write accepted on west1",
        Duration::from_secs(30),
        || sql(&root, "west1", "insert into orders values (501)").ok(),
        || format!("{:?}", roles(&WEST)),
    );
    eprintln!(
        "standby: promotion ordered to a write accepted on west1: {:.1} s (the playbook \
         returned after {returned:.1} s)",
        ordered.elapsed().as_secs_f64()
    );
    assert_eq!(
        sql(
            &root,
            "west1",
            "select count(*) || ':' || sum(n) from orders"
        )
        .as_deref(),
        Ok("501:125751")
    );
    // Every write replicated before the cut is there, without a gap; what
    // was committed on the primary site and not yet replicated is lost
    // (asynchronous replication between sites).
    let live = sql(
        &root,
        "west1",
        "select count(*) || ':' || coalesce(max(n), 0) from live",
    )
    .unwrap();
    let (count, max) = live.split_once(':').unwrap();
    let (count, max): (u64, u64) = (count.parse().unwrap(), max.parse().unwrap());
    eprintln!(
        "standby: {committed} rows committed on the primary site, {count} on the promoted \
         cluster ({replicated_before_the_cut} seen replicated before the cut)"
    );
    assert_eq!(count, max, "a gap in what the standby site received");
    assert!(
        count >= replicated_before_the_cut && count <= committed,
        "{live}"
    );
    wait_for(
        "west1 the leader, west2 streaming from it",
        Duration::from_secs(30),
        || (roles(&WEST) == ["west1: leader/running", "west2: replica/streaming"]).then_some(()),
        || format!("{:?}", roles(&WEST)),
    );
    wait_orders(&root, "west2", "501", "the new row on west2");
    let twice = ansible_playbook(&dir.path, &promote, &inv, &named);
    ok(&twice, "the promotion again");
    assert!(twice.changed_tasks().is_empty(), "{}", twice.transcript());

    // The way back: the lost site rebuilt as a standby of the promoted
    // one. Its old cluster's keys go first (the patroni module's
    // state: absent, guarded by the system identifier), then site.yml with
    // the sites' parts swapped in the inventory.
    let sysid = etcd
        .etcdctl(
            None,
            &["get", "/service/books/initialize", "--print-value-only"],
        )
        .unwrap();
    let forget = one_task_playbook(
        &dir.path,
        "forget-east",
        "west1",
        "pgherd.cluster.patroni",
        &json!({"cluster": "books", "state": "absent", "system_identifier": sysid.trim(),
                "settings": root.join("west1/settings.yaml")}),
    );
    let back = inventory(&dir.path, true);
    ok(
        &ansible_playbook(&dir.path, &forget, &back, &vars),
        "the lost site's cluster removed from the DCS",
    );
    let started = Instant::now();
    ok(
        &ansible_playbook(&dir.path, &site, &back, &vars),
        "the lost site rebuilt as a standby",
    );
    eprintln!(
        "standby: the lost site rebuilt as a standby of the promoted one in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    wait_for(
        "east1 a standby leader following west, east2 streaming from it",
        Duration::from_secs(60),
        || {
            (roles(&EAST)
                == [
                    "east1: standby_leader/streaming",
                    "east2: replica/streaming",
                ])
            .then_some(())
        },
        || format!("{:?}", roles(&EAST)),
    );
    sql(&root, "west1", "insert into orders values (502)").unwrap();
    wait_orders(
        &root,
        "east2",
        "502",
        "a row written on the promoted site, on east2",
    );
}
