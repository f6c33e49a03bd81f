//! Stashes and stackbuilds (docs/stash.md): the stash options turned into what a build
//! needs before its box starts (stashes resolved, locks held, the work share written),
//! and what it does after (the new stash committed, and pushed for `--stash oci://...`).
//! `app::build` runs the build itself; `stash list`, `stash push` and `stash pull` are here.

use crate::boxes::reference::{BoxReference, SCHEME};
use crate::boxes::stash::registry::{self, Remote, Wanted};
use crate::boxes::stash::{self as store, Pin, Source, StashDir, StashRef};
use crate::boxes::store::lock::{EntryLock, Mode};
use crate::cli::{BuildOptions, StackbuildArgs, StashArgs};
use crate::job::builder_args::BuilderArgs;
use crate::job::stash::{self as job_stash, StashInput, StashJob, Task};
use crate::sys::error::{Context, Error, Result};
use crate::sys::signals::SignalWatch;
use crate::sys::ui::Ui;
use p256::ecdsa::SigningKey;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// What a build does beyond a plain build.
pub enum Request<'a> {
    /// A build; with `--stash NAME[:TAG]` its image root becomes a stash.
    Build,
    Stackbuild(&'a StackbuildArgs),
    /// `system stash --root DIR`: a root tree on the host.
    StashRoot(&'a StashArgs),
}

/// A stash task set up for one run: held until the run ends.
pub struct StashRun {
    pub job: StashJob,
    /// For a stackbuild or a host root: the builder's arguments (a plain build has its own).
    pub args: Option<BuilderArgs>,
    commit: Option<(String, String)>,
    /// `--stash oci://...`: where the new stash goes after the commit.
    push: Option<Push>,
    dir: StashDir,
    work: tempfile::TempDir,
    _locks: Vec<EntryLock>,
    _empty: Option<tempfile::TempDir>,
}

/// A build's `--stash oci://...`: the registry, the tag to push to, the `--sign-key`
/// (its file, for the hint when the push fails, and the key read from it).
struct Push {
    remote: Remote,
    target: BoxReference,
    key: Option<(PathBuf, SigningKey)>,
}

fn waiting(ui: Ui, name: &str) -> impl FnOnce() + '_ {
    move || {
        ui.info(&format!(
            "waiting for stash {name:?}: another boxbuild is writing it"
        ))
    }
}

/// Checks the stash options and sets the task up; None for a build without `--stash`.
/// Every refusal is one line, before any box starts.
pub fn prepare(
    request: &Request,
    opts: &BuildOptions,
    signals: &SignalWatch,
    ui: Ui,
) -> Result<Option<StashRun>> {
    let dir = StashDir::new(opts.stash_dir.as_deref())?;
    let pushes = matches!(request, Request::Build)
        && matches!(opts.stash.as_slice(), [text] if text.starts_with(SCHEME));
    if opts.sign_key.is_some() && !pushes {
        return Err(Error::setup(
            "--sign-key signs the stash a build pushes: give it with --stash oci://REGISTRY/REPOSITORY[:TAG] (or use 'boxbuild stash push --sign-key')",
        ));
    }
    match request {
        Request::Build => {
            let [text] = opts.stash.as_slice() else {
                return match opts.stash.len() {
                    0 => Ok(None),
                    _ => Err(Error::setup(
                        "--stash is given more than once: a build stores one stash",
                    )),
                };
            };
            if text.starts_with(SCHEME) {
                let key = match &opts.sign_key {
                    Some(path) => Some((path.clone(), registry::signing_key(path)?)),
                    None => None,
                };
                return stash_and_push(dir, text, key, signals, ui).map(Some);
            }
            let stash = StashRef::parse(text)?;
            let Pin::Tag(tag) = stash.pin else {
                return Err(Error::setup(format!(
                    "--stash {text}: a new stash is named by a tag, not a digest"
                )));
            };
            stash_task(dir, stash.name, tag, None, None, signals, ui).map(Some)
        }
        Request::StashRoot(args) => {
            let root = args.root.as_ref().ok_or_else(|| {
                Error::setup("stash: give --root DIR (a kiwi image root tree) or 'stash list'")
            })?;
            let root = root
                .canonicalize()
                .context(|| format!("--root {}", root.display()))?;
            let config = root.join("image/config.xml");
            if !config.is_file() {
                return Err(Error::setup(format!(
                    "--root {}: no image/config.xml, not a kiwi image root tree",
                    root.display()
                )));
            }
            let name = match &args.container_name {
                Some(name) => name.clone(),
                None => image_name(&config)?,
            };
            store::check_name(&name)
                .map_err(|e| Error::setup(format!("{e}; choose a name with --container-name")))?;
            let tag = args.tag.clone().unwrap_or(store::DEFAULT_TAG.into());
            if !store::valid_tag(&tag) {
                return Err(Error::setup(format!("--tag {tag:?}: not a valid tag")));
            }
            let mut run = stash_task(dir, name, tag, Some(root), None, signals, ui)?;
            // No description or target of the user's: the log goes with the work dir.
            let empty =
                tempfile::tempdir().context(|| "cannot create a temporary dir".to_string())?;
            run.args = Some(BuilderArgs {
                description: empty.path().to_path_buf(),
                target: run.work.path().join("log"),
                rest: opts.kiwi_global_args(),
            });
            std::fs::create_dir_all(run.work.path().join("log"))
                .context(|| "cannot create the stash log dir".to_string())?;
            run._empty = Some(empty);
            Ok(Some(run))
        }
        Request::Stackbuild(args) => stackbuild(args, opts, dir, signals, ui).map(Some),
    }
}

