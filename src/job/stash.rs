//! What the box is told for a stash or a stackbuild (docs/stash.md): a work share holding
//! the in-box helper (`stash-in-box.py`) and its `plan.json`, the stash dir shared
//! read-only, and the builder's argv wrapped by the helper. The helper runs the box's kiwi
//! builder (`boxbuild-kiwi`) and does the OCI work with the box's umoci and rsync.

use crate::job::shares::SharedDir;
use crate::sys::error::{Context, Error, Result};
use guest_agent::protocol::Job;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The stash dir in the box (read-only).
pub const GUEST_STASHES: &str = "/boxbuild-stashes";
/// The work share in the box (read-write): helper, plan, and the new blobs in `out/`.
pub const GUEST_WORK: &str = "/boxbuild-stash";
/// A root tree on the host for `system stash --root` (read-only).
pub const GUEST_ROOT: &str = "/boxbuild-stash-root";
const HELPER: &str = "stash-in-box.py";
const HELPER_TEXT: &str = include_str!("stash-in-box.py");

/// The builder the helper wraps: the Debian box's.
pub const KIWI_BUILDER: &str = "boxbuild-kiwi";

/// One stash for the box to read, as a path below the stash dir.
#[derive(Debug, Clone)]
pub enum StashInput {
    Layout {
        reference: String,
        dir: PathBuf,
        manifest: String,
    },
    Archive {
        reference: String,
        file: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub enum Task {
    /// Store the image root as `name:tag`, on `base` (dir below the stash dir, manifest).
    Stash {
        name: String,
        tag: String,
        base: Option<(PathBuf, String)>,
        /// A root tree shared from the host instead of the build's (`system stash --root`).
        root: Option<PathBuf>,
    },
    Stackbuild {
        stashes: Vec<StashInput>,
        description: bool,
    },
}

/// The shares and the plan of one task.
#[derive(Debug)]
pub struct StashJob {
    pub shares: Vec<SharedDir>,
    plan: Value,
}

fn guest_below(stash_dir: &Path, host: &Path) -> Result<String> {
    let rel = host.strip_prefix(stash_dir).map_err(|_| {
        Error::setup(format!(
            "{} is not below the stash dir {}",
            host.display(),
            stash_dir.display()
        ))
    })?;
    Ok(Path::new(GUEST_STASHES).join(rel).display().to_string())
}

/// Writes the helper and its plan into `work` (a host dir the box gets read-write).
pub fn prepare(task: &Task, stash_dir: &Path, work: &Path) -> Result<StashJob> {
    let out = format!("{GUEST_WORK}/out");
    let mut shares = vec![
        SharedDir {
            tag: "stashes".into(),
            host: stash_dir.to_path_buf(),
            guest: GUEST_STASHES.into(),
            readonly: true,
        },
        SharedDir {
            tag: "stashwork".into(),
            host: work.to_path_buf(),
            guest: GUEST_WORK.into(),
            readonly: false,
        },
    ];
    let plan = match task {
        Task::Stash {
            name,
            tag,
            base,
            root,
        } => {
            let base = match base {
                Some((dir, manifest)) => {
                    json!({"layout": guest_below(stash_dir, dir)?, "manifest": manifest})
                }
                None => Value::Null,
            };
            if let Some(root) = root {
                shares.push(SharedDir {
                    tag: "stashroot".into(),
                    host: root.clone(),
                    guest: GUEST_ROOT.into(),
                    readonly: true,
                });
            }
            json!({"mode": "stash", "name": name, "tag": tag, "base": base, "out": out,
                   "root": root.as_ref().map(|_| GUEST_ROOT)})
        }
        Task::Stackbuild {
            stashes,
            description,
        } => {
            let mut items = Vec::new();
            for s in stashes {
                items.push(match s {
                    StashInput::Layout {
                        reference,
                        dir,
                        manifest,
                    } => json!({"ref": reference, "layout": guest_below(stash_dir, dir)?,
                                "manifest": manifest}),
                    StashInput::Archive { reference, file } => {
                        json!({"ref": reference, "archive": guest_below(stash_dir, file)?})
                    }
                });
            }
            json!({"mode": "stackbuild", "stashes": items, "description": description})
        }
    };
    std::fs::create_dir_all(work.join("out"))
        .context(|| format!("cannot create {}", work.display()))?;
    std::fs::write(work.join(HELPER), HELPER_TEXT)
        .context(|| format!("cannot write {}", work.display()))?;
    std::fs::write(
        work.join("plan.json"),
        serde_json::to_vec(&plan).unwrap_or_default(),
    )
    .context(|| format!("cannot write {}", work.display()))?;
    Ok(StashJob { shares, plan })
}

/// Whether a box's builder is the kiwi builder the helper knows how to wrap.
pub fn builder_fits(builder: &[String]) -> bool {
    builder
        .first()
        .is_some_and(|b| Path::new(b).file_name().is_some_and(|n| n == KIWI_BUILDER))
}

impl StashJob {
    /// The job with its builder run through the helper.
    pub fn wrap(&self, mut job: Job) -> Job {
        let mut argv = vec![
            b"python3".to_vec(),
            format!("{GUEST_WORK}/{HELPER}").into_bytes(),
        ];
        argv.append(&mut job.argv);
        job.argv = argv;
        job.env
            .push(format!("BOXBUILD_STASH_PLAN={GUEST_WORK}/plan.json").into_bytes());
        job.env
            .push(format!("BOXBUILD_STASH_WORK={GUEST_WORK}").into_bytes());
        job
    }

    pub fn mode(&self) -> &str {
        self.plan["mode"].as_str().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_names_guest_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let stashes = tmp.path().join("s");
        let work = stashes.join(".incoming/x");
        let job = prepare(
            &Task::Stash {
                name: "base".into(),
                tag: "1".into(),
                base: Some((stashes.join("base"), "sha256:ab".into())),
                root: None,
            },
            &stashes,
            &work,
        )
        .unwrap();
        assert_eq!(job.mode(), "stash");
        assert_eq!(job.plan["base"]["layout"], "/boxbuild-stashes/base");
        assert!(work.join(HELPER).is_file());
        assert_eq!(job.shares.len(), 2);
        assert!(job.shares[0].readonly && !job.shares[1].readonly);
        assert!(builder_fits(&["/usr/local/bin/boxbuild-kiwi".into()]));
        assert!(!builder_fits(&["/usr/bin/test-builder".into()]));
    }
}
