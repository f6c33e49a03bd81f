//! kiwi's global options whose values are paths on the build host: in a box the build
//! host is the box, so the host's paths are shared and rewritten, or put where the box
//! keeps such files. The words come from boxbuild's own options (`--config FILE` before
//! `system boxbuild`) and from the builder's arguments alike.
//!
//! - `--config FILE`: an existing host file is copied into a private directory shared
//!   read-only at `GUEST_CONFIG_DIR`, and the value becomes its path there; a path that
//!   is not a host file (e.g. `/description/kiwi.yml`) is a path in the box, kept as given.
//! - `--shared-cache-dir DIR`: the host directory becomes this build's package cache in
//!   place of boxbuild's own (docs/cache.md); kiwi in the box keeps its cache on the
//!   scratch disk, so the option is taken out.
//! - `--temp-dir DIR`: kiwi's temporary files belong on the scratch disk: the value
//!   becomes the scratch area's path.
//! - `--logfile FILE`: only `stdout`; a host file or `--logsocket` cannot be written from
//!   the box (kiwi's whole output is in OUT/result.log).

use crate::sys::error::{Error, Result};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where a host `--config` file's directory appears in the box (read-only).
pub const GUEST_CONFIG_DIR: &str = "/boxbuild/config";

/// What the options asked of the host.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HostPaths {
    /// `--config`: the host file to share (its guest path is in the arguments).
    pub config: Option<PathBuf>,
    /// `--shared-cache-dir`: the host directory to keep packages in.
    pub shared_cache_dir: Option<PathBuf>,
    /// Notes for `-v`: what was rewritten.
    pub notes: Vec<String>,
}

/// The value of `word` if it is option `name`, with the value in the word (`--x=v`,
/// `Some(Some(v))`) or in the next word (`--x`, `Some(None)`).
fn option_value<'a>(word: &'a OsStr, name: &str) -> Option<Option<&'a OsStr>> {
    let bytes = word.as_bytes();
    let rest = bytes.strip_prefix(name.as_bytes())?;
    match rest {
        [] => Some(None),
        [b'=', value @ ..] => Some(Some(OsStr::from_bytes(value))),
        _ => None,
    }
}

