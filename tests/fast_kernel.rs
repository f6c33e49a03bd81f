//! Boxes that come with an x86 bzImage boot the uncompressed kernel inside it through
//! PVH: extracted once into the cache (a box used in place on first use, a fetched box
//! when it is installed), reused by later runs, and deleted with the last cached version
//! that uses it.
#![cfg(target_arch = "x86_64")]

mod common;

use common::served::{box_toml, sha256_hex, version_toml, ServedFile};
use common::{ok, stderr, stdout, tiny_box_with_vmlinuz_dir, Env};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The tiny box's initrd and disk with Debian's bzImage as the kernel, as served files
/// under `dir` (sizes and digests of initrd and disk from the box's catalog).
fn bzimage_box(dir: &Path) -> Vec<ServedFile> {
    let catalog = fs::read_to_string(dir.join("catalog.toml")).unwrap();
    let value: toml::Value = toml::from_str(&catalog).unwrap();
    let version = &value["boxes"]["tiny"]["versions"][0];
    let vmlinuz = fs::read(dir.join("vmlinuz")).unwrap();
    let mut files = vec![ServedFile {
        role: "kernel",
        name: dir.join("vmlinuz").display().to_string(),
        size: vmlinuz.len() as u64,
        sha256: sha256_hex(&vmlinuz),
    }];
    for role in ["initrd", "disk"] {
        let entry = &version[role];
        files.push(ServedFile {
            role,
            name: entry["path"].as_str().unwrap().to_string(),
            size: entry["size"].as_integer().unwrap() as u64,
            sha256: entry["sha256"].as_str().unwrap().to_string(),
        });
    }
    files
}

fn with_catalog(mut c: Command, catalog: &Path) -> Command {
    c.env("BOXBUILD_CONFIG", catalog);
    c
}

fn build(env: &Env, catalog: &Path, box_ref: &str) -> Output {
    let mut c = with_catalog(env.boxbuild(), catalog);
    c.args(["--no-accel", "-v", "--box", box_ref, "--"])
        .arg("--description")
        .arg(&env.desc)
        .arg("--target-dir")
        .arg(&env.out);
    c.output().unwrap()
}

fn manage(env: &Env, catalog: &Path, args: &[&str]) -> Output {
    let mut c = with_catalog(env.boxbuild(), catalog);
    c.arg("box").args(args);
    c.output().unwrap()
}

fn extracted_kernels(env: &Env) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(env.cache_dir().join("kernels"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "vmlinux"))
        .collect();
    found.sort();
    found
}

/// The `-v` line that tells which kernel the box boots.
fn kernel_line(out: &Output) -> String {
    stderr(out)
        .lines()
        .find(|l| l.starts_with("boxbuild: kernel:"))
        .unwrap_or_else(|| panic!("no kernel line in:\n{}", stderr(out)))
        .to_string()
}

