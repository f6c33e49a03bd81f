//! Which KIWI image type a build makes, read before it starts, so that a container refuses
//! a type it cannot build: a rootless one any type that needs loop devices (a user
//! namespace cannot have them), every one a type whose file systems the host's kernel
//! lacks (`needs`; a container's builder mounts with the host's kernel).
//!
//! The type is chosen as kiwi chooses it (`XMLState`): the description file is kiwi's
//! `--kiwi-file`, else `config.xml`, `image/config.xml`, the first `*.kiwi`; the
//! `<preferences>` sections are those without `profiles=` or naming a selected profile
//! (`--profile`, with the profiles they require; without `--profile`, those marked
//! `import="true"`), and matching the host's architecture (`arch=`); among their `<type>`s
//! the one whose `image` is `--type`, else the one marked `primary="true"`, else the first.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Image types kiwi builds without loop devices: root tarballs and container images.
pub const WITHOUT_LOOP: &[&str] = &["tbz", "docker", "oci", "appx", "wsl"];

/// The `<type>` a build makes, with the attributes that decide what it mounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub image: String,
    pub firmware: Option<String>,
    pub filesystem: Option<String>,
    pub bootpartition: Option<bool>,
    pub bootfilesystem: Option<String>,
    pub overlayroot: bool,
    pub mdraid: bool,
}

/// A file system the build mounts, and why (for the refusal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// Its name in /proc/filesystems.
    pub filesystem: &'static str,
    pub why: String,
}

/// The image type of the build, if one can be told: the `<type>` kiwi would pick, else
/// the `--type` given.
pub fn image_type(args: &[OsString], description: &Path) -> Option<String> {
    requested(args, description)
        .map(|r| r.image)
        .or_else(|| Selection::of(args).build_type)
}

/// The `<type>` kiwi would build; None when the description cannot be read or names no
/// such type (kiwi then says so itself).
pub fn requested(args: &[OsString], description: &Path) -> Option<Request> {
    let selection = Selection::of(args);
    let file = description_file(description, selection.kiwi_file.as_deref())?;
    let text = std::fs::read_to_string(file).ok()?;
    select(&text, &selection, std::env::consts::ARCH)
}

/// kiwi's global options that choose the type: `--type`, `--profile` (repeatable),
/// `--kiwi-file`, each as `--name value` or `--name=value`.
#[derive(Debug, Default)]
struct Selection {
    build_type: Option<String>,
    profiles: Vec<String>,
    kiwi_file: Option<String>,
}

impl Selection {
    fn of(args: &[OsString]) -> Selection {
        let words: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut selection = Selection::default();
        let mut i = 0;
        while i < words.len() {
            let word = &words[i];
            let (name, value) = match word.split_once('=') {
                Some((name, value)) if name.starts_with("--") => (name, Some(value.to_string())),
                _ => (word.as_str(), None),
            };
            if ["--type", "--profile", "--kiwi-file"].contains(&name) {
                let value = match value {
                    Some(value) => Some(value),
                    None => {
                        i += 1;
                        words.get(i).cloned()
                    }
                };
                if let Some(value) = value {
                    match name {
                        "--type" => selection.build_type = Some(value),
                        "--profile" => selection.profiles.push(value),
                        _ => selection.kiwi_file = Some(value),
                    }
                }
            }
            i += 1;
        }
        selection
    }
}

/// The description file, as kiwi looks for it.
fn description_file(dir: &Path, kiwi_file: Option<&str>) -> Option<PathBuf> {
    if let Some(name) = kiwi_file {
        return Some(dir.join(name));
    }
    for candidate in ["config.xml", "image/config.xml"] {
        if dir.join(candidate).exists() {
            return Some(dir.join(candidate));
        }
    }
    let mut kiwi_files: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "kiwi"))
        .collect();
    kiwi_files.sort();
    kiwi_files.into_iter().next()
}

/// The child elements of `node` named `name`.
fn children<'a, 'input>(
    node: roxmltree::Node<'a, 'input>,
    name: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'input>> {
    node.children()
        .filter(move |n| n.is_element() && n.tag_name().name() == name)
}

