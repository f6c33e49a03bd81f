//! Whether the host can run another architecture's binaries in a container: a
//! binfmt_misc handler (Linux `Documentation/admin-guide/binfmt-misc.rst`) that matches
//! that architecture's ELF executables, is enabled, and has the `F` (fix binary) flag, so
//! the kernel opened its interpreter (qemu-user) when it was registered and it works in
//! any mount namespace, rootless included. Read without root from
//! `/proc/sys/fs/binfmt_misc` (`BOXBUILD_BINFMT_MISC_DIR` names another directory);
//! boxbuild never registers a handler itself.

use crate::sys::error::{Error, Result};
use std::fs;
use std::path::{Path, PathBuf};

const DEFAULT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// The first 20 bytes of an ELF executable of `arch` (ELF64, `e_type` ET_EXEC, its
/// `e_machine`: gABI, "ELF Header", and each psABI), or None for an architecture
/// boxbuild has no boxes for.
fn elf_header(arch: &str) -> Option<[u8; 20]> {
    // (little-endian, e_machine)
    let (le, machine): (bool, u16) = match arch {
        "x86_64" => (true, 62),
        "aarch64" => (true, 183),
        "s390x" => (false, 22),
        "ppc64le" => (true, 21),
        "riscv64" => (true, 243),
        _ => return None,
    };
    let mut h = [0u8; 20];
    h[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, if le { 1 } else { 2 }, 1, 0]);
    let (etype, mach) = if le {
        (2u16.to_le_bytes(), machine.to_le_bytes())
    } else {
        (2u16.to_be_bytes(), machine.to_be_bytes())
    };
    h[16..18].copy_from_slice(&etype);
    h[18..20].copy_from_slice(&mach);
    Some(h)
}

/// One registered handler, as its file in binfmt_misc shows it.
#[derive(Debug, Default)]
struct Handler {
    name: String,
    enabled: bool,
    interpreter: String,
    flags: String,
    offset: usize,
    magic: Vec<u8>,
    mask: Vec<u8>,
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .filter_map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

fn parse(name: &str, text: &str) -> Handler {
    let mut h = Handler {
        name: name.to_string(),
        ..Handler::default()
    };
    for line in text.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "enabled" => h.enabled = true,
            "interpreter" => h.interpreter = value.to_string(),
            "flags:" => h.flags = value.trim().to_string(),
            "offset" => h.offset = value.trim().parse().unwrap_or(0),
            "magic" => h.magic = unhex(value.trim()),
            "mask" => h.mask = unhex(value.trim()),
            _ => {}
        }
    }
    h
}

impl Handler {
    /// Whether the kernel would hand `header` to this handler (a magic one; extension
    /// handlers never match an ELF file).
    fn matches(&self, header: &[u8]) -> bool {
        !self.magic.is_empty()
            && self.magic.iter().enumerate().all(|(i, m)| {
                let mask = self.mask.get(i).copied().unwrap_or(0xff);
                header
                    .get(self.offset + i)
                    .is_some_and(|b| b & mask == m & mask)
            })
    }
}

