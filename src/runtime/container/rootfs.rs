//! The box's root file system as a directory, for the container: the box disk (qcow2 or
//! raw holding a whole-disk ext2/3/4 file system, as boxbuild's recipes make them)
//! converted to raw by qemu-img and copied out by debugfs's `rdump`: no mount, no root.
//! Kept in the cache as `rootfs/KEY/`, KEY a digest of the disk's path, size and mtime
//! (box files in the cache never change in place), made once however many builds ask;
//! `rootfs/KEY.disk` names the disk it came from. A build holds `locks/rootfs-KEY.lock`
//! shared while its container runs; `boxbuild box prune` removes a root whose disk is gone
//! or changed, unless a build holds it.

use crate::boxes::store::lock::{self, EntryLock, Mode};
use crate::boxes::store::Bucket;
use crate::sys::error::{Error, Result};
use crate::sys::signals::SignalWatch;
use crate::sys::ui::Ui;
use sha2::{Digest, Sha256};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A root directory in use: held shared until the container has ended.
pub struct Root {
    pub dir: PathBuf,
    pub _lock: EntryLock,
}

/// The cache key of `disk` as it is now; None if it cannot be read.
fn key_of(disk: &Path) -> Option<String> {
    let meta = std::fs::metadata(disk).ok()?;
    let identity = format!(
        "{}\0{}\0{}\0{}",
        disk.canonicalize().unwrap_or(disk.to_path_buf()).display(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    Some(
        Sha256::digest(identity.as_bytes())[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

fn lock_path(cache: &Path, key: &str) -> Result<PathBuf> {
    let locks = cache.join(Bucket::Locks.dir());
    std::fs::create_dir_all(&locks)
        .map_err(|e| Error::setup(format!("cannot create {}: {e}", locks.display())))?;
    Ok(locks.join(format!("rootfs-{key}.lock")))
}

/// The root directory for `disk`, made now if missing, and held. Errors: one line naming
/// the disk, the tool that failed and its words.
pub fn prepare(cache: &Path, disk: &Path, ui: Ui, signals: &SignalWatch) -> Result<Root> {
    std::fs::metadata(disk).map_err(|e| Error::setup(format!("{}: {e}", disk.display())))?;
    let key =
        key_of(disk).ok_or_else(|| Error::setup(format!("{}: cannot be read", disk.display())))?;
    // A prune may remove the directory between making it and holding it: look again.
    for _ in 0..3 {
        let dir = make(cache, disk, &key, ui, signals)?;
        let _ = std::fs::write(
            cache.join(Bucket::Rootfs.dir()).join(format!("{key}.disk")),
            disk.as_os_str().as_bytes(),
        );
        let lock = lock::acquire(&lock_path(cache, &key)?, Mode::Shared, signals, || {
            ui.info("waiting for another boxbuild to finish with this box's root file system")
        })?;
        if unpacked(&dir) {
            return Ok(Root { dir, _lock: lock });
        }
    }
    Err(Error::setup(format!(
        "the container root file system of {} keeps disappearing from {}; is a 'box prune' running in a loop?",
        disk.display(),
        cache.display()
    )))
}

fn unpacked(dir: &Path) -> bool {
    dir.join("bin").exists() || dir.join("usr").exists()
}

/// A root directory that `box prune` may remove, and its size in bytes.
pub struct Stale {
    pub dir: PathBuf,
    pub bytes: u64,
    /// Whether a running build holds it (then it stays).
    pub busy: bool,
}

/// The root directories in `cache` whose disk is gone or changed; removed unless
/// `dry_run` or held by a build.
pub fn prune(cache: &Path, dry_run: bool) -> Result<Vec<Stale>> {
    let base = cache.join(Bucket::Rootfs.dir());
    let Ok(entries) = std::fs::read_dir(&base) else {
        return Ok(Vec::new());
    };
    let mut stale = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        let key = entry.file_name().to_string_lossy().into_owned();
        let record = base.join(format!("{key}.disk"));
        let disk = std::fs::read(&record)
            .ok()
            .map(|bytes| PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)));
        if disk.and_then(|d| key_of(&d)).as_deref() == Some(key.as_str()) {
            continue;
        }
        let bytes = crate::boxes::store::du(&dir);
        let held = lock::try_acquire(&lock_path(cache, &key)?, Mode::Exclusive)?;
        let busy = held.is_none();
        if !dry_run && !busy {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| Error::setup(format!("cannot remove {}: {e}", dir.display())))?;
            let _ = std::fs::remove_file(&record);
        }
        stale.push(Stale { dir, bytes, busy });
    }
    Ok(stale)
}

/// Unpacks the root for `disk` into `rootfs/KEY` unless it is there.
fn make(cache: &Path, disk: &Path, key: &str, ui: Ui, signals: &SignalWatch) -> Result<PathBuf> {
    let dir = cache.join(Bucket::Rootfs.dir()).join(key);
    if unpacked(&dir) {
        return Ok(dir);
    }
    let locks = cache.join(Bucket::Locks.dir());
    std::fs::create_dir_all(&locks)
        .map_err(|e| Error::setup(format!("cannot create {}: {e}", locks.display())))?;
    let _lock = lock::acquire(
        &locks.join(format!("rootfs-{key}.lock")),
        Mode::Exclusive,
        signals,
        || ui.info("waiting for another boxbuild to unpack this box's root file system"),
    )?;
    if unpacked(&dir) {
        return Ok(dir);
    }
    ui.info(&format!(
        "unpacking the box's root file system for containers (once per box version) into {}",
        dir.display()
    ));
    let staging = cache
        .join(Bucket::Staging.dir())
        .join(format!("rootfs-{key}"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .map_err(|e| Error::setup(format!("cannot create {}: {e}", staging.display())))?;
    let result = unpack(disk, &staging, signals).and_then(|root| {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::setup(format!("cannot create {}: {e}", parent.display())))?;
        }
        std::fs::rename(&root, &dir)
            .map_err(|e| Error::setup(format!("cannot install {}: {e}", dir.display())))
    });
    let _ = std::fs::remove_dir_all(&staging);
    result.map(|()| dir)
}

/// The program `name`, searched on PATH and in the sbin directories.
fn tool(name: &str) -> Command {
    let path = crate::sys::process::on_path(name).unwrap_or_else(|| PathBuf::from(name));
    crate::sys::process::command(&path.display().to_string())
}

/// Runs `command` (the tool `what`) in `dir`, in a process group of its own so that the
/// terminal's Ctrl-C reaches boxbuild alone, which then stops the tool: interrupted is
/// `Error::Interrupted`, never the tool's failure. Its stderr goes to a file in `dir`;
/// returns what it said.
fn run(what: &str, command: &mut Command, dir: &Path, signals: &SignalWatch) -> Result<String> {
    let said = dir.join(format!("{what}.log"));
    let log = std::fs::File::create(&said)
        .map_err(|e| Error::setup(format!("cannot create {}: {e}", said.display())))?;
    let mut child = command
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| {
            Error::setup(format!(
                "--container: cannot run {what}: {e} (it comes with {})",
                if what == "qemu-img" {
                    "qemu-utils"
                } else {
                    "e2fsprogs"
                }
            ))
        })?;
    let status = loop {
        if let Some(sig) = signals.pending() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Interrupted(sig));
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(Error::setup(format!("--container: {what}: {e}"))),
        }
    };
    let text = String::from_utf8_lossy(&std::fs::read(&said).unwrap_or_default()).into_owned();
    let _ = std::fs::remove_file(&said);
    if !status.success() {
        return Err(Error::setup(format!(
            "--container: {what} failed ({status}): {}",
            text.lines().last().unwrap_or("no message")
        )));
    }
    Ok(text)
}