/// `--stash oci://REGISTRY/REPOSITORY[:TAG]` on a build: stashed in the stash dir as
/// NAME:TAG (the repository's last part, the reference's tag or `latest`), then pushed
/// there. The registry is asked first whether it takes the push.
fn stash_and_push(
    dir: StashDir,
    text: &str,
    key: Option<(PathBuf, SigningKey)>,
    signals: &SignalWatch,
    ui: Ui,
) -> Result<StashRun> {
    let target = BoxReference::parse(text)?;
    if target.digest().is_some() {
        return Err(Error::setup(format!(
            "--stash {text}: a new stash is named by a tag, not a digest"
        )));
    }
    let name = repository_name(&target, "the repository's last part names the stash")?;
    let tag = target
        .written_tag()
        .unwrap_or(store::DEFAULT_TAG)
        .to_string();
    let remote = Remote::open(ui, signals)?;
    remote.check_target(&target)?;
    let mut run = stash_task(dir, name, tag.clone(), None, None, signals, ui)?;
    run.push = Some(Push {
        remote,
        target: target.at_tag(&tag),
        key,
    });
    Ok(run)
}

fn stash_task(
    dir: StashDir,
    name: String,
    tag: String,
    root: Option<PathBuf>,
    args: Option<BuilderArgs>,
    signals: &SignalWatch,
    ui: Ui,
) -> Result<StashRun> {
    // Writers of one name take turns; the lock is held until the new version is in.
    let lock = dir.lock(&name, Mode::Exclusive, signals, waiting(ui, &name))?;
    let base = dir.newest(&name)?;
    ui.detail(&match &base {
        Some(b) => format!("stash {name}:{tag} adds a layer to {}", b.digest),
        None => format!("stash {name}:{tag} is new"),
    });
    let work = dir.staging(&name)?;
    let task = Task::Stash {
        name: name.clone(),
        tag: tag.clone(),
        base: base.map(|b| (dir.path(&name), b.digest)),
        root,
    };
    let job = job_stash::prepare(&task, &dir.root, work.path())?;
    Ok(StashRun {
        job,
        args,
        commit: Some((name, tag)),
        push: None,
        dir,
        work,
        _locks: vec![lock],
        _empty: None,
    })
}

