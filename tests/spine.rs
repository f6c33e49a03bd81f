//! The spine, end to end: real QEMU (TCG) booting the tiny box, 9p shares, the guest agent
//! and box-test-builder.

mod common;

use common::{stderr, stdout, Env};
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn argv_json(env: &Env) -> Vec<String> {
    let text = fs::read_to_string(env.out.join("argv.json")).expect("argv.json in the target dir");
    serde_json::from_str(&text).expect("argv.json is a JSON array of strings")
}

#[test]
fn arguments_arrive_exactly_and_nothing_runs_on_the_host() {
    let env = Env::new();
    let marker = env.tmp.path().join("host-was-touched");
    let m = marker.to_str().unwrap();
    let nasty: Vec<String> = vec![
        "--type".into(),
        "oem".into(),
        "".into(),
        "two words".into(),
        "  leading and trailing  ".into(),
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("; touch {m}"),
        "'single' \"double\" \\back\\slash".into(),
        "*".into(),
        "/etc/*".into(),
        "-".into(),
        "--".into(),
        "-x".into(),
        "--description-like=1".into(),
        "ünïcødé ✓ 日本語".into(),
        "line\nbreak\ttab".into(),
        "quiet=\"a b\" console=ttyS0 init=/bin/sh".into(),
        String::new(),
    ];
    let args: Vec<&str> = nasty.iter().map(String::as_str).collect();
    let out = env.build(&[], &args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(argv_json(&env), nasty);
    assert!(!marker.exists(), "an argument was executed on the host");
}

#[test]
fn builder_exit_codes_pass_through() {
    let envs: Vec<(i32, Env)> = [0, 1, 3, 77, 255]
        .into_iter()
        .map(|code| {
            let env = Env::new();
            env.script(&format!("exit {code}\n"));
            (code, env)
        })
        .collect();
    // Two at a time: a CI machine has two cores.
    for pair in envs.chunks(2) {
        let children: Vec<_> = pair
            .iter()
            .map(|(_, env)| env.build_command(&["-q"], &[]).output())
            .collect();
        for ((code, _), out) in pair.iter().zip(children) {
            let out = out.unwrap();
            assert_eq!(out.status.code(), Some(*code), "{}", stderr(&out));
        }
    }
}

type Lines = std::io::Lines<BufReader<std::process::ChildStdout>>;

/// Starts a build and returns once its first stdout line (which must be `first`) arrived.
fn spawn_until_line(env: &Env, first: &str) -> (std::process::Child, Lines) {
    let mut child = env
        .build_command(&[], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), first);
    (child, lines)
}

#[test]
fn output_is_streamed_live_and_logged() {
    let env = Env::new();
    // The script waits for a file the test creates only after it saw the first line on
    // boxbuild's stdout: if output were not streamed, the build would fail.
    env.script(
        "echo first-line\n\
         echo to-stderr >&2\n\
         i=0; while [ ! -e /target/go ]; do i=$((i+1)); [ $i -gt 600 ] && exit 9; sleep 0.1; done\n\
         echo after-go\n",
    );
    let (mut child, mut lines) = spawn_until_line(&env, "first-line");
    assert!(
        child.try_wait().unwrap().is_none(),
        "build ended before first line was read"
    );
    fs::write(env.out.join("go"), "").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "after-go");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let log = fs::read_to_string(env.out.join("result.log")).unwrap();
    for expected in ["first-line", "to-stderr", "after-go"] {
        assert!(log.contains(expected), "result.log lacks {expected}: {log}");
    }
}

#[test]
fn description_is_read_only_and_artifacts_belong_to_the_caller() {
    let env = Env::new();
    fs::write(env.desc.join("config.xml"), "<image/>").unwrap();
    env.script(
        "if touch /description/new 2>/dev/null; then echo desc-writable; exit 1; fi\n\
         if rm /description/config.xml 2>/dev/null; then echo desc-deletable; exit 1; fi\n\
         mkdir -p sub && echo artifact > sub/image.tar && chmod 0644 sub/image.tar\n\
         cat /description/config.xml\n",
    );
    let out = env.build(&[], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("<image/>"), "description readable");
    let names: Vec<_> = fs::read_dir(&env.desc)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 2, "description dir unchanged: {names:?}");
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let artifact = env.out.join("sub/image.tar");
    assert_eq!(fs::read_to_string(&artifact).unwrap(), "artifact\n");
    for path in [
        artifact.clone(),
        env.out.join("result.log"),
        env.out.join("argv.json"),
    ] {
        assert_eq!(
            fs::metadata(&path).unwrap().uid(),
            uid,
            "{}",
            path.display()
        );
    }
    assert_eq!(fs::metadata(&artifact).unwrap().mode() & 0o777, 0o644);
}

