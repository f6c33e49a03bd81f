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
    c.env("BOXBUILD_CONFIG", debian_box_dir().join("catalog.toml"))
        .args(["--no-accel", "--box", "debian"])
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

#[test]
fn the_tarball_example_builds_in_a_container() {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        return; // A rootless kiwi build needs /dev/net/tun open to the user (docs/container.md).
    }
    let env = Env::new();
    let out = debian_build(
        &env,
        &["--container"],
        &repo_root().join("examples/debian-tarball"),
        &[],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("as a container"), "{}", stderr(&out));
    let tarball = fs::read_dir(&env.out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tar.xz"))
        .expect("no tarball in the target dir");
    let listing = Command::new("tar")
        .arg("-tJf")
        .arg(&tarball)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&listing.stdout);
    assert!(
        names
            .lines()
            .any(|l| l.trim_start_matches("./") == "etc/os-release"),
        "{names}"
    );
    assert!(fs::read_to_string(env.out.join("result.log"))
        .unwrap()
        .contains("Creating XZ compressed tar archive"));
}
