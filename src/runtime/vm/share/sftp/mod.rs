//! An SFTP server for one shared directory, for the guest's `sshfs -o passive`: boxbuild
//! speaks SFTP itself over a virtio-serial port, so there is no SSH login to the host, no
//! key and no port. Everything it touches is confined by `jail`; a read-only share refuses
//! every change.

mod jail;
mod wire;

use jail::Jail;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use wire::{packet, status, status_reply, Attrs, Parse, Reader, Writer};

/// Directory entries sent per READDIR reply.
const NAMES_PER_REPLY: usize = 128;

enum Handle {
    File(File),
    Dir(std::vec::IntoIter<(Vec<u8>, libc::stat)>),
}

pub struct Server {
    jail: Jail,
    readonly: bool,
    handles: HashMap<u32, Handle>,
    next_handle: u32,
}

fn code_of(e: &io::Error) -> u32 {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => status::NO_SUCH_FILE,
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) | Some(libc::EXDEV)
        | Some(libc::ELOOP) => status::PERMISSION_DENIED,
        _ => status::FAILURE,
    }
}

fn io_reply(id: u32, result: io::Result<()>) -> Writer {
    match result {
        Ok(()) => status_reply(id, status::OK, "ok"),
        Err(e) => status_reply(id, code_of(&e), &e.to_string()),
    }
}

impl Server {
    pub fn new(root: &Path, readonly: bool) -> io::Result<Server> {
        Ok(Server {
            jail: Jail::new(root)?,
            readonly,
            handles: HashMap::new(),
            next_handle: 1,
        })
    }

    /// Serves one client until it closes the stream.
    pub fn serve(&mut self, input: impl Read, output: impl Write) -> io::Result<()> {
        let mut input = BufReader::with_capacity(256 * 1024, input);
        let mut output = BufWriter::with_capacity(256 * 1024, output);
        while let Some((kind, body)) = wire::read_packet(&mut input)? {
            let reply = self.handle(kind, &body).unwrap_or_else(|()| {
                let id = Reader::new(&body).u32().unwrap_or(0);
                status_reply(id, status::BAD_MESSAGE, "bad message")
            });
            reply.send(&mut output)?;
        }
        Ok(())
    }

