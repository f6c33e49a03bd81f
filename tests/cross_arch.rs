//! A box of the other architecture (aarch64 on x86_64, x86_64 on aarch64) under TCG: the
//! builder runs on the box's architecture, argv and exit codes round-trip, shares work.

mod common;

use common::{foreign_arch, foreign_tiny_box_dir, stderr, Env};
use std::fs;

fn foreign_build(env: &Env, flags: &[&str], args: &[&str]) -> std::process::Output {
    let mut c = env.build_command(flags, args);
    c.env(
        "BOXBUILD_CONFIG",
        foreign_tiny_box_dir().join("catalog.toml"),
    );
    c.output().unwrap()
}

#[test]
fn a_foreign_box_runs_its_own_architecture_over_each_backend() {
    let arch = foreign_arch();
    let arch_flag = format!("--{arch}");
    for (flags, backend) in [
        (vec![arch_flag.as_str()], "9p"),
        (vec!["--arch", arch, "--virtiofs-sharing"], "virtiofs"),
        (vec!["--arch", arch, "--sshfs-sharing"], "sshfs"),
    ] {
        let env = Env::new();
        env.script("uname -m > arch\nexit 7\n");
        let out = foreign_build(&env, &flags, &["two words", "", "--x"]);
        assert_eq!(out.status.code(), Some(7), "{backend}: {}", stderr(&out));
        assert_eq!(
            fs::read_to_string(env.out.join("arch")).unwrap().trim(),
            arch,
            "{backend}"
        );
        let argv: Vec<String> =
            serde_json::from_str(&fs::read_to_string(env.out.join("argv.json")).unwrap()).unwrap();
        assert_eq!(argv, ["two words", "", "--x"], "{backend}");
        assert!(
            stderr(&out).contains(&format!("({arch}, tcg)")),
            "{backend}: {}",
            stderr(&out)
        );
        assert!(env.leftover_run_dirs().is_empty());
    }
}

#[test]
fn asking_for_an_architecture_the_box_lacks_names_the_ones_it_has() {
    let env = Env::new();
    let out = foreign_build(&env, &["--arch", std::env::consts::ARCH], &[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains(&format!(
            "box 'tiny' has no {} version (it has: {})",
            std::env::consts::ARCH,
            foreign_arch()
        )),
        "{}",
        stderr(&out)
    );
}
