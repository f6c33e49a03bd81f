//! What the agent provides as PID 1, so the builder finds what a normal system gives it:
//! the kernel's file systems, pseudo-terminals, shared memory, a writable /tmp, the
//! loopback interface, a host name, /etc/mtab, the usual PATH, umask and resource limits,
//! and a clock that matches the host's. The list, and why each item is there, is in
//! docs/guest-agent.md ("What the builder finds in the box").
//!
//! No step may stop the agent: a step that fails is reported (on the console at once, to
//! the host once the channel is up) and the next one runs.

use crate::boot_marks::Marks;
use crate::sys;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The PATH of the builder: the one Debian's and systemd's init give services, with the
/// sbin directories, which an initrd's shell may leave out.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The host name when the root has no usable /etc/hostname.
pub const DEFAULT_HOSTNAME: &str = "boxbuild";

/// The file mode creation mask of a normal system's processes (login.defs(5) UMASK,
/// systemd's default for services).
pub const UMASK: u32 = 0o022;

/// The soft and hard RLIMIT_NOFILE the builder gets, unless /proc/sys/fs/nr_open (the
/// kernel's ceiling) is lower. Large enough for parallel package tools; a much larger soft
/// limit makes programs that close every possible descriptor before exec (rpm, older
/// Python) slow.
pub const NOFILE: u64 = 65536;

/// How far the box's clock may be from the host's before the agent sets it.
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(1);

/// The address Debian gives the host name in /etc/hosts when the system has no
/// permanent address (Debian Reference, 5.1.1 "The hostname resolution").
const HOSTNAME_ADDRESS: &str = "127.0.1.1";

/// Sets everything up, skipping what the root or the initrd has already; returns a
/// message for each step that failed (already written to the console). Each step's end is
/// marked in `marks` as `setup/STEP`: `mounts` (the kernel's file systems), `dev`,
/// `dirs` (/run/lock, /tmp, /etc/mtab), `loopback`, `hostname`, `limits`.
pub fn provide(marks: &mut Marks) -> Vec<String> {
    let mut failed = Vec::new();
    let mut report = |what: &str, result: Result<(), String>| {
        if let Err(e) = result {
            let message = format!("{}: {}", what, e);
            console(&message);
            failed.push(message);
        }
    };
    // Everything after the kernel's file systems needs them.
    for (source, target, fstype, flags, options) in KERNEL_FILE_SYSTEMS.iter() {
        report(
            &format!("mount {}", target),
            mount_once(source, target, fstype, *flags, options),
        );
    }
    marks.mark("setup/mounts");
    report("/dev/ptmx", ptmx());
    report("/dev/fd, /dev/stdin, /dev/stdout, /dev/stderr", dev_links());
    marks.mark("setup/dev");
    report("/run/lock", dir_with_mode("/run/lock", 0o1777));
    report("/tmp", tmp());
    report("/etc/mtab", mtab());
    marks.mark("setup/dirs");
    report("loopback interface", sys::interface_up("lo").map_err(text));
    marks.mark("setup/loopback");
    report("host name", hostname());
    marks.mark("setup/hostname");
    report("resource limits", rlimits());
    sys::set_umask(UMASK);
    std::env::set_var("PATH", PATH);
    marks.mark("setup/limits");
    failed
}

/// The file systems of a normal Linux system, mounted in this order where nothing is
/// mounted yet: (source, target, type, flags, options). devpts with its own ptmx
/// (`ptmxmode`) and the tty group's id, as systemd mounts it (gid 5 is `tty` in
/// Debian's and most distributions' base-passwd).
const KERNEL_FILE_SYSTEMS: [(&str, &str, &str, flags::Flags, &str); 6] = [
    ("proc", "/proc", "proc", flags::NOSUID_NODEV_NOEXEC, ""),
    ("sysfs", "/sys", "sysfs", flags::NOSUID_NODEV_NOEXEC, ""),
    ("devtmpfs", "/dev", "devtmpfs", flags::NOSUID, "mode=0755"),
    (
        "devpts",
        "/dev/pts",
        "devpts",
        flags::NOSUID_NOEXEC,
        "gid=5,mode=0620,ptmxmode=0666",
    ),
    (
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        flags::NOSUID_NODEV,
        "mode=1777",
    ),
    ("tmpfs", "/run", "tmpfs", flags::NOSUID_NODEV, "mode=0755"),
];

/// Mount flag combinations of `KERNEL_FILE_SYSTEMS`.
mod flags {
    use crate::sys;

