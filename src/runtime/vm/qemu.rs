//! QEMU's command line for one box run. Everything the run creates (overlay, sockets,
//! console log) is given as paths inside the run dir.

use super::accel::Accel;
use super::arch::ArchProfile;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct QemuSpec {
    pub profile: &'static ArchProfile,
    pub accel: Accel,
    pub machine: Option<String>,
    pub cpu: Option<String>,
    pub memory_mib: u64,
    pub cpus: u32,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    /// `-bios`: a faster firmware than the machine's default (`ArchProfile::firmware`).
    pub firmware: Option<PathBuf>,
    /// The per-run overlay (qcow2) over the box disk.
    pub disk: Option<PathBuf>,
    /// The per-run scratch disk (raw, sparse), found in the box by its serial.
    pub scratch: Option<PathBuf>,
    /// QEMU's user-mode network on a virtio NIC.
    pub network: bool,
    pub console_log: PathBuf,
    /// `--box-debug`: the console on boxbuild's terminal (and still logged), with QEMU's
    /// Ctrl-A escapes; otherwise only in the log.
    pub console_on_terminal: bool,
    /// The agent's channel; None for boxes of KIWI's Python plugin, which have no agent.
    pub agent_socket: Option<PathBuf>,
    /// The console on a virtio console (hvc0, as the Python plugin's boxes expect)
    /// instead of the machine's serial port.
    pub virtconsole: bool,
    pub qmp_socket: PathBuf,
    /// Arguments of the sharing backend.
    pub share_args: Vec<OsString>,
}

/// A path as a value inside a QEMU option list, where a comma must be doubled.
pub fn option_value(path: &OsStr) -> OsString {
    let mut out = Vec::with_capacity(path.len());
    for &b in path.as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

/// `prefix` followed by an escaped path: e.g. `file,id=con,path=` + `/run/x`.
pub fn with_path(prefix: &str, path: &OsStr) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(option_value(path));
    s
}

impl QemuSpec {
    pub fn args(&self) -> Vec<OsString> {
        let p = self.profile;
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        let machine = self
            .machine
            .clone()
            .unwrap_or_else(|| p.machine.to_string());
        let cpu = self.cpu.clone().unwrap_or_else(|| match self.accel {
            Accel::Kvm => "host".to_string(),
            Accel::Tcg => p.tcg_cpu.to_string(),
        });
        push(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
        push(&["-machine", &machine, "-accel", self.accel.name()]);
        push(&["-cpu", &cpu]);
        if let Some(firmware) = &self.firmware {
            a.push("-bios".into());
            a.push(firmware.clone().into());
        }
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        push(&[
            "-m",
            &format!("{}M", self.memory_mib),
            "-smp",
            &self.cpus.to_string(),
        ]);
        a.push("-kernel".into());
        a.push(self.kernel.clone().into());
        if let Some(initrd) = &self.initrd {
            a.push("-initrd".into());
            a.push(initrd.clone().into());
        }
        a.push("-append".into());
        a.push(self.cmdline.clone().into());

        // Console into a log file: kept for the failure report, followed by --box-console.
        a.push("-chardev".into());
        a.push(if self.console_on_terminal {
            with_path(
                "stdio,id=console,mux=on,signal=off,logfile=",
                self.console_log.as_os_str(),
            )
        } else {
            with_path("file,id=console,path=", self.console_log.as_os_str())
        });
        if !self.virtconsole {
            a.push("-serial".into());
            a.push("chardev:console".into());
        }

        // Control and agent channels: boxbuild listens, QEMU connects.
        a.push("-chardev".into());
        a.push(with_path(
            "socket,id=qmp,path=",
            self.qmp_socket.as_os_str(),
        ));
        a.push("-mon".into());
        a.push("chardev=qmp,mode=control".into());
        a.push("-device".into());
        a.push(p.virtio("virtio-serial").into());
        if self.virtconsole {
            a.push("-device".into());
            a.push("virtconsole,chardev=console".into());
        }
        if let Some(agent_socket) = &self.agent_socket {
            a.push("-chardev".into());
            a.push(with_path("socket,id=agent,path=", agent_socket.as_os_str()));
            a.push("-device".into());
            a.push(
                format!(
                    "virtserialport,chardev=agent,name={}",
                    guest_agent::protocol::PORT_NAME
                )
                .into(),
            );
        }

        if let Some(disk) = &self.disk {
            a.push("-drive".into());
            a.push(with_path(
                "if=none,id=disk0,format=qcow2,discard=unmap,file=",
                disk.as_os_str(),
            ));
            a.push("-device".into());
            a.push(format!("{},drive=disk0", p.virtio("virtio-blk")).into());
        }
        if let Some(scratch) = &self.scratch {
            // cache=unsafe: the disk is thrown away after the run, flushes buy nothing.
            a.push("-drive".into());
            a.push(with_path(
                "if=none,id=scratch,format=raw,cache=unsafe,discard=unmap,file=",
                scratch.as_os_str(),
            ));
            a.push("-device".into());
            a.push(
                format!(
                    "{},drive=scratch,serial={}",
                    p.virtio("virtio-blk"),
                    crate::job::scratch::SERIAL
                )
                .into(),
            );
        }
        if self.network {
            a.push("-netdev".into());
            a.push("user,id=net0".into());
            a.push("-device".into());
            a.push(format!("{},netdev=net0", p.virtio("virtio-net")).into());
        }
        a.extend(self.share_args.iter().cloned());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::vm::arch::profile;

    fn spec(accel: Accel) -> QemuSpec {
        QemuSpec {
            profile: profile("x86_64").unwrap(),
            accel,
            machine: None,
            cpu: None,
            memory_mib: 512,
            cpus: 2,
            kernel: "/k".into(),
            initrd: None,
            cmdline: "console=ttyS0".into(),
            firmware: None,
            disk: Some("/run/a,b/overlay.qcow2".into()),
            scratch: Some("/run/s.img".into()),
            network: true,
            console_log: "/run/c.log".into(),
            console_on_terminal: false,
            agent_socket: Some("/run/agent.sock".into()),
            virtconsole: false,
            qmp_socket: "/run/qmp.sock".into(),
            share_args: vec![],
        }
    }

    fn joined(s: &QemuSpec) -> String {
        s.args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn cpu_follows_the_accelerator() {
        assert!(joined(&spec(Accel::Tcg)).contains("-accel tcg -cpu max"));
        assert!(joined(&spec(Accel::Kvm)).contains("-accel kvm -cpu host"));
        let mut s = spec(Accel::Tcg);
        s.cpu = Some("qemu64".into());
        s.machine = Some("pc".into());
        assert!(joined(&s).contains("-machine pc -accel tcg -cpu qemu64"));
    }

    #[test]
    fn scratch_disk_and_network_devices() {
        let line = joined(&spec(Accel::Tcg));
        assert!(line.contains("virtio-blk-pci,drive=scratch,serial=boxbuild-scratch"));
        assert!(line.contains("-netdev user,id=net0 -device virtio-net-pci,netdev=net0"));
        let mut s = spec(Accel::Tcg);
        s.network = false;
        assert!(!joined(&s).contains("netdev"));
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        assert!(joined(&spec(Accel::Tcg)).contains("file=/run/a,,b/overlay.qcow2"));
    }
}
