//! The wire protocol between boxbuild (host) and boxbuild-agent (guest).
//!
//! It runs over one virtio-serial port. Every message is a frame:
//! `kind: u8 | length: u32 little-endian | payload`. Strings travel as raw bytes with a
//! length prefix, so any argument (spaces, quotes, unicode, non-UTF-8, empty) arrives
//! exactly as it was sent; nothing is ever parsed by a shell.
//!
//! Order: guest sends `Hello`; host sends one `Job`; guest sends `Log`/`BootMarks`/`Started`/
//! `Stdout`/`Stderr` frames and ends with exactly one `Status`. A stream that ends without
//! `Status` means the box failed. Frames of a kind a side does not know are skipped, so a
//! new kind (such as `BootMarks`) needs no new protocol version.
//!
//! Written for Rust 1.63 and without dependencies so the agent builds with a bare rustc.

use std::io::{self, Read, Write};
use std::time::Duration;

/// Bumped on any incompatible change to frames or the job layout.
///
/// 3: the job carries the host's wall-clock time (`Job::host_time`).
pub const PROTOCOL_VERSION: u32 = 3;

/// The oldest protocol version both sides still speak: a host sends a version-2 agent a
/// job in that version's layout (without the host's time), and the agent reads jobs of
/// either version.
pub const OLDEST_PROTOCOL_VERSION: u32 = 2;

/// Name of the virtio-serial port the agent talks on.
pub const PORT_NAME: &str = "org.boxbuild.agent";

/// Upper bound for one frame's payload; protects both sides from a corrupt length.
pub const MAX_FRAME: u32 = 16 * 1024 * 1024;

pub mod kind {
    pub const HELLO: u8 = b'H';
    pub const JOB: u8 = b'J';
    pub const LOG: u8 = b'L';
    pub const STARTED: u8 = b'B';
    pub const STDOUT: u8 = b'1';
    pub const STDERR: u8 = b'2';
    pub const STATUS: u8 = b'S';
    /// The guest's start-up marks (`BootMark`), sent once just before `STARTED`.
    pub const BOOT_MARKS: u8 = b'T';
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub payload: Vec<u8>,
}

pub fn write_frame<W: Write>(w: &mut W, kind: u8, payload: &[u8]) -> io::Result<()> {
    if payload.len() as u64 > MAX_FRAME as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "frame too large",
        ));
    }
    let mut header = [0u8; 5];
    header[0] = kind;
    header[1..].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    // One write per frame keeps frames from two writer threads from interleaving
    // when the caller holds a lock around this call.
    let mut buf = Vec::with_capacity(5 + payload.len());
    buf.extend_from_slice(&header);
    buf.extend_from_slice(payload);
    w.write_all(&buf)?;
    w.flush()
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame started.
pub fn read_frame<R: Read>(r: &mut R) -> io::Result<Option<Frame>> {
    let mut header = [0u8; 5];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
    if len > MAX_FRAME {
        return Err(invalid("frame length over the limit"));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    Ok(Some(Frame {
        kind: header[0],
        payload,
    }))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Appends length-prefixed fields to a payload.
#[derive(Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    pub fn new() -> Self {
        Encoder::default()
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Eight bytes, little-endian.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
        self
    }
    pub fn list(&mut self, items: &[Vec<u8>]) -> &mut Self {
        self.u32(items.len() as u32);
        for item in items {
            self.bytes(item);
        }
        self
    }
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// Reads the fields an `Encoder` wrote, failing on truncation instead of panicking.
pub struct Decoder<'a> {
    buf: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf }
    }
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(invalid("truncated payload"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub fn u32(&mut self) -> io::Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn i32(&mut self) -> io::Result<i32> {
        Ok(self.u32()? as i32)
    }
    /// Eight bytes, little-endian.
    pub fn u64(&mut self) -> io::Result<u64> {
        let b = self.take(8)?;
        let mut le = [0u8; 8];
        le.copy_from_slice(b);
        Ok(u64::from_le_bytes(le))
    }
    pub fn bytes(&mut self) -> io::Result<Vec<u8>> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    pub fn list(&mut self) -> io::Result<Vec<Vec<u8>>> {
        let n = self.u32()? as usize;
        if n > self.buf.len() / 4 {
            return Err(invalid("list longer than its payload"));
        }
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.bytes()?);
        }
        Ok(items)
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// One filesystem the agent mounts before starting the builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub fstype: Vec<u8>,
    pub source: Vec<u8>,
    pub target: Vec<u8>,
    pub options: Vec<u8>,
    pub readonly: bool,
}

