//! Runs of the `instance` module that are killed halfway, or that overlap:
//! the next run converges, and overlapping runs take turns.

use std::time::Duration;

use pgherd_e2e::{
    finish_module, local_instance_args, local_nodes_test, local_settings, pids_mentioning, psql,
    run_module, signal, snapshot, spawn_module, wait_for, with_options, write_args_file, Etcd,
};
use serde_json::json;

/// Files under `dir` whose name says they are a write in progress.
fn temp_files(dir: &std::path::Path) -> Vec<String> {
    snapshot(dir)
        .into_iter()
        .map(|(p, ..)| p)
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".tmp") && n.contains(".pgherd-"))
        })
        .map(|p| p.display().to_string())
        .collect()
}

/// The pid holding a flock on `path`.
fn flock_holder(path: &std::path::Path) -> Option<i32> {
    use std::os::unix::fs::MetadataExt;
    pgherd_core::lock::flock_holder(std::fs::metadata(path).ok()?.ino())
}

#[test]
fn an_interrupted_create_converges_and_overlapping_runs_take_turns() {
    let (dir, root, _reaper) = local_nodes_test("interrupt", &["127.0.0.11", "127.0.0.12"]);
    let etcd = Etcd::start(&dir.path, 24_979, 24_980);
    let hosts = vec![etcd.client_addr.clone()];
    let args_of = |n: u8| {
        local_instance_args(
            n,
            "interrupt",
            &local_settings(&root.join(format!("pg{n}")), &hosts),
        )
    };

    // Started by a caller holding a pipe without close-on-exec (shells and
    // Ansible's workers do): once the module exits, the caller sees the end
    // of the pipe, which the Patroni it started must not keep open.
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let pg1 = finish_module(spawn_module(
        "instance",
        &write_args_file(&dir.path, "pg1", &args_of(1)),
    ));
    assert!(!pg1.failed() && pg1.code == Some(0), "{pg1:?}");
    // SAFETY: closing our write end and reading from our read end, both
    // owned here; O_NONBLOCK makes a still-open pipe show as EAGAIN.
    let read = unsafe {
        libc::close(fds[1]);
        libc::fcntl(fds[0], libc::F_SETFL, libc::O_NONBLOCK);
        let mut byte = 0u8;
        let n = libc::read(fds[0], (&mut byte as *mut u8).cast(), 1);
        libc::close(fds[0]);
        n
    };
    assert_eq!(
        read, 0,
        "a process started by the module keeps its caller's pipe open"
    );

    // Kill the module creating pg2 as soon as its configuration is on disk:
    // Patroni may or may not have been started, the clone has not finished.
    let config = root.join("pg2/etc/15-main.yaml");
    let file = write_args_file(&dir.path, "pg2", &args_of(2));
    let mut child = spawn_module("instance", &file);
    wait_for(
        "pg2's configuration to be written",
        Duration::from_secs(30),
        || config.exists().then_some(()),
        || format!("nothing at {}", config.display()),
    );
    child.kill().expect("kill the module");
    let status = child.wait().expect("reap the module");
    assert!(!status.success(), "the module ended before it was killed");
    // The configuration is whole (atomic write), not a prefix of it.
    let text = std::fs::read_to_string(&config).unwrap();
    let parsed: serde_yaml::Value = serde_yaml::from_str(&text).expect("the config parses");
    assert_eq!(parsed["name"].as_str(), Some("pg2"), "{text}");
    assert!(text.contains("bootstrap:"), "{text}");

    // A run killed while writing the pid file leaves its temporary file
    // (as one of a process long gone): the next run removes it too.
    let pid_temp = root.join("pg2/run/.patroni-15-main.pid.pgherd-4194999.tmp");
    std::fs::write(&pid_temp, b"4194999\n").unwrap();
    let again = run_module(&dir.path, "instance", &args_of(2));
    assert!(!pid_temp.exists(), "{again:?}");
    assert!(!again.failed(), "{again:?}");
    let facts = &again.result["instance"];
    assert_eq!(facts["role"], json!("replica"), "{facts}");
    assert_eq!(facts["replication_state"], json!("streaming"), "{facts}");
    // And the leader says so too: pg2 is among its streaming walsenders.
    let senders = psql(
        &root.join("pg1/run"),
        "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'",
    )
    .unwrap();
    assert!(senders.lines().any(|l| l == "pg2"), "{senders:?}");
    let third = run_module(&dir.path, "instance", &args_of(2));
    assert!(
        !third.failed() && !third.changed(),
        "not converged: {third:?}"
    );
    assert!(temp_files(&root).is_empty(), "{:?}", temp_files(&root));

    // A Patroni running without its pid file (a run killed between the
    // start and the pid file) is found, not started a second time.
    let config_arg = config.display().to_string();
    let patronis = |cfg: &str| {
        pids_mentioning(cfg)
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("patroni"))
            })
            .count()
    };
    assert_eq!(patronis(&config_arg), 1);
    // (When the kill above came between Patroni's start and its pid file,
    // there is none already.)
    match std::fs::remove_file(root.join("pg2/run/patroni-15-main.pid")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{e}"),
        _ => {}
    }
    let orphan = run_module(&dir.path, "instance", &args_of(2));
    assert!(!orphan.failed() && !orphan.changed(), "{orphan:?}");
    assert_eq!(patronis(&config_arg), 1, "a second Patroni was started");

    // Overlapping runs on one instance: the first holds the lock while it
    // restarts; one with a short deadline gives up naming it; one with a
    // longer deadline waits its turn and then finds nothing to do.
    let lock = root.join("pg2/run/patroni-15-main.lock");
    let restart = write_args_file(
        &dir.path,
        "restart",
        &with_options(args_of(2), json!({"state": "restarted"})),
    );
    let first = spawn_module("instance", &restart);
    let first_pid = first.id();
    wait_for(
        "the restarting run to hold the lock",
        Duration::from_secs(10),
        || flock_holder(&lock).filter(|p| *p == first_pid as i32),
        || std::fs::read_to_string("/proc/locks").unwrap_or_default(),
    );
    // Held still while it holds the lock, so that the others surely meet it.
    signal(first_pid as i32, libc::SIGSTOP);
    let patient = spawn_module(
        "instance",
        &write_args_file(&dir.path, "patient", &args_of(2)),
    );
    let hasty = run_module(
        &dir.path,
        "instance",
        &with_options(args_of(2), json!({"wait_timeout": 1})),
    );
    assert!(hasty.failed() && hasty.code == Some(1), "{hasty:?}");
    let msg = hasty.msg();
    assert!(
        msg.contains("is being changed by another pgherd run")
            && msg.contains(&format!("pid {first_pid}")),
        "{msg}"
    );
    signal(first_pid as i32, libc::SIGCONT);
    let first = finish_module(first);
    assert!(!first.failed() && first.changed(), "{first:?}");
    let patient = finish_module(patient);
    assert!(!patient.failed() && !patient.changed(), "{patient:?}");

    for n in [2, 1] {
        let gone = run_module(
            &dir.path,
            "instance",
            &with_options(args_of(n), json!({"state": "absent"})),
        );
        assert!(!gone.failed(), "{gone:?}");
    }
    assert!(!lock.exists(), "the lock file outlived the instance");
    assert!(pids_mentioning(&root.display().to_string()).is_empty());
}
