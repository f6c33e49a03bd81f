//! Boxes of KIWI's Python boxbuild plugin: a test box speaking its kernel-command-line
//! protocol (boxes/tiny/plugin-init.sh) gets the kiwi arguments, sharing backend, kiwi
//! version and custom mount; only a result.code written by this run counts; arguments
//! the protocol cannot carry are refused before anything boots.

mod common;

use common::{plugin_box_dir, stderr, stdout, Env};
use std::fs;
use std::process::Command;

fn plugin_build(env: &Env, extra: &[&str], args: &[&str]) -> Command {
    let mut c = env.boxbuild();
    // --no-accel means nothing to a container (and says so).
    if !extra.contains(&"--container") {
        c.arg("--no-accel");
    }
    c.env("BOXBUILD_CONFIG", plugin_box_dir().join("catalog.toml"))
        .args(["--box", "tiny-plugin"])
        .args(extra)
        .arg("--")
        .arg("--description")
        .arg(&env.desc)
        .arg("--target-dir")
        .arg(&env.out)
        .args(args);
    c
}

fn read(env: &Env, name: &str) -> String {
    fs::read_to_string(env.out.join(name)).unwrap_or_default()
}

#[test]
fn arguments_and_settings_reach_the_box_and_result_code_is_the_exit_code() {
    for backend in ["--9p-sharing", "--virtiofs-sharing"] {
        let env = Env::new();
        env.script("echo building; exit 7\n");
        let custom = env.tmp.path().join("custom");
        fs::create_dir_all(&custom).unwrap();
        fs::write(custom.join("repo-file"), "").unwrap();
        let out = plugin_build(
            &env,
            &[
                backend,
                "--type",
                "oem",
                "--kiwi-version",
                "9.24.1",
                "--shared-path",
                custom.to_str().unwrap(),
            ],
            &["--add-package", "vim", "--profile=p1"],
        )
        .output()
        .unwrap();
        assert_eq!(out.status.code(), Some(7), "{backend}: {}", stderr(&out));
        assert_eq!(
            read(&env, "kiwi-args.txt"),
            "--type\noem\n--profile=p1\nsystem\nbuild\n--add-package\nvim\n",
            "{backend}"
        );
        let name = backend
            .trim_start_matches("--")
            .trim_end_matches("-sharing");
        assert_eq!(read(&env, "sharing-backend.txt").trim(), name);
        assert_eq!(read(&env, "kiwi-version.txt").trim(), "9.24.1");
        assert_eq!(
            read(&env, "custom-mount.txt").trim(),
            custom.to_str().unwrap()
        );
        assert_eq!(read(&env, "custom-listing.txt").trim(), "repo-file");
        // The box's console is the build's output; result.log is the box's own.
        assert!(stdout(&out).contains("building"), "{}", stdout(&out));
        assert!(read(&env, "result.log").contains("building"));
        assert_eq!(read(&env, "result.code").trim(), "7");
    }
}

