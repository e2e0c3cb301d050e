//! Module documentation (`DOCUMENTATION`, `EXAMPLES`, `RETURN`) rendered
//! from the same [`Spec`] that validates arguments, so the two cannot drift.

use serde_json::{json, Map, Value};

use crate::spec::{OptionSpec, Spec};

/// One returned key.
#[derive(Debug, Clone)]
pub struct ReturnDoc {
    pub name: &'static str,
    pub description: &'static str,
    /// Ansible's type name: str, int, bool, list, dict...
    pub kind: &'static str,
    /// When it is returned: "always", "success", ...
    pub returned: &'static str,
    pub sample: Option<Value>,
    pub elements: Option<&'static str>,
    pub contains: Vec<ReturnDoc>,
}

impl ReturnDoc {
    pub fn new(name: &'static str, kind: &'static str, description: &'static str) -> Self {
        ReturnDoc {
            name,
            description,
            kind,
            returned: "success",
            sample: None,
            elements: None,
            contains: Vec::new(),
        }
    }

    pub fn always(mut self) -> Self {
        self.returned = "always";
        self
    }

    pub fn sample(mut self, v: Value) -> Self {
        self.sample = Some(v);
        self
    }

    pub fn elements(mut self, kind: &'static str) -> Self {
        self.elements = Some(kind);
        self
    }

    pub fn contains(mut self, keys: Vec<ReturnDoc>) -> Self {
        self.contains = keys;
        self
    }
}

/// What a module's documentation says beyond its options.
#[derive(Debug, Clone)]
pub struct ModuleDoc {
    /// Fully qualified name, e.g. `pgherd.cluster.instance`.
    pub module: &'static str,
    pub short_description: &'static str,
    pub description: Vec<&'static str>,
    pub version_added: &'static str,
    pub notes: Vec<&'static str>,
    /// What the target host needs.
    pub requirements: Vec<&'static str>,
    /// Related modules and documents: `{module: ...}` or `{name, link,
    /// description}` entries, as Ansible's documentation format has them.
    pub seealso: Vec<Value>,
    pub examples: &'static str,
    pub returns: Vec<ReturnDoc>,
}

/// What an option's documentation and its argument spec both say of it:
/// type, required, default, choices, aliases, no_log, elements.
fn option_fields(o: &OptionSpec) -> Map<String, Value> {
    let mut d = Map::new();
    d.insert("type".into(), json!(o.kind.ansible_name()));
    if o.required {
        d.insert("required".into(), json!(true));
    }
    if let Some(v) = &o.default {
        d.insert("default".into(), v.clone());
    }
    if !o.choices.is_empty() {
        d.insert("choices".into(), Value::Array(o.choices.clone()));
    }
    if !o.aliases.is_empty() {
        d.insert("aliases".into(), json!(o.aliases));
    }
    if o.no_log {
        d.insert("no_log".into(), json!(true));
    }
    if let Some(e) = o.elements {
        d.insert("elements".into(), json!(e.ansible_name()));
    }
    d
}

fn option_doc(o: &OptionSpec) -> Value {
    let mut d = option_fields(o);
    let description: Vec<Value> = if o.description.is_empty() {
        vec![Value::String(format!("The C({}) option.", o.name))]
    } else {
        o.description
            .iter()
            .map(|p| Value::String((*p).to_string()))
            .collect()
    };
    d.insert("description".into(), Value::Array(description));
    if let Some(sub) = &o.suboptions {
        d.insert("suboptions".into(), options_doc(sub));
    }
    Value::Object(d)
}

fn options_doc(spec: &Spec) -> Value {
    let mut names: Vec<&OptionSpec> = spec.options.iter().collect();
    names.sort_by_key(|o| o.name);
    Value::Object(
        names
            .into_iter()
            .map(|o| (o.name.to_string(), option_doc(o)))
            .collect(),
    )
}

