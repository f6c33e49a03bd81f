//! What the builder finds in the tiny box, whose PID 1 is boxbuild-agent: pseudo-terminals,
//! /dev/shm, the loopback interface, a host name that /etc/hosts resolves, /etc/mtab,
//! PATH, umask, /tmp, resource limits and the host's time (docs/guest-agent.md, "What the
//! builder finds in the box").

mod common;

use common::userland::{self, now};
use common::{ok, stderr, Env};

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
