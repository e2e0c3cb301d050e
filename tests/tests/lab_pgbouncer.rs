//! PgBouncer deployed by the collection's pgbouncer role on a lab host,
//! kept pointed at the leader by `pgherd proxy` as its systemd unit, with
//! real client traffic: writes through PgBouncer across a switchover (every
//! acknowledged write on the new leader, the unavailability measured), the
//! proxy restarted, its host's etcd member stopped and a switchover made
//! meanwhile (it follows through the other members); a port taken by
//! another program refused before anything changes.

use pgherd_e2e::{lab_sql_port, lab_story, Lab, TestDir, LAB_SUPERUSER_PW};

const HOSTS: [&str; 3] = ["lab1", "lab2", "lab3"];
/// Not the role's default.
const PORT: u16 = 6543;
fn story() -> String {
    lab_story(
        &HOSTS,
        "curl -s http://$(hostname -I | cut -d' ' -f1):8008/patroni; echo; \
         sudo journalctl -u 'pgherd-proxy@*' --no-pager -n 5 2>/dev/null; \
         sudo grep -h 'host=' /etc/pgbouncer/pgbouncer.ini 2>/dev/null",
    )
}

/// The server a new connection through PgBouncer (on lab3) reaches.
fn through() -> Option<String> {
    lab_sql_port(
        &format!("host={}", Lab::addr("lab3")),
        PORT,
        false,
        "SELECT host(inet_server_addr())",
    )
}

fn role_playbook(dir: &TestDir, host: &str) -> std::path::PathBuf {
    Lab::role_playbook(
        &dir.path,
        &format!("pgbouncer-{host}.yml"),
        host,
        "pgherd.cluster.pgbouncer",
        &[
            format!("pgbouncer_port: {PORT}"),
            format!("pgbouncer_users: [{{name: postgres, password: {LAB_SUPERUSER_PW}}}]"),
        ],
    )
}

fn wait_through(to: &str, what: &str) {
    pgherd_e2e::wait_for(
        what,
        std::time::Duration::from_secs(60),
        || (through().as_deref() == Some(to)).then_some(()),
        story,
    );
}

#[test]
fn pgbouncer_follows_the_leader_through_switchovers_a_restart_and_a_lost_etcd_member() {
    let dir = TestDir::new("lab-pgbouncer");
    let lab = Lab::deployed(&dir.path, story);

    // A port another program listens on: refused, nothing installed.
    lab.hold_port("lab2", PORT);
    lab.playbook(&dir.path, &role_playbook(&dir, "lab2"), &[])
        .assert_refused(&[&format!("port {PORT}"), "python3"]);
    assert!(!lab.installed("lab2", "pgbouncer"));
    lab.release_ports("lab2");

    // Check mode, the run, the run again.
    let role = role_playbook(&dir, "lab3");
    lab.role_three_ways(&dir.path, &role, "lab3", "pgbouncer");
    let files = lab
        .ssh(
            "lab3",
            "sudo stat -c '%a %U %n' /etc/pgbouncer/userlist.txt /etc/pgherd/proxy-lab.settings.yaml; \
             systemctl is-enabled pgherd-proxy@lab pgbouncer",
        )
        .unwrap();
    assert!(
        files.contains("640 postgres /etc/pgbouncer/userlist.txt")
            && files.contains("600 root /etc/pgherd/proxy-lab.settings.yaml")
            && files.matches("enabled").count() == 2,
        "{files}"
    );
    assert_eq!(through(), Some(Lab::addr("lab1")));

    // A switchover under writes through PgBouncer.
    lab.switchover_through(
        &dir.path,
        "PgBouncer",
        (&Lab::addr("lab3"), PORT),
        "lab2",
        story,
    );
    wait_through(&Lab::addr("lab2"), "PgBouncer to reach the new leader");

    // The proxy restarted, then its host's etcd member stopped: it follows
    // the next switchover through the other members.
    lab.ssh("lab3", "sudo systemctl restart pgherd-proxy@lab")
        .unwrap();
    lab.ssh("lab3", "sudo systemctl stop etcd").unwrap();
    lab.switchover(&dir.path, "lab1");
    wait_through(
        &Lab::addr("lab1"),
        "PgBouncer to follow the leader with its host's etcd member stopped",
    );
    lab.ssh("lab3", "sudo systemctl start etcd").unwrap();
}
