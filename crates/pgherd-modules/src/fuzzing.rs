//! Entry points for the fuzzer (`fuzz/`) and for the regression tests that
//! replay what it found (`tests/fuzz_regressions.rs`). Each takes arbitrary
//! bytes, runs the code a module runs on untrusted input, and panics only
//! when a property that must always hold is broken: any panic is a bug.

use std::path::Path;

use crate::options::{manifest, InstanceOptions};
use pgherd_ansible::module::{clear_secrets, parse_args_text, prepare_task, result_json};
use pgherd_ansible::NO_LOG_PLACEHOLDER;
use pgherd_core::merge::merge;
use pgherd_core::paths::InstancePaths;
use pgherd_core::patroni_config::render_patroni_config;
use pgherd_core::settings::Settings;
use pgherd_core::yaml::to_yaml_string;
use serde_json::Value;

/// The no_log values found in raw options, by walking them like the spec.
fn no_log_values(spec: &pgherd_ansible::Spec, raw: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    for opt in &spec.options {
        let Some(v) = raw.get(opt.name) else { continue };
        if opt.no_log {
            if let Value::String(s) = v {
                out.push(s.clone());
            }
        } else if let (Some(sub), Value::Object(m)) = (&opt.suboptions, v) {
            out.extend(no_log_values(sub, m));
        }
    }
    out
}

/// The arguments file of either module: parse, validate against the spec,
/// type the instance's options into a manifest and render its Patroni
/// configuration. Properties: the printed result is one JSON object with
/// `failed` set, it never shows a no_log value, and a rendered
/// configuration is YAML that reads back.
pub fn module_args(data: &[u8]) {
    clear_secrets();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let raw = match parse_args_text(text, Path::new("fuzz.json")) {
        Ok(raw) => raw,
        Err(f) => {
            let out = result_json(Err(f), None, false);
            assert_eq!(out["failed"], Value::Bool(true));
            return;
        }
    };
    for spec in [crate::instance::spec(), crate::patroni::spec()] {
        let secrets: Vec<String> = no_log_values(&spec, &raw)
            .into_iter()
            // A secret that is also an option's value or a word of every
            // message cannot be told apart; only real ones are checked.
            .filter(|s| s.len() >= 6 && !s.contains(char::is_whitespace))
            .collect();
        let printed = match prepare_task(&spec, &raw) {
            Ok((task, censored)) => {
                if let Ok(opts) =
                    serde_json::from_value::<InstanceOptions>(Value::Object(task.params.clone()))
                {
                    render_instance(&opts, &Settings::default());
                }
                result_json(
                    Err(pgherd_ansible::Failure::new("fuzz")),
                    Some(censored),
                    task.diff,
                )
            }
            Err(f) => result_json(Err(f), None, false),
        };
        let text = serde_json::to_string(&printed).expect("a result serialises");
        assert!(printed["failed"].is_boolean(), "{text}");
        for s in &secrets {
            if s != NO_LOG_PLACEHOLDER && !NO_LOG_PLACEHOLDER.contains(s.as_str()) {
                assert!(!text.contains(s.as_str()), "secret {s:?} printed: {text}");
            }
        }
    }
}

/// Builds the manifest and, when it is valid, renders the configuration
/// and reads it back.
fn render_instance(opts: &InstanceOptions, settings: &Settings) {
    let Ok(m) = manifest(opts, settings) else {
        return;
    };
    let paths = InstancePaths::new(settings, &m);
    let Ok(text) = render_patroni_config(settings, &m, &paths) else {
        return;
    };
    let parsed: serde_yaml::Value = serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("rendered configuration does not parse: {e}\n{text}"));
    assert_eq!(
        parsed["scope"].as_str(),
        Some(m.cluster.as_str()),
        "scope lost:\n{text}"
    );
}

/// A settings file: parse, validate, and for valid settings render a
/// configuration. Property: valid settings never make rendering panic,
/// and the configuration reads back.
pub fn settings(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(settings) = Settings::from_yaml(text, "fuzz") else {
        return;
    };
    if settings.validate().is_err() {
        return;
    }
    let _ = settings.warnings(false);
    let opts = InstanceOptions {
        name: "main".into(),
        ..InstanceOptions::default()
    };
    render_instance(&opts, &settings);
}

/// Two YAML documents separated by a line `---`: a base configuration and
/// an overlay. Properties of the merge: a null in the overlay deletes the
/// key, no null is added, and the emitted YAML reads back as the merged
/// value (the emitter quotes whatever YAML would read otherwise).
pub fn config_merge(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (base_text, overlay_text) = text.split_once("\n---\n").unwrap_or((text, ""));
    let (Ok(mut base), Ok(overlay)) = (
        serde_yaml::from_str::<serde_yaml::Value>(base_text),
        serde_yaml::from_str::<serde_yaml::Value>(overlay_text),
    ) else {
        return;
    };
    if !emittable(&base) || !emittable(&overlay) {
        return;
    }
    merge(&mut base, &overlay);
    if let (serde_yaml::Value::Mapping(merged), serde_yaml::Value::Mapping(over)) =
        (&base, &overlay)
    {
        for (k, v) in over {
            if v.is_null() {
                assert!(!merged.contains_key(k), "null did not delete {k:?}");
            }
        }
    }
    let emitted = to_yaml_string(&base);
    let back: serde_yaml::Value = serde_yaml::from_str(&emitted)
        .unwrap_or_else(|e| panic!("emitted YAML does not parse: {e}\n{emitted}"));
    assert_eq!(back, base, "YAML round trip changed the value:\n{emitted}");
}

/// What configuration files hold: mappings with string keys, sequences and
/// scalars; no tags, and no NaN (which equals nothing, not even itself).
fn emittable(v: &serde_yaml::Value) -> bool {
    match v {
        serde_yaml::Value::Mapping(m) => m
            .iter()
            .all(|(k, v)| matches!(k, serde_yaml::Value::String(_)) && emittable(v)),
        serde_yaml::Value::Sequence(s) => s.iter().all(emittable),
        serde_yaml::Value::Tagged(_) => false,
        serde_yaml::Value::Number(n) => n.as_f64().is_none_or(|f| !f.is_nan()),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_hold_the_properties() {
        module_args(br#"{"name": "main", "surole_password": "s3cret-pw", "patroni": {"etcd": {"username": "u", "password": "etcd-pw-1"}}}"#);
        module_args(br#"{"name": "../x", "surole_password": "s3cret-pw"}"#);
        settings(b"patroni:\n  ttl: 30\n  loop_wait: 10\n");
        config_merge(b"a: 1\nb:\n  c: on\n  d: '0755'\n---\nb:\n  c: null\n  e: [yes, no]\n");
    }
}
