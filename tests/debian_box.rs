//! The Debian kiwi box from boxes/debian, booted for real: kiwi-ng answers through
//! boxbuild, --kiwi-version installs another kiwi from PyPI over the box's network (HTTPS,
//! with the host's CA certificates), and a failing kiwi build passes its exit code and
//! leaves result.log explaining why; and the box gives its builder what a normal system
//! gives (docs/guest-agent.md, "What the builder finds in the box"). The full image builds
//! are in scripts/e2e-kiwi.sh; the tarball example also builds here as a container.

mod common;

use common::userland::{self, now};
use common::{debian_box_dir, ok, repo_root, stderr, stdout, Env};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

/// The kiwi version the recipe installs by default.
fn recipe_kiwi_version() -> String {
    let recipe = fs::read_to_string(repo_root().join("boxes/debian/build.sh")).unwrap();
    let start = recipe.find("KIWI_VERSION:-").unwrap() + "KIWI_VERSION:-".len();
    let end = start + recipe[start..].find('}').unwrap();
    recipe[start..end].to_string()
}

fn debian_build(
    env: &Env,
    extra: &[&str],
    description: &std::path::Path,
    args: &[&str],
) -> Command {
    let mut c = env.boxbuild();
    // --no-accel means nothing to a container (and says so).
    if !extra.contains(&"--container") {
        c.arg("--no-accel");
    }
    c.env("BOXBUILD_CONFIG", debian_box_dir().join("catalog.toml"))
        .args(["--box", "debian"])
        .args(extra)
        .arg("--")
        .arg("--description")
        .arg(description)
        .arg("--target-dir")
        .arg(&env.out)
        .args(args);
    c
}

/// Runs a `--version` build and checks it printed `version` and ended with kiwi's `code`.
fn kiwi_says_its_version(mut build: Command, version: &str, code: i32) {
    let out = build.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains(&format!("version {version}")),
        "kiwi-ng --version said: {}",
        stdout(&out)
    );
}

#[test]
fn kiwi_ng_answers_through_boxbuild() {
    let env = Env::new();
    let example = repo_root().join("examples/debian-tarball");
    let version = recipe_kiwi_version();
    kiwi_says_its_version(
        debian_build(&env, &[], &example, &["--version"]),
        &version,
        0,
    );
    let log = fs::read_to_string(env.out.join("result.log")).unwrap();
    assert!(log.contains(&version), "{log}");
    // The description is untouched and nothing but the log landed in the target dir.
    let names: Vec<_> = fs::read_dir(&env.out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["result.log"]);
}

#[test]
fn kiwi_version_installs_that_kiwi_from_pypi_for_the_run() {
    let env = Env::new();
    let example = repo_root().join("examples/debian-tarball");
    let wanted = "11.1.5";
    assert_ne!(wanted, recipe_kiwi_version());
    // kiwi 11.1.5's own `kiwi-ng --version` exits 1 (so it does on the host); boxbuild
    // passes that on.
    kiwi_says_its_version(
        debian_build(&env, &["--kiwi-version", wanted], &example, &["--version"]),
        wanted,
        1,
    );
}

#[test]
fn a_failing_kiwi_build_passes_its_exit_code_and_leaves_its_log() {
    let env = Env::new();
    fs::write(
        env.desc.join("config.kiwi"),
        "<?xml version=\"1.0\"?>\n<image schemaversion=\"8.5\" name=\"broken\">\n  <no-such-section/>\n</image>\n",
    )
    .unwrap();
    let out = debian_build(&env, &[], &env.desc, &[]).output().unwrap();
    let code = out.status.code().unwrap();
    assert!(
        (1..=122).contains(&code),
        "kiwi's own failure code, not boxbuild's: {code}\n{}",
        stderr(&out)
    );
    let log = fs::read_to_string(env.out.join("result.log")).unwrap();
    assert!(
        log.contains("KiwiDescriptionInvalid"),
        "result.log does not say why:\n{log}"
    );
    assert!(log.contains("kiwi-ng system build failed"), "{log}");
}

