//! The uncompressed kernel inside an x86 bzImage, for booting through PVH.
//!
//! A bzImage (Linux x86 boot protocol, `Documentation/arch/x86/boot.rst` in the kernel
//! sources) is a real-mode setup part followed by a small decompressor and the
//! compressed kernel, the *payload*: the ELF file `vmlinux` (stripped), usually followed
//! by relocation data. Under emulation the kernel takes seconds to decompress itself.
//! QEMU boots the payload's ELF directly when it carries the Xen PVH entry note
//! (`XEN_ELFNOTE_PHYS32_ENTRY`, Xen's `public/elfnote.h`), skipping that work.
//!
//! Everything here reads bytes that came from the network: every offset and length is
//! checked, nothing panics, and the answer for anything unexpected is [`Kept`], meaning
//! "boot the file as it is".

use std::fmt;
use std::io::Read;
use std::ops::Range;

/// How many leading bytes [`check_header`] needs: the boot protocol's header up to and
/// including `payload_length` (offset 0x24c, 4 bytes).
pub const HEADER_LEN: usize = 0x250;

/// The largest kernel file that is read at all (bytes). Debian's bzImage is about 8 MiB.
pub const MAX_IMAGE: u64 = 256 << 20;

/// The largest uncompressed kernel accepted (bytes); a payload that decompresses to more
/// is refused, so a hostile file cannot exhaust memory. Debian's is about 63 MiB.
pub const MAX_ELF: usize = 512 << 20;

/// Memory liblzma may use to decode an xz payload (bytes). The kernel's build uses a
/// dictionary of at most 32 MiB.
const XZ_MEMLIMIT: u64 = 256 << 20;

/// Boot protocol fields (offsets from the start of the file; boot.rst, "The real-mode
/// kernel header").
const SETUP_SECTS: usize = 0x1f1;
const HEADER_MAGIC_AT: usize = 0x202;
const HEADER_MAGIC: &[u8; 4] = b"HdrS";
const VERSION_AT: usize = 0x206;
const PAYLOAD_OFFSET_AT: usize = 0x248;
const PAYLOAD_LENGTH_AT: usize = 0x24c;
/// The first protocol version with `payload_offset` and `payload_length`.
const MIN_VERSION: u16 = 0x0208;

/// ELF (System V ABI, "Object Files"): the header fields and values checked.
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;
const PT_NOTE: u32 = 4;
/// The size of an ELF64 file header and program header entry (bytes).
const EHDR64_LEN: usize = 64;
const PHDR64_LEN: usize = 56;

/// Xen's `public/elfnote.h`: the note naming the 32-bit physical entry point of a PVH
/// kernel; its owner name is "Xen".
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const XEN_NOTE_NAME: &[u8] = b"Xen\0";

/// Why a kernel file is booted as it is rather than through an extracted ELF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// Shorter than the boot protocol's header.
    TooShort,
    /// The file is already an ELF (e.g. a `vmlinux` a box recipe extracted).
    AlreadyElf,
    /// No `HdrS` at 0x202: not an x86 bzImage (another architecture's image, say).
    NotBzImage,
    /// Boot protocol older than 2.08: the payload is not described.
    OldProtocol(u16),
    /// `payload_offset`/`payload_length` point outside the file.
    PayloadOutside,
    /// The payload is compressed with a method boxbuild does not unpack.
    Compression(&'static str),
    /// Decompressing failed: damaged or truncated data.
    Damaged(String),
    /// The payload decompresses to more than this many bytes ([`MAX_ELF`]).
    TooLarge(usize),
    /// The payload is not an ELF64 little-endian x86-64 executable.
    NotElf(&'static str),
    /// The ELF has no `XEN_ELFNOTE_PHYS32_ENTRY` note (a kernel without CONFIG_PVH).
    NoPvh,
}

impl fmt::Display for Kept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kept::TooShort => write!(f, "too short for a bzImage"),
            Kept::AlreadyElf => write!(f, "already an uncompressed ELF"),
            Kept::NotBzImage => write!(f, "not an x86 bzImage"),
            Kept::OldProtocol(v) => write!(
                f,
                "boot protocol {}.{:02} describes no payload (2.08 or later needed)",
                v >> 8,
                v & 0xff
            ),
            Kept::PayloadOutside => write!(f, "the bzImage's payload lies outside the file"),
            Kept::Compression(method) => {
                write!(
                    f,
                    "the payload is {method}-compressed (unpacked are xz, zstd and gzip)"
                )
            }
            Kept::Damaged(why) => write!(f, "the payload does not decompress: {why}"),
            Kept::TooLarge(limit) => write!(
                f,
                "the payload decompresses to more than {} MiB",
                limit >> 20
            ),
            Kept::NotElf(why) => write!(f, "the payload is not an x86-64 ELF kernel: {why}"),
            Kept::NoPvh => write!(
                f,
                "the kernel has no PVH entry note (built without CONFIG_PVH)"
            ),
        }
    }
}

