//! Test fixture: the tiny box (built once by boxes/tiny/build.sh) and an isolated
//! environment per test (own TMPDIR, HOME and catalog), so run dirs and leftovers of one
//! test are visible to it alone.
#![allow(dead_code)]

pub mod faulty;
pub mod http;
pub mod registry;
pub mod served;
pub mod userland;

use std::fs;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The built tiny box for this host's architecture: `$BOXBUILD_TEST_BOX_DIR`, or built
/// into target/test-boxes on first use (serialised across test processes by a lock).
pub fn tiny_box_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| match std::env::var_os("BOXBUILD_TEST_BOX_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => build_tiny_box(std::env::consts::ARCH),
    })
}

/// The tiny box's version, as its catalog names it.
pub fn tiny_version() -> String {
    let text = fs::read_to_string(tiny_box_dir().join("catalog.toml")).unwrap();
    let line = text.lines().find(|l| l.starts_with("version = ")).unwrap();
    line.split('"').nth(1).unwrap().to_string()
}

/// A catalog in `dir` naming the tiny box for this architecture and the other one.
pub fn two_arch_catalog(dir: &Path) -> PathBuf {
    let host = fs::read_to_string(tiny_box_dir().join("catalog.toml")).unwrap();
    let foreign = fs::read_to_string(foreign_tiny_box_dir().join("catalog.toml")).unwrap();
    let versions = &foreign[foreign.find("[[boxes.tiny.versions]]").unwrap()..];
    let path = dir.join("two-arch.toml");
    fs::write(&path, format!("{host}\n{versions}")).unwrap();
    path
}

/// The tiny box of another architecture (its agent cross-built by boxes/lib/build-agent.sh).
pub fn foreign_tiny_box_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_tiny_box(foreign_arch()))
}

/// The tiny box of any architecture the recipe supports (built on first use).
pub fn tiny_box_dir_for(arch: &str) -> PathBuf {
    build_tiny_box(arch)
}

/// The architecture that is not this host's: aarch64 on x86_64 and the way back.
pub fn foreign_arch() -> &'static str {
    if std::env::consts::ARCH == "aarch64" {
        "x86_64"
    } else {
        "aarch64"
    }
}

fn build_tiny_box(arch: &str) -> PathBuf {
    build_box("tiny", arch, &[])
}

/// The tiny box with Debian's compressed kernel kept beside it as `vmlinuz`.
pub fn tiny_box_with_vmlinuz_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_box("tiny", std::env::consts::ARCH, &["--keep-vmlinuz"]))
}

/// The tiny box speaking the guest protocol of KIWI's Python plugin (box `tiny-plugin`).
pub fn plugin_box_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_box("tiny", std::env::consts::ARCH, &["--plugin"]))
}

/// The Debian kiwi box: `$BOXBUILD_TEST_DEBIAN_BOX_DIR`, else the one scripts/install.sh
/// built (in the user's data dir, or the system's for a root install) if it is current,
/// else one built here (a few minutes; needs a Debian mirror and PyPI).
pub fn debian_box_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("BOXBUILD_TEST_DEBIAN_BOX_DIR") {
            return PathBuf::from(dir);
        }
        let arch = std::env::consts::ARCH;
        let data = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap()).join(".local/share")
            });
        let stamp = recipe_stamp("debian");
        for installed in [
            data.join(format!("boxbuild/boxes/debian-{arch}")),
            PathBuf::from(format!("/var/lib/boxbuild/boxes/debian-{arch}")),
        ] {
            let current = fs::read_to_string(installed.join(".recipe-stamp")).ok();
            if current.as_deref().map(str::trim) == Some(stamp.as_str()) {
                return installed;
            }
        }
        build_box("debian", arch, &[])
    })
}

