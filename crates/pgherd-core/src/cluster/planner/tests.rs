use super::*;
use crate::action::describe;
use crate::cluster::decide::tests::member;

/// a leads, b and c stream (c lags more).
pub(in crate::cluster) fn healthy() -> ClusterInfo {
    ClusterInfo {
        name: "main".into(),
        leader: Some("a".into()),
        members: vec![
            member("a", "leader", "running", None),
            member("b", "replica", "streaming", Some(0)),
            member("c", "replica", "streaming", Some(100)),
        ],
        config: json!({"ttl": 30}),
        ..ClusterInfo::default()
    }
}

fn run(info: &ClusterInfo, ops: Operations) -> std::result::Result<Vec<String>, String> {
    plan(info, &Here::default(), &ops)
        .map(|p| describe(&p))
        .map_err(|e| e.to_string())
}

/// What is asked, of which cluster, and the lines planned (or a part of
/// the refusal).
type Row<'a> = (
    &'a str,
    &'a ClusterInfo,
    Operations,
    std::result::Result<Vec<&'a str>, &'a str>,
);

#[test]
fn the_operations_decision_table() {
    let h = healthy();
    let mut paused = healthy();
    paused.paused = true;
    let mut a_down = healthy();
    a_down.members[0].state = "stopped".into();
    a_down.leader = None;
    let mut c_kept = a_down.clone();
    c_kept.members[2]
        .tags
        .insert("nofailover".into(), serde_json::json!(true));
    let mut b_pending = healthy();
    b_pending.members[1].pending_restart = true;
    b_pending.members[0].pending_restart = true;
    let mut c_unreachable = healthy();
    c_unreachable.members[2].reachable = false;
    let lead = |c: &str| Operations {
        leader: Some(c.into()),
        ..Operations::default()
    };
    let table: Vec<Row> = vec![
        ("nothing asked", &h, Operations::default(), Ok(vec![])),
        (
            "switchover",
            &h,
            lead("b"),
            Ok(vec!["switchover from a to b"]),
        ),
        ("to the leader: done", &h, lead("a"), Ok(vec![])),
        (
            "to a stranger",
            &h,
            lead("x"),
            Err("switchover to x refused"),
        ),
        (
            "without a leader",
            &a_down,
            lead("b"),
            Err("no running leader"),
        ),
        ("paused", &paused, lead("b"), Err("paused")),
        (
            "scheduled",
            &h,
            Operations {
                scheduled_at: Some("2030-01-01T00:00:00+00:00".into()),
                ..lead("c")
            },
            Ok(vec![
                "switchover from a to c scheduled at 2030-01-01T00:00:00+00:00",
            ]),
        ),
        (
            "failover with a healthy leader",
            &h,
            Operations {
                failover_to: Some("b".into()),
                ..Operations::default()
            },
            Err("a is a healthy leader"),
        ),
        (
            "failover forced",
            &h,
            Operations {
                failover_to: Some("b".into()),
                force: true,
                ..Operations::default()
            },
            Ok(vec!["failover to b"]),
        ),
        (
            "failover without a leader",
            &a_down,
            Operations {
                failover_to: Some("c".into()),
                ..Operations::default()
            },
            Ok(vec!["failover to c"]),
        ),
        (
            "failover to a member kept from promotion",
            &c_kept,
            Operations {
                failover_to: Some("c".into()),
                force: true,
                ..Operations::default()
            },
            Err("c may not be promoted (tags nofailover: true)"),
        ),
        (
            "restart all",
            &h,
            Operations {
                restart: Some(RestartMode::All),
                ..Operations::default()
            },
            Ok(vec!["restart b", "restart c", "restart a"]),
        ),
        (
            "restart pending, the leader by switchover",
            &b_pending,
            Operations {
                restart: Some(RestartMode::Pending),
                restart_leader_by_switchover: true,
                ..Operations::default()
            },
            Ok(vec!["restart b", "switchover from a to b", "restart a"]),
        ),
        (
            "restart with a member not answering",
            &c_unreachable,
            Operations {
                restart: Some(RestartMode::All),
                ..Operations::default()
            },
            Err("member c does not answer on its REST API, so no member was restarted"),
        ),
        (
            "reinit of the leader",
            &h,
            Operations {
                reinit: vec!["c".into(), "a".into()],
                ..Operations::default()
            },
            Err("reinit of a refused: it is the leader"),
        ),
        (
            "reinit of one not answering",
            &c_unreachable,
            Operations {
                reinit: vec!["b".into(), "c".into()],
                ..Operations::default()
            },
            Err("so no member was reinitialised"),
        ),
        (
            "everything, in the safe order",
            &paused,
            Operations {
                paused: Some(false),
                dynamic_config: Some(
                    json!({"ttl": 20, "loop_wait": 5})
                        .as_object()
                        .unwrap()
                        .clone(),
                ),
                reload: true,
                reinit: vec!["c".into()],
                ..Operations::default()
            },
            Ok(vec![
                "resume cluster main",
                "update the dynamic configuration: loop_wait, ttl",
                "reload a",
                "reload b",
                "reload c",
                "reinitialise c from the leader",
            ]),
        ),
        (
            "pause, already paused",
            &paused,
            Operations {
                paused: Some(true),
                ..Operations::default()
            },
            Ok(vec![]),
        ),
        (
            "pause",
            &h,
            Operations {
                paused: Some(true),
                ..Operations::default()
            },
            Ok(vec!["pause cluster main (maintenance mode)"]),
        ),
    ];
    for (what, info, ops, want) in table {
        let got = run(info, ops);
        match (&got, &want) {
            (Ok(lines), Ok(want)) => assert_eq!(lines, want, "{what}"),
            (Err(e), Err(part)) => assert!(e.contains(part), "{what}: {e}"),
            _ => panic!("{what}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn a_backup_runs_where_the_leader_runs() {
    let ops = Operations {
        backup: Some(crate::pgbackrest::BackupKind::Full),
        ..Operations::default()
    };
    let here = Here {
        backup: Some(BackupHere::Takes {
            stanza: "main".into(),
            repository_host: None,
        }),
        ..Here::default()
    };
    let repository_host = Here {
        backup: Some(BackupHere::Takes {
            stanza: "main".into(),
            repository_host: Some("backup1".into()),
        }),
        ..Here::default()
    };
    let elsewhere = Here {
        backup: Some(BackupHere::Elsewhere(Elsewhere::RepositoryHost(
            "backup1".into(),
        ))),
        ..Here::default()
    };
    let lines = |info: &ClusterInfo, here: &Here| {
        plan(info, here, &ops)
            .map(|p| describe(&p))
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        lines(&healthy(), &here),
        Ok(vec![
            "take a full backup of cluster main on its leader a (stanza main)".to_string()
        ])
    );
    assert_eq!(
        lines(&healthy(), &repository_host),
        Ok(vec![
            "take a full backup of cluster main on the repository host backup1, from its \
             leader a (stanza main)"
                .to_string()
        ])
    );
    assert_eq!(lines(&healthy(), &Here::default()), Ok(vec![]));
    assert_eq!(lines(&healthy(), &elsewhere), Ok(vec![]));
    let mut down = healthy();
    down.members[0].state = "stopped".into();
    assert!(lines(&down, &here).is_err_and(|e| e.contains("no running leader to back up")));
}

#[test]
fn the_same_config_asks_for_nothing() {
    let ops = Operations {
        dynamic_config: Some(json!({"ttl": 30}).as_object().unwrap().clone()),
        ..Operations::default()
    };
    assert_eq!(run(&healthy(), ops), Ok(vec![]));
}