/// Compression methods by their magic bytes at the start of the payload (the kernel's
/// `lib/decompress.c` knows the same list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Gzip,
    Xz,
    Zstd,
    Other(&'static str),
    Unknown,
}

fn method_of(payload: &[u8]) -> Method {
    const MAGICS: &[(&[u8], Method)] = &[
        (b"\x1f\x8b", Method::Gzip),
        (b"\x1f\x9e", Method::Gzip),
        (b"\xfd7zXZ\x00", Method::Xz),
        (b"\x28\xb5\x2f\xfd", Method::Zstd),
        (b"BZh", Method::Other("bzip2")),
        (b"\x5d\x00\x00", Method::Other("lzma")),
        (b"\x89LZO", Method::Other("lzo")),
        (b"\x02\x21\x4c\x18", Method::Other("lz4")),
    ];
    MAGICS
        .iter()
        .find(|(magic, _)| payload.starts_with(magic))
        .map_or(Method::Unknown, |(_, method)| *method)
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        bytes.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Checks the first [`HEADER_LEN`] bytes (or more) of a kernel file: Ok(protocol version)
/// for a bzImage whose payload is described (boot protocol 2.08 or later), else why the
/// file is booted as it is. Reads nothing past the header, so it is cheap on every run.
pub fn check_header(head: &[u8]) -> Result<u16, Kept> {
    if head.starts_with(ELF_MAGIC) {
        return Err(Kept::AlreadyElf);
    }
    if head.len() < HEADER_LEN {
        return Err(Kept::TooShort);
    }
    if head.get(HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4) != Some(HEADER_MAGIC.as_slice()) {
        return Err(Kept::NotBzImage);
    }
    let version = u16_at(head, VERSION_AT).ok_or(Kept::TooShort)?;
    if version < MIN_VERSION {
        return Err(Kept::OldProtocol(version));
    }
    Ok(version)
}

/// Where the compressed payload lies in a whole bzImage (byte range into `image`).
///
/// The protected-mode code starts after the setup sectors: `(setup_sects + 1) * 512`
/// bytes, where a `setup_sects` of 0 means 4 (boot.rst); `payload_offset` counts from
/// there and `payload_length` includes whatever the build appended to the compressed
/// stream (the uncompressed size, for most methods).
pub fn payload_range(image: &[u8]) -> Result<Range<usize>, Kept> {
    check_header(image)?;
    let setup_sects = match image.get(SETUP_SECTS).copied().ok_or(Kept::TooShort)? {
        0 => 4,
        n => usize::from(n),
    };
    let offset = u32_at(image, PAYLOAD_OFFSET_AT).ok_or(Kept::TooShort)?;
    let length = u32_at(image, PAYLOAD_LENGTH_AT).ok_or(Kept::TooShort)?;
    let start = (setup_sects + 1)
        .checked_mul(512)
        .and_then(|s| s.checked_add(usize::try_from(offset).ok()?))
        .ok_or(Kept::PayloadOutside)?;
    let end = start
        .checked_add(usize::try_from(length).map_err(|_| Kept::PayloadOutside)?)
        .ok_or(Kept::PayloadOutside)?;
    if length == 0 || end > image.len() {
        return Err(Kept::PayloadOutside);
    }
    Ok(start..end)
}

/// The uncompressed ELF inside a whole bzImage, checked to boot through PVH (see
/// [`pvh_entry`]). Unpacks xz, zstd and gzip payloads; decodes one stream and ignores
/// what follows it. Errors say why the image is best booted as it is.
pub fn extract_pvh(image: &[u8]) -> Result<Vec<u8>, Kept> {
    extract_pvh_within(image, MAX_ELF)
}

/// [`extract_pvh`] with a limit on the uncompressed size (bytes).
fn extract_pvh_within(image: &[u8], limit: usize) -> Result<Vec<u8>, Kept> {
    let payload = &image[payload_range(image)?];
    let elf = match method_of(payload) {
        Method::Xz => unxz(payload, limit)?,
        Method::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(payload)
                .map_err(|e| Kept::Damaged(format!("zstd: {e}")))?
                .single_frame();
            read_capped(decoder, "zstd", limit)?
        }
        Method::Gzip => read_capped(flate2::bufread::GzDecoder::new(payload), "gzip", limit)?,
        Method::Other(name) => return Err(Kept::Compression(name)),
        Method::Unknown => return Err(Kept::Compression("unknown")),
    };
    pvh_entry(&elf)?;
    Ok(elf)
}

