//! The steps of a major upgrade as actions: what they do, in check
//! mode's words, and how each is confirmed.

use std::path::PathBuf;

use super::Action;

/// A step of a major upgrade (`lifecycle/upgrade/`).
#[derive(Clone)]
pub enum UpgradeStep {
    /// The old major's Patroni and PostgreSQL stopped (a clean shutdown,
    /// its checkpoint).
    StopOld { node: String },
    /// What an earlier, unfinished upgrade left undone: its new data
    /// directory removed, the old one whole again.
    Unwind {
        data_dir: PathBuf,
        old_data_dir: PathBuf,
    },
    /// The new major's data directory made by its initdb.
    InitNew {
        data_dir: PathBuf,
        version: String,
        checksums: bool,
    },
    /// `pg_upgrade --link` from the old data directory into the new.
    Link {
        from: String,
        to: String,
        old_data_dir: PathBuf,
        data_dir: PathBuf,
    },
    /// The pgBackRest stanza upgraded to the new major's data directory
    /// (before the new cluster starts, as pgBackRest wants it).
    StanzaUpgrade { stanza: String },
    /// The point of no return: the new cluster may start (after it, the
    /// old data directory no longer can).
    Commit { old_data_dir: PathBuf },
    /// A full backup of the upgraded cluster: replicas are built from the
    /// newest backup, which must be of the new major.
    Backup { node: String, stanza: String },
    /// The optimizer statistics rebuilt (`vacuumdb --all
    /// --analyze-in-stages`).
    Analyze { node: String },
    /// An action on the old major's instance (its removal).
    Old(Box<Action>),
}

impl UpgradeStep {
    pub(super) fn line(&self) -> String {
        match self {
            UpgradeStep::StopOld { node } => format!("stop Patroni and PostgreSQL ({node})"),
            UpgradeStep::Unwind {
                data_dir,
                old_data_dir,
            } => format!(
                "remove {}, left by an unfinished upgrade, and make {} whole again",
                data_dir.display(),
                old_data_dir.display()
            ),
            UpgradeStep::InitNew {
                data_dir,
                version,
                checksums,
            } => format!(
                "initialise {} with PostgreSQL {version}'s initdb (data checksums {})",
                data_dir.display(),
                if *checksums { "on" } else { "off" }
            ),
            UpgradeStep::Link {
                from,
                to,
                old_data_dir,
                data_dir,
            } => format!(
                "upgrade {} (PostgreSQL {from}) into {} (PostgreSQL {to}) with pg_upgrade --link",
                old_data_dir.display(),
                data_dir.display()
            ),
            UpgradeStep::Commit { old_data_dir } => format!(
                "pass the point of no return: the new cluster starts on the files it shares with \
                 {}, which then no longer starts",
                old_data_dir.display()
            ),
            UpgradeStep::Analyze { node } => format!(
                "rebuild the optimizer statistics of {node} (vacuumdb --all --analyze-in-stages)"
            ),
            UpgradeStep::StanzaUpgrade { stanza } => {
                format!("upgrade pgBackRest stanza {stanza} to the new major (stanza-upgrade)")
            }
            UpgradeStep::Backup { node, stanza } => format!(
                "take a full backup of stanza {stanza} once {node} leads on the new major (the \
                 other members are built from the newest backup)"
            ),
            UpgradeStep::Old(inner) => inner.lines().join("; "),
        }
    }

    pub(super) fn confirmation(&self) -> &'static str {
        match self {
            UpgradeStep::StopOld { .. } => "no Patroni and no postmaster left",
            UpgradeStep::Unwind { .. } => {
                "the new data directory is gone and the old control file is back"
            }
            UpgradeStep::InitNew { .. } => "initdb ends successfully",
            UpgradeStep::Link { .. } => "pg_upgrade ends successfully",
            UpgradeStep::Commit { .. } => "the marker of a linked, never started upgrade is gone",
            UpgradeStep::Analyze { .. } => "vacuumdb ends successfully",
            UpgradeStep::StanzaUpgrade { .. } => "pgBackRest's stanza-upgrade ends successfully",
            UpgradeStep::Backup { .. } => "pgBackRest's backup ends successfully",
            UpgradeStep::Old(inner) => inner.confirmation(),
        }
    }
}
