//! YAML output that Python's YAML 1.1 reader (Patroni uses PyYAML) reads
//! back exactly: a string is written plain only when it cannot be taken for
//! a boolean, null, number or date there (`off`, `yes`, `0755`, `10:30`),
//! and double-quoted otherwise. Same value, same bytes.

use serde_yaml::Value;

/// Words YAML 1.1 reads as booleans or null.
const RESERVED_WORDS: [&str; 22] = [
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
    "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF",
];

fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    // A letter or '/' first rules out numbers, dates and YAML indicators;
    // the rest stays in a set that has no meaning in a plain scalar.
    (first.is_ascii_alphabetic() || first == '/' || first == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && !RESERVED_WORDS.contains(&s)
        && !matches!(s, "null" | "Null" | "NULL")
    // ".inf" and ".nan" start with '.', never here; "_" alone is fine.
}

/// Characters written as they are: what YAML (1.1 and 1.2) allows in a
/// document, less those that mean something besides themselves (a BOM;
/// NEL, LS and PS, which YAML 1.1 reads as line breaks).
fn yaml_printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{d7ff}')
        || (('\u{e000}'..='\u{fffd}').contains(&c) && c != '\u{feff}')
        || c >= '\u{10000}'
}

/// A double-quoted scalar: `\\`, `"` and every character YAML does not
/// allow as is are escaped, with escapes PyYAML and YAML 1.2 both read.
fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if yaml_printable(c) && !matches!(c, '\u{2028}' | '\u{2029}') => out.push(c),
            c if (c as u32) <= 0xff => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                if f.is_nan() {
                    ".nan".into()
                } else if f.is_infinite() {
                    if f > 0.0 { ".inf" } else { "-.inf" }.into()
                } else {
                    let text = f.to_string();
                    if text.contains('.') || text.contains('e') {
                        text
                    } else {
                        format!("{text}.0")
                    }
                }
            } else {
                n.to_string()
            }
        }
        Value::String(s) => {
            if is_plain_safe(s) {
                s.clone()
            } else {
                double_quoted(s)
            }
        }
        Value::Sequence(s) if s.is_empty() => "[]".into(),
        Value::Mapping(m) if m.is_empty() => "{}".into(),
        Value::Tagged(t) => scalar(&t.value),
        // Non-empty collections are never written inline.
        Value::Sequence(_) | Value::Mapping(_) => String::new(),
    }
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Sequence(s) => !s.is_empty(),
        Value::Mapping(m) => !m.is_empty(),
        Value::Tagged(t) => is_block(&t.value),
        _ => false,
    }
}

fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => untag(&t.value),
        other => other,
    }
}

/// Whether a multi-line string can be written as a literal block and read
/// back the same: printable lines, none starting the block with a space,
/// no trailing blanks.
fn literal_block_safe(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && s.chars().all(|c| {
            c == '\n'
                || (yaml_printable(c) && !c.is_control() && !matches!(c, '\u{2028}' | '\u{2029}'))
        })
        && s.lines().all(|l| l == l.trim_end())
        && !s.ends_with("\n\n")
}

/// `|` (or `|-` without a final newline) and the lines, indented.
fn literal_block(out: &mut String, s: &str, indent: usize) {
    out.push_str(if s.ends_with('\n') { " |\n" } else { " |-\n" });
    for line in s.lines() {
        if !line.is_empty() {
            out.push_str(&" ".repeat(indent + 2));
            out.push_str(line);
        }
        out.push('\n');
    }
}

