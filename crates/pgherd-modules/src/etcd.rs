//! `pgherd.cluster.etcd`: etcd's own state, as a deployment of Patroni
//! clusters needs it: authentication, roles limited to a cluster's prefix,
//! users, and the membership.

use std::collections::BTreeSet;
use std::time::Duration;

use pgherd_ansible::{Failure, Kind, OptionSpec, Outcome, Spec, Task};
use pgherd_core::etcd_admin::{self, Access, MemberWanted, Perm, Range, RoleWanted, UserWanted};
use pgherd_core::manifest::Login;
use pgherd_core::names::parse_host_port;
use pgherd_core::settings::Protocol;
use serde_json::{json, Map, Value};

use crate::{changes_outcome, load_settings, settings_option};

fn permission_spec() -> Spec {
    Spec::new(vec![
        OptionSpec::new("key", Kind::Str)
            .required()
            .doc("The key, or the prefix of the keys, the permission covers."),
        OptionSpec::new("prefix", Kind::Bool)
            .default(true)
            .doc("Every key that starts with I(key) (C(true)), or I(key) alone."),
        OptionSpec::new("access", Kind::Str)
            .default("readwrite")
            .choices(["read", "write", "readwrite"])
            .doc("What the permission allows."),
    ])
}

fn state_option(what: &'static str) -> OptionSpec {
    OptionSpec::new("state", Kind::Str)
        .default("present")
        .choices(["present", "absent"])
        .doc(what)
}

/// The argument spec of the `etcd` module.
pub fn spec() -> Spec {
    let role = Spec::new(vec![
        OptionSpec::new("name", Kind::Str)
            .required()
            .doc("The role."),
        OptionSpec::new("permissions", Kind::List)
            .elements(Kind::Dict)
            .suboptions(permission_spec())
            .doc("Its permissions, exactly: those not listed are revoked."),
        state_option("C(absent) deletes the role."),
    ]);
    let user = Spec::new(vec![
        OptionSpec::new("name", Kind::Str)
            .required()
            .doc("The user."),
        OptionSpec::new("password", Kind::Str).no_log().doc(
            "Its password. Checked by logging in as the user while authentication is on, and \
             changed when it differs; while authentication is off, set when the user is \
             created. Without it, a new user has no password (it logs in with a client \
             certificate whose common name is the user's name).",
        ),
        OptionSpec::new("roles", Kind::List)
            .elements(Kind::Str)
            .doc("Its roles, exactly: those not listed are revoked. Not given: left as they are."),
        state_option("C(absent) deletes the user."),
    ]);
    let member = Spec::new(vec![
        OptionSpec::new("name", Kind::Str)
            .required()
            .doc("The member's name (etcd's C(--name))."),
        OptionSpec::new("peer_urls", Kind::List)
            .elements(Kind::Str)
            .required()
            .doc("Its peer URLs (C(--initial-advertise-peer-urls))."),
    ]);
    Spec::new(vec![
        settings_option(),
        OptionSpec::new("hosts", Kind::List).elements(Kind::Str).doc(
            "C(host:port) of etcd's client URLs. Defaults to the settings' C(patroni.etcd.hosts).",
        ),
        OptionSpec::new("protocol", Kind::Str)
            .choices(["http", "https"])
            .doc("Defaults to the settings' C(patroni.etcd.protocol)."),
        OptionSpec::new("cacert", Kind::Path)
            .doc("CA of etcd's server certificates. Defaults to the settings' C(patroni.etcd.cacert)."),
        OptionSpec::new("cert", Kind::Path).doc(
            "Client certificate, when etcd checks them. Defaults to the settings' C(patroni.etcd.cert).",
        ),
        OptionSpec::new("key", Kind::Path)
            .doc("Its key. Defaults to the settings' C(patroni.etcd.key)."),
        OptionSpec::new("login_user", Kind::Str)
            .default("root")
            .doc("The user the task logs in as while authentication is on."),
        OptionSpec::new("login_password", Kind::Str).no_log().doc(
            "Its password. With I(login_user) C(root), also the password root is created with \
             when I(auth) turns authentication on and root does not exist.",
        ),
        OptionSpec::new("auth", Kind::Bool).doc(
            "Authentication on (C(true)) or off. Not given: left as it is. Turned on after the \
             roles and users are made, so that root exists.",
        ),
        OptionSpec::new("roles", Kind::List)
            .elements(Kind::Dict)
            .suboptions(role)
            .doc("Roles to make as listed (or delete); roles not listed are left alone."),
        OptionSpec::new("users", Kind::List)
            .elements(Kind::Dict)
            .suboptions(user)
            .doc("Users to make as listed (or delete); users not listed are left alone."),
        OptionSpec::new("members", Kind::List)
            .elements(Kind::Dict)
            .suboptions(member)
            .doc(
                "The whole membership: members not listed are removed, one listed and missing \
                 is added. Refused when a change would leave fewer healthy members than a \
                 quorum, and when more than one member is missing (etcd members join one at a \
                 time: add one, start it, then the next).",
            ),
        OptionSpec::new("wait_timeout", Kind::Int)
            .default(30)
            .doc("Seconds etcd has to answer each call."),
    ])
}

