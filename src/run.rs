//! One build from start to teardown; the only place that knows the order of the steps:
//! check the arguments, take the target dir, resolve the box, choose the accelerator, make
//! the run dir and the overlay, start QEMU, hand the agent its job, stream the output, and
//! stop everything.

use crate::agent::{self, AgentEvent};
use crate::builder_args::{self, BuilderArgs};
use crate::catalog::{Protocol, Refresh};
use crate::cli::BuildOptions;
use crate::error::{Error, Result};
use crate::guest::Guest;
use crate::library::Library;
use crate::output::{self, BuildOutput};
use crate::rundir::{self, RunDir};
use crate::share::{self, Backend, ShareBackend, SharedDir};
use crate::signals::SignalWatch;
use crate::size;
use crate::startup::{self, Timeline};
use crate::status::StatusLine;
use crate::store::{Key, LayerState, Ready as ResolvedBox};
use crate::target_lock::{self, Taken};
use crate::ui::Ui;
use crate::vm::accel::{self, Accel};
use crate::vm::arch::{self, ArchProfile};
use crate::vm::qemu::QemuSpec;
use crate::vm::{overlay, process, qmp, refusal};
use crate::{guest_setup, plugin_box, scratch};
use guest_agent::protocol::{
    BootMark, Job, Mount, Status, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const GUEST_DESCRIPTION: &str = "/description";
const GUEST_TARGET: &str = "/target";
const DEFAULT_MEMORY_MIB: u64 = 2048;
const DEFAULT_CPUS: u32 = 2;
/// How long QEMU may take to connect its sockets after it started.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a QEMU that failed to start gets to finish its own exit (and its message).
const REFUSAL_GRACE: Duration = Duration::from_secs(2);
/// How long the box may take from power-on to the agent's greeting.
fn boot_timeout(accel: Accel) -> Duration {
    match accel {
        Accel::Kvm => Duration::from_secs(120),
        Accel::Tcg => Duration::from_secs(600),
    }
}
/// When `--timeout` ends, counted from `started`, and the limit itself; None without a
/// limit, or for one too far away for the clock to count to (never reached).
fn deadline(started: Instant, timeout: Option<Duration>) -> Option<(Instant, Duration)> {
    let limit = timeout?;
    Some((started.checked_add(limit)?, limit))
}
/// After the status arrived, how long the box may take to power off by itself.
const POWEROFF_GRACE: Duration = Duration::from_secs(30);
/// How long QEMU gets to exit after a QMP quit before it is killed.
const QUIT_GRACE: Duration = Duration::from_secs(3);
const TICK: Duration = Duration::from_millis(20);
const CONSOLE_TAIL_LINES: usize = 15;

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
    let the_box = library.ready(box_ref, arch, !opts.no_update_check)?;
    timeline.mark("catalog");
    ui.detail(&format!("box {} from {}", the_box.name, the_box.source));
    the_box.tell_boot_kernel(ui);
    let plugin = the_box.settings.protocol == Protocol::KiwiBoxedPlugin;
    let cmdline = if plugin {
        // The plugin's boxes mount fixed tags and take the arguments on the kernel
        // command line; refused arguments stop the run before anything boots.
        for dir in &mut shared_dirs {
            dir.tag = match dir.tag.as_str() {
                "description" => plugin_box::TAG_DESCRIPTION,
                "target" => plugin_box::TAG_BUNDLE,
                _ => plugin_box::TAG_CUSTOM,
            }
            .to_string();
        }
        let line = plugin_box::cmdline(&plugin_box::Request {
            base: &the_box.version.cmdline,
            kiwi: plugin_box::kiwi_words(&args.rest),
            backend: choice,
            kiwi_version: opts.kiwi_version.as_deref(),
            custom_path: shared_dirs
                .iter()
                .find(|d| d.tag == plugin_box::TAG_CUSTOM)
                .map(|d| d.host.as_path()),
            keep_open: opts.box_debug,
        })?;
        share_backend = share::backend(shared_dirs.clone(), choice)?;
        if plugin_box::clear_stale_result(&args.target)? {
            ui.detail("removed the result.code of an earlier run");
        }
        line
    } else {
        the_box.version.cmdline.clone()
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
        guest_setup::host_ca_certs(std::env::var("BOXBUILD_CA_CERTS").ok().as_deref())?
    } else {
        Vec::new()
    };

    if opts.container {
        return build_in_container(ContainerRun {
            opts,
            ui,
            the_box: &the_box,
            args: &args,
            shared_dirs: &shared_dirs,
            library: &library,
            scratch: scratch_mib.is_some(),
            network,
            ca_certs,
            signals: &signals,
            timeline,
        });
    }
    let console = the_box
        .version
        .console
        .clone()
        .unwrap_or_else(|| profile.console.to_string());
    let probe_target = accel::ProbeTarget {
        profile,
        machine: opts.machine.as_deref(),
        cpu: opts.cpu.as_deref(),
        kernel: the_box.boot_kernel(),
        console: &console,
    };
    let (accel, accel_note) = accel::choose(&probe_target, opts.no_accel, &rundir::base_dir()?)?;
    timeline.mark("accelerator");
    if let Some(note) = accel_note {
        ui.info(&note);
    }
    // Emulated where a container would run natively: say so once per user (a mark in the
    // cache), never switch by itself.
    let hint = library.store.root().join("hints/container");
    if accel == Accel::Tcg
        && arch == std::env::consts::ARCH
        && the_box.disk.is_some()
        && !plugin
        && !hint.exists()
        && crate::container::engine::on_path("podman").is_some()
    {
        ui.info("this box is emulated; its build could run at native speed as a container: add --container (docs/container.md; said once)");
        if let Some(dir) = hint.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(&hint, b"");
    }
    let run_dir = RunDir::create()?;
    timeline.mark("run dir");
    ui.detail(&format!("run dir {}", run_dir.root().display()));
    ui.info(&format!(
        "box {} {} ({arch}, {}), {memory_mib} MiB, {cpus} CPU(s), sharing over {}",
        the_box.name,
        the_box.version.version,
        accel.name(),
        share_backend.name()
    ));
    let scratch = match scratch_mib {
        Some(mib) => {
            let path = run_dir.path("scratch.img");
            scratch::create(&path, mib)?;
            timeline.mark("scratch disk");
            ui.detail(&format!(
                "scratch disk of {mib} MiB at {}",
                scratch::GUEST_PATH
            ));
            Some(path)
        }
        None => None,
    };
    // The box disk is only read: writes go to a per-run overlay, or with --no-snapshot
    // to the box version's persistent layer (held for the whole run).
    let mut _layer = None;
    let root_disk = match (&the_box.disk, opts.no_snapshot) {
        (Some(disk), false) => {
            let path = run_dir.path("overlay.qcow2");
            overlay::create(disk, &path)?;
            timeline.mark("overlay");
            Some(path)
        }
        (Some(disk), true) => {
            let key = Key::new(&the_box.name, arch, &the_box.version.version);
            let layer = library.store.open_layer(&key, disk)?;
            ui.info(&match layer.state {
                LayerState::Created => {
                    "--no-snapshot: changes to the box are kept in a new persistent layer"
                        .to_string()
                }
                LayerState::Reused => {
                    "--no-snapshot: using the box's persistent layer from earlier runs".to_string()
                }
                LayerState::Reset => {
                    "--no-snapshot: the box changed, its persistent layer starts afresh".to_string()
                }
            });
            ui.detail(&format!("persistent layer {}", layer.path.display()));
            let path = layer.path.clone();
            _layer = Some(layer);
            timeline.mark("layer");
            Some(path)
        }
        (None, true) => {
            ui.warn("--no-snapshot has no effect: this box has no disk");
            None
        }
        (None, false) => None,
    };
    let machine = Machine {
        profile,
        kernel: the_box.boot_kernel().to_path_buf(),
        initrd: the_box.initrd.clone(),
        accel,
        memory_mib,
        cpus,
        root_disk,
        scratch,
        network,
        console: console.clone(),
        protocol: the_box.settings.protocol,
        cmdline,
    };
    // Declared after the run dir: dropped (stopped) before it is removed.
    let _helpers = share_backend.prepare(&run_dir)?;
    timeline.mark("share helpers");
    let share = share_backend.as_ref();
    let place = JobPlace {
        mounts: share.mounts(),
        scratch_disk: machine.scratch.is_some(),
        scratch_dir: false,
        network: machine.network,
        configure_network: true,
        host_network: false,
        console: Some(machine.console.clone()),
    };
    let job = job(opts, &the_box, &args, place, ca_certs);
    let started_at = std::time::SystemTime::now();
    let session = Session::start(opts, ui, &run_dir, &machine, share, &signals, timeline)?;
    if plugin {
        session.drive_plugin(opts, &args.target, started_at, &signals)
    } else {
        session.drive(opts, ui, &job, &args.target, &signals)
    }
}