fn emit_mapping(out: &mut String, m: &serde_yaml::Mapping, indent: usize) {
    for (k, v) in m {
        out.push_str(&" ".repeat(indent));
        out.push_str(&scalar(untag(k)));
        out.push(':');
        match untag(v) {
            Value::String(s) if literal_block_safe(s) => literal_block(out, s, indent),
            Value::Mapping(inner) if !inner.is_empty() => {
                out.push('\n');
                emit_mapping(out, inner, indent + 2);
            }
            Value::Sequence(items) if !items.is_empty() => {
                out.push('\n');
                emit_sequence(out, items, indent);
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

fn emit_sequence(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        let item = untag(item);
        if is_block(item) {
            // Write the nested block two columns in, then put the dash in
            // place of the first line's indentation.
            let mut nested = String::new();
            match item {
                Value::Mapping(m) => emit_mapping(&mut nested, m, indent + 2),
                Value::Sequence(s) => emit_sequence(&mut nested, s, indent + 2),
                _ => {}
            }
            out.push_str(&" ".repeat(indent));
            out.push_str("- ");
            out.push_str(&nested[indent + 2..]);
        } else {
            out.push_str(&" ".repeat(indent));
            out.push_str("- ");
            out.push_str(&scalar(item));
            out.push('\n');
        }
    }
}

/// Serialises a document; a top-level scalar is written on its own line.
pub fn to_yaml_string(v: &Value) -> String {
    let mut out = String::new();
    match untag(v) {
        Value::Mapping(m) if !m.is_empty() => emit_mapping(&mut out, m, 0),
        Value::Sequence(s) if !s.is_empty() => emit_sequence(&mut out, s, 0),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(s: &str) -> Value {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn yaml11_lookalikes_are_quoted() {
        for s in [
            "off",
            "on",
            "yes",
            "No",
            "y",
            "0755",
            "10:30",
            "1_000",
            "2001-12-14",
            "",
            "null",
            "~",
            "-x",
            "a: b",
            "x #y",
            "127.0.0.1:2379",
            "*",
            "1e3",
            ".5",
            "@x",
            "host all all 0.0.0.0/0 md5",
            "trailing ",
        ] {
            let text = to_yaml_string(&Value::String(s.into()));
            assert!(text.starts_with('"'), "{s:?} written as {text}");
            assert_eq!(
                serde_yaml::from_str::<Value>(&text).unwrap(),
                Value::String(s.into())
            );
        }
        for s in [
            "main",
            "/var/lib/postgresql/15/main",
            "scram-sha-256",
            "INFO",
            "pg_1.x",
        ] {
            assert_eq!(to_yaml_string(&Value::String(s.into())), format!("{s}\n"));
        }
    }

    #[test]
    fn strings_with_quotes_and_newlines_round_trip() {
        for s in [
            "it's",
            "say \"hi\"",
            "a\nb",
            "tab\there",
            "back\\slash",
            "é",
        ] {
            let text = to_yaml_string(&Value::String(s.into()));
            assert_eq!(
                serde_yaml::from_str::<Value>(&text).unwrap(),
                Value::String(s.into())
            );
        }
    }

    #[test]
    fn nested_blocks_have_the_usual_layout() {
        let doc = y("a: 1\nb:\n  c: [x, {d: 2, e: [3]}]\n  f: {}\n  g: []\nh: 1.5\ni: 2.0\nj: true\nk: null\n");
        let text = to_yaml_string(&doc);
        assert_eq!(
            text,
            "a: 1\nb:\n  c:\n  - x\n  - d: 2\n    e:\n    - 3\n  f: {}\n  g: []\nh: 1.5\ni: 2.0\nj: true\nk: null\n"
        );
        assert_eq!(serde_yaml::from_str::<Value>(&text).unwrap(), doc);
    }

    #[test]
    fn multi_line_strings_become_literal_blocks() {
        let doc = y("a: \"line 1\\n  line 2\\n\\nline 4\\n\"\nb: \"x\\ny\"\nc: \" lead\\n\"\n");
        let text = to_yaml_string(&doc);
        assert!(
            text.starts_with("a: |\n  line 1\n    line 2\n\n  line 4\nb: |-\n  x\n  y\nc: \""),
            "{text}"
        );
        assert_eq!(serde_yaml::from_str::<Value>(&text).unwrap(), doc);
    }

    #[test]
    fn sequences_of_sequences_round_trip() {
        let doc = y("- [1, 2]\n- - a\n  - {b: c}\n");
        assert_eq!(
            serde_yaml::from_str::<Value>(&to_yaml_string(&doc)).unwrap(),
            doc
        );
    }

    #[test]
    fn characters_yaml_forbids_or_reads_otherwise_are_escaped() {
        let odd = "pw\u{7f}x\u{85}\u{feff}\u{2028}\u{9f}\u{fffe}\u{1b}\"\\é😀";
        let mut m = serde_yaml::Mapping::new();
        m.insert(Value::from("password"), Value::from(odd));
        m.insert(Value::from("block"), Value::from("a\u{2028}b\nc\n"));
        let text = to_yaml_string(&Value::Mapping(m.clone()));
        assert!(
            text.chars().all(|c| c == '\n' || yaml_printable(c)),
            "{text:?}"
        );
        assert!(!text.contains('\u{2028}'), "{text:?}");
        let back: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back, Value::Mapping(m));
    }
}
