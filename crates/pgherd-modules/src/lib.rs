//! The modules of the `pgherd.cluster` collection: each one's argument spec
//! and the glue from a validated task to one pgherd-core call. The binaries
//! in `src/bin/` only hand their arguments to [`pgherd_ansible::run`].

pub mod etcd;
#[doc(hidden)]
pub mod fuzzing;
pub mod instance;
pub mod options;
pub mod patroni;

use pgherd_ansible::{Failure, Outcome};
use pgherd_core::settings::{Settings, SettingsSource};
use serde_json::{Map, Value};

/// A validated task's parameters, read by option name. Made only from
/// parameters the spec knows: an unknown option is refused, never dropped.
pub struct Params<'a>(&'a Map<String, Value>);

impl<'a> Params<'a> {
    pub fn of(spec: &pgherd_ansible::Spec, p: &'a Map<String, Value>) -> Result<Self, String> {
        match p.keys().find(|k| spec.option(k).is_none()) {
            Some(unknown) => Err(format!("unknown option {unknown:?}")),
            None => Ok(Params(p)),
        }
    }

    pub fn raw(&self, k: &str) -> Value {
        self.0.get(k).cloned().unwrap_or(Value::Null)
    }

    pub fn text(&self, k: &str) -> Option<String> {
        self.0.get(k).and_then(Value::as_str).map(str::to_string)
    }

    pub fn flag(&self, k: &str) -> Option<bool> {
        self.0.get(k).and_then(Value::as_bool)
    }

    pub fn int(&self, k: &str) -> Option<i64> {
        self.0.get(k).and_then(Value::as_i64)
    }

    pub fn list(&self, k: &str) -> Option<Vec<Value>> {
        self.0.get(k).and_then(Value::as_array).cloned()
    }

    /// A list of strings (what is not a string in it is left out: the
    /// spec's validation made every element one).
    pub fn strings(&self, k: &str) -> Option<Vec<String>> {
        self.0.get(k).and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
    }

    pub fn object(&self, k: &str) -> Option<Map<String, Value>> {
        self.0.get(k).and_then(Value::as_object).cloned()
    }
}

/// The `settings` option: a path, an inline mapping, or the default file.
pub fn settings_source(value: &Value) -> Result<SettingsSource, Failure> {
    match value {
        Value::Null => Ok(SettingsSource::Default),
        Value::String(path) => Ok(SettingsSource::File(
            pgherd_ansible::validate::expand_path(path).into(),
        )),
        Value::Object(_) => Ok(SettingsSource::Inline(value.clone())),
        _ => Err(Failure::new(
            "option 'settings' must be the path of a settings file or a mapping of settings",
        )),
    }
}

/// Loads the task's settings.
pub fn load_settings(value: &Value) -> Result<Settings, Failure> {
    Ok(Settings::load(&settings_source(value)?)?)
}

/// The `settings` option, shared by every module.
pub fn settings_option() -> pgherd_ansible::OptionSpec {
    pgherd_ansible::OptionSpec::new("settings", pgherd_ansible::Kind::Raw)
        .doc("Site settings: the path of a YAML file, or the settings as a mapping.")
        .doc("When not given, C(/etc/pgherd/settings.yaml) is read if it exists, else built-in defaults apply.")
}

/// The failure of a task from a core error. One that came after changes
/// reports them, with `changed: true`: Ansible then shows the host as
/// changed and failed, and handlers and callers know what happened.
pub fn failure(e: pgherd_core::error::Error) -> Failure {
    let mut f = Failure::new(e.to_string());
    if let pgherd_core::error::Error::AfterChanges { done, .. } = e {
        f.values.insert("changed".into(), Value::Bool(true));
        f.values.insert(
            "changes".into(),
            done.into_iter().map(Value::String).collect(),
        );
    }
    f
}

/// The result of a task that reports a list of changes: `changed` when the
/// list is not empty, a message naming `subject`, the changes, and the
/// module's facts under `facts_key`.
pub fn changes_outcome(
    subject: &str,
    changes: Vec<String>,
    diff: Vec<Value>,
    warnings: Vec<String>,
    facts_key: &str,
    facts: Value,
) -> Outcome {
    let msg = if changes.is_empty() {
        format!("{subject}: nothing to change")
    } else {
        format!("{subject}: {}", changes.join("; "))
    };
    let mut values = serde_json::Map::new();
    values.insert(facts_key.into(), facts);
    values.insert(
        "changes".into(),
        changes.iter().cloned().map(Value::String).collect(),
    );
    Outcome {
        changed: !changes.is_empty(),
        msg: Some(msg),
        diff,
        warnings,
        values,
    }
}

/// The file the collection ships beside a module's executable
/// (`plugins/modules/NAME.py`): its documentation, read by `ansible-doc`,
/// and its argument spec, with which the collection's action plugin
/// validates a task on the controller before anything reaches the host.
/// Generated from the module's spec; `tests/docs.rs` pins it.
pub fn collection_doc_file(
    doc: &pgherd_ansible::docs::ModuleDoc,
    spec: &pgherd_ansible::Spec,
) -> String {
    use pgherd_ansible::docs::{argument_spec, python_literal, sidecar};
    use pgherd_core::merge::json_to_yaml;
    use pgherd_core::yaml::to_yaml_string;
    let docs = sidecar(doc, spec);
    let yaml = |key: &str| to_yaml_string(&json_to_yaml(&docs[key]));
    let name = doc.module.rsplit('.').next().unwrap_or(doc.module);
    format!(
        "# Generated from the module's argument spec (crates/pgherd-modules); do not edit.\n\
         # {module} is a native executable (bin/{name}, linked as plugins/modules/{name});\n\
         # this file holds its documentation and the argument spec its action plugin\n\
         # checks a task against on the controller.\n\n\
         DOCUMENTATION = r\"\"\"\n{documentation}\"\"\"\n\n\
         EXAMPLES = r\"\"\"\n{examples}\"\"\"\n\n\
         RETURN = r\"\"\"\n{returns}\"\"\"\n\n\
         ARGUMENT_SPEC = {spec}\n",
        module = doc.module,
        documentation = yaml("DOCUMENTATION"),
        examples = doc.examples,
        returns = yaml("RETURN"),
        spec = python_literal(&argument_spec(spec)),
    )
}

/// What the modules' tests of their Ansible contract share.
#[cfg(test)]
pub(crate) mod contract {
    use std::collections::BTreeSet;

    use pgherd_ansible::{Kind, Spec};
    use serde_json::{json, Map, Value};

    /// Every option of `spec` with a value of its kind, as validation
    /// leaves it.
    pub fn sample_params(spec: &Spec) -> Map<String, Value> {
        spec.options
            .iter()
            .map(|o| {
                let v = match o.kind {
                    Kind::Int => json!(1),
                    Kind::Float => json!(1.5),
                    Kind::Bool => json!(true),
                    Kind::List => json!([]),
                    Kind::Dict => json!({}),
                    Kind::Raw => Value::Null,
                    Kind::Str | Kind::Path => json!("x"),
                };
                (o.name.to_string(), v)
            })
            .collect()
    }

    /// The top-level keys `value` serialises to.
    pub fn keys_of(value: &impl serde::Serialize) -> BTreeSet<String> {
        serde_json::to_value(value)
            .ok()
            .and_then(|v| v.as_object().map(|m| m.keys().cloned().collect()))
            .unwrap_or_default()
    }
}
