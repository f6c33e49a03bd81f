//! The guest protocol of KIWI's Python boxbuild plugin, for the boxes published for it.
//!
//! Such a box has no agent. A service in it reads the kernel command line: `kiwi="<kiwi
//! arguments>"`, `sharing_backend=_9p_`, `kiwi_version=_V_`, `custom_mount=_PATH_`,
//! `kiwi-no-halt`; mounts the tags `kiwidescription`, `kiwibundle` and `custompath`; runs
//! kiwi; writes `result.code` and `result.log` into the bundle dir; and powers off. Its
//! console is hvc0 on a virtio console.
//!
//! The arguments travel on the kernel command line and are split again by a shell in the
//! box, so only words that survive that unchanged are accepted; anything else is refused
//! with a clear message rather than mangled.

use crate::job::shares::Sharing;
use crate::sys::error::{Error, Result};
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::time::SystemTime;

pub const TAG_DESCRIPTION: &str = "kiwidescription";
pub const TAG_BUNDLE: &str = "kiwibundle";
pub const TAG_CUSTOM: &str = "custompath";
pub const RESULT_CODE: &str = "result.code";

/// kiwi's options that go before `system build`, with a value / without one.
pub const KIWI_GLOBAL_WITH_VALUE: &[&str] = &[
    "--config",
    "--kiwi-file",
    "--logfile",
    "--loglevel",
    "--logsocket",
    "--profile",
    "--setenv",
    "--shared-cache-dir",
    "--target-arch",
    "--temp-dir",
    "--type",
];
pub const KIWI_GLOBAL_FLAGS: &[&str] =
    &["--debug", "--debug-run-scripts-in-screen", "--color-output"];

/// Longest kernel command line the smallest supported architecture takes (x86: 2048).
const MAX_CMDLINE: usize = 2048;

/// The kiwi command the box runs, as the plugin builds it: kiwi's global options, then
/// `system build`, then the build options (without --description/--target-dir, which
/// the box sets itself).
pub fn kiwi_words(args: &[OsString]) -> Vec<OsString> {
    let mut global = Vec::new();
    let mut build = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        let name = text.split('=').next().unwrap_or_default();
        if KIWI_GLOBAL_WITH_VALUE.contains(&name) {
            global.push(arg.clone());
            if !text.contains('=') {
                global.extend(iter.next().cloned());
            }
        } else if KIWI_GLOBAL_FLAGS.contains(&name) {
            global.push(arg.clone());
        } else {
            build.push(arg.clone());
        }
    }
    global.extend(["system".into(), "build".into()]);
    global.extend(build);
    global
}

/// A word survives the kernel command line and the box's shell unchanged only if it is
/// plain: letters, digits and `-_.,:=/+@%`.
fn plain(word: &str) -> bool {
    !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,:=/+@%".contains(c))
}

fn refuse(what: &str, word: &OsStr) -> Error {
    Error::setup(format!(
        "{what} '{}' cannot be passed to a box of KIWI's Python plugin: such boxes take the arguments on the kernel command line and split them with a shell, so only plain words (letters, digits, -_.,:=/+@%) arrive intact; use a box with the boxbuild agent (e.g. debian) for this build",
        word.to_string_lossy()
    ))
}

/// What the build asks of the box.
#[derive(Clone)]
pub struct Request<'a> {
    /// The box's own command line (root=, console=, ...); empty for a container.
    pub base: &'a str,
    pub kiwi: Vec<OsString>,
    /// How a VM mounts the shares; None for a container, where they are bind mounts.
    pub backend: Option<Sharing>,
    pub kiwi_version: Option<&'a str>,
    pub custom_path: Option<&'a Path>,
    pub keep_open: bool,
}

/// The kernel command line for the request (for a container, the line of
/// `/container.cmdline`), or a one-line refusal.
pub fn cmdline(request: &Request) -> Result<String> {
    let mut words = Vec::new();
    for word in &request.kiwi {
        match word.to_str() {
            Some(text) if plain(text) => words.push(text.to_string()),
            _ => return Err(refuse("the argument", word)),
        }
    }
    let backend = match request.backend {
        None => None,
        Some(Sharing::NineP) => Some("9p"),
        Some(Sharing::Virtiofs) => Some("virtiofs"),
        Some(Sharing::Sshfs) => {
            return Err(Error::setup(
                "--sshfs-sharing is not available with boxes of KIWI's Python plugin: they mount sshfs over SSH with a key authorised on the host; use --9p-sharing or --virtiofs-sharing",
            ))
        }
    };
    let mut line = format!("{} kiwi=\"{}\"", request.base.trim(), words.join(" "));
    if let Some(backend) = backend {
        line.push_str(&format!(" sharing_backend=_{backend}_"));
    }
    let mut line = line.trim_start().to_string();
    if let Some(version) = request.kiwi_version {
        if !plain(version) {
            return Err(refuse("--kiwi-version", OsStr::new(version)));
        }
        line.push_str(&format!(" kiwi_version=_{version}_"));
    }
    if let Some(path) = request.custom_path {
        let text = path.as_os_str();
        match text.to_str() {
            Some(t) if plain(t) => line.push_str(&format!(" custom_mount=_{t}_")),
            _ => return Err(refuse("--shared-path", text)),
        }
    }
    if request.keep_open {
        line.push_str(" kiwi-no-halt");
    }
    if line.len() > MAX_CMDLINE {
        return Err(Error::setup(format!(
            "the arguments make a kernel command line of {} bytes, over the {MAX_CMDLINE} a box of KIWI's Python plugin can take; shorten them or use a box with the boxbuild agent",
            line.len()
        )));
    }
    Ok(line)
}

