//! A target dir belongs to one build at a time: a second build into it is refused at once,
//! builds into other dirs run beside it, and a killed build leaves it free. Real QEMU
//! (TCG) with the tiny box.

mod common;

use common::{stderr, Env};
use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

type Lines = std::io::Lines<BufReader<std::process::ChildStdout>>;

/// A script that says `ready` and then waits for the file `go` in its target dir.
const WAIT_FOR_GO: &str = "echo ready\n\
     i=0; while [ ! -e /target/go ]; do i=$((i+1)); [ $i -gt 1200 ] && exit 9; sleep 0.1; done\n\
     echo done > /target/who\n";

/// Starts a build of `env` and returns once its builder said `ready`.
fn start_waiting(env: &Env) -> (Child, Lines) {
    env.script(WAIT_FOR_GO);
    let mut child = env
        .build_command(&[], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().map(|l| l.unwrap_or_default());
    assert_eq!(first.as_deref(), Some("ready"), "the build did not start");
    (child, lines)
}

fn finish(mut child: Child, lines: Lines) -> (Option<i32>, String) {
    let rest: Vec<String> = lines.map_while(|l| l.ok()).collect();
    let status = child.wait().unwrap();
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        use std::io::Read;
        s.read_to_string(&mut err).unwrap();
    }
    (status.code(), format!("{}\n{err}", rest.join("\n")))
}

#[test]
fn a_second_build_into_the_same_target_is_refused_at_once() {
    let first = Env::new();
    let (child, lines) = start_waiting(&first);
    let pid = child.id();

    let mut second = Env::new();
    second.out = first.out.clone();
    second.script("echo second-ran\n");
    let start = Instant::now();
    let out = second.build(&[], &["from-second"]);
    let took = start.elapsed();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}: {err}");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("boxbuild: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains(&format!(
            "in use by another build (boxbuild pid {pid}, started "
        )),
        "{err}"
    );
    assert!(!err.contains("sharing over"), "no box was started: {err}");
    assert!(second.leftover_run_dirs().is_empty());

    fs::write(first.out.join("go"), "").unwrap();
    let (code, said) = finish(child, lines);
    assert_eq!(code, Some(0), "{said}");
    let log = fs::read_to_string(first.out.join("result.log")).unwrap();
    assert!(log.contains("ready"), "{log}");
    assert!(!log.contains("second-ran"), "{log}");
    assert_eq!(fs::read_to_string(first.out.join("who")).unwrap(), "done\n");
    assert!(
        !first.out.join(".boxbuild.lock").exists(),
        "the lock file goes with the build"
    );
}

#[test]
fn builds_into_different_targets_run_side_by_side() {
    let a = Env::new();
    let b = Env::new();
    // Both builders are running at once: each waits for its go file, created only now.
    let (ca, la) = start_waiting(&a);
    let (cb, lb) = start_waiting(&b);
    fs::write(a.out.join("go"), "").unwrap();
    fs::write(b.out.join("go"), "").unwrap();
    let (code_a, said_a) = finish(ca, la);
    let (code_b, said_b) = finish(cb, lb);
    assert_eq!(code_a, Some(0), "{said_a}");
    assert_eq!(code_b, Some(0), "{said_b}");
}

#[test]
fn a_killed_build_leaves_the_target_free() {
    let env = Env::new();
    let (mut child, _lines) = start_waiting(&env);
    child.kill().unwrap();
    child.wait().unwrap();
    // QEMU dies with boxbuild (PR_SET_PDEATHSIG); give the kernel a moment to reap it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.leftover_processes().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        env.leftover_processes().is_empty(),
        "{:?}",
        env.leftover_processes()
    );
    env.script("echo after-kill > /target/who\n");
    let out = env.build(&[], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(env.out.join("who")).unwrap(),
        "after-kill\n"
    );
    assert!(
        env.leftover_run_dirs().is_empty(),
        "the dead run's dir is swept"
    );
}