/// What the host asks the agent to run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Job {
    /// The builder's argv; argv[0] is looked up in the guest's PATH.
    pub argv: Vec<Vec<u8>>,
    /// `NAME=value` entries added to the builder's environment.
    pub env: Vec<Vec<u8>>,
    pub mounts: Vec<Mount>,
    pub workdir: Vec<u8>,
    /// The network to configure before the builder starts, if the box has one.
    pub network: Option<Network>,
    /// PEM certificates the box should trust in addition to its own (the host's extra
    /// CAs); empty for none.
    pub ca_certs: Vec<u8>,
    /// After the status is sent, open a shell on this console device (e.g. `/dev/ttyS0`)
    /// and power off only when it ends (`--box-debug`); empty: power off at once.
    pub debug_console: Vec<u8>,
    /// The host's wall-clock time when it sent the job, since the Unix epoch; the agent
    /// sets the box's clock to it when the two differ by more than a second. None from a
    /// host speaking protocol 2; on the wire (version 3 and later) a flag, then the seconds
    /// as u64 and the nanoseconds as u32.
    pub host_time: Option<Duration>,
}

/// A static configuration of the box's first network interface. QEMU's user-mode network
/// has fixed addresses, so no DHCP client is needed in the box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// Address with prefix length, e.g. `10.0.2.15/24`.
    pub address: Vec<u8>,
    pub gateway: Vec<u8>,
    pub nameserver: Vec<u8>,
}

impl Job {
    /// The job in the layout of `PROTOCOL_VERSION`.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_for(PROTOCOL_VERSION)
    }

    /// The job in the layout of `version` (`OLDEST_PROTOCOL_VERSION` to
    /// `PROTOCOL_VERSION`), for an agent that greeted with that version; fields the version
    /// lacks are left out.
    pub fn encode_for(&self, version: u32) -> Vec<u8> {
        let mut e = Encoder::new();
        e.u32(version);
        e.list(&self.argv).list(&self.env).bytes(&self.workdir);
        e.u32(self.mounts.len() as u32);
        for m in &self.mounts {
            e.bytes(&m.fstype)
                .bytes(&m.source)
                .bytes(&m.target)
                .bytes(&m.options)
                .u32(m.readonly as u32);
        }
        match &self.network {
            Some(n) => e
                .u32(1)
                .bytes(&n.address)
                .bytes(&n.gateway)
                .bytes(&n.nameserver),
            None => e.u32(0),
        };
        e.bytes(&self.ca_certs).bytes(&self.debug_console);
        if version >= 3 {
            match self.host_time {
                Some(t) => e.u32(1).u64(t.as_secs()).u32(t.subsec_nanos()),
                None => e.u32(0),
            };
        }
        e.finish()
    }

    /// Reads a job of any version from `OLDEST_PROTOCOL_VERSION` to `PROTOCOL_VERSION`;
    /// an error (never a panic) for another version, a truncated payload, trailing bytes or
    /// an empty argv.
    pub fn decode(payload: &[u8]) -> io::Result<Job> {
        let mut d = Decoder::new(payload);
        let version = d.u32()?;
        if !(OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
            return Err(invalid(&format!(
                "job has protocol version {}, this agent speaks {} to {}",
                version, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION
            )));
        }
        let argv = d.list()?;
        let env = d.list()?;
        let workdir = d.bytes()?;
        let count = d.u32()?;
        let mut mounts = Vec::new();
        for _ in 0..count {
            mounts.push(Mount {
                fstype: d.bytes()?,
                source: d.bytes()?,
                target: d.bytes()?,
                options: d.bytes()?,
                readonly: d.u32()? != 0,
            });
        }
        let network = match d.u32()? {
            0 => None,
            _ => Some(Network {
                address: d.bytes()?,
                gateway: d.bytes()?,
                nameserver: d.bytes()?,
            }),
        };
        let ca_certs = d.bytes()?;
        let debug_console = d.bytes()?;
        let host_time = if version >= 3 {
            match d.u32()? {
                0 => None,
                _ => {
                    let secs = d.u64()?;
                    let nanos = d.u32()?;
                    if nanos >= 1_000_000_000 {
                        return Err(invalid("host time has more than a second of nanoseconds"));
                    }
                    Some(Duration::new(secs, nanos))
                }
            }
        } else {
            None
        };
        if !d.is_empty() {
            return Err(invalid("trailing bytes after job"));
        }
        if argv.is_empty() {
            return Err(invalid("job has an empty argv"));
        }
        Ok(Job {
            argv,
            env,
            mounts,
            workdir,
            network,
            ca_certs,
            debug_console,
            host_time,
        })
    }
}

