//! Boxes as container images (docs/box-images.md), through a real OCI registry (Debian's
//! docker-registry on 127.0.0.1) and real QEMU boots of the tiny box: `box push --format
//! container` writes the layout skopeo shows, the image pulls back as a box and boots,
//! the same image unpacked into a directory boots with `--box dir:`, signatures and
//! digests are checked as for any registry box, and images that are not boxes (a
//! directory without the disk, a disk-only image in KIWI's `oci:qcow2` layout) are
//! refused in one line.

mod common;

use common::registry::{key_pair, Registry, Setup};
use common::{ok, stderr, stdout, tiny_box_dir, tiny_version, Env};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The test's environment with the tiny box's catalog and plain HTTP for `registry`.
fn tiny_setup(registry: &Registry) -> Setup {
    Setup::new(&[&registry.addr], |_| tiny_box_dir().join("catalog.toml"))
}

/// `box push tiny@V TARGET --format container EXTRA...`; returns the index digest.
fn push_image(setup: &Setup, target: &str, extra: &[&str]) -> String {
    setup.push(target, &[&["--format", "container"][..], extra].concat())
}

fn skopeo(args: &[&str]) -> Output {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo (Debian package skopeo)");
    ok(&out);
    out
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The one line boxbuild said, asserting exit 125 and that no box started.
fn refused(out: &Output) -> String {
    let text = stderr(out);
    assert_eq!(out.status.code(), Some(125), "{text}");
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(!text.contains("qemu"), "reached QEMU: {text}");
    lines[0].to_string()
}

/// The listing of each layer of `manifest` as the registry stores it (`tar -tv`, numeric
/// owners).
fn listings(registry: &Registry, manifest: &serde_json::Value) -> Vec<String> {
    let mut listings = Vec::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let listed = Command::new("tar")
            .args(["--numeric-owner", "-tvf"])
            .arg(registry.blob_file(layer["digest"].as_str().unwrap()))
            .output()
            .unwrap();
        ok(&listed);
        listings.push(stdout(&listed));
    }
    listings
}