/// Removes a `result.code` an earlier run left in the target dir, so that only one
/// written by this run can count.
pub fn clear_stale_result(target: &Path) -> Result<bool> {
    match std::fs::remove_file(target.join(RESULT_CODE)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::setup(format!(
            "cannot remove the old {} in {}: {e}",
            RESULT_CODE,
            target.display()
        ))),
    }
}

/// kiwi's exit code from the `result.code` this run wrote; Err says why there is none.
pub fn read_result(target: &Path, started: SystemTime) -> std::result::Result<u8, String> {
    let path = target.join(RESULT_CODE);
    let meta = std::fs::metadata(&path)
        .map_err(|_| format!("the box ended without writing {RESULT_CODE}"))?;
    if meta.modified().is_ok_and(|m| m < started) {
        return Err(format!("{RESULT_CODE} predates this run"));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{RESULT_CODE}: {e}"))?;
    let code: i64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{RESULT_CODE} holds '{}', not an exit code", text.trim()))?;
    Ok(code.clamp(0, 255) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<OsString> {
        line.split(' ').map(OsString::from).collect()
    }

    fn request(kiwi: Vec<OsString>) -> Request<'static> {
        Request {
            base: "console=hvc0 root=/dev/vda3",
            kiwi,
            backend: Some(Sharing::NineP),
            kiwi_version: None,
            custom_path: None,
            keep_open: false,
        }
    }

    #[test]
    fn global_options_go_before_system_build() {
        let got = kiwi_words(&words(
            "--add-package vim --type oem --profile=a --debug --clear-cache",
        ));
        assert_eq!(
            got,
            words("--type oem --profile=a --debug system build --add-package vim --clear-cache")
        );
    }

    #[test]
    fn the_command_line_carries_what_the_plugin_sends() {
        let mut r = request(kiwi_words(&words("--type oem")));
        r.kiwi_version = Some("10.2.1");
        r.custom_path = Some(Path::new("/srv/repo"));
        r.keep_open = true;
        assert_eq!(
            cmdline(&r).unwrap(),
            "console=hvc0 root=/dev/vda3 kiwi=\"--type oem system build\" sharing_backend=_9p_ kiwi_version=_10.2.1_ custom_mount=_/srv/repo_ kiwi-no-halt"
        );
    }

    #[test]
    fn words_a_shell_would_change_are_refused() {
        for bad in ["a b", "$(reboot)", "x;y", "\"q\"", "", "ü", "*"] {
            let e = cmdline(&request(vec![bad.into()])).unwrap_err().to_string();
            assert!(e.contains("cannot be passed"), "{bad}: {e}");
        }
        let mut r = request(vec![]);
        r.backend = Some(Sharing::Sshfs);
        assert!(cmdline(&r)
            .unwrap_err()
            .to_string()
            .contains("--sshfs-sharing"));
        let long = vec![OsString::from("x".repeat(3000))];
        assert!(cmdline(&request(long))
            .unwrap_err()
            .to_string()
            .contains("bytes"));
    }

    #[test]
    fn only_a_result_code_of_this_run_counts() {
        let dir = tempfile::tempdir().unwrap();
        let earlier = SystemTime::now() - std::time::Duration::from_secs(60);
        assert!(read_result(dir.path(), earlier)
            .unwrap_err()
            .contains("without writing"));
        std::fs::write(dir.path().join(RESULT_CODE), "3\n").unwrap();
        assert_eq!(read_result(dir.path(), earlier), Ok(3));
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        assert!(read_result(dir.path(), later)
            .unwrap_err()
            .contains("predates"));
        std::fs::write(dir.path().join(RESULT_CODE), "ok").unwrap();
        assert!(read_result(dir.path(), earlier)
            .unwrap_err()
            .contains("not an exit code"));
        assert!(clear_stale_result(dir.path()).unwrap());
        assert!(!clear_stale_result(dir.path()).unwrap());
    }
}
