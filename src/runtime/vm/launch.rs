//! The box as a QEMU VM: choose the accelerator, make the run dir, the overlay (or the
//! persistent layer) and the scratch disk, start the share helpers and QEMU, and wait for
//! QEMU's control socket and the agent's. Everything VM-only that a build does before its
//! driver takes over is here.

use crate::boxes::catalog::Protocol;
use crate::boxes::store::overlay;
use crate::boxes::store::{Key, LayerState};
use crate::job::plugin;
use crate::job::JobPlace;
use crate::runtime::console;
use crate::runtime::rundir::{self, RunDir};
use crate::runtime::scratch;
use crate::runtime::session::{self, Session, CONNECT_TIMEOUT};
use crate::runtime::vm::accel::{self, Accel};
use crate::runtime::vm::qemu::QemuSpec;
use crate::runtime::vm::{qmp, refusal};
use crate::runtime::{Guest, Launched, Plan};
use crate::sys::error::{Error, Result};
use crate::sys::process;
use std::any::Any;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a QEMU that failed to start gets to finish its own exit (and its message).
const REFUSAL_GRACE: Duration = Duration::from_secs(2);
/// How long QEMU gets to exit after a QMP quit before it is killed.
const QUIT_GRACE: Duration = Duration::from_secs(3);
const CONSOLE_TAIL_LINES: usize = 15;

/// Kernel parameters that shorten any box's boot under emulation and change nothing a
/// build relies on (docs/design.md, "What was cut"): no crypto self-tests of the kernel's
/// own algorithms (a FIPS kernel ignores it and tests), no write-protection of the
/// kernel's read-only data for a kernel that lives for one build.
const FAST_BOOT: &[&str] = &["cryptomgr.notests", "rodata=off"];

/// The box's kernel command line with the `FAST_BOOT` parameters it does not set itself
/// (by name: a box's own `rodata=on` stays).
fn with_fast_boot(cmdline: &str) -> String {
    let mut line = cmdline.trim().to_string();
    for word in FAST_BOOT {
        let name = word.split('=').next().unwrap_or(word);
        let set = cmdline
            .split_whitespace()
            .any(|w| w.split('=').next() == Some(name));
        if !set {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    line
}

/// How long the box may take from power-on to the agent's greeting.
fn boot_timeout(accel: Accel) -> Duration {
    match accel {
        Accel::Kvm => Duration::from_secs(120),
        Accel::Tcg => Duration::from_secs(600),
    }
}

/// Starts the planned box as a VM. Errors: QEMU refusing the configuration (in its own
/// words), a missing helper, a run dir or disk that cannot be made; nothing is left.
pub fn launch(plan: Plan) -> Result<Launched> {
    let Plan {
        opts,
        ui,
        the_box,
        library,
        signals,
        mut timeline,
        profile,
        shares: _,
        args: _,
        mut share_backend,
        memory_mib,
        cpus,
        scratch_mib,
        network,
        plugin,
    } = plan;
    let arch = the_box.version.arch.as_str();
    let cmdline = match &plugin {
        // The plugin's boxes take the arguments on the kernel command line; refused
        // arguments stop the run before anything boots.
        Some(request) => plugin::cmdline(&plugin::Request {
            base: &with_fast_boot(request.base),
            ..request.clone()
        })?,
        None => with_fast_boot(&the_box.version.cmdline),
    };
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
        && plugin.is_none()
        && !hint.exists()
        && crate::runtime::container::engine::on_path("podman").is_some()
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
                crate::job::scratch::GUEST_PATH
            ));
            Some(path)
        }
        None => None,
    };
    let mut held: Vec<Box<dyn Any>> = Vec::new();
    // The box disk is only read: writes go to a per-run overlay, or with --no-snapshot
    // to the box version's persistent layer (held for the whole run).
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
            ui.info(match layer.state {
                LayerState::Created => {
                    "--no-snapshot: changes to the box are kept in a new persistent layer"
                }
                LayerState::Reused => {
                    "--no-snapshot: using the box's persistent layer from earlier runs"
                }
                LayerState::Reset => {
                    "--no-snapshot: the box changed, its persistent layer starts afresh"
                }
            });
            ui.detail(&format!("persistent layer {}", layer.path.display()));
            let path = layer.path.clone();
            held.push(Box::new(layer));
            timeline.mark("layer");
            Some(path)
        }
        (None, true) => {
            ui.warn("--no-snapshot has no effect: this box has no disk");
            None
        }
        (None, false) => None,
    };
    let with_agent = the_box.settings.protocol == Protocol::BoxbuildAgent;
    // Stopped after QEMU (held), before the run dir is removed.
    let helpers = share_backend.prepare(&run_dir)?;
    held.push(Box::new(helpers));
    timeline.mark("share helpers");
    let place = JobPlace {
        mounts: share_backend.mounts(),
        scratch_disk: scratch.is_some(),
        scratch_dir: false,
        network,
        configure_network: true,
        host_network: false,
        console: Some(console.clone()),
    };

    let (qmp_listener, qmp_socket) = session::bind(&run_dir, "qmp.sock")?;
    let agent_listener = match with_agent {
        true => Some(session::bind(&run_dir, "agent.sock")?),
        false => None,
    };
    let spec = QemuSpec {
        profile,
        accel,
        machine: opts.machine.clone(),
        cpu: opts.cpu.clone(),
        memory_mib,
        cpus,
        kernel: the_box.boot_kernel().to_path_buf(),
        initrd: the_box.initrd.clone(),
        cmdline,
        firmware: profile.firmware(opts.machine.as_deref()),
        disk: root_disk,
        scratch,
        network,
        console_log: run_dir.path("console.log"),
        console_on_terminal: opts.box_debug,
        agent_socket: agent_listener.as_ref().map(|(_, path)| path.clone()),
        virtconsole: !with_agent,
        qmp_socket,
        share_args: share_backend.qemu_args(profile, memory_mib),
    };
    let args = spec.args();
    if ui.verbose > 0 {
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        ui.detail(&format!("{} {}", profile.qemu_binary, shown.join(" ")));
    }
    // The plugin's boxes print the build on their console: it is the build's output.
    let console_target = match (opts.box_debug, with_agent, opts.box_console) {
        (true, _, _) => None,
        (false, false, _) => Some(console::Stream::Stdout),
        (false, true, true) => Some(console::Stream::Stderr),
        (false, true, false) => None,
    };
    let console_stop = Arc::new(AtomicBool::new(false));
    let console_follower = console_target
        .map(|stream| {
            console::follow_console(spec.console_log.clone(), console_stop.clone(), stream)
                .map(|follower| (console_stop.clone(), follower))
        })
        .transpose()?;
    let started = Instant::now();
    let mut qemu = process::spawn(
        profile.qemu_binary,
        profile.debian_package,
        &args,
        &run_dir.path("qemu.log"),
        opts.box_debug,
    )?;
    // Until the Session exists, a failure must still take QEMU down. QEMU answers on QMP
    // only once it has set the machine up, so anything failing before that is QEMU
    // refusing to start: a set-up error in QEMU's own words.
    let connected = (|| {
        let pending = || signals.pending();
        let qmp_stream = crate::job::wire::accept(
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
        let agent = session::connect_agent(agent_listener, &mut qemu, signals)?;
        Ok((control, Some(agent)))
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
            if let Some((stop, follower)) = console_follower {
                stop.store(true, Ordering::SeqCst);
                let _ = follower.join();
            }
            return Err(match e {
                Error::Interrupted(_) => e,
                other => refusal::error_from_log(
                    &run_dir.path("qemu.log"),
                    profile.qemu_binary,
                    &other.to_string(),
                ),
            });
        }
    };
    let guest = VmGuest {
        console_log: run_dir.path("console.log"),
        qemu_log: run_dir.path("qemu.log"),
        qemu,
        control: Some(control),
        accel,
    };
    Ok(Launched {
        session: Session::new(Box::new(guest), agent, timeline, started)
            .with_console(console_follower),
        place,
        _held: held,
        _run_dir: run_dir,
    })
}