/// Converts and copies out; returns the unpacked root under `staging`. The tools run in
/// `staging` and name their files there by relative names, so no byte of the cache's
/// path reaches their parsers (qemu's `PROTOCOL:` prefixes, debugfs's word splitting and
/// its `?options`); the disk's path is absolute, which qemu never reads as a protocol.
fn unpack(disk: &Path, staging: &Path, signals: &SignalWatch) -> Result<PathBuf> {
    let disk =
        std::path::absolute(disk).map_err(|e| Error::setup(format!("{}: {e}", disk.display())))?;
    run(
        "qemu-img",
        tool("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&disk)
            .arg(RAW),
        staging,
        signals,
    )?;
    let root = staging.join("root");
    std::fs::create_dir_all(&root)
        .map_err(|e| Error::setup(format!("cannot create {}: {e}", root.display())))?;
    let said = run(
        "debugfs",
        tool("debugfs").arg("-R").arg("rdump / root").arg(RAW),
        staging,
        signals,
    )?;
    let _ = std::fs::remove_file(staging.join(RAW));
    if !(root.join("bin").exists() || root.join("usr").exists()) {
        return Err(Error::setup(format!(
            "--container: {} holds no root file system debugfs can read (a whole-disk ext2/3/4, as boxbuild's recipes make): {}",
            disk.display(),
            said.lines().last().unwrap_or("no message")
        )));
    }
    Ok(root)
}

/// The raw copy of the disk, in the staging dir.
const RAW: &str = "disk.raw";