fn stackbuild(
    args: &StackbuildArgs,
    opts: &BuildOptions,
    dir: StashDir,
    signals: &SignalWatch,
    ui: Ui,
) -> Result<StashRun> {
    if opts.stash.is_empty() {
        return Err(Error::setup(
            "stackbuild: name at least one --stash NAME[:TAG] (or oci://REGISTRY/REPOSITORY:TAG)",
        ));
    }
    let from = args.from_registry.as_deref();
    let wanted = opts
        .stash
        .iter()
        .map(|s| registry::wanted(s, from))
        .collect::<Result<Vec<_>>>()?;
    // The stash dir's stashes first: a typo there costs no registry round trip.
    let mut locks = Vec::new();
    let mut inputs: Vec<Option<StashInput>> = vec![None; wanted.len()];
    for (slot, w) in inputs.iter_mut().zip(&wanted) {
        if let Wanted::Local(stash) = w {
            locks.push(dir.lock(&stash.name, Mode::Shared, signals, waiting(ui, &stash.name))?);
            *slot = Some(input(&stash.to_string(), dir.resolve(stash)?, ui));
        }
    }
    let description = match &args.description {
        Some(d) if !d.is_dir() => {
            return Err(Error::setup(format!(
                "--description {}: not a directory",
                d.display()
            )))
        }
        Some(d) => Some(
            d.canonicalize()
                .context(|| format!("--description {}", d.display()))?,
        ),
        None => None,
    };
    std::fs::create_dir_all(&args.target_dir).context(|| {
        format!(
            "--target-dir {}: cannot create it",
            args.target_dir.display()
        )
    })?;
    let target = args
        .target_dir
        .canonicalize()
        .context(|| format!("--target-dir {}", args.target_dir.display()))?;
    if description.as_ref() == Some(&target) {
        return Err(Error::setup(
            "--target-dir is the same directory as --description: use a separate directory for results",
        ));
    }
    if wanted.iter().any(|w| matches!(w, Wanted::Remote(_))) {
        let remote = Remote::open(ui, signals)?;
        // Every pull first (each under its own exclusive lock), then the shared locks.
        let mut pulled = Vec::new();
        for (i, w) in wanted.iter().enumerate() {
            if let Wanted::Remote(reference) = w {
                pulled.push((i, reference, remote.cache(&dir, reference)?));
            }
        }
        for (i, reference, digest) in pulled {
            let (lock, source) = remote.hold(&dir, reference, &digest)?;
            locks.push(lock);
            inputs[i] = Some(input(&reference.text, source, ui));
        }
    }
    let inputs: Vec<StashInput> = inputs.into_iter().flatten().collect();
    let work = dir.staging("stackbuild")?;
    let task = Task::Stackbuild {
        stashes: inputs,
        description: description.is_some(),
    };
    let job = job_stash::prepare(&task, &dir.root, work.path())?;
    let (description, empty) = match description {
        Some(d) => (d, None),
        None => {
            let empty =
                tempfile::tempdir().context(|| "cannot create a temporary dir".to_string())?;
            (empty.path().to_path_buf(), Some(empty))
        }
    };
    let mut rest: Vec<OsString> = opts.kiwi_global_args();
    rest.extend(opts.builder_args.iter().cloned());
    Ok(StashRun {
        job,
        args: Some(BuilderArgs {
            description,
            target,
            rest,
        }),
        commit: None,
        push: None,
        dir,
        work,
        _locks: locks,
        _empty: empty,
    })
}

/// What the box reads for stash `reference`, found at `source`.
fn input(reference: &str, source: Source, ui: Ui) -> StashInput {
    match source {
        Source::Layout { dir, manifest } => {
            ui.detail(&format!("stash {reference} is {manifest}"));
            StashInput::Layout {
                reference: reference.to_string(),
                dir,
                manifest,
            }
        }
        Source::Archive { file, reference } => StashInput::Archive { reference, file },
    }
}

/// `<image name="...">` of a kiwi description.
fn image_name(config: &Path) -> Result<String> {
    let text = std::fs::read_to_string(config).context(|| format!("{}", config.display()))?;
    let at = text
        .find("<image")
        .ok_or_else(|| Error::setup(format!("{}: no <image> element", config.display())))?;
    let tag = &text[at..text[at..].find('>').map_or(text.len(), |e| at + e)];
    let name = tag
        .split_whitespace()
        .find_map(|w| w.strip_prefix("name="))
        .map(|v| {
            v.trim_end_matches('/')
                .trim_matches(|c| c == '"' || c == '\'')
        })
        .ok_or_else(|| Error::setup(format!("{}: <image> has no name", config.display())))?;
    Ok(name.to_string())
}

impl StashRun {
    /// Checks that the box's builder is the kiwi builder the stash helper wraps.
    pub fn check_box(&self, builder: &[String]) -> Result<()> {
        if job_stash::builder_fits(builder) {
            Ok(())
        } else {
            Err(Error::setup(format!(
                "{}: the box's builder is {:?}; stashes need a kiwi box (its builder {})",
                self.job.mode(),
                builder.first().map(String::as_str).unwrap_or(""),
                job_stash::KIWI_BUILDER
            )))
        }
    }

