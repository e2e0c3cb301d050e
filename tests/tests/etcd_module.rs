//! The `etcd` module on a real three-member etcd with TLS and client
//! certificates: a role and a user for a Patroni cluster and authentication
//! turned on (check mode first), the user limited to its prefix, a second
//! run that changes nothing, a password changed, refusals that change
//! nothing, and the membership: a healthy member's removal refused while
//! another is down, the dead one removed, a new one added, started with the
//! returned initial cluster, and seen healthy.

use pgherd_e2e::pki::Pki;
use pgherd_e2e::{assert_collection_is_fresh, run_module, Etcd, EtcdCluster, TestDir};
use serde_json::{json, Value};

const ROOT_PASSWORD: &str = "Etc-Root-9Wq2";
const USER: &str = "patroni-ledger";
const PASSWORD: &str = "Ldg-Etcd-4Hn7";
const NEW_PASSWORD: &str = "Ldg-Etcd-8Zt3";
const BASE: u16 = 26_179;

fn secrets_absent(text: &str) {
    for secret in [ROOT_PASSWORD, PASSWORD, NEW_PASSWORD] {
        assert!(!text.contains(secret), "a password shows: {text}");
    }
}

fn members_of(etcd: &Etcd) -> String {
    etcd.etcdctl(Some(&format!("root:{ROOT_PASSWORD}")), &["member", "list"])
        .or_else(|_| etcd.etcdctl(None, &["member", "list"]))
        .expect("member list")
}

