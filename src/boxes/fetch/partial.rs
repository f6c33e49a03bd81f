//! A partial copy being written: the file, its length, and the sha256 of what it holds.
//! Hashing runs on its own thread, fed the chunks as they are written, so the digest of a
//! large box costs no time on top of the transfer.

use crate::sys::digest::hex;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

pub const CHUNK: usize = 256 * 1024;
/// Chunks in flight to the hashing thread (memory bound: 8 x 256 KiB).
const QUEUE: usize = 8;

struct HashWorker {
    chunks: Option<SyncSender<Vec<u8>>>,
    thread: Option<JoinHandle<Sha256>>,
}

impl HashWorker {
    /// Errors: the thread cannot be started (the system's thread limit).
    fn start() -> std::io::Result<HashWorker> {
        let (chunks, received) = sync_channel::<Vec<u8>>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("sha256".into())
            .spawn(move || {
                let mut hasher = Sha256::new();
                for chunk in received {
                    hasher.update(&chunk);
                }
                hasher
            })?;
        Ok(HashWorker {
            chunks: Some(chunks),
            thread: Some(thread),
        })
    }

    fn update(&self, chunk: Vec<u8>) {
        if let Some(chunks) = &self.chunks {
            // The thread only ends when the sender is dropped.
            let _ = chunks.send(chunk);
        }
    }

    /// The digest of every chunk. Errors only if the hashing thread is gone.
    fn finish(mut self) -> std::io::Result<String> {
        drop(self.chunks.take());
        let hasher = self
            .thread
            .take()
            .and_then(|thread| thread.join().ok())
            .ok_or_else(|| std::io::Error::other("the hashing thread ended early"))?;
        Ok(hex(&hasher.finalize()))
    }
}

impl Drop for HashWorker {
    fn drop(&mut self) {
        drop(self.chunks.take()); // Lets the thread end.
    }
}

pub struct Partial {
    pub file: File,
    pub len: u64,
    hasher: HashWorker,
}

impl Partial {
    /// Opens (or creates) the partial copy and hashes what it already holds.
    pub fn open(path: &Path) -> std::io::Result<Partial> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let hasher = HashWorker::start()?;
        let mut len = 0u64;
        file.seek(SeekFrom::Start(0))?;
        loop {
            let mut chunk = Vec::with_capacity(CHUNK);
            let n = (&mut file).take(CHUNK as u64).read_to_end(&mut chunk)?;
            if n == 0 {
                break;
            }
            len += n as u64;
            hasher.update(chunk);
        }
        Ok(Partial { file, len, hasher })
    }

    pub fn restart(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.hasher = HashWorker::start()?;
        self.len = 0;
        Ok(())
    }

    pub fn append(&mut self, chunk: Vec<u8>) -> std::io::Result<()> {
        self.file.write_all(&chunk)?;
        self.len += chunk.len() as u64;
        self.hasher.update(chunk);
        Ok(())
    }

    /// The file and the hex sha256 of everything appended.
    pub fn digest(self) -> std::io::Result<(File, String)> {
        let digest = self.hasher.finish()?;
        Ok((self.file, digest))
    }
}
