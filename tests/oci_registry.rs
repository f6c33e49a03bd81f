//! Boxes through a real OCI registry (Debian's docker-registry on 127.0.0.1): push of the
//! tiny box for two architectures, pull into an empty cache and boot by tag and by digest,
//! no request at all once cached, resumed and corrupted blobs, skopeo and ORAS reading
//! what boxbuild pushed (and boxbuild booting skopeo's copies, an OCI layout among them), basic auth, cosign-style signatures and OpenPGP-signed catalogs,
//! and two builds sharing one download.

mod common;

use common::http::HttpServer;
use common::registry::{key_pair, registries_conf, trust_key, CuttingProxy, Registry};
use common::{foreign_tiny_box_dir, ok, stderr, stdout, tiny_box_dir, Env};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A catalog naming the tiny box for this architecture and the other one.
fn two_arch_catalog(dir: &Path) -> PathBuf {
    let host = fs::read_to_string(tiny_box_dir().join("catalog.toml")).unwrap();
    let foreign = fs::read_to_string(foreign_tiny_box_dir().join("catalog.toml")).unwrap();
    let versions = &foreign[foreign.find("[[boxes.tiny.versions]]").unwrap()..];
    let path = dir.join("two-arch.toml");
    fs::write(&path, format!("{host}\n{versions}")).unwrap();
    path
}

fn tiny_version() -> String {
    let text = fs::read_to_string(tiny_box_dir().join("catalog.toml")).unwrap();
    let line = text.lines().find(|l| l.starts_with("version = ")).unwrap();
    line.split('"').nth(1).unwrap().to_string()
}

/// The test's environment plus the registry settings: plain HTTP allowed for `addrs`.
struct Setup {
    env: Env,
    conf: PathBuf,
    catalog: PathBuf,
}

impl Setup {
    fn new(addrs: &[&str]) -> Setup {
        let env = Env::new();
        let conf = registries_conf(env.tmp.path(), addrs);
        let catalog = two_arch_catalog(env.tmp.path());
        Setup { env, conf, catalog }
    }

    fn command(&self) -> Command {
        let mut c = self.env.boxbuild();
        c.env("BOXBUILD_CONFIG", &self.catalog)
            .env("CONTAINERS_REGISTRIES_CONF", &self.conf)
            .env(
                "REGISTRY_AUTH_FILE",
                self.env.tmp.path().join("no-auth.json"),
            );
        c
    }

    fn manage(&self, args: &[&str]) -> Output {
        self.command().arg("box").args(args).output().unwrap()
    }

    fn build(&self, reference: &str) -> Output {
        self.command()
            .args(["--no-accel", "--box", reference, "--"])
            .arg("--description")
            .arg(&self.env.desc)
            .arg("--target-dir")
            .arg(&self.env.out)
            .output()
            .unwrap()
    }
}

fn push(setup: &Setup, target: &str, extra: &[&str]) -> String {
    let out = setup.manage(
        &[
            &["push", &format!("tiny@{}", tiny_version()), target][..],
            extra,
        ]
        .concat(),
    );
    ok(&out);
    // "pushed tiny@V (aarch64, x86_64) to REF as sha256:..."
    let text = stdout(&out);
    let digest = text
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in {text}"))
        .trim_end_matches(',')
        .to_string();
    digest
}

fn blob_gets(registry: &Registry) -> Vec<String> {
    registry
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET") && r.contains("/blobs/"))
        .collect()
}

