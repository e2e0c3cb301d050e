//! Who answers for an address on the lab's bridge, as a client there sees
//! it: `arping` from the machine, broadcasting (never unicast, so that a
//! second holder answers too) every 100 ms, each reply kept with the time
//! it came and the hardware address that sent it. arping's interval is
//! whole seconds: ten of them, started 100 ms apart.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many arping processes, each probing once a second.
const PROBERS: u32 = 10;

pub struct ArpWatch {
    children: Vec<Child>,
    replies: Arc<Mutex<Vec<(Instant, String)>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// The hardware address in one line of arping's output, such as
/// `Unicast reply from 10.231.0.100 [AA:BB:CC:DD:EE:FF]  0.612ms`.
pub fn arping_reply_mac(line: &str) -> Option<String> {
    if !line.contains("reply from") {
        return None;
    }
    let start = line.find('[')? + 1;
    let end = start + line[start..].find(']')?;
    Some(line[start..end].to_ascii_lowercase())
}

/// Replies from two hardware addresses closer together than `within`:
/// answers to one broadcast, from two holders at once.
pub fn two_holders(replies: &[(Instant, String)], within: Duration) -> Vec<(String, String)> {
    replies
        .windows(2)
        .filter(|w| w[0].1 != w[1].1 && w[1].0.duration_since(w[0].0) < within)
        .map(|w| (w[0].1.clone(), w[1].1.clone()))
        .collect()
}

/// The holders in the order they answered, each once per stretch.
pub fn holders_in_turn(replies: &[(Instant, String)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, mac) in replies {
        if out.last() != Some(mac) {
            out.push(mac.clone());
        }
    }
    out
}

/// Each change of holder: the former, the next, and how long nobody
/// answered between them.
pub fn handovers(replies: &[(Instant, String)]) -> Vec<(String, String, Duration)> {
    replies
        .windows(2)
        .filter(|w| w[0].1 != w[1].1)
        .map(|w| {
            (
                w[0].1.clone(),
                w[1].1.clone(),
                w[1].0.duration_since(w[0].0),
            )
        })
        .collect()
}

impl ArpWatch {
    pub fn start(address: &str) -> ArpWatch {
        let replies = Arc::new(Mutex::new(Vec::new()));
        let (mut children, mut readers) = (Vec::new(), Vec::new());
        for i in 0..PROBERS {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(1000 / u64::from(PROBERS)));
            }
            let mut child = Command::new("stdbuf")
                .args(["-oL", "arping", "-b", "-I", &crate::Lab::bridge(), address])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("arping (iputils-arping, scripts/setup.sh installs it)");
            let stdout = child.stdout.take().expect("arping's output");
            let kept = replies.clone();
            readers.push(std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(mac) = arping_reply_mac(&line) {
                        kept.lock().unwrap().push((Instant::now(), mac));
                    }
                }
            }));
            children.push(child);
        }
        ArpWatch {
            children,
            replies,
            readers,
        }
    }

    /// The replies so far, in the order they came.
    pub fn replies(&self) -> Vec<(Instant, String)> {
        let mut replies = self.replies.lock().unwrap().clone();
        replies.sort_by_key(|(at, _)| *at);
        replies
    }

    pub fn finish(mut self) -> Vec<(Instant, String)> {
        self.stop();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        self.replies()
    }

    fn stop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// No arping left behind by a test that failed.
impl Drop for ArpWatch {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_name_their_sender_and_two_at_once_are_found() {
        assert_eq!(
            arping_reply_mac("Unicast reply from 10.231.0.100 [AA:BB:CC:00:11:22]  0.612ms"),
            Some("aa:bb:cc:00:11:22".into())
        );
        assert_eq!(
            arping_reply_mac("ARPING 10.231.0.100 from 10.231.0.1 pgherdlab0"),
            None
        );
        let t = Instant::now();
        let at = |ms: u64, mac: &str| (t + Duration::from_millis(ms), mac.to_string());
        let moved = [at(0, "a"), at(100, "a"), at(2_300, "b"), at(2_400, "b")];
        assert!(two_holders(&moved, Duration::from_millis(50)).is_empty());
        assert_eq!(holders_in_turn(&moved), ["a", "b"]);
        assert_eq!(
            handovers(&moved),
            [("a".into(), "b".into(), Duration::from_millis(2_200))]
        );
        let both = [at(0, "a"), at(100, "a"), at(101, "b"), at(200, "a")];
        assert_eq!(
            two_holders(&both, Duration::from_millis(50)),
            [("a".to_string(), "b".to_string())]
        );
    }
}
