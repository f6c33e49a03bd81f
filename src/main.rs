//! boxbuild: run an OS-image builder inside a throw-away virtual machine.

mod agent;
mod box_cmd;
mod builder_args;
mod catalog;
mod cli;
mod error;
mod fetch;
mod guest_setup;
mod library;
mod output;
mod plugin_box;
mod run;
mod rundir;
mod scratch;
mod share;
mod signals;
mod size;
mod store;
mod threads;
mod ui;
mod vm;

use clap::Parser;
use cli::{BoxCommand, Cli, Command};
use std::process::ExitCode;
use ui::Ui;

fn main() -> ExitCode {
    let cli = Cli::parse_from(cli::without_plugin_words(std::env::args_os()));
    let ui = match &cli.command {
        Some(Command::Box(args)) => Ui {
            quiet: args.quiet,
            verbose: args.verbose,
        },
        None => Ui {
            quiet: cli.build.quiet,
            verbose: cli.build.verbose,
        },
    };
    let result = match &cli.command {
        Some(Command::Box(args)) => box_cmd::run(&args.command, ui),
        None if cli.build.list_boxes => box_cmd::run(&BoxCommand::List, ui),
        None => run::build(&cli.build, ui),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            ui.error(&e.to_string());
            eprint!("{}", e.details());
            ExitCode::from(e.exit_code())
        }
    }
}