    fn add_handle(&mut self, id: u32, handle: Handle) -> Writer {
        let n = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1);
        self.handles.insert(n, handle);
        Writer::new(packet::HANDLE).u32(id).string(&n.to_be_bytes())
    }

    fn handle_id(bytes: &[u8]) -> Parse<u32> {
        Ok(u32::from_be_bytes(bytes.try_into().map_err(|_| ())?))
    }

    fn denied(id: u32) -> Writer {
        status_reply(id, status::PERMISSION_DENIED, "read-only share")
    }

    fn handle(&mut self, kind: u8, body: &[u8]) -> Parse<Writer> {
        let mut r = Reader::new(body);
        if kind == packet::INIT {
            return Ok(Writer::new(packet::VERSION)
                .u32(3)
                .string(b"posix-rename@openssh.com")
                .string(b"1")
                .string(b"hardlink@openssh.com")
                .string(b"1")
                .string(b"fsync@openssh.com")
                .string(b"1"));
        }
        let id = r.u32()?;
        let changes = matches!(
            kind,
            packet::SETSTAT
                | packet::FSETSTAT
                | packet::WRITE
                | packet::REMOVE
                | packet::MKDIR
                | packet::RMDIR
                | packet::RENAME
                | packet::SYMLINK
        );
        if changes && self.readonly {
            return Ok(Self::denied(id));
        }
        Ok(match kind {
            packet::OPEN => {
                let path = r.string()?;
                let pflags = r.u32()?;
                let attrs = r.attrs()?;
                self.open(id, path, pflags, &attrs)
            }
            packet::CLOSE => {
                let h = Self::handle_id(r.string()?)?;
                match self.handles.remove(&h) {
                    Some(_) => status_reply(id, status::OK, "ok"),
                    None => status_reply(id, status::FAILURE, "no such handle"),
                }
            }
            packet::READ => {
                let h = Self::handle_id(r.string()?)?;
                let offset = r.u64()?;
                let len = r.u32()?.min(256 * 1024) as usize;
                match self.handles.get(&h) {
                    Some(Handle::File(f)) => {
                        let mut buf = vec![0u8; len];
                        match f.read_at(&mut buf, offset) {
                            Ok(0) if len > 0 => status_reply(id, status::EOF, "end of file"),
                            Ok(n) => Writer::new(packet::DATA).u32(id).string(&buf[..n]),
                            Err(e) => io_reply(id, Err(e)),
                        }
                    }
                    _ => status_reply(id, status::FAILURE, "no such file handle"),
                }
            }
            packet::WRITE => {
                let h = Self::handle_id(r.string()?)?;
                let offset = r.u64()?;
                let data = r.string()?;
                match self.handles.get(&h) {
                    Some(Handle::File(f)) => io_reply(id, f.write_all_at(data, offset)),
                    _ => status_reply(id, status::FAILURE, "no such file handle"),
                }
            }
            packet::LSTAT => self.attrs_reply(id, self.jail.lstat(r.string()?)),
            packet::STAT => {
                // Symlinks are not followed on the host: a link reports itself.
                self.attrs_reply(id, self.jail.lstat(r.string()?))
            }
            packet::FSTAT => {
                let h = Self::handle_id(r.string()?)?;
                match self.handles.get(&h) {
                    Some(Handle::File(f)) => self.attrs_reply(id, jail::fstat(f)),
                    _ => status_reply(id, status::FAILURE, "no such file handle"),
                }
            }
            packet::SETSTAT => {
                let path = r.string()?;
                let attrs = r.attrs()?;
                let opened = self.jail.open(path, libc::O_PATH, 0);
                io_reply(id, opened.and_then(|fd| jail::set_attrs(&fd, &attrs)))
            }
            packet::FSETSTAT => {
                let h = Self::handle_id(r.string()?)?;
                let attrs = r.attrs()?;
                match self.handles.get(&h) {
                    Some(Handle::File(f)) => {
                        let fd = f.try_clone().map(OwnedFd::from);
                        io_reply(id, fd.and_then(|fd| jail::set_attrs(&fd, &attrs)))
                    }
                    _ => status_reply(id, status::FAILURE, "no such file handle"),
                }
            }
            packet::OPENDIR => {
                let path = r.string()?;
                match self.read_dir(path) {
                    Ok(entries) => self.add_handle(id, Handle::Dir(entries.into_iter())),
                    Err(e) => io_reply(id, Err(e)),
                }
            }
            packet::READDIR => {
                let h = Self::handle_id(r.string()?)?;
                match self.handles.get_mut(&h) {
                    Some(Handle::Dir(entries)) => {
                        let batch: Vec<_> = entries.take(NAMES_PER_REPLY).collect();
                        if batch.is_empty() {
                            status_reply(id, status::EOF, "end of directory")
                        } else {
                            let mut w = Writer::new(packet::NAME).u32(id).u32(batch.len() as u32);
                            for (name, st) in &batch {
                                w = w.string(name).string(name).attrs(&Attrs::of(st));
                            }
                            w
                        }
                    }
                    _ => status_reply(id, status::FAILURE, "no such directory handle"),
                }
            }
            packet::REMOVE => io_reply(id, self.jail.remove(r.string()?, false)),
            packet::MKDIR => {
                let path = r.string()?;
                let mode = r.attrs()?.permissions.unwrap_or(0o755);
                io_reply(id, self.jail.mkdir(path, mode))
            }
            packet::RMDIR => io_reply(id, self.jail.remove(r.string()?, true)),
            packet::REALPATH => {
                let path = jail::normalize(r.string()?);
                Writer::new(packet::NAME)
                    .u32(id)
                    .u32(1)
                    .string(&path)
                    .string(&path)
                    .attrs(&Attrs::default())
            }
            packet::RENAME => {
                let (from, to) = (r.string()?, r.string()?);
                io_reply(id, self.jail.rename(from, to, false))
            }
            packet::READLINK => match self.jail.readlink(r.string()?) {
                Ok(target) => Writer::new(packet::NAME)
                    .u32(id)
                    .u32(1)
                    .string(&target)
                    .string(&target)
                    .attrs(&Attrs::default()),
                Err(e) => io_reply(id, Err(e)),
            },
            packet::SYMLINK => {
                // OpenSSH's order, which sshfs follows: target first, then the link.
                let (target, link) = (r.string()?, r.string()?);
                io_reply(id, self.jail.symlink(target, link))
            }
            packet::EXTENDED => self.extended(id, &mut r)?,
            _ => status_reply(id, status::OP_UNSUPPORTED, "unsupported"),
        })
    }

    fn extended(&mut self, id: u32, r: &mut Reader) -> Parse<Writer> {
        let request = r.string()?;
        let changes = request != b"fsync@openssh.com";
        if changes && self.readonly {
            return Ok(Self::denied(id));
        }
        Ok(match request {
            b"posix-rename@openssh.com" => {
                let (from, to) = (r.string()?, r.string()?);
                io_reply(id, self.jail.rename(from, to, true))
            }
            b"hardlink@openssh.com" => {
                let (existing, new) = (r.string()?, r.string()?);
                io_reply(id, self.jail.link(existing, new))
            }
            b"fsync@openssh.com" => {
                let h = Self::handle_id(r.string()?)?;
                match self.handles.get(&h) {
                    Some(Handle::File(f)) => io_reply(id, f.sync_all()),
                    _ => status_reply(id, status::FAILURE, "no such file handle"),
                }
            }
            _ => status_reply(id, status::OP_UNSUPPORTED, "unsupported extension"),
        })
    }

    fn attrs_reply(&self, id: u32, st: io::Result<libc::stat>) -> Writer {
        match st {
            Ok(st) => Writer::new(packet::ATTRS).u32(id).attrs(&Attrs::of(&st)),
            Err(e) => io_reply(id, Err(e)),
        }
    }

    fn open(&mut self, id: u32, path: &[u8], pflags: u32, attrs: &Attrs) -> Writer {
        const READ: u32 = 0x1;
        const WRITE: u32 = 0x2;
        const APPEND: u32 = 0x4;
        const CREAT: u32 = 0x8;
        const TRUNC: u32 = 0x10;
        const EXCL: u32 = 0x20;
        let writes = pflags & (WRITE | APPEND | CREAT | TRUNC) != 0;
        if writes && self.readonly {
            return Self::denied(id);
        }
        let mut flags = match (pflags & READ != 0, writes) {
            (true, true) => libc::O_RDWR,
            (false, true) => libc::O_WRONLY,
            _ => libc::O_RDONLY,
        };
        for (bit, flag) in [
            (APPEND, libc::O_APPEND),
            (CREAT, libc::O_CREAT),
            (TRUNC, libc::O_TRUNC),
            (EXCL, libc::O_EXCL),
        ] {
            if pflags & bit != 0 {
                flags |= flag;
            }
        }
        let mode = attrs.permissions.unwrap_or(0o644);
        match self.jail.open_file(path, flags, mode) {
            Ok(file) => self.add_handle(id, Handle::File(file)),
            Err(e) => io_reply(id, Err(e)),
        }
    }

    /// A directory's entries with their attributes (the symlinks as links).
    fn read_dir(&self, path: &[u8]) -> io::Result<Vec<(Vec<u8>, libc::stat)>> {
        let dir = self
            .jail
            .open(path, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let listing = std::fs::read_dir(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&dir)
        ))?;
        let base = jail::normalize(path);
        let mut entries = Vec::new();
        for name in [&b"."[..], b".."] {
            if let Ok(st) = self.jail.lstat(&base) {
                entries.push((name.to_vec(), st));
            }
        }
        for entry in listing.flatten() {
            let name = entry.file_name().as_bytes().to_vec();
            let mut full = base.clone();
            if !full.ends_with(b"/") {
                full.push(b'/');
            }
            full.extend(&name);
            if let Ok(st) = self.jail.lstat(&full) {
                entries.push((name, st));
            }
        }
        Ok(entries)
    }
}
