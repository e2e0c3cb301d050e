//! Validation of a task's arguments against a [`Spec`], with Ansible's type
//! conversions, defaults, aliases and rules.

use serde_json::{Map, Number, Value};

use crate::spec::{Kind, OptionSpec, Spec};

/// Everything wrong with a task's arguments, each message naming the option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ArgErrors(pub Vec<String>);

/// Validates `raw` against `spec` and returns the normalised options: every
/// declared option present (null when neither given nor defaulted), aliases
/// resolved, values converted to their declared types. Keys starting with
/// `_ansible_` are Ansible's own and are ignored at the top level.
pub fn validate(spec: &Spec, raw: &Map<String, Value>) -> Result<Map<String, Value>, ArgErrors> {
    let mut errors = Vec::new();
    let out = validate_level(spec, raw, "", true, &mut errors);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ArgErrors(errors))
    }
}

fn qualified(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn is_given(map: &Map<String, Value>, name: &str) -> bool {
    map.get(name).is_some_and(|v| !v.is_null())
}

fn validate_level(
    spec: &Spec,
    raw: &Map<String, Value>,
    prefix: &str,
    top: bool,
    errors: &mut Vec<String>,
) -> Map<String, Value> {
    let given = resolve_names(spec, raw, prefix, top, errors);
    check_presence(spec, &given, prefix, errors);
    // Convert, then apply defaults, so required_if sees converted values.
    let mut out = Map::new();
    for opt in &spec.options {
        let path = qualified(prefix, opt.name);
        let value = match given.get(opt.name) {
            Some(v) if !v.is_null() => convert_option(opt, v, &path, errors),
            _ => match &opt.default {
                Some(d) => convert_option(opt, d, &path, errors),
                None => Value::Null,
            },
        };
        out.insert(opt.name.to_string(), value);
    }
    check_required_if(spec, &out, prefix, errors);
    out
}

/// The options given, under their names (aliases resolved); unknown ones
/// and ones given twice through aliases are errors.
fn resolve_names(
    spec: &Spec,
    raw: &Map<String, Value>,
    prefix: &str,
    top: bool,
    errors: &mut Vec<String>,
) -> Map<String, Value> {
    let mut given: Map<String, Value> = Map::new();
    let mut unknown = Vec::new();
    for (key, value) in raw {
        if top && key.starts_with("_ansible_") {
            continue;
        }
        let Some(opt) = spec
            .options
            .iter()
            .find(|o| o.name == key || o.aliases.contains(&key.as_str()))
        else {
            unknown.push(qualified(prefix, key));
            continue;
        };
        if given.contains_key(opt.name) {
            errors.push(format!(
                "option '{}' is given more than once (through its aliases: {})",
                qualified(prefix, opt.name),
                opt.aliases.join(", ")
            ));
            continue;
        }
        given.insert(opt.name.to_string(), value.clone());
    }
    if !unknown.is_empty() {
        let mut supported: Vec<String> = Vec::new();
        for o in &spec.options {
            if o.aliases.is_empty() {
                supported.push(o.name.to_string());
            } else {
                supported.push(format!("{} (aliases: {})", o.name, o.aliases.join(", ")));
            }
        }
        supported.sort();
        let place = if prefix.is_empty() {
            String::new()
        } else {
            format!(" in '{prefix}'")
        };
        errors.push(format!(
            "unsupported option{} {}{place}; supported options are: {}",
            if unknown.len() > 1 { "s" } else { "" },
            unknown.join(", "),
            supported.join(", ")
        ));
    }
    given
}

/// Which options are given with which: mutually exclusive ones, required
/// ones, ones required together.
fn check_presence(spec: &Spec, given: &Map<String, Value>, prefix: &str, errors: &mut Vec<String>) {
    let listed = |names: &[&str]| {
        names
            .iter()
            .map(|n| qualified(prefix, n))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for group in &spec.mutually_exclusive {
        let present: Vec<&str> = group
            .iter()
            .copied()
            .filter(|n| is_given(given, n))
            .collect();
        if present.len() > 1 {
            errors.push(format!(
                "options are mutually exclusive: {}",
                listed(&present)
            ));
        }
    }
    for opt in &spec.options {
        if opt.required && !is_given(given, opt.name) {
            errors.push(format!(
                "missing required option '{}'",
                qualified(prefix, opt.name)
            ));
        }
    }
    for group in &spec.required_together {
        let present: Vec<&str> = group
            .iter()
            .copied()
            .filter(|n| is_given(given, n))
            .collect();
        if !present.is_empty() && present.len() < group.len() {
            let missing: Vec<&str> = group
                .iter()
                .copied()
                .filter(|n| !present.contains(n))
                .collect();
            errors.push(format!(
                "options must be given together: {} (missing: {})",
                listed(group),
                listed(&missing)
            ));
        }
    }
}

/// Options required when another has a value, on converted values.
fn check_required_if(
    spec: &Spec,
    out: &Map<String, Value>,
    prefix: &str,
    errors: &mut Vec<String>,
) {
    for rule in &spec.required_if {
        if out.get(rule.key) != Some(&rule.value) {
            continue;
        }
        let missing: Vec<String> = rule
            .requirements
            .iter()
            .filter(|n| !is_given(out, n))
            .map(|n| qualified(prefix, n))
            .collect();
        let unmet = if rule.any {
            missing.len() == rule.requirements.len()
        } else {
            !missing.is_empty()
        };
        if unmet {
            errors.push(format!(
                "{} is {} but {} of the following {} missing: {}",
                qualified(prefix, rule.key),
                display_value(&rule.value),
                if rule.any { "all" } else { "some" },
                if missing.len() == 1 { "is" } else { "are" },
                missing.join(", ")
            ));
        }
    }
}

fn display_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A short description of a value for an error message, never the value of
/// a secret.
fn shown(opt: &OptionSpec, v: &Value) -> String {
    if opt.no_log {
        return format!("a {}", json_type(v));
    }
    let text = v.to_string();
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(60).collect();
        format!("{cut}...")
    } else {
        text
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

fn convert_option(opt: &OptionSpec, v: &Value, path: &str, errors: &mut Vec<String>) -> Value {
    let converted = match convert(opt.kind, v) {
        Some(c) => c,
        None => {
            errors.push(format!(
                "option '{path}' must be of type {}, got {} ({})",
                opt.kind.ansible_name(),
                shown(opt, v),
                json_type(v)
            ));
            return Value::Null;
        }
    };
    let converted = match (opt.kind, converted) {
        (Kind::List, Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                let item = match opt.elements {
                    Some(kind) => match convert(kind, item) {
                        Some(c) => c,
                        None => {
                            errors.push(format!(
                                "elements of option '{path}' must be of type {}, got {} ({}) at index {i}",
                                kind.ansible_name(),
                                shown(opt, item),
                                json_type(item)
                            ));
                            continue;
                        }
                    },
                    None => item.clone(),
                };
                match (&opt.suboptions, item) {
                    (Some(sub), Value::Object(m)) => {
                        out.push(Value::Object(validate_level(
                            sub, &m, &item_path, false, errors,
                        )));
                    }
                    (_, item) => out.push(item),
                }
            }
            Value::Array(out)
        }
        (Kind::Dict, Value::Object(m)) => match &opt.suboptions {
            Some(sub) => Value::Object(validate_level(sub, &m, path, false, errors)),
            None => Value::Object(m),
        },
        (_, other) => other,
    };
    if !opt.choices.is_empty() {
        let candidates: Vec<&Value> = match &converted {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for c in candidates {
            if !opt.choices.contains(c) {
                errors.push(format!(
                    "option '{path}' must be one of: {}, got {}",
                    opt.choices
                        .iter()
                        .map(display_value)
                        .collect::<Vec<_>>()
                        .join(", "),
                    shown(opt, c)
                ));
            }
        }
    }
    converted
}

/// Converts one value to `kind` the way Ansible does; `None` when it
/// cannot be converted.
pub fn convert(kind: Kind, v: &Value) -> Option<Value> {
    match kind {
        Kind::Raw => Some(v.clone()),
        Kind::Str => match v {
            Value::String(_) => Some(v.clone()),
            Value::Number(n) => Some(Value::String(n.to_string())),
            Value::Bool(b) => Some(Value::String(if *b { "True" } else { "False" }.into())),
            _ => None,
        },
        Kind::Path => match v {
            Value::String(s) => Some(Value::String(expand_path(s))),
            _ => None,
        },
        Kind::Int => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(v.clone()),
            Value::Number(n) => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    Some(Value::Number(Number::from(f as i64)))
                }
                _ => None,
            },
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(|i| Value::Number(i.into()))
                .ok(),
            _ => None,
        },
        Kind::Float => match v {
            Value::Number(n) => n.as_f64().and_then(Number::from_f64).map(Value::Number),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number),
            _ => None,
        },
        Kind::Bool => parse_bool(v).map(Value::Bool),
        Kind::List => match v {
            Value::Array(_) => Some(v.clone()),
            Value::String(s) if s.is_empty() => Some(Value::Array(Vec::new())),
            Value::String(s) => Some(Value::Array(
                s.split(',').map(|p| Value::String(p.to_string())).collect(),
            )),
            Value::Number(n) => Some(Value::Array(vec![Value::String(n.to_string())])),
            _ => None,
        },
        Kind::Dict => match v {
            Value::Object(_) => Some(v.clone()),
            Value::String(s) => parse_dict_string(s),
            _ => None,
        },
    }
}

