//! QMP, QEMU's control protocol: the greeting, capability negotiation and `quit`, which
//! is all boxbuild asks of it. QMP is one JSON object per line in each direction, so a
//! small client on `serde_json` does; every way the peer can misbehave (closing early,
//! garbage, an endless line, silence) is an `io::Error`, never a panic.

use serde_json::{json, Value};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The longest line read from QEMU. Its replies to the commands sent here are a few
/// hundred bytes; events are at most a few KiB.
const MAX_LINE: u64 = 1 << 20;

/// How long one read from QEMU may block.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A negotiated QMP connection to one QEMU.
pub struct Control {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Control {
    /// Reads QEMU's greeting on an accepted connection and leaves capability negotiation
    /// mode. Errors: `UnexpectedEof` when QEMU closes the connection first (it exits while
    /// starting up), `TimedOut`/`WouldBlock` when it stays silent for 10 s, `InvalidData`
    /// for anything that is not QMP, `Other` with QEMU's description when it answers with
    /// an error.
    pub fn handshake(stream: UnixStream) -> io::Result<Control> {
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        let writer = stream.try_clone()?;
        let mut control = Control {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = control.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(invalid(format!("expected QMP's greeting, got {greeting}")));
        }
        control.execute("qmp_capabilities")?;
        Ok(control)
    }

    /// Asks QEMU to exit now. QEMU may close the socket before answering; that is success.
    pub fn quit(&mut self) -> io::Result<()> {
        match self.execute("quit") {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::ConnectionReset
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Sends a command without arguments and returns the value of its `return`, skipping
    /// the asynchronous events QEMU may send in between.
    fn execute(&mut self, command: &str) -> io::Result<Value> {
        let mut line = json!({ "execute": command }).to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        self.writer.flush()?;
        loop {
            let mut message = self.read_message()?;
            if let Some(value) = message.get_mut("return") {
                return Ok(value.take());
            }
            if let Some(error) = message.get("error") {
                let desc = error
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("no description");
                return Err(io::Error::other(format!(
                    "QEMU refused '{command}': {desc}"
                )));
            }
            if message.get("event").is_none() {
                return Err(invalid(format!("unexpected QMP message {message}")));
            }
        }
    }

    /// One JSON object from QEMU.
    fn read_message(&mut self) -> io::Result<Value> {
        loop {
            let mut line = Vec::new();
            let n = (&mut self.reader)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "QEMU closed its control channel",
                ));
            }
            if !line.ends_with(b"\n") && n as u64 == MAX_LINE {
                return Err(invalid(format!(
                    "a QMP message longer than {MAX_LINE} bytes"
                )));
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let value: Value = serde_json::from_slice(&line)
                .map_err(|e| invalid(format!("QEMU sent what is not JSON: {e}")))?;
            if !value.is_object() {
                return Err(invalid(format!("QEMU sent {value}, not a QMP object")));
            }
            return Ok(value);
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    /// A fake QEMU on the other end of a socket pair: answers each command line with the
    /// next reply, after sending `greeting`.
    fn peer(greeting: &'static [u8], replies: Vec<&'static [u8]>) -> UnixStream {
        let (ours, theirs) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let mut w = theirs.try_clone().unwrap();
            let _ = w.write_all(greeting);
            let mut lines = BufReader::new(theirs).lines();
            for reply in replies {
                if lines.next().is_none() {
                    return;
                }
                let _ = w.write_all(reply);
            }
        });
        ours
    }

    const GREETING: &[u8] = b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n";

    #[test]
    fn negotiates_and_quits() {
        let stream = peer(
            GREETING,
            vec![
                b"{\"return\": {}}\r\n",
                b"{\"timestamp\": {}, \"event\": \"SHUTDOWN\"}\r\n{\"return\": {}}\r\n",
            ],
        );
        let mut control = Control::handshake(stream).unwrap();
        control.quit().unwrap();
    }

    #[test]
    fn quit_answered_by_a_closed_socket_is_success() {
        let stream = peer(GREETING, vec![b"{\"return\": {}}\r\n", b""]);
        let mut control = Control::handshake(stream).unwrap();
        control.quit().unwrap();
    }

    #[test]
    fn a_peer_that_closes_or_talks_nonsense_is_an_error() {
        use io::ErrorKind::{BrokenPipe, ConnectionReset, InvalidData, Other, UnexpectedEof};
        // Writing to a peer that is gone fails on the write or on the next read.
        let closed = &[UnexpectedEof, BrokenPipe, ConnectionReset][..];
        type Case = (&'static [u8], Vec<&'static [u8]>, &'static [io::ErrorKind]);
        let cases: Vec<Case> = vec![
            (b"", vec![], closed),
            (GREETING, vec![], closed),
            (b"{\"QMP\": {}}", vec![], closed),
            (b"not json\n", vec![], &[InvalidData]),
            (b"[1, 2]\n", vec![], &[InvalidData]),
            (b"{\"hello\": 1}\n", vec![], &[InvalidData]),
            (GREETING, vec![b"{\"what\": 1}\n"], &[InvalidData]),
            (
                GREETING,
                vec![b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}\n"],
                &[Other],
            ),
        ];
        for (greeting, replies, kinds) in cases {
            let err = Control::handshake(peer(greeting, replies))
                .err()
                .unwrap_or_else(|| panic!("{:?} was accepted", String::from_utf8_lossy(greeting)));
            assert!(kinds.contains(&err.kind()), "{err} ({:?})", err.kind());
        }
    }

    #[test]
    fn an_endless_line_is_refused() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..20 {
                if theirs.write_all(&chunk).is_err() {
                    return;
                }
            }
        });
        let err = Control::handshake(ours).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }
}
