//! The box as a container: everything container-only that a build does before its driver
//! takes over. A box with the boxbuild agent runs its unpacked disk (`rootfs`) with the
//! agent as the entrypoint, on a unix socket bind-mounted in; a box of KIWI's Python
//! plugin runs its container image with the plugin's container protocol:
//! `/container.cmdline` holds `kiwi="..."` and the `_V_` variables, the description is at
//! `/description`, the target at `/bundle`, and the image leaves `result.code` there.

use super::{engine, image, kiwi_type, rootfs, ContainerGuest, Network, Root, Spec, Volume};
use crate::boxes::catalog::Protocol;
use crate::job::plugin;
use crate::job::JobPlace;
use crate::job::{self, network};
use crate::runtime::console;
use crate::runtime::rundir::RunDir;
use crate::runtime::session::{self, Session};
use crate::runtime::{Launched, Plan};
use crate::sys::error::{Error, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// GNU tar for a rootless container, and where it finds the box's own tar.
const ROOTLESS_TAR: &str = include_str!("rootless-tar.sh");
const REAL_TAR: &str = "/usr/lib/boxbuild/tar";
/// Where the plugin's container images find their command line.
const PLUGIN_CMDLINE: &str = "/container.cmdline";
/// Where the plugin's container images write their results.
const PLUGIN_BUNDLE: &str = "/bundle";

/// Starts the planned box as a container. Errors (one line each, before anything runs):
/// an option that needs a VM, a box of another architecture, a box with no root to run,
/// an image type a rootless container cannot build, a missing engine.
pub fn launch(plan: Plan) -> Result<Launched> {
    let Plan {
        opts,
        ui,
        the_box,
        library,
        signals,
        mut timeline,
        shares,
        scratch_mib,
        network,
        plugin,
        args,
        ..
    } = plan;
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
    if the_box.version.arch != std::env::consts::ARCH {
        return Err(Error::setup(format!(
            "--container runs boxes of this machine's architecture ({}) only, this is {}; drop --container to emulate it in a VM",
            std::env::consts::ARCH,
            the_box.version.arch
        )));
    }
    let is_plugin = the_box.settings.protocol == Protocol::KiwiBoxedPlugin;
    let image = the_box.version.container.as_deref();
    let root = match (is_plugin, image, &the_box.disk) {
        (true, Some(image), _) => Root::Image(image),
        (true, None, _) => {
            return Err(Error::setup(format!(
                "--container: box {} speaks the Python plugin's protocol and names no container image ('container:' in kiwi_boxed_plugin.yml); drop --container",
                the_box.name
            )))
        }
        (false, _, Some(disk)) => Root::Dir(disk),
        (false, _, None) => {
            return Err(Error::setup(format!(
                "--container: box {} has no disk to take a root file system from; drop --container",
                the_box.name
            )))
        }
    };
    let engine = engine::find()?;
    if engine.rootless {
        let wanted = kiwi_type::image_type(&args.rest, &args.description);
        if let Some(wanted) = wanted.filter(|t| !kiwi_type::WITHOUT_LOOP.contains(&t.as_str())) {
            return Err(Error::setup(format!(
                "--container as a normal user cannot build the image type '{wanted}': it needs loop devices, which a rootless container cannot have; drop --container to build it in a VM, or run boxbuild as root"
            )));
        }
    }
    // Rendered before anything is pulled or started: refused arguments cost nothing.
    let plugin_line = plugin
        .as_ref()
        .map(|request| {
            plugin::cmdline(&plugin::Request {
                base: "",
                backend: None,
                ..request.clone()
            })
        })
        .transpose()?;
    super::sweep(&engine);
    let root = match root {
        Root::Dir(disk) => {
            let root = rootfs::prepare(library.store.root(), disk, ui, signals)?;
            timeline.mark("root file system");
            RootHeld::Dir(root)
        }
        Root::Image(reference) => {
            let stamps = library.store.root().join("images");
            image::ensure(
                &engine,
                reference,
                &stamps,
                |age| library.due(age).unwrap_or(true),
                ui,
            )?;
            timeline.mark("container image");
            RootHeld::Image(reference.to_string())
        }
    };
    let run_dir = RunDir::create()?;
    ui.detail(&format!("run dir {}", run_dir.root().display()));
    let spec_network = super::network(&engine, network);
    if spec_network == Network::Host {
        ui.warn("the container shares the host's network: /dev/net/tun is not open to this user, and slirp4netns needs it; a builder that mounts sysfs (kiwi does) fails so: make /dev/net/tun usable (mode 0666, most distributions' default) or run as root");
    }
    let mut volumes = Vec::new();
    let mut held: Vec<Box<dyn std::any::Any>> = Vec::new();
    if scratch_mib.is_some() {
        let dir = run_dir.path("scratch");
        std::fs::create_dir(&dir)
            .map_err(|e| Error::setup(format!("cannot create {}: {e}", dir.display())))?;
        if engine.rootless {
            held.push(Box::new(ScratchInNamespace {
                podman: engine.podman.clone(),
                dir: dir.clone(),
            }));
        }
        volumes.push(Volume::new(dir, crate::job::scratch::GUEST_PATH, false));
    }
    if let (true, RootHeld::Dir(root)) = (engine.rootless, &root) {
        volumes.extend(rootless_tar(&root.dir, &run_dir)?);
    }
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
    let host_network = spec_network == Network::Host;
    let mut agent_listener = None;
    let (command, env) = match &plugin_line {
        None => {
            // The agent: the box's own, on a socket in place of the VM's serial port.
            for share in shares {
                volumes.push(Volume::new(&share.host, &share.guest, share.readonly));
            }
            let (listener, socket) = session::bind(&run_dir, "agent.sock")?;
            agent_listener = Some(listener);
            volumes.push(Volume::new(socket, super::AGENT_SOCKET, false));
            let agent = super::agent_path(&the_box.version.cmdline);
            let command = vec![agent.into(), "--socket".into(), super::AGENT_SOCKET.into()];
            (command, Vec::new())
        }
        Some(line) => {
            // The plugin's image: its own entrypoint reads the command line file.
            let file = run_dir.path("container.cmdline");
            std::fs::write(&file, format!("{}\n", line.trim()))
                .map_err(|e| Error::setup(format!("cannot write {}: {e}", file.display())))?;
            volumes.push(Volume::new(file, PLUGIN_CMDLINE, true));
            for share in shares {
                let guest = match share.tag.as_str() {
                    plugin::TAG_DESCRIPTION => job::GUEST_DESCRIPTION.into(),
                    plugin::TAG_BUNDLE => PLUGIN_BUNDLE.into(),
                    // --shared-path: where the plugin's images expect it, at its own path.
                    _ => share.host.clone(),
                };
                volumes.push(Volume::new(&share.host, guest, share.readonly));
            }
            let env = match network {
                true => network::proxy_env(|n| std::env::var(n).ok(), host_network),
                false => Vec::new(),
            };
            (Vec::new(), env)
        }
    };
    let spec = Spec {
        engine: &engine,
        name,
        root: match &root {
            RootHeld::Dir(root) => Root::Dir(&root.dir),
            RootHeld::Image(reference) => Root::Image(reference),
        },
        command,
        volumes,
        network: spec_network,
        env,
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
    let log = run_dir.path("console.log");
    // The plugin's images print the build: it is the build's output, as in its VMs.
    let console = match plugin_line {
        Some(_) => {
            let stop = Arc::new(AtomicBool::new(false));
            let follower =
                console::follow_console(log.clone(), stop.clone(), console::Stream::Stdout)?;
            Some((stop, follower))
        }
        None => None,
    };
    let started = Instant::now();
    let mut guest = match ContainerGuest::start(&spec, &log) {
        Ok(guest) => guest,
        Err(e) => {
            if let Some((stop, follower)) = console {
                stop.store(true, Ordering::SeqCst);
                let _ = follower.join();
            }
            return Err(e);
        }
    };
    let agent = match &agent_listener {
        None => None,
        Some(listener) => match session::connect_agent(listener, &mut guest.child, signals) {
            Ok(channel) => Some(channel),
            Err(e) => {
                let details = crate::runtime::Guest::console_tail(&guest);
                crate::runtime::Guest::stop(&mut guest);
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
        },
    };
    timeline.mark("container");
    if let RootHeld::Dir(root) = root {
        held.push(Box::new(root));
    }
    let place = JobPlace {
        mounts: Vec::new(),
        scratch_disk: false,
        scratch_dir: scratch_mib.is_some(),
        network,
        configure_network: false,
        host_network,
        console: None,
    };
    Ok(Launched {
        session: Session::new(Box::new(guest), agent, timeline, started).with_console(console),
        place,
        _held: held,
        _run_dir: run_dir,
    })
}

/// The box's GNU tar, wrapped for a rootless container (`rootless-tar.sh`): the wrapper
/// over `/usr/bin/tar`, the real one beside it. None for a box without GNU tar there.
fn rootless_tar(root: &Path, run_dir: &RunDir) -> Result<Vec<Volume>> {
    let real = root.join("usr/bin/tar");
    if !std::fs::symlink_metadata(&real).is_ok_and(|m| m.is_file()) {
        return Ok(Vec::new());
    }
    let wrapper = run_dir.path("tar");
    std::fs::write(&wrapper, ROOTLESS_TAR)
        .and_then(|()| std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| Error::setup(format!("cannot write {}: {e}", wrapper.display())))?;
    Ok(vec![
        Volume::new(real, REAL_TAR, true),
        Volume::new(wrapper, "/usr/bin/tar", true),
    ])
}

/// A rootless container's scratch directory. The builder leaves files there owned by
/// other users of the container (subordinate ids on the host) when it is stopped midway,
/// which the user cannot remove; dropped before the run dir, this removes them from
/// inside the user namespace (`podman unshare`).
struct ScratchInNamespace {
    podman: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Drop for ScratchInNamespace {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.podman)
            .arg("unshare")
            .args(["rm", "-rf", "--one-file-system"])
            .arg(&self.dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The root the container runs, owned for the launch.
enum RootHeld {
    Dir(rootfs::Root),
    Image(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs the wrapper with a stand-in for the real tar that prints `stderr` and exits
    /// with `code`; returns the wrapper's exit code and what it printed on stderr.
    fn wrapped(stderr: &str, code: i32) -> (i32, String) {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("tar");
        std::fs::write(
            &fake,
            format!("#!/bin/sh\nprintf '%s' '{stderr}' >&2\necho data\nexit {code}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = ROOTLESS_TAR.replace(REAL_TAR, fake.to_str().unwrap());
        let out = Command::new("sh")
            .args(["-c", &script, "tar", "-x"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "data\n");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn only_the_proc_and_sys_mount_points_are_forgiven() {
        let mount_points = "/usr/lib/boxbuild/tar: ./proc: Cannot utime: Operation not permitted\n\
/usr/lib/boxbuild/tar: ./proc: Cannot change ownership to uid 0, gid 0: Operation not permitted\n\
/usr/lib/boxbuild/tar: ./sys: Cannot change mode to rwxr-xr-x: Operation not permitted\n\
/usr/lib/boxbuild/tar: Exiting with failure status due to previous errors\n";
        assert_eq!(wrapped(mount_points, 2), (0, String::new()));
        // Anything else stays a failure, reported as tar gave it.
        let other = "/usr/lib/boxbuild/tar: ./etc: Cannot utime: Operation not permitted\n";
        assert_eq!(wrapped(other, 2), (2, other.to_string()));
        let mixed =
            format!("{mount_points}tar: ./usr/bin/x: Cannot open: No space left on device\n");
        assert_eq!(wrapped(&mixed, 2).0, 2);
        assert_eq!(wrapped(mount_points, 1).0, 1);
        assert_eq!(wrapped("", 0), (0, String::new()));
        assert_eq!(wrapped("", 2).0, 2);
    }
}
