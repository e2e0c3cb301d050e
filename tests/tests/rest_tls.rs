//! TLS on a running node. `patroni.restapi.verify_client: optional`: reads
//! need no client certificate, unsafe requests do, and both modules (which
//! present the ctl certificate) work. A certificate replaced at the same
//! path: the next run reloads, and PostgreSQL and the REST API present it.

use pgherd_e2e::pki::{serial, served_serial, Pki};
use pgherd_e2e::{
    curl_status, local_instance_args, local_nodes_test, local_settings, run_module, Etcd,
};
use serde_json::json;

#[test]
fn optional_client_certificates_guard_only_unsafe_requests() {
    let (dir, root, _reaper) = local_nodes_test("tls-optional", &["127.0.0.13"]);
    let pki = Pki::create(&dir.join("pki"));
    let etcd = Etcd::start(&dir.path, 25_979, 25_980);
    let node = root.join("opt3");
    let mut settings = local_settings(&node, std::slice::from_ref(&etcd.client_addr));
    settings["patroni"]["restapi"] = json!({
        "certfile": pki.server_cert, "keyfile": pki.server_key, "cafile": pki.ca,
        "verify_client": "optional",
    });
    settings["patroni"]["ctl"] =
        json!({"certfile": pki.client_cert, "keyfile": pki.client_key, "cacert": pki.ca});
    let deployed = run_module(
        &dir.path,
        "instance",
        &local_instance_args(3, "optional", &settings),
    );
    assert!(!deployed.failed(), "{deployed:?}");

    let ca = pki.ca.display().to_string();
    let (cert, key) = (
        pki.client_cert.display().to_string(),
        pki.client_key.display().to_string(),
    );
    let anonymous = ["--cacert", ca.as_str()];
    let with_cert = [
        "--cacert",
        ca.as_str(),
        "--cert",
        cert.as_str(),
        "--key",
        key.as_str(),
    ];
    let api = "https://127.0.0.13:8008";
    assert_eq!(
        curl_status("GET", &format!("{api}/patroni"), &anonymous),
        Some(200)
    );
    let reload = format!("{api}/reload");
    assert_eq!(
        curl_status("POST", &reload, &anonymous),
        Some(403),
        "an unsafe request without a client certificate"
    );
    assert_eq!(curl_status("POST", &reload, &with_cert), Some(202));

    // The patroni module: a read, and an unsafe change (PATCH /config).
    let task = |extra: serde_json::Value| {
        let mut args = json!({"cluster": "optional", "settings": settings});
        for (k, v) in extra.as_object().unwrap() {
            args[k] = v.clone();
        }
        run_module(&dir.path, "patroni", &args)
    };
    let info = task(json!({"state": "info"}));
    assert!(!info.failed(), "{info:?}");
    assert_eq!(info.result["cluster"]["leader"], "pg3", "{info:?}");
    let patched =
        task(json!({"dynamic_config": {"postgresql": {"parameters": {"work_mem": "9MB"}}}}));
    assert!(
        !patched.failed() && patched.result["changed"] == true,
        "{patched:?}"
    );
}

#[test]
fn a_certificate_replaced_at_the_same_path_is_picked_up_by_a_reload() {
    let (dir, root, _reaper) = local_nodes_test("tls-rotation", &["127.0.0.11"]);
    let pki = Pki::create(&dir.join("pki"));
    let etcd = Etcd::start(&dir.path, 26_079, 26_080);
    let node = root.join("rot1");
    let mut settings = local_settings(&node, std::slice::from_ref(&etcd.client_addr));
    settings["patroni"]["restapi"] =
        json!({"certfile": pki.server_cert, "keyfile": pki.server_key});
    settings["patroni"]["ctl"] = json!({"cacert": pki.ca});
    let task = pgherd_e2e::with_options(
        local_instance_args(1, "rotation", &settings),
        json!({"parameters": {"ssl": "on", "ssl_cert_file": pki.server_cert,
                              "ssl_key_file": pki.server_key}}),
    );
    let deployed = run_module(&dir.path, "instance", &task);
    assert!(!deployed.failed(), "{deployed:?}");
    let (api, pg) = ("127.0.0.11:8008", "127.0.0.11:5432");
    let old = serial(&pki.server_cert);
    assert_eq!(served_serial(api, false), old);
    assert_eq!(served_serial(pg, true), old);

    // A new certificate and key at the same paths: the next run sees it,
    // reloads, and both servers present it.
    let new = pki.rotate_server();
    assert_ne!(new, old);
    let rotated = run_module(&dir.path, "instance", &task);
    assert!(!rotated.failed(), "{rotated:?}");
    let changes = rotated.result["changes"].to_string();
    assert!(changes.contains("reload Patroni"), "{changes}");
    assert_eq!(served_serial(pg, true), new, "PostgreSQL's certificate");
    pgherd_e2e::wait_for(
        "the REST API to present the new certificate",
        std::time::Duration::from_secs(30),
        || Some(()).filter(|_| served_serial(api, false) == new),
        || served_serial(api, false),
    );
    let again = run_module(&dir.path, "instance", &task);
    assert_eq!(again.result["changed"], false, "{again:?}");
}