fn matches_arch(node: roxmltree::Node, arch: &str) -> bool {
    node.attribute("arch")
        .is_none_or(|list| list.split(',').any(|a| a.trim() == arch))
}

/// The `<type>` of `xml` that kiwi picks for `selection` on `arch`.
fn select(xml: &str, selection: &Selection, arch: &str) -> Option<Request> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let image = doc.root_element();
    // The profiles this host may use, with the ones each requires.
    let mut available: Vec<(&str, bool, Vec<&str>)> = Vec::new();
    for section in children(image, "profiles") {
        for profile in children(section, "profile").filter(|p| matches_arch(*p, arch)) {
            let Some(name) = profile.attribute("name") else {
                continue;
            };
            let requires = children(profile, "requires")
                .filter_map(|r| r.attribute("profile"))
                .collect();
            available.push((name, profile.attribute("import") == Some("true"), requires));
        }
    }
    let mut used: Vec<&str> = Vec::new();
    if selection.profiles.is_empty() {
        used.extend(available.iter().filter(|p| p.1).map(|p| p.0));
    } else {
        let mut todo: Vec<&str> = selection.profiles.iter().map(String::as_str).collect();
        while let Some(name) = todo.pop() {
            if used.contains(&name) {
                continue;
            }
            used.push(name);
            if let Some(profile) = available.iter().find(|p| p.0 == name) {
                todo.extend(profile.2.iter().copied());
            }
        }
    }
    let types: Vec<roxmltree::Node> = children(image, "preferences")
        .filter(|p| {
            p.attribute("profiles")
                .is_none_or(|list| list.split(',').any(|name| used.contains(&name.trim())))
        })
        .filter(|p| matches_arch(*p, arch))
        .flat_map(|p| children(p, "type"))
        .filter(|t| t.attribute("image").is_some())
        .collect();
    let chosen = match &selection.build_type {
        Some(wanted) => types
            .iter()
            .find(|t| t.attribute("image") == Some(wanted.as_str())),
        None => types
            .iter()
            .find(|t| t.attribute("primary") == Some("true"))
            .or(types.first()),
    }?;
    let text = |name| chosen.attribute(name).map(str::to_string);
    let flag = |name| chosen.attribute(name).map(|v| v == "true");
    Some(Request {
        image: text("image")?,
        firmware: text("firmware"),
        filesystem: text("filesystem"),
        bootpartition: flag("bootpartition"),
        bootfilesystem: text("bootfilesystem"),
        overlayroot: flag("overlayroot").unwrap_or(false),
        mdraid: chosen.attribute("mdraid").is_some(),
    })
}

/// kiwi's firmware when the type names none (`Defaults.get_default_firmware`).
fn default_firmware(arch: &str) -> &'static str {
    match arch {
        "x86_64" | "i586" | "i686" => "bios",
        "ppc64" | "ppc64le" | "powerpc64" => "ofw",
        "s390x" => "",
        _ => "efi",
    }
}

/// The kernel's name of a file system kiwi names.
fn kernel_name(filesystem: &str) -> Option<&'static str> {
    Some(match filesystem {
        "ext2" => "ext2",
        "ext3" => "ext3",
        "ext4" => "ext4",
        "xfs" => "xfs",
        "btrfs" => "btrfs",
        "fat16" | "fat32" | "vfat" => "vfat",
        // squashfs and erofs images are written by mksquashfs and mkfs.erofs from the
        // tree, never mounted.
        _ => return None,
    })
}

