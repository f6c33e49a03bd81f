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
    /// Manage boxes: list, fetch, update, outdated, prune, remove, verify, push, sign, cache.
    #[command(name = "box")]
    Box(BoxArgs),
    /// Stashes (image root trees kept as OCI images): 'stash list', 'stash push', 'stash
    /// pull'; 'system stash --root DIR' stores a root tree from the host (docs/stash.md).
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

/// What `box push` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PushFormat {
    Box,
    Container,
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
    /// Show the package caches kept across builds (per box and architecture) and their
    /// sizes; `--clear` empties them.
    Cache {
        /// Empty the package caches (of the boxes named, or all).
        #[arg(long)]
        clear: bool,
        #[arg(value_name = "NAME")]
        names: Vec<String>,
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
        /// What to write: 'box', boxbuild's box format (an OCI artifact), or 'container',
        /// an ordinary container image with the disk at /disk/box.qcow2 and kernel, initrd
        /// and settings under /boot/ (KubeVirt's containerDisk, KIWI's oci: layout).
        #[arg(long, value_enum, default_value_t = PushFormat::Box)]
        format: PushFormat,
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

    /// Show the box's console on stderr while it runs. kiwi 11's `--box-console=TTY` is
    /// accepted; the console's name stays the box's own.
    #[arg(long, value_name = "TTY", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub box_console: Option<String>,

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

    /// kiwi's --setenv NAME=VALUE: exported into kiwi's environment (repeatable).
    #[arg(long, value_name = "NAME=VALUE", help_heading = "kiwi options")]
    pub setenv: Vec<String>,

    /// kiwi's --config: a kiwi runtime configuration file on the host (shared read-only).
    #[arg(long, value_name = "FILE", help_heading = "kiwi options")]
    pub config: Option<PathBuf>,

    /// kiwi's --shared-cache-dir: a host directory kept as the package cache of this build
    /// instead of boxbuild's own (kiwi in the box works on the scratch disk).
    #[arg(long, value_name = "DIR", help_heading = "kiwi options")]
    pub shared_cache_dir: Option<PathBuf>,

    /// kiwi's --temp-dir: kiwi's temporary files always go to the box's scratch disk.
    #[arg(long, value_name = "DIR", help_heading = "kiwi options")]
    pub temp_dir: Option<PathBuf>,

    /// kiwi's --target-arch.
    #[arg(long, value_name = "NAME", help_heading = "kiwi options")]
    pub target_arch: Option<String>,

    /// kiwi's --loglevel.
    #[arg(long, value_name = "NUMBER", help_heading = "kiwi options")]
    pub loglevel: Option<String>,

    /// kiwi's --logfile: only `stdout` (kiwi's whole log is in OUT/result.log).
    #[arg(long, value_name = "FILE", help_heading = "kiwi options")]
    pub logfile: Option<PathBuf>,

    /// kiwi's --logsocket: refused (a socket on the host cannot be reached from the box).
    #[arg(long, value_name = "SOCKET", help_heading = "kiwi options")]
    pub logsocket: Option<PathBuf>,

    /// kiwi's --color-output.
    #[arg(long, help_heading = "kiwi options")]
    pub color_output: bool,

    /// kiwi's --debug-run-scripts-in-screen.
    #[arg(long, help_heading = "kiwi options")]
    pub debug_run_scripts_in_screen: bool,

    /// Do not keep downloaded packages across builds (boxbuild's package cache per box,
    /// docs/cache.md).
    #[arg(long)]
    pub no_package_cache: bool,

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
    /// stack (repeatable, NAME[:TAG], NAME@sha256:... or oci://REGISTRY/REPOSITORY:TAG).
    #[arg(long, value_name = "NAME[:TAG]")]
    pub stash: Vec<String>,

    /// Where stashes live (default: boxbuild's data dir, per user).
    #[arg(long, value_name = "DIR", env = "BOXBUILD_STASH_DIR")]
    pub stash_dir: Option<PathBuf>,

    /// With --stash oci://...: sign the pushed stash with this P-256 private key (PKCS#8
    /// PEM), as cosign does and as 'stash push --sign-key'.
    #[arg(long, value_name = "KEY")]
    pub sign_key: Option<PathBuf>,

    /// The builder's arguments, after `--`.
    #[arg(last = true, value_name = "BUILDER_ARGS", value_parser = clap::value_parser!(OsString))]
    pub builder_args: Vec<OsString>,
}