/// Ansible's boolean conversion: yes/no, true/false, on/off, y/n, t/f, 1/0
/// in any case, and the numbers 1 and 0.
pub fn parse_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_f64() {
            Some(1.0) => Some(true),
            Some(0.0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" | "on" | "1" | "true" | "t" => Some(true),
            "n" | "no" | "off" | "0" | "false" | "f" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A dict given as a string: JSON (`{"a": 1}`) or `k1=v1, k2=v2`.
fn parse_dict_string(s: &str) -> Option<Value> {
    let t = s.trim();
    if t.starts_with('{') {
        return match serde_json::from_str::<Value>(t) {
            Ok(v @ Value::Object(_)) => Some(v),
            _ => None,
        };
    }
    let mut map = Map::new();
    for field in t.split(|c: char| c == ',' || c.is_whitespace()) {
        if field.is_empty() {
            continue;
        }
        let (k, v) = field.split_once('=')?;
        if k.is_empty() {
            return None;
        }
        map.insert(k.to_string(), Value::String(v.to_string()));
    }
    Some(Value::Object(map))
}

/// `~` and `$VAR`/`${VAR}` expansion, as Ansible does for `path` options.
pub fn expand_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    if let Some(after) = rest.strip_prefix('~') {
        if after.is_empty() || after.starts_with('/') {
            if let Ok(home) = std::env::var("HOME") {
                out.push_str(&home);
                rest = after;
            }
        }
    }
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let tail = &rest[i + 1..];
        let (name, consumed) = if let Some(inner) = tail.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = tail
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .unwrap_or(tail.len());
            (&tail[..end], end)
        };
        match (name.is_empty(), std::env::var(name)) {
            (false, Ok(value)) => {
                out.push_str(&value);
                for _ in 0..consumed {
                    chars.next();
                }
            }
            _ => out.push('$'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Kind, OptionSpec, Spec};
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().expect("test input is an object").clone()
    }

    fn one(kind: Kind) -> Spec {
        Spec::new(vec![OptionSpec::new("x", kind)])
    }

    fn conv(kind: Kind, v: Value) -> Result<Value, ArgErrors> {
        validate(&one(kind), &obj(json!({ "x": v }))).map(|m| m["x"].clone())
    }

    #[test]
    fn bool_accepts_every_ansible_spelling() {
        for t in ["yes", "YES", "true", "True", "on", "On", "1", "y", "t"] {
            assert_eq!(conv(Kind::Bool, json!(t)).unwrap(), json!(true), "{t}");
        }
        for f in ["no", "No", "false", "FALSE", "off", "0", "n", "f"] {
            assert_eq!(conv(Kind::Bool, json!(f)).unwrap(), json!(false), "{f}");
        }
        assert_eq!(conv(Kind::Bool, json!(1)).unwrap(), json!(true));
        assert_eq!(conv(Kind::Bool, json!(0)).unwrap(), json!(false));
        assert_eq!(conv(Kind::Bool, json!(true)).unwrap(), json!(true));
        let err = conv(Kind::Bool, json!("maybe")).unwrap_err().to_string();
        assert!(err.contains("option 'x' must be of type bool"), "{err}");
        assert!(conv(Kind::Bool, json!(2)).is_err());
        assert!(conv(Kind::Bool, json!([true])).is_err());
    }

    #[test]
    fn int_accepts_numeric_strings_and_whole_floats() {
        assert_eq!(conv(Kind::Int, json!("5432")).unwrap(), json!(5432));
        assert_eq!(conv(Kind::Int, json!(" 7 ")).unwrap(), json!(7));
        assert_eq!(conv(Kind::Int, json!(5432)).unwrap(), json!(5432));
        assert_eq!(conv(Kind::Int, json!(3.0)).unwrap(), json!(3));
        assert_eq!(conv(Kind::Int, json!(-1)).unwrap(), json!(-1));
        assert!(conv(Kind::Int, json!(3.5)).is_err());
        assert!(conv(Kind::Int, json!("54x")).is_err());
        assert!(conv(Kind::Int, json!(true)).is_err());
        assert!(conv(Kind::Int, json!({})).is_err());
    }

    #[test]
    fn float_accepts_ints_and_strings() {
        assert_eq!(conv(Kind::Float, json!("1.5")).unwrap(), json!(1.5));
        assert_eq!(conv(Kind::Float, json!(2)).unwrap(), json!(2.0));
        assert!(conv(Kind::Float, json!("x")).is_err());
        assert!(conv(Kind::Float, json!(false)).is_err());
    }

    #[test]
    fn str_converts_scalars_but_not_containers() {
        assert_eq!(conv(Kind::Str, json!(15)).unwrap(), json!("15"));
        assert_eq!(conv(Kind::Str, json!(1.5)).unwrap(), json!("1.5"));
        assert_eq!(conv(Kind::Str, json!(true)).unwrap(), json!("True"));
        assert!(conv(Kind::Str, json!([1])).is_err());
        assert!(conv(Kind::Str, json!({"a": 1})).is_err());
    }

    #[test]
    fn path_expands_home_and_variables() {
        let home = std::env::var("HOME").unwrap_or_default();
        assert_eq!(
            conv(Kind::Path, json!("~/x")).unwrap(),
            json!(format!("{home}/x"))
        );
        assert_eq!(
            conv(Kind::Path, json!("$HOME/y")).unwrap(),
            json!(format!("{home}/y"))
        );
        assert_eq!(
            conv(Kind::Path, json!("${HOME}z")).unwrap(),
            json!(format!("{home}z"))
        );
        assert_eq!(
            conv(Kind::Path, json!("/a/$PGHERD_SURELY_UNSET_VAR/b")).unwrap(),
            json!("/a/$PGHERD_SURELY_UNSET_VAR/b")
        );
        assert_eq!(conv(Kind::Path, json!("/plain")).unwrap(), json!("/plain"));
        assert!(conv(Kind::Path, json!(3)).is_err());
    }

    #[test]
    fn list_splits_strings_and_converts_elements() {
        assert_eq!(conv(Kind::List, json!("a,b")).unwrap(), json!(["a", "b"]));
        assert_eq!(conv(Kind::List, json!("")).unwrap(), json!([]));
        assert_eq!(conv(Kind::List, json!(5)).unwrap(), json!(["5"]));
        assert!(conv(Kind::List, json!({"a": 1})).is_err());
        let spec = Spec::new(vec![
            OptionSpec::new("ports", Kind::List).elements(Kind::Int)
        ]);
        let out = validate(&spec, &obj(json!({"ports": ["1", 2]}))).unwrap();
        assert_eq!(out["ports"], json!([1, 2]));
        let err = validate(&spec, &obj(json!({"ports": ["1", "x"]})))
            .unwrap_err()
            .to_string();
        assert!(err.contains("elements of option 'ports' must be of type int"));
        assert!(err.contains("index 1"), "{err}");
    }

    #[test]
    fn dict_accepts_json_and_key_value_strings() {
        assert_eq!(
            conv(Kind::Dict, json!("{\"a\": 1}")).unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            conv(Kind::Dict, json!("a=1, b=two")).unwrap(),
            json!({"a": "1", "b": "two"})
        );
        assert!(conv(Kind::Dict, json!("nonsense")).is_err());
        assert!(conv(Kind::Dict, json!([1])).is_err());
    }

    #[test]
    fn raw_passes_anything() {
        assert_eq!(conv(Kind::Raw, json!([1, "a"])).unwrap(), json!([1, "a"]));
    }

    #[test]
    fn defaults_fill_absent_and_null_options() {
        let spec = Spec::new(vec![
            OptionSpec::new("port", Kind::Int).default(5432),
            OptionSpec::new("name", Kind::Str),
        ]);
        let out = validate(&spec, &obj(json!({"port": null}))).unwrap();
        assert_eq!(out["port"], json!(5432));
        assert_eq!(out["name"], Value::Null);
    }

    #[test]
    fn required_options_must_be_given() {
        let spec = Spec::new(vec![OptionSpec::new("name", Kind::Str).required()]);
        let err = validate(&spec, &obj(json!({}))).unwrap_err().to_string();
        assert_eq!(err, "missing required option 'name'");
        assert!(validate(&spec, &obj(json!({"name": null}))).is_err());
    }

    #[test]
    fn unknown_options_are_named_with_the_supported_ones() {
        let spec = Spec::new(vec![
            OptionSpec::new("name", Kind::Str),
            OptionSpec::new("port", Kind::Int).aliases(&["pg_port"]),
        ]);
        let err = validate(
            &spec,
            &obj(json!({"nmae": "x", "_ansible_check_mode": true})),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "unsupported option nmae; supported options are: name, port (aliases: pg_port)"
        );
    }

    #[test]
    fn unknown_nested_options_are_named_with_their_path() {
        let spec = Spec::new(vec![OptionSpec::new("patroni", Kind::Dict)
            .suboptions(Spec::new(vec![OptionSpec::new("cluster", Kind::Str)]))]);
        let err = validate(&spec, &obj(json!({"patroni": {"clutser": "main"}})))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "unsupported option patroni.clutser in 'patroni'; supported options are: cluster"
        );
    }

    #[test]
    fn ansible_internal_keys_are_ignored_only_at_the_top() {
        let spec = Spec::new(vec![OptionSpec::new("d", Kind::Dict)
            .suboptions(Spec::new(vec![OptionSpec::new("a", Kind::Str)]))]);
        assert!(validate(
            &spec,
            &obj(json!({"_ansible_diff": true, "_ansible_new": 1}))
        )
        .is_ok());
        assert!(validate(&spec, &obj(json!({"d": {"_ansible_x": 1}}))).is_err());
    }

    #[test]
    fn aliases_resolve_to_the_option_name() {
        let spec = Spec::new(vec![
            OptionSpec::new("port", Kind::Int).aliases(&["pg_port"])
        ]);
        let out = validate(&spec, &obj(json!({"pg_port": "5433"}))).unwrap();
        assert_eq!(out["port"], json!(5433));
        assert!(!out.contains_key("pg_port"));
        let err = validate(&spec, &obj(json!({"pg_port": 1, "port": 2})))
            .unwrap_err()
            .to_string();
        assert!(err.contains("given more than once"), "{err}");
    }

    #[test]
    fn choices_are_enforced_after_conversion() {
        let spec = Spec::new(vec![
            OptionSpec::new("state", Kind::Str).choices(["started", "stopped"]),
            OptionSpec::new("n", Kind::Int).choices([1, 2]),
        ]);
        assert!(validate(&spec, &obj(json!({"state": "started", "n": "2"}))).is_ok());
        let err = validate(&spec, &obj(json!({"state": "running"})))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "option 'state' must be one of: started, stopped, got \"running\""
        );
    }

    #[test]
    fn mutually_exclusive_options_are_refused_together() {
        let spec = Spec::new(vec![
            OptionSpec::new("a", Kind::Str),
            OptionSpec::new("b", Kind::Str),
        ])
        .mutually_exclusive(&["a", "b"]);
        assert!(validate(&spec, &obj(json!({"a": "1"}))).is_ok());
        assert!(validate(&spec, &obj(json!({"a": "1", "b": null}))).is_ok());
        let err = validate(&spec, &obj(json!({"a": "1", "b": "2"})))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "options are mutually exclusive: a, b");
    }

    #[test]
    fn required_together_names_what_is_missing() {
        let spec = Spec::new(vec![
            OptionSpec::new("username", Kind::Str),
            OptionSpec::new("password", Kind::Str).no_log(),
        ])
        .required_together(&["username", "password"]);
        assert!(validate(&spec, &obj(json!({}))).is_ok());
        let err = validate(&spec, &obj(json!({"username": "u"})))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "options must be given together: username, password (missing: password)"
        );
    }

    #[test]
    fn required_if_applies_to_defaults_too() {
        let spec = Spec::new(vec![
            OptionSpec::new("state", Kind::Str).default("present"),
            OptionSpec::new("path", Kind::Path),
            OptionSpec::new("other", Kind::Path),
        ])
        .required_if("state", "present", &["path", "other"], true);
        let err = validate(&spec, &obj(json!({}))).unwrap_err().to_string();
        assert_eq!(
            err,
            "state is present but all of the following are missing: path, other"
        );
        assert!(validate(&spec, &obj(json!({"other": "/x"}))).is_ok());
        assert!(validate(&spec, &obj(json!({"state": "absent"}))).is_ok());
        let all = Spec::new(vec![
            OptionSpec::new("state", Kind::Str),
            OptionSpec::new("a", Kind::Str),
            OptionSpec::new("b", Kind::Str),
        ])
        .required_if("state", "x", &["a", "b"], false);
        let err = validate(&all, &obj(json!({"state": "x", "a": "1"})))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "state is x but some of the following is missing: b");
    }

    #[test]
    fn suboptions_are_validated_recursively_with_rules() {
        let auth = Spec::new(vec![
            OptionSpec::new("username", Kind::Str),
            OptionSpec::new("password", Kind::Str).no_log(),
        ])
        .required_together(&["username", "password"]);
        let restapi = Spec::new(vec![
            OptionSpec::new("listen", Kind::Str),
            OptionSpec::new("port", Kind::Int).default(8008),
            OptionSpec::new("authentication", Kind::Dict).suboptions(auth),
        ]);
        let spec = Spec::new(vec![
            OptionSpec::new("restapi", Kind::Dict).suboptions(restapi)
        ]);
        let out = validate(&spec, &obj(json!({"restapi": {"listen": "h:1"}}))).unwrap();
        assert_eq!(
            out["restapi"],
            json!({"listen": "h:1", "port": 8008, "authentication": null})
        );
        let err = validate(
            &spec,
            &obj(json!({"restapi": {"port": "x", "authentication": {"username": "u"}}})),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("option 'restapi.port' must be of type int"),
            "{err}"
        );
        assert!(
            err.contains("restapi.authentication.username, restapi.authentication.password"),
            "{err}"
        );
    }

    #[test]
    fn list_of_dicts_validates_each_element() {
        let spec = Spec::new(vec![OptionSpec::new("members", Kind::List)
            .elements(Kind::Dict)
            .suboptions(Spec::new(vec![
                OptionSpec::new("name", Kind::Str).required()
            ]))]);
        assert!(validate(&spec, &obj(json!({"members": [{"name": "a"}]}))).is_ok());
        let err = validate(&spec, &obj(json!({"members": [{"name": "a"}, {}]})))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "missing required option 'members[1].name'");
    }

    #[test]
    fn errors_never_show_secret_values() {
        let spec = Spec::new(vec![
            OptionSpec::new("password", Kind::Int).no_log(),
            OptionSpec::new("secret", Kind::Str).no_log().choices(["a"]),
        ]);
        let err = validate(
            &spec,
            &obj(json!({"password": "hunter2-secret", "secret": "s3cr3t-value"})),
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
        assert!(err.contains("option 'password' must be of type int, got a str"));
    }

    #[test]
    fn all_errors_are_reported_at_once() {
        let spec = Spec::new(vec![
            OptionSpec::new("name", Kind::Str).required(),
            OptionSpec::new("port", Kind::Int),
        ]);
        let err = validate(&spec, &obj(json!({"port": "x", "extra": 1}))).unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
    }
}
