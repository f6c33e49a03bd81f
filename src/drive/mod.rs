//! How the builder is driven, once the box runs (`session::Session`): through the
//! boxbuild agent's frames (`agent`), or the Python plugin's protocol, where the box runs
//! kiwi by itself and leaves `result.code` (`plugin`). Either works with a VM or a
//! container alike.

pub mod agent;
pub mod output;
pub mod plugin;
pub mod status;

use std::time::{Duration, Instant};

/// How a build is driven, resolved once by `app::settings`.
#[derive(Debug, Clone, Default)]
pub struct DriveSettings {
    /// `--timeout`: the longest the box may run, from its start; None: no limit.
    pub timeout: Option<Duration>,
    /// Whether the box's console is on the terminal (`--box-console`, `--box-debug`): no
    /// status line then.
    pub console_shown: bool,
    /// `--box-debug`: the box stays up for a shell after the build.
    pub debug_shell: bool,
}

/// How often the drivers look at the box, the signals and the clock.
const TICK: Duration = Duration::from_millis(20);

/// When `--timeout` ends, counted from `started`, and the limit itself; None without a
/// limit, or for one too far away for the clock to count to (never reached).
fn deadline(started: Instant, timeout: Option<Duration>) -> Option<(Instant, Duration)> {
    let limit = timeout?;
    Some((started.checked_add(limit)?, limit))
}