    pub type Flags = std::os::raw::c_ulong;
    pub const NOSUID: Flags = sys::MS_NOSUID;
    pub const NOSUID_NODEV: Flags = sys::MS_NOSUID | sys::MS_NODEV;
    pub const NOSUID_NOEXEC: Flags = sys::MS_NOSUID | sys::MS_NOEXEC;
    pub const NOSUID_NODEV_NOEXEC: Flags = sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC;
}

/// Writes a line to the console (the agent's stderr); never fails, never panics.
pub fn console(message: &str) {
    let _ = writeln!(io::stderr(), "boxbuild-agent: {}", message);
}

fn text(e: io::Error) -> String {
    e.to_string()
}

fn mount_once(
    source: &str,
    target: &str,
    fstype: &str,
    mount_flags: flags::Flags,
    options: &str,
) -> Result<(), String> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    if is_mounted(&mounts, target) {
        return Ok(());
    }
    fs::create_dir_all(target).map_err(|e| format!("cannot create {}: {}", target, e))?;
    sys::mount_fs(
        source.as_bytes(),
        target.as_bytes(),
        fstype.as_bytes(),
        mount_flags,
        options.as_bytes(),
    )
    .map_err(text)
}

/// Whether a mount table in the format of /proc/mounts (fstab(5)) has a mount on
/// `target` (a path without spaces or other characters the table escapes).
pub fn is_mounted(mounts: &str, target: &str) -> bool {
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(target))
}

/// /dev/ptmx: devtmpfs's node (5:2) opens the devpts instance mounted on the `pts` beside
/// it (Linux 4.7 and later); where there is no node, a symlink to that instance's ptmx.
fn ptmx() -> Result<(), String> {
    if fs::symlink_metadata("/dev/ptmx").is_ok() {
        return Ok(());
    }
    symlink("pts/ptmx", "/dev/ptmx").map_err(text)
}

/// The links a normal /dev has besides its nodes (systemd creates them at boot): bash's
/// process substitution and scripts that read `/dev/stdin` use them.
fn dev_links() -> Result<(), String> {
    let links = [
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ];
    let mut failed = Vec::new();
    for (target, link) in links.iter() {
        if fs::symlink_metadata(link).is_ok() {
            continue;
        }
        if let Err(e) = symlink(target, link) {
            failed.push(format!("{}: {}", link, e));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join(", "))
    }
}

fn dir_with_mode(path: &str, mode: u32) -> Result<(), String> {
    fs::create_dir_all(path).map_err(text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(text)
}

/// /tmp, world-writable with the sticky bit (mode 1777, as the FHS has it): the root's own
/// directory where the root is writable, else a tmpfs over it. chmod fails on a read-only
/// root, which is how it is told apart.
fn tmp() -> Result<(), String> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    if is_mounted(&mounts, "/tmp") {
        return Ok(());
    }
    let _ = fs::create_dir("/tmp");
    if fs::set_permissions("/tmp", fs::Permissions::from_mode(0o1777)).is_ok() {
        return Ok(());
    }
    mount_once("tmpfs", "/tmp", "tmpfs", flags::NOSUID_NODEV, "mode=1777")
}

/// /etc/mtab as a symlink to the kernel's table (what util-linux and systemd expect); a
/// stale regular file is replaced, an existing symlink kept.
fn mtab() -> Result<(), String> {
    match fs::symlink_metadata("/etc/mtab") {
        Ok(meta) if meta.file_type().is_symlink() => return Ok(()),
        Ok(_) => fs::remove_file("/etc/mtab").map_err(text)?,
        Err(_) => {}
    }
    symlink("../proc/self/mounts", "/etc/mtab").map_err(text)
}

/// Names the system after /etc/hostname (or `DEFAULT_HOSTNAME`) and makes /etc/hosts
/// resolve that name and `localhost`. A root that cannot be written keeps its /etc/hosts.
fn hostname() -> Result<(), String> {
    let name = hostname_from(fs::read_to_string("/etc/hostname").ok().as_deref());
    sys::set_hostname(name.as_bytes()).map_err(|e| format!("sethostname {}: {}", name, e))?;
    let hosts = fs::read_to_string("/etc/hosts").unwrap_or_default();
    let add = hosts_additions(&hosts, &name);
    if add.is_empty() {
        return Ok(());
    }
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open("/etc/hosts")
        .and_then(|mut f| f.write_all(add.as_bytes()))
        .map_err(|e| format!("/etc/hosts: {}", e))
}