/// The Debian box's catalog entry with `builder` replaced: the same box files, running
/// `/description/script.sh` with the box's /bin/sh instead of boxbuild-kiwi.
fn debian_catalog_running_the_script(env: &Env) -> std::path::PathBuf {
    let catalog = fs::read_to_string(debian_box_dir().join("catalog.toml")).unwrap();
    let builder = "builder = [\"/bin/sh\", \"/description/script.sh\"]";
    let lines: Vec<&str> = catalog
        .lines()
        .map(|l| {
            if l.starts_with("builder = ") {
                builder
            } else {
                l
            }
        })
        .collect();
    assert!(lines.contains(&builder), "no builder in {catalog}");
    let path = env.tmp.path().join("debian-script.toml");
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn the_builder_finds_what_a_normal_system_gives() {
    let env = Env::new();
    env.script(&userland::probe("script -qec true /dev/null"));
    let mut build = debian_build(&env, &["-v"], &env.desc, &[]);
    build.env("BOXBUILD_CONFIG", debian_catalog_running_the_script(&env));
    let started = now();
    let out = build.output().unwrap();
    let ended = now();
    ok(&out);
    let report = userland::read_report(&env.out);
    // The recipe writes /etc/hostname; getent resolves through nsswitch.conf and
    // /etc/hosts, as any program does.
    let mut problems = userland::problems(&report, "boxbuild", (started, ended));
    if !report.contains_key("getent") {
        problems.push("getent did not run".to_string());
    }
    assert!(
        problems.is_empty(),
        "{}\n\nreport: {report:#?}\nstderr:\n{}",
        problems.join("\n"),
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("box setup failed"),
        "{}",
        stderr(&out)
    );
}

/// A `--container` build of `example` on the Debian box, by the caller or, when `user` is
/// given, by that unprivileged user (rootless) with its own dirs under `env`'s; the target
/// dir is `env.out`, or one the user owns. Returns the output and the target dir.
fn container_build(
    env: &Env,
    example: &str,
    user: Option<(&str, u32)>,
) -> (std::process::Output, std::path::PathBuf) {
    let description = repo_root().join("examples").join(example);
    let Some((user, uid)) = user else {
        let out = debian_build(env, &["--container"], &description, &[])
            .output()
            .unwrap();
        return (out, env.out.clone());
    };
    let root = env.tmp.path();
    let exe = root.join("boxbuild");
    fs::copy(env!("CARGO_BIN_EXE_boxbuild"), &exe).unwrap();
    let target = root.join("tmp/out");
    fs::create_dir_all(&target).unwrap();
    for dir in [root.join("tmp"), root.join("home")] {
        Command::new("chown")
            .args(["-R", &uid.to_string()])
            .arg(dir)
            .status()
            .unwrap();
    }
    Command::new("chmod")
        .arg("a+rx")
        .arg(root)
        .arg(&exe)
        .status()
        .unwrap();
    let out = common::as_user(env, user)
        .arg("XDG_RUNTIME_DIR=")
        .arg(format!(
            "BOXBUILD_CONFIG={}",
            debian_box_dir().join("catalog.toml").display()
        ))
        .arg(&exe)
        .args(["--box", "debian", "--container", "--", "--description"])
        .arg(&description)
        .arg("--target-dir")
        .arg(&target)
        .output()
        .unwrap();
    (out, target)
}

/// The file in `dir` whose name ends with `suffix`.
fn artifact(dir: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .unwrap_or_else(|| panic!("no {suffix} in {}", dir.display()))
}

/// The tarball holds a bookworm root whose files belong to root, setuid bits kept.
fn check_root_tarball(dir: &std::path::Path) {
    let tarball = artifact(dir, ".tar.xz");
    let listing = Command::new("tar")
        .arg("-tvJf")
        .arg(&tarball)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&listing.stdout);
    let entry = |path: &str| {
        names
            .lines()
            .find(|l| l.trim_end().ends_with(&format!(" {path}")))
            .unwrap_or_else(|| panic!("no {path} in {}", tarball.display()))
            .to_string()
    };
    assert!(entry("usr/lib/os-release").contains("root/root"), "{names}");
    assert!(entry("usr/bin/passwd").starts_with("-rwsr-xr-x root/root"));
    let os_release = Command::new("tar")
        .arg("-xJOf")
        .arg(&tarball)
        .args(["--wildcards", "*usr/lib/os-release"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&os_release.stdout).contains("VERSION_CODENAME=bookworm"));
    assert!(fs::read_to_string(dir.join("result.log"))
        .unwrap()
        .contains("Creating XZ compressed tar archive"));
}

