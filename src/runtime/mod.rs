//! How the box runs: the process that is the box, a QEMU VM (`vm::launch`) or a container
//! (`container::launch`). `run` settles a `Plan`, a launcher turns it into a running box
//! (`Launched`), and a driver (`driver`) runs the build on it. The driver only asks the
//! box whether it has ended, why, and to stop.

use crate::boxes::library::Library;
use crate::boxes::store::Ready as ResolvedBox;
use crate::cli::BuildOptions;
use crate::job::builder_args::BuilderArgs;
use crate::job::plugin;
use crate::job::JobPlace;
use crate::runtime::rundir::RunDir;
use crate::runtime::session::Session;
use crate::runtime::share::{ShareBackend, SharedDir};
use crate::runtime::startup::Timeline;
use crate::runtime::vm::arch::ArchProfile;
use crate::sys::error::Error;
use crate::sys::signals::SignalWatch;
use crate::sys::ui::Ui;
use std::any::Any;

pub mod activity;
pub mod console;
pub mod container;
pub mod rundir;
pub mod scratch;
pub mod session;
pub mod share;
pub mod startup;
pub mod vm;
use std::process::ExitStatus;
use std::time::Duration;

pub trait Guest {
    /// The box's process has ended, with its status; None while it runs.
    fn try_wait(&mut self) -> Option<ExitStatus>;
    /// Stops the box if it still runs: politely, then by force. Idempotent.
    fn stop(&mut self);
    /// Why the box ended without a status from the builder, as precisely as its logs tell.
    fn failure(&self, exit: ExitStatus) -> Error;
    /// The box's last console lines, for error details.
    fn console_tail(&self) -> String;
    /// How long the box may take from its start to the agent's greeting.
    fn greeting_timeout(&self) -> Duration;
}

/// Everything `run` settled before the box runs, for either launcher.
pub struct Plan<'a> {
    pub opts: &'a BuildOptions,
    pub ui: Ui,
    pub the_box: &'a ResolvedBox,
    /// The builder's arguments, checked.
    pub args: &'a BuilderArgs,
    pub library: &'a Library,
    pub signals: &'a SignalWatch,
    pub timeline: Timeline,
    /// The box's architecture and how QEMU runs it.
    pub profile: &'static ArchProfile,
    /// The description, the target and `--shared-path`, with their guest paths.
    pub shares: &'a [SharedDir],
    /// How a VM reaches the shares (9p, virtiofs, sshfs); a container bind-mounts them.
    pub share_backend: Box<dyn ShareBackend>,
    pub memory_mib: u64,
    pub cpus: u32,
    /// A scratch area for the builder's work files, in MiB (`--scratch-size`).
    pub scratch_mib: Option<u64>,
    pub network: bool,
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
