//! What the builder finds in a box whose PID 1 is boxbuild-agent (docs/guest-agent.md,
//! "What the builder finds in the box"): a probe script for the box, run as the build, and
//! the checks of what it reported.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The report the probe writes into the target dir: one `NAME=VALUE` line per item.
pub const REPORT: &str = "userland.txt";

/// The probe, a POSIX sh script (busybox sh, dash, bash). `pty_command` allocates a
/// pseudo-terminal and exits 0 when that worked.
pub fn probe(pty_command: &str) -> String {
    format!(
        r#"r=$BOXBUILD_TARGET/{REPORT}
: > "$r"
say() {{ printf '%s=%s\n' "$1" "$2" >> "$r"; }}
mounted() {{ awk -v t="$1" '$2 == t {{ print $3 }}' /proc/mounts | tail -n 1; }}
writable() {{ echo probe > "$1" && cat "$1" && rm -f "$1"; }}
say devpts "$(mounted /dev/pts)"
say ptmx "$(if [ -c /dev/ptmx ]; then echo char-device; else echo missing; fi)"
if out=$({pty_command} </dev/null 2>&1); then say pty ok; else say pty "failed: $(echo $out)"; fi
say shm "$(mounted /dev/shm)"
say shm_mode "$(stat -c %a /dev/shm)"
say shm_writable "$(writable /dev/shm/probe.$$)"
say lo_flags "$(cat /sys/class/net/lo/flags)"
name=$(hostname)
say hostname "$name"
say hosts "$(awk -v n="$name" '{{ sub(/#.*/, ""); for (i = 2; i <= NF; i++) if ($i == n) {{ print $1; exit }} }}' /etc/hosts)"
if command -v getent >/dev/null; then say getent "$(getent hosts "$name" | awk '{{ print $1; exit }}')"; fi
say mtab "$(readlink /etc/mtab)"
say mtab_root "$(awk '$2 == "/" {{ print "listed"; exit }}' /etc/mtab)"
say path "$PATH"
say umask "$(umask)"
say tmp_mode "$(stat -c %a /tmp)"
say tmp_writable "$(writable /tmp/probe.$$)"
say run_lock_mode "$(stat -c %a /run/lock)"
say dev_fd "$(if [ -e /dev/fd/1 ] && [ -e /dev/stdin ]; then echo ok; else echo missing; fi)"
say nofile "$(ulimit -n)"
say nofile_hard "$(awk '/^Max open files/ {{ print $5 }}' /proc/self/limits)"
say nproc "$(awk '/^Max processes/ {{ print $3 }}' /proc/self/limits)"
say core "$(ulimit -c)"
say date "$(date +%s)"
"#
    )
}

/// Seconds since the epoch on the host.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The probe's report from the target dir.
pub fn read_report(target: &Path) -> BTreeMap<String, String> {
    let text = fs::read_to_string(target.join(REPORT)).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every item the report shows missing or wrong; `run` is the host's time (seconds since
/// the epoch) before the build started and after it ended.
pub fn problems(report: &BTreeMap<String, String>, hostname: &str, run: (u64, u64)) -> Vec<String> {
    let get = |k: &str| {
        report
            .get(k)
            .map(String::as_str)
            .unwrap_or("(not reported)")
    };
    let number = |k: &str| get(k).parse::<u64>().ok();
    let mut problems = Vec::new();
    let mut want = |ok: bool, what: &str, key: &str| {
        if !ok {
            problems.push(format!("{what}: {key}={}", get(key)));
        }
    };
    want(get("devpts") == "devpts", "/dev/pts is devpts", "devpts");
    want(get("ptmx") == "char-device", "/dev/ptmx opens", "ptmx");
    want(
        get("pty") == "ok",
        "a pseudo-terminal can be allocated",
        "pty",
    );
    want(get("shm") == "tmpfs", "/dev/shm is a tmpfs", "shm");
    want(
        get("shm_mode") == "1777",
        "/dev/shm has mode 1777",
        "shm_mode",
    );
    want(
        get("shm_writable") == "probe",
        "/dev/shm is writable",
        "shm_writable",
    );
    // IFF_UP | IFF_LOOPBACK, with IFF_RUNNING on some kernels.
    let lo = u32::from_str_radix(get("lo_flags").trim_start_matches("0x"), 16).unwrap_or(0);
    want(lo & 0x9 == 0x9, "lo is up", "lo_flags");
    want(get("hostname") == hostname, "the host name", "hostname");
    want(
        get("hosts").starts_with("127."),
        "/etc/hosts names the host on the loopback",
        "hosts",
    );
    if report.contains_key("getent") {
        want(
            get("getent").starts_with("127."),
            "the host name resolves",
            "getent",
        );
    }
    want(
        get("mtab").ends_with("proc/self/mounts"),
        "/etc/mtab links to the kernel's table",
        "mtab",
    );
    want(
        get("mtab_root") == "listed",
        "/etc/mtab lists /",
        "mtab_root",
    );
    let path: Vec<&str> = get("path").split(':').collect();
    want(
        ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .all(|d| path.contains(d)),
        "PATH has the sbin and bin directories",
        "path",
    );
    want(get("umask") == "0022", "umask 022", "umask");
    want(get("tmp_mode") == "1777", "/tmp has mode 1777", "tmp_mode");
    want(
        get("tmp_writable") == "probe",
        "/tmp is writable",
        "tmp_writable",
    );
    want(
        get("run_lock_mode") == "1777",
        "/run/lock has mode 1777",
        "run_lock_mode",
    );
    want(get("dev_fd") == "ok", "/dev/fd and /dev/stdin", "dev_fd");
    want(
        number("nofile").is_some_and(|n| n >= 65536),
        "at least 65536 open files",
        "nofile",
    );
    want(
        number("nofile_hard").is_some_and(|n| n >= 65536),
        "a hard limit of at least 65536 open files",
        "nofile_hard",
    );
    want(get("nproc") == "unlimited", "no process limit", "nproc");
    want(get("core") == "0", "no core files unless asked for", "core");
    want(
        number("date").is_some_and(|t| t + 3 >= run.0 && t <= run.1 + 3),
        &format!(
            "the box's clock within 3s of the host's ({} to {})",
            run.0, run.1
        ),
        "date",
    );
    problems
}
