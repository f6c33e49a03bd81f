//! File operations confined to one directory. Every path is resolved with openat2(2)
//! under RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS from a descriptor of the shared root, so
//! no `..`, symlink or magic link leads out of it; the last component is then used with
//! the *at calls, which never follow it. Symlinks in the share are read, never followed:
//! the guest follows them inside the box.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

pub struct Jail {
    root: OwnedFd,
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The path below the root: leading `/`, empty and `.` components dropped; `..` refused.
pub fn relative(path: &[u8]) -> io::Result<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(io::Error::from_raw_os_error(libc::EACCES)),
            name => parts.push(name),
        }
    }
    Ok(if parts.is_empty() {
        b".".to_vec()
    } else {
        parts.join(&b'/')
    })
}

/// The canonical absolute form of a client path, `..` resolved lexically at the root.
pub fn normalize(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    let mut out = b"/".to_vec();
    out.extend(parts.join(&b'/'));
    out
}

impl Jail {
    pub fn new(root: &Path) -> io::Result<Jail> {
        let c = cstring(root.as_os_str().as_encoded_bytes())?;
        // SAFETY: a valid C string; the result is checked.
        let fd = cvt(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: fd was just opened and is owned here.
        Ok(Jail {
            root: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// openat2 below the root; symlinks anywhere in the path are refused (ELOOP).
    pub fn open(&self, path: &[u8], flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
        let rel = cstring(&relative(path)?)?;
        // libc's open_how is non-exhaustive: fill a zeroed one field by field.
        // SAFETY: open_how is plain data; all zeroes is a valid value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;
        if flags & libc::O_CREAT != 0 {
            how.mode = mode as u64 & 0o7777;
        }
        how.resolve =
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: valid pointers for the duration of the call; the result is checked.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.root.as_raw_fd(),
                rel.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just opened and is owned here.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
    }

    pub fn open_file(&self, path: &[u8], flags: libc::c_int, mode: u32) -> io::Result<File> {
        self.open(path, flags, mode).map(File::from)
    }

    /// The directory holding the last component, and that component's name.
    fn parent(&self, path: &[u8]) -> io::Result<(OwnedFd, CString)> {
        let rel = relative(path)?;
        if rel == b"." {
            // The root itself has no parent inside the share.
            return Err(io::Error::from_raw_os_error(libc::EACCES));
        }
        let (dir, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (rel[..i].to_vec(), rel[i + 1..].to_vec()),
            None => (b".".to_vec(), rel),
        };
        let dir = self.open(&dir, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        Ok((dir, cstring(&name)?))
    }

    pub fn lstat(&self, path: &[u8]) -> io::Result<libc::stat> {
        if relative(path)? == b"." {
            return fstat(&self.root);
        }
        let (dir, name) = self.parent(path)?;
        let mut st = unsafe { std::mem::zeroed::<libc::stat>() };
        // SAFETY: valid fd, name and out pointer.
        cvt(unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        Ok(st)
    }

    pub fn mkdir(&self, path: &[u8], mode: u32) -> io::Result<()> {
        let (dir, name) = self.parent(path)?;
        // SAFETY: valid fd and name.
        cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode & 0o7777) }).map(drop)
    }

    pub fn remove(&self, path: &[u8], directory: bool) -> io::Result<()> {
        let (dir, name) = self.parent(path)?;
        let flags = if directory { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: valid fd and name.
        cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
    }

    pub fn rename(&self, from: &[u8], to: &[u8], replace: bool) -> io::Result<()> {
        let (from_dir, from_name) = self.parent(from)?;
        let (to_dir, to_name) = self.parent(to)?;
        let flags = if replace { 0 } else { libc::RENAME_NOREPLACE };
        // SAFETY: valid fds and names.
        cvt(unsafe {
            libc::renameat2(
                from_dir.as_raw_fd(),
                from_name.as_ptr(),
                to_dir.as_raw_fd(),
                to_name.as_ptr(),
                flags,
            )
        })
        .map(drop)
    }

    pub fn link(&self, existing: &[u8], new: &[u8]) -> io::Result<()> {
        let (old_dir, old_name) = self.parent(existing)?;
        let (new_dir, new_name) = self.parent(new)?;
        // SAFETY: valid fds and names; flags 0 does not follow a symlink.
        cvt(unsafe {
            libc::linkat(
                old_dir.as_raw_fd(),
                old_name.as_ptr(),
                new_dir.as_raw_fd(),
                new_name.as_ptr(),
                0,
            )
        })
        .map(drop)
    }

    /// Creates a symlink holding `target` as given; the host never follows it.
    pub fn symlink(&self, target: &[u8], link: &[u8]) -> io::Result<()> {
        let target = cstring(target)?;
        let (dir, name) = self.parent(link)?;
        // SAFETY: valid strings and fd.
        cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
    }

    pub fn readlink(&self, path: &[u8]) -> io::Result<Vec<u8>> {
        let (dir, name) = self.parent(path)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: the buffer is as long as given.
        let n = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        Ok(buf)
    }
}

pub fn fstat(fd: &impl AsRawFd) -> io::Result<libc::stat> {
    let mut st = unsafe { std::mem::zeroed::<libc::stat>() };
    // SAFETY: valid fd and out pointer.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// Applies mode, size and times to an open file (an O_PATH descriptor works for mode and
/// times through /proc/self/fd). Ownership changes are ignored: the server runs as the
/// user, as QEMU's 9p `security_model=none` does.
pub fn set_attrs(fd: &OwnedFd, attrs: &super::wire::Attrs) -> io::Result<()> {
    // An O_PATH descriptor may name a symlink; its /proc path would lead to the link's
    // target, which may be outside the share.
    if fstat(fd)?.st_mode & libc::S_IFMT == libc::S_IFLNK {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    let proc_path = cstring(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?;
    if let Some(mode) = attrs.permissions {
        // SAFETY: valid path.
        cvt(unsafe { libc::chmod(proc_path.as_ptr(), mode & 0o7777) })?;
    }
    if let Some(size) = attrs.size {
        // SAFETY: valid path.
        cvt(unsafe { libc::truncate(proc_path.as_ptr(), size as libc::off_t) })?;
    }
    if let Some((atime, mtime)) = attrs.times {
        let times = [
            libc::timespec {
                tv_sec: atime as libc::time_t,
                tv_nsec: 0,
            },
            libc::timespec {
                tv_sec: mtime as libc::time_t,
                tv_nsec: 0,
            },
        ];
        // SAFETY: valid path and two timespecs.
        cvt(unsafe { libc::utimensat(libc::AT_FDCWD, proc_path.as_ptr(), times.as_ptr(), 0) })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_below_the_root() {
        assert_eq!(relative(b"/").unwrap(), b".");
        assert_eq!(relative(b"/a//b/./c").unwrap(), b"a/b/c");
        assert!(relative(b"/a/../../etc").is_err());
        assert_eq!(normalize(b"/../a/./b/.."), b"/a");
    }

    #[test]
    fn symlinks_and_dotdot_do_not_lead_out() {
        let tmp = tempfile::tempdir().unwrap();
        let share = tmp.path().join("share");
        std::fs::create_dir(&share).unwrap();
        std::fs::write(tmp.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), share.join("abs")).unwrap();
        std::os::unix::fs::symlink("../secret", share.join("rel")).unwrap();
        std::os::unix::fs::symlink("..", share.join("up")).unwrap();
        let jail = Jail::new(&share).unwrap();
        for path in [&b"/abs"[..], b"/rel", b"/up/secret", b"/../secret"] {
            assert!(
                jail.open(path, libc::O_RDONLY, 0).is_err(),
                "{}",
                String::from_utf8_lossy(path)
            );
        }
        // A symlink is read as a link, and a new one may point anywhere: it is data.
        assert_eq!(jail.readlink(b"/rel").unwrap(), b"../secret");
        jail.symlink(b"/etc/passwd", b"/mine").unwrap();
        assert!(jail.open(b"/mine", libc::O_RDONLY, 0).is_err());
        // Changing attributes through a symlink would reach outside: refused.
        let link = jail.open(b"/abs", libc::O_PATH, 0).unwrap();
        let chmod = super::super::wire::Attrs {
            permissions: Some(0o600),
            size: Some(0),
            ..Default::default()
        };
        assert!(set_attrs(&link, &chmod).is_err());
        let secret = std::fs::metadata(tmp.path().join("secret")).unwrap();
        assert_eq!(secret.len(), 1);
        assert_ne!(
            std::os::unix::fs::PermissionsExt::mode(&secret.permissions()) & 0o777,
            0o600
        );
    }
}
