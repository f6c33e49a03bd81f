//! Where the builder's output goes: live to the terminal and into `result.log` in the
//! target dir. Also reads the console log's tail for failure reports.

use crate::error::{Context, Result};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

pub struct BuildOutput {
    log: File,
}

impl BuildOutput {
    pub fn create(target_dir: &Path) -> Result<BuildOutput> {
        let path = target_dir.join("result.log");
        let log = File::create(&path).context(|| format!("cannot create {}", path.display()))?;
        Ok(BuildOutput { log })
    }

    pub fn stdout(&mut self, bytes: &[u8]) {
        let mut out = io::stdout().lock();
        let _ = out.write_all(bytes);
        let _ = out.flush();
        let _ = self.log.write_all(bytes);
    }

    pub fn stderr(&mut self, bytes: &[u8]) {
        let mut err = io::stderr().lock();
        let _ = err.write_all(bytes);
        let _ = err.flush();
        let _ = self.log.write_all(bytes);
    }

    /// Into `result.log` only (what boxbuild reports on the terminal itself).
    pub fn log_only(&mut self, bytes: &[u8]) {
        let _ = self.log.write_all(bytes);
    }
}

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
) -> crate::error::Result<std::thread::JoinHandle<()>> {
    use std::sync::atomic::Ordering;
    crate::threads::spawn("console", move || {
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