/// What a build in a container starts from (everything `build` settled before the box
/// runs).
struct ContainerRun<'a> {
    opts: &'a BuildOptions,
    ui: Ui,
    the_box: &'a ResolvedBox,
    args: &'a BuilderArgs,
    shared_dirs: &'a [SharedDir],
    library: &'a Library,
    scratch: bool,
    network: bool,
    ca_certs: Vec<u8>,
    signals: &'a SignalWatch,
    timeline: Timeline,
}

/// The box's root file system under the container engine, driven like a VM's agent.
fn build_in_container(run: ContainerRun) -> Result<u8> {
    let ContainerRun {
        opts,
        ui,
        the_box,
        args,
        shared_dirs,
        library,
        scratch,
        network,
        ca_certs,
        signals,
        mut timeline,
    } = run;
    let refuse = |what: &str| {
        Err(Error::setup(format!(
            "--container cannot be combined with {what}; drop one of them"
        )))
    };
    if opts.box_debug {
        return refuse("--box-debug (a shell in a VM)");
    }
    if opts.no_snapshot {
        return refuse("--no-snapshot (a VM's persistent disk layer)");
    }
    if the_box.settings.protocol == Protocol::KiwiBoxedPlugin {
        return Err(Error::setup(format!(
            "--container: box {} speaks the Python plugin's protocol, which runs only as a VM here; drop --container",
            the_box.name
        )));
    }
    if the_box.version.arch != std::env::consts::ARCH {
        return Err(Error::setup(format!(
            "--container runs boxes of this machine's architecture ({}) only, this is {}; drop --container to emulate it in a VM",
            std::env::consts::ARCH,
            the_box.version.arch
        )));
    }
    let Some(disk) = &the_box.disk else {
        return Err(Error::setup(format!(
            "--container: box {} has no disk to take a root file system from; drop --container",
            the_box.name
        )));
    };
    let engine = crate::container::engine::find()?;
    if engine.rootless {
        let image = crate::container::kiwi_type::image_type(&args.rest, &args.description);
        if let Some(image) =
            image.filter(|t| !crate::container::kiwi_type::WITHOUT_LOOP.contains(&t.as_str()))
        {
            return Err(Error::setup(format!(
                "--container as a normal user cannot build the image type '{image}': it needs loop devices, which a rootless container cannot have; drop --container to build it in a VM, or run boxbuild as root"
            )));
        }
    }
    crate::container::sweep(&engine);
    let root = crate::container::rootfs::prepare(library.store.root(), disk, ui, signals)?;
    timeline.mark("root file system");
    let run_dir = RunDir::create()?;
    ui.detail(&format!("run dir {}", run_dir.root().display()));
    let scratch_dir = match scratch {
        true => {
            let dir = run_dir.path("scratch");
            std::fs::create_dir(&dir)
                .map_err(|e| Error::setup(format!("cannot create {}: {e}", dir.display())))?;
            Some(dir)
        }
        false => None,
    };
    let (listener, socket) = bind(&run_dir, "agent.sock")?;
    let name = format!(
        "boxbuild-{}-{}",
        std::process::id(),
        run_dir
            .root()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "")
    );
    let spec_network = crate::container::network(&engine, network);
    if spec_network == crate::container::Network::Host {
        ui.warn("the container shares the host's network: /dev/net/tun is not open to this user, and slirp4netns needs it; a builder that mounts sysfs (kiwi does) fails so: make /dev/net/tun usable (mode 0666, most distributions' default) or run as root");
    }
    let spec = crate::container::Spec {
        engine: &engine,
        name,
        rootfs: &root,
        agent: crate::container::agent_path(&the_box.version.cmdline),
        shares: shared_dirs,
        agent_socket: &socket,
        network: spec_network,
        scratch: scratch_dir.as_deref(),
    };
    if ui.verbose > 0 {
        let shown: Vec<String> = spec
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        ui.detail(&format!("{} {}", engine.podman.display(), shown.join(" ")));
    }
    ui.info(&format!(
        "box {} {} as a container ({}), sharing by bind mounts",
        the_box.name,
        the_box.version.version,
        if engine.rootless {
            "rootless"
        } else {
            "privileged"
        }
    ));
    let started = Instant::now();
    let mut guest = crate::container::ContainerGuest::start(&spec, &run_dir.path("console.log"))?;
    let connected = (|| {
        let pending = || signals.pending();
        let stream = agent::accept(
            &listener,
            "agent",
            &mut guest.child,
            CONNECT_TIMEOUT,
            &pending,
        )?;
        let writer = stream
            .try_clone()
            .map_err(|e| Error::setup(format!("agent socket: {e}")))?;
        let (tx, events) = mpsc::channel();
        agent::spawn_reader(stream, tx, |e| e)?;
        Ok((writer, events))
    })();
    let agent_channel = match connected {
        Ok(channel) => channel,
        Err(e) => {
            let details = guest.console_tail();
            guest.stop();
            return Err(match e {
                Error::Interrupted(_) => e,
                other => Error::BoxFailed {
                    reason: format!(
                        "the container's agent did not connect ({other}); a box whose agent predates --container needs updating ('boxbuild box update') or rebuilding"
                    ),
                    details,
                },
            });
        }
    };
    timeline.mark("container");
    let place = JobPlace {
        mounts: Vec::new(),
        scratch_disk: false,
        scratch_dir: scratch_dir.is_some(),
        network,
        configure_network: false,
        host_network: spec_network == crate::container::Network::Host,
        console: None,
    };
    let job = job(opts, the_box, args, place, ca_certs);
    let session = Session {
        guest: Box::new(guest),
        agent: Some(agent_channel),
        timeline,
        started,
        console_stop: Arc::new(AtomicBool::new(false)),
        console_follower: None,
    };
    session.drive(opts, ui, &job, &args.target, signals)
}