    /// After the builder's status: a stash is committed when the build succeeded.
    pub fn finish(&self, code: u8, ui: Ui) -> Result<u8> {
        let Some((name, tag)) = &self.commit else {
            return Ok(code);
        };
        if code != 0 {
            ui.info(&format!(
                "the build failed: stash {name}:{tag} left as it was"
            ));
            return Ok(code);
        }
        let digest = self.dir.commit(name, tag, &self.work.path().join("out"))?;
        ui.info(&format!(
            "stashed {name}:{tag} ({digest}) in {}",
            self.dir.path(name).display()
        ));
        if let Some(Push {
            remote,
            target,
            key,
        }) = &self.push
        {
            let stash = StashRef {
                name: name.clone(),
                pin: Pin::Tag(tag.clone()),
            };
            let (digest, target) = remote
                .push(
                    &self.dir,
                    &stash,
                    target,
                    key.as_ref().map(|(_, key)| key),
                    self._locks.first(),
                )
                .map_err(|e| {
                    let sign = match key {
                        Some((path, _)) => format!(" --sign-key {}", path.display()),
                        None => String::new(),
                    };
                    Error::setup(format!(
                        "stash {stash} is in the stash dir, but its push failed: {e}; push it with 'boxbuild stash push{sign} {stash} {}'",
                        target.text
                    ))
                })?;
            ui.info(&format!(
                "pushed stash {stash} to {} as {digest}{}",
                target.text,
                if key.is_some() { ", signed" } else { "" }
            ));
        }
        Ok(code)
    }
}

/// `stash list` / `system stash --list`: names, tags, layers, digests, sizes.
pub fn list(stash_dir: Option<&Path>) -> Result<u8> {
    let dir = StashDir::new(stash_dir)?;
    let mut out = String::new();
    out.push_str(&format!("# stashes in {}\n", dir.root.display()));
    out.push_str("NAME\tTAG\tLAYERS\tSIZE\tDIGEST\tCREATED\n");
    for name in dir.names() {
        match dir.versions(&name) {
            Ok(versions) if versions.is_empty() => out.push_str(&format!(
                "{name}\t-\t-\t{}\t(oci-archive of kiwi-ng system stash)\t-\n",
                mib(
                    std::fs::metadata(dir.path(&name).join(format!("{name}.tar")))
                        .map(|m| m.len())
                        .unwrap_or(0)
                )
            )),
            Ok(versions) => {
                for v in versions {
                    out.push_str(&format!(
                        "{name}\t{}\t{}\t{}\t{}\t{}\n",
                        v.tag.as_deref().unwrap_or("-"),
                        v.layers.len(),
                        mib(v.size),
                        v.digest,
                        v.created.as_deref().unwrap_or("-")
                    ))
                }
            }
            Err(e) => out.push_str(&format!("{name}\t-\t-\t-\t({e})\t-\n")),
        }
    }
    crate::sys::ui::say(out.trim_end());
    Ok(0)
}

/// `stash remove NAME`: every version of the stash. Errors, one line, exit 125: no such
/// stash (or not a stash name), a tag or digest given, a running boxbuild using it.
pub fn remove(stash_dir: Option<&Path>, name: &str) -> Result<u8> {
    let dir = StashDir::new(stash_dir)?;
    let stash = StashRef::parse(name)?;
    if name.contains([':', '@']) {
        return Err(Error::setup(format!(
            "stash remove {name}: name the whole stash ({}); single versions are not removed",
            stash.name
        )));
    }
    if !dir.path(name).is_dir() {
        return Err(Error::setup(format!(
            "no stash {name:?} in {} (see 'boxbuild stash list')",
            dir.root.display()
        )));
    }
    match dir.remove(name)? {
        Some(bytes) => {
            crate::sys::ui::say(&format!("removed stash {name} ({})", mib(bytes)));
            Ok(0)
        }
        None => Err(Error::setup(format!(
            "stash {name} is in use by a running boxbuild; remove it when that ends"
        ))),
    }
}

