//! Golden files: the Patroni configuration generated for fixed inputs is
//! pinned byte for byte. `PGHERD_BLESS=1 cargo test` rewrites them after an
//! intended change; review the diff.

use std::path::{Path, PathBuf};

use pgherd_core::instance::render_passfile;
use pgherd_core::paths::InstancePaths;
use pgherd_core::patroni_config::render_patroni_config;
use pgherd_core::settings::{Settings, SettingsSource};
use pgherd_modules::options::{manifest, InstanceOptions};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn render_case(name: &str) -> (String, Option<String>) {
    let input = std::fs::read_to_string(golden_dir().join(format!("{name}.input.yaml"))).unwrap();
    let doc: serde_json::Value = serde_yaml::from_str(&input).unwrap();
    let settings = Settings::load(&SettingsSource::Inline(doc["settings"].clone())).unwrap();
    let opts: InstanceOptions = serde_json::from_value(doc["instance"].clone()).unwrap();
    let m = manifest(&opts, &settings).unwrap();
    let paths = InstancePaths::new(&settings, &m);
    (
        render_patroni_config(&settings, &m, &paths).unwrap(),
        render_passfile(&settings, &m),
    )
}

fn check(name: &str) {
    let (config, passfile) = render_case(name);
    let again = render_case(name).0;
    assert_eq!(config, again, "rendering {name} twice gave different bytes");
    let path = golden_dir().join(format!("{name}.patroni.yaml"));
    if std::env::var_os("PGHERD_BLESS").is_some() {
        std::fs::write(&path, &config).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (PGHERD_BLESS=1 creates it)", path.display()));
    assert_eq!(
        config,
        expected,
        "{name}: generated config differs from {}",
        path.display()
    );
    if name == "plain" {
        assert_eq!(
            passfile.as_deref(),
            Some("# pgpass of 15-main (cluster pgherd), written by pgherd\n*:5432:*:postgres:super-secret\n*:5432:replication:replication:repl-secret\n")
        );
    }
}

#[test]
fn plain_config_matches_golden() {
    check("plain");
}

#[test]
fn tls_config_matches_golden() {
    check("tls");
}

#[test]
fn pgbackrest_config_matches_golden() {
    check("pgbackrest");
}

#[test]
fn pgbackrest_configuration_names_the_stanza_and_the_repository() {
    let input = std::fs::read_to_string(golden_dir().join("pgbackrest.input.yaml")).unwrap();
    let doc: serde_json::Value = serde_yaml::from_str(&input).unwrap();
    let settings = Settings::load(&SettingsSource::Inline(doc["settings"].clone())).unwrap();
    let opts: InstanceOptions = serde_json::from_value(doc["instance"].clone()).unwrap();
    let m = manifest(&opts, &settings).unwrap();
    let paths = InstancePaths::new(&settings, &m);
    let b = pgherd_core::pgbackrest::PgBackRest::for_instance(&settings, &m, &paths, None).unwrap();
    assert_eq!(b.config, Path::new("/etc/pgbackrest/15-main.conf"));
    assert_eq!(
        b.render_config(&settings, &m, &paths),
        "# pgBackRest configuration of 15-main (stanza pgherd), written by pgherd.\n\
         # Changes made here are replaced by the next run: set them in the settings.\n\
         [global]\nrepo1-path=/srv/pgbackrest\nrepo1-retention-full=3\n\
         log-path=/var/log/pgbackrest\nlock-path=/tmp/pgbackrest\ncompress-type=zst\n\n\
         [pgherd]\npg1-path=/var/lib/postgresql/15/my main\npg1-port=5432\n\
         pg1-socket-path=/run/postgresql\npg1-user=postgres\n"
    );
}

#[test]
fn overrides_with_null_match_golden() {
    check("overrides");
}

#[test]
fn overrides_really_deleted_and_added_keys() {
    let (config, _) = render_case("overrides");
    let doc: serde_yaml::Value = serde_yaml::from_str(&config).unwrap();
    assert!(doc["bootstrap"].get("initdb").is_none());
    assert!(doc["postgresql"].get("basebackup").is_none());
    assert!(doc["postgresql"]["parameters"]
        .get("log_directory")
        .is_none());
    assert!(doc["tags"].get("nosync").is_none());
    assert_eq!(doc["tags"]["nofailover"], serde_yaml::Value::Bool(true));
    assert_eq!(
        doc["bootstrap"]["dcs"]["synchronous_mode"],
        serde_yaml::Value::Bool(true)
    );
    assert!(doc["bootstrap"]["dcs"]["postgresql"]
        .get("use_slots")
        .is_none());
    assert_eq!(doc["log"]["level"], serde_yaml::Value::from("DEBUG"));
}
