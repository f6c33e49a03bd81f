//! Fetch and cache, against a real HTTP server on 127.0.0.1: verify, install, reuse,
//! resume, corruption, server errors, parallel fetches, versions and cache management.

mod common;

use common::http::{Fault, HttpServer};
use common::served::{box_toml, synthetic_box, version_toml, ServedFile};
use common::{ok, stderr, stdout, Env};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

const ARCH: &str = std::env::consts::ARCH;

/// A test environment with its own HTTP server serving one synthetic box "demo".
struct Fixture {
    env: Env,
    server: HttpServer,
    root: PathBuf,
    files: Vec<ServedFile>,
}

impl Fixture {
    fn new() -> Fixture {
        let env = Env::new();
        let root = env.tmp.path().join("www");
        let files = synthetic_box(&root, "demo-1.0", 1);
        let server = HttpServer::start(&root);
        let f = Fixture {
            env,
            server,
            root,
            files,
        };
        f.write_catalog(&[("1.0", f.files.clone())]);
        f
    }

    fn catalog_path(&self) -> PathBuf {
        self.env.tmp.path().join("catalog.toml")
    }

    /// A local catalog with absolute http URLs.
    fn write_catalog(&self, versions: &[(&str, Vec<ServedFile>)]) {
        let mut text = box_toml("demo", "true");
        for (version, files) in versions {
            text.push_str(&version_toml("demo", version, files, &|p| {
                self.server.url(p)
            }));
        }
        fs::write(self.catalog_path(), text).unwrap();
    }