/// Reads a decoder to its end, refusing more than `limit` bytes.
fn read_capped(decoder: impl Read, method: &str, limit: usize) -> Result<Vec<u8>, Kept> {
    let mut out = Vec::new();
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Kept::Damaged(format!("{method}: {e}")))?;
    if out.len() > limit {
        return Err(Kept::TooLarge(limit));
    }
    Ok(out)
}

/// One xz stream (with the kernel's x86 BCJ filter, which liblzma applies by itself),
/// stopping at its end: the kernel build appends the uncompressed size after it.
fn unxz(payload: &[u8], limit: usize) -> Result<Vec<u8>, Kept> {
    use liblzma::stream::{Action, Status, Stream};
    const CHUNK: usize = 4 << 20;
    let damaged = |e: liblzma::stream::Error| Kept::Damaged(format!("xz: {e}"));
    let mut stream = Stream::new_stream_decoder(XZ_MEMLIMIT, 0).map_err(damaged)?;
    let mut out: Vec<u8> = Vec::new();
    loop {
        if out.len() >= limit {
            return Err(Kept::TooLarge(limit));
        }
        if out.capacity() == out.len() {
            out.reserve(CHUNK.min(limit - out.len()));
        }
        let consumed = usize::try_from(stream.total_in()).unwrap_or(usize::MAX);
        let input = payload.get(consumed..).unwrap_or_default();
        let before = (stream.total_in(), stream.total_out());
        match stream.process_vec(input, &mut out, Action::Run) {
            Ok(Status::StreamEnd) => return Ok(out),
            Ok(_) if (stream.total_in(), stream.total_out()) == before => {
                return Err(Kept::Damaged("xz: the stream is truncated".into()))
            }
            Ok(_) => {}
            Err(e) => return Err(damaged(e)),
        }
    }
}

/// The PVH entry point (a 32-bit physical address) of an ELF kernel, the check that
/// QEMU can boot it through PVH: an ELF64 little-endian x86-64 executable (ELF header,
/// System V ABI) with a `PT_NOTE` segment holding the note of owner "Xen" and type
/// `XEN_ELFNOTE_PHYS32_ENTRY` (18) with a non-zero 4-byte address.
pub fn pvh_entry(elf: &[u8]) -> Result<u32, Kept> {
    if !elf.starts_with(ELF_MAGIC) {
        return Err(Kept::NotElf("no ELF magic"));
    }
    if elf.len() < EHDR64_LEN {
        return Err(Kept::NotElf("truncated ELF header"));
    }
    if elf[4] != ELFCLASS64 || elf[5] != ELFDATA2LSB {
        return Err(Kept::NotElf("not 64-bit little-endian"));
    }
    if u16_at(elf, 16) != Some(ET_EXEC) {
        return Err(Kept::NotElf("not an executable"));
    }
    if u16_at(elf, 18) != Some(EM_X86_64) {
        return Err(Kept::NotElf("not for x86-64"));
    }
    let bad_headers = Kept::NotElf("program headers outside the file");
    let phoff = u64_at(elf, 32)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or(bad_headers.clone())?;
    let phentsize = usize::from(u16_at(elf, 54).ok_or(bad_headers.clone())?);
    let phnum = usize::from(u16_at(elf, 56).ok_or(bad_headers.clone())?);
    if phentsize < PHDR64_LEN {
        return Err(Kept::NotElf("program header entries too small"));
    }
    // QEMU reads the whole table before it looks at any entry.
    let table_end = phentsize
        .checked_mul(phnum)
        .and_then(|len| len.checked_add(phoff));
    if table_end.is_none_or(|end| end > elf.len()) {
        return Err(bad_headers);
    }
    for i in 0..phnum {
        let at = i
            .checked_mul(phentsize)
            .and_then(|o| o.checked_add(phoff))
            .ok_or(bad_headers.clone())?;
        let phdr = elf
            .get(at..at.checked_add(PHDR64_LEN).ok_or(bad_headers.clone())?)
            .ok_or(bad_headers.clone())?;
        if u32_at(phdr, 0) != Some(PT_NOTE) {
            continue;
        }
        let (Some(offset), Some(size)) = (u64_at(phdr, 8), u64_at(phdr, 32)) else {
            continue;
        };
        let notes = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(size).ok())
            .and_then(|(o, s)| elf.get(o..o.checked_add(s)?));
        if let Some(entry) = notes.and_then(xen_phys32_entry) {
            return Ok(entry);
        }
    }
    Err(Kept::NoPvh)
}