/// Builds boxes/RECIPE for ARCH into target/test-boxes, unless a build from the same
/// recipe and agent is there already.
fn build_box(recipe: &str, arch: &str, options: &[&str]) -> PathBuf {
    let variant: String = options.iter().map(|o| o.trim_start_matches('-')).collect();
    let dir = repo_root().join("target/test-boxes").join(format!(
        "{recipe}{}{variant}-{arch}",
        if variant.is_empty() { "" } else { "-" }
    ));
    fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let lock = fs::File::create(dir.with_extension("lock")).unwrap();
    // SAFETY: flock on an open file descriptor.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let stamp = recipe_stamp(recipe);
    let stamp_file = dir.join(".recipe-stamp");
    let current = fs::read_to_string(&stamp_file).ok();
    if !dir.join("catalog.toml").exists()
        || current.as_deref().map(str::trim) != Some(stamp.as_str())
    {
        let status = Command::new(repo_root().join(format!("boxes/{recipe}/build.sh")))
            .arg(&dir)
            .args(["--arch", arch])
            .args(options)
            .status()
            .unwrap_or_else(|e| panic!("run boxes/{recipe}/build.sh: {e}"));
        assert!(status.success(), "building the {recipe} {arch} box failed");
        fs::write(&stamp_file, &stamp).unwrap();
    }
    dir
}

/// boxes/lib/recipe-stamp.sh: a digest of the recipe, the recipe library and the agent.
fn recipe_stamp(recipe: &str) -> String {
    let out = Command::new(repo_root().join("boxes/lib/recipe-stamp.sh"))
        .arg(recipe)
        .output()
        .expect("run boxes/lib/recipe-stamp.sh");
    assert!(out.status.success(), "recipe-stamp.sh {recipe} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub desc: PathBuf,
    pub out: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::Builder::new().prefix("bbt-").tempdir().unwrap();
        let desc = tmp.path().join("desc");
        let out = tmp.path().join("out");
        fs::create_dir_all(&desc).unwrap();
        fs::create_dir_all(tmp.path().join("tmp")).unwrap();
        fs::create_dir_all(tmp.path().join("home")).unwrap();
        Env { tmp, desc, out }
    }

    /// Puts a build script into the description dir (run by box-test-builder).
    pub fn script(&self, text: &str) -> &Env {
        fs::write(self.desc.join("script.sh"), text).unwrap();
        self
    }

    /// The box cache of this test's boxbuild (XDG_CACHE_HOME/boxbuild).
    pub fn cache_dir(&self) -> PathBuf {
        self.tmp.path().join("home/.cache/boxbuild")
    }

    pub fn tmpdir(&self) -> PathBuf {
        self.tmp.path().join("tmp")
    }

    /// `boxbuild` with this test's environment; TCG, as everywhere in the tests.
    pub fn boxbuild(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_boxbuild"));
        c.env("BOXBUILD_CONFIG", tiny_box_dir().join("catalog.toml"))
            .env("TMPDIR", self.tmpdir())
            .env("HOME", self.tmp.path().join("home"))
            .env("XDG_CONFIG_HOME", self.tmp.path().join("home/.config"))
            .env("XDG_CACHE_HOME", self.tmp.path().join("home/.cache"))
            .current_dir(self.tmp.path());
        c
    }

    /// `boxbuild --no-accel --box tiny -- --description D --target-dir O <args>`.
    pub fn build_command(&self, extra: &[&str], args: &[&str]) -> Command {
        let mut c = self.boxbuild();
        c.args(["--no-accel", "--box", "tiny"]);
        // scripts/test.sh runs the spine once more per backend.
        if let Ok(flag) = std::env::var("BOXBUILD_TEST_SHARING") {
            c.arg(flag);
        }
        c.args(extra)
            .arg("--")
            .arg("--description")
            .arg(&self.desc)
            .arg("--target-dir")
            .arg(&self.out)
            .args(args);
        c
    }

    pub fn build(&self, extra: &[&str], args: &[&str]) -> Output {
        self.build_command(extra, args).output().unwrap()
    }

    /// Run dirs left behind in this test's TMPDIR.
    pub fn leftover_run_dirs(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        if let Ok(bases) = fs::read_dir(self.tmpdir()) {
            for base in bases.flatten() {
                if let Ok(runs) = fs::read_dir(base.path()) {
                    for run in runs.flatten() {
                        let name = run.file_name().to_string_lossy().into_owned();
                        if name.starts_with("run-") || name.starts_with("probe-") {
                            found.push(run.path());
                        }
                    }
                }
            }
        }
        found
    }

    /// Processes whose command line mentions this test's directory (QEMU of its runs).
    pub fn leftover_processes(&self) -> Vec<String> {
        processes_mentioning(self.tmp.path())
    }
}

