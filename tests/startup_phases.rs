//! `-v` lists the start-up's phases with what each took, the host's and the box's, ending
//! with the builder's start.

mod common;

use common::{ok, stderr, Env};
use std::collections::HashMap;

/// The phases of the `start-up:` line (name to seconds, steps left out) and the builder's
/// start.
fn startup_line(text: &str) -> (Vec<(String, f64)>, f64) {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("boxbuild: start-up: "))
        .unwrap_or_else(|| panic!("no start-up line in:\n{text}"));
    let mut phases = Vec::new();
    let mut total = None;
    // Steps in parentheses are parts of the phase before them.
    let mut depth = 0;
    let mut top = String::new();
    for c in line.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => top.push(c),
            _ => {}
        }
    }
    for part in top.split(", ") {
        let (name, secs) = part.trim().rsplit_once(' ').expect(part);
        let secs: f64 = secs.strip_suffix('s').expect(part).parse().expect(part);
        if name == "builder at" {
            total = Some(secs);
        } else {
            phases.push((name.to_string(), secs));
        }
    }
    (phases, total.expect("builder at"))
}

#[test]
fn verbose_lists_the_start_up_phases_with_plausible_times() {
    let env = Env::new();
    env.script("echo built\n");
    let out = env.build(&["-v"], &[]);
    ok(&out);
    let text = stderr(&out);
    let (phases, total) = startup_line(&text);
    let by_name: HashMap<&str, f64> = phases.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    for name in [
        "target lock",
        "catalog",
        "overlay",
        "qemu",
        "kernel",
        "initrd",
        "setup",
        "agent",
    ] {
        assert!(by_name.contains_key(name), "no phase {name} in:\n{text}");
    }
    assert!(phases.iter().all(|(_, s)| *s >= 0.0), "{text}");
    assert!(by_name["kernel"] > 0.0, "{text}");
    let sum: f64 = phases.iter().map(|(_, s)| s).sum();
    // Each figure is rounded to 0.01 s.
    let rounding = 0.005 * (phases.len() + 1) as f64;
    assert!(
        sum <= total + rounding,
        "sum {sum} > total {total}:\n{text}"
    );
    assert!(total > 0.0 && total < 600.0, "{text}");
    // The initrd's steps are listed with it.
    assert!(
        text.contains("initrd ") && text.contains("modules "),
        "{text}"
    );
}