#[test]
fn pushed_box_pulls_boots_by_tag_and_digest_and_is_then_offline() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let setup = Setup::new(&[&registry.addr]);
    let reference = format!("oci://{}/boxes/tiny:1", registry.addr);
    let digest = push(&setup, &reference, &[]);

    // The index: one manifest per architecture, the platform as for container images.
    let index = manifest_json(&registry, "boxes/tiny", "1", INDEX);
    let mut platforms: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    platforms.sort();
    assert_eq!(platforms, ["amd64", "arm64"]);

    // A second push uploads nothing: every blob is there.
    let before = registry.requests().len();
    push(&setup, &reference, &[]);
    let uploads: Vec<String> = registry.requests()[before..]
        .iter()
        .filter(|r| r.starts_with("PATCH") || r.starts_with("POST"))
        .cloned()
        .collect();
    assert!(uploads.is_empty(), "second push uploaded: {uploads:?}");

    // A registry box copied to another repository of the same registry: its files are
    // mounted across repositories, not uploaded again.
    let before = registry.requests().len();
    let copy = format!("oci://{}/copies/tiny:1", registry.addr);
    ok(&setup.manage(&["push", &reference, &copy]));
    let new = registry.requests()[before..].to_vec();
    let mounts = new.iter().filter(|l| l.contains("mount=")).count();
    let patches = new.iter().filter(|l| l.starts_with("PATCH")).count();
    assert!(
        mounts >= 6 && patches <= 2,
        "mounts {mounts}, uploads {patches}: {new:?}"
    );

    setup.env.script("echo from-registry > made\n");
    let out = setup.build(&reference);
    ok(&out);
    assert_eq!(
        fs::read_to_string(setup.env.out.join("made")).unwrap(),
        "from-registry\n"
    );
    let gets = blob_gets(&registry);
    assert!(gets.len() >= 3, "kernel, initrd and disk fetched: {gets:?}");
    // box list shows it, cached, under the registry and repository's name.
    let listed = stdout(&setup.manage(&["list"]));
    let name = format!("{}_boxes_tiny", registry.addr.replace(':', "_"));
    let row = listed
        .lines()
        .find(|l| l.starts_with(&name) && l.contains(std::env::consts::ARCH))
        .unwrap_or_else(|| panic!("{name} not listed:\n{listed}"));
    assert_eq!(row.matches(&tiny_version()).count(), 2, "not cached: {row}");

    // Cached: no request at all by tag (within the update interval); by digest, the
    // first use reads the manifests once and no blob (the same cache entry), then nothing.
    let before = registry.requests().len();
    ok(&setup.build(&reference));
    assert_eq!(
        registry.requests()[before..],
        [] as [String; 0],
        "a cached tag made requests"
    );
    let pinned = format!("oci://{}/boxes/tiny@{digest}", registry.addr);
    let before = registry.requests().len();
    ok(&setup.build(&pinned));
    let new = registry.requests()[before..].to_vec();
    assert!(
        new.iter()
            .all(|l| !l.contains("/blobs/sha256") || l.starts_with("HEAD") || small(l)),
        "a digest reference fetched box files again: {new:?}"
    );
    let before = registry.requests().len();
    ok(&setup.build(&pinned));
    assert_eq!(
        registry.requests()[before..],
        [] as [String; 0],
        "a cached digest made requests"
    );

    // Registry gone: the tag still builds from the cache (due check says so, no failure).
    drop(registry);
    let out = setup
        .command()
        .env("BOXBUILD_UPDATE_CHECK_INTERVAL", "0")
        .args(["--no-accel", "--box", &reference, "--"])
        .arg("--description")
        .arg(&setup.env.desc)
        .arg("--target-dir")
        .arg(&setup.env.out)
        .output()
        .unwrap();
    ok(&out);
    assert!(
        stderr(&out).contains("cannot be reached"),
        "{}",
        stderr(&out)
    );
    assert!(setup.env.leftover_run_dirs().is_empty());
}

#[test]
fn a_cut_blob_resumes_and_a_corrupted_blob_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let disk = fs::read(tiny_box_dir().join("disk.qcow2")).unwrap();
    let disk_digest = format!("sha256:{}", hex(&sha2_digest(&disk)));
    let proxy = CuttingProxy::start(&registry.addr, &disk_digest, disk.len() as u64 / 2);
    let setup = Setup::new(&[&registry.addr, &proxy.addr]);
    push(
        &setup,
        &format!("oci://{}/boxes/tiny:1", registry.addr),
        &[],
    );

    let via_proxy = format!("oci://{}/boxes/tiny:1", proxy.addr);
    let out = setup.manage(&["fetch", &via_proxy, "-v"]);
    ok(&out);
    let served = proxy.blob_bytes.load(std::sync::atomic::Ordering::SeqCst);
    let size = disk.len() as u64;
    assert!(
        served < size + size / 4,
        "the disk ({size} bytes) was restarted, not resumed: {served} bytes served"
    );
    assert!(
        stderr(&out).contains("resumed from byte"),
        "{}",
        stderr(&out)
    );

    // A blob whose bytes changed in the registry: refused, nothing installed.
    let registry_dir = tempfile::tempdir().unwrap();
    let second = Registry::start(registry_dir.path(), None);
    let setup = Setup::new(&[&second.addr]);
    let reference = format!("oci://{}/boxes/tiny:1", second.addr);
    push(&setup, &reference, &[]);
    let blob = second.blob_file(&disk_digest);
    let mut bytes = fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&blob, bytes).unwrap();
    let out = setup.build(&reference);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("sha256 mismatch"), "{}", stderr(&out));
    assert!(
        !setup.env.cache_dir().join("boxes").exists()
            || fs::read_dir(setup.env.cache_dir().join("boxes"))
                .unwrap()
                .next()
                .is_none(),
        "something was installed"
    );
}

