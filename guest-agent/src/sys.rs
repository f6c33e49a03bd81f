//! The few Linux system calls the agent needs beyond std, declared directly against the C
//! library that std already links. Keeping this to a handful of calls lets the agent build
//! with a bare rustc and no crates (see docs/guest-agent.md).

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::raw::{c_char, c_int, c_long, c_uint, c_ulong, c_void};
use std::os::unix::io::AsRawFd;
use std::time::Duration;

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
    fn sethostname(name: *const c_char, len: usize) -> c_int;
    fn umask(mask: c_uint) -> c_uint;
    fn clock_settime(clock: c_int, tp: *const Timespec) -> c_int;
    fn clock_gettime(clock: c_int, tp: *mut Timespec) -> c_int;
    fn getrlimit(resource: c_int, rlim: *mut Rlimit) -> c_int;
    fn setrlimit(resource: c_int, rlim: *const Rlimit) -> c_int;
    fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
}

/// `struct timespec` of the C library's default ABI (time_t and the nanoseconds are
/// `long` on Linux).
#[repr(C)]
struct Timespec {
    tv_sec: c_long,
    tv_nsec: c_long,
}

/// `struct rlimit`: rlim_t is `unsigned long` in glibc on Linux, 64 bits on every box
/// architecture (the assertion below keeps a 32-bit build from compiling).
#[repr(C)]
struct Rlimit {
    rlim_cur: u64,
    rlim_max: u64,
}

const _: () = assert!(std::mem::size_of::<c_ulong>() == 8);

/// `struct ifreq` with its flags member: the interface name, then the union, whose
/// largest member makes the struct 40 bytes on 64-bit targets (32 on 32-bit ones).
#[repr(C)]
struct IfreqFlags {
    name: [u8; 16],
    flags: i16,
    pad: [u8; 22],
}

pub const MS_RDONLY: c_ulong = 1;
pub const MS_NOSUID: c_ulong = 2;
pub const MS_NODEV: c_ulong = 4;
pub const MS_NOEXEC: c_ulong = 8;
const MNT_DETACH: c_int = 2;
const RB_POWER_OFF: c_int = 0x4321_fedc_u32 as c_int;
pub const SIGKILL: c_int = 9;
const CLOCK_REALTIME: c_int = 0;
/// From linux/time.h: time since boot, suspend included.
const CLOCK_BOOTTIME: c_int = 7;
/// From linux/sockios.h; the same on every architecture.
const SIOCGIFFLAGS: c_ulong = 0x8913;
const SIOCSIFFLAGS: c_ulong = 0x8914;
const SIOCSIFADDR: c_ulong = 0x8916;
const SIOCSIFNETMASK: c_ulong = 0x891c;
const SIOCADDRT: c_ulong = 0x890b;
/// From linux/if.h.
const IFF_UP: i16 = 0x1;
/// From linux/socket.h and linux/route.h.
const AF_INET: u16 = 2;
const RTF_UP: u16 = 0x1;
const RTF_GATEWAY: u16 = 0x2;

/// `struct sockaddr_in`: the family in host order, port and address in network order,
/// padded to the 16 bytes of `struct sockaddr`.
#[repr(C)]
#[derive(Clone, Copy)]
struct SockaddrIn {
    family: u16,
    port: [u8; 2],
    addr: [u8; 4],
    zero: [u8; 8],
}

impl SockaddrIn {
    fn ipv4(addr: Ipv4Addr) -> SockaddrIn {
        SockaddrIn {
            family: AF_INET,
            port: [0; 2],
            addr: addr.octets(),
            zero: [0; 8],
        }
    }
}

/// `struct ifreq` with its address member (`ifr_addr`, `ifr_netmask`), padded to the
/// union's 24 bytes on 64-bit targets.
#[repr(C)]
struct IfreqAddr {
    name: [u8; 16],
    addr: SockaddrIn,
    pad: [u8; 8],
}

/// `struct rtentry` of linux/route.h, for SIOCADDRT.
#[repr(C)]
struct Rtentry {
    pad1: c_ulong,
    dst: SockaddrIn,
    gateway: SockaddrIn,
    genmask: SockaddrIn,
    flags: u16,
    pad2: i16,
    pad3: c_ulong,
    pad4: *mut c_void,
    metric: i16,
    dev: *mut c_char,
    mtu: c_ulong,
    window: c_ulong,
    irtt: u16,
}

const _: () = assert!(std::mem::size_of::<IfreqAddr>() == 40);
const _: () = assert!(std::mem::size_of::<Rtentry>() == 120);

/// A resource limit, as numbered in asm-generic/resource.h, which every box architecture
/// (x86_64, aarch64, s390x, ppc64le, riscv64) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// RLIMIT_CORE: the largest core file, in bytes.
    Core = 4,
    /// RLIMIT_NPROC: processes (threads) per real user id.
    Nproc = 6,
    /// RLIMIT_NOFILE: one more than the highest file descriptor number a process may open.
    Nofile = 7,
}

/// RLIM_INFINITY: no limit (all ones, asm-generic/resource.h).
pub const RLIM_INFINITY: u64 = u64::MAX;

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

/// Names the system (sethostname(2)); EINVAL for a name longer than the kernel's 64 bytes.
pub fn set_hostname(name: &[u8]) -> io::Result<()> {
    // SAFETY: the pointer and length describe a live byte slice; the name needs no NUL.
    check(unsafe { sethostname(name.as_ptr() as *const c_char, name.len()) }).map(|_| ())
}