/// The options of an `etcd` task, once validated against [`spec`].
#[cfg_attr(test, derive(serde::Serialize))]
pub struct EtcdOptions {
    pub settings: Value,
    pub hosts: Option<Vec<String>>,
    pub protocol: Option<String>,
    pub cacert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub login_user: String,
    pub login_password: Option<String>,
    pub auth: Option<bool>,
    pub roles: Option<Vec<Value>>,
    pub users: Option<Vec<Value>>,
    pub members: Option<Vec<Value>>,
    pub wait_timeout: i64,
}

impl EtcdOptions {
    /// The typed options from validated parameters; an option this struct
    /// does not know is refused, never dropped.
    pub fn from_params(p: &Map<String, Value>) -> Result<Self, String> {
        let p = crate::Params::of(&spec(), p)?;
        Ok(EtcdOptions {
            settings: p.raw("settings"),
            hosts: p.strings("hosts"),
            protocol: p.text("protocol"),
            cacert: p.text("cacert"),
            cert: p.text("cert"),
            key: p.text("key"),
            login_user: p.text("login_user").unwrap_or_else(|| "root".into()),
            login_password: p.text("login_password"),
            auth: p.flag("auth"),
            roles: p.list("roles"),
            users: p.list("users"),
            members: p.list("members"),
            wait_timeout: p.int("wait_timeout").unwrap_or(30),
        })
    }
}

fn present(item: &Value) -> bool {
    item["state"].as_str() != Some("absent")
}

fn strings(v: &Value) -> Option<BTreeSet<String>> {
    v.as_array().map(|a| {
        a.iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    })
}

/// The task's wishes, typed; what types alone cannot say is refused here.
pub fn wanted(o: &EtcdOptions) -> Result<etcd_admin::Wanted, Failure> {
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    let roles = o
        .roles
        .iter()
        .flatten()
        .map(|r| {
            let name = r["name"].as_str().unwrap_or_default().to_string();
            if !names.insert(("role", name.clone())) {
                problems.push(format!("roles: {name} is listed twice"));
            }
            let permissions = r["permissions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| Perm {
                    key: p["key"].as_str().unwrap_or_default().to_string(),
                    range: if p["prefix"].as_bool().unwrap_or(true) {
                        Range::Prefix
                    } else {
                        Range::Key
                    },
                    access: p["access"]
                        .as_str()
                        .and_then(Access::parse)
                        .unwrap_or(Access::ReadWrite),
                })
                .collect();
            RoleWanted {
                name,
                permissions,
                present: present(r),
            }
        })
        .collect();
    let users = o
        .users
        .iter()
        .flatten()
        .map(|u| {
            let name = u["name"].as_str().unwrap_or_default().to_string();
            if !names.insert(("user", name.clone())) {
                problems.push(format!("users: {name} is listed twice"));
            }
            UserWanted {
                name,
                password: u["password"].as_str().map(str::to_string),
                roles: strings(&u["roles"]),
                present: present(u),
            }
        })
        .collect();
    let members = o.members.as_ref().map(|list| {
        list.iter()
            .map(|m| {
                let name = m["name"].as_str().unwrap_or_default().to_string();
                if !names.insert(("member", name.clone())) {
                    problems.push(format!("members: {name} is listed twice"));
                }
                let peer_urls = strings(&m["peer_urls"]).unwrap_or_default();
                for url in &peer_urls {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        problems.push(format!(
                            "members: {name}: peer URL {url:?} must start with http:// or https://"
                        ));
                    }
                }
                if peer_urls.is_empty() {
                    problems.push(format!("members: {name} has no peer URL"));
                }
                MemberWanted { name, peer_urls }
            })
            .collect()
    });
    if !problems.is_empty() {
        return Err(Failure::new(problems.join("; ")));
    }
    Ok(etcd_admin::Wanted {
        auth: o.auth,
        roles,
        users,
        members,
        login: o.login_password.as_ref().map(|password| Login {
            username: o.login_user.clone(),
            password: password.clone(),
        }),
    })
}

