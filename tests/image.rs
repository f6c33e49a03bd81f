//! boxbuild's container image (deploy/image, docs/container-image.md), built by the
//! project's own command (scripts/build-image.sh: kiwi in the Debian box) once per test
//! run, and run as users run containers: unprivileged (no capabilities, read-only root) as
//! root and under a chosen uid, rootless as a normal user, with the tiny box under TCG;
//! artifacts owned by the caller, exit codes passed through, `podman stop` and Ctrl-C
//! leaving no process; two containers sharing one cache volume fetch a new box once; the
//! Kubernetes Job's pod template under `podman kube play`; every manifest against the
//! Kubernetes schema.
//!
//! Slow (the image build takes minutes the first time), so every test is ignored by a
//! plain `cargo test`; scripts/test.sh runs them with `--ignored`.

mod common;

use common::http::HttpServer;
use common::{ok, repo_root, served, stderr, stdout, tiny_box_dir, Env};
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where scripts/build-image.sh stages and builds for the tests.
fn image_dir() -> PathBuf {
    repo_root().join("target/test-image")
}

/// The image built by scripts/build-image.sh with this build's boxbuild, once per test
/// run (a lock serialises test processes; the script's stamp skips a current image).
fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = image_dir();
        fs::create_dir_all(&dir).unwrap();
        let lock = fs::File::create(dir.with_extension("lock")).unwrap();
        // SAFETY: flock on an open file descriptor.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        let out = Command::new(repo_root().join("scripts/build-image.sh"))
            .args(["--tag", "localhost/boxbuild:test", "--out"])
            .arg(&dir)
            .env("BOXBUILD", env!("CARGO_BIN_EXE_boxbuild"))
            .env(
                "BOXBUILD_CONFIG",
                common::debian_box_dir().join("catalog.toml"),
            )
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "scripts/build-image.sh failed");
        let reference = stdout(&out).lines().last().unwrap_or("").to_string();
        assert_eq!(reference, "localhost/boxbuild:test");
        reference
    })
}

/// The image's OCI archive, as the build script left it.
fn image_archive() -> PathBuf {
    image();
    image_dir().join("boxbuild.oci.tar")
}

/// The tiny box's files mounted at /boxes/tiny and a catalog naming them there in
/// /config, as a user hands boxes to the image; the volume options for podman.
fn box_volumes(env: &Env, box_dir: &Path) -> Vec<String> {
    let config = env.tmp.path().join("config");
    fs::create_dir_all(&config).unwrap();
    let catalog = fs::read_to_string(box_dir.join("catalog.toml"))
        .unwrap()
        .replace(box_dir.to_str().unwrap(), "/boxes/tiny");
    fs::write(config.join("catalog.toml"), catalog).unwrap();
    vec![
        format!("--volume={}:/boxes/tiny:ro", box_dir.display()),
        format!("--volume={}:/config:ro", config.display()),
        "--env=BOXBUILD_CONFIG=/config/catalog.toml".into(),
    ]
}

/// `podman run --rm` as this host needs it (runc: crun refuses hybrid cgroups), with
/// no capabilities, no new privileges and a read-only root file system.
fn podman_run(podman: Command) -> Command {
    let mut c = podman;
    c.args(["--runtime", "runc", "run", "--rm"])
        .args(["--cap-drop=ALL", "--security-opt=no-new-privileges"])
        .args([
            "--read-only",
            "--ulimit=nofile=4096:4096",
            "--ulimit=nproc=32768:32768",
        ]);
    c
}

