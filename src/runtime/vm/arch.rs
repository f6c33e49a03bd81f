//! What differs between guest architectures on QEMU's command line.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchProfile {
    pub name: &'static str,
    pub qemu_binary: &'static str,
    pub machine: &'static str,
    /// CPU model without KVM. `max` enables every feature TCG emulates (kiwi died with
    /// SIGILL on the default qemu64 model).
    pub tcg_cpu: &'static str,
    /// The bus suffix of virtio devices (virtio-blk-pci, virtio-blk-ccw, ...).
    pub virtio_bus: &'static str,
    /// The serial console device the guest kernel sees on this machine type.
    pub console: &'static str,
    /// Debian package that provides the QEMU binary, for the "not installed" message.
    pub debian_package: &'static str,
    /// Firmware that starts a `-kernel` faster than the machine's default, where QEMU's
    /// data dirs have it (the first file found); used only on the default machine type.
    pub fast_firmware: &'static [&'static str],
}

impl ArchProfile {
    /// The first `fast_firmware` file present, for a box on this profile's machine type
    /// (`machine`: the user's `--machine`, if any).
    pub fn firmware(&self, machine: Option<&str>) -> Option<std::path::PathBuf> {
        if machine.is_some_and(|m| m.split(',').next() != Some(self.machine)) {
            return None;
        }
        self.fast_firmware
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_file())
    }
}

const PROFILES: &[ArchProfile] = &[
    ArchProfile {
        name: "x86_64",
        qemu_binary: "qemu-system-x86_64",
        machine: "q35",
        tcg_cpu: "max",
        virtio_bus: "pci",
        console: "ttyS0",
        debian_package: "qemu-system-x86",
        // qboot: QEMU's minimal firmware for booting a kernel, in place of SeaBIOS
        // (docs/design.md, "TCG options").
        fast_firmware: &["/usr/share/qemu/qboot.rom", "/usr/share/qboot/bios.bin"],
    },
    ArchProfile {
        name: "aarch64",
        qemu_binary: "qemu-system-aarch64",
        machine: "virt",
        // Pointer authentication with QEMU's own algorithm: the architected one costs
        // seconds of boot time under emulation.
        tcg_cpu: "max,pauth-impdef=on",
        virtio_bus: "pci",
        console: "ttyAMA0",
        debian_package: "qemu-system-arm",
        fast_firmware: &[],
    },
    ArchProfile {
        name: "s390x",
        qemu_binary: "qemu-system-s390x",
        machine: "s390-ccw-virtio",
        tcg_cpu: "max",
        virtio_bus: "ccw",
        console: "ttysclp0",
        debian_package: "qemu-system-misc",
        fast_firmware: &[],
    },
    ArchProfile {
        name: "ppc64le",
        qemu_binary: "qemu-system-ppc64",
        machine: "pseries",
        tcg_cpu: "max",
        virtio_bus: "pci",
        console: "hvc0",
        debian_package: "qemu-system-ppc",
        fast_firmware: &[],
    },
    ArchProfile {
        name: "riscv64",
        qemu_binary: "qemu-system-riscv64",
        machine: "virt",
        // QEMU 7.2 has no `max` model for RISC-V (it came with 8.0); `rv64` is its
        // generic RV64GC with the common extensions.
        tcg_cpu: "rv64",
        virtio_bus: "pci",
        console: "ttyS0",
        debian_package: "qemu-system-misc",
        fast_firmware: &[],
    },
];

pub fn profile(arch: &str) -> Option<&'static ArchProfile> {
    PROFILES.iter().find(|p| p.name == arch)
}

pub fn known() -> Vec<&'static str> {
    PROFILES.iter().map(|p| p.name).collect()
}

impl ArchProfile {
    pub fn virtio(&self, device: &str) -> String {
        format!("{device}-{}", self.virtio_bus)
    }
}
