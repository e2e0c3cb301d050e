//! A module reads its arguments from stdin when its argument is `-`, as
//! the collection's action plugin runs a build the host keeps.

use std::io::Write;
use std::process::{Command, Stdio};

fn run(module: &str, stdin: &str) -> serde_json::Value {
    let mut child = Command::new(module)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn arguments_from_stdin_are_validated_as_from_a_file() {
    let v = run(
        env!("CARGO_BIN_EXE_instance"),
        r#"{"name": "main", "colour": "blue", "surole_password": "stdin-secret"}"#,
    );
    assert_eq!(v["failed"], true, "{v}");
    let msg = v["msg"].as_str().unwrap();
    assert!(msg.contains("unsupported option colour"), "{msg}");
    assert!(!v.to_string().contains("stdin-secret"), "{v}");
    let v = run(env!("CARGO_BIN_EXE_patroni"), "not json");
    assert!(
        v["msg"]
            .as_str()
            .unwrap()
            .contains("(stdin) is not valid JSON"),
        "{v}"
    );
}