#[test]
fn box_disk_is_never_modified() {
    let env = Env::new();
    let disk = common::tiny_box_dir().join("disk.qcow2");
    let before = fs::read(&disk).unwrap();
    env.script("echo scribble > /etc/scribble && sync && cat /etc/scribble\n");
    let out = env.build(&[], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("scribble"));
    assert!(fs::read(&disk).unwrap() == before, "the box disk changed");
    // And the write did not survive into the next run.
    env.script("test ! -e /etc/scribble\n");
    assert_eq!(env.build(&[], &[]).status.code(), Some(0));
}

fn assert_box_failure(out: &std::process::Output, reason: &str) {
    assert_eq!(out.status.code(), Some(123), "{}", stderr(out));
    let err = stderr(out);
    let first = err
        .lines()
        .find(|l| l.contains("error:"))
        .unwrap_or_default();
    assert!(first.contains(reason), "{err}");
}

#[test]
fn guest_kernel_panic_is_a_box_failure() {
    let env = Env::new();
    env.script("echo c > /proc/sysrq-trigger\nsleep 30\n");
    let out = env.build(&[], &[]);
    assert_box_failure(&out, "panicked");
    assert!(stderr(&out).contains("  | "), "console tail shown");
    assert!(env.leftover_run_dirs().is_empty());
}

#[test]
fn power_off_without_status_is_a_box_failure() {
    let env = Env::new();
    env.script("sync; poweroff -f\n");
    let out = env.build(&[], &[]);
    assert_box_failure(&out, "without reporting");
}

