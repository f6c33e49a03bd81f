//! `--box-debug`: after the build the box stays up with a shell on the console, which is
//! on boxbuild's own terminal (here: pipes); the shares are still mounted there, leaving
//! the shell powers the box off, and the exit code is still the builder's.

mod common;

use common::{stderr, Env};
use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn box_debug_opens_a_shell_after_the_build_and_powers_off_when_it_ends() {
    let env = Env::new();
    env.script("echo built > built\nexit 3\n");
    fs_write(&env.desc.join("note.txt"), "in the description\n");
    let mut child = env
        .build_command(&["--box-debug"], &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let start = Instant::now();
    while !String::from_utf8_lossy(&seen.lock().unwrap()).contains("this is a shell in the box") {
        if start.elapsed() > Duration::from_secs(300) || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "no debug shell; output:\n{}",
                String::from_utf8_lossy(&seen.lock().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"cat /description/note.txt > /target/from-shell.txt; exit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(env.out.join("from-shell.txt")).unwrap(),
        "in the description\n"
    );
    assert!(env.out.join("built").exists());
    assert!(env.leftover_processes().is_empty());
    assert!(env.leftover_run_dirs().is_empty());
}

fn fs_write(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
}
