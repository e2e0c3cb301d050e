use super::*;

fn prefix(key: &str) -> Perm {
    Perm {
        key: key.into(),
        range: Range::Prefix,
        access: Access::ReadWrite,
    }
}

fn role(name: &str, perms: &[Perm]) -> RoleWanted {
    RoleWanted {
        name: name.into(),
        permissions: perms.iter().cloned().collect(),
        present: true,
    }
}

fn user(name: &str, password: &str, roles: &[&str]) -> UserWanted {
    UserWanted {
        name: name.into(),
        password: Some(password.into()),
        roles: Some(roles.iter().map(|r| r.to_string()).collect()),
        present: true,
    }
}

fn root_login() -> Option<Login> {
    Some(Login {
        username: "root".into(),
        password: "rootpw".into(),
    })
}

fn member(id: u64, name: &str, healthy: bool) -> MemberSeen {
    MemberSeen {
        id: format!("{id:x}"),
        raw_id: id,
        name: name.into(),
        peer_urls: [format!("https://{name}:2380")].into(),
        client_urls: [format!("https://{name}:2379")].into(),
        learner: false,
        healthy,
    }
}

fn wanted_member(name: &str) -> MemberWanted {
    MemberWanted {
        name: name.into(),
        peer_urls: [format!("https://{name}:2380")].into(),
    }
}

fn described(steps: &[Step]) -> Vec<String> {
    steps.iter().map(Step::describe).collect()
}

#[test]
fn a_fresh_etcd_gets_roles_users_root_and_then_authentication() {
    let wanted = Wanted {
        auth: Some(true),
        roles: vec![role("patroni-main", &[prefix("/service/main/")])],
        users: vec![user("patroni-main", "pw", &["patroni-main"])],
        members: None,
        login: root_login(),
    };
    let steps = plan(&Seen::default(), &wanted).unwrap();
    assert_eq!(
        described(&steps),
        [
            "add role patroni-main",
            "grant readwrite /service/main/* to role patroni-main",
            "add user patroni-main",
            "grant role patroni-main to user patroni-main",
            "add user root",
            "grant role root to user root",
            "enable authentication",
        ]
    );
    assert!(matches!(&steps[4], Step::AddUser { password: Some(p), .. } if p == "rootpw"));
}

#[test]
fn what_etcd_already_has_plans_nothing() {
    let seen = Seen {
        auth: true,
        roles: [(
            "patroni-main".to_string(),
            [prefix("/service/main/")].into(),
        )]
        .into(),
        users: [
            (
                "patroni-main".to_string(),
                ["patroni-main".to_string()].into(),
            ),
            ("root".to_string(), ["root".to_string()].into()),
        ]
        .into(),
        passwords: [("patroni-main".to_string(), PasswordCheck::Matches)].into(),
        members: vec![member(1, "e1", true)],
    };
    let wanted = Wanted {
        auth: Some(true),
        roles: vec![role("patroni-main", &[prefix("/service/main/")])],
        users: vec![user("patroni-main", "pw", &["patroni-main"])],
        members: Some(vec![wanted_member("e1")]),
        login: root_login(),
    };
    assert_eq!(plan(&seen, &wanted).unwrap(), vec![]);
    // A password that differs is changed; one that cannot be checked
    // (authentication off) is left.
    let mut differs = seen.clone();
    differs
        .passwords
        .insert("patroni-main".into(), PasswordCheck::Differs);
    assert_eq!(
        described(&plan(&differs, &wanted).unwrap()),
        ["change the password of user patroni-main"]
    );
    let mut unknown = seen.clone();
    unknown
        .passwords
        .insert("patroni-main".into(), PasswordCheck::Unknown);
    assert_eq!(plan(&unknown, &wanted).unwrap(), vec![]);
}

#[test]
fn permissions_and_roles_become_exactly_what_is_listed() {
    let read = Perm {
        access: Access::Read,
        ..prefix("/service/main/")
    };
    let seen = Seen {
        roles: [("r".to_string(), [read, prefix("/service/other/")].into())].into(),
        users: [("u".to_string(), ["r".to_string(), "old".to_string()].into())].into(),
        ..Seen::default()
    };
    let wanted = Wanted {
        roles: vec![role("r", &[prefix("/service/main/")])],
        users: vec![UserWanted {
            password: None,
            ..user("u", "", &["r"])
        }],
        ..Wanted::default()
    };
    assert_eq!(
        described(&plan(&seen, &wanted).unwrap()),
        [
            // The grant replaces read by readwrite on the same keys.
            "grant readwrite /service/main/* to role r",
            "revoke readwrite /service/other/* from role r",
            "revoke role old from user u",
        ]
    );
}

