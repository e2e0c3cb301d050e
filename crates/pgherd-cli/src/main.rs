//! `pgherd`: a Patroni cluster for people. The same core functions as the
//! `pgherd.cluster.patroni` module, with a table and a progress display
//! instead of JSON for Ansible.

mod backups;
mod follow;
mod progress;
mod proxy;
mod status;
mod vip;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pgherd_core::cluster::{self, Operations, RestartMode, Target};
use pgherd_core::error::{Error, Result};
use pgherd_core::manifest::Login;
use pgherd_core::pgbackrest::BackupKind;
use pgherd_core::settings::{Settings, SettingsSource};

/// Operate PostgreSQL clusters managed by Patroni (etcd as the DCS).
///
/// Credentials never go on the command line: etcd's user comes from the
/// settings, from the Patroni configuration, or from PGHERD_ETCD_USERNAME
/// and PGHERD_ETCD_PASSWORD; the REST API's from the Patroni configuration
/// or from PGHERD_RESTAPI_USERNAME and PGHERD_RESTAPI_PASSWORD.
#[derive(Parser)]
#[command(name = "pgherd", version)]
struct Cli {
    #[command(flatten)]
    target: TargetArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct TargetArgs {
    /// pgherd site settings (etcd endpoints, TLS, namespace). Default:
    /// /etc/pgherd/settings.yaml if it exists, else built-in defaults.
    #[arg(short, long, global = true, value_name = "FILE")]
    settings: Option<PathBuf>,
    /// The cluster (Patroni scope).
    #[arg(short, long, global = true, value_name = "NAME")]
    cluster: Option<String>,
    /// An instance's Patroni configuration: cluster, etcd endpoints and
    /// credentials, REST API TLS and credentials are read from it.
    #[arg(short = 'p', long, global = true, value_name = "FILE", conflicts_with_all = ["settings", "cluster"])]
    patroni_config: Option<PathBuf>,
    /// Deadline of each wait, in seconds.
    #[arg(long, global = true, default_value_t = 120, value_name = "SECONDS")]
    timeout: u64,
}

#[derive(Subcommand)]
enum Command {
    /// The members: role, state, host, timeline, lag, pending restart.
    Status {
        /// JSON, for scripts (with --watch, one object a line: the time,
        /// what changed, the cluster).
        #[arg(long)]
        json: bool,
        /// Show the cluster again on every change of its keys in etcd
        /// (an etcd watch), with what changed, until stopped.
        #[arg(long)]
        watch: bool,
        /// Also the backups, as `backup --list` reads them on this host
        /// (a member's, or the repository host): the newest and how old
        /// it is, the newest WAL in the repository.
        #[arg(long, conflicts_with = "watch")]
        backups: bool,
    },
    /// Hand the leader role to another member and wait until it leads and
    /// the old leader streams from it.
    Switchover {
        /// The member to lead.
        #[arg(long, value_name = "MEMBER")]
        to: String,
        /// Schedule it instead (ISO 8601 with an offset, e.g.
        /// 2026-11-23T02:00:00+00:00).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Refuse when the member is more than this many bytes behind.
        #[arg(long, value_name = "BYTES")]
        maximum_lag: Option<u64>,
    },
    /// Maintenance mode: Patroni stops acting on the cluster.
    Pause,
    /// Leave maintenance mode.
    Resume,
    /// Restart PostgreSQL: replicas first, the leader last.
    Restart {
        /// Only the members whose settings wait for a restart.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        pending: bool,
        /// Every member.
        #[arg(long)]
        all: bool,
    },
    /// Take a pgBackRest backup on the leader; run it on the leader's host
    /// (its instance is found through the settings' patroni.configpath).
    /// With --list, show the backups instead, from any member's host.
    Backup {
        /// full, diff or incr.
        #[arg(long = "type", default_value = "full", value_name = "TYPE",
              value_parser = ["full", "diff", "incr"])]
        kind: String,
        /// The backups in the repository, the oldest time a restore can
        /// reach and how old the newest backup is; takes none.
        #[arg(long)]
        list: bool,
        /// With --list: JSON, for scripts and monitoring.
        #[arg(long, requires = "list")]
        json: bool,
    },
    /// Keep a proxy's configuration (PgBouncer, HAProxy) pointed at the
    /// cluster, driven by an etcd watch.
    Proxy {
        /// The proxy configuration (cluster, template, target,
        /// reload_command, settings).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Render once and exit.
        #[arg(long)]
        once: bool,
        /// Also log the passes that left the file as it was.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Keep a virtual IP address on the leader's host: run on every
    /// member, each following the leader key in etcd.
    Vip {
        /// The VIP configuration (cluster, node, address, interface,
        /// settings).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Take the address off this host if it holds it, and exit (for
        /// the unit's stop).
        #[arg(long, conflicts_with = "verify")]
        release: bool,
        /// Check once that this host holds the address exactly when its
        /// member leads; exit 1 when not.
        #[arg(long)]
        verify: bool,
    },
}