impl BuildOptions {
    /// kiwi's global options given to boxbuild, as builder arguments placed before the
    /// user's own (the kiwi box's builder moves them before `system build`), in kiwi's
    /// order, each as often and with the values given.
    pub fn kiwi_global_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut with = |name: &str, value: &std::ffi::OsStr| {
            args.extend([OsString::from(name), value.to_os_string()]);
        };
        if let Some(t) = &self.image_type {
            with("--type", t.as_ref());
        }
        for p in &self.profile {
            with("--profile", p.as_ref());
        }
        if let Some(f) = &self.kiwi_file {
            with("--kiwi-file", f.as_ref());
        }
        for s in &self.setenv {
            with("--setenv", s.as_ref());
        }
        if let Some(c) = &self.config {
            with("--config", c.as_os_str());
        }
        if let Some(d) = &self.shared_cache_dir {
            with("--shared-cache-dir", d.as_os_str());
        }
        if let Some(d) = &self.temp_dir {
            with("--temp-dir", d.as_os_str());
        }
        if let Some(a) = &self.target_arch {
            with("--target-arch", a.as_ref());
        }
        if let Some(l) = &self.loglevel {
            with("--loglevel", l.as_ref());
        }
        if let Some(f) = &self.logfile {
            with("--logfile", f.as_os_str());
        }
        if let Some(s) = &self.logsocket {
            with("--logsocket", s.as_os_str());
        }
        if self.debug {
            args.push("--debug".into());
        }
        if self.color_output {
            args.push("--color-output".into());
        }
        if self.debug_run_scripts_in_screen {
            args.push("--debug-run-scripts-in-screen".into());
        }
        args
    }

    /// `--box-console`, with or without kiwi 11's TTY name.
    pub fn box_console(&self) -> bool {
        self.box_console.is_some()
    }
}

/// Turns the command lines of KIWI's plugin and of kiwi 11 into boxbuild's own, so that
/// `kiwi-ng` can be replaced with `boxbuild`:
///
/// - `system boxbuild` before the builder's arguments is dropped;
/// - kiwi 11's separator, the subcommand `kiwi` (the first word that is no option and no
///   option's value), becomes `--` (`--` itself stays, as kiwi 11 keeps it as an alias);
/// - kiwi 11's `--box-console TTY` is read as `--box-console=TTY`;
/// - the words of a stash command go first ([`stash_words_first`]).
///
/// After the separator nothing is touched.
pub fn normalized(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    use clap::CommandFactory;
    let mut args: Vec<OsString> = args.into_iter().collect();
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    if let Some(at) =
        (1..end.saturating_sub(1)).find(|&i| args[i] == "system" && args[i + 1] == "boxbuild")
    {
        args.drain(at..at + 2);
    }
    let command = Cli::command();
    let takes_value = |name: &str| {
        command.get_arguments().any(|a| {
            a.get_long() == Some(name) && a.get_action().takes_values() && name != "box-console"
        })
    };
    let mut i = 1;
    while i < args.len() {
        let word = args[i].to_string_lossy().into_owned();
        if word == "--" {
            break;
        }
        if let Some(long) = word.strip_prefix("--") {
            if long == "box-console" {
                let next = args.get(i + 1).map(|a| a.to_string_lossy().into_owned());
                if let Some(tty) = next.filter(|n| !n.starts_with('-') && n != "kiwi") {
                    args[i] = format!("--box-console={tty}").into();
                    args.remove(i + 1);
                }
            } else if !long.contains('=') && takes_value(long) {
                i += 1;
            }
        } else if word == "kiwi" {
            args[i] = "--".into();
            break;
        } else if !word.starts_with('-') || word == "-" {
            // A subcommand (`box`, `help`) or a word clap will name as unexpected.
            break;
        }
        i += 1;
    }
    stash_words_first(args)
}

/// Whether the builder's arguments ask for help (`--help` or `-h` anywhere, or `help`
/// alone), as kiwi 11's `kiwi` subcommand answers them: with help, and no build.
pub fn builder_help_asked(builder_args: &[OsString]) -> bool {
    builder_args.iter().any(|a| a == "--help" || a == "-h")
        || (builder_args.len() == 1 && builder_args[0] == "help")
}