/// How the builder ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The builder exited with this code.
    Exited(i32),
    /// The builder was killed by this signal.
    Signaled(i32),
    /// The agent could not run the builder at all (mount failed, command not found, ...).
    AgentError(String),
}

impl Status {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        match self {
            Status::Exited(code) => e.u32(0).i32(*code).bytes(b""),
            Status::Signaled(sig) => e.u32(1).i32(*sig).bytes(b""),
            Status::AgentError(msg) => e.u32(2).i32(0).bytes(msg.as_bytes()),
        };
        e.finish()
    }

    pub fn decode(payload: &[u8]) -> io::Result<Status> {
        let mut d = Decoder::new(payload);
        let tag = d.u32()?;
        let value = d.i32()?;
        let message = String::from_utf8_lossy(&d.bytes()?).into_owned();
        match tag {
            0 => Ok(Status::Exited(value)),
            1 => Ok(Status::Signaled(value)),
            2 => Ok(Status::AgentError(message)),
            _ => Err(invalid("unknown status tag")),
        }
    }
}

/// Most marks a `BOOT_MARKS` frame may carry; more is a damaged frame.
pub const MAX_BOOT_MARKS: usize = 256;

/// One point of the box's start-up, as the guest measured it: the end of the phase `name`
/// (e.g. `kernel`, `initrd/modules`, `agent/mounts`; a `group/step` name is a step of
/// `group`), at `at` after the kernel started (CLOCK_BOOTTIME). Phases follow each other, so
/// a phase lasts from the mark before it (or the kernel's start) to its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootMark {
    pub name: String,
    pub at: Duration,
}

/// The payload of a `BOOT_MARKS` frame: a count, then per mark its name (bytes) and its
/// time in microseconds (u64).
pub fn encode_boot_marks(marks: &[BootMark]) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u32(marks.len() as u32);
    for mark in marks {
        let micros = mark
            .at
            .as_secs()
            .saturating_mul(1_000_000)
            .saturating_add(u64::from(mark.at.subsec_micros()));
        e.bytes(mark.name.as_bytes()).u64(micros);
    }
    e.finish()
}

/// Reads a `BOOT_MARKS` payload; an error (never a panic) for a truncated payload, trailing
/// bytes or more than `MAX_BOOT_MARKS` marks. Names that are not UTF-8 are read lossily.
pub fn decode_boot_marks(payload: &[u8]) -> io::Result<Vec<BootMark>> {
    let mut d = Decoder::new(payload);
    let count = d.u32()? as usize;
    if count > MAX_BOOT_MARKS {
        return Err(invalid("too many boot marks"));
    }
    let mut marks = Vec::with_capacity(count);
    for _ in 0..count {
        let name = String::from_utf8_lossy(&d.bytes()?).into_owned();
        let micros = d.u64()?;
        marks.push(BootMark {
            name,
            at: Duration::from_micros(micros),
        });
    }
    if !d.is_empty() {
        return Err(invalid("trailing bytes after boot marks"));
    }
    Ok(marks)
}

/// The agent's greeting: protocol version and the agent's own version string.
pub fn encode_hello(agent_version: &str) -> Vec<u8> {
    Encoder::new()
        .u32(PROTOCOL_VERSION)
        .bytes(agent_version.as_bytes())
        .finish()
}

