//! Stashes in registries (docs/stash.md, "Registries"), with a real registry (Debian's
//! docker-registry on 127.0.0.1) and real kiwi in the Debian box under `--container`:
//! a container made with umoci and pushed with skopeo, stacked by `--from-registry` under
//! a description that adds files; a stash made by boxbuild, pushed signed by `stash push`
//! and stacked from its registry reference by two stackbuilds at once (its blobs fetched
//! once); a build whose `--stash` names a registry, stashed and pushed; refusals in one
//! line before any box starts; and, with native kiwi
//! (`$BOXBUILD_TEST_KIWI_NG`, as root), a stash of `kiwi-ng system stash` stacked by
//! boxbuild and a stash of boxbuild stacked by `kiwi-ng system stackbuild`.
//!
//! The root trees are small kiwi image roots (an empty dpkg database, a few files), so
//! kiwi's `system build --allow-existing-root` and `system create` run for real in seconds
//! and need no package repository.

mod common;

use common::registry::{key_pair, registries_conf, trust_key, Registry};
use common::{debian_box_dir, ok, refused, repo_root, stderr, stdout, Env};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// One test's world: a registry and the settings that let boxbuild and skopeo use it over
/// plain HTTP, a stash dir, and a box cache shared by this file's tests (the Debian box's
/// root is unpacked for `--container` once).
struct World {
    env: Env,
    registry: Registry,
    conf: PathBuf,
    _storage: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let env = Env::new();
        let storage = tempfile::tempdir().unwrap();
        let registry = Registry::start(storage.path(), None);
        let conf = registries_conf(env.tmp.path(), &[&registry.addr]);
        // No credentials (podman in the box's runtime reads this file too).
        fs::write(env.tmp.path().join("no-auth.json"), "{\"auths\":{}}").unwrap();
        World {
            env,
            registry,
            conf,
            _storage: storage,
        }
    }

    fn stash_dir(&self) -> PathBuf {
        self.env.tmp.path().join("stashes")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.env.tmp.path().join(name)
    }

    /// `oci://ADDR/PATH`.
    fn oci(&self, path: &str) -> String {
        format!("oci://{}/{path}", self.registry.addr)
    }

    fn boxbuild(&self) -> Command {
        let mut c = self.env.boxbuild();
        c.env("BOXBUILD_CONFIG", debian_box_dir().join("catalog.toml"))
            .env("BOXBUILD_STASH_DIR", self.stash_dir())
            .env("CONTAINERS_REGISTRIES_CONF", &self.conf)
            .env("REGISTRY_AUTH_FILE", self.path("no-auth.json"))
            .env(
                "XDG_CACHE_HOME",
                repo_root().join("target/test-caches/stash"),
            )
            .env("BOXBUILD_FETCH_RETRIES", "0");
        c
    }

    /// `boxbuild --container --box debian system stash --root ROOT --tag 1
    /// --container-name NAME`.
    fn stash_root(&self, root: &Path, name: &str) -> Output {
        self.boxbuild()
            .args([
                "--container",
                "--box",
                "debian",
                "system",
                "stash",
                "--root",
            ])
            .arg(root)
            .args(["--tag", "1", "--container-name", name])
            .output()
            .unwrap()
    }

    /// `boxbuild --container --box debian stackbuild --stash S... EXTRA --target-dir T`.
    fn stackbuild(&self, stashes: &[&str], extra: &[&str], target: &Path) -> Command {
        let mut c = self.boxbuild();
        c.args(["--container", "--box", "debian", "stackbuild"]);
        for s in stashes {
            c.args(["--stash", s]);
        }
        c.args(extra).arg("--target-dir").arg(target);
        c
    }

    /// A trust rule: references under `prefix` must be signed by the public key `public`.
    fn trust(&self, prefix: &str, public: &Path) {
        trust_key(&self.env.tmp.path().join("home"), prefix, public);
    }

    /// A container image holding `root`'s files, made with umoci and pushed by skopeo to
    /// `repository:tag` of the registry; its manifest digest.
    fn push_container(&self, root: &Path, repository: &str, tag: &str) -> String {
        let work = tempfile::tempdir_in(self.env.tmp.path()).unwrap();
        let layout = work.path().join("layout");
        let bundle = work.path().join("bundle");
        let image = format!("{}:{tag}", layout.display());
        run(Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout));
        run(Command::new("umoci").args(["new", "--image", &image]));
        run(Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&bundle));
        run(Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", root.display()))
            .arg(bundle.join("rootfs")));
        run(Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle));
        run(Command::new("skopeo")
            .env("CONTAINERS_REGISTRIES_CONF", &self.conf)
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{image}"))
            .arg(format!(
                "docker://{}/{repository}:{tag}",
                self.registry.addr
            )));
        self.inspect(&format!("{repository}:{tag}"))["Digest"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `skopeo inspect` of `repository:tag` in the registry.
    fn inspect(&self, reference: &str) -> serde_json::Value {
        let out = Command::new("skopeo")
            .env("CONTAINERS_REGISTRIES_CONF", &self.conf)
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{}/{reference}", self.registry.addr))
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo inspect: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Requests for blob `digest` the registry answered with its content.
    fn blob_gets(&self, digest: &str) -> usize {
        self.registry
            .requests()
            .iter()
            .filter(|r| r.starts_with("GET") && r.contains(&format!("/blobs/{digest}")))
            .count()
    }
}

fn run(c: &mut Command) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// A small kiwi image root: an empty dpkg database, `/usr/share/doc`, `etc/NAME` holding
/// TEXT for each file; with `image`, a description of that name (tbz, apt) in
/// `image/config.xml`, as kiwi leaves it in a root it built.
fn small_root(dir: &Path, files: &[(&str, &str)], image: Option<&str>) {
    fs::create_dir_all(dir.join("var/lib/dpkg")).unwrap();
    fs::create_dir_all(dir.join("usr/share/doc")).unwrap();
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(dir.join("var/lib/dpkg/status"), "").unwrap();
    for (name, text) in files {
        fs::write(dir.join("etc").join(name), text).unwrap();
    }
    if let Some(name) = image {
        fs::create_dir_all(dir.join("image")).unwrap();
        fs::write(dir.join("image/config.xml"), description(name)).unwrap();
    }
}

/// A kiwi description of a root tarball that installs nothing (apt, Debian 12).
fn description(name: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<image schemaversion="8.5" name="{name}">
    <description type="system">
        <author>boxbuild tests</author>
        <contact>boxbuild@example.org</contact>
        <specification>a small root for stash tests</specification>
    </description>
    <preferences>
        <version>1.0.0</version>
        <packagemanager>apt</packagemanager>
        <type image="tbz"/>
    </preferences>
    <repository type="apt-deb" alias="bookworm" distribution="bookworm" components="main">
        <source path="http://deb.debian.org/debian"/>
    </repository>
</image>
"#
    )
}

