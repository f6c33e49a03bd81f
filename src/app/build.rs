//! One build from start to teardown; the only place that knows the order of the steps:
//! check the options (`settings::check`) and the arguments, take the target dir, resolve
//! the box, settle its settings and shares, launch it (`runtime::launch`: a VM or a
//! container), drive the builder (through the agent, `drive::agent`, or the plugin's
//! protocol, `drive::plugin`), and stop everything. The launchers do their own steps
//! inside `launch` (docs/design.md lists them), in the order this file gives them.

use crate::app::settings;
use crate::app::stash::{self, Request};
use crate::app::target_lock::{self, Taken};
use crate::boxes::catalog::{Protocol, Refresh};
use crate::boxes::library::Library;
use crate::cli::{BuildOptions, StackbuildArgs, StashArgs, StashCommand};
use crate::drive;
use crate::job::builder_args;
use crate::job::shares::{self, SharedDir};
use crate::job::{self, kiwi_globals, network, plugin, GUEST_DESCRIPTION, GUEST_TARGET};
use crate::runtime::startup::Timeline;
use crate::runtime::vm::share;
use crate::runtime::{self, Plan, RuntimeSettings};
use crate::sys::error::{Error, Result};
use crate::sys::signals::SignalWatch;
use crate::sys::ui::Ui;
use std::path::Path;
use std::time::Instant;

/// Runs one build to its end. Returns the builder's exit code; errors carry boxbuild's own
/// (README, "Exit status").
pub fn build(opts: &BuildOptions, ui: Ui) -> Result<u8> {
    run(opts, ui, Request::Build)
}

/// `stackbuild`: a build on stashes stacked in the box (docs/stash.md).
pub fn stackbuild(args: &StackbuildArgs, ui: Ui) -> Result<u8> {
    run(&args.build, ui, Request::Stackbuild(args))
}

/// `stash list`, `stash push`, `stash pull`, `stash remove`, `stash prune`, `system stash
/// --list`, and `system stash --root DIR`.
pub fn stash_command(args: &StashArgs, ui: Ui) -> Result<u8> {
    let or_global = |dir: &Option<std::path::PathBuf>| {
        dir.as_deref()
            .or(args.build.stash_dir.as_deref())
            .map(Path::to_path_buf)
    };
    match &args.command {
        Some(StashCommand::List { stash_dir }) => {
            return stash::list(or_global(stash_dir).as_deref())
        }
        Some(StashCommand::Push {
            stash,
            target,
            sign_key,
            stash_dir,
        }) => {
            return stash::push(
                or_global(stash_dir).as_deref(),
                stash,
                target,
                sign_key.as_deref(),
                ui,
            )
        }
        Some(StashCommand::Pull {
            reference,
            stash,
            stash_dir,
        }) => {
            return stash::pull(
                or_global(stash_dir).as_deref(),
                reference,
                stash.as_deref(),
                ui,
            )
        }
        Some(StashCommand::Remove { name, stash_dir }) => {
            return stash::remove(or_global(stash_dir).as_deref(), name)
        }
        Some(StashCommand::Prune { dry_run, stash_dir }) => {
            return stash::prune(or_global(stash_dir).as_deref(), *dry_run)
        }
        None if args.list => return stash::list(args.build.stash_dir.as_deref()),
        None => {}
    }
    run(&args.build, ui, Request::StashRoot(args))
}

