//! The top floor: boxbuild's commands. `build` is the one sequencer of a build; `box_cmd`
//! the `box ...` commands; `settings` turns the command line into the resolved settings
//! that the floors below receive (they never see the CLI); `target_lock` keeps a target
//! dir to one build.

pub mod box_cmd;
pub mod build;
pub mod settings;
pub mod stash;
pub mod target_lock;