/// The file systems the build of `request` on `arch` mounts with the kernel (the table is
/// in docs/container.md). ISO images need none of their own: xorriso writes them, and
/// the EFI image on them is made by mkdosfs and mcopy, never mounted.
pub fn needs(request: &Request, arch: &str) -> Vec<Need> {
    let mut needs = Vec::new();
    let mut need = |filesystem: Option<&'static str>, why: String| {
        if let Some(filesystem) = filesystem {
            if !needs.iter().any(|n: &Need| n.filesystem == filesystem) {
                needs.push(Need { filesystem, why });
            }
        }
    };
    let image = request.image.as_str();
    match image {
        "oem" => {
            let firmware = request
                .firmware
                .clone()
                .unwrap_or_else(|| default_firmware(arch).to_string());
            if firmware == "efi" || firmware == "uefi" {
                need(
                    Some("vfat"),
                    format!("the image type 'oem' with firmware '{firmware}' (its EFI partition)"),
                );
            }
            if let Some(fs) = &request.filesystem {
                need(
                    kernel_name(fs),
                    format!("the image type 'oem' with filesystem '{fs}'"),
                );
            }
            let boot_partition = request
                .bootpartition
                .unwrap_or(request.overlayroot || request.mdraid);
            if boot_partition {
                let fs = request.bootfilesystem.as_deref().unwrap_or("ext2");
                need(
                    kernel_name(fs),
                    format!("the image type 'oem' with a boot partition of '{fs}'"),
                );
            }
        }
        "iso" | "kis" | "pxe" => {
            let default = if image == "iso" { Some("ext4") } else { None };
            if let Some(fs) = request.filesystem.as_deref().or(default) {
                need(
                    kernel_name(fs),
                    format!("the image type '{image}' with filesystem '{fs}'"),
                );
            }
        }
        fs => need(kernel_name(fs), format!("the image type '{fs}'")),
    }
    needs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_type_from_the_command_line_or_the_description() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.kiwi"),
            r#"<image><preferences><type image="tbz"/><type image='oem' primary="true" filesystem="ext4"/></preferences></image>"#,
        )
        .unwrap();
        assert_eq!(image_type(&[], dir.path()).as_deref(), Some("oem"));
        let args = os(&["--type", "tbz", "system"]);
        assert_eq!(image_type(&args, dir.path()).as_deref(), Some("tbz"));
        // A type the description lacks: kiwi will say so; the word given is the type.
        let args = os(&["--type=iso"]);
        assert_eq!(image_type(&args, dir.path()).as_deref(), Some("iso"));
        std::fs::write(
            dir.path().join("config.kiwi"),
            r#"<image><preferences><typeinstall/><type image="docker"/><type image="oem"/></preferences></image>"#,
        )
        .unwrap();
        assert_eq!(image_type(&[], dir.path()).as_deref(), Some("docker"));
        // config.xml comes before any *.kiwi, as kiwi looks.
        std::fs::write(
            dir.path().join("config.xml"),
            r#"<image><preferences><type image="iso"/></preferences></image>"#,
        )
        .unwrap();
        assert_eq!(image_type(&[], dir.path()).as_deref(), Some("iso"));
        let args = os(&["--kiwi-file", "config.kiwi"]);
        assert_eq!(image_type(&args, dir.path()).as_deref(), Some("docker"));
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(image_type(&[], empty.path()), None);
    }

    const PROFILED: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<!-- a comment with <type image="tbz"/> in it -->
<image schemaversion="8.0" name="x">
  <profiles>
    <profile name="Disk" description="disk"><requires profile="Base"/></profile>
    <profile name="Base" description="base"/>
    <profile name="Live" description="live" import="true"/>
    <profile name="Arm" description="arm" arch="aarch64"/>
  </profiles>
  <preferences><version>1</version><packagemanager>apt</packagemanager></preferences>
  <preferences profiles="Base"><type image="ext4"/></preferences>
  <preferences profiles="Disk">
    <type image="oem" filesystem="xfs" firmware="efi" bootpartition="true" bootfilesystem="fat32"/>
  </preferences>
  <preferences profiles="Live"><type image="iso" filesystem="squashfs" firmware="uefi"/></preferences>
  <preferences arch="aarch64"><type image="oem" filesystem="btrfs"/></preferences>