/// Walks one `PT_NOTE` segment's notes (each: `namesz`, `descsz`, `type` as 4-byte
/// words, then the name and the descriptor, each padded to 4 bytes) for Xen's PVH entry.
fn xen_phys32_entry(notes: &[u8]) -> Option<u32> {
    let pad4 = |n: usize| n.checked_add(3).map(|n| n & !3);
    let mut at = 0usize;
    while at.checked_add(12)? <= notes.len() {
        let namesz = usize::try_from(u32_at(notes, at)?).ok()?;
        let descsz = usize::try_from(u32_at(notes, at + 4)?).ok()?;
        let kind = u32_at(notes, at + 8)?;
        let name_at = at + 12;
        let desc_at = name_at.checked_add(pad4(namesz)?)?;
        let next = desc_at.checked_add(pad4(descsz)?)?;
        let name = notes.get(name_at..name_at.checked_add(namesz)?)?;
        if kind == XEN_ELFNOTE_PHYS32_ENTRY && name == XEN_NOTE_NAME && descsz >= 4 {
            return u32_at(notes, desc_at).filter(|&entry| entry != 0);
        }
        at = next;
    }
    None
}

/// Kernels made up for tests: ELF files with chosen notes, compressed payloads, and
/// bzImages laid out as the kernel build lays them out.
#[cfg(test)]
pub(crate) mod samples {
    use super::*;
    use std::io::Write;

