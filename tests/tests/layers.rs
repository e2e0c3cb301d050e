//! The layers of a node's Patroni configuration, proven on a running node:
//! the site's `patroni.overrides` over what pgherd generates, the task's
//! `conf_settings` over them (`null` deletes a key), and
//! `dynamic_conf_settings` into the DCS when the cluster bootstraps.

use pgherd_e2e::{
    local_instance_args, local_nodes_test, local_settings, psql, run_module, with_options, Etcd,
};
use serde_json::{json, Value};

#[test]
fn configuration_layers_and_null_deletes_take_effect_on_a_running_node() {
    let (dir, root, _reaper) = local_nodes_test("layers", &["127.0.0.12"]);
    let etcd = Etcd::start(&dir.path, 25_879, 25_880);
    let node = root.join("layered");
    let mut settings = local_settings(&node, std::slice::from_ref(&etcd.client_addr));
    settings["patroni"]["overrides"] =
        json!({"postgresql": {"parameters": {"work_mem": "5MB", "temp_buffers": "16MB"}}});
    let task = |extra: Value| with_options(local_instance_args(2, "layers", &settings), extra);
    let socket = node.join("run");
    let show = |parameter: &str| psql(&socket, &format!("show {parameter}")).unwrap();

    // Bootstrap with every layer: the task's value over the site's, the
    // site's temp_buffers deleted by the task, a dynamic parameter.
    let first = run_module(
        &dir.path,
        "instance",
        &task(json!({
            "conf_settings": {"postgresql": {"parameters": {"work_mem": "6MB", "temp_buffers": null}}},
            "dynamic_conf_settings": {"postgresql": {"parameters": {"maintenance_work_mem": "70MB"}}},
        })),
    );
    assert!(!first.failed(), "{first:?}");
    assert_eq!(show("work_mem"), "6MB");
    assert_eq!(show("temp_buffers"), "8MB", "PostgreSQL's default");
    assert_eq!(show("maintenance_work_mem"), "70MB");
    let dcs = etcd
        .etcdctl(
            None,
            &["get", "/service/layers/config", "--print-value-only"],
        )
        .unwrap();
    let dcs: Value = serde_json::from_str(dcs.trim()).unwrap_or(Value::Null);
    assert_eq!(
        dcs["postgresql"]["parameters"]["maintenance_work_mem"], "70MB",
        "{dcs}"
    );

    // On the running node, without the task's layer: the site's values,
    // through a reload.
    let plain = run_module(&dir.path, "instance", &task(json!({})));
    assert!(!plain.failed(), "{plain:?}");
    assert!(
        plain.result["changes"]
            .to_string()
            .contains("reload Patroni"),
        "{plain:?}"
    );
    assert_eq!(show("work_mem"), "5MB");
    assert_eq!(show("temp_buffers"), "16MB");

    // The task deletes the site's work_mem: PostgreSQL's default again.
    let deleted =
        task(json!({"conf_settings": {"postgresql": {"parameters": {"work_mem": null}}}}));
    let run = run_module(&dir.path, "instance", &deleted);
    assert!(!run.failed() && run.result["changed"] == true, "{run:?}");
    assert_eq!(show("work_mem"), "4MB");
    assert_eq!(show("temp_buffers"), "16MB");
    let again = run_module(&dir.path, "instance", &deleted);
    assert_eq!(again.result["changed"], false, "{again:?}");
}