/// Runs one `etcd` task.
pub fn run_task(task: &Task) -> Result<Outcome, Failure> {
    let o = EtcdOptions::from_params(&task.params).map_err(Failure::new)?;
    let timeout = match o.wait_timeout {
        t if t > 0 => Duration::from_secs(t as u64),
        _ => {
            return Err(Failure::new(
                "option 'wait_timeout' must be a positive number of seconds",
            ))
        }
    };
    let wanted = wanted(&o)?;
    let mut etcd = load_settings(&o.settings)?.patroni.etcd;
    if let Some(hosts) = &o.hosts {
        for h in hosts {
            parse_host_port(h).map_err(|e| Failure::new(format!("option 'hosts': {e}")))?;
        }
        etcd.hosts = hosts.clone();
    }
    if let Some(p) = &o.protocol {
        etcd.protocol = if p == "https" {
            Protocol::Https
        } else {
            Protocol::Http
        };
    }
    for (name, given, field) in [
        ("cacert", &o.cacert, &mut etcd.cacert),
        ("cert", &o.cert, &mut etcd.cert),
        ("key", &o.key, &mut etcd.key),
    ] {
        if let Some(path) = given {
            if !std::path::Path::new(path).exists() {
                return Err(Failure::new(format!(
                    "option '{name}': {path} does not exist"
                )));
            }
            *field = Some(path.into());
        }
    }
    let report =
        etcd_admin::apply(&etcd, &wanted, task.check_mode, timeout).map_err(crate::failure)?;
    let diff = if report.before == report.after {
        vec![]
    } else {
        vec![json!({
            "before": pgherd_core::yaml::to_yaml_string(&pgherd_core::merge::json_to_yaml(&report.before)),
            "after": pgherd_core::yaml::to_yaml_string(&pgherd_core::merge::json_to_yaml(&report.after)),
            "before_header": "etcd",
            "after_header": "etcd",
        })]
    };
    Ok(changes_outcome(
        "etcd",
        report.changes,
        diff,
        report.warnings,
        "etcd",
        report.facts,
    ))
}

/// The documentation of the `etcd` module, beside its spec.
pub fn docs() -> pgherd_ansible::docs::ModuleDoc {
    use pgherd_ansible::docs::{ModuleDoc, ReturnDoc};
    ModuleDoc {
        module: "pgherd.cluster.etcd",
        short_description: "etcd's authentication, roles, users and members",
        description: vec![
            "Makes etcd's roles and users as listed (a role per Patroni cluster, limited to the cluster's prefix, is the usual shape), turns authentication on or off, and changes the membership one member at a time.",
            "Everything that would be refused (a membership change that loses quorum, a role that does not exist, authentication without root) is refused before the first change.",
            "Runs where etcd's client URLs are reachable: on a member, or on the controller.",
        ],
        version_added: "0.1.0",
        notes: vec![
            "A Patroni cluster C(main) under the namespace C(/service/) needs C(readwrite) on the prefix C(/service/main/).",
            "Passwords are never shown: a changed one is listed in I(changes), not in the diff.",
            "A member added is not started by this module: start etcd on its host with C(initial-cluster-state: existing) and the returned I(etcd.initial_cluster), then run the task again to add the next.",
            "The site settings (option I(settings)) are described in the collection's C(docs/settings.md).",
        ],
        requirements: vec!["etcd 3.4 or later (v3 API), reachable from the host the task runs on."],
        seealso: vec![
            json!({"module": "pgherd.cluster.instance"}),
            json!({"name": "etcd's role-based access control", "link": "https://etcd.io/docs/v3.5/op-guide/authentication/rbac/",
                   "description": "Users, roles and permissions as etcd has them."}),
            json!({"name": "etcd's runtime reconfiguration", "link": "https://etcd.io/docs/v3.5/op-guide/runtime-configuration/",
                   "description": "Adding and removing members."}),
        ],
        examples: EXAMPLES,
        returns: vec![
            ReturnDoc::new("changes", "list", "What the task changed, or would change in check mode.")
                .always()
                .elements("str")
                .sample(json!(["add role patroni-main", "grant readwrite /service/main/* to role patroni-main", "enable authentication"])),
            ReturnDoc::new("etcd", "dict", "etcd after the task (before it, in check mode).")
                .always()
                .sample(json!({"authentication": "enabled"}))
                .contains(vec![
                ReturnDoc::new("authentication", "str", "C(enabled) or C(disabled).").sample(json!("enabled")),
                ReturnDoc::new("roles", "dict", "Each role's permissions.").sample(json!({"patroni-main": ["readwrite /service/main/*"], "root": []})),
                ReturnDoc::new("users", "dict", "Each user's roles.").sample(json!({"patroni-main": ["patroni-main"], "root": ["root"]})),
                ReturnDoc::new("members", "list", "Members: id (hexadecimal), name (empty while not started), peer_urls, client_urls, learner, healthy.")
                    .elements("dict")
                    .sample(json!([{"id": "8e9e05c52164694d", "name": "etcd1", "peer_urls": ["https://10.0.0.1:2380"],
                                    "client_urls": ["https://10.0.0.1:2379"], "learner": false, "healthy": true}])),
                ReturnDoc::new("initial_cluster", "str", "C(name=peer_url,...) of every member, for etcd's C(--initial-cluster) on a member that joins.")
                    .sample(json!("etcd1=https://10.0.0.1:2380,etcd2=https://10.0.0.2:2380")),
            ]),
        ],
    }
}