    fn boxbuild(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.env.boxbuild();
        c.env("BOXBUILD_CONFIG", self.catalog_path()).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn entry_dir(&self, version: &str) -> PathBuf {
        self.env
            .cache_dir()
            .join("boxes/demo")
            .join(ARCH)
            .join(version)
    }

    fn file(&self, role: &str) -> &ServedFile {
        self.files.iter().find(|f| f.role == role).unwrap()
    }
}

/// What the cache holds under boxes/, as relative paths.
fn cache_listing(cache: &Path) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                out.push(p.strip_prefix(base).unwrap().display().to_string());
                if p.is_dir() {
                    walk(&p, base, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&cache.join("boxes"), cache, &mut out);
    out.sort();
    out
}

/// The words of the first stdout line that starts with `name`.
fn row_of(out: &Output, name: &str) -> Vec<String> {
    stdout(out)
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn error_lines(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.starts_with("boxbuild: error:"))
        .map(String::from)
        .collect()
}

#[test]
fn fetch_verifies_installs_and_reuses_the_cache_without_rehashing() {
    let f = Fixture::new();
    let out = f.boxbuild(&["box", "fetch", "demo"], &[]);
    ok(&out);
    for file in &f.files {
        assert_eq!(f.server.requests(&file.name).len(), 1, "{}", file.name);
        let cached = f.entry_dir("1.0").join(file.role);
        assert_eq!(
            fs::read(&cached).unwrap(),
            fs::read(f.root.join(&file.name)).unwrap()
        );
    }
    assert!(f.entry_dir("1.0").join("manifest.json").is_file());

    // A hit: no request, and no re-hash (a same-size corruption goes unnoticed here).
    let disk = f.entry_dir("1.0").join("disk");
    assert!(
        fs::metadata(&disk).unwrap().permissions().readonly(),
        "cached files are read-only"
    );
    fs::set_permissions(&disk, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(&disk).unwrap();
    bytes[1000] ^= 0xff;
    fs::write(&disk, &bytes).unwrap();
    let out = f.boxbuild(&["box", "fetch", "demo"], &[]);
    ok(&out);
    assert!(stderr(&out).contains("already at hand"), "{}", stderr(&out));
    assert_eq!(f.server.log().len(), 3, "a cache hit made requests");

    let out = f.boxbuild(&["box", "list"], &[]);
    ok(&out);
    let row = row_of(&out, "demo");
    assert_eq!(&row[..4], ["demo", ARCH, "1.0", "1.0"], "{}", stdout(&out));

    // `box verify` re-hashes on demand, finds the damage and removes the version.
    let out = f.boxbuild(&["box", "verify"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("BAD box demo 1.0"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("disk: sha256"), "{}", stdout(&out));
    assert!(!f.entry_dir("1.0").exists());
    ok(&f.boxbuild(&["box", "fetch", "demo"], &[]));
    ok(&f.boxbuild(&["box", "verify", "demo"], &[]));
    assert_eq!(f.server.requests(&f.file("disk").name).len(), 2);
}

#[test]
fn a_cut_download_is_resumed_by_the_next_run() {
    let f = Fixture::new();
    let disk = f.file("disk").clone();
    let half = disk.size / 2;
    f.server.fault(
        &disk.name,
        Fault::Cut {
            after: half,
            times: 1,
        },
    );
    let out = f.boxbuild(
        &["box", "fetch", "demo"],
        &[("BOXBUILD_FETCH_RETRIES", "0")],
    );
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "{}", stderr(&out));
    assert!(
        errors[0].contains(&f.server.url(&disk.name)),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("broke off at byte"), "{}", errors[0]);
    assert!(
        cache_listing(&f.env.cache_dir()).is_empty(),
        "installed half a box"
    );

    ok(&f.boxbuild(&["box", "fetch", "demo"], &[]));
    let requests = f.server.requests(&disk.name);
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].range.as_deref(),
        Some(&*format!("bytes={half}-"))
    );
    assert_eq!(requests[1].status, 206);
    assert_eq!(
        f.server.bytes_sent(&disk.name),
        disk.size,
        "the second run restarted instead of resuming"
    );
    assert_eq!(
        fs::read(f.entry_dir("1.0").join("disk")).unwrap(),
        fs::read(f.root.join(&disk.name)).unwrap()
    );
}

#[test]
fn a_server_going_away_mid_transfer_is_retried() {
    let f = Fixture::new();
    let disk = f.file("disk").clone();
    f.server.fault(
        &disk.name,
        Fault::Cut {
            after: 1 << 20,
            times: 2,
        },
    );
    let out = f.boxbuild(&["box", "fetch", "demo"], &[]);
    ok(&out);
    assert!(stderr(&out).contains("trying again"), "{}", stderr(&out));
    let requests = f.server.requests(&disk.name);
    assert_eq!(requests.len(), 3);
    assert_eq!(f.server.bytes_sent(&disk.name), disk.size);
}

#[test]
fn a_corrupt_download_is_discarded_and_nothing_is_installed() {
    let f = Fixture::new();
    let mut files = f.files.clone();
    let wrong = "ab".repeat(32);
    files[2].sha256 = wrong.clone();
    f.write_catalog(&[("1.0", files)]);
    let out = f.boxbuild(&["box", "fetch", "demo"], &[]);
    assert_eq!(out.status.code(), Some(125));
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "{}", stderr(&out));
    for needle in ["disk", &wrong, &f.file("disk").sha256, "discarded"] {
        assert!(
            errors[0].contains(needle),
            "{needle} missing: {}",
            errors[0]
        );
    }
    assert!(cache_listing(&f.env.cache_dir()).is_empty());
    let leftovers: Vec<_> = walk_files(&f.env.cache_dir())
        .into_iter()
        .filter(|p| p.contains("disk"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The next try starts clean: a full request, no range.
    f.write_catalog(&[("1.0", f.files.clone())]);
    ok(&f.boxbuild(&["box", "fetch", "demo"], &[]));
    let requests = f.server.requests(&f.file("disk").name);
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].range, None);
}

fn walk_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                out.extend(walk_files(&e.path()));
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

