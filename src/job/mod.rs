//! What the agent is asked to do: the builder's argv (the box's command, with placeholders
//! filled in, then the user's arguments) and all it needs around it, for a box run as a VM
//! or as a container alike (protocol frames in `guest_agent::protocol`).

use crate::boxes::store::ReadyBox;
use crate::job::builder_args::BuilderArgs;

use guest_agent::protocol::{Job, Mount};

pub mod builder_args;
pub mod network;
pub mod plugin;
pub mod scratch;
pub mod shares;
pub mod wire;

/// What the job carries besides the builder's arguments, resolved once by `app::settings`.
#[derive(Debug, Clone, Default)]
pub struct JobSettings {
    /// `--kiwi-version`: kiwi to install from PyPI in the box for this run.
    pub kiwi_version: Option<String>,
    /// `--box-debug`: a shell on the box's console after the build.
    pub debug_shell: bool,
}

/// Where the description appears in the box (read-only).
pub const GUEST_DESCRIPTION: &str = "/description";
/// Where the target dir appears in the box; the builder's working directory.
pub const GUEST_TARGET: &str = "/target";

/// Where the job runs, as far as the job differs: the shares' guest mounts (none in a
/// container, whose shares are bind mounts), a scratch area, the network, the console.
#[derive(Debug, Default)]
pub struct JobPlace {
    /// What the agent mounts before the builder starts.
    pub mounts: Vec<Mount>,
    /// A scratch disk (VM) for the agent to mount at `scratch::GUEST_PATH`.
    pub scratch_disk: bool,
    /// A scratch directory (container) already at `scratch::GUEST_PATH`.
    pub scratch_dir: bool,
    pub network: bool,
    /// Whether the agent configures the network (in a VM) or the engine does.
    pub configure_network: bool,
    /// Whether the box shares the host's network (its loopback is the host's).
    pub host_network: bool,
    /// The box's console device (e.g. ttyS0), where `--box-debug` opens its shell.
    pub console: Option<String>,
}

/// The job for `args` in `ready_box`, run at `place`; `ca_certs` are PEM certificates the
/// agent appends to the box's CA bundle.
pub fn job(
    settings: &JobSettings,
    ready_box: &ReadyBox,
    args: &BuilderArgs,
    place: JobPlace,
    ca_certs: Vec<u8>,
) -> Job {
    let placeholder = |word: &str| -> Vec<u8> {
        match word {
            "{description}" => GUEST_DESCRIPTION.as_bytes().to_vec(),
            "{target}" => GUEST_TARGET.as_bytes().to_vec(),
            other => other.as_bytes().to_vec(),
        }
    };
    let mut argv: Vec<Vec<u8>> = ready_box
        .settings
        .builder
        .iter()
        .map(|w| placeholder(w))
        .collect();
    argv.extend(args.rest.iter().map(|a| {
        use std::os::unix::ffi::OsStrExt;
        a.as_bytes().to_vec()
    }));
    let mut env = vec![
        format!("BOXBUILD_DESCRIPTION={GUEST_DESCRIPTION}"),
        format!("BOXBUILD_TARGET={GUEST_TARGET}"),
    ];
    let mut mounts = place.mounts;
    if place.scratch_dir {
        env.push(format!("BOXBUILD_SCRATCH={}", scratch::GUEST_PATH));
    }
    if place.scratch_disk {
        env.push(format!("BOXBUILD_SCRATCH={}", scratch::GUEST_PATH));
        mounts.push(Mount {
            fstype: b"ext4".to_vec(),
            source: format!("serial={}", scratch::SERIAL).into_bytes(),
            target: scratch::GUEST_PATH.as_bytes().to_vec(),
            options: scratch::MOUNT_OPTIONS.as_bytes().to_vec(),
            readonly: false,
        });
    }
    if let Some(version) = &settings.kiwi_version {
        env.push(format!("BOXBUILD_KIWI_VERSION={version}"));
    }
    env.extend(source_date_epoch(|name| std::env::var(name).ok()));
    if place.network {
        env.extend(network::proxy_env(
            |name| std::env::var(name).ok(),
            place.host_network,
        ));
    }
    Job {
        argv,
        env: env.into_iter().map(String::into_bytes).collect(),
        mounts,
        workdir: GUEST_TARGET.as_bytes().to_vec(),
        network: (place.network && place.configure_network).then(network::user_network),
        ca_certs,
        debug_console: match (&place.console, settings.debug_shell) {
            (Some(console), true) => format!("/dev/{console}").into_bytes(),
            _ => Vec::new(),
        },
        // Stamped as the job is sent (agent::send_job).
        host_time: None,
    }
}

/// `SOURCE_DATE_EPOCH=N` when the caller set it to a number of seconds
/// (reproducible-builds.org): kiwi stamps the containers it builds with that time, so a
/// build can be repeated bit for bit. Anything else is not passed on.
fn source_date_epoch(lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    let value = lookup("SOURCE_DATE_EPOCH")?;
    (!value.is_empty() && value.len() <= 20 && value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("SOURCE_DATE_EPOCH={value}"))
}

#[cfg(test)]
mod tests {
    use super::source_date_epoch;

    #[test]
    fn source_date_epoch_only_as_a_number() {
        let with = |v: &'static str| move |_: &str| Some(v.to_string());
        assert_eq!(
            source_date_epoch(with("1700000000")).as_deref(),
            Some("SOURCE_DATE_EPOCH=1700000000")
        );
        assert_eq!(source_date_epoch(with("")), None);
        assert_eq!(source_date_epoch(with("yesterday")), None);
        assert_eq!(source_date_epoch(with("-1")), None);
        assert_eq!(source_date_epoch(|_| None), None);
    }
}
