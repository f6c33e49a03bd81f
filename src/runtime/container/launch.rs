//! The box as a container: everything container-only that a build does before its driver
//! takes over. A box with the boxbuild agent runs its unpacked disk (`rootfs`) with the
//! agent as the entrypoint, on a unix socket bind-mounted in; a box of KIWI's Python
//! plugin runs its container image with the plugin's container protocol:
//! `/container.cmdline` holds `kiwi="..."` and the `_V_` variables, the description is at
//! `/description`, the target at `/bundle`, and the image leaves `result.code` there.

use super::{engine, image, kernel, kiwi_type, rootfs, ContainerBox, Network, Root, Spec, Volume};
use crate::boxes::catalog::Protocol;
use crate::boxes::store::Bucket;
use crate::job::plugin;
use crate::job::JobPlace;
use crate::job::{self, network};
use crate::runtime::binfmt;
use crate::runtime::console;
use crate::runtime::rundir::RunDir;
use crate::runtime::session::{self, Session};
use crate::runtime::{ContainerSettings, Launched, Plan};
use crate::sys::error::{Error, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// GNU tar for a rootless container, and where it finds the box's own tar.
const ROOTLESS_TAR: &str = include_str!("rootless-tar.sh");
const REAL_TAR: &str = "/usr/lib/boxbuild/tar";
/// mount and umount for a rootless container on the host's network, and where they find
/// the box's own.
const ROOTLESS_MOUNT: &str = include_str!("rootless-mount.sh");
/// Where the plugin's container images find their command line.
const PLUGIN_CMDLINE: &str = "/container.cmdline";
/// Where the plugin's container images write their results.
const PLUGIN_BUNDLE: &str = "/bundle";

/// Starts the planned box as a container. Errors (one line each, before anything runs):
/// a box of another architecture without a qemu-user handler, a box with no root to run,
/// an image type a rootless container cannot build, a missing engine.
pub fn launch(plan: Plan, container: &ContainerSettings) -> Result<Launched> {
    let Plan {
        settings,
        ui,
        ready_box,
        library,
        signals,
        mut timeline,
        shares,
        plugin,
        args,
    } = plan;
    let network = settings.network;
    // Another architecture's binaries run through the host's qemu-user (binfmt_misc).
    let arch = ready_box.version.arch.as_str();
    let foreign = arch != std::env::consts::ARCH;
    if foreign {
        let handler = binfmt::check(arch)?;
        ui.detail(&format!(
            "{arch} binaries run through the binfmt_misc handler {handler}"
        ));
    }
    let is_plugin = ready_box.settings.protocol == Protocol::KiwiBoxedPlugin;
    let image = ready_box.version.container.as_deref();
    let root = match (is_plugin, image, &ready_box.disk) {
        (true, Some(image), _) => Root::Image(image),
        (true, None, _) => {
            return Err(Error::setup(format!(
                "--container: box {} speaks the Python plugin's protocol and names no container image ('container:' in kiwi_boxed_plugin.yml); drop --container",
                ready_box.name
            )))
        }
        (false, _, Some(disk)) => Root::Dir(disk),
        (false, _, None) => {
            return Err(Error::setup(format!(
                "--container: box {} has no disk to take a root file system from; drop --container",
                ready_box.name
            )))
        }
    };
    if let Some(request) = kiwi_type::requested(&args.rest, &args.description) {
        host_kernel_can_build(&request)?;
    }
    let engine = engine::find()?;
    let (memory_mib, cpus) = match (container.memory_mib, container.cpus) {
        (None, None) => (None, None),
        _ if engine.rootless && !super::cgroup_v2_only() => {
            ui.warn("--box-memory and --box-smp-cpus are not applied: a rootless container gets no resource limits on a host with cgroups v1 or hybrid cgroups (run as root, or on a cgroups v2 host)");
            (None, None)
        }
        limits => limits,
    };
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
            let stamps = library.store.bucket(Bucket::Images);
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
    let mut volumes = Vec::new();
    let mut held: Vec<Box<dyn std::any::Any>> = Vec::new();
    if settings.scratch_mib.is_some() {
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
        if spec_network == Network::Host {
            volumes.extend(rootless_mount(&root.dir, &run_dir)?);
        }
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
            let agent = super::agent_path(&ready_box.version.cmdline);
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
    // Every host path as podman can take it; a path it cannot is reached through an alias.
    let volumes = volumes
        .into_iter()
        .enumerate()
        .map(|(i, volume)| {
            if !super::mountable(&volume.guest) {
                return Err(Error::setup(format!(
                    "--container cannot mount {} in the box: podman passes mount paths as UTF-8 text; drop --container to share it with a VM",
                    volume.guest.display()
                )));
            }
            let host = podman_path(&volume.host, super::mountable, &run_dir, &format!("mount-{i}"))?;
            Ok(Volume { host, ..volume })
        })
        .collect::<Result<Vec<_>>>()?;
    let root_dir = match &root {
        RootHeld::Dir(root) => Some(podman_path(
            &root.dir,
            super::overlayable,
            &run_dir,
            "root",
        )?),
        RootHeld::Image(_) => None,
    };
    if engine.rootless {
        let mut paths: Vec<&Path> = volumes.iter().map(|v| v.host.as_path()).collect();
        paths.extend(root_dir.as_deref());
        podman_sees(&engine, &paths)?;
        // What the builder chowns in a writable share belongs to the caller afterwards.
        for share in shares.iter().filter(|s| !s.readonly) {
            held.push(Box::new(OwnedByCaller {
                podman: engine.podman.clone(),
                dir: share.host.clone(),
            }));
        }
    }
    // Said once every refusal is behind: a refused build prints its one line only.
    if spec_network == Network::Host {
        ui.warn("the container shares the host's network: /dev/net/tun is not open to this user, and slirp4netns needs it for a network of the container's own (docs/container.md, \"Network\")");
    }
    let spec = Spec {
        engine: &engine,
        name,
        root: match (&root, &root_dir) {
            (_, Some(dir)) => Root::Dir(dir),
            (RootHeld::Image(reference), None) => Root::Image(reference),
            (RootHeld::Dir(root), None) => Root::Dir(&root.dir),
        },
        command,
        volumes,
        network: spec_network,
        env,
        memory_mib,
        cpus,
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
        "box {} {} ({arch}{}) as a container ({}), {}, sharing by bind mounts",
        ready_box.name,
        ready_box.version.version,
        if foreign { ", through qemu-user" } else { "" },
        if engine.rootless {
            "rootless"
        } else {
            "privileged"
        },
        super::limits_text(memory_mib, cpus),
    ));
    let log = run_dir.path("console.log");
    // The plugin's images print the build: it is the build's output, as in its VMs.
    // With --box-console, an agent box's own output (the agent's log) goes to stderr.
    let console_stream = match (&plugin_line, container.console) {
        (Some(_), _) => Some(console::Stream::Stdout),
        (None, true) => Some(console::Stream::Stderr),
        (None, false) => None,
    };
    let console = match console_stream {
        Some(stream) => {
            let stop = Arc::new(AtomicBool::new(false));
            let follower = console::follow_console(log.clone(), stop.clone(), stream)?;
            Some((stop, follower))
        }
        None => None,
    };
    let started = Instant::now();
    let mut guest = match ContainerBox::start(&spec, &log) {
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
                use crate::runtime::session::RunningBox;
                let ended = guest.try_wait();
                let details = guest.console_tail();
                guest.stop();
                return Err(match (e, ended) {
                    (e @ Error::Interrupted(_), _) => e,
                    // The engine ended before the agent could connect: podman's own
                    // failure where it reported one.
                    (_, Some(exit)) => guest.failure(exit),
                    (other, None) => Error::BoxFailed {
                        reason: format!("the box's agent did not connect ({other})"),
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
        scratch_dir: settings.scratch_mib.is_some(),
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

/// Refuses a type whose file systems the host's kernel lacks: in a container the builder
/// mounts them with the host's kernel. Errors: one line naming the missing file system.
fn host_kernel_can_build(request: &kiwi_type::Request) -> Result<()> {
    let Some(host) = kernel::Filesystems::of_host() else {
        return Ok(());
    };
    match kiwi_type::needs(request, std::env::consts::ARCH)
        .into_iter()
        .find(|need| !host.has(need.filesystem))
    {
        Some(need) => Err(Error::setup(format!(
            "--container cannot build {}: it mounts a {} file system, which this host's kernel does not have (not in /proc/filesystems, no module), and a container's builder uses the host's kernel; drop --container to build it in a VM, whose kernel is the box's",
            need.why, need.filesystem
        ))),
        None => Ok(()),
    }
}

/// `path` as podman can take it (`fits`): the path itself, or a symlink named `name` in
/// the run dir that points at it (the kernel follows it when it mounts). Errors: the run
/// dir's own path does not fit either.
fn podman_path(
    path: &Path,
    fits: fn(&Path) -> bool,
    run_dir: &RunDir,
    name: &str,
) -> Result<PathBuf> {
    if fits(path) {
        return Ok(path.to_path_buf());
    }
    let alias = run_dir.path(name);
    if !fits(&alias) {
        return Err(Error::setup(format!(
            "--container cannot hand {} to podman, nor an alias of it in the run dir {}: set TMPDIR to a plain path such as /tmp",
            path.display(),
            run_dir.root().display()
        )));
    }
    std::os::unix::fs::symlink(path, &alias)
        .map_err(|e| Error::setup(format!("cannot create {}: {e}", alias.display())))?;
    Ok(alias)
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

/// The box's mount and umount, wrapped for a rootless container on the host's network
/// (`rootless-mount.sh`): each wrapper over the box's own, which stays beside it. None
/// for a box without them in /usr/bin.
fn rootless_mount(root: &Path, run_dir: &RunDir) -> Result<Vec<Volume>> {
    let wrapper = run_dir.path("mount");
    std::fs::write(&wrapper, ROOTLESS_MOUNT)
        .and_then(|()| std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| Error::setup(format!("cannot write {}: {e}", wrapper.display())))?;
    let mut volumes = Vec::new();
    for tool in ["mount", "umount"] {
        let real = root.join("usr/bin").join(tool);
        if std::fs::symlink_metadata(&real).is_ok_and(|m| m.is_file()) {
            volumes.push(Volume::new(real, format!("/usr/lib/boxbuild/{tool}"), true));
            volumes.push(Volume::new(&wrapper, format!("/usr/bin/{tool}"), true));
        }
    }
    Ok(volumes)
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

/// The files a rootless build left in a writable share (`dir`) owned by other users of
/// its container (the builder's `chown`s: subordinate ids on the host, which the caller
/// cannot remove), given to the caller: from inside the user namespace, where the caller
/// is uid 0. Symbolic links are changed themselves, never followed; set-id bits go, as
/// with every change of owner.
struct OwnedByCaller {
    podman: PathBuf,
    dir: PathBuf,
}

impl Drop for OwnedByCaller {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.podman)
            .arg("unshare")
            .arg("find")
            .arg(&self.dir)
            .args([
                "-xdev", "(", "!", "-user", "0", "-o", "!", "-group", "0", ")",
            ])
            .args(["-exec", "chown", "-h", "0:0", "--", "{}", "+"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Checks that a rootless podman sees each of `paths` as this process does. podman keeps
/// a user session (a pause process holding its mount namespace) from its first run on;
/// where `/` is not a shared mount, a file system mounted since is missing there, and a
/// bind mount would take the directory under the mount point instead: a build writing
/// where nobody looks. Errors: one line naming the path and the fix. A podman that
/// cannot tell is trusted.
fn podman_sees(engine: &engine::Engine, paths: &[&Path]) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    const EACH: &str = r#"for p; do stat -L -c '%d %i' -- "$p" 2>/dev/null || echo missing; done"#;
    let Ok(out) = std::process::Command::new(&engine.podman)
        .args(["unshare", "sh", "-c", EACH, "sh"])
        .args(paths)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let seen: Vec<&str> = text.lines().collect();
    if !out.status.success() || seen.len() != paths.len() {
        return Ok(());
    }
    for (path, there) in paths.iter().zip(seen) {
        let Ok(here) = std::fs::metadata(path) else {
            continue;
        };
        if there != format!("{} {}", here.dev(), here.ino()) {
            return Err(Error::setup(format!(
                "--container: podman does not see {} as it is here: it was mounted after podman's user session started, and / is not a shared mount on this host, so the builder would write under the mount point; run 'podman system migrate' (it ends the session and stops your running containers) and build again, or drop --container",
                path.display()
            )));
        }
    }
    Ok(())
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

    /// Runs the mount wrapper as `name` (mount or umount) with `args`, over a stand-in for
    /// the real command that logs its arguments and fails unless `succeeds_with` is among
    /// them; returns the exit code, stderr and the stand-in's calls.
    fn mounted(name: &str, args: &[&str], succeeds_with: &str) -> (i32, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join(name);
        let calls = dir.path().join("calls");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\ncase \" $* \" in *\" {succeeds_with} \"*) exit 0 ;; esac\necho \"{name}: refused\" >&2\nexit 32\n",
                calls.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = ROOTLESS_MOUNT
            .replace("/usr/lib/boxbuild/umount", fake.to_str().unwrap())
            .replace("/usr/lib/boxbuild/mount", fake.to_str().unwrap());
        let out = Command::new("sh")
            .args(["-c", &script, &format!("/usr/bin/{name}")])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            std::fs::read_to_string(calls).unwrap_or_default(),
        )
    }

    #[test]
    fn a_refused_bind_mount_is_tried_again_recursively() {
        let (code, err, calls) = mounted("mount", &["-n", "--bind", "/sys", "/r/sys"], "--rbind");
        assert_eq!((code, err.as_str()), (0, ""));
        assert_eq!(calls, "-n --bind /sys /r/sys\n-n --rbind /sys /r/sys\n");
        // Other mounts are not retried, and fail as the real mount said.
        let (code, err, calls) = mounted("mount", &["-t", "proc", "proc", "/r/proc"], "--rbind");
        assert_eq!((code, err.as_str()), (32, "mount: refused\n"));
        assert_eq!(calls.lines().count(), 1);
        // A bind mount that fails recursively too: the first failure is reported.
        let (code, err, _) = mounted("mount", &["--bind", "/a", "/b"], "never");
        assert_eq!((code, err.as_str()), (32, "mount: refused\n"));
        // Arguments with spaces survive the rewriting.
        let (code, _, calls) = mounted("mount", &["--bind", "/a b", "/c d"], "--rbind");
        assert_eq!(code, 0);
        assert!(calls.ends_with("--rbind /a b /c d\n"), "{calls}");
    }

    #[test]
    fn a_failed_unmount_is_tried_again_recursively() {
        let (code, err, calls) = mounted("umount", &["/r/sys"], "-R");
        assert_eq!((code, err.as_str()), (0, ""));
        assert_eq!(calls, "/r/sys\n-R /r/sys\n");
        let (code, err, _) = mounted("umount", &["/r/sys"], "never");
        assert_eq!((code, err.as_str()), (32, "umount: refused\n"));
    }
}
