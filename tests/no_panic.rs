//! Inputs at the edges (a closed stdout, sizes and durations beyond what the machine
//! counts) end in a result or one error line, never in a panic.

mod common;

use common::{stderr, Env};
use std::process::Stdio;

fn assert_no_panic(err: &str) {
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("internal error"), "{err}");
}

#[test]
fn box_list_into_a_pipe_nobody_reads() {
    let env = Env::new();
    let mut child = env
        .boxbuild()
        .args(["box", "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_no_panic(&stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn sizes_beyond_a_u64_of_bytes_are_refused() {
    let env = Env::new();
    for (option, size) in [
        ("--box-memory", "17592186044416M"),
        ("--scratch-size", "99999999999999T"),
    ] {
        let out = env.build(&[option, size], &[]);
        let err = stderr(&out);
        assert_no_panic(&err);
        assert_eq!(out.status.code(), Some(125), "{err}");
        assert!(err.contains("too large"), "{err}");
    }
}

#[test]
fn a_timeout_beyond_the_clock_is_no_limit() {
    let env = Env::new();
    env.script("echo fine\n");
    let out = env.build(&["--timeout", "18446744073709551615"], &[]);
    let err = stderr(&out);
    assert_no_panic(&err);
    assert_eq!(out.status.code(), Some(0), "{err}");
}
