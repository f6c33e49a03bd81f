//! What a build spends between its invocation and the builder's start, phase by phase, for
//! `-v`: the host's own steps, timed as they end, and the box's, which the guest measures
//! from the kernel's start (`BootMark`s) and which are placed on the host's clock by the
//! builder's start, the one moment both sides see.

use guest_agent::protocol::BootMark;
use std::time::{Duration, Instant};

/// Sub-steps shorter than this are left out of a phase's parentheses (its own time still
/// counts them): under TCG most of the agent's steps take a millisecond or less.
pub const SHOWN_STEP: Duration = Duration::from_millis(5);

/// The host's steps as they end, counted from the invocation.
#[derive(Debug, Clone)]
pub struct Timeline {
    invoked: Instant,
    marks: Vec<(String, Duration)>,
}

/// One phase of the start-up and what it took; `steps` are its parts (`group/step` marks),
/// in order, empty for a phase without parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub name: String,
    pub took: Duration,
    pub steps: Vec<(String, Duration)>,
}

impl Timeline {
    /// A timeline of a build invoked at `invoked`.
    pub fn new(invoked: Instant) -> Timeline {
        Timeline {
            invoked,
            marks: Vec::new(),
        }
    }

    /// Marks the end of the host's phase `name` now.
    pub fn mark(&mut self, name: &str) {
        self.mark_at(name, Instant::now());
    }

    /// Marks the end of the host's phase `name` at `at` (the invocation if earlier).
    pub fn mark_at(&mut self, name: &str, at: Instant) {
        let since = at.saturating_duration_since(self.invoked);
        self.marks.push((name.to_string(), since));
    }

    /// The phases up to the builder's start, which the host saw at `builder`: the host's
    /// own, then the guest's `marks` (from a `BOOT_MARKS` frame that arrived at
    /// `builder`; their last mark is the builder's start), or, from an agent that sends
    /// none, one phase `box` for the whole boot. Returns the phases and the time from the
    /// invocation to the builder's start, which their durations add up to.
    pub fn phases(&self, guest: &[BootMark], builder: Instant) -> (Vec<Phase>, Duration) {
        let end = builder.saturating_duration_since(self.invoked);
        let mut points = self.marks.clone();
        match guest.last() {
            Some(last) => {
                let kernel_start = end.saturating_sub(last.at);
                points.extend(
                    guest
                        .iter()
                        .map(|m| (m.name.clone(), kernel_start.saturating_add(m.at))),
                );
            }
            None => points.push(("box".to_string(), end)),
        }
        (group(&points, end), end)
    }
}

/// Turns the ends of phases (time since the invocation) into phases: each lasts from the
/// end before it to its own, on a clock that never runs backwards nor beyond `end`, so no
/// phase is negative and together they take `end` at most. Consecutive `group/step` marks
/// of the same group make one phase with steps.
pub fn group(points: &[(String, Duration)], end: Duration) -> Vec<Phase> {
    let mut phases: Vec<Phase> = Vec::new();
    let mut previous = Duration::ZERO;
    for (name, at) in points {
        let at = (*at).clamp(previous, end.max(previous));
        let took = at - previous;
        previous = at;
        let (group, step) = match name.split_once('/') {
            Some((group, step)) => (group, Some(step)),
            None => (name.as_str(), None),
        };
        match (phases.last_mut(), step) {
            (Some(last), Some(step)) if last.name == group && !last.steps.is_empty() => {
                last.took += took;
                last.steps.push((step.to_string(), took));
            }
            _ => phases.push(Phase {
                name: group.to_string(),
                took,
                steps: step
                    .map(|s| vec![(s.to_string(), took)])
                    .unwrap_or_default(),
            }),
        }
    }
    phases
}

