//! The tiny box fetched from a real HTTP server through a remote catalog, then booted:
//! the update notice, a box in use that prune and remove leave alone, and builds that go
//! on when the server is gone.

mod common;

use common::http::HttpServer;
use common::served::{box_toml, tiny_box, version_toml, ServedFile};
use common::{ok, stderr, stdout, tiny_box_dir, Env};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn publish(root: &Path, versions: &[(&str, &[ServedFile])]) {
    let mut text = box_toml("tiny", "box-test-builder");
    for (version, files) in versions {
        text.push_str(&version_toml("tiny", version, files, &|p| p.to_string()));
    }
    fs::write(root.join("index.toml"), text).unwrap();
}

fn wait_for(path: &Path, limit: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < limit, "{} did not appear", path.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_served_box_is_fetched_booted_kept_in_use_and_used_offline() {
    let env = Env::new();
    let root = env.tmp.path().join("www");
    let files = tiny_box(&root, "tiny", tiny_box_dir());
    publish(&root, &[("1.0", &files)]);
    let mut server = HttpServer::start(&root);
    let empty = env.tmp.path().join("empty.toml");
    fs::write(&empty, "").unwrap();
    let index = server.url("index.toml");
    let with_catalog = |mut c: Command| {
        c.env("BOXBUILD_CONFIG", &empty)
            .env("BOXBUILD_CATALOG_URL", &index)
            .env("BOXBUILD_UPDATE_CHECK_INTERVAL", "0");
        c
    };
    let build = |extra: &[&str]| with_catalog(env.build_command(extra, &[]));
    let manage = |args: &[&str]| {
        let mut c = with_catalog(env.boxbuild());
        c.arg("box").args(args);
        c.output().unwrap()
    };

    // First build: the box comes from the server.
    env.script("echo built > built\n");
    let out = build(&[]).output().unwrap();
    ok(&out);
    assert_eq!(
        fs::read_to_string(env.out.join("built")).unwrap(),
        "built\n"
    );
    for f in &files {
        assert_eq!(server.requests(&f.name).len(), 1, "{}", f.name);
    }

    // A newer version is announced, not forced; the running build's box stays put.
    publish(&root, &[("1.0", &files), ("1.1", &files)]);
    env.script("touch started\nwhile [ ! -e go ]; do sleep 0.2; done\n");
    let running = build(&[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&env.out.join("started"), Duration::from_secs(300));
    let out = manage(&["remove", "tiny@1.0"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("in use"), "{}", stderr(&out));
    ok(&manage(&["update", "tiny"]));
    let out = manage(&["prune"]);
    ok(&out);
    assert!(
        stdout(&out).contains("kept box tiny 1.0"),
        "{}",
        stdout(&out)
    );
    fs::write(env.out.join("go"), "").unwrap();
    let out = running.wait_with_output().unwrap();
    ok(&out);
    assert!(
        stderr(&out).contains("box tiny 1.1 is available (this build uses 1.0 from the cache)"),
        "{}",
        stderr(&out)
    );
    let out = manage(&["prune"]);
    assert!(
        stdout(&out).contains("removed box tiny 1.0"),
        "{}",
        stdout(&out)
    );

    // Offline: the cached catalog and box carry on, with one warning.
    server.stop();
    env.script("echo offline > built\n");
    let out = build(&[]).output().unwrap();
    ok(&out);
    assert_eq!(
        fs::read_to_string(env.out.join("built")).unwrap(),
        "offline\n"
    );
    assert!(
        stderr(&out).contains(&format!("warning: could not check {index}")),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("tiny 1.1"), "{}", stderr(&out));
    let out = build(&["--no-update-check"]).output().unwrap();
    ok(&out);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    assert!(env.leftover_run_dirs().is_empty());
}

#[test]
fn a_box_published_by_the_script_is_served_fetched_and_booted() {
    let env = Env::new();
    let site = env.tmp.path().join("site");
    let out = Command::new(common::repo_root().join("scripts/publish-box.sh"))
        .arg(&site)
        .arg(tiny_box_dir())
        .output()
        .unwrap();
    ok(&out);
    let catalog = fs::read_to_string(site.join("catalog.toml")).unwrap();
    assert!(!catalog.contains("path ="), "{catalog}");
    assert!(catalog.contains("url = \"tiny/"), "{catalog}");
    // Publishing again (e.g. another architecture) keeps one box header.
    ok(
        &Command::new(common::repo_root().join("scripts/publish-box.sh"))
            .arg(&site)
            .arg(tiny_box_dir())
            .output()
            .unwrap(),
    );
    let catalog = fs::read_to_string(site.join("catalog.toml")).unwrap();
    assert_eq!(catalog.matches("[boxes.tiny]").count(), 1, "{catalog}");

    let server = HttpServer::start(&site);
    let empty = env.tmp.path().join("empty.toml");
    fs::write(&empty, "").unwrap();
    env.script("echo served > served\n");
    let out = env
        .build_command(&[], &[])
        .env("BOXBUILD_CONFIG", &empty)
        .env("BOXBUILD_CATALOG_URL", server.url("catalog.toml"))
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(
        fs::read_to_string(env.out.join("served")).unwrap(),
        "served\n"
    );
    let fetched: Vec<String> = server.log().into_iter().map(|l| l.path).collect();
    assert!(
        fetched.iter().any(|p| p.ends_with("/disk.qcow2")),
        "{fetched:?}"
    );
}