fn return_doc(r: &ReturnDoc) -> Value {
    let mut d = Map::new();
    d.insert("description".into(), json!(r.description));
    d.insert("returned".into(), json!(r.returned));
    d.insert("type".into(), json!(r.kind));
    if let Some(e) = r.elements {
        d.insert("elements".into(), json!(e));
    }
    if let Some(s) = &r.sample {
        d.insert("sample".into(), s.clone());
    }
    if !r.contains.is_empty() {
        d.insert(
            "contains".into(),
            Value::Object(
                r.contains
                    .iter()
                    .map(|c| (c.name.to_string(), return_doc(c)))
                    .collect(),
            ),
        );
    }
    Value::Object(d)
}

/// The documentation of a module (`DOCUMENTATION`, `EXAMPLES`, `RETURN`).
pub fn sidecar(doc: &ModuleDoc, spec: &Spec) -> Value {
    let mut documentation = Map::new();
    documentation.insert(
        "module".into(),
        json!(doc.module.rsplit('.').next().unwrap_or(doc.module)),
    );
    documentation.insert("short_description".into(), json!(doc.short_description));
    documentation.insert("version_added".into(), json!(doc.version_added));
    documentation.insert("description".into(), json!(doc.description));
    documentation.insert("options".into(), options_doc(spec));
    documentation.insert(
        "attributes".into(),
        json!({
            "check_mode": {"support": "full", "description": "Reports exactly what a real run changes, and changes nothing."},
            "diff_mode": {"support": "full", "description": "Shows the change, with secrets masked."},
            "platform": {"support": "full", "platforms": "posix", "description": "Linux hosts of the architecture the module was built for."},
        }),
    );
    if !doc.requirements.is_empty() {
        documentation.insert("requirements".into(), json!(doc.requirements));
    }
    if !doc.notes.is_empty() {
        documentation.insert("notes".into(), json!(doc.notes));
    }
    if !doc.seealso.is_empty() {
        documentation.insert("seealso".into(), Value::Array(doc.seealso.clone()));
    }
    documentation.insert("author".into(), json!(["pgherd maintainers"]));
    json!({
        "DOCUMENTATION": documentation,
        "EXAMPLES": doc.examples,
        "RETURN": Value::Object(doc.returns.iter().map(|r| (r.name.to_string(), return_doc(r))).collect()),
    })
}

/// Every returned key without a sample, by its path.
pub fn returns_without_sample(doc: &ModuleDoc) -> Vec<String> {
    fn walk(r: &ReturnDoc, prefix: &str, out: &mut Vec<String>) {
        let path = format!("{prefix}{}", r.name);
        if r.sample.is_none() {
            out.push(path.clone());
        }
        for c in &r.contains {
            walk(c, &format!("{path}."), out);
        }
    }
    let mut out = Vec::new();
    for r in &doc.returns {
        walk(r, "", &mut out);
    }
    out
}

fn option_argument_spec(o: &OptionSpec) -> Value {
    let mut d = option_fields(o);
    if let Some(sub) = &o.suboptions {
        d.insert("options".into(), options_argument_spec(sub));
        if let Value::Object(rules) = spec_rules(sub) {
            d.extend(rules);
        }
    }
    Value::Object(d)
}

fn options_argument_spec(spec: &Spec) -> Value {
    Value::Object(
        spec.options
            .iter()
            .map(|o| (o.name.to_string(), option_argument_spec(o)))
            .collect(),
    )
}

/// A spec's rules between options, as Ansible's argument spec names them;
/// only the rules it has.
fn spec_rules(spec: &Spec) -> Value {
    let mut d = Map::new();
    if !spec.mutually_exclusive.is_empty() {
        d.insert("mutually_exclusive".into(), json!(spec.mutually_exclusive));
    }
    if !spec.required_together.is_empty() {
        d.insert("required_together".into(), json!(spec.required_together));
    }
    if !spec.required_if.is_empty() {
        d.insert(
            "required_if".into(),
            Value::Array(
                spec.required_if
                    .iter()
                    .map(|r| json!([r.key, r.value, r.requirements, r.any]))
                    .collect(),
            ),
        );
    }
    Value::Object(d)
}

