//! Container images of boxes (`container =` in a catalog version; the `container:` of
//! KIWI's plugin configuration), kept in the engine's own image storage: podman pulls
//! them and checks every blob against its digest. boxbuild pulls an image that is missing,
//! and again once per update interval to follow a moving tag; with the registry out of
//! reach the image at hand is used, with a warning.

use super::engine::Engine;
use crate::sys::error::{Error, Result};
use crate::sys::ui::Ui;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::SystemTime;

/// Makes `reference` present in the engine's storage. `stamps` is the directory that
/// records when each reference was last pulled (one empty file per reference, named by
/// the SHA-256 of the reference); `due` says whether a pull that many seconds ago wants
/// repeating. Errors: the image is neither at hand nor pullable (podman's reason quoted).
pub fn ensure(
    engine: &Engine,
    reference: &str,
    stamps: &Path,
    due: impl Fn(u64) -> bool,
    ui: Ui,
) -> Result<()> {
    if reference.starts_with('-') || reference.chars().any(char::is_whitespace) {
        return Err(Error::setup(format!(
            "the box's container image '{reference}' is not an image reference; fix the 'container' entry of its catalog or kiwi_boxed_plugin.yml"
        )));
    }
    let present = podman(engine)
        .args(["image", "exists", reference])
        .status()
        .is_ok_and(|s| s.success());
    let stamp = stamps.join(
        Sha256::digest(reference.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    );
    let age = std::fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .map_or(u64::MAX, |d| d.as_secs());
    if present && !due(age) {
        ui.detail(&format!("container image {reference} at hand"));
        return Ok(());
    }
    ui.info(&format!("pulling the box's container image {reference}"));
    let out = podman(engine)
        .args(["pull", "--quiet", reference])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::setup(format!("cannot run podman pull: {e}")))?;
    if out.status.success() {
        let _ = std::fs::create_dir_all(stamps);
        let _ = std::fs::write(&stamp, reference.as_bytes());
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reason = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no reason given")
        .trim()
        .trim_start_matches("Error: ");
    if present {
        ui.warn(&format!(
            "cannot pull {reference} ({reason}); using the image at hand"
        ));
        return Ok(());
    }
    Err(Error::setup(format!(
        "cannot pull the box's container image {reference}: {reason}; check the reference, log in ('podman login'), or mark a plain-HTTP registry insecure in registries.conf"
    )))
}

fn podman(engine: &Engine) -> Command {
    let mut command = Command::new(&engine.podman);
    command.stdin(Stdio::null()).stdout(Stdio::null());
    command.stderr(Stdio::null());
    command
}