/// The host name /etc/hostname gives (its first line that is not a comment, hostname(5)),
/// if that is a valid one: 1 to 64 bytes (the kernel's limit) of letters, digits, `-` and
/// `.`, as RFC 1123 allows; else `DEFAULT_HOSTNAME`.
pub fn hostname_from(etc_hostname: Option<&str>) -> String {
    let line = etc_hostname
        .unwrap_or("")
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    let valid = !line.is_empty()
        && line.len() <= 64
        && line
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        line.to_string()
    } else {
        DEFAULT_HOSTNAME.to_string()
    }
}

/// The lines to append to /etc/hosts (format hosts(5)) so that it resolves `localhost`
/// and `name`; empty when it does already.
pub fn hosts_additions(hosts: &str, name: &str) -> String {
    let names = |wanted: &str| {
        hosts.lines().any(|line| {
            let line = line.split('#').next().unwrap_or("");
            line.split_whitespace().skip(1).any(|n| n == wanted)
        })
    };
    let mut add = String::new();
    if !names("localhost") {
        add.push_str("127.0.0.1\tlocalhost\n");
    }
    if name != "localhost" && !names(name) {
        add.push_str(&format!("{}\t{}\n", HOSTNAME_ADDRESS, name));
    }
    if !add.is_empty() && !hosts.is_empty() && !hosts.ends_with('\n') {
        add.insert(0, '\n');
    }
    add
}

/// Sets limits fit for a package build: `NOFILE` open files (soft and hard), no limit on the
/// number of processes (the kernel's threads-max still bounds them), and core files as a
/// normal system has them (soft 0: none unless a process asks; hard unlimited).
fn rlimits() -> Result<(), String> {
    let nr_open = fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let resources = [
        (sys::Resource::Nofile, "RLIMIT_NOFILE"),
        (sys::Resource::Nproc, "RLIMIT_NPROC"),
        (sys::Resource::Core, "RLIMIT_CORE"),
    ];
    let mut failed = Vec::new();
    for (resource, name) in resources.iter() {
        let current = match sys::get_rlimit(*resource) {
            Ok(current) => current,
            Err(e) => {
                failed.push(format!("{}: {}", name, e));
                continue;
            }
        };
        let wanted = match resource {
            sys::Resource::Nofile => nofile_limits(current, nr_open),
            sys::Resource::Nproc => (sys::RLIM_INFINITY, sys::RLIM_INFINITY),
            sys::Resource::Core => (0, sys::RLIM_INFINITY),
        };
        if let Err(e) = sys::set_rlimit(*resource, wanted.0, wanted.1) {
            // Without CAP_SYS_RESOURCE a hard limit cannot rise; the soft one still can,
            // up to it.
            let soft = wanted.0.min(current.1);
            let fallback = match sys::set_rlimit(*resource, soft, current.1) {
                Ok(()) => format!("kept at soft {} hard {}", soft, current.1),
                Err(_) => "left as it was".to_string(),
            };
            failed.push(format!("{}: {} ({})", name, e, fallback));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join(", "))
    }
}

/// The RLIMIT_NOFILE (soft, hard) to set: `NOFILE` for both, or `nr_open` where that is
/// lower; a current limit that is higher already is kept.
pub fn nofile_limits(current: (u64, u64), nr_open: Option<u64>) -> (u64, u64) {
    let ceiling = nr_open.unwrap_or(NOFILE);
    let wanted = NOFILE.min(ceiling);
    let hard = current.1.max(wanted);
    let soft = current.0.max(wanted).min(hard);
    (soft, hard)
}

/// The time to set the box's clock to, if it is off the host's by more than
/// `CLOCK_TOLERANCE`; `guest` is None for a clock before the epoch.
pub fn clock_correction(host: Duration, guest: Option<Duration>) -> Option<Duration> {
    let off = match guest {
        Some(guest) if guest > host => guest - host,
        Some(guest) => host - guest,
        None => return Some(host),
    };
    if off > CLOCK_TOLERANCE {
        Some(host)
    } else {
        None
    }
}