pub fn processes_mentioning(path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(&needle) && !text.contains("cargo") {
                found.push(format!("{name}: {text}"));
            }
        }
    }
    found
}

/// Asserts a zero exit status, showing both streams when it is not.
pub fn ok(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

/// A `--container` build refused before anything started because its image type needs
/// loop devices: exit 125, one line naming the type and saying to drop --container.
pub fn assert_loop_type_refused(out: &Output, image_type: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains(&format!("'{image_type}'")) && err.contains("drop --container"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Refused before any box started: exit 125 and exactly one line, `boxbuild: error: `
/// and then a message containing `says`.
pub fn refused(out: &Output, says: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("boxbuild: error: ") && err.contains(says),
        "wanted {says:?}: {err}"
    );
    assert!(!err.contains("box debian"), "a box started: {err}");
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The unprivileged test user (`boxbuild-test`, a system user with subordinate ids, which
/// user namespaces need), made if missing; its name and uid. Only as root.
pub fn test_user() -> (&'static str, u32) {
    let user = "boxbuild-test";
    if Command::new("id").arg(user).output().unwrap().status.code() != Some(0) {
        let made = Command::new("useradd")
            .args(["--system", "--no-create-home", user])
            .status()
            .unwrap();
        assert!(made.success(), "useradd failed");
    }
    let subuids = fs::read_to_string("/etc/subuid").unwrap_or_default();
    if !subuids.lines().any(|l| l.starts_with(&format!("{user}:"))) {
        let added = Command::new("usermod")
            .args([
                "--add-subuids",
                "200000-265535",
                "--add-subgids",
                "200000-265535",
                user,
            ])
            .status()
            .unwrap();
        assert!(added.success(), "usermod --add-subuids failed");
    }
    let uid = String::from_utf8(
        Command::new("id")
            .args(["-u", user])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    (user, uid)
}

/// Everything a test user needs, where it can read it: copies of the tiny box (with its
/// catalog) and of boxbuild under `env`'s dir, all readable, and `env`'s tmp and home
/// owned by `uid`. Returns the catalog and the boxbuild binary.
pub fn hand_over(env: &Env, uid: u32) -> (PathBuf, PathBuf) {
    hand_over_box(env, uid, tiny_box_dir())
}

/// `hand_over` for the tiny box built in `source` (another architecture's, say).
pub fn hand_over_box(env: &Env, uid: u32, source: &Path) -> (PathBuf, PathBuf) {
    let root = env.tmp.path();
    let boxdir = root.join("box");
    fs::create_dir(&boxdir).unwrap();
    for f in ["kernel", "initrd", "disk.qcow2"] {
        fs::copy(source.join(f), boxdir.join(f)).unwrap();
    }
    let catalog = fs::read_to_string(source.join("catalog.toml"))
        .unwrap()
        .replace(source.to_str().unwrap(), boxdir.to_str().unwrap());
    fs::write(boxdir.join("catalog.toml"), catalog).unwrap();
    let exe = root.join("boxbuild");
    fs::copy(env!("CARGO_BIN_EXE_boxbuild"), &exe).unwrap();
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(root)
        .status()
        .unwrap();
    Command::new("chown")
        .args(["-R", &format!("{uid}")])
        .arg(root.join("tmp"))
        .arg(root.join("home"))
        .status()
        .unwrap();
    (boxdir.join("catalog.toml"), exe)
}

/// `runuser -u USER -- env ...` with the user's own HOME, TMPDIR and XDG dirs under `env`'s
/// dir (whatever the caller's environment names); the command to run follows.
pub fn as_user(env: &Env, user: &str) -> Command {
    let root = env.tmp.path();
    let mut c = Command::new("runuser");
    c.args(["-u", user, "--", "env"])
        .arg(format!("HOME={}", root.join("home").display()))
        .arg(format!("TMPDIR={}", root.join("tmp").display()))
        .arg(format!(
            "XDG_CACHE_HOME={}",
            root.join("home/.cache").display()
        ))
        .arg(format!(
            "XDG_CONFIG_HOME={}",
            root.join("home/.config").display()
        ))
        .arg(format!(
            "XDG_DATA_HOME={}",
            root.join("home/.local/share").display()
        ));
    c
}