#[test]
fn a_hanging_build_hits_the_timeout() {
    let env = Env::new();
    env.script("echo hanging; sleep 600\n");
    let out = env.build(&["--timeout", "12s"], &[]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(stderr(&out).contains("--timeout 12s"), "{}", stderr(&out));
    assert!(
        env.leftover_processes().is_empty(),
        "{:?}",
        env.leftover_processes()
    );
    assert!(env.leftover_run_dirs().is_empty());
}

fn interrupt_during_build(signal: i32, expected_code: i32) {
    let env = Env::new();
    env.script("echo ready\nsleep 600\n");
    let (mut child, _lines) = spawn_until_line(&env, "ready");
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let start = Instant::now();
    let status = child.wait().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(status.code(), Some(expected_code));
    assert!(
        env.leftover_processes().is_empty(),
        "{:?}",
        env.leftover_processes()
    );
    assert!(
        env.leftover_run_dirs().is_empty(),
        "{:?}",
        env.leftover_run_dirs()
    );
}

#[test]
fn sigint_stops_everything() {
    interrupt_during_build(libc::SIGINT, 130);
}

#[test]
fn sigterm_stops_everything() {
    interrupt_during_build(libc::SIGTERM, 143);
}

#[test]
fn sigint_while_booting_stops_everything() {
    let env = Env::new();
    let mut child = env
        .build_command(&[], &[])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(
        env.leftover_processes().is_empty(),
        "{:?}",
        env.leftover_processes()
    );
    assert!(env.leftover_run_dirs().is_empty());
}

#[test]
fn two_builds_at_once_keep_to_themselves() {
    let a = Env::new();
    let b = Env::new();
    // Both share one TMPDIR, as two builds of one user do.
    let shared_tmp = a.tmpdir();
    a.script("echo from-a > who; sleep 1\n");
    b.script("echo from-b > who; sleep 1\n");
    let mut ca = a.build_command(&["-q"], &["run-a"]);
    let mut cb = b.build_command(&["-q"], &["run-b"]);
    cb.env("TMPDIR", &shared_tmp);
    let (ha, hb) = (ca.spawn().unwrap(), cb.spawn().unwrap());
    let (oa, ob) = (
        ha.wait_with_output().unwrap(),
        hb.wait_with_output().unwrap(),
    );
    assert_eq!(oa.status.code(), Some(0), "{}", stderr(&oa));
    assert_eq!(ob.status.code(), Some(0), "{}", stderr(&ob));
    assert_eq!(fs::read_to_string(a.out.join("who")).unwrap(), "from-a\n");
    assert_eq!(fs::read_to_string(b.out.join("who")).unwrap(), "from-b\n");
    assert_eq!(argv_json(&a), ["run-a"]);
    assert_eq!(argv_json(&b), ["run-b"]);
    assert!(a.leftover_run_dirs().is_empty());
}

#[test]
fn kvm_is_probed_and_tcg_is_announced_in_one_line() {
    let env = Env::new();
    let out = env
        .boxbuild()
        .args(["--box", "tiny", "--", "--description"])
        .arg(&env.desc)
        .arg("--target-dir")
        .arg(&env.out)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let tcg_lines = err.lines().filter(|l| l.contains("using TCG")).count();
    let kvm_used = err.contains("x86_64, kvm") || err.contains("aarch64, kvm");
    assert!(kvm_used || tcg_lines == 1, "{err}");
    assert!(
        env.leftover_run_dirs().is_empty(),
        "the probe cleans up too"
    );
}

#[test]
fn box_console_shows_the_console_on_stderr() {
    let env = Env::new();
    let quiet = env.build(&[], &[]);
    assert!(!stderr(&quiet).contains("boxbuild-agent: mounted"));
    let out = env.build(&["--box-console"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The agent logs its mounts on the console; only --box-console shows them.
    let target_mounted = stderr(&out)
        .lines()
        .any(|l| l.contains("boxbuild-agent: mounted") && l.contains(" on /target"));
    assert!(target_mounted, "{}", stderr(&out));
}

#[test]
fn bad_input_gets_one_clear_line_and_code_125() {
    let env = Env::new();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--box",
                "nope",
                "--",
                "--description",
                ".",
                "--target-dir",
                "o",
            ],
            "no box named 'nope'",
        ),
        (
            vec!["--box", "tiny", "--", "--target-dir", "o"],
            "no --description",
        ),
        (
            vec![
                "--box",
                "tiny",
                "--",
                "--description",
                "missing",
                "--target-dir",
                "o",
            ],
            "not a directory",
        ),
        (
            vec![
                "--box",
                "tiny",
                "--box-memory",
                "lots",
                "--",
                "--description",
                "desc",
                "--target-dir",
                "o",
            ],
            "--box-memory",
        ),
        (
            vec![
                "--box",
                "tiny",
                "--scratch-size",
                "huge",
                "--",
                "--description",
                "desc",
                "--target-dir",
                "o",
            ],
            "--scratch-size",
        ),
        (vec!["--", "--description", "desc"], "no --box"),
    ];
    for (args, expected) in cases {
        let out = env.boxbuild().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let out = env.boxbuild().arg("--no-such-option").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn runs_as_an_unprivileged_user() {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        // Already unprivileged: every other test proves it.
        return;
    }
    // virtiofs runs its daemon as root of a user namespace: the user has subordinate ids.
    let (user, uid) = common::test_user();
    let env = Env::new();
    env.script("id -u > uid-in-box\necho built > artifact\n");
    let (catalog, exe) = common::hand_over(&env, uid);
    let root = env.tmp.path();
    // The user's ~/.ssh, to show that sshfs sharing leaves it alone.
    let ssh_dir = root.join("home/.ssh");
    fs::create_dir_all(&ssh_dir).unwrap();
    fs::write(ssh_dir.join("known_hosts"), "host-key\n").unwrap();
    let ssh_before = dir_listing(&ssh_dir);
    for backend in ["--9p-sharing", "--virtiofs-sharing", "--sshfs-sharing"] {
        let out_dir = root.join("tmp/out");
        let _ = fs::remove_dir_all(&out_dir);
        let out = common::as_user(&env, user)
            .arg(format!("BOXBUILD_CONFIG={}", catalog.display()))
            .arg(&exe)
            .args([
                "--no-accel",
                backend,
                "--box",
                "tiny",
                "--",
                "--description",
            ])
            .arg(&env.desc)
            .arg("--target-dir")
            .arg(&out_dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{backend}: {}", stderr(&out));
        let artifact = out_dir.join("artifact");
        assert_eq!(fs::read_to_string(&artifact).unwrap(), "built\n");
        for file in [artifact, out_dir.join("result.log")] {
            assert_eq!(
                fs::metadata(&file).unwrap().uid(),
                uid,
                "{backend}: {} owned by the user",
                file.display()
            );
        }
        // The builder itself ran as root inside the box.
        assert_eq!(
            fs::read_to_string(out_dir.join("uid-in-box")).unwrap(),
            "0\n",
            "{backend}"
        );
        assert!(
            env.leftover_processes().is_empty(),
            "{backend}: {:?}",
            env.leftover_processes()
        );
        assert_eq!(
            dir_listing(&ssh_dir),
            ssh_before,
            "{backend} touched ~/.ssh"
        );
    }
}

/// Names, sizes and modification times under a directory.
fn dir_listing(dir: &std::path::Path) -> Vec<(String, u64, i64)> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let meta = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                meta.len(),
                meta.mtime(),
            )
        })
        .collect();
    entries.sort();
    entries
}

#[test]
fn list_boxes_shows_the_catalogs_boxes() {
    let env = Env::new();
    for args in [&["--list-boxes"][..], &["box", "list"][..]] {
        let out = env.boxbuild().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = stdout(&out);
        let row = text
            .lines()
            .find(|l| l.starts_with("tiny "))
            .unwrap_or_default();
        assert!(
            row.contains(std::env::consts::ARCH) && row.contains("1.0.0"),
            "{text}"
        );
    }
    // A broken catalog is reported with file and line.
    let broken = env.tmp.path().join("broken.toml");
    fs::write(&broken, "[boxes.x]\nbuilder = [\n").unwrap();
    let out = env
        .boxbuild()
        .env("BOXBUILD_CONFIG", &broken)
        .arg("--list-boxes")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("broken.toml:"), "{}", stderr(&out));
}
