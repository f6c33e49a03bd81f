//! SFTP version 3 on the wire (draft-ietf-secsh-filexfer-02): length-prefixed packets of
//! big-endian integers and length-prefixed byte strings. Paths stay raw bytes.

use std::io::{self, Read, Write};

pub mod packet {
    pub const INIT: u8 = 1;
    pub const VERSION: u8 = 2;
    pub const OPEN: u8 = 3;
    pub const CLOSE: u8 = 4;
    pub const READ: u8 = 5;
    pub const WRITE: u8 = 6;
    pub const LSTAT: u8 = 7;
    pub const FSTAT: u8 = 8;
    pub const SETSTAT: u8 = 9;
    pub const FSETSTAT: u8 = 10;
    pub const OPENDIR: u8 = 11;
    pub const READDIR: u8 = 12;
    pub const REMOVE: u8 = 13;
    pub const MKDIR: u8 = 14;
    pub const RMDIR: u8 = 15;
    pub const REALPATH: u8 = 16;
    pub const STAT: u8 = 17;
    pub const RENAME: u8 = 18;
    pub const READLINK: u8 = 19;
    pub const SYMLINK: u8 = 20;
    pub const STATUS: u8 = 101;
    pub const HANDLE: u8 = 102;
    pub const DATA: u8 = 103;
    pub const NAME: u8 = 104;
    pub const ATTRS: u8 = 105;
    pub const EXTENDED: u8 = 200;
}

pub mod status {
    pub const OK: u32 = 0;
    pub const EOF: u32 = 1;
    pub const NO_SUCH_FILE: u32 = 2;
    pub const PERMISSION_DENIED: u32 = 3;
    pub const FAILURE: u32 = 4;
    pub const BAD_MESSAGE: u32 = 5;
    pub const OP_UNSUPPORTED: u32 = 8;
}

/// Larger packets than any client sends (sshfs writes at most 64 KiB at a time).
const MAX_PACKET: usize = 4 << 20;

/// Reads one packet: its type and body. Ok(None) at a clean end of the stream.
pub fn read_packet(input: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_PACKET {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad SFTP packet length {len}"),
        ));
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body)?;
    let kind = body.remove(0);
    Ok(Some((kind, body)))
}

/// A packet body being parsed.
pub struct Reader<'a> {
    bytes: &'a [u8],
}

pub type Parse<T> = Result<T, ()>;

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    fn take(&mut self, n: usize) -> Parse<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(());
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub fn u32(&mut self) -> Parse<u32> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().map_err(|_| ())?,
        ))
    }

    pub fn u64(&mut self) -> Parse<u64> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().map_err(|_| ())?,
        ))
    }

    pub fn string(&mut self) -> Parse<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    pub fn attrs(&mut self) -> Parse<Attrs> {
        let flags = self.u32()?;
        let mut attrs = Attrs::default();
        if flags & Attrs::SIZE != 0 {
            attrs.size = Some(self.u64()?);
        }
        if flags & Attrs::UIDGID != 0 {
            attrs.uid_gid = Some((self.u32()?, self.u32()?));
        }
        if flags & Attrs::PERMISSIONS != 0 {
            attrs.permissions = Some(self.u32()?);
        }
        if flags & Attrs::ACMODTIME != 0 {
            attrs.times = Some((self.u32()?, self.u32()?));
        }
        if flags & Attrs::EXTENDED != 0 {
            for _ in 0..self.u32()? {
                self.string()?;
                self.string()?;
            }
        }
        Ok(attrs)
    }
}

/// File attributes; absent fields are not sent or not to be changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Attrs {
    pub size: Option<u64>,
    pub uid_gid: Option<(u32, u32)>,
    /// Mode bits including the file type.
    pub permissions: Option<u32>,
    /// (atime, mtime) in seconds.
    pub times: Option<(u32, u32)>,
}

impl Attrs {
    const SIZE: u32 = 0x1;
    const UIDGID: u32 = 0x2;
    const PERMISSIONS: u32 = 0x4;
    const ACMODTIME: u32 = 0x8;
    const EXTENDED: u32 = 0x8000_0000;

    pub fn of(st: &libc::stat) -> Attrs {
        Attrs {
            size: Some(st.st_size as u64),
            uid_gid: Some((st.st_uid, st.st_gid)),
            permissions: Some(st.st_mode),
            times: Some((st.st_atime as u32, st.st_mtime as u32)),
        }
    }
}

/// A reply being built.
#[derive(Default)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    pub fn new(kind: u8) -> Writer {
        Writer { bytes: vec![kind] }
    }

    pub fn u32(mut self, v: u32) -> Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(mut self, v: u64) -> Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn string(mut self, s: &[u8]) -> Self {
        self = self.u32(s.len() as u32);
        self.bytes.extend_from_slice(s);
        self
    }

    pub fn attrs(mut self, a: &Attrs) -> Self {
        let mut flags = 0;
        flags |= if a.size.is_some() { Attrs::SIZE } else { 0 };
        flags |= if a.uid_gid.is_some() {
            Attrs::UIDGID
        } else {
            0
        };
        flags |= if a.permissions.is_some() {
            Attrs::PERMISSIONS
        } else {
            0
        };
        flags |= if a.times.is_some() {
            Attrs::ACMODTIME
        } else {
            0
        };
        self = self.u32(flags);
        if let Some(size) = a.size {
            self = self.u64(size);
        }
        if let Some((uid, gid)) = a.uid_gid {
            self = self.u32(uid).u32(gid);
        }
        if let Some(mode) = a.permissions {
            self = self.u32(mode);
        }
        if let Some((atime, mtime)) = a.times {
            self = self.u32(atime).u32(mtime);
        }
        self
    }

    pub fn send(self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&(self.bytes.len() as u32).to_be_bytes())?;
        out.write_all(&self.bytes)?;
        out.flush()
    }
}

pub fn status_reply(id: u32, code: u32, message: &str) -> Writer {
    Writer::new(packet::STATUS)
        .u32(id)
        .u32(code)
        .string(message.as_bytes())
        .string(b"en")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_round_trip() {
        let a = Attrs {
            size: Some(5),
            uid_gid: None,
            permissions: Some(0o100644),
            times: Some((1, 2)),
        };
        let w = Writer::default().attrs(&a);
        assert_eq!(Reader::new(&w.bytes).attrs().unwrap(), a);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        assert!(Reader::new(&[0, 0, 0, 9, b'a']).string().is_err());
        assert!(Reader::new(&[0, 0]).u32().is_err());
    }
}
