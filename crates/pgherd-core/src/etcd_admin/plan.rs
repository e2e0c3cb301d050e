//! From what etcd has and what the task wants to the steps between them,
//! in an order etcd accepts: authentication off first when it is to go,
//! roles before the users that get them, members removed before one is
//! added, authentication on last (once root exists). Whatever would be
//! refused (a quorum lost, a role that does not exist) is refused here,
//! before the first step.

use super::*;

/// One change to etcd.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    DisableAuth,
    AddRole(String),
    Grant(String, Perm),
    Revoke(String, Perm),
    AddUser {
        name: String,
        password: Option<String>,
    },
    SetPassword {
        name: String,
        password: String,
    },
    GrantRole {
        user: String,
        role: String,
    },
    RevokeRole {
        user: String,
        role: String,
    },
    DeleteUser(String),
    DeleteRole(String),
    RemoveMember {
        id: u64,
        name: String,
    },
    UpdateMember {
        id: u64,
        name: String,
        peer_urls: BTreeSet<String>,
    },
    AddMember {
        name: String,
        peer_urls: BTreeSet<String>,
    },
    EnableAuth,
}

impl Step {
    /// The change as the task's result lists it (never a password).
    pub fn describe(&self) -> String {
        let urls = |u: &BTreeSet<String>| u.iter().cloned().collect::<Vec<_>>().join(",");
        match self {
            Step::DisableAuth => "disable authentication".into(),
            Step::EnableAuth => "enable authentication".into(),
            Step::AddRole(r) => format!("add role {r}"),
            Step::Grant(r, p) => format!("grant {} to role {r}", p.describe()),
            Step::Revoke(r, p) => format!("revoke {} from role {r}", p.describe()),
            Step::AddUser { name, .. } => format!("add user {name}"),
            Step::SetPassword { name, .. } => format!("change the password of user {name}"),
            Step::GrantRole { user, role } => format!("grant role {role} to user {user}"),
            Step::RevokeRole { user, role } => format!("revoke role {role} from user {user}"),
            Step::DeleteUser(u) => format!("delete user {u}"),
            Step::DeleteRole(r) => format!("delete role {r}"),
            Step::RemoveMember { name, .. } => format!("remove member {name}"),
            Step::UpdateMember {
                name, peer_urls, ..
            } => format!("set the peer URLs of member {name} to {}", urls(peer_urls)),
            Step::AddMember { name, peer_urls } => {
                format!("add member {name} ({})", urls(peer_urls))
            }
        }
    }
}

/// The majority of `voters`.
pub fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// The steps from `seen` to `wanted`, or every reason to refuse them.
pub fn plan(seen: &Seen, wanted: &Wanted) -> std::result::Result<Vec<Step>, Vec<String>> {
    let mut problems = Vec::new();
    let mut steps = Vec::new();
    let auth_after = wanted.auth.unwrap_or(seen.auth);
    if seen.auth && !auth_after {
        steps.push(Step::DisableAuth);
    }
    plan_roles(seen, wanted, &mut steps);
    plan_users(seen, wanted, auth_after, &mut steps, &mut problems);
    plan_role_deletions(seen, wanted, &mut steps, &mut problems);
    if let Some(members) = &wanted.members {
        plan_members(&seen.members, members, &mut steps, &mut problems);
    }
    if !seen.auth && auth_after {
        steps.push(Step::EnableAuth);
    }
    if problems.is_empty() {
        Ok(steps)
    } else {
        Err(problems)
    }
}

