//! The box's console log (a VM's serial console, a container's output): its last lines
//! for failure reports, and following it onto the terminal (`--box-console`).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The last `lines` lines of a log, without terminal escape sequences, indented for
/// display under a one-line error.
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = strip_escapes(&String::from_utf8_lossy(&bytes));
    let all: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("  | {l}\n"))
        .collect()
}

fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ params final-byte
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for n in chars.by_ref() {
                        if ('@'..='~').contains(&n) {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Copies what QEMU appends to the console log onto `stream` until `stop` is set; the
/// last read after `stop` catches what was written until then. Errors: the copying
/// thread cannot be started.
pub fn follow_console(
    path: std::path::PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stream: Stream,
) -> crate::sys::error::Result<std::thread::JoinHandle<()>> {
    use std::sync::atomic::Ordering;
    crate::sys::threads::spawn("console", move || {
        let mut offset = 0u64;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let done = stop.load(Ordering::SeqCst);
            if let Ok(mut f) = File::open(&path) {
                if f.seek(SeekFrom::Start(offset)).is_ok() {
                    while let Ok(n) = f.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        offset += n as u64;
                        let _ = match stream {
                            Stream::Stdout => io::stdout().write_all(&buf[..n]),
                            Stream::Stderr => io::stderr().write_all(&buf[..n]),
                        };
                    }
                }
            }
            if done {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines_without_escapes() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("c.log");
        std::fs::write(&p, "one\n\x1b[2J\x1b[0mtwo\r\nthree\n\nfour\n").unwrap();
        assert_eq!(tail(&p, 2), "  | three\n  | four\n");
        assert_eq!(tail(&p, 10), "  | one\n  | two\n  | three\n  | four\n");
        assert_eq!(tail(&tmp.path().join("missing"), 3), "");
    }
}
