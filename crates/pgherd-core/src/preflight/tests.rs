use super::*;
use std::os::unix::fs::PermissionsExt;

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pgherd-preflight-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn nobody() -> Who {
    Who {
        name: "nobody".into(),
        uid: 65534,
        gids: vec![65534],
    }
}

fn root() -> Who {
    Who {
        name: "root".into(),
        uid: 0,
        gids: vec![0],
    }
}

/// A data directory `who` makes (initdb, pg_basebackup).
fn data_directory_made_by<'a>(path: &'a Path, who: &'a Who) -> WritableDir<'a> {
    WritableDir {
        key: "postgresql.datadir",
        path,
        who,
        made_by_who: true,
    }
}

#[test]
fn permission_bits_are_read_for_owner_group_and_others() {
    let d = tempdir("bits");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).unwrap();
    let meta = std::fs::metadata(&d).unwrap();
    let owner = Who {
        name: "o".into(),
        uid: meta.uid(),
        gids: vec![],
    };
    let group = Who {
        name: "g".into(),
        uid: meta.uid() + 1,
        gids: vec![meta.gid()],
    };
    let other = Who {
        name: "x".into(),
        uid: meta.uid() + 1,
        gids: vec![meta.gid() + 1],
    };
    assert!(owner.may(&meta, 0o7));
    assert!(group.may(&meta, 0o5) && !group.may(&meta, 0o2));
    assert!(!other.may(&meta, 0o1));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_data_directory_under_a_parent_its_user_cannot_write_is_refused() {
    let d = tempdir("data");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = d.join("15-main");
    let problems = check_dir(&data_directory_made_by(&data, &nobody()), &root());
    assert_eq!(problems.len(), 1, "{problems:?}");
    let p = &problems[0];
    assert!(p.starts_with("postgresql.datadir: nobody creates"), "{p}");
    assert!(p.contains("mode 0755"), "{p}");
    // Deeper: pgherd makes the parents and gives them away.
    let deeper = d.join("a/b/15-main");
    assert!(check_dir(&data_directory_made_by(&deeper, &nobody()), &root(),).is_empty());
    // An existing data directory of another owner.
    std::fs::create_dir(&data).unwrap();
    let p = check_dir(&data_directory_made_by(&data, &nobody()), &root());
    assert!(p[0].contains("exists and belongs to"), "{p:?}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_file_where_a_directory_belongs_is_named() {
    let d = tempdir("file");
    std::fs::write(d.join("f"), b"").unwrap();
    let p = check_dir(
        &WritableDir {
            key: "postgresql.passfile",
            path: &d.join("f/sub"),
            who: &root(),
            made_by_who: false,
        },
        &root(),
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("is not a directory"), "{p:?}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn programs_must_exist_and_be_executable() {
    let d = tempdir("prog");
    let missing = check_program("patroni.execpath", &d.join("patroni"), &root(), "").unwrap();
    assert_eq!(
        missing,
        format!(
            "patroni.execpath: {} does not exist",
            d.join("patroni").display()
        )
    );
    std::fs::write(d.join("patroni"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(d.join("patroni"), std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(check_program("k", &d.join("patroni"), &root(), "")
        .unwrap()
        .contains("not executable"));
    std::fs::set_permissions(d.join("patroni"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(check_program("k", &d.join("patroni"), &root(), "").is_none());
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_missing_watchdog_is_a_warning_when_automatic_and_a_refusal_when_required() {
    let me = Who::this_process();
    let with = |mode: WatchdogMode, device: &str| {
        let mut s = Settings::default();
        s.patroni.watchdog = Some(crate::settings::WatchdogSettings {
            mode,
            device: Some(device.into()),
            safety_margin: None,
        });
        watchdog(&s, &me)
    };
    let missing = "/nonexistent/watchdog0";
    let warned = with(WatchdogMode::Automatic, missing).unwrap().unwrap();
    assert!(
        warned.contains("no watchdog device at /nonexistent/watchdog0")
            && warned.contains("runs without a watchdog"),
        "{warned}"
    );
    let refused = with(WatchdogMode::Required, missing).unwrap_err();
    assert!(
        refused.starts_with("patroni.watchdog.mode: required")
            && refused.contains("/nonexistent/watchdog0")
            && refused.contains("modprobe softdog"),
        "{refused}"
    );
    assert_eq!(with(WatchdogMode::Off, missing), Ok(None));
    assert_eq!(watchdog(&Settings::default(), &me), Ok(None));
    // A device its user can write to: nothing to say.
    let device = std::env::temp_dir().join(format!("pgherd-wd-{}", std::process::id()));
    std::fs::write(&device, b"").unwrap();
    let shown = device.display().to_string();
    assert_eq!(with(WatchdogMode::Required, &shown), Ok(None));
    std::fs::remove_file(&device).ok();
}

#[test]
fn patroni_before_3_0_3_is_refused_for_a_new_member_and_warned_of_for_one_that_exists() {
    let d = tempdir("patroni-version");
    // A virtualenv's layout: bin/patroni's interpreter names the prefix.
    let with = |version: &str| {
        let site = d.join(format!(
            "venv-{version}/lib/python3.11/site-packages/patroni"
        ));
        std::fs::create_dir_all(&site).unwrap();
        std::fs::write(
            site.join("version.py"),
            format!("__version__ = '{version}'\n"),
        )
        .unwrap();
        let bin = d.join(format!("venv-{version}/bin"));
        std::fs::create_dir_all(&bin).unwrap();
        let exe = bin.join("patroni");
        let python = bin.join("python3");
        std::fs::write(&exe, format!("#!{}\nimport patroni\n", python.display())).unwrap();
        let mut s = Settings::default();
        s.patroni.execpath = exe;
        s
    };
    let new = d.join("data-new");
    let existing = d.join("data-existing");
    std::fs::create_dir_all(&existing).unwrap();
    std::fs::write(existing.join("PG_VERSION"), "15\n").unwrap();

    let refused = patroni_version(&with("3.0.2"), &new).unwrap_err();
    assert!(
        refused.starts_with("patroni.execpath: ")
            && refused.contains("is Patroni 3.0.2")
            && refused.contains("packages_patroni_from: pip"),
        "{refused}"
    );
    let warned = patroni_version(&with("3.0.2"), &existing).unwrap().unwrap();
    assert!(
        warned.contains("is Patroni 3.0.2") && warned.contains("rolling-upgrade.yml"),
        "{warned}"
    );
    assert_eq!(patroni_version(&with("4.0.11"), &new), Ok(None));
    assert_eq!(patroni_version(&with("3.0.3"), &existing), Ok(None));
    // A Patroni whose package is not found is not started to ask.
    let mut unknown = Settings::default();
    unknown.patroni.execpath = d.join("nowhere/patroni");
    assert_eq!(patroni_version(&unknown, &new), Ok(None));
    std::fs::remove_dir_all(&d).ok();
}
