//! The command line. Options follow KIWI's Python boxbuild plugin so its users keep their
//! habits; everything after `--` belongs to the builder and is passed on untouched.

use clap::{ArgAction, Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "boxbuild",
    version,
    about = "Run an OS-image builder (kiwi-ng) inside a throw-away virtual machine",
    after_help = "Example:\n  boxbuild --box tiny -- --description ./desc --target-dir ./out\n\n\
                  Exit status: the builder's own (0-255); 123 the box failed, 124 timeout, \
                  125 setup error, 128+N interrupted by signal N.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub build: BuildOptions,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage boxes: list, fetch, update, outdated, prune, remove, verify, push, sign.
    #[command(name = "box")]
    Box(BoxArgs),
    /// Stashes (image root trees kept as OCI images): 'stash list'; 'system stash --root
    /// DIR' stores a root tree from the host (docs/stash.md).
    Stash(StashArgs),
    /// Build an image from one or more stashes stacked in order (kiwi's 'system
    /// stackbuild'), in the box (docs/stash.md).
    Stackbuild(StackbuildArgs),
}

#[derive(Debug, Args)]
pub struct BoxArgs {
    /// Say more about what boxbuild does (repeat for more).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// Print only results and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: BoxCommand,
}

#[derive(Debug, Subcommand)]
pub enum BoxCommand {
    /// List the boxes the catalogs know and the versions at hand.
    List,
    /// Fetch a box into the cache: the newest version, or NAME@VERSION.
    Fetch {
        #[arg(value_name = "NAME[@VERSION]")]
        box_ref: String,
        /// The box's architecture (default: this machine's).
        #[arg(long, value_name = "ARCH")]
        arch: Option<String>,
    },
    /// Check the catalogs now and fetch the newest version of the cached boxes (or of
    /// the boxes named).
    Update {
        #[arg(value_name = "NAME")]
        names: Vec<String>,
        /// Only this architecture.
        #[arg(long, value_name = "ARCH")]
        arch: Option<String>,
    },
    /// List cached boxes whose catalog has a newer version.
    Outdated,
    /// Remove every cached version but the newest of each box, and unfinished downloads;
    /// versions in use by a running build stay.
    Prune {
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove a box from the cache: every version, or NAME@VERSION.
    Remove {
        #[arg(value_name = "NAME[@VERSION]")]
        box_ref: String,
        /// Only this architecture.
        #[arg(long, value_name = "ARCH")]
        arch: Option<String>,
    },
    /// Re-hash cached boxes (all, or those named); damaged ones are removed.
    Verify {
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },
    /// Push a box version (every architecture the catalog has) to an OCI registry as one
    /// image index, e.g. 'box push debian@12.1.0 oci://registry.example.org/boxes/debian:12.1.0';
    /// the source may also be a registry box (oci://...) or an OCI layout (oci:DIR:TAG).
    Push {
        #[arg(value_name = "NAME@VERSION|oci://...")]
        box_ref: String,
        #[arg(value_name = "oci://REGISTRY/REPOSITORY:TAG")]
        target: String,
        /// Only these architectures (repeatable; default: all the catalog names).
        #[arg(long, value_name = "ARCH")]
        arch: Vec<String>,
        /// Sign the pushed index with this P-256 private key (PKCS#8 PEM), as cosign does.
        #[arg(long, value_name = "KEY")]
        sign_key: Option<PathBuf>,
        /// Store the disk zstd-compressed (smaller transfers; decompressed once at pull).
        #[arg(long)]
        zstd: bool,
    },
    /// Sign what an OCI reference names now, as cosign does (signature stored beside it).
    Sign {
        #[arg(value_name = "oci://REGISTRY/REPOSITORY:TAG")]
        reference: String,
        /// P-256 private key (PKCS#8 PEM).
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct BuildOptions {
    /// The box to build in, as NAME or NAME@VERSION.
    #[arg(long = "box", value_name = "NAME")]
    pub box_name: Option<String>,

    /// Memory of the box, e.g. 512M or 8G (a bare number means GiB).
    #[arg(long, value_name = "SIZE")]
    pub box_memory: Option<String>,

    /// Number of virtual CPUs of the box.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=512))]
    pub box_smp_cpus: Option<u32>,

    /// Do not use KVM; emulate the CPU (TCG).
    #[arg(long)]
    pub no_accel: bool,

    /// QEMU machine type (default: q35 on x86_64, virt on aarch64).
    #[arg(long, value_name = "TYPE")]
    pub machine: Option<String>,

    /// QEMU CPU model (default: host with KVM, max without).
    #[arg(long, value_name = "MODEL")]
    pub cpu: Option<String>,

    /// Show the box's console on stderr while it runs.
    #[arg(long)]
    pub box_console: bool,

    /// Stop the box and fail when the whole run takes longer, e.g. 90s, 30m, 2h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<std::time::Duration>,

    /// Say more about what boxbuild does (repeat for more).
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,

    /// Print only the builder's output and errors.
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// List the available boxes and exit.
    #[arg(long)]
    pub list_boxes: bool,

    /// Do not check remote catalogs for newer boxes, and do not mention them.
    #[arg(long)]
    pub no_update_check: bool,

    /// Keep changes made in the box across runs, in a persistent layer per box version
    /// (the box itself stays pristine; 'box prune' removes layers).
    #[arg(long)]
    pub no_snapshot: bool,

    /// Share directories over virtio-9p (the default).
    #[arg(long = "9p-sharing", group = "sharing")]
    pub nine_p_sharing: bool,

    /// Share directories over virtiofs (virtiofsd per directory).
    #[arg(long, group = "sharing")]
    pub virtiofs_sharing: bool,

    /// Share directories over sshfs, served by boxbuild on a virtio-serial port (no SSH).
    #[arg(long, group = "sharing")]
    pub sshfs_sharing: bool,

    /// One more host directory to share read-write, at the same path in the box.
    #[arg(long, value_name = "PATH")]
    pub shared_path: Option<PathBuf>,

    /// Use the box built for x86_64.
    #[arg(long = "x86_64", group = "arch_flag")]
    pub x86_64: bool,

    /// Use the box built for aarch64.
    #[arg(long, group = "arch_flag")]
    pub aarch64: bool,

    /// Use the box built for this architecture (x86_64, aarch64; default: this machine's).
    #[arg(long, value_name = "ARCH", group = "arch_flag")]
    pub arch: Option<String>,

    /// Install this kiwi version from PyPI in the box, for this run only.
    #[arg(long, value_name = "VERSION")]
    pub kiwi_version: Option<String>,

    /// kiwi's --type: the image type to build (passed to the builder before its arguments).
    #[arg(long = "type", value_name = "TYPE", help_heading = "kiwi options")]
    pub image_type: Option<String>,

    /// kiwi's --profile (repeatable).
    #[arg(long, value_name = "NAME", help_heading = "kiwi options")]
    pub profile: Vec<String>,

    /// kiwi's --kiwi-file: the description file's name in the description dir.
    #[arg(long, value_name = "NAME", help_heading = "kiwi options")]
    pub kiwi_file: Option<String>,

    /// kiwi's --debug.
    #[arg(long, help_heading = "kiwi options")]
    pub debug: bool,

    /// Size of the box's scratch disk for the builder's work files, e.g. 20G (sparse;
    /// default: the box's own setting).
    #[arg(long, value_name = "SIZE")]
    pub scratch_size: Option<String>,

    /// No network in the box.
    #[arg(long)]
    pub no_network: bool,

    /// Do not pass the host's extra CA certificates (/usr/local/share/ca-certificates,
    /// $BOXBUILD_CA_CERTS) into the box.
    #[arg(long)]
    pub no_host_certs: bool,

    /// Accepted for the Python plugin's users and ignored: sshfs sharing uses no SSH.
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,

    /// Accepted for the Python plugin's users and ignored: sshfs sharing uses no SSH.
    #[arg(long, value_name = "PORT")]
    pub ssh_port: Option<u16>,

    /// After the build, open a shell in the box on this terminal, with the shares still
    /// mounted; 'exit' powers the box off, Ctrl-A X stops it at any time.
    #[arg(long)]
    pub box_debug: bool,

    /// Run the box's root file system as a container (podman) instead of a VM: native
    /// speed where no KVM is; rootless for a normal user, privileged as root.
    #[arg(long)]
    pub container: bool,

    /// After the build, store kiwi's image root tree as version TAG (default latest) of
    /// the stash NAME, an OCI image layout in the stash dir; with stackbuild: a stash to
    /// stack (repeatable, NAME[:TAG] or NAME@sha256:...).
    #[arg(long, value_name = "NAME[:TAG]")]
    pub stash: Vec<String>,

    /// Where stashes live (default: boxbuild's data dir, per user).
    #[arg(long, value_name = "DIR", env = "BOXBUILD_STASH_DIR")]
    pub stash_dir: Option<PathBuf>,

    /// The builder's arguments, after `--`.
    #[arg(last = true, value_name = "BUILDER_ARGS", value_parser = clap::value_parser!(OsString))]
    pub builder_args: Vec<OsString>,
}

impl BuildOptions {
    /// kiwi's global options given to boxbuild, as builder arguments placed before the
    /// user's own (the kiwi box's builder moves them before `system build`).
    pub fn kiwi_global_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        if let Some(t) = &self.image_type {
            args.extend(["--type".into(), t.into()]);
        }
        for p in &self.profile {
            args.extend(["--profile".into(), p.into()]);
        }
        if let Some(f) = &self.kiwi_file {
            args.extend(["--kiwi-file".into(), f.into()]);
        }
        if self.debug {
            args.push("--debug".into());
        }
        args
    }
}

/// Drops the words `system boxbuild` before `--`, so a command line written for KIWI's
/// plugin (`kiwi-ng [kiwi options] system boxbuild [box options] -- ...`) runs with
/// `kiwi-ng` replaced by `boxbuild`.
pub fn without_plugin_words(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    if let Some(at) =
        (1..end.saturating_sub(1)).find(|&i| args[i] == "system" && args[i + 1] == "boxbuild")
    {
        args.drain(at..at + 2);
    }
    args
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(seconds));
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 90s, 30m, 2h)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_args_are_kept_raw() {
        let cli = Cli::try_parse_from([
            "boxbuild", "--box", "tiny", "--", "--type", "", "--box", "-q", "a b",
        ])
        .unwrap();
        assert_eq!(cli.build.box_name.as_deref(), Some("tiny"));
        let args: Vec<_> = cli
            .build
            .builder_args
            .iter()
            .map(|a| a.to_str().unwrap())
            .collect();
        assert_eq!(args, ["--type", "", "--box", "-q", "a b"]);
    }

