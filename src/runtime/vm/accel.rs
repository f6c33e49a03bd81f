//! Choosing the accelerator: KVM only when a probe shows it really boots a guest, else TCG.
//!
//! /dev/kvm being present and openable is not enough. Seen on nested-virtualisation hosts:
//! QEMU aborting while loading CPU state into KVM ("failed to set MSR"), and guests that
//! hang forever once the kernel starts. So the probe is a real, short boot: the box's own
//! kernel, with the QEMU binary, machine and CPU model of the run, no disk and no initrd.
//! It must reach the kernel's "cannot mount root" panic, which `panic=-1` and
//! `-no-reboot` turn into a QEMU exit; with KVM working this takes about a second. The
//! verdict is cached per host boot and configuration.
//!
//! A probe can also fail because QEMU rejects the configuration itself (`--machine`,
//! `--cpu`), which says nothing about KVM. When QEMU exits without booting, the same
//! configuration is started once more under TCG, paused (`-S`), and asked to quit over
//! QMP: if QEMU refuses that too, the refusal is a set-up error quoting QEMU, KVM is not
//! blamed and nothing is cached.

use super::arch::ArchProfile;
use super::refusal;
use crate::sys::error::{Error, Result};
use crate::sys::process;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// QEMU's name for the accelerator (`-accel NAME`).
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
    /// `--machine`, if given (else the profile's).
    pub machine: Option<&'a str>,
    /// `--cpu`, if given (else `host` under KVM, the profile's TCG model under TCG).
    pub cpu: Option<&'a str>,
    pub kernel: &'a Path,
    /// The guest's console device, e.g. `ttyS0`.
    pub console: &'a str,
}

impl ProbeTarget<'_> {
    fn machine(&self) -> &str {
        self.machine.unwrap_or(self.profile.machine)
    }
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// Bumped when the meaning of a cached verdict changes, so older verdicts are not read.
const CACHE_FORMAT: u32 = 2;

/// The accelerator for this box, and a line to show the user when it is TCG.
///
/// Errors (set-up, exit 125): QEMU is not installed, or it rejects the configuration
/// (machine type, CPU model) whatever the accelerator; the message quotes QEMU.
pub fn choose(
    target: &ProbeTarget,
    no_accel: bool,
    scratch: &Path,
) -> Result<(Accel, Option<String>)> {
    if no_accel {
        return Ok((Accel::Tcg, None));
    }
    let host = std::env::consts::ARCH;
    if target.profile.name != host {
        return Ok((
            Accel::Tcg,
            Some(format!(
                "using TCG (software emulation): the box is {}, this host is {host}",
                target.profile.name
            )),
        ));
    }
    Ok(match kvm_usable(target, scratch)? {
        Ok(()) => (Accel::Kvm, None),
        Err(why) => (
            Accel::Tcg,
            Some(format!(
                "using TCG (software emulation, slow): KVM is not usable: {why}"
            )),
        ),
    })
}

