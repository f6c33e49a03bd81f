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
    c.env("BOXBUILD_CONFIG", plugin_box_dir().join("catalog.toml"))
        .args(["--no-accel", "--box", "tiny-plugin"])
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
