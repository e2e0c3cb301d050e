//! Argument specs: the declaration of a module's options, written once and
//! used both to validate a task's arguments and to document the module.

use serde_json::Value;

/// The type of an option, with Ansible's names and conversions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Int,
    Bool,
    Float,
    /// A string with `~` and `$VAR` expanded.
    Path,
    List,
    Dict,
    /// Any JSON value, passed through unchanged.
    Raw,
}

impl Kind {
    /// The name Ansible's documentation uses for this type.
    pub fn ansible_name(self) -> &'static str {
        match self {
            Kind::Str => "str",
            Kind::Int => "int",
            Kind::Bool => "bool",
            Kind::Float => "float",
            Kind::Path => "path",
            Kind::List => "list",
            Kind::Dict => "dict",
            Kind::Raw => "raw",
        }
    }
}

/// One option of a module (or a suboption of a dict option).
#[derive(Debug, Clone)]
pub struct OptionSpec {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    pub default: Option<Value>,
    pub choices: Vec<Value>,
    pub aliases: Vec<&'static str>,
    pub no_log: bool,
    /// Type of the elements of a `List`.
    pub elements: Option<Kind>,
    /// Suboptions of a `Dict`, or of each element of a `List` of dicts.
    pub suboptions: Option<Spec>,
    pub description: Vec<&'static str>,
    /// Ansible version-independent note shown in the docs (`version_added`).
    pub version_added: Option<&'static str>,
}

impl OptionSpec {
    pub fn new(name: &'static str, kind: Kind) -> Self {
        OptionSpec {
            name,
            kind,
            required: false,
            default: None,
            choices: Vec::new(),
            aliases: Vec::new(),
            no_log: false,
            elements: None,
            suboptions: None,
            description: Vec::new(),
            version_added: None,
        }
    }

    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    pub fn default(mut self, value: impl Into<Value>) -> Self {
        self.default = Some(value.into());
        self
    }

    pub fn choices<V: Into<Value>>(mut self, choices: impl IntoIterator<Item = V>) -> Self {
        self.choices = choices.into_iter().map(Into::into).collect();
        self
    }

    pub fn aliases(mut self, aliases: &[&'static str]) -> Self {
        self.aliases = aliases.to_vec();
        self
    }

    pub fn no_log(mut self) -> Self {
        self.no_log = true;
        self
    }

    pub fn elements(mut self, kind: Kind) -> Self {
        self.elements = Some(kind);
        self
    }

    pub fn suboptions(mut self, spec: Spec) -> Self {
        self.suboptions = Some(spec);
        self
    }

    /// One paragraph of documentation; call again for more paragraphs.
    pub fn doc(mut self, paragraph: &'static str) -> Self {
        self.description.push(paragraph);
        self
    }
}

/// `required_if`: when `key` equals `value`, the `requirements` must be given
/// (all of them, or at least one when `any` is set).
#[derive(Debug, Clone)]
pub struct RequiredIf {
    pub key: &'static str,
    pub value: Value,
    pub requirements: Vec<&'static str>,
    pub any: bool,
}

/// A set of options and the rules that tie them together.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub options: Vec<OptionSpec>,
    pub mutually_exclusive: Vec<Vec<&'static str>>,
    pub required_together: Vec<Vec<&'static str>>,
    pub required_if: Vec<RequiredIf>,
}

impl Spec {
    pub fn new(options: Vec<OptionSpec>) -> Self {
        Spec {
            options,
            ..Spec::default()
        }
    }

    pub fn mutually_exclusive(mut self, names: &[&'static str]) -> Self {
        self.mutually_exclusive.push(names.to_vec());
        self
    }

    pub fn required_together(mut self, names: &[&'static str]) -> Self {
        self.required_together.push(names.to_vec());
        self
    }

    pub fn required_if(
        mut self,
        key: &'static str,
        value: impl Into<Value>,
        requirements: &[&'static str],
        any: bool,
    ) -> Self {
        self.required_if.push(RequiredIf {
            key,
            value: value.into(),
            requirements: requirements.to_vec(),
            any,
        });
        self
    }

    pub fn option(&self, name: &str) -> Option<&OptionSpec> {
        self.options.iter().find(|o| o.name == name)
    }
}
