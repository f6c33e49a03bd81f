//! boxbuild's own messages on stderr, kept apart from the builder's output. Writing never
//! fails a run: a closed stream (`boxbuild ... 2>&- `, a pipe whose reader is gone) only
//! loses the message.

use std::io::Write;

#[derive(Debug, Clone, Copy, Default)]
pub struct Ui {
    pub quiet: bool,
    pub verbose: u8,
}

impl Ui {
    /// A notice the user should see (which accelerator, which share backend).
    pub fn info(&self, message: &str) {
        if !self.quiet {
            line(&format!("boxbuild: {message}"));
        }
    }

    /// Detail for -v.
    pub fn detail(&self, message: &str) {
        if self.verbose > 0 {
            line(&format!("boxbuild: {message}"));
        }
    }

    /// Something the user should know about that does not stop the run.
    pub fn warn(&self, message: &str) {
        if !self.quiet {
            line(&format!("boxbuild: warning: {message}"));
        }
    }

    pub fn error(&self, message: &str) {
        line(&format!("boxbuild: error: {message}"));
    }
}

/// One line on stderr; a write error is ignored.
pub fn line(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Text on stderr as it is (e.g. a console tail); a write error is ignored.
pub fn text(text: &str) {
    let _ = write!(std::io::stderr().lock(), "{text}");
}

/// One line on stdout (the result of a `box` command); a write error, such as a reader
/// that stopped reading, is ignored.
pub fn say(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}
