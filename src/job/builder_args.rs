//! The builder's arguments (everything after `--`): `--description` and `--target-dir` are
//! taken out and become shares; all others pass through untouched, as raw bytes.

use crate::sys::error::{Context, Error, Result};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug, PartialEq, Eq)]
pub struct BuilderArgs {
    pub description: PathBuf,
    pub target: PathBuf,
    /// Everything else, in order, exactly as given.
    pub rest: Vec<OsString>,
}

/// Splits the arguments without touching the filesystem.
pub fn split(args: &[OsString]) -> Result<(Option<OsString>, Option<OsString>, Vec<OsString>)> {
    let mut description = None;
    let mut target = None;
    let mut rest = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let bytes = arg.as_bytes();
        let (slot, name) = if bytes.starts_with(b"--description") {
            (&mut description, "--description")
        } else if bytes.starts_with(b"--target-dir") {
            (&mut target, "--target-dir")
        } else {
            rest.push(arg.clone());
            continue;
        };
        let value = match &bytes[name.len()..] {
            [] => iter
                .next()
                .cloned()
                .ok_or_else(|| Error::setup(format!("{name} needs a directory after it")))?,
            [b'=', value @ ..] => OsStr::from_bytes(value).to_os_string(),
            // Some other option that merely starts with the same letters.
            _ => {
                rest.push(arg.clone());
                continue;
            }
        };
        if slot.replace(value).is_some() {
            return Err(Error::setup(format!("{name} is given twice; give it once")));
        }
    }
    Ok((description, target, rest))
}

/// Splits and checks the arguments: the description must be a directory; the target is
/// created if missing. Both come back absolute and canonical, so the shares are exactly
/// these directories.
pub fn resolve(args: &[OsString]) -> Result<BuilderArgs> {
    let (description, target, rest) = split(args)?;
    let description = description.ok_or_else(|| {
        Error::setup(
            "no --description DIR after --: name the directory holding the image description",
        )
    })?;
    let target = target.ok_or_else(|| {
        Error::setup("no --target-dir DIR after --: name the directory the results go to")
    })?;
    let description = Path::new(&description);
    if !description.is_dir() {
        return Err(Error::setup(format!(
            "--description {}: not a directory",
            description.display()
        )));
    }
    let description = description
        .canonicalize()
        .context(|| format!("--description {}", description.display()))?;
    let target_path = Path::new(&target);
    std::fs::create_dir_all(target_path)
        .context(|| format!("--target-dir {}: cannot create it", target_path.display()))?;
    let target = target_path
        .canonicalize()
        .context(|| format!("--target-dir {}", target_path.display()))?;
    if target == description {
        return Err(Error::setup(
            "--target-dir is the same directory as --description: use a separate directory for results",
        ));
    }
    Ok(BuilderArgs {
        description,
        target,
        rest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn takes_out_both_forms_and_keeps_the_rest_in_order() {
        let (d, t, rest) = split(&os(&[
            "--type",
            "oem",
            "--description",
            "d",
            "--target-dir=o",
            "",
            "--x",
        ]))
        .unwrap();
        assert_eq!(d, Some("d".into()));
        assert_eq!(t, Some("o".into()));
        assert_eq!(rest, os(&["--type", "oem", "", "--x"]));
    }

    #[test]
    fn lookalike_options_pass_through() {
        let (d, _, rest) = split(&os(&["--descriptions", "--target-dirs=x"])).unwrap();
        assert_eq!(d, None);
        assert_eq!(rest, os(&["--descriptions", "--target-dirs=x"]));
    }

    #[test]
    fn missing_value_and_repeats_are_errors() {
        assert!(split(&os(&["--description"])).is_err());
        assert!(split(&os(&["--target-dir", "a", "--target-dir", "b"])).is_err());
    }

    #[test]
    fn resolve_checks_the_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let desc = tmp.path().join("desc");
        std::fs::create_dir(&desc).unwrap();
        let out = tmp.path().join("new/out");
        let args = vec![
            OsString::from("--description"),
            desc.clone().into_os_string(),
            OsString::from("--target-dir"),
            out.clone().into_os_string(),
        ];
        let resolved = resolve(&args).unwrap();
        assert!(out.is_dir(), "target is created");
        assert_eq!(resolved.description, desc.canonicalize().unwrap());
        let missing = vec![
            OsString::from("--description"),
            tmp.path().join("nope").into_os_string(),
            OsString::from("--target-dir"),
            out.into_os_string(),
        ];
        let err = resolve(&missing).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }
}
