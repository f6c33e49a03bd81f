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

/// s390x (ccw devices, SCLP console), ppc64le (pseries, hvc0 console) and riscv64 (virt,
/// OpenSBI, a box from Debian 13 since Debian 12 has no riscv64) boxes, built from
/// Debian's packages like the others: the builder runs on that architecture and the
/// shares and network work.
#[test]
fn s390x_ppc64le_and_riscv64_boxes_boot_and_build() {
    for arch in ["s390x", "ppc64le", "riscv64"] {
        let dir = common::tiny_box_dir_for(arch);
        let env = Env::new();
        env.script("uname -m > arch\nip addr > ip.txt\nexit 5\n");
        let mut c = env.build_command(&["--arch", arch], &["a b"]);
        c.env("BOXBUILD_CONFIG", dir.join("catalog.toml"));
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(5), "{arch}: {}", stderr(&out));
        assert_eq!(
            fs::read_to_string(env.out.join("arch")).unwrap().trim(),
            arch
        );
        assert!(fs::read_to_string(env.out.join("ip.txt"))
            .unwrap()
            .contains("10.0.2.15/24"));
        let argv: Vec<String> =
            serde_json::from_str(&fs::read_to_string(env.out.join("argv.json")).unwrap()).unwrap();
        assert_eq!(argv, ["a b"], "{arch}");
        assert!(env.leftover_run_dirs().is_empty(), "{arch}");
    }
}

/// The riscv64 box's packages come from Debian 13 through the recipes' own apt state,
/// whatever release the host runs.
#[test]
fn the_riscv64_box_is_made_from_debian_13() {
    let dir = common::tiny_box_dir_for("riscv64");
    let env = Env::new();
    env.script("cat /etc/box-release > release\n");
    let mut c = env.build_command(&["--arch", "riscv64"], &[]);
    c.env("BOXBUILD_CONFIG", dir.join("catalog.toml"));
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(env.out.join("release")).unwrap().trim(),
        "tiny-1.0.0 debian-trixie"
    );
}
