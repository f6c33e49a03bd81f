//! The host end of the guest protocol: accept the agent's connection, read its frames on a
//! thread, send the job.

use crate::sys::error::{Error, Result};
use crate::sys::threads;
use guest_agent::protocol::{self, kind, BootMark, Job, Status};
use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Child;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub enum AgentEvent {
    Hello {
        version: u32,
        agent: String,
    },
    Log(String),
    /// The guest's start-up marks, and when the frame arrived.
    BootMarks(Vec<BootMark>, Instant),
    /// The builder started; when the frame arrived.
    Started(Instant),
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
                "the box's process exited ({status}) before connecting its {what} channel"
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
        // Only -v shows them: damaged marks are dropped, never the run.
        kind::BOOT_MARKS => match protocol::decode_boot_marks(&frame.payload) {
            Ok(marks) => AgentEvent::BootMarks(marks, Instant::now()),
            Err(_) => return Ok(None),
        },
        kind::STARTED => AgentEvent::Started(Instant::now()),
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

/// Sends the job in the layout of `version`, the protocol the agent greeted with
/// (`OLDEST_PROTOCOL_VERSION` to `PROTOCOL_VERSION`), stamped with the host's current time
/// so the agent can set the box's clock to it.
pub fn send_job(stream: &mut UnixStream, job: &Job, version: u32) -> io::Result<()> {
    let stamped = Job {
        host_time: SystemTime::now().duration_since(UNIX_EPOCH).ok(),
        ..job.clone()
    };
    protocol::write_frame(stream, kind::JOB, &stamped.encode_for(version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_agent::protocol::{OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION};

    fn sent(version: u32) -> Job {
        let (mut host, mut guest) = UnixStream::pair().unwrap();
        let job = Job {
            argv: vec![b"builder".to_vec()],
            ..Job::default()
        };
        send_job(&mut host, &job, version).unwrap();
        let frame = protocol::read_frame(&mut guest).unwrap().unwrap();
        assert_eq!(frame.kind, kind::JOB);
        assert_eq!(frame.payload[..4], version.to_le_bytes());
        Job::decode(&frame.payload).unwrap()
    }

    #[test]
    fn boot_marks_arrive_as_an_event_and_damaged_ones_are_skipped() {
        let marks = vec![protocol::BootMark {
            name: "kernel".to_string(),
            at: Duration::from_millis(1500),
        }];
        let frame = |payload: Vec<u8>| protocol::Frame {
            kind: kind::BOOT_MARKS,
            payload,
        };
        match decode(frame(protocol::encode_boot_marks(&marks))) {
            Ok(Some(AgentEvent::BootMarks(got, _))) => assert_eq!(got, marks),
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode(frame(vec![9, 0, 0])), Ok(None)));
    }

    #[test]
    fn the_job_carries_the_hosts_time_for_agents_that_read_it() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let time = sent(PROTOCOL_VERSION).host_time.expect("host time");
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!(before <= time && time <= after, "{time:?}");
        assert_eq!(sent(OLDEST_PROTOCOL_VERSION).host_time, None);
    }
}
