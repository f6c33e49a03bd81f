//! What the builder finds in the tiny box, whose PID 1 is boxbuild-agent: pseudo-terminals,
//! /dev/shm, the loopback interface, a host name that /etc/hosts resolves, /etc/mtab,
//! PATH, umask, /tmp, resource limits and the host's time, also when the box's own clock
//! starts far off (docs/guest-agent.md, "What the builder finds in the box").

mod common;

use common::userland::{self, now};
use common::{ok, stderr, Env};
use std::fs;
use std::os::unix::fs::PermissionsExt;

#[test]
fn the_builder_finds_what_a_normal_system_gives() {
    let env = Env::new();
    env.script(&userland::probe("box-test-builder --pty-check"));
    let started = now();
    let out = env.build(&["-v"], &[]);
    let ended = now();
    ok(&out);
    let report = userland::read_report(&env.out);
    let problems = userland::problems(&report, "boxbuild", (started, ended));
    assert!(
        problems.is_empty(),
        "{}\n\nreport: {report:#?}\nstderr:\n{}",
        problems.join("\n"),
        stderr(&out)
    );
    // Every setup step worked: none was reported as failed.
    assert!(
        !stderr(&out).contains("box setup failed"),
        "{}",
        stderr(&out)
    );
}

/// The QEMU binary of this host's architecture as PATH finds it.
fn real_qemu() -> std::path::PathBuf {
    let name = format!("qemu-system-{}", std::env::consts::ARCH);
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|dir| dir.join(&name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not in PATH"))
}

#[test]
fn a_box_whose_clock_is_off_gets_the_hosts_time() {
    let env = Env::new();
    env.script("date +%s > date.txt\n");
    // QEMU first in PATH, with the box's RTC (which the kernel reads at boot) in 2001.
    let bin = env.tmp.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let wrapper = bin.join(format!("qemu-system-{}", std::env::consts::ARCH));
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec '{}' \"$@\" -rtc base=2001-01-01T00:00:00\n",
            real_qemu().display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::join_paths(
        std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let started = now();
    let out = env
        .build_command(&["-v"], &[])
        .env("PATH", path)
        .output()
        .unwrap();
    let ended = now();
    ok(&out);
    let guest: u64 = fs::read_to_string(env.out.join("date.txt"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        guest + 3 >= started && guest <= ended + 3,
        "box clock {guest}, host {started} to {ended}\n{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("clock set to the host's"),
        "{}",
        stderr(&out)
    );
}
