//! The box's activity as the host sees it: CPU time and file I/O of every process boxbuild
//! started (QEMU, share daemons such as virtiofsd, and their children) and of boxbuild's
//! own share-serving threads, read from `/proc`.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::time::Instant;

/// How the names of boxbuild's threads that serve a share (sshfs) begin; their CPU time
/// and I/O count as the box's.
pub const SHARE_THREAD_PREFIX: &str = "sftp-";

/// Clock ticks per second assumed when `sysconf(_SC_CLK_TCK)` gives no answer.
const DEFAULT_TICKS_PER_SECOND: u64 = 100;

/// Where counters are read: the host's `/proc`, or a directory laid out like it.
#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
    /// The process whose descendants and share threads make up the box.
    owner: u32,
    /// Clock ticks per second, the unit of `utime` and `stime` in `stat`.
    ticks_per_second: u64,
}

/// A process's or thread's counters, all since it started.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    /// `utime + stime`, in clock ticks.
    cpu_ticks: u64,
    /// `rchar` and `wchar`: bytes passed through read and write calls.
    read: u64,
    written: u64,
}

/// The counters of every watched process and thread at one moment, keyed by id and
/// start time (so a reused id is a new process).
#[derive(Debug, Clone)]
pub struct Sample {
    at: Instant,
    ticks_per_second: u64,
    counters: HashMap<(u32, u64), Counters>,
}

/// What the box did between two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Activity {
    /// CPU time per wall-clock time, in percent: 100 is one host core fully busy, so the
    /// value can exceed 100 with more than one virtual CPU.
    pub cpu_percent: f64,
    /// Bytes per second read through read calls (disk images and shares alike; served by
    /// the page cache or not).
    pub read_per_second: f64,
    /// Bytes per second written through write calls.
    pub written_per_second: f64,
}

/// The fields of a `stat` file that matter here.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    ppid: u32,
    cpu_ticks: u64,
    /// Start time after boot, in clock ticks.
    start: u64,
}

/// Parses `/proc/<pid>/stat`; the command name in parentheses may hold any character.
fn parse_stat(text: &str) -> Option<Stat> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 4 (ppid), 14 (utime), 15 (stime) and 22 (starttime) of proc(5), counted
    // from field 3 (state), the first after the name.
    let number = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
    Some(Stat {
        ppid: u32::try_from(number(4)?).ok()?,
        cpu_ticks: number(14)?.saturating_add(number(15)?),
        start: number(22)?,
    })
}

/// Parses `/proc/<pid>/io` into (`rchar`, `wchar`); a missing field counts as 0.
fn parse_io(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("rchar"), field("wchar"))
}

impl Sample {
    /// When the sample was taken.
    pub fn at(&self) -> Instant {
        self.at
    }
}

impl ProcFs {
    /// The host's `/proc`, watching the processes and threads of this boxbuild.
    pub fn host() -> ProcFs {
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        ProcFs::at(
            PathBuf::from("/proc"),
            std::process::id(),
            u64::try_from(ticks)
                .ok()
                .filter(|t| *t > 0)
                .unwrap_or(DEFAULT_TICKS_PER_SECOND),
        )
    }

    /// A `/proc`-like tree at `root`, watching the descendants and share threads of
    /// process `owner`; `ticks_per_second` is the unit of CPU times in its `stat` files.
    pub fn at(root: PathBuf, owner: u32, ticks_per_second: u64) -> ProcFs {
        ProcFs {
            root,
            owner,
            ticks_per_second,
        }
    }

