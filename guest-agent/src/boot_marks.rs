//! The box's start-up as the guest sees it: the marks the initrd left in the environment
//! and the agent's own, each the end of a phase in time since the kernel started. The host
//! gets them in one `BOOT_MARKS` frame just before the builder's `STARTED` (see
//! docs/guest-agent.md, "Start-up marks").

use crate::sys;
use guest_agent::protocol::BootMark;
use std::time::Duration;

/// The environment variable through which the initrd hands its marks to init: words
/// `NAME=SECONDS` (SECONDS as /proc/uptime writes them, e.g. `1.62`), in the order the
/// phases ended.
pub const INITRD_MARKS_VAR: &str = "BOXBUILD_BOOT_MARKS";

/// The marks so far, oldest first.
pub struct Marks {
    marks: Vec<BootMark>,
}

impl Marks {
    /// Starts with the initrd's marks, read from `INITRD_MARKS_VAR` and removed from the
    /// environment so the builder does not inherit it, and marks the agent's own start:
    /// `initrd/switch_root` after an initrd's marks, else `boot` (the whole way from the
    /// kernel's start to this agent, through whatever initrd or init came before).
    pub fn start() -> Marks {
        let from_initrd = std::env::var(INITRD_MARKS_VAR).ok();
        std::env::remove_var(INITRD_MARKS_VAR);
        let mut marks = Marks {
            marks: parse_initrd_marks(from_initrd.as_deref().unwrap_or("")),
        };
        if marks.marks.is_empty() {
            marks.mark("boot");
        } else {
            marks.mark("initrd/switch_root");
        }
        marks
    }

    /// Marks the end of the phase `name` now; nothing if the boot clock cannot be read.
    pub fn mark(&mut self, name: &str) {
        if let Some(at) = sys::since_boot() {
            self.marks.push(BootMark {
                name: name.to_string(),
                at,
            });
        }
    }

    /// The marks, oldest first.
    pub fn list(&self) -> &[BootMark] {
        &self.marks
    }
}

/// The marks in the initrd's words `NAME=SECONDS` (see `INITRD_MARKS_VAR`); a word that is
/// not of that form, or a time earlier than the mark before it, is left out.
pub fn parse_initrd_marks(text: &str) -> Vec<BootMark> {
    let mut marks: Vec<BootMark> = Vec::new();
    for word in text.split_whitespace() {
        let (name, seconds) = match word.find('=') {
            Some(at) => (&word[..at], &word[at + 1..]),
            None => continue,
        };
        let at = match parse_seconds(seconds) {
            Some(at) => at,
            None => continue,
        };
        if name.is_empty() || marks.last().map_or(false, |last| last.at > at) {
            continue;
        }
        marks.push(BootMark {
            name: name.to_string(),
            at,
        });
    }
    marks
}

/// Decimal seconds such as `1.62` or `12` (at most nine decimals, no sign, no exponent).
pub fn parse_seconds(text: &str) -> Option<Duration> {
    let (whole, fraction) = match text.find('.') {
        Some(at) => (&text[..at], &text[at + 1..]),
        None => (text, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 9 {
        return None;
    }
    let secs: u64 = whole.parse().ok()?;
    let mut nanos: u32 = 0;
    for (i, b) in fraction.bytes().enumerate() {
        nanos += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
    }
    Some(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_read_as_proc_uptime_writes_them() {
        assert_eq!(parse_seconds("1.62"), Some(Duration::from_millis(1620)));
        assert_eq!(parse_seconds("12"), Some(Duration::from_secs(12)));
        assert_eq!(parse_seconds("0.000000001"), Some(Duration::new(0, 1)));
        assert_eq!(parse_seconds("3."), Some(Duration::from_secs(3)));
        for bad in ["", ".5", "-1", "1e3", "1.2.3", "0.0000000001", "x", "1,5"] {
            assert_eq!(parse_seconds(bad), None, "{}", bad);
        }
        assert_eq!(parse_seconds("99999999999999999999"), None);
    }

    #[test]
    fn the_initrds_marks_keep_their_order_and_skip_what_is_not_a_mark() {
        let marks = parse_initrd_marks(
            " kernel=1.50 junk =2 initrd/modules=1.80 late=1.70\n initrd/root=1.90 ",
        );
        let names: Vec<&str> = marks.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["kernel", "initrd/modules", "initrd/root"]);
        assert_eq!(marks[0].at, Duration::from_millis(1500));
        assert_eq!(marks[2].at, Duration::from_millis(1900));
        assert!(parse_initrd_marks("").is_empty());
    }
}