#[test]
fn a_box_pushed_as_a_container_image_pulls_and_boots_and_boots_from_its_unpacked_files() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let setup = tiny_setup(&registry);
    let reference = format!("oci://{}/boxes/tiny-image:1", registry.addr);
    let docker = format!("docker://{}/boxes/tiny-image:1", registry.addr);
    let started = std::time::Instant::now();
    let digest = push_image(&setup, &reference, &[]);
    eprintln!("push --format container: {:?}", started.elapsed());

    // skopeo reads an image index of ordinary container images with boxbuild's labels.
    let index = json(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &docker,
    ]));
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert!(index.get("artifactType").is_none(), "{index}");
    let entry = &index["manifests"][0];
    assert_eq!(entry["platform"]["os"], "linux");
    assert_eq!(
        entry["platform"]["architecture"],
        if cfg!(target_arch = "x86_64") {
            "amd64"
        } else {
            "arm64"
        }
    );
    let inspected = json(&skopeo(&["inspect", "--tls-verify=false", &docker]));
    let labels = &inspected["Labels"];
    assert_eq!(labels["org.boxbuild.box.version"], tiny_version());
    assert_eq!(labels["org.boxbuild.box.arch"], std::env::consts::ARCH);
    assert_eq!(labels["org.boxbuild.box.disk"], "/disk/box.qcow2");
    assert_eq!(labels["org.boxbuild.box.kernel"], "/boot/kernel");
    assert!(
        labels["org.boxbuild.box.cmdline"]
            .as_str()
            .unwrap()
            .contains("console="),
        "{labels}"
    );
    let manifest_ref = format!(
        "docker://{}/boxes/tiny-image@{}",
        registry.addr,
        entry["digest"].as_str().unwrap()
    );
    let manifest = json(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &manifest_ref,
    ]));
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(
        manifest["annotations"]["org.boxbuild.box.version"],
        tiny_version()
    );
    let paths: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar");
            l["annotations"]["org.boxbuild.box.path"].as_str().unwrap()
        })
        .collect();
    let has_initrd = tiny_box_dir().join("initrd").exists();
    let mut wanted = vec!["/boot/kernel", "/disk/box.qcow2", "/boot/labels.json"];
    if has_initrd {
        wanted.insert(1, "/boot/initrd");
    }
    assert_eq!(paths, wanted);

    // The same image, copied by skopeo and unpacked layer by layer: files 107:107 0444.
    let layout = setup.env.tmp.path().join("layout");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &docker,
        &format!("oci:{}:1", layout.display()),
    ]);
    // umoci unpacks it as a runtime does (checking each layer against its diff_id).
    let bundle = setup.env.tmp.path().join("bundle");
    ok(&Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:1", layout.display()))
        .arg(&bundle)
        .output()
        .expect("umoci (Debian package umoci)"));
    let root = bundle.join("rootfs");
    let listings = listings(&registry, &manifest);
    for (listing, path) in listings.iter().zip(&wanted) {
        let file_line = listing
            .lines()
            .find(|l| l.ends_with(path.trim_start_matches('/')))
            .unwrap_or_else(|| panic!("{path} not in {listing}"));
        assert!(
            file_line.starts_with("-r--r--r-- 107/107 "),
            "{path}: {file_line}"
        );
    }
    for (file, unpacked) in [("kernel", "boot/kernel"), ("disk.qcow2", "disk/box.qcow2")] {
        assert_eq!(
            fs::read(tiny_box_dir().join(file)).unwrap(),
            fs::read(root.join(unpacked)).unwrap(),
            "{unpacked}"
        );
    }

    // Pulled back by boxbuild as a box: it boots and builds.
    setup.env.script("echo pulled > made\n");
    let started = std::time::Instant::now();
    ok(&setup.build(&reference));
    eprintln!("pull and build: {:?}", started.elapsed());
    assert_eq!(
        fs::read_to_string(setup.env.out.join("made")).unwrap(),
        "pulled\n"
    );
    let list = setup.manage(&["list"]);
    ok(&list);
    let name = format!("{}_boxes_tiny-image", registry.addr.replace(':', "_"));
    assert!(stdout(&list).contains(&name), "{}", stdout(&list));
    // By digest too: resolved (index, manifest, config), its files from the cache.
    let before = registry.requests().len();
    ok(&setup.manage(&[
        "fetch",
        &format!("oci://{}/boxes/tiny-image@{digest}", registry.addr),
    ]));
    let requests = registry.requests()[before..].to_vec();
    for layer in manifest["layers"].as_array().unwrap() {
        let digest = layer["digest"].as_str().unwrap();
        assert!(
            !requests.iter().any(|r| r.contains(digest)),
            "{digest} fetched again: {requests:?}"
        );
    }

    // The unpacked files, as an image volume gives them to a pod: used in place.
    fs::remove_dir_all(&setup.env.out).unwrap();
    setup.env.script("echo from-dir > made\n");
    let boxes_before = cached_box_dirs(&setup.env);
    ok(&setup.build(&format!("dir:{}", root.display())));
    assert_eq!(
        fs::read_to_string(setup.env.out.join("made")).unwrap(),
        "from-dir\n"
    );
    assert_eq!(
        cached_box_dirs(&setup.env),
        boxes_before,
        "dir: copied a box"
    );

    // The OCI layout skopeo wrote is a box too.
    ok(&setup.manage(&["fetch", &format!("oci:{}:1", layout.display())]));
}

/// The box versions in the cache (`boxes/NAME/ARCH/VERSION`).
fn cached_box_dirs(env: &Env) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let boxes = env.cache_dir().join("boxes");
    for name in fs::read_dir(&boxes).into_iter().flatten().flatten() {
        for arch in fs::read_dir(name.path()).into_iter().flatten().flatten() {
            for version in fs::read_dir(arch.path()).into_iter().flatten().flatten() {
                found.push(version.path());
            }
        }
    }
    found.sort();
    found
}

