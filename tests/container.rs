//! `--container`: the tiny box's root file system under podman (runc, explicit ulimits),
//! as root (privileged) and as an unprivileged user (rootless): the exact argv, exit codes,
//! output, a read-only description, artifacts owned by the caller, a container killed
//! mid-build, Ctrl-C and SIGKILL leaving nothing behind, parallel builds, and the
//! refusal of a loop-device image type before anything starts.

mod common;

use common::{ok, stderr, stdout, Env};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn build(env: &Env, args: &[&str]) -> Command {
    let mut c = env.boxbuild();
    c.args(["--container", "--box", "tiny", "--", "--description"])
        .arg(&env.desc)
        .arg("--target-dir")
        .arg(&env.out)
        .args(args);
    c
}

/// Containers labelled with the given boxbuild pid (all boxbuild containers with None).
fn containers(pid: Option<u32>) -> Vec<String> {
    let filter = match pid {
        Some(pid) => format!("label=org.boxbuild.pid={pid}"),
        None => "label=org.boxbuild.pid".to_string(),
    };
    let out = Command::new("podman")
        .args(["ps", "--all", "--filter", &filter, "--format", "{{.Names}}"])
        .output()
        .expect("podman");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

fn wait_for_container(pid: u32) -> String {
    let start = Instant::now();
    loop {
        if let Some(name) = containers(Some(pid)).into_iter().next() {
            return name;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no container appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run(env: &Env, args: &[&str]) -> Output {
    build(env, args).output().unwrap()
}

#[test]
fn builds_with_the_exact_argv_exit_codes_and_output() {
    let env = Env::new();
    env.script("echo out-line; echo err-line >&2; touch /description/x 2>/dev/null && echo description-writable; echo made > artifact\n");
    let out = run(&env, &["a b", "", "c'd", "--flag=1"]);
    ok(&out);
    let argv = fs::read_to_string(env.out.join("argv.json")).unwrap();
    assert_eq!(argv.trim_end(), r#"["a b","","c'd","--flag=1"]"#);
    assert!(stdout(&out).contains("out-line"), "{}", stdout(&out));
    assert!(stderr(&out).contains("err-line"));
    assert!(!stdout(&out).contains("description-writable"));
    assert!(stderr(&out).contains("as a container"), "{}", stderr(&out));
    let log = fs::read_to_string(env.out.join("result.log")).unwrap();
    assert!(
        log.contains("out-line") && log.contains("err-line"),
        "{log}"
    );
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    assert_eq!(fs::metadata(env.out.join("artifact")).unwrap().uid(), uid);
    for code in [3, 255] {
        env.script(&format!("exit {code}\n"));
        assert_eq!(run(&env, &[]).status.code(), Some(code));
    }
    assert!(env.leftover_run_dirs().is_empty());
    assert!(
        env.leftover_processes().is_empty(),
        "{:?}",
        env.leftover_processes()
    );
}

#[test]
fn a_container_killed_mid_build_is_a_box_failure() {
    let env = Env::new();
    env.script("sleep 60\n");
    let child = build(&env, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let name = wait_for_container(pid);
    std::thread::sleep(Duration::from_millis(500));
    let killed = Command::new("podman")
        .args(["kill", "--signal", "KILL", &name])
        .output()
        .unwrap();
    assert!(killed.status.success(), "{}", stderr(&killed));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(123), "{}", stderr(&out));
    assert!(
        containers(Some(pid)).is_empty(),
        "{:?}",
        containers(Some(pid))
    );
    assert!(env.leftover_run_dirs().is_empty());
}

#[test]
fn ctrl_c_and_sigkill_leave_nothing_behind() {
    let env = Env::new();
    env.script("sleep 60\n");
    let mut child = build(&env, &[]).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    wait_for_container(pid);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(
        containers(Some(pid)).is_empty(),
        "{:?}",
        containers(Some(pid))
    );
    assert!(env.leftover_run_dirs().is_empty());

    // SIGKILL: boxbuild cannot clean up; the next build sweeps the container.
    let mut child = build(&env, &[]).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    wait_for_container(pid);
    child.kill().unwrap();
    child.wait().unwrap();
    env.script("true\n");
    ok(&run(&env, &[]));
    let start = Instant::now();
    while !containers(Some(pid)).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "a killed build's container was not swept: {:?}",
            containers(Some(pid))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn two_builds_at_once_keep_to_themselves() {
    let a = Env::new();
    let b = Env::new();
    a.script("echo from-a > who; sleep 1\n");
    b.script("echo from-b > who; sleep 1\n");
    let (ca, cb) = (
        build(&a, &["run-a"]).spawn().unwrap(),
        build(&b, &["run-b"]).spawn().unwrap(),
    );
    for (child, env, who) in [(ca, &a, "from-a\n"), (cb, &b, "from-b\n")] {
        assert_eq!(child.wait_with_output().unwrap().status.code(), Some(0));
        assert_eq!(fs::read_to_string(env.out.join("who")).unwrap(), who);
    }
}

#[test]
fn rootless_for_a_normal_user_and_loop_device_types_refused() {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        return; // Already rootless: the other tests prove it.
    }
    let (user, uid) = common::test_user();
    let env = Env::new();
    env.script("id -u > uid-in-box\necho built > artifact\n");
    let (catalog, exe) = common::hand_over(&env, uid);
    let root = env.tmp.path();
    let as_user = |extra: &[&str]| {
        let out_dir = root.join("tmp/out");
        common::as_user(&env, user)
            .arg("XDG_RUNTIME_DIR=")
            .arg("BOXBUILD_CACHE_DIR=")
            .arg(format!("BOXBUILD_CONFIG={}", catalog.display()))
            .arg(&exe)
            .args(["--container", "--box", "tiny"])
            .args(extra)
            .args(["--", "--description"])
            .arg(&env.desc)
            .arg("--target-dir")
            .arg(&out_dir)
            .output()
            .unwrap()
    };
    let out = as_user(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("rootless"), "{}", stderr(&out));
    let out_dir = root.join("tmp/out");
    assert_eq!(
        fs::read_to_string(out_dir.join("artifact")).unwrap(),
        "built\n"
    );
    assert_eq!(
        fs::read_to_string(out_dir.join("uid-in-box")).unwrap(),
        "0\n"
    );
    for file in ["artifact", "result.log"] {
        assert_eq!(
            fs::metadata(out_dir.join(file)).unwrap().uid(),
            uid,
            "{file}"
        );
    }
    // A disk image needs loop devices: refused before any container starts.
    let out = as_user(&["--type", "oem"]);
    common::assert_loop_type_refused(&out, "oem");
    // Resource limits: applied on a cgroups v2 host, named as not applied elsewhere.
    let out = as_user(&["--box-memory", "300M"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v2 = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(" /sys/fs/cgroup ") && l.contains(" - cgroup2 "));
    assert_eq!(
        stderr(&out).contains("--box-memory and --box-smp-cpus are not applied"),
        !v2,
        "{}",
        stderr(&out)
    );
}

/// The memory limit the container's cgroup has, as the builder reads it (v2's
/// `memory.max`, or v1's `memory.limit_in_bytes` of the builder's own memory cgroup).
const READ_MEMORY_LIMIT: &str = r#"if [ -f /sys/fs/cgroup/memory.max ]; then cat /sys/fs/cgroup/memory.max > mem
else
  p=$(sed -n 's/^[0-9]*:memory:\(.*\)$/\1/p' /proc/self/cgroup)
  cat "/sys/fs/cgroup/memory$p/memory.limit_in_bytes" > mem 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes > mem
fi
"#;

#[test]
fn memory_and_cpu_limits_reach_the_container() {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        return; // Rootless limits depend on the host's cgroups: see the rootless test.
    }
    let env = Env::new();
    env.script(READ_MEMORY_LIMIT);
    let mut c = env.boxbuild();
    c.args([
        "--container",
        "--box",
        "tiny",
        "--box-memory",
        "300M",
        "--box-smp-cpus",
        "1",
    ]);
    c.args(["--", "--description"])
        .arg(&env.desc)
        .arg("--target-dir")
        .arg(&env.out);
    let out = c.output().unwrap();
    ok(&out);
    assert!(
        stderr(&out).contains("memory limit 300 MiB, 1 CPU(s)"),
        "{}",
        stderr(&out)
    );
    let limit = fs::read_to_string(env.out.join("mem")).unwrap();
    assert_eq!(limit.trim(), (300u64 << 20).to_string());
    // Without --box-memory, the box's VM size is no limit of the container's.
    let out = run(&env, &[]);
    ok(&out);
    assert!(
        stderr(&out).contains("no memory or CPU limit"),
        "{}",
        stderr(&out)
    );
    let limit = fs::read_to_string(env.out.join("mem")).unwrap();
    assert_ne!(limit.trim(), (2048u64 << 20).to_string());
}

#[test]
fn builds_with_podmans_defaults_whatever_runtime_it_would_pick() {
    // podman's defaults (CONTAINERS_CONF naming an empty file): Debian's podman then picks
    // crun, which refuses hosts with v1 or hybrid cgroups; boxbuild must still build.
    let env = Env::new();
    env.script("echo built > artifact\n");
    let conf = env.tmp.path().join("containers.conf");
    fs::write(&conf, "").unwrap();
    let out = build(&env, &[])
        .env("CONTAINERS_CONF", &conf)
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(
        fs::read_to_string(env.out.join("artifact")).unwrap(),
        "built\n"
    );
}

#[test]
fn an_engine_that_cannot_start_the_box_is_a_setup_error_in_its_own_words() {
    // A runtime that fails at once, as crun does on hybrid cgroups: podman's own error
    // line, exit 125, no guess about the box.
    let env = Env::new();
    let conf = env.tmp.path().join("containers.conf");
    let broken = env.tmp.path().join("broken-runtime");
    fs::write(&broken, "#!/bin/sh\necho 'cgroups in hybrid mode not supported, drop all controllers from cgroupv2' >&2\nexit 1\n").unwrap();
    fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    fs::write(&conf, "").unwrap();
    let out = build(&env, &[])
        .env("CONTAINERS_CONF", &conf)
        .env("BOXBUILD_OCI_RUNTIME", &broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("podman could not run the box"), "{err}");
    assert!(
        !err.contains("predates") && !err.contains("box update"),
        "{err}"
    );
    assert_eq!(err.matches("boxbuild: error:").count(), 1, "{err}");
    assert!(
        err.lines()
            .last()
            .unwrap_or("")
            .starts_with("boxbuild: error:"),
        "{err}"
    );
}

#[test]
fn vm_only_options_are_refused_or_named_never_ignored() {
    let env = Env::new();
    env.script("echo built > artifact\n");
    for (option, value) in [
        ("--cpu", Some("max")),
        ("--machine", Some("q35")),
        ("--virtiofs-sharing", None),
        ("--sshfs-sharing", None),
        ("--box-debug", None),
        ("--no-snapshot", None),
    ] {
        let mut c = env.boxbuild();
        // No virtiofsd anywhere: a container must not look for one.
        c.env("BOXBUILD_VIRTIOFSD", "/nonexistent/virtiofsd");
        c.args(["--container", "--box", "tiny", option]).args(value);
        c.args(["--", "--description"])
            .arg(&env.desc)
            .arg("--target-dir")
            .arg(&env.out);
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(125), "{option}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{option}: {err}");
        assert!(err.contains(option) && err.contains("--container"), "{err}");
        assert!(!err.contains("virtiofsd"), "{err}");
        assert!(!env.out.join("artifact").exists());
    }
    // Options without effect in a container: the build runs, and a warning names each.
    let out = run(&env, &[]);
    ok(&out);
    let mut c = env.boxbuild();
    c.env("BOXBUILD_VIRTIOFSD", "/nonexistent/virtiofsd");
    c.args([
        "--container",
        "--box",
        "tiny",
        "--no-accel",
        "--9p-sharing",
        "--scratch-size",
        "2G",
    ]);
    c.args(["--", "--description"])
        .arg(&env.desc)
        .arg("--target-dir")
        .arg(&env.out);
    let out = c.output().unwrap();
    ok(&out);
    for option in ["--no-accel", "--9p-sharing", "--scratch-size"] {
        assert!(
            stderr(&out).contains(&format!("{option} has no effect with --container")),
            "{option}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn the_unpacked_root_is_kept_while_its_disk_is_and_pruned_after() {
    let env = Env::new();
    // A copy of the tiny box whose disk this test may change.
    let boxdir = env.tmp.path().join("box");
    fs::create_dir(&boxdir).unwrap();
    for f in ["kernel", "initrd", "disk.qcow2"] {
        fs::copy(common::tiny_box_dir().join(f), boxdir.join(f)).unwrap();
    }
    let catalog = fs::read_to_string(common::tiny_box_dir().join("catalog.toml"))
        .unwrap()
        .replace(
            common::tiny_box_dir().to_str().unwrap(),
            boxdir.to_str().unwrap(),
        );
    fs::write(boxdir.join("catalog.toml"), catalog).unwrap();
    let with_box = |mut c: Command| {
        c.env("BOXBUILD_CONFIG", boxdir.join("catalog.toml"));
        c
    };
    let prune = || {
        let mut c = with_box(env.boxbuild());
        c.args(["box", "prune"]);
        c.output().unwrap()
    };
    let roots = || -> Vec<String> {
        fs::read_dir(env.cache_dir().join("rootfs"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    env.script("echo built > artifact\n");
    ok(&with_box(build(&env, &[])).output().unwrap());
    assert_eq!(roots().len(), 1);
    // The disk is still there: the root stays.
    let out = prune();
    ok(&out);
    assert!(
        !stdout(&out).contains("root file system"),
        "{}",
        stdout(&out)
    );
    assert_eq!(roots().len(), 1);

    // The disk changes while a build runs on its root: the root stays until it ends.
    env.script("sleep 5\n");
    let child = with_box(build(&env, &[]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_container(child.id());
    let touched = Command::new("touch")
        .arg(boxdir.join("disk.qcow2"))
        .status()
        .unwrap();
    assert!(touched.success());
    let out = prune();
    assert!(
        stdout(&out).contains("a running build uses it"),
        "{}",
        stdout(&out)
    );
    assert_eq!(roots().len(), 1);
    ok(&child.wait_with_output().unwrap());
    // Then it goes; the next build unpacks the changed disk afresh.
    let out = prune();
    assert!(
        stdout(&out).contains("removed the container root file system"),
        "{}",
        stdout(&out)
    );
    assert!(roots().is_empty(), "{:?}", roots());
}