    #[test]
    fn sharing_flags_are_exclusive() {
        assert!(Cli::try_parse_from(["boxbuild", "--9p-sharing", "--virtiofs-sharing"]).is_err());
    }

    #[test]
    fn one_architecture_flag_at_most() {
        assert!(Cli::try_parse_from(["boxbuild", "--aarch64", "--arch", "x86_64"]).is_err());
        let cli = Cli::try_parse_from(["boxbuild", "--arch", "aarch64"]).unwrap();
        assert_eq!(cli.build.arch.as_deref(), Some("aarch64"));
    }

    #[test]
    fn kiwi_global_options_come_first() {
        let cli = Cli::try_parse_from([
            "boxbuild",
            "--type",
            "oem",
            "--profile",
            "a",
            "--profile",
            "b",
            "--debug",
            "--box",
            "x",
            "--",
            "--description",
            "d",
        ])
        .unwrap();
        let args: Vec<_> = cli.build.kiwi_global_args();
        assert_eq!(
            args,
            [
                "--type",
                "oem",
                "--profile",
                "a",
                "--profile",
                "b",
                "--debug"
            ]
        );
    }

    #[test]
    fn plugin_command_lines_port_with_one_word() {
        let words = |line: &str| -> Vec<OsString> { line.split(' ').map(OsString::from).collect() };
        let cli = Cli::try_parse_from(without_plugin_words(words(
            "boxbuild --type oem --profile p system boxbuild --box tumbleweed -- --description d --target-dir t",
        )))
        .unwrap();
        assert_eq!(cli.build.box_name.as_deref(), Some("tumbleweed"));
        assert_eq!(cli.build.image_type.as_deref(), Some("oem"));
        // After `--` the words belong to the builder and stay.
        let kept = without_plugin_words(words("boxbuild --box b -- system boxbuild"));
        assert_eq!(kept.len(), 6);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("2m").unwrap().as_secs(), 120);
        assert!(parse_duration("soon").is_err());
    }
}