fn env_login(user: &str, password: &str) -> Option<Login> {
    Some(Login {
        username: std::env::var(user).ok()?,
        password: std::env::var(password).ok()?,
    })
}

fn target(args: &TargetArgs) -> Result<Target> {
    let timeout = Duration::from_secs(args.timeout.max(1));
    let etcd_env = env_login("PGHERD_ETCD_USERNAME", "PGHERD_ETCD_PASSWORD");
    let rest_env = env_login("PGHERD_RESTAPI_USERNAME", "PGHERD_RESTAPI_PASSWORD");
    if let Some(path) = &args.patroni_config {
        let mut t = Target::from_patroni_config(path, timeout)?;
        t.etcd_auth = etcd_env.or(t.etcd_auth);
        t.restapi_auth = rest_env.or(t.restapi_auth);
        return Ok(t);
    }
    let Some(scope) = &args.cluster else {
        return Err(Error::Other(
            "which cluster? give --cluster NAME (with --settings FILE when not the default), \
             or --patroni-config with an instance's Patroni configuration"
                .into(),
        ));
    };
    pgherd_core::names::Name::parse("cluster", scope).map_err(Error::Other)?;
    Ok(Target {
        scope: scope.clone(),
        settings: Settings::load(&SettingsSource::file_or_default(args.settings.as_deref()))?,
        restapi: None,
        restapi_auth: rest_env,
        etcd_auth: etcd_env,
        timeout,
    })
}