fn run(opts: &BuildOptions, ui: Ui, request: Request) -> Result<u8> {
    let mut timeline = Timeline::new(Instant::now());
    let signals = SignalWatch::install()?;
    let box_ref = opts.box_name.as_deref().ok_or_else(|| {
        Error::setup("no --box given: name the box to build in (see 'boxbuild --list-boxes')")
    })?;
    settings::check(opts, ui)?;
    let arch = settings::box_arch(opts);
    let profile = settings::profile(arch)?;
    // Checked before anything is fetched: a typo costs nothing.
    let mut stash_run = stash::prepare(&request, opts, &signals, ui)?;
    let mut args = match stash_run.as_mut().and_then(|s| s.args.take()) {
        Some(args) => args,
        None => {
            let mut args = builder_args::resolve(&opts.builder_args)?;
            args.rest.splice(0..0, opts.kiwi_global_args());
            args
        }
    };
    // kiwi's options naming host paths: shared and rewritten (job::kiwi_globals).
    let host_paths = kiwi_globals::take_host_paths(&mut args.rest, job::scratch::GUEST_PATH)?;
    for note in &host_paths.notes {
        ui.detail(note);
    }
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
    // A host --config file, copied into a private directory the box sees read-only (so
    // nothing beside it is shared); dropped after the box.
    let _config_dir = match &host_paths.config {
        Some(file) => {
            let dir = share_config(file)?;
            shared_dirs.push(SharedDir {
                tag: "config".into(),
                host: dir.path().to_path_buf(),
                guest: kiwi_globals::GUEST_CONFIG_DIR.into(),
                readonly: true,
            });
            Some(dir)
        }
        None => None,
    };
    if let Some(path) = &opts.shared_path {
        let extra = shares::extra_dir(
            path,
            &[
                GUEST_DESCRIPTION,
                GUEST_TARGET,
                kiwi_globals::GUEST_CONFIG_DIR,
                job::GUEST_PACKAGE_CACHE,
            ],
        )?;
        ui.detail(&format!("sharing {} read-write", extra.host.display()));
        shared_dirs.push(extra);
    }
    if let Some(s) = &stash_run {
        shared_dirs.extend(s.job.shares.iter().cloned());
    }
    // A VM's missing virtiofsd is reported before any box is fetched; a container needs
    // none.
    let sharing = settings::sharing(opts);
    if !opts.container {
        share::check(sharing)?;
    }
    timeline.mark("share check");
    let refresh = if opts.no_update_check {
        Refresh::Never
    } else {
        Refresh::WhenDue
    };
    let mut library = Library::open(ui, refresh, signals.clone())?;
    let ready_box = library.ready(box_ref, arch, !opts.no_update_check, opts.container)?;
    timeline.mark("catalog");
    ui.detail(&format!("box {} from {}", ready_box.name, ready_box.source));
    if let Some(s) = &stash_run {
        if ready_box.settings.protocol != Protocol::BoxbuildAgent {
            return Err(Error::setup(
                "stashes need a box with boxbuild's agent, not one of KIWI's Python plugin",
            ));
        }
        s.check_box(&ready_box.settings.builder)?;
    }
    let box_settings = settings::box_settings(opts, &ready_box, profile)?;
    if let RuntimeSettings::Vm(_) = box_settings.runtime {
        ready_box.tell_boot_kernel(ui);
    }
    let mut job_settings = settings::job_settings(opts);
    // The package cache kept across builds (boxes::store::packages): boxbuild's own per
    // box and architecture, or the user's --shared-cache-dir; trimmed after the build.
    let mut trim_after = None;
    let plugin = match ready_box.settings.protocol {
        Protocol::BoxbuildAgent => {
            if !opts.no_package_cache {
                let dir = match &host_paths.shared_cache_dir {
                    Some(dir) => dir.clone(),
                    None => {
                        let dir = library.store.package_cache_dir(&ready_box.name, arch)?;
                        trim_after = Some(dir.clone());
                        dir
                    }
                };
                ui.detail(&format!("package cache {}", dir.display()));
                shared_dirs.push(SharedDir {
                    tag: "packages".into(),
                    host: dir,
                    guest: job::GUEST_PACKAGE_CACHE.into(),
                    readonly: false,
                });
                job_settings.package_cache = true;
            }
            None
        }
        Protocol::KiwiBoxedPlugin => {
            if host_paths.config.is_some() || host_paths.shared_cache_dir.is_some() {
                return Err(Error::setup(
                    "a box of KIWI's Python plugin mounts only the description, the target and --shared-path: a host --config file or --shared-cache-dir cannot reach it; put the file into the description and give --config /description/NAME, or use a box with the boxbuild agent (e.g. debian)",
                ));
            }
            // SOURCE_DATE_EPOCH travels as kiwi's own --setenv: the box takes no
            // environment.
            if let Some(epoch) = &job_settings.source_date_epoch {
                let given = args
                    .rest
                    .iter()
                    .any(|a| a.to_string_lossy().contains("SOURCE_DATE_EPOCH="));
                if !given {
                    args.rest.splice(
                        0..0,
                        [
                            "--setenv".into(),
                            format!("SOURCE_DATE_EPOCH={epoch}").into(),
                        ],
                    );
                }
            }
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
            if plugin::clear_stale_result(&args.target)? {
                ui.detail("removed the result.code of an earlier run");
            }
            Some(plugin::Request {
                base: &ready_box.version.cmdline,
                kiwi: plugin::kiwi_words(&args.rest),
                backend: Some(sharing),
                kiwi_version: opts.kiwi_version.as_deref(),
                custom_path: shared_dirs
                    .iter()
                    .find(|d| d.tag == plugin::TAG_CUSTOM)
                    .map(|d| d.host.as_path()),
                keep_open: opts.box_debug,
            })
        }
    };
    let ca_certs = if box_settings.network && !opts.no_host_certs {
        network::host_ca_certs(std::env::var("BOXBUILD_CA_CERTS").ok().as_deref())?
    } else {
        Vec::new()
    };

    let started_at = std::time::SystemTime::now();
    let plan = Plan {
        settings: &box_settings,
        ui,
        ready_box: &ready_box,
        args: &args,
        library: &library,
        signals: &signals,
        timeline,
        shares: &shared_dirs,
        plugin,
    };
    let launched = runtime::launch(plan)?;
    let drive_settings = settings::drive_settings(opts);
    let result = match ready_box.settings.protocol {
        Protocol::BoxbuildAgent => {
            let mut job = job::job(&job_settings, &ready_box, &args, launched.place, ca_certs);
            if let Some(s) = &stash_run {
                job = s.job.wrap(job);
            }
            let code = drive::agent::drive(
                launched.session,
                &drive_settings,
                ui,
                &job,
                &args.target,
                &signals,
            )?;
            match &stash_run {
                Some(s) => s.finish(code, ui),
                None => Ok(code),
            }
        }
        Protocol::KiwiBoxedPlugin => drive::plugin::drive(
            launched.session,
            &drive_settings,
            &args.target,
            started_at,
            &signals,
        ),
    };
    if let Some(dir) = trim_after {
        trim_package_cache(&dir, ui);
    }
    result
}

/// Copies a host `--config` file into a private directory (0700) to share with the box.
fn share_config(file: &std::path::Path) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("boxbuild-config-")
        .tempdir()
        .map_err(|e| Error::setup(format!("cannot create a directory for --config: {e}")))?;
    let name = file.file_name().unwrap_or_default();
    std::fs::copy(file, dir.path().join(name))
        .map_err(|e| Error::setup(format!("--config {}: {e}", file.display())))?;
    Ok(dir)
}

/// Keeps boxbuild's package cache under its cap after a build.
fn trim_package_cache(dir: &std::path::Path, ui: Ui) {
    use crate::boxes::store::packages;
    match packages::cap(std::env::var("BOXBUILD_PACKAGE_CACHE_MAX").ok()) {
        Ok(cap) => {
            let gone = packages::trim(dir, cap, false, std::time::SystemTime::now());
            if gone.files > 0 {
                ui.detail(&format!(
                    "package cache: removed {} least recently used files ({} bytes) to stay under {} bytes",
                    gone.files, gone.bytes, cap
                ));
            }
        }
        Err(e) => ui.warn(&e),
    }
}