/// Rewrites kiwi's host-path options in `args` in place (see the module's comment);
/// `scratch` is the scratch area's path in the box. Errors: a `--logfile` other than
/// `stdout`, a `--logsocket`, two different `--config` files, a value missing.
pub fn take_host_paths(args: &mut Vec<OsString>, scratch: &str) -> Result<HostPaths> {
    let mut found = HostPaths::default();
    let mut i = 0;
    while i < args.len() {
        let word = args[i].clone();
        let Some((name, inline)) = [
            "--config",
            "--shared-cache-dir",
            "--temp-dir",
            "--logfile",
            "--logsocket",
        ]
        .iter()
        .find_map(|name| option_value(&word, name).map(|v| (*name, v))) else {
            i += 1;
            continue;
        };
        let value: OsString = match inline {
            Some(v) => v.to_os_string(),
            None => args
                .get(i + 1)
                .cloned()
                .ok_or_else(|| Error::setup(format!("{name} needs a value after it")))?,
        };
        let span = if inline.is_some() { 1 } else { 2 };
        let replacement: Vec<OsString> = match name {
            "--config" => {
                let host = Path::new(&value);
                if host.is_file() {
                    let host = host.canonicalize().map_err(|e| {
                        Error::setup(format!("--config {}: {e}", host.display()))
                    })?;
                    if found.config.as_ref().is_some_and(|c| *c != host) {
                        return Err(Error::setup(
                            "--config is given twice with different files; give it once",
                        ));
                    }
                    let name = host.file_name().unwrap_or_default().to_os_string();
                    let guest = Path::new(GUEST_CONFIG_DIR).join(name);
                    found.notes.push(format!(
                        "kiwi's --config {} is {} in the box (read-only)",
                        host.display(),
                        guest.display()
                    ));
                    found.config = Some(host);
                    vec!["--config".into(), guest.into_os_string()]
                } else if host.is_absolute() {
                    // A path in the box, e.g. /description/kiwi.yml.
                    vec!["--config".into(), value]
                } else {
                    return Err(Error::setup(format!(
                        "--config {}: no such file; give a kiwi runtime configuration file on the host (or an absolute path in the box, e.g. /description/kiwi.yml)",
                        host.display()
                    )));
                }
            }
            "--shared-cache-dir" => {
                let host = Path::new(&value);
                std::fs::create_dir_all(host).map_err(|e| {
                    Error::setup(format!("--shared-cache-dir {}: {e}", host.display()))
                })?;
                let host = host.canonicalize().map_err(|e| {
                    Error::setup(format!("--shared-cache-dir {}: {e}", host.display()))
                })?;
                found.notes.push(format!(
                    "packages are kept in {} (kiwi's --shared-cache-dir); kiwi's cache in the box is on the scratch disk",
                    host.display()
                ));
                found.shared_cache_dir = Some(host);
                Vec::new()
            }
            "--temp-dir" => {
                found.notes.push(format!(
                    "kiwi's --temp-dir {} is the scratch disk ({scratch}) in the box",
                    Path::new(&value).display()
                ));
                vec!["--temp-dir".into(), scratch.into()]
            }
            "--logfile" if value == "stdout" => vec!["--logfile".into(), value],
            _ => {
                return Err(Error::setup(format!(
                    "{name} {}: kiwi in the box cannot write to the host's files or sockets; its whole output is in OUT/result.log (or give --logfile stdout)",
                    Path::new(&value).display()
                )))
            }
        };
        let added = replacement.len();
        args.splice(i..i + span, replacement);
        i += added;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn config_files_on_the_host_are_shared_and_rewritten() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("kiwi.yml");
        std::fs::write(&file, "x: 1\n").unwrap();
        let f = file.to_str().unwrap();
        let mut args = os(&["--config", f, "--type", "oem", &format!("--config={f}")]);
        let found = take_host_paths(&mut args, "/var/tmp").unwrap();
        assert_eq!(found.config, Some(file.canonicalize().unwrap()));
        assert_eq!(
            args,
            os(&[
                "--config",
                "/boxbuild/config/kiwi.yml",
                "--type",
                "oem",
                "--config",
                "/boxbuild/config/kiwi.yml"
            ])
        );
        // A path in the box stays; a missing relative one is a typo.
        let mut args = os(&["--config", "/description/kiwi.yml"]);
        assert_eq!(take_host_paths(&mut args, "/var/tmp").unwrap().config, None);
        assert_eq!(args, os(&["--config", "/description/kiwi.yml"]));
        assert!(take_host_paths(&mut os(&["--config", "nope.yml"]), "/var/tmp").is_err());
        assert!(take_host_paths(&mut os(&["--config"]), "/var/tmp").is_err());
    }

    #[test]
    fn cache_temp_and_log_options() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        let mut args = os(&[
            "--shared-cache-dir",
            cache.to_str().unwrap(),
            "--temp-dir=/scratch",
            "--logfile",
            "stdout",
            "--configs",
        ]);
        let found = take_host_paths(&mut args, "/var/tmp").unwrap();
        assert!(cache.is_dir(), "the cache dir is created");
        assert_eq!(found.shared_cache_dir, Some(cache.canonicalize().unwrap()));
        assert_eq!(
            args,
            os(&["--temp-dir", "/var/tmp", "--logfile", "stdout", "--configs"])
        );
        for bad in [&["--logfile", "/tmp/kiwi.log"][..], &["--logsocket=/run/s"]] {
            let e = take_host_paths(&mut os(bad), "/var/tmp").unwrap_err();
            assert_eq!(e.exit_code(), 125);
            assert!(e.to_string().contains("result.log"), "{e}");
        }
    }
}