fn dir() -> PathBuf {
    std::env::var_os("BOXBUILD_BINFMT_MISC_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from)
}

/// What to install or enable for `arch`, one sentence per distribution family.
fn how_to_get(arch: &str) -> String {
    format!(
        "install qemu-user-static and binfmt-support (Debian/Ubuntu: apt-get install qemu-user-static binfmt-support), or your distribution's qemu-user-static package with systemd-binfmt (Fedora, openSUSE); then check 'cat {DEFAULT_DIR}/qemu-{arch}' says enabled and flags F; or drop --container to emulate the whole box in a VM"
    )
}

/// The handler that runs `arch`'s binaries in a container, by name. Errors: one line
/// saying what is missing (binfmt_misc, a handler, its being enabled, its `F` flag) and
/// what to install or enable.
pub fn check(arch: &str) -> Result<String> {
    check_in(&dir(), arch)
}

fn check_in(dir: &Path, arch: &str) -> Result<String> {
    let header = elf_header(arch).ok_or_else(|| {
        Error::setup(format!(
            "--container cannot run {arch} boxes: boxbuild knows no binfmt handler for it; drop --container"
        ))
    })?;
    let status = fs::read_to_string(dir.join("status")).map_err(|_| {
        Error::setup(format!(
            "--container for a {arch} box needs the kernel's binfmt_misc ({} is not mounted) with a qemu-user handler: {}",
            dir.display(),
            how_to_get(arch)
        ))
    })?;
    let mut handlers: Vec<Handler> = fs::read_dir(dir)
        .map_err(|e| Error::setup(format!("cannot read {}: {e}", dir.display())))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "status" || name == "register" {
                return None;
            }
            Some(parse(&name, &fs::read_to_string(e.path()).ok()?))
        })
        .filter(|h| h.matches(&header))
        .collect();
    handlers.sort_by_key(|h| (!h.enabled, !h.flags.contains('F'), h.name.clone()));
    let Some(best) = handlers.first() else {
        return Err(Error::setup(format!(
            "--container for a {arch} box needs a binfmt_misc handler for {arch} binaries, and none is registered: {}",
            how_to_get(arch)
        )));
    };
    if status.trim() != "enabled" {
        return Err(Error::setup(format!(
            "--container for a {arch} box: binfmt_misc is disabled on this host (echo 1 > {}/status as root enables it)",
            dir.display()
        )));
    }
    if !best.enabled {
        return Err(Error::setup(format!(
            "--container for a {arch} box: the binfmt_misc handler {} is disabled; enable it as root (Debian/Ubuntu: update-binfmts --enable {}; systemd: systemctl restart systemd-binfmt)",
            best.name, best.name
        )));
    }
    if !best.flags.contains('F') {
        return Err(Error::setup(format!(
            "--container for a {arch} box: the binfmt_misc handler {} ({}) lacks the F (fix binary) flag, so a container cannot reach its interpreter; register it with F (Debian/Ubuntu: qemu-user-static does; systemd-binfmt: a ':F' flags field)",
            best.name, best.interpreter
        )));
    }
    Ok(best.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian 12's qemu-user-static entry for aarch64, as the kernel shows it.
    const AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";

    fn dir_with(entries: &[(&str, &str)], status: &str) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("status"), status).unwrap();
        fs::write(tmp.path().join("register"), "").unwrap();
        for (name, text) in entries {
            fs::write(tmp.path().join(name), text).unwrap();
        }
        tmp
    }

    #[test]
    fn finds_an_enabled_fix_binary_handler() {
        let d = dir_with(&[("qemu-aarch64", AARCH64)], "enabled\n");
        assert_eq!(check_in(d.path(), "aarch64").unwrap(), "qemu-aarch64");
        // It matches aarch64 binaries only.
        let e = check_in(d.path(), "riscv64").unwrap_err().to_string();
        assert!(
            e.contains("none is registered") && e.contains("qemu-user-static"),
            "{e}"
        );
    }

    #[test]
    fn says_what_is_missing() {
        let e = check_in(Path::new("/nonexistent"), "aarch64")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not mounted"), "{e}");
        let d = dir_with(
            &[("qemu-aarch64", &AARCH64.replace("enabled\n", "disabled\n"))],
            "enabled\n",
        );
        let e = check_in(d.path(), "aarch64").unwrap_err().to_string();
        assert!(
            e.contains("is disabled") && e.contains("update-binfmts --enable qemu-aarch64"),
            "{e}"
        );
        let d = dir_with(
            &[("qemu-aarch64", &AARCH64.replace("flags: PF", "flags: P"))],
            "enabled\n",
        );
        let e = check_in(d.path(), "aarch64").unwrap_err().to_string();
        assert!(e.contains("lacks the F"), "{e}");
        let d = dir_with(&[("qemu-aarch64", AARCH64)], "disabled\n");
        let e = check_in(d.path(), "aarch64").unwrap_err().to_string();
        assert!(e.contains("binfmt_misc is disabled"), "{e}");
    }

    #[test]
    fn big_endian_headers() {
        // Debian's s390x entry: the machine field is big-endian.
        let s390x = "enabled\ninterpreter /usr/libexec/qemu-binfmt/s390x-binfmt-P\nflags: PF\noffset 0\nmagic 7f454c4602020100000000000000000000020016\nmask fffffffffffffffcfffffffffffffffffffeffff\n";
        let d = dir_with(&[("qemu-s390x", s390x)], "enabled\n");
        assert_eq!(check_in(d.path(), "s390x").unwrap(), "qemu-s390x");
    }
}