#[test]
fn the_tarball_example_builds_in_a_container_as_root_and_rootless() {
    // SAFETY: getuid cannot fail.
    let is_root = unsafe { libc::getuid() } == 0;
    let env = Env::new();
    let (out, target) = container_build(&env, "debian-tarball", None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mode = if is_root { "privileged" } else { "rootless" };
    assert!(stderr(&out).contains(mode), "{}", stderr(&out));
    check_root_tarball(&target);
    if !is_root {
        return;
    }
    // The same as a normal user: a rootless container, artifacts owned by the user.
    let user = common::test_user();
    let env = Env::new();
    let (out, target) = container_build(&env, "debian-tarball", Some(user));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("rootless"), "{}", stderr(&out));
    check_root_tarball(&target);
    assert_eq!(
        fs::metadata(artifact(&target, ".tar.xz")).unwrap().uid(),
        user.1
    );
}

#[test]
fn the_container_example_builds_rootless_and_the_disk_example_is_refused() {
    // SAFETY: getuid cannot fail.
    let user = match unsafe { libc::getuid() } {
        0 => Some(common::test_user()),
        _ => None,
    };
    let env = Env::new();
    let (out, target) = container_build(&env, "debian-container", user);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("rootless"), "{}", stderr(&out));
    // An OCI archive skopeo reads, whose layer holds a bookworm root.
    let archive = artifact(&target, ".oci.tar.xz");
    let plain = env.tmp.path().join("image.oci.tar");
    let unpacked = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "xz -dc '{}' > '{}'",
            archive.display(),
            plain.display()
        ))
        .status()
        .unwrap();
    assert!(unpacked.success());
    let layout = env.tmp.path().join("image");
    let copied = Command::new("skopeo")
        .args(["copy", "-q"])
        .arg(format!("oci-archive:{}", plain.display()))
        .arg(format!("dir:{}", layout.display()))
        .output()
        .unwrap();
    assert!(copied.status.success(), "{}", stderr(&copied));
    let bookworm = fs::read_dir(&layout).unwrap().flatten().any(|layer| {
        let os_release = Command::new("tar")
            .arg("-xzOf")
            .arg(layer.path())
            .args(["--wildcards", "*usr/lib/os-release"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&os_release.stdout).contains("VERSION_CODENAME=bookworm")
    });
    assert!(bookworm, "no layer holds a bookworm os-release");
    if let Some((_, uid)) = user {
        assert_eq!(fs::metadata(&archive).unwrap().uid(), uid);
    }
    // A disk image needs loop devices: refused in one line before a container starts.
    let env = Env::new();
    let (out, _) = container_build(&env, "debian-disk", user);
    common::assert_loop_type_refused(&out, "oem");
}

#[test]
fn the_disk_example_builds_in_a_privileged_container_as_root() {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        return; // Loop devices: refused rootless (the test above).
    }
    let attached = || {
        let loops = Command::new("losetup").arg("-a").output().unwrap();
        String::from_utf8_lossy(&loops.stdout).lines().count()
    };
    let loops_before = attached();
    let env = Env::new();
    let (out, target) = container_build(&env, "debian-disk", None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("privileged"), "{}", stderr(&out));
    // A partitioned disk whose largest partition is an ext4 root saying bookworm.
    let image = artifact(&target, ".qcow2");
    let raw = env.tmp.path().join("disk.raw");
    let converted = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&image)
        .arg(&raw)
        .status()
        .unwrap();
    assert!(converted.success());
    let table = Command::new("/sbin/sfdisk")
        .arg("-J")
        .arg(&raw)
        .output()
        .unwrap();
    let table: serde_json::Value = serde_json::from_slice(&table.stdout)
        .unwrap_or_else(|e| panic!("{} has no partition table: {e}", image.display()));
    let partitions = table["partitiontable"]["partitions"].as_array().unwrap();
    let root = partitions
        .iter()
        .max_by_key(|p| p["size"].as_u64().unwrap_or(0))
        .unwrap();
    let part = env.tmp.path().join("root.part");
    let copied = Command::new("dd")
        .arg(format!("if={}", raw.display()))
        .arg(format!("of={}", part.display()))
        .arg("bs=512")
        .arg(format!("skip={}", root["start"].as_u64().unwrap()))
        .arg(format!("count={}", root["size"].as_u64().unwrap()))
        .args(["conv=sparse", "status=none"])
        .status()
        .unwrap();
    assert!(copied.success());
    let os_release = Command::new("/sbin/debugfs")
        .args(["-R", "cat /usr/lib/os-release"])
        .arg(&part)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&os_release.stdout).contains("VERSION_CODENAME=bookworm"),
        "{}",
        stderr(&os_release)
    );
    // No loop device of the build is left attached.
    assert!(attached() <= loops_before);
}

