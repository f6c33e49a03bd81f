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
use crate::job::{self, network, plugin, GUEST_DESCRIPTION, GUEST_TARGET};
use crate::runtime::startup::Timeline;
use crate::runtime::vm::share;
use crate::runtime::{self, Plan, RuntimeSettings};
use crate::sys::error::{Error, Result};
use crate::sys::signals::SignalWatch;
use crate::sys::ui::Ui;
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

/// `stash list`, `system stash --list`, and `system stash --root DIR`.
pub fn stash_command(args: &StashArgs, ui: Ui) -> Result<u8> {
    match &args.command {
        Some(StashCommand::List { stash_dir }) => {
            return stash::list(stash_dir.as_deref().or(args.build.stash_dir.as_deref()))
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
    let args = match stash_run.as_mut().and_then(|s| s.args.take()) {
        Some(args) => args,
        None => {
            let mut args = builder_args::resolve(&opts.builder_args)?;
            args.rest.splice(0..0, opts.kiwi_global_args());
            args
        }
    };
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
        let extra = shares::extra_dir(path, &[GUEST_DESCRIPTION, GUEST_TARGET])?;
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
    let plugin = match ready_box.settings.protocol {
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
    match ready_box.settings.protocol {
        Protocol::BoxbuildAgent => {
            let job_settings = settings::job_settings(opts);
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
    }
}
