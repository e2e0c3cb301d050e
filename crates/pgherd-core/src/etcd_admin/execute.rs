//! Carrying a plan out on etcd, step by step, and reading the result back
//! (with a login once authentication is on) so the facts returned are what
//! etcd now has.

use std::time::Duration;

use serde_json::{json, Value};

use super::observe::{connect, observe};
use super::plan::{plan, Step};
use super::*;
use crate::dcs::Dcs;
use crate::error::{Error, Result};
use crate::settings::EtcdSettings;

/// What a task did (or, in check mode, would do).
#[derive(Debug)]
pub struct Report {
    pub changes: Vec<String>,
    /// etcd's state before and after, for a diff (no password in it).
    pub before: Value,
    pub after: Value,
    /// etcd's state at the end (in check mode: as it is).
    pub facts: Value,
    pub warnings: Vec<String>,
}

/// Brings etcd to `wanted`: refused as a whole before the first change
/// when any step would be refused.
pub fn apply(
    etcd: &EtcdSettings,
    wanted: &Wanted,
    check_mode: bool,
    timeout: Duration,
) -> Result<Report> {
    let (dcs, auth) = connect(etcd, wanted.login.as_ref(), timeout)?;
    let seen = observe(&dcs, etcd, auth, wanted)?;
    let steps = plan(&seen, wanted).map_err(Error::Preflight)?;
    let predicted = predict(&seen, &steps);
    let mut warnings = waiting_members(&seen);
    let changes: Vec<String> = steps.iter().map(Step::describe).collect();
    if check_mode || steps.is_empty() {
        return Ok(Report {
            changes,
            before: summary(&seen),
            after: summary(&predicted),
            facts: facts(&seen, wanted),
            warnings,
        });
    }
    let mut done = Vec::new();
    for step in &steps {
        if let Err(e) = run(&dcs, step) {
            return Err(if done.is_empty() {
                e
            } else {
                Error::AfterChanges {
                    done,
                    source: Box::new(e),
                }
            });
        }
        done.push(step.describe());
    }
    // Read back as the next task will: logged in once authentication is on.
    let after = connect(etcd, wanted.login.as_ref(), timeout)
        .and_then(|(dcs, auth)| observe(&dcs, etcd, auth, &Wanted::default()))
        .map_err(|e| Error::AfterChanges {
            done: done.clone(),
            source: Box::new(e),
        })?;
    warnings = waiting_members(&after);
    Ok(Report {
        changes,
        before: summary(&seen),
        after: summary(&after),
        facts: facts(&after, wanted),
        warnings,
    })
}

fn run(dcs: &Dcs, step: &Step) -> Result<()> {
    let what = step.describe();
    let auth = || dcs.client().auth_client();
    match step.clone() {
        Step::DisableAuth => dcs
            .call(&what, || {
                let mut c = auth();
                async move { c.auth_disable().await }
            })
            .map(drop),
        Step::EnableAuth => dcs
            .call(&what, || {
                let mut c = auth();
                async move { c.auth_enable().await }
            })
            .map(drop),
        Step::AddRole(name) => dcs
            .call(&what, || {
                let (mut c, name) = (auth(), name.clone());
                async move { c.role_add(name).await }
            })
            .map(drop),
        Step::DeleteRole(name) => dcs
            .call(&what, || {
                let (mut c, name) = (auth(), name.clone());
                async move { c.role_delete(name).await }
            })
            .map(drop),
        Step::Grant(role, perm) => dcs
            .call(&what, || {
                let (mut c, role) = (auth(), role.clone());
                let typ = match perm.access {
                    Access::Read => etcd_client::PermissionType::Read,
                    Access::Write => etcd_client::PermissionType::Write,
                    Access::ReadWrite => etcd_client::PermissionType::Readwrite,
                };
                let p = etcd_client::Permission::new(typ, perm.key.clone())
                    .with_range_end(perm.range_end());
                async move { c.role_grant_permission(role, p).await }
            })
            .map(drop),
        Step::Revoke(role, perm) => dcs
            .call(&what, || {
                let (mut c, role) = (auth(), role.clone());
                let options = etcd_client::RoleRevokePermissionOptions::new()
                    .with_range_end(perm.range_end());
                let key = perm.key.clone();
                async move { c.role_revoke_permission(role, key, Some(options)).await }
            })
            .map(drop),
        Step::AddUser { name, password } => dcs
            .call(&what, || {
                let (mut c, name) = (auth(), name.clone());
                let (password, options) = match &password {
                    Some(p) => (p.clone(), None),
                    None => (
                        String::new(),
                        Some(etcd_client::UserAddOptions::new().with_no_pwd()),
                    ),
                };
                async move { c.user_add(name, password, options).await }
            })
            .map(drop),
        Step::SetPassword { name, password } => dcs
            .call(&what, || {
                let (mut c, name, password) = (auth(), name.clone(), password.clone());
                async move { c.user_change_password(name, password).await }
            })
            .map(drop),
        Step::GrantRole { user, role } => dcs
            .call(&what, || {
                let (mut c, user, role) = (auth(), user.clone(), role.clone());
                async move { c.user_grant_role(user, role).await }
            })
            .map(drop),
        Step::RevokeRole { user, role } => dcs
            .call(&what, || {
                let (mut c, user, role) = (auth(), user.clone(), role.clone());
                async move { c.user_revoke_role(user, role).await }
            })
            .map(drop),
        Step::DeleteUser(name) => dcs
            .call(&what, || {
                let (mut c, name) = (auth(), name.clone());
                async move { c.user_delete(name).await }
            })
            .map(drop),
        Step::RemoveMember { id, .. } => dcs
            .call(&what, || {
                let mut c = dcs.client().cluster_client();
                async move { c.member_remove(id).await }
            })
            .map(drop),
        Step::UpdateMember { id, peer_urls, .. } => dcs
            .call(&what, || {
                let mut c = dcs.client().cluster_client();
                let urls: Vec<String> = peer_urls.iter().cloned().collect();
                async move { c.member_update(id, urls).await }
            })
            .map(drop),
        Step::AddMember { peer_urls, .. } => dcs
            .call(&what, || {
                let mut c = dcs.client().cluster_client();
                let urls: Vec<String> = peer_urls.iter().cloned().collect();
                async move { c.member_add(urls, None).await }
            })
            .map(drop),
    }
}