/// A description and an output dir for a container: the output's parent mode 0777, so
/// any uid the container runs as may make the target dir in it.
fn dirs(env: &Env, script: &str) -> (Vec<String>, PathBuf) {
    env.script(script);
    let out = env.tmp.path().join("results");
    fs::create_dir_all(&out).unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(env.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    (
        vec![
            format!("--volume={}:/results", out.display()),
            format!("--volume={}:/desc:ro", env.desc.display()),
        ],
        out.join("t"),
    )
}

const BUILD: [&str; 6] = [
    "--box",
    "tiny",
    "--",
    "--description",
    "/desc",
    "--target-dir",
];

fn tcg_lines(err: &str) -> usize {
    err.lines().filter(|l| l.contains("TCG")).count()
}

#[test]
#[ignore = "builds the container image; scripts/test.sh runs it"]
fn runs_unprivileged_as_root_and_as_a_chosen_uid() {
    let env = Env::new();
    let (volumes, target) = dirs(&env, "echo built > artifact; echo out-line\n");
    let run = |user: &[&str], script_code: Option<i32>, box_name: &str| -> Output {
        if let Some(code) = script_code {
            env.script(&format!("echo built > artifact; exit {code}\n"));
        }
        podman_run(Command::new("podman"))
            .args(["--network", "none"])
            .args(user)
            .args(&volumes)
            .args(box_volumes(&env, tiny_box_dir()))
            .arg(image())
            .args(["--box", box_name])
            .args(&BUILD[2..])
            .arg("/results/t")
            .output()
            .unwrap()
    };
    let out = run(&[], None, "tiny");
    ok(&out);
    assert!(stdout(&out).contains("out-line"), "{}", stdout(&out));
    let err = stderr(&out);
    assert_eq!(tcg_lines(&err), 1, "{err}");
    assert!(err.contains("/dev/kvm is not in this container"), "{err}");
    assert_eq!(fs::metadata(target.join("artifact")).unwrap().uid(), 0);
    assert!(target.join("result.log").exists());

    fs::remove_dir_all(&target).unwrap();
    let out = run(&["--user", "4321:4321"], None, "tiny");
    ok(&out);
    let meta = fs::metadata(target.join("artifact")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4321, 4321));

    // The builder's code, and boxbuild's own (125: an unknown box), pass through.
    assert_eq!(
        run(&["--user", "4321"], Some(7), "tiny").status.code(),
        Some(7)
    );
    let out = run(&[], None, "no-such-box");
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("boxbuild: error:"),
        "{}",
        stderr(&out)
    );
}

#[test]
#[ignore = "builds the container image; scripts/test.sh runs it"]
fn runs_rootless_for_a_normal_user() {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        return; // Rootless already: the other tests prove it.
    }
    let (user, uid) = common::test_user();
    let env = Env::new();
    let (volumes, target) = dirs(&env, "echo built > artifact\n");
    let (catalog, _) = common::hand_over(&env, uid);
    let box_dir = catalog.parent().unwrap().to_path_buf();
    // The user's own podman storage gets the image from the archive.
    let archive = image_archive();
    let tag = "localhost/boxbuild:test-rootless";
    let as_user = || {
        let mut c = common::as_user(&env, user);
        c.arg("XDG_RUNTIME_DIR=");
        c
    };
    let copied = as_user()
        .args(["skopeo", "copy", "-q"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("containers-storage:{tag}"))
        .output()
        .unwrap();
    ok(&copied);
    let mut podman = as_user();
    podman.arg("podman");
    let out = podman_run(podman)
        // No user-mode network for rootless containers where /dev/net/tun is 0600.
        .args(["--network", "host"])
        .args(&volumes)
        .args(box_volumes(&env, &box_dir))
        .arg(tag)
        .args(BUILD)
        .arg("/results/t")
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(tcg_lines(&stderr(&out)), 1, "{}", stderr(&out));
    assert_eq!(fs::metadata(target.join("artifact")).unwrap().uid(), uid);
}