/// Sets the box's clock to the host's (`host`, since the epoch) when it is off; returns
/// what was done for the log, or None when the clock was right.
pub fn match_host_clock(host: Duration) -> Option<Result<String, String>> {
    let guest = SystemTime::now().duration_since(UNIX_EPOCH).ok();
    let set = clock_correction(host, guest)?;
    let was = match guest {
        Some(g) if g > host => format!("{:.1}s ahead", (g - host).as_secs_f64()),
        Some(g) => format!("{:.1}s behind", (host - g).as_secs_f64()),
        None => "before 1970".to_string(),
    };
    Some(match sys::set_clock(set) {
        Ok(()) => Ok(format!("clock set to the host's (it was {})", was)),
        Err(e) => Err(format!("clock is {} and cannot be set: {}", was, e)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_comes_from_the_first_line_that_is_not_a_comment() {
        assert_eq!(hostname_from(None), "boxbuild");
        assert_eq!(hostname_from(Some("")), "boxbuild");
        assert_eq!(hostname_from(Some("kiwi-box\n")), "kiwi-box");
        assert_eq!(
            hostname_from(Some("# set by the recipe\n\n  build.example.org  \n")),
            "build.example.org"
        );
        assert_eq!(hostname_from(Some("two words\n")), "boxbuild");
        assert_eq!(hostname_from(Some("ünï\n")), "boxbuild");
        assert_eq!(hostname_from(Some(&"a".repeat(65))), "boxbuild");
        assert_eq!(hostname_from(Some(&"a".repeat(64))), "a".repeat(64));
    }

    #[test]
    fn hosts_gets_only_the_names_it_lacks() {
        assert_eq!(
            hosts_additions("", "boxbuild"),
            "127.0.0.1\tlocalhost\n127.0.1.1\tboxbuild\n"
        );
        let debian = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n";
        assert_eq!(hosts_additions(debian, "boxbuild"), "127.0.1.1\tboxbuild\n");
        let named = "127.0.0.1 localhost\n127.0.1.1 boxbuild.example.org boxbuild\n";
        assert_eq!(hosts_additions(named, "boxbuild"), "");
        // A name in a comment or as an address does not count; a last line without a
        // newline gets one first.
        assert_eq!(
            hosts_additions("127.0.0.1 localhost # boxbuild", "boxbuild"),
            "\n127.0.1.1\tboxbuild\n"
        );
        assert_eq!(
            hosts_additions("boxbuild localhost\n", "boxbuild"),
            "127.0.1.1\tboxbuild\n"
        );
        assert_eq!(hosts_additions("", "localhost"), "127.0.0.1\tlocalhost\n");
    }

    #[test]
    fn nofile_is_raised_to_the_build_limit_within_the_kernels_ceiling() {
        assert_eq!(nofile_limits((1024, 4096), Some(1_048_576)), (65536, 65536));
        assert_eq!(nofile_limits((1024, 4096), None), (65536, 65536));
        assert_eq!(nofile_limits((1024, 4096), Some(32768)), (32768, 32768));
        assert_eq!(
            nofile_limits((1024, 524_288), Some(1_048_576)),
            (65536, 524_288)
        );
        assert_eq!(
            nofile_limits((100_000, 200_000), Some(1_048_576)),
            (100_000, 200_000)
        );
    }

    #[test]
    fn the_clock_is_set_only_when_it_is_off_by_more_than_a_second() {
        let host = Duration::new(1_700_000_000, 500_000_000);
        assert_eq!(clock_correction(host, Some(host)), None);
        let near = Duration::from_millis(900);
        assert_eq!(clock_correction(host, Some(host + near)), None);
        assert_eq!(clock_correction(host, Some(host - near)), None);
        let far = Duration::from_millis(1500);
        assert_eq!(clock_correction(host, Some(host + far)), Some(host));
        assert_eq!(clock_correction(host, Some(host - far)), Some(host));
        assert_eq!(
            clock_correction(host, Some(Duration::from_secs(0))),
            Some(host)
        );
        assert_eq!(clock_correction(host, None), Some(host));
    }

    #[test]
    fn mount_table_lookup_matches_whole_targets() {
        let mounts = "proc /proc proc rw 0 0\ndevpts /dev/pts devpts rw 0 0\n";
        assert!(is_mounted(mounts, "/dev/pts"));
        assert!(is_mounted(mounts, "/proc"));
        assert!(!is_mounted(mounts, "/dev"));
        assert!(!is_mounted(mounts, "/dev/shm"));
    }

    #[test]
    fn the_kernel_file_systems_come_in_dependency_order() {
        let targets: Vec<&str> = KERNEL_FILE_SYSTEMS.iter().map(|m| m.1).collect();
        let at = |t: &str| targets.iter().position(|x| *x == t).unwrap();
        assert!(at("/dev") < at("/dev/pts"));
        assert!(at("/dev") < at("/dev/shm"));
        assert!(at("/proc") < at("/dev"));
    }
}
