//! The errors of pgherd-core: each names the thing (option, key, file) and
//! says what to do.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("settings from {origin}: {msg}")]
    Settings { origin: String, msg: String },

    #[error("invalid settings: {}", .0.join("; "))]
    InvalidSettings(Vec<String>),

    /// What the host lacks for the run (programs, writable directories),
    /// found before anything was written.
    #[error("{}; nothing was changed", .0.join("; "))]
    Preflight(Vec<String>),

    #[error("invalid instance options: {}", .0.join("; "))]
    InvalidManifest(Vec<String>),

    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("pg_hba template {origin}: {msg}")]
    Template { origin: String, msg: String },

    #[error("operating-system user {user:?}: {msg}")]
    User { user: String, msg: String },

    #[error("{method} {url}: {msg}")]
    Rest {
        method: String,
        url: String,
        msg: String,
    },

    #[error("etcd at {endpoints}: {msg}")]
    Dcs { endpoints: String, msg: String },

    /// A wait that ran out: what was awaited and what was last seen.
    #[error("timed out after {waited_secs}s waiting for {what}; last seen: {last_seen}")]
    Timeout {
        what: String,
        waited_secs: u64,
        last_seen: String,
    },

    /// A failure after the run had already changed things: those are
    /// listed, so that the caller reports them (Ansible: changed and
    /// failed) instead of pretending nothing happened.
    #[error(
        "{source}. Done before this failure: {}. Nothing after it was attempted: fix the cause \
         and run the task again", .done.join("; ")
    )]
    AfterChanges {
        done: Vec<String>,
        source: Box<Error>,
    },

    /// No member of a cluster answers on its REST API.
    #[error("{0}")]
    NoMemberAnswers(String),

    /// A node without data whose cluster has no member to clone from.
    #[error("{0}")]
    NoOneToClone(String),

    #[error("{0}")]
    Other(String),
}

impl Error {
    /// `self`, as a failure after `done` when anything was done.
    pub fn after(self, done: Vec<String>) -> Self {
        if done.is_empty() {
            self
        } else {
            Error::AfterChanges {
                done,
                source: Box::new(self),
            }
        }
    }

    pub fn io(path: impl Into<PathBuf>, action: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            action,
            source,
        }
    }
}
