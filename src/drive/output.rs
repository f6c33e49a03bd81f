//! Where the builder's output goes: live to the terminal and into `result.log` in the
//! target dir.

use crate::sys::error::{Context, Result};
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

pub struct BuildOutput {
    log: File,
}

impl BuildOutput {
    pub fn create(target_dir: &Path) -> Result<BuildOutput> {
        let path = target_dir.join("result.log");
        let log = File::create(&path).context(|| format!("cannot create {}", path.display()))?;
        Ok(BuildOutput { log })
    }

    pub fn stdout(&mut self, bytes: &[u8]) {
        let mut out = io::stdout().lock();
        let _ = out.write_all(bytes);
        let _ = out.flush();
        let _ = self.log.write_all(bytes);
    }

    pub fn stderr(&mut self, bytes: &[u8]) {
        let mut err = io::stderr().lock();
        let _ = err.write_all(bytes);
        let _ = err.flush();
        let _ = self.log.write_all(bytes);
    }

    /// Into `result.log` only (what boxbuild reports on the terminal itself).
    pub fn log_only(&mut self, bytes: &[u8]) {
        let _ = self.log.write_all(bytes);
    }
}