pub fn decode_hello(payload: &[u8]) -> io::Result<(u32, String)> {
    let mut d = Decoder::new(payload);
    let version = d.u32()?;
    let agent = String::from_utf8_lossy(&d.bytes()?).into_owned();
    Ok((version, agent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_round_trips_arbitrary_bytes() {
        let job = Job {
            argv: vec![
                b"builder".to_vec(),
                b"".to_vec(),
                b"$(rm -rf /) `x` 'q' \"dq\"".to_vec(),
                vec![0xff, 0xfe, b'\n', 0],
                "ünï cødé ✓".as_bytes().to_vec(),
            ],
            env: vec![b"A=b c".to_vec()],
            mounts: vec![Mount {
                fstype: b"9p".to_vec(),
                source: b"tag".to_vec(),
                target: b"/t".to_vec(),
                options: b"trans=virtio".to_vec(),
                readonly: true,
            }],
            workdir: b"/target".to_vec(),
            network: Some(Network {
                address: b"10.0.2.15/24".to_vec(),
                gateway: b"10.0.2.2".to_vec(),
                nameserver: b"10.0.2.3".to_vec(),
            }),
            ca_certs: b"-----BEGIN CERTIFICATE-----\n".to_vec(),
            debug_console: b"/dev/ttyS0".to_vec(),
            host_time: Some(Duration::new(1_700_000_000, 123_456_789)),
        };
        assert_eq!(Job::decode(&job.encode()).unwrap(), job);
    }

    #[test]
    fn a_version_2_job_has_no_host_time_and_still_decodes() {
        let job = Job {
            argv: vec![b"builder".to_vec()],
            debug_console: b"/dev/hvc0".to_vec(),
            host_time: Some(Duration::new(1_700_000_000, 5)),
            ..Job::default()
        };
        let old = job.encode_for(2);
        assert_eq!(&old[..4], &2u32.to_le_bytes());
        let decoded = Job::decode(&old).unwrap();
        assert_eq!(decoded.host_time, None);
        assert_eq!(
            decoded,
            Job {
                host_time: None,
                ..job.clone()
            }
        );
        // Version 3 adds exactly the flag, the seconds and the nanoseconds.
        assert_eq!(job.encode().len(), old.len() + 4 + 8 + 4);
        let without = Job {
            host_time: None,
            ..job
        };
        assert_eq!(Job::decode(&without.encode()).unwrap(), without);
    }

    #[test]
    fn jobs_of_unknown_versions_and_bad_times_are_refused() {
        let job = Job {
            argv: vec![b"x".to_vec()],
            host_time: Some(Duration::new(1, 0)),
            ..Job::default()
        };
        for version in [0, 1, PROTOCOL_VERSION + 1] {
            let mut bytes = job.encode();
            bytes[..4].copy_from_slice(&version.to_le_bytes());
            assert!(Job::decode(&bytes).is_err(), "version {}", version);
        }
        let mut bytes = job.encode();
        let at = bytes.len() - 4;
        bytes[at..].copy_from_slice(&1_000_000_000u32.to_le_bytes());
        assert!(Job::decode(&bytes).is_err());
    }

    #[test]
    fn truncated_job_is_an_error_not_a_panic() {
        let bytes = Job {
            argv: vec![b"x".to_vec()],
            ..Job::default()
        }
        .encode();
        for cut in 0..bytes.len() {
            assert!(Job::decode(&bytes[..cut]).is_err(), "cut at {}", cut);
        }
    }

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        let mut wire = Vec::new();
        write_frame(&mut wire, kind::STDOUT, b"hello").unwrap();
        write_frame(&mut wire, kind::STATUS, &Status::Exited(77).encode()).unwrap();
        let mut r = &wire[..];
        let f1 = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(
            (f1.kind, f1.payload.as_slice()),
            (kind::STDOUT, &b"hello"[..])
        );
        let f2 = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(Status::decode(&f2.payload).unwrap(), Status::Exited(77));
        assert!(read_frame(&mut r).unwrap().is_none());
    }

    #[test]
    fn boot_marks_round_trip_and_damage_is_an_error() {
        let marks = vec![
            BootMark {
                name: "kernel".to_string(),
                at: Duration::from_millis(1620),
            },
            BootMark {
                name: "agent/mounts".to_string(),
                at: Duration::new(2, 5_000),
            },
        ];
        let bytes = encode_boot_marks(&marks);
        assert_eq!(decode_boot_marks(&bytes).unwrap(), marks);
        assert_eq!(decode_boot_marks(&encode_boot_marks(&[])).unwrap(), vec![]);
        for cut in 0..bytes.len() {
            assert!(decode_boot_marks(&bytes[..cut]).is_err(), "cut at {}", cut);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_boot_marks(&longer).is_err());
        let many = Encoder::new().u32(MAX_BOOT_MARKS as u32 + 1).finish();
        assert!(decode_boot_marks(&many).is_err());
    }

    #[test]
    fn frame_cut_inside_header_is_an_error() {
        let mut r = &[kind::STDOUT, 1, 0][..];
        assert!(read_frame(&mut r).is_err());
    }

    #[test]
    fn oversized_length_is_rejected() {
        let mut wire = vec![kind::STDOUT];
        wire.extend_from_slice(&(MAX_FRAME + 1).to_le_bytes());
        assert!(read_frame(&mut &wire[..]).is_err());
    }
}
