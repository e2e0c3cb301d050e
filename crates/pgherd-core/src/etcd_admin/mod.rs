//! etcd's own state as a deployment wants it: authentication on, the roles
//! and users each cluster's Patroni needs (each limited to its prefix), and
//! the membership, changed one member at a time without losing quorum.
//! Observed through the etcd API, planned (pure, [`plan`]), applied.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::manifest::Login;

mod execute;
mod observe;
pub mod plan;

pub use execute::{apply, Report};

/// What a permission allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

impl Access {
    pub fn parse(s: &str) -> Option<Access> {
        match s {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            "readwrite" => Some(Access::ReadWrite),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::ReadWrite => "readwrite",
        }
    }
}

/// The keys a permission covers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Range {
    /// The key alone.
    Key,
    /// Every key that starts with it.
    Prefix,
    /// Every key from it up to (not including) this one.
    End(String),
}

/// One permission of a role.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Perm {
    pub key: String,
    pub range: Range,
    pub access: Access,
}

impl Perm {
    /// `readwrite /service/main/*`: the form shown in changes and diffs.
    pub fn describe(&self) -> String {
        let keys = match &self.range {
            Range::Key => self.key.clone(),
            Range::Prefix => format!("{}*", self.key),
            Range::End(end) => format!("[{}, {end})", self.key),
        };
        format!("{} {keys}", self.access.as_str())
    }

    /// etcd's `range_end` for the permission.
    pub fn range_end(&self) -> Vec<u8> {
        match &self.range {
            Range::Key => Vec::new(),
            Range::Prefix => prefix_end(self.key.as_bytes()),
            Range::End(end) => end.as_bytes().to_vec(),
        }
    }

    /// The permission etcd reports as `key`, `range_end` and a type.
    pub fn from_etcd(key: &[u8], range_end: &[u8], access: Access) -> Perm {
        let range = if range_end.is_empty() {
            Range::Key
        } else if range_end == prefix_end(key).as_slice() {
            Range::Prefix
        } else {
            Range::End(String::from_utf8_lossy(range_end).into_owned())
        };
        Perm {
            key: String::from_utf8_lossy(key).into_owned(),
            range,
            access,
        }
    }
}

/// The end of the range of keys that start with `prefix`, as etcd computes
/// it: the last byte that is not 0xff incremented, what follows dropped;
/// `\0` (every key) when there is none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A role as wanted: `present` false removes it.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleWanted {
    pub name: String,
    pub permissions: BTreeSet<Perm>,
    pub present: bool,
}

/// A user as wanted: its roles exactly (when given), its password (when
/// given); `present` false removes it.
#[derive(Clone, Debug, PartialEq)]
pub struct UserWanted {
    pub name: String,
    pub password: Option<String>,
    pub roles: Option<BTreeSet<String>>,
    pub present: bool,
}

/// A member as wanted: its name and peer URLs.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberWanted {
    pub name: String,
    pub peer_urls: BTreeSet<String>,
}

/// Everything a task asks of etcd; what it leaves out is left alone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Wanted {
    pub auth: Option<bool>,
    pub roles: Vec<RoleWanted>,
    pub users: Vec<UserWanted>,
    /// The whole membership, when given: unlisted members are removed.
    pub members: Option<Vec<MemberWanted>>,
    /// The credentials the task logs in with (root's, to manage users).
    pub login: Option<Login>,
}

/// Whether a user's password is the one wanted: known by logging in as the
/// user, which only works while authentication is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PasswordCheck {
    Matches,
    Differs,
    Unknown,
}

/// A member as etcd lists it, with whether it answered just now.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemberSeen {
    /// etcd's member ID, in hexadecimal as etcdctl shows it.
    pub id: String,
    #[serde(skip)]
    pub raw_id: u64,
    /// Empty for a member added and not started yet.
    pub name: String,
    pub peer_urls: BTreeSet<String>,
    pub client_urls: BTreeSet<String>,
    pub learner: bool,
    pub healthy: bool,
}

impl MemberSeen {
    pub fn started(&self) -> bool {
        !self.name.is_empty()
    }
}

/// etcd's state, as far as a task may change it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Seen {
    pub auth: bool,
    pub roles: BTreeMap<String, BTreeSet<Perm>>,
    /// Each user's roles.
    pub users: BTreeMap<String, BTreeSet<String>>,
    #[serde(skip)]
    pub passwords: BTreeMap<String, PasswordCheck>,
    pub members: Vec<MemberSeen>,
}