fn plan_roles(seen: &Seen, wanted: &Wanted, steps: &mut Vec<Step>) {
    for role in wanted.roles.iter().filter(|r| r.present) {
        let had = seen.roles.get(&role.name);
        if had.is_none() {
            steps.push(Step::AddRole(role.name.clone()));
        }
        let had = had.cloned().unwrap_or_default();
        // A permission on the same keys with another access is replaced
        // by the grant itself; only keys no longer wanted are revoked.
        let covered = |p: &Perm, set: &BTreeSet<Perm>| {
            set.iter().any(|q| q.key == p.key && q.range == p.range)
        };
        for p in role.permissions.difference(&had) {
            steps.push(Step::Grant(role.name.clone(), p.clone()));
        }
        for p in had.iter().filter(|p| !covered(p, &role.permissions)) {
            steps.push(Step::Revoke(role.name.clone(), p.clone()));
        }
    }
}

/// The user that manages etcd once authentication is on.
const ROOT: &str = "root";

fn plan_users(
    seen: &Seen,
    wanted: &Wanted,
    auth_after: bool,
    steps: &mut Vec<Step>,
    problems: &mut Vec<String>,
) {
    let role_exists = |r: &str| {
        r == ROOT
            || wanted.roles.iter().any(|w| w.name == r && w.present)
            || (seen.roles.contains_key(r)
                && !wanted.roles.iter().any(|w| w.name == r && !w.present))
    };
    let mut users = wanted.users.clone();
    // Authentication needs root with the root role: made from the login
    // when the task logs in as root and does not list it.
    let login_root = wanted.login.as_ref().filter(|l| l.username == ROOT);
    if auth_after && !seen.users.contains_key(ROOT) && !users.iter().any(|u| u.name == ROOT) {
        match login_root {
            Some(login) => users.push(UserWanted {
                name: ROOT.into(),
                password: Some(login.password.clone()),
                roles: Some([ROOT.to_string()].into()),
                present: true,
            }),
            None => problems.push(
                "auth: enabled needs the user root (etcd manages itself as root once \
                 authentication is on): give login_user root with its login_password, or list \
                 root in users with a password and the role root"
                    .into(),
            ),
        }
    }
    for user in &users {
        let had = seen.users.get(&user.name);
        if !user.present {
            if had.is_none() {
                continue;
            }
            let logged_in = wanted
                .login
                .as_ref()
                .is_some_and(|l| l.username == user.name);
            if auth_after && (user.name == ROOT || logged_in) {
                problems.push(format!(
                    "users: {} cannot be removed while authentication stays on: it is the user \
                     etcd is managed as",
                    user.name
                ));
                continue;
            }
            steps.push(Step::DeleteUser(user.name.clone()));
            continue;
        }
        for role in user.roles.iter().flatten() {
            if !role_exists(role) {
                problems.push(format!(
                    "users: {} is to have the role {role}, which neither exists nor is listed \
                     in roles",
                    user.name
                ));
            }
        }
        if user.name == ROOT && auth_after {
            let roles = user
                .roles
                .clone()
                .or_else(|| had.cloned())
                .unwrap_or_default();
            if !roles.contains(ROOT) {
                problems
                    .push("users: root must keep the role root while authentication is on".into());
            }
        }
        match had {
            None => steps.push(Step::AddUser {
                name: user.name.clone(),
                password: user.password.clone(),
            }),
            Some(_) => {
                if let Some(password) = &user.password {
                    if seen.passwords.get(&user.name) == Some(&PasswordCheck::Differs) {
                        steps.push(Step::SetPassword {
                            name: user.name.clone(),
                            password: password.clone(),
                        });
                    }
                }
            }
        }
        if let Some(roles) = &user.roles {
            let had = had.cloned().unwrap_or_default();
            for role in roles.difference(&had) {
                steps.push(Step::GrantRole {
                    user: user.name.clone(),
                    role: role.clone(),
                });
            }
            for role in had.difference(roles) {
                steps.push(Step::RevokeRole {
                    user: user.name.clone(),
                    role: role.clone(),
                });
            }
        }
    }
}

fn plan_role_deletions(
    seen: &Seen,
    wanted: &Wanted,
    steps: &mut Vec<Step>,
    problems: &mut Vec<String>,
) {
    for role in wanted.roles.iter().filter(|r| !r.present) {
        if role.name == ROOT {
            problems.push("roles: the role root cannot be removed".into());
        } else if seen.roles.contains_key(&role.name) {
            steps.push(Step::DeleteRole(role.name.clone()));
        }
    }
}