fn sha2_digest(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn skopeo_and_oras_read_what_boxbuild_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let setup = Setup::new(&[&registry.addr]);
    push(
        &setup,
        &format!("oci://{}/boxes/tiny:1", registry.addr),
        &[],
    );

    // skopeo reads the index and copies every architecture to another repository.
    let inspect = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/boxes/tiny:1", registry.addr))
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    assert!(stdout(&inspect).contains("application/vnd.boxbuild.box.v1"));
    let copy = Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{}/boxes/tiny:1", registry.addr))
        .arg(format!("docker://{}/mirror/tiny:1", registry.addr))
        .output()
        .unwrap();
    assert!(copy.status.success(), "{}", stderr(&copy));
    let layout = dir.path().join("layout");
    let copy = Command::new("skopeo")
        .args(["copy", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{}/boxes/tiny:1", registry.addr))
        .arg(format!("oci:{}:1", layout.display()))
        .output()
        .unwrap();
    assert!(copy.status.success(), "{}", stderr(&copy));
    assert!(layout.join("index.json").exists());

    // The copy boots.
    setup.env.script("echo mirrored > made\n");
    let out = setup.build(&format!("oci://{}/mirror/tiny:1", registry.addr));
    ok(&out);
    assert_eq!(
        fs::read_to_string(setup.env.out.join("made")).unwrap(),
        "mirrored\n"
    );

    // So does the OCI layout directory, named as skopeo names it.
    fs::remove_dir_all(&setup.env.out).unwrap();
    setup.env.script("echo from-layout > made\n");
    let out = setup.build(&format!("oci:{}:1", layout.display()));
    ok(&out);
    assert_eq!(
        fs::read_to_string(setup.env.out.join("made")).unwrap(),
        "from-layout\n"
    );

    // ORAS (Python's oras package) pulls the files by title; they hash as the catalog says.
    let oras_out = dir.path().join("oras");
    let script = format!(
        "import oras.client\nc = oras.client.OrasClient(hostname='{0}', insecure=True)\nc.pull(target='{0}/boxes/tiny@{1}', outdir='{2}')\n",
        registry.addr,
        host_manifest_digest(&registry, "boxes/tiny", "1"),
        oras_out.display()
    );
    let pulled = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(pulled.status.success(), "oras: {}", stderr(&pulled));
    let catalog = fs::read_to_string(tiny_box_dir().join("catalog.toml")).unwrap();
    for name in ["kernel", "initrd", "disk"] {
        let bytes = fs::read(oras_out.join(name)).unwrap_or_else(|e| panic!("oras {name}: {e}"));
        let digest = hex(&sha2_digest(&bytes));
        assert!(
            catalog.contains(&digest),
            "{name}: {digest} not in the catalog"
        );
    }
}

#[test]
fn basic_auth_refuses_without_credentials_and_works_with_auth_json() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let made = Command::new("htpasswd")
        .args(["-Bbc"])
        .arg(&htpasswd)
        .args(["builder", "s3cret"])
        .output()
        .expect("htpasswd (Debian package apache2-utils)");
    assert!(made.status.success());
    let registry = Registry::start(dir.path(), Some(&htpasswd));
    let setup = Setup::new(&[&registry.addr]);
    let auth = setup.env.tmp.path().join("auth.json");
    // base64("builder:s3cret")
    fs::write(
        &auth,
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"YnVpbGRlcjpzM2NyZXQ=\"}}}}}}",
            registry.addr
        ),
    )
    .unwrap();
    let reference = format!("oci://{}/boxes/tiny:1", registry.addr);
    let out = setup
        .command()
        .env("REGISTRY_AUTH_FILE", &auth)
        .args([
            "box",
            "push",
            &format!("tiny@{}", tiny_version()),
            &reference,
        ])
        .output()
        .unwrap();
    ok(&out);

    let out = setup.manage(&["fetch", &reference]);
    assert_eq!(out.status.code(), Some(125));
    let text = stderr(&out);
    assert!(
        text.contains("refused access") && text.contains("podman login"),
        "{text}"
    );
    assert_eq!(text.trim().lines().count(), 1, "{text}");

    let out = setup
        .command()
        .env("REGISTRY_AUTH_FILE", &auth)
        .args(["box", "fetch", &reference])
        .output()
        .unwrap();
    ok(&out);
}

