//! Tar archives (POSIX ustar with the GNU extensions, as the OCI image spec's layers and
//! KIWI's plugin archives are): one member taken out of an archive whose compression is
//! told by its first bytes, and an archive written with one file in it.
//!
//! Reading never writes where a member's name points: the member's bytes go to a path the
//! caller chose, so a name with `..` or an absolute path cannot reach outside it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

/// A compression told by its magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    /// Tells the compression from the first bytes of a stream (gzip `1f 8b`, xz
    /// `fd 37 7a 58 5a 00`, zstd `28 b5 2f fd`); anything else is read as a plain tar.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// `reader` decompressed as its first bytes say.
pub fn decompressed<'a>(reader: impl Read + 'a) -> std::io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(1 << 16, reader);
    let head = buffered.fill_buf()?.to_vec();
    Ok(match Compression::sniff(&head) {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
    })
}

/// A member's name as a relative path without `./` or a leading `/`
/// (`./disk/box.qcow2` and `/disk/box.qcow2` are both `disk/box.qcow2`).
pub fn normalise(name: &str) -> &str {
    let mut name = name.trim_start_matches('/');
    while let Some(rest) = name.strip_prefix("./") {
        name = rest.trim_start_matches('/');
    }
    name
}

/// Whether `name` matches the shell pattern `pattern`: `*` any run of characters (`/`
/// included, as `tar --wildcards` matches), `?` one character, everything else itself.
pub fn matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        match p.get(i) {
            Some('*') => {
                star = Some((i, j));
                i += 1;
            }
            Some(c) if *c == '?' || *c == n[j] => {
                i += 1;
                j += 1;
            }
            _ => match star {
                Some((si, sj)) => {
                    i = si + 1;
                    j = sj + 1;
                    star = Some((si, sj + 1));
                }
                None => return false,
            },
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// Copies the one regular file of the archive `archive` (plain, gzip, xz or zstd) whose
/// normalised name matches `pattern` to `dest`; returns its name. Errors (in words, for
/// a one-line message): no member or more than one matches, the match is not a regular
/// file (a link, a directory, a device), or the archive is damaged.
pub fn take_member(archive: &Path, pattern: &str, dest: &Path) -> Result<String, String> {
    let input = File::open(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let damaged =
        |e: std::io::Error| format!("{} is not a readable tar archive: {e}", archive.display());
    let mut tar = tar::Archive::new(decompressed(input).map_err(damaged)?);
    let mut taken: Vec<String> = Vec::new();
    for entry in tar.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = normalise(&raw);
        if name.is_empty() || !matches(pattern, name) {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            return Err(format!(
                "the archive's member {name} is {}, not a regular file",
                describe(kind)
            ));
        }
        taken.push(name.to_string());
        if taken.len() > 1 {
            return Err(format!(
                "the archive holds more than one member matching '{pattern}' ({})",
                taken.join(", ")
            ));
        }
        let mut out = File::create(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        std::io::copy(&mut entry, &mut out).map_err(damaged)?;
        out.sync_all()
            .map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    match taken.pop() {
        Some(name) => Ok(name),
        None => Err(format!("the archive holds no member matching '{pattern}'")),
    }
}

/// The normalised name of the first regular file among an archive's first `max_entries`
/// members for which `wanted` holds, read from `reader` (compressed or not) and no
/// further than that member's header, nor beyond `max_bytes` of the stream.
pub fn first_file(
    reader: impl Read,
    max_entries: usize,
    max_bytes: u64,
    wanted: impl Fn(&str) -> bool,
) -> std::io::Result<Option<String>> {
    let mut tar = tar::Archive::new(decompressed(reader.take(max_bytes))?);
    for entry in tar.entries()?.take(max_entries) {
        let entry = entry?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = normalise(&raw);
        if entry.header().entry_type().is_file() && wanted(name) {
            return Ok(Some(name.to_string()));
        }
    }
    Ok(None)
}

fn describe(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Symlink => "a symbolic link",
        tar::EntryType::Link => "a hard link",
        tar::EntryType::Directory => "a directory",
        tar::EntryType::Char | tar::EntryType::Block => "a device",
        tar::EntryType::Fifo => "a FIFO",
        _ => "of another kind",
    }
}

/// Who owns a written member, its mode, and its time stamp (seconds since the epoch).
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u64,
    pub gid: u64,
    /// The file's mode; the directories above it get 0755.
    pub mode: u32,
    pub mtime: u64,
}

/// Writes an uncompressed tar archive to `out` holding the file `source` under the
/// relative name `name` (e.g. `disk/box.qcow2`), after an entry for each directory above
/// it, all owned and stamped as `owner` says. GNU headers: sizes above 8 GiB are fine.
pub fn write_one_file(
    out: impl Write,
    name: &str,
    source: &Path,
    owner: Owner,
) -> std::io::Result<()> {
    let mut builder = tar::Builder::new(out);
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner.uid);
        h.set_gid(owner.gid);
        h.set_mtime(owner.mtime);
        h.set_size(size);
        h
    };
    let mut above = String::new();
    for part in name
        .split('/')
        .rev()
        .skip(1)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        above.push_str(part);
        above.push('/');
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        builder.append_data(&mut h, &above, std::io::empty())?;
    }
    let file = crate::sys::files::open_regular(source)?;
    let size = file.metadata()?.len();
    let mut h = header(tar::EntryType::Regular, owner.mode, size);
    builder.append_data(&mut h, name, file.take(size))?;
    builder.into_inner()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_as_tar_wildcards() {
        assert!(matches("*.kernel", "pxe/x.kernel"));
        assert!(matches("disk/*.qcow2", "disk/box.qcow2"));
        assert!(!matches("disk/*.qcow2", "disk/box.raw"));
        assert!(matches("boot/kernel", "boot/kernel"));
        assert!(!matches("boot/kernel", "boot/kernel2"));
        assert!(matches("a?c*", "abcdef"));
        assert_eq!(normalise("./disk/x"), "disk/x");
        assert_eq!(normalise("/disk/x"), "disk/x");
        assert_eq!(normalise(".//./disk/x"), "disk/x");
    }

    fn archive_with(dir: &Path, name: &str, content: &[u8]) -> std::path::PathBuf {
        let source = dir.join("source");
        std::fs::write(&source, content).unwrap();
        let path = dir.join("a.tar");
        let owner = Owner {
            uid: 107,
            gid: 107,
            mode: 0o444,
            mtime: 0,
        };
        write_one_file(File::create(&path).unwrap(), name, &source, owner).unwrap();
        path
    }

    #[test]
    fn written_and_taken_back_compressed_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let plain = archive_with(dir.path(), "disk/box.qcow2", b"the disk");
        let dest = dir.path().join("out");
        assert_eq!(
            take_member(&plain, "disk/*.qcow2", &dest).unwrap(),
            "disk/box.qcow2"
        );
        assert_eq!(std::fs::read(&dest).unwrap(), b"the disk");
        let mut tar = tar::Archive::new(File::open(&plain).unwrap());
        let entries: Vec<(String, u64, u32)> = tar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.uid().unwrap(),
                    h.mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                ("disk/".to_string(), 107, 0o755),
                ("disk/box.qcow2".to_string(), 107, 0o444)
            ]
        );
        let gz = dir.path().join("a.tar.gz");
        let mut encoder =
            flate2::write::GzEncoder::new(File::create(&gz).unwrap(), Default::default());
        std::io::copy(&mut File::open(&plain).unwrap(), &mut encoder).unwrap();
        encoder.finish().unwrap();
        std::fs::remove_file(&dest).unwrap();
        take_member(&gz, "disk/box.qcow2", &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"the disk");
        let zst = dir.path().join("a.tar.zst");
        zstd::stream::copy_encode(File::open(&plain).unwrap(), File::create(&zst).unwrap(), 3)
            .unwrap();
        take_member(&zst, "disk/box.qcow2", &dest).unwrap();
        let found = first_file(File::open(&zst).unwrap(), 10, 1 << 20, |n| {
            n.starts_with("disk/")
        });
        assert_eq!(found.unwrap().as_deref(), Some("disk/box.qcow2"));
        let none = first_file(File::open(&zst).unwrap(), 10, 1 << 20, |n| {
            n.starts_with("boot/")
        });
        assert_eq!(none.unwrap(), None);
        let e = take_member(&plain, "boot/kernel", &dest).unwrap_err();
        assert!(e.contains("no member matching 'boot/kernel'"), "{e}");
    }

    #[test]
    fn a_hostile_name_is_only_a_name() {
        let dir = tempfile::tempdir().unwrap();
        // A member named to climb out and a symlink under the wanted name.
        let path = dir.path().join("evil.tar");
        let mut builder = tar::Builder::new(File::create(&path).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(4);
        h.set_mode(0o644);
        let name = b"../../escaped";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        builder.append(&h, &b"evil"[..]).unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        builder
            .append_link(&mut link, "disk/box.qcow2", "/etc/shadow")
            .unwrap();
        builder.into_inner().unwrap().flush().unwrap();
        let dest = dir.path().join("sub/out");
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        take_member(&path, "*escaped", &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"evil");
        assert!(!dir.path().join("../escaped").exists());
        let e = take_member(&path, "disk/*.qcow2", &dest).unwrap_err();
        assert!(e.contains("a symbolic link"), "{e}");
    }
}
