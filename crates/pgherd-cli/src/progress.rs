//! The progress display of waits on a terminal: one line, redrawn at each
//! look, saying what is awaited, for how long, and what was last seen. Off
//! when standard error is not a terminal (scripts, logs).

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pgherd_core::wait::{observe_waits, Progress};

const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
/// Columns the line may use.
const WIDTH: usize = 100;

static DRAWN: AtomicBool = AtomicBool::new(false);
static FRAME: AtomicUsize = AtomicUsize::new(0);

/// The display for as long as it lives; dropping it clears its line.
pub struct Display;

impl Display {
    pub fn start() -> Option<Display> {
        // SAFETY: isatty only inspects a descriptor.
        if unsafe { libc::isatty(2) } != 1 {
            return None;
        }
        observe_waits(|p| draw(&line(p, FRAME.fetch_add(1, Ordering::Relaxed))));
        Some(Display)
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        clear();
    }
}

/// The text of one redraw.
pub fn line(p: &Progress<'_>, frame: usize) -> String {
    let seen = p.last_seen.lines().next().unwrap_or_default();
    let text = format!(
        "{} waiting for {} ({}s): {seen}",
        FRAMES[frame % FRAMES.len()],
        p.what,
        p.elapsed.as_secs()
    );
    match text.char_indices().nth(WIDTH) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

fn draw(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{text}");
    let _ = err.flush();
    DRAWN.store(true, Ordering::Relaxed);
}

/// Clears the progress line, if one was drawn.
fn clear() {
    if DRAWN.swap(false, Ordering::Relaxed) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_line_says_what_for_how_long_and_what_was_seen() {
        let p = Progress {
            what: "pg2 to lead",
            last_seen: "pg1 leads, pg2 streaming\nlog tail",
            elapsed: Duration::from_millis(3400),
        };
        assert_eq!(
            line(&p, 11),
            "⠙ waiting for pg2 to lead (3s): pg1 leads, pg2 streaming"
        );
        let long = "x".repeat(300);
        let p = Progress {
            what: "y",
            last_seen: &long,
            elapsed: Duration::ZERO,
        };
        assert_eq!(line(&p, 0).chars().count(), WIDTH + 1);
    }
}