/// `stash prune [--dry-run]`: the registry cache's entries (`STASH_DIR/.registry/`), each
/// removed whole unless a running stackbuild holds it; a line per entry.
pub fn prune(stash_dir: Option<&Path>, dry_run: bool) -> Result<u8> {
    let dir = StashDir::new(stash_dir)?;
    let mut freed = 0;
    let mut said = Vec::new();
    for entry in registry::cache_entries(&dir) {
        if dry_run {
            let bytes = crate::boxes::store::du(&dir.path(&entry));
            said.push(format!("would remove {entry} ({})", mib(bytes)));
            continue;
        }
        match dir.remove(&entry)? {
            Some(bytes) => {
                freed += bytes;
                said.push(format!("removed {entry} ({})", mib(bytes)));
            }
            None => said.push(format!("kept {entry}: a running stackbuild uses it")),
        }
    }
    if said.is_empty() {
        said.push(format!(
            "the registry cache of {} is empty",
            dir.root.display()
        ));
    } else if !dry_run {
        said.push(format!("freed {}", mib(freed)));
    }
    crate::sys::ui::say(&said.join("\n"));
    Ok(0)
}

/// `stash push NAME[:TAG] oci://REGISTRY/REPOSITORY[:TAG] [--sign-key KEY]`.
pub fn push(
    stash_dir: Option<&Path>,
    stash: &str,
    target: &str,
    sign_key: Option<&Path>,
    ui: Ui,
) -> Result<u8> {
    let dir = StashDir::new(stash_dir)?;
    let stash = StashRef::parse(stash)?;
    let target = BoxReference::parse(target)?;
    let signals = SignalWatch::install()?;
    let key = sign_key.map(registry::signing_key).transpose()?;
    let remote = Remote::open(ui, &signals)?;
    let (digest, target) = remote.push(&dir, &stash, &target, key.as_ref(), None)?;
    crate::sys::ui::say(&format!(
        "pushed stash {stash} to {} as {digest}{}",
        target.text,
        if sign_key.is_some() { ", signed" } else { "" }
    ));
    Ok(0)
}

/// `stash pull oci://REGISTRY/REPOSITORY[:TAG|@DIGEST] [NAME[:TAG]]`.
pub fn pull(stash_dir: Option<&Path>, reference: &str, stash: Option<&str>, ui: Ui) -> Result<u8> {
    let dir = StashDir::new(stash_dir)?;
    let reference = BoxReference::parse(reference)?;
    let (name, tag) = match stash {
        Some(text) => {
            let stash = StashRef::parse(text)?;
            match stash.pin {
                Pin::Tag(tag) if text.contains(':') => (stash.name, tag),
                Pin::Tag(_) => (stash.name, pulled_tag(&reference)),
                Pin::Digest(_) => {
                    return Err(Error::setup(format!(
                        "{text}: a pulled stash is named by a tag, not a digest"
                    )))
                }
            }
        }
        None => {
            let name = repository_name(
                &reference,
                &format!("name the stash: 'stash pull {} NAME[:TAG]'", reference.text),
            )?;
            (name, pulled_tag(&reference))
        }
    };
    let signals = SignalWatch::install()?;
    let remote = Remote::open(ui, &signals)?;
    let digest = remote.pull(&dir, &reference, &name, &tag)?;
    crate::sys::ui::say(&format!(
        "stash {name}:{tag} is {} ({digest}) in {}",
        reference.text,
        dir.path(&name).display()
    ));
    Ok(0)
}

/// The stash name a registry reference gives: its repository's last part, if kiwi takes
/// it as a name. Errors: one line naming the reference, ending with `hint`.
fn repository_name(reference: &BoxReference, hint: &str) -> Result<String> {
    let last = reference
        .inner
        .repository()
        .rsplit('/')
        .next()
        .unwrap_or_default();
    store::check_name(last)
        .map_err(|e| Error::setup(format!("{}: {e}; {hint}", reference.text)))?;
    Ok(last.to_string())
}

/// The tag a pulled stash gets by default: the reference's, else `latest`.
fn pulled_tag(reference: &BoxReference) -> String {
    match (reference.digest(), reference.inner.tag()) {
        (None, Some(tag)) => tag.to_string(),
        _ => store::DEFAULT_TAG.to_string(),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("config.xml");
        std::fs::write(
            &f,
            "<?xml version=\"1.0\"?>\n<image schemaversion=\"8.0\" name=\"debian-tarball\">",
        )
        .unwrap();
        assert_eq!(image_name(&f).unwrap(), "debian-tarball");
    }
}
