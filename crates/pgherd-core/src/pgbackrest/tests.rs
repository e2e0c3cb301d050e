use super::find::{pgbackrest_config_of, shell_words, stanza_of};
use super::*;

const INFO: &str = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000010000000000000003","min":"000000010000000000000001"}],
  "backup":[{"archive":{"start":"000000010000000000000003","stop":"000000010000000000000003"},"backrest":{"format":5,"version":"2.45"},
    "database":{"id":1,"repo-key":1},"error":false,"info":{"delta":23000748,"repository":{"delta":3043988,"size":3043988},"size":23000748},
    "label":"20261201-214644F","lsn":{"start":"0/3000028","stop":"0/3000100"},"prior":null,"reference":null,
    "timestamp":{"start":1796161604,"stop":1796161607},"type":"full"}],
  "cipher":"none","db":[{"id":1,"repo-key":1,"system-id":7714455322992979790,"version":"15"}],"name":"st",
  "repo":[{"cipher":"none","key":1,"status":{"code":0,"message":"ok"}}],"status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]"#;

#[test]
fn info_lists_backups_with_exact_system_identifiers() {
    let info = parse_info(INFO, "st").unwrap();
    assert!(info.exists);
    assert_eq!(info.system_identifiers, vec!["7714455322992979790"]);
    assert_eq!(info.backups.len(), 1);
    let b = &info.backups[0];
    assert_eq!(b.label, "20261201-214644F");
    assert_eq!(b.kind, "full");
    assert_eq!(b.size, 23000748);
    assert_eq!(b.system_identifier.as_deref(), Some("7714455322992979790"));
    assert_eq!(
        info.wal,
        Some((
            "000000010000000000000001".to_string(),
            "000000010000000000000003".to_string()
        ))
    );
}

#[test]
fn a_missing_stanza_is_told() {
    let json = r#"[{"archive":[],"backup":[],"cipher":"none","db":[],"name":"st","repo":[{"cipher":"none","key":1,"status":{"code":1,"message":"missing stanza path"}}],"status":{"code":1,"lock":{"backup":{"held":false}},"message":"missing stanza path"}}]"#;
    let info = parse_info(json, "st").unwrap();
    assert!(!info.exists);
    assert_eq!(info.status, "missing stanza path");
    assert!(parse_info(json, "other").is_err());
}

#[test]
fn a_repository_host_is_reached_over_tls_by_its_name() {
    let mut settings = Settings::default();
    let mut m = InstanceManifest::example();
    m.pgbackrest_stanza = Some(crate::names::Name::parse("stanza", "c").unwrap());
    let paths = InstancePaths::new(&settings, &m);
    let b = PgBackRest::for_instance(&settings, &m, &paths, None).unwrap();
    let local = b.render_config(&settings, &m, &paths);
    assert!(!local.contains("repo1-host"), "{local}");
    settings.pgbackrest.repository.host = Some(crate::settings::RepositoryHost {
        port: 8443,
        ..crate::settings::RepositoryHost::example("backup1")
    });
    let remote = b.render_config(&settings, &m, &paths);
    let global = remote.split("\n[c]").next().unwrap();
    for line in [
        "repo1-path=/var/lib/pgbackrest",
        "repo1-host=backup1",
        "repo1-host-type=tls",
        "repo1-host-port=8443",
        "repo1-host-ca-file=/tls/ca.pem",
        "repo1-host-cert-file=/tls/pg1.pem",
        "repo1-host-key-file=/tls/pg1.key",
    ] {
        assert!(global.lines().any(|l| l == line), "{line}: {remote}");
    }
    assert!(remote.contains("\n[c]\npg1-path="), "{remote}");
}

#[test]
fn the_stanza_is_the_section_besides_global() {
    assert_eq!(
        stanza_of("# x\n[global]\nrepo1-path=/r\n\n[main]\npg1-path=/d\n").as_deref(),
        Some("main")
    );
    assert_eq!(stanza_of("[global]\n"), None);
}

#[test]
fn words_with_shell_characters_are_quoted() {
    assert_eq!(shell_word("/usr/bin/pgbackrest"), "/usr/bin/pgbackrest");
    assert_eq!(shell_word("/data/my dir"), "'/data/my dir'");
    assert_eq!(shell_word("it's"), r"'it'\''s'");
}

#[test]
fn the_pgbackrest_configuration_is_read_from_the_archive_command() {
    assert_eq!(
        shell_words(
            r#"/usr/bin/pgbackrest '--config=/etc/my conf.conf' '--stanza=it'\''s' archive-push "%p""#
        ),
        [
            "/usr/bin/pgbackrest",
            "--config=/etc/my conf.conf",
            "--stanza=it's",
            "archive-push",
            "%p"
        ]
    );
    let doc = crate::patroni_file::PatroniFile::parse(
        "postgresql:\n  parameters:\n    archive_command: pgbackrest --config=/etc/pgbackrest/pg.conf --stanza=main archive-push \"%p\"\n",
    )
    .unwrap();
    assert_eq!(
        pgbackrest_config_of(&doc),
        Some(PathBuf::from("/etc/pgbackrest/pg.conf"))
    );
    let none = crate::patroni_file::PatroniFile::parse("postgresql: {}\n").unwrap();
    assert_eq!(pgbackrest_config_of(&none), None);
}

fn set(label: &str, stop: i64) -> BackupSet {
    BackupSet {
        label: label.into(),
        kind: "full".into(),
        start: stop - 4,
        stop,
        size: 1,
        repository_size: 1,
        system_identifier: None,
    }
}

#[test]
fn the_backup_of_a_restore_ended_before_its_target() {
    let t = |s: &str| RecoveryTarget::Time(s.into());
    // Two backups, ending 22:00:00 and 23:00:00 UTC on 2026-12-01.
    let b1 = set("B1", 1_796_162_400);
    let b2 = set("B2", 1_796_166_000);
    let both = vec![b1.clone(), b2.clone()];
    let pick = |s: Option<&str>, target: &RecoveryTarget| choose_backup("st", &both, s, target);
    assert_eq!(pick(None, &RecoveryTarget::Latest), Ok(b2.clone()));
    assert_eq!(pick(None, &RecoveryTarget::Immediate), Ok(b2.clone()));
    assert_eq!(pick(None, &t("2026-12-01T23:30:00Z")), Ok(b2.clone()));
    // Between the two: the older one.
    assert_eq!(pick(None, &t("2026-12-01T22:30:00Z")), Ok(b1.clone()));
    assert_eq!(pick(None, &t("2026-12-01T23:30:00+01:00")), Ok(b1.clone()));
    assert_eq!(pick(Some("B1"), &t("2026-12-01T22:30:00Z")), Ok(b1.clone()));
    // Before both, or a named set that ended after the target.
    let e = pick(None, &t("2026-12-01T21:00:00Z")).unwrap_err();
    assert!(
        e.contains(
            "before the end of the oldest backup of stanza st, B1 (2026-12-01T22:00:00+00:00)"
        ),
        "{e}"
    );
    let e = pick(Some("B2"), &t("2026-12-01T22:30:00Z")).unwrap_err();
    assert!(
        e.contains("B2 ended at 2026-12-01T23:00:00+00:00, after the target"),
        "{e}"
    );
    assert!(pick(Some("B9"), &RecoveryTarget::Latest)
        .unwrap_err()
        .contains("no backup B9"));
    assert!(choose_backup("st", &[], None, &RecoveryTarget::Latest)
        .unwrap_err()
        .contains("no backup to restore"));
}