#[test]
fn a_missing_or_stale_result_code_is_a_failure() {
    let env = Env::new();
    fs::write(env.desc.join("no-result-code"), "").unwrap();
    // A result.code of 0 from an earlier run must not pass for this one.
    fs::create_dir_all(&env.out).unwrap();
    fs::write(env.out.join("result.code"), "0\n").unwrap();
    let out = plugin_build(&env, &[], &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(123), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("without writing result.code"),
        "{}",
        stderr(&out)
    );
    assert!(!env.out.join("result.code").exists());

    fs::remove_file(env.desc.join("no-result-code")).unwrap();
    let out = plugin_build(&env, &[], &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn arguments_the_protocol_cannot_carry_are_refused_before_booting() {
    let env = Env::new();
    for (extra, args, says) in [
        (
            &[][..],
            &["--add-package", "a b"][..],
            "'a b' cannot be passed",
        ),
        (
            &[][..],
            &["--set-repo", "http://x/$(reboot)"][..],
            "cannot be passed",
        ),
        (
            &["--sshfs-sharing"][..],
            &[][..],
            "--sshfs-sharing is not available",
        ),
    ] {
        let out = plugin_build(&env, extra, args).output().unwrap();
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(says) && err.lines().count() == 1, "{err}");
    }
    assert!(env.leftover_run_dirs().is_empty());
}

/// The test box in the layout the plugin's boxes are published in: a Kernel.tar.xz with
/// `*.kernel` and `*.initrd`, the System.qcow2, `.sha256` sidecars and a packages file.
fn publish_like_the_plugin(www: &std::path::Path, packages: &str) {
    let images = www.join("images");
    fs::create_dir_all(&images).unwrap();
    let stage = www.join("stage");
    fs::create_dir_all(&stage).unwrap();
    let arch = std::env::consts::ARCH;
    fs::copy(
        plugin_box_dir().join("kernel"),
        stage.join(format!("Tiny-Box.{arch}-1.0.kernel")),
    )
    .unwrap();
    fs::copy(
        plugin_box_dir().join("initrd"),
        stage.join(format!("Tiny-Box.{arch}-1.0.initrd")),
    )
    .unwrap();
    let tarball = images.join(format!("Tiny-Box.{arch}-Kernel.tar.xz"));
    let status = Command::new("tar")
        .arg("-cJf")
        .arg(&tarball)
        .arg("-C")
        .arg(&stage)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let qcow2 = images.join(format!("Tiny-Box.{arch}-System.qcow2"));
    fs::copy(plugin_box_dir().join("disk.qcow2"), &qcow2).unwrap();
    for file in [&tarball, &qcow2] {
        let out = Command::new("sha256sum")
            .arg(file)
            .current_dir(&images)
            .output()
            .unwrap();
        let line = String::from_utf8(out.stdout).unwrap();
        let digest = line.split_whitespace().next().unwrap();
        let name = file.file_name().unwrap().to_str().unwrap();
        fs::write(
            images.join(format!("{name}.sha256")),
            format!("{digest}  {name}\n"),
        )
        .unwrap();
    }
    fs::write(
        images.join(format!("Tiny-Box.{arch}-System.json")),
        packages,
    )
    .unwrap();
}

fn plugin_config(source: &str) -> String {
    let arch = std::env::consts::ARCH;
    format!(
        "box:\n  - name: plugbox\n    mem_mb: 256M\n    processors: 1\n    console: hvc0\n    arch:\n      - name: {arch}\n        cmdline:\n          - root=/dev/vda\n          - init=/sbin/plugin-init\n          - panic=-1\n        source: {source}\n        packages_file: Tiny-Box.{arch}-System.json\n        boxfiles:\n          - Tiny-Box.{arch}-Kernel.tar.xz\n          - Tiny-Box.{arch}-System.qcow2\n        use_initrd: true\n"
    )
}

#[test]
fn a_box_from_kiwi_boxed_plugin_yml_is_fetched_by_its_packages_file_and_built_in() {
    let env = Env::new();
    let www = env.tmp.path().join("www");
    publish_like_the_plugin(&www, "{\"packages\": 1}\n");
    let server = common::http::HttpServer::start(&www);
    let config = env.tmp.path().join("boxes.yml");
    fs::write(&config, plugin_config(&server.url("images"))).unwrap();
    let empty = env.tmp.path().join("empty.toml");
    fs::write(&empty, "").unwrap();
    let cache = env.tmp.path().join("kiwi-boxes");
    fs::create_dir_all(&cache).unwrap();
    env.script("echo from-the-plugin-box; exit 4\n");
    let build = || {
        let mut c = env.boxbuild();
        c.env("BOXBUILD_CONFIG", &empty)
            .env("KIWI_BOXED_PLUGIN_CFG", &config)
            .env("KIWI_BOXED_CACHE_DIR", &cache)
            .env("BOXBUILD_UPDATE_CHECK_INTERVAL", "0")
            .args(["--no-accel", "--box", "plugbox", "--"])
            .arg("--description")
            .arg(&env.desc)
            .arg("--target-dir")
            .arg(&env.out);
        c.output().unwrap()
    };
    let fetched = |server: &common::http::HttpServer| -> Vec<String> {
        server
            .log()
            .into_iter()
            .map(|l| l.path)
            .filter(|p| p.ends_with(".qcow2") || p.ends_with(".tar.xz"))
            .collect()
    };

    // Listed before first use, with its source.
    let mut list = env.boxbuild();
    let listed = list
        .env("BOXBUILD_CONFIG", &empty)
        .env("KIWI_BOXED_PLUGIN_CFG", &config)
        .arg("--list-boxes")
        .output()
        .unwrap();
    assert!(
        stdout(&listed).contains("plugbox") && stdout(&listed).contains("(on use)"),
        "{}",
        stdout(&listed)
    );

    let out = build();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stdout(&out).contains("from-the-plugin-box"));
    assert_eq!(fetched(&server).len(), 2, "{:?}", fetched(&server));
    // The plugin's cache dir holds the box.
    assert!(cache.join("boxes/plugbox").is_dir());

    // Same packages file: the box files are not fetched again.
    let out = build();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(fetched(&server).len(), 2);

    // A new packages file marks a new box: fetched again, as a new version.
    publish_like_the_plugin(&www, "{\"packages\": 2}\n");
    let out = build();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(fetched(&server).len(), 4);
    let versions = fs::read_dir(cache.join(format!("boxes/plugbox/{}", std::env::consts::ARCH)))
        .unwrap()
        .count();
    assert_eq!(versions, 2);
}