    /// A minimal ELF64 x86-64 executable: header, one PT_NOTE program header, the notes.
    pub fn elf_with_notes(notes: &[(&[u8], u32, &[u8])]) -> Vec<u8> {
        let mut note_bytes = Vec::new();
        for (name, kind, desc) in notes {
            note_bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
            note_bytes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            note_bytes.extend_from_slice(&kind.to_le_bytes());
            note_bytes.extend_from_slice(name);
            note_bytes.resize(note_bytes.len().next_multiple_of(4), 0);
            note_bytes.extend_from_slice(desc);
            note_bytes.resize(note_bytes.len().next_multiple_of(4), 0);
        }
        let notes_at = (EHDR64_LEN + PHDR64_LEN) as u64;
        let mut elf = vec![0u8; EHDR64_LEN];
        elf[..4].copy_from_slice(ELF_MAGIC);
        elf[4] = ELFCLASS64;
        elf[5] = ELFDATA2LSB;
        elf[6] = 1;
        elf[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        elf[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        elf[32..40].copy_from_slice(&(EHDR64_LEN as u64).to_le_bytes());
        elf[52..54].copy_from_slice(&(EHDR64_LEN as u16).to_le_bytes());
        elf[54..56].copy_from_slice(&(PHDR64_LEN as u16).to_le_bytes());
        elf[56..58].copy_from_slice(&1u16.to_le_bytes());
        let mut phdr = vec![0u8; PHDR64_LEN];
        phdr[..4].copy_from_slice(&PT_NOTE.to_le_bytes());
        phdr[8..16].copy_from_slice(&notes_at.to_le_bytes());
        phdr[32..40].copy_from_slice(&(note_bytes.len() as u64).to_le_bytes());
        phdr[40..48].copy_from_slice(&(note_bytes.len() as u64).to_le_bytes());
        phdr[48..56].copy_from_slice(&4u64.to_le_bytes());
        elf.extend_from_slice(&phdr);
        elf.extend_from_slice(&note_bytes);
        // Stands in for the kernel's code and data.
        elf.extend((0..4096u32).map(|i| (i * 7 % 251) as u8));
        elf
    }

    pub const ENTRY: u32 = 0x0100_0a30;

    pub fn pvh_elf() -> Vec<u8> {
        elf_with_notes(&[
            (b"GNU\0", 3, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
            (b"Linux\0", 1, b"6.1"),
            (
                XEN_NOTE_NAME,
                XEN_ELFNOTE_PHYS32_ENTRY,
                &ENTRY.to_le_bytes(),
            ),
        ])
    }

    pub fn xz(data: &[u8]) -> Vec<u8> {
        use liblzma::stream::{Check, Filters, LzmaOptions, Stream};
        let mut filters = Filters::new();
        filters.x86();
        filters.lzma2(&LzmaOptions::new_preset(6).unwrap());
        let stream = Stream::new_stream_encoder(&filters, Check::Crc32).unwrap();
        let mut enc = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    pub fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 19).unwrap()
    }

    pub fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// A bzImage as the kernel build lays it out: boot sector and setup (`setup_sects`
    /// sectors after the first), then the decompressor stub, the payload with the
    /// uncompressed size appended, and a little trailing code.
    pub fn bzimage(setup_sects: u8, compressed: &[u8], uncompressed_len: usize) -> Vec<u8> {
        let setup_len = (usize::from(if setup_sects == 0 { 4 } else { setup_sects }) + 1) * 512;
        let mut image = vec![0u8; setup_len];
        image[SETUP_SECTS] = setup_sects;
        image[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        image[HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4].copy_from_slice(HEADER_MAGIC);
        image[VERSION_AT..VERSION_AT + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        let stub = vec![0xccu8; 700];
        let mut payload = compressed.to_vec();
        payload.extend_from_slice(&(uncompressed_len as u32).to_le_bytes());
        image[PAYLOAD_OFFSET_AT..PAYLOAD_OFFSET_AT + 4]
            .copy_from_slice(&(stub.len() as u32).to_le_bytes());
        image[PAYLOAD_LENGTH_AT..PAYLOAD_LENGTH_AT + 4]
            .copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(&stub);
        image.extend_from_slice(&payload);
        image.extend_from_slice(&[0x90; 300]);
        image
    }
}

#[cfg(test)]
mod tests {
    use super::samples::*;
    use super::*;

    #[test]
    fn finds_the_pvh_note_among_others() {
        assert_eq!(pvh_entry(&pvh_elf()), Ok(ENTRY));
    }

    #[test]
    fn an_elf_without_the_xen_note_is_no_pvh_kernel() {
        let no_note = elf_with_notes(&[(b"GNU\0", 3, &[0; 20])]);
        assert_eq!(pvh_entry(&no_note), Err(Kept::NoPvh));
        let other_owner = elf_with_notes(&[(b"Linux\0", 18, &ENTRY.to_le_bytes())]);
        assert_eq!(pvh_entry(&other_owner), Err(Kept::NoPvh));
        let zero = elf_with_notes(&[(XEN_NOTE_NAME, 18, &0u32.to_le_bytes())]);
        assert_eq!(pvh_entry(&zero), Err(Kept::NoPvh));
        let short_desc = elf_with_notes(&[(XEN_NOTE_NAME, 18, &[1, 2])]);
        assert_eq!(pvh_entry(&short_desc), Err(Kept::NoPvh));
    }

    #[test]
    fn other_elf_kinds_are_refused() {
        let mut elf32 = pvh_elf();
        elf32[4] = 1;
        assert!(matches!(pvh_entry(&elf32), Err(Kept::NotElf(_))));
        let mut big_endian = pvh_elf();
        big_endian[5] = 2;
        assert!(matches!(pvh_entry(&big_endian), Err(Kept::NotElf(_))));
        let mut arm = pvh_elf();
        arm[18..20].copy_from_slice(&183u16.to_le_bytes());
        assert_eq!(pvh_entry(&arm), Err(Kept::NotElf("not for x86-64")));
        let mut shared_object = pvh_elf();
        shared_object[16..18].copy_from_slice(&3u16.to_le_bytes());
        assert!(matches!(pvh_entry(&shared_object), Err(Kept::NotElf(_))));
        let mut far_headers = pvh_elf();
        far_headers[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(pvh_entry(&far_headers), Err(Kept::NotElf(_))));
        let mut many_headers = pvh_elf();
        many_headers[56..58].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(matches!(pvh_entry(&many_headers), Err(Kept::NotElf(_))));
    }

    #[test]
    fn note_sizes_pointing_anywhere_are_survived() {
        let base = pvh_elf();
        let notes_at = EHDR64_LEN + PHDR64_LEN;
        for word in [0u32, 3, 4, 0x7fff_fffc, u32::MAX - 2, u32::MAX] {
            for field in 0..3 {
                let mut elf = base.clone();
                let at = notes_at + field * 4;
                elf[at..at + 4].copy_from_slice(&word.to_le_bytes());
                let _ = pvh_entry(&elf);
            }
        }
        let mut huge_segment = base.clone();
        let size_at = EHDR64_LEN + 32;
        huge_segment[size_at..size_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(pvh_entry(&huge_segment), Err(Kept::NoPvh));
    }

    #[test]
    fn reads_the_boot_protocol_header() {
        let image = bzimage(27, &xz(&pvh_elf()), pvh_elf().len());
        assert_eq!(check_header(&image[..HEADER_LEN]), Ok(0x020f));
        let range = payload_range(&image).unwrap();
        assert_eq!(range.start, 28 * 512 + 700);
        assert!(image[range].starts_with(b"\xfd7zXZ\x00"));
        // setup_sects 0 means 4.
        let image = bzimage(0, &gzip(b"x"), 1);
        assert_eq!(payload_range(&image).unwrap().start, 5 * 512 + 700);
    }

    #[test]
    fn header_problems_are_named() {
        let image = bzimage(1, &gzip(&pvh_elf()), pvh_elf().len());
        assert_eq!(check_header(&image[..HEADER_LEN - 1]), Err(Kept::TooShort));
        assert_eq!(check_header(&pvh_elf()), Err(Kept::AlreadyElf));
        assert_eq!(check_header(&[0u8; 4096]), Err(Kept::NotBzImage));
        let mut old = image.clone();
        old[VERSION_AT..VERSION_AT + 2].copy_from_slice(&0x0207u16.to_le_bytes());
        assert_eq!(payload_range(&old), Err(Kept::OldProtocol(0x0207)));
        assert!(Kept::OldProtocol(0x0207).to_string().contains("2.07"));
        for (at, value) in [
            (PAYLOAD_OFFSET_AT, u32::MAX),
            (PAYLOAD_LENGTH_AT, u32::MAX),
            (PAYLOAD_LENGTH_AT, 0),
        ] {
            let mut bad = image.clone();
            bad[at..at + 4].copy_from_slice(&value.to_le_bytes());
            assert_eq!(payload_range(&bad), Err(Kept::PayloadOutside));
        }
    }

    #[test]
    fn unpacks_xz_zstd_and_gzip_payloads_with_trailing_bytes() {
        let elf = pvh_elf();
        for compressed in [xz(&elf), zstd(&elf), gzip(&elf)] {
            assert_eq!(
                extract_pvh(&bzimage(3, &compressed, elf.len())),
                Ok(elf.clone())
            );
        }
    }

    #[test]
    fn other_compressions_and_kernels_without_pvh_are_kept() {
        let mut bzip2 = b"BZh91AY&SY".to_vec();
        bzip2.extend_from_slice(&[0; 64]);
        assert_eq!(
            extract_pvh(&bzimage(3, &bzip2, 100)),
            Err(Kept::Compression("bzip2"))
        );
        assert_eq!(
            extract_pvh(&bzimage(3, &[0x42; 64], 100)),
            Err(Kept::Compression("unknown"))
        );
        let no_pvh = elf_with_notes(&[(b"Linux\0", 1, b"6.1")]);
        assert_eq!(
            extract_pvh(&bzimage(3, &xz(&no_pvh), no_pvh.len())),
            Err(Kept::NoPvh)
        );
        let not_elf = vec![0x11u8; 5000];
        assert!(matches!(
            extract_pvh(&bzimage(3, &zstd(&not_elf), not_elf.len())),
            Err(Kept::NotElf(_))
        ));
    }

    #[test]
    fn a_payload_larger_than_the_limit_is_refused() {
        // Zeros compress to almost nothing: a small file that unpacks to a lot.
        let zeros = vec![0u8; 3 << 20];
        let limit = 2 << 20;
        for bomb in [xz(&zeros), zstd(&zeros), gzip(&zeros)] {
            let image = bzimage(3, &bomb, zeros.len());
            assert_eq!(
                extract_pvh_within(&image, limit),
                Err(Kept::TooLarge(limit))
            );
            assert!(matches!(
                extract_pvh_within(&image, 4 << 20),
                Err(Kept::NotElf(_))
            ));
        }
    }

    /// Deterministic pseudo-random bytes (xorshift).
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn truncated_and_damaged_images_never_panic() {
        let elf = pvh_elf();
        for compressed in [xz(&elf), zstd(&elf), gzip(&elf)] {
            let image = bzimage(3, &compressed, elf.len());
            let payload = payload_range(&image).unwrap();
            // Cut anywhere: in the header, the payload, or after it.
            for len in (0..image.len())
                .step_by(37)
                .chain([payload.end - 1, payload.end])
            {
                let cut = &image[..len];
                let _ = check_header(cut);
                let _ = payload_range(cut);
                let result = extract_pvh(cut);
                if len < payload.end {
                    assert!(result.is_err(), "cut at {len} of {}", image.len());
                }
            }
            // Truncated inside the payload, with the header still describing all of it.
            for keep in [8, 20, compressed.len() / 2, compressed.len() - 1] {
                let mut short = image[..payload.start].to_vec();
                short.extend_from_slice(&compressed[..keep]);
                let len = keep as u32;
                short[PAYLOAD_LENGTH_AT..PAYLOAD_LENGTH_AT + 4].copy_from_slice(&len.to_le_bytes());
                assert!(
                    matches!(extract_pvh(&short), Err(Kept::Damaged(_))),
                    "kept {keep}"
                );
            }
            // Flipped bytes in the payload.
            for seed in 0..40u64 {
                let mut damaged = image.clone();
                let flips = noise(8, seed);
                for (i, b) in flips.iter().enumerate() {
                    let at = payload.start
                        + (usize::from(*b) * 131 + i * 977 + seed as usize * 61) % payload.len();
                    damaged[at] ^= b | 1;
                }
                let _ = extract_pvh(&damaged);
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        for seed in 0..200u64 {
            let mut bytes = noise(64 + (seed as usize * 53) % 4000, seed);
            let _ = check_header(&bytes);
            let _ = pvh_entry(&bytes);
            let _ = extract_pvh(&bytes);
            // Garbage behind a valid-looking header, and behind an ELF magic.
            if bytes.len() >= HEADER_LEN {
                bytes[HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4].copy_from_slice(HEADER_MAGIC);
                bytes[VERSION_AT..VERSION_AT + 2].copy_from_slice(&0x020fu16.to_le_bytes());
                let _ = extract_pvh(&bytes);
            }
            bytes[..4].copy_from_slice(ELF_MAGIC);
            bytes[4] = ELFCLASS64;
            bytes[5] = ELFDATA2LSB;
            let _ = pvh_entry(&bytes);
        }
    }

    /// A real kernel: `$BOXBUILD_TEST_VMLINUZ`, this machine's own (`/boot/vmlinuz-*`), or
    /// the one the tiny box recipe keeps with `--keep-vmlinuz` (the integration tests
    /// build it).
    #[test]
    fn a_real_debian_bzimage_unpacks_to_a_pvh_kernel() {
        let mut candidates: Vec<std::path::PathBuf> = std::env::var_os("BOXBUILD_TEST_VMLINUZ")
            .map(Into::into)
            .into_iter()
            .collect();
        candidates.extend(
            std::fs::read_dir("/boot")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
                }),
        );
        let test_boxes = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-boxes");
        candidates.extend(
            std::fs::read_dir(test_boxes)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join("vmlinuz"))
                .filter(|p| p.is_file()),
        );
        let Some(vmlinuz) = candidates
            .into_iter()
            .find(|p| std::fs::read(p).is_ok_and(|b| check_header(&b).is_ok()))
        else {
            eprintln!("no x86 bzImage on this machine; skipped");
            return;
        };
        let image = std::fs::read(&vmlinuz).unwrap();
        let started = std::time::Instant::now();
        let elf = extract_pvh(&image).unwrap_or_else(|e| panic!("{}: {e}", vmlinuz.display()));
        eprintln!(
            "{}: {} bytes unpacked to {} in {:.2}s",
            vmlinuz.display(),
            image.len(),
            elf.len(),
            started.elapsed().as_secs_f64()
        );
        assert!(pvh_entry(&elf).unwrap() > 0x100000);
        // The recipe's copy, extracted by xz(1) from the same file, is the same ELF.
        let recipe_kernel = vmlinuz.with_file_name("kernel");
        if let Ok(extracted) = std::fs::read(&recipe_kernel) {
            assert!(extracted == elf, "{} differs", recipe_kernel.display());
        }
    }
}