/// A QEMU VM as the box: stopped through QMP, then by force.
struct VmGuest {
    console_log: PathBuf,
    qemu_log: PathBuf,
    qemu: Child,
    control: Option<qmp::Control>,
    accel: Accel,
}

impl Guest for VmGuest {
    fn try_wait(&mut self) -> Option<ExitStatus> {
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
        console::tail(&self.console_log, CONSOLE_TAIL_LINES)
    }

    fn greeting_timeout(&self) -> Duration {
        boot_timeout(self.accel)
    }

    /// Why the box ended without a status, as precisely as the logs tell.
    fn failure(&self, exit: ExitStatus) -> Error {
        let console = console::tail(&self.console_log, 200);
        let reason = if console.contains("Kernel panic") {
            "the guest kernel panicked before the builder reported a status".to_string()
        } else if !exit.success() {
            format!("QEMU exited with {exit}")
        } else {
            "the box powered off without reporting the builder's status".to_string()
        };
        let mut details = self.console_tail();
        if !exit.success() {
            details.push_str(&console::tail(&self.qemu_log, 5));
        }
        Error::BoxFailed { reason, details }
    }
}

#[cfg(test)]
mod tests {
    use super::with_fast_boot;

    #[test]
    fn fast_boot_parameters_are_added_unless_the_box_sets_them() {
        assert_eq!(
            with_fast_boot("console=hvc0 root=/dev/vda3"),
            "console=hvc0 root=/dev/vda3 cryptomgr.notests rodata=off"
        );
        assert_eq!(
            with_fast_boot("root=/dev/vda rodata=on cryptomgr.notests"),
            "root=/dev/vda rodata=on cryptomgr.notests"
        );
        assert_eq!(with_fast_boot(""), "cryptomgr.notests rodata=off");
    }
}
