//! `pgherd vip`: a virtual IP address that follows the cluster's leader.
//! On each member it watches the leader key in etcd and reads it again
//! every interval (a linearizable read: a host cut off from etcd's quorum
//! gets no answer); the address is on this host's interface while the
//! last answer, no older than `release_after`, names this member, and
//! nowhere else. Taking it announces it with a gratuitous ARP, so that
//! clients on the network reach the new holder at once.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pgherd_core::dcs::{cluster_prefix, Dcs};
use pgherd_core::error::{Error, Result};
use pgherd_core::manifest::Login;
use pgherd_core::settings::{Settings, SettingsSource};
use serde::Deserialize;

use crate::follow;

mod net;
use net::{addresses, ip, network_of};

/// The configuration file of `pgherd vip`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipConfig {
    /// The cluster (Patroni scope).
    pub cluster: String,
    /// pgherd site settings for etcd's endpoints, TLS, credentials and
    /// namespace: a path; when absent, the default settings file.
    #[serde(default)]
    pub settings: Option<PathBuf>,
    /// This host's member: its Patroni name, the leader key's value when
    /// it leads.
    pub node: String,
    /// The virtual address, with its prefix length (`10.0.0.50/24`); without
    /// one, the prefix of the interface's network that holds it.
    pub address: String,
    /// The interface to put it on; by default the one whose network holds
    /// the address.
    #[serde(default)]
    pub interface: Option<String>,
    /// How often the leader key is read besides the watch, in milliseconds.
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// How long the address stays without an answer from etcd that this
    /// member leads, in milliseconds: keep it below Patroni's ttl minus
    /// loop_wait, the earliest another member can take the leader key.
    #[serde(default = "default_release_after")]
    pub release_after_ms: u64,
}

fn default_interval() -> u64 {
    1000
}

fn default_release_after() -> u64 {
    3000
}

/// An IPv4 address with an optional prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipAddress {
    pub ip: Ipv4Addr,
    pub prefix: Option<u8>,
}

impl VipAddress {
    pub fn parse(text: &str) -> std::result::Result<VipAddress, String> {
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (text, None),
        };
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{text:?} is not an IPv4 address such as 10.0.0.50/24"))?;
        let prefix = match prefix {
            None => None,
            Some(p) => Some(
                p.parse::<u8>()
                    .ok()
                    .filter(|p| (1..=32).contains(p))
                    .ok_or_else(|| format!("{text:?}: the prefix length is 1 to 32"))?,
            ),
        };
        Ok(VipAddress { ip, prefix })
    }
}

impl VipConfig {
    pub fn load(path: &Path) -> Result<VipConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(path, "reading the VIP configuration", e))?;
        let config: VipConfig = serde_yaml::from_str(&text).map_err(|e| Error::Settings {
            origin: path.display().to_string(),
            msg: e.to_string(),
        })?;
        config.check().map_err(|msg| Error::Settings {
            origin: path.display().to_string(),
            msg,
        })?;
        Ok(config)
    }

    fn check(&self) -> std::result::Result<(), String> {
        pgherd_core::names::Name::parse("cluster", &self.cluster)?;
        if self.node.trim().is_empty() {
            return Err("node: the member's Patroni name is empty".into());
        }
        VipAddress::parse(&self.address).map_err(|e| format!("address: {e}"))?;
        if self.interval_ms < 100 {
            return Err(format!(
                "interval_ms: {} is below 100 ms; etcd would be read too often",
                self.interval_ms
            ));
        }
        if self.release_after_ms < 2 * self.interval_ms {
            return Err(format!(
                "release_after_ms ({}) must be at least two intervals ({} ms), or one slow \
                 read would move the address",
                self.release_after_ms,
                2 * self.interval_ms
            ));
        }
        Ok(())
    }
}

/// What the last answer from etcd said, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub at: Instant,
    pub leader: Option<String>,
}

/// Whether this member should hold the address now: the last answer
/// named it, and is recent enough.
pub fn wanted(seen: Option<&Seen>, node: &str, now: Instant, release_after: Duration) -> bool {
    seen.is_some_and(|s| {
        s.leader.as_deref() == Some(node) && now.saturating_duration_since(s.at) < release_after
    })
}

fn log(msg: &str) {
    eprintln!("pgherd vip: {msg}");
}

pub struct Vip {
    config: VipConfig,
    settings: Settings,
    login: Option<Login>,
    key: String,
    ip: Ipv4Addr,
    interface: String,
    prefix: u8,
}