/// `seen` as it will be once `steps` are done: what check mode shows.
fn predict(seen: &Seen, steps: &[Step]) -> Seen {
    let mut s = seen.clone();
    for step in steps {
        match step {
            Step::DisableAuth => s.auth = false,
            Step::EnableAuth => s.auth = true,
            Step::AddRole(r) => {
                s.roles.entry(r.clone()).or_default();
            }
            Step::DeleteRole(r) => {
                s.roles.remove(r);
            }
            Step::Grant(r, p) => {
                let perms = s.roles.entry(r.clone()).or_default();
                perms.retain(|q| !(q.key == p.key && q.range == p.range));
                perms.insert(p.clone());
            }
            Step::Revoke(r, p) => {
                if let Some(perms) = s.roles.get_mut(r) {
                    perms.retain(|q| !(q.key == p.key && q.range == p.range));
                }
            }
            Step::AddUser { name, .. } => {
                s.users.entry(name.clone()).or_default();
            }
            Step::SetPassword { .. } => {}
            Step::GrantRole { user, role } => {
                s.users
                    .entry(user.clone())
                    .or_default()
                    .insert(role.clone());
            }
            Step::RevokeRole { user, role } => {
                if let Some(roles) = s.users.get_mut(user) {
                    roles.remove(role);
                }
            }
            Step::DeleteUser(u) => {
                s.users.remove(u);
            }
            Step::RemoveMember { id, .. } => s.members.retain(|m| m.raw_id != *id),
            Step::UpdateMember { id, peer_urls, .. } => {
                for m in s.members.iter_mut().filter(|m| m.raw_id == *id) {
                    m.peer_urls = peer_urls.clone();
                }
            }
            Step::AddMember { peer_urls, .. } => s.members.push(MemberSeen {
                id: "(new)".into(),
                raw_id: 0,
                name: String::new(),
                peer_urls: peer_urls.clone(),
                client_urls: BTreeSet::new(),
                learner: false,
                healthy: false,
            }),
        }
    }
    s
}

/// etcd's state as a diff shows it: the changes a password makes are
/// listed in `changes`, never shown.
fn summary(s: &Seen) -> Value {
    let roles: serde_json::Map<String, Value> = s
        .roles
        .iter()
        .map(|(name, perms)| {
            (
                name.clone(),
                perms.iter().map(Perm::describe).collect::<Vec<_>>().into(),
            )
        })
        .collect();
    let members: Vec<Value> = s
        .members
        .iter()
        .map(|m| {
            json!({
                "name": if m.started() { m.name.clone() } else { "(not started)".into() },
                "peer_urls": m.peer_urls,
            })
        })
        .collect();
    json!({
        "authentication": if s.auth { "enabled" } else { "disabled" },
        "roles": roles,
        "users": s.users,
        "members": members,
    })
}

/// The module's facts: the summary with each member's ID, client URLs and
/// health, and the `initial-cluster` a member that is to start (again)
/// is given, with the wanted names of members not started yet.
fn facts(s: &Seen, wanted: &Wanted) -> Value {
    let mut out = summary(s);
    out["members"] = serde_json::to_value(&s.members).unwrap_or(Value::Null);
    let name_of = |m: &MemberSeen| {
        if m.started() {
            Some(m.name.clone())
        } else {
            wanted
                .members
                .iter()
                .flatten()
                .find(|w| w.peer_urls == m.peer_urls)
                .map(|w| w.name.clone())
        }
    };
    let initial: Vec<String> = s
        .members
        .iter()
        .filter_map(|m| {
            let name = name_of(m)?;
            Some(
                m.peer_urls
                    .iter()
                    .map(|u| format!("{name}={u}"))
                    .collect::<Vec<_>>()
                    .join(","),
            )
        })
        .collect();
    out["initial_cluster"] = initial.join(",").into();
    out
}

/// Members added and not started: what the operator must do next.
fn waiting_members(s: &Seen) -> Vec<String> {
    s.members
        .iter()
        .filter(|m| !m.started())
        .map(|m| {
            format!(
                "the member with peer URLs {} is added but not started: start it with \
                 initial-cluster-state existing and the initial_cluster this task returns",
                m.peer_urls.iter().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect()
}
