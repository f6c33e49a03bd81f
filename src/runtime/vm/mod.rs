//! The virtual machine: accelerator choice, QEMU's command line, its process, and QMP.

pub mod accel;
pub mod arch;
pub mod launch;
pub mod qemu;
pub mod qmp;
pub mod refusal;
pub mod share;