/// The files of a root tarball whose contents differ between two kiwi builds of one
/// description with one SOURCE_DATE_EPOCH, natively as in a box: logs stamped with the
/// time of the build and ldconfig's cache of inode data (docs/reproducible.md).
const KIWI_OWN_DIFFERENCES: [&str; 5] = [
    "var/cache/ldconfig/aux-cache",
    "var/log/alternatives.log",
    "var/log/apt/history.log",
    "var/log/apt/term.log",
    "var/log/dpkg.log",
];

/// `tar -tv --full-time` of a tarball: (entry without its time, its time).
fn tar_listing(tarball: &std::path::Path) -> Vec<(String, String)> {
    let out = Command::new("tar")
        .env("TZ", "UTC")
        .args(["-tvJ", "--full-time", "-f"])
        .arg(tarball)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let time = format!("{} {}", f[3], f[4]);
            let rest = [&f[..3], &f[5..]].concat().join(" ");
            (rest, time)
        })
        .collect()
}

fn unpack(tarball: &std::path::Path, dir: &std::path::Path) {
    fs::create_dir_all(dir).unwrap();
    let status = Command::new("tar")
        .arg("-xJf")
        .arg(tarball)
        .arg("-C")
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Regular files under `a` whose bytes differ in `b`, relative to `a`.
fn differing_files(a: &std::path::Path, b: &std::path::Path, rel: &str, found: &mut Vec<String>) {
    for e in fs::read_dir(a.join(rel)).unwrap().flatten() {
        let name = format!("{rel}{}", e.file_name().to_string_lossy());
        let kind = e.file_type().unwrap();
        if kind.is_dir() {
            differing_files(a, b, &format!("{name}/"), found);
        } else if kind.is_file() && fs::read(a.join(&name)).ok() != fs::read(b.join(&name)).ok() {
            found.push(name);
        }
    }
}

/// boxbuild-kiwi's count of the packages a build took from the package cache and those it
/// downloaded, from its line `package cache: R packages reused, D downloaded, S stored`.
fn package_counts(log: &str) -> (usize, usize) {
    let line = log
        .lines()
        .find(|l| l.contains("boxbuild-kiwi: package cache:"))
        .unwrap_or_else(|| panic!("no package cache line in {log}"));
    let num = |word: &str| -> usize {
        let before = &line[..line.find(word).unwrap()];
        before.split_whitespace().last().unwrap().parse().unwrap()
    };
    (num(" packages reused"), num(" downloaded"))
}

#[test]
fn same_source_date_epoch_gives_kiwis_own_differences_only_and_packages_are_kept() {
    let env = Env::new();
    let description = repo_root().join("examples/debian-tarball");
    let started = std::time::SystemTime::now();
    let mut logs = Vec::new();
    let mut targets = Vec::new();
    for n in 1..=2 {
        let target = env.tmp.path().join(format!("out{n}"));
        let out = env
            .boxbuild()
            .env("BOXBUILD_CONFIG", debian_box_dir().join("catalog.toml"))
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["--box", "debian", "--container", "kiwi", "--description"])
            .arg(&description)
            .arg("--target-dir")
            .arg(&target)
            .output()
            .unwrap();
        ok(&out);
        logs.push(stderr(&out));
        targets.push(target);
    }
    // The second build downloads nothing the first fetched.
    let (_, fetched) = package_counts(&logs[0]);
    assert!(fetched > 50, "{}", logs[0]);
    assert_eq!(package_counts(&logs[1]), (fetched, 0), "{}", logs[1]);
    // Everything but the tarball is byte-identical.
    for suffix in [".packages", ".changes.xz"] {
        assert_eq!(
            fs::read(artifact(&targets[0], suffix)).unwrap(),
            fs::read(artifact(&targets[1], suffix)).unwrap(),
            "{suffix}"
        );
    }
    // The tarballs: the same entries, owners, modes and sizes; times differ only for
    // entries the build made (at or after its start), never for a package's files.
    let (a, b) = (
        tar_listing(&artifact(&targets[0], ".tar.xz")),
        tar_listing(&artifact(&targets[1], ".tar.xz")),
    );
    assert_eq!(
        a.iter().map(|e| &e.0).collect::<Vec<_>>(),
        b.iter().map(|e| &e.0).collect::<Vec<_>>()
    );
    // Made by the build: at or after its start (less the second a tar header may truncate)
    // and before now, compared as instants so a build across midnight is no different.
    let finished = std::time::SystemTime::now();
    let earliest = started - std::time::Duration::from_secs(2);
    let made_by_build = |time: &str| {
        humantime::parse_rfc3339_weak(time)
            .map(|t| t >= earliest && t <= finished)
            .unwrap_or_else(|e| panic!("tar printed a time humantime cannot read: {time}: {e}"))
    };
    for (x, y) in a.iter().zip(&b) {
        if x.1 != y.1 {
            assert!(
                made_by_build(&x.1) && made_by_build(&y.1),
                "{} changed its time outside the build: {} / {}",
                x.0,
                x.1,
                y.1
            );
        }
    }
    // Contents: only kiwi's (apt's, dpkg's, ldconfig's) own stamps differ.
    let (one, two) = (env.tmp.path().join("root1"), env.tmp.path().join("root2"));
    unpack(&artifact(&targets[0], ".tar.xz"), &one);
    unpack(&artifact(&targets[1], ".tar.xz"), &two);
    let mut found = Vec::new();
    differing_files(&one, &two, "", &mut found);
    found.sort();
    assert_eq!(found, KIWI_OWN_DIFFERENCES);
}