struct Machine {
    profile: &'static ArchProfile,
    /// The kernel QEMU boots (the uncompressed one where there is one) and the initrd.
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    accel: Accel,
    memory_mib: u64,
    cpus: u32,
    /// What the box boots from: an overlay over the box disk, if the box has one.
    root_disk: Option<PathBuf>,
    /// The formatted scratch disk image, if the run has one.
    scratch: Option<PathBuf>,
    network: bool,
    /// The guest's console device name, e.g. ttyS0.
    console: String,
    protocol: Protocol,
    /// The kernel command line.
    cmdline: String,
}

/// What the agent is asked to do: the builder's argv (the box's command, with
/// placeholders filled in, then the user's arguments) and all it needs around it.
/// Where the job runs, as far as the job differs: the shares' guest mounts (none in a
/// container, whose shares are bind mounts), a scratch disk, the network, the console.
struct JobPlace {
    mounts: Vec<Mount>,
    scratch_disk: bool,
    scratch_dir: bool,
    network: bool,
    /// Whether the agent configures the network (in a VM) or the engine does.
    configure_network: bool,
    /// Whether the box shares the host's network (its loopback is the host's).
    host_network: bool,
    console: Option<String>,
}

fn job(
    opts: &BuildOptions,
    the_box: &ResolvedBox,
    args: &BuilderArgs,
    place: JobPlace,
    ca_certs: Vec<u8>,
) -> Job {
    let placeholder = |word: &str| -> Vec<u8> {
        match word {
            "{description}" => GUEST_DESCRIPTION.as_bytes().to_vec(),
            "{target}" => GUEST_TARGET.as_bytes().to_vec(),
            other => other.as_bytes().to_vec(),
        }
    };
    let mut argv: Vec<Vec<u8>> = the_box
        .settings
        .builder
        .iter()
        .map(|w| placeholder(w))
        .collect();
    argv.extend(args.rest.iter().map(|a| a.as_bytes().to_vec()));
    let mut env = vec![
        format!("BOXBUILD_DESCRIPTION={GUEST_DESCRIPTION}"),
        format!("BOXBUILD_TARGET={GUEST_TARGET}"),
    ];
    let mut mounts = place.mounts;
    if place.scratch_dir {
        env.push(format!("BOXBUILD_SCRATCH={}", scratch::GUEST_PATH));
    }
    if place.scratch_disk {
        env.push(format!("BOXBUILD_SCRATCH={}", scratch::GUEST_PATH));
        mounts.push(Mount {
            fstype: b"ext4".to_vec(),
            source: format!("serial={}", scratch::SERIAL).into_bytes(),
            target: scratch::GUEST_PATH.as_bytes().to_vec(),
            options: scratch::MOUNT_OPTIONS.as_bytes().to_vec(),
            readonly: false,
        });
    }
    if let Some(version) = &opts.kiwi_version {
        env.push(format!("BOXBUILD_KIWI_VERSION={version}"));
    }
    if place.network {
        env.extend(guest_setup::proxy_env(
            |name| std::env::var(name).ok(),
            place.host_network,
        ));
    }
    Job {
        argv,
        env: env.into_iter().map(String::into_bytes).collect(),
        mounts,
        workdir: GUEST_TARGET.as_bytes().to_vec(),
        network: (place.network && place.configure_network).then(guest_setup::user_network),
        ca_certs,
        debug_console: match (&place.console, opts.box_debug) {
            (Some(console), true) => format!("/dev/{console}").into_bytes(),
            _ => Vec::new(),
        },
        // Stamped as the job is sent (agent::send_job).
        host_time: None,
    }
}

