//! Stashes and stackbuild (docs/stash.md): refusals in one line before any box starts;
//! the in-box helper's round trip (stash, then stack) keeping owners, modes, xattrs,
//! device nodes and hard links; and real kiwi in the Debian box under `--container`:
//! `examples/debian-tarball` built with `--stash` (an OCI layout skopeo reads, kiwi's
//! config), a second stash adding one layer, and a stackbuild from the stash alone with
//! `--no-network` giving a root tarball with the same package list.

mod common;

use common::{debian_box_dir, refused, repo_root, stderr, stdout, Env};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stash_dir(env: &Env) -> PathBuf {
    env.tmp.path().join("stashes")
}

fn boxbuild(env: &Env, catalog: &Path) -> Command {
    let mut c = env.boxbuild();
    c.env("BOXBUILD_CONFIG", catalog)
        .env("BOXBUILD_STASH_DIR", stash_dir(env));
    c
}

fn debian(env: &Env) -> Command {
    boxbuild(env, &debian_box_dir().join("catalog.toml"))
}

fn skopeo_inspect(layout: &Path, tag: &str, config: bool) -> serde_json::Value {
    let mut c = Command::new("skopeo");
    c.arg("inspect");
    if config {
        c.arg("--config");
    }
    let out = c
        .arg(format!("oci:{}:{tag}", layout.display()))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "skopeo inspect: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bad_input_is_one_line_before_any_box() {
    let env = Env::new();
    let catalog = debian_box_dir().join("catalog.toml");
    let stackbuild = |stash: &str| {
        boxbuild(&env, &catalog)
            .args([
                "--box",
                "debian",
                "stackbuild",
                "--stash",
                stash,
                "--target-dir",
            ])
            .arg(&env.out)
            .output()
            .unwrap()
    };
    refused(&stackbuild("nope"), "no stash \"nope\"");
    refused(
        &stackbuild("my_base"),
        "kiwi accepts only letters, digits and '-'",
    );
    refused(&stackbuild("base:-1"), "not a valid tag");
    // A name whose dir is no OCI layout.
    fs::create_dir_all(stash_dir(&env).join("junk")).unwrap();
    refused(&stackbuild("junk"), "is not an OCI image layout");
    // A missing tag names the tags there are.
    let layout = stash_dir(&env).join("base");
    let status = Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout)
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new("umoci")
        .arg("new")
        .arg("--image")
        .arg(format!("{}:1", layout.display()))
        .status()
        .unwrap();
    assert!(status.success());
    refused(&stackbuild("base:2"), "stash base: no tag \"2\" (tags: 1)");
    let pin = format!("base@sha256:{}", "0".repeat(64));
    refused(&stackbuild(&pin), "no manifest sha256:000");
    // --stash on a build: a digest is no name for a new version; one stash per build.
    let build = |stash: &[&str]| {
        let mut c = boxbuild(&env, &catalog);
        c.args(["--box", "debian"]);
        for s in stash {
            c.args(["--stash", s]);
        }
        c.arg("--")
            .arg("--description")
            .arg(repo_root().join("examples/debian-tarball"))
            .arg("--target-dir")
            .arg(&env.out)
            .output()
            .unwrap()
    };
    refused(&build(&[&pin]), "named by a tag, not a digest");
    refused(&build(&["a1", "b1"]), "a build stores one stash");
    refused(&build(&["a_1"]), "kiwi accepts only");
    // The tiny box has no kiwi builder.
    let out = boxbuild(&env, &common::tiny_box_dir().join("catalog.toml"))
        .args(["--box", "tiny", "--stash", "ab", "--", "--description"])
        .arg(&env.desc)
        .arg("--target-dir")
        .arg(&env.out)
        .output()
        .unwrap();
    refused(&out, "stashes need a kiwi box");
    // stash list reads it all, the broken one included.
    let out = boxbuild(&env, &catalog)
        .args(["stash", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let list = stdout(&out);
    assert!(list.contains("base\t1\t0\t"), "{list}");
    assert!(list.contains("junk\t-"), "{list}");
}

/// The helper's stash and stackbuild on the host, as root: what a root tree holds comes
/// back as it was.
#[test]
fn a_round_trip_keeps_owners_modes_xattrs_devices_and_hard_links() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (device nodes, owners)");
        return;
    }
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let t = tmp.path();
    let root = t.join("root");
    fs::create_dir_all(root.join("image")).unwrap();
    fs::create_dir_all(root.join("dev")).unwrap();
    fs::write(
        root.join("image/config.xml"),
        "<image name=\"x\"><description type=\"system\"><author>A U Thor</author></description></image>",
    )
    .unwrap();
    let file = root.join("bin-tool");
    fs::write(&file, b"tool").unwrap();
    std::os::unix::fs::chown(&file, Some(123), Some(456)).unwrap();
    fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o4751)).unwrap();
    fs::hard_link(&file, root.join("bin-tool-link")).unwrap();
    let setxattr = |name: &str, value: &[u8]| {
        let path = std::ffi::CString::new(file.as_os_str().as_encoded_bytes()).unwrap();
        let name = std::ffi::CString::new(name).unwrap();
        // SAFETY: valid C strings and buffer.
        let r = unsafe {
            libc::setxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
    };
    setxattr("user.note", b"kept");
    // cap_net_raw+ep, as setcap writes it (VFS_CAP_REVISION_2).
    let cap: [u8; 20] = [
        0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    setxattr("security.capability", &cap);
    let node =
        std::ffi::CString::new(root.join("null-dev").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid path; makes a character device 1:3.
    assert_eq!(
        unsafe { libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) },
        0
    );
    fs::write(root.join("dev/skipped"), b"").unwrap();

    let helper = repo_root().join("src/job/stash-in-box.py");
    let run = |plan: serde_json::Value, builder: &[&str]| {
        let work = t.join("work");
        fs::create_dir_all(&work).unwrap();
        fs::write(work.join("plan.json"), plan.to_string()).unwrap();
        let out = Command::new("python3")
            .arg(&helper)
            .args(builder)
            .env("BOXBUILD_STASH_PLAN", work.join("plan.json"))
            .env("BOXBUILD_SCRATCH", t.join("scratch"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    };
    // Stash the root: the new blobs land in out/ (a new stash, so all of them).
    let out_dir = t.join("out");
    run(
        serde_json::json!({"mode": "stash", "name": "x", "tag": "1", "base": null,
                           "out": out_dir, "root": root}),
        &[],
    );
    // Make out/ a layout as the host does, then stack it.
    let result: serde_json::Value =
        serde_json::from_slice(&fs::read(out_dir.join("result.json")).unwrap()).unwrap();
    let manifest = result["manifest"]["digest"].as_str().unwrap();
    run(
        serde_json::json!({"mode": "stackbuild", "description": true,
            "stashes": [{"ref": "x:1", "layout": out_dir, "manifest": manifest}]}),
        &["true"],
    );
    let back = t.join("scratch/kiwi-target/build/image-root");
    let m = fs::metadata(back.join("bin-tool")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (123, 456, 0o4751));
    let link = fs::metadata(back.join("bin-tool-link")).unwrap();
    assert_eq!((m.ino(), m.nlink()), (link.ino(), 2), "hard link kept");
    let dev = fs::metadata(back.join("null-dev")).unwrap();
    assert!(dev.file_type().is_char_device());
    assert_eq!(dev.rdev(), libc::makedev(1, 3));
    let getxattr = |name: &str| -> Vec<u8> {
        let path =
            std::ffi::CString::new(back.join("bin-tool").as_os_str().as_encoded_bytes()).unwrap();
        let name = std::ffi::CString::new(name).unwrap();
        let mut buf = vec![0u8; 64];
        // SAFETY: valid C strings, buffer of the given size.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        buf.truncate(n.max(0) as usize);
        buf
    };
    assert_eq!(getxattr("user.note"), b"kept");
    assert_eq!(getxattr("security.capability"), cap);
    assert!(
        !back.join("dev/skipped").exists(),
        "dev/* is left out, as kiwi does"
    );
}

fn tarball_build(env: &Env, stash: &str, target: &Path) -> Output {
    debian(env)
        .args(["--container", "--box", "debian", "--stash", stash, "--"])
        .arg("--description")
        .arg(repo_root().join("examples/debian-tarball"))
        .arg("--target-dir")
        .arg(target)
        .output()
        .unwrap()
}

fn packages(dir: &Path) -> String {
    let file = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".packages"))
        .unwrap_or_else(|| panic!("no .packages in {}", dir.display()));
    fs::read_to_string(file.path()).unwrap()
}

#[test]
fn debian_tarball_stashed_twice_and_stackbuilt_without_network() {
    let env = Env::new();
    let t1 = env.tmp.path().join("t1");
    let out = tarball_build(&env, "tarball-base:1", &t1);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("boxbuild: stashed tarball-base:1 (sha256:"),
        "{err}"
    );
    assert!(fs::read_to_string(t1.join("result.log"))
        .unwrap()
        .contains("boxbuild-stash: stash tarball-base:1 is sha256:"));
    let layout = stash_dir(&env).join("tarball-base");
    let first = skopeo_inspect(&layout, "1", false);
    assert_eq!(first["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(
        first["Labels"]["io.osinside.kiwi.meta"],
        "KIWI - https://github.com/OSInside/kiwi"
    );
    let config = skopeo_inspect(&layout, "1", true);
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/bin/sh"])
    );
    assert_eq!(config["history"][0]["comment"], "KIWI Root Tree Stash");
    // No staging dir is left.
    assert_eq!(
        fs::read_dir(stash_dir(&env).join(".incoming"))
            .unwrap()
            .count(),
        0
    );

    // A second stash of the name adds one layer on top of the first.
    let t2 = env.tmp.path().join("t2");
    let out = tarball_build(&env, "tarball-base:2", &t2);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let second = skopeo_inspect(&layout, "2", false);
    let layers = second["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{second}");
    assert_eq!(layers[0], first["Layers"][0], "the first layer is shared");
    let list = stdout(&debian(&env).args(["stash", "list"]).output().unwrap());
    assert!(list.contains("tarball-base\t1\t1\t"), "{list}");
    assert!(list.contains("tarball-base\t2\t2\t"), "{list}");

    // From the stash alone: no network, kiwi system create on the stacked root.
    let t3 = env.tmp.path().join("t3");
    let pin = format!("tarball-base@{}", second["Digest"].as_str().unwrap());
    let out = debian(&env)
        .args([
            "--container",
            "--no-network",
            "--box",
            "debian",
            "stackbuild",
        ])
        .args(["--stash", &pin, "--target-dir"])
        .arg(&t3)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(packages(&t3), packages(&t1), "the same packages");
    let tarball = fs::read_dir(&t3)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".tar.xz"));
    assert!(tarball, "a root tarball in {}", t3.display());
    assert!(fs::read_to_string(t3.join("result.log"))
        .unwrap()
        .contains("boxbuild-stash: stash tarball-base@sha256:"));
}