/// `stash list`, and kiwi's `system stash [--list | --root DIR ...]`.
#[derive(Debug, Args)]
pub struct StashArgs {
    #[command(subcommand)]
    pub command: Option<StashCommand>,

    /// List the stashes (as 'stash list').
    #[arg(long)]
    pub list: bool,

    /// A kiwi image root tree on the host to store as a stash (kiwi's 'system stash').
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// The stash's tag (default: latest).
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,

    /// The stash's name (default: the image name in DIR/image/config.xml).
    #[arg(long, value_name = "NAME")]
    pub container_name: Option<String>,

    #[command(flatten)]
    pub build: BuildOptions,
}

#[derive(Debug, Subcommand)]
pub enum StashCommand {
    /// The stashes: names, tags, layers, digests, sizes.
    List {
        /// Where stashes live (default: boxbuild's data dir, per user).
        #[arg(long, value_name = "DIR", env = "BOXBUILD_STASH_DIR")]
        stash_dir: Option<PathBuf>,
    },
}

/// kiwi's `system stackbuild`: `--stash` (BuildOptions) names the stashes.
#[derive(Debug, Args)]
pub struct StackbuildArgs {
    /// Where the results go.
    #[arg(long, value_name = "DIR")]
    pub target_dir: PathBuf,

    /// A description to build on the stacked root (kiwi 'system build
    /// --allow-existing-root'); without it the stash's own (kiwi 'system create').
    #[arg(long, value_name = "DIR")]
    pub description: Option<PathBuf>,

