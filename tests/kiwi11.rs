//! kiwi 11's command forms (`kiwi-ng [globals] system boxbuild [options] kiwi ...`, with
//! `--` as the alias of `kiwi`) with `kiwi-ng` replaced by `boxbuild`: on the tiny box
//! (as a VM and as a container) and on the tiny box of KIWI's plugin protocol. kiwi's
//! global options reach the builder, a host `--config` file is shared read-only,
//! `SOURCE_DATE_EPOCH` reaches the build, the package cache is shared read-write, and
//! `--help` after the separator starts no box.

mod common;

use common::{ok, plugin_box_dir, stderr, stdout, tiny_box_dir, Env};
use std::fs;
use std::process::{Command, Output};

fn argv_json(env: &Env) -> Vec<String> {
    let text = fs::read_to_string(env.out.join("argv.json")).expect("argv.json in the target");
    serde_json::from_str(&text).unwrap()
}

fn read(env: &Env, name: &str) -> String {
    fs::read_to_string(env.out.join(name)).unwrap_or_default()
}

/// `boxbuild GLOBALS system boxbuild OPTIONS SEP --description D --target-dir O ARGS`.
fn kiwi11(env: &Env, globals: &[&str], options: &[&str], sep: &str, args: &[&str]) -> Command {
    let mut c = env.boxbuild();
    c.args(globals)
        .args(["system", "boxbuild"])
        .args(options)
        .arg(sep)
        .arg("--description")
        .arg(&env.desc)
        .arg("--target-dir")
        .arg(&env.out)
        .args(args);
    c
}

const SCRIPT: &str = "echo \"$SOURCE_DATE_EPOCH\" > sde
echo \"$BOXBUILD_PACKAGE_CACHE\" > package-cache
cat /boxbuild/config/kiwi.yml > config-seen 2>/dev/null
touch /boxbuild/config/x 2>/dev/null && echo writable > config-writable
if [ -n \"$BOXBUILD_PACKAGE_CACHE\" ]; then
  mkdir -p \"$BOXBUILD_PACKAGE_CACHE/apt-get/archives\"
  echo deb > \"$BOXBUILD_PACKAGE_CACHE/apt-get/archives/pkg_1_amd64.deb\"
fi
exit 7
";

fn config_file(env: &Env) -> std::path::PathBuf {
    let dir = env.tmp.path().join("etc");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("kiwi.yml"), "runtime: from-the-host\n").unwrap();
    fs::write(dir.join("secret"), "not for the box\n").unwrap();
    dir.join("kiwi.yml")
}

/// What the builder gets in both tests: the globals given before `system boxbuild`
/// first, then the words after the separator.
const ARRIVED: [&str; 12] = [
    "--profile",
    "Virtual",
    "--setenv",
    "A=B",
    "--config",
    "/boxbuild/config/kiwi.yml",
    "--target-arch",
    "x86_64",
    "--debug",
    "--add-package",
    "vim",
    "--setenv=C=D",
];

fn check_globals_arrived(env: &Env, out: &Output, cache: &std::path::Path) {
    assert_eq!(out.status.code(), Some(7), "{}", stderr(out));
    assert_eq!(argv_json(env), ARRIVED);
    assert_eq!(read(env, "sde").trim(), "1700000000");
    assert_eq!(read(env, "config-seen"), "runtime: from-the-host\n");
    assert_eq!(read(env, "config-writable"), "", "the config is read-only");
    assert_eq!(read(env, "package-cache").trim(), "/boxbuild/packages");
    assert_eq!(
        fs::read_to_string(cache.join("apt-get/archives/pkg_1_amd64.deb")).unwrap(),
        "deb\n"
    );
}

#[test]
fn the_kiwi_11_form_reaches_the_builder_in_a_vm() {
    let env = Env::new();
    env.script(SCRIPT);
    let config = config_file(&env);
    let out = kiwi11(
        &env,
        &[
            "--profile",
            "Virtual",
            "--setenv",
            "A=B",
            "--config",
            config.to_str().unwrap(),
            "--target-arch",
            "x86_64",
            "--debug",
        ],
        &["--no-accel", "--box", "tiny"],
        "kiwi",
        &["--add-package", "vim", "--setenv=C=D"],
    )
    .env("SOURCE_DATE_EPOCH", "1700000000")
    .output()
    .unwrap();
    let arch = std::env::consts::ARCH;
    check_globals_arrived(
        &env,
        &out,
        &env.cache_dir().join(format!("packages/tiny/{arch}")),
    );
    assert!(env.leftover_run_dirs().is_empty());
}