/// Starts a build of `sleep 60` in a container named `name`, attached, and waits until
/// the builder runs; the out dir's path is unique to this test, so QEMU's command line
/// names it.
fn start_sleeping(env: &Env, name: &str, mount: &str) -> std::process::Child {
    env.script("echo sleeping; sleep 60\n");
    let out = env.tmp.path().join("results");
    fs::create_dir_all(&out).unwrap();
    let mut child = podman_run(Command::new("podman"))
        .args(["--network", "none", "--name", name])
        .arg(format!("--volume={}:{mount}", out.display()))
        .arg(format!("--volume={}:/desc:ro", env.desc.display()))
        .args(box_volumes(env, tiny_box_dir()))
        .arg(image())
        .args(BUILD)
        .arg(format!("{mount}/t"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let start = Instant::now();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("sleeping") => break,
            Some(_) => {}
            None => panic!("the build ended before its builder ran"),
        }
        assert!(start.elapsed() < Duration::from_secs(300));
    }
    std::thread::spawn(move || for _ in lines {});
    child
}

fn qemu_left(mount: &str) -> Vec<String> {
    common::processes_mentioning(Path::new(mount))
        .into_iter()
        .filter(|p| !p.contains("podman"))
        .collect()
}

#[test]
#[ignore = "builds the container image; scripts/test.sh runs it"]
fn podman_stop_and_ctrl_c_leave_no_process() {
    image();
    let env = Env::new();
    let id = std::process::id();

    let (name, mount) = (format!("bbt-stop-{id}"), format!("/results-stop-{id}"));
    let child = start_sleeping(&env, &name, &mount);
    let started = Instant::now();
    let stopped = Command::new("podman")
        .args(["--runtime", "runc", "stop", "--time", "60", &name])
        .output()
        .unwrap();
    ok(&stopped);
    let out = child.wait_with_output().unwrap();
    // SIGTERM reached boxbuild (through tini), which stopped the box and said so: no
    // SIGKILL after the grace time was needed.
    assert_eq!(out.status.code(), Some(143));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(qemu_left(&mount).is_empty(), "{:?}", qemu_left(&mount));

    // Ctrl-C on `podman run`: podman passes SIGINT on.
    let (name, mount) = (format!("bbt-int-{id}"), format!("/results-int-{id}"));
    let child = start_sleeping(&env, &name, &mount);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(qemu_left(&mount).is_empty(), "{:?}", qemu_left(&mount));
    let listed = Command::new("podman")
        .args(["ps", "--all", "--filter", &format!("name={name}"), "-q"])
        .output()
        .unwrap();
    assert!(stdout(&listed).trim().is_empty(), "{}", stdout(&listed));
}