    /// Pull the stashes from this registry (oci://REGISTRY/PATH).
    #[arg(long, value_name = "URI")]
    pub from_registry: Option<String>,

    #[command(flatten)]
    pub build: BuildOptions,
}

/// Moves the command words of a stash command (`stackbuild`, `system stackbuild`,
/// `system stash`, `stash`) to the front, so they may follow the build options as in
/// `boxbuild --box debian stackbuild --stash base ...`. Option values and words after
/// `--` are never taken for command words. A bare `kiwi` after a stackbuild's options
/// stands for `--`, as in kiwi.
pub fn stash_words_first(args: Vec<OsString>) -> Vec<OsString> {
    use clap::CommandFactory;
    let command = Cli::command();
    let takes_value = |long: &str| {
        command
            .get_arguments()
            .find(|a| a.get_long() == Some(long))
            .is_some_and(|a| a.get_action().takes_values())
    };
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let mut i = 1;
    while i < end {
        let word = args[i].to_str().unwrap_or("");
        if let Some(long) = word.strip_prefix("--") {
            if !long.contains('=') && takes_value(long) {
                i += 1;
            }
            i += 1;
            continue;
        }
        if word.starts_with('-') {
            i += 1;
            continue;
        }
        let next = args.get(i + 1).and_then(|a| a.to_str());
        let (words, new): (usize, &str) = match (word, next) {
            ("system", Some("stackbuild")) => (2, "stackbuild"),
            ("system", Some("stash")) => (2, "stash"),
            ("stackbuild", _) => (1, "stackbuild"),
            ("stash", _) => (1, "stash"),
            _ => return args,
        };
        if i == 1 && words == 1 {
            return args;
        }
        let mut out: Vec<OsString> = vec![args[0].clone(), new.into()];
        out.extend(args[1..i].iter().cloned());
        let mut rest: Vec<OsString> = args[i + words..].to_vec();
        if new == "stackbuild" {
            let stop = rest.iter().position(|a| a == "--").unwrap_or(rest.len());
            if let Some(k) = rest[..stop].iter().position(|a| a == "kiwi") {
                rest[k] = "--".into();
            }
        }
        out.extend(rest);
        return out;
    }
    args
}

#[cfg(test)]
mod stash_tests {
    use super::*;

    fn words(line: &str) -> Vec<OsString> {
        line.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn stash_commands_after_build_options() {
        let cli = Cli::try_parse_from(stash_words_first(words(
            "boxbuild --box debian --no-network system stackbuild --stash a:1 --stash b --target-dir t kiwi --x",
        )))
        .unwrap();
        let Some(Command::Stackbuild(s)) = cli.command else {
            panic!("not stackbuild")
        };
        assert_eq!(s.build.box_name.as_deref(), Some("debian"));
        assert!(s.build.no_network);
        assert_eq!(s.build.stash, ["a:1", "b"]);
        assert_eq!(s.build.builder_args, ["--x"]);
        let cli = Cli::try_parse_from(stash_words_first(words(
            "boxbuild --box debian system stash --root r --tag 1",
        )))
        .unwrap();
        assert!(
            matches!(cli.command, Some(Command::Stash(ref s)) if s.tag.as_deref() == Some("1"))
        );
        let cli = Cli::try_parse_from(stash_words_first(words("boxbuild stash list"))).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Stash(StashArgs {
                command: Some(StashCommand::List { .. }),
                ..
            }))
        ));
        // A value or a builder argument is never a command word.
        let kept = stash_words_first(words("boxbuild --box stash --stash stash -- stackbuild"));
        let cli = Cli::try_parse_from(kept).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.build.stash, ["stash"]);
    }
}
