//! boxbuild: run an OS-image builder inside a throw-away virtual machine.

mod app;
mod boxes;
mod cli;
mod drive;
mod job;
mod runtime;
mod sys;

use clap::Parser;
use cli::{BoxCommand, Cli, Command};
use std::any::Any;
use std::panic::{self, Location};
use std::process::ExitCode;
use sys::ui::{self, Ui};

fn main() -> ExitCode {
    // The last line of defence: a panic is a bug, reported in one line. The unwinding
    // that follows still stops QEMU and removes the run dir (their Drop impls), and the
    // run ends with the code of boxbuild's own failures.
    panic::set_hook(Box::new(|info| {
        ui::line(&panic_line(info.payload(), info.location()));
    }));
    match panic::catch_unwind(run) {
        Ok(code) => code,
        Err(_) => ExitCode::from(sys::error::exit_code::SETUP),
    }
}

fn run() -> ExitCode {
    let cli = Cli::parse_from(cli::normalized(std::env::args_os()));
    // kiwi 11's `... kiwi --help`: help, and no box started.
    if cli.command.is_none() && cli::builder_help_asked(&cli.build.builder_args) {
        use std::io::Write;
        let _ = write!(std::io::stdout().lock(), "{}", cli::BUILDER_HELP);
        return ExitCode::SUCCESS;
    }
    let ui = match &cli.command {
        Some(Command::Box(args)) => Ui {
            quiet: args.quiet,
            verbose: args.verbose,
        },
        Some(Command::Stash(cli::StashArgs { build, .. }))
        | Some(Command::Stackbuild(cli::StackbuildArgs { build, .. })) => Ui {
            quiet: build.quiet,
            verbose: build.verbose,
        },
        None => Ui {
            quiet: cli.build.quiet,
            verbose: cli.build.verbose,
        },
    };
    let result = match &cli.command {
        Some(Command::Box(args)) => app::box_cmd::run(&args.command, ui),
        Some(Command::Stash(args)) => app::build::stash_command(args, ui),
        Some(Command::Stackbuild(args)) => app::build::stackbuild(args, ui),
        None if cli.build.list_boxes => app::box_cmd::run(&BoxCommand::List, ui),
        None => app::build::build(&cli.build, ui),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            ui.error(&e.to_string());
            ui::text(e.details());
            ExitCode::from(e.exit_code())
        }
    }
}

/// The one line a panic is reported with: what and where.
fn panic_line(payload: &dyn Any, location: Option<&Location>) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    let at = location
        .map(|l| format!(" at {}:{}", l.file(), l.line()))
        .unwrap_or_default();
    format!(
        "boxbuild: error: internal error{at}: {}; this is a bug in boxbuild, please report it",
        what.replace('\n', " ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_one_error_line() {
        let here = Location::caller();
        let line = panic_line(&"unexpected eof\nmore", Some(here));
        assert!(line.starts_with("boxbuild: error: internal error at src/main.rs:"));
        assert!(
            line.contains(": unexpected eof more; this is a bug"),
            "{line}"
        );
        let owned: Box<dyn Any> = Box::new(String::from("owned"));
        assert!(panic_line(owned.as_ref(), None).contains("internal error: owned;"));
        assert!(panic_line(&42u8, None).contains("no message"));
    }
}