#[test]
fn users_roles_authentication_and_members_are_made_as_listed() {
    assert_collection_is_fresh();
    let dir = TestDir::new("etcd-module");
    let pki = Pki::create(&dir.join("pki"));
    let mut etcd = EtcdCluster::start_with(&dir.path, BASE, Some(&pki));
    let connection = json!({
        "hosts": etcd.client_addrs(), "protocol": "https",
        "cacert": pki.ca, "cert": pki.client_cert, "key": pki.client_key,
        "login_password": ROOT_PASSWORD,
    });
    let task = |extra: Value| {
        let mut a = connection.clone();
        for (k, v) in extra.as_object().unwrap() {
            a[k] = v.clone();
        }
        a
    };
    let access = task(json!({
        "auth": true,
        "roles": [{"name": USER, "permissions": [{"key": "/service/ledger/"}]}],
        "users": [{"name": USER, "password": PASSWORD, "roles": [USER]}],
    }));

    // Check mode predicts every change and makes none.
    let mut check_access = access.clone();
    check_access["_ansible_check_mode"] = json!(true);
    check_access["_ansible_diff"] = json!(true);
    let check = run_module(&dir.path, "etcd", &check_access);
    assert!(!check.failed() && check.changed(), "{check:?}");
    assert_eq!(
        check.result["changes"],
        json!([
            format!("add role {USER}"),
            format!("grant readwrite /service/ledger/* to role {USER}"),
            format!("add user {USER}"),
            format!("grant role {USER} to user {USER}"),
            "add user root",
            "grant role root to user root",
            "enable authentication",
        ]),
        "{check:?}"
    );
    let diff = check.result["diff"].to_string();
    assert!(diff.contains("authentication: enabled"), "{diff}");
    secrets_absent(&check.stdout);
    let m0 = &etcd.members[0];
    assert_eq!(m0.etcdctl(None, &["user", "list"]).unwrap().trim(), "");
    assert!(
        m0.etcdctl(None, &["put", "/anything", "x"]).is_ok(),
        "auth still off"
    );

    // The real run; the user reaches its prefix and nothing else.
    let run = run_module(&dir.path, "etcd", &access);
    assert!(!run.failed() && run.changed(), "{run:?}");
    assert_eq!(run.result["changes"], check.result["changes"]);
    assert_eq!(run.result["etcd"]["authentication"], "enabled");
    secrets_absent(&run.stdout);
    let user = format!("{USER}:{PASSWORD}");
    m0.etcdctl(Some(&user), &["put", "/service/ledger/leader", "pg1"])
        .expect("the user writes under its prefix");
    let denied = m0
        .etcdctl(Some(&user), &["put", "/service/ledgers/leader", "x"])
        .unwrap_err();
    assert!(denied.contains("permission denied"), "{denied}");
    assert!(m0
        .etcdctl(None, &["get", "/service/ledger/leader"])
        .is_err());

    // Again: nothing to do, nothing done.
    let again = run_module(&dir.path, "etcd", &access);
    assert!(!again.failed() && !again.changed(), "{again:?}");

    // A new password is found by logging in, and set.
    let mut changed = access.clone();
    changed["users"][0]["password"] = json!(NEW_PASSWORD);
    let run = run_module(&dir.path, "etcd", &changed);
    assert!(!run.failed(), "{run:?}");
    assert_eq!(
        run.result["changes"],
        json!([format!("change the password of user {USER}")])
    );
    secrets_absent(&run.stdout);
    m0.etcdctl(
        Some(&format!("{USER}:{NEW_PASSWORD}")),
        &["get", "/service/ledger/leader"],
    )
    .expect("the new password works");
    assert!(!run_module(&dir.path, "etcd", &changed).changed());

    // Refusals before anything: a role that does not exist, a wrong login.
    let before = m0
        .etcdctl(Some(&format!("root:{ROOT_PASSWORD}")), &["user", "list"])
        .unwrap();
    let refused = run_module(
        &dir.path,
        "etcd",
        &task(json!({"users": [
            {"name": "reporting", "password": "Rpt-Pass-5Mw1", "roles": []},
            {"name": "ghost", "password": "Gst-Pass-2Kd9", "roles": ["nowhere"]},
        ]})),
    );
    assert!(refused.failed() && !refused.changed(), "{refused:?}");
    assert!(
        refused.msg().contains(
            "users: ghost is to have the role nowhere, which neither exists nor is listed in roles"
        ),
        "{}",
        refused.msg()
    );
    let wrong = run_module(
        &dir.path,
        "etcd",
        &task(json!({"login_password": "Not-The-One-1"})),
    );
    assert!(wrong.failed(), "{wrong:?}");
    assert!(
        wrong.msg().contains("authentication failed"),
        "{}",
        wrong.msg()
    );
    assert!(!wrong.stdout.contains("Not-The-One-1"), "{}", wrong.stdout);
    assert_eq!(
        m0.etcdctl(Some(&format!("root:{ROOT_PASSWORD}")), &["user", "list"])
            .unwrap(),
        before
    );

    // Membership: the third member dies.
    let names: Vec<String> = etcd
        .client_addrs()
        .iter()
        .map(|a| format!("e2e-{}", a.rsplit(':').next().unwrap()))
        .collect();
    let peer = |i: u16| format!("http://127.0.0.1:{}", BASE + 2 * i + 1);
    let member = |i: u16| json!({"name": names[i as usize], "peer_urls": [peer(i)]});
    etcd.members[2].kill();
    let m0 = &etcd.members[0];
    let connection_alive = task(json!({"hosts": etcd.client_addrs()[..2]}));
    let with = |members: Value| {
        let mut a = connection_alive.clone();
        a["members"] = members;
        a
    };
    let listed = members_of(m0);
    let refused = run_module(&dir.path, "etcd", &with(json!([member(0), member(2)])));
    assert!(refused.failed() && !refused.changed(), "{refused:?}");
    assert!(
        refused.msg().contains(&format!(
            "members: removing {} would leave 1 healthy member(s) of 2, fewer than the quorum of 2",
            names[1]
        )),
        "{}",
        refused.msg()
    );
    assert_eq!(members_of(m0), listed, "nothing may change");

    // The dead member removed, a new one added in its place.
    let newcomer = json!({"name": "e2e-26185", "peer_urls": ["http://127.0.0.1:26186"]});
    let replace = with(json!([member(0), member(1), newcomer]));
    let check = run_module(&dir.path, "etcd", &{
        let mut a = replace.clone();
        a["_ansible_check_mode"] = json!(true);
        a
    });
    assert_eq!(
        check.result["changes"],
        json!([
            format!("remove member {}", names[2]),
            "add member e2e-26185 (http://127.0.0.1:26186)"
        ]),
        "{check:?}"
    );
    assert_eq!(members_of(m0), listed, "check mode changes nothing");
    let run = run_module(&dir.path, "etcd", &replace);
    assert!(!run.failed() && run.changed(), "{run:?}");
    assert!(
        run.warnings_text().contains("is added but not started"),
        "{run:?}"
    );
    let initial = run.result["etcd"]["initial_cluster"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        initial.contains("e2e-26185=http://127.0.0.1:26186"),
        "{initial}"
    );
    assert!(!initial.contains(&names[2]), "{initial}");
    let joined = Etcd::join(&dir.path, 26_185, 26_186, Some(&pki), &initial);
    let settled = run_module(&dir.path, "etcd", &replace);
    assert!(!settled.failed() && !settled.changed(), "{settled:?}");
    let members = settled.result["etcd"]["members"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(members.iter().all(|m| m["healthy"] == true), "{members:?}");
    assert!(members_of(&joined).contains("e2e-26185"));
}
