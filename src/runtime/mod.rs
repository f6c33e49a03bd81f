//! How the box runs: the process that is the box, a QEMU VM (`vm`) or a container
//! (`container`), with what both need: the run dir, the shares' backends, the scratch
//! area, the console log, the start-up timeline and the session the drivers talk to.
//!
//! `app::build` resolves `BoxSettings` once and hands a `Plan` to `launch`, which picks the
//! launcher from the settings (the one table of runtimes); the launcher turns the plan into
//! a running box (`Launched`). A new runtime is one more module here, one more
//! `RuntimeSettings` variant and one more arm in `launch`.

use crate::boxes::library::Library;
use crate::boxes::store::ReadyBox;
use crate::job::builder_args::BuilderArgs;
use crate::job::plugin;
use crate::job::shares::{SharedDir, Sharing};
use crate::job::JobPlace;
use crate::runtime::rundir::RunDir;
use crate::runtime::session::Session;
use crate::runtime::startup::Timeline;
use crate::runtime::vm::arch::ArchProfile;
use crate::sys::error::Result;
use crate::sys::signals::SignalWatch;
use crate::sys::ui::Ui;
use std::any::Any;

pub mod activity;
pub mod binfmt;
pub mod console;
pub mod container;
pub mod rundir;
pub mod scratch;
pub mod session;
pub mod startup;
pub mod vm;

/// How the box runs, resolved once (`app::settings`) from the command line, the box's own
/// settings and the host. The launchers read nothing else.
#[derive(Debug, Clone)]
pub struct BoxSettings {
    /// The box's architecture and how QEMU runs it.
    pub profile: &'static ArchProfile,
    /// A scratch area for the builder's work files, in MiB (`--scratch-size`, else the
    /// box's); None: the box has none.
    pub scratch_mib: Option<u64>,
    /// Whether the box has a network (the box's setting and `--no-network`).
    pub network: bool,
    pub runtime: RuntimeSettings,
}

/// What only one runtime reads.
#[derive(Debug, Clone)]
pub enum RuntimeSettings {
    Vm(VmSettings),
    Container(ContainerSettings),
}

#[derive(Debug, Clone)]
pub struct VmSettings {
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Virtual CPUs.
    pub cpus: u32,
    /// QEMU's `-machine` and `-cpu`; None: the architecture's default.
    pub machine: Option<String>,
    pub cpu: Option<String>,
    /// Whether KVM may be used when its probe passes (`--no-accel` says no).
    pub allow_kvm: bool,
    pub sharing: Sharing,
    /// `--no-snapshot`: the box version's persistent layer instead of a per-run overlay.
    pub persistent_layer: bool,
    /// `--box-console`: the box's console on stderr.
    pub console: bool,
    /// `--box-debug`: the console on this terminal and a shell after the build.
    pub debug_shell: bool,
}

#[derive(Debug, Clone)]
pub struct ContainerSettings {
    /// The engine's memory limit in MiB (`--box-memory`); None: no limit of boxbuild's.
    pub memory_mib: Option<u64>,
    /// The engine's CPU limit (`--box-smp-cpus`); None: no limit of boxbuild's.
    pub cpus: Option<u32>,
    /// `--box-console`: the container's own output (the agent's log) on stderr.
    pub console: bool,
}

/// Everything `app::build` settled before the box runs, for either launcher.
pub struct Plan<'a> {
    pub settings: &'a BoxSettings,
    pub ui: Ui,
    pub ready_box: &'a ReadyBox,
    /// The builder's arguments, checked.
    pub args: &'a BuilderArgs,
    pub library: &'a Library,
    pub signals: &'a SignalWatch,
    pub timeline: Timeline,
    /// The description, the target and `--shared-path`, with their guest paths.
    pub shares: &'a [SharedDir],
    /// For a box of KIWI's Python plugin: what to ask of it (it has no agent).
    pub plugin: Option<plugin::Request<'a>>,
}

/// A running box. Dropped in field order: the box stops first, then what it used.
pub struct Launched {
    pub session: Session,
    /// Where an agent's job runs (for `job::job`).
    pub place: JobPlace,
    /// Held until the box has stopped: share helpers, a persistent layer.
    pub _held: Vec<Box<dyn Any>>,
    pub _run_dir: RunDir,
}

/// Starts the planned box with the runtime its settings name. Errors: the launcher's.
pub fn launch(plan: Plan) -> Result<Launched> {
    match &plan.settings.runtime {
        RuntimeSettings::Vm(vm) => vm::launch::launch(plan, vm),
        RuntimeSettings::Container(container) => container::launch(plan, container),
    }
}
