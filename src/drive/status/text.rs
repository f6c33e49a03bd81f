//! The words of the status line: elapsed times, CPU percentages and byte rates.

use super::Phase;
use crate::runtime::activity::Activity;
use std::time::Duration;

/// What one status line reports.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub phase: Phase,
    /// Time since the box was started.
    pub elapsed: Duration,
    /// Time since the builder's last output.
    pub silent: Duration,
    /// What the box did lately; None when it could not be measured.
    pub activity: Option<Activity>,
}

/// A duration to the second: `8s`, `1m05s`, `12m00s`, `2h03m04s`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m{sec:02}s"),
        (h, min, sec) => format!("{h}h{min:02}m{sec:02}s"),
    }
}

/// A CPU share in whole percent, where 100% is one host core: `0%`, `98%`, `195%`.
pub fn percent(value: f64) -> String {
    format!("{:.0}%", value.max(0.0))
}

/// Bytes per second in binary units, as the download bar counts them: `0 B/s`,
/// `512 B/s`, `1.5 KiB/s`, `30.5 MiB/s`, `1.2 GiB/s`.
pub fn rate(bytes_per_second: f64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes_per_second.max(0.0);
    if value < 1024.0 {
        return format!("{value:.0} B/s");
    }
    let mut unit = UNITS[0];
    for next in UNITS {
        unit = next;
        value /= 1024.0;
        if value < 1024.0 {
            break;
        }
    }
    format!("{value:.1} {unit}/s")
}

/// The status line:
/// `boxbuild: building 14m02s, no output for 3m10s, box CPU 98%, read 1.2 MiB/s, written 30.5 MiB/s`;
/// with `still`, `boxbuild: still building after 14m02s, ...` (the notice where there is
/// no terminal).
pub fn line(report: &Report, still: bool) -> String {
    let mut text = format!(
        "boxbuild: {}{} {}{}, no output for {}",
        if still { "still " } else { "" },
        report.phase.name(),
        if still { "after " } else { "" },
        duration(report.elapsed),
        duration(report.silent)
    );
    if let Some(a) = &report.activity {
        text.push_str(&format!(
            ", box CPU {}, read {}, written {}",
            percent(a.cpu_percent),
            rate(a.read_per_second),
            rate(a.written_per_second)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_clock() {
        let cases = [
            (0, "0s"),
            (8, "8s"),
            (59, "59s"),
            (60, "1m00s"),
            (65, "1m05s"),
            (720, "12m00s"),
            (3599, "59m59s"),
            (3600, "1h00m00s"),
            (7384, "2h03m04s"),
            (100 * 3600, "100h00m00s"),
        ];
        for (secs, text) in cases {
            assert_eq!(duration(Duration::from_secs(secs)), text);
        }
        assert_eq!(duration(Duration::from_millis(5999)), "5s");
    }

    #[test]
    fn cpu_is_whole_percent_of_one_core() {
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(97.6), "98%");
        assert_eq!(percent(195.2), "195%");
        assert_eq!(percent(-3.0), "0%");
    }

    #[test]
    fn rates_use_binary_units() {
        assert_eq!(rate(0.0), "0 B/s");
        assert_eq!(rate(512.4), "512 B/s");
        assert_eq!(rate(1023.0), "1023 B/s");
        assert_eq!(rate(1024.0), "1.0 KiB/s");
        assert_eq!(rate(1536.0), "1.5 KiB/s");
        assert_eq!(rate(32_000_000.0), "30.5 MiB/s");
        assert_eq!(rate(1.25 * 1024.0 * 1024.0 * 1024.0), "1.2 GiB/s");
        assert_eq!(rate(3.0 * 1024f64.powi(5)), "3072.0 TiB/s");
        assert_eq!(rate(-1.0), "0 B/s");
    }

    #[test]
    fn the_line_names_phase_times_and_activity() {
        let mut report = Report {
            phase: Phase::Building,
            elapsed: Duration::from_secs(842),
            silent: Duration::from_secs(190),
            activity: Some(Activity {
                cpu_percent: 98.4,
                read_per_second: 1_258_291.2,
                written_per_second: 32_000_000.0,
            }),
        };
        assert_eq!(
            line(&report, false),
            "boxbuild: building 14m02s, no output for 3m10s, box CPU 98%, read 1.2 MiB/s, written 30.5 MiB/s"
        );
        report.phase = Phase::PoweringOff;
        report.activity = None;
        assert_eq!(
            line(&report, true),
            "boxbuild: still powering off after 14m02s, no output for 3m10s"
        );
        for (phase, name) in [(Phase::Booting, "booting"), (Phase::Bundling, "bundling")] {
            report.phase = phase;
            assert!(line(&report, false).starts_with(&format!("boxbuild: {name} 14m02s")));
        }
    }
}
