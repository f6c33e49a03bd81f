//! `--no-snapshot`: changes made in the box stay across runs in a persistent layer per box
//! version, never in the box itself; runs without it do not see them; one build at a
//! time uses a layer; `box prune` and `box remove` delete it.

mod common;

use common::{ok, stderr, stdout, tiny_box_dir, Env};
use sha2::{Digest, Sha256};
use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

const SCRIPT: &str = "cat /etc/kept.txt > seen.txt 2>/dev/null\necho \"$(cat /etc/kept.txt 2>/dev/null)x\" > /etc/kept.txt\n";

fn disk_digest() -> String {
    let bytes = fs::read(tiny_box_dir().join("disk.qcow2")).unwrap();
    format!("{:x}", Sha256::digest(&bytes))
}

fn seen(env: &Env) -> String {
    fs::read_to_string(env.out.join("seen.txt")).unwrap_or_default()
}

#[test]
fn no_snapshot_keeps_changes_in_a_layer_of_their_own() {
    let env = Env::new();
    env.script(SCRIPT);
    let before = disk_digest();

    let out = env.build(&["--no-snapshot"], &[]);
    ok(&out);
    assert!(
        stderr(&out).contains("new persistent layer"),
        "{}",
        stderr(&out)
    );
    assert_eq!(seen(&env), "");
    let out = env.build(&["--no-snapshot"], &[]);
    ok(&out);
    assert!(
        stderr(&out).contains("from earlier runs"),
        "{}",
        stderr(&out)
    );
    assert_eq!(seen(&env), "x\n", "the first run's change is kept");

    // A normal run starts from the pristine box.
    ok(&env.build(&[], &[]));
    assert_eq!(seen(&env), "");
    assert_eq!(disk_digest(), before, "the box disk was written");

    // One --no-snapshot build at a time per layer.
    env.script(
        "touch started\ni=0; while [ ! -e go ]; do i=$((i+1)); [ $i -gt 1500 ] && exit 9; sleep 0.2; done\n",
    );
    let mut running = env
        .build_command(&["--no-snapshot"], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !env.out.join("started").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the build did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Into another target dir: the same one is refused before the layer is looked at.
    let out = env
        .boxbuild()
        .args(["--no-accel", "--box", "tiny", "--no-snapshot", "--"])
        .arg("--description")
        .arg(&env.desc)
        .arg("--target-dir")
        .arg(env.tmp.path().join("other-out"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("in use by another --no-snapshot build"),
        "{}",
        stderr(&out)
    );
    let mut c = env.boxbuild();
    let out = c.args(["box", "prune"]).output().unwrap();
    assert!(
        stdout(&out).contains("a running build uses it"),
        "{}",
        stdout(&out)
    );
    fs::write(env.out.join("go"), "").unwrap();
    assert!(running.wait().unwrap().success());

    // prune removes the layer (a local box has no cached version to keep it for).
    let out = env.boxbuild().args(["box", "prune"]).output().unwrap();
    ok(&out);
    assert!(
        stdout(&out).contains("removed the persistent layer of tiny"),
        "{}",
        stdout(&out)
    );
    env.script(SCRIPT);
    let out = env.build(&["--no-snapshot"], &[]);
    ok(&out);
    assert!(
        stderr(&out).contains("new persistent layer"),
        "{}",
        stderr(&out)
    );
    assert_eq!(seen(&env), "");
    let out = env
        .boxbuild()
        .args(["box", "remove", "tiny"])
        .output()
        .unwrap();
    ok(&out);
    assert!(
        stdout(&out).contains("removed the persistent layer"),
        "{}",
        stdout(&out)
    );
    assert!(!env.cache_dir().join("layers/tiny").exists());
}
