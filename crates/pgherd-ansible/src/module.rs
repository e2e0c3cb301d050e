//! Running a module: read the args file, validate, call the module's
//! function, print exactly one JSON object, exit 0 or 1. Panics become JSON
//! failures; secrets never reach the output.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde_json::{json, Map, Value};

use crate::spec::{Kind, Spec};
use crate::validate::{parse_bool, validate};

/// Shown in place of a `no_log` option's value in `invocation`.
pub const NO_LOG_PLACEHOLDER: &str = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER";
/// Shown in place of a secret in messages and diffs.
pub const MASK: &str = "********";

/// What a module's function receives.
#[derive(Debug, Clone)]
pub struct Task {
    /// Validated options, every declared option present.
    pub params: Map<String, Value>,
    pub check_mode: bool,
    pub diff: bool,
    pub verbosity: u8,
    pub tmpdir: Option<PathBuf>,
}

/// A successful result: `changed`, `msg`, `diff`, `warnings` and the
/// module's own return values.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub changed: bool,
    pub msg: Option<String>,
    /// One `{before, after, before_header, after_header}` per changed thing.
    pub diff: Vec<Value>,
    pub warnings: Vec<String>,
    pub values: Map<String, Value>,
}

/// A failure: its message, and return values worth showing with it.
#[derive(Debug, Clone, Default)]
pub struct Failure {
    pub msg: String,
    pub values: Map<String, Value>,
}

impl Failure {
    pub fn new(msg: impl Into<String>) -> Self {
        Failure {
            msg: msg.into(),
            values: Map::new(),
        }
    }
}

impl<E: std::error::Error> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::new(e.to_string())
    }
}

/// Secrets known to this process; every string printed is scrubbed of them.
fn secrets() -> &'static Mutex<Vec<String>> {
    static SECRETS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Registers a secret so that it is masked wherever it would be printed.