</image>"#;

    fn pick(args: &[&str], arch: &str) -> Option<Request> {
        select(PROFILED, &Selection::of(&os(args)), arch)
    }

    #[test]
    fn profiles_and_architectures_choose_the_type_as_kiwi_does() {
        // No --profile: the import="true" profile and the sections without profiles.
        let live = pick(&[], "x86_64").unwrap();
        assert_eq!(live.image, "iso");
        assert_eq!(live.filesystem.as_deref(), Some("squashfs"));
        // --profile Disk brings Base in; the first type is Base's ext4.
        assert_eq!(
            pick(&["--profile", "Disk"], "x86_64").unwrap().image,
            "ext4"
        );
        let disk = pick(&["--profile=Disk", "--type", "oem"], "x86_64").unwrap();
        assert_eq!(disk.firmware.as_deref(), Some("efi"));
        assert_eq!(disk.filesystem.as_deref(), Some("xfs"));
        assert_eq!(disk.bootpartition, Some(true));
        // A type no selected section has: kiwi refuses it itself.
        assert_eq!(pick(&["--type", "oem"], "x86_64"), None);
        // The aarch64-only section counts on aarch64 alone.
        let arm = pick(&["--type", "oem"], "aarch64").unwrap();
        assert_eq!(arm.filesystem.as_deref(), Some("btrfs"));
        assert_eq!(
            select("<image><broken", &Selection::default(), "x86_64"),
            None
        );
    }

    #[test]
    fn what_each_type_mounts() {
        let names = |request: &Request, arch| -> Vec<&'static str> {
            needs(request, arch).iter().map(|n| n.filesystem).collect()
        };
        let oem = |firmware: Option<&str>, fs: &str| Request {
            image: "oem".into(),
            firmware: firmware.map(String::from),
            filesystem: Some(fs.into()),
            ..Request::default()
        };
        assert_eq!(names(&oem(Some("efi"), "ext4"), "x86_64"), ["vfat", "ext4"]);
        assert_eq!(names(&oem(Some("uefi"), "xfs"), "x86_64"), ["vfat", "xfs"]);
        assert_eq!(names(&oem(Some("bios"), "ext4"), "x86_64"), ["ext4"]);
        // No firmware: the architecture's default, EFI on aarch64.
        assert_eq!(names(&oem(None, "ext4"), "x86_64"), ["ext4"]);
        assert_eq!(names(&oem(None, "btrfs"), "aarch64"), ["vfat", "btrfs"]);
        // A squashfs root is written by mksquashfs; the overlay's boot partition is ext2.
        let overlay = Request {
            overlayroot: true,
            ..oem(Some("bios"), "squashfs")
        };
        assert_eq!(names(&overlay, "x86_64"), ["ext2"]);
        let fat_boot = Request {
            bootpartition: Some(true),
            bootfilesystem: Some("fat16".into()),
            ..oem(Some("efi"), "ext4")
        };
        assert_eq!(names(&fat_boot, "x86_64"), ["vfat", "ext4"]);
        // ISO: no iso9660 (xorriso) and no vfat (mkdosfs, mcopy); its root is ext4 by default.
        let iso = |fs: Option<&str>| Request {
            image: "iso".into(),
            firmware: Some("efi".into()),
            filesystem: fs.map(String::from),
            ..Request::default()
        };
        assert_eq!(names(&iso(None), "x86_64"), ["ext4"]);
        assert!(names(&iso(Some("squashfs")), "x86_64").is_empty());
        assert!(names(&iso(Some("erofs")), "x86_64").is_empty());
        let plain = |image: &str| Request {
            image: image.into(),
            ..Request::default()
        };
        assert_eq!(names(&plain("xfs"), "x86_64"), ["xfs"]);
        assert_eq!(names(&plain("btrfs"), "x86_64"), ["btrfs"]);
        for image in ["tbz", "docker", "oci", "squashfs", "erofs", "wsl", "appx"] {
            assert!(names(&plain(image), "x86_64").is_empty(), "{image}");
        }
        let why = &needs(&oem(Some("efi"), "ext4"), "x86_64")[0].why;
        assert!(why.contains("'oem'") && why.contains("'efi'"), "{why}");
    }
}