/// The members to remove (one at a time, each keeping a quorum of healthy
/// voters), peer URLs to update, and at most one member to add: a member
/// added is not started yet, and a second one would count two absent
/// voters against the quorum.
fn plan_members(
    seen: &[MemberSeen],
    wanted: &[MemberWanted],
    steps: &mut Vec<Step>,
    problems: &mut Vec<String>,
) {
    let matches = |m: &MemberSeen, w: &MemberWanted| {
        if m.started() {
            m.name == w.name
        } else {
            m.peer_urls == w.peer_urls
        }
    };
    let mut current: Vec<MemberSeen> = seen.to_vec();
    for m in seen {
        if wanted.iter().any(|w| matches(m, w)) {
            continue;
        }
        let shown = if m.started() {
            m.name.clone()
        } else {
            format!("{} (not started)", m.id)
        };
        let remaining: Vec<&MemberSeen> = current.iter().filter(|c| c.raw_id != m.raw_id).collect();
        let voters = remaining.iter().filter(|c| !c.learner).count();
        let healthy = remaining.iter().filter(|c| !c.learner && c.healthy).count();
        if voters == 0 {
            problems.push(format!(
                "members: removing {shown} would leave etcd without a member"
            ));
            continue;
        }
        if healthy < quorum(voters) {
            problems.push(format!(
                "members: removing {shown} would leave {healthy} healthy member(s) of {voters}, \
                 fewer than the quorum of {}: bring the unhealthy members back first (or \
                 remove them first)",
                quorum(voters)
            ));
            continue;
        }
        current.retain(|c| c.raw_id != m.raw_id);
        steps.push(Step::RemoveMember {
            id: m.raw_id,
            name: shown,
        });
    }
    for w in wanted {
        if let Some(m) = current.iter().find(|m| m.started() && m.name == w.name) {
            if m.peer_urls != w.peer_urls {
                steps.push(Step::UpdateMember {
                    id: m.raw_id,
                    name: w.name.clone(),
                    peer_urls: w.peer_urls.clone(),
                });
            }
        }
    }
    let missing: Vec<&MemberWanted> = wanted
        .iter()
        .filter(|w| !current.iter().any(|m| matches(m, w)))
        .collect();
    let unstarted: Vec<&MemberSeen> = current.iter().filter(|m| !m.started()).collect();
    match (missing.as_slice(), unstarted.as_slice()) {
        ([], _) => {}
        ([one], []) => {
            let voters = current.iter().filter(|c| !c.learner).count() + 1;
            let healthy = current.iter().filter(|c| !c.learner && c.healthy).count();
            // A single member grows to two as etcd allows it, writes
            // waiting until the second starts: there is no other way.
            let growing_from_one = voters == 2 && healthy == 1;
            if healthy < quorum(voters) && !growing_from_one {
                problems.push(format!(
                    "members: adding {} would make {voters} members of which {healthy} are \
                     healthy, fewer than the quorum of {}: bring the unhealthy members back \
                     first",
                    one.name,
                    quorum(voters)
                ));
            } else {
                steps.push(Step::AddMember {
                    name: one.name.clone(),
                    peer_urls: one.peer_urls.clone(),
                });
            }
        }
        (_, [waiting, ..]) => problems.push(format!(
            "members: {} is missing, but the member added with peer URLs {} has not started \
             yet: start it (initial-cluster-state existing) before adding another",
            missing
                .iter()
                .map(|w| w.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            waiting
                .peer_urls
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(",")
        )),
        (many, []) => problems.push(format!(
            "members: {} are missing: etcd members are added one at a time, each started \
             before the next is added; list one more member per run",
            many.iter()
                .map(|w| w.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests;