/// Whether boxbuild runs in a container: the `container` variable (podman, systemd-nspawn;
/// podman's `/run/.containerenv` is missing under `--read-only`), docker's `/.dockerenv`,
/// or a Kubernetes pod's service variables.
fn in_container() -> bool {
    std::env::var_os("container").is_some()
        || Path::new("/run/.containerenv").exists()
        || Path::new("/.dockerenv").exists()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

/// `Ok(Ok(()))` when KVM works, `Ok(Err(why))` when it does not; `Err` when QEMU cannot
/// run this configuration at all.
fn kvm_usable(target: &ProbeTarget, scratch: &Path) -> Result<std::result::Result<(), String>> {
    let dev = Path::new("/dev/kvm");
    if !dev.exists() {
        return Ok(Err(if in_container() {
            "/dev/kvm is not in this container (pass it in: `podman run --device /dev/kvm`; \
             on Kubernetes, a devices.kubevirt.io/kvm resource)"
                .into()
        } else {
            "/dev/kvm does not exist (no hardware virtualisation, or the kvm module is not loaded)"
                .into()
        }));
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        return Ok(Err(format!(
            "/dev/kvm: {e} (add your user to the group that owns /dev/kvm, usually 'kvm')"
        )));
    }
    let cache = cache_file(scratch, target);
    if let Some(verdict) = read_cached(&cache) {
        return Ok(verdict);
    }
    let verdict = probe(target, scratch)?;
    let line = match &verdict {
        Ok(()) => "ok".to_string(),
        Err(why) => format!("fail {why}"),
    };
    write_cached(
        &cache,
        &format!("{}\n{line}\n", boot_id().unwrap_or_default()),
    );
    Ok(verdict)
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
    (
        CACHE_FORMAT,
        target.profile.qemu_binary,
        target.machine,
        target.cpu,
    )
        .hash(&mut h);
    dir.join(format!("kvm-probe-{:016x}", h.finish()))
}

/// A cached verdict, valid only for the host boot it was taken in.
fn read_cached(path: &Path) -> Option<std::result::Result<(), String>> {
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

/// Replaces the cache file in one rename, so a run reading it meanwhile sees the old
/// verdict or the new one, never a part. A cache that cannot be written is only slower.
fn write_cached(path: &Path, text: &str) {
    let Some(dir) = path.parent() else {
        return;
    };
    let Ok(mut file) = tempfile::NamedTempFile::new_in(dir) else {
        return;
    };
    if file.write_all(text.as_bytes()).is_ok() {
        let _ = file.persist(path);
    }
}

/// How a QEMU started by the probe ended.
enum Ended {
    Exited(ExitStatus),
    TimedOut,
}

/// Waits up to `PROBE_TIMEOUT` for `child`; kills it when the time is up.
fn wait(child: &mut Child) -> std::io::Result<Ended> {
    let start = Instant::now();
    loop {
        match child.try_wait()? {
            Some(status) => return Ok(Ended::Exited(status)),
            None if start.elapsed() > PROBE_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(Ended::TimedOut);
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn probe(target: &ProbeTarget, scratch: &Path) -> Result<std::result::Result<(), String>> {
    let dir = tempfile::Builder::new()
        .prefix("probe-")
        .tempdir_in(scratch)
        .map_err(|e| {
            Error::setup(format!(
                "cannot create a probe dir in {}: {e}",
                scratch.display()
            ))
        })?;
    let console = dir.path().join("console.log");
    let mut serial = std::ffi::OsString::from("file:");
    serial.push(&console);
    let stderr_path = dir.path().join("stderr.log");
    let p = target.profile;
    let stderr = std::fs::File::create(&stderr_path)
        .map_err(|e| Error::setup(format!("cannot create {}: {e}", stderr_path.display())))?;
    let mut command = process::command(p.qemu_binary);
    command
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .args(["-machine", target.machine(), "-accel", "kvm"])
        .args([
            "-cpu",
            target.cpu.unwrap_or("host"),
            "-m",
            "128M",
            "-smp",
            "1",
        ])
        .args(
            p.firmware(target.machine)
                .map(|firmware| vec![std::ffi::OsString::from("-bios"), firmware.into()])
                .unwrap_or_default(),
        )
        .arg("-kernel")
        .arg(target.kernel)
        .arg("-append")
        .arg(format!(
            "console={} panic=-1 root=/dev/boxbuild-kvm-probe rootwait=0 loglevel=4",
            target.console
        ))
        .arg("-serial")
        .arg(serial)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let mut child = command
        .spawn()
        .map_err(|e| process::spawn_error(p.qemu_binary, p.debian_package, &e))?;
    let status = match wait(&mut child) {
        Ok(Ended::Exited(status)) => status,
        Ok(Ended::TimedOut) => {
            return Ok(Err(format!(
                "a test boot did not finish within {}s (guests hang under KVM here)",
                PROBE_TIMEOUT.as_secs()
            )))
        }
        Err(e) => return Ok(Err(format!("cannot wait for the test boot: {e}"))),
    };
    let log = read_lossy(&console);
    if log.contains("Kernel panic") || log.contains("VFS:") {
        return Ok(Ok(()));
    }
    let said = read_lossy(&stderr_path);
    // The guest never ran: QEMU may reject the configuration itself, KVM or not.
    if let Some(tcg_said) = refused_without_kvm(target, dir.path())? {
        return Err(refusal_error(target, &said, &tcg_said));
    }
    let first_error = said
        .lines()
        .find(|l| l.contains("error") || l.contains("Assertion"))
        .or_else(|| said.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or("no kernel output");
    Ok(Err(format!(
        "a test boot failed ({status}): {}",
        first_error.trim()
    )))
}

/// Whether QEMU refuses the run's configuration under TCG as well: the same binary,
/// machine type, CPU model (the one a TCG run uses) and kernel, paused and asked to quit
/// at once. Some(what QEMU said) when it refuses; None when it accepts, or when the check
/// itself cannot tell.
fn refused_without_kvm(target: &ProbeTarget, dir: &Path) -> Result<Option<String>> {
    let p = target.profile;
    let stderr_path = dir.join("tcg-stderr.log");
    let stderr = std::fs::File::create(&stderr_path)
        .map_err(|e| Error::setup(format!("cannot create {}: {e}", stderr_path.display())))?;
    let mut command = process::command(p.qemu_binary);
    command
        .args(["-nodefaults", "-no-user-config", "-display", "none", "-S"])
        .args(["-machine", target.machine(), "-accel", "tcg"])
        .args([
            "-cpu",
            target.cpu.unwrap_or(p.tcg_cpu),
            "-m",
            "128M",
            "-smp",
            "1",
        ])
        .arg("-kernel")
        .arg(target.kernel)
        .args(["-qmp", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(stderr);
    let mut child = command
        .spawn()
        .map_err(|e| process::spawn_error(p.qemu_binary, p.debian_package, &e))?;
    // QMP answers only once QEMU finished setting the machine up, so a clean exit after
    // `quit` means the configuration was accepted. A QEMU that exits early closes the
    // pipe: the write error says nothing the exit status does not.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"quit\"}\n");
    }
    match wait(&mut child) {
        Ok(Ended::Exited(status)) if !status.success() => Ok(Some(read_lossy(&stderr_path))),
        _ => Ok(None),
    }
}

/// The set-up error for a configuration QEMU refuses under TCG. When the KVM probe
/// failed for another reason than that refusal, KVM's own failure is named too.
fn refusal_error(target: &ProbeTarget, kvm_said: &str, tcg_said: &str) -> Error {
    let binary = target.profile.qemu_binary;
    let kvm = refusal::quote(kvm_said);
    let error = refusal::error(tcg_said, binary, "QEMU exited while starting");
    match kvm {
        Some(kvm) if Some(&kvm) != refusal::quote(tcg_said).as_ref() => {
            Error::setup(format!("{error}; KVM is not usable here either: {kvm}"))
        }
        _ => error,
    }
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::vm::arch::profile;

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
            choose(&target("x86_64", &k), true, tmp.path()).unwrap().0,
            Accel::Tcg
        );
        let other = if std::env::consts::ARCH == "aarch64" {
            "x86_64"
        } else {
            "aarch64"
        };
        let (accel, line) = choose(&target(other, &k), false, tmp.path()).unwrap();
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
    fn a_refused_configuration_blames_kvm_only_for_a_failure_of_its_own() {
        let k = PathBuf::from("/k");
        let t = target("x86_64", &k);
        let refused = "qemu-system-x86_64: unsupported machine type\n";
        let same = refusal_error(&t, refused, refused).to_string();
        assert!(
            same.starts_with(
                "QEMU refused to start the box: qemu-system-x86_64: unsupported machine type"
            ),
            "{same}"
        );
        assert!(!same.contains("KVM"), "{same}");
        let msr = "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x0\n";
        let both = refusal_error(
            &t,
            msr,
            "qemu-system-x86_64: CPU model 'host' requires KVM or HVF\n",
        )
        .to_string();
        assert!(both.contains("requires KVM or HVF"), "{both}");
        assert!(
            both.contains(
                "KVM is not usable here either: qemu-system-x86_64: error: failed to set MSR"
            ),
            "{both}"
        );
        assert_eq!(refusal_error(&t, msr, "").exit_code(), 125);
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