#[test]
#[ignore = "builds the container image; scripts/test.sh runs it"]
fn containers_sharing_a_cache_volume_fetch_a_new_box_once() {
    image();
    let env = Env::new();
    let site = env.tmp.path().join("site");
    let files = served::tiny_box(&site, "tiny", tiny_box_dir());
    let server = HttpServer::start(&site);
    let config = env.tmp.path().join("config");
    fs::create_dir_all(&config).unwrap();
    fs::write(
        config.join("catalog.toml"),
        served::box_toml("tiny", "box-test-builder")
            + &served::version_toml("tiny", "1.0.0", &files, &|p| server.url(p)),
    )
    .unwrap();
    let cache = env.tmp.path().join("cache");
    fs::create_dir_all(&cache).unwrap();
    env.script("echo built > artifact\n");
    let results = env.tmp.path().join("results");
    fs::create_dir_all(&results).unwrap();
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|which| {
            podman_run(Command::new("podman"))
                // The server listens on the host's 127.0.0.1.
                .args(["--network", "host"])
                .arg(format!("--volume={}:/var/cache/boxbuild", cache.display()))
                .arg(format!("--volume={}:/config:ro", config.display()))
                .arg(format!("--volume={}:/results", results.display()))
                .arg(format!("--volume={}:/desc:ro", env.desc.display()))
                .arg("--env=BOXBUILD_CONFIG=/config/catalog.toml")
                .arg(image())
                .args(BUILD)
                .arg(format!("/results/{which}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        ok(&child.wait_with_output().unwrap());
    }
    for which in ["a", "b"] {
        assert!(results.join(which).join("artifact").exists());
    }
    for file in &files {
        assert_eq!(
            server.bytes_sent(&file.name),
            file.size,
            "{} was fetched more than once",
            file.name
        );
    }
}

/// The Job's manifest as JSON (python3 with PyYAML, which kubernetes-validate brings).
fn manifest_json(path: &Path) -> serde_json::Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(path)
        .output()
        .unwrap();
    ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
#[ignore = "builds the container image; scripts/test.sh runs it"]
fn the_jobs_pod_template_builds_under_podman_kube_play() {
    use serde_json::json;
    image();
    let env = Env::new();
    let job = manifest_json(&repo_root().join("deploy/kubernetes/base/job.yaml"));
    let id = std::process::id();
    let (pod_name, claim) = (format!("bbt-kube-{id}"), format!("bbt-results-{id}"));
    // The pod the Job controller makes for index 0, with what is the cluster's own
    // replaced: the image, the box (the tiny one, from a catalog in a host dir), the
    // description (a ConfigMap made here), the claim (a podman volume).
    let mut spec = job["spec"]["template"]["spec"].clone();
    let container = &mut spec["containers"][0];
    container["image"] = json!(image());
    let env_list = container["env"].as_array_mut().unwrap();
    env_list.retain(|e| e["name"] != "BOXBUILD_BOX");
    env_list.extend([
        json!({"name": "BOXBUILD_BOX", "value": "tiny"}),
        json!({"name": "BOXBUILD_CONFIG", "value": "/config/catalog.toml"}),
        json!({"name": "JOB_COMPLETION_INDEX", "value": "0"}),
    ]);
    container["resources"]["limits"]["memory"] = json!("1Gi");
    let config = env.tmp.path().join("config");
    box_volumes(&env, tiny_box_dir());
    container["volumeMounts"].as_array_mut().unwrap().extend([
        json!({"name": "box", "mountPath": "/boxes/tiny", "readOnly": true}),
        json!({"name": "config", "mountPath": "/config", "readOnly": true}),
    ]);
    // What Debian 12's podman 4.3 lacks and the kubelet does: `$(VAR)` in args is
    // expanded here, and a ConfigMap item with a directory in its path
    // (`0/config.kiwi`) becomes a host dir of the same layout.
    let index_vars = [
        ("$(BOXBUILD_BOX)", "tiny"),
        ("$(JOB_COMPLETION_INDEX)", "0"),
    ];
    for arg in container["args"].as_array_mut().unwrap() {
        let mut text = arg.as_str().unwrap().to_string();
        for (var, value) in index_vars {
            text = text.replace(var, value);
        }
        *arg = json!(text);
    }
    let descriptions = env.tmp.path().join("descriptions");
    fs::create_dir_all(descriptions.join("0")).unwrap();
    fs::write(
        descriptions.join("0/script.sh"),
        "echo built-in-kube > artifact\n",
    )
    .unwrap();
    for volume in spec["volumes"].as_array_mut().unwrap() {
        if volume["name"] == "descriptions" {
            *volume = json!({"name": "descriptions",
                "hostPath": {"path": descriptions, "type": "Directory"}});
        }
        if volume["name"] == "results" {
            volume["persistentVolumeClaim"]["claimName"] = json!(claim);
        }
    }
    spec["volumes"].as_array_mut().unwrap().extend([
        json!({"name": "box", "hostPath": {"path": tiny_box_dir(), "type": "Directory"}}),
        json!({"name": "config", "hostPath": {"path": config, "type": "Directory"}}),
    ]);
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name}, "spec": spec});
    let pod_file = env.tmp.path().join("pod.json");
    fs::write(&pod_file, pod.to_string()).unwrap();
    // kube play has no --ulimit: runc here cannot apply podman's default limits.
    let containers_conf = env.tmp.path().join("containers.conf");
    fs::write(
        &containers_conf,
        "[containers]\ndefault_ulimits = [\"nofile=4096:4096\", \"nproc=32768:32768\"]\n",
    )
    .unwrap();

    // The claim: a volume the pod's user (runAsUser 1000) may write, as fsGroup makes it.
    ok(&Command::new("podman")
        .args(["volume", "create", &claim])
        .output()
        .unwrap());
    let mountpoint = stdout(
        &Command::new("podman")
            .args(["volume", "inspect", "--format", "{{.Mountpoint}}", &claim])
            .output()
            .unwrap(),
    )
    .trim()
    .to_string();
    ok(&Command::new("chown")
        .args(["1000:1000", &mountpoint])
        .output()
        .unwrap());

    let played = Command::new("podman")
        .env("CONTAINERS_CONF", &containers_conf)
        .args(["--runtime", "runc", "kube", "play"])
        .arg(&pod_file)
        .output()
        .unwrap();
    let container = format!("{pod_name}-boxbuild");
    let start = Instant::now();
    let code = loop {
        let state = Command::new("podman")
            .args([
                "inspect",
                "--format",
                "{{.State.Status}} {{.State.ExitCode}}",
            ])
            .arg(&container)
            .output()
            .unwrap();
        let text = stdout(&state);
        if let Some(code) = text.trim().strip_prefix("exited ") {
            break code.to_string();
        }
        if start.elapsed() > Duration::from_secs(300) || !state.status.success() {
            break format!("not exited: {text} {}", stderr(&state));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let logs = Command::new("podman")
        .args(["logs", &container])
        .output()
        .unwrap();
    let artifact = fs::read_to_string(Path::new(&mountpoint).join("0/artifact"));
    let owner = fs::metadata(Path::new(&mountpoint).join("0/artifact")).map(|m| m.uid());
    Command::new("podman")
        .args(["kube", "down"])
        .arg(&pod_file)
        .output()
        .unwrap();
    Command::new("podman")
        .args(["volume", "rm", "--force", &claim])
        .output()
        .unwrap();
    assert_eq!(
        code,
        "0",
        "kube play: {}{}\nlogs:\n{}{}",
        stdout(&played),
        stderr(&played),
        stdout(&logs),
        stderr(&logs)
    );
    assert_eq!(artifact.unwrap(), "built-in-kube\n");
    assert_eq!(owner.unwrap(), 1000);
}

#[test]
#[ignore = "needs kubernetes-validate (PyPI); scripts/test.sh runs it"]
fn every_manifest_passes_the_kubernetes_schema() {
    let dir = repo_root().join("deploy/kubernetes");
    let env = Env::new();
    // The base's files as they are, each overlay as kustomize renders it, against the
    // oldest Kubernetes each needs: backoffLimitPerIndex is GA in 1.33, image volumes
    // are on by default in 1.35.
    let mut checks: Vec<(PathBuf, &str)> = fs::read_dir(dir.join("base"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .map(|p| (p, "1.33.0"))
        .collect();
    for (overlay, version) in [
        ("base", "1.33.0"),
        ("kvm", "1.33.0"),
        ("image-volume", "1.35.0"),
    ] {
        let rendered = Command::new("kubectl")
            .arg("kustomize")
            .arg(dir.join(overlay))
            .output()
            .expect("kubectl (for its kustomize)");
        ok(&rendered);
        let file = env.tmp.path().join(format!("{overlay}.yaml"));
        fs::write(&file, &rendered.stdout).unwrap();
        checks.push((file, version));
    }
    for (file, version) in checks {
        // As a module: pip's --user install puts the command where PATH may not look.
        let out = Command::new("python3")
            .args([
                "-m",
                "kubernetes_validate",
                "--strict",
                "--kubernetes-version",
            ])
            .arg(version)
            .arg(&file)
            .output()
            .expect("python3 with kubernetes-validate (pip install kubernetes-validate)");
        ok(&out);
        assert!(
            !stdout(&out).contains("WARN") && !stdout(&out).contains("ERROR"),
            "{}: {}",
            file.display(),
            stdout(&out)
        );
    }
}