/// What `... kiwi --help` prints.
pub const BUILDER_HELP: &str = "\
Usage: boxbuild [kiwi global options] [system boxbuild] --box NAME [boxbuild options] \\
         kiwi --description DIR --target-dir DIR [kiwi system build options]

The words after `kiwi` (or its alias `--`) are the arguments of `kiwi-ng system build`
run in the box. --description (shared read-only) and --target-dir (shared read-write,
where the results land) are required; every other argument reaches kiwi as given.

kiwi's global options (--type, --profile, --kiwi-file, --debug, --setenv NAME=VALUE,
--config FILE, --shared-cache-dir DIR, --temp-dir DIR, --target-arch NAME, --loglevel N,
--color-output, --debug-run-scripts-in-screen, --logfile stdout) may stand before
`system boxbuild` or after `kiwi`; they reach kiwi before `system build`.

kiwi's own help for these options: boxbuild --box debian kiwi --description DIR \\
  --target-dir DIR --version, or `kiwi-ng system build --help` where kiwi is installed.
boxbuild's options: boxbuild --help.
";

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
        let cli = Cli::try_parse_from(normalized(words(
            "boxbuild --type oem --profile p system boxbuild --box tumbleweed -- --description d --target-dir t",
        )))
        .unwrap();
        assert_eq!(cli.build.box_name.as_deref(), Some("tumbleweed"));
        assert_eq!(cli.build.image_type.as_deref(), Some("oem"));
        // After `--` the words belong to the builder and stay.
        let kept = normalized(words("boxbuild --box b -- system boxbuild"));
        assert_eq!(kept.len(), 6);
    }

    fn parse_line(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(normalized(line.split(' ').map(OsString::from)))
    }

    fn builder_words(cli: &Cli) -> Vec<&str> {
        cli.build
            .builder_args
            .iter()
            .map(|a| a.to_str().unwrap())
            .collect()
    }

    /// The forms of kiwi 11's documentation (doc/source/commands/system_boxbuild.rst,
    /// build_methods/build_self_contained.rst, troubleshooting/boxbuild_tweaks.rst) with
    /// `kiwi-ng` replaced by `boxbuild`.
    #[test]
    fn kiwi_11_documented_forms_parse() {
        let cli = parse_line(
            "boxbuild --profile Virtual system boxbuild --box leap kiwi --description kiwi-descriptions/suse/x86_64/suse-leap-15.6 --target-dir /tmp/myimage",
        )
        .unwrap();
        assert_eq!(cli.build.box_name.as_deref(), Some("leap"));
        assert_eq!(cli.build.profile, ["Virtual"]);
        assert_eq!(
            builder_words(&cli),
            [
                "--description",
                "kiwi-descriptions/suse/x86_64/suse-leap-15.6",
                "--target-dir",
                "/tmp/myimage"
            ]
        );
        let cli = parse_line(
            "boxbuild --profile Virtual system boxbuild --container --box leap kiwi --description d --target-dir t",
        )
        .unwrap();
        assert!(cli.build.container);
        let cli = parse_line(
            "boxbuild --debug --profile=Disk --type oem system boxbuild --no-snapshot --box-memory=32G --box-smp-cpus=16 --box-debug --box ubuntu kiwi --description ./ubuntu-jammy --target-dir /build/kiwi/outputs/",
        )
        .unwrap();
        assert!(cli.build.debug && cli.build.no_snapshot && cli.build.box_debug);
        assert_eq!(cli.build.image_type.as_deref(), Some("oem"));
        assert_eq!(cli.build.profile, ["Disk"]);
        assert_eq!(cli.build.box_memory.as_deref(), Some("32G"));
        assert_eq!(cli.build.box_smp_cpus, Some(16));
        assert_eq!(builder_words(&cli)[0], "--description");
        let cli = parse_line("boxbuild system boxbuild --list-boxes").unwrap();
        assert!(cli.build.list_boxes);
        // --help and `help` are clap's own (exit 0).
        for line in [
            "boxbuild system boxbuild --help",
            "boxbuild system boxbuild help",
        ] {
            let e = parse_line(line).unwrap_err();
            assert_eq!(e.exit_code(), 0, "{line}");
        }
    }

    #[test]
    fn the_kiwi_separator_and_its_alias() {
        for sep in ["kiwi", "--"] {
            let cli = parse_line(&format!(
                "boxbuild --setenv A=B --config /c.yml --shared-cache-dir /sc --temp-dir /t --target-arch aarch64 --loglevel 10 --color-output system boxbuild --box-console hvc0 --box kiwi {sep} --description d --target-dir t kiwi --"
            ))
            .unwrap();
            // `--box kiwi`: a value, not the separator.
            assert_eq!(cli.build.box_name.as_deref(), Some("kiwi"), "{sep}");
            assert_eq!(cli.build.box_console.as_deref(), Some("hvc0"));
            assert_eq!(
                builder_words(&cli),
                ["--description", "d", "--target-dir", "t", "kiwi", "--"]
            );
            let globals: Vec<String> = cli
                .build
                .kiwi_global_args()
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            assert_eq!(
                globals.join(" "),
                "--setenv A=B --config /c.yml --shared-cache-dir /sc --temp-dir /t --target-arch aarch64 --loglevel 10 --color-output"
            );
        }
        // Without a TTY name --box-console is the flag it always was.
        let cli = parse_line("boxbuild --box-console --box b kiwi --description d").unwrap();
        assert_eq!(cli.build.box_console.as_deref(), Some(""));
        assert!(cli.build.box_console());
        // `box` stays a subcommand; a stray word is still refused.
        assert!(parse_line("boxbuild box list").unwrap().command.is_some());
        assert_eq!(
            parse_line("boxbuild --box b stray")
                .unwrap_err()
                .exit_code(),
            2
        );
        // The repeatable --setenv keeps its order.
        let cli = parse_line("boxbuild --setenv A=1 --setenv=B=2 --box b").unwrap();
        assert_eq!(cli.build.setenv, ["A=1", "B=2"]);
    }

    #[test]
    fn help_after_the_separator() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(builder_help_asked(&os(&["--help"])));
        assert!(builder_help_asked(&os(&["help"])));
        assert!(builder_help_asked(&os(&["--description", "d", "-h"])));
        assert!(!builder_help_asked(&os(&["--description", "help"])));
        assert!(!builder_help_asked(&os(&["--version"])));
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
    /// Push a stash version to an OCI registry, e.g. 'stash push mybase:2026-12
    /// oci://registry.example.org/stashes/mybase' (the registry's tag defaults to the
    /// stash's).
    Push {
        #[arg(value_name = "NAME[:TAG]")]
        stash: String,
        #[arg(value_name = "oci://REGISTRY/REPOSITORY[:TAG]")]
        target: String,
        /// Sign the pushed manifest with this P-256 private key (PKCS#8 PEM), as cosign does.
        #[arg(long, value_name = "KEY")]
        sign_key: Option<PathBuf>,
        /// Where stashes live (default: boxbuild's data dir, per user).
        #[arg(long, value_name = "DIR", env = "BOXBUILD_STASH_DIR")]
        stash_dir: Option<PathBuf>,
    },
    /// Remove a stash, every version of it (refused while a running boxbuild uses it).
    Remove {
        #[arg(value_name = "NAME")]
        name: String,
        /// Where stashes live (default: boxbuild's data dir, per user).
        #[arg(long, value_name = "DIR", env = "BOXBUILD_STASH_DIR")]
        stash_dir: Option<PathBuf>,
    },
    /// Empty the cache of registry images pulled for stackbuilds (entries a running
    /// stackbuild uses stay); stashes themselves are never pruned.
    Prune {
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Where stashes live (default: boxbuild's data dir, per user).
        #[arg(long, value_name = "DIR", env = "BOXBUILD_STASH_DIR")]
        stash_dir: Option<PathBuf>,
    },
    /// Pull a container image from an OCI registry into the stash dir as stash NAME
    /// (default: the repository's last part) and TAG (default: the reference's tag, else
    /// latest).
    Pull {
        #[arg(value_name = "oci://REGISTRY/REPOSITORY[:TAG|@sha256:...]")]
        reference: String,
        #[arg(value_name = "NAME[:TAG]")]
        stash: Option<String>,
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

    /// Look each --stash NAME[:TAG] up in this registry as PATH/NAME:TAG
    /// (oci://REGISTRY/PATH, as kiwi 11); a --stash oci://... is a registry reference itself.
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
        let cli = Cli::try_parse_from(normalized(words(
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