#[test]
fn missing_and_failing_files_give_one_clear_line() {
    let f = Fixture::new();
    fs::remove_file(f.root.join(&f.file("initrd").name)).unwrap();
    let out = f.boxbuild(&["box", "fetch", "demo"], &[]);
    assert_eq!(out.status.code(), Some(125));
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "{}", stderr(&out));
    for needle in [
        &format!("box demo 1.0 ({ARCH}): initrd"),
        "404",
        &f.server.url(&f.file("initrd").name),
    ] {
        assert!(
            errors[0].contains(needle),
            "{needle} missing: {}",
            errors[0]
        );
    }
    assert_eq!(
        f.server.requests(&f.file("initrd").name).len(),
        1,
        "a 404 was retried"
    );

    let f = Fixture::new();
    f.server.fault(&f.file("disk").name, Fault::Status(500));
    let out = f.boxbuild(
        &["box", "fetch", "demo"],
        &[("BOXBUILD_FETCH_RETRIES", "1")],
    );
    assert_eq!(out.status.code(), Some(125));
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "{}", stderr(&out));
    for needle in ["500", "tried 2 times", &f.server.url(&f.file("disk").name)] {
        assert!(
            errors[0].contains(needle),
            "{needle} missing: {}",
            errors[0]
        );
    }
    assert_eq!(f.server.requests(&f.file("disk").name).len(), 2);
    assert!(cache_listing(&f.env.cache_dir()).is_empty());
}

