//! The command line turned, once, into the settings the floors below receive: how the box
//! runs (`runtime::BoxSettings`), what the job carries (`job::JobSettings`) and how the
//! build is driven (`drive::DriveSettings`). No layer below `app` sees the CLI.
//!
//! This is also the one place where options meet the runtime. Under `--container` an
//! option that means nothing to a container is refused or named in a warning, never
//! ignored in silence (the table is in docs/container.md):
//! - honoured: `--box-memory` and `--box-smp-cpus` (the engine's limits), `--box-console`
//!   (the container's own output on stderr);
//! - refused (exit 125, before anything starts): `--machine`, `--cpu`,
//!   `--virtiofs-sharing`, `--sshfs-sharing`, `--box-debug`, `--no-snapshot`;
//! - warned about: `--no-accel`, `--9p-sharing`, `--scratch-size`.

use crate::boxes::store::ReadyBox;
use crate::cli::BuildOptions;
use crate::drive::DriveSettings;
use crate::job::shares::Sharing;
use crate::job::JobSettings;
use crate::runtime::vm::arch::{self, ArchProfile};
use crate::runtime::{BoxSettings, ContainerSettings, RuntimeSettings, VmSettings};
use crate::sys::error::{Error, Result};
use crate::sys::size;
use crate::sys::ui::Ui;

/// A VM's memory and CPUs when neither the user nor the box says.
const DEFAULT_MEMORY_MIB: u64 = 2048;
const DEFAULT_CPUS: u32 = 2;

/// VM-only options that a container cannot honour: refused with `--container`.
fn vm_only(opts: &BuildOptions) -> Vec<(&'static str, &'static str)> {
    let mut given = Vec::new();
    if opts.machine.is_some() {
        given.push(("--machine", "QEMU's machine type"));
    }
    if opts.cpu.is_some() {
        given.push((
            "--cpu",
            "QEMU's CPU model; a container runs on the host's CPU",
        ));
    }
    if opts.virtiofs_sharing {
        given.push((
            "--virtiofs-sharing",
            "a VM's share backend; a container bind-mounts its shares",
        ));
    }
    if opts.sshfs_sharing {
        given.push((
            "--sshfs-sharing",
            "a VM's share backend; a container bind-mounts its shares",
        ));
    }
    if opts.box_debug {
        given.push(("--box-debug", "a shell on a VM's console"));
    }
    if opts.no_snapshot {
        given.push(("--no-snapshot", "a VM's persistent disk layer"));
    }
    given
}

/// Options that change nothing under `--container`: named in a warning.
fn without_effect_in_a_container(opts: &BuildOptions) -> Vec<(&'static str, &'static str)> {
    let mut given = Vec::new();
    if opts.no_accel {
        given.push((
            "--no-accel",
            "a container runs natively, never under KVM or TCG",
        ));
    }
    if opts.nine_p_sharing {
        given.push(("--9p-sharing", "a container bind-mounts its shares"));
    }
    if opts.scratch_size.is_some() {
        given.push((
            "--scratch-size",
            "a container's scratch area is a directory on the host, as large as its file system",
        ));
    }
    given
}

/// Checks the options against each other and the environment, before anything slow
/// starts. Errors: one line naming the option that a container cannot honour, or a
/// `SOURCE_DATE_EPOCH` that is no number of seconds.
pub fn check(opts: &BuildOptions, ui: Ui) -> Result<()> {
    source_date_epoch(|name| std::env::var(name).ok())?;
    if opts.ssh_key.is_some() || opts.ssh_port.is_some() {
        ui.warn("--ssh-key and --ssh-port are ignored: sshfs sharing runs without SSH (docs/sharing.md)");
    }
    if opts
        .box_console
        .as_deref()
        .is_some_and(|tty| !tty.is_empty())
    {
        ui.warn("--box-console=TTY: the console keeps the box's own name; it is shown on stderr as with --box-console");
    }
    if !opts.container {
        return Ok(());
    }
    if let Some((option, what)) = vm_only(opts).first() {
        return Err(Error::setup(format!(
            "--container cannot be combined with {option} ({what}); drop one of them"
        )));
    }
    for (option, why) in without_effect_in_a_container(opts) {
        ui.warn(&format!("{option} has no effect with --container: {why}"));
    }
    Ok(())
}

/// The architecture of the box to run: the host's unless asked otherwise.
pub fn box_arch(opts: &BuildOptions) -> &str {
    if opts.aarch64 {
        "aarch64"
    } else if opts.x86_64 {
        "x86_64"
    } else if let Some(arch) = &opts.arch {
        arch
    } else {
        std::env::consts::ARCH
    }
}

/// The profile of `arch`. Errors: an architecture boxbuild does not know.
pub fn profile(arch: &str) -> Result<&'static ArchProfile> {
    arch::profile(arch).ok_or_else(|| {
        Error::setup(format!(
            "unsupported architecture {arch} (supported: {})",
            arch::known().join(", ")
        ))
    })
}

/// The share backend a VM uses: the one asked for, else 9p.
pub fn sharing(opts: &BuildOptions) -> Sharing {
    if opts.virtiofs_sharing {
        Sharing::Virtiofs
    } else if opts.sshfs_sharing {
        Sharing::Sshfs
    } else {
        Sharing::NineP
    }
}