/// One line: `start-up: catalog 0.01s, ..., agent 0.08s (mounts 0.03s, network 0.05s),
/// builder at 2.31s` (seconds with two decimals; steps under `SHOWN_STEP` left out).
pub fn format(phases: &[Phase], total: Duration) -> String {
    let seconds = |d: &Duration| format!("{:.2}s", d.as_secs_f64());
    let mut parts = Vec::new();
    for phase in phases {
        let mut part = format!("{} {}", phase.name, seconds(&phase.took));
        let shown: Vec<String> = phase
            .steps
            .iter()
            .filter(|(_, took)| *took >= SHOWN_STEP)
            .map(|(step, took)| format!("{step} {}", seconds(took)))
            .collect();
        if !shown.is_empty() {
            part.push_str(&format!(" ({})", shown.join(", ")));
        }
        parts.push(part);
    }
    parts.push(format!("builder at {}", seconds(&total)));
    format!("start-up: {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn mark(name: &str, at: u64) -> BootMark {
        BootMark {
            name: name.to_string(),
            at: ms(at),
        }
    }

    fn timeline(host: &[(&str, u64)]) -> (Timeline, Instant) {
        let invoked = Instant::now();
        let mut t = Timeline::new(invoked);
        for (name, at) in host {
            t.mark_at(name, invoked + ms(*at));
        }
        (t, invoked)
    }

    #[test]
    fn guest_marks_are_placed_by_the_builders_start_and_grouped() {
        let (t, invoked) = timeline(&[("catalog", 10), ("overlay", 30), ("qemu", 180)]);
        let guest = [
            mark("kernel", 1600),
            mark("initrd/modules", 1850),
            mark("initrd/root", 1870),
            mark("initrd/switch_root", 1900),
            mark("agent/job", 1950),
            mark("agent/mounts", 2000),
        ];
        // The kernel started 200 ms after the invocation, 20 ms after QMP answered.
        let (phases, total) = t.phases(&guest, invoked + ms(2200));
        assert_eq!(total, ms(2200));
        let names: Vec<&str> = phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["catalog", "overlay", "qemu", "kernel", "initrd", "agent"]
        );
        assert_eq!(phases[2].took, ms(150));
        assert_eq!(phases[3].took, ms(1620));
        assert_eq!(phases[4].took, ms(300));
        assert_eq!(
            phases[4].steps,
            vec![
                ("modules".to_string(), ms(250)),
                ("root".to_string(), ms(20)),
                ("switch_root".to_string(), ms(30))
            ]
        );
        let sum: Duration = phases.iter().map(|p| p.took).sum();
        assert_eq!(sum, total);
        assert_eq!(
            format(&phases, total),
            "start-up: catalog 0.01s, overlay 0.02s, qemu 0.15s, kernel 1.62s, \
             initrd 0.30s (modules 0.25s, root 0.02s, switch_root 0.03s), \
             agent 0.10s (job 0.05s, mounts 0.05s), builder at 2.20s"
        );
    }

    #[test]
    fn overlapping_clocks_never_give_negative_phases_nor_more_than_the_total() {
        // The guest claims the kernel started before QEMU was even asked for: its first
        // phase is cut to what is left, nothing runs backwards.
        let (t, invoked) = timeline(&[("catalog", 10), ("qemu", 500)]);
        let guest = [mark("kernel", 300), mark("agent/builder", 600)];
        let (phases, total) = t.phases(&guest, invoked + ms(800));
        let kernel = &phases[2];
        assert_eq!((kernel.name.as_str(), kernel.took), ("kernel", ms(0)));
        let sum: Duration = phases.iter().map(|p| p.took).sum();
        assert_eq!(sum, total);
        // A guest clock beyond the host's end is cut at the end.
        let (phases, total) = t.phases(&[mark("kernel", 5000)], invoked + ms(800));
        let sum: Duration = phases.iter().map(|p| p.took).sum();
        assert!(sum <= total, "{sum:?} > {total:?}");
    }

    #[test]
    fn an_agent_without_marks_gives_one_box_phase() {
        let (t, invoked) = timeline(&[("catalog", 10), ("qemu", 200)]);
        let (phases, total) = t.phases(&[], invoked + ms(2500));
        assert_eq!(phases.last().unwrap().name, "box");
        assert_eq!(phases.last().unwrap().took, ms(2300));
        assert_eq!(
            format(&phases, total),
            "start-up: catalog 0.01s, qemu 0.19s, box 2.30s, builder at 2.50s"
        );
    }

    #[test]
    fn a_step_after_a_plain_phase_of_its_groups_name_starts_a_new_phase() {
        let points = [
            ("agent".to_string(), ms(5)),
            ("agent/job".to_string(), ms(10)),
            ("setup/mounts".to_string(), ms(12)),
            ("agent/job".to_string(), ms(20)),
        ];
        let phases = group(&points, ms(20));
        let names: Vec<&str> = phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["agent", "agent", "setup", "agent"]);
        assert!(format(&[], Duration::ZERO).ends_with("builder at 0.00s"));
    }
}