impl Vip {
    /// Reads the settings and finds the interface; fails when no
    /// interface's network holds the address.
    pub fn new(config: VipConfig, login: Option<Login>) -> Result<Vip> {
        let settings =
            Settings::load(&SettingsSource::file_or_default(config.settings.as_deref()))?;
        let login = pgherd_core::dcs::effective_login(login.as_ref(), &settings.patroni.etcd);
        let key = format!(
            "{}leader",
            cluster_prefix(&settings.patroni.etcd.namespace, &config.cluster)
        );
        let address = VipAddress::parse(&config.address).map_err(Error::Other)?;
        let addrs = addresses()?;
        let (interface, prefix) = match (&config.interface, network_of(&addrs, address.ip)) {
            (Some(name), found) => {
                let prefix = match found {
                    Some((ref f, p)) if f == name => p,
                    _ => 32,
                };
                (name.clone(), address.prefix.unwrap_or(prefix))
            }
            (None, Some((name, prefix))) => (name, address.prefix.unwrap_or(prefix)),
            (None, None) => {
                return Err(Error::Other(format!(
                    "no interface of this host is on a network that holds {}: give the \
                     address of the members' network, or name the interface",
                    address.ip
                )))
            }
        };
        Ok(Vip {
            ip: address.ip,
            interface,
            prefix,
            config,
            settings,
            login,
            key,
        })
    }

    fn cidr(&self) -> String {
        format!("{}/{}", self.ip, self.prefix)
    }

    fn held(&self) -> Result<bool> {
        Ok(addresses()?
            .iter()
            .any(|a| a.ip == self.ip && a.interface == self.interface))
    }

    /// Puts the address on the interface or takes it off, as `want` says.
    fn apply(&self, want: bool, why: &str) {
        let held = match self.held() {
            Ok(h) => h,
            Err(e) => return log(&format!("{e}; the address left as it is")),
        };
        if want == held {
            return;
        }
        let verb = if want { "add" } else { "del" };
        let cidr = self.cidr();
        match ip(&["-4", "addr", verb, &cidr, "dev", &self.interface]) {
            Ok(()) if want => {
                log(&format!("took {cidr} on {}: {why}", self.interface));
                self.announce();
            }
            Ok(()) => log(&format!("released {cidr} from {}: {why}", self.interface)),
            Err(e) => log(&e.to_string()),
        }
    }

