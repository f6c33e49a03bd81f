//! The few Linux system calls the agent needs beyond std, declared directly against the C
//! library that std already links. Keeping this to a handful of calls lets the agent build
//! with a bare rustc and no crates (see docs/guest-agent.md).

use std::ffi::CString;
use std::io;
use std::os::raw::{c_char, c_int, c_ulong, c_void};

extern "C" {
    fn mount(
        source: *const c_char,
        target: *const c_char,
        fstype: *const c_char,
        flags: c_ulong,
        data: *const c_void,
    ) -> c_int;
    fn umount2(target: *const c_char, flags: c_int) -> c_int;
    fn reboot(cmd: c_int) -> c_int;
    fn sync();
    fn setsid() -> c_int;
    fn kill(pid: c_int, sig: c_int) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn getpid() -> c_int;
}

pub const MS_RDONLY: c_ulong = 1;
pub const MS_NOSUID: c_ulong = 2;
pub const MS_NODEV: c_ulong = 4;
const MNT_DETACH: c_int = 2;
const RB_POWER_OFF: c_int = 0x4321_fedc_u32 as c_int;
pub const SIGKILL: c_int = 9;

fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn check(rc: c_int) -> io::Result<c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

pub fn mount_fs(
    source: &[u8],
    target: &[u8],
    fstype: &[u8],
    flags: c_ulong,
    options: &[u8],
) -> io::Result<()> {
    let (source, target, fstype, options) =
        (cstr(source)?, cstr(target)?, cstr(fstype)?, cstr(options)?);
    let data = if options.as_bytes().is_empty() {
        std::ptr::null()
    } else {
        options.as_ptr() as *const c_void
    };
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    check(unsafe {
        mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data,
        )
    })
    .map(|_| ())
}

pub fn unmount_lazy(target: &[u8]) -> io::Result<()> {
    let target = cstr(target)?;
    // SAFETY: valid C string.
    check(unsafe { umount2(target.as_ptr(), MNT_DETACH) }).map(|_| ())
}

pub fn sync_all() {
    // SAFETY: no arguments, cannot fail.
    unsafe { sync() }
}

pub fn power_off() -> io::Error {
    sync_all();
    // SAFETY: plain system call; only returns on failure.
    unsafe { reboot(RB_POWER_OFF) };
    io::Error::last_os_error()
}

/// Called in the child between fork and exec: a new session, so the builder and all it
/// starts form one process group the agent can kill as a whole.
pub fn new_session() -> io::Result<()> {
    // SAFETY: async-signal-safe system call.
    check(unsafe { setsid() }).map(|_| ())
}

pub fn kill_pid(pid: i32, sig: c_int) {
    // SAFETY: plain system call; errors (no such process) are expected and ignored.
    unsafe { kill(pid, sig) };
}

/// Waits for any child; returns (pid, raw wait status), or None when there are none left.
pub fn wait_any(block: bool) -> Option<(i32, i32)> {
    let mut status: c_int = 0;
    let options = if block {
        0
    } else {
        1 /* WNOHANG */
    };
    loop {
        // SAFETY: status points to a live c_int.
        let pid = unsafe { waitpid(-1, &mut status, options) };
        if pid > 0 {
            return Some((pid, status));
        }
        if pid == 0 {
            return None;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return None;
        }
    }
}

pub fn is_pid1() -> bool {
    // SAFETY: cannot fail.
    unsafe { getpid() == 1 }
}