/// Sets the process's file mode creation mask (umask(2)), e.g. 0o022; it cannot fail.
pub fn set_umask(mask: u32) {
    // SAFETY: plain system call.
    unsafe { umask(mask as c_uint) };
}

/// Sets the system's wall clock (CLOCK_REALTIME, clock_settime(2)) to `since_epoch` after
/// the Unix epoch; EPERM without CAP_SYS_TIME, EINVAL beyond what time_t holds.
pub fn set_clock(since_epoch: Duration) -> io::Result<()> {
    let secs = c_long::try_from(since_epoch.as_secs()).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, "time beyond what time_t holds")
    })?;
    let ts = Timespec {
        tv_sec: secs,
        tv_nsec: since_epoch.subsec_nanos() as c_long,
    };
    // SAFETY: ts is a live timespec for the duration of the call.
    check(unsafe { clock_settime(CLOCK_REALTIME, &ts) }).map(|_| ())
}

/// The time since the kernel started (CLOCK_BOOTTIME, clock_gettime(2)), the clock of
/// /proc/uptime; None if the kernel cannot tell.
pub fn since_boot() -> Option<Duration> {
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a live timespec the call fills in.
    check(unsafe { clock_gettime(CLOCK_BOOTTIME, &mut ts) }).ok()?;
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u32::try_from(ts.tv_nsec)
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    Some(Duration::new(secs, nanos))
}

/// The soft and hard value of a resource limit (getrlimit(2)); `RLIM_INFINITY` for none.
pub fn get_rlimit(resource: Resource) -> io::Result<(u64, u64)> {
    let mut lim = Rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a live rlimit the call fills in.
    check(unsafe { getrlimit(resource as c_int, &mut lim) })?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Sets a resource limit (setrlimit(2)); EPERM when raising the hard limit without
/// CAP_SYS_RESOURCE, EPERM for RLIMIT_NOFILE above /proc/sys/fs/nr_open.
pub fn set_rlimit(resource: Resource, soft: u64, hard: u64) -> io::Result<()> {
    let lim = Rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: lim is a live rlimit for the duration of the call.
    check(unsafe { setrlimit(resource as c_int, &lim) }).map(|_| ())
}

/// Sets IFF_UP on the named network interface (e.g. `lo`) through SIOCGIFFLAGS and
/// SIOCSIFFLAGS on an IPv4 datagram socket (netdevice(7)); the kernel gives the loopback
/// interface its addresses (127.0.0.1/8, ::1) as it comes up. ENODEV for no such
/// interface.
pub fn interface_up(name: &str) -> io::Result<()> {
    let mut req = IfreqFlags {
        name: interface_name(name)?,
        flags: 0,
        pad: [0; 22],
    };
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    let fd = socket.as_raw_fd();
    // SAFETY: req is a live ifreq of at least the kernel's size for both calls.
    check(unsafe { ioctl(fd, SIOCGIFFLAGS, &mut req as *mut IfreqFlags) })?;
    if req.flags & IFF_UP != 0 {
        return Ok(());
    }
    req.flags |= IFF_UP;
    // SAFETY: as above.
    check(unsafe { ioctl(fd, SIOCSIFFLAGS, &mut req as *mut IfreqFlags) }).map(|_| ())
}

/// An interface name as `struct ifreq` holds it: at most 15 bytes and a NUL.
fn interface_name(name: &str) -> io::Result<[u8; 16]> {
    let mut buf = [0u8; 16];
    if name.is_empty() || name.len() >= buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name empty or longer than 15 bytes",
        ));
    }
    buf[..name.len()].copy_from_slice(name.as_bytes());
    Ok(buf)
}

/// Gives the interface `name` the IPv4 `address` with the network mask `netmask`
/// (SIOCSIFADDR, SIOCSIFNETMASK; netdevice(7)); the kernel adds the route to that network
/// once the interface is up. EEXIST-free to repeat; ENODEV for no such interface.
pub fn set_ipv4_address(name: &str, address: Ipv4Addr, netmask: Ipv4Addr) -> io::Result<()> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    let fd = socket.as_raw_fd();
    for (request, value) in [(SIOCSIFADDR, address), (SIOCSIFNETMASK, netmask)] {
        let mut req = IfreqAddr {
            name: interface_name(name)?,
            addr: SockaddrIn::ipv4(value),
            pad: [0; 8],
        };
        // SAFETY: req is a live ifreq of the kernel's size.
        check(unsafe { ioctl(fd, request, &mut req as *mut IfreqAddr) })?;
    }
    Ok(())
}

/// Adds the default IPv4 route through `gateway` (SIOCADDRT, route(4)); the gateway must
/// be on a network an interface has. EEXIST if there is one already.
pub fn add_default_route(gateway: Ipv4Addr) -> io::Result<()> {
    let any = SockaddrIn::ipv4(Ipv4Addr::UNSPECIFIED);
    let mut route = Rtentry {
        pad1: 0,
        dst: any,
        gateway: SockaddrIn::ipv4(gateway),
        genmask: any,
        flags: RTF_UP | RTF_GATEWAY,
        pad2: 0,
        pad3: 0,
        pad4: std::ptr::null_mut(),
        metric: 0,
        dev: std::ptr::null_mut(),
        mtu: 0,
        window: 0,
        irtt: 0,
    };
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    // SAFETY: route is a live rtentry of the kernel's size; dev is NULL (any device).
    check(unsafe { ioctl(socket.as_raw_fd(), SIOCADDRT, &mut route as *mut Rtentry) }).map(|_| ())
}