    /// Reads the counters now; whatever cannot be read (a process that just ended, a
    /// `/proc` without `io` files) is left out or counted as 0, never an error.
    pub fn sample(&self, at: Instant) -> Sample {
        let mut counters = HashMap::new();
        let table = self.processes();
        for pid in descendants(&table, self.owner) {
            if let Some(stat) = table.get(&pid) {
                let dir = self.root.join(pid.to_string());
                counters.insert((pid, stat.start), self.counters(stat, &dir));
            }
        }
        let tasks = self.root.join(self.owner.to_string()).join("task");
        for task in fs::read_dir(tasks).into_iter().flatten().flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let dir = task.path();
            let serves_share = fs::read_to_string(dir.join("comm"))
                .is_ok_and(|name| name.starts_with(SHARE_THREAD_PREFIX));
            if !serves_share {
                continue;
            }
            if let Some(stat) = read_stat(&dir) {
                counters.insert((tid, stat.start), self.counters(&stat, &dir));
            }
        }
        Sample {
            at,
            ticks_per_second: self.ticks_per_second,
            counters,
        }
    }

    fn counters(&self, stat: &Stat, dir: &std::path::Path) -> Counters {
        let (read, written) = fs::read_to_string(dir.join("io"))
            .map(|text| parse_io(&text))
            .unwrap_or((0, 0));
        Counters {
            cpu_ticks: stat.cpu_ticks,
            read,
            written,
        }
    }

    /// Every process's `stat`, by pid.
    fn processes(&self) -> HashMap<u32, Stat> {
        let mut table = HashMap::new();
        for entry in fs::read_dir(&self.root).into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(stat) = read_stat(&entry.path()) {
                table.insert(pid, stat);
            }
        }
        table
    }
}

fn read_stat(dir: &std::path::Path) -> Option<Stat> {
    parse_stat(&fs::read_to_string(dir.join("stat")).ok()?)
}

