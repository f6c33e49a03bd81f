//! One build from start to teardown; the only place that knows the order of the steps:
//! check the arguments, take the target dir, resolve the box, settle its size and shares,
//! launch it (as a VM, `vm::launch`, or a container, `container::launch`), drive the
//! builder (through the agent, `driver::agent`, or the plugin's protocol,
//! `driver::plugin`), and stop everything.

use crate::app::target_lock::{self, Taken};
use crate::boxes::catalog::{Protocol, Refresh};
use crate::boxes::library::Library;
use crate::cli::BuildOptions;
use crate::drive;
use crate::job::builder_args;
use crate::job::{self, GUEST_DESCRIPTION, GUEST_TARGET};
use crate::job::{network, plugin};
use crate::runtime::share::{self, Backend, SharedDir};
use crate::runtime::startup::Timeline;
use crate::runtime::vm::arch;
use crate::runtime::Plan;
use crate::sys::error::{Error, Result};
use crate::sys::signals::SignalWatch;
use crate::sys::size;
use crate::sys::ui::Ui;
use std::time::Instant;

const DEFAULT_MEMORY_MIB: u64 = 2048;
const DEFAULT_CPUS: u32 = 2;

/// The architecture of the box to run: the host's unless asked otherwise.
fn box_arch(opts: &BuildOptions) -> &str {
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

pub fn build(opts: &BuildOptions, ui: Ui) -> Result<u8> {
    let mut timeline = Timeline::new(Instant::now());
    let signals = SignalWatch::install()?;
    let box_ref = opts.box_name.as_deref().ok_or_else(|| {
        Error::setup("no --box given: name the box to build in (see 'boxbuild --list-boxes')")
    })?;
    if opts.ssh_key.is_some() || opts.ssh_port.is_some() {
        ui.warn("--ssh-key and --ssh-port are ignored: sshfs sharing runs without SSH (docs/sharing.md)");
    }
    let arch = box_arch(opts);
    let profile = arch::profile(arch).ok_or_else(|| {
        Error::setup(format!(
            "unsupported architecture {arch} (supported: {})",
            arch::known().join(", ")
        ))
    })?;
    // Checked before anything is fetched: a typo costs nothing.
    let mut args = builder_args::resolve(&opts.builder_args)?;
    args.rest.splice(0..0, opts.kiwi_global_args());
    timeline.mark("arguments");
    // The target belongs to this build until everything writing into it has stopped:
    // declared before them all, so dropped after them all.
    let _target_lock = match target_lock::take(&args.target)? {
        Taken::Locked(lock) => {
            ui.detail(&format!("holding {}", lock.path().display()));
            Some(lock)
        }
        Taken::Unsupported(why) => {
            ui.warn(&why);
            None
        }
    };
    timeline.mark("target lock");
    let mut shared_dirs = vec![
        SharedDir {
            tag: "description".into(),
            host: args.description.clone(),
            guest: GUEST_DESCRIPTION.into(),
            readonly: true,
        },
        SharedDir {
            tag: "target".into(),
            host: args.target.clone(),
            guest: GUEST_TARGET.into(),
            readonly: false,
        },
    ];
    if let Some(path) = &opts.shared_path {
        let extra = share::extra_dir(path, &[GUEST_DESCRIPTION, GUEST_TARGET])?;
        ui.detail(&format!("sharing {} read-write", extra.host.display()));
        shared_dirs.push(extra);
    }
    // A missing virtiofsd is reported before any box is fetched.
    let choice = if opts.virtiofs_sharing {
        Backend::Virtiofs
    } else if opts.sshfs_sharing {
        Backend::Sshfs
    } else {
        Backend::NineP
    };
    let mut share_backend = share::backend(shared_dirs.clone(), choice)?;
    timeline.mark("share check");
    let refresh = if opts.no_update_check {
        Refresh::Never
    } else {
        Refresh::WhenDue
    };
    let mut library = Library::open(ui, refresh, signals.clone())?;
    let the_box = library.ready(box_ref, arch, !opts.no_update_check, opts.container)?;
    timeline.mark("catalog");
    ui.detail(&format!("box {} from {}", the_box.name, the_box.source));
    if !opts.container {
        the_box.tell_boot_kernel(ui);
    }
    let plugin = match the_box.settings.protocol {
        Protocol::BoxbuildAgent => None,
        Protocol::KiwiBoxedPlugin => {
            // The plugin's boxes mount fixed tags and take the arguments on their command
            // line (checked by the launcher before anything starts).
            for dir in &mut shared_dirs {
                dir.tag = match dir.tag.as_str() {
                    "description" => plugin::TAG_DESCRIPTION,
                    "target" => plugin::TAG_BUNDLE,
                    _ => plugin::TAG_CUSTOM,
                }
                .to_string();
            }
            share_backend = share::backend(shared_dirs.clone(), choice)?;
            if plugin::clear_stale_result(&args.target)? {
                ui.detail("removed the result.code of an earlier run");
            }
            Some(plugin::Request {
                base: &the_box.version.cmdline,
                kiwi: plugin::kiwi_words(&args.rest),
                backend: Some(choice),
                kiwi_version: opts.kiwi_version.as_deref(),
                custom_path: shared_dirs
                    .iter()
                    .find(|d| d.tag == plugin::TAG_CUSTOM)
                    .map(|d| d.host.as_path()),
                keep_open: opts.box_debug,
            })
        }
    };
    let memory_mib = match opts
        .box_memory
        .as_deref()
        .or(the_box.settings.memory.as_deref())
    {
        Some(text) => {
            size::parse_mib(text).map_err(|e| Error::setup(format!("--box-memory: {e}")))?
        }
        None => DEFAULT_MEMORY_MIB,
    };
    let cpus = opts
        .box_smp_cpus
        .or(the_box.settings.cpus)
        .unwrap_or(DEFAULT_CPUS);
    let scratch_mib = match opts
        .scratch_size
        .as_deref()
        .or(the_box.settings.scratch.as_deref())
    {
        Some(text) => {
            Some(size::parse_mib(text).map_err(|e| Error::setup(format!("--scratch-size: {e}")))?)
        }
        None => None,
    };
    let network = the_box.settings.network && !opts.no_network;
    let ca_certs = if network && !opts.no_host_certs {
        network::host_ca_certs(std::env::var("BOXBUILD_CA_CERTS").ok().as_deref())?
    } else {
        Vec::new()
    };

    let started_at = std::time::SystemTime::now();
    let plan = Plan {
        opts,
        ui,
        the_box: &the_box,
        args: &args,
        library: &library,
        signals: &signals,
        timeline,
        profile,
        shares: &shared_dirs,
        share_backend,
        memory_mib,
        cpus,
        scratch_mib,
        network,
        plugin,
    };
    let launched = match opts.container {
        true => crate::runtime::container::launch(plan)?,
        false => crate::runtime::vm::launch::launch(plan)?,
    };
    match the_box.settings.protocol {
        Protocol::BoxbuildAgent => {
            let job = job::job(opts, &the_box, &args, launched.place, ca_certs);
            drive::agent::drive(launched.session, opts, ui, &job, &args.target, &signals)
        }
        Protocol::KiwiBoxedPlugin => {
            drive::plugin::drive(launched.session, opts, &args.target, started_at, &signals)
        }
    }
}