pub fn register_secret(secret: &str) {
    if secret.is_empty() {
        return;
    }
    if let Ok(mut list) = secrets().lock() {
        if !list.iter().any(|s| s == secret) {
            list.push(secret.to_string());
            // Longest first, so a secret containing another is masked whole.
            list.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }
}

/// Replaces every registered secret in `text` with [`MASK`].
pub fn scrub(text: &str) -> String {
    let Ok(list) = secrets().lock() else {
        return text.to_string();
    };
    let mut out = text.to_string();
    for s in list.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    out
}

fn scrub_value(v: &mut Value) {
    match v {
        Value::String(s) => *s = scrub(s),
        Value::Array(items) => items.iter_mut().for_each(scrub_value),
        Value::Object(map) => map.values_mut().for_each(scrub_value),
        _ => {}
    }
}

/// Walks the raw arguments along the spec and registers every `no_log`
/// value, before validation, so that even a rejected secret stays hidden.
fn register_no_log_values(spec: &Spec, raw: &Map<String, Value>) {
    for opt in &spec.options {
        let names = std::iter::once(opt.name).chain(opt.aliases.iter().copied());
        for name in names {
            let Some(v) = raw.get(name) else { continue };
            if opt.no_log {
                register_all_strings(v);
                continue;
            }
            if opt.suboptions.is_none() {
                register_password_keys(v);
            }
            if let Some(sub) = &opt.suboptions {
                match v {
                    Value::Object(m) => register_no_log_values(sub, m),
                    Value::Array(items) => {
                        for item in items {
                            if let Value::Object(m) = item {
                                register_no_log_values(sub, m);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Whether a key of free-form data names a secret: `password`,
/// `etcd_password`, `PGPASSWORD`... (not `password_encryption`), and
/// hyphenated option names with a pass, a secret or a key in them, as
/// pgBackRest names its secrets (`repo1-cipher-pass`,
/// `repo1-s3-key-secret`); a plain `key` (the path of a key file) is not.
fn is_password_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.ends_with("password")
        || (key.contains('-') && ["pass", "secret", "key"].iter().any(|w| key.contains(w)))
}

/// Registers the values of password keys anywhere in free-form data (an
/// inline settings mapping, `conf_settings`): they are secrets even though
/// the option as a whole is not `no_log`.
fn register_password_keys(v: &Value) {
    match v {
        Value::Object(m) => {
            for (k, item) in m {
                if is_password_key(k) {
                    register_all_strings(item);
                } else {
                    register_password_keys(item);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(register_password_keys),
        _ => {}
    }
}

/// Free-form data with the value of every password key replaced.
fn censor_password_keys(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, item)| {
                    let censored = if is_password_key(k) && !item.is_null() {
                        Value::String(NO_LOG_PLACEHOLDER.into())
                    } else {
                        censor_password_keys(item)
                    };
                    (k.clone(), censored)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(censor_password_keys).collect()),
        other => other.clone(),
    }
}

fn register_all_strings(v: &Value) {
    match v {
        Value::String(s) => register_secret(s),
        Value::Number(n) => register_secret(&n.to_string()),
        Value::Array(items) => items.iter().for_each(register_all_strings),
        Value::Object(m) => m.values().for_each(register_all_strings),
        _ => {}
    }
}

/// The validated options with every `no_log` value replaced, for
/// `invocation.module_args`.
pub fn censor_params(spec: &Spec, params: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in params {
        let Some(opt) = spec.option(k) else {
            out.insert(k.clone(), v.clone());
            continue;
        };
        let censored = if opt.no_log && !v.is_null() {
            Value::String(NO_LOG_PLACEHOLDER.into())
        } else {
            match (&opt.suboptions, v) {
                (Some(sub), Value::Object(m)) => Value::Object(censor_params(sub, m)),
                (Some(sub), Value::Array(items)) if opt.kind == Kind::List => Value::Array(
                    items
                        .iter()
                        .map(|i| match i {
                            Value::Object(m) => Value::Object(censor_params(sub, m)),
                            other => other.clone(),
                        })
                        .collect(),
                ),
                (None, _) => censor_password_keys(v),
                _ => v.clone(),
            }
        };
        out.insert(k.clone(), censored);
    }
    out
}

/// Builds the printed result of a run.
pub fn result_json(
    outcome: Result<Outcome, Failure>,
    module_args: Option<Map<String, Value>>,
    want_diff: bool,
) -> Value {
    let mut out = Map::new();
    match outcome {
        Ok(o) => {
            out.extend(o.values);
            out.insert("changed".into(), Value::Bool(o.changed));
            out.insert("failed".into(), Value::Bool(false));
            if let Some(msg) = o.msg {
                out.insert("msg".into(), Value::String(msg));
            }
            if want_diff && !o.diff.is_empty() {
                let diff = if o.diff.len() == 1 {
                    o.diff.into_iter().next().unwrap_or(Value::Null)
                } else {
                    Value::Array(o.diff)
                };
                out.insert("diff".into(), diff);
            }
            if !o.warnings.is_empty() {
                out.insert("warnings".into(), json!(o.warnings));
            }
        }
        Err(f) => {
            out.extend(f.values);
            // A failure after changes says so itself.
            out.entry("changed").or_insert(Value::Bool(false));
            out.insert("failed".into(), Value::Bool(true));
            out.insert("msg".into(), Value::String(f.msg));
        }
    }
    if let Some(args) = module_args {
        out.insert("invocation".into(), json!({ "module_args": args }));
    }
    let mut v = Value::Object(out);
    scrub_value(&mut v);
    v
}

/// Prints the one JSON object and exits with 0 on success, 1 on failure.
fn emit(result: &Value) -> ! {
    let failed = result
        .get("failed")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let text = serde_json::to_string(result).unwrap_or_else(|_| {
        r#"{"failed": true, "msg": "pgherd: the module result could not be serialised"}"#.into()
    });
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
    let _ = stdout.flush();
    std::process::exit(if failed { 1 } else { 0 });
}

/// Turns any panic into `{"failed": true, "msg": ...}` on stdout and exit 1:
/// Ansible never sees a Rust backtrace, and with `panic = "abort"` the hook
/// is the last code that runs.
pub fn install_panic_hook(module: &'static str) {
    std::panic::set_hook(Box::new(move |info| {
        let what = if let Some(s) = info.payload().downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "unknown panic".to_string()
        };
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = format!(
            "internal error in the pgherd {module} module{place}: {what}; nothing further was done. \
             Please report this with the task that triggered it"
        );
        emit(&result_json(Err(Failure::new(msg)), None, false));
    }));
}

/// Forgets the registered secrets: for a process that handles many
/// independent inputs (the fuzzer), never for a module run.
pub fn clear_secrets() {
    if let Ok(mut list) = secrets().lock() {
        list.clear();
    }
}

/// Reads the arguments file and splits Ansible's internal keys from the
/// task's options.
/// `-` reads them from stdin (the collection's action plugin sends them so).
pub fn read_args_file(path: &Path) -> Result<Map<String, Value>, Failure> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| Failure::new(format!("cannot read the arguments from stdin: {e}")))?;
        return parse_args_text(&text, Path::new("(stdin)"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::new(format!(
            "cannot read the arguments file {}: {e}",
            path.display()
        ))
    })?;
    parse_args_text(&text, path)
}

/// Parses the arguments file's text (`path` names it in messages).
pub fn parse_args_text(text: &str, path: &Path) -> Result<Map<String, Value>, Failure> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Failure::new(format!(
            "the arguments file {} must hold a JSON object",
            path.display()
        ))),
        Err(e) => Err(Failure::new(format!(
            "the arguments file {} is not valid JSON: {e}",
            path.display()
        ))),
    }
}

fn internal_bool(raw: &Map<String, Value>, key: &str) -> bool {
    raw.get(key).and_then(parse_bool).unwrap_or(false)
}

/// Validates `raw` and prepares the [`Task`]; also returns the censored
/// arguments for `invocation`.
pub fn prepare_task(
    spec: &Spec,
    raw: &Map<String, Value>,
) -> Result<(Task, Map<String, Value>), Failure> {
    register_no_log_values(spec, raw);
    let params = validate(spec, raw).map_err(|e| Failure::new(e.to_string()))?;
    let censored = censor_params(spec, &params);
    let task = Task {
        params,
        check_mode: internal_bool(raw, "_ansible_check_mode"),
        diff: internal_bool(raw, "_ansible_diff"),
        verbosity: raw
            .get("_ansible_verbosity")
            .and_then(Value::as_u64)
            .map(|v| v.min(u8::MAX as u64) as u8)
            .unwrap_or(0),
        tmpdir: raw
            .get("_ansible_tmpdir")
            .and_then(Value::as_str)
            .map(PathBuf::from),
    };
    Ok((task, censored))
}

/// The whole life of a module process. `args` are the process arguments
/// without the program name; the first is the path of the arguments file.
pub fn run<F>(module: &'static str, spec: &Spec, args: &[String], body: F) -> !
where
    F: FnOnce(&Task) -> Result<Outcome, Failure>,
{
    install_panic_hook(module);
    let Some(path) = args.first() else {
        emit(&result_json(
            Err(Failure::new(format!(
                "usage: {module} ARGS.json (the path of a JSON file with the task's options, as Ansible passes it, or - for stdin)"
            ))),
            None,
            false,
        ));
    };
    let raw = match read_args_file(Path::new(path)) {
        Ok(raw) => raw,
        Err(f) => emit(&result_json(Err(f), None, false)),
    };
    let (task, censored) = match prepare_task(spec, &raw) {
        Ok(t) => t,
        Err(f) => emit(&result_json(Err(f), None, false)),
    };
    let outcome = body(&task);
    emit(&result_json(outcome, Some(censored), task.diff))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::OptionSpec;
    use std::process::Command;

    fn spec() -> Spec {
        Spec::new(vec![
            OptionSpec::new("name", Kind::Str).required(),
            OptionSpec::new("password", Kind::Str).no_log(),
            OptionSpec::new("auth", Kind::Dict).suboptions(Spec::new(vec![
                OptionSpec::new("user", Kind::Str),
                OptionSpec::new("token", Kind::Str).no_log(),
            ])),
        ])
    }

    #[test]
    fn invocation_hides_no_log_values_at_every_level() {
        let raw = json!({"name": "n", "password": "pw-one-xyz", "auth": {"user": "u", "token": "tok-xyz"}});
        let (task, censored) = prepare_task(&spec(), raw.as_object().unwrap()).unwrap();
        assert_eq!(task.params["password"], json!("pw-one-xyz"));
        assert_eq!(censored["password"], json!(NO_LOG_PLACEHOLDER));
        assert_eq!(censored["auth"]["token"], json!(NO_LOG_PLACEHOLDER));
        assert_eq!(censored["auth"]["user"], json!("u"));
    }

    #[test]
    fn password_keys_in_free_form_options_are_secrets() {
        let spec = Spec::new(vec![
            OptionSpec::new("name", Kind::Str).required(),
            OptionSpec::new("settings", Kind::Raw),
        ]);
        let raw = json!({"name": "n", "settings": {"patroni": {"etcd": {
            "username": "u", "password": "pw-free-form-1"}},
            "hosts": [{"PGPASSWORD": "pw-free-form-2"}],
            "password_encryption": "scram-sha-256"}});
        let (_task, censored) = prepare_task(&spec, raw.as_object().unwrap()).unwrap();
        let text = serde_json::to_string(&censored).unwrap();
        assert!(!text.contains("pw-free-form"), "{text}");
        assert_eq!(
            censored["settings"]["patroni"]["etcd"]["username"],
            json!("u")
        );
        assert_eq!(
            censored["settings"]["password_encryption"],
            json!("scram-sha-256")
        );
        assert_eq!(scrub("bad pw-free-form-2 here"), "bad ******** here");
    }

    #[test]
    fn secrets_are_scrubbed_from_messages_and_diffs() {
        let raw = json!({"name": "n", "password": "pw-two-secret"});
        let (_task, censored) = prepare_task(&spec(), raw.as_object().unwrap()).unwrap();
        let out = result_json(
            Ok(Outcome {
                changed: true,
                msg: Some("connected with pw-two-secret".into()),
                diff: vec![json!({"before": "", "after": "password: pw-two-secret"})],
                warnings: vec!["pw-two-secret".into()],
                values: Map::new(),
            }),
            Some(censored),
            true,
        );
        let text = out.to_string();
        assert!(!text.contains("pw-two-secret"), "{text}");
        assert_eq!(out["msg"], json!("connected with ********"));
        assert_eq!(out["diff"]["after"], json!("password: ********"));
    }

    #[test]
    fn a_rejected_secret_is_still_hidden() {
        let raw = json!({"password": "pw-three-secret", "bogus": "pw-three-secret"});
        let f = prepare_task(&spec(), raw.as_object().unwrap()).unwrap_err();
        let out = result_json(Err(f), None, false);
        assert!(!out.to_string().contains("pw-three-secret"));
        assert_eq!(out["failed"], json!(true));
    }

    #[test]
    fn internal_keys_set_check_and_diff_mode() {
        let raw = json!({"name": "n", "_ansible_check_mode": true, "_ansible_diff": "yes",
                         "_ansible_verbosity": 3, "_ansible_tmpdir": "/tmp/x", "_ansible_new_key": 1});
        let (task, censored) = prepare_task(&spec(), raw.as_object().unwrap()).unwrap();
        assert!(task.check_mode && task.diff);
        assert_eq!(task.verbosity, 3);
        assert_eq!(task.tmpdir, Some(PathBuf::from("/tmp/x")));
        assert!(!censored.contains_key("_ansible_check_mode"));
    }

    #[test]
    fn diff_is_only_returned_in_diff_mode() {
        let o = Outcome {
            changed: true,
            diff: vec![
                json!({"before": "a", "after": "b"}),
                json!({"before": "c", "after": "d"}),
            ],
            ..Outcome::default()
        };
        assert!(result_json(Ok(o.clone()), None, false)
            .get("diff")
            .is_none());
        let with = result_json(Ok(o), None, true);
        assert_eq!(with["diff"].as_array().map(Vec::len), Some(2));
        assert_eq!(with["changed"], json!(true));
        assert_eq!(with["failed"], json!(false));
    }

    #[test]
    fn failures_report_failed_and_not_changed() {
        let out = result_json(Err(Failure::new("boom")), None, true);
        assert_eq!(
            out,
            json!({"changed": false, "failed": true, "msg": "boom"})
        );
        let mut after = Failure::new("late boom");
        after.values.insert("changed".into(), json!(true));
        let out = result_json(Err(after), None, true);
        assert_eq!(
            out,
            json!({"changed": true, "failed": true, "msg": "late boom"})
        );
    }

    /// Child side of `a_panic_becomes_one_json_failure`: runs a module whose
    /// body panics. Ignored unless the parent runs it with the variable set.
    #[test]
    fn free_form_secrets_are_told_by_their_key() {
        for secret in [
            "password",
            "etcd_password",
            "PGPASSWORD",
            "repo1-cipher-pass",
            "repo1-s3-key",
            "repo1-s3-key-secret",
        ] {
            assert!(is_password_key(secret), "{secret}");
        }
        for plain in [
            "password_encryption",
            "key",
            "keyfile",
            "cacert",
            "repo1-path",
        ] {
            assert!(!is_password_key(plain), "{plain}");
        }
        let settings = json!({"pgbackrest": {"global_options": {
            "repo1-cipher-pass": "Cph-Pass-8v", "compress-type": "zst"}},
            "patroni": {"etcd": {"key": "/etc/k.pem"}}});
        let censored = censor_password_keys(&settings);
        assert_eq!(
            censored["pgbackrest"]["global_options"]["repo1-cipher-pass"],
            NO_LOG_PLACEHOLDER
        );
        assert_eq!(
            censored["pgbackrest"]["global_options"]["compress-type"],
            "zst"
        );
        assert_eq!(censored["patroni"]["etcd"]["key"], "/etc/k.pem");
    }

    #[test]
    #[ignore]
    fn panicking_module_child() {
        let Ok(args_path) = std::env::var("PGHERD_PANIC_CHILD_ARGS") else {
            return;
        };
        run("test", &spec(), &[args_path], |_task| {
            let v: Vec<u8> = Vec::new();
            let i = v.len() + 3;
            Ok(Outcome {
                changed: v[i] == 0,
                ..Outcome::default()
            })
        });
    }

    #[test]
    fn a_panic_becomes_one_json_failure() {
        let dir = std::env::temp_dir().join(format!("pgherd-panic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let args = dir.join("args.json");
        std::fs::write(&args, r#"{"name": "n", "password": "pw-panic-secret"}"#).unwrap();
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "module::tests::panicking_module_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PGHERD_PANIC_CHILD_ARGS", &args)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        // libtest prints its own "test ... " prefix on the same line.
        let json_lines: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.find("{\"").map(|i| &l[i..]))
            .collect();
        assert_eq!(json_lines.len(), 1, "{stdout}");
        let v: Value = serde_json::from_str(json_lines[0]).unwrap();
        assert_eq!(v["failed"], json!(true));
        let msg = v["msg"].as_str().unwrap();
        assert!(
            msg.contains("internal error in the pgherd test module"),
            "{msg}"
        );
        assert!(msg.contains("index out of bounds"), "{msg}");
        assert!(!stdout.contains("pw-panic-secret"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("stack backtrace"), "{stderr}");
    }
}
