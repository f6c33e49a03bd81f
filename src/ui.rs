//! boxbuild's own messages on stderr, kept apart from the builder's output.

#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub quiet: bool,
    pub verbose: u8,
}

impl Ui {
    /// A notice the user should see (which accelerator, which share backend).
    pub fn info(&self, message: &str) {
        if !self.quiet {
            eprintln!("boxbuild: {message}");
        }
    }

    /// Detail for -v.
    pub fn detail(&self, message: &str) {
        if self.verbose > 0 {
            eprintln!("boxbuild: {message}");
        }
    }

    /// Something the user should know about that does not stop the run.
    pub fn warn(&self, message: &str) {
        if !self.quiet {
            eprintln!("boxbuild: warning: {message}");
        }
    }

    pub fn error(&self, message: &str) {
        eprintln!("boxbuild: error: {message}");
    }
}
