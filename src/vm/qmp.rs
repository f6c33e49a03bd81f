//! QMP, QEMU's control protocol, through the `qapi` crate: used to stop the VM cleanly.

use qapi::{qmp, Qmp, Stream};
use std::io::{self, BufReader};
use std::os::unix::net::UnixStream;
use std::time::Duration;

pub struct Control {
    qmp: Qmp<Stream<BufReader<UnixStream>, UnixStream>>,
}

impl Control {
    /// Completes the QMP greeting and capability negotiation on an accepted connection.
    pub fn handshake(stream: UnixStream) -> io::Result<Control> {
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let reader = BufReader::new(stream.try_clone()?);
        let mut qmp = Qmp::new(Stream::new(reader, stream));
        qmp.handshake().map_err(io::Error::from)?;
        Ok(Control { qmp })
    }

    /// Asks QEMU to exit now. QEMU may close the socket before answering; that is success.
    pub fn quit(&mut self) -> io::Result<()> {
        match self.qmp.execute(&qmp::quit {}) {
            Ok(_) => Ok(()),
            Err(qapi::ExecuteError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::ConnectionReset
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}
