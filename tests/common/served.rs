//! Boxes to serve over HTTP in the fetch tests: synthetic ones (random bytes; fetched,
//! never booted) and the real tiny box, with the catalog text that describes them.

use sha2::{Digest, Sha256};
use std::fs;
use std::path::Path;

/// One file of a served box.
#[derive(Debug, Clone)]
pub struct ServedFile {
    pub role: &'static str,
    /// Path under the server root.
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic pseudo-random bytes (xorshift), different per seed.
pub fn noise(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// Writes kernel, initrd and disk of random content under `root/dir/`.
pub fn synthetic_box(root: &Path, dir: &str, seed: u64) -> Vec<ServedFile> {
    fs::create_dir_all(root.join(dir)).unwrap();
    [
        ("kernel", 1 << 20),
        ("initrd", 512 << 10),
        ("disk", 3 << 20),
    ]
    .iter()
    .enumerate()
    .map(|(i, (role, size))| {
        let bytes = noise(*size, seed * 10 + i as u64);
        let name = format!("{dir}/{role}");
        fs::write(root.join(&name), &bytes).unwrap();
        ServedFile {
            role,
            name,
            size: *size as u64,
            sha256: sha256_hex(&bytes),
        }
    })
    .collect()
}

/// The real tiny box, linked under `root/dir/` with its sizes and digests from its
/// catalog (no hashing of 70 MB in a test).
pub fn tiny_box(root: &Path, dir: &str, box_dir: &Path) -> Vec<ServedFile> {
    fs::create_dir_all(root.join(dir)).unwrap();
    let catalog = fs::read_to_string(box_dir.join("catalog.toml")).unwrap();
    let value: toml::Value = toml::from_str(&catalog).unwrap();
    let version = &value["boxes"]["tiny"]["versions"][0];
    ["kernel", "initrd", "disk"]
        .iter()
        .map(|role| {
            let entry = &version[*role];
            let local = entry["path"].as_str().unwrap();
            let file_name = Path::new(local).file_name().unwrap().to_str().unwrap();
            let name = format!("{dir}/{file_name}");
            std::os::unix::fs::symlink(local, root.join(&name)).unwrap();
            ServedFile {
                role,
                name,
                size: entry["size"].as_integer().unwrap() as u64,
                sha256: entry["sha256"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

/// A `[[boxes.NAME.versions]]` table; `url_of` turns a served path into the catalog's
/// url (absolute, or relative to a remote catalog).
pub fn version_toml(
    name: &str,
    version: &str,
    files: &[ServedFile],
    url_of: &dyn Fn(&str) -> String,
) -> String {
    let arch = std::env::consts::ARCH;
    let console = if arch == "aarch64" {
        "ttyAMA0"
    } else {
        "ttyS0"
    };
    let mut text = format!(
        "\n[[boxes.{name}.versions]]\nversion = \"{version}\"\narch = \"{arch}\"\n\
         cmdline = \"console={console} root=/dev/vda init=/sbin/boxbuild-agent panic=-1 quiet\"\n"
    );
    for f in files {
        text.push_str(&format!(
            "{} = {{ url = \"{}\", size = {}, sha256 = \"{}\" }}\n",
            f.role,
            url_of(&f.name),
            f.size,
            f.sha256
        ));
    }
    text
}

/// The head of a box entry; versions follow.
pub fn box_toml(name: &str, builder: &str) -> String {
    format!(
        "[boxes.{name}]\ndescription = \"served {name}\"\nbuilder = [\"{builder}\"]\nmemory = \"256M\"\ncpus = 1\n"
    )
}