#[test]
fn the_dash_dash_alias_in_a_container_with_the_users_cache_dir() {
    let env = Env::new();
    env.script(SCRIPT);
    let config = config_file(&env);
    let cache = env.tmp.path().join("my-kiwi-cache");
    let out = kiwi11(
        &env,
        &[
            "--profile",
            "Virtual",
            "--setenv=A=B",
            &format!("--config={}", config.display()),
            "--shared-cache-dir",
            cache.to_str().unwrap(),
        ],
        &["--container", "--box", "tiny"],
        "--",
        &ARRIVED[6..],
    )
    .env("SOURCE_DATE_EPOCH", "1700000000")
    .output()
    .unwrap();
    // The globals after the separator stay where they were; those before come first.
    check_globals_arrived(&env, &out, &cache);
    assert!(
        !env.cache_dir().join("packages").exists(),
        "--shared-cache-dir replaces boxbuild's own cache"
    );

    // --no-package-cache: nothing shared, nothing kept.
    let env = Env::new();
    env.script(
        "echo \"[$BOXBUILD_PACKAGE_CACHE]\" > package-cache; ls /boxbuild > listing 2>&1; exit 0\n",
    );
    let out = kiwi11(
        &env,
        &[],
        &["--container", "--no-package-cache", "--box", "tiny"],
        "kiwi",
        &[],
    )
    .output()
    .unwrap();
    ok(&out);
    assert_eq!(read(&env, "package-cache").trim(), "[]");
    assert!(!env.cache_dir().join("packages").exists());
}

#[test]
fn help_after_the_separator_starts_no_box() {
    for help in [&["--help"][..], &["help"], &["--type", "oem", "-h"]] {
        let env = Env::new();
        let mut c = env.boxbuild();
        c.args([
            "--profile",
            "Virtual",
            "system",
            "boxbuild",
            "--box",
            "tiny",
            "kiwi",
        ])
        .args(help);
        let out = c.output().unwrap();
        ok(&out);
        assert!(
            stdout(&out).contains("kiwi --description DIR --target-dir DIR"),
            "{help:?}: {}",
            stdout(&out)
        );
        assert!(!env.out.exists(), "no build ran");
        assert!(env.leftover_run_dirs().is_empty());
    }
    // kiwi 11's `system boxbuild help` and `--help`: boxbuild's own help.
    for help in ["help", "--help"] {
        let env = Env::new();
        let out = env
            .boxbuild()
            .args(["system", "boxbuild", help])
            .output()
            .unwrap();
        ok(&out);
        assert!(stdout(&out).contains("--box"), "{}", stdout(&out));
    }
}

#[test]
fn kiwi_options_the_box_cannot_honour_are_refused_before_booting() {
    let env = Env::new();
    for (globals, word) in [
        (&["--logfile", "/tmp/kiwi.log"][..], "--logfile"),
        (&["--logsocket", "/run/kiwi.sock"], "--logsocket"),
        (&["--config", "no-such.yml"], "--config"),
    ] {
        let out = kiwi11(&env, globals, &["--no-accel", "--box", "tiny"], "kiwi", &[])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125), "{word}: {}", stderr(&out));
        assert!(stderr(&out).contains(word), "{}", stderr(&out));
        assert!(env.leftover_run_dirs().is_empty());
    }
    // A SOURCE_DATE_EPOCH that is no number is refused, as its specification asks.
    for bad in ["yesterday", "-1", "1.5", "99999999999999999999999"] {
        let out = kiwi11(&env, &[], &["--no-accel", "--box", "tiny"], "kiwi", &[])
            .env("SOURCE_DATE_EPOCH", bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125), "{bad}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("SOURCE_DATE_EPOCH"),
            "{}",
            stderr(&out)
        );
        assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
        assert!(env.leftover_run_dirs().is_empty());
    }
    // A typo in the separator is clap's usage error.
    let out = env
        .boxbuild()
        .args([
            "system",
            "boxbuild",
            "--box",
            "tiny",
            "kiwii",
            "--description",
            "d",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let _ = tiny_box_dir();
}

#[test]
fn the_kiwi_11_form_on_a_box_of_the_plugin() {
    let env = Env::new();
    env.script("exit 3\n");
    let out = kiwi11(
        &env,
        &["--type", "oem", "--setenv", "A=B", "--profile", "p1"],
        &["--no-accel", "--box", "tiny-plugin"],
        "kiwi",
        &["--add-package", "vim"],
    )
    .env("BOXBUILD_CONFIG", plugin_box_dir().join("catalog.toml"))
    .env("SOURCE_DATE_EPOCH", "1700000000")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        read(&env, "kiwi-args.txt"),
        "--setenv\nSOURCE_DATE_EPOCH=1700000000\n--type\noem\n--profile\np1\n--setenv\nA=B\nsystem\nbuild\n--add-package\nvim\n"
    );
    // A host --config cannot reach such a box: one line, nothing booted.
    let config = config_file(&env);
    let out = kiwi11(
        &env,
        &["--config", config.to_str().unwrap()],
        &["--no-accel", "--box", "tiny-plugin"],
        "--",
        &[],
    )
    .env("BOXBUILD_CONFIG", plugin_box_dir().join("catalog.toml"))
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/description/NAME"),
        "{}",
        stderr(&out)
    );
}
