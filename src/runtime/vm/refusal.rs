//! QEMU refusing to start: its own words, from what it wrote to stderr, turned into one
//! set-up error line, with the boxbuild option the refusal concerns where that is clear.
//! Anything that stops QEMU before it answers on its control channel (an option it
//! rejects, memory it cannot allocate, a file, firmware, device or socket it cannot open)
//! ends here, as exit code 125.

use crate::sys::error::Error;
use std::path::Path;

/// The longest quote taken from QEMU, in characters.
const MAX_QUOTE: usize = 400;
/// How many of QEMU's lines are quoted at most.
const MAX_LINES: usize = 3;

/// QEMU's own message in `stderr` (the text it wrote while starting), as one line:
/// its error lines joined by "; ", warnings left out unless QEMU said nothing else, cut
/// to 400 characters. None when it wrote nothing.
pub fn quote(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.contains("warning:"))
        .collect();
    let chosen = if errors.is_empty() { &lines } else { &errors };
    if chosen.is_empty() {
        return None;
    }
    let joined = chosen[chosen.len().saturating_sub(MAX_LINES)..].join("; ");
    Some(match joined.char_indices().nth(MAX_QUOTE) {
        Some((cut, _)) => format!("{}...", &joined[..cut]),
        None => joined,
    })
}

/// What to do about a refusal, when QEMU's message points at one of boxbuild's options.
pub fn hint(message: &str, binary: &str) -> Option<String> {
    let m = message.to_ascii_lowercase();
    if m.contains("cpu model") {
        Some(format!(
            "check --cpu ('{binary} -cpu help' lists the models)"
        ))
    } else if m.contains("machine type") {
        Some(format!(
            "check --machine ('{binary} -machine help' lists the types)"
        ))
    } else if m.contains("memory") || m.contains("ram size") {
        Some("give the box less memory with --box-memory".into())
    } else if m.contains("smp") || m.contains("cpus") {
        Some("check --box-smp-cpus".into())
    } else {
        None
    }
}

/// The set-up error for a QEMU that did not start: QEMU's message from `stderr` with a
/// hint, or `fallback` (what boxbuild saw, e.g. a timeout) when QEMU said nothing.
pub fn error(stderr: &str, binary: &str, fallback: &str) -> Error {
    match quote(stderr) {
        Some(message) => {
            let hint = hint(&message, binary)
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
            Error::setup(format!("QEMU refused to start the box: {message}{hint}"))
        }
        None => Error::setup(format!("QEMU could not start the box: {fallback}")),
    }
}

/// `error` for the stderr QEMU wrote to the file `log`.
pub fn error_from_log(log: &Path, binary: &str, fallback: &str) -> Error {
    let text = std::fs::read(log)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    error(&text, binary, fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIN: &str = "qemu-system-x86_64";

    #[test]
    fn quotes_qemus_lines_without_warnings() {
        let said = "qemu-system-x86_64: warning: host lacks x\n\nqemu-system-x86_64: unsupported machine type\nUse -machine help to list supported machines\n";
        assert_eq!(
            quote(said).unwrap(),
            "qemu-system-x86_64: unsupported machine type; Use -machine help to list supported machines"
        );
        assert_eq!(
            quote("qemu-system-x86_64: warning: only this\n").unwrap(),
            "qemu-system-x86_64: warning: only this"
        );
        assert_eq!(quote(" \n\n"), None);
    }

    #[test]
    fn long_output_is_cut_on_a_character_boundary() {
        let said = "é".repeat(1000);
        let q = quote(&said).unwrap();
        assert_eq!(q.chars().count(), MAX_QUOTE + 3);
        let many: String = (0..10).map(|i| format!("line {i}\n")).collect();
        assert_eq!(quote(&many).unwrap(), "line 7; line 8; line 9");
    }

    #[test]
    fn hints_name_the_option() {
        let cases = [
            (
                "qemu-system-x86_64: unable to find CPU model 'nonsense'",
                "--cpu",
            ),
            ("qemu-system-x86_64: unsupported machine type", "--machine"),
            (
                "qemu-system-x86_64: cannot set up guest memory 'pc.ram': Cannot allocate memory",
                "--box-memory",
            ),
            (
                "qemu-system-x86_64: Invalid SMP CPUs 9999. The max CPUs supported by machine 'pc' is 255",
                "--box-smp-cpus",
            ),
        ];
        for (message, option) in cases {
            assert!(hint(message, BIN).unwrap().contains(option), "{message}");
        }
        assert_eq!(hint("qemu: could not open kernel file '/k'", BIN), None);
    }

    #[test]
    fn the_error_is_one_set_up_line() {
        let e = error(
            "qemu-system-x86_64: unable to find CPU model 'nonsense'\n",
            BIN,
            "unused",
        );
        assert_eq!(e.exit_code(), 125);
        let text = e.to_string();
        assert!(text.starts_with("QEMU refused to start the box: qemu-system-x86_64: unable to find CPU model 'nonsense'; check --cpu"), "{text}");
        assert!(!text.contains('\n'));
        let silent = error("", BIN, "it did not connect within 30s").to_string();
        assert_eq!(
            silent,
            "QEMU could not start the box: it did not connect within 30s"
        );
    }
}