const EXAMPLES: &str = "\
- name: A role and a user for the Patroni cluster main, then authentication on
  pgherd.cluster.etcd:
    # etcd's endpoints and TLS files: the settings' patroni.etcd, or the
    # options hosts, protocol, cacert, cert and key.
    login_password: \"{{ etcd_root_password }}\"
    auth: true
    roles:
      - name: patroni-main
        permissions:
          - key: /service/main/
    users:
      - name: patroni-main
        password: \"{{ patroni_etcd_password }}\"
        roles: [patroni-main]

- name: The membership (a list of name and peer_urls); one missing member is added
  pgherd.cluster.etcd:
    login_password: \"{{ etcd_root_password }}\"
    members: \"{{ etcd_members }}\"
  register: etcd

- name: Read etcd
  pgherd.cluster.etcd:
    login_password: \"{{ etcd_root_password }}\"
  register: etcd
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{keys_of, sample_params};

    #[test]
    fn the_options_struct_has_exactly_the_specs_options() {
        let params = sample_params(&spec());
        let parsed = EtcdOptions::from_params(&params).expect("every spec option");
        let fields = keys_of(&parsed);
        let options: BTreeSet<String> = spec().options.iter().map(|o| o.name.to_string()).collect();
        assert_eq!(fields, options);
    }

    fn options(extra: Value) -> EtcdOptions {
        let mut params = Map::new();
        for (k, v) in extra.as_object().unwrap() {
            params.insert(k.clone(), v.clone());
        }
        EtcdOptions::from_params(&params).unwrap()
    }

    #[test]
    fn lists_become_wishes_and_what_types_cannot_say_is_refused() {
        let w = wanted(&options(json!({
            "login_password": "pw",
            "roles": [{"name": "r", "permissions": [{"key": "/service/main/", "prefix": true, "access": "read"}]}],
            "users": [{"name": "u", "password": "p", "roles": ["r"]}, {"name": "old", "state": "absent"}],
            "members": [{"name": "e1", "peer_urls": ["https://10.0.0.1:2380"]}],
        })))
        .unwrap();
        assert_eq!(w.login.unwrap().username, "root");
        assert_eq!(
            w.roles[0].permissions.iter().next().unwrap().describe(),
            "read /service/main/*"
        );
        assert!(w.users[0].present && !w.users[1].present);
        assert_eq!(w.users[1].roles, None, "roles not given are left alone");
        assert_eq!(w.members.unwrap()[0].peer_urls.len(), 1);

        let refused = wanted(&options(json!({
            "users": [{"name": "u"}, {"name": "u"}],
            "members": [{"name": "e1", "peer_urls": ["10.0.0.1:2380"]}],
        })))
        .err()
        .unwrap();
        assert_eq!(
            refused.msg,
            "users: u is listed twice; members: e1: peer URL \"10.0.0.1:2380\" must start with \
             http:// or https://"
        );
    }
}