#[test]
fn signatures_are_required_where_trust_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let setup = Setup::new(&[&registry.addr]);
    let (good_key, good_pub) = key_pair(dir.path(), "good");
    let (other_key, _) = key_pair(dir.path(), "other");
    trust_key(
        &setup.env.tmp.path().join("home"),
        &format!("oci://{}/signed/", registry.addr),
        &good_pub,
    );
    let base = format!("oci://{}/signed/tiny", registry.addr);

    // Signed with the trusted key: it boots.
    push(
        &setup,
        &format!("{base}:good"),
        &["--sign-key", good_key.to_str().unwrap()],
    );
    setup.env.script("echo signed > made\n");
    ok(&setup.build(&format!("{base}:good")));

    // Unsigned, signed by another key, changed after signing: refused before boot.
    // (Distinct boxes: the same content under another tag carries its signature along.)
    let host = std::env::consts::ARCH;
    let foreign = common::foreign_arch();
    push(&setup, &format!("{base}:unsigned"), &["--arch", foreign]);
    push(
        &setup,
        &format!("{base}:other"),
        &["--arch", host, "--sign-key", other_key.to_str().unwrap()],
    );
    // Re-tagging the signed box keeps it signed (the signature is over the digest).
    push(&setup, &format!("{base}:again"), &[]);
    ok(&setup.manage(&["fetch", &format!("{base}:again")]));
    let signed_digest = push(
        &setup,
        &format!("{base}:tampered"),
        &["--sign-key", good_key.to_str().unwrap()],
    );
    tamper(&registry, "signed/tiny", "tampered", &signed_digest);
    for (tag, why) in [
        ("unsigned", "unsigned"),
        ("other", "does not verify"),
        ("tampered", "unsigned"),
    ] {
        let out = setup.build(&format!("{base}:{tag}"));
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(125), "{tag}: {text}");
        assert!(
            text.contains(why) && text.contains("refused"),
            "{tag}: {text}"
        );
        assert!(
            text.contains(&good_pub.display().to_string()),
            "{tag}: {text}"
        );
        assert!(!text.contains("qemu"), "{tag} reached QEMU: {text}");
    }
    // A box outside the rule's prefix needs no signature.
    push(&setup, &format!("oci://{}/open/tiny:1", registry.addr), &[]);
    ok(&setup.manage(&["fetch", &format!("oci://{}/open/tiny:1", registry.addr)]));
}

/// Replaces the index under `tag` with a changed one (an extra annotation): the bytes the
/// signature covered are no longer what the tag names.
fn tamper(registry: &Registry, repository: &str, tag: &str, digest: &str) {
    let mut index = manifest_json(registry, repository, digest, INDEX);
    index["annotations"]["org.example.tampered"] = "yes".into();
    let body = dir_file(&serde_json::to_vec(&index).unwrap());
    let put = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.index.v1+json",
            "--data-binary",
        ])
        .arg(format!("@{}", body.display()))
        .arg(format!(
            "http://{}/v2/{repository}/manifests/{tag}",
            registry.addr
        ))
        .output()
        .unwrap();
    assert!(put.status.success(), "{}", stderr(&put));
}

fn dir_file(bytes: &[u8]) -> PathBuf {
    let file = tempfile::NamedTempFile::new().unwrap();
    let (_, path) = file.keep().unwrap();
    fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn catalogs_signed_with_openpgp_are_checked_against_the_keyring() {
    let env = Env::new();
    let gnupg = env.tmp.path().join("gnupg");
    fs::create_dir_all(&gnupg).unwrap();
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .env("GNUPGHOME", &gnupg)
            .args([
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "gpg {args:?}: {}", stderr(&out));
        out
    };
    gpg(&[
        "--quick-gen-key",
        "boxes@example.org",
        "ed25519",
        "sign",
        "never",
    ]);
    gpg(&[
        "--quick-gen-key",
        "stranger@example.org",
        "ed25519",
        "sign",
        "never",
    ]);
    let keyring = env.tmp.path().join("boxes.gpg");
    let exported = gpg(&["--export", "boxes@example.org"]);
    fs::write(&keyring, exported.stdout).unwrap();

    let www = env.tmp.path().join("www");
    fs::create_dir_all(&www).unwrap();
    let catalog = fs::read_to_string(tiny_box_dir().join("catalog.toml"))
        .unwrap()
        .replace("[boxes.tiny]", "[boxes.signedtiny]")
        .replace("[[boxes.tiny.versions]]", "[[boxes.signedtiny.versions]]");
    // Paths are not allowed in remote catalogs: serve the files.
    let mut text = String::new();
    for line in catalog.lines() {
        let mut line = line.to_string();
        for file in ["kernel", "initrd", "disk.qcow2"] {
            let local = tiny_box_dir().join(file).display().to_string();
            if line.contains(&format!("path = \"{local}\"")) {
                fs::copy(tiny_box_dir().join(file), www.join(file)).unwrap();
                line = line.replace(&format!("path = \"{local}\""), &format!("url = \"{file}\""));
            }
        }
        text.push_str(&line);
        text.push('\n');
    }
    fs::write(www.join("index.toml"), &text).unwrap();
    let server = HttpServer::start(&www);
    let index = server.url("index.toml");
    let config = env.tmp.path().join("home/.config/boxbuild");
    fs::create_dir_all(&config).unwrap();
    fs::write(
        config.join("trust.toml"),
        format!(
            "[[source]]\nprefix = \"{}\"\nkeyring = \"{}\"\n",
            server.url(""),
            keyring.display()
        ),
    )
    .unwrap();
    let empty = env.tmp.path().join("empty.toml");
    fs::write(&empty, "").unwrap();
    let list = || {
        env.boxbuild()
            .env("BOXBUILD_CONFIG", &empty)
            .env("BOXBUILD_CATALOG_URL", &index)
            .env("BOXBUILD_UPDATE_CHECK_INTERVAL", "0")
            .args(["box", "list"])
            .output()
            .unwrap()
    };
    let sign_as = |who: &str, content: &Path| {
        gpg(&[
            "--armor",
            "--local-user",
            who,
            "--output",
            www.join("index.toml.asc").to_str().unwrap(),
            "--detach-sign",
            content.to_str().unwrap(),
        ]);
    };

    // No signature: refused.
    let out = list();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("unsigned"), "{}", stderr(&out));

    // Good signature: the box is listed.
    sign_as("boxes@example.org", &www.join("index.toml"));
    let out = list();
    ok(&out);
    assert!(stdout(&out).contains("signedtiny"), "{}", stdout(&out));

    // A new catalog signed by a key outside the keyring, or a signature over other
    // content: refused. (An unchanged catalog keeps the signature verified with it.)
    fs::write(www.join("index.toml"), format!("{text}\n# new\n")).unwrap();
    sign_as("stranger@example.org", &www.join("index.toml"));
    let out = list();
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("does not verify"), "{}", stderr(&out));
    let other = env.tmp.path().join("other.toml");
    fs::write(&other, format!("{text}\n# changed\n")).unwrap();
    sign_as("boxes@example.org", &other);
    let out = list();
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("does not verify"), "{}", stderr(&out));
}

