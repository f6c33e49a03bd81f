//! Choosing the accelerator: KVM only when a probe shows it really boots a guest, else TCG.
//!
//! /dev/kvm being present and openable is not enough. Seen on nested-virtualisation hosts:
//! QEMU aborting while loading CPU state into KVM ("failed to set MSR"), and guests that
//! hang forever once the kernel starts. So the probe is a real, short boot: the box's own
//! kernel, with the QEMU binary, machine and CPU model of the run, no disk and no initrd.
//! It must reach the kernel's "cannot mount root" panic, which `panic=-1` and
//! `-no-reboot` turn into a QEMU exit; with KVM working this takes about a second. The
//! verdict is cached per host boot and configuration.

use super::arch::ArchProfile;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// What the probe boots, and how the run will configure QEMU.
pub struct ProbeTarget<'a> {
    pub profile: &'a ArchProfile,
    pub machine: Option<&'a str>,
    pub cpu: Option<&'a str>,
    pub kernel: &'a Path,
    pub console: &'a str,
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The accelerator for this box, and a line to show the user when it is TCG.
pub fn choose(target: &ProbeTarget, no_accel: bool, scratch: &Path) -> (Accel, Option<String>) {
    if no_accel {
        return (Accel::Tcg, None);
    }
    let host = std::env::consts::ARCH;
    if target.profile.name != host {
        return (
            Accel::Tcg,
            Some(format!(
                "using TCG (software emulation): the box is {}, this host is {host}",
                target.profile.name
            )),
        );
    }
    match kvm_usable(target, scratch) {
        Ok(()) => (Accel::Kvm, None),
        Err(why) => (
            Accel::Tcg,
            Some(format!(
                "using TCG (software emulation, slow): KVM is not usable: {why}"
            )),
        ),
    }
}

fn kvm_usable(target: &ProbeTarget, scratch: &Path) -> Result<(), String> {
    let dev = Path::new("/dev/kvm");
    if !dev.exists() {
        return Err(
            "/dev/kvm does not exist (no hardware virtualisation, or the kvm module is not loaded)"
                .into(),
        );
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        return Err(format!(
            "/dev/kvm: {e} (add your user to the group that owns /dev/kvm, usually 'kvm')"
        ));
    }
    let cache = cache_file(scratch, target);
    if let Some(verdict) = read_cached(&cache) {
        return verdict;
    }
    let verdict = probe(target, scratch);
    let line = match &verdict {
        Ok(()) => "ok".to_string(),
        Err(why) => format!("fail {why}"),
    };
    let _ = std::fs::write(
        &cache,
        format!("{}\n{line}\n", boot_id().unwrap_or_default()),
    );
    verdict
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// One cache file per QEMU configuration: a verdict for `-cpu host` says nothing about
/// another CPU model.
fn cache_file(dir: &Path, target: &ProbeTarget) -> PathBuf {
    let mut h = DefaultHasher::new();
    (target.profile.qemu_binary, target.machine, target.cpu).hash(&mut h);
    dir.join(format!("kvm-probe-{:016x}", h.finish()))
}

/// A cached verdict, valid only for the host boot it was taken in.
fn read_cached(path: &Path) -> Option<Result<(), String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    if lines.next()? != boot_id()? {
        return None;
    }
    let verdict = lines.next()?;
    Some(match verdict.strip_prefix("fail ") {
        Some(why) => Err(format!("{why} (result cached for this boot)")),
        None if verdict == "ok" => Ok(()),
        None => return None,
    })
}

fn probe(target: &ProbeTarget, scratch: &Path) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("probe-")
        .tempdir_in(scratch)
        .map_err(|e| format!("cannot create a probe dir: {e}"))?;
    let console = dir.path().join("console.log");
    let p = target.profile;
    let mut command = Command::new(p.qemu_binary);
    command
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .args([
            "-machine",
            target.machine.unwrap_or(p.machine),
            "-accel",
            "kvm",
        ])
        .args([
            "-cpu",
            target.cpu.unwrap_or("host"),
            "-m",
            "128M",
            "-smp",
            "1",
        ])
        .arg("-kernel")
        .arg(target.kernel)
        .arg("-append")
        .arg(format!(
            "console={} panic=-1 root=/dev/boxbuild-kvm-probe rootwait=0 loglevel=4",
            target.console
        ))
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", p.qemu_binary))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > PROBE_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "a test boot did not finish within {}s (guests hang under KVM here)",
                    PROBE_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    };
    let log = std::fs::read_to_string(&console).unwrap_or_default();
    if log.contains("Kernel panic") || log.contains("VFS:") {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut s) = child.stderr.take() {
        use std::io::Read;
        let _ = s.read_to_string(&mut stderr);
    }
    let first_error = stderr
        .lines()
        .find(|l| l.contains("error") || l.contains("Assertion"))
        .or_else(|| stderr.lines().next())
        .unwrap_or("no kernel output");
    Err(format!(
        "a test boot failed ({status}): {}",
        first_error.trim()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::arch::profile;

    fn target<'a>(arch: &str, kernel: &'a Path) -> ProbeTarget<'a> {
        ProbeTarget {
            profile: profile(arch).unwrap(),
            machine: None,
            cpu: None,
            kernel,
            console: "ttyS0",
        }
    }

    #[test]
    fn cross_arch_and_no_accel_are_tcg() {
        let tmp = tempfile::tempdir().unwrap();
        let k = tmp.path().join("k");
        assert_eq!(
            choose(&target("x86_64", &k), true, tmp.path()).0,
            Accel::Tcg
        );
        let other = if std::env::consts::ARCH == "aarch64" {
            "x86_64"
        } else {
            "aarch64"
        };
        let (accel, line) = choose(&target(other, &k), false, tmp.path());
        assert_eq!(accel, Accel::Tcg);
        assert!(line.unwrap().contains("this host is"));
    }

    #[test]
    fn cached_verdict_only_counts_for_this_boot() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("kvm-probe");
        std::fs::write(&file, "some-other-boot\nok\n").unwrap();
        assert_eq!(read_cached(&file), None);
        std::fs::write(&file, format!("{}\nfail hangs\n", boot_id().unwrap())).unwrap();
        assert!(read_cached(&file).unwrap().unwrap_err().contains("hangs"));
        std::fs::write(&file, format!("{}\nok\n", boot_id().unwrap())).unwrap();
        assert_eq!(read_cached(&file), Some(Ok(())));
    }

    #[test]
    fn cache_is_per_configuration() {
        let k = PathBuf::from("/k");
        let a = target("x86_64", &k);
        let mut b = target("x86_64", &k);
        b.cpu = Some("qemu64");
        assert_ne!(
            cache_file(Path::new("/d"), &a),
            cache_file(Path::new("/d"), &b)
        );
    }
}
