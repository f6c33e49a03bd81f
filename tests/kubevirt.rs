//! deploy/kubevirt/vmi.yaml against KubeVirt's API: the manifest, as JSON, is assigned to
//! KubeVirt's `V1VirtualMachineInstance` type (`@kubevirt-ui-ext/kubevirt-api`, generated
//! from KubeVirt's OpenAPI schema) and compiled with `tsc`, whose excess-property check
//! fails on any field name the API does not have. The npm packages are installed into
//! target/npm-kubevirt on first use (scripts/test.sh does it ahead).

mod common;

use common::{ok, repo_root, stderr, stdout};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PACKAGES: [&str; 2] = ["@kubevirt-ui-ext/kubevirt-api@1.7.0", "typescript@5.9"];

/// The directory with KubeVirt's API types and the TypeScript compiler.
fn npm_dir() -> PathBuf {
    let dir = repo_root().join("target/npm-kubevirt");
    if !dir.join("node_modules/.bin/tsc").exists() {
        fs::create_dir_all(&dir).unwrap();
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .args(PACKAGES)
            .output()
            .expect("npm (Debian package npm)");
        ok(&out);
    }
    dir
}

/// The manifest as JSON.
fn manifest_json(path: &Path) -> String {
    let value: serde_json::Value =
        serde_norway::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    value.to_string()
}

/// `tsc` over `const vmi: V1VirtualMachineInstance = JSON`.
fn type_check(npm: &Path, json: &str) -> Output {
    let work = tempfile::tempdir().unwrap();
    fs::write(
        work.path().join("check.ts"),
        format!(
            "import type {{ V1VirtualMachineInstance }} from \"@kubevirt-ui-ext/kubevirt-api/kubevirt\";\nexport const vmi: V1VirtualMachineInstance = {json};\n"
        ),
    )
    .unwrap();
    fs::write(
        work.path().join("tsconfig.json"),
        r#"{"compilerOptions": {"strict": true, "noEmit": true, "module": "nodenext", "moduleResolution": "nodenext", "target": "es2022", "skipLibCheck": true}, "files": ["check.ts"]}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink(npm.join("node_modules"), work.path().join("node_modules")).unwrap();
    Command::new(npm.join("node_modules/.bin/tsc"))
        .arg("-p")
        .arg(work.path())
        .output()
        .unwrap()
}

#[test]
fn the_kubevirt_vmi_has_kubevirts_field_names_and_boots_the_box_image_layout() {
    let path = repo_root().join("deploy/kubevirt/vmi.yaml");
    let json = manifest_json(&path);
    let vmi: serde_json::Value = serde_json::from_str(&json).unwrap();
    // The paths are the box image's (docs/box-images.md, "Layout").
    let boot = &vmi["spec"]["domain"]["firmware"]["kernelBoot"];
    assert_eq!(boot["container"]["kernelPath"], "/boot/kernel");
    assert_eq!(boot["container"]["initrdPath"], "/boot/initrd");
    assert_eq!(
        vmi["spec"]["volumes"][0]["containerDisk"]["path"],
        "/disk/box.qcow2"
    );
    assert_eq!(
        boot["container"]["image"],
        vmi["spec"]["volumes"][0]["containerDisk"]["image"]
    );
    // The docs show this manifest as it is.
    let docs = fs::read_to_string(repo_root().join("docs/box-images.md")).unwrap();
    let body: String = fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(docs.contains(&body), "docs/box-images.md shows another VMI");

    let npm = npm_dir();
    let checked = type_check(&npm, &json);
    assert!(
        checked.status.success(),
        "{}{}",
        stdout(&checked),
        stderr(&checked)
    );
    // A wrong field name fails the check.
    let wrong = type_check(&npm, &json.replace("\"kernelPath\"", "\"kernelFile\""));
    assert!(!wrong.status.success());
    assert!(
        stdout(&wrong).contains("'\"kernelFile\"' does not exist in type 'V1KernelBootContainer'"),
        "{}",
        stdout(&wrong)
    );
}