#[test]
fn two_builds_pulling_one_new_box_share_one_download() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let setup = Setup::new(&[&registry.addr]);
    let reference = format!("oci://{}/boxes/tiny:1", registry.addr);
    push(&setup, &reference, &[]);
    setup.env.script("echo both > made\n");
    let spawn = || {
        setup
            .command()
            .args(["--no-accel", "--box", &reference, "--"])
            .arg("--description")
            .arg(&setup.env.desc)
            .arg("--target-dir")
            .arg(setup.env.tmp.path().join(format!("out-{}", rand_suffix())))
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0));
    }
    let gets = blob_gets(&registry);
    let mut per_blob: std::collections::BTreeMap<String, usize> = Default::default();
    for line in &gets {
        let blob = line
            .split("/blobs/")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        *per_blob.entry(blob.to_string()).or_default() += 1;
    }
    assert!(
        per_blob.values().all(|n| *n == 1 || *n == 2) && per_blob.len() >= 4,
        "{per_blob:?}"
    );
    // Box files (large blobs) are fetched once; configs may be read by both resolutions.
    let big: Vec<&String> = gets.iter().filter(|l| !small(l)).collect();
    assert_eq!(big.len(), 3, "box files fetched more than once: {big:?}");
}

/// A logged request whose response was small (a config, not a box file).
fn small(line: &str) -> bool {
    line.split_whitespace()
        .nth(3)
        .and_then(|b| b.parse::<u64>().ok())
        .is_some_and(|b| b < 100_000)
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn a_catalog_box_kept_in_a_registry_has_its_tags_as_versions() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let setup = Setup::new(&[&registry.addr]);
    for tag in ["1.0", "1.2", "latest"] {
        push(
            &setup,
            &format!("oci://{}/boxes/tiny:{tag}", registry.addr),
            &[],
        );
    }
    let mut catalog = fs::read_to_string(&setup.catalog).unwrap();
    catalog.push_str(&format!(
        "\n[boxes.regtiny]\noci = \"oci://{}/boxes/tiny\"\n",
        registry.addr
    ));
    fs::write(&setup.catalog, catalog).unwrap();

    // Pinned: that tag; unpinned: the newest version tag ("latest" is not a version).
    ok(&setup.manage(&["fetch", "regtiny@1.0"]));
    let out = setup.manage(&["fetch", "regtiny"]);
    ok(&out);
    assert!(stderr(&out).contains("regtiny 1.2"), "{}", stderr(&out));
    let listed = stdout(&setup.manage(&["list"]));
    let row = listed
        .lines()
        .find(|l| l.starts_with("regtiny") && l.contains(std::env::consts::ARCH))
        .unwrap_or_else(|| panic!("regtiny not listed:\n{listed}"));
    assert!(
        row.contains("1.2") && row.contains("1.0, 1.2") || row.contains("1.2, 1.0"),
        "{row}"
    );

    let out = setup.manage(&["fetch", "regtiny@9"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("no version 9") && stderr(&out).contains("1.2, 1.0"),
        "{}",
        stderr(&out)
    );

    setup.env.script("echo tagged > made\n");
    ok(&setup.build("regtiny"));
    assert_eq!(
        fs::read_to_string(setup.env.out.join("made")).unwrap(),
        "tagged\n"
    );

    // The registry gone: the tags listed before still serve, with a warning.
    drop(registry);
    let out = setup
        .command()
        .env("BOXBUILD_UPDATE_CHECK_INTERVAL", "0")
        .args(["box", "fetch", "regtiny"])
        .output()
        .unwrap();
    ok(&out);
    assert!(
        stderr(&out).contains("cannot be reached"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_disk_pushed_zstd_compressed_arrives_as_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let setup = Setup::new(&[&registry.addr]);
    let reference = format!("oci://{}/boxes/small:1", registry.addr);
    push(&setup, &reference, &["--zstd"]);
    let manifest = host_manifest(&registry, "boxes/small", "1");
    let disk = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["annotations"]["org.opencontainers.image.title"] == "disk")
        .unwrap()
        .clone();
    assert_eq!(
        disk["mediaType"],
        "application/vnd.boxbuild.box.disk.v1+zstd"
    );
    let original = fs::read(tiny_box_dir().join("disk.qcow2")).unwrap();
    assert!((disk["size"].as_u64().unwrap() as usize) < original.len());

    ok(&setup.manage(&["fetch", &reference]));
    let cached = fs::read_dir(setup.env.cache_dir().join("boxes"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path()
        .join(std::env::consts::ARCH);
    let version = fs::read_dir(&cached)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    assert_eq!(
        sha2_digest(&fs::read(version.join("disk")).unwrap()),
        sha2_digest(&original),
        "the cached disk is not the original"
    );
    ok(&setup.manage(&["verify"]));
}

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A manifest or index as the registry serves it (curl, the distribution API).
fn manifest_json(
    registry: &Registry,
    repository: &str,
    reference: &str,
    accept: &str,
) -> serde_json::Value {
    let out = Command::new("curl")
        .args(["-sf", "-H", &format!("Accept: {accept}")])
        .arg(format!(
            "http://{}/v2/{repository}/manifests/{reference}",
            registry.addr
        ))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The digest of this host's architecture's manifest in the index under `tag`.
fn host_manifest_digest(registry: &Registry, repository: &str, tag: &str) -> String {
    let index = manifest_json(registry, repository, tag, INDEX);
    let arch = if std::env::consts::ARCH == "aarch64" {
        "arm64"
    } else {
        "amd64"
    };
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == arch)
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn host_manifest(registry: &Registry, repository: &str, tag: &str) -> serde_json::Value {
    let digest = host_manifest_digest(registry, repository, tag);
    manifest_json(registry, repository, &digest, MANIFEST)
}

#[test]
fn a_tls_registry_is_trusted_through_the_host_ca_store_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=boxbuild test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let registry = Registry::start_tls(d, &d.join("srv.pem"), &d.join("srv.key"));
    // No insecure entry: HTTPS is the only way in.
    let setup = Setup::new(&[]);
    let reference = format!("oci://{}/boxes/tiny:1", registry.addr);
    let out = setup
        .command()
        .args([
            "box",
            "push",
            &format!("tiny@{}", tiny_version()),
            &reference,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("not trusted"), "{}", stderr(&out));

    let mut bundle = fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    bundle.extend(fs::read(d.join("ca.pem")).unwrap());
    fs::write(d.join("bundle.pem"), bundle).unwrap();
    let with_ca = |args: &[&str]| {
        setup
            .command()
            .env("SSL_CERT_FILE", d.join("bundle.pem"))
            .args(args)
            .output()
            .unwrap()
    };
    ok(&with_ca(&[
        "box",
        "push",
        &format!("tiny@{}", tiny_version()),
        &reference,
    ]));
    ok(&with_ca(&["box", "fetch", &reference]));
}

/// The error line of a failed command: exactly one `boxbuild: error:` line, exit 125.
fn one_error_line(out: &Output) -> String {
    let text = stderr(out);
    assert_eq!(out.status.code(), Some(125), "{text}");
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("boxbuild: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(!text.contains("panicked"), "{text}");
    errors[0].to_string()
}

fn trust(setup: &Setup, rules: &str) {
    let config = setup.env.tmp.path().join("home/.config/boxbuild");
    fs::create_dir_all(&config).unwrap();
    fs::write(config.join("trust.toml"), rules).unwrap();
}

#[test]
fn transient_registry_answers_are_retried_and_the_real_status_is_reported() {
    use common::faulty::{Fault, FaultyProxy};
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let proxy = FaultyProxy::start(&registry.addr);
    let setup = Setup::new(&[&registry.addr, &proxy.addr]);
    let (key, public) = key_pair(dir.path(), "k");
    push(
        &setup,
        &format!("oci://{}/boxes/tiny:1", registry.addr),
        &[
            "--arch",
            std::env::consts::ARCH,
            "--sign-key",
            key.to_str().unwrap(),
        ],
    );
    trust(
        &setup,
        &format!(
            "[[source]]\nprefix = \"oci://{}/\"\nkeys = [\"{}\"]\nsigned_identity = \"oci://{}/boxes/tiny\"\n",
            proxy.addr,
            public.display(),
            registry.addr
        ),
    );
    let manifest = host_manifest(&registry, "boxes/tiny", "1");
    let config = manifest["config"]["digest"].as_str().unwrap();
    let kernel = manifest["layers"][0]["digest"].as_str().unwrap();
    let busy = |code, retry_after| Fault::Status {
        code,
        json_code: Some("TOOMANYREQUESTS"),
        retry_after,
    };
    let unavailable = Fault::Status {
        code: 503,
        json_code: None,
        retry_after: None,
    };
    // The tag, the config, the signature tag, the kernel blob: each fails first.
    proxy.inject("/manifests/1", unavailable.clone(), 1);
    proxy.inject(&format!("/blobs/{config}"), busy(429, Some(1)), 1);
    proxy.inject("/manifests/sha256-", busy(429, None), 1);
    proxy.inject(&format!("/blobs/{kernel}"), busy(429, Some(1)), 1);
    let started = std::time::Instant::now();
    let out = setup.manage(&["fetch", &format!("oci://{}/boxes/tiny:1", proxy.addr)]);
    ok(&out);
    assert_eq!(proxy.pending(), 0, "{:?}", proxy.seen.lock().unwrap());
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After: 1 was not waited for twice"
    );

    // A registry that keeps saying 429 (with its JSON body): tried as often as
    // BOXBUILD_FETCH_RETRIES says, then one line with the status it really sent.
    proxy.inject("/manifests/2", busy(429, Some(0)), 100);
    let out = setup
        .command()
        .env("BOXBUILD_FETCH_RETRIES", "2")
        .args([
            "box",
            "fetch",
            &format!("oci://{}/boxes/tiny:2", proxy.addr),
        ])
        .output()
        .unwrap();
    let line = one_error_line(&out);
    assert!(line.contains("429") && !line.contains("400"), "{line}");
    assert!(line.contains("tried 3 times"), "{line}");
    let tries = proxy
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("/manifests/2"))
        .count();
    assert_eq!(tries, 3);

    // The same for a box file.
    let disk = manifest["layers"][2]["digest"].as_str().unwrap();
    proxy.clear();
    proxy.inject(&format!("/blobs/{disk}"), busy(429, None), 100);
    let other_cache = setup.env.tmp.path().join("other-cache");
    let out = setup
        .command()
        .env("BOXBUILD_FETCH_RETRIES", "1")
        .env("BOXBUILD_CACHE_DIR", &other_cache)
        .env("XDG_CACHE_HOME", &other_cache)
        .args([
            "box",
            "fetch",
            &format!("oci://{}/boxes/tiny:1", proxy.addr),
        ])
        .output()
        .unwrap();
    let line = one_error_line(&out);
    assert!(line.contains("429") && !line.contains("HTTP 400"), "{line}");
}

#[test]
fn a_resume_answered_from_byte_zero_starts_over() {
    use common::faulty::{Fault, FaultyProxy};
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let proxy = FaultyProxy::start(&registry.addr);
    let setup = Setup::new(&[&registry.addr, &proxy.addr]);
    push(
        &setup,
        &format!("oci://{}/boxes/tiny:1", registry.addr),
        &["--arch", std::env::consts::ARCH],
    );
    let manifest = host_manifest(&registry, "boxes/tiny", "1");
    let disk = manifest["layers"][2]["digest"].as_str().unwrap();
    let size = manifest["layers"][2]["size"].as_u64().unwrap();
    // The disk breaks off halfway; the resume is answered 206 with the whole blob.
    proxy.inject(&format!("/blobs/{disk}"), Fault::Cut { after: size / 2 }, 1);
    proxy.inject_ranged(&format!("/blobs/{disk}"), Fault::RangeFromZero, 1);
    let out = setup.manage(&["fetch", &format!("oci://{}/boxes/tiny:1", proxy.addr), "-v"]);
    ok(&out);
    assert_eq!(proxy.pending(), 0, "{:?}", proxy.seen.lock().unwrap());
    // Installed, and it verifies.
    ok(&setup.manage(&["verify"]));
}

#[test]
fn oversized_manifests_are_refused_before_they_are_read() {
    use common::faulty::{Fault, FaultyProxy};
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let proxy = FaultyProxy::start(&registry.addr);
    let setup = Setup::new(&[&registry.addr, &proxy.addr]);
    let huge = 512 * 1024 * 1024;
    for declared in [true, false] {
        proxy.inject(
            "/manifests/big",
            Fault::Huge {
                size: huge,
                declared,
            },
            1,
        );
        let before = proxy.fabricated.load(std::sync::atomic::Ordering::SeqCst);
        let out = setup.manage(&["fetch", &format!("oci://{}/boxes/tiny:big", proxy.addr)]);
        let line = one_error_line(&out);
        assert!(line.contains("more than boxbuild reads"), "{line}");
        std::thread::sleep(Duration::from_millis(300));
        let sent = proxy.fabricated.load(std::sync::atomic::Ordering::SeqCst) - before;
        assert!(
            sent < 64 * 1024 * 1024,
            "{sent} bytes of a huge manifest were read (declared: {declared})"
        );
    }
}

#[test]
fn a_box_refused_as_unsigned_is_accepted_once_signed() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let setup = Setup::new(&[&registry.addr]);
    let (key, public) = key_pair(dir.path(), "k");
    trust(
        &setup,
        &format!(
            "[[source]]\nprefix = \"oci://{}/\"\nkeys = [\"{}\"]\n",
            registry.addr,
            public.display()
        ),
    );
    let reference = format!("oci://{}/boxes/tiny:1", registry.addr);
    push(&setup, &reference, &["--arch", std::env::consts::ARCH]);
    let line = one_error_line(&setup.manage(&["fetch", &reference]));
    assert!(line.contains("unsigned"), "{line}");
    ok(&setup.manage(&["sign", &reference, "--key", key.to_str().unwrap()]));
    ok(&setup.manage(&["fetch", &reference]));
    // And box update does not bring the refusal back.
    ok(&setup.manage(&["update"]));
    ok(&setup.manage(&["fetch", &reference]));
}

#[test]
fn a_registry_copy_keeps_its_bytes_and_its_signature_names_the_signed_repository() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let setup = Setup::new(&[&registry.addr]);
    let (key, public) = key_pair(dir.path(), "k");
    let original = format!("oci://{}/boxes/tiny:1", registry.addr);
    let digest = push(
        &setup,
        &original,
        &["--zstd", "--sign-key", key.to_str().unwrap()],
    );
    let copy = format!("oci://{}/mirror/tiny:1", registry.addr);
    let out = setup.manage(&["push", &original, &copy]);
    ok(&out);
    assert!(stdout(&out).contains(&digest), "{}", stdout(&out));
    assert_eq!(
        host_manifest(&registry, "boxes/tiny", "1"),
        host_manifest(&registry, "mirror/tiny", "1")
    );
    assert!(
        host_manifest(&registry, "mirror/tiny", "1")["layers"][2]["mediaType"]
            .as_str()
            .unwrap()
            .ends_with("+zstd")
    );
    // Pinned by the original's digest in the mirror.
    ok(&setup.manage(&[
        "fetch",
        &format!("oci://{}/mirror/tiny@{digest}", registry.addr),
    ]));

    // The signature came along, but it names boxes/tiny: refused for the mirror...
    trust(
        &setup,
        &format!(
            "[[source]]\nprefix = \"oci://{}/\"\nkeys = [\"{}\"]\n",
            registry.addr,
            public.display()
        ),
    );
    ok(&setup.manage(&["fetch", &original]));
    let line = one_error_line(&setup.manage(&["fetch", &copy]));
    assert!(
        line.contains(&format!("made for {}/boxes/tiny", registry.addr)),
        "{line}"
    );
    // ...unless the rule for the mirror names the signed repository.
    trust(
        &setup,
        &format!(
            "[[source]]\nprefix = \"oci://{0}/\"\nkeys = [\"{1}\"]\n[[source]]\nprefix = \"oci://{0}/mirror/\"\nkeys = [\"{1}\"]\nsigned_prefix = \"oci://{0}/boxes/\"\n",
            registry.addr,
            public.display()
        ),
    );
    ok(&setup.manage(&["fetch", &copy]));
}

#[test]
fn layout_files_that_are_not_regular_are_refused_and_errors_name_the_layout() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let setup = Setup::new(&[&registry.addr]);
    push(
        &setup,
        &format!("oci://{}/boxes/tiny:1", registry.addr),
        &["--arch", std::env::consts::ARCH],
    );
    let layout = dir.path().join("layout");
    let copy = Command::new("skopeo")
        .args(["copy", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{}/boxes/tiny:1", registry.addr))
        .arg(format!("oci:{}:1", layout.display()))
        .output()
        .unwrap();
    assert!(copy.status.success(), "{}", stderr(&copy));
    let manifest = host_manifest(&registry, "boxes/tiny", "1");
    let disk = manifest["layers"][2]["digest"].as_str().unwrap();
    let blob = layout
        .join("blobs/sha256")
        .join(disk.trim_start_matches("sha256:"));
    fs::remove_file(&blob).unwrap();
    assert!(Command::new("mkfifo")
        .arg(&blob)
        .status()
        .unwrap()
        .success());

    let run = |reference: String| {
        let mut child = setup
            .command()
            .args(["box", "fetch", &reference])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("boxbuild hangs on {reference}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child.wait_with_output().unwrap()
    };
    let line = one_error_line(&run(format!("oci:{}:1", layout.display())));
    assert!(
        line.contains("FIFO") && line.contains(&blob.display().to_string()),
        "{line}"
    );
    let line = one_error_line(&run(format!("oci:{}:nope", layout.display())));
    assert!(
        line.contains(&layout.display().to_string())
            && !line.contains("HTTP")
            && !line.contains("docker://"),
        "{line}"
    );
}