#[test]
fn two_builds_at_once_fill_one_package_cache_with_whole_packages() {
    let env = Env::new();
    let description = repo_root().join("examples/debian-tarball");
    let builds: Vec<_> = (1..=2)
        .map(|n| {
            env.boxbuild()
                .env("BOXBUILD_CONFIG", debian_box_dir().join("catalog.toml"))
                .args(["--box", "debian", "--container", "kiwi", "--description"])
                .arg(&description)
                .arg("--target-dir")
                .arg(env.tmp.path().join(format!("out{n}")))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut installed = Vec::new();
    for build in builds {
        let out = build.wait_with_output().unwrap();
        ok(&out);
        // Everything kiwi installed: what it found kept plus what it fetched.
        let (reused, fetched) = package_counts(&stderr(&out));
        installed.push(reused + fetched);
    }
    // Each package once, whole: no partial copies, every .deb readable to its end.
    let cache = env
        .cache_dir()
        .join(format!("packages/debian/{}", std::env::consts::ARCH));
    let mut debs = Vec::new();
    let mut stack = vec![cache.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                !name.contains(".part-"),
                "a partial copy is left: {}",
                path.display()
            );
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".deb") {
                debs.push(path);
            }
        }
    }
    assert!(installed[0] > 50, "{installed:?}");
    assert_eq!(installed[0], installed[1]);
    assert_eq!(
        debs.len(),
        installed[0],
        "{installed:?} in {}",
        cache.display()
    );
    for deb in &debs {
        let check = Command::new("dpkg-deb")
            .arg("--contents")
            .arg(deb)
            .output()
            .unwrap();
        assert!(check.status.success(), "{} is damaged", deb.display());
    }
    assert!(env.leftover_run_dirs().is_empty());
}

/// examples/debian-tarball with its signing key inside the description, named by kiwi 11's
/// `this://` (relative to the description), built in kiwi 11's own command form.
#[test]
fn this_uris_in_the_description_are_read_in_the_box_in_kiwi_11s_form() {
    let env = Env::new();
    let description = env.tmp.path().join("desc");
    fs::create_dir_all(description.join("keys")).unwrap();
    fs::copy(
        "/usr/share/keyrings/debian-archive-keyring.gpg",
        description.join("keys/debian.gpg"),
    )
    .unwrap();
    let config = fs::read_to_string(repo_root().join("examples/debian-tarball/config.kiwi"))
        .unwrap()
        .replace(
            "file:///usr/share/keyrings/debian-archive-keyring.gpg",
            "this://keys/debian.gpg",
        );
    assert!(config.contains("this://keys/debian.gpg"));
    fs::write(description.join("config.kiwi"), &config).unwrap();
    let build = |target: &str| {
        env.boxbuild()
            .env("BOXBUILD_CONFIG", debian_box_dir().join("catalog.toml"))
            .args(["--type", "tbz", "system", "boxbuild", "--box", "debian"])
            .args(["--container", "kiwi", "--description"])
            .arg(&description)
            .arg("--target-dir")
            .arg(env.tmp.path().join(target))
            .output()
            .unwrap()
    };
    let out = build("out");
    ok(&out);
    check_root_tarball(&env.tmp.path().join("out"));
    // The key is really read from the description: without it the build fails naming it.
    fs::rename(
        description.join("keys/debian.gpg"),
        description.join("keys/gone.gpg"),
    )
    .unwrap();
    let out = build("out-nokey");
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        fs::read_to_string(env.tmp.path().join("out-nokey/result.log"))
            .unwrap()
            .contains("keys/debian.gpg"),
        "{}",
        stderr(&out)
    );
    assert!(env.leftover_run_dirs().is_empty());
}
