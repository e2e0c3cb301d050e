//! Following a cluster's keys in etcd: read them, then each change from a
//! watch. A broken connection or watch is re-armed after reading the keys
//! again (changes missed meanwhile are seen then), with a backoff.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pgherd_core::dcs::Dcs;
use pgherd_core::error::Result;
use pgherd_core::manifest::Login;
use pgherd_core::settings::EtcdSettings;

/// How long one etcd request may take.
pub const ETCD_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait before trying etcd again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What a pass is given: why it runs, the keys under the prefix with
/// their values (in key order), and whether it is the first of a session
/// (after a connection).
pub type Pass<'p> = dyn FnMut(&str, &[(String, String)], bool) + 'p;

/// One pass's input, as the watching thread sends it.
struct Seen {
    why: String,
    kvs: Vec<(String, String)>,
    first: bool,
}

/// Follows the keys under `prefix` until the process is stopped: `pass`
/// runs once the keys are read, then after each batch of changes to a key
/// `relevant` accepts; `log` tells of broken sessions. The watch runs on
/// a thread of its own, always reading (etcd's keep-alive pings answered
/// however long a pass takes); changes that come during a pass are seen
/// together by the next one.
pub fn follow(
    etcd: &EtcdSettings,
    login: Option<&Login>,
    prefix: &str,
    relevant: fn(&str, &str) -> bool,
    log: fn(&str),
    pass: &mut Pass<'_>,
) -> ! {
    let (tx, rx) = std::sync::mpsc::channel::<Seen>();
    let (etcd, login, prefix) = (etcd.clone(), login.cloned(), prefix.to_string());
    std::thread::spawn(move || {
        let mut backoff = pgherd_core::wait::POLL_INTERVAL;
        let mut reason = "started".to_string();
        loop {
            let started = Instant::now();
            if let Err(e) = session(&etcd, login.as_ref(), &prefix, relevant, &reason, &tx) {
                log(&format!("{e}; trying again"));
                if started.elapsed() > MAX_BACKOFF {
                    backoff = pgherd_core::wait::POLL_INTERVAL;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                reason = "etcd reached again".into();
            }
        }
    });
    // The thread never ends, so neither does the channel.
    while let Ok(mut seen) = rx.recv() {
        while let Ok(next) = rx.try_recv() {
            seen = Seen {
                why: format!("{}; {}", seen.why, next.why),
                kvs: next.kvs,
                first: seen.first || next.first,
            };
        }
        pass(&seen.why, &seen.kvs, seen.first);
    }
    log("the thread watching etcd ended; stopping");
    std::process::exit(1)
}

/// Connects, sends the keys, then keeps them up to date from the watch's
/// events and sends them again on each relevant change.
fn session(
    etcd: &EtcdSettings,
    login: Option<&Login>,
    prefix: &str,
    relevant: fn(&str, &str) -> bool,
    reason: &str,
    tx: &std::sync::mpsc::Sender<Seen>,
) -> Result<()> {
    let send = |why: String, kvs: &BTreeMap<String, String>, first: bool| {
        let _ = tx.send(Seen {
            why,
            kvs: kvs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            first,
        });
    };
    let mut dcs = Dcs::connect_watching(etcd, login, ETCD_TIMEOUT)?;
    let (kvs, revision) = dcs.get_prefix_at(prefix)?;
    let mut kvs: BTreeMap<String, String> = kvs.into_iter().collect();
    send(reason.to_string(), &kvs, true);
    let mut watch = dcs.watch_prefix(prefix, revision + 1)?;
    loop {
        let mut changed = Vec::new();
        for (key, value) in dcs.next_changes(&mut watch)? {
            if relevant(prefix, &key) {
                changed.push(key.trim_start_matches(prefix).to_string());
            }
            match value {
                Some(v) => kvs.insert(key, v),
                None => kvs.remove(&key),
            };
        }
        if !changed.is_empty() {
            send(format!("{} changed", changed.join(", ")), &kvs, false);
        }
    }
}
