//! Waiting for observed state: every wait polls what it waits for at a
//! short interval, has a deadline, and on timeout says what it last saw.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The answer of one look at the awaited thing.
pub enum Probe<T> {
    Ready(T),
    /// Not yet; the text says what was seen, for the timeout message.
    Waiting(String),
    /// Waiting further is pointless (e.g. the process died).
    Failed(Error),
}

/// One look of a wait, for whoever displays progress (the CLI).
pub struct Progress<'a> {
    pub what: &'a str,
    pub last_seen: &'a str,
    pub elapsed: Duration,
}

type Observer = Box<dyn Fn(&Progress<'_>) + Send + Sync>;

static OBSERVER: OnceLock<Observer> = OnceLock::new();

/// Has every later look of every wait reported to `observer` (once per
/// process; later calls are ignored). Modules set none.
pub fn observe_waits(observer: impl Fn(&Progress<'_>) + Send + Sync + 'static) {
    let _ = OBSERVER.set(Box::new(observer));
}

/// The interval between two looks.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `probe` until it is ready, fails, or `timeout` passes; `context`
/// adds to the timeout message what only the caller can gather (log tails).
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Probe<T>,
    context: impl Fn() -> String,
) -> Result<T> {
    wait_looking(what, timeout, |_| probe(), context, true)
}

/// `wait_until` for a probe that itself blocks until what it waits for
/// happens or the time it is given passes (a child's exit): one look
/// follows another without a pause, so the wait ends the moment it can.
pub fn wait_blocking<T>(
    what: &str,
    timeout: Duration,
    probe: impl FnMut(Duration) -> Probe<T>,
    context: impl Fn() -> String,
) -> Result<T> {
    wait_looking(what, timeout, probe, context, false)
}

fn wait_looking<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut(Duration) -> Probe<T>,
    context: impl Fn() -> String,
    pause: bool,
) -> Result<T> {
    let start = Instant::now();
    loop {
        let look = POLL_INTERVAL.min(timeout.saturating_sub(start.elapsed()));
        let last_seen = match probe(look) {
            Probe::Ready(v) => return Ok(v),
            Probe::Failed(e) => return Err(e),
            Probe::Waiting(seen) => seen,
        };
        if let Some(observer) = OBSERVER.get() {
            observer(&Progress {
                what,
                last_seen: &last_seen,
                elapsed: start.elapsed(),
            });
        }
        if start.elapsed() >= timeout {
            let extra = context();
            return Err(Error::Timeout {
                what: what.to_string(),
                waited_secs: start.elapsed().as_secs(),
                last_seen: if extra.is_empty() {
                    last_seen
                } else {
                    format!("{last_seen}\n{extra}")
                },
            });
        }
        if pause {
            std::thread::sleep(POLL_INTERVAL.min(timeout.saturating_sub(start.elapsed())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_returns_at_once() {
        let v = wait_until("x", Duration::from_secs(5), || Probe::Ready(3), String::new).unwrap();
        assert_eq!(v, 3);
    }

    #[test]
    fn timeout_says_what_was_last_seen() {
        let mut n = 0;
        let err = wait_until::<()>(
            "the leader",
            Duration::from_millis(250),
            || {
                n += 1;
                Probe::Waiting(format!("look {n}"))
            },
            || "log tail".into(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("timed out after 0s waiting for the leader; last seen: look "),
            "{err}"
        );
        assert!(err.ends_with("\nlog tail"), "{err}");
        assert!(n >= 2, "polled only {n} times");
    }

    #[test]
    fn failure_stops_the_wait() {
        let err = wait_until::<()>(
            "x",
            Duration::from_secs(30),
            || Probe::Failed(Error::Other("process died".into())),
            String::new,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "process died");
    }
}
