//! Reading etcd's users, roles, membership and whether authentication is
//! on, through the API (as etcdctl does), and each member's health from
//! the member itself.

use std::time::Duration;

use super::*;
use crate::dcs::Dcs;
use crate::error::{Error, Result};
use crate::settings::EtcdSettings;

/// How long a member has to answer its status.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection, and whether etcd has authentication on: logging in is
/// how that is told apart, as etcd refuses a login while it is off.
pub(super) fn connect(
    etcd: &EtcdSettings,
    login: Option<&Login>,
    timeout: Duration,
) -> Result<(Dcs, bool)> {
    if let Some(login) = login {
        match Dcs::connect(etcd, Some(login), timeout) {
            Ok(dcs) => return Ok((dcs, true)),
            Err(e) if e.to_string().contains("authentication is not enabled") => {}
            Err(e) => return Err(e),
        }
    }
    let dcs = Dcs::connect(etcd, None, timeout)?;
    // Without a login, listing users works only while authentication is
    // off.
    match list_users(&dcs) {
        Ok(_) => Ok((dcs, false)),
        Err(e) if login.is_none() && refused_without_login(&e.to_string()) => Err(Error::Dcs {
            endpoints: etcd.hosts.join(", "),
            msg: "authentication is on: give login_user and login_password (root's, or a \
                      user with the root role)"
                .into(),
        }),
        Err(e) => Err(e),
    }
}

fn refused_without_login(msg: &str) -> bool {
    [
        "user name is empty",
        "permission denied",
        "invalid auth token",
    ]
    .iter()
    .any(|m| msg.contains(m))
}

fn list_users(dcs: &Dcs) -> Result<Vec<String>> {
    let resp = dcs.call("listing users", || {
        let mut c = dcs.client().auth_client();
        async move { c.user_list().await }
    })?;
    Ok(resp.users().to_vec())
}

/// Everything a task may change, and the passwords of `users` that exist
/// (checked by logging in as each while authentication is on).
pub(super) fn observe(dcs: &Dcs, etcd: &EtcdSettings, auth: bool, wanted: &Wanted) -> Result<Seen> {
    let mut seen = Seen {
        auth,
        ..Seen::default()
    };
    let roles = dcs.call("listing roles", || {
        let mut c = dcs.client().auth_client();
        async move { c.role_list().await }
    })?;
    for name in roles.roles() {
        let resp = dcs.call(&format!("reading role {name}"), || {
            let mut c = dcs.client().auth_client();
            let name = name.clone();
            async move { c.role_get(name).await }
        })?;
        let perms = resp
            .permissions()
            .iter()
            .filter_map(|p| {
                let access = match p.get_type() {
                    0 => Access::Read,
                    1 => Access::Write,
                    2 => Access::ReadWrite,
                    _ => return None,
                };
                Some(Perm::from_etcd(p.key(), p.range_end(), access))
            })
            .collect();
        seen.roles.insert(name.clone(), perms);
    }
    for name in list_users(dcs)? {
        let resp = dcs.call(&format!("reading user {name}"), || {
            let mut c = dcs.client().auth_client();
            let name = name.clone();
            async move { c.user_get(name).await }
        })?;
        seen.users
            .insert(name.clone(), resp.roles().iter().cloned().collect());
    }
    for user in &wanted.users {
        let (Some(password), true) = (&user.password, seen.users.contains_key(&user.name)) else {
            continue;
        };
        let check = if auth {
            password_check(dcs, &user.name, password)?
        } else {
            PasswordCheck::Unknown
        };
        seen.passwords.insert(user.name.clone(), check);
    }
    seen.members = members(dcs, etcd)?;
    Ok(seen)
}

/// Whether `password` is `name`'s, by logging in as `name`. A member down
/// (a connection refused) is retried like any call, through another one.
fn password_check(dcs: &Dcs, name: &str, password: &str) -> Result<PasswordCheck> {
    dcs.call(&format!("checking the password of user {name}"), || {
        let mut c = dcs.client().auth_client();
        let (name, password) = (name.to_string(), password.to_string());
        async move {
            match c.authenticate(name, password).await {
                Ok(_) => Ok(PasswordCheck::Matches),
                Err(e) => {
                    let msg = crate::dcs::describe_error(&e);
                    if msg.contains("authentication failed") {
                        Ok(PasswordCheck::Differs)
                    } else if msg.contains("authentication is not enabled") {
                        Ok(PasswordCheck::Unknown)
                    } else {
                        Err(e)
                    }
                }
            }
        }
    })
}

/// The members etcd lists, each asked for its status on its own client
/// URL, all at once.
fn members(dcs: &Dcs, etcd: &EtcdSettings) -> Result<Vec<MemberSeen>> {
    let resp = dcs.call("listing members", || {
        let mut c = dcs.client().cluster_client();
        async move { c.member_list().await }
    })?;
    let listed: Vec<MemberSeen> = resp
        .members()
        .iter()
        .map(|m| MemberSeen {
            id: format!("{:x}", m.id()),
            raw_id: m.id(),
            name: m.name().to_string(),
            peer_urls: m.peer_urls().iter().cloned().collect(),
            client_urls: m.client_urls().iter().cloned().collect(),
            learner: m.is_learner(),
            healthy: false,
        })
        .collect();
    let probes: Vec<_> = listed
        .iter()
        .map(|m| {
            let hosts: Vec<String> = m
                .client_urls
                .iter()
                .filter_map(|u| u.split_once("://").map(|(_, rest)| rest.to_string()))
                .collect();
            let settings = EtcdSettings {
                hosts,
                ..etcd.clone()
            };
            std::thread::spawn(move || !settings.hosts.is_empty() && member_healthy(&settings))
        })
        .collect();
    Ok(listed
        .into_iter()
        .zip(probes)
        .map(|(mut m, probe)| {
            m.healthy = probe.join().unwrap_or(false);
            m
        })
        .collect())
}

/// A member is healthy when it answers its status, without errors, and
/// knows a leader.
fn member_healthy(settings: &EtcdSettings) -> bool {
    let Ok(dcs) = Dcs::connect(settings, None, MEMBER_TIMEOUT) else {
        return false;
    };
    dcs.call("status", || {
        let mut c = dcs.client().maintenance_client();
        async move { c.status().await }
    })
    .is_ok_and(|s| s.errors().is_empty() && s.leader() != 0)
}