#[test]
fn a_signed_box_image_verifies_and_a_tampered_or_corrupted_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let setup = tiny_setup(&registry);
    let (key, public) = key_pair(dir.path(), "box");
    setup.trust(&format!(
        "[[source]]\nprefix = \"oci://{}/signed/\"\nkeys = [\"{}\"]\n",
        registry.addr,
        public.display()
    ));
    let base = format!("oci://{}/signed/tiny-image", registry.addr);
    push_image(
        &setup,
        &format!("{base}:good"),
        &["--sign-key", key.to_str().unwrap()],
    );
    ok(&setup.manage(&["fetch", &format!("{base}:good")]));

    // Unsigned (signatures live beside the image, per repository), and the signed index
    // changed after signing: refused before anything is fetched.
    let unsigned = format!("oci://{}/signed/unsigned-image:1", registry.addr);
    push_image(&setup, &unsigned, &[]);
    let open = format!("oci://{}/open/tiny-image:1", registry.addr);
    let digest = push_image(&setup, &open, &[]);
    let line = refused(&setup.manage(&["fetch", &unsigned]));
    assert!(
        line.contains("refused") && line.contains("unsigned"),
        "{line}"
    );
    let signed = push_image(
        &setup,
        &format!("{base}:tampered"),
        &["--sign-key", key.to_str().unwrap()],
    );
    registry.tamper("signed/tiny-image", "tampered", &signed);
    let line = refused(&setup.manage(&["fetch", &format!("{base}:tampered")]));
    assert!(line.contains("refused"), "{line}");

    // A layer whose bytes are not its digest is discarded; nothing is installed.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(registry.blob_file(&digest)).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(registry.blob_file(manifest_digest)).unwrap()).unwrap();
    let kernel = manifest["layers"][0]["digest"].as_str().unwrap();
    let blob = registry.blob_file(kernel);
    let mut bytes = fs::read(&blob).unwrap();
    let last = bytes.len() - 2000;
    bytes[last] ^= 0xff;
    fs::write(&blob, bytes).unwrap();
    let out = setup.manage(&["fetch", &open]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("sha256"), "{}", stderr(&out));
    let cached = cached_box_dirs(&setup.env);
    assert!(
        !cached
            .iter()
            .any(|d| d.to_string_lossy().contains("open_tiny-image")),
        "{cached:?}"
    );
}

#[test]
fn two_architectures_are_one_image_index_of_two_images() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let setup = Setup::new(&[&registry.addr], common::two_arch_catalog);
    let docker = format!("docker://{}/boxes/tiny-image:2", registry.addr);
    setup.push(
        &format!("oci://{}/boxes/tiny-image:2", registry.addr),
        &["--format", "container"],
    );
    let index = json(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &docker,
    ]));
    let mut platforms: Vec<String> = Vec::new();
    for entry in index["manifests"].as_array().unwrap() {
        let arch = entry["platform"]["architecture"]
            .as_str()
            .unwrap()
            .to_string();
        // Each architecture's image carries its own arch label and config architecture.
        let inspected = json(&skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--override-arch",
            &arch,
            &docker,
        ]));
        assert_eq!(inspected["Architecture"], arch.as_str());
        let label = inspected["Labels"]["org.boxbuild.box.arch"]
            .as_str()
            .unwrap();
        assert_eq!(
            label,
            if arch == "amd64" { "x86_64" } else { "aarch64" },
            "{inspected}"
        );
        platforms.push(arch);
    }
    platforms.sort();
    assert_eq!(platforms, ["amd64", "arm64"]);
}

#[test]
fn a_directory_that_is_not_a_box_image_is_refused_in_one_line() {
    let env = Env::new();
    let empty = env.tmp.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let build = |reference: &str| {
        env.boxbuild()
            .args(["--no-accel", "--box", reference, "--"])
            .arg("--description")
            .arg(&env.desc)
            .arg("--target-dir")
            .arg(&env.out)
            .output()
            .unwrap()
    };
    let line = refused(&build(&format!("dir:{}", empty.display())));
    assert!(
        line.contains("holds no box disk (/disk/box.qcow2)"),
        "{line}"
    );
    fs::create_dir_all(empty.join("disk")).unwrap();
    fs::write(empty.join("disk/box.qcow2"), b"not really").unwrap();
    let line = refused(&build(&format!("dir:{}", empty.display())));
    assert!(line.contains("no /boot/labels.json"), "{line}");
    let line = refused(&build("dir:/nonexistent/box"));
    assert!(line.contains("not a directory"), "{line}");
}