fn run(cli: Cli) -> Result<()> {
    if let Command::Proxy {
        config,
        once,
        verbose,
    } = &cli.command
    {
        return run_proxy(config, *once, *verbose);
    }
    if let Command::Vip {
        config,
        release,
        verify,
    } = &cli.command
    {
        return run_vip(config, *release, *verify);
    }
    let target = target(&cli.target)?;
    let ops = match cli.command {
        Command::Status {
            json, watch: true, ..
        } => watch::watch(&target, json),
        Command::Status { json, backups, .. } => return print_status(&target, json, backups),
        Command::Switchover {
            to,
            at,
            maximum_lag,
        } => {
            if let Some(at) = &at {
                pgherd_core::names::check_timestamp_with_offset(at)
                    .map_err(|e| Error::Other(format!("--at: {e}")))?;
            }
            Operations {
                leader: Some(to),
                scheduled_at: at,
                maximum_lag,
                ..Operations::default()
            }
        }
        Command::Pause => Operations {
            paused: Some(true),
            ..Operations::default()
        },
        Command::Resume => Operations {
            paused: Some(false),
            ..Operations::default()
        },
        Command::Restart { pending, .. } => Operations {
            restart: Some(if pending {
                RestartMode::Pending
            } else {
                RestartMode::All
            }),
            ..Operations::default()
        },
        Command::Backup {
            list: true, json, ..
        } => return list_backups(&target, json),
        Command::Backup { kind, .. } => return backup(&target, &kind),
        Command::Proxy { .. } | Command::Vip { .. } => unreachable!("handled above"),
    };
    // Its line is cleared when it goes, before anything else is printed.
    let display = progress::Display::start();
    let report = cluster::run(&target, &ops, false)?;
    drop(display);
    if report.changes.is_empty() {
        println!("Nothing to do: the cluster is already as asked.");
    }
    for c in &report.changes {
        println!("done: {c}");
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    print!("{}", status::render_table(&report.info));
    Ok(())
}

/// `pgherd proxy`: renders once, or follows the leader until killed.
fn run_proxy(config: &std::path::Path, once: bool, verbose: bool) -> Result<()> {
    let config = proxy::ProxyConfig::load(config)?;
    let login = env_login("PGHERD_ETCD_USERNAME", "PGHERD_ETCD_PASSWORD");
    let mut p = proxy::Proxy::new(config, login)?;
    p.verbose = verbose;
    if once {
        p.once()?;
        return Ok(());
    }
    p.run();
}

/// `pgherd vip`: follows the leader until killed, or releases the address.
fn run_vip(config: &std::path::Path, release: bool, verify: bool) -> Result<()> {
    let config = vip::VipConfig::load(config)?;
    let login = env_login("PGHERD_ETCD_USERNAME", "PGHERD_ETCD_PASSWORD");
    let v = vip::Vip::new(config, login)?;
    if release {
        v.release("the service stops");
        return Ok(());
    }
    if verify {
        println!("{}", v.verify()?);
        return Ok(());
    }
    v.run();
}

/// `pgherd status`: the table, or the cluster as JSON; with `backups`,
/// the repository's backups too.
fn print_status(target: &Target, json: bool, backups: bool) -> Result<()> {
    let info = cluster::info(target)?;
    if info.members.is_empty() {
        return Err(Error::Other(format!(
            "cluster {} has no member in the DCS under {}: is it running, and are its \
             name and the namespace right?",
            target.scope,
            pgherd_core::dcs::cluster_prefix(
                &target.settings.patroni.etcd.namespace,
                &target.scope
            )
        )));
    }
    let list = if backups {
        Some(backup_list(target)?)
    } else {
        None
    };
    if json {
        let mut value = serde_json::to_value(&info)
            .map_err(|e| Error::Other(format!("cannot print the cluster: {e}")))?;
        if let (Some(list), Some(object)) = (&list, value.as_object_mut()) {
            object.insert("backups".into(), serde_json::json!(list));
        }
        let text = serde_json::to_string_pretty(&value)
            .map_err(|e| Error::Other(format!("cannot print the cluster: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", status::render_table(&info));
        if let Some(list) = &list {
            println!("{}", backups::summary(list));
        }
    }
    Ok(())
}

/// `pgherd backup --list`.
fn list_backups(target: &Target, json: bool) -> Result<()> {
    let list = backup_list(target)?;
    if json {
        let text = serde_json::to_string_pretty(&list)
            .map_err(|e| Error::Other(format!("cannot print the backups: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", backups::render(&list));
    }
    Ok(())
}

/// The backups of the cluster's stanza: from this host's instance of the
/// cluster, or on the repository host from its configuration.
fn backup_list(target: &Target) -> Result<backups::BackupList> {
    let settings = &target.settings;
    let mut found = pgherd_core::pgbackrest::local_instance(settings, &target.scope, None)?;
    if let (None, Some(h)) = (&found, &settings.pgbackrest.repository.host) {
        found = pgherd_core::pgbackrest::on_repository_host(settings, h, &[&target.scope])?;
    }
    let b = found.ok_or_else(|| {
        Error::Other(format!(
            "no instance of cluster {} runs on this host (among the Patroni configurations \
             the settings' patroni.configpath names), and it is not the repository host: run \
             pgherd backup --list on a member's host",
            target.scope
        ))
    })?;
    let info = b.info(target.timeout)?;
    let now = pgherd_core::names::unix_now() as i64;
    Ok(backups::BackupList::new(&b.stanza, info, now))
}

fn backup(target: &Target, kind: &str) -> Result<()> {
    let kind = BackupKind::parse(kind)
        .ok_or_else(|| Error::Other(format!("--type must be full, diff or incr, not {kind}")))?;
    let display = progress::Display::start();
    let ops = Operations {
        backup: Some(kind),
        ..Operations::default()
    };
    let report = cluster::run(target, &ops, false)?;
    drop(display);
    match report.backup_elsewhere {
        Some(cluster::Elsewhere::Leader(leader)) => {
            return Err(Error::Other(format!(
                "the leader {leader} of cluster {} does not run on this host (no instance of \
                 it among the Patroni configurations the settings' patroni.configpath names): \
                 run pgherd backup on its host",
                target.scope
            )))
        }
        Some(cluster::Elsewhere::RepositoryHost(host)) => {
            return Err(Error::Other(format!(
                "cluster {}'s repository is on the repository host {host}, where pgBackRest \
                 takes its backups, and this host is not it (a member, or no pgBackRest \
                 configuration in the settings' pgbackrest.repository.host.config_path): run \
                 pgherd backup on {host}",
                target.scope
            )))
        }
        None => {}
    }
    for change in &report.changes {
        println!("done: {change}");
    }
    if let Some(b) = report.backup {
        println!(
            "backup {} ({}): {} of database, {} in the repository",
            b.label,
            b.kind,
            status::human_bytes(b.size),
            status::human_bytes(b.repository_size)
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgherd: {e}");
            ExitCode::FAILURE
        }
    }
}