/// The pids below `owner` in the process tree, `owner` itself not included.
fn descendants(table: &HashMap<u32, Stat>, owner: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, stat) in table {
        if *pid != stat.ppid {
            children.entry(stat.ppid).or_default().push(*pid);
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![owner];
    while let Some(parent) = queue.pop() {
        for child in children.get(&parent).into_iter().flatten() {
            if *child != owner && !found.contains(child) {
                found.push(*child);
                queue.push(*child);
            }
        }
    }
    found
}

impl Activity {
    /// The activity from `earlier` to `later`, counting the processes and threads present
    /// in both; None when no time passed between them or nothing could be read.
    pub fn between(earlier: &Sample, later: &Sample) -> Option<Activity> {
        if later.counters.is_empty() {
            return None;
        }
        let seconds = later.at.checked_duration_since(earlier.at)?.as_secs_f64();
        if seconds <= 0.0 {
            return None;
        }
        let mut delta = Counters::default();
        for (key, now) in &later.counters {
            if let Some(then) = earlier.counters.get(key) {
                delta.cpu_ticks += now.cpu_ticks.saturating_sub(then.cpu_ticks);
                delta.read += now.read.saturating_sub(then.read);
                delta.written += now.written.saturating_sub(then.written);
            }
        }
        let ticks_per_second = later.ticks_per_second.max(1) as f64;
        Some(Activity {
            cpu_percent: delta.cpu_ticks as f64 / ticks_per_second / seconds * 100.0,
            read_per_second: delta.read as f64 / seconds,
            written_per_second: delta.written as f64 / seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    /// A fake `/proc`: one process or thread directory with its `stat` and `io`.
    fn process(dir: &Path, pid: u32, name: &str, ppid: u32, cpu: (u64, u64), io: (u64, u64)) {
        fs::create_dir_all(dir).unwrap();
        fs::write(
            dir.join("stat"),
            format!(
                "{pid} ({name}) S {ppid} {pid} {pid} 0 -1 4194304 98 0 0 0 {} {} 0 0 20 0 3 0 4242 3133440 361 0\n",
                cpu.0, cpu.1
            ),
        )
        .unwrap();
        fs::write(
            dir.join("io"),
            format!(
                "rchar: {}\nwchar: {}\nsyscr: 1\nsyscw: 1\nread_bytes: 0\nwrite_bytes: 0\ncancelled_write_bytes: 0\n",
                io.0, io.1
            ),
        )
        .unwrap();
        fs::write(dir.join("comm"), format!("{name}\n")).unwrap();
    }

    /// boxbuild (100) with QEMU (200), unshare (201) running virtiofsd (202), a thread
    /// serving sshfs (105) and one that does not (106); 300 is someone else's process.
    fn host(root: &Path, step: u64) {
        process(&root.join("1"), 1, "init", 0, (5, 5), (0, 0));
        process(&root.join("100"), 100, "boxbuild", 1, (1, 1), (0, 0));
        let task = root.join("100/task");
        process(&task.join("100"), 100, "boxbuild", 1, (1, 1), (0, 0));
        process(
            &task.join("105"),
            105,
            "sftp-target",
            1,
            (10 * step, 0),
            (0, 1000 * step),
        );
        process(
            &task.join("106"),
            106,
            "boxbuild",
            1,
            (500 * step, 0),
            (9999 * step, 0),
        );
        process(
            &root.join("200"),
            200,
            "qemu-system-x86_64",
            100,
            (80 * step, 20 * step),
            (4096 * step, 2048 * step),
        );
        process(&root.join("201"), 201, "unshare", 100, (0, 0), (0, 0));
        process(
            &root.join("202"),
            202,
            "virtiofsd (a) b",
            201,
            (0, 10 * step),
            (1024 * step, 0),
        );
        process(
            &root.join("300"),
            300,
            "other",
            1,
            (777 * step, 0),
            (777 * step, 777 * step),
        );
        fs::create_dir_all(root.join("self")).unwrap();
    }

    #[test]
    fn stat_fields_are_read_after_the_name() {
        let stat = parse_stat(
            "42 (a (weird) name) R 7 42 42 0 -1 0 0 0 0 0 150 50 0 0 20 0 1 0 999 0 0\n",
        )
        .unwrap();
        assert_eq!(
            stat,
            Stat {
                ppid: 7,
                cpu_ticks: 200,
                start: 999
            }
        );
        assert_eq!(parse_stat("42 (x) R 7"), None);
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_io("rchar: 12\nwchar: 34\n"), (12, 34));
        assert_eq!(parse_io("garbage"), (0, 0));
    }

    #[test]
    fn activity_counts_the_box_processes_and_share_threads() {
        let tmp = tempfile::tempdir().unwrap();
        let proc = ProcFs::at(tmp.path().to_path_buf(), 100, 100);
        let start = Instant::now();
        host(tmp.path(), 1);
        let first = proc.sample(start);
        host(tmp.path(), 3);
        let second = proc.sample(start + Duration::from_secs(2));
        let activity = Activity::between(&first, &second).unwrap();
        // Ticks over two seconds: QEMU 200, virtiofsd 20, the sftp thread 20 = 240 ticks
        // at 100 per second = 1.2 CPU-seconds per second.
        assert!((activity.cpu_percent - 120.0).abs() < 1e-9, "{activity:?}");
        // Read: QEMU 8192 + virtiofsd 2048 over 2 s; written: QEMU 4096 + sftp 2000.
        assert!((activity.read_per_second - 5120.0).abs() < 1e-9);
        assert!((activity.written_per_second - 3048.0).abs() < 1e-9);
    }

    #[test]
    fn processes_that_come_or_go_do_not_count_and_time_must_pass() {
        let tmp = tempfile::tempdir().unwrap();
        let proc = ProcFs::at(tmp.path().to_path_buf(), 100, 100);
        let start = Instant::now();
        host(tmp.path(), 1);
        let first = proc.sample(start);
        fs::remove_dir_all(tmp.path().join("202")).unwrap();
        process(
            &tmp.path().join("203"),
            203,
            "new",
            100,
            (1000, 0),
            (1000, 0),
        );
        let second = proc.sample(start + Duration::from_secs(1));
        let activity = Activity::between(&first, &second).unwrap();
        assert_eq!(activity.cpu_percent, 0.0);
        assert_eq!(activity.read_per_second, 0.0);
        assert_eq!(Activity::between(&second, &first), None);
        assert_eq!(Activity::between(&first, &first), None);
    }

    #[test]
    fn an_unreadable_proc_gives_no_activity_but_no_error() {
        let proc = ProcFs::at(PathBuf::from("/nonexistent-proc"), 1, 100);
        let start = Instant::now();
        let a = proc.sample(start);
        let b = proc.sample(start + Duration::from_secs(1));
        assert_eq!(Activity::between(&a, &b), None);
    }

    #[test]
    fn the_host_proc_shows_the_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let proc = ProcFs::host();
        assert!(proc.ticks_per_second > 0);
        let sample = proc.sample(Instant::now());
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            sample.counters.keys().any(|(pid, _)| *pid == child.id()),
            "{sample:?}"
        );
    }
}
