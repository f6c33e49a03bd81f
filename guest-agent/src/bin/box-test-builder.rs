//! The builder of the tiny test box.
//!
//! Writes `argv.json` (a JSON array of the arguments it received) into the target dir and,
//! when the description dir holds `script.sh`, runs it with `sh` in the target dir and
//! exits with its status; otherwise exits 0.
//!
//! `box-test-builder --pty-check` (the only argument) instead allocates a pseudo-terminal
//! the way programs do (posix_openpt, grantpt, unlockpt, ptsname_r: pts(4)), opens its
//! terminal end, writes a line through it and reads it back on the master end. It prints
//! the terminal's path and exits 0, or says what failed and exits 1. busybox has no
//! `script`, so test scripts in the tiny box use this.

use std::env;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::raw::{c_char, c_int};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::FromRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{exit, Command};
use std::sync::mpsc;
use std::time::Duration;

extern "C" {
    fn posix_openpt(flags: c_int) -> c_int;
    fn grantpt(fd: c_int) -> c_int;
    fn unlockpt(fd: c_int) -> c_int;
    fn ptsname_r(fd: c_int, buf: *mut c_char, len: usize) -> c_int;
}

/// From asm-generic/fcntl.h (the same on every box architecture).
const O_RDWR: c_int = 2;
const O_NOCTTY: c_int = 0o400;

/// A pseudo-terminal pair, written through and read back; the terminal's path.
fn pty_check() -> Result<String, String> {
    let last = |what: &str| format!("{}: {}", what, std::io::Error::last_os_error());
    // SAFETY: plain library call; the result is checked.
    let fd = unsafe { posix_openpt(O_RDWR | O_NOCTTY) };
    if fd < 0 {
        return Err(last("posix_openpt"));
    }
    // SAFETY: fd is an open descriptor that nothing else owns.
    let mut master = unsafe { File::from_raw_fd(fd) };
    // SAFETY: plain library calls on the open master descriptor.
    if unsafe { grantpt(fd) } != 0 {
        return Err(last("grantpt"));
    }
    // SAFETY: as above.
    if unsafe { unlockpt(fd) } != 0 {
        return Err(last("unlockpt"));
    }
    let mut name = [0u8; 128];
    // SAFETY: name is a live buffer of the given length.
    let rc = unsafe { ptsname_r(fd, name.as_mut_ptr() as *mut c_char, name.len()) };
    if rc != 0 {
        return Err(format!(
            "ptsname_r: {}",
            std::io::Error::from_raw_os_error(rc)
        ));
    }
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let path = String::from_utf8_lossy(&name[..len]).into_owned();
    let mut terminal = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(O_NOCTTY)
        .open(&path)
        .map_err(|e| format!("open {}: {}", path, e))?;
    terminal
        .write_all(b"pty-line\n")
        .map_err(|e| format!("write to {}: {}", path, e))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while !seen.windows(8).any(|w| w == b"pty-line") {
            match master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tx.send(seen);
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(seen) if seen.windows(8).any(|w| w == b"pty-line") => Ok(path),
        Ok(seen) => Err(format!(
            "the master end read {:?}",
            String::from_utf8_lossy(&seen)
        )),
        Err(_) => Err("nothing arrived on the master end within 10s".to_string()),
    }
}

fn json_string(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn dir_from_env(name: &str) -> PathBuf {
    match env::var_os(name) {
        Some(v) => PathBuf::from(v),
        None => {
            eprintln!("box-test-builder: {} is not set", name);
            exit(2)
        }
    }
}

fn main() {
    let args: Vec<_> = env::args_os().skip(1).collect();
    if args.len() == 1 && args[0] == "--pty-check" {
        match pty_check() {
            Ok(path) => {
                println!("{}", path);
                exit(0)
            }
            Err(e) => {
                eprintln!("box-test-builder: {}", e);
                exit(1)
            }
        }
    }
    let description = dir_from_env("BOXBUILD_DESCRIPTION");
    let target = dir_from_env("BOXBUILD_TARGET");
    let args: Vec<String> = env::args_os()
        .skip(1)
        .map(|a| json_string(a.as_bytes()))
        .collect();
    let json = format!("[{}]\n", args.join(","));
    if let Err(e) = fs::write(target.join("argv.json"), json) {
        eprintln!("box-test-builder: cannot write argv.json: {}", e);
        exit(2);
    }
    let script = description.join("script.sh");
    if !script.exists() {
        exit(0);
    }
    match Command::new("sh")
        .arg(&script)
        .current_dir(&target)
        .status()
    {
        Ok(status) => exit(match status.code() {
            Some(code) => code,
            None => 128 + status.signal().unwrap_or(0),
        }),
        Err(e) => {
            eprintln!("box-test-builder: cannot run sh: {}", e);
            exit(127)
        }
    }
}