#[test]
fn parallel_fetches_of_one_box_download_it_once() {
    let f = Fixture::new();
    // Slow enough that the second process arrives while the first downloads.
    f.server.fault(
        &f.file("disk").name,
        Fault::Slow {
            bytes_per_sec: 2 << 20,
        },
    );
    let spawn = || {
        let mut c = f.env.boxbuild();
        c.env("BOXBUILD_CONFIG", f.catalog_path())
            .args(["box", "fetch", "demo"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    ok(&a);
    ok(&b);
    for file in &f.files {
        assert_eq!(f.server.requests(&file.name).len(), 1, "{}", file.name);
    }
    let waited = [&a, &b]
        .iter()
        .filter(|o| stderr(o).contains("waiting for another boxbuild"))
        .count();
    assert_eq!(waited, 1, "{}\n{}", stderr(&a), stderr(&b));
}

#[test]
fn versions_are_pinned_updated_listed_pruned_and_removed() {
    let f = Fixture::new();
    ok(&f.boxbuild(&["box", "fetch", "demo"], &[]));
    let v11 = synthetic_box(&f.root, "demo-1.1", 2);
    f.write_catalog(&[("1.0", f.files.clone()), ("1.1", v11.clone())]);

    let out = f.boxbuild(&["box", "outdated"], &[]);
    ok(&out);
    let row = row_of(&out, "demo");
    assert_eq!(row, ["demo", ARCH, "1.0", "1.1"], "{}", stdout(&out));

    let out = f.boxbuild(&["box", "fetch", "demo@1.0"], &[]);
    ok(&out);
    assert!(stderr(&out).contains("already at hand"));
    assert!(f.server.requests(&v11[0].name).is_empty());

    let out = f.boxbuild(&["box", "update"], &[]);
    ok(&out);
    assert!(
        stdout(&out).contains(&format!("box demo 1.1 ({ARCH}): updated from 1.0")),
        "{}",
        stdout(&out)
    );
    let out = f.boxbuild(&["box", "outdated"], &[]);
    assert!(stdout(&out).contains("up to date"), "{}", stdout(&out));

    let out = f.boxbuild(&["box", "prune", "--dry-run"], &[]);
    ok(&out);
    assert!(stdout(&out).contains("would remove box demo 1.0"));
    assert!(f.entry_dir("1.0").exists());
    let out = f.boxbuild(&["box", "prune"], &[]);
    ok(&out);
    assert!(
        stdout(&out).contains("removed box demo 1.0"),
        "{}",
        stdout(&out)
    );
    assert!(!f.entry_dir("1.0").exists());
    assert!(f.entry_dir("1.1").exists());

    ok(&f.boxbuild(&["box", "remove", "demo@1.1"], &[]));
    assert!(cache_listing(&f.env.cache_dir()).is_empty());
    let out = f.boxbuild(&["box", "remove", "demo"], &[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(error_lines(&out)[0].contains("not in the cache"));
}

#[test]
fn remote_catalogs_are_checked_once_per_interval() {
    let f = Fixture::new();
    let catalog_text = |versions: &[(&str, &[ServedFile])]| {
        let mut text = box_toml("demo", "true");
        for (v, files) in versions {
            // Relative URLs resolve against the catalog's own URL.
            text.push_str(&version_toml("demo", v, files, &|p| p.to_string()));
        }
        text
    };
    fs::write(
        f.root.join("index.toml"),
        catalog_text(&[("1.0", &f.files)]),
    )
    .unwrap();
    let empty = f.env.tmp.path().join("empty.toml");
    fs::write(&empty, "").unwrap();
    let index = f.server.url("index.toml");
    let run = |args: &[&str], interval: &str| {
        let mut c = f.env.boxbuild();
        c.env("BOXBUILD_CONFIG", &empty)
            .env("BOXBUILD_CATALOG_URL", &index)
            .env("BOXBUILD_UPDATE_CHECK_INTERVAL", interval)
            .args(args);
        c.output().unwrap()
    };
    ok(&run(&["box", "fetch", "demo"], "1h"));
    assert_eq!(f.server.requests("index.toml").len(), 1);
    ok(&run(&["box", "list"], "1h"));
    assert_eq!(
        f.server.requests("index.toml").len(),
        1,
        "checked again within the hour"
    );

    ok(&run(&["box", "list"], "0"));
    let checks = f.server.requests("index.toml");
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[1].status, 304, "the check was not conditional");

    let v11 = synthetic_box(&f.root, "demo-1.1", 2);
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(
        f.root.join("index.toml"),
        catalog_text(&[("1.0", &f.files), ("1.1", &v11)]),
    )
    .unwrap();
    let out = run(&["box", "list"], "0");
    ok(&out);
    let row = row_of(&out, "demo");
    assert_eq!(&row[..4], ["demo", ARCH, "1.1", "1.0"], "{}", stdout(&out));

    // Offline: the cached copy of the catalog still answers, with a warning.
    let mut server = f.server;
    server.stop();
    let out = run(&["box", "list"], "0");
    ok(&out);
    assert!(
        stderr(&out).contains(&format!("warning: could not check {index}")),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("demo"));
}

#[test]
fn an_interrupted_fetch_keeps_its_partial_copy_for_the_next_run() {
    let f = Fixture::new();
    let disk = f.file("disk").clone();
    f.server.fault(
        &disk.name,
        Fault::Slow {
            bytes_per_sec: 1 << 20,
        },
    );
    let mut child = f.env.boxbuild();
    child
        .env("BOXBUILD_CONFIG", f.catalog_path())
        .args(["box", "fetch", "demo"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = child.spawn().unwrap();
    let staging = f.env.cache_dir().join("tmp/staging");
    let part_len = || {
        walk_files(&staging)
            .iter()
            .filter(|p| p.contains("disk") && p.ends_with(".part"))
            .map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .max()
            .unwrap_or(0)
    };
    let start = std::time::Instant::now();
    while part_len() < 512 << 10 {
        assert!(start.elapsed().as_secs() < 30, "the download did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let kept = part_len();
    assert!(kept >= 512 << 10, "the partial copy is gone");
    assert!(cache_listing(&f.env.cache_dir()).is_empty());

    f.server.clear_faults();
    ok(&f.boxbuild(&["box", "fetch", "demo"], &[]));
    let requests = f.server.requests(&disk.name);
    let resumed = requests.last().unwrap();
    assert_eq!(resumed.status, 206);
    assert_eq!(resumed.body_bytes, disk.size - kept);
}