/// The root tarball kiwi left in `dir`.
fn tarball(dir: &Path) -> PathBuf {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tar.xz"))
        .unwrap_or_else(|| panic!("no .tar.xz in {}", dir.display()))
}

/// The text of `etc/NAME` in the root tarball in `dir`.
fn etc_file(dir: &Path, name: &str) -> String {
    let out = Command::new("tar")
        .arg("-xJOf")
        .arg(tarball(dir))
        .arg(format!("etc/{name}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "etc/{name}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn a_container_from_the_registry_is_stacked_under_a_description() {
    let w = World::new();
    let root = w.path("container-root");
    small_root(&root, &[("container-file", "from the container\n")], None);
    let digest = w.push_container(&root, "containers/base", "1");
    let desc = w.path("to-tarball");
    fs::create_dir_all(desc.join("root/etc")).unwrap();
    fs::write(desc.join("config.kiwi"), description("stacked")).unwrap();
    fs::write(
        desc.join("root/etc/added-by-description"),
        "from the description\n",
    )
    .unwrap();
    let target = w.path("t");
    let out = w
        .stackbuild(
            &["base:1"],
            &["--no-network", "--from-registry", &w.oci("containers")],
            &target,
        )
        .arg("--description")
        .arg(&desc)
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(etc_file(&target, "container-file"), "from the container\n");
    assert_eq!(
        etc_file(&target, "added-by-description"),
        "from the description\n"
    );
    let log = fs::read_to_string(target.join("result.log")).unwrap();
    assert!(
        log.contains(&format!(
            "boxbuild-stash: stash {} ({digest})",
            w.oci("containers/base:1")
        )),
        "{log}"
    );
    // The cache in the stash dir is an OCI layout skopeo reads, with the registry's digest.
    let cache = w.stash_dir().join(format!(
        ".registry/{}_containers_base",
        w.registry.addr.replace([':', '/'], "_")
    ));
    let out = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:1", cache.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let cached: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cached["Digest"], digest.as_str());
    // Not a stash of its own: `stash list` shows none.
    let list = stdout(&w.boxbuild().args(["stash", "list"]).output().unwrap());
    assert_eq!(list.lines().count(), 2, "{list}");
}

#[test]
fn a_pushed_stash_is_stacked_from_the_registry_twice_at_once() {
    let w = World::new();
    let root = w.path("root");
    small_root(&root, &[("stash-file", "stashed\n")], Some("small"));
    ok(&w.stash_root(&root, "small-base"));
    let (private, public) = key_pair(w.env.tmp.path(), "stashes");
    let target = w.oci("stashes/small-base");
    let out = w
        .boxbuild()
        .args(["stash", "push", "small-base:1", &target, "--sign-key"])
        .arg(&private)
        .output()
        .unwrap();
    ok(&out);
    let said = stdout(&out);
    let pushed = w.inspect("stashes/small-base:1");
    let digest = pushed["Digest"].as_str().unwrap();
    assert_eq!(
        said.trim(),
        format!("pushed stash small-base:1 to {target}:1 as {digest}, signed")
    );
    // Byte for byte: the registry's manifest is the stash's.
    let list = stdout(&w.boxbuild().args(["stash", "list"]).output().unwrap());
    assert!(list.contains("small-base\t1\t1\t"), "{list}");
    assert!(list.contains(digest), "{list}");
    // Pulled only when signed by the key (trust.toml, as for registry boxes).
    w.trust(&w.oci("stashes/"), &public);
    // stash pull: by digest, into a stash of another name, the same manifest.
    let out = w
        .boxbuild()
        .args(["stash", "pull", &format!("{target}@{digest}"), "copy:7"])
        .output()
        .unwrap();
    ok(&out);
    let list = stdout(&w.boxbuild().args(["stash", "list"]).output().unwrap());
    assert!(
        list.contains("copy\t7\t1\t") && list.matches(digest).count() == 2,
        "{list}"
    );
    let reference = format!("{target}:1");
    let layer = pushed["Layers"][0].as_str().unwrap();
    let before = w.blob_gets(layer);
    let (t1, t2) = (w.path("t1"), w.path("t2"));
    let first = w.stackbuild(&[&reference], &[], &t1).spawn().unwrap();
    let second = w.stackbuild(&[&reference], &[], &t2).spawn().unwrap();
    for (child, target) in [(first, &t1), (second, &t2)] {
        let out = child.wait_with_output().unwrap();
        ok(&out);
        assert_eq!(etc_file(target, "stash-file"), "stashed\n");
        assert!(
            tarball(target).to_string_lossy().contains("small."),
            "the stash's own description named the image"
        );
    }
    // One fetch of the layer for both: the second stackbuild found it in the cache.
    assert_eq!(
        w.blob_gets(layer) - before,
        1,
        "{:?}",
        w.registry.requests()
    );
    prune_and_remove(&w);
}

/// A process holding `lock` shared (as a running stackbuild does), once it holds it.
fn hold_shared(lock: &Path) -> std::process::Child {
    // One process (sh, then sleep in its place) holds the lock's descriptor: killing it
    // releases the lock.
    let holder = Command::new("sh")
        .args(["-c", r#"exec 9>>"$0" && flock -s 9 && exec sleep 60"#])
        .arg(lock)
        .spawn()
        .unwrap();
    let free = || {
        Command::new("flock")
            .args(["-n", "-x"])
            .arg(lock)
            .arg("true")
            .status()
            .unwrap()
            .success()
    };
    while free() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    holder
}

/// `stash prune` empties the registry cache but for an entry in use, never a stash;
/// `stash remove` takes a whole stash, refused while it is in use.
fn prune_and_remove(w: &World) {
    let cache = w.stash_dir().join(".registry");
    let entries = || fs::read_dir(&cache).unwrap().count();
    assert_eq!(entries(), 1);
    let entry = fs::read_dir(&cache).unwrap().next().unwrap().unwrap();
    let entry = entry.file_name().to_string_lossy().to_string();
    let said = stdout(
        &w.boxbuild()
            .args(["stash", "prune", "--dry-run"])
            .output()
            .unwrap(),
    );
    assert!(
        said.starts_with(&format!("would remove .registry/{entry} (")),
        "{said}"
    );
    assert_eq!(entries(), 1);
    // A running stackbuild's shared lock keeps its entry.
    let lock = w.stash_dir().join(format!(".locks/.registry_{entry}.lock"));
    let mut holder = hold_shared(&lock);
    let said = stdout(&w.boxbuild().args(["stash", "prune"]).output().unwrap());
    assert!(said.contains("a running stackbuild uses it"), "{said}");
    assert_eq!(entries(), 1);
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = w.boxbuild().args(["stash", "prune"]).output().unwrap();
    ok(&out);
    assert!(
        stdout(&out).contains(&format!("removed .registry/{entry} (")),
        "{}",
        stdout(&out)
    );
    assert_eq!(entries(), 0);
    let said = stdout(&w.boxbuild().args(["stash", "prune"]).output().unwrap());
    assert!(
        said.starts_with("the registry cache of ") && said.trim_end().ends_with(" is empty"),
        "{said}"
    );
    let list = stdout(&w.boxbuild().args(["stash", "list"]).output().unwrap());
    assert!(
        list.contains("small-base\t1\t") && list.contains("copy\t7\t"),
        "{list}"
    );
    // stash remove: the whole stash, not a version of it, not one in use.
    let remove = |name: &str| {
        w.boxbuild()
            .args(["stash", "remove", name])
            .output()
            .unwrap()
    };
    refused(&remove("copy:7"), "single versions are not removed");
    refused(&remove("nope"), "no stash \"nope\"");
    let lock = w.stash_dir().join(".locks/copy.lock");
    let mut holder = hold_shared(&lock);
    refused(
        &remove("copy"),
        "stash copy is in use by a running boxbuild",
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = remove("copy");
    ok(&out);
    assert!(
        stdout(&out).starts_with("removed stash copy ("),
        "{}",
        stdout(&out)
    );
    let list = stdout(&w.boxbuild().args(["stash", "list"]).output().unwrap());
    assert!(
        list.contains("small-base\t1\t") && !list.contains("copy\t"),
        "{list}"
    );
    assert!(!w.stash_dir().join("copy").exists());
}

#[test]
fn a_build_with_a_registry_stash_stashes_then_pushes() {
    let w = World::new();
    let desc = w.path("small");
    fs::create_dir_all(&desc).unwrap();
    fs::write(desc.join("config.kiwi"), description("built")).unwrap();
    small_root(&desc.join("root"), &[("built-file", "built\n")], None);
    let target = w.oci("stashes/built");
    let t = w.path("t");
    let (private, public) = key_pair(w.env.tmp.path(), "builds");
    let out = w
        .boxbuild()
        .args([
            "--container",
            "--box",
            "debian",
            "--stash",
            &format!("{target}:2"),
            "--sign-key",
        ])
        .arg(&private)
        .arg("--")
        .arg("--description")
        .arg(&desc)
        .arg("--target-dir")
        .arg(&t)
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(etc_file(&t, "built-file"), "built\n");
    let pushed = w.inspect("stashes/built:2");
    let digest = pushed["Digest"].as_str().unwrap();
    let err = stderr(&out);
    assert!(
        err.contains(&format!("stashed built:2 ({digest})"))
            && err.contains(&format!(
                "pushed stash built:2 to {target}:2 as {digest}, signed"
            )),
        "{err}"
    );
    // Signed by the build's key: a trust rule asking for it lets the stash in.
    w.trust(&w.oci("stashes/"), &public);
    ok(&w
        .boxbuild()
        .args(["stash", "pull", &format!("{target}:2"), "checked:2"])
        .output()
        .unwrap());
    assert_eq!(
        pushed["Labels"]["io.osinside.kiwi.meta"],
        "KIWI - https://github.com/OSInside/kiwi"
    );
}

#[test]
fn registry_refusals_are_one_line_before_any_box() {
    let w = World::new();
    let root = w.path("root");
    small_root(&root, &[("x", "x\n")], None);
    w.push_container(&root, "containers/base", "1");
    let t = w.path("t");
    let stackbuild =
        |stashes: &[&str], extra: &[&str]| w.stackbuild(stashes, extra, &t).output().unwrap();
    refused(
        &stackbuild(&["base:1"], &["--from-registry", "oci://127.0.0.1:1/os"]),
        "oci://127.0.0.1:1/os/base:1: cannot reach the registry",
    );
    refused(
        &stackbuild(&[&w.oci("containers/base:9")], &[]),
        &format!("no tag '9' in {} (tags: 1)", w.oci("containers/base")),
    );
    refused(
        &stackbuild(&[&w.oci("nothing/here:1")], &[]),
        "not found in the registry",
    );
    refused(
        &stackbuild(&["my_base"], &["--from-registry", &w.oci("containers")]),
        "kiwi accepts only letters, digits and '-'",
    );
    refused(
        &stackbuild(&["base"], &["--from-registry", "registry.example.org/os"]),
        "--from-registry registry.example.org/os: give oci://HOST[:PORT]/PREFIX",
    );
    refused(
        &stackbuild(&["oci://os/base:1"], &[]),
        "not a registry host",
    );
    // A trust rule for the repository: unsigned, then signed by another key.
    let (_, public) = key_pair(w.env.tmp.path(), "trusted");
    let (other, _) = key_pair(w.env.tmp.path(), "other");
    w.trust(&w.oci("containers/"), &public);
    let reference = w.oci("containers/base:1");
    refused(&stackbuild(&[&reference], &[]), "refused: unsigned");
    let out = w
        .boxbuild()
        .args(["box", "sign", &reference, "--key"])
        .arg(&other)
        .output()
        .unwrap();
    ok(&out);
    refused(
        &stackbuild(&[&reference], &[]),
        "refused: no valid signature by",
    );
    // Nothing was cached.
    assert!(
        !w.stash_dir().join(".registry").exists() || {
            fs::read_dir(w.stash_dir().join(".registry"))
                .unwrap()
                .count()
                == 0
        }
    );
    // A build's stash for a registry: the registry is asked before the box starts.
    let build_with = |stash: &str, extra: &[&std::ffi::OsStr]| {
        w.boxbuild()
            .args(["--container", "--box", "debian", "--stash", stash])
            .args(extra)
            .arg("--")
            .arg("--description")
            .arg(repo_root().join("examples/debian-tarball"))
            .arg("--target-dir")
            .arg(&t)
            .output()
            .unwrap()
    };
    let build = |stash: &str| build_with(stash, &[]);
    refused(
        &build("oci://127.0.0.1:1/stashes/base:1"),
        "oci://127.0.0.1:1/stashes/base:1: cannot reach the registry",
    );
    refused(
        &build(&w.oci("stashes/my_base:1")),
        "the repository's last part names the stash",
    );
    // --sign-key: only for a stash the build pushes, and a key that is one.
    let signed =
        |stash: &str, key: &Path| build_with(stash, &["--sign-key".as_ref(), key.as_os_str()]);
    refused(
        &signed("local:1", &other),
        "--sign-key signs the stash a build pushes",
    );
    refused(
        &signed(&w.oci("stashes/base:1"), &public),
        "not an unencrypted PKCS#8 P-256 private key",
    );
    let out = w
        .boxbuild()
        .args(["stash", "push", "nope:1", &w.oci("stashes/nope")])
        .output()
        .unwrap();
    refused(&out, "no stash \"nope\"");
    let out = w
        .boxbuild()
        .args(["stash", "pull", &w.oci("containers/my_base:1")])
        .output()
        .unwrap();
    refused(&out, "name the stash");
}

/// `$BOXBUILD_TEST_KIWI_NG`: native kiwi 11 (scripts/test.sh installs it under target/).
fn native_kiwi() -> Option<PathBuf> {
    let kiwi = std::env::var_os("BOXBUILD_TEST_KIWI_NG").map(PathBuf::from);
    if kiwi.is_none() {
        eprintln!("skipped: set BOXBUILD_TEST_KIWI_NG to a kiwi-ng 11 (scripts/test.sh does)");
    }
    kiwi
}

/// Removes kiwi's stash of `name` (its archive and its image in root's podman storage).
struct KiwiStash(String);

impl Drop for KiwiStash {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(format!("/var/tmp/kiwi-stash/{}", self.0));
        let _ = Command::new("podman")
            .args(["rmi", "--force", &format!("localhost/{}:1", self.0)])
            .output();
    }
}

#[test]
fn stashes_of_native_kiwi_and_of_boxbuild_are_interchangeable() {
    let Some(kiwi) = native_kiwi() else {
        return;
    };
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: kiwi-ng system stash and stackbuild need root");
        return;
    }
    let w = World::new();
    // kiwi's stash (an oci-archive in /var/tmp/kiwi-stash/NAME/) stacked by boxbuild.
    let name = format!("bbt-native-{}", std::process::id());
    let _kiwi_stash = KiwiStash(name.clone());
    let root = w.path("root");
    small_root(
        &root,
        &[("native-file", "stashed by kiwi\n")],
        Some("native"),
    );
    let out = Command::new(&kiwi)
        .args(["system", "stash", "--root"])
        .arg(&root)
        .args(["--container-name", &name, "--tag", "1"])
        .output()
        .unwrap();
    ok(&out);
    let archive = PathBuf::from(format!("/var/tmp/kiwi-stash/{name}/{name}.tar"));
    assert!(archive.is_file(), "kiwi made no {}", archive.display());
    fs::create_dir_all(w.stash_dir().join(&name)).unwrap();
    fs::copy(
        &archive,
        w.stash_dir().join(&name).join(format!("{name}.tar")),
    )
    .unwrap();
    let t1 = w.path("t1");
    let out = w
        .stackbuild(&[&format!("{name}:1")], &["--no-network"], &t1)
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(etc_file(&t1, "native-file"), "stashed by kiwi\n");

    // boxbuild's stash read by kiwi's stackbuild (from podman's storage, as kiwi reads).
    let mine = format!("bbt-boxbuild-{}", std::process::id());
    let _mine = KiwiStash(mine.clone());
    let root = w.path("root2");
    small_root(
        &root,
        &[("boxbuild-file", "stashed by boxbuild\n")],
        Some("mine"),
    );
    ok(&w.stash_root(&root, &mine));
    run(Command::new("skopeo")
        .arg("copy")
        .arg("--quiet")
        .arg(format!("oci:{}:1", w.stash_dir().join(&mine).display()))
        .arg(format!("containers-storage:localhost/{mine}:1")));
    let t2 = w.path("t2");
    let out = Command::new(&kiwi)
        .args(["system", "stackbuild", "--stash", &format!("{mine}:1")])
        .arg("--target-dir")
        .arg(&t2)
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(etc_file(&t2, "boxbuild-file"), "stashed by boxbuild\n");
}