    /// One gratuitous ARP, so that the network's neighbours forget the
    /// former holder. Not waited for (arping lingers a second after it),
    /// and not repeated: a repeat could come after the address moved on.
    fn announce(&self) {
        let (ip, interface) = (self.ip.to_string(), self.interface.clone());
        std::thread::spawn(move || {
            let out = Command::new("arping")
                .args(["-q", "-U", "-c", "1", "-I", &interface, &ip])
                .output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => log(&format!(
                    "arping -U on {interface} failed ({}): {}; neighbours learn the move \
                     when their ARP entry expires",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => log(&format!(
                    "cannot run arping ({e}; install iputils-arping): neighbours learn the \
                     move when their ARP entry expires"
                )),
            }
        });
    }

    /// Whether this host holds the address exactly when its member leads,
    /// from one read of the leader key: a line saying what was seen, as an
    /// error when it does not.
    pub fn verify(&self) -> Result<String> {
        let mut dcs = Dcs::connect(
            &self.settings.patroni.etcd,
            self.login.as_ref(),
            follow::ETCD_TIMEOUT,
        )?;
        let mut seen = None;
        self.read(&mut dcs, &mut seen)?;
        let leader = seen.and_then(|s| s.leader);
        let leads = leader.as_deref() == Some(self.config.node.as_str());
        let held = self.held()?;
        let line = format!(
            "{} {} {} on {}; the leader key names {}",
            self.config.node,
            if held { "holds" } else { "does not hold" },
            self.cidr(),
            self.interface,
            leader.as_deref().unwrap_or("no member")
        );
        if held == leads {
            Ok(line)
        } else {
            Err(Error::Other(line))
        }
    }

    /// Takes the address off this host if it is on it.
    pub fn release(&self, why: &str) {
        self.apply(false, why);
    }

    fn describe(&self, seen: Option<&Seen>, now: Instant) -> String {
        match seen {
            None => "etcd not answered yet".into(),
            Some(s) if now.saturating_duration_since(s.at) >= self.release_after() => format!(
                "no answer from etcd for {:.1} s",
                now.saturating_duration_since(s.at).as_secs_f64()
            ),
            Some(Seen { leader: None, .. }) => "no member holds the leader key".into(),
            Some(Seen {
                leader: Some(l), ..
            }) if *l == self.config.node => format!("{l} leads"),
            Some(Seen {
                leader: Some(l), ..
            }) => format!("{l} leads, not {}", self.config.node),
        }
    }

    fn release_after(&self) -> Duration {
        Duration::from_millis(self.config.release_after_ms)
    }

    fn decide(&self, seen: Option<&Seen>) {
        let now = Instant::now();
        let want = wanted(seen, &self.config.node, now, self.release_after());
        self.apply(want, &self.describe(seen, now));
    }

    /// Follows the leader until the process is stopped.
    pub fn run(&self) -> ! {
        log(&format!(
            "following {} for {} on {} ({})",
            self.key,
            self.cidr(),
            self.interface,
            self.config.node
        ));
        let interval = Duration::from_millis(self.config.interval_ms);
        let mut seen: Option<Seen> = None;
        loop {
            let started = Instant::now();
            if let Err(e) = self.session(&mut seen, interval) {
                log(&format!("{e}; trying again"));
            }
            self.decide(seen.as_ref());
            std::thread::sleep(interval.saturating_sub(started.elapsed()).min(interval / 4));
        }
    }

    /// One connection: the key read, then followed by its watch and read
    /// again whenever the watch is quiet for an interval.
    fn session(&self, seen: &mut Option<Seen>, interval: Duration) -> Result<()> {
        let mut dcs =
            Dcs::connect_watching(&self.settings.patroni.etcd, self.login.as_ref(), interval)?;
        let revision = self.read(&mut dcs, seen)?;
        self.decide(seen.as_ref());
        let mut watch = dcs.watch_prefix(&self.key, revision + 1)?;
        loop {
            match dcs.next_changes_within(&mut watch, interval)? {
                Some(changes) => {
                    for (key, value) in changes {
                        if key == self.key {
                            *seen = Some(Seen {
                                at: Instant::now(),
                                leader: value,
                            });
                        }
                    }
                }
                None => {
                    self.read(&mut dcs, seen)?;
                }
            }
            self.decide(seen.as_ref());
        }
    }

    fn read(&self, dcs: &mut Dcs, seen: &mut Option<Seen>) -> Result<i64> {
        let (kvs, revision) = dcs.get_prefix_at(&self.key)?;
        *seen = Some(Seen {
            at: Instant::now(),
            leader: kvs
                .into_iter()
                .find(|(k, _)| *k == self.key)
                .map(|(_, v)| v),
        });
        Ok(revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_and_without_a_prefix() {
        type Expected = std::result::Result<(&'static str, Option<u8>), &'static str>;
        let table: &[(&str, Expected)] = &[
            ("10.0.0.50/24", Ok(("10.0.0.50", Some(24)))),
            ("10.0.0.50", Ok(("10.0.0.50", None))),
            ("10.0.0.50/32", Ok(("10.0.0.50", Some(32)))),
            ("10.0.0.50/0", Err("prefix length")),
            ("10.0.0.50/33", Err("prefix length")),
            ("10.0.0/24", Err("not an IPv4 address")),
            ("fe80::1", Err("not an IPv4 address")),
        ];
        for (text, expected) in table {
            match (VipAddress::parse(text), expected) {
                (Ok(a), Ok((ip, prefix))) => {
                    assert_eq!((a.ip, a.prefix), (ip.parse().unwrap(), *prefix), "{text}")
                }
                (Err(e), Err(part)) => assert!(e.contains(part), "{text}: {e}"),
                (got, _) => panic!("{text}: {got:?}"),
            }
        }
    }

    #[test]
    fn the_address_is_held_only_on_a_recent_answer_naming_this_member() {
        let now = Instant::now();
        let release = Duration::from_secs(3);
        let seen = |ago: u64, leader: Option<&str>| Seen {
            at: now - Duration::from_millis(ago),
            leader: leader.map(str::to_string),
        };
        let table = [
            (None, false),
            (Some(seen(0, Some("db1"))), true),
            (Some(seen(2_999, Some("db1"))), true),
            (Some(seen(3_000, Some("db1"))), false),
            (Some(seen(0, Some("db2"))), false),
            (Some(seen(0, None)), false),
        ];
        for (seen, expected) in table {
            assert_eq!(
                wanted(seen.as_ref(), "db1", now, release),
                expected,
                "{seen:?}"
            );
        }
    }

    #[test]
    fn configurations_are_checked() {
        let parse = |extra: &str| -> std::result::Result<(), String> {
            let text = format!("cluster: main\nnode: db1\naddress: 10.0.0.50/24\n{extra}");
            let c: VipConfig = serde_yaml::from_str(&text).map_err(|e| e.to_string())?;
            c.check()
        };
        assert_eq!(parse(""), Ok(()));
        assert!(parse("interval_ms: 50\n")
            .unwrap_err()
            .contains("interval_ms"));
        assert!(parse("release_after_ms: 1500\n")
            .unwrap_err()
            .contains("release_after_ms"));
        assert!(parse("colour: red\n").unwrap_err().contains("colour"));
        let c: VipConfig =
            serde_yaml::from_str("cluster: main\nnode: db1\naddress: 10.0.0/24\n").unwrap();
        assert!(c.check().unwrap_err().contains("address"));
    }
}
