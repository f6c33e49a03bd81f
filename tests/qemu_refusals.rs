//! QEMU refusing to start the box (an option it rejects, memory it cannot allocate, a
//! binary that is missing): one `boxbuild: error:` line quoting QEMU, exit 125, no panic,
//! nothing left behind. Real QEMU (TCG) with the tiny box.

mod common;

use common::{stderr, Env};
use std::process::Output;

/// Exit 125, exactly one error line, which contains `quoted`; no panic; no run dir and
/// no QEMU left.
fn assert_refused(env: &Env, out: &Output, quoted: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("boxbuild: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains(quoted), "{err}");
    assert!(
        env.leftover_run_dirs().is_empty(),
        "{:?}",
        env.leftover_run_dirs()
    );
    assert!(
        env.leftover_processes().is_empty(),
        "{:?}",
        env.leftover_processes()
    );
}

#[test]
fn options_qemu_rejects_are_set_up_errors_in_qemus_words() {
    let cases: [(&[&str], &str, &str); 3] = [
        (
            &["--cpu", "nonsense"],
            "unable to find CPU model 'nonsense'",
            "check --cpu",
        ),
        (
            &["--machine", "nonsense"],
            "unsupported machine type",
            "check --machine",
        ),
        // More than this host's memory and swap: the kernel refuses QEMU the mapping.
        (
            &["--box-memory", "99999G"],
            "cannot set up guest memory",
            "--box-memory",
        ),
    ];
    for (options, quoted, hint) in cases {
        let env = Env::new();
        let out = env.build(options, &[]);
        assert_refused(&env, &out, quoted);
        assert!(stderr(&out).contains(hint), "{}", stderr(&out));
    }
}

#[test]
fn a_configuration_qemu_rejects_is_not_blamed_on_kvm() {
    let env = Env::new();
    // No --no-accel: the KVM probe runs (where /dev/kvm is usable) and meets the refusal.
    let out = env
        .boxbuild()
        .args(["--box", "tiny", "--machine", "nonsense", "--"])
        .arg("--description")
        .arg(&env.desc)
        .arg("--target-dir")
        .arg(&env.out)
        .output()
        .unwrap();
    assert_refused(&env, &out, "unsupported machine type");
    let err = stderr(&out);
    assert!(
        !err.lines()
            .any(|l| l.contains("KVM is not usable") && l.contains("machine type")),
        "{err}"
    );
}

#[test]
fn a_missing_qemu_is_a_set_up_error() {
    let env = Env::new();
    // A PATH with the tools a run needs before QEMU, and no QEMU.
    let bin = env.tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let qemu_img = which("qemu-img");
    std::os::unix::fs::symlink(qemu_img, bin.join("qemu-img")).unwrap();
    let out = env
        .build_command(&[], &[])
        .env("PATH", &bin)
        .output()
        .unwrap();
    let binary = format!("qemu-system-{}", std::env::consts::ARCH);
    assert_refused(&env, &out, &format!("{binary} not found: install QEMU"));
}

fn which(name: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH"))
}