/// `podman` with its storage under `dir` (vfs: no mounts needed).
fn podman(dir: &Path) -> Command {
    let mut c = Command::new("podman");
    c.arg("--root")
        .arg(dir.join("storage"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args(["--storage-driver", "vfs"]);
    c
}

#[test]
fn a_disk_only_image_in_kiwis_oci_layout_is_refused_saying_what_it_lacks() {
    // What KIWI's format="oci:qcow2" makes: one layer with the disk under /disk/, named
    // after the image, and no kernel, initrd or boxbuild labels. (A real KIWI build of
    // one: disk_only_image_built_by_kiwi_is_refused, ignored, scripts/e2e-kiwi.sh.)
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let setup = tiny_setup(&registry);
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("disk")).unwrap();
    let disk = root.join("disk/tiny-disk.x86_64-1.0.0.qcow2");
    ok(&Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("16M")
        .output()
        .unwrap());
    let layer = dir.path().join("layer.tar");
    ok(&Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&layer)
        .arg("disk")
        .output()
        .unwrap());
    let podman_dir = dir.path().join("podman");
    ok(&podman(&podman_dir)
        .arg("import")
        .arg(&layer)
        .arg("localhost/disk-only:1")
        .output()
        .unwrap());
    // podman pushes the layer gzip-compressed, as KIWI's images come.
    ok(&podman(&podman_dir)
        .args(["push", "--tls-verify=false", "--format", "oci"])
        .arg("localhost/disk-only:1")
        .arg(format!("docker://{}/kiwi/disk-only:1", registry.addr))
        .output()
        .unwrap());
    let reference = format!("oci://{}/kiwi/disk-only:1", registry.addr);
    let line = refused(&setup.build(&reference));
    assert!(
        line.contains("holds the disk /disk/tiny-disk.x86_64-1.0.0.qcow2 but is not a box"),
        "{line}"
    );
    assert!(line.contains("lacks the kernel (/boot/kernel)"), "{line}");
    assert!(line.contains("--format container"), "{line}");
}

#[test]
#[ignore = "a real KIWI disk build in the Debian box (minutes under TCG); scripts/e2e-kiwi.sh box-image runs it"]
fn a_disk_image_kiwi_built_with_format_oci_qcow2_is_refused_saying_what_it_lacks() {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        return; // A disk build needs loop devices: a privileged container, as root.
    }
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let setup = tiny_setup(&registry);
    // examples/debian-disk as KIWI's OCI disk format: the qcow2 disk in a container image.
    let desc = setup.env.tmp.path().join("oci-disk");
    fs::create_dir_all(&desc).unwrap();
    let kiwi = fs::read_to_string(common::repo_root().join("examples/debian-disk/config.kiwi"))
        .unwrap()
        .replace("name=\"debian-disk\"", "name=\"oci-disk\"")
        .replace("format=\"qcow2\"", "format=\"oci:qcow2\"");
    assert!(kiwi.contains("format=\"oci:qcow2\""), "{kiwi}");
    fs::write(desc.join("config.kiwi"), kiwi).unwrap();
    let out = setup
        .env
        .boxbuild()
        .env(
            "BOXBUILD_CONFIG",
            common::debian_box_dir().join("catalog.toml"),
        )
        .args(["--box", "debian", "--container", "--", "--description"])
        .arg(&desc)
        .arg("--target-dir")
        .arg(&setup.env.out)
        .output()
        .unwrap();
    ok(&out);
    let archive = fs::read_dir(&setup.env.out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = p.to_string_lossy();
            name.ends_with(".oci.tar") || name.ends_with(".oci.tar.xz")
        })
        .unwrap_or_else(|| panic!("no OCI archive in {}", setup.env.out.display()));
    let plain = setup.env.tmp.path().join("image.oci.tar");
    ok(&Command::new("sh")
        .arg("-c")
        .arg("case \"$1\" in *.xz) xz -dc \"$1\" ;; *) cat \"$1\" ;; esac > \"$2\"")
        .args(["-", archive.to_str().unwrap(), plain.to_str().unwrap()])
        .output()
        .unwrap());
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci-archive:{}", plain.display()),
        &format!("docker://{}/kiwi/oci-disk:1", registry.addr),
    ]);
    let line = refused(&setup.build(&format!("oci://{}/kiwi/oci-disk:1", registry.addr)));
    eprintln!("refused: {line}");
    assert!(
        line.contains("holds the disk /disk/oci-disk.") && line.contains(".qcow2 but is not a box"),
        "{line}"
    );
    assert!(line.contains("lacks the kernel (/boot/kernel)"), "{line}");
}