/// A running VM and the channels to it. Dropping it stops QEMU: politely through QMP,
/// then by force, so every early return cleans up.
struct Session<'a> {
    /// The box itself: QEMU or a container.
    guest: Box<dyn Guest + 'a>,
    /// The agent's channel: writer and events; None for boxes without an agent.
    agent: Option<(std::os::unix::net::UnixStream, mpsc::Receiver<AgentEvent>)>,
    /// The host's start-up so far (QEMU's start included), for `-v`.
    timeline: Timeline,
    /// When the box was started.
    started: Instant,
    console_stop: Arc<AtomicBool>,
    console_follower: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.guest.stop();
        self.console_stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(follower) = self.console_follower.take() {
            let _ = follower.join();
        }
    }
}

fn bind(run_dir: &RunDir, name: &str) -> Result<(UnixListener, PathBuf)> {
    let path = run_dir.path(name);
    let listener = UnixListener::bind(&path)
        .map_err(|e| Error::setup(format!("cannot listen on {}: {e}", path.display())))?;
    Ok((listener, path))
}

impl<'a> Session<'a> {
    fn start(
        opts: &BuildOptions,
        ui: Ui,
        run_dir: &'a RunDir,
        machine: &Machine,
        share: &dyn ShareBackend,
        signals: &SignalWatch,
        mut timeline: Timeline,
    ) -> Result<Session<'a>> {
        let (qmp_listener, qmp_socket) = bind(run_dir, "qmp.sock")?;
        let with_agent = machine.protocol == Protocol::BoxbuildAgent;
        let agent_listener = match with_agent {
            true => Some(bind(run_dir, "agent.sock")?),
            false => None,
        };
        let spec = QemuSpec {
            profile: machine.profile,
            accel: machine.accel,
            machine: opts.machine.clone(),
            cpu: opts.cpu.clone(),
            memory_mib: machine.memory_mib,
            cpus: machine.cpus,
            kernel: machine.kernel.clone(),
            initrd: machine.initrd.clone(),
            cmdline: machine.cmdline.clone(),
            disk: machine.root_disk.clone(),
            scratch: machine.scratch.clone(),
            network: machine.network,
            console_log: run_dir.path("console.log"),
            console_on_terminal: opts.box_debug,
            agent_socket: agent_listener.as_ref().map(|(_, path)| path.clone()),
            virtconsole: !with_agent,
            qmp_socket,
            share_args: share.qemu_args(machine.profile, machine.memory_mib),
        };
        let args = spec.args();
        if ui.verbose > 0 {
            let shown: Vec<String> = args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            ui.detail(&format!(
                "{} {}",
                machine.profile.qemu_binary,
                shown.join(" ")
            ));
        }
        let console_stop = Arc::new(AtomicBool::new(false));
        // The plugin's boxes print the build on their console: it is the build's output.
        let console_target = match (opts.box_debug, with_agent, opts.box_console) {
            (true, _, _) => None,
            (false, false, _) => Some(output::Stream::Stdout),
            (false, true, true) => Some(output::Stream::Stderr),
            (false, true, false) => None,
        };
        let console_follower = console_target
            .map(|stream| {
                output::follow_console(spec.console_log.clone(), console_stop.clone(), stream)
            })
            .transpose()?;
        let started = Instant::now();
        let mut qemu = process::spawn(
            machine.profile.qemu_binary,
            machine.profile.debian_package,
            &args,
            &run_dir.path("qemu.log"),
            opts.box_debug,
        )?;
        // Until the Session exists, a failure must still take QEMU down. QEMU answers on
        // QMP only once it has set the machine up, so anything failing before that is
        // QEMU refusing to start: a set-up error in QEMU's own words.
        let connected = (|| {
            let pending = || signals.pending();
            let qmp_stream = agent::accept(
                &qmp_listener,
                "control",
                &mut qemu,
                CONNECT_TIMEOUT,
                &pending,
            )?;
            let control = qmp::Control::handshake(qmp_stream)
                .map_err(|e| Error::setup(format!("QMP handshake with QEMU failed: {e}")))?;
            let Some((agent_listener, _)) = &agent_listener else {
                return Ok((control, None));
            };
            let agent_stream = agent::accept(
                agent_listener,
                "agent",
                &mut qemu,
                CONNECT_TIMEOUT,
                &pending,
            )?;
            let agent_writer = agent_stream
                .try_clone()
                .map_err(|e| Error::setup(format!("agent socket: {e}")))?;
            let (tx, events) = mpsc::channel();
            agent::spawn_reader(agent_stream, tx, |e| e)?;
            Ok((control, Some((agent_writer, events))))
        })();
        let (control, agent) = match connected {
            Ok(connected) => {
                timeline.mark("qemu");
                connected
            }
            Err(e) => {
                let grace = match e {
                    Error::Interrupted(_) => Duration::ZERO,
                    _ => REFUSAL_GRACE,
                };
                process::stop(&mut qemu, grace);
                console_stop.store(true, std::sync::atomic::Ordering::SeqCst);
                if let Some(follower) = console_follower {
                    let _ = follower.join();
                }
                return Err(match e {
                    Error::Interrupted(_) => e,
                    other => refusal::error_from_log(
                        &run_dir.path("qemu.log"),
                        machine.profile.qemu_binary,
                        &other.to_string(),
                    ),
                });
            }
        };
        Ok(Session {
            guest: Box::new(VmGuest {
                run_dir,
                qemu,
                control: Some(control),
                accel: machine.accel,
            }),
            agent,
            timeline,
            started,
            console_stop,
            console_follower,
        })
    }

    /// Runs the build to its end and turns how it ended into an exit code.
    fn drive(
        mut self,
        opts: &BuildOptions,
        ui: Ui,
        job: &Job,
        target: &Path,
        signals: &SignalWatch,
    ) -> Result<u8> {
        let mut output: Option<BuildOutput> = None;
        let result = self.event_loop(opts, ui, job, target, signals, &mut output);
        if let (Err(e), Some(out)) = (&result, output.as_mut()) {
            out.stderr(format!("boxbuild: error: {e}\n").as_bytes());
        }
        let status = result?;
        match status {
            Status::Exited(code) => Ok(code.clamp(0, 255) as u8),
            Status::Signaled(sig) => {
                ui.info(&format!(
                    "the builder was killed by {}",
                    crate::error::signal_name(sig)
                ));
                Ok(128u8.saturating_add(sig as u8))
            }
            Status::AgentError(message) => Err(Error::BoxFailed {
                reason: message,
                details: String::new(),
            }),
        }
    }

    /// A box of KIWI's Python plugin: it runs kiwi by itself and powers off; the exit code
    /// is the `result.code` it wrote into the target dir during this run.
    fn drive_plugin(
        mut self,
        opts: &BuildOptions,
        target: &Path,
        started_at: std::time::SystemTime,
        signals: &SignalWatch,
    ) -> Result<u8> {
        let deadline = deadline(self.started, opts.timeout);
        let exit = loop {
            if let Some(sig) = signals.pending() {
                return Err(Error::Interrupted(sig));
            }
            if let Some(exit) = self.guest.try_wait() {
                break exit;
            }
            if let Some((when, limit)) = deadline {
                if Instant::now() > when {
                    return Err(Error::Timeout {
                        after: humantime::format_duration(limit).to_string(),
                        details: self.console_tail(),
                    });
                }
            }
            std::thread::sleep(TICK);
        };
        match plugin_box::read_result(target, started_at) {
            Ok(code) => Ok(code),
            Err(reason) => {
                let mut failure = self.guest.failure(exit);
                if let Error::BoxFailed { reason: r, .. } = &mut failure {
                    *r = format!("{reason} ({r})");
                }
                Err(failure)
            }
        }
    }

    fn console_tail(&self) -> String {
        self.guest.console_tail()
    }

    fn event_loop(
        &mut self,
        opts: &BuildOptions,
        ui: Ui,
        job: &Job,
        target: &Path,
        signals: &SignalWatch,
        output: &mut Option<BuildOutput>,
    ) -> Result<Status> {
        // Cleared and stopped on every return, before any error is written.
        let status_line = StatusLine::start(ui, opts.box_console || opts.box_debug, self.started);
        let deadline = deadline(self.started, opts.timeout);
        let boot_deadline = self.started + self.guest.greeting_timeout();
        let mut greeted = false;
        let mut status: Option<(Status, Instant)> = None;
        let mut agent_closed = false;
        let mut qemu_exited: Option<(std::process::ExitStatus, Instant)> = None;
        let mut boot_marks: Option<(Vec<BootMark>, Instant)> = None;
        loop {
            let Some((agent_writer, events)) = self.agent.as_mut() else {
                return Err(Error::setup("the box has no agent channel"));
            };
            let received = events.recv_timeout(TICK);
            let hold = received.as_ref().ok().map(|event| status_line.hold(event));
            match received {
                Ok(AgentEvent::Hello { version, agent }) => {
                    if !(OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
                        return Err(Error::BoxFailed {
                            reason: format!(
                                "the box's agent ({agent}) speaks protocol {version}, this boxbuild speaks {OLDEST_PROTOCOL_VERSION} to {PROTOCOL_VERSION}; update the box or boxbuild"
                            ),
                            details: String::new(),
                        });
                    }
                    ui.detail(&format!(
                        "agent {agent} ready {:.2}s after QEMU started",
                        self.started.elapsed().as_secs_f64()
                    ));
                    greeted = true;
                    *output = Some(BuildOutput::create(target)?);
                    agent::send_job(agent_writer, job, version).map_err(|e| Error::BoxFailed {
                        reason: format!("cannot send the job to the agent: {e}"),
                        details: self.console_tail(),
                    })?;
                }
                Ok(AgentEvent::Log(line)) => ui.detail(&format!("agent: {line}")),
                Ok(AgentEvent::BootMarks(marks, received)) => boot_marks = Some((marks, received)),
                Ok(AgentEvent::Started(received)) => {
                    if ui.verbose > 0 {
                        // The marks come just before the start; their arrival is the
                        // builder's start as the host saw it.
                        let (marks, at) = match &boot_marks {
                            Some((marks, at)) => (marks.as_slice(), *at),
                            None => (&[][..], received),
                        };
                        let (phases, total) = self.timeline.phases(marks, at);
                        ui.detail(&startup::format(&phases, total));
                    }
                }
                Ok(AgentEvent::Stdout(bytes)) => {
                    if let Some(out) = output.as_mut() {
                        out.stdout(&bytes)
                    }
                }
                Ok(AgentEvent::Stderr(bytes)) => {
                    if let Some(out) = output.as_mut() {
                        out.stderr(&bytes)
                    }
                }
                Ok(AgentEvent::Status(s)) => status = Some((s, Instant::now())),
                Ok(AgentEvent::Closed(error)) => {
                    if let Some(error) = error {
                        ui.detail(&format!("agent channel: {error}"));
                    }
                    agent_closed = true
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => agent_closed = true,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            drop(hold);
            if agent_closed && status.is_none() && qemu_exited.is_none() {
                // The channel can only close early if QEMU is going down; give it a moment.
                std::thread::sleep(TICK);
            }
            if qemu_exited.is_none() {
                if let Some(exit) = self.guest.try_wait() {
                    qemu_exited = Some((exit, Instant::now()));
                }
            }
            if let Some(sig) = signals.pending() {
                return Err(Error::Interrupted(sig));
            }
            if let Some((exit, at)) = qemu_exited {
                // Frames still in flight arrive before the channel reports its end.
                if agent_closed || at.elapsed() > Duration::from_secs(2) {
                    return match status {
                        Some((s, _)) => Ok(s),
                        None => Err(self.guest.failure(exit)),
                    };
                }
            }
            if let Some((s, at)) = &status {
                // --box-debug: the box stays up until the user leaves its shell.
                if !opts.box_debug && at.elapsed() > POWEROFF_GRACE {
                    let _pause = status_line.pause();
                    ui.detail("the box did not power off after the build; stopping it");
                    return Ok(s.clone());
                }
            }
            if let (Some((when, limit)), None) = (deadline, &status) {
                if Instant::now() > when {
                    return Err(Error::Timeout {
                        after: humantime::format_duration(limit).to_string(),
                        details: self.console_tail(),
                    });
                }
            }
            if !greeted && Instant::now() > boot_deadline {
                return Err(Error::BoxFailed {
                    reason: format!(
                        "the agent did not answer within {}s of power-on",
                        self.guest.greeting_timeout().as_secs()
                    ),
                    details: self.console_tail(),
                });
            }
        }
    }
}

/// A QEMU VM as the box: stopped through QMP, then by force.
struct VmGuest<'a> {
    run_dir: &'a RunDir,
    qemu: Child,
    control: Option<qmp::Control>,
    accel: Accel,
}

impl Guest for VmGuest<'_> {
    fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.qemu.try_wait().ok().flatten()
    }

    fn stop(&mut self) {
        if let Ok(None) = self.qemu.try_wait() {
            if let Some(control) = self.control.as_mut() {
                let _ = control.quit();
            }
            process::stop(&mut self.qemu, QUIT_GRACE);
        }
    }

    fn console_tail(&self) -> String {
        output::tail(&self.run_dir.path("console.log"), CONSOLE_TAIL_LINES)
    }

    fn greeting_timeout(&self) -> Duration {
        boot_timeout(self.accel)
    }

    /// Why the box ended without a status, as precisely as the logs tell.
    fn failure(&self, exit: std::process::ExitStatus) -> Error {
        let console = output::tail(&self.run_dir.path("console.log"), 200);
        let reason = if console.contains("Kernel panic") {
            "the guest kernel panicked before the builder reported a status".to_string()
        } else if !exit.success() {
            format!("QEMU exited with {exit}")
        } else {
            "the box powered off without reporting the builder's status".to_string()
        };
        let mut details = self.console_tail();
        if !exit.success() {
            details.push_str(&output::tail(&self.run_dir.path("qemu.log"), 5));
        }
        Error::BoxFailed { reason, details }
    }
}