fn mib(option: &str, text: &str) -> Result<u64> {
    size::parse_mib(text).map_err(|e| Error::setup(format!("{option}: {e}")))
}

/// How `ready_box` runs: the user's options over the box's own settings over defaults.
/// Errors: a size that does not parse.
pub fn box_settings(
    opts: &BuildOptions,
    ready_box: &ReadyBox,
    profile: &'static ArchProfile,
) -> Result<BoxSettings> {
    let box_own = &ready_box.settings;
    let scratch_mib = match opts.scratch_size.as_deref().or(box_own.scratch.as_deref()) {
        Some(text) => Some(mib("--scratch-size", text)?),
        None => None,
    };
    let runtime = if opts.container {
        // A container shares the host's memory and CPUs unless the user limits them: the
        // box's own sizes are a VM's.
        RuntimeSettings::Container(ContainerSettings {
            memory_mib: match opts.box_memory.as_deref() {
                Some(text) => Some(mib("--box-memory", text)?),
                None => None,
            },
            cpus: opts.box_smp_cpus,
            console: opts.box_console(),
        })
    } else {
        RuntimeSettings::Vm(VmSettings {
            memory_mib: match opts.box_memory.as_deref().or(box_own.memory.as_deref()) {
                Some(text) => mib("--box-memory", text)?,
                None => DEFAULT_MEMORY_MIB,
            },
            cpus: opts.box_smp_cpus.or(box_own.cpus).unwrap_or(DEFAULT_CPUS),
            machine: opts.machine.clone(),
            cpu: opts.cpu.clone(),
            allow_kvm: !opts.no_accel,
            sharing: sharing(opts),
            persistent_layer: opts.no_snapshot,
            console: opts.box_console(),
            debug_shell: opts.box_debug,
        })
    };
    Ok(BoxSettings {
        profile,
        scratch_mib,
        network: box_own.network && !opts.no_network,
        runtime,
    })
}

pub fn job_settings(opts: &BuildOptions) -> JobSettings {
    JobSettings {
        kiwi_version: opts.kiwi_version.clone(),
        debug_shell: opts.box_debug,
        // Checked by `check`: an invalid value is an error there.
        source_date_epoch: source_date_epoch(|name| std::env::var(name).ok())
            .ok()
            .flatten(),
        // Set by app::build once the cache is shared.
        package_cache: false,
    }
}

/// `SOURCE_DATE_EPOCH` from the user's environment: `None` when unset or empty, the value
/// when it is a decimal number of seconds since 1970-01-01 UTC. Errors: any other value,
/// which the specification (reproducible-builds.org/specs/source-date-epoch) says a build
/// must refuse rather than guess at.
pub fn source_date_epoch(var: impl Fn(&str) -> Option<String>) -> Result<Option<String>> {
    let Some(value) = var("SOURCE_DATE_EPOCH").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.bytes().all(|b| b.is_ascii_digit()) && value.parse::<u64>().is_ok() {
        return Ok(Some(value));
    }
    Err(Error::setup(format!(
        "SOURCE_DATE_EPOCH={value:?} is no number of seconds since 1970: set it to one (e.g. `git log -1 --format=%ct`) or unset it"
    )))
}

pub fn drive_settings(opts: &BuildOptions) -> DriveSettings {
    DriveSettings {
        timeout: opts.timeout,
        console_shown: opts.box_console() || opts.box_debug,
        debug_shell: opts.box_debug,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn opts(words: &[&str]) -> BuildOptions {
        let mut argv = vec!["boxbuild"];
        argv.extend(words);
        crate::cli::Cli::parse_from(argv).build
    }

    #[test]
    fn container_refuses_each_vm_only_option() {
        for (word, value) in [
            ("--machine", Some("q35")),
            ("--cpu", Some("max")),
            ("--virtiofs-sharing", None),
            ("--sshfs-sharing", None),
            ("--box-debug", None),
            ("--no-snapshot", None),
        ] {
            let mut words = vec!["--container", word];
            words.extend(value);
            let e = check(&opts(&words), Ui::default()).unwrap_err();
            assert_eq!(e.exit_code(), 125);
            assert!(e.to_string().contains(word), "{e}");
            // The same option without --container is fine.
            check(&opts(&words[1..]), Ui::default()).unwrap();
        }
    }

    #[test]
    fn container_names_options_without_effect() {
        let o = opts(&[
            "--container",
            "--no-accel",
            "--9p-sharing",
            "--scratch-size",
            "4G",
        ]);
        let named: Vec<_> = without_effect_in_a_container(&o)
            .iter()
            .map(|w| w.0)
            .collect();
        assert_eq!(named, ["--no-accel", "--9p-sharing", "--scratch-size"]);
        check(&o, Ui::default()).unwrap();
    }

    #[test]
    fn source_date_epoch_is_a_number_or_refused() {
        let with = |v: &'static str| move |_: &str| Some(v.to_string());
        assert_eq!(
            source_date_epoch(with("1700000000")).unwrap().as_deref(),
            Some("1700000000")
        );
        assert_eq!(source_date_epoch(with("")).unwrap(), None);
        assert_eq!(source_date_epoch(|_| None).unwrap(), None);
        for bad in ["yesterday", "-1", " 1", "1e9", "99999999999999999999999"] {
            let err = source_date_epoch(with(bad)).unwrap_err().to_string();
            assert!(err.contains("SOURCE_DATE_EPOCH"), "{err}");
        }
    }
}