#[test]
fn a_box_used_in_place_boots_its_bzimage_through_pvh_from_the_second_run_without_extracting() {
    let dir = tiny_box_with_vmlinuz_dir();
    let env = Env::new();
    let files = bzimage_box(dir);
    // No digests: the bzImage is hashed once.
    let mut text = box_toml("bz", "box-test-builder");
    text.push_str(
        "\n[[boxes.bz.versions]]\nversion = \"1\"\narch = \"x86_64\"\n\
         cmdline = \"console=ttyS0 root=/dev/vda init=/sbin/boxbuild-agent panic=-1 quiet\"\n",
    );
    for f in &files {
        text.push_str(&format!("{} = {{ path = \"{}\" }}\n", f.role, f.name));
    }
    let catalog = env.tmp.path().join("catalog.toml");
    fs::write(&catalog, text).unwrap();

    env.script("echo built > built\n");
    let out = build(&env, &catalog, "bz");
    ok(&out);
    assert_eq!(
        fs::read_to_string(env.out.join("built")).unwrap(),
        "built\n"
    );
    let line = kernel_line(&out);
    let extracted = extracted_kernels(&env);
    assert_eq!(extracted.len(), 1, "{line}");
    let name = format!("{}.vmlinux", files[0].sha256);
    assert!(extracted[0].ends_with(&name), "{extracted:?}");
    assert!(
        line.contains("extracted from") && line.contains(" in "),
        "{line}"
    );
    assert!(line.contains(&name), "{line}");
    // QEMU was given the extracted kernel, and the box's command line as it is.
    let qemu_line = stderr(&out)
        .lines()
        .find(|l| l.contains("qemu-system-x86_64 ") || l.contains(" -kernel "))
        .unwrap_or_default()
        .to_string();
    assert!(
        qemu_line.contains(&format!("-kernel {}", extracted[0].display())),
        "{qemu_line}"
    );
    assert!(
        qemu_line.contains(
            "-append console=ttyS0 root=/dev/vda init=/sbin/boxbuild-agent panic=-1 quiet"
        ),
        "{qemu_line}"
    );
    // The same ELF the recipe extracts with xz(1).
    assert!(fs::read(&extracted[0]).unwrap() == fs::read(dir.join("kernel")).unwrap());

    env.script("echo again > built\n");
    let out = build(&env, &catalog, "bz");
    ok(&out);
    assert_eq!(
        fs::read_to_string(env.out.join("built")).unwrap(),
        "again\n"
    );
    let line = kernel_line(&out);
    assert!(line.ends_with("earlier"), "{line}");
    assert_eq!(extracted_kernels(&env), extracted);

    // The tiny box's own kernel is an ELF already: booted as it is, nothing cached.
    let plain = Env::new();
    plain.script("true\n");
    let out = plain.build(&["-v"], &[]);
    ok(&out);
    let line = kernel_line(&out);
    assert!(
        line.contains("as it is: already an uncompressed ELF"),
        "{line}"
    );
    assert!(extracted_kernels(&plain).is_empty());
}

#[test]
fn a_fetched_box_has_its_kernel_extracted_at_install_and_pruned_with_its_last_version() {
    let dir = tiny_box_with_vmlinuz_dir();
    let env = Env::new();
    let files = bzimage_box(dir);
    let mut text = box_toml("bz", "box-test-builder");
    for version in ["1.0", "1.1"] {
        text.push_str(&version_toml("bz", version, &files, &|p| {
            format!("file://{p}")
        }));
    }
    let catalog = env.tmp.path().join("catalog.toml");
    fs::write(&catalog, text).unwrap();
    let name = format!("{}.vmlinux", files[0].sha256);

    let out = manage(&env, &catalog, &["-v", "fetch", "bz@1.0"]);
    ok(&out);
    assert!(
        kernel_line(&out).contains("extracted from"),
        "{}",
        stderr(&out)
    );
    let extracted = extracted_kernels(&env);
    assert_eq!(extracted.len(), 1);
    assert!(extracted[0].ends_with(&name));

    env.script("echo fetched > built\n");
    let out = build(&env, &catalog, "bz@1.0");
    ok(&out);
    assert_eq!(
        fs::read_to_string(env.out.join("built")).unwrap(),
        "fetched\n"
    );
    let line = kernel_line(&out);
    assert!(line.ends_with("earlier"), "{line}");
    assert!(line.contains(&name), "{line}");

    // 1.1 has the same kernel: found in the cache, not extracted again.
    let out = manage(&env, &catalog, &["-v", "fetch", "bz"]);
    ok(&out);
    assert!(kernel_line(&out).ends_with("earlier"), "{}", stderr(&out));

    let out = manage(&env, &catalog, &["prune"]);
    ok(&out);
    assert!(
        stdout(&out).contains("removed box bz 1.0"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("kernel"), "{}", stdout(&out));
    assert_eq!(extracted_kernels(&env), extracted);

    let out = manage(&env, &catalog, &["prune", "--dry-run"]);
    ok(&out);
    assert!(!stdout(&out).contains("kernel"), "{}", stdout(&out));

    let out = manage(&env, &catalog, &["remove", "bz"]);
    ok(&out);
    let said = stdout(&out);
    assert!(said.contains("removed box bz 1.1"), "{said}");
    assert!(
        said.contains(&format!(
            "removed the uncompressed kernel of bzImage {}",
            &files[0].sha256[..16]
        )),
        "{said}"
    );
    assert!(extracted_kernels(&env).is_empty());
}