/// The spec in Ansible's own argument spec format: `argument_spec` plus the
/// top-level rules, the keyword arguments of Ansible's
/// `ArgumentSpecValidator`. The collection's action plugins validate a task
/// with it on the controller, before anything is sent to the host.
pub fn argument_spec(spec: &Spec) -> Value {
    let mut d = Map::new();
    d.insert("argument_spec".into(), options_argument_spec(spec));
    if let Value::Object(r) = spec_rules(spec) {
        d.extend(r);
    }
    Value::Object(d)
}

/// A JSON value written as a Python literal (JSON's string escapes are
/// Python's too).
pub fn python_literal(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(_) => v.to_string(),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(python_literal)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), python_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Kind;

    #[test]
    fn options_carry_every_spec_attribute() {
        let spec = Spec::new(vec![
            OptionSpec::new("state", Kind::Str)
                .default("started")
                .choices(["started", "stopped"])
                .doc("What to do."),
            OptionSpec::new("password", Kind::Str).no_log(),
            OptionSpec::new("name", Kind::Str)
                .required()
                .aliases(&["instance"]),
            OptionSpec::new("hba", Kind::List).elements(Kind::Str),
            OptionSpec::new("auth", Kind::Dict)
                .suboptions(Spec::new(vec![OptionSpec::new("user", Kind::Str)])),
        ]);
        let doc = ModuleDoc {
            module: "ns.coll.thing",
            short_description: "Does a thing",
            description: vec!["Long."],
            version_added: "0.1.0",
            notes: vec![],
            requirements: vec![],
            seealso: vec![],
            examples: "- ns.coll.thing:\n    name: x\n",
            returns: vec![ReturnDoc::new("changes", "list", "What changed.")
                .always()
                .elements("str")],
        };
        let v = sidecar(&doc, &spec);
        let o = &v["DOCUMENTATION"]["options"];
        assert_eq!(v["DOCUMENTATION"]["module"], "thing");
        assert_eq!(o["state"]["default"], "started");
        assert_eq!(o["state"]["choices"], json!(["started", "stopped"]));
        assert_eq!(o["password"]["no_log"], true);
        assert_eq!(o["name"]["required"], true);
        assert_eq!(o["name"]["aliases"], json!(["instance"]));
        assert_eq!(o["hba"]["elements"], "str");
        assert_eq!(o["auth"]["suboptions"]["user"]["type"], "str");
        let keys: Vec<&String> = o.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["auth", "hba", "name", "password", "state"]);
        assert_eq!(v["RETURN"]["changes"]["elements"], "str");
        assert_eq!(v["EXAMPLES"], "- ns.coll.thing:\n    name: x\n");
    }

    #[test]
    fn the_argument_spec_is_ansibles_format() {
        let spec = Spec::new(vec![
            OptionSpec::new("state", Kind::Str)
                .default("started")
                .choices(["started", "stopped"]),
            OptionSpec::new("password", Kind::Str).no_log(),
            OptionSpec::new("auth", Kind::Dict).suboptions(
                Spec::new(vec![
                    OptionSpec::new("user", Kind::Str),
                    OptionSpec::new("pass", Kind::Str).no_log(),
                ])
                .required_together(&["user", "pass"]),
            ),
        ])
        .mutually_exclusive(&["state", "auth"])
        .required_if("state", "stopped", &["password"], false);
        let a = argument_spec(&spec);
        assert_eq!(
            a["argument_spec"]["state"],
            json!({"type": "str", "default": "started", "choices": ["started", "stopped"]})
        );
        assert_eq!(a["argument_spec"]["password"]["no_log"], true);
        assert_eq!(
            a["argument_spec"]["auth"]["options"]["user"],
            json!({"type": "str"})
        );
        assert_eq!(
            a["argument_spec"]["auth"]["required_together"],
            json!([["user", "pass"]])
        );
        assert_eq!(a["mutually_exclusive"], json!([["state", "auth"]]));
        assert_eq!(
            a["required_if"],
            json!([["state", "stopped", ["password"], false]])
        );
        assert!(a.get("required_together").is_none());
        assert_eq!(
            python_literal(&json!({"a": [true, null, 1.5, "q\"\\"]})),
            r#"{"a": [True, None, 1.5, "q\"\\"]}"#
        );
    }
}
