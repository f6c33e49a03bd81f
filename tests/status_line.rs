//! The status line: on a terminal it appears while the builder is silent and is gone once
//! output resumes; it never reaches result.log or a pipe.

mod common;

use common::{stderr, stdout, Env};
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A build that prints a line, stays silent longer than the line waits, and prints again.
const SILENT_SCRIPT: &str = "echo before-silence\nsleep 8\necho after-silence\n";

/// Words only the status line uses.
const STATUS_WORDS: [&str; 3] = ["no output for", "box CPU", "boxbuild: building"];

/// A new pseudo-terminal of 200 columns: (master, slave).
fn pty() -> (File, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 200,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into the given integers; name and termios
    // may be null, the window size is read only.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and belong to nobody else.
    unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Runs `command` with stdout and stderr on a new terminal; returns its exit code and all
/// it wrote there.
fn run_on_terminal(mut command: Command) -> (Option<i32>, String) {
    let (mut master, slave) = pty();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    let mut child = command.spawn().unwrap();
    // The terminal ends (EIO on the master) only when no copy of the slave is left open.
    drop(command);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        let _ = tx.send(all);
    });
    let status = child.wait().unwrap();
    let written = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the terminal closes when boxbuild ends");
    (
        status.code(),
        String::from_utf8_lossy(&written).into_owned(),
    )
}

/// The lines a terminal shows after `raw` was written to it: carriage returns, line
/// clearing and cursor moves applied, other escape sequences dropped, trailing blanks cut.
fn screen(raw: &str) -> Vec<String> {
    let mut lines: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                row += 1;
                if lines.len() <= row {
                    lines.push(Vec::new());
                }
            }
            '\r' => col = 0,
            '\x1b' if chars.peek() == Some(&'[') => {
                chars.next();
                let mut param = String::new();
                let mut command = ' ';
                for n in chars.by_ref() {
                    if ('@'..='~').contains(&n) {
                        command = n;
                        break;
                    }
                    param.push(n);
                }
                let n: usize = param.parse().unwrap_or(0);
                match (command, param.as_str()) {
                    ('K', "2") => lines[row].clear(),
                    ('K', "" | "0") => lines[row].truncate(col),
                    ('J', "" | "0") => {
                        lines[row].truncate(col);
                        lines.truncate(row + 1);
                    }
                    ('A', _) => row = row.saturating_sub(n.max(1)),
                    ('B', _) => {
                        row += n.max(1);
                        while lines.len() <= row {
                            lines.push(Vec::new());
                        }
                    }
                    ('G', _) => col = n.saturating_sub(1),
                    _ => {}
                }
            }
            c if c.is_control() => {}
            c => {
                let line = &mut lines[row];
                while line.len() < col {
                    line.push(' ');
                }
                if col < line.len() {
                    line[col] = c;
                } else {
                    line.push(c);
                }
                col += 1;
            }
        }
    }
    lines
        .into_iter()
        .map(|l| l.into_iter().collect::<String>().trim_end().to_string())
        .collect()
}

#[test]
fn the_screen_model_applies_clearing() {
    assert_eq!(
        screen("a\r\nstatus   \r\x1b[2Kb\r\n"),
        vec!["a".to_string(), "b".to_string(), String::new()]
    );
    assert_eq!(screen("xyz\x1b[1A\rq\x1b[K"), vec!["q".to_string()]);
}

#[test]
fn a_silent_build_shows_the_status_line_on_a_terminal_only() {
    let env = Env::new();
    env.script(SILENT_SCRIPT);
    let (code, terminal) = run_on_terminal(env.build_command(&[], &[]));
    assert_eq!(code, Some(0), "terminal:\n{terminal}");
    for word in STATUS_WORDS {
        assert!(
            terminal.contains(word),
            "no status line ({word}) on the terminal:\n{terminal:?}"
        );
    }
    let shown = screen(&terminal);
    // Cleared before the output resumed and at the end: the screen holds the output
    // lines whole, and no status.
    for line in ["before-silence", "after-silence"] {
        assert!(
            shown.iter().any(|l| l == line),
            "{line} not on a line of its own: {shown:#?}"
        );
    }
    assert!(
        !shown.iter().any(|l| l.contains("box CPU")),
        "the status line stayed: {shown:#?}"
    );
    let log = fs::read_to_string(env.out.join("result.log")).unwrap();
    assert!(log.contains("before-silence") && log.contains("after-silence"));
    for word in STATUS_WORDS {
        assert!(!log.contains(word), "result.log has {word}: {log}");
    }
}

#[test]
fn a_silent_build_shows_nothing_on_a_pipe() {
    let env = Env::new();
    env.script(SILENT_SCRIPT);
    let out = env.build(&[], &[]);
    common::ok(&out);
    for word in STATUS_WORDS {
        assert!(!stderr(&out).contains(word), "stderr: {}", stderr(&out));
        assert!(!stdout(&out).contains(word), "stdout: {}", stdout(&out));
    }
    assert_eq!(stdout(&out), "before-silence\nafter-silence\n");
}

#[test]
fn a_quiet_build_shows_nothing_on_a_terminal() {
    let env = Env::new();
    env.script(SILENT_SCRIPT);
    let (code, terminal) = run_on_terminal(env.build_command(&["-q"], &[]));
    assert_eq!(code, Some(0), "terminal:\n{terminal}");
    assert_eq!(
        screen(&terminal),
        vec!["before-silence", "after-silence", ""],
        "{terminal:?}"
    );
    for word in STATUS_WORDS {
        assert!(!terminal.contains(word), "{terminal:?}");
    }
}