#[test]
fn refusals_name_what_is_missing() {
    let cases: Vec<(Seen, Wanted, &str)> = vec![
        (
            Seen::default(),
            Wanted {
                auth: Some(true),
                ..Wanted::default()
            },
            "auth: enabled needs the user root",
        ),
        (
            Seen::default(),
            Wanted {
                users: vec![user("u", "pw", &["nowhere"])],
                ..Wanted::default()
            },
            "users: u is to have the role nowhere, which neither exists nor is listed in roles",
        ),
        (
            Seen {
                auth: true,
                users: [("root".to_string(), ["root".to_string()].into())].into(),
                ..Seen::default()
            },
            Wanted {
                users: vec![UserWanted {
                    present: false,
                    ..user("root", "x", &[])
                }],
                login: root_login(),
                ..Wanted::default()
            },
            "users: root cannot be removed while authentication stays on",
        ),
        (
            Seen::default(),
            Wanted {
                roles: vec![RoleWanted {
                    present: false,
                    ..role("root", &[])
                }],
                ..Wanted::default()
            },
            "roles: the role root cannot be removed",
        ),
    ];
    for (seen, wanted, expected) in cases {
        let problems = plan(&seen, &wanted).unwrap_err();
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{expected}: {problems:?}"
        );
    }
}

/// (members seen: name and healthy; members wanted; the steps, or the
/// start of the refusal).
#[test]
fn membership_changes_keep_a_quorum_one_member_at_a_time() {
    type Case = (
        &'static [(&'static str, bool)],
        &'static [&'static str],
        Result<&'static [&'static str], &'static str>,
    );
    let cases: &[Case] = &[
        // A dead member removed: two healthy voters remain of two.
        (&[("e1", true), ("e2", true), ("e3", false)], &["e1", "e2"], Ok(&["remove member e3"])),
        // A healthy member removed while another is dead: 1 of 2 left.
        (
            &[("e1", true), ("e2", true), ("e3", false)],
            &["e1", "e3"],
            Err("members: removing e2 would leave 1 healthy member(s) of 2, fewer than the quorum of 2"),
        ),
        // Replacing a dead member: removed first, the new one added.
        (
            &[("e1", true), ("e2", true), ("e3", false)],
            &["e1", "e2", "e4"],
            Ok(&["remove member e3", "add member e4 (https://e4:2380)"]),
        ),
        // Adding while one of three is dead: 2 healthy of 4.
        (
            &[("e1", true), ("e2", true), ("e3", false)],
            &["e1", "e2", "e3", "e4"],
            Err("members: adding e4 would make 4 members of which 2 are healthy"),
        ),
        (&[("e1", true)], &["e1", "e2"], Ok(&["add member e2 (https://e2:2380)"])),
        (&[("e1", true)], &["e1", "e2", "e3"], Err("members: e2, e3 are missing: etcd members are added one at a time")),
        (&[("e1", true)], &[], Err("members: removing e1 would leave etcd without a member")),
        (&[("e1", true), ("e2", true)], &["e1", "e2"], Ok(&[])),
    ];
    for (seen, wanted, expected) in cases {
        let seen = Seen {
            members: seen
                .iter()
                .enumerate()
                .map(|(i, (n, h))| member(i as u64 + 1, n, *h))
                .collect(),
            ..Seen::default()
        };
        let wanted = Wanted {
            members: Some(wanted.iter().map(|n| wanted_member(n)).collect()),
            ..Wanted::default()
        };
        match (plan(&seen, &wanted), expected) {
            (Ok(steps), Ok(e)) => assert_eq!(described(&steps), *e),
            (Err(p), Err(e)) => assert!(p[0].starts_with(e), "{e}: {p:?}"),
            (got, e) => panic!("{wanted:?}: expected {e:?}, got {got:?}"),
        }
    }
}

#[test]
fn a_member_added_and_not_started_is_matched_by_its_peer_urls() {
    let mut waiting = member(9, "", false);
    waiting.peer_urls = [String::from("https://e2:2380")].into();
    let seen = Seen {
        members: vec![member(1, "e1", true), waiting],
        ..Seen::default()
    };
    let two = Wanted {
        members: Some(vec![wanted_member("e1"), wanted_member("e2")]),
        ..Wanted::default()
    };
    assert_eq!(plan(&seen, &two).unwrap(), vec![]);
    let three = Wanted {
        members: Some(vec![
            wanted_member("e1"),
            wanted_member("e2"),
            wanted_member("e3"),
        ]),
        ..Wanted::default()
    };
    let refused = plan(&seen, &three).unwrap_err();
    assert!(
        refused[0].contains("has not started yet: start it"),
        "{refused:?}"
    );
}

#[test]
fn prefix_ends_are_etcds() {
    assert_eq!(prefix_end(b"/service/"), b"/service0".to_vec());
    assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
    assert_eq!(prefix_end(b""), vec![0]);
    let p = Perm::from_etcd(b"/service/main/", b"/service/main0", Access::Read);
    assert_eq!(p.range, Range::Prefix);
    assert_eq!(p.range_end(), b"/service/main0".to_vec());
    assert_eq!(Perm::from_etcd(b"k", b"", Access::Write).range, Range::Key);
}
