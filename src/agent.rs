//! The host end of the guest protocol: accept the agent's connection, read its frames on a
//! thread, send the job.

use crate::error::{Error, Result};
use crate::threads;
use guest_agent::protocol::{self, kind, Job, Status};
use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Child;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub enum AgentEvent {
    Hello {
        version: u32,
        agent: String,
    },
    Log(String),
    Started,
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Status(Status),
    /// The channel ended; `Some` when it ended with an error.
    Closed(Option<String>),
}

/// Accepts QEMU's connection to `listener`, giving up if QEMU exits, a signal arrives or
/// `timeout` passes. QEMU connects while it starts, so the errors are set-up errors
/// (QEMU did not start), or `Interrupted`.
pub fn accept(
    listener: &UnixListener,
    what: &str,
    qemu: &mut Child,
    timeout: Duration,
    interrupted: &dyn Fn() -> Option<i32>,
) -> Result<UnixStream> {
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::setup(format!("{what} socket: {e}")))?;
    let start = Instant::now();
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(|e| Error::setup(format!("{what} socket: {e}")))?;
                return Ok(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(Error::setup(format!("{what} socket: {e}"))),
        }
        if let Some(sig) = interrupted() {
            return Err(Error::Interrupted(sig));
        }
        if let Ok(Some(status)) = qemu.try_wait() {
            return Err(Error::setup(format!(
                "QEMU exited ({status}) before connecting its {what} channel"
            )));
        }
        if start.elapsed() > timeout {
            return Err(Error::setup(format!(
                "QEMU did not connect its {what} channel within {timeout:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn decode(frame: protocol::Frame) -> io::Result<Option<AgentEvent>> {
    Ok(Some(match frame.kind {
        kind::HELLO => {
            let (version, agent) = protocol::decode_hello(&frame.payload)?;
            AgentEvent::Hello { version, agent }
        }
        kind::LOG => AgentEvent::Log(String::from_utf8_lossy(&frame.payload).into_owned()),
        kind::STARTED => AgentEvent::Started,
        kind::STDOUT => AgentEvent::Stdout(frame.payload),
        kind::STDERR => AgentEvent::Stderr(frame.payload),
        kind::STATUS => AgentEvent::Status(Status::decode(&frame.payload)?),
        // Unknown frames from a newer agent are skipped, not fatal.
        _ => return Ok(None),
    }))
}

/// Reads frames until the channel closes, turning each into an event. Ends with `Closed`.
/// Errors: the reading thread cannot be started.
pub fn spawn_reader<E: Send + 'static>(
    mut stream: UnixStream,
    tx: Sender<E>,
    wrap: fn(AgentEvent) -> E,
) -> Result<std::thread::JoinHandle<()>> {
    threads::spawn("agent-reader", move || {
        let end = loop {
            match protocol::read_frame(&mut stream) {
                Ok(Some(frame)) => match decode(frame) {
                    Ok(Some(event)) => {
                        if tx.send(wrap(event)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => break Some(format!("bad frame from the agent: {e}")),
                },
                Ok(None) => break None,
                Err(e) => break Some(e.to_string()),
            }
        };
        let _ = tx.send(wrap(AgentEvent::Closed(end)));
    })
}

pub fn send_job(stream: &mut UnixStream, job: &Job) -> io::Result<()> {
    protocol::write_frame(stream, kind::JOB, &job.encode())
}
