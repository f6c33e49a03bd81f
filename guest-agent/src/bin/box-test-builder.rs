//! The builder of the tiny test box.
//!
//! Writes `argv.json` (a JSON array of the arguments it received) into the target dir and,
//! when the description dir holds `script.sh`, runs it with `sh` in the target dir and
//! exits with its status; otherwise exits 0.

use std::env;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{exit, Command};

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