#[test]
fn kiwi_boxed_plugin_yml_is_found_where_the_plugin_looks_and_errors_name_it() {
    let env = Env::new();
    let broken = "box:\n  - name: plugbox\n    arch: 3\n";
    let run = |extra_env: &[(&str, &std::path::Path)]| {
        let mut c = env.boxbuild();
        for (k, v) in extra_env {
            c.env(k, v);
        }
        c.args(["--no-accel", "--box", "plugbox", "--", "--description"])
            .arg(&env.desc)
            .arg("--target-dir")
            .arg(&env.out);
        c.output().unwrap()
    };
    // $KIWI_BOXED_PLUGIN_CFG
    let named = env.tmp.path().join("named.yml");
    fs::write(&named, broken).unwrap();
    let out = run(&[("KIWI_BOXED_PLUGIN_CFG", &named)]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains(&format!("{}:3:", named.display())),
        "{}",
        stderr(&out)
    );
    // ~/.config/kiwi/kiwi_boxed_plugin.yml (HOME is the test's)
    let home_file = env
        .tmp
        .path()
        .join("home/.config/kiwi/kiwi_boxed_plugin.yml");
    fs::create_dir_all(home_file.parent().unwrap()).unwrap();
    fs::write(&home_file, broken).unwrap();
    let out = run(&[]);
    assert!(
        stderr(&out).contains(".config/kiwi/kiwi_boxed_plugin.yml:3:"),
        "{}",
        stderr(&out)
    );
    // ./kiwi_boxed_plugin.yml comes before the home one.
    fs::write(env.tmp.path().join("kiwi_boxed_plugin.yml"), broken).unwrap();
    let out = run(&[]);
    let err = stderr(&out);
    assert!(
        err.contains("kiwi_boxed_plugin.yml:3:") && !err.contains(".config/kiwi"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Containers of boxbuild processes that have ended (none should outlive its build);
/// containers of builds still running elsewhere are not counted.
fn containers_of_this_test(env: &Env) -> String {
    let out = Command::new("podman")
        .args(["ps", "--all", "--format", "{{.Names}} {{.Labels}}"])
        .env("HOME", env.tmp.path().join("home"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.split("org.boxbuild.pid:")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .is_some_and(|pid| !std::path::Path::new("/proc").join(pid).exists())
        })
        .map(str::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn with_container_a_plugin_box_runs_its_container_image_from_a_registry() {
    let env = Env::new();
    // The box's container image (boxes/tiny/build.sh --plugin), served by a real registry.
    let registry = common::registry::Registry::start(&env.tmp.path().join("registry"), None);
    let image = format!("{}/boxes/tiny-plugin:latest", registry.addr);
    let layout = plugin_box_dir().join("container");
    let copied = Command::new("skopeo")
        .arg("copy")
        .arg("--dest-tls-verify=false")
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(copied.status.success(), "{}", stderr(&copied));
    let conf = common::registry::registries_conf(env.tmp.path(), &[&registry.addr]);
    // Published as the plugin publishes its boxes, with `container:` in its configuration.
    let www = env.tmp.path().join("www");
    publish_like_the_plugin(&www, "{\"packages\": 1}\n");
    let server = common::http::HttpServer::start(&www);
    let config = env.tmp.path().join("boxes.yml");
    fs::write(
        &config,
        format!(
            "{}        container: {image}\n",
            plugin_config(&server.url("images"))
        ),
    )
    .unwrap();
    let empty = env.tmp.path().join("empty.toml");
    fs::write(&empty, "").unwrap();
    let custom = env.tmp.path().join("custom");
    fs::create_dir_all(&custom).unwrap();
    fs::write(custom.join("repo-file"), "").unwrap();
    env.script("echo building in a container; touch /description/written && echo WROTE; exit 6\n");
    let build = || {
        let mut c = env.boxbuild();
        c.env("BOXBUILD_CONFIG", &empty)
            .env("KIWI_BOXED_PLUGIN_CFG", &config)
            .env("KIWI_BOXED_CACHE_DIR", env.tmp.path().join("kiwi-boxes"))
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .args(["--box", "plugbox", "--container", "--type", "tbz"])
            .args(["--kiwi-version", "9.24.1", "--shared-path"])
            .arg(&custom)
            .args(["--", "--add-package", "vim", "--description"])
            .arg(&env.desc)
            .arg("--target-dir")
            .arg(&env.out);
        c.output().unwrap()
    };
    let pulls = || {
        registry
            .requests()
            .iter()
            .filter(|r| r.starts_with("GET /v2/boxes/tiny-plugin/manifests/"))
            .count()
    };
    let pulled_by_copy = pulls();

    let out = build();
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("as a container"), "{}", stderr(&out));
    assert!(stderr(&out).contains("pulling"), "{}", stderr(&out));
    // The plugin's container protocol: /container.cmdline, /description, /bundle.
    assert_eq!(
        read(&env, "kiwi-args.txt"),
        "--type\ntbz\nsystem\nbuild\n--add-package\nvim\n"
    );
    assert_eq!(read(&env, "sharing-backend.txt").trim(), "container");
    assert_eq!(read(&env, "kiwi-version.txt").trim(), "9.24.1");
    assert_eq!(
        read(&env, "custom-mount.txt").trim(),
        custom.to_str().unwrap()
    );
    assert_eq!(read(&env, "custom-listing.txt").trim(), "repo-file");
    // Its output is the build's output; the description stays read-only.
    assert!(
        stdout(&out).contains("building in a container"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("WROTE"), "{}", stdout(&out));
    assert!(!env.desc.join("written").exists());
    assert_eq!(read(&env, "result.code").trim(), "6");
    assert!(pulls() > pulled_by_copy, "{:?}", registry.requests());
    // The image is what runs: the VM's box files are not fetched.
    let vm_files: Vec<String> = server
        .log()
        .into_iter()
        .map(|l| l.path)
        .filter(|p| p.ends_with(".qcow2") || p.ends_with(".tar.xz"))
        .collect();
    assert!(vm_files.is_empty(), "{vm_files:?}");
    // Nothing is left: no container, no run dir.
    assert!(
        containers_of_this_test(&env).is_empty(),
        "{}",
        containers_of_this_test(&env)
    );
    assert!(env.leftover_run_dirs().is_empty());

    // Within the update interval the image at hand is used: no request for it.
    let before = pulls();
    let out = build();
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(!stderr(&out).contains("pulling"), "{}", stderr(&out));
    assert_eq!(pulls(), before);

    // A result.code missing is a failure, not success as the plugin has it.
    fs::write(env.desc.join("no-result-code"), "").unwrap();
    let out = build();
    assert_eq!(out.status.code(), Some(123), "{}", stderr(&out));
    assert!(stderr(&out).contains("result.code"), "{}", stderr(&out));

    let _ = Command::new("podman")
        .args(["rmi", "--force", &image])
        .output();
}

#[test]
fn with_container_a_plugin_box_without_an_image_is_refused_in_one_line() {
    let env = Env::new();
    let out = plugin_build(&env, &["--container"], &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("names no container image") && err.lines().count() == 1,
        "{err}"
    );
}
